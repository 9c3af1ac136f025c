//! Backup set → Grafana.
//!
//! Restore converges Grafana to the set, level-triggered like the rest of
//! unitlet: each object is compared with what Grafana has now and only
//! posted when it differs, so restoring twice adds no dashboard versions.
//! Nothing is deleted: a replaced dashboard's previous version stays in
//! Grafana's version history, and the report names it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

use futures_util::{StreamExt, stream};
use serde_json::Value;

use super::client::{Client, DashboardDoc, Folder, SearchHit};
use super::kinds::{
    self, Ctx, MAX_DASHBOARD_FILE, MissingSecret, ObjectKind, ObjectReport, Outcome, RulesFile,
    SecureValues, failed, per_object,
};
use super::{GrafanaError, KIND};
use crate::backup::VerifiedSet;

/// Largest `folders.json` a restore reads (ours hold ~100 bytes a folder).
pub const MAX_FOLDERS_FILE: u64 = 64 << 20;

/// Grafana's own limit on uids (`util.IsShortUIDTooLong`).
const MAX_UID_LEN: usize = 40;

/// Longer titles than any Grafana UI shows; a longer one was not made there.
const MAX_TITLE_CHARS: usize = 1024;

/// How to restore.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Only read; report what a real run would do.
    pub dry_run: bool,
    /// Dashboards saved at once.
    pub concurrency: usize,
    /// Restore only these kinds; `None` for every kind the set holds.
    pub only: Option<BTreeSet<ObjectKind>>,
    /// Datasource secure values, for the secure fields Grafana lacks.
    pub secure_values: SecureValues,
}

impl Default for RestoreOptions {
    fn default() -> RestoreOptions {
        RestoreOptions {
            dry_run: false,
            concurrency: 8,
            only: None,
            secure_values: SecureValues::default(),
        }
    }
}

impl RestoreOptions {
    fn wants(&self, kind: ObjectKind) -> bool {
        self.only.as_ref().is_none_or(|o| o.contains(&kind))
    }
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
    /// Kinds in restore order; folders parents first, dashboards by title.
    pub objects: Vec<ObjectReport>,
    /// Datasource secure fields that could not be supplied: they need to
    /// be entered again (the datasource itself was restored).
    pub missing_secrets: Vec<MissingSecret>,
    /// The kinds that were restored (or would be), in order.
    pub kinds: Vec<ObjectKind>,
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

    /// True when every object was restored (or would be, in a dry run),
    /// secure fields included.
    pub fn is_success(&self) -> bool {
        self.missing_secrets.is_empty()
            && !self
                .objects
                .iter()
                .any(|o| matches!(o.outcome, Outcome::Failed { .. }))
    }

    /// Objects written (or, in a dry run, that would be): created or
    /// updated.
    pub fn writes(&self) -> usize {
        self.objects
            .iter()
            .filter(|o| matches!(o.outcome, Outcome::Create | Outcome::Update { .. }))
            .count()
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
        for kind in &self.kinds {
            let label = format!("{}:", kind.plural());
            writeln!(f, "{label:<19} {}", self.counts(*kind))?;
        }
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
        for m in &self.missing_secrets {
            writeln!(
                f,
                "  RE-ENTER   datasource {} {:?}: secure field {} was not restored (Grafana never shows it); put it in the --secure-values file as `{}: {{{}: ...}}` and restore again, or enter it in Grafana's datasource settings",
                m.uid, m.name, m.field, m.uid, m.field
            )?;
        }
        Ok(())
    }
}

/// Restores `set` into Grafana, kind by kind in dependency order (folders
/// parents first, their permissions, datasources, library panels,
/// dashboards up to `concurrency` at once, then alerting: templates,
/// contact points, mute timings, the policy tree, alert rules). With
/// `dry_run`, only reads.
///
/// Existence and equality come from listings (folder walk, search,
/// datasource, library and provisioning lists); one object is fetched only
/// when its listing entry may differ from the set (a dashboard listed with
/// the same title and folder). An object equal to the set after
/// normalising what Grafana assigns (ids, versions, timestamps,
/// provenance) is not written, so a second restore writes nothing.
/// Restoring into an empty Grafana saves each dashboard without reading it
/// first. Alerting is written with `X-Disable-Provenance: true`.
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
/// Datasource secure fields Grafana lacks are taken from
/// `secure_values`; those it cannot supply are listed in
/// [`RestoreReport::missing_secrets`] (the datasource is still restored).
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
    opts: &RestoreOptions,
) -> Result<RestoreReport, GrafanaError> {
    let info = set.info();
    if info.kind != KIND {
        return Err(GrafanaError::WrongKind {
            id: info.id.clone(),
            kind: info.kind.clone(),
        });
    }
    let dry_run = opts.dry_run;
    // Everything the restore will send is read and checked before the first
    // request, so a set that cannot be restored whole changes nothing.
    let checked = read_and_check(set)?;
    let ctx = Ctx {
        client,
        dry_run,
        secure_values: &opts.secure_values,
    };
    let existing = existing_folders(client, opts, &info.id, &checked).await?;
    let mut done = Restored::default();
    let folders = restore_folders(client, opts, &checked, &existing, &mut done).await?;
    restore_before_dashboards(&ctx, opts, &checked, &folders, &mut done).await?;
    if opts.wants(ObjectKind::Dashboard) {
        let message = format!("restored by unitlet from backup set {}", info.id);
        let restored =
            restore_dashboards(client, opts, &checked, &folders.failed, &message).await?;
        done.add(ObjectKind::Dashboard, restored);
    }
    restore_alerting(&ctx, opts, &checked, &mut done).await?;

    let report = RestoreReport {
        set_id: info.id.clone(),
        target: client.base_url().to_owned(),
        dry_run,
        objects: done.objects,
        missing_secrets: done.missing_secrets,
        kinds: done.kinds,
    };
    tracing::info!(
        set = %report.set_id,
        dry_run,
        folders = %report.counts(ObjectKind::Folder),
        dashboards = %report.counts(ObjectKind::Dashboard),
        writes = report.writes(),
        "Grafana restore finished"
    );
    Ok(report)
}

/// What a restore has done so far: the kinds it restored, in order, and
/// each object's outcome.
#[derive(Default)]
struct Restored {
    kinds: Vec<ObjectKind>,
    objects: Vec<ObjectReport>,
    missing_secrets: Vec<MissingSecret>,
}

impl Restored {
    fn add(&mut self, kind: ObjectKind, objects: impl IntoIterator<Item = ObjectReport>) {
        self.kinds.push(kind);
        self.objects.extend(objects);
    }
}

/// Grafana's folders by uid, from one walk of its folder tree (empty when
/// no restored kind uses folders). Refuses a set whose dashboards are in a
/// folder neither in the set nor in Grafana.
async fn existing_folders(
    client: &Client,
    opts: &RestoreOptions,
    set_id: &str,
    checked: &Checked,
) -> Result<HashMap<String, Folder>, GrafanaError> {
    let uses_folders = [
        ObjectKind::Folder,
        ObjectKind::FolderPermissions,
        ObjectKind::Dashboard,
    ]
    .into_iter()
    .any(|k| opts.wants(k));
    if !uses_folders {
        return Ok(HashMap::new());
    }
    let existing: HashMap<String, Folder> = client
        .all_folders()
        .await?
        .into_iter()
        .map(|f| (f.uid.clone(), f))
        .collect();
    if opts.wants(ObjectKind::Dashboard)
        && let Some(uid) = checked
            .outside_folders
            .iter()
            .find(|uid| !existing.contains_key(*uid))
    {
        return Err(GrafanaError::InvalidSet {
            id: set_id.to_owned(),
            file: "folders.json".to_owned(),
            reason: format!(
                "a dashboard of the set is in folder {uid:?}, which is neither in the set nor in Grafana"
            ),
        });
    }
    Ok(existing)
}

/// Which of the set's folders can hold objects after the folder step.
#[derive(Default)]
struct FolderOutcomes {
    /// Failed, or absent from Grafana and not restored now: nothing goes in.
    failed: HashSet<String>,
    /// Created by this restore (their permissions are new too).
    created: BTreeSet<String>,
}

/// The set's folders, parents first (when folders are restored at all).
async fn restore_folders(
    client: &Client,
    opts: &RestoreOptions,
    checked: &Checked,
    existing: &HashMap<String, Folder>,
    done: &mut Restored,
) -> Result<FolderOutcomes, GrafanaError> {
    let mut out = FolderOutcomes::default();
    if !opts.wants(ObjectKind::Folder) {
        // Not restored now: what Grafana lacks cannot hold anything.
        for folder in &checked.folders {
            if !existing.contains_key(&folder.uid) {
                out.failed.insert(folder.uid.clone());
            }
        }
        return Ok(out);
    }
    let mut reports = Vec::new();
    for folder in &checked.folders {
        let current = existing.get(&folder.uid);
        let outcome = restore_folder(client, folder, current, &out.failed, opts.dry_run).await?;
        match outcome {
            Outcome::Failed { .. } => {
                out.failed.insert(folder.uid.clone());
            }
            Outcome::Create => {
                out.created.insert(folder.uid.clone());
            }
            _ => {}
        }
        reports.push(ObjectReport {
            kind: ObjectKind::Folder,
            uid: folder.uid.clone(),
            title: folder.title.clone(),
            outcome,
        });
    }
    done.add(ObjectKind::Folder, reports);
    Ok(out)
}

/// Folder permissions, datasources and library panels: what dashboards
/// may refer to.
async fn restore_before_dashboards(
    ctx: &Ctx<'_>,
    opts: &RestoreOptions,
    checked: &Checked,
    folders: &FolderOutcomes,
    done: &mut Restored,
) -> Result<(), GrafanaError> {
    if opts.wants(ObjectKind::FolderPermissions)
        && let Some(perms) = &checked.permissions
    {
        done.kinds.push(ObjectKind::FolderPermissions);
        let titles: HashMap<String, String> = checked
            .folders
            .iter()
            .map(|f| (f.uid.clone(), f.title.clone()))
            .collect();
        let reports = ctx
            .permissions(perms, &folders.created, &folders.failed, &titles)
            .await?;
        done.objects.extend(reports);
    }
    if opts.wants(ObjectKind::Datasource)
        && let Some(items) = &checked.datasources
    {
        done.kinds.push(ObjectKind::Datasource);
        let reports = ctx.datasources(items, &mut done.missing_secrets).await?;
        done.objects.extend(reports);
    }
    if opts.wants(ObjectKind::LibraryPanel)
        && let Some(items) = &checked.library
    {
        done.kinds.push(ObjectKind::LibraryPanel);
        done.objects.extend(ctx.library_panels(items).await?);
    }
    Ok(())
}

/// The set's dashboards, up to `opts.concurrency` at once, reported in
/// title order.
async fn restore_dashboards(
    client: &Client,
    opts: &RestoreOptions,
    checked: &Checked,
    failed_folders: &HashSet<String>,
    message: &str,
) -> Result<Vec<ObjectReport>, GrafanaError> {
    // One search says which dashboards exist, where, under which title.
    let hits = client.search_dashboards().await?;
    let titles: HashMap<(Option<String>, String), String> = hits
        .iter()
        .map(|h| ((h.folder_uid.clone(), h.title.clone()), h.uid.clone()))
        .collect();
    let listed: HashMap<String, SearchHit> = hits.into_iter().map(|h| (h.uid.clone(), h)).collect();
    let dctx = DashboardContext {
        client,
        titles: &titles,
        listed: &listed,
        failed_folders,
        dry_run: opts.dry_run,
        message,
    };
    let mut results = stream::iter(&checked.dashboards)
        .map(|doc| dctx.restore(doc))
        .buffer_unordered(opts.concurrency.max(1));
    let mut restored = Vec::new();
    while let Some(result) = results.next().await {
        restored.push(result?);
    }
    drop(results);
    restored.sort_by(|a, b| (&a.title, &a.uid).cmp(&(&b.title, &b.uid)));
    Ok(restored)
}

/// Alerting, in dependency order: templates, contact points, mute timings,
/// the policy tree, alert rules.
async fn restore_alerting(
    ctx: &Ctx<'_>,
    opts: &RestoreOptions,
    checked: &Checked,
    done: &mut Restored,
) -> Result<(), GrafanaError> {
    for (kind, items) in [
        (ObjectKind::Template, &checked.templates),
        (ObjectKind::ContactPoint, &checked.contact_points),
        (ObjectKind::MuteTiming, &checked.mute_timings),
    ] {
        if opts.wants(kind)
            && let Some(items) = items
        {
            done.kinds.push(kind);
            done.objects.extend(ctx.keyed(kind, items).await?);
        }
    }
    if opts.wants(ObjectKind::Policies)
        && let Some(tree) = &checked.policies
    {
        done.kinds.push(ObjectKind::Policies);
        done.objects.extend(ctx.policies(tree).await?);
    }
    if opts.wants(ObjectKind::AlertRule)
        && let Some(file) = &checked.rules
    {
        done.kinds.push(ObjectKind::AlertRule);
        done.objects.extend(ctx.alert_rules(file).await?);
    }
    Ok(())
}

/// One folder, compared with its entry in the folder walk (`None`: absent).
async fn restore_folder(
    client: &Client,
    folder: &Folder,
    current: Option<&Folder>,
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
    /// Search results by uid: what exists, with title and folder.
    listed: &'a HashMap<String, SearchHit>,
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
        if let Some(reason) = self.blocked(doc) {
            return Ok(failed(reason));
        }
        let outcome = self.compare(doc).await?;
        if self.dry_run || !matches!(outcome, Outcome::Create | Outcome::Update { .. }) {
            return Ok(outcome);
        }
        self.save(doc, outcome).await
    }

    /// Why the dashboard cannot be saved at all: its folder is missing, or
    /// a different dashboard has its title in that folder.
    fn blocked(&self, doc: &DashboardDoc) -> Option<String> {
        let (uid, title, folder) = (doc.uid(), doc.title(), doc.folder_uid());
        if let Some(folder) = folder.filter(|f| self.failed_folders.contains(*f)) {
            return Some(format!(
                "its folder {folder} could not be restored or is not in Grafana"
            ));
        }
        let key = (folder.map(str::to_owned), title.to_owned());
        let other = self.titles.get(&key).filter(|other| *other != uid)?;
        Some(format!(
            "Grafana already has a different dashboard (uid {other}) titled {title:?} in {}, and allows only one dashboard per title in a folder; rename or move one of them, then restore again",
            place(folder)
        ))
    }

    /// What saving the dashboard would do, from the search listing, or
    /// when that cannot tell, from the current model.
    async fn compare(&self, doc: &DashboardDoc) -> Result<Outcome, GrafanaError> {
        let (uid, title, folder) = (doc.uid(), doc.title(), doc.folder_uid());
        let outcome = match self.listed.get(uid) {
            // Not listed: not there. Saved without reading it first.
            None => Outcome::Create,
            // Listed elsewhere or under another title: it differs for sure.
            Some(hit) if hit.title != title || hit.folder_uid.as_deref() != folder => {
                let mut detail =
                    "replaces the current version, which stays in Grafana's version history"
                        .to_owned();
                if hit.folder_uid.as_deref() != folder {
                    detail.push_str(&format!(
                        "; moves it from {} to {}",
                        place(hit.folder_uid.as_deref()),
                        place(folder)
                    ));
                }
                Outcome::Update { detail }
            }
            // Listed as in the set: only the model can tell.
            Some(_) => match self.client.dashboard(uid).await {
                Err(e) => return per_object(e),
                Ok(None) => Outcome::Create,
                Ok(Some(cur))
                    if same_model(&cur.dashboard, &doc.dashboard) && cur.folder_uid() == folder =>
                {
                    Outcome::Unchanged
                }
                Ok(Some(cur)) => {
                    let mut detail = match cur.version() {
                        Some(v) => format!(
                            "replaces version {v}, which stays in Grafana's version history"
                        ),
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
            },
        };
        Ok(outcome)
    }

    /// Saves the dashboard that `compare` found to create or update.
    async fn save(&self, doc: &DashboardDoc, outcome: Outcome) -> Result<Outcome, GrafanaError> {
        let (title, folder) = (doc.title(), doc.folder_uid());
        match self
            .client
            .save_dashboard(&doc.dashboard, folder, self.message)
            .await
        {
            // A dashboard search did not show (no permission to list it)
            // was there after all: say so rather than claim a creation.
            Ok(Some(version)) if version > 1 && outcome == Outcome::Create => Ok(Outcome::Update {
                detail: format!(
                    "replaces version {}, which search did not list; it stays in Grafana's version history",
                    version - 1
                ),
            }),
            Ok(_) => Ok(outcome),
            Err(e) if e.grafana_status() == Some("name-exists") => Ok(failed(format!(
                "Grafana refused it (412 name-exists): another dashboard titled {title:?} already exists in {}; rename or move one of them, then restore again ({e})",
                place(folder)
            ))),
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
    /// Each kind below is `None` when the set has no file for it (a set
    /// made before unitlet backed it up): restore leaves it alone.
    permissions: Option<BTreeMap<String, Vec<Value>>>,
    datasources: Option<Vec<Value>>,
    library: Option<Vec<Value>>,
    rules: Option<RulesFile>,
    contact_points: Option<Vec<Value>>,
    policies: Option<Value>,
    mute_timings: Option<Vec<Value>>,
    templates: Option<Vec<Value>>,
}

/// Reads `folders.json` and every dashboard file (each within its size
/// limit) and checks that everything restore would send is well-formed:
/// uids Grafana accepts and that name one object, non-empty titles without
/// control characters, no uid twice, no two dashboards with one title in
/// one folder, folder parents in the set and without cycles.
fn read_and_check(set: &VerifiedSet) -> Result<Checked, GrafanaError> {
    let (folders, folder_uids) = read_folders(set)?;
    let (dashboards, outside_folders) = read_dashboards(set, &folder_uids)?;
    let others = read_and_check_others(set, &folder_uids)?;
    Ok(Checked {
        folders,
        dashboards,
        outside_folders,
        ..others
    })
}

/// A set that fails restore's checks: which file and why.
fn invalid_set(id: &str, file: &str, reason: String) -> GrafanaError {
    GrafanaError::InvalidSet {
        id: id.to_owned(),
        file: file.to_owned(),
        reason,
    }
}

/// `folders.json`, parents first, and the set of its uids.
fn read_folders(set: &VerifiedSet) -> Result<(Vec<Folder>, HashSet<String>), GrafanaError> {
    let id = &set.info().id;
    let invalid = |file: &str, reason: String| invalid_set(id, file, reason);
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
    Ok((folders, folder_uids))
}

/// Every dashboard file, and the folders they are in that the set lacks.
fn read_dashboards(
    set: &VerifiedSet,
    folder_uids: &HashSet<String>,
) -> Result<(Vec<DashboardDoc>, BTreeSet<String>), GrafanaError> {
    let id = &set.info().id;
    let invalid = |file: &str, reason: String| invalid_set(id, file, reason);
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
    Ok((dashboards, outside_folders))
}

/// The files of the kinds beyond folders and dashboards, each optional.
fn read_and_check_others(
    set: &VerifiedSet,
    folder_uids: &HashSet<String>,
) -> Result<Checked, GrafanaError> {
    let id = &set.info().id;
    let invalid = |file: &str, reason: String| invalid_set(id, file, reason);
    // Objects keyed by `key` (a uid or a name), each with a non-empty `title`.
    let permissions: Option<BTreeMap<String, Vec<Value>>> =
        read_optional(set, kinds::PERMISSIONS_FILE)?;
    for uid in permissions.iter().flat_map(BTreeMap::keys) {
        if !folder_uids.contains(uid) {
            return Err(invalid(
                kinds::PERMISSIONS_FILE,
                format!("folder {uid:?} is not in folders.json"),
            ));
        }
    }
    let datasources = read_keyed(set, id, kinds::DATASOURCES_FILE, "uid", "name", true)?;
    let library = read_keyed(set, id, kinds::LIBRARY_FILE, "uid", "name", true)?;
    let rules: Option<RulesFile> = read_optional(set, kinds::RULES_FILE)?;
    if let Some(file) = &rules {
        check_rules(id, file)?;
    }
    let contact_points = read_keyed(set, id, kinds::CONTACT_POINTS_FILE, "uid", "name", true)?;
    let policies: Option<Value> = read_optional(set, kinds::POLICIES_FILE)?;
    if let Some(tree) = &policies
        && !tree.is_object()
    {
        return Err(invalid(
            kinds::POLICIES_FILE,
            "the policy tree is not a JSON object".to_owned(),
        ));
    }
    let mute_timings = read_keyed(set, id, kinds::MUTE_TIMINGS_FILE, "name", "name", false)?;
    let templates = read_keyed(set, id, kinds::TEMPLATES_FILE, "name", "name", false)?;
    Ok(Checked {
        folders: Vec::new(),
        dashboards: Vec::new(),
        outside_folders: BTreeSet::new(),
        permissions,
        datasources,
        library,
        rules,
        contact_points,
        policies,
        mute_timings,
        templates,
    })
}

/// The alert rules file: rules keyed by uid, groups with a folder, a title
/// and a positive interval, every rule in a listed group.
fn check_rules(id: &str, file: &RulesFile) -> Result<(), GrafanaError> {
    let invalid = |file: &str, reason: String| invalid_set(id, file, reason);
    keyed(id, kinds::RULES_FILE, &file.rules, "uid", "title", true)?;
    let groups: HashSet<(&str, &str)> = file
        .groups
        .iter()
        .map(|g| (g.folder_uid.as_str(), g.title.as_str()))
        .collect();
    for g in &file.groups {
        check_uid(&g.folder_uid)
            .map_err(|r| invalid(kinds::RULES_FILE, format!("group {:?}: {r}", g.title)))?;
        if g.title.trim().is_empty() || g.interval <= 0 {
            return Err(invalid(
                kinds::RULES_FILE,
                format!("group {:?} needs a title and a positive interval", g.title),
            ));
        }
    }
    for r in &file.rules {
        let key = (
            r["folderUID"].as_str().unwrap_or(""),
            r["ruleGroup"].as_str().unwrap_or(""),
        );
        if !groups.contains(&key) {
            return Err(invalid(
                kinds::RULES_FILE,
                format!(
                    "rule {:?} is in group {:?} of folder {:?}, which `groups` does not list",
                    r["uid"], key.1, key.0
                ),
            ));
        }
    }
    Ok(())
}

/// Every item is an object with a usable, distinct `key` (a Grafana uid
/// when `uid`) and a usable `title`.
fn keyed(
    id: &str,
    file: &str,
    items: &[Value],
    key: &str,
    title: &str,
    uid: bool,
) -> Result<(), GrafanaError> {
    let invalid = |file: &str, reason: String| GrafanaError::InvalidSet {
        id: id.to_owned(),
        file: file.to_owned(),
        reason,
    };
    let mut seen = HashSet::new();
    for v in items {
        let k = v[key].as_str().unwrap_or("");
        let what = format!("{key} {k:?}");
        if !v.is_object() {
            return Err(invalid(file, "an entry is not a JSON object".to_owned()));
        }
        if uid {
            check_uid(k).map_err(|r| invalid(file, format!("{what}: {r}")))?;
        } else if k.is_empty() || k.trim_matches('.').is_empty() {
            return Err(invalid(file, format!("{what}: not a usable name")));
        }
        check_title(v[title].as_str().unwrap_or(""))
            .map_err(|r| invalid(file, format!("{what}: {r}")))?;
        if !seen.insert(k.to_owned()) {
            return Err(invalid(file, format!("{what} is listed twice")));
        }
    }
    Ok(())
}

/// A list of objects in `file` of the set, if the set has it, each checked
/// to carry a distinct `key` (see [`keyed`]).
fn read_keyed(
    set: &VerifiedSet,
    id: &str,
    file: &str,
    key: &str,
    label: &str,
    uid: bool,
) -> Result<Option<Vec<Value>>, GrafanaError> {
    let items: Option<Vec<Value>> = read_optional(set, file)?;
    if let Some(items) = &items {
        keyed(id, file, items, key, label, uid)?;
    }
    Ok(items)
}

/// `file` of the set, if the set has it.
fn read_optional<T: serde::de::DeserializeOwned>(
    set: &VerifiedSet,
    file: &str,
) -> Result<Option<T>, GrafanaError> {
    if !set.files().iter().any(|e| e.path == file) {
        return Ok(None);
    }
    read_json(set, file, MAX_FOLDERS_FILE).map(Some)
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
            missing_secrets: vec![MissingSecret {
                uid: "prom".into(),
                name: "Prometheus".into(),
                field: "basicAuthPassword".into(),
            }],
            kinds: vec![ObjectKind::Folder, ObjectKind::Dashboard],
        };
        assert!(!report.is_success());
        let text = report.to_string();
        assert!(text.contains("dry run"), "{text}");
        assert!(
            text.contains("folders:            1 create, 0 update, 0 unchanged, 0 failed"),
            "{text}"
        );
        assert!(
            text.contains(
                "RE-ENTER   datasource prom \"Prometheus\": secure field basicAuthPassword"
            ),
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
