//! Grafana → backup set.
//!
//! Set layout:
//! - `folders.json`: `[{uid, title, parentUid}]`, parents before children,
//!   so restore can create them in file order;
//! - `dashboards/<uid>.json`: the API's `{dashboard, meta}`, what restore
//!   reads (`meta.folderUid` says where the dashboard goes);
//! - `plain/<uid>.json`: the bare model with `id: null`, for a person to
//!   import through Grafana's UI without unitlet;
//! - `folder-permissions.json`, `datasources.json` (secure fields by name
//!   only), `library-panels.json`, `alert-rules.json` (rules and their
//!   groups' intervals), `contact-points.json`, `policies.json`,
//!   `mute-timings.json`, `templates.json`: each normalised (no ids,
//!   versions, timestamps, provenance), see `grafana::kinds`. An alerting
//!   kind this Grafana has no provisioning API for (404) is left out.

use std::fmt;

use std::collections::{BTreeMap, BTreeSet};

use futures_util::{StreamExt, TryStreamExt, future, stream};
use serde_json::{Value, json};

use super::GrafanaError;
use super::client::{Client, DashboardDoc, Folder};
use super::kinds::{self, MAX_DASHBOARD_FILE, ObjectKind, RuleGroup, RulesFile};
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
    /// Objects saved of the other kinds, in restore order.
    pub others: Vec<(ObjectKind, usize)>,
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
        let mut counts = format!("{} folders, {} dashboards", self.folders, self.dashboards);
        for (kind, n) in &self.others {
            counts.push_str(&format!(", {n} {}", kind.plural()));
        }
        writeln!(
            f,
            "backup set {} complete: {counts}, {} bytes in {}",
            self.set.id,
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
/// [`BackupReport::skipped`]). On any error the set is removed, so it is
/// neither offered for restore nor left to fill the destination; a full
/// destination is [`crate::backup::BackupError::DestinationFull`], after
/// the rest was fetched (not written) to count what the set needed.
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
    let (folders, hits) =
        future::try_join(client.all_folders(), client.search_dashboards()).await?;
    tracing::info!(
        grafana = client.base_url(),
        folders = folders.len(),
        dashboards = hits.len(),
        "backing up Grafana"
    );

    let mut set = store.begin(client.base_url())?;
    set.write_file("folders.json", &to_json(&folders))?;

    // The other kinds are fetched while the dashboards are.
    let fetch_dashboards = async {
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
        Ok((dashboards, skipped))
    };
    let (others, (dashboards, mut skipped)) = future::try_join(
        fetch_others(client, &folders, concurrency),
        fetch_dashboards,
    )
    .await?;
    let mut counts = Vec::new();
    for (kind, file, value, n) in &others {
        set.write_file(file, &to_json(value))?;
        counts.push((*kind, *n));
    }
    skipped.sort_by(|a, b| a.uid.cmp(&b.uid));

    let info = set.finish()?;
    Ok(BackupReport {
        set: info,
        folders: folders.len(),
        dashboards,
        others: counts,
        skipped,
    })
}

type Part = (ObjectKind, &'static str, Value, usize);

/// Everything but folders and dashboards: (kind, set file, content,
/// count), in restore order. Independent listings run at once; per-object
/// reads up to `concurrency` at once.
async fn fetch_others(
    client: &Client,
    folders: &[Folder],
    concurrency: usize,
) -> Result<Vec<Part>, GrafanaError> {
    let (permissions, datasources, library, rules, provisioned) = future::try_join5(
        fetch_permissions(client, folders, concurrency),
        fetch_datasources(client, concurrency),
        fetch_library(client),
        fetch_rules(client),
        fetch_provisioned(client),
    )
    .await?;
    let mut out = vec![permissions, datasources, library];
    out.extend(rules);
    out.extend(provisioned);
    out.sort_by_key(|(kind, ..)| *kind);
    Ok(out)
}

async fn fetch_permissions(
    client: &Client,
    folders: &[Folder],
    concurrency: usize,
) -> Result<Part, GrafanaError> {
    let listed: Vec<(String, Vec<Value>)> = stream::iter(folders)
        .map(|f| async move {
            let listed = client.folder_permissions(&f.uid).await?;
            Ok::<_, GrafanaError>((f.uid.clone(), kinds::permission_items(&listed)))
        })
        .buffered(concurrency.max(1))
        .try_collect()
        .await?;
    let permissions: BTreeMap<String, Vec<Value>> = listed.into_iter().collect();
    let n = permissions.len();
    Ok((
        ObjectKind::FolderPermissions,
        kinds::PERMISSIONS_FILE,
        json!(permissions),
        n,
    ))
}

/// The listing lacks secure field names, basicAuthUser, withCredentials:
/// each datasource is read whole.
async fn fetch_datasources(client: &Client, concurrency: usize) -> Result<Part, GrafanaError> {
    let listed = client.datasources().await?;
    let full: Vec<Option<Value>> = stream::iter(&listed)
        .map(|item| client.datasource(item["uid"].as_str().unwrap_or_default()))
        .buffered(concurrency.max(1))
        .try_collect()
        .await?;
    // `None`: deleted since the listing.
    let datasources: Vec<Value> = full.iter().flatten().map(kinds::datasource).collect();
    let n = datasources.len();
    Ok((
        ObjectKind::Datasource,
        kinds::DATASOURCES_FILE,
        Value::Array(datasources),
        n,
    ))
}

async fn fetch_library(client: &Client) -> Result<Part, GrafanaError> {
    let library: Vec<Value> = client
        .library_panels()
        .await?
        .iter()
        .map(kinds::library_panel)
        .collect();
    let n = library.len();
    Ok((
        ObjectKind::LibraryPanel,
        kinds::LIBRARY_FILE,
        Value::Array(library),
        n,
    ))
}

fn list(v: Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_default()
}

/// Alert rules and their groups' intervals (one read per group: the rule
/// listing does not show them).
#[expect(
    clippy::expect_used,
    reason = "the rules file (JSON values and strings) always serializes"
)]
async fn fetch_rules(client: &Client) -> Result<Option<Part>, GrafanaError> {
    let Some(rules) = client.provisioning("alert-rules").await? else {
        tracing::warn!(
            grafana = client.base_url(),
            "Grafana has no alert-rules provisioning API (404); alert rules are not backed up"
        );
        return Ok(None);
    };
    let rules: Vec<Value> = list(rules).iter().map(kinds::alert_rule).collect();
    let mut keys = BTreeSet::new();
    for r in &rules {
        keys.insert((
            r["folderUID"].as_str().unwrap_or_default().to_owned(),
            r["ruleGroup"].as_str().unwrap_or_default().to_owned(),
        ));
    }
    let groups: Vec<RuleGroup> = stream::iter(keys)
        .map(|(folder, title)| async move {
            // Gone since the listing: its rules are saved, at the default.
            let interval = client
                .rule_group(&folder, &title)
                .await?
                .and_then(|g| g["interval"].as_i64())
                .unwrap_or(60);
            Ok::<_, GrafanaError>(RuleGroup {
                folder_uid: folder,
                title,
                interval,
            })
        })
        .buffered(4)
        .try_collect()
        .await?;
    let n = rules.len();
    let file = RulesFile { groups, rules };
    Ok(Some((
        ObjectKind::AlertRule,
        kinds::RULES_FILE,
        serde_json::to_value(file).expect("JSON values serialize"),
        n,
    )))
}

/// Templates, contact points, mute timings and the policy tree: one
/// listing each.
async fn fetch_provisioned(client: &Client) -> Result<Vec<Part>, GrafanaError> {
    let kinds_ = [
        (ObjectKind::Template, "templates", kinds::TEMPLATES_FILE),
        (
            ObjectKind::ContactPoint,
            "contact-points",
            kinds::CONTACT_POINTS_FILE,
        ),
        (
            ObjectKind::MuteTiming,
            "mute-timings",
            kinds::MUTE_TIMINGS_FILE,
        ),
        (ObjectKind::Policies, "policies", kinds::POLICIES_FILE),
    ];
    let listed =
        future::try_join_all(kinds_.iter().map(|(_, what, _)| client.provisioning(what))).await?;
    let mut out = Vec::new();
    for ((kind, what, file), answer) in kinds_.into_iter().zip(listed) {
        match answer {
            Some(tree) if kind == ObjectKind::Policies => {
                out.push((kind, file, kinds::provisioned(&tree), 1));
            }
            Some(items) => {
                let items: Vec<Value> = list(items).iter().map(kinds::provisioned).collect();
                let n = items.len();
                out.push((kind, file, Value::Array(items), n));
            }
            None => {
                tracing::warn!(
                    grafana = client.base_url(),
                    what,
                    "Grafana has no provisioning API for it (404); not backed up"
                );
            }
        }
    }
    Ok(out)
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

#[expect(
    clippy::expect_used,
    reason = "serde_json::Value and the backup's own structs always serialize"
)]
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
