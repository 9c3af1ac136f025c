//! Backup set → Grafana.
//!
//! Restore converges Grafana to the set, level-triggered like the rest of
//! unitlet: each object is compared with what Grafana has now and only
//! posted when it differs, so restoring twice adds no dashboard versions.
//! Nothing is deleted: a replaced dashboard's previous version stays in
//! Grafana's version history, and the report names it.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;

use futures_util::{StreamExt, stream};
use serde_json::Value;

use super::client::{Client, DashboardDoc, Folder};
use super::{GrafanaError, KIND};
use crate::backup::VerifiedSet;

/// Largest dashboard file a restore reads. Backup refuses to write a bigger
/// one, so every set it makes can be restored.
pub const MAX_DASHBOARD_FILE: u64 = 128 << 20;

/// Largest `folders.json` a restore reads (ours hold ~100 bytes a folder).
pub const MAX_FOLDERS_FILE: u64 = 64 << 20;

/// Grafana's own limit on uids (`util.IsShortUIDTooLong`).
const MAX_UID_LEN: usize = 40;

/// Longer titles than any Grafana UI shows; a longer one was not made there.
const MAX_TITLE_CHARS: usize = 1024;

/// Folder or dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    /// A (possibly nested) folder.
    Folder,
    /// A dashboard.
    Dashboard,
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ObjectKind::Folder => "folder",
            ObjectKind::Dashboard => "dashboard",
        })
    }
}

/// What restore did (or, in a dry run, would do) to one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It did not exist and was created.
    Create,
    /// It existed and differed; `detail` says how and what was kept.
    Update {
        /// What changed and where the previous state is.
        detail: String,
    },
    /// Already as in the backup; nothing was sent.
    Unchanged,
    /// Not restored; the other objects were still processed.
    Failed {
        /// Why, and what to do about it.
        reason: String,
    },
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectReport {
    /// Folder or dashboard.
    pub kind: ObjectKind,
    /// Its uid.
    pub uid: String,
    /// Its title in the backup.
    pub title: String,
    /// What happened.
    pub outcome: Outcome,
}

/// Outcome counts for one kind of object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Created.
    pub create: usize,
    /// Updated.
    pub update: usize,
    /// Left as they were.
    pub unchanged: usize,
    /// Not restored.
    pub failed: usize,
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} create, {} update, {} unchanged, {} failed",
            self.create, self.update, self.unchanged, self.failed
        )
    }
}

/// The result of a restore, per object.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    /// The set restored from.
    pub set_id: String,
    /// The Grafana restored into.
    pub target: String,
    /// Nothing was changed; outcomes are what a real run would do.
    pub dry_run: bool,
    /// Folders (parents first), then dashboards by title.
    pub objects: Vec<ObjectReport>,
}

impl RestoreReport {
    /// Outcome counts for `kind`.
    pub fn counts(&self, kind: ObjectKind) -> Counts {
        let mut c = Counts::default();
        for o in self.objects.iter().filter(|o| o.kind == kind) {
            match o.outcome {
                Outcome::Create => c.create += 1,
                Outcome::Update { .. } => c.update += 1,
                Outcome::Unchanged => c.unchanged += 1,
                Outcome::Failed { .. } => c.failed += 1,
            }
        }
        c
    }

    /// True when every object was restored (or would be, in a dry run).
    pub fn is_success(&self) -> bool {
        !self
            .objects
            .iter()
            .any(|o| matches!(o.outcome, Outcome::Failed { .. }))
    }
}

impl fmt::Display for RestoreReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "restore of backup set {} into {}",
            self.set_id, self.target
        )?;
        if self.dry_run {
            write!(f, " (dry run: nothing was changed)")?;
        }
        writeln!(f)?;
        writeln!(f, "folders:    {}", self.counts(ObjectKind::Folder))?;
        writeln!(f, "dashboards: {}", self.counts(ObjectKind::Dashboard))?;
        for o in &self.objects {
            let (verb, note) = match &o.outcome {
                Outcome::Create => ("create", None),
                Outcome::Update { detail } => ("update", Some(detail)),
                Outcome::Unchanged => ("unchanged", None),
                Outcome::Failed { reason } => ("FAILED", Some(reason)),
            };
            write!(f, "  {verb:<9}  {:<9}  {}  {:?}", o.kind, o.uid, o.title)?;
            match note {
                Some(note) => writeln!(f, ": {note}")?,
                None => writeln!(f)?,
            }
        }
        Ok(())
    }
}

/// Restores the folders and dashboards of `set` into Grafana, up to
/// `concurrency` dashboards at once. With `dry_run`, only reads.
///
/// Folders are restored first, parents before children, under their uids;
/// dashboards are then saved with `overwrite` into their folders. An object
/// equal to the backup (dashboards: ignoring `id` and `version`) is left
/// alone. Each saved dashboard is read back and compared.
///
/// # Guarantees
/// A dashboard is never saved over a *different* dashboard that has the
/// same title in the same folder: that is reported as failed, whatever the
/// Grafana version would do with `overwrite`.
///
/// Before the first request, the whole set is read (each file within its
/// limit) and everything that would be sent is checked: uids, titles,
/// folder references, duplicates, JSON. A set failing any check is refused
/// with nothing sent, in a dry run and a real one alike.
///
/// # Errors
/// [`GrafanaError::InvalidSet`] for a set that fails those checks, or whose
/// dashboards are in a folder neither in the set nor in Grafana. Errors
/// that would fail every further request (401/403, Grafana
/// unreachable or timing out after retries) abort the restore; a set that
/// is not a Grafana set or holds unreadable files is refused. Anything else
/// is reported per object in the [`RestoreReport`].
pub async fn restore(
    client: &Client,
    set: &VerifiedSet,
    dry_run: bool,
    concurrency: usize,
) -> Result<RestoreReport, GrafanaError> {
    let info = set.info();
    if info.kind != KIND {
        return Err(GrafanaError::WrongKind {
            id: info.id.clone(),
            kind: info.kind.clone(),
        });
    }
    let message = format!("restored by unitlet from backup set {}", info.id);
    // Everything the restore will send is read and checked before the first
    // request, so a set that cannot be restored whole changes nothing.
    let Checked {
        folders,
        dashboards,
        outside_folders,
    } = read_and_check(set)?;
    for uid in &outside_folders {
        if client.folder(uid).await?.is_none() {
            return Err(GrafanaError::InvalidSet {
                id: info.id.clone(),
                file: "folders.json".to_owned(),
                reason: format!(
                    "a dashboard of the set is in folder {uid:?}, which is neither in the set nor in Grafana"
                ),
            });
        }
    }
    let mut objects = Vec::new();

    let mut failed_folders = HashSet::new();
    for folder in folders {
        let outcome = restore_folder(client, &folder, &failed_folders, dry_run).await?;
        if matches!(outcome, Outcome::Failed { .. }) {
            failed_folders.insert(folder.uid.clone());
        }
        objects.push(ObjectReport {
            kind: ObjectKind::Folder,
            uid: folder.uid,
            title: folder.title,
            outcome,
        });
    }

    // Who holds which title in which folder, to refuse clashes ourselves
    // rather than trust each Grafana version's `overwrite` semantics.
    let titles: HashMap<(Option<String>, String), String> = client
        .search_dashboards()
        .await?
        .into_iter()
        .map(|h| ((h.folder_uid, h.title), h.uid))
        .collect();
    let ctx = DashboardContext {
        client,
        titles: &titles,
        failed_folders: &failed_folders,
        dry_run,
        message: &message,
    };
    let mut results = stream::iter(&dashboards)
        .map(|doc| ctx.restore(doc))
        .buffer_unordered(concurrency.max(1));
    let mut restored = Vec::new();
    while let Some(result) = results.next().await {
        restored.push(result?);
    }
    drop(results);
    restored.sort_by(|a, b| (&a.title, &a.uid).cmp(&(&b.title, &b.uid)));
    objects.extend(restored);

    let report = RestoreReport {
        set_id: info.id.clone(),
        target: client.base_url().to_owned(),
        dry_run,
        objects,
    };
    tracing::info!(
        set = %report.set_id,
        dry_run,
        folders = %report.counts(ObjectKind::Folder),
        dashboards = %report.counts(ObjectKind::Dashboard),
        "Grafana restore finished"
    );
    Ok(report)
}

async fn restore_folder(
    client: &Client,
    folder: &Folder,
    failed_folders: &HashSet<String>,
    dry_run: bool,
) -> Result<Outcome, GrafanaError> {
    if let Some(parent) = folder
        .parent_uid
        .as_deref()
        .filter(|p| failed_folders.contains(*p))
    {
        return Ok(failed(format!(
            "its parent folder {parent} could not be restored"
        )));
    }
    let current = match client.folder(&folder.uid).await {
        Ok(current) => current,
        Err(e) => return per_object(e),
    };
    let Some(current) = current else {
        if !dry_run && let Err(e) = client.create_folder(folder).await {
            return per_object(e);
        }
        return Ok(Outcome::Create);
    };
    let mut changes = Vec::new();
    if current.title != folder.title {
        changes.push(format!(
            "renamed from {:?} to {:?}",
            current.title, folder.title
        ));
        if !dry_run && let Err(e) = client.rename_folder(&folder.uid, &folder.title).await {
            return per_object(e);
        }
    }
    if current.parent_uid != folder.parent_uid {
        changes.push(format!(
            "moved from {} to {}",
            place(current.parent_uid.as_deref()),
            place(folder.parent_uid.as_deref())
        ));
        if !dry_run
            && let Err(e) = client
                .move_folder(&folder.uid, folder.parent_uid.as_deref())
                .await
        {
            return per_object(e);
        }
    }
    Ok(if changes.is_empty() {
        Outcome::Unchanged
    } else {
        Outcome::Update {
            detail: changes.join("; "),
        }
    })
}

/// What every dashboard restore shares.
struct DashboardContext<'a> {
    client: &'a Client,
    titles: &'a HashMap<(Option<String>, String), String>,
    failed_folders: &'a HashSet<String>,
    dry_run: bool,
    message: &'a str,
}

impl DashboardContext<'_> {
    async fn restore(&self, doc: &DashboardDoc) -> Result<ObjectReport, GrafanaError> {
        let outcome = self.outcome(doc).await?;
        Ok(ObjectReport {
            kind: ObjectKind::Dashboard,
            uid: doc.uid().to_owned(),
            title: doc.title().to_owned(),
            outcome,
        })
    }

    async fn outcome(&self, doc: &DashboardDoc) -> Result<Outcome, GrafanaError> {
        let (uid, title, folder) = (doc.uid(), doc.title(), doc.folder_uid());
        if let Some(folder) = folder.filter(|f| self.failed_folders.contains(*f)) {
            return Ok(failed(format!("its folder {folder} could not be restored")));
        }
        let key = (folder.map(str::to_owned), title.to_owned());
        if let Some(other) = self.titles.get(&key).filter(|other| *other != uid) {
            return Ok(failed(format!(
                "Grafana already has a different dashboard (uid {other}) titled {title:?} in {}, and allows only one dashboard per title in a folder; rename or move one of them, then restore again",
                place(folder)
            )));
        }
        let current = match self.client.dashboard(uid).await {
            Ok(current) => current,
            Err(e) => return per_object(e),
        };
        let outcome = match &current {
            None => Outcome::Create,
            Some(cur)
                if same_model(&cur.dashboard, &doc.dashboard) && cur.folder_uid() == folder =>
            {
                return Ok(Outcome::Unchanged);
            }
            Some(cur) => {
                let mut detail = match cur.version() {
                    Some(v) => {
                        format!("replaces version {v}, which stays in Grafana's version history")
                    }
                    None => "replaces the current version".to_owned(),
                };
                if cur.folder_uid() != folder {
                    detail.push_str(&format!(
                        "; moves it from {} to {}",
                        place(cur.folder_uid()),
                        place(folder)
                    ));
                }
                Outcome::Update { detail }
            }
        };
        if self.dry_run {
            return Ok(outcome);
        }
        match self
            .client
            .save_dashboard(&doc.dashboard, folder, self.message)
            .await
        {
            Ok(()) => {}
            Err(e) if e.grafana_status() == Some("name-exists") => {
                return Ok(failed(format!(
                    "Grafana refused it (412 name-exists): another dashboard titled {title:?} already exists in {}; rename or move one of them, then restore again ({e})",
                    place(folder)
                )));
            }
            Err(e) => return per_object(e),
        }
        // Read back: "restored" must mean Grafana now serves the backup.
        match self.client.dashboard(uid).await {
            Ok(Some(now))
                if same_model(&now.dashboard, &doc.dashboard) && now.folder_uid() == folder =>
            {
                Ok(outcome)
            }
            Ok(_) => Ok(failed(
                "Grafana accepted it, but reading it back gave a different model or folder"
                    .to_owned(),
            )),
            Err(e) => per_object(e),
        }
    }
}

/// Equal as far as restore is concerned: `id` is per instance and
/// `version` counts saves, neither is content.
fn same_model(a: &Value, b: &Value) -> bool {
    fn content(v: &Value) -> Value {
        let mut v = v.clone();
        if let Some(obj) = v.as_object_mut() {
            obj.remove("id");
            obj.remove("version");
        }
        v
    }
    content(a) == content(b)
}

/// Request errors that concern one object become its `Failed` outcome; the
/// rest abort the restore.
fn per_object(e: GrafanaError) -> Result<Outcome, GrafanaError> {
    if e.is_fatal() {
        Err(e)
    } else {
        Ok(failed(e.to_string()))
    }
}

fn failed(reason: String) -> Outcome {
    Outcome::Failed { reason }
}

fn place(folder: Option<&str>) -> String {
    match folder {
        Some(uid) => format!("folder {uid}"),
        None => "the General folder".to_owned(),
    }
}

/// Folders ordered so every parent in the set comes before its children,
/// whatever order the file has (it may have been edited by hand).
fn parents_first(mut pending: Vec<Folder>) -> Vec<Folder> {
    let in_set: HashSet<String> = pending.iter().map(|f| f.uid.clone()).collect();
    let mut placed = HashSet::new();
    let mut out = Vec::with_capacity(pending.len());
    while !pending.is_empty() {
        let before = pending.len();
        pending.retain(|f| {
            let ready = f
                .parent_uid
                .as_ref()
                .is_none_or(|p| !in_set.contains(p) || placed.contains(p));
            if ready {
                placed.insert(f.uid.clone());
                out.push(f.clone());
            }
            !ready
        });
        if pending.len() == before {
            // A cycle: Grafana will refuse the moves and they get reported.
            out.append(&mut pending);
        }
    }
    out
}

/// The set's content, checked: what [`restore`] will send.
#[derive(Debug)]
struct Checked {
    /// Parents before children.
    folders: Vec<Folder>,
    dashboards: Vec<DashboardDoc>,
    /// Folders dashboards are in that the set does not hold: they must
    /// exist in Grafana already.
    outside_folders: BTreeSet<String>,
}

/// Reads `folders.json` and every dashboard file (each within its size
/// limit) and checks that everything restore would send is well-formed:
/// uids Grafana accepts and that name one object, non-empty titles without
/// control characters, no uid twice, no two dashboards with one title in
/// one folder, folder parents in the set and without cycles.
fn read_and_check(set: &VerifiedSet) -> Result<Checked, GrafanaError> {
    let id = &set.info().id;
    let invalid = |file: &str, reason: String| GrafanaError::InvalidSet {
        id: id.clone(),
        file: file.to_owned(),
        reason,
    };
    let folders: Vec<Folder> = read_json(set, "folders.json", MAX_FOLDERS_FILE)?;
    let mut folder_uids = HashSet::new();
    for f in &folders {
        let what = format!("folder {:?}", f.uid);
        check_uid(&f.uid).map_err(|r| invalid("folders.json", format!("{what}: {r}")))?;
        check_title(&f.title).map_err(|r| invalid("folders.json", format!("{what}: {r}")))?;
        if !folder_uids.insert(f.uid.clone()) {
            return Err(invalid("folders.json", format!("{what} is listed twice")));
        }
    }
    for f in &folders {
        if let Some(parent) = &f.parent_uid
            && !folder_uids.contains(parent)
        {
            return Err(invalid(
                "folders.json",
                format!(
                    "folder {:?} has parent {parent:?}, which is not in the set",
                    f.uid
                ),
            ));
        }
    }
    let folders = parents_first(folders);
    if let Some(f) = in_a_cycle(&folders) {
        return Err(invalid(
            "folders.json",
            format!("folder {f:?} is its own ancestor"),
        ));
    }

    let mut dashboards = Vec::new();
    let mut uids = HashMap::new();
    let mut titles = HashMap::new();
    let mut outside_folders = BTreeSet::new();
    for entry in set.files() {
        if !(entry.path.starts_with("dashboards/") && entry.path.ends_with(".json")) {
            continue;
        }
        let file = entry.path.as_str();
        let doc: DashboardDoc = read_json(set, file, MAX_DASHBOARD_FILE)?;
        if !doc.dashboard.is_object() {
            return Err(invalid(file, "`dashboard` is not a JSON object".to_owned()));
        }
        let uid = doc.uid();
        check_uid(uid).map_err(|r| invalid(file, format!("dashboard uid {uid:?}: {r}")))?;
        check_title(doc.title()).map_err(|r| invalid(file, format!("dashboard {uid}: {r}")))?;
        if let Some(other) = uids.insert(uid.to_owned(), file.to_owned()) {
            return Err(invalid(
                file,
                format!("dashboard uid {uid:?} is also in {other}"),
            ));
        }
        let folder = doc.folder_uid();
        if let Some(f) = folder {
            check_uid(f).map_err(|r| invalid(file, format!("folder uid {f:?}: {r}")))?;
            if !folder_uids.contains(f) {
                outside_folders.insert(f.to_owned());
            }
        }
        let key = (folder.map(str::to_owned), doc.title().to_owned());
        if let Some(other) = titles.insert(key, uid.to_owned()) {
            return Err(invalid(
                file,
                format!(
                    "dashboards {other} and {uid} are both titled {:?} in {}; Grafana allows one dashboard per title in a folder",
                    doc.title(),
                    place(folder)
                ),
            ));
        }
        dashboards.push(doc);
    }
    Ok(Checked {
        folders,
        dashboards,
        outside_folders,
    })
}

/// A uid Grafana accepts (`util.IsValidShortUID`: letters, digits, `-`,
/// `_`, at most 40) — which also rules out `.`, `..` and anything that
/// would add a path segment.
fn check_uid(uid: &str) -> Result<(), String> {
    if uid.is_empty() {
        return Err("is empty".to_owned());
    }
    if uid.len() > MAX_UID_LEN {
        return Err(format!(
            "is longer than Grafana's limit of {MAX_UID_LEN} characters"
        ));
    }
    if !uid
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(
            "may only hold letters, digits, `-` and `_` (Grafana refuses anything else)".to_owned(),
        );
    }
    Ok(())
}

fn check_title(title: &str) -> Result<(), String> {
    if title.trim().is_empty() {
        return Err("the title is empty".to_owned());
    }
    if title.chars().count() > MAX_TITLE_CHARS {
        return Err(format!(
            "the title is longer than {MAX_TITLE_CHARS} characters"
        ));
    }
    if title.chars().any(char::is_control) {
        return Err("the title holds control characters".to_owned());
    }
    Ok(())
}

/// A folder whose parent chain (within `folders`) loops, if any.
fn in_a_cycle(folders: &[Folder]) -> Option<&str> {
    let parent: HashMap<&str, &str> = folders
        .iter()
        .filter_map(|f| f.parent_uid.as_deref().map(|p| (f.uid.as_str(), p)))
        .collect();
    for f in folders {
        let mut at = f.uid.as_str();
        for _ in 0..=folders.len() {
            match parent.get(at) {
                Some(p) if *p == f.uid => return Some(&f.uid),
                Some(p) => at = p,
                None => break,
            }
        }
    }
    None
}

fn read_json<T: serde::de::DeserializeOwned>(
    set: &VerifiedSet,
    file: &str,
    limit: u64,
) -> Result<T, GrafanaError> {
    let bytes = set.read_limited(file, limit)?;
    serde_json::from_slice(&bytes).map_err(|e| GrafanaError::InvalidSet {
        id: set.info().id.clone(),
        file: file.to_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn folder(uid: &str, parent: Option<&str>) -> Folder {
        Folder {
            uid: uid.into(),
            title: uid.to_uppercase(),
            parent_uid: parent.map(Into::into),
        }
    }

    #[test]
    fn parents_come_before_children_whatever_the_file_order() {
        let sorted = parents_first(vec![
            folder("c", Some("b")),
            folder("b", Some("a")),
            folder("x", Some("elsewhere")),
            folder("a", None),
        ]);
        let uids: Vec<&str> = sorted.iter().map(|f| f.uid.as_str()).collect();
        assert_eq!(uids, ["x", "a", "b", "c"]);
        let cycle = parents_first(vec![folder("p", Some("q")), folder("q", Some("p"))]);
        assert_eq!(cycle.len(), 2);
    }

    #[test]
    fn models_compare_without_id_and_version() {
        let a = json!({"id": 1, "uid": "u", "version": 3, "title": "T", "panels": [1]});
        let b = json!({"id": null, "uid": "u", "version": 9, "title": "T", "panels": [1]});
        let c = json!({"id": 1, "uid": "u", "version": 3, "title": "T", "panels": [2]});
        assert!(same_model(&a, &b));
        assert!(!same_model(&a, &c));
    }

    #[test]
    fn report_summarises_counts_and_reasons() {
        let report = RestoreReport {
            set_id: "20261127T235501Z".into(),
            target: "http://g:3000".into(),
            dry_run: true,
            objects: vec![
                ObjectReport {
                    kind: ObjectKind::Folder,
                    uid: "a".into(),
                    title: "A".into(),
                    outcome: Outcome::Create,
                },
                ObjectReport {
                    kind: ObjectKind::Dashboard,
                    uid: "d".into(),
                    title: "D".into(),
                    outcome: failed("because".into()),
                },
            ],
        };
        assert!(!report.is_success());
        let text = report.to_string();
        assert!(text.contains("dry run"), "{text}");
        assert!(
            text.contains("folders:    1 create, 0 update, 0 unchanged, 0 failed"),
            "{text}"
        );
        assert!(
            text.contains("FAILED     dashboard  d  \"D\": because"),
            "{text}"
        );
    }

    #[test]
    fn uids_and_titles_restore_would_send_are_checked() {
        for ok in ["d000", "a-B_9", &"x".repeat(40)] {
            check_uid(ok).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "a b", "a.b", "%2E", &"x".repeat(41)] {
            assert!(check_uid(bad).is_err(), "{bad:?}");
        }
        check_title("Node exporter — full").unwrap();
        for bad in ["", "   ", "a\nb", "a\u{7}"] {
            assert!(check_title(bad).is_err(), "{bad:?}");
        }
        assert!(check_title(&"t".repeat(MAX_TITLE_CHARS + 1)).is_err());
    }

    #[test]
    fn folder_cycles_are_found() {
        assert_eq!(
            in_a_cycle(&[folder("a", None), folder("b", Some("a"))]),
            None
        );
        let cycle = [
            folder("x", None),
            folder("p", Some("q")),
            folder("q", Some("p")),
        ];
        assert_eq!(in_a_cycle(&cycle), Some("p"));
        assert_eq!(in_a_cycle(&[folder("s", Some("s"))]), Some("s"));
    }
}
