//! The etcd source of `unitlet run --source etcd`: snapshot, watch with
//! revision resume, and materialise this host's effective manifests into
//! `STATE_DIR/fleet/manifests/` (docs/fleet.md, "Who does what").
//!
//! # Guarantees
//! - A file is removed only because of a delete event or a complete
//!   snapshot read at one revision; never because etcd is unreachable.
//! - The revision a watch resumes from is saved after the files it covers
//!   are written, so a crash replays (idempotently) rather than skips.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::etcd::{EventType, GetOptions, Txn, TxnOp, TxnOpResponse, WatchOptions};

use super::{Entry, EtcdArgs, FleetError, Keys, SourceState, check_key_name, effective};

#[derive(Debug, Clone)]
pub struct SourceOptions {
    pub etcd: EtcdArgs,
    pub host: String,
    pub state_dir: PathBuf,
}

/// Why a watch session ended.
#[derive(Debug)]
enum SessionEnd {
    /// etcd compacted past our revision: read everything again at once.
    Compacted { compact_revision: i64 },
    /// etcd could not be reached or refused (no leader, auth).
    Failed(String),
}

impl From<FleetError> for SessionEnd {
    fn from(e: FleetError) -> Self {
        SessionEnd::Failed(crate::error_chain(&e))
    }
}

/// The first delay after a failed attempt; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The delays between attempts of the source and of the status publisher:
/// 200 ms, doubling to 30 s; each slept [`jittered`].
pub(crate) fn retry_delays() -> crate::RetryDelays {
    crate::RetryDelays::new(FIRST_BACKOFF, MAX_BACKOFF)
}

/// `d` times a random factor in [0.5, 1): hosts that lost etcd together do
/// not come back in step.
pub(crate) fn jittered(d: Duration) -> Duration {
    use rand::Rng;
    let f: f64 = rand::rng().random_range(0.5..1.0);
    d.mul_f64(f)
}

/// Run the source until the task is dropped. Never returns an error: every
/// failure is reported in `source.json` and the log, and retried.
pub async fn run(opts: SourceOptions) {
    let keys = opts.etcd.keys();
    let mut st = SourceState::load(&opts.state_dir)
        .filter(|s| s.host == opts.host && s.prefix == opts.etcd.prefix)
        .unwrap_or_else(|| SourceState {
            state: "Starting".into(),
            since: crate::status::now_rfc3339(),
            host: opts.host.clone(),
            prefix: opts.etcd.prefix.clone(),
            ..SourceState::default()
        });
    st.endpoints = opts.etcd.endpoints_for_people();
    let mut need_snapshot = st.revision_all == 0 || !super::manifests_dir(&opts.state_dir).is_dir();
    let mut resync_reason = if need_snapshot {
        "first start".to_string()
    } else {
        String::new()
    };
    let mut delays = retry_delays();
    loop {
        let end = session(
            &opts,
            &keys,
            &mut st,
            &mut need_snapshot,
            &mut resync_reason,
        )
        .await;
        match end {
            SessionEnd::Compacted { compact_revision } => {
                tracing::warn!(
                    revision_all = st.revision_all,
                    revision_host = st.revision_host,
                    compact_revision,
                    "etcd compacted past the revision this host had applied; reading every key again (full resync)"
                );
                need_snapshot = true;
                resync_reason = format!(
                    "revision {} compacted (etcd keeps history from {compact_revision})",
                    st.revision_all.min(st.revision_host) + 1
                );
                delays.reset();
                continue;
            }
            SessionEnd::Failed(msg) if st.state == "Connected" => {
                // A watch that worked broke (its member went away): try
                // the others at once before calling the source unreachable.
                tracing::info!("the etcd watch ended ({msg}); reconnecting");
                st.state = "Reconnecting".into();
                delays.reset();
            }
            SessionEnd::Failed(msg) => {
                if st.state != "Unreachable" || st.message != msg {
                    tracing::warn!(
                        "the manifest source etcd is unreachable: {msg}; keeping every unit as it is, retrying with backoff"
                    );
                    if st.state != "Unreachable" {
                        st.since = crate::status::now_rfc3339();
                    }
                    st.state = "Unreachable".into();
                    st.message = msg;
                    save(&opts.state_dir, &st).await;
                }
            }
        }
        tokio::time::sleep(jittered(delays.failed())).await;
    }
}

/// [`SourceState::save`] off the runtime (it fsyncs); a failure is logged.
async fn save(state_dir: &Path, st: &SourceState) {
    let (d, s) = (state_dir.to_path_buf(), st.clone());
    let path = super::source_file(state_dir);
    if let Err(e) = on_disk(&path, move || s.save(&d)).await {
        tracing::error!("{}", crate::error_chain(&e));
    }
}

/// How long the materialised directory's writes (each fsynced) may take
/// before the session gives up and reconnects; a retry waits for the
/// writes still under way (see [`crate::fsutil::off_runtime`]).
const DISK_DEADLINE: Duration = Duration::from_secs(60);

/// Blocking file work under `key`, off the async runtime: fsyncs on a busy
/// disk must not stall the watch, the operator's passes or its metrics.
async fn on_disk<T: Send + 'static>(
    key: &Path,
    f: impl FnOnce() -> Result<T, FleetError> + Send + 'static,
) -> Result<T, FleetError> {
    // Its own key: a pass loading the same directory need not wait for
    // these writes (each file is replaced atomically).
    crate::fsutil::off_runtime(&key.with_extension("writes"), DISK_DEADLINE, f)
        .await
        .map_err(|e| FleetError::Write {
            path: key.to_path_buf(),
            source: std::io::Error::other(e),
        })?
}

async fn mark_connected(state_dir: &Path, st: &mut SourceState) {
    if st.state != "Connected" {
        if st.state == "Reconnecting" {
            tracing::info!(
                revision_all = st.revision_all,
                revision_host = st.revision_host,
                "watching etcd again, from the revisions applied"
            );
        } else if st.state == "Unreachable" {
            tracing::info!(
                revision_all = st.revision_all,
                revision_host = st.revision_host,
                "the manifest source etcd is reachable again; resuming from the revisions applied"
            );
        } else {
            tracing::info!(
                revision_all = st.revision_all,
                revision_host = st.revision_host,
                "watching etcd for this host's manifests"
            );
        }
        st.state = "Connected".into();
        st.message.clear();
        st.since = crate::status::now_rfc3339();
        save(state_dir, st).await;
    }
}

/// One connection: snapshot if needed, then watch until something breaks.
async fn session(
    opts: &SourceOptions,
    keys: &Keys,
    st: &mut SourceState,
    need_snapshot: &mut bool,
    resync_reason: &mut String,
) -> SessionEnd {
    let mut client = match opts.etcd.connect().await {
        Ok(c) => c,
        Err(e) => return e.into(),
    };
    let all_dir = keys.all_dir();
    let host_dir = keys.host_dir(&opts.host);
    if *need_snapshot {
        if let Err(e) = snapshot(opts, &mut client, &all_dir, &host_dir, st, resync_reason).await {
            return e.into();
        }
        *need_snapshot = false;
    }
    let mut stream = match open_watch(opts, &mut client, &all_dir, &host_dir, st).await {
        Ok(s) => s,
        Err(e) => return e.into(),
    };
    let mut created = 0;
    loop {
        let msg = match stream.message().await {
            Ok(Some(m)) => m,
            Ok(None) => return SessionEnd::Failed("the watch stream ended".into()),
            Err(e) => return opts.etcd.etcd_error("watch", e).into(),
        };
        if msg.canceled() {
            if msg.compact_revision() > 0 {
                return SessionEnd::Compacted {
                    compact_revision: msg.compact_revision(),
                };
            }
            return SessionEnd::Failed(format!(
                "etcd cancelled the watch: {}",
                msg.cancel_reason()
            ));
        }
        if msg.created() {
            created += 1;
            if created == 2 {
                mark_connected(&opts.state_dir, st).await;
            }
        }
        if msg.events().is_empty() {
            continue;
        }
        let before: BTreeMap<String, String> = effective(&st.all, &st.host_keys)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        fold_events(st, msg.events(), &all_dir, &host_dir);
        if let Err(e) = materialise_changes(&opts.state_dir, &before, st).await {
            return e.into();
        }
        save(&opts.state_dir, st).await;
    }
}

/// Watches both prefixes, each from just after the revision last seen.
async fn open_watch(
    opts: &SourceOptions,
    client: &mut super::etcd::Client,
    all_dir: &str,
    host_dir: &str,
    st: &SourceState,
) -> Result<super::etcd::WatchStream, FleetError> {
    let watch = |rev: i64| {
        Some(
            WatchOptions::new()
                .with_prefix()
                .with_start_revision(rev + 1),
        )
    };
    let mut stream = client
        .watch(all_dir, watch(st.revision_all))
        .await
        .map_err(|e| opts.etcd.etcd_error("watch", e))?;
    stream
        .watch(host_dir, watch(st.revision_host))
        .await
        .map_err(|e| opts.etcd.etcd_error("watch", e))?;
    Ok(stream)
}

/// Folds watch events into the remembered keys and revisions (keys whose
/// name is no usable file name, or whose value is not text, are ignored).
fn fold_events(st: &mut SourceState, events: &[super::etcd::Event], all_dir: &str, host_dir: &str) {
    for ev in events {
        let Some(kv) = ev.kv() else { continue };
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        let (is_all, name) = if let Some(n) = key.strip_prefix(all_dir) {
            (true, n.to_string())
        } else if let Some(n) = key.strip_prefix(host_dir) {
            (false, n.to_string())
        } else {
            continue;
        };
        let (map, rev) = if is_all {
            (&mut st.all, &mut st.revision_all)
        } else {
            (&mut st.host_keys, &mut st.revision_host)
        };
        *rev = (*rev).max(kv.mod_revision());
        if !check_key_name(&name) {
            tracing::warn!(key = %key, "ignoring a manifest key whose name is not a usable file name (letters, digits, '.', '_', '-', '@')");
            continue;
        }
        match ev.event_type() {
            EventType::Put => match std::str::from_utf8(kv.value()) {
                Ok(v) => {
                    map.insert(
                        name,
                        Entry {
                            value: v.to_string(),
                            mod_revision: kv.mod_revision(),
                        },
                    );
                }
                Err(_) => {
                    tracing::warn!(key = %key, "ignoring a manifest key whose value is not UTF-8 text");
                }
            },
            EventType::Delete => {
                map.remove(&name);
            }
        }
    }
}

/// Writes and removes the materialised manifests whose effective value
/// changed from `before` (name → value) to what `st` now holds.
async fn materialise_changes(
    state_dir: &Path,
    before: &BTreeMap<String, String>,
    st: &SourceState,
) -> Result<(), FleetError> {
    let after = effective(&st.all, &st.host_keys);
    let dir = super::manifests_dir(state_dir);
    let writes: Vec<(String, String)> = after
        .iter()
        .filter(|(name, value)| before.get(**name).map(String::as_str) != Some(**value))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    let removes: Vec<String> = before
        .keys()
        .filter(|name| !after.contains_key(name.as_str()))
        .cloned()
        .collect();
    let changed = writes.len() + removes.len();
    let d = dir.clone();
    on_disk(&dir, move || {
        for (name, value) in &writes {
            write_manifest(&d, name, value)?;
        }
        for name in &removes {
            remove_manifest(&d, name)?;
        }
        Ok(())
    })
    .await?;
    tracing::debug!(
        changed,
        revision_all = st.revision_all,
        revision_host = st.revision_host,
        "applied watch events"
    );
    Ok(())
}

/// Read both prefixes at one revision and make the directory equal to the
/// effective set: the only place files are removed wholesale.
async fn snapshot(
    opts: &SourceOptions,
    client: &mut super::etcd::Client,
    all_dir: &str,
    host_dir: &str,
    st: &mut SourceState,
    reason: &mut String,
) -> Result<(), FleetError> {
    let txn = Txn::new().and_then(vec![
        TxnOp::get(all_dir, Some(GetOptions::new().with_prefix())),
        TxnOp::get(host_dir, Some(GetOptions::new().with_prefix())),
    ]);
    let resp = client
        .txn(txn)
        .await
        .map_err(|e| opts.etcd.etcd_error("read the manifests", e))?;
    let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
    let mut maps: Vec<BTreeMap<String, Entry>> = Vec::new();
    for (op, dir) in resp.op_responses().into_iter().zip([all_dir, host_dir]) {
        let mut m = BTreeMap::new();
        if let TxnOpResponse::Get(g) = op {
            for kv in g.kvs() {
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                let Some(name) = key.strip_prefix(dir) else {
                    continue;
                };
                if !check_key_name(name) {
                    tracing::warn!(key = %key, "ignoring a manifest key whose name is not a usable file name");
                    continue;
                }
                let Ok(v) = std::str::from_utf8(kv.value()) else {
                    tracing::warn!(key = %key, "ignoring a manifest key whose value is not UTF-8 text");
                    continue;
                };
                m.insert(
                    name.to_string(),
                    Entry {
                        value: v.to_string(),
                        mod_revision: kv.mod_revision(),
                    },
                );
            }
        }
        maps.push(m);
    }
    let host_keys = maps.pop().unwrap_or_default();
    let all = maps.pop().unwrap_or_default();
    let dir = super::manifests_dir(&opts.state_dir);
    let want: BTreeMap<String, String> = effective(&all, &host_keys)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let count = want.len();
    let d = dir.clone();
    let (written, removed) = on_disk(&dir, move || materialise(&d, &want)).await?;
    st.all = all;
    st.host_keys = host_keys;
    st.revision_all = revision;
    st.revision_host = revision;
    st.resyncs += 1;
    st.last_resync = format!("{} at revision {revision}", std::mem::take(reason));
    tracing::info!(
        revision,
        manifests = count,
        written,
        removed,
        why = %st.last_resync,
        "read this host's manifests from etcd (full snapshot)"
    );
    save(&opts.state_dir, st).await;
    Ok(())
}

use std::os::unix::fs::DirBuilderExt;

/// Make `dir` hold exactly `want` (`NAME.yaml` each): writes what differs,
/// removes what is not wanted. Blocking (each write is fsynced).
fn materialise(dir: &Path, want: &BTreeMap<String, String>) -> Result<(usize, usize), FleetError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| FleetError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
    let (mut written, mut removed) = (0, 0);
    for (name, value) in want {
        let path = dir.join(format!("{name}.yaml"));
        // Anything but our own regular file of that content is replaced.
        let have = crate::fsutil::read_regular_capped(&path, false, value.len() as u64);
        if have.ok().as_deref() != Some(value.as_bytes()) {
            write_manifest(dir, name, value)?;
            written += 1;
        }
    }
    if let Ok(rd) = std::fs::read_dir(dir) {
        for ent in rd.flatten() {
            let fname = ent.file_name().to_string_lossy().into_owned();
            let Some(name) = fname.strip_suffix(".yaml") else {
                continue;
            };
            if !want.contains_key(name) {
                remove_manifest(dir, name)?;
                removed += 1;
            }
        }
    }
    Ok((written, removed))
}

fn write_manifest(dir: &Path, name: &str, value: &str) -> Result<(), FleetError> {
    let path = dir.join(format!("{name}.yaml"));
    crate::fsutil::atomic_write(&path, value.as_bytes(), 0o600)
        .map_err(|source| FleetError::Write { path, source })
}

fn remove_manifest(dir: &Path, name: &str) -> Result<(), FleetError> {
    let path = dir.join(format!("{name}.yaml"));
    crate::fsutil::remove_durable(&path).map_err(|source| FleetError::Write { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The source and the publisher retry after 200 ms, doubling to 30 s,
    /// each delay slept jittered to [half, whole).
    #[test]
    fn etcd_retries_wait_200ms_doubling_to_30s_jittered_down_to_half() {
        let mut d = retry_delays();
        let got: Vec<u128> = (0..10).map(|_| d.failed().as_millis()).collect();
        let want = [200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000];
        assert_eq!(got, want);
        for ms in want {
            let full = Duration::from_millis(ms as u64);
            let j = jittered(full);
            assert!(j >= full / 2 && j < full, "{j:?} of {full:?}");
        }
    }
}
