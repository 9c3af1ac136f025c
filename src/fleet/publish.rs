//! Status back to etcd: `PREFIX/status/HOST/NAME` and `PREFIX/hosts/HOST`
//! under this host's lease, refreshed while the operator runs.
//!
//! The passes write `STATE_DIR/status.json`; this task reads it when it
//! changes and writes to etcd only the objects whose status changed (the
//! 10 s heartbeat of `status.json` writes nothing), so a converged fleet
//! sends only lease keep-alives.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::etcd::{PutOptions, Txn, TxnOp};
use serde::{Deserialize, Serialize};

use super::{EtcdArgs, FleetError};
use crate::status::{Condition, ObjectStatus, Status, UnitStatus};

/// What the status publisher ([`run`]) needs.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// How to reach etcd (`--etcd-*` flags).
    pub etcd: EtcdArgs,
    /// This host's id in etcd keys (`--host-id`).
    pub host: String,
    /// The state directory, whose `status.json` is published.
    pub state_dir: PathBuf,
    /// The lease's time to live: how long a dead host's keys outlive it.
    pub ttl: Duration,
    /// This host's labels (`--host-label`), published in its host record.
    pub labels: BTreeMap<String, String>,
}

/// One object's status in etcd: a `get -o json` item plus `host`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FleetObject {
    pub kind: String,
    pub name: String,
    pub file: PathBuf,
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<UnitStatus>,
    /// The digest of the manifest file (the key's value) the host last
    /// applied: what a fleet rollout judges a host by.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub manifest_digest: String,
    pub last_reconcile_time: Option<String>,
    pub operator_running: bool,
    pub host: String,
}

impl FleetObject {
    fn from_status(o: &ObjectStatus, reconciled_at: Option<&str>, host: &str) -> FleetObject {
        FleetObject {
            kind: o.kind.to_string(),
            name: o.name.clone(),
            file: o.file.clone(),
            conditions: o.conditions.clone(),
            unit: o.unit.clone(),
            manifest_digest: o.manifest_digest.clone(),
            last_reconcile_time: reconciled_at.map(str::to_string),
            operator_running: true,
            host: host.to_string(),
        }
    }

    /// What decides whether the key must be rewritten: everything but the
    /// time of the pass.
    fn same_as(&self, other: &FleetObject) -> bool {
        FleetObject {
            last_reconcile_time: None,
            ..self.clone()
        } == FleetObject {
            last_reconcile_time: None,
            ..other.clone()
        }
    }
}

/// The value of `PREFIX/hosts/HOST`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HostRecord {
    pub host: String,
    pub hostname: String,
    pub pid: u32,
    pub started_at: String,
    pub source: String,
    /// Seconds of the lease's time to live.
    pub lease_ttl: u64,
    /// The host's labels (`--host-label`; `{}` when none), which a
    /// rollout's `--selector` matches. Absent from a record written before
    /// 0.3: read as none.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// etcd's default `--max-txn-ops`: larger batches are split.
const MAX_TXN_OPS: usize = 128;

/// How often `status.json` is looked at (a local stat; etcd is written only
/// on change).
const STATUS_POLL: Duration = Duration::from_millis(250);

/// What to diff a status change against: what the objects should be in
/// etcd.
pub(crate) fn objects(status: &Status, host: &str) -> BTreeMap<String, FleetObject> {
    status
        .objects
        .values()
        .map(|o| {
            (
                o.name.clone(),
                FleetObject::from_status(o, status.reconciled_at.as_deref(), host),
            )
        })
        .collect()
}

/// The writes that bring etcd from `published` to `want`: puts of changed
/// objects and deletes of gone ones. Pure.
pub(crate) fn changes<'a>(
    published: &BTreeMap<String, FleetObject>,
    want: &'a BTreeMap<String, FleetObject>,
) -> (Vec<&'a FleetObject>, Vec<String>) {
    let puts = want
        .iter()
        .filter(|(k, v)| published.get(*k).is_none_or(|p| !p.same_as(v)))
        .map(|(_, v)| v)
        .collect();
    let deletes = published
        .keys()
        .filter(|k| !want.contains_key(*k))
        .cloned()
        .collect();
    (puts, deletes)
}

/// Resolves once `stop` is true (the `Ref` is not held across an await).
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Run until `stop` turns true; then revoke the lease (the host's keys go at
/// once) and return.
pub async fn run(opts: PublishOptions, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut delays = super::source::retry_delays();
    let started_at = crate::status::now_rfc3339();
    loop {
        match session(&opts, &started_at, &mut stop).await {
            Ok(()) => return,
            Err(e) => {
                tracing::debug!("status publisher: {}", crate::error_chain(&e));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(super::source::jittered(delays.failed())) => {}
            _ = stopped(&mut stop) => return,
        }
    }
}

async fn session(
    opts: &PublishOptions,
    started_at: &str,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<(), FleetError> {
    let etcd = &opts.etcd;
    let keys = etcd.keys();
    let mut client = etcd.connect().await?;
    let (lease, ttl) = announce(opts, &mut client, started_at).await?;
    tracing::info!(
        lease,
        ttl,
        "publishing status to etcd under {}",
        keys.status_host_dir(&opts.host)
    );
    let (mut keeper, mut responses) = client
        .lease_keep_alive(lease)
        .await
        .map_err(|e| etcd.etcd_error("keep the lease alive", e))?;
    let mut keep_tick = tokio::time::interval(Duration::from_secs((ttl as u64 / 3).max(1)));
    let mut poll = tokio::time::interval(STATUS_POLL);
    let status_path = opts.state_dir.join("status.json");
    let mut seen_mtime = None;
    // A new lease: every key is written once under it (keys of the old
    // lease that are not rewritten expire with it).
    let mut published: BTreeMap<String, FleetObject> = BTreeMap::new();
    let host_dir = keys.status_host_dir(&opts.host);
    let result = loop {
        tokio::select! {
            _ = stopped(stop) => break Ok(()),
            _ = keep_tick.tick() => {
                if let Err(e) = keeper.keep_alive().await {
                    break Err(etcd.etcd_error("keep the lease alive", e));
                }
            }
            r = responses.message() => match r {
                Ok(Some(k)) if k.ttl() > 0 => {}
                Ok(Some(_)) => break Err(FleetError::Usage("the lease expired (etcd was unreachable longer than --lease-ttl); taking a new one".into())),
                Ok(None) => break Err(FleetError::Usage("the lease keep-alive stream ended".into())),
                Err(e) => break Err(etcd.etcd_error("keep the lease alive", e)),
            },
            _ = poll.tick() => {
                let mtime = std::fs::metadata(&status_path).and_then(|m| m.modified()).ok();
                if mtime.is_none() || mtime == seen_mtime {
                    continue;
                }
                let status = Status::load_async(&status_path).await;
                let want = objects(&status, &opts.host);
                if let Err(e) = write_changes(&mut client, &host_dir, lease, &published, &want).await {
                    break Err(etcd.etcd_error("write status", e));
                }
                published = want;
                seen_mtime = mtime;
            }
        }
    };
    if result.is_ok() {
        // A clean stop: the host's keys go now, not after the TTL.
        let _ = tokio::time::timeout(Duration::from_secs(2), client.lease_revoke(lease)).await;
    }
    result
}

/// Takes a lease of `opts.ttl` (at least 2 s) and writes this host's
/// record under it: the lease and its TTL in seconds.
#[expect(
    clippy::expect_used,
    reason = "the host record (strings and numbers) always serializes"
)]
async fn announce(
    opts: &PublishOptions,
    client: &mut super::etcd::Client,
    started_at: &str,
) -> Result<(i64, i64), FleetError> {
    let etcd = &opts.etcd;
    let ttl = opts.ttl.as_secs().max(2) as i64;
    let lease = client
        .lease_grant(ttl, None)
        .await
        .map_err(|e| etcd.etcd_error("grant a lease", e))?
        .id();
    let hostname = std::path::Path::new("/proc/sys/kernel/hostname");
    let record = HostRecord {
        host: opts.host.clone(),
        hostname: crate::fsutil::read_regular(hostname, true, 4096)
            .await
            .ok()
            .flatten()
            .map(|h| String::from_utf8_lossy(&h).trim().to_string())
            .unwrap_or_default(),
        pid: std::process::id(),
        started_at: started_at.to_string(),
        source: "etcd".into(),
        lease_ttl: ttl as u64,
        labels: opts.labels.clone(),
    };
    client
        .put(
            etcd.keys().host_key(&opts.host),
            serde_json::to_vec(&record).expect("serializable"),
            Some(PutOptions::new().with_lease(lease)),
        )
        .await
        .map_err(|e| etcd.etcd_error("write the host key", e))?;
    Ok((lease, ttl))
}

/// Writes the objects of `want` that differ from `published` and deletes
/// those gone, under `lease`, in transactions of at most
/// [`MAX_TXN_OPS`] operations.
#[expect(
    clippy::expect_used,
    reason = "a FleetObject (strings, JSON values, numbers) always serializes"
)]
async fn write_changes(
    client: &mut super::etcd::Client,
    host_dir: &str,
    lease: i64,
    published: &BTreeMap<String, FleetObject>,
    want: &BTreeMap<String, FleetObject>,
) -> Result<(), super::etcd::Error> {
    let (puts, deletes) = changes(published, want);
    let mut ops: Vec<TxnOp> = Vec::new();
    for o in &puts {
        ops.push(TxnOp::put(
            format!("{host_dir}{}", o.name),
            serde_json::to_vec(o).expect("serializable"),
            Some(PutOptions::new().with_lease(lease)),
        ));
    }
    for d in &deletes {
        ops.push(TxnOp::delete(format!("{host_dir}{d}"), None));
    }
    while !ops.is_empty() {
        let rest = ops.split_off(ops.len().min(MAX_TXN_OPS));
        client
            .txn(Txn::new().and_then(std::mem::replace(&mut ops, rest)))
            .await?;
    }
    if !puts.is_empty() || !deletes.is_empty() {
        tracing::debug!(
            written = puts.len(),
            deleted = deletes.len(),
            "published status changes"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(name: &str, reason: crate::status::Reason, at: &str) -> FleetObject {
        FleetObject {
            kind: "Service".into(),
            name: name.into(),
            file: PathBuf::from("/x.yaml"),
            conditions: vec![Condition {
                type_: crate::status::ConditionType::Ready,
                status: crate::status::ConditionStatus::True,
                reason,
                message: String::new(),
                last_transition_time: "t".into(),
            }],
            unit: None,
            manifest_digest: "d1".into(),
            last_reconcile_time: Some(at.into()),
            operator_running: true,
            host: "h".into(),
        }
    }

    #[test]
    fn only_changed_statuses_are_written_and_gone_ones_deleted() {
        let published = BTreeMap::from([
            (
                "a".to_string(),
                obj("a", crate::status::Reason::Running, "t1"),
            ),
            (
                "b".to_string(),
                obj("b", crate::status::Reason::Running, "t1"),
            ),
            (
                "c".to_string(),
                obj("c", crate::status::Reason::Running, "t1"),
            ),
            (
                "gone".to_string(),
                obj("gone", crate::status::Reason::Running, "t1"),
            ),
        ]);
        let want = BTreeMap::from([
            // Only the pass time moved: not rewritten.
            (
                "a".to_string(),
                obj("a", crate::status::Reason::Running, "t2"),
            ),
            (
                "b".to_string(),
                obj("b", crate::status::Reason::Failed, "t2"),
            ),
            // Only the file applied changed (issue 25): written.
            (
                "c".to_string(),
                FleetObject {
                    manifest_digest: "d2".into(),
                    ..obj("c", crate::status::Reason::Running, "t1")
                },
            ),
            (
                "new".to_string(),
                obj("new", crate::status::Reason::Running, "t2"),
            ),
        ]);
        let (puts, deletes) = changes(&published, &want);
        let names: Vec<&str> = puts.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["b", "c", "new"]);
        assert_eq!(deletes, ["gone"]);
    }
}
