//! [`ManagerError`]: what a [`super::UserManager`] call fails with, as
//! plain data, whatever the implementation talks to.

use std::time::Duration;

/// Why a call to the user manager failed, as far as callers need to tell
/// failures apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallFailure {
    /// The manager answered that it has no such unit (no file for it on
    /// its search path, as far as it knows).
    NoSuchUnit,
    /// The connection itself is gone (reconnect), rather than this call
    /// having failed.
    Disconnected,
    /// Anything else: the manager refused or failed the call.
    Other,
}

/// An error of the user manager: the connection, a call, or a job.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ManagerError {
    /// No session bus / user manager to talk to.
    #[error(
        "cannot connect to the user's systemd over D-Bus at {address}: {cause}; is a user manager running (systemctl --user status)? Set --bus or DBUS_SESSION_BUS_ADDRESS"
    )]
    Connect {
        /// The bus address tried.
        address: String,
        /// What the connection attempt said.
        cause: String,
    },
    /// A method call failed.
    #[error("systemd {call} failed{}: {cause}", unit.as_ref().map(|u| format!(" for {u}")).unwrap_or_default())]
    Call {
        /// The method (or property) asked for.
        call: &'static str,
        /// The unit it was about, if any.
        unit: Option<String>,
        /// What the manager (or the connection) said.
        cause: String,
        /// What kind of failure it was.
        failure: CallFailure,
    },
    /// A job ended with a result other than `done`.
    #[error("{verb} of {unit} failed: job result {result:?}{hint}")]
    JobFailed {
        /// `start`, `stop`, …
        verb: &'static str,
        /// The unit.
        unit: String,
        /// The job's result (`failed`, `dependency`, …).
        result: String,
        /// Why the unit failed, when known (see `UserManager::failure_hint`).
        hint: String,
    },
    /// A job did not finish in time.
    #[error("{verb} of {unit} did not finish within {timeout:?}")]
    JobTimeout {
        /// `start`, `stop`, …
        verb: &'static str,
        /// The unit.
        unit: String,
        /// How long it was waited for.
        timeout: Duration,
    },
    /// The connection to the user manager closed while a job was waited
    /// for: how it ended is not known here (the next look at the unit
    /// says), so it is no failure of the unit.
    #[error(
        "the connection to the user manager closed before the {verb} of {unit} ended; its state is read again once reconnected"
    )]
    JobLost {
        /// `start`, `stop`, …
        verb: &'static str,
        /// The unit.
        unit: String,
    },
    /// The unit directory is not on the manager's search path.
    #[error(
        "unit directory {dir} is not on the user manager's unit search path ({path}); pass --unit-dir with one of those directories (e.g. $XDG_DATA_HOME/systemd/user)"
    )]
    NotOnUnitPath {
        /// The unit directory.
        dir: String,
        /// The manager's search path, `:`-separated.
        path: String,
    },
}

impl ManagerError {
    /// Whether the manager answered that it has no such unit.
    pub fn is_no_such_unit(&self) -> bool {
        matches!(
            self,
            ManagerError::Call {
                failure: CallFailure::NoSuchUnit,
                ..
            }
        )
    }

    /// Whether the connection itself is gone (reconnect), rather than one
    /// call having failed.
    pub fn is_disconnect(&self) -> bool {
        matches!(
            self,
            ManagerError::Connect { .. }
                | ManagerError::JobLost { .. }
                | ManagerError::Call {
                    failure: CallFailure::Disconnected,
                    ..
                }
        )
    }
}
