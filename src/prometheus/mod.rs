//! Prometheus TSDB backups: snapshots taken through Prometheus' admin API
//! and kept as [`crate::backup::Store`] sets, and a restore that never
//! loses the data it replaces.
//!
//! Architecture Invariant: only [`client`] talks HTTP, and only through
//! the [`crate::manager::UserManager`] trait ([`swap`]) do [`tsdb`] and
//! [`recover`] stop or start Prometheus.
//!
//! Architecture Invariant: restore never deletes a data directory. What it
//! replaces is renamed to a sibling (`DATADIR.replaced-STAMP`), and a failed
//! restore renames its own result aside (`DATADIR.failed-STAMP`) before it
//! puts the old data back.
//!
//! Architecture Invariant: every step of a restore that changes something
//! is first written to its journal ([`crate::journal`]), so a restore that
//! is killed is finished or undone by the next `unitlet` command, and
//! Prometheus is never started on a missing data directory.

pub mod client;
pub mod recover;
pub mod swap;
pub mod tsdb;

use std::path::PathBuf;
use std::time::Duration;

pub use client::{Client, Sample};

use crate::backup::BackupError;
use crate::manager::ManagerError;

/// The kind recorded in `backup.json` of Prometheus sets.
pub const KIND: &str = "prometheus";

/// Everything that can go wrong talking to Prometheus or moving its data.
#[derive(Debug, thiserror::Error)]
pub enum PrometheusError {
    /// The configured URL cannot be used as a base URL.
    #[error("invalid Prometheus URL {url:?}: {reason}")]
    InvalidUrl {
        /// What was configured.
        url: String,
        /// Why it is unusable.
        reason: String,
    },
    /// The HTTP client could not be built (TLS setup).
    #[error("cannot set up an HTTP client for Prometheus: {source}")]
    Setup {
        /// The error underneath.
        #[source]
        source: reqwest::Error,
    },
    /// Nothing accepted a connection at the address.
    #[error("Prometheus at {base} is not reachable; is it running? (request to {url})")]
    Unreachable {
        /// The configured base URL, which is what a person fixes.
        base: String,
        /// The full request URL.
        url: String,
        /// The error underneath.
        #[source]
        source: reqwest::Error,
    },
    /// Prometheus did not answer within the request's timeout.
    #[error(
        "Prometheus did not answer {url} within {}; is Prometheus at {base} overloaded or stuck?",
        humantime::format_duration(*timeout)
    )]
    Timeout {
        /// The configured base URL.
        base: String,
        /// The full request URL.
        url: String,
        /// The timeout that expired.
        timeout: Duration,
    },
    /// The admin API (needed for snapshots) is switched off.
    #[error(
        "Prometheus at {base} refused the admin API ({url}: {detail}); start Prometheus with --web.enable-admin-api"
    )]
    AdminApiDisabled {
        /// The configured base URL.
        base: String,
        /// The full request URL.
        url: String,
        /// What Prometheus answered.
        detail: String,
    },
    /// Prometheus answered with an unexpected status; `message` is the
    /// `error` field of its JSON answer (or an excerpt of the body).
    #[error("Prometheus answered {url} with {status}: {message}")]
    Status {
        /// The full request URL.
        url: String,
        /// The response status.
        status: reqwest::StatusCode,
        /// Prometheus' own explanation.
        message: String,
    },
    /// Any other transport failure (reset connection, protocol error).
    #[error("request to Prometheus at {url} failed: {source}")]
    Request {
        /// The full request URL.
        url: String,
        /// The error underneath.
        #[source]
        source: reqwest::Error,
    },
    /// An answer bigger than the client accepts; it was not read further.
    #[error(
        "the answer to {url} is larger than the limit of {}; is {base} really Prometheus, and is the query too broad?",
        crate::size::limit_text(*limit)
    )]
    TooLarge {
        /// The configured base URL.
        base: String,
        /// The full request URL.
        url: String,
        /// The limit, in bytes.
        limit: u64,
    },
    /// A 2xx answer that is not what Prometheus' API documents.
    #[error("unexpected answer from {url}: {reason}; is {base} really Prometheus?")]
    Decode {
        /// The configured base URL.
        base: String,
        /// The full request URL.
        url: String,
        /// What was wrong with it.
        reason: String,
    },
    /// Prometheus did not become ready (`/-/ready`) in time.
    #[error(
        "Prometheus at {base} did not become ready within {} ({last}); {}",
        humantime::format_duration(*timeout),
        crate::status::see_logs(unit)
    )]
    NotReady {
        /// The configured base URL.
        base: String,
        /// The unit running it, for the journal hint.
        unit: String,
        /// How long we waited.
        timeout: Duration,
        /// The last answer or error seen.
        last: String,
    },
    /// Prometheus reported a snapshot that is not where the manifest says
    /// its data lives: `dataDir` is not this Prometheus' storage path.
    #[error(
        "Prometheus at {url} made snapshot {name:?}, but {path} does not exist; is prometheus.dataDir the --storage.tsdb.path of this Prometheus?"
    )]
    SnapshotMissing {
        /// The Prometheus base URL.
        url: String,
        /// The snapshot name Prometheus returned.
        name: String,
        /// Where it was expected.
        path: PathBuf,
    },
    /// The Backup manifest lacks a field this operation needs.
    #[error("Backup {name}: {reason}")]
    Config {
        /// The Backup manifest.
        name: String,
        /// What is missing and how to fix it.
        reason: String,
    },
    /// The set was made by another kind of backup.
    #[error(
        "backup set {id} is a {kind:?} backup, not a Prometheus one; choose a set of this Backup manifest"
    )]
    WrongKind {
        /// The set.
        id: String,
        /// Its recorded kind.
        kind: String,
    },
    /// Copying data failed (disk full, unwritable destination).
    #[error("cannot copy {from} to {to}: {source}; {hint}")]
    Copy {
        /// The file being read.
        from: PathBuf,
        /// The file being written.
        to: PathBuf,
        /// What state this left things in and what to do.
        hint: String,
        /// The error underneath.
        #[source]
        source: std::io::Error,
    },
    /// A rename, directory creation or listing failed.
    #[error("cannot {op} {path}: {source}")]
    Io {
        /// What was being done ("move aside", "create", "read").
        op: String,
        /// The path it was done to.
        path: PathBuf,
        /// The error underneath.
        #[source]
        source: std::io::Error,
    },
    /// Not enough free space for the restored copy; nothing was changed.
    #[error(
        "not enough free space for the restore: {needed} bytes needed in {path}, {available} available; free some space (nothing was changed)"
    )]
    NoSpace {
        /// The filesystem (directory) that lacks space.
        path: PathBuf,
        /// Bytes the set holds.
        needed: u64,
        /// Bytes available there.
        available: u64,
    },
    /// The set verifies but does not hold what a TSDB snapshot must.
    #[error("backup set {id}: {file} is {reason}; restore from another set (nothing was changed)")]
    InvalidSet {
        /// The set.
        id: String,
        /// The file, relative to the set directory.
        file: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A file of the set does not match `backup.json`, found while it was
    /// staged next to the data directory (where a restore checks every
    /// file's sha256, before anything is stopped).
    #[error(
        "backup set {id} is damaged: {file} has a different sha256 than backup.json records (found while staging it next to the data directory; nothing was stopped or changed); restore from another set"
    )]
    ChangedDuringCopy {
        /// The set.
        id: String,
        /// The file, relative to the set directory.
        file: String,
    },
    /// Talking to systemd failed.
    #[error("{context}: {source}")]
    Systemd {
        /// What we were doing.
        context: String,
        /// The error underneath.
        #[source]
        source: Box<ManagerError>,
    },
    /// The unit does not carry unitlet's marker, so unitlet may not stop it.
    #[error(
        "{unit} is not managed by unitlet (no X-Unitlet-Manifest={manifest} in {fragment}); restore stops only units unitlet manages — apply the Service manifest {manifest} first or fix prometheus.service"
    )]
    NotManaged {
        /// The unit.
        unit: String,
        /// The manifest it should belong to.
        manifest: String,
        /// Its unit file, or what systemd said about it.
        fragment: String,
    },
    /// Something other than this restore started the service while the
    /// data was being swapped.
    #[error(
        "{unit} was started by someone else during the restore (state {state}); is another unitlet running that ignores holds?"
    )]
    StartedBehindOurBack {
        /// The unit.
        unit: String,
        /// Its active state when we looked.
        state: String,
    },
    /// Prometheus runs on the restored data but it does not answer queries
    /// as the set says it should.
    #[error("restored data does not answer {query:?} at {time}: {reason}")]
    DataCheck {
        /// The PromQL expression used.
        query: String,
        /// The evaluation time (unix seconds).
        time: String,
        /// What came back instead.
        reason: String,
    },
    /// The restore failed after Prometheus was stopped; the old data was
    /// put back (as far as `rollback` says).
    #[error("restore failed: {cause}; {rollback}")]
    RolledBack {
        /// Why the restore failed.
        #[source]
        cause: Box<PrometheusError>,
        /// What was done to undo it.
        rollback: String,
    },
    /// Another restore of the same service is running (or recovering an
    /// interrupted one); nothing was changed.
    #[error(
        "another restore of {service} is running ({owner}); nothing was changed — wait for it to finish, then try again"
    )]
    RestoreRunning {
        /// The Service being restored.
        service: String,
        /// Who runs it: PID, what, since when.
        owner: String,
    },
    /// An earlier restore of the service was interrupted and cannot be
    /// finished or undone automatically; nothing more was changed.
    #[error("{0}")]
    Unrecovered(String),
    /// Reading or writing the backup set failed.
    #[error(transparent)]
    Store(#[from] BackupError),
}
