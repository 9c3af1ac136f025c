//! Why a command did not succeed, and the exit status that says so: the
//! one place where the contract's exit codes are decided.

use std::path::PathBuf;

use crate::backup_cmd::CommandError;
use crate::prometheus::PrometheusError;

/// Exit status: the command did what was asked and the answer is yes.
pub const OK: i32 = 0;
/// Exit status: the answer is no (changes pending, not Ready, invalid,
/// unknown NAME, backup or restore failed).
pub const NOT_OK: i32 = 1;
/// Exit status: the command could not do its job at all (no bus, an
/// unreadable directory, the state lock, a restore already running).
pub const OPERATIONAL: i32 = 2;

/// Everything a command can end with other than success. [`CliError::exit_code`]
/// maps each to the contract's exit status; [`CliError::report`] prints it.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command printed its own negative answer (pending changes,
    /// objects not Ready, invalid manifests); nothing more to say.
    #[error("")]
    Unsuccessful,
    /// The command printed why it ends with exit status 2: it could not do
    /// its work (etcd unreachable, a concurrent change).
    #[error("")]
    Unavailable,
    /// `doctor`'s worst verdict is a WARN (its report says which).
    #[error("")]
    DoctorWarn,
    /// `doctor`'s worst verdict is a FAIL (its report says which).
    #[error("")]
    DoctorFail,
    /// This host's fleet identity cannot be had, a fleet flag is unusable,
    /// or etcd cannot be read.
    #[error(transparent)]
    Fleet(#[from] crate::fleet::FleetError),
    /// `fleet push` wrote nothing: 1 for what is in the directory, 2 when
    /// etcd could not take it.
    #[error(transparent)]
    Push(crate::fleet::cmd::PushError),
    /// `fleet rollout` could not go on (etcd, the lock, an unfinished
    /// rollout): 2, the rollout stays resumable.
    #[error(transparent)]
    FleetRollout(#[from] crate::fleet::rollout::record::RolloutError),
    /// `logs` could not show the unit's output (1 when there is no such
    /// unit, else 2).
    #[error(transparent)]
    Logs(crate::logs::LogsError),
    /// The async runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// No user manager, or the unit directory is not on its search path.
    #[error(transparent)]
    Systemd(#[from] crate::manager::ManagerError),
    /// A reconcile pass could not run.
    #[error(transparent)]
    Reconcile(#[from] crate::reconcile::ReconcileError),
    /// The state lock could not be taken.
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
    /// The status file could not be saved.
    #[error(transparent)]
    Status(#[from] crate::status::StatusError),
    /// The operator stopped with an error.
    #[error(transparent)]
    Operator(#[from] crate::operator::RunError),
    /// `--metrics-addr` is neither HOST:PORT nor "off".
    #[error("--metrics-addr {0:?} is not HOST:PORT (e.g. 127.0.0.1:9464) or \"off\"")]
    MetricsAddr(String),
    /// The manual page could not be written.
    #[error("cannot write the manual page to standard output: {0}")]
    Man(#[source] std::io::Error),
    /// The manifests directory itself is missing or unusable (`validate`,
    /// `render`): operational, as for every command.
    #[error(transparent)]
    Load(#[from] crate::manifest::LoadError),
    /// NAME is not a manifest (`get`, `describe`).
    #[error("no manifest named {name:?} in {}; `unitlet get` lists them", dir.display())]
    UnknownName {
        /// The requested name.
        name: String,
        /// The manifests directory.
        dir: PathBuf,
    },
    /// NAME is not a manifest (`render`).
    #[error("no manifest named {name:?} in {}", dir.display())]
    NoSuchManifest {
        /// The requested name.
        name: String,
        /// The manifests directory.
        dir: PathBuf,
    },
    /// NAME is a manifest that does not validate (`render`).
    #[error("manifest {name:?} is invalid: {error}")]
    InvalidManifest {
        /// The requested name.
        name: String,
        /// Why, with file, line and column.
        error: crate::manifest::ManifestError,
    },
    /// `render --out DIR` could not write a unit file.
    #[error("cannot write {}: {source}", path.display())]
    Export {
        /// The file being written.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `unitlet backup NAME` made no complete set.
    #[error("backup {name} failed")]
    Backup {
        /// The Backup manifest.
        name: String,
        /// Why.
        #[source]
        source: Box<CommandError>,
    },
    /// `unitlet backups verify NAME`: some sets failed the check.
    #[error("backups verify {name}: {failed} of {total} sets failed")]
    VerifyFailed {
        /// The Backup manifest.
        name: String,
        /// Sets that failed.
        failed: usize,
        /// Sets checked.
        total: usize,
    },
    /// `unitlet backups` could not list the sets.
    #[error(transparent)]
    Backups(Box<CommandError>),
    /// `unitlet restore NAME ID` failed; the previous state is kept.
    #[error("restore of {name} set {id}")]
    Restore {
        /// The Backup manifest.
        name: String,
        /// The backup set.
        id: String,
        /// Why.
        #[source]
        source: Box<CommandError>,
    },
    /// Another restore of the same service is running; nothing was tried.
    #[error("restore of {name} set {id} refused")]
    RestoreRefused {
        /// The Backup manifest.
        name: String,
        /// The backup set.
        id: String,
        /// The running restore.
        #[source]
        source: Box<CommandError>,
    },
    /// A revision history cannot be read or written (`rollout`).
    #[error(transparent)]
    Rollout(#[from] crate::rollout::history::RolloutError),
    /// NAME is not a Service with revisions (`rollout`): why.
    #[error("{0}")]
    NotAService(String),
    /// `rollout undo` has nothing to go back to.
    #[error("cannot undo the rollout of {name}: {why}")]
    Undo {
        /// The Service.
        name: String,
        /// Why.
        why: String,
    },
    /// `rollout undo` put the revision in place, but applying it failed.
    #[error("revision {revision} of {name} is in place, but applying it failed: {why}")]
    UndoApplyFailed {
        /// The Service.
        name: String,
        /// The revision put back.
        revision: u32,
        /// Why.
        why: String,
    },
    /// `rollout undo` put the revision in place, but its pass failed.
    #[error("revision {revision} of {name} is in place, but the pass failed: {why}")]
    UndoPassFailed {
        /// The Service.
        name: String,
        /// The revision put back.
        revision: u32,
        /// Why.
        why: String,
    },
    /// A Grafana restore left some objects as they were (reported above).
    #[error("restore of {name} set {id} did not restore every object (see above)")]
    RestoreIncomplete {
        /// The Backup manifest.
        name: String,
        /// The backup set.
        id: String,
    },
}

impl CliError {
    /// A failed restore: refused when another restore of the service is
    /// running, failed otherwise.
    pub fn restore(name: &str, id: &str, source: CommandError) -> CliError {
        let (name, id) = (name.to_owned(), id.to_owned());
        let refused = matches!(
            source,
            CommandError::Prometheus(PrometheusError::RestoreRunning { .. })
        );
        let source = Box::new(source);
        if refused {
            CliError::RestoreRefused { name, id, source }
        } else {
            CliError::Restore { name, id, source }
        }
    }

    /// The contract's exit status for this outcome.
    pub fn exit_code(&self) -> i32 {
        use crate::fleet::cmd::PushError;
        match self {
            // A directory that is missing or unusable is operational,
            // whichever command meets it.
            CliError::Load(_) | CliError::Push(PushError::Load(_)) => OPERATIONAL,
            CliError::Backup { source, .. }
            | CliError::Backups(source)
            | CliError::Restore { source, .. }
                if matches!(**source, CommandError::Load(_)) =>
            {
                OPERATIONAL
            }
            CliError::Push(PushError::Etcd(_)) => OPERATIONAL,
            CliError::Logs(e) if e.is_unknown_unit() => NOT_OK,
            CliError::Logs(_) => OPERATIONAL,
            CliError::Push(PushError::Invalid { .. } | PushError::File { .. }) => NOT_OK,
            CliError::Unsuccessful
            | CliError::DoctorWarn
            | CliError::UnknownName { .. }
            | CliError::NoSuchManifest { .. }
            | CliError::InvalidManifest { .. }
            | CliError::Export { .. }
            | CliError::Backup { .. }
            | CliError::Backups(_)
            | CliError::VerifyFailed { .. }
            | CliError::Restore { .. }
            | CliError::RestoreIncomplete { .. }
            | CliError::NotAService(_)
            | CliError::Undo { .. }
            | CliError::UndoApplyFailed { .. } => NOT_OK,
            CliError::Runtime(_)
            | CliError::Unavailable
            | CliError::DoctorFail
            | CliError::Fleet(_)
            | CliError::Systemd(_)
            | CliError::Reconcile(_)
            | CliError::Lock(_)
            | CliError::Status(_)
            | CliError::Operator(_)
            | CliError::MetricsAddr(_)
            | CliError::Man(_)
            | CliError::RestoreRefused { .. }
            | CliError::Rollout(_)
            | CliError::FleetRollout(_)
            | CliError::UndoPassFailed { .. } => OPERATIONAL,
        }
    }

    /// Prints the error and its causes on one line to stderr (nothing for
    /// [`CliError::Unsuccessful`], whose command said why already).
    pub fn report(&self) {
        match self {
            CliError::Unsuccessful
            | CliError::Unavailable
            | CliError::DoctorWarn
            | CliError::DoctorFail => {}
            e => eprintln!("error: {}", crate::error_chain(e)),
        }
    }
}

/// What a command ends with.
pub type CliResult = Result<(), CliError>;

/// The exit status a command's result ends the process with.
pub fn exit_status(result: &CliResult) -> i32 {
    match result {
        Ok(()) => OK,
        Err(e) => e.exit_code(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_restore_is_refused_with_2_others_fail_with_1() {
        let running = CommandError::Prometheus(PrometheusError::RestoreRunning {
            service: "prometheus".into(),
            owner: "PID 42".into(),
        });
        let e = CliError::restore("tsdb", "S1", running);
        assert_eq!(e.exit_code(), OPERATIONAL);
        assert!(
            crate::error_chain(&e).starts_with("restore of tsdb set S1 refused: "),
            "{e}"
        );
        let unknown = CommandError::Unknown {
            name: "tsdb".into(),
            dir: "/m".into(),
        };
        let e = CliError::restore("tsdb", "S1", unknown);
        assert_eq!(e.exit_code(), NOT_OK);
        assert_eq!(
            crate::error_chain(&e),
            "restore of tsdb set S1: no Backup manifest named \"tsdb\" in /m; `unitlet get` lists the manifests"
        );
    }

    #[test]
    fn a_missing_directory_is_operational_for_every_command() {
        let missing = || crate::manifest::LoadError::Missing {
            path: "/nowhere".into(),
        };
        let push = CliError::Push(crate::fleet::cmd::PushError::Load(missing()));
        assert_eq!(push.exit_code(), OPERATIONAL);
        assert_eq!(CliError::Load(missing()).exit_code(), OPERATIONAL);
        let backup = CliError::Backup {
            name: "tsdb".into(),
            source: Box::new(CommandError::Load(missing())),
        };
        assert_eq!(backup.exit_code(), OPERATIONAL);
        let failed = CliError::Backup {
            name: "tsdb".into(),
            source: Box::new(CommandError::Usage("no".into())),
        };
        assert_eq!(failed.exit_code(), NOT_OK);
    }
}
