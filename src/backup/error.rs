//! The backup set store's error: plain data (paths, IDs, sizes, I/O
//! errors), kept apart from the store so the errors of the Grafana and
//! Prometheus clients, which carry it, need not import the store.

use std::io;
use std::path::PathBuf;

use crate::size::{limit_text, size_text};

/// Everything that can go wrong with backup sets on disk.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The destination could not be created or is not writable, so no set
    /// could ever be written there.
    #[error(
        "cannot use backup destination {path}: {source}; create it or make it writable by this user, or set `destination` in the Backup manifest"
    )]
    Destination {
        /// The destination directory.
        path: PathBuf,
        /// The error underneath.
        #[source]
        source: io::Error,
    },
    /// The destination is a system directory, or a directory other users
    /// could write to or that another user owns: sets there could be
    /// replaced by someone else and then restored.
    #[error("refusing backup destination {path}: {reason}")]
    UnsafeDestination {
        /// The destination directory.
        path: PathBuf,
        /// Why, and what to do.
        reason: String,
    },
    /// A file is bigger than anything unitlet would write there; it is not
    /// read at all.
    #[error(
        "{path} is {size} bytes, over the limit of {} for {what}; it was not written by unitlet — restore from another set",
        limit_text(*limit)
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size on disk.
        size: u64,
        /// The limit it exceeds.
        limit: u64,
        /// What kind of file it is meant to be.
        what: &'static str,
    },
    /// Something in a set, or the set directory, is a symbolic link: it
    /// could make a restore read files from outside the set.
    #[error(
        "backup set {id}: {path} is a symbolic link; nothing in a backup set may be one (it could make a restore read files outside the set), so the set is refused — restore from another set"
    )]
    Symlink {
        /// The set.
        id: String,
        /// The link.
        path: PathBuf,
    },
    /// The set was made by another Backup sharing the destination.
    #[error(
        "backup set {id} in {destination} belongs to Backup {owner} ({kind}), not to {backup}; `unitlet backups {backup}` lists this Backup's sets"
    )]
    OtherBackup {
        /// The set.
        id: String,
        /// The shared destination.
        destination: PathBuf,
        /// The Backup that made it.
        owner: String,
        /// Its recorded kind.
        kind: String,
        /// The Backup that asked.
        backup: String,
    },
    /// The set does not record which Backup made it (written by unitlet
    /// 0.1): it might be another Backup's, so it is only ever listed.
    #[error(
        "backup set {id} in {destination} does not record which Backup made it (it predates unitlet 0.2), so it is listed but never pruned or restored automatically; if it is a set of {backup}, add \"backup\": \"{backup}\" to its backup.json and restore again"
    )]
    Legacy {
        /// The set.
        id: String,
        /// Its destination.
        destination: PathBuf,
        /// The Backup that asked.
        backup: String,
    },
    /// Writing into a set failed; the run's set is removed.
    #[error(
        "cannot write {path} for backup set {id}: {source}; check free space and permissions; the set was removed, earlier sets are untouched"
    )]
    Write {
        /// The set being written.
        id: String,
        /// The file or directory that could not be written.
        path: PathBuf,
        /// The error underneath.
        #[source]
        source: io::Error,
    },
    /// The destination's filesystem filled up while a set was written. The
    /// run went on counting what the set needed, without writing, and then
    /// removed the set, so the next run has the space back.
    #[error(
        "backup destination {destination} is full: backup set {id} needed about {} on disk ({files} files) and {} of {} is free there; the set was removed, earlier sets are untouched; free space there, lower `keep`, or set `destination` to a bigger filesystem (writing {path} failed)",
        size_text(*needed),
        size_text(*free),
        size_text(*total)
    )]
    DestinationFull {
        /// The destination directory.
        destination: PathBuf,
        /// The removed set.
        id: String,
        /// What the whole set needed, each file rounded up to the
        /// filesystem's block size.
        needed: u64,
        /// Its number of files.
        files: usize,
        /// Free space after the set was removed.
        free: u64,
        /// Size of the destination's filesystem.
        total: u64,
        /// The first file that did not fit.
        path: PathBuf,
        /// The error underneath.
        #[source]
        source: io::Error,
    },
    /// Reading the destination or a file of a set failed.
    #[error("cannot read {path}: {source}")]
    Read {
        /// What could not be read.
        path: PathBuf,
        /// The error underneath.
        #[source]
        source: io::Error,
    },
    /// A caller asked to store a path that would escape the set directory or
    /// replace `backup.json`.
    #[error(
        "refusing to store {path:?} in backup set {id}: paths must be relative, must not contain `..` and must not be `backup.json`"
    )]
    InvalidPath {
        /// The set being written.
        id: String,
        /// The rejected relative path.
        path: String,
    },
    /// The string given as a set ID cannot be one (it could otherwise point
    /// outside the destination).
    #[error(
        "{id:?} is not a backup set ID (IDs look like 20261127T235501Z); `unitlet backups` lists them"
    )]
    InvalidId {
        /// The rejected ID.
        id: String,
    },
    /// No set with this ID exists.
    #[error("backup set {id} not found in {destination}; `unitlet backups` lists the sets")]
    NotFound {
        /// The requested set.
        id: String,
        /// Where it was looked for.
        destination: PathBuf,
    },
    /// The set has no `backup.json`: its run did not finish.
    #[error(
        "backup set {id} in {destination} is incomplete (it has no complete backup.json, so its run did not finish) and cannot be verified or restored; choose a complete set from `unitlet backups`"
    )]
    Incomplete {
        /// The incomplete set.
        id: String,
        /// The destination holding it.
        destination: PathBuf,
    },
    /// `backup.json` exists but cannot be parsed.
    #[error("backup set {id}: {path} is not a valid backup manifest: {source}")]
    Manifest {
        /// The set.
        id: String,
        /// The `backup.json` path.
        path: PathBuf,
        /// The error underneath.
        #[source]
        source: serde_json::Error,
    },
    /// A file differs from what `backup.json` recorded, so restoring from the
    /// set would restore something other than what was backed up.
    #[error("backup set {id} is damaged: {file} {problem}; restore from another set")]
    Corrupt {
        /// The set.
        id: String,
        /// The file, relative to the set directory.
        file: String,
        /// What differs.
        problem: String,
    },
    /// `keep` of zero would delete the set that was just made.
    #[error("keep must be at least 1, got 0")]
    InvalidKeep,
    /// Deleting an old set failed; the remaining sets are untouched.
    #[error(
        "cannot delete old backup set {path}: {source}; delete it by hand or fix its permissions"
    )]
    Delete {
        /// The set directory.
        path: PathBuf,
        /// The error underneath.
        #[source]
        source: io::Error,
    },
}
