//! What `unitlet backup NAME`, `unitlet backups [NAME]` and `unitlet
//! restore NAME ID` do: find the Backup manifest, dispatch on its source and
//! return what happened (the commands in `cli/backup.rs` print it). What
//! goes wrong is a [`CommandError`]; the CLI turns it into the contract's
//! exit code.
//!
//! These run in short-lived processes (the Backup's oneshot, a person's
//! shell), so `backup` leaves its outcome in `STATE_DIR/backups/NAME.last.json`
//! for `unitlet run` to export as metrics.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::backup::{
    BackupError, LastRun, SetInfo, SetStatus, Store, last_run_path, own_backups_dir, read_last_run,
};
use crate::grafana::{self, GrafanaError};
use crate::locations::Locations;
use crate::manifest::{self, BackupSource, BackupSpec, GrafanaAuthSpec, LoadError};
use crate::prometheus::tsdb::{RestoreOptions, RestoreTarget};
use crate::prometheus::{self, PrometheusError};

mod restic;

/// Per-request timeout towards Prometheus and Grafana. Generous: a busy
/// server should slow a backup down, not fail it.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Dashboards fetched or saved at once: enough to hide latency, few enough
/// not to load Grafana.
const GRAFANA_CONCURRENCY: usize = 8;

/// Why a command could not do its job.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The manifests directory itself is unusable.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// No valid manifest has this name.
    #[error("no Backup manifest named {name:?} in {dir}; `unitlet get` lists the manifests")]
    Unknown {
        /// The requested name.
        name: String,
        /// The manifests directory.
        dir: PathBuf,
    },
    /// The name belongs to a manifest of another kind.
    #[error("{name} is a {kind}, not a Backup")]
    NotABackup {
        /// The requested name.
        name: String,
        /// Its kind.
        kind: String,
    },
    /// The manifest exists but is invalid, so it cannot be trusted.
    #[error("Backup {name} is invalid: {error}")]
    Invalid {
        /// The requested name.
        name: String,
        /// The validation error, with file, line and column.
        error: manifest::ManifestError,
    },
    /// A credentials file cannot be used. Its content is never shown.
    #[error("cannot read the {what} from {path}: {reason}")]
    Secret {
        /// Which credential.
        what: &'static str,
        /// The file named in the manifest.
        path: PathBuf,
        /// Why (I/O error or "is empty").
        reason: String,
    },
    /// The destination holds no sets at all.
    #[error(
        "backup set {id} not found: {destination} does not exist (no backup of {name} has run yet)"
    )]
    NoSets {
        /// The Backup manifest.
        name: String,
        /// The requested set.
        id: String,
        /// The destination.
        destination: PathBuf,
    },
    /// Prometheus backup or restore failed.
    #[error(transparent)]
    Prometheus(#[from] PrometheusError),
    /// Grafana backup or restore failed.
    #[error(transparent)]
    Grafana(#[from] GrafanaError),
    /// The backup store failed.
    #[error(transparent)]
    Store(#[from] BackupError),
    /// A flag cannot be used as given.
    #[error("{0}")]
    Usage(String),
    /// restic failed (wrong password, locked or unreachable repository, …):
    /// nothing was listed, changed or restored.
    #[error(transparent)]
    Restic(#[from] crate::restic::ResticError),
    /// The state directory (holds, restore journals) is not private:
    /// nothing there is read or written.
    #[error(transparent)]
    StateDir(#[from] crate::locations::LocationError),
}

/// The destination of Backup `name`: `spec.destination`, else
/// `STATE_DIR/backups/NAME`.
pub fn destination(loc: &Locations, name: &str, spec: &BackupSpec) -> PathBuf {
    spec.destination
        .clone()
        .unwrap_or_else(|| own_backups_dir(loc).join(name))
}

/// The kind a Backup's sets record: what its source is.
pub fn kind(spec: &BackupSpec) -> &'static str {
    match spec.source {
        BackupSource::Prometheus { .. } => prometheus::KIND,
        BackupSource::Grafana { .. } => grafana::KIND,
    }
}

/// The sets of Backup `name` in its destination (created if missing).
fn open_store(loc: &Locations, name: &str, spec: &BackupSpec) -> Result<Store, BackupError> {
    Store::open_in(
        &destination(loc, name, spec),
        Some(&own_backups_dir(loc)),
        name,
        kind(spec),
    )
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn find_backup(loc: &Locations, name: &str) -> Result<BackupSpec, CommandError> {
    let loaded = manifest::load_dir(&loc.manifests)?;
    if let Some(m) = loaded.get(name) {
        return match m.as_backup() {
            Some(b) => Ok(b.clone()),
            None => Err(CommandError::NotABackup {
                name: name.to_owned(),
                kind: m.kind().to_string(),
            }),
        };
    }
    if let Some(e) = loaded.held.get(name) {
        return Err(CommandError::Invalid {
            name: name.to_owned(),
            error: e.clone(),
        });
    }
    Err(CommandError::Unknown {
        name: name.to_owned(),
        dir: loc.manifests.clone(),
    })
}

/// Reads a secret file, trimmed (editors add a newline). The content never
/// appears in any message.
fn read_secret(what: &'static str, path: &Path) -> Result<String, CommandError> {
    let err = |reason: String| CommandError::Secret {
        what,
        path: path.to_path_buf(),
        reason,
    };
    manifest::check_secret_file(path).map_err(err)?;
    let bytes = manifest::read_regular_capped(path, true, MAX_SECRET_BYTES)
        .map_err(|e| err(format!("{} {e}", path.display())))?;
    let text =
        String::from_utf8(bytes).map_err(|_| err("the file is not UTF-8 text".to_owned()))?;
    let text = text.trim();
    if text.is_empty() {
        return Err(err("the file is empty".to_owned()));
    }
    Ok(text.to_owned())
}

/// Largest credentials file read: tokens and passwords are short.
const MAX_SECRET_BYTES: u64 = 64 << 10;

fn grafana_client(url: &str, auth: &GrafanaAuthSpec) -> Result<grafana::Client, CommandError> {
    let (auth, label) = match auth {
        GrafanaAuthSpec::TokenFile(p) => (
            grafana::Auth::Token(read_secret("Grafana service-account token", p)?),
            format!("service-account token from {}", p.display()),
        ),
        GrafanaAuthSpec::Basic {
            username,
            password_file,
        } => (
            grafana::Auth::Basic {
                username: username.clone(),
                password: read_secret("Grafana password", password_file)?,
            },
            format!(
                "basic auth as {username} (password from {})",
                password_file.display()
            ),
        ),
    };
    Ok(grafana::Client::new(url, auth, label, HTTP_TIMEOUT)?)
}

fn config_error(name: &str, reason: &str) -> CommandError {
    CommandError::Prometheus(PrometheusError::Config {
        name: name.to_owned(),
        reason: reason.to_owned(),
    })
}

/// Bytes for people: `1.5 GiB`.
pub fn format_size(b: u64) -> String {
    bytesize::ByteSize::b(b).display().iec().to_string()
}

async fn run_backup(
    loc: &Locations,
    name: &str,
    progress: bool,
    warnings: &mut Vec<String>,
) -> Result<(SetInfo, Vec<String>), CommandError> {
    let spec = find_backup(loc, name)?;
    if let Some(r) = &spec.restic {
        return restic::backup(loc, name, &spec, r, progress, warnings).await;
    }
    let store = open_store(loc, name, &spec)?;
    let set = make_set(name, &spec, &store, progress, warnings).await?;
    // `keep` counts the set just made; it is protected from its own prune.
    let deleted = store.prune(spec.keep.max(1) as usize, &set.id)?;
    Ok((set, deleted))
}

/// A new complete set of Backup `name` in `store`, from its source.
async fn make_set(
    name: &str,
    spec: &BackupSpec,
    store: &Store,
    progress: bool,
    warnings: &mut Vec<String>,
) -> Result<SetInfo, CommandError> {
    Ok(match &spec.source {
        BackupSource::Prometheus { url, data_dir, .. } => {
            let Some(data_dir) = data_dir else {
                return Err(config_error(
                    name,
                    "prometheus.dataDir is needed to take the snapshot out of Prometheus' data directory; set it to Prometheus' --storage.tsdb.path",
                ));
            };
            let client = prometheus::Client::new(url, HTTP_TIMEOUT)?;
            prometheus::tsdb::backup_tsdb(&client, data_dir, store, progress).await?
        }
        BackupSource::Grafana { url, auth } => {
            let client = grafana_client(url, auth)?;
            let report = grafana::backup::backup(&client, store, GRAFANA_CONCURRENCY).await?;
            for s in &report.skipped {
                warnings.push(format!(
                    "dashboard {} {:?} skipped: {}",
                    s.uid, s.title, s.reason
                ));
            }
            report.set
        }
    })
}

/// A backup run's complete set, and the old sets `keep` deleted.
#[derive(Debug)]
pub struct BackupMade {
    /// The new set.
    pub set: SetInfo,
    /// Ids of the old sets deleted.
    pub deleted: Vec<String>,
}

/// `unitlet backup NAME`: run Backup NAME now, then apply its `keep`.
///
/// Returns the new set (`None` when the set is complete but pruning old
/// sets failed, which is in `warnings`); records the outcome in
/// `STATE_DIR/backups/NAME.last.json` (`{lastSuccess, lastAttempt,
/// lastError, lastSet}`, unix seconds) for `unitlet run`'s metrics.
/// `warnings` gets what to tell whatever the outcome (dashboards skipped,
/// an outcome that could not be recorded), in order; `progress` draws a
/// progress bar on standard error.
///
/// # Errors
/// Why no complete set was made.
pub async fn backup(
    loc: &Locations,
    name: &str,
    progress: bool,
    warnings: &mut Vec<String>,
) -> Result<Option<BackupMade>, CommandError> {
    let attempt = unix_now();
    let result = run_backup(loc, name, progress, warnings).await;
    // Only a manifest that exists gets a record: a typo must not create
    // files (or metrics) for a name nobody defined.
    if !matches!(
        result,
        Err(CommandError::Unknown { .. } | CommandError::NotABackup { .. } | CommandError::Load(_))
    ) {
        let outcome = match &result {
            Ok((set, _)) => Ok(set.id.as_str()),
            Err(e) => Err(crate::error_chain(e)),
        };
        if let Err(unrecorded) = record_last_run(loc, name, attempt, outcome).await {
            warnings.push(unrecorded);
        }
    }
    match result {
        Ok((set, deleted)) => Ok(Some(BackupMade { set, deleted })),
        Err(CommandError::Store(e @ BackupError::Delete { .. })) => {
            // The set itself is complete; only pruning failed.
            warnings.push(crate::error_chain(&e));
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Records a run's outcome in `NAME.last.json`, under the state lock (one
/// writer at a time in the state directory); a failure to record is a
/// warning, returned.
async fn record_last_run(
    loc: &Locations,
    name: &str,
    attempt: u64,
    outcome: Result<&str, String>,
) -> Result<(), String> {
    let waiting = |holder: &str| tracing::info!(holder, "waiting for the state lock");
    let _lock = crate::lock::StateLock::acquire(&loc.state_dir, "unitlet backup", waiting)
        .await
        .ok();
    let path = last_run_path(loc, name);
    let previous = read_last_run(&loc.state_dir, name);
    let record = LastRun::after(previous, attempt, outcome);
    let bytes = serde_json::to_vec_pretty(&record).map_err(|e| e.to_string());
    bytes
        .and_then(|b| crate::fsutil::atomic_write(&path, &b, 0o600).map_err(|e| e.to_string()))
        .map_err(|e| format!("cannot record the outcome in {}: {e}", path.display()))
}

/// One row of `unitlet backups -o json`: a set and the manifest it
/// belongs to.
#[derive(Debug, Clone, Serialize)]
pub struct SetRow {
    /// The Backup manifest.
    pub manifest: String,
    /// The set (id, kind, source, created, size, …), flattened into the row.
    #[serde(flatten)]
    pub set: SetInfo,
}

/// `unitlet backups [NAME]`: every set of Backup NAME (or of every Backup
/// manifest), oldest first per manifest, complete or not.
///
/// # Errors
/// NAME is not a valid Backup manifest, or the manifests or a destination
/// cannot be read.
pub async fn backups(loc: &Locations, name: Option<&str>) -> Result<Vec<SetRow>, CommandError> {
    let loaded = manifest::load_dir(&loc.manifests)?;
    let backups: Vec<(String, BackupSpec)> = match name {
        Some(n) => vec![(n.to_owned(), find_backup(loc, n)?)],
        None => loaded
            .manifests
            .iter()
            .filter_map(|m| m.as_backup().map(|b| (m.name.clone(), b.clone())))
            .collect(),
    };
    let mut rows = Vec::new();
    for (name, spec) in backups {
        if let Some(r) = &spec.restic {
            // All or nothing: a repository that fails fails the listing.
            for s in restic::list(&name, &spec, r).await? {
                rows.push(SetRow {
                    manifest: name.clone(),
                    set: s,
                });
            }
            continue;
        }
        let dest = destination(loc, &name, &spec);
        // Listing must not create the destination as a side effect.
        if !dest.is_dir() {
            continue;
        }
        let store = open_store(loc, &name, &spec)?;
        for s in store.list()? {
            rows.push(SetRow {
                manifest: name.clone(),
                set: s,
            });
        }
    }
    Ok(rows)
}

/// One set's outcome in `unitlet backups verify`: its ID and summary or
/// what is wrong with it.
pub type SetCheck = (String, Result<SetInfo, BackupError>);

/// `unitlet backups verify NAME [ID] [--deep]`: set `id`, or every
/// complete set of Backup `name`, checked ([`Store::check`]); each set's
/// outcome, in order.
///
/// # Errors
/// [`CommandError`] when the manifest or its destination cannot be used.
pub async fn verify(
    loc: &Locations,
    name: &str,
    id: Option<&str>,
    deep: bool,
) -> Result<Vec<SetCheck>, CommandError> {
    let spec = find_backup(loc, name)?;
    if let Some(r) = &spec.restic {
        return restic::verify(loc, name, &spec, r, id, deep).await;
    }
    let store = open_store(loc, name, &spec)?;
    let ids: Vec<String> = match id {
        Some(id) => vec![id.to_owned()],
        None => store
            .list()?
            .into_iter()
            .filter(|s| s.status == SetStatus::Complete && !s.legacy)
            .map(|s| s.id)
            .collect(),
    };
    Ok(ids
        .into_iter()
        .map(|id| {
            let r = store.check(&id, deep);
            (id, r)
        })
        .collect())
}

/// The table `unitlet backups` (and `describe` of a Backup) prints; pure.
/// NEW BLOCKS, WRITTEN and SHARED are `-` for a set that does not record
/// them (a 0.2 set, a Grafana set, a set listed from a restic repository).
pub fn sets_table(rows: &[SetRow]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.set.id.clone(),
                r.manifest.clone(),
                r.set.created.clone(),
                format_size(r.set.size),
                if r.set.legacy {
                    format!("{} (legacy)", r.set.status)
                } else {
                    r.set.status.to_string()
                },
                r.set
                    .new_blocks
                    .map_or_else(|| "-".to_owned(), |n| n.to_string()),
                r.set.written.map_or_else(|| "-".to_owned(), format_size),
                r.set.shared.map_or_else(|| "-".to_owned(), format_size),
            ]
        })
        .collect();
    let mut out = Vec::new();
    crate::table::print_table(
        &mut out,
        &[
            "ID",
            "MANIFEST",
            "CREATED",
            "SIZE",
            "STATUS",
            "NEW BLOCKS",
            "WRITTEN",
            "SHARED",
        ],
        &cells,
    );
    // print_table writes only the UTF-8 of its `&str` cells: nothing is lost.
    String::from_utf8_lossy(&out).into_owned()
}

/// The flags of `unitlet restore`.
#[derive(Debug, Clone, Default)]
pub struct RestoreArgs {
    /// Verify and report; change nothing.
    pub dry_run: bool,
    /// Grafana: only these kinds (`ObjectKind::plural` names); empty: all.
    pub only: Vec<String>,
    /// Grafana: the datasource secure values file.
    pub secure_values: Option<PathBuf>,
    /// Draw progress bars on standard error.
    pub progress: bool,
}

/// Largest secure-values file read: a few datasources' passwords.
const MAX_SECURE_VALUES_BYTES: u64 = 1 << 20;

/// The Grafana restore options the flags ask for; the secure-values file
/// must be private like every secret file, and its content is never shown.
fn grafana_options(args: &RestoreArgs) -> Result<grafana::restore::RestoreOptions, CommandError> {
    let mut only = std::collections::BTreeSet::new();
    for name in args.only.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        let Some(kind) = grafana::ObjectKind::from_plural(name) else {
            let known: Vec<&str> = grafana::ObjectKind::ALL
                .iter()
                .map(|k| k.plural())
                .collect();
            return Err(CommandError::Usage(format!(
                "--only {name:?} is not a kind of Grafana object; use one or more of {}, separated by commas",
                known.join(", ")
            )));
        };
        only.insert(kind);
    }
    let secure_values = match &args.secure_values {
        None => grafana::SecureValues::default(),
        Some(path) => {
            let what = "Grafana datasource secure values";
            let err = |reason: String| CommandError::Secret {
                what,
                path: path.clone(),
                reason,
            };
            crate::manifest::check_secret_file(path).map_err(err)?;
            let bytes = crate::manifest::read_regular_capped(path, true, MAX_SECURE_VALUES_BYTES)
                .map_err(|e| err(format!("{} {e}", path.display())))?;
            let text = String::from_utf8(bytes)
                .map_err(|_| err("the file is not UTF-8 text".to_owned()))?;
            grafana::SecureValues::parse(&text).map_err(err)?
        }
    };
    Ok(grafana::restore::RestoreOptions {
        dry_run: args.dry_run,
        concurrency: GRAFANA_CONCURRENCY,
        only: (!only.is_empty()).then_some(only),
        secure_values,
    })
}

/// What a Prometheus restore needs beyond a backup: the data directory
/// (resolved: the shipped layout makes it a symlink into XDG_DATA_HOME, and
/// the real directory is swapped, not the link) and the Service to stop.
fn restore_needs<'a>(
    name: &str,
    data_dir: Option<&Path>,
    service: Option<&'a str>,
) -> Result<(PathBuf, &'a str), CommandError> {
    let Some(data_dir) = data_dir else {
        return Err(config_error(
            name,
            "prometheus.dataDir is needed to restore; set it to Prometheus' --storage.tsdb.path",
        ));
    };
    let Some(service) = service else {
        return Err(config_error(
            name,
            "prometheus.service is needed to restore: the Service manifest running Prometheus, which restore stops and starts",
        ));
    };
    let resolved = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    Ok((resolved, service))
}

/// `unitlet restore NAME ID [--dry-run]`: restore set ID of Backup NAME.
///
/// Every checksum is verified before anything is touched. Prometheus: the
/// data directory is swapped with a copy of the set around a stop/start of
/// `prometheus.service`, the replaced data moved aside and named. Grafana:
/// folders and dashboards are saved back, with a per-object report.
///
/// A Prometheus restore first finishes or undoes an interrupted earlier
/// restore of the same service (see [`crate::journal`]).
///
/// Returns what was restored ([`Restored::is_success`]: whether every
/// object was; a Grafana restore reports per object, a Prometheus restore
/// is all or nothing). What Alertmanager said about silences goes to
/// `notes`, whatever the outcome.
///
/// # Errors
/// Why nothing was restored, the previous state kept;
/// [`PrometheusError::RestoreRunning`] when another restore of the same
/// service is running (nothing was tried).
pub async fn restore(
    loc: &Locations,
    name: &str,
    id: &str,
    args: &RestoreArgs,
    notes: &mut Vec<crate::silence::Note>,
) -> Result<Restored, CommandError> {
    // Journals and holds are read and written there: refused first.
    loc.check_state_dir()?;
    let spec = find_backup(loc, name)?;
    if let Some(r) = &spec.restic {
        // The set comes out of the repository into a staging store, which
        // is removed when the restore is over, whatever its outcome. What
        // can be refused without the set is refused before fetching it.
        precheck(name, &spec, args)?;
        let staged = restic::fetch(loc, name, &spec, r, id).await?;
        return restore_from(loc, name, id, args, notes, &spec, staged.store()).await;
    }
    let dest = destination(loc, name, &spec);
    if !dest.is_dir() {
        return Err(CommandError::NoSets {
            name: name.to_owned(),
            id: id.to_owned(),
            destination: dest,
        });
    }
    let store = open_store(loc, name, &spec)?;
    restore_from(loc, name, id, args, notes, &spec, &store).await
}

/// The checks of a restore that need no set: the flags and, for
/// Prometheus, `dataDir` and `service`.
fn precheck(name: &str, spec: &BackupSpec, args: &RestoreArgs) -> Result<(), CommandError> {
    match &spec.source {
        BackupSource::Prometheus {
            data_dir, service, ..
        } => {
            if !args.only.is_empty() || args.secure_values.is_some() {
                return Err(prometheus_only_whole());
            }
            restore_needs(name, data_dir.as_deref(), service.as_deref()).map(|_| ())
        }
        BackupSource::Grafana { .. } => grafana_options(args).map(|_| ()),
    }
}

fn prometheus_only_whole() -> CommandError {
    CommandError::Usage(
        "--only and --secure-values apply to Grafana restores only; a Prometheus set is restored whole".to_owned(),
    )
}

/// [`restore`] of set `id` of `store`, once the store is at hand.
async fn restore_from(
    loc: &Locations,
    name: &str,
    id: &str,
    args: &RestoreArgs,
    notes: &mut Vec<crate::silence::Note>,
    spec: &BackupSpec,
    store: &Store,
) -> Result<Restored, CommandError> {
    match &spec.source {
        BackupSource::Prometheus {
            url,
            data_dir,
            service,
        } => {
            if !args.only.is_empty() || args.secure_values.is_some() {
                return Err(prometheus_only_whole());
            }
            let (data_dir, service) = restore_needs(name, data_dir.as_deref(), service.as_deref())?;
            let client = prometheus::Client::new(url, HTTP_TIMEOUT)?;
            let target = RestoreTarget {
                backup: name,
                store,
                id,
                data_dir: &data_dir,
                service,
                client: &client,
                state_dir: &loc.state_dir,
                bus: loc.bus.as_deref(),
            };
            let report = restore_prometheus(loc, target, args, notes).await?;
            Ok(Restored::Prometheus(report))
        }
        BackupSource::Grafana { url, auth } => {
            let options = grafana_options(args)?;
            let client = grafana_client(url, auth)?;
            let set = store.verify(id)?;
            let report = grafana::restore::restore(&client, &set, &options).await?;
            Ok(Restored::Grafana(report))
        }
    }
}

/// What a restore did, per source.
#[derive(Debug)]
pub enum Restored {
    /// The TSDB was swapped (all or nothing).
    Prometheus(prometheus::tsdb::RestoreReport),
    /// Grafana's objects, each with its outcome.
    Grafana(grafana::restore::RestoreReport),
}

impl Restored {
    /// Whether every object was restored (a Prometheus restore that
    /// returns is whole).
    pub fn is_success(&self) -> bool {
        match self {
            Restored::Prometheus(_) => true,
            Restored::Grafana(r) => r.is_success(),
        }
    }
}

/// A Prometheus restore with the Service's alerts silenced around it (not
/// in a dry run); what Alertmanager said goes to `notes`.
async fn restore_prometheus(
    loc: &Locations,
    target: RestoreTarget<'_>,
    args: &RestoreArgs,
    notes: &mut Vec<crate::silence::Note>,
) -> Result<prometheus::tsdb::RestoreReport, CommandError> {
    let service = target.service;
    let opts = RestoreOptions {
        dry_run: args.dry_run,
        progress: args.progress,
        ..RestoreOptions::default()
    };
    // Silence the Service's alerts around the restore.
    let silence = if args.dry_run {
        None
    } else {
        manifest::load_dir(&loc.manifests)
            .ok()
            .and_then(|l| l.get(service).cloned())
            .and_then(|m| crate::silence::request_for(&m, &loc.alertmanager))
    };
    let http = crate::reload::http_client();
    // Made only once everything that can be checked was, right
    // before the stop: a refused restore silences nothing.
    let (result, made) =
        prometheus::tsdb::restore_tsdb_with(target, &opts, async || match &silence {
            Some(req) => crate::silence::before(&http, req, "restore", notes).await,
            None => None,
        })
        .await;
    let made = made.flatten();
    if let Some(req) = &silence {
        let why = match &result {
            Ok(_) => format!("{service} is Ready again after the restore"),
            Err(_) => {
                format!("the restore of {service} failed, which must not stay silent")
            }
        };
        crate::silence::after(&http, req, made, &why, notes).await;
    }
    Ok(result?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_for_people() {
        assert_eq!(format_size(0), "0 B");
        assert_eq!(format_size(1023), "1023 B");
        assert_eq!(format_size(1536), "1.5 KiB");
        assert_eq!(format_size(3 << 30), "3.0 GiB");
    }

    #[test]
    fn table_has_the_contract_columns() {
        let row = SetRow {
            manifest: "tsdb".into(),
            set: SetInfo {
                id: "20261127T235501Z".into(),
                backup: Some("tsdb".into()),
                legacy: false,
                kind: "prometheus".into(),
                source: "http://p:9090/".into(),
                created: "2026-11-27T23:55:01Z".into(),
                size: 2048,
                files: 3,
                status: SetStatus::Incomplete,
                path: "/x".into(),
                new_blocks: None,
                written: None,
                shared: None,
            },
        };
        let t = sets_table(std::slice::from_ref(&row));
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            [
                "ID", "MANIFEST", "CREATED", "SIZE", "STATUS", "NEW", "BLOCKS", "WRITTEN", "SHARED"
            ]
        );
        assert!(lines[1].starts_with("20261127T235501Z   tsdb"), "{t}");
        let words = |l: &str| l.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(words(lines[1]).ends_with("2.0 KiB incomplete - - -"), "{t}");
        let mut legacy = row.clone();
        legacy.set.backup = None;
        legacy.set.legacy = true;
        let t = sets_table(&[legacy]);
        assert!(
            words(t.lines().nth(1).unwrap()).ends_with("incomplete (legacy) - - -"),
            "{t}"
        );
        let mut incremental = row.clone();
        incremental.set.status = SetStatus::Complete;
        incremental.set.new_blocks = Some(2);
        incremental.set.written = Some(1536);
        incremental.set.shared = Some(3 << 30);
        let t = sets_table(&[incremental]);
        assert!(
            words(t.lines().nth(1).unwrap()).ends_with("complete 2 1.5 KiB 3.0 GiB"),
            "{t}"
        );
    }

    #[test]
    fn default_destination_is_under_the_state_dir() {
        let loc = Locations {
            manifests: "/m".into(),
            state_dir: "/s".into(),
            unit_dir: "/u".into(),
            bus: None,
            alertmanager: crate::manifest::DEFAULT_ALERTMANAGER_URL.into(),
        };
        let spec = BackupSpec {
            schedule: crate::schedule::Schedule::parse("every 6h").unwrap(),
            keep: 2,
            destination: None,
            restic: None,
            source: BackupSource::Prometheus {
                url: "http://p:9090".into(),
                data_dir: None,
                service: None,
            },
        };
        assert_eq!(
            destination(&loc, "tsdb", &spec),
            PathBuf::from("/s/backups/tsdb")
        );
        assert_eq!(
            last_run_path(&loc, "tsdb"),
            PathBuf::from("/s/backups/tsdb.last.json")
        );
    }
}
