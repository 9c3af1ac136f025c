//! The typed model manifests validate into: what the rest of unitlet works from.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::schedule::Schedule;

/// The only `apiVersion` this release understands.
pub const API_VERSION: &str = "unitlet/v1";

/// Manifest files larger than this are refused before parsing: a manifest is
/// a few hundred bytes, and a huge file is a mistake or an attack.
pub const MAX_FILE_SIZE: u64 = 1024 * 1024;

/// A validated manifest, ready to render.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// `metadata.name`: the object's name and the stem of its unit names.
    pub name: String,
    /// `metadata.labels`: free-form, for people and tools (and the default
    /// silence's `job`).
    pub labels: BTreeMap<String, String>,
    /// The file the manifest came from, so status and errors can point at it.
    pub file: PathBuf,
    /// Line of the document within the file (1-based).
    pub line: u64,
    /// The lowercase hex SHA-256 of the bytes of the whole file (all its
    /// documents) as parsed ([`manifest_digest`]): the status says which
    /// file an object was last reconciled from, so a fleet rollout can tell
    /// a host that applied a new file from one still on the old.
    pub digest: String,
    /// Where fields checked after parsing are written (line, column), so
    /// an ordering cycle or an unusable file points at its field: keys are
    /// `command`, `after`, `unitFile`, `environmentFile`, `credentials`,
    /// `grafana.tokenFile`, `grafana.basicAuth.passwordFile`.
    pub field_at: BTreeMap<&'static str, (u64, u64)>,
    /// The kind-specific part.
    pub spec: Spec,
}

impl Manifest {
    /// Service or Backup, from the spec.
    pub fn kind(&self) -> Kind {
        match self.spec {
            Spec::Service(_) => Kind::Service,
            Spec::Backup(_) => Kind::Backup,
        }
    }

    /// The Service spec, if this is a Service.
    pub fn as_service(&self) -> Option<&ServiceSpec> {
        match &self.spec {
            Spec::Service(s) => Some(s),
            Spec::Backup(_) => None,
        }
    }

    /// The Backup spec, if this is a Backup.
    pub fn as_backup(&self) -> Option<&BackupSpec> {
        match &self.spec {
            Spec::Backup(b) => Some(b),
            Spec::Service(_) => None,
        }
    }
}

/// A manifest's `kind`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Kind {
    /// A long-running service: one `.service` unit.
    Service,
    /// A scheduled backup: a `.service` oneshot and its `.timer`.
    Backup,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Service => "Service",
            Kind::Backup => "Backup",
        })
    }
}

/// The `spec` of a manifest, by kind.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // few, long-lived values
pub enum Spec {
    /// `kind: Service`.
    Service(ServiceSpec),
    /// `kind: Backup`.
    Backup(BackupSpec),
}

/// How the main process is described: an argv unitlet renders, or a unit
/// file the person already has and wants managed.
#[derive(Debug, Clone, PartialEq)]
pub enum Exec {
    /// `command`: the program and its arguments (`ExecStart=`).
    Command(Vec<String>),
    /// `content` is read at load time so that rendering stays pure.
    UnitFile {
        /// The adopted unit file (`unitFile`).
        path: PathBuf,
        /// Its content, as read when the manifests were loaded.
        content: String,
    },
}

/// `state`: the active state unitlet keeps the unit in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DesiredState {
    /// Started, and started again when it stops.
    Running,
    /// Stopped, and stopped again when started.
    Stopped,
}

/// `onConfigChange`: what a change of `configFiles` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnConfigChange {
    /// Reload the service as `reload` says.
    Reload,
    /// Restart the unit.
    Restart,
    /// Only record the new content.
    None,
}

/// `reload`: how to reload the service.
#[derive(Debug, Clone, PartialEq)]
pub enum ReloadMethod {
    /// `reload.http`: a `POST` to `url`; only a 2xx answer is success.
    Http {
        /// `reload.http.url`.
        url: String,
    },
    /// `reload.signal`: a signal to the unit's main process.
    Signal {
        /// The signal's name, as written (`HUP`).
        name: String,
        /// Its number (`SIGHUP` is 1).
        number: i32,
    },
}

/// `readiness`: when a Service counts as Ready beyond "active".
#[derive(Debug, Clone, PartialEq)]
pub struct Readiness {
    /// `readiness.http.url`: a `GET` answered with 2xx means ready.
    pub url: String,
    /// `readiness.timeout`: how long to wait for readiness after a start,
    /// restart or config reload.
    pub timeout: Duration,
}

/// cgroup limits. Values are kept in systemd's own spelling (already
/// validated) so rendering and `SetUnitProperties` agree on them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    /// Bytes.
    pub memory_max: Option<u64>,
    /// Bytes (`MemoryHigh=`, the throttling threshold).
    pub memory_high: Option<u64>,
    /// Percent of one CPU (150 = 1.5 CPUs).
    pub cpu_quota: Option<u64>,
    /// Processes and threads (`TasksMax=`).
    pub tasks_max: Option<u64>,
}

impl Resources {
    /// No limit set.
    pub fn is_empty(&self) -> bool {
        *self == Resources::default()
    }
}

/// The `spec` of a Service (docs/manifests.md, "Service").
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSpec {
    /// `description` (`Description=`); `None`: the manifest's name, or the
    /// adopted unit file's own.
    pub description: Option<String>,
    /// `command` or `unitFile`.
    pub exec: Exec,
    /// `workingDirectory` (`WorkingDirectory=`); also where `validate` runs.
    pub working_directory: Option<PathBuf>,
    /// `environment`: one `Environment=` line per variable.
    pub environment: BTreeMap<String, String>,
    /// `EnvironmentFile=`: variables that must not sit in a unit file
    /// (passwords, API keys). Checked at load time to be a private regular
    /// file; its content is never read by unitlet.
    pub environment_file: Option<PathBuf>,
    /// `LoadCredential=NAME:PATH`: secrets the service reads from
    /// `$CREDENTIALS_DIRECTORY/NAME`. Same checks as `environment_file`.
    pub credentials: BTreeMap<String, PathBuf>,
    /// `state`.
    pub state: DesiredState,
    /// `enabled`: whether the unit starts with the session
    /// (`WantedBy=default.target`).
    pub enabled: bool,
    /// `None` means "not given": a rendered unit uses `on-failure`; an
    /// adopted unit file keeps its own setting.
    pub restart: Option<String>,
    /// `restartSec` (`RestartSec=`); `None`: not given (1 s in a rendered
    /// unit; an adopted unit file keeps its own).
    pub restart_sec: Option<Duration>,
    /// `after`: Services this one starts after (`After=` and `Wants=`).
    pub after: Vec<String>,
    /// `resources`: cgroup limits.
    pub resources: Resources,
    /// `configFiles`: files the service reads, watched by content hash.
    pub config_files: Vec<PathBuf>,
    /// `onConfigChange`.
    pub on_config_change: OnConfigChange,
    /// `reload`, if given.
    pub reload: Option<ReloadMethod>,
    /// `validate`: a command (argv) that must succeed before a reload or
    /// restart caused by a config change.
    pub validate: Option<Vec<String>>,
    /// `readiness`, if given.
    pub readiness: Option<Readiness>,
    /// Alertmanager silence around restarts unitlet makes on purpose.
    pub silence: Option<Silence>,
    /// How a changed definition is judged and rolled back.
    pub rollout: RolloutSpec,
}

/// `spec.rollout`: the health gate of a changed definition.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutSpec {
    /// Roll a failed revision back by itself (`auto`, default true).
    pub auto: bool,
    /// How long a new revision may take to be active and ready; `None`:
    /// `readiness.timeout`, else 60 s.
    pub timeout: Option<Duration>,
    /// Automatic restarts (by `Restart=`) that fail a revision beyond this.
    pub max_restarts: u32,
}

impl Default for RolloutSpec {
    fn default() -> Self {
        RolloutSpec {
            auto: true,
            timeout: None,
            max_restarts: 3,
        }
    }
}

/// `spec.silence`: what to silence in Alertmanager while unitlet restarts,
/// rolls back or restores the Service on purpose.
#[derive(Debug, Clone, PartialEq)]
pub struct Silence {
    /// `None`: `job="<labels.job or the name>"`
    /// (see `silence::matchers_for`).
    pub matchers: Option<Vec<super::matcher::Matcher>>,
    /// How long a silence lasts at most (`for`).
    pub duration: Duration,
}

/// What a Backup backs up: exactly one of `prometheus` and `grafana`.
#[derive(Debug, Clone, PartialEq)]
pub enum BackupSource {
    /// `prometheus`: a Prometheus TSDB, by snapshot.
    Prometheus {
        /// `prometheus.url`: Prometheus' base URL.
        url: String,
        /// `prometheus.dataDir`: its `--storage.tsdb.path`.
        data_dir: Option<PathBuf>,
        /// `prometheus.service`: the Service manifest that runs it (restore
        /// stops and starts it).
        service: Option<String>,
    },
    /// `grafana`: the whole Grafana instance, through its HTTP API.
    Grafana {
        /// `grafana.url`: Grafana's base URL.
        url: String,
        /// `grafana.tokenFile` or `grafana.basicAuth`.
        auth: GrafanaAuthSpec,
    },
}

/// Where Grafana credentials live. The secrets themselves are read only
/// when a backup runs, never stored in the model.
#[derive(Debug, Clone, PartialEq)]
pub enum GrafanaAuthSpec {
    /// `grafana.tokenFile`: a file holding a service-account token.
    TokenFile(PathBuf),
    /// `grafana.basicAuth`: HTTP basic authentication.
    Basic {
        /// `grafana.basicAuth.username`.
        username: String,
        /// `grafana.basicAuth.passwordFile`: a file holding the password.
        password_file: PathBuf,
    },
}

/// The `spec` of a Backup (docs/manifests.md, "Backup").
#[derive(Debug, Clone, PartialEq)]
pub struct BackupSpec {
    /// `schedule`: when scheduled runs happen.
    pub schedule: Schedule,
    /// `keep`: how many complete sets to keep.
    pub keep: u32,
    /// `destination` when it is a directory; `None`: `STATE_DIR/backups/NAME`
    /// (or the restic repository of `restic`).
    pub destination: Option<PathBuf>,
    /// `destination: {restic: …}`: sets go to a restic repository instead
    /// of a directory (`destination` is then `None`).
    pub restic: Option<ResticDestination>,
    /// `prometheus` or `grafana`.
    pub source: BackupSource,
}

/// `destination.restic`: a restic repository that holds a Backup's sets,
/// one restic snapshot per set. The password is read by restic itself,
/// never by unitlet.
#[derive(Debug, Clone, PartialEq)]
pub struct ResticDestination {
    /// `repository`: any repository string restic accepts (`/srv/restic`,
    /// `sftp:user@host:/srv/restic`, `s3:…`, `rest:…`).
    pub repository: String,
    /// `passwordFile`: a private file holding the repository's password
    /// (given to restic as `RESTIC_PASSWORD_FILE`).
    pub password_file: PathBuf,
}

/// A problem with a manifest file, located as precisely as we can.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ManifestError {
    /// The manifest file.
    pub file: PathBuf,
    /// 1-based; 0 when the problem is the file as a whole.
    pub line: u64,
    /// 1-based; 0 when the position within the line is not known.
    pub column: u64,
    /// What is wrong, and what to do about it.
    pub message: String,
    /// The field the problem is about, as a path (`spec.environmentFile`),
    /// when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            )
        }
    }
}

impl std::error::Error for ManifestError {}

/// Stable content hash of a value's debug form, used to notice spec changes
/// (for backoff reset) without a canonical serializer.
pub fn spec_hash(m: &Manifest) -> String {
    let mut h = Sha256::new();
    h.update(format!("{:?}", m.spec).as_bytes());
    hex::encode(&h.finalize()[..8])
}

/// The digest of a manifest file's bytes (all its documents): lowercase
/// hex SHA-256, as `sha256sum` prints it. In etcd it is the digest of the
/// manifest key's value, which the source writes to disk byte for byte.
pub fn manifest_digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Everything found in the manifests directory.
#[derive(Debug, Default)]
pub struct LoadedSet {
    /// Valid manifests, unique by name.
    pub manifests: Vec<Manifest>,
    /// Problems, per file. A file with an error in any document may still
    /// have contributed other valid documents.
    pub errors: Vec<ManifestError>,
    /// Facts about this machine that a manifest depends on (a secret file
    /// missing or not private), when loaded with `HostFacts::Warnings`:
    /// the manifest itself is valid and counted in `manifests`.
    pub warnings: Vec<ManifestError>,
    /// Names that appear in some file but are not applied because of an
    /// error: the file's implied name for unparsable files, or the names of
    /// documents that failed validation or collided. Units of these names
    /// are held as they are (never garbage-collected).
    pub held: BTreeMap<String, ManifestError>,
    /// Files that failed to parse as a whole.
    pub broken_files: BTreeSet<PathBuf>,
    /// Files that were considered (valid or not).
    pub files: Vec<PathBuf>,
}

impl LoadedSet {
    /// The valid manifest named `name`.
    pub fn get(&self, name: &str) -> Option<&Manifest> {
        self.manifests.iter().find(|m| m.name == name)
    }
}
