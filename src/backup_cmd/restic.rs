//! Backups whose destination is a restic repository
//! (`destination: {restic: {repository, passwordFile}}`).
//!
//! A set is made exactly as for a directory destination, in a staging
//! store under `STATE_DIR/backups/.restic-NAME/` (its `backup.json` with
//! every file's sha256 included), then `restic backup` of the set
//! directory makes one snapshot tagged `unitlet`, `manifest=NAME`,
//! `set=ID` (and `kind=`, `bytes=`, `files=` for the listing); the staging
//! copy is removed. `keep` is `restic forget --keep-last N --prune` of the
//! snapshots tagged `unitlet,manifest=NAME`.
//!
//! A restore (or verify) restores the snapshot into a staging store with
//! `restic restore --verify`, and from there everything is as for a
//! directory destination: the set's own sha256s are checked, then the same
//! restore procedure (journal, swap) runs. The staging store is removed
//! when the command ends, whatever its outcome.
//!
//! The repository is asked before anything else is done, so a wrong
//! password, a lock or an unreachable host fail a run before Prometheus
//! makes a snapshot, and change nothing.

use std::fs;
use std::path::{Path, PathBuf};

use super::{CommandError, SetCheck, kind, make_set};
use crate::backup::{BackupError, SetInfo, SetStatus, Store, own_backups_dir, set_created};
use crate::locations::Locations;
use crate::manifest::{self, BackupSource, BackupSpec, ResticDestination};
use crate::restic::{Repo, Snapshot};

/// The tags every snapshot of Backup `name` has.
fn own_tags(name: &str) -> Vec<String> {
    vec!["unitlet".to_owned(), format!("manifest={name}")]
}

/// The repository, once its password file was checked like every secret
/// file (private, regular, yours).
fn open_repo(r: &ResticDestination) -> Result<Repo, CommandError> {
    let path = &r.password_file;
    let err = |reason: String| CommandError::Secret {
        what: "restic repository password",
        path: path.clone(),
        reason,
    };
    manifest::check_secret_file(path).map_err(err)?;
    let meta = fs::metadata(path).map_err(|e| err(e.to_string()))?;
    if meta.len() == 0 {
        return Err(err("the file is empty".to_owned()));
    }
    Ok(Repo::new(&r.repository, path))
}

/// Where a set of Backup `name` is staged on its way to or from the
/// repository: `STATE_DIR/backups/.restic-NAME/WHAT-PID`, removed on drop.
pub(super) struct Staging {
    dir: PathBuf,
    store: Store,
}

impl Staging {
    fn new(
        loc: &Locations,
        name: &str,
        what: &str,
        spec: &BackupSpec,
    ) -> Result<Staging, CommandError> {
        let own = own_backups_dir(loc);
        let parent = own.join(format!(".restic-{name}"));
        remove_dead_stagings(&parent);
        let dir = parent.join(format!("{what}-{}", std::process::id()));
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(|source| BackupError::Delete {
                path: dir.clone(),
                source,
            })?;
        }
        let store = Store::open_in(&dir, Some(&own), name, kind(spec))?;
        Ok(Staging { dir, store })
    }

    /// The staging store.
    pub(super) fn store(&self) -> &Store {
        &self.store
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot remove the restic staging directory; the next run removes it");
        }
    }
}

/// Removes the staging directories of runs that are over (killed: their
/// PID is gone).
fn remove_dead_stagings(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .rsplit_once('-')
            .and_then(|(_, p)| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists()
            && let Err(err) = fs::remove_dir_all(e.path())
        {
            tracing::warn!(dir = %e.path().display(), error = %err, "cannot remove a killed run's restic staging directory");
        }
    }
}

/// What `unitlet backup` shows as the set's place: the repository and the
/// snapshot.
fn place(repo: &Repo, snapshot: &str) -> PathBuf {
    PathBuf::from(format!("{} snapshot {snapshot}", repo.shown()))
}

/// `unitlet backup NAME` into a restic repository: the new set and the IDs
/// of the sets `keep` removed. A failed `forget` after a complete backup is
/// a warning, like a failed prune.
pub(super) async fn backup(
    loc: &Locations,
    name: &str,
    spec: &BackupSpec,
    r: &ResticDestination,
    progress: bool,
    warnings: &mut Vec<String>,
) -> Result<(SetInfo, Vec<String>), CommandError> {
    let repo = open_repo(r)?;
    // Asked first: nothing is made when the repository cannot be used.
    let existing = repo.snapshots(&own_tags(name)).await?;
    let staging = Staging::new(loc, name, "backup", spec)?;
    // The new set's ID must sort after the repository's: an empty
    // directory named as the newest makes `Store::begin` choose a later one.
    let newest = existing
        .iter()
        .filter_map(|s| s.tag("set"))
        .filter(|id| set_created(id).is_some())
        .max();
    if let Some(id) = newest {
        let dir = staging.store().path().join(id);
        fs::create_dir(&dir).map_err(|source| BackupError::Write {
            id: id.to_owned(),
            path: dir,
            source,
        })?;
    }
    let set = make_set(name, spec, staging.store(), progress, warnings).await?;
    let mut tags = own_tags(name);
    tags.extend([
        format!("set={}", set.id),
        format!("kind={}", set.kind),
        format!("bytes={}", set.size),
        format!("files={}", set.files),
    ]);
    // The newest snapshot of this Backup is the parent: unchanged files
    // (linked blocks) are not read again.
    let parent = existing.last().map(|s| s.id.as_str());
    let backed = repo.backup(&set.path, &tags, parent).await?;
    let snapshot = backed.snapshot_id;
    drop(staging);
    let deleted = match repo
        .forget_keep_last(spec.keep.max(1), &own_tags(name))
        .await
    {
        Ok(removed) => removed
            .iter()
            .filter_map(|s| s.tag("set").map(str::to_owned))
            .collect(),
        Err(e) => {
            warnings.push(format!(
                "set {} is complete (snapshot {snapshot}), but keep could not be applied: {e}",
                set.id
            ));
            Vec::new()
        }
    };
    let info = SetInfo {
        path: place(&repo, &snapshot),
        // What restic added; it says nothing of blocks or what it shared.
        new_blocks: None,
        written: backed.data_added,
        shared: None,
        ..set
    };
    Ok((info, deleted))
}

/// Backup `name`'s sets in its repository, oldest first: every snapshot
/// with its tags and a set ID, or an error (never a partial list).
pub(super) async fn list(
    name: &str,
    spec: &BackupSpec,
    r: &ResticDestination,
) -> Result<Vec<SetInfo>, CommandError> {
    let repo = open_repo(r)?;
    let snapshots = repo.snapshots(&own_tags(name)).await?;
    let mut sets: Vec<SetInfo> = snapshots
        .iter()
        .filter_map(|s| set_info(&repo, name, spec, s))
        .collect();
    sets.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(sets)
}

/// A snapshot as a set (`None` when its `set=` tag is not a set ID).
fn set_info(repo: &Repo, name: &str, spec: &BackupSpec, s: &Snapshot) -> Option<SetInfo> {
    let id = s.tag("set")?;
    let created = set_created(id)?;
    let source = match &spec.source {
        BackupSource::Prometheus { url, .. } | BackupSource::Grafana { url, .. } => url.clone(),
    };
    Some(SetInfo {
        id: id.to_owned(),
        backup: Some(name.to_owned()),
        legacy: false,
        kind: s.tag("kind").unwrap_or(kind(spec)).to_owned(),
        source,
        created,
        size: s.tag("bytes").and_then(|b| b.parse().ok()).unwrap_or(0),
        files: s.tag("files").and_then(|b| b.parse().ok()).unwrap_or(0),
        status: SetStatus::Complete,
        path: place(repo, &s.short_id),
        new_blocks: None,
        written: None,
        shared: None,
    })
}

/// Set `id` of Backup `name`, restored from its repository (`restic
/// restore --verify`) into a staging store, not yet checked against its
/// `backup.json` (the caller's `Store::verify` does that).
pub(super) async fn fetch(
    loc: &Locations,
    name: &str,
    spec: &BackupSpec,
    r: &ResticDestination,
    id: &str,
) -> Result<Staging, CommandError> {
    let repo = open_repo(r)?;
    if set_created(id).is_none() {
        return Err(BackupError::InvalidId { id: id.to_owned() }.into());
    }
    let mut tags = own_tags(name);
    tags.push(format!("set={id}"));
    let snapshots = repo.snapshots(&tags).await?;
    let Some(snapshot) = snapshots.last() else {
        return Err(BackupError::NotFound {
            id: id.to_owned(),
            destination: PathBuf::from(format!("restic repository {}", repo.shown())),
        }
        .into());
    };
    let staging = Staging::new(loc, name, "restore", spec)?;
    repo.restore(&snapshot.id, &staging.store().path().join(id))
        .await?;
    Ok(staging)
}

/// `unitlet backups verify NAME [ID]` for a restic destination: each set
/// restored (restic checks what it restores) and checked against its
/// `backup.json` ([`Store::check`]).
pub(super) async fn verify(
    loc: &Locations,
    name: &str,
    spec: &BackupSpec,
    r: &ResticDestination,
    id: Option<&str>,
    deep: bool,
) -> Result<Vec<SetCheck>, CommandError> {
    let ids: Vec<String> = match id {
        Some(id) => vec![id.to_owned()],
        None => list(name, spec, r)
            .await?
            .into_iter()
            .map(|s| s.id)
            .collect(),
    };
    let mut checks = Vec::new();
    for id in ids {
        let checked = match fetch(loc, name, spec, r, &id).await {
            Ok(staging) => staging.store().check(&id, deep),
            Err(CommandError::Store(e)) => Err(e),
            Err(e) => return Err(e),
        };
        checks.push((id, checked));
    }
    Ok(checks)
}
