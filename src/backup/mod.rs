//! Backup sets on disk, shared by every kind of backup (Grafana, Prometheus).
//!
//! A set is a directory `DESTINATION/ID/`. Its `backup.json` lists every file
//! with size and sha256 and is written last, so its presence is the single
//! commit point of a backup run.
//!
//! Architecture Invariant: a set is complete if and only if its `backup.json`
//! exists and says `"status": "complete"`. Nothing else in this module, nor in
//! its callers, infers completeness from file counts or timestamps, so a run
//! killed at any moment leaves a set that is listed as incomplete, never
//! counted towards `keep`, never pruned and never restored (the next run
//! of the same Backup removes it). A run that
//! fails rather than being killed removes its set ([`SetWriter`]'s drop):
//! left behind, partial sets could fill the destination so that every
//! later run failed too. A full destination fails the run with
//! [`BackupError::DestinationFull`], saying what the set needed.
//!
//! Architecture Invariant: this module only ever deletes directories whose
//! names parse as set IDs and that are the [`Store`]'s own Backup and kind:
//! complete sets whose `backup.json` names them (prune), the set of the
//! run that is failing, and incomplete sets whose `.in-progress.json` names
//! them and that no live run holds locked (a killed run's, removed when the
//! next run begins). Anything else in the destination (another Backup's
//! sets, sets of unitlet 0.1 that recorded no Backup, what a person put
//! there) is left alone. The one exception is the destination's block
//! store, `blocks/` (see the `blocks` module): its blocks, `.incoming-*`
//! and `.deleting-*` directories are unitlet's own, and a block is freed
//! only when no set directory links it.
//!
//! Architecture Invariant: a [`Store`] belongs to one Backup. Several
//! Backups may share a destination; each only lists, prunes and restores
//! the sets it made, plus (listed only, marked legacy) sets that recorded no
//! Backup at all.
//!
//! Architecture Invariant: nothing in a set may be a symlink, nor the set
//! directory itself. Set files are opened component by component with
//! `O_NOFOLLOW`, so a set cannot make a restore read outside of it.
//!
//! Every read of something on disk that another process could have put there
//! is capped ([`MAX_MANIFEST_BYTES`], [`VerifiedSet::read`]'s limit), and the
//! size is checked from metadata before reading.
//!
//! Durability: files of a set are written to a temporary name and renamed,
//! so no half-written file ever appears under its final name; they are not
//! fsynced as they are written (2000 fsyncs in a row made a 1000-dashboard
//! backup take seconds). Instead [`SetWriter::finish`] fsyncs the set's
//! files concurrently (`fsutil::sync_files`; never a `syncfs`, whose cost is
//! whatever else is dirty on the disk), and only then writes `backup.json` with temp file,
//! fsync, rename and directory fsync. A crash before that leaves a set
//! without `backup.json`, which is incomplete by the invariant above.
//!
//! All I/O here is blocking `std::fs`: backups run in the short-lived
//! `unitlet backup` process, and blocking keeps the fsync ordering obvious.

mod blocks;
mod error;
mod last_run;
pub use blocks::{BLOCKS_DIR, BlockStore, StoredBlock};
pub use error::BackupError;
pub use last_run::{LastRun, last_run_path, own_backups_dir, read_last_run, read_last_runs};

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, DirBuilder, File};
use std::io::{self, Read};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use crate::fsutil::sync_dir;
use crate::manifest::check_destination_path;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The file whose presence makes a set complete.
pub const MANIFEST_FILE: &str = "backup.json";

/// Written at the start of a run so an incomplete set can still say what it
/// was a backup of; it is never part of the set's file list.
const IN_PROGRESS_FILE: &str = ".in-progress.json";

/// Prefix of a set being deleted: renaming first makes a deletion atomic, so
/// a crash mid-delete never leaves a half-deleted set under its own ID.
const DELETING_PREFIX: &str = ".deleting-";

/// Bumped when the layout of `backup.json` changes incompatibly.
const FORMAT_VERSION: u32 = 1;

/// Largest `backup.json` read. Ours hold ~150 bytes per file, so this is
/// hundreds of thousands of files; anything bigger was not written by us and
/// is refused (by its size on disk) before it is read.
pub const MAX_MANIFEST_BYTES: u64 = 64 << 20;

/// Largest set file [`VerifiedSet::read`] reads into memory (metadata
/// files such as a TSDB block's `meta.json`; bulk data is copied, not read).
pub const DEFAULT_READ_LIMIT: u64 = 64 << 20;

/// Largest `.in-progress.json` read; ours are a few hundred bytes.
const MAX_MARKER_BYTES: u64 = 64 << 10;

type Result<T, E = BackupError> = std::result::Result<T, E>;

/// Whether a set may be counted, listed as complete and restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SetStatus {
    /// `backup.json` was written: every listed file is in place.
    Complete,
    /// The run did not finish (or is still running).
    Incomplete,
}

impl fmt::Display for SetStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SetStatus::Complete => "complete",
            SetStatus::Incomplete => "incomplete",
        })
    }
}

/// One file of a set, as recorded in `backup.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative to the set directory, `/`-separated.
    pub path: String,
    /// In bytes; checked before hashing because it is cheap.
    pub size: u64,
    /// Lowercase hex; what `verify` compares against.
    pub sha256: String,
}

/// The content of `backup.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SetManifest {
    format_version: u32,
    id: String,
    /// The Backup manifest that made the set; `None` in sets of unitlet
    /// 0.1, which are therefore never pruned or restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    backup: Option<String>,
    kind: String,
    source: String,
    created: String,
    completed: String,
    status: SetStatus,
    files: Vec<FileEntry>,
    /// The blocks the set links from the destination's block store
    /// (incremental sets, unitlet 0.3); absent in sets that hold their own
    /// copies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    blocks: Option<Vec<SetBlock>>,
}

/// One stored block a set links, as `backup.json` records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetBlock {
    /// The block's name (its ULID), its directory in the set.
    pub name: String,
    /// Its directory in `DESTINATION/blocks/`.
    pub key: String,
    /// Stored by this set's run (`false`: shared with an earlier set).
    pub new: bool,
    /// Total bytes of its files.
    pub bytes: u64,
}

/// What an incomplete set knows about itself.
#[derive(Debug, Serialize, Deserialize)]
struct InProgress {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    backup: Option<String>,
    kind: String,
    source: String,
    created: String,
}

/// A summary of one set, as `unitlet backups` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SetInfo {
    /// Sortable UTC timestamp, unique within the destination.
    pub id: String,
    /// The Backup manifest that made it; `None` when the set does not say
    /// (made by unitlet 0.1, or its run left no trace of it).
    pub backup: Option<String>,
    /// `backup` is unknown: the set is listed, but never pruned or
    /// restored, since it may be another Backup's.
    pub legacy: bool,
    /// `grafana`, `prometheus`, ...; empty if an incomplete set lost even
    /// its in-progress marker.
    pub kind: String,
    /// Where the data came from (a URL); same caveat as `kind`.
    pub source: String,
    /// RFC 3339, UTC.
    pub created: String,
    /// Total bytes of the set's files.
    pub size: u64,
    /// Number of files (not counting `backup.json`).
    pub files: usize,
    /// Only complete sets are counted, pruned or restored.
    pub status: SetStatus,
    /// The set directory.
    pub path: PathBuf,
    /// Blocks stored by this set's run; `None` for sets that hold their
    /// own copies (not incremental).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_blocks: Option<usize>,
    /// Bytes this set's run added to the destination (new blocks and
    /// everything not shared); `None` as for `new_blocks`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub written: Option<u64>,
    /// Bytes of blocks shared with earlier sets (linked, not written).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared: Option<u64>,
}

/// A set whose every file was just re-hashed and found as recorded.
///
/// Only [`Store::verify`] makes one, so code that takes a `&VerifiedSet`
/// cannot be handed an incomplete or damaged set.
#[derive(Debug, Clone)]
pub struct VerifiedSet {
    info: SetInfo,
    files: Vec<FileEntry>,
}

impl VerifiedSet {
    /// The set's summary.
    pub fn info(&self) -> &SetInfo {
        &self.info
    }

    /// The set directory.
    pub fn dir(&self) -> &Path {
        &self.info.path
    }

    /// The files recorded in `backup.json`.
    pub fn files(&self) -> &[FileEntry] {
        &self.files
    }

    /// Opens a recorded file for streaming (a restore's copy) the way
    /// [`Store::verify`] did: without following a symlink anywhere on the
    /// way, and only if it is a regular file. The caller compares what it
    /// reads with [`FileEntry::sha256`] if the bytes must be the verified
    /// ones.
    ///
    /// # Errors
    /// [`BackupError::Corrupt`] if it is not listed or missing,
    /// [`BackupError::Symlink`], or [`BackupError::Read`].
    pub fn open_file(&self, rel: &str) -> Result<File> {
        if !self.files.iter().any(|f| f.path == rel) {
            return Err(BackupError::Corrupt {
                id: self.info.id.clone(),
                file: rel.to_owned(),
                problem: "is not listed in backup.json".to_owned(),
            });
        }
        open_in_set(&self.info.path, rel).map_err(|e| e.into_error(&self.info.id, rel))
    }

    /// [`VerifiedSet::read_limited`] with a limit of [`DEFAULT_READ_LIMIT`].
    ///
    /// # Errors
    /// As [`VerifiedSet::read_limited`].
    pub fn read(&self, rel: &str) -> Result<Vec<u8>> {
        self.read_limited(rel, DEFAULT_READ_LIMIT)
    }

    /// Reads a recorded file of at most `limit` bytes and checks its hash
    /// again, so what a restore uses is exactly what was verified even if
    /// the disk changed since.
    ///
    /// # Errors
    /// [`BackupError::TooLarge`] if the file (as recorded, or as it is now)
    /// is over `limit`, checked before reading; [`BackupError::Corrupt`] if
    /// it is not in the set or changed; [`BackupError::Symlink`] if it or a
    /// directory on its way became a symlink; [`BackupError::Read`] if it
    /// cannot be read.
    pub fn read_limited(&self, rel: &str, limit: u64) -> Result<Vec<u8>> {
        let id = &self.info.id;
        let corrupt = |problem: &str| BackupError::Corrupt {
            id: id.clone(),
            file: rel.to_owned(),
            problem: problem.to_owned(),
        };
        let entry = self
            .files
            .iter()
            .find(|f| f.path == rel)
            .ok_or_else(|| corrupt("is not listed in backup.json"))?;
        let path = self.info.path.join(rel);
        let too_large = |size| BackupError::TooLarge {
            path: path.clone(),
            size,
            limit,
            what: "a file read from a backup set",
        };
        if entry.size > limit {
            return Err(too_large(entry.size));
        }
        let file = open_in_set(&self.info.path, rel).map_err(|e| e.into_error(id, rel))?;
        let size = file
            .metadata()
            .map_err(|source| BackupError::Read {
                path: path.clone(),
                source,
            })?
            .len();
        if size > limit {
            return Err(too_large(size));
        }
        let mut bytes = Vec::with_capacity(size as usize);
        file.take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| BackupError::Read {
                path: path.clone(),
                source,
            })?;
        let sha = hex::encode(Sha256::digest(&bytes));
        if bytes.len() as u64 != entry.size || sha != entry.sha256 {
            return Err(corrupt("changed after it was verified"));
        }
        Ok(bytes)
    }
}

/// The sets of one Backup in a destination directory.
///
/// Several Backups may share a destination: a `Store` only lists, prunes
/// and verifies the sets whose `backup.json` names its Backup (plus, listed
/// only, legacy sets that name none).
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    /// The Backup manifest this store belongs to.
    backup: String,
    /// Its kind (`grafana`, `prometheus`): a set of another kind is never
    /// pruned by it, even under the same name.
    kind: String,
}

impl Store {
    /// Opens (creating, mode 0700) the destination of Backup `backup` of
    /// `kind`.
    ///
    /// # Errors
    /// [`BackupError::UnsafeDestination`] for a system directory (see
    /// [`check_destination_path`], also applied to where symlinks lead),
    /// or a directory another user owns or that group or others may write:
    /// anyone who can write there could plant a set that a restore then
    /// trusts. [`BackupError::Destination`] if it cannot be created or is
    /// not writable: better to fail here, naming the path, than halfway
    /// through a backup.
    pub fn open(destination: &Path, backup: &str, kind: &str) -> Result<Store> {
        Store::open_in(destination, None, backup, kind)
    }

    /// [`Store::open`], where `own` is the directory unitlet keeps its own
    /// backups in (`STATE_DIR/backups`): a destination inside it is
    /// unitlet's own wherever the state directory is (quickstart puts it
    /// under `/var/lib`), so it is not refused as a system directory.
    /// Ownership and mode are checked all the same.
    ///
    /// # Errors
    /// As [`Store::open`].
    pub fn open_in(
        destination: &Path,
        own: Option<&Path>,
        backup: &str,
        kind: &str,
    ) -> Result<Store> {
        let unsafe_dest = |reason: String| BackupError::UnsafeDestination {
            path: destination.to_path_buf(),
            reason,
        };
        check_path_in(destination, own).map_err(unsafe_dest)?;
        let err = |source| BackupError::Destination {
            path: destination.to_path_buf(),
            source,
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(destination)
            .map_err(err)?;
        let real = fs::canonicalize(destination).map_err(err)?;
        if real != destination {
            let own_real = own.and_then(|o| fs::canonicalize(o).ok());
            check_path_in(&real, own_real.as_deref())
                .map_err(|r| unsafe_dest(format!("it leads to {}: {r}", real.display())))?;
        }
        let meta = fs::metadata(&real).map_err(err)?;
        check_destination_owner(destination, &meta).map_err(unsafe_dest)?;
        rustix::fs::access(
            destination,
            rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK,
        )
        .map_err(|e| err(io::Error::from(e)))?;
        Ok(Store {
            root: destination.to_path_buf(),
            backup: backup.to_owned(),
            kind: kind.to_owned(),
        })
    }

    /// The Backup this store belongs to.
    pub fn backup(&self) -> &str {
        &self.backup
    }

    /// The destination directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Starts a new set of this store's Backup and kind, from `source`,
    /// after removing the incomplete sets of this Backup's killed runs.
    ///
    /// # Guarantees
    /// The new ID sorts after every set already in the destination, even if
    /// the clock went backwards or another run started in the same second.
    ///
    /// # Errors
    /// [`BackupError::Read`] if the destination cannot be listed,
    /// [`BackupError::Write`] if the set directory cannot be created.
    pub fn begin(&self, source: &str) -> Result<SetWriter> {
        self.remove_abandoned();
        let now = SystemTime::now();
        let created = humantime::format_rfc3339_seconds(now).to_string();
        let stamp: String = created.chars().filter(|c| *c != '-' && *c != ':').collect();
        let latest = self.set_ids()?.into_iter().max();
        let (stamp, mut seq) = match latest {
            Some(SetId { stamp: last, seq }) if last >= stamp => (last, seq + 1),
            _ => (stamp, 1),
        };
        let (id, dir) = loop {
            let id = SetId {
                stamp: stamp.clone(),
                seq,
            }
            .to_string();
            let dir = self.root.join(&id);
            match DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => break (id, dir),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => seq += 1,
                Err(source) => {
                    return Err(BackupError::Write {
                        id,
                        path: dir,
                        source,
                    });
                }
            }
        };
        let marker = InProgress {
            backup: Some(self.backup.clone()),
            kind: self.kind.clone(),
            source: source.to_owned(),
            created: created.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&marker).map_err(io::Error::other);
        let lock = match bytes.and_then(|b| write_locked_marker(&dir, &b)) {
            Ok(lock) => lock,
            Err(source) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(BackupError::Write {
                    id,
                    path: dir.join(IN_PROGRESS_FILE),
                    source,
                });
            }
        };
        tracing::debug!(set = %id, dir = %dir.display(), "started backup set");
        Ok(SetWriter {
            root: self.root.clone(),
            dir,
            id,
            backup: self.backup.clone(),
            kind: self.kind.clone(),
            source: source.to_owned(),
            created,
            files: BTreeMap::new(),
            blocks: None,
            finished: false,
            full: None,
            block: space(&self.root).map_or(4096, |s| s.block),
            _lock: lock,
        })
    }

    /// The destination's block store (created if needed), locked until
    /// dropped: see the `blocks` module for its layout and crash safety.
    ///
    /// # Errors
    /// [`BackupError::Destination`] if it cannot be created or locked.
    pub fn blocks(&self) -> Result<BlockStore> {
        BlockStore::open(&self.root)
    }

    /// This Backup's sets, oldest first, complete or not, and the legacy
    /// sets that do not say whose they are (marked [`SetInfo::legacy`]).
    /// Other Backups' sets in a shared destination are left out.
    ///
    /// # Errors
    /// [`BackupError::Read`] if the destination cannot be listed.
    pub fn list(&self) -> Result<Vec<SetInfo>> {
        let mut ids = self.set_ids()?;
        ids.sort();
        Ok(ids
            .iter()
            .map(|id| self.info(&id.to_string()))
            .filter(|s| s.legacy || s.backup.as_deref() == Some(self.backup.as_str()))
            .collect())
    }

    /// Deletes this Backup's oldest complete sets beyond its newest `keep`.
    ///
    /// Only sets whose `backup.json` names this store's Backup and kind are
    /// counted or deleted: never another Backup's sets in a shared
    /// destination, nor legacy sets that name no Backup (they could be
    /// anyone's). Incomplete sets are neither counted nor deleted here (the
    /// next run's [`Store::begin`] removes a killed run's, never one that a
    /// run is still writing). `protect` (the set
    /// just made) is never deleted. Returns the deleted IDs, oldest first.
    ///
    /// # Errors
    /// [`BackupError::InvalidKeep`] for `keep == 0`; [`BackupError::Delete`]
    /// if a set cannot be removed (sets deleted before it stay deleted).
    pub fn prune(&self, keep: usize, protect: &str) -> Result<Vec<String>> {
        if keep == 0 {
            return Err(BackupError::InvalidKeep);
        }
        self.remove_leftover_deletions();
        let complete: Vec<SetInfo> = self
            .list()?
            .into_iter()
            .filter(|s| {
                s.status == SetStatus::Complete
                    && s.backup.as_deref() == Some(self.backup.as_str())
                    && s.kind == self.kind
            })
            .collect();
        let excess = complete.len().saturating_sub(keep);
        let mut deleted = Vec::new();
        for set in complete.into_iter().take(excess) {
            if set.id == protect {
                continue;
            }
            let aside = self.root.join(format!("{DELETING_PREFIX}{}", set.id));
            let err = |source| BackupError::Delete {
                path: set.path.clone(),
                source,
            };
            fs::rename(&set.path, &aside).map_err(err)?;
            sync_dir(&self.root).map_err(err)?;
            blocks::crash_point("set-deleting");
            fs::remove_dir_all(&aside).map_err(err)?;
            tracing::info!(set = %set.id, "deleted old backup set");
            deleted.push(set.id);
        }
        // Blocks only the deleted sets (or killed runs) linked are freed;
        // a destination without a block store has nothing to free.
        if self.root.join(BLOCKS_DIR).is_dir() {
            self.blocks()?.sweep()?;
        }
        Ok(deleted)
    }

    /// Re-hashes every file listed in the set's `backup.json`, after
    /// checking that the set is this Backup's and holds no symlink.
    ///
    /// # Errors
    /// [`BackupError::InvalidId`], [`BackupError::NotFound`],
    /// [`BackupError::Symlink`] (the set directory or anything in it),
    /// [`BackupError::Incomplete`] (no `backup.json`: never restorable),
    /// [`BackupError::TooLarge`] or [`BackupError::Manifest`] for its
    /// `backup.json`, [`BackupError::Legacy`] or
    /// [`BackupError::OtherBackup`] for a set that is not (provably) this
    /// Backup's, or [`BackupError::Corrupt`] naming the first file that is
    /// outside the set, missing, or whose size or sha256 differ.
    pub fn verify(&self, id: &str) -> Result<VerifiedSet> {
        self.verify_with(id, true)
    }

    /// `unitlet backups verify`: [`Store::verify`] when `deep`, else the
    /// same checks with each file's size taken from its metadata instead of
    /// re-hashing it (hashes were computed when the files were stored).
    ///
    /// # Errors
    /// As [`Store::verify`].
    pub fn check(&self, id: &str, deep: bool) -> Result<SetInfo> {
        self.verify_with(id, deep).map(|s| s.info)
    }

    /// [`Store::verify`] when `deep`; else the same checks with sizes only,
    /// for a caller that hashes every file itself (restore, as it copies
    /// the set).
    ///
    /// # Errors
    /// As [`Store::verify`].
    pub fn verify_with(&self, id: &str, deep: bool) -> Result<VerifiedSet> {
        let dir = self.set_dir(id)?;
        let manifest = match read_manifest(&dir, id)? {
            Some(m) if m.status == SetStatus::Complete => m,
            _ => {
                return Err(BackupError::Incomplete {
                    id: id.to_owned(),
                    destination: self.root.clone(),
                });
            }
        };
        self.check_owner(id, &manifest)?;
        if let Some(link) = find_symlink(&dir).map_err(|source| BackupError::Read {
            path: dir.clone(),
            source,
        })? {
            return Err(BackupError::Symlink {
                id: id.to_owned(),
                path: link,
            });
        }
        for entry in &manifest.files {
            verify_file(&dir, id, entry, deep)?;
        }
        Ok(VerifiedSet {
            info: info_from_manifest(&manifest, dir),
            files: manifest.files,
        })
    }

    /// The directory of set `id`: a valid ID naming a directory (not a
    /// symlink) in the destination.
    fn set_dir(&self, id: &str) -> Result<PathBuf> {
        if id.parse::<SetId>().is_err() {
            return Err(BackupError::InvalidId { id: id.to_owned() });
        }
        let dir = self.root.join(id);
        let not_found = || BackupError::NotFound {
            id: id.to_owned(),
            destination: self.root.clone(),
        };
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.file_type().is_symlink() => Err(BackupError::Symlink {
                id: id.to_owned(),
                path: dir,
            }),
            Ok(m) if m.is_dir() => Ok(dir),
            Ok(_) => Err(not_found()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(not_found()),
            Err(source) => Err(BackupError::Read { path: dir, source }),
        }
    }

    /// A set is restored only by the Backup that made it (as its
    /// `backup.json` records).
    fn check_owner(&self, id: &str, manifest: &SetManifest) -> Result<()> {
        match &manifest.backup {
            None => Err(BackupError::Legacy {
                id: id.to_owned(),
                destination: self.root.clone(),
                backup: self.backup.clone(),
            }),
            Some(owner) if *owner != self.backup => Err(BackupError::OtherBackup {
                id: id.to_owned(),
                destination: self.root.clone(),
                owner: owner.clone(),
                kind: manifest.kind.clone(),
                backup: self.backup.clone(),
            }),
            Some(_) => Ok(()),
        }
    }

    /// Every directory in the destination whose name is a set ID.
    fn set_ids(&self) -> Result<Vec<SetId>> {
        let read_err = |source| BackupError::Read {
            path: self.root.clone(),
            source,
        };
        let mut ids = Vec::new();
        for entry in fs::read_dir(&self.root).map_err(read_err)? {
            let entry = entry.map_err(read_err)?;
            // Symlinks are skipped: prune must never follow one out of the
            // destination.
            if !entry.file_type().map_err(read_err)?.is_dir() {
                continue;
            }
            if let Some(id) = entry.file_name().to_str().and_then(|n| n.parse().ok()) {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// Summary of one set; never fails, because listing must show damaged
    /// sets (as incomplete) rather than hide the others.
    fn info(&self, id: &str) -> SetInfo {
        let dir = self.root.join(id);
        match read_manifest(&dir, id) {
            Ok(Some(m)) if m.status == SetStatus::Complete => return info_from_manifest(&m, dir),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "listing the set as incomplete"),
        }
        let marker: Option<InProgress> = read_capped(&dir, IN_PROGRESS_FILE, MAX_MARKER_BYTES)
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let (size, files) = dir_usage(&dir);
        let (backup, kind, source, created) = match marker {
            Some(m) => (m.backup, m.kind, m.source, m.created),
            None => (
                None,
                String::new(),
                String::new(),
                id.parse::<SetId>().map(|i| i.created()).unwrap_or_default(),
            ),
        };
        SetInfo {
            id: id.to_owned(),
            legacy: backup.is_none(),
            backup,
            kind,
            source,
            created,
            size,
            files,
            status: SetStatus::Incomplete,
            path: dir,
            new_blocks: None,
            written: None,
            shared: None,
        }
    }

    /// Removes this Backup's incomplete sets whose run is over: those
    /// whose `.in-progress.json` names this Backup and kind and is locked
    /// by no writer (a killed run's lock died with it). Best effort, with a
    /// log line per set. Without this, the partial set of a run killed
    /// while the destination was full would keep it full.
    fn remove_abandoned(&self) {
        let Ok(ids) = self.set_ids() else { return };
        for id in ids.iter().map(SetId::to_string) {
            let dir = self.root.join(&id);
            if dir.join(MANIFEST_FILE).exists() {
                continue;
            }
            let ours = read_capped(&dir, IN_PROGRESS_FILE, MAX_MARKER_BYTES)
                .ok()
                .flatten()
                .and_then(|b| serde_json::from_slice::<InProgress>(&b).ok())
                .is_some_and(|m| {
                    m.backup.as_deref() == Some(self.backup.as_str()) && m.kind == self.kind
                });
            // Opened without following links; the lock is held until the
            // set is gone, so no writer can be starting on it meanwhile.
            let Some(marker) = ours
                .then(|| open_in_set(&dir, IN_PROGRESS_FILE).ok())
                .flatten()
            else {
                continue;
            };
            if rustix::fs::flock(
                &marker,
                rustix::fs::FlockOperation::NonBlockingLockExclusive,
            )
            .is_err()
            {
                continue; // a run is writing it
            }
            let aside = self.root.join(format!("{DELETING_PREFIX}{id}"));
            match fs::rename(&dir, &aside).and_then(|()| fs::remove_dir_all(&aside)) {
                Ok(()) => {
                    tracing::warn!(set = %id, "removed the incomplete set of a run that did not finish")
                }
                Err(e) => {
                    tracing::warn!(set = %id, error = %e, "cannot remove the incomplete set of a run that did not finish")
                }
            }
        }
    }

    /// Finishes deletions a crash interrupted; best effort, since they are
    /// already invisible to listing.
    fn remove_leftover_deletions(&self) {
        let Ok(entries) = fs::read_dir(&self.root) else {
            return;
        };
        for entry in entries.flatten() {
            let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
            let name = entry.file_name();
            if is_dir
                && name.to_string_lossy().starts_with(DELETING_PREFIX)
                && let Err(e) = fs::remove_dir_all(entry.path())
            {
                tracing::warn!(path = %entry.path().display(), error = %e, "cannot remove leftover of an interrupted prune");
            }
        }
    }
}

/// Writes one set. Dropping it without [`SetWriter::finish`] removes the
/// set: a failed run leaves nothing that could fill the destination.
#[derive(Debug)]
pub struct SetWriter {
    root: PathBuf,
    dir: PathBuf,
    id: String,
    backup: String,
    kind: String,
    source: String,
    created: String,
    /// Keyed by path so rewriting a file replaces its entry.
    files: BTreeMap<String, FileEntry>,
    /// Blocks linked from the block store, if any.
    blocks: Option<Vec<SetBlock>>,
    finished: bool,
    /// Set when the destination filled up: from then on nothing is
    /// written, only counted, so the error can say what the set needed.
    full: Option<(PathBuf, io::Error)>,
    /// The destination filesystem's block size, to count what files take.
    block: u64,
    /// `.in-progress.json`, `flock`ed while this run lives: a later run
    /// removes the set only once no one holds it (see
    /// `Store::remove_abandoned`).
    _lock: File,
}

impl SetWriter {
    /// The new set's ID.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The set directory, for callers that place files by rename or hard
    /// link and then call [`SetWriter::add_existing`].
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `bytes` to `rel` (mode 0600) via a temporary file and rename,
    /// and records its hash. Durable once [`SetWriter::finish`] returns.
    ///
    /// # Errors
    /// [`BackupError::InvalidPath`] for a path outside the set or
    /// `backup.json`; [`BackupError::Write`] on I/O failure.
    ///
    /// # Destination full
    /// Once the destination's filesystem is full, this writes nothing more
    /// and only counts, so the run can go on to learn what the whole set
    /// needs; [`SetWriter::finish`] then fails with
    /// [`BackupError::DestinationFull`] saying so.
    pub fn write_file(&mut self, rel: &str, bytes: &[u8]) -> Result<()> {
        let path = self.checked_path(rel)?;
        if self.full.is_none() {
            let parent = path.parent().unwrap_or(&self.dir);
            let written = DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .and_then(|()| crate::fsutil::renamed_write(&path, bytes, 0o600));
            match written {
                Ok(()) => {}
                Err(source) if is_out_of_space(&source) => {
                    tracing::warn!(set = %self.id, path = %path.display(), "backup destination is full; counting what the set needs without writing");
                    self.full = Some((path, source));
                }
                Err(source) => {
                    return Err(BackupError::Write {
                        id: self.id.clone(),
                        path,
                        source,
                    });
                }
            }
        }
        let sha = if self.full.is_some() {
            String::new()
        } else {
            hex::encode(Sha256::digest(bytes))
        };
        self.record(rel, bytes.len() as u64, sha);
        Ok(())
    }

    /// Records a file the caller already placed at `rel`, hashing it.
    ///
    /// # Caveats
    /// The file's mode is left as it is: it may be a hard link shared with
    /// the data it backs up, and changing it would change that too.
    ///
    /// # Errors
    /// [`BackupError::InvalidPath`], or [`BackupError::Read`] if the file
    /// cannot be read.
    pub fn add_existing(&mut self, rel: &str) -> Result<()> {
        let path = self.checked_path(rel)?;
        let file = open_in_set(&self.dir, rel).map_err(|e| match e {
            OpenError::NotFound => BackupError::Read {
                path: path.clone(),
                source: io::ErrorKind::NotFound.into(),
            },
            e => e.into_error(&self.id, rel),
        })?;
        let (size, sha) = hash_reader(file).map_err(|source| BackupError::Read {
            path: path.clone(),
            source,
        })?;
        self.record(rel, size, sha);
        Ok(())
    }

    /// Hard-links the files of a stored block into the set under
    /// `rel_dir/NAME/` and records them with the hashes taken when the
    /// block was stored (nothing is read or hashed here).
    ///
    /// # Errors
    /// [`BackupError::InvalidPath`] for a path outside the set;
    /// [`BackupError::Write`] if a link cannot be made.
    pub fn link_block(
        &mut self,
        store: &BlockStore,
        rel_dir: &str,
        block: &StoredBlock,
    ) -> Result<()> {
        for f in &block.files {
            let rel = format!("{rel_dir}/{}/{}", block.name, f.path);
            let path = self.checked_path(&rel)?;
            let parent = path.parent().unwrap_or(&self.dir);
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .and_then(|()| fs::hard_link(store.file_path(block, &f.path), &path))
                .map_err(|source| BackupError::Write {
                    id: self.id.clone(),
                    path: path.clone(),
                    source,
                })?;
            self.record(&rel, f.size, f.sha256.clone());
        }
        self.blocks.get_or_insert_with(Vec::new).push(SetBlock {
            name: block.name.clone(),
            key: block.key.clone(),
            new: block.new,
            bytes: block.bytes(),
        });
        Ok(())
    }

    /// Seals the set: makes every file durable, then writes `backup.json`.
    ///
    /// # Guarantees
    /// Once this returns `Ok`, the set and all its files survive a crash;
    /// if it fails or is never called, the set stays incomplete.
    ///
    /// # Errors
    /// [`BackupError::Write`] if syncing or writing `backup.json` fails.
    pub fn finish(mut self) -> Result<SetInfo> {
        if let Some((path, source)) = self.full.take() {
            return Err(self.full_error(path, source));
        }
        let write_err = |path: &Path, source| BackupError::Write {
            id: self.id.clone(),
            path: path.to_path_buf(),
            source,
        };
        // The files and their renames must be durable before backup.json can
        // claim they exist.
        self.make_files_durable()
            .map_err(|e| write_err(&self.dir, e))?;
        let manifest = SetManifest {
            format_version: FORMAT_VERSION,
            id: self.id.clone(),
            backup: Some(self.backup.clone()),
            kind: self.kind.clone(),
            source: self.source.clone(),
            created: self.created.clone(),
            completed: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            status: SetStatus::Complete,
            files: self.files.values().cloned().collect(),
            blocks: self.blocks.clone(),
        };
        blocks::crash_point("set-files-durable");
        let bytes = serde_json::to_vec_pretty(&manifest).map_err(io::Error::other);
        bytes
            .and_then(|b| write_atomic(&self.dir, MANIFEST_FILE, &b))
            .and_then(|()| sync_dir(&self.dir))
            .and_then(|()| sync_dir(&self.root))
            .map_err(|e| write_err(&self.dir.join(MANIFEST_FILE), e))?;
        self.finished = true;
        // The marker only matters for incomplete sets.
        let _ = fs::remove_file(self.dir.join(IN_PROGRESS_FILE));
        tracing::info!(set = %self.id, files = manifest.files.len(), "backup set complete");
        Ok(info_from_manifest(&manifest, self.dir.clone()))
    }

    /// Removes the set, then says what it needed and what is free.
    fn full_error(&mut self, path: PathBuf, source: io::Error) -> BackupError {
        self.discard();
        let block = self.block.max(1);
        let needed = self
            .files
            .values()
            .map(|f| f.size.div_ceil(block) * block)
            .sum();
        let (free, total) = space(&self.root).map_or((0, 0), |s| (s.free, s.total));
        BackupError::DestinationFull {
            destination: self.root.clone(),
            id: self.id.clone(),
            needed,
            files: self.files.len(),
            free,
            total,
            path,
            source,
        }
    }

    /// Removes the unfinished set (renamed aside first, so a crash halfway
    /// leaves no partial set under its ID); best effort, with a warning.
    fn discard(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        let aside = self.root.join(format!("{DELETING_PREFIX}{}", self.id));
        let removed = fs::rename(&self.dir, &aside).and_then(|()| fs::remove_dir_all(&aside));
        match removed {
            Ok(()) => {
                tracing::warn!(set = %self.id, "backup run did not finish; its set was removed")
            }
            Err(e) => {
                tracing::warn!(set = %self.id, dir = %self.dir.display(), error = %e, "backup run did not finish and its set cannot be removed; it is left incomplete")
            }
        }
    }

    /// fsync the set's own files, concurrently, then its directories.
    /// (A `syncfs` flushed whatever else was dirty on the disk too, so a
    /// backup's time grew with the machine's load.)
    fn make_files_durable(&self) -> io::Result<()> {
        let paths: Vec<PathBuf> = self.files.keys().map(|rel| self.dir.join(rel)).collect();
        let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
        for r in crate::fsutil::sync_files(&refs) {
            r?;
        }
        crate::fsutil::sync_tree(&self.dir)
    }

    fn checked_path(&self, rel: &str) -> Result<PathBuf> {
        if !is_safe_rel_path(rel) || rel == MANIFEST_FILE || rel == IN_PROGRESS_FILE {
            return Err(BackupError::InvalidPath {
                id: self.id.clone(),
                path: rel.to_owned(),
            });
        }
        Ok(self.dir.join(rel))
    }

    fn record(&mut self, rel: &str, size: u64, sha256: String) {
        self.files.insert(
            rel.to_owned(),
            FileEntry {
                path: rel.to_owned(),
                size,
                sha256,
            },
        );
    }
}

impl Drop for SetWriter {
    /// A run that fails removes what it wrote: a partial set is never
    /// restorable, and left behind it could fill the destination so that
    /// every later run fails too. (A killed run cannot; its set stays
    /// listed as incomplete.)
    fn drop(&mut self) {
        self.discard();
    }
}

/// Free space, size and block size of a filesystem.
struct Space {
    free: u64,
    total: u64,
    block: u64,
}

fn space(dir: &Path) -> Option<Space> {
    let s = rustix::fs::statvfs(dir).ok()?;
    Some(Space {
        free: s.f_bavail.saturating_mul(s.f_frsize),
        total: s.f_blocks.saturating_mul(s.f_frsize),
        block: s.f_frsize,
    })
}

/// Whether an error means the filesystem (or the user's quota) is full.
/// (`tempfile` wraps the OS error, so its kind is what is left to look at.)
pub fn is_out_of_space(e: &io::Error) -> bool {
    matches!(
        rustix::io::Errno::from_io_error(e),
        Some(rustix::io::Errno::NOSPC | rustix::io::Errno::DQUOT)
    ) || matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// A parsed set ID: `YYYYMMDDTHHMMSSZ` plus `-N` for the N-th set of one
/// second. Ordering on this type is creation order (`-10` after `-9`, which
/// plain string order would get wrong).
/// When set `id` was made (RFC 3339, UTC), read from the ID; `None` when
/// `id` is not a set ID.
pub fn set_created(id: &str) -> Option<String> {
    id.parse::<SetId>().ok().map(|i| i.created())
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct SetId {
    stamp: String,
    seq: u32,
}

impl SetId {
    fn created(&self) -> String {
        let s = &self.stamp;
        format!(
            "{}-{}-{}T{}:{}:{}Z",
            &s[0..4],
            &s[4..6],
            &s[6..8],
            &s[9..11],
            &s[11..13],
            &s[13..15]
        )
    }
}

impl std::str::FromStr for SetId {
    type Err = ();

    fn from_str(s: &str) -> std::result::Result<Self, ()> {
        let (stamp, seq) = match s.split_once('-') {
            Some((stamp, seq)) => {
                if seq.starts_with('0') || !seq.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(());
                }
                let seq: u32 = seq.parse().map_err(|_| ())?;
                if seq < 2 {
                    return Err(());
                }
                (stamp, seq)
            }
            None => (s, 1),
        };
        let b = stamp.as_bytes();
        let ok = b.len() == 16
            && b[..8].iter().all(u8::is_ascii_digit)
            && b[8] == b'T'
            && b[9..15].iter().all(u8::is_ascii_digit)
            && b[15] == b'Z';
        if !ok {
            return Err(());
        }
        Ok(SetId {
            stamp: stamp.to_owned(),
            seq,
        })
    }
}

impl fmt::Display for SetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.seq <= 1 {
            f.write_str(&self.stamp)
        } else {
            write!(f, "{}-{}", self.stamp, self.seq)
        }
    }
}

fn info_from_manifest(m: &SetManifest, dir: PathBuf) -> SetInfo {
    let size: u64 = m.files.iter().map(|f| f.size).sum();
    let shared = m
        .blocks
        .as_ref()
        .map(|b| b.iter().filter(|b| !b.new).map(|b| b.bytes).sum::<u64>());
    SetInfo {
        new_blocks: m
            .blocks
            .as_ref()
            .map(|b| b.iter().filter(|b| b.new).count()),
        written: shared.map(|s| size.saturating_sub(s)),
        shared,
        id: m.id.clone(),
        backup: m.backup.clone(),
        legacy: m.backup.is_none(),
        kind: m.kind.clone(),
        source: m.source.clone(),
        created: m.created.clone(),
        size,
        files: m.files.len(),
        status: m.status,
        path: dir,
    }
}

/// `Ok(None)` when there is no `backup.json` (an incomplete set).
fn read_manifest(dir: &Path, id: &str) -> Result<Option<SetManifest>> {
    let path = dir.join(MANIFEST_FILE);
    let Some(bytes) = read_capped(dir, MANIFEST_FILE, MAX_MANIFEST_BYTES)
        .map_err(|e| e.into_error(id, "backup.json"))?
    else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| BackupError::Manifest {
            id: id.to_owned(),
            path,
            source,
        })
}

/// Reads `name` in `dir` (no symlinks) if it is at most `limit` bytes,
/// checking the size before reading; `Ok(None)` if it does not exist.
fn read_capped(dir: &Path, name: &str, limit: u64) -> Result<Option<Vec<u8>>, ReadError> {
    let path = dir.join(name);
    let file = match open_in_set(dir, name) {
        Ok(f) => f,
        Err(OpenError::NotFound) => return Ok(None),
        Err(e) => return Err(ReadError::Open(e)),
    };
    let io_err = |source| {
        ReadError::Io(BackupError::Read {
            path: path.clone(),
            source,
        })
    };
    let size = file.metadata().map_err(io_err)?.len();
    let too_large = |size| {
        ReadError::Io(BackupError::TooLarge {
            path: path.clone(),
            size,
            limit,
            what: if name == MANIFEST_FILE {
                "a backup.json"
            } else {
                "an in-progress marker"
            },
        })
    };
    if size > limit {
        return Err(too_large(size));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    // It may have grown since the size check.
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(Some(bytes))
}

/// Why [`read_capped`] failed.
enum ReadError {
    Open(OpenError),
    Io(BackupError),
}

impl ReadError {
    fn into_error(self, id: &str, rel: &str) -> BackupError {
        match self {
            ReadError::Open(e) => e.into_error(id, rel),
            ReadError::Io(e) => e,
        }
    }
}

/// Why a file of a set could not be opened.
#[derive(Debug)]
enum OpenError {
    /// This path is a symlink.
    Symlink(PathBuf),
    /// It (or a directory on its way) does not exist.
    NotFound,
    /// A directory, FIFO, device...: set files are regular files.
    NotRegular(PathBuf),
    /// Any other failure opening this path.
    Io(PathBuf, io::Error),
}

impl OpenError {
    fn into_error(self, id: &str, rel: &str) -> BackupError {
        match self {
            OpenError::Symlink(path) => BackupError::Symlink {
                id: id.to_owned(),
                path,
            },
            OpenError::NotFound => BackupError::Corrupt {
                id: id.to_owned(),
                file: rel.to_owned(),
                problem: "is missing".to_owned(),
            },
            OpenError::NotRegular(path) => BackupError::Corrupt {
                id: id.to_owned(),
                file: rel.to_owned(),
                problem: format!("{} is not a regular file", path.display()),
            },
            OpenError::Io(path, source) => BackupError::Read { path, source },
        }
    }
}

/// Opens the regular file `rel` below `dir` without following a symlink
/// anywhere: the set directory and each directory on the way are opened
/// with `O_DIRECTORY | O_NOFOLLOW` relative to the previous one, the file
/// with `O_NOFOLLOW | O_NONBLOCK` (a FIFO must not hang us), and then it
/// must be a regular file. Replacing a component by a symlink between
/// checks therefore cannot redirect the read.
fn open_in_set(dir: &Path, rel: &str) -> Result<File, OpenError> {
    use rustix::fs::{CWD, Mode, OFlags, openat};
    use rustix::io::Errno;
    if !is_safe_rel_path(rel) {
        return Err(OpenError::Io(
            dir.join(rel),
            io::Error::new(io::ErrorKind::InvalidInput, "not a path inside the set"),
        ));
    }
    // O_NOFOLLOW on a symlink fails with ELOOP, or ENOTDIR with
    // O_DIRECTORY; lstat tells which component it was.
    let classify = |e: Errno, path: PathBuf| match e {
        Errno::LOOP => OpenError::Symlink(path),
        Errno::NOENT => OpenError::NotFound,
        Errno::NOTDIR if fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) => {
            OpenError::Symlink(path)
        }
        Errno::NOTDIR => OpenError::NotRegular(path),
        e => OpenError::Io(path, io::Error::from(e)),
    };
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut fd =
        openat(CWD, dir, dir_flags, Mode::empty()).map_err(|e| classify(e, dir.to_path_buf()))?;
    let mut path = dir.to_path_buf();
    let parts: Vec<&str> = rel.split('/').collect();
    let Some((last, parents)) = parts.split_last() else {
        return Err(OpenError::NotFound);
    };
    for part in parents {
        path.push(part);
        fd = openat(&fd, *part, dir_flags, Mode::empty()).map_err(|e| classify(e, path.clone()))?;
    }
    path.push(last);
    let file_flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let file = File::from(
        openat(&fd, *last, file_flags, Mode::empty()).map_err(|e| classify(e, path.clone()))?,
    );
    let meta = file
        .metadata()
        .map_err(|e| OpenError::Io(path.clone(), e))?;
    if !meta.is_file() {
        return Err(OpenError::NotRegular(path));
    }
    Ok(file)
}

/// A file `backup.json` lists: inside the set, present, of the recorded
/// size and sha256.
/// Without `deep`, only the size is compared (from metadata).
fn verify_file(dir: &Path, id: &str, entry: &FileEntry, deep: bool) -> Result<()> {
    let corrupt = |problem: String| BackupError::Corrupt {
        id: id.to_owned(),
        file: entry.path.clone(),
        problem,
    };
    if !is_safe_rel_path(&entry.path) || entry.path == MANIFEST_FILE {
        return Err(corrupt(
            "is not a path inside the set (backup.json lists only relative paths without `..`)"
                .to_owned(),
        ));
    }
    let read_err = |source| BackupError::Read {
        path: dir.join(&entry.path),
        source,
    };
    let (size, sha) = match open_in_set(dir, &entry.path) {
        Ok(file) if deep => hash_reader(file).map_err(read_err)?,
        Ok(file) => (
            file.metadata().map_err(read_err)?.len(),
            entry.sha256.clone(),
        ),
        Err(OpenError::NotFound) => return Err(corrupt("is missing".to_owned())),
        Err(e) => return Err(e.into_error(id, &entry.path)),
    };
    if size != entry.size {
        return Err(corrupt(format!(
            "has {size} bytes, backup.json recorded {}",
            entry.size
        )));
    }
    if sha != entry.sha256 {
        return Err(corrupt(format!(
            "has sha256 {sha}, backup.json recorded {}",
            entry.sha256
        )));
    }
    Ok(())
}

/// The first symlink anywhere below `dir` (not following any), if any.
fn find_symlink(dir: &Path) -> io::Result<Option<PathBuf>> {
    for entry in walkdir::WalkDir::new(dir).min_depth(1) {
        let entry = entry?;
        if entry.path_is_symlink() {
            return Ok(Some(entry.into_path()));
        }
    }
    Ok(None)
}

/// [`check_destination_path`], except that a directory inside `own`
/// (unitlet's own backups directory) is accepted wherever that is.
fn check_path_in(path: &Path, own: Option<&Path>) -> Result<(), String> {
    let plain = path.is_absolute()
        && path
            .components()
            .all(|c| !matches!(c, Component::ParentDir | Component::CurDir));
    match own {
        Some(o) if plain && path.starts_with(o) && path != o => Ok(()),
        _ => check_destination_path(path),
    }
}

/// What `doctor` says of a destination, without creating anything: the
/// checks of [`Store::open_in`] on the directory if it exists, else on the
/// nearest existing parent, which must let this user create it.
///
/// # Errors
/// Why a backup run would refuse or fail to use it, and what to do.
pub fn inspect_destination(destination: &Path, own: Option<&Path>) -> Result<String, String> {
    check_path_in(destination, own)?;
    let Ok(real) = fs::canonicalize(destination) else {
        let parent = destination
            .ancestors()
            .skip(1)
            .find(|a| a.exists())
            .unwrap_or(Path::new("/"));
        return match rustix::fs::access(
            parent,
            rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK,
        ) {
            Ok(()) => Ok(format!(
                "{} does not exist yet; the first run creates it (mode 0700)",
                destination.display()
            )),
            Err(e) => Err(format!(
                "{} does not exist and cannot be created: {} is not writable by you ({e}); create it, or set `destination`",
                destination.display(),
                parent.display()
            )),
        };
    };
    if real != destination {
        let own_real = own.and_then(|o| fs::canonicalize(o).ok());
        check_path_in(&real, own_real.as_deref())
            .map_err(|r| format!("{} leads to {}: {r}", destination.display(), real.display()))?;
    }
    let meta = fs::metadata(&real).map_err(|e| format!("{}: {e}", destination.display()))?;
    check_destination_owner(destination, &meta)
        .map_err(|r| format!("{}: {r}", destination.display()))?;
    rustix::fs::access(
        destination,
        rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK,
    )
    .map_err(|e| format!("{} is not writable by you: {e}", destination.display()))?;
    Ok(format!(
        "{} is yours and not writable by others",
        destination.display()
    ))
}

/// The destination must be a directory of this user that no one else may
/// write to, as the manifests directory must.
fn check_destination_owner(path: &Path, meta: &fs::Metadata) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    if !meta.is_dir() {
        return Err(format!("{} is not a directory", path.display()));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(format!(
            "it is owned by uid {}, not by you (uid {me}): whoever owns it could replace backup sets that a restore would then trust; use a directory of your own",
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(format!(
            "it is writable by other users (mode {mode:04o}): they could replace backup sets that a restore would then trust; run `chmod go-w {}`",
            path.display()
        ));
    }
    Ok(())
}

/// Relative, `/`-separated, only normal components: nothing a manifest or a
/// caller supplies can reach outside the set directory.
fn is_safe_rel_path(rel: &str) -> bool {
    !rel.is_empty()
        && !rel.contains('\\')
        && !rel.contains('\0')
        && Path::new(rel)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
        && !rel
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..")
}

/// The run's marker, `flock`ed before it appears under its name (the lock
/// follows the file through the rename), so no other run ever sees it
/// unlocked while this one lives.
fn write_locked_marker(dir: &Path, bytes: &[u8]) -> io::Result<File> {
    crate::fsutil::atomic_write_locked(&dir.join(IN_PROGRESS_FILE), bytes, 0o600)
}

/// Temporary file in the same directory, fsync, rename, directory fsync: a
/// crash leaves the old file or the new one, never half of one.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    crate::fsutil::atomic_write(&dir.join(name), bytes, 0o600)
}

fn hash_reader(file: impl Read) -> io::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let size = crate::fsutil::for_each_chunk(file, 64 * 1024, |c| {
        hasher.update(c);
        Ok(())
    })?;
    Ok((size, hex::encode(hasher.finalize())))
}

/// Bytes and count of regular files below `dir` (no symlink followed,
/// unreadable parts skipped), ignoring our own marker.
fn dir_usage(dir: &Path) -> (u64, usize) {
    walkdir::WalkDir::new(dir)
        .min_depth(1)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file() && e.file_name() != IN_PROGRESS_FILE)
        .fold((0, 0), |(size, files), e| {
            (size + e.metadata().map(|m| m.len()).unwrap_or(0), files + 1)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn store() -> (tempfile::TempDir, Store) {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("backups/grafana"), "dash", "grafana").unwrap();
        (tmp, store)
    }

    fn complete_set(store: &Store, body: &str) -> SetInfo {
        let mut w = store.begin("http://grafana:3000").unwrap();
        w.write_file("folders.json", b"[]").unwrap();
        w.write_file("dashboards/abc.json", body.as_bytes())
            .unwrap();
        w.finish().unwrap()
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn finished_set_is_listed_complete_with_sizes_and_private_modes() {
        let (_tmp, store) = store();
        let info = complete_set(&store, "{\"x\":1}");
        assert_eq!(info.status, SetStatus::Complete);
        assert_eq!(info.files, 2);
        assert_eq!(info.size, 2 + 7);
        let listed = store.list().unwrap();
        assert_eq!(listed, vec![info.clone()]);
        assert_eq!(mode(store.path()), 0o700);
        assert_eq!(mode(&info.path), 0o700);
        assert_eq!(mode(&info.path.join("dashboards")), 0o700);
        assert_eq!(mode(&info.path.join("dashboards/abc.json")), 0o600);
        assert_eq!(mode(&info.path.join(MANIFEST_FILE)), 0o600);
        assert!(!info.path.join(IN_PROGRESS_FILE).exists());
        // No temporary files are left behind.
        let names: Vec<_> = fs::read_dir(&info.path)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.contains("-tmp.")), "{names:?}");
        let manifest: serde_json::Value =
            serde_json::from_slice(&fs::read(info.path.join(MANIFEST_FILE)).unwrap()).unwrap();
        assert_eq!(manifest["status"], "complete");
        assert_eq!(manifest["kind"], "grafana");
        assert_eq!(manifest["files"][1]["path"], "folders.json");
        assert_eq!(
            manifest["files"][1]["sha256"],
            hex::encode(Sha256::digest(b"[]"))
        );
    }

    #[test]
    fn a_destination_inside_unitlets_own_backups_dir_is_accepted_wherever_that_is() {
        let own = Path::new("/var/lib/demo/state/unitlet/backups");
        let dest = own.join("prometheus-tsdb");
        assert_eq!(check_path_in(&dest, Some(own)), Ok(()));
        let err = check_path_in(&dest, None).unwrap_err();
        assert!(err.contains("is a system directory"), "{err}");
        // Not the directory itself, nor a way out of it.
        assert!(check_path_in(own, Some(own)).is_err());
        assert!(check_path_in(&own.join("../../../../../etc"), Some(own)).is_err());
        assert!(check_path_in(Path::new("/var/lib/other"), Some(own)).is_err());
    }

    #[test]
    fn a_dropped_writer_removes_its_set() {
        let (_tmp, store) = store();
        let kept = complete_set(&store, "[]");
        {
            let mut w = store.begin("http://g:3000").unwrap();
            w.write_file("folders.json", b"[1,2]").unwrap();
        }
        let ids: Vec<String> = store.list().unwrap().into_iter().map(|s| s.id).collect();
        assert_eq!(ids, vec![kept.id]);
        let names: Vec<_> = fs::read_dir(store.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "nothing else is left: {names:?}");
    }

    #[test]
    fn the_next_run_removes_a_killed_runs_set_but_not_a_running_ones() {
        let (_tmp, store) = store();
        let kept = complete_set(&store, "[]");
        // A run in flight (its lock held) and one killed (what it leaves:
        // a marker no one locks).
        let running = store.begin("http://g:3000").unwrap();
        let killed = store.root.join("20200101T000000Z");
        fs::create_dir(&killed).unwrap();
        fs::write(killed.join("folders.json"), b"[]").unwrap();
        let marker = InProgress {
            backup: Some("dash".into()),
            kind: "grafana".into(),
            source: "http://g:3000".into(),
            created: "2020-01-01T00:00:00Z".into(),
        };
        fs::write(
            killed.join(IN_PROGRESS_FILE),
            serde_json::to_vec(&marker).unwrap(),
        )
        .unwrap();
        // Another Backup's killed run, and a set nobody marked: left alone.
        let other = store.root.join("20200101T000000Z-2");
        fs::create_dir(&other).unwrap();
        let theirs = InProgress {
            backup: Some("other".into()),
            ..marker
        };
        fs::write(
            other.join(IN_PROGRESS_FILE),
            serde_json::to_vec(&theirs).unwrap(),
        )
        .unwrap();
        let unmarked = store.root.join("20200101T000000Z-3");
        fs::create_dir(&unmarked).unwrap();

        let next = store.begin("http://g:3000").unwrap();
        assert!(!killed.exists(), "the killed run's set is removed");
        assert!(running.dir().is_dir(), "a running run's set stays");
        assert!(other.is_dir() && unmarked.is_dir());
        assert!(store.path().join(&kept.id).is_dir());
        drop((running, next));
    }

    #[test]
    fn a_killed_run_leaves_an_incomplete_set_that_says_what_it_was() {
        let (_tmp, store) = store();
        let mut w = store.begin("http://g:3000").unwrap();
        w.write_file("folders.json", b"[1,2]").unwrap();
        // A killed process runs no destructor.
        std::mem::forget(w);
        let listed = store.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].status, SetStatus::Incomplete);
        assert_eq!(listed[0].kind, "grafana");
        assert_eq!(listed[0].source, "http://g:3000");
        assert_eq!((listed[0].files, listed[0].size), (1, 5));
        assert!(!listed[0].path.join(MANIFEST_FILE).exists());
        let err = store.verify(&listed[0].id).unwrap_err();
        assert!(matches!(err, BackupError::Incomplete { .. }), "{err}");
        assert!(err.to_string().contains("incomplete"), "{err}");
    }

    #[test]
    fn ids_are_unique_and_sort_in_creation_order() {
        let (_tmp, store) = store();
        let ids: Vec<String> = (0..12)
            .map(|i| complete_set(&store, &i.to_string()).id)
            .collect();
        let listed: Vec<String> = store.list().unwrap().into_iter().map(|s| s.id).collect();
        assert_eq!(listed, ids);
        let mut dedup = ids.clone();
        dedup.dedup();
        assert_eq!(dedup.len(), 12);
        for id in &ids {
            let parsed: SetId = id.parse().unwrap();
            assert_eq!(parsed.to_string(), *id);
        }
    }

    #[test]
    fn a_new_id_sorts_after_a_set_from_the_future() {
        let (_tmp, store) = store();
        fs::create_dir(store.path().join("29991231T235959Z")).unwrap();
        let w = store.begin("x").unwrap();
        assert_eq!(w.id(), "29991231T235959Z-2");
    }

    #[test]
    fn set_id_parsing_rejects_anything_that_is_not_an_id() {
        for bad in [
            "",
            "..",
            "20261127T235501",
            "20261127T235501Z-1",
            "20261127T235501Z-02",
            "20261127T235501Z-x",
            "2026112XT235501Z",
            "../20261127T235501Z",
        ] {
            assert!(bad.parse::<SetId>().is_err(), "{bad}");
        }
        let id: SetId = "20261127T235501Z-3".parse().unwrap();
        assert_eq!(id.created(), "2026-11-27T23:55:01Z");
        assert!(id > "20261127T235501Z-2".parse().unwrap());
        assert!(
            "20261127T235501Z-10".parse::<SetId>().unwrap() > "20261127T235501Z-9".parse().unwrap()
        );
    }

    #[test]
    fn prune_keeps_the_newest_complete_sets_and_ignores_incomplete_ones() {
        let (_tmp, store) = store();
        let a = complete_set(&store, "a").id;
        let b = complete_set(&store, "b").id;
        std::mem::forget(store.begin("x").unwrap()); // a killed run's, between
        let c = complete_set(&store, "c").id;
        let d = complete_set(&store, "d").id;
        fs::create_dir(store.path().join("not-a-set")).unwrap();

        let deleted = store.prune(2, &d).unwrap();
        assert_eq!(deleted, vec![a.clone(), b.clone()]);
        let left: Vec<(String, SetStatus)> = store
            .list()
            .unwrap()
            .into_iter()
            .map(|s| (s.id, s.status))
            .collect();
        assert_eq!(left.len(), 3);
        assert_eq!(left[0].1, SetStatus::Incomplete);
        assert_eq!(left[1], (c, SetStatus::Complete));
        assert_eq!(left[2], (d.clone(), SetStatus::Complete));
        assert!(store.path().join("not-a-set").is_dir());
        assert!(!store.path().join(&a).exists());
        // Nothing more to do, and keep=0 is refused.
        assert!(store.prune(2, &d).unwrap().is_empty());
        assert!(matches!(store.prune(0, &d), Err(BackupError::InvalidKeep)));
    }

    #[test]
    fn prune_never_deletes_the_protected_set() {
        let (_tmp, store) = store();
        let a = complete_set(&store, "a").id;
        let b = complete_set(&store, "b").id;
        let c = complete_set(&store, "c").id;
        assert_eq!(store.prune(1, &a).unwrap(), vec![b]);
        let left: Vec<String> = store.list().unwrap().into_iter().map(|s| s.id).collect();
        assert_eq!(left, vec![a, c]);
    }

    #[test]
    fn verify_names_the_first_changed_or_missing_file() {
        let (_tmp, store) = store();
        let info = complete_set(&store, "{\"x\":1}");
        let verified = store.verify(&info.id).unwrap();
        assert_eq!(verified.files().len(), 2);
        assert_eq!(verified.read("dashboards/abc.json").unwrap(), b"{\"x\":1}");

        // Same size, different content: only the hash can tell.
        fs::write(info.path.join("dashboards/abc.json"), "{\"x\":2}").unwrap();
        let err = store.verify(&info.id).unwrap_err();
        assert!(
            matches!(&err, BackupError::Corrupt { file, .. } if file == "dashboards/abc.json"),
            "{err}"
        );
        assert!(err.to_string().contains("sha256"), "{err}");
        assert!(verified.read("dashboards/abc.json").is_err());

        fs::write(info.path.join("dashboards/abc.json"), "longer content").unwrap();
        let err = store.verify(&info.id).unwrap_err();
        assert!(err.to_string().contains("bytes"), "{err}");

        fs::remove_file(info.path.join("dashboards/abc.json")).unwrap();
        let err = store.verify(&info.id).unwrap_err();
        assert!(
            err.to_string().contains("dashboards/abc.json is missing"),
            "{err}"
        );
    }

    #[test]
    fn verify_refuses_unknown_and_malformed_ids() {
        let (_tmp, store) = store();
        assert!(matches!(
            store.verify("../etc"),
            Err(BackupError::InvalidId { .. })
        ));
        assert!(matches!(
            store.verify("20261127T235501Z"),
            Err(BackupError::NotFound { .. })
        ));
    }

    #[test]
    fn writer_rejects_paths_outside_the_set_and_the_manifest_itself() {
        let (_tmp, store) = store();
        let mut w = store.begin("x").unwrap();
        for bad in [
            "../escape",
            "/etc/passwd",
            "a/../../b",
            "",
            "a//b",
            "./a",
            MANIFEST_FILE,
        ] {
            let err = w.write_file(bad, b"x").unwrap_err();
            assert!(
                matches!(err, BackupError::InvalidPath { .. }),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn add_existing_hashes_files_placed_by_the_caller() {
        let (_tmp, store) = store();
        let mut w = store.begin("http://p:9090").unwrap();
        fs::create_dir_all(w.dir().join("snapshot/01ABC")).unwrap();
        fs::write(w.dir().join("snapshot/01ABC/index"), b"tsdb").unwrap();
        w.add_existing("snapshot/01ABC/index").unwrap();
        assert!(w.add_existing("snapshot/missing").is_err());
        let info = w.finish().unwrap();
        assert_eq!((info.files, info.size), (1, 4));
        store.verify(&info.id).unwrap();
    }

    #[test]
    fn open_names_the_path_it_cannot_use() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("plain-file");
        fs::write(&file, b"").unwrap();
        let err = Store::open(&file.join("sub"), "dash", "grafana").unwrap_err();
        assert!(err.to_string().contains(&*file.to_string_lossy()), "{err}");
    }

    /// Rewrites the set's backup.json through `edit`, as someone with
    /// write access to the destination could.
    fn edit_manifest(info: &SetInfo, edit: impl FnOnce(&mut serde_json::Value)) {
        let path = info.path.join(MANIFEST_FILE);
        let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        edit(&mut v);
        fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
    }

    #[test]
    fn backups_sharing_a_destination_never_prune_or_restore_each_others_sets() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("shared");
        let a = Store::open(&dest, "a", "grafana").unwrap();
        let b = Store::open(&dest, "b", "grafana").unwrap();
        let b1 = complete_set(&b, "b1");
        let b2 = complete_set(&b, "b2");
        let a1 = complete_set(&a, "a1");
        let a2 = complete_set(&a, "a2");
        let legacy = complete_set(&a, "old");
        edit_manifest(&legacy, |v| {
            v.as_object_mut().unwrap().remove("backup");
        });
        let a3 = complete_set(&a, "a3");

        // A keeps 1: only its own older sets go.
        assert_eq!(a.prune(1, &a3.id).unwrap(), vec![a1.id, a2.id]);
        let ids =
            |s: &Store| -> Vec<String> { s.list().unwrap().into_iter().map(|s| s.id).collect() };
        assert_eq!(
            ids(&b),
            vec![b1.id.clone(), b2.id.clone(), legacy.id.clone()]
        );
        assert_eq!(ids(&a), vec![legacy.id.clone(), a3.id.clone()]);
        let listed = a.list().unwrap();
        assert!(listed[0].legacy && listed[0].backup.is_none());
        assert!(!listed[1].legacy && listed[1].backup.as_deref() == Some("a"));
        // A legacy set is never pruned, whoever prunes.
        b.prune(1, &b2.id).unwrap();
        assert_eq!(ids(&b), vec![b2.id.clone(), legacy.id.clone()]);

        let err = a.verify(&b2.id).unwrap_err();
        assert!(matches!(err, BackupError::OtherBackup { .. }), "{err}");
        assert!(err.to_string().contains("belongs to Backup b"), "{err}");
        let err = a.verify(&legacy.id).unwrap_err();
        assert!(matches!(err, BackupError::Legacy { .. }), "{err}");
        assert!(err.to_string().contains("\"backup\": \"a\""), "{err}");
        b.verify(&b2.id).unwrap();
        a.verify(&a3.id).unwrap();
    }

    #[test]
    fn a_set_of_another_kind_under_the_same_name_is_never_pruned() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("d");
        let old = complete_set(&Store::open(&dest, "x", "prometheus").unwrap(), "p");
        let store = Store::open(&dest, "x", "grafana").unwrap();
        let g1 = complete_set(&store, "g1");
        let g2 = complete_set(&store, "g2");
        assert_eq!(store.prune(1, &g2.id).unwrap(), vec![g1.id]);
        assert!(old.path.is_dir());
    }

    #[test]
    fn a_file_replaced_by_a_symlink_is_refused_even_with_its_sha_updated() {
        let (tmp, store) = store();
        let info = complete_set(&store, "{}");
        let outside = tmp.path().join("secret");
        fs::write(&outside, "outside data").unwrap();
        let file = info.path.join("dashboards/abc.json");
        fs::remove_file(&file).unwrap();
        std::os::unix::fs::symlink(&outside, &file).unwrap();
        edit_manifest(&info, |v| {
            let f = &mut v["files"][0];
            assert_eq!(f["path"], "dashboards/abc.json");
            f["size"] = 12.into();
            f["sha256"] = hex::encode(Sha256::digest(b"outside data")).into();
        });
        let err = store.verify(&info.id).unwrap_err();
        assert!(matches!(err, BackupError::Symlink { .. }), "{err}");
        assert!(err.to_string().contains("dashboards/abc.json"), "{err}");
        // A symlinked directory on the way is refused as well.
        fs::remove_file(&file).unwrap();
        let elsewhere = tmp.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        fs::write(elsewhere.join("abc.json"), "outside data").unwrap();
        fs::remove_dir(info.path.join("dashboards")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, info.path.join("dashboards")).unwrap();
        let err = store.verify(&info.id).unwrap_err();
        assert!(matches!(err, BackupError::Symlink { .. }), "{err}");
        // And open_in_set alone, without the tree walk, never follows it.
        assert!(matches!(
            open_in_set(&info.path, "dashboards/abc.json"),
            Err(OpenError::Symlink(_))
        ));
    }

    #[test]
    fn a_set_directory_that_is_a_symlink_is_refused_and_not_listed() {
        let (tmp, store) = store();
        let other = Store::open(&tmp.path().join("other"), "dash", "grafana").unwrap();
        let real = complete_set(&other, "{}");
        let link = store.path().join(&real.id);
        std::os::unix::fs::symlink(&real.path, &link).unwrap();
        assert!(store.list().unwrap().is_empty());
        let err = store.verify(&real.id).unwrap_err();
        assert!(matches!(err, BackupError::Symlink { .. }), "{err}");
        assert!(err.to_string().contains(&*link.to_string_lossy()), "{err}");
    }

    #[test]
    fn a_parent_path_in_backup_json_is_refused_even_with_a_correct_sha() {
        let (tmp, store) = store();
        let info = complete_set(&store, "{}");
        let outside = tmp.path().join("backups/escape.json");
        fs::write(&outside, "x").unwrap();
        edit_manifest(&info, |v| {
            v["files"][0] = serde_json::json!({
                "path": "../escape.json",
                "size": 1,
                "sha256": hex::encode(Sha256::digest(b"x")),
            });
        });
        let err = store.verify(&info.id).unwrap_err();
        assert!(
            matches!(&err, BackupError::Corrupt { file, .. } if file == "../escape.json"),
            "{err}"
        );
    }

    #[test]
    fn a_huge_backup_json_is_refused_by_its_size_without_reading_it() {
        let (_tmp, store) = store();
        let info = complete_set(&store, "{}");
        let f = fs::OpenOptions::new()
            .write(true)
            .open(info.path.join(MANIFEST_FILE))
            .unwrap();
        f.set_len(1 << 30).unwrap();
        drop(f);
        let err = store.verify(&info.id).unwrap_err();
        assert!(matches!(err, BackupError::TooLarge { .. }), "{err}");
        assert!(err.to_string().contains("64 MiB"), "{err}");
        // Listing shows it (as incomplete, unreadable) instead of failing.
        let listed = store.list().unwrap();
        assert_eq!(listed[0].status, SetStatus::Incomplete);
    }

    #[test]
    fn read_limited_refuses_files_over_the_limit_before_reading() {
        let (_tmp, store) = store();
        let info = complete_set(&store, "0123456789");
        let set = store.verify(&info.id).unwrap();
        let mut text = String::new();
        set.open_file("dashboards/abc.json")
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "0123456789");
        assert!(set.open_file("elsewhere.json").is_err());
        let err = set.read_limited("dashboards/abc.json", 9).unwrap_err();
        assert!(
            matches!(err, BackupError::TooLarge { limit: 9, .. }),
            "{err}"
        );
        assert_eq!(
            set.read_limited("dashboards/abc.json", 10).unwrap(),
            b"0123456789"
        );
    }

    #[test]
    fn system_and_shared_directories_are_refused_as_destinations() {
        for bad in [
            "/",
            "/etc",
            "/etc/unitlet",
            "/usr/local/backups",
            "/home",
            "/tmp",
            "/var",
            "/var/lib/x",
            "/proc/self",
            "/run",
            "/run/lock",
            "relative/dir",
            "/home/u/../../etc",
        ] {
            assert!(check_destination_path(Path::new(bad)).is_err(), "{bad}");
        }
        for good in [
            "/home/u/backups",
            "/tmp/x/backups",
            "/run/user/1000/b",
            "/srv/backups/dash",
        ] {
            check_destination_path(Path::new(good)).unwrap();
        }
        let err = Store::open(Path::new("/"), "dash", "grafana").unwrap_err();
        assert!(
            matches!(err, BackupError::UnsafeDestination { .. }),
            "{err}"
        );
        assert!(
            err.to_string().contains("shared by the whole system"),
            "{err}"
        );
    }

    #[test]
    fn a_destination_others_can_write_or_leading_to_a_system_directory_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("open");
        fs::create_dir(&dest).unwrap();
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o777)).unwrap();
        let err = Store::open(&dest, "dash", "grafana").unwrap_err();
        assert!(err.to_string().contains("chmod go-w"), "{err}");
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink("/etc", &link).unwrap();
        let err = Store::open(&link, "dash", "grafana").unwrap_err();
        assert!(err.to_string().contains("leads to /etc"), "{err}");
    }
}
