//! Grafana → backup set.
//!
//! Set layout:
//! - `folders.json`: `[{uid, title, parentUid}]`, parents before children,
//!   so restore can create them in file order;
//! - `dashboards/<uid>.json`: the API's `{dashboard, meta}`, what restore
//!   reads (`meta.folderUid` says where the dashboard goes);
//! - `plain/<uid>.json`: the bare model with `id: null`, for a person to
//!   import through Grafana's UI without unitlet.

use std::fmt;

use futures_util::{StreamExt, stream};
use serde_json::Value;

use super::GrafanaError;
use super::client::{Client, DashboardDoc};
use super::restore::MAX_DASHBOARD_FILE;
use crate::backup::{SetInfo, Store};

/// What a backup run did.
#[derive(Debug, Clone)]
pub struct BackupReport {
    /// The complete set that was written.
    pub set: SetInfo,
    /// Folders saved.
    pub folders: usize,
    /// Dashboards saved.
    pub dashboards: usize,
    /// Dashboards listed by search but gone when fetched: deleted by someone
    /// during the run, which is not a failure but should not go unnoticed.
    pub skipped: Vec<SkippedDashboard>,
}

/// A dashboard that was listed but not saved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedDashboard {
    /// Its uid.
    pub uid: String,
    /// Its title when it was listed.
    pub title: String,
    /// Why it was skipped.
    pub reason: String,
}

impl fmt::Display for BackupReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "backup set {} complete: {} folders, {} dashboards, {} bytes in {}",
            self.set.id,
            self.folders,
            self.dashboards,
            self.set.size,
            self.set.path.display()
        )?;
        for s in &self.skipped {
            writeln!(
                f,
                "  skipped dashboard {} {:?}: {}",
                s.uid, s.title, s.reason
            )?;
        }
        Ok(())
    }
}

/// Backs up every folder and dashboard Grafana shows to the client's
/// credentials into a new set of `store`, fetching up to `concurrency`
/// dashboards at once.
///
/// # Guarantees
/// The set is complete only if every listed dashboard was saved or was
/// deleted in Grafana meanwhile (404, reported in
/// [`BackupReport::skipped`]). On any error the set is left incomplete, so
/// it is neither counted by `keep` nor offered for restore.
///
/// # Errors
/// The first request failure that survived retries (401/403, 5xx,
/// timeouts, connection errors), or a store failure.
pub async fn backup(
    client: &Client,
    store: &Store,
    concurrency: usize,
) -> Result<BackupReport, GrafanaError> {
    // Listing first: if Grafana is down or the credentials are wrong, no
    // empty set is left behind.
    let folders = client.all_folders().await?;
    let hits = client.search_dashboards().await?;
    tracing::info!(
        grafana = client.base_url(),
        folders = folders.len(),
        dashboards = hits.len(),
        "backing up Grafana"
    );

    let mut set = store.begin(client.base_url())?;
    set.write_file("folders.json", &to_json(&folders))?;

    let mut fetches = stream::iter(hits)
        .map(|hit| async move {
            let doc = client.dashboard(&hit.uid).await;
            (hit, doc)
        })
        .buffer_unordered(concurrency.max(1));
    let mut dashboards = 0;
    let mut skipped = Vec::new();
    while let Some((hit, doc)) = fetches.next().await {
        // Returning here drops the stream, which cancels fetches in flight.
        let Some(doc) = doc? else {
            tracing::warn!(uid = %hit.uid, title = %hit.title, "dashboard deleted during backup; skipped");
            skipped.push(SkippedDashboard {
                uid: hit.uid,
                title: hit.title,
                reason: "deleted in Grafana after it was listed (404)".to_owned(),
            });
            continue;
        };
        let name = file_name(&hit.uid);
        let bytes = to_json(&doc);
        if bytes.len() as u64 > MAX_DASHBOARD_FILE {
            return Err(GrafanaError::DashboardTooLarge {
                uid: hit.uid,
                size: bytes.len() as u64,
                limit: MAX_DASHBOARD_FILE,
            });
        }
        set.write_file(&format!("dashboards/{name}"), &bytes)?;
        set.write_file(&format!("plain/{name}"), &to_json(&plain_model(&doc)))?;
        dashboards += 1;
    }
    drop(fetches);
    skipped.sort_by(|a, b| a.uid.cmp(&b.uid));

    let info = set.finish()?;
    Ok(BackupReport {
        set: info,
        folders: folders.len(),
        dashboards,
        skipped,
    })
}

/// The model as Grafana's "Import dashboard" expects it: `id` null, so the
/// importing instance assigns its own.
fn plain_model(doc: &DashboardDoc) -> Value {
    let mut model = doc.dashboard.clone();
    if let Some(obj) = model.as_object_mut() {
        obj.insert("id".to_owned(), Value::Null);
    }
    model
}

fn to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(value).expect("JSON values serialize");
    bytes.push(b'\n');
    bytes
}

/// A file name for a uid. Grafana uids are letters, digits, `-` and `_` and
/// are used as they are; anything else is percent-encoded so a uid can
/// neither escape the directory nor collide with another uid's file.
pub(crate) fn file_name(uid: &str) -> String {
    let mut out = String::with_capacity(uid.len() + 5);
    for b in uid.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out.push_str(".json");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_safe_and_distinct() {
        assert_eq!(file_name("abc-D_9"), "abc-D_9.json");
        assert_eq!(file_name("../x"), "%2E%2E%2Fx.json");
        assert_ne!(file_name("a.b"), file_name("a%2Eb"));
    }
}
