//! A fleet rollout's record and lock in etcd: `PREFIX/rollouts/revisions/N`
//! (the record, JSON) and `PREFIX/rollouts/lock` (under the rollout
//! command's lease). Every record write is guarded by the record's own
//! `mod_revision` and by the lock still being held under this command's
//! lease, so a command that lost its lock cannot write.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::fleet::etcd::{Client, Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
use crate::fleet::{EtcdArgs, FleetError};

/// The lock's lease: a killed rollout command's lock goes after this.
pub const LOCK_TTL: Duration = Duration::from_secs(10);

/// The largest record written: etcd takes 1.5 MiB per request by default,
/// and the record holds the files rolled out and what they replaced.
pub const MAX_RECORD: usize = 1024 * 1024;

/// How often the lock's lease is kept alive.
pub const LOCK_KEEP_ALIVE: Duration = Duration::from_secs(3);

/// Where a rollout is (docs/fleet.md, "States of a rollout").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Waves are being written and judged.
    Progressing,
    /// Every wave was Ready and `all/` was written: done.
    Complete,
    /// A host failed; the hosts changed so far are not put back yet.
    Halted,
    /// The hosts changed so far are being put back.
    Undoing,
    /// Every host changed was put back: done.
    Undone,
}

impl Phase {
    /// `Complete` and `Undone` are final; the others are unfinished.
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Complete | Phase::Undone)
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

/// Whom a rollout is for: `{"all": true}` or `{"selector": "gpu=h100"}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutTarget {
    /// Every host, ending with `all/` written.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
    /// The hosts whose labels match; no `all/` step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
}

impl std::fmt::Display for RolloutTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.selector {
            Some(s) => write!(f, "selector {s}"),
            None => write!(f, "all"),
        }
    }
}

/// The flags a rollout was started with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutOptions {
    /// Hosts in the first wave (`--canary`).
    pub canary: usize,
    /// Percent of the other hosts per later wave (`--wave`).
    pub wave_percent: u32,
    /// How long a host must stay Ready (`--stable`), e.g. `30s`.
    #[serde(with = "duration_text")]
    pub stable: Duration,
    /// How long a host may take to be Ready (`--progress-deadline`).
    #[serde(with = "duration_text")]
    pub progress_deadline: Duration,
    /// Halting does not put the hosts back (`--no-undo`).
    pub no_undo: bool,
}

mod duration_text {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        humantime::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

/// A file the rollout writes: its bytes and their SHA-256 (lowercase hex),
/// which hosts report as `manifestDigest` once they run it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Put {
    /// The file's bytes.
    pub value: String,
    /// Their SHA-256, lowercase hex.
    pub digest: String,
}

/// What a host key held before the rollout wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replaced {
    /// The key's value.
    pub value: String,
}

/// Where a host is in the rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VerdictState {
    /// Its wave has not been written yet.
    Pending,
    /// Its wave was written; not judged Ready yet.
    Applied,
    /// Every object of the files it got runs the new digest, Ready, for
    /// `--stable`.
    Ready,
    /// Its new files failed there (rolled back, not Ready in time, gone).
    Failed,
    /// The rollout put its keys back.
    Reverted,
}

impl std::fmt::Display for VerdictState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

/// One host's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// Where it is.
    pub state: VerdictState,
    /// The object that decided it, if one did.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub object: String,
    /// Why, for a person.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// When (RFC 3339).
    pub at: String,
}

/// Why a rollout halted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Halt {
    /// The failing host.
    pub host: String,
    /// Its failing object.
    pub object: String,
    /// The Ready condition's reason (`RolledBack`, `HostGone`,
    /// `ProgressDeadlineExceeded` …).
    pub reason: String,
    /// What the host said.
    pub message: String,
}

/// A rollout's record: `PREFIX/rollouts/revisions/NNNNNNNNNN`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// 1, 2, 3 …
    pub revision: u64,
    /// Where it is.
    pub phase: Phase,
    /// `USER@MACHINE pid P`.
    pub started_by: String,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339, every write.
    pub updated_at: String,
    /// The rolled-out directory, absolute.
    pub dir: String,
    /// Whom it is for.
    pub target: RolloutTarget,
    /// The flags.
    pub options: RolloutOptions,
    /// The files written, by key name.
    pub puts: BTreeMap<String, Put>,
    /// The `all/` keys deleted at the end.
    #[serde(default)]
    pub deletes: Vec<String>,
    /// The hosts that get something, sorted by id.
    pub hosts: Vec<String>,
    /// Which key names each host gets.
    #[serde(default)]
    pub names: BTreeMap<String, Vec<String>>,
    /// Canary first, then the waves.
    pub waves: Vec<Vec<String>>,
    /// The wave in progress (or next).
    pub wave: usize,
    /// What each host key written held before (`null`: no key).
    #[serde(default)]
    pub replaced: BTreeMap<String, BTreeMap<String, Option<Replaced>>>,
    /// Each host's verdict.
    #[serde(default)]
    pub verdicts: BTreeMap<String, Verdict>,
    /// Why it halted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halt: Option<Halt>,
}

/// The value of `PREFIX/rollouts/lock`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// The rollout the holder works on (0 until it has one).
    pub revision: u64,
    /// `USER@MACHINE pid P`.
    pub by: String,
    /// RFC 3339.
    pub since: String,
}

impl LockInfo {
    /// `rollout N is in progress, started by … at …`.
    pub fn describe(&self) -> String {
        let who = match self.revision {
            0 => format!(
                "another fleet rollout command is in progress, started by {} at {}",
                self.by, self.since
            ),
            n => format!(
                "rollout {n} is in progress, started by {} at {}",
                self.by, self.since
            ),
        };
        who + &holder_gone_note(&self.by)
    }
}

/// `by` (`USER@MACHINE pid P`) names a process of this machine that is
/// not running: a command killed with its lock still held.
pub fn holder_gone(by: &str) -> bool {
    let split = |s: &str| -> Option<(String, u32)> {
        let (who, pid) = s.rsplit_once(" pid ")?;
        let (_, machine) = who.split_once('@')?;
        Some((machine.to_string(), pid.parse().ok()?))
    };
    match (split(by), split(&whoami())) {
        (Some((machine, pid)), Some((here, _))) => {
            machine == here && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        }
        _ => false,
    }
}

/// What to add after a lock holder's name when [`holder_gone`].
pub fn holder_gone_note(by: &str) -> String {
    if holder_gone(by) {
        format!(
            " (that process is gone: the lock goes when its lease expires, within {} s)",
            LOCK_TTL.as_secs()
        )
    } else {
        String::new()
    }
}

/// Read the lock: who holds it, if anyone.
///
/// # Errors
/// etcd cannot be read.
pub async fn holder(
    client: &mut Client,
    args: &EtcdArgs,
) -> Result<Option<LockInfo>, RolloutError> {
    let key = args.keys().rollout_lock();
    let r = client
        .get(key.as_str(), None)
        .await
        .map_err(|e| RolloutError::etcd(args, format!("read {key}"), e))?;
    Ok(r.kvs()
        .first()
        .and_then(|kv| serde_json::from_slice::<LockInfo>(kv.value()).ok()))
}

/// Give back the lock if this process holds it (its value names this
/// process): revoke its lease, so the lock goes at once rather than when
/// the lease expires. For a command stopped by a signal, whose [`Lock`]
/// was dropped mid-work. `true` when it was ours and is gone.
///
/// # Errors
/// etcd cannot be read or the lease cannot be revoked.
pub async fn release_own(client: &mut Client, args: &EtcdArgs) -> Result<bool, RolloutError> {
    let key = args.keys().rollout_lock();
    let r = client
        .get(key.as_str(), None)
        .await
        .map_err(|e| RolloutError::etcd(args, format!("read {key}"), e))?;
    let me = whoami();
    let Some(kv) = r
        .kvs()
        .first()
        .filter(|kv| serde_json::from_slice::<LockInfo>(kv.value()).is_ok_and(|l| l.by == me))
    else {
        return Ok(false);
    };
    client
        .lease_revoke(kv.lease())
        .await
        .map_err(|e| RolloutError::etcd(args, format!("give back {key}"), e))?;
    Ok(true)
}

/// Why a rollout could not go on.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    /// etcd could not be read or written: the rollout stays resumable.
    #[error("{0}; the rollout stays resumable: `unitlet fleet rollout resume`")]
    Etcd(#[source] FleetError),
    /// Another rollout holds the lock.
    #[error("{}; wait for it, or see `unitlet fleet rollout status`", .0.describe())]
    Locked(LockInfo),
    /// An unfinished rollout with another change.
    #[error(
        "rollout {revision} is unfinished ({phase}) with another change; finish it with `unitlet fleet rollout resume`, or put its hosts back with `unitlet fleet rollout undo`, then roll out again"
    )]
    Unfinished {
        /// Its revision.
        revision: u64,
        /// Its phase.
        phase: Phase,
    },
    /// `resume`/`undo` with no unfinished rollout.
    #[error("there is no unfinished rollout{0}")]
    NothingUnfinished(String),
    /// Something else wrote what this rollout owns (the lock was lost, the
    /// record changed).
    #[error("{0}; the rollout stays resumable: `unitlet fleet rollout resume`")]
    Conflict(String),
    /// The request cannot be done as asked (a bad flag, a halted
    /// `--no-undo` rollout resumed).
    #[error("{0}")]
    Refused(String),
}

impl RolloutError {
    /// An etcd failure while doing `what`.
    pub fn etcd(args: &EtcdArgs, what: impl Into<String>, e: crate::fleet::etcd::Error) -> Self {
        RolloutError::Etcd(args.etcd_error(what, e))
    }
}

/// Now, RFC 3339 (seconds).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// `USER@MACHINE pid P`: who started a rollout.
pub fn whoami() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| format!("uid {}", rustix::process::getuid().as_raw()));
    let host = crate::fsutil::read_regular_capped(
        std::path::Path::new("/proc/sys/kernel/hostname"),
        true,
        4096,
    )
    .map(|b| String::from_utf8_lossy(&b).trim().to_string())
    .unwrap_or_else(|_| "?".into());
    format!("{user}@{host} pid {}", std::process::id())
}

/// Every record under `PREFIX/rollouts/revisions/`, oldest first, with its
/// `mod_revision`; values that are not records are skipped with a warning.
///
/// # Errors
/// etcd cannot be read.
pub async fn read_all(
    client: &mut Client,
    args: &EtcdArgs,
) -> Result<Vec<(Record, i64)>, RolloutError> {
    let dir = args.keys().rollout_records();
    let resp = client
        .get(dir.as_str(), Some(GetOptions::new().with_prefix()))
        .await
        .map_err(|e| RolloutError::etcd(args, format!("read {dir}"), e))?;
    let mut out: Vec<(Record, i64)> = resp
        .kvs()
        .iter()
        .filter_map(|kv| match serde_json::from_slice::<Record>(kv.value()) {
            Ok(r) => Some((r, kv.mod_revision())),
            Err(e) => {
                tracing::warn!(key = %String::from_utf8_lossy(kv.key()), "not a rollout record: {e}");
                None
            }
        })
        .collect();
    out.sort_by_key(|(r, _)| r.revision);
    Ok(out)
}

/// The lock, held: its lease is kept alive until [`Lock::release`].
#[derive(Debug)]
pub struct Lock {
    /// The lease the lock key lives under.
    pub lease: i64,
    key: String,
    keeper: tokio::task::JoinHandle<()>,
}

impl Lock {
    /// Take `PREFIX/rollouts/lock` under a new lease, or say who holds it.
    ///
    /// # Errors
    /// [`RolloutError::Locked`] when held; etcd errors.
    pub async fn acquire(
        client: &mut Client,
        args: &EtcdArgs,
        info: &LockInfo,
    ) -> Result<Lock, RolloutError> {
        let key = args.keys().rollout_lock();
        let err = |what: &str, e| RolloutError::etcd(args, what.to_string(), e);
        let lease = client
            .lease_grant(LOCK_TTL.as_secs() as i64, None)
            .await
            .map_err(|e| err("grant the rollout lock's lease", e))?
            .id();
        let value = serde_json::to_vec(info).unwrap_or_default();
        let txn = Txn::new()
            .when(vec![Compare::version(key.clone(), CompareOp::Equal, 0)])
            .and_then(vec![TxnOp::put(
                key.clone(),
                value,
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let r = client
            .txn(txn)
            .await
            .map_err(|e| err("take the rollout lock", e))?;
        if !r.succeeded() {
            let _ = client.lease_revoke(lease).await;
            let held = client
                .get(key.as_str(), None)
                .await
                .map_err(|e| err("read the rollout lock", e))?;
            let info = held
                .kvs()
                .first()
                .and_then(|kv| serde_json::from_slice::<LockInfo>(kv.value()).ok())
                .unwrap_or(LockInfo {
                    revision: 0,
                    by: "another command".into(),
                    since: "?".into(),
                });
            return Err(RolloutError::Locked(info));
        }
        let mut c = client.clone();
        let args = args.clone();
        let keeper = tokio::spawn(async move {
            loop {
                tokio::time::sleep(LOCK_KEEP_ALIVE).await;
                match c.lease_keep_alive(lease).await {
                    Ok((_k, mut s)) => {
                        if let Ok(Some(r)) = s.message().await
                            && r.ttl() <= 0
                        {
                            tracing::warn!("the rollout lock's lease expired");
                            return;
                        }
                    }
                    Err(e) => {
                        // The member went away: the next keep-alive goes
                        // to another one (the lease lives in the cluster).
                        tracing::debug!("rollout lock keep-alive failed: {e}");
                        if let Ok(other) = args.connect().await {
                            c = other;
                        }
                    }
                }
            }
        });
        Ok(Lock { lease, key, keeper })
    }

    /// The compare that holds while this lock is held.
    pub fn guard(&self) -> Compare {
        Compare::lease(self.key.clone(), CompareOp::Equal, self.lease)
    }

    /// Say which rollout the lock is for (its value), still under the lease.
    ///
    /// # Errors
    /// etcd errors; [`RolloutError::Conflict`] when the lock was lost.
    pub async fn set_info(
        &self,
        client: &mut Client,
        args: &EtcdArgs,
        info: &LockInfo,
    ) -> Result<(), RolloutError> {
        let value = serde_json::to_vec(info).unwrap_or_default();
        let txn = Txn::new()
            .when(vec![self.guard()])
            .and_then(vec![TxnOp::put(
                self.key.clone(),
                value,
                Some(PutOptions::new().with_lease(self.lease)),
            )]);
        let r = client
            .txn(txn)
            .await
            .map_err(|e| RolloutError::etcd(args, "write the rollout lock", e))?;
        if r.succeeded() {
            Ok(())
        } else {
            Err(lost_lock(args))
        }
    }

    /// Stop keeping the lease alive and revoke it (the lock goes at once).
    pub async fn release(self, client: &mut Client) {
        self.keeper.abort();
        if let Err(e) = client.lease_revoke(self.lease).await {
            tracing::debug!("cannot revoke the rollout lock's lease (it expires by itself): {e}");
        }
    }
}

/// The error when a guarded write found the lock gone.
pub fn lost_lock(args: &EtcdArgs) -> RolloutError {
    RolloutError::Conflict(format!(
        "this command lost {} (its lease expired while etcd could not be reached, or it was removed)",
        args.keys().rollout_lock()
    ))
}

/// Write `record`: created (its key must not exist) when `mod_revision` is
/// 0, else only if the key still has `mod_revision`; always only while
/// `lock` is held. Sets `updated_at`; returns the new `mod_revision`.
///
/// # Errors
/// etcd errors; [`RolloutError::Conflict`] when a guard failed.
pub async fn save(
    client: &mut Client,
    args: &EtcdArgs,
    lock: &Lock,
    record: &mut Record,
    mod_revision: i64,
) -> Result<i64, RolloutError> {
    let key = args.keys().rollout_record(record.revision);
    record.updated_at = now_rfc3339();
    let value = serde_json::to_vec(record).unwrap_or_default();
    if value.len() > MAX_RECORD {
        return Err(RolloutError::Refused(format!(
            "the record of rollout {} would be {} bytes, more than the {MAX_RECORD} etcd takes in one request (1.5 MiB by default); roll out fewer or smaller files at a time",
            record.revision,
            value.len()
        )));
    }
    let own = if mod_revision == 0 {
        Compare::version(key.clone(), CompareOp::Equal, 0)
    } else {
        Compare::mod_revision(key.clone(), CompareOp::Equal, mod_revision)
    };
    let txn = Txn::new()
        .when(vec![lock.guard(), own])
        .and_then(vec![TxnOp::put(key.clone(), value, None)]);
    let r = client
        .txn(txn)
        .await
        .map_err(|e| RolloutError::etcd(args, format!("write {key}"), e))?;
    if !r.succeeded() {
        return Err(RolloutError::Conflict(format!(
            "{key} changed under this command, or it lost {}",
            args.keys().rollout_lock()
        )));
    }
    Ok(r.header().map(|h| h.revision()).unwrap_or(0))
}

/// A sample rollout record for the unit tests of this module and of
/// `plan`.
#[cfg(test)]
pub(super) mod test_support {
    use super::*;

    /// Revision 3 of one file (`vllm`) to one host, progressing in wave 0.
    pub fn record() -> Record {
        Record {
            revision: 3,
            phase: Phase::Progressing,
            started_by: "root@box pid 1".into(),
            started_at: "2026-01-01T00:00:00Z".into(),
            updated_at: "2026-01-01T00:00:00Z".into(),
            dir: "/m".into(),
            target: RolloutTarget {
                all: true,
                selector: None,
            },
            options: RolloutOptions {
                canary: 1,
                wave_percent: 25,
                stable: Duration::from_secs(30),
                progress_deadline: Duration::from_secs(600),
                no_undo: false,
            },
            puts: BTreeMap::from([(
                "vllm".into(),
                Put {
                    value: "v".into(),
                    digest: "d".into(),
                },
            )]),
            deletes: vec![],
            hosts: vec!["h1".into()],
            names: BTreeMap::from([("h1".into(), vec!["vllm".into()])]),
            waves: vec![vec!["h1".into()]],
            wave: 0,
            replaced: BTreeMap::from([("h1".into(), BTreeMap::from([("vllm".into(), None)]))]),
            verdicts: BTreeMap::new(),
            halt: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        test_support::record()
    }

    /// The record's JSON is the documented one (docs/fleet.md, "Rollout
    /// keys"), and reads back.
    #[test]
    fn the_record_is_camel_case_json_with_durations_as_text() {
        let r = record();
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["target"], serde_json::json!({"all": true}));
        assert_eq!(v["options"]["stable"], "30s");
        assert_eq!(v["options"]["progressDeadline"], "10m");
        assert_eq!(v["options"]["wavePercent"], 25);
        assert_eq!(v["replaced"]["h1"]["vllm"], serde_json::Value::Null);
        assert_eq!(v["phase"], "Progressing");
        assert!(v.get("halt").is_none());
        let back: Record = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }

    /// Acceptance 5: a refusal names the rollout in progress and who
    /// started it; before it has a revision it says so, not "rollout 0".
    #[test]
    fn a_held_lock_names_the_rollout_and_who_started_it() {
        let held = |revision| {
            RolloutError::Locked(LockInfo {
                revision,
                by: "ops@box pid 42".into(),
                since: "2026-01-01T00:00:00Z".into(),
            })
            .to_string()
        };
        assert!(
            held(7).starts_with(
                "rollout 7 is in progress, started by ops@box pid 42 at 2026-01-01T00:00:00Z"
            ),
            "{}",
            held(7)
        );
        assert!(!held(0).contains("rollout 0"), "{}", held(0));
        assert!(held(0).contains("ops@box pid 42"), "{}", held(0));
    }

    /// A lock left by a killed command of this machine is said to be so;
    /// one of a live process, or of another machine, is not.
    #[test]
    fn a_lock_of_a_dead_local_process_is_named_gone() {
        let me = whoami();
        let (who, _) = me.rsplit_once(" pid ").unwrap();
        assert!(!holder_gone(&me), "this process runs");
        // PIDs stay below 2^22 on Linux.
        let dead = format!("{who} pid 4194399");
        assert!(holder_gone(&dead));
        let info = LockInfo {
            revision: 3,
            by: dead,
            since: "2026-01-01T00:00:00Z".into(),
        };
        assert!(
            info.describe().contains("that process is gone"),
            "{}",
            info.describe()
        );
        assert!(!holder_gone("ops@another-machine-xyz pid 4194399"));
        assert!(!holder_gone("not a holder"));
        assert_eq!(holder_gone_note(&me), "");
    }

    #[test]
    fn only_complete_and_undone_are_terminal() {
        assert!(Phase::Complete.is_terminal() && Phase::Undone.is_terminal());
        for p in [Phase::Progressing, Phase::Halted, Phase::Undoing] {
            assert!(!p.is_terminal(), "{p}");
        }
    }
}
