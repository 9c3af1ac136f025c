//! A fleet of hosts fed from etcd (see docs/fleet.md).
//!
//! The core never learns where manifests come from: the etcd source
//! ([`source`]) materialises this host's manifests into a directory that the
//! ordinary loader reads, and the status publisher ([`publish`]) copies what
//! the passes wrote to `status.json` back to etcd under a lease. `fleet push`,
//! `fleet get` and `fleet hosts` are in [`cmd`]; [`run`] starts the source
//! and the publisher beside the operator loop. The key layout and the merge
//! of `all` and host keys are pure and live here.

pub(crate) mod cmd;
pub mod etcd;
pub mod publish;
pub mod rollout;
pub(crate) mod run;
pub(crate) mod source;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::manifest::redact_url;
use crate::{fsutil, manifest};

/// What `unitlet run --source etcd` needs to feed itself from etcd.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// How to reach etcd (`--etcd-*` flags).
    pub etcd: EtcdArgs,
    /// This host's id in etcd keys (`--host-id`).
    pub host: String,
    /// The state directory, where the source keeps its state.
    pub state_dir: PathBuf,
    /// The status lease's time to live (`--lease-ttl`).
    pub lease_ttl: Duration,
    /// This host's labels (`--host-label`), published in `PREFIX/hosts/HOST`
    /// for rollouts' `--selector`.
    pub labels: BTreeMap<String, String>,
}

/// How to reach etcd: the flags shared by `run --source etcd` and `fleet`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct EtcdArgs {
    /// etcd client URLs, comma-separated (list every member).
    #[arg(
        long = "etcd-endpoints",
        env = "UNITLET_ETCD_ENDPOINTS",
        value_name = "URLS",
        default_value = "http://127.0.0.1:2379",
        global = true
    )]
    pub endpoints: String,
    /// Key prefix under which unitlet keeps its keys.
    #[arg(
        long = "etcd-prefix",
        env = "UNITLET_ETCD_PREFIX",
        value_name = "PREFIX",
        default_value = "/unitlet",
        global = true
    )]
    pub prefix: String,
    /// etcd user name (with --etcd-password-file).
    #[arg(
        long = "etcd-user",
        env = "UNITLET_ETCD_USER",
        value_name = "NAME",
        global = true
    )]
    pub user: Option<String>,
    /// File holding the etcd user's password.
    #[arg(
        long = "etcd-password-file",
        env = "UNITLET_ETCD_PASSWORD_FILE",
        value_name = "FILE",
        global = true
    )]
    pub password_file: Option<PathBuf>,
    /// CA certificate (PEM) that signed the etcd members' certificates.
    #[arg(
        long = "etcd-ca",
        env = "UNITLET_ETCD_CA",
        value_name = "FILE",
        global = true
    )]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for etcd's client-certificate auth.
    #[arg(
        long = "etcd-cert",
        env = "UNITLET_ETCD_CERT",
        value_name = "FILE",
        global = true
    )]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(
        long = "etcd-key",
        env = "UNITLET_ETCD_KEY",
        value_name = "FILE",
        global = true
    )]
    pub key: Option<PathBuf>,
}

/// Everything that goes wrong talking to etcd or with fleet input.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// An etcd request failed (unreachable, no leader, refused).
    #[error("etcd at {endpoints}: cannot {what}; check the members are up and --etcd-endpoints")]
    Etcd {
        /// What was being done.
        what: String,
        /// The endpoints, userinfo redacted.
        endpoints: String,
        /// The error underneath.
        #[source]
        source: etcd::Error,
    },
    /// An option file (password, certificate, machine id) cannot be read.
    #[error("cannot read {what} {path}")]
    ReadFile {
        /// Which option file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The error underneath.
        #[source]
        source: std::io::Error,
    },
    /// A secret file (password, private key) that others can read or
    /// write, or that is not yours.
    #[error("{what}: {message}")]
    Secret {
        /// Which secret.
        what: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A flag's value is unusable.
    #[error("{0}")]
    Usage(String),
    /// A local file under STATE_DIR/fleet cannot be written.
    #[error("cannot write {path}; check the state directory (--state-dir) is writable")]
    Write {
        /// The file.
        path: PathBuf,
        /// The error underneath.
        #[source]
        source: std::io::Error,
    },
    /// A push raced other pushes too often.
    #[error(
        "etcd at {endpoints}: the keys under {prefix} kept changing while pushing ({tries} tries); nothing was written by this push, try again"
    )]
    Contended {
        /// The endpoints, userinfo redacted.
        endpoints: String,
        /// The key prefix pushed to.
        prefix: String,
        /// How many times the push was tried.
        tries: usize,
    },
}

impl EtcdArgs {
    /// The endpoints as given, for messages: userinfo removed.
    pub fn endpoints_for_people(&self) -> String {
        self.endpoint_list()
            .iter()
            .map(|e| redact_url(e))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub(crate) fn endpoint_list(&self) -> Vec<String> {
        self.endpoints
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// The prefix, normalised: no trailing `/`.
    pub fn keys(&self) -> Keys {
        Keys::new(&self.prefix)
    }

    pub(crate) fn etcd_error(&self, what: impl Into<String>, source: etcd::Error) -> FleetError {
        FleetError::Etcd {
            what: what.into(),
            endpoints: self.endpoints_for_people(),
            source,
        }
    }

    /// Connect (lazily: a down cluster is noticed by the first request).
    ///
    /// # Errors
    /// Unreadable password or certificate files, bad combinations of flags.
    pub async fn connect(&self) -> Result<etcd::Client, FleetError> {
        let endpoints = self.checked_endpoints()?;
        let opts = self.connect_options().await?;
        // One member at a time, from a random one (so hosts spread over the
        // members), keeping the first that answers a linearizable read: a
        // balanced channel over all endpoints sends requests to a dead
        // member, and a member without quorum must not feed us.
        let start: usize = {
            use rand::Rng;
            rand::rng().random_range(0..endpoints.len())
        };
        let probe = self.keys().manifests_dir();
        let mut last = None;
        for i in 0..endpoints.len() {
            let ep = &endpoints[(start + i) % endpoints.len()];
            let r = async {
                let mut c = etcd::Client::connect(ep, Some(opts.clone())).await?;
                c.get(
                    probe.as_str(),
                    Some(etcd::GetOptions::new().with_prefix().with_count_only()),
                )
                .await?;
                Ok::<_, etcd::Error>(c)
            }
            .await;
            match r {
                Ok(c) => return Ok(c),
                Err(e) => {
                    tracing::debug!(endpoint = %redact_url(ep), "etcd member not usable: {e}");
                    last = Some(e);
                }
            }
        }
        let last =
            last.unwrap_or_else(|| etcd::Error::InvalidArgs("no etcd endpoint given".into()));
        Err(self.etcd_error("reach any member that has a leader", last))
    }

    /// `--etcd-endpoints`: at least one, none with credentials in it.
    fn checked_endpoints(&self) -> Result<Vec<String>, FleetError> {
        let endpoints = self.endpoint_list();
        if endpoints.is_empty() {
            return Err(FleetError::Usage(
                "--etcd-endpoints is empty; give the etcd members' client URLs, e.g. http://10.0.0.1:2379,http://10.0.0.2:2379".into(),
            ));
        }
        for e in &endpoints {
            if let Ok(u) = reqwest::Url::parse(e)
                && (!u.username().is_empty() || u.password().is_some())
            {
                return Err(FleetError::Usage(format!(
                    "--etcd-endpoints {}: credentials in the URL would be logged; use --etcd-user and --etcd-password-file",
                    redact_url(e)
                )));
            }
        }
        Ok(endpoints)
    }

    /// Timeouts, the user and password, and TLS from the flags.
    async fn connect_options(&self) -> Result<etcd::ConnectOptions, FleetError> {
        let mut opts = etcd::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3))
            .with_require_leader(true);
        match (&self.user, &self.password_file) {
            (Some(u), Some(p)) => {
                let pw = read_secret("the etcd password file", p).await?;
                let pw = String::from_utf8_lossy(&pw)
                    .trim_end_matches(['\n', '\r'])
                    .to_string();
                opts = opts.with_user(u.clone(), pw);
            }
            (None, None) => {}
            _ => {
                return Err(FleetError::Usage(
                    "--etcd-user and --etcd-password-file go together".into(),
                ));
            }
        }
        if self.ca.is_some() || self.cert.is_some() || self.key.is_some() {
            opts = opts.with_tls(self.tls_options().await?);
        }
        Ok(opts)
    }

    /// `--etcd-ca`, `--etcd-cert` and `--etcd-key`, read.
    async fn tls_options(&self) -> Result<etcd::TlsOptions, FleetError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut tls = etcd::TlsOptions::new();
        if let Some(ca) = &self.ca {
            tls = tls.ca_certificate(etcd::Certificate::from_pem(
                read_public("the etcd CA certificate", ca).await?,
            ));
        }
        match (&self.cert, &self.key) {
            (Some(c), Some(k)) => {
                tls = tls.identity(etcd::Identity::from_pem(
                    read_public("the etcd client certificate", c).await?,
                    read_secret("the etcd client key", k).await?,
                ));
            }
            (None, None) => {}
            _ => {
                return Err(FleetError::Usage(
                    "--etcd-cert and --etcd-key go together".into(),
                ));
            }
        }
        Ok(tls)
    }
}

/// Option files (passwords, keys, certificates, the machine id) are small.
const MAX_OPTION_FILE: u64 = 1024 * 1024;

fn read_error(what: &'static str, path: &Path, e: String) -> FleetError {
    FleetError::ReadFile {
        what,
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    }
}

/// A regular file of at most [`MAX_OPTION_FILE`] bytes (see
/// [`fsutil::read_regular_capped`]).
fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, FleetError> {
    fsutil::read_regular_capped(path, true, MAX_OPTION_FILE).map_err(|e| read_error(what, path, e))
}

/// [`read_file`] off the runtime, within [`fsutil::READ_DEADLINE`].
async fn read_public(what: &'static str, path: &Path) -> Result<Vec<u8>, FleetError> {
    let p = path.to_path_buf();
    fsutil::off_runtime(path, fsutil::READ_DEADLINE, move || {
        fsutil::read_regular_capped(&p, true, MAX_OPTION_FILE)
    })
    .await
    .and_then(|r| r)
    .map_err(|e| read_error(what, path, e))
}

/// A secret file (password, private key): checked like every other
/// secret file ([`manifest::check_secret_file`]: a regular file of yours
/// that nobody else can read or write), then read as [`read_public`].
async fn read_secret(what: &'static str, path: &Path) -> Result<Vec<u8>, FleetError> {
    let p = path.to_path_buf();
    fsutil::off_runtime(path, fsutil::READ_DEADLINE, move || {
        manifest::check_secret_file(&p).map_err(|e| FleetError::Secret { what, message: e })?;
        fsutil::read_regular_capped(&p, true, MAX_OPTION_FILE).map_err(|e| read_error(what, &p, e))
    })
    .await
    .map_err(|e| read_error(what, path, e))?
}

/// This host's id: `--host-id`, else `/etc/machine-id`.
///
/// # Errors
/// No machine id, or an id that cannot be a key component.
pub fn host_id(given: Option<&str>) -> Result<String, FleetError> {
    let id = match given {
        Some(h) => h.to_string(),
        None => {
            let p = Path::new("/etc/machine-id");
            String::from_utf8_lossy(&read_file("the machine id", p)?)
                .trim()
                .to_string()
        }
    };
    check_host(&id)?;
    Ok(id)
}

/// A host id is one key component: letters, digits, `.`, `_`, `-`.
pub fn check_host(id: &str) -> Result<(), FleetError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(FleetError::Usage(format!(
            "host id {id:?} is not usable as an etcd key component (letters, digits, '.', '_', '-'; at most 128); pass --host-id"
        )))
    }
}

/// A key name (manifest file name without `.yaml`) that is safe as a file
/// name in the materialised directory.
pub fn check_key_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
}

/// Labels longer than this are refused (Kubernetes' limit for a name).
const MAX_LABEL: usize = 63;

/// `KEY=VALUE` → its key and value, or what is wrong with it (without
/// saying where: the callers do).
fn label_pair(s: &str) -> Result<(String, String), String> {
    let Some((key, value)) = s.split_once('=') else {
        return Err("expected KEY=VALUE (e.g. gpu=h100)".into());
    };
    if key.is_empty() {
        return Err("the key is empty; keys are 1–63 letters, digits, '.', '_', '/', '-'".into());
    }
    let checks = [
        ("key", key, "letters, digits, '.', '_', '/', '-'"),
        ("value", value, "letters, digits, '.', '_', '-'"),
    ];
    for (what, text, allowed) in checks {
        let slash_ok = what == "key";
        let bad = text.chars().any(|c| {
            !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') || (slash_ok && c == '/'))
        });
        if bad {
            return Err(format!("{what} {text:?} may hold only {allowed}"));
        }
        if text.len() > MAX_LABEL {
            return Err(format!(
                "{what} {text:?} is {} characters; at most {MAX_LABEL}",
                text.len()
            ));
        }
    }
    Ok((key.to_string(), value.to_string()))
}

/// One host label, `KEY=VALUE` (`unitlet run --host-label`): keys are 1–63
/// letters, digits, `.`, `_`, `/`, `-`; values 0–63 letters, digits, `.`,
/// `_`, `-` (Kubernetes' label rules, simplified).
///
/// # Errors
/// [`FleetError::Usage`] naming the label and what is wrong with it.
pub fn parse_label(s: &str) -> Result<(String, String), FleetError> {
    label_pair(s).map_err(|m| FleetError::Usage(format!("label {s:?}: {m}")))
}

/// A host's labels from its `--host-label` pairs.
///
/// # Errors
/// [`FleetError::Usage`] when a key is given twice.
pub fn label_map(
    pairs: impl IntoIterator<Item = (String, String)>,
) -> Result<BTreeMap<String, String>, FleetError> {
    let mut map = BTreeMap::new();
    for (k, v) in pairs {
        if let Some(first) = map.get(&k) {
            return Err(FleetError::Usage(format!(
                "host label {k:?} is given twice ({k}={first}, {k}={v}); give each key once"
            )));
        }
        map.insert(k, v);
    }
    Ok(map)
}

/// Which hosts a fleet rollout targets (`--selector`): those whose labels
/// hold every one of these pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    pairs: BTreeMap<String, String>,
}

impl Selector {
    /// Whether a host with `labels` is selected: it has every key with
    /// exactly the value asked for.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.pairs.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// The canonical form, `k1=v1,k2=v2` sorted by key: what a rollout record
/// keeps, and [`parse_selector`] reads back to the same selector.
impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pairs: Vec<String> = self.pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        f.write_str(&pairs.join(","))
    }
}

/// A selector: `KEY=VALUE` pairs separated by commas, all of which a
/// host's labels must hold (spaces around a pair are ignored). Pure.
///
/// # Errors
/// [`FleetError::Usage`] for an empty selector, an empty pair, a pair that
/// is not a valid label, or a key given twice.
pub fn parse_selector(s: &str) -> Result<Selector, FleetError> {
    let usage = |m: String| FleetError::Usage(format!("selector {s:?}{m}"));
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    if parts.iter().all(|p| p.is_empty()) {
        return Err(usage(" is empty; give KEY=VALUE[,KEY=VALUE...]".into()));
    }
    if parts.iter().any(|p| p.is_empty()) {
        return Err(usage(
            ": an empty pair (two commas in a row, or one at an end); give KEY=VALUE[,KEY=VALUE...]"
                .into(),
        ));
    }
    let mut pairs = BTreeMap::new();
    for p in parts {
        let (k, v) = label_pair(p).map_err(|m| usage(format!(": in {p:?}: {m}")))?;
        if pairs.contains_key(&k) {
            return Err(usage(format!(
                ": label {k:?} is given twice; a host has one value per key"
            )));
        }
        pairs.insert(k, v);
    }
    Ok(Selector { pairs })
}

/// The key layout under a prefix (docs/fleet.md, "Key layout").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// The layout under `prefix` (a trailing `/` is dropped).
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.trim_end_matches('/').to_string(),
        }
    }
    /// Manifests for every host: `PREFIX/manifests/all/`.
    pub fn all_dir(&self) -> String {
        format!("{}/manifests/all/", self.prefix)
    }
    /// Manifests for one host: `PREFIX/manifests/hosts/HOST/`.
    pub fn host_dir(&self, host: &str) -> String {
        format!("{}/manifests/hosts/{host}/", self.prefix)
    }
    /// Every manifest key of every host, for `fleet get`.
    pub fn manifests_dir(&self) -> String {
        format!("{}/manifests/", self.prefix)
    }
    /// Every host's published status: `PREFIX/status/`.
    pub fn status_dir(&self) -> String {
        format!("{}/status/", self.prefix)
    }
    /// One host's published status: `PREFIX/status/HOST/`.
    pub fn status_host_dir(&self, host: &str) -> String {
        format!("{}/status/{host}/", self.prefix)
    }
    /// The hosts' lease-bound presence keys: `PREFIX/hosts/`.
    pub fn hosts_dir(&self) -> String {
        format!("{}/hosts/", self.prefix)
    }
    /// One host's presence key: `PREFIX/hosts/HOST`.
    pub fn host_key(&self, host: &str) -> String {
        format!("{}/hosts/{host}", self.prefix)
    }
    /// Fleet rollouts (docs/fleet.md, "Rollouts in waves"):
    /// `PREFIX/rollouts/`.
    pub fn rollouts_dir(&self) -> String {
        format!("{}/rollouts/", self.prefix)
    }
    /// The lock a running rollout holds under its lease:
    /// `PREFIX/rollouts/lock`.
    pub fn rollout_lock(&self) -> String {
        format!("{}/rollouts/lock", self.prefix)
    }
    /// Every rollout's record: `PREFIX/rollouts/revisions/`.
    pub fn rollout_records(&self) -> String {
        format!("{}/rollouts/revisions/", self.prefix)
    }
    /// Rollout `revision`'s record (10 digits, so keys sort by revision).
    pub fn rollout_record(&self, revision: u64) -> String {
        format!("{}/rollouts/revisions/{revision:010}", self.prefix)
    }
    /// Where a manifest key of a push goes.
    pub fn target_dir(&self, target: &Target) -> String {
        match target {
            Target::All => self.all_dir(),
            Target::Host(h) => self.host_dir(h),
        }
    }
}

/// Whom a push is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every host.
    All,
    /// The host of this id.
    Host(String),
}

/// A manifest key's content and the revision that last changed it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// The key's value.
    pub value: String,
    /// etcd's `mod_revision` of it.
    pub mod_revision: i64,
}

/// This host's effective manifests: a host key overrides the `all` key of
/// the same name. Pure.
pub fn effective<'a>(
    all: &'a BTreeMap<String, Entry>,
    host: &'a BTreeMap<String, Entry>,
) -> BTreeMap<&'a str, &'a str> {
    let mut out: BTreeMap<&str, &str> = all
        .iter()
        .map(|(k, v)| (k.as_str(), v.value.as_str()))
        .collect();
    for (k, v) in host {
        out.insert(k, v.value.as_str());
    }
    out
}

/// Where a fleet-fed operator keeps its materialised manifests.
pub fn manifests_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("fleet").join("manifests")
}

/// The source's persisted state and health.
pub fn source_file(state_dir: &Path) -> PathBuf {
    state_dir.join("fleet").join("source.json")
}

/// What the etcd source last said about itself, for `get` and `describe`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SourceState {
    /// `Starting`, `Connected`, `Reconnecting` (a watch broke, trying the
    /// other members) or `Unreachable`.
    pub state: String,
    #[serde(default)]
    pub message: String,
    /// When `state` last changed (RFC 3339).
    #[serde(default)]
    pub since: String,
    /// The endpoints (no credentials), for messages.
    #[serde(default)]
    pub endpoints: String,
    pub host: String,
    pub prefix: String,
    /// Last revision applied of `all/` and of `hosts/HOST/`: where a watch
    /// resumes.
    #[serde(default)]
    pub revision_all: i64,
    #[serde(default)]
    pub revision_host: i64,
    #[serde(default)]
    pub all: BTreeMap<String, Entry>,
    #[serde(default)]
    pub host_keys: BTreeMap<String, Entry>,
    /// Full snapshots read since the first start, and why the last one was.
    #[serde(default)]
    pub resyncs: u64,
    #[serde(default)]
    pub last_resync: String,
}

impl SourceState {
    pub fn load(state_dir: &Path) -> Option<SourceState> {
        // It holds every manifest of this host.
        let cap = 256 * 1024 * 1024;
        let bytes = fsutil::read_regular_capped(&source_file(state_dir), false, cap).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    pub fn save(&self, state_dir: &Path) -> Result<(), FleetError> {
        let path = source_file(state_dir);
        let bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other);
        bytes
            .and_then(|b| crate::fsutil::atomic_write(&path, &b, 0o600))
            .map_err(|source| FleetError::Write { path, source })
    }
}

/// A `run --source dir` on a state directory that was fed from etcd: the
/// other commands read `--manifests` again, and a later `--source etcd`
/// starts with a full snapshot.
pub fn forget(state_dir: &Path) {
    match std::fs::remove_file(source_file(state_dir)) {
        Ok(()) => tracing::info!(
            "this state directory was fed from etcd; manifests now come from the directory (--source dir)"
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(
            "cannot remove {}: {e}; `get` and `plan` may keep reading the etcd-fed manifests",
            source_file(state_dir).display()
        ),
    }
}

/// What `get` and `describe` say about the manifest source of a state
/// directory fed from etcd: `None` when it is fine or not etcd.
pub fn source_warning(state_dir: &Path) -> Option<String> {
    let s = SourceState::load(state_dir)?;
    (s.state == "Unreachable").then(|| {
        format!(
            "the manifest source (etcd at {}) is unreachable since {}: {}; every unit is kept as it is and the operator retries",
            s.endpoints, s.since, s.message
        )
    })
}

/// The manifests directory commands other than `run` read: a state
/// directory that an etcd-fed operator uses has its manifests in
/// `STATE_DIR/fleet/manifests`, unless `--manifests` says otherwise.
pub fn commands_manifests_dir(state_dir: &Path) -> Option<PathBuf> {
    source_file(state_dir)
        .exists()
        .then(|| manifests_dir(state_dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(v: &str) -> Entry {
        Entry {
            value: v.into(),
            mod_revision: 1,
        }
    }

    /// Issue 20 item 5: the etcd password and key files go through the
    /// same mode/owner check as every secret file, before any connection.
    #[tokio::test]
    async fn etcd_secret_files_readable_by_others_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let pw = d.path().join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
        let args = EtcdArgs {
            // Nothing listens there: the file is refused before any dial.
            endpoints: "http://127.0.0.1:9".into(),
            user: Some("root".into()),
            password_file: Some(pw.clone()),
            ..EtcdArgs::default()
        };
        let e = crate::error_chain(&args.connect().await.expect_err("refused"));
        assert!(
            e.contains("the etcd password file")
                && e.contains("mode 0644")
                && e.contains("chmod 600"),
            "{e}"
        );
        let key = d.path().join("key");
        std::fs::write(&key, "KEY").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
        let args = EtcdArgs {
            endpoints: "https://127.0.0.1:9".into(),
            cert: Some(key.clone()),
            key: Some(key.clone()),
            ..EtcdArgs::default()
        };
        let e = crate::error_chain(&args.connect().await.expect_err("refused"));
        assert!(
            e.contains("the etcd client key") && e.contains("mode 0640"),
            "{e}"
        );
        // A FIFO given as the CA is refused without blocking.
        let fifo = d.path().join("ca");
        crate::fsutil::test_support::mkfifo(&fifo);
        let args = EtcdArgs {
            endpoints: "https://127.0.0.1:9".into(),
            ca: Some(fifo),
            ..EtcdArgs::default()
        };
        let e = crate::error_chain(&args.connect().await.expect_err("refused"));
        assert!(e.contains("FIFO"), "{e}");
    }

    #[test]
    fn a_host_key_overrides_the_all_key_of_the_same_name() {
        let all = BTreeMap::from([("a".to_string(), e("A")), ("b".to_string(), e("B"))]);
        let host = BTreeMap::from([("b".to_string(), e("B2")), ("c".to_string(), e("C"))]);
        let eff = effective(&all, &host);
        assert_eq!(
            eff.into_iter().collect::<Vec<_>>(),
            [("a", "A"), ("b", "B2"), ("c", "C")]
        );
    }

    #[test]
    fn keys_follow_the_documented_layout() {
        let k = Keys::new("/unitlet/");
        assert_eq!(k.all_dir(), "/unitlet/manifests/all/");
        assert_eq!(k.host_dir("h1"), "/unitlet/manifests/hosts/h1/");
        assert_eq!(k.status_host_dir("h1"), "/unitlet/status/h1/");
        assert_eq!(k.host_key("h1"), "/unitlet/hosts/h1");
    }

    /// Issue 25: host labels follow Kubernetes' rules, simplified; each
    /// bad form says what is wrong and what is allowed.
    #[test]
    fn host_labels_are_key_value_pairs_of_checked_characters() {
        assert_eq!(
            parse_label("gpu=h100").unwrap(),
            ("gpu".to_string(), "h100".to_string())
        );
        assert_eq!(
            parse_label("example.com/zone=eu-1_a").unwrap(),
            ("example.com/zone".to_string(), "eu-1_a".to_string())
        );
        assert_eq!(parse_label("spare=").unwrap().1, "", "values may be empty");
        let long = "k".repeat(64);
        let cases = [
            ("gpu", "expected KEY=VALUE (e.g. gpu=h100)"),
            ("=h100", "the key is empty"),
            (
                "g u=x",
                "key \"g u\" may hold only letters, digits, '.', '_', '/', '-'",
            ),
            (
                "gpu=h 100",
                "value \"h 100\" may hold only letters, digits, '.', '_', '-'",
            ),
            ("gpu=a/b", "may hold only letters, digits, '.', '_', '-'"),
            ("gpu=a=b", "may hold only letters, digits, '.', '_', '-'"),
            (&format!("{long}=x"), "is 64 characters; at most 63"),
            (&format!("k={long}"), "is 64 characters; at most 63"),
        ];
        for (bad, says) in cases {
            let e = parse_label(bad).unwrap_err().to_string();
            assert!(
                e.contains(says) && e.contains(&format!("{bad:?}")),
                "{bad}: {e}"
            );
        }
        let twice = labels([("gpu", "a"), ("gpu", "b")])
            .unwrap_err()
            .to_string();
        assert!(twice.contains("label \"gpu\" is given twice"), "{twice}");
        let ok = labels([("zone", "a"), ("gpu", "h100")]).unwrap();
        assert_eq!(ok.keys().collect::<Vec<_>>(), ["gpu", "zone"]);
    }

    fn labels<const N: usize>(
        pairs: [(&str, &str); N],
    ) -> Result<BTreeMap<String, String>, FleetError> {
        label_map(pairs.map(|(k, v)| (k.to_string(), v.to_string())))
    }

    /// Issue 25: a selector is an AND of KEY=VALUE pairs, matched against
    /// a host's labels; it prints back in a canonical form.
    #[test]
    fn selectors_match_hosts_having_every_pair() {
        let host = labels([("gpu", "h100"), ("zone", "a")]).unwrap();
        let yes = |s: &str| parse_selector(s).unwrap().matches(&host);
        assert!(yes("gpu=h100"));
        assert!(yes("zone=a,gpu=h100"));
        assert!(
            yes(" gpu=h100 , zone=a "),
            "spaces around pairs are ignored"
        );
        assert!(!yes("gpu=a100"));
        assert!(!yes("gpu=h100,zone=b"));
        assert!(!yes("rack=1"), "a missing label does not match");
        assert!(!parse_selector("spare=").unwrap().matches(&host));
        let sel = parse_selector("zone=a,gpu=h100").unwrap();
        assert_eq!(sel.to_string(), "gpu=h100,zone=a");
        assert_eq!(parse_selector(&sel.to_string()).unwrap(), sel);
        for (bad, says) in [
            ("", "is empty; give KEY=VALUE[,KEY=VALUE...]"),
            (" , ", "is empty"),
            ("gpu=h100,", "an empty pair"),
            ("gpu", "expected KEY=VALUE"),
            ("gpu=a,gpu=b", "label \"gpu\" is given twice"),
            ("g u=x", "may hold only letters"),
        ] {
            let e = parse_selector(bad).unwrap_err().to_string();
            assert!(e.contains(says) && e.starts_with("selector "), "{bad}: {e}");
        }
    }

    #[test]
    fn host_ids_and_key_names_cannot_escape() {
        assert!(check_host("4c1d0a").is_ok());
        for bad in ["", "..", "a/b", "a b", "é"] {
            assert!(check_host(bad).is_err(), "{bad}");
        }
        assert!(check_key_name("prometheus"));
        for bad in ["", ".x", "a/b", "..", "a b"] {
            assert!(!check_key_name(bad), "{bad}");
        }
    }
}
