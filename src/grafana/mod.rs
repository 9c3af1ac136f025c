//! Grafana, the whole instance: folders and their permissions, datasources,
//! library panels, dashboards and Grafana-managed alerting, backed up into a
//! [`crate::backup::Store`] set and restored from one, idempotently, over
//! Grafana's documented HTTP API.
//!
//! Architecture Invariant: only [`client`] talks HTTP; `backup` and
//! `restore` decide what to fetch and post and never build requests.
//!
//! Architecture Invariant: secrets (token, password) live only inside
//! [`Auth`] and the request headers built from it. Errors and logs name the
//! credentials by the caller's label (e.g. "the service-account token from
//! ~/.config/grafana-token"), never by value.

pub mod backup;
pub mod client;
mod kinds;
pub mod restore;

use std::time::Duration;

pub use client::{Auth, Client, DashboardDoc, Folder, SearchHit};
pub use kinds::{
    MissingSecret, ObjectKind, ObjectReport, Outcome, RuleGroup, RulesFile, SecureValues,
};

use crate::backup::BackupError;

/// The kind recorded in `backup.json` of Grafana sets.
pub const KIND: &str = "grafana";

/// Everything that can go wrong talking to Grafana or handling its sets.
#[derive(Debug, thiserror::Error)]
pub enum GrafanaError {
    /// The configured URL cannot be used as a base URL.
    #[error("invalid Grafana URL {url:?}: {reason}")]
    InvalidUrl {
        /// What was configured (credentials, if any, removed).
        url: String,
        /// Why it is unusable.
        reason: String,
    },
    /// The HTTP client could not be built (TLS setup).
    #[error("cannot set up an HTTP client for Grafana: {source}")]
    Setup {
        /// The error underneath.
        #[source]
        source: reqwest::Error,
    },
    /// Nothing answered at the address, even after retries.
    #[error("cannot connect to Grafana for {method} {url}: is Grafana running at {base}?")]
    Connect {
        /// HTTP method of the failed request.
        method: String,
        /// The full request URL.
        url: String,
        /// The configured base URL, which is what a person fixes.
        base: String,
        /// The error underneath.
        #[source]
        source: reqwest::Error,
    },
    /// Grafana did not answer within the per-request timeout, even after
    /// retries.
    #[error(
        "Grafana did not answer {method} {url} within {}, even after retries; check that Grafana at {base} is healthy and not overloaded",
        humantime::format_duration(*timeout)
    )]
    Timeout {
        /// HTTP method of the failed request.
        method: String,
        /// The full request URL.
        url: String,
        /// The configured base URL.
        base: String,
        /// The per-request timeout that expired.
        timeout: Duration,
    },
    /// Grafana rejected the credentials (401) or their role (403).
    #[error(
        "Grafana at {base} rejected the credentials ({status}) for {method} {url} — used the {auth_label}; check that they are valid and that the account has the Admin role, which backup and restore of the whole instance need (datasources, permissions, alerting; the Viewer role reads only dashboards and folders, the Editor role writes only them)"
    )]
    Unauthorized {
        /// HTTP method of the failed request.
        method: String,
        /// The full request URL.
        url: String,
        /// The configured base URL.
        base: String,
        /// `401 Unauthorized` or `403 Forbidden`.
        status: reqwest::StatusCode,
        /// How the credentials were obtained, never the credentials.
        auth_label: String,
    },
    /// Grafana answered with an unexpected status; `message` is Grafana's
    /// own explanation from the response body.
    #[error("Grafana answered {method} {url} with {status}: {message}")]
    Status {
        /// HTTP method of the failed request.
        method: String,
        /// The full request URL.
        url: String,
        /// The response status.
        status: reqwest::StatusCode,
        /// The response's `message` field (or a short excerpt of its body).
        message: String,
        /// The response's `status` field (`name-exists`,
        /// `version-mismatch`), which tells apart the kinds of 412.
        grafana_status: Option<String>,
    },
    /// Any other transport failure (protocol error, reset connection).
    #[error("request {method} {url} to Grafana failed: {source}")]
    Request {
        /// HTTP method of the failed request.
        method: String,
        /// The full request URL.
        url: String,
        /// The error underneath.
        #[source]
        source: reqwest::Error,
    },
    /// Grafana answered 2xx with a body that is not what its API documents.
    #[error(
        "unexpected response from Grafana for {method} {url}: {source}; is {base} really Grafana?"
    )]
    Decode {
        /// HTTP method of the request.
        method: String,
        /// The full request URL.
        url: String,
        /// The configured base URL.
        base: String,
        /// The error underneath.
        #[source]
        source: serde_json::Error,
    },
    /// An answer bigger than the client accepts; it was not read further.
    #[error(
        "Grafana's answer to {method} {url} is larger than the limit of {}; is {base} really Grafana?",
        crate::size::limit_text(*limit)
    )]
    TooLarge {
        /// HTTP method of the request.
        method: String,
        /// The full request URL.
        url: String,
        /// The configured base URL.
        base: String,
        /// The limit, in bytes.
        limit: u64,
    },
    /// A dashboard too big to be restored is not backed up either.
    #[error(
        "dashboard {uid} is {size} bytes as saved, over the limit of {} that restore reads; the backup failed and its set was removed",
        crate::size::limit_text(*limit)
    )]
    DashboardTooLarge {
        /// The dashboard.
        uid: String,
        /// Its size in the set.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A uid that cannot name a Grafana object in a URL.
    #[error("refusing to use {uid:?} as a Grafana uid: it would not name one object in a URL")]
    InvalidUid {
        /// The rejected uid.
        uid: String,
    },
    /// A file of the backup set does not hold what a Grafana set must.
    #[error(
        "backup set {id}: {file} is not a valid Grafana backup file: {reason}; nothing was sent to Grafana"
    )]
    InvalidSet {
        /// The set.
        id: String,
        /// The file, relative to the set directory.
        file: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The set was made by another kind of backup.
    #[error(
        "backup set {id} is a {kind} backup, not a Grafana one; choose a set of this Backup manifest"
    )]
    WrongKind {
        /// The set.
        id: String,
        /// Its recorded kind.
        kind: String,
    },
    /// Reading or writing the backup set failed.
    #[error(transparent)]
    Store(#[from] BackupError),
}

impl GrafanaError {
    /// Worth another try: the same request may well succeed in a moment.
    fn is_transient(&self) -> bool {
        match self {
            GrafanaError::Connect { .. }
            | GrafanaError::Timeout { .. }
            | GrafanaError::Request { .. } => true,
            GrafanaError::Status { status, .. } => status.is_server_error(),
            _ => false,
        }
    }

    /// Fatal for a whole restore: every further request would fail the same
    /// way, so reporting it per object would only bury the cause.
    fn is_fatal(&self) -> bool {
        self.is_transient() || matches!(self, GrafanaError::Unauthorized { .. })
    }

    /// Grafana's `status` field of an error response (e.g. `name-exists`).
    pub fn grafana_status(&self) -> Option<&str> {
        match self {
            GrafanaError::Status { grafana_status, .. } => grafana_status.as_deref(),
            _ => None,
        }
    }
}
