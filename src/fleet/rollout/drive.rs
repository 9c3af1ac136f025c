//! Running a fleet rollout against etcd: take the lock, write the record,
//! then for each wave write its host keys, watch its hosts' status and
//! judge them; finish with `all/`, or halt and put the hosts back. Resume
//! and undo continue from the record. Reports progress through
//! [`Progress`]; prints nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use crate::fleet::etcd::{
    Client, Compare, CompareOp, EventType, GetOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use crate::fleet::{EtcdArgs, FleetError, Keys};

use super::plan::{self, HostClock, HostObject, HostView, Judged, KeyWrite};
use super::record::{
    self, Halt, Lock, LockInfo, Phase, Put, Record, Replaced, RolloutError, RolloutOptions,
    RolloutTarget, Verdict, VerdictState,
};

/// Keys per transaction: etcd's default `--max-txn-ops` (128) counts
/// compares too, and each write has one compare plus the lock's.
const TXN_KEYS: usize = 100;

/// Transactions of one write sent at once.
const CONCURRENT_TXNS: usize = 8;

/// How many times in a row a broken status watch is followed on another
/// member before the rollout stops.
const RECONNECTS: usize = 3;

/// How often a guarded wave write that lost a race reads again.
const WRITE_TRIES: usize = 3;

/// What a rollout reports as it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The rollout starts (or resumes at wave `resumed_at`).
    Start {
        /// Its revision.
        revision: u64,
        /// Files written.
        files: usize,
        /// Hosts that get something.
        hosts: usize,
        /// Waves.
        waves: usize,
        /// The wave resumed at, when resuming.
        resumed_at: Option<usize>,
    },
    /// Wave `wave` (0-based) of `waves` was written to `hosts` (`skipped`:
    /// hosts gone when their wave came).
    WaveWritten {
        /// Which wave.
        wave: usize,
        /// Of how many.
        waves: usize,
        /// Its hosts written.
        hosts: Vec<String>,
        /// Its hosts that were gone.
        skipped: Vec<String>,
    },
    /// A host of the wave was judged Ready (`ready` of `of` now).
    HostReady {
        /// Which wave.
        wave: usize,
        /// Of how many.
        waves: usize,
        /// The host.
        host: String,
        /// Hosts of the wave Ready now.
        ready: usize,
        /// Hosts of the wave judged.
        of: usize,
    },
    /// The rollout halted.
    Halted(Halt),
    /// The changed hosts were put back: `keys` written, `skipped` keys
    /// changed by someone else meanwhile (left alone).
    Undone {
        /// Keys put back or deleted.
        keys: usize,
        /// Keys left alone, as `HOST/NAME`.
        skipped: Vec<String>,
    },
    /// `all/` was written (with `--all`) and `removed` wave keys deleted.
    Finished {
        /// The rollout.
        revision: u64,
        /// Wave keys deleted.
        removed: usize,
    },
}

/// Where the command shows [`Event`]s.
pub trait Progress {
    /// One event.
    fn event(&mut self, e: Event);
}

/// How a rollout ended (other than with an error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The directory holds nothing new for the targeted hosts.
    Nothing,
    /// Every wave Ready; `all/` written with `--all`.
    Complete {
        /// The rollout.
        revision: u64,
    },
    /// `fleet rollout undo` put every changed host back.
    Undone {
        /// The rollout.
        revision: u64,
    },
    /// A host failed.
    Halted {
        /// The rollout.
        revision: u64,
        /// Why.
        halt: Halt,
        /// Whether the changed hosts were put back.
        undone: bool,
    },
}

/// What `fleet rollout DIR` asks.
#[derive(Debug, Clone)]
pub struct Start {
    /// DIR's files by key name, validated.
    pub files: BTreeMap<String, String>,
    /// DIR, absolute.
    pub dir: String,
    /// Whom for.
    pub target: RolloutTarget,
    /// The flags.
    pub options: RolloutOptions,
}

/// A running rollout: the client, the lock, the record and its
/// `mod_revision`.
struct Session<'a> {
    client: Client,
    args: &'a EtcdArgs,
    keys: Keys,
    lock: Lock,
    record: Record,
    rev: i64,
    progress: &'a mut dyn Progress,
    /// The hosts' status and liveness, with the watch that keeps them
    /// current: read once, then kept from wave to wave (a fleet's whole
    /// `status/` is not read again per wave).
    watch: Option<(Seen, crate::fleet::etcd::WatchStream)>,
}

/// Connect and take the lock (naming no rollout yet).
async fn locked(args: &EtcdArgs) -> Result<(Client, Lock), RolloutError> {
    let mut client = args.connect().await.map_err(RolloutError::Etcd)?;
    let info = LockInfo {
        revision: 0,
        by: record::whoami(),
        since: record::now_rfc3339(),
    };
    let lock = Lock::acquire(&mut client, args, &info).await?;
    Ok((client, lock))
}

/// What etcd holds at the start of a rollout, read at one revision.
struct Snapshot {
    all: BTreeMap<String, String>,
    hosts: Vec<HostView>,
    records: Vec<(Record, i64)>,
}

fn text(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

/// `all/`, the live hosts with their labels and own keys, and the records.
async fn snapshot(client: &mut Client, args: &EtcdArgs) -> Result<Snapshot, RolloutError> {
    let keys = args.keys();
    let pre = GetOptions::with_prefix;
    let dirs = [
        keys.all_dir(),
        keys.hosts_dir(),
        format!("{}hosts/", keys.manifests_dir()),
    ];
    let txn = Txn::new().and_then(
        dirs.iter()
            .map(|d| TxnOp::get(d.as_str(), Some(pre(GetOptions::new()))))
            .collect::<Vec<_>>(),
    );
    let resp = client
        .txn(txn)
        .await
        .map_err(|e| RolloutError::etcd(args, "read the fleet's manifests and hosts", e))?;
    let mut got: Vec<Vec<(String, String)>> = resp
        .op_responses()
        .into_iter()
        .map(|op| match op {
            TxnOpResponse::Get(g) => g
                .kvs()
                .iter()
                .map(|kv| (text(kv.key()), text(kv.value())))
                .collect(),
            _ => Vec::new(),
        })
        .collect();
    got.resize(3, Vec::new());
    let all = strip(&got[0], &dirs[0]);
    let mut own: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (k, v) in strip(&got[2], &dirs[2]) {
        if let Some((host, name)) = k.split_once('/') {
            own.entry(host.to_string())
                .or_default()
                .insert(name.to_string(), v);
        }
    }
    let mut hosts: Vec<HostView> = got[1]
        .iter()
        .filter_map(|(_, v)| serde_json::from_str::<serde_json::Value>(v).ok())
        .filter_map(|v| {
            let id = v["host"].as_str()?.to_string();
            let labels = v["labels"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .collect()
                })
                .unwrap_or_default();
            Some(HostView {
                own: own.get(&id).cloned().unwrap_or_default(),
                id,
                labels,
            })
        })
        .collect();
    hosts.sort_by(|a, b| a.id.cmp(&b.id));
    let records = record::read_all(client, args).await?;
    Ok(Snapshot {
        all,
        hosts,
        records,
    })
}

fn strip(kvs: &[(String, String)], dir: &str) -> BTreeMap<String, String> {
    kvs.iter()
        .filter_map(|(k, v)| k.strip_prefix(dir).map(|n| (n.to_string(), v.clone())))
        .collect()
}

/// Whether `labels` match `selector` (`KEY=VALUE`, comma-separated, all
/// must hold).
fn selected(selector: &str, labels: &BTreeMap<String, String>) -> Result<bool, RolloutError> {
    let sel = crate::fleet::parse_selector(selector)
        .map_err(|e| RolloutError::Refused(format!("--selector: {e}")))?;
    Ok(sel.matches(labels))
}

/// The unfinished rollout among `records`, if any.
fn unfinished(records: &[(Record, i64)]) -> Option<&(Record, i64)> {
    records.last().filter(|(r, _)| !r.phase.is_terminal())
}

/// `fleet rollout DIR`: a new rollout, or the unfinished one with the same
/// change resumed.
///
/// # Errors
/// [`RolloutError`]: exit 2 (a halt is an [`Outcome`]).
pub async fn rollout(
    args: &EtcdArgs,
    start: Start,
    progress: &mut dyn Progress,
) -> Result<Outcome, RolloutError> {
    if let Some(s) = &start.target.selector {
        selected(s, &BTreeMap::new())?;
    }
    let (mut client, lock) = locked(args).await?;
    let r = begin(&mut client, args, &lock, start).await;
    let r = match r {
        Ok(Some((record, rev, resumed))) => {
            let mut s = Session {
                client: client.clone(),
                args,
                keys: args.keys(),
                lock,
                record,
                rev,
                progress,
                watch: None,
            };
            let out = if resumed {
                s.resume_now().await
            } else {
                match s.announce(false).await {
                    Ok(()) => s.run().await,
                    Err(e) => Err(e),
                }
            };
            s.lock.release(&mut s.client).await;
            return out;
        }
        Ok(None) => Ok(Outcome::Nothing),
        Err(e) => Err(e),
    };
    lock.release(&mut client).await;
    r
}

/// The record to run: the unfinished one with the same change, or a new
/// one (written). `None`: nothing to roll out.
async fn begin(
    client: &mut Client,
    args: &EtcdArgs,
    lock: &Lock,
    start: Start,
) -> Result<Option<(Record, i64, bool)>, RolloutError> {
    let snap = snapshot(client, args).await?;
    let mut targeted = Vec::new();
    for h in snap.hosts {
        if start
            .target
            .selector
            .as_deref()
            .map_or(Ok(true), |s| selected(s, &h.labels))?
        {
            targeted.push(h);
        }
    }
    let change = plan::change(&start.files, &snap.all, &targeted, &start.target);
    if let Some((r, rev)) = unfinished(&snap.records) {
        if plan::same_change(r, &start.files, &change, &start.target) {
            return Ok(Some((r.clone(), *rev, true)));
        }
        return Err(RolloutError::Unfinished {
            revision: r.revision,
            phase: r.phase,
        });
    }
    if change.is_empty() {
        return Ok(None);
    }
    let revision = snap.records.last().map_or(1, |(r, _)| r.revision + 1);
    let hosts: Vec<String> = change.names.keys().cloned().collect();
    let waves = plan::waves(&hosts, start.options.canary, start.options.wave_percent);
    let now = record::now_rfc3339();
    let verdicts = hosts
        .iter()
        .map(|h| {
            (
                h.clone(),
                Verdict {
                    state: VerdictState::Pending,
                    object: String::new(),
                    message: String::new(),
                    at: now.clone(),
                },
            )
        })
        .collect();
    let mut rec = Record {
        revision,
        phase: Phase::Progressing,
        started_by: record::whoami(),
        started_at: now.clone(),
        updated_at: now,
        dir: start.dir,
        target: start.target,
        options: start.options,
        puts: change.puts,
        deletes: change.deletes,
        hosts,
        names: change.names,
        waves,
        wave: 0,
        replaced: BTreeMap::new(),
        verdicts,
        halt: None,
    };
    let rev = record::save(client, args, lock, &mut rec, 0).await?;
    Ok(Some((rec, rev, false)))
}

/// `fleet rollout resume`: continue the unfinished rollout.
///
/// # Errors
/// [`RolloutError`]: none unfinished, a halted `--no-undo` one, etcd.
pub async fn resume(args: &EtcdArgs, progress: &mut dyn Progress) -> Result<Outcome, RolloutError> {
    with_unfinished(args, progress, false).await
}

/// `fleet rollout undo`: put back every host the unfinished rollout
/// changed.
///
/// # Errors
/// [`RolloutError`]: none unfinished, etcd.
pub async fn undo(args: &EtcdArgs, progress: &mut dyn Progress) -> Result<Outcome, RolloutError> {
    with_unfinished(args, progress, true).await
}

async fn with_unfinished(
    args: &EtcdArgs,
    progress: &mut dyn Progress,
    undo: bool,
) -> Result<Outcome, RolloutError> {
    let (mut client, lock) = locked(args).await?;
    let records = match record::read_all(&mut client, args).await {
        Ok(r) => r,
        Err(e) => {
            lock.release(&mut client).await;
            return Err(e);
        }
    };
    let Some((rec, rev)) = unfinished(&records).cloned() else {
        lock.release(&mut client).await;
        let last = records
            .last()
            .map(|(r, _)| format!(": the newest, rollout {}, is {}", r.revision, r.phase))
            .unwrap_or_default();
        return Err(RolloutError::NothingUnfinished(last));
    };
    let mut s = Session {
        client: client.clone(),
        args,
        keys: args.keys(),
        lock,
        record: rec,
        rev,
        progress,
        watch: None,
    };
    let out = if undo {
        s.undo_now().await
    } else {
        s.resume_now().await
    };
    s.lock.release(&mut s.client).await;
    out
}

/// The newest record and who holds the lock, for `fleet rollout status`.
///
/// # Errors
/// etcd cannot be read.
pub async fn latest(args: &EtcdArgs) -> Result<(Option<Record>, Option<LockInfo>), FleetError> {
    let mut client = args.connect().await?;
    let read = async {
        let records = record::read_all(&mut client, args).await?;
        let lock = record::holder(&mut client, args).await?;
        Ok::<_, RolloutError>((records.into_iter().map(|(r, _)| r).next_back(), lock))
    };
    match read.await {
        Ok(r) => Ok(r),
        Err(RolloutError::Etcd(e)) => Err(e),
        Err(e) => Err(FleetError::Usage(e.to_string())),
    }
}

/// Every record, oldest first, for `fleet rollout history` and `fleet
/// hosts`.
///
/// # Errors
/// etcd cannot be read.
pub async fn history(args: &EtcdArgs) -> Result<Vec<Record>, FleetError> {
    let mut client = args.connect().await?;
    match record::read_all(&mut client, args).await {
        Ok(r) => Ok(r.into_iter().map(|(r, _)| r).collect()),
        Err(RolloutError::Etcd(e)) => Err(e),
        Err(e) => Err(FleetError::Usage(e.to_string())),
    }
}

impl Session<'_> {
    async fn save(&mut self) -> Result<(), RolloutError> {
        self.rev = record::save(
            &mut self.client,
            self.args,
            &self.lock,
            &mut self.record,
            self.rev,
        )
        .await?;
        Ok(())
    }

    /// Name this rollout in the lock, so a refused command names it.
    async fn claim(&mut self) -> Result<(), RolloutError> {
        let info = LockInfo {
            revision: self.record.revision,
            by: record::whoami(),
            since: record::now_rfc3339(),
        };
        self.lock.set_info(&mut self.client, self.args, &info).await
    }

    async fn announce(&mut self, resumed: bool) -> Result<(), RolloutError> {
        self.claim().await?;
        self.progress.event(Event::Start {
            revision: self.record.revision,
            files: self.record.puts.len(),
            hosts: self.record.hosts.len(),
            waves: self.record.waves.len(),
            resumed_at: resumed.then_some(self.record.wave),
        });
        Ok(())
    }

    async fn resume_now(&mut self) -> Result<Outcome, RolloutError> {
        self.announce(true).await?;
        match self.record.phase {
            Phase::Progressing => self.run().await,
            Phase::Halted if self.record.options.no_undo => Err(RolloutError::Refused(format!(
                "rollout {} halted and was started with --no-undo: put its hosts back with `unitlet fleet rollout undo`, or fix the files and roll out again after that",
                self.record.revision
            ))),
            _ => {
                self.put_back().await?;
                Ok(match self.record.halt {
                    Some(_) => self.halted_outcome(true),
                    None => Outcome::Undone {
                        revision: self.record.revision,
                    },
                })
            }
        }
    }

    /// `fleet rollout undo`: every changed host put back.
    async fn undo_now(&mut self) -> Result<Outcome, RolloutError> {
        self.claim().await?;
        self.put_back().await?;
        Ok(Outcome::Undone {
            revision: self.record.revision,
        })
    }

    fn halted_outcome(&self, undone: bool) -> Outcome {
        let halt = self.record.halt.clone().unwrap_or(Halt {
            host: "-".into(),
            object: "-".into(),
            reason: "Undone".into(),
            message: "undone by `unitlet fleet rollout undo`".into(),
        });
        Outcome::Halted {
            revision: self.record.revision,
            halt,
            undone,
        }
    }

    /// The waves from `record.wave` on, then the finish.
    async fn run(&mut self) -> Result<Outcome, RolloutError> {
        while self.record.wave < self.record.waves.len() {
            let i = self.record.wave;
            let hosts = self.write_wave(i).await?;
            if let Some(halt) = self.judge_wave(i, &hosts).await? {
                return self.halt(halt).await;
            }
            if i + 1 < self.record.waves.len() {
                self.record.wave = i + 1;
            } else {
                break;
            }
        }
        self.finish().await
    }

    fn verdict(&mut self, host: &str, state: VerdictState, object: &str, message: &str) {
        self.record.verdicts.insert(
            host.to_string(),
            Verdict {
                state,
                object: object.into(),
                message: message.into(),
                at: record::now_rfc3339(),
            },
        );
    }

    /// Read the keys under `dir` (value and `mod_revision`) and whether each
    /// host is alive.
    async fn read_keys(
        &mut self,
        dir: &str,
    ) -> Result<(BTreeMap<String, (String, i64)>, BTreeSet<String>), RolloutError> {
        let hosts_dir = self.keys.hosts_dir();
        let txn = Txn::new().and_then(vec![
            TxnOp::get(dir, Some(GetOptions::new().with_prefix())),
            TxnOp::get(hosts_dir.as_str(), Some(GetOptions::new().with_prefix())),
        ]);
        let resp = self
            .client
            .txn(txn)
            .await
            .map_err(|e| RolloutError::etcd(self.args, format!("read {dir}"), e))?;
        let mut keys = BTreeMap::new();
        let mut alive = BTreeSet::new();
        for (i, op) in resp.op_responses().into_iter().enumerate() {
            let TxnOpResponse::Get(g) = op else { continue };
            for kv in g.kvs() {
                let k = text(kv.key());
                if i == 0 {
                    keys.insert(k, (text(kv.value()), kv.mod_revision()));
                } else if let Some(h) = k.strip_prefix(&hosts_dir) {
                    alive.insert(h.to_string());
                }
            }
        }
        Ok((keys, alive))
    }

    /// Keep a usable member: when the one this command talks to stopped
    /// answering (it went away, or lost its leader), connect to another.
    /// No member answering is an etcd error (the rollout stays resumable).
    async fn reconnect_if_gone(&mut self) -> Result<(), RolloutError> {
        let probe = self.keys.rollout_lock();
        let opts = Some(GetOptions::new().with_count_only());
        if let Err(e) = self.client.get(probe.as_str(), opts).await {
            tracing::info!("etcd member not answering ({e}); connecting to another");
            self.reconnect().await?;
        }
        Ok(())
    }

    /// Connect to a member that has a leader, for up to [`RECONNECTS`]
    /// tries a second apart (the members elect a new leader when the old
    /// one went away).
    async fn reconnect(&mut self) -> Result<(), RolloutError> {
        let mut tries = 0;
        loop {
            match self.args.connect().await {
                Ok(c) => {
                    self.client = c;
                    return Ok(());
                }
                Err(e) if tries >= RECONNECTS => return Err(RolloutError::Etcd(e)),
                Err(e) => tracing::info!("no etcd member to follow yet: {e}"),
            }
            tries += 1;
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }

    /// Write wave `i`: the record first (with what each key held), then the
    /// keys, guarded. Returns the hosts written (those alive).
    async fn write_wave(&mut self, i: usize) -> Result<Vec<String>, RolloutError> {
        self.reconnect_if_gone().await?;
        for _ in 0..WRITE_TRIES {
            let (current, alive) = self.read_keys(&self.keys.manifests_dir()).await?;
            let (hosts, skipped): (Vec<String>, Vec<String>) = self.record.waves[i]
                .iter()
                .cloned()
                .partition(|h| alive.contains(h));
            let mut ops = Vec::new();
            for h in &hosts {
                for n in self.record.names.get(h).cloned().unwrap_or_default() {
                    let key = format!("{}{n}", self.keys.host_dir(h));
                    let Some(put) = self.record.puts.get(&n) else {
                        continue;
                    };
                    let cur = current.get(&key);
                    if cur.is_some_and(|(v, _)| *v == put.value) {
                        continue; // written already (a resumed wave)
                    }
                    let prev = cur.map(|(v, _)| Replaced { value: v.clone() });
                    self.record
                        .replaced
                        .entry(h.clone())
                        .or_default()
                        .insert(n.clone(), prev);
                    let guard = match cur {
                        Some((_, rev)) => {
                            Compare::mod_revision(key.clone(), CompareOp::Equal, *rev)
                        }
                        None => Compare::version(key.clone(), CompareOp::Equal, 0),
                    };
                    ops.push((guard, TxnOp::put(key, put.value.clone(), None)));
                }
                self.verdict(h, VerdictState::Applied, "", "");
            }
            for h in &skipped {
                self.verdict(
                    h,
                    VerdictState::Pending,
                    "",
                    "gone when its wave came: skipped; it reads all/ when it is back",
                );
            }
            self.save().await?;
            if self.write_guarded(ops).await? {
                let waves = self.record.waves.len();
                self.progress.event(Event::WaveWritten {
                    wave: i,
                    waves,
                    hosts: hosts.clone(),
                    skipped,
                });
                return Ok(hosts);
            }
            tracing::info!(
                "host keys of wave {} changed meanwhile; reading again",
                i + 1
            );
        }
        Err(RolloutError::Conflict(format!(
            "the host keys of wave {} kept changing while being written ({WRITE_TRIES} tries)",
            i + 1
        )))
    }

    /// Run guarded writes in transactions of [`TXN_KEYS`], each also
    /// guarded by the lock, up to [`CONCURRENT_TXNS`] at a time (a wave of
    /// hundreds of hosts is several transactions; one after the other they
    /// cost a round trip each). `false`: a key's guard failed (the other
    /// batches may have been written: callers read again and skip keys
    /// already at their value).
    async fn write_guarded(&mut self, ops: Vec<(Compare, TxnOp)>) -> Result<bool, RolloutError> {
        use futures_util::StreamExt;
        let mut batches = Vec::new();
        let mut ops = ops;
        while !ops.is_empty() {
            let rest = ops.split_off(ops.len().min(TXN_KEYS));
            batches.push(ops);
            ops = rest;
        }
        let lock = self.lock.guard();
        let sends = batches.into_iter().map(|batch| {
            let (mut guards, puts): (Vec<Compare>, Vec<TxnOp>) = batch.into_iter().unzip();
            guards.push(lock.clone());
            let mut client = self.client.clone();
            async move { client.txn(Txn::new().when(guards).and_then(puts)).await }
        });
        let results: Vec<_> = futures_util::stream::iter(sends)
            .buffer_unordered(CONCURRENT_TXNS)
            .collect()
            .await;
        let mut written = true;
        for r in results {
            let r = r.map_err(|e| RolloutError::etcd(self.args, "write host keys", e))?;
            written &= r.succeeded();
        }
        if written {
            return Ok(true);
        }
        let lock = self.keys.rollout_lock();
        let held = self
            .client
            .get(lock.as_str(), None)
            .await
            .map_err(|e| RolloutError::etcd(self.args, "read the rollout lock", e))?;
        if held
            .kvs()
            .first()
            .is_none_or(|kv| kv.lease() != self.lock.lease)
        {
            return Err(record::lost_lock(self.args));
        }
        Ok(false)
    }
}

/// What the driver knows of the hosts of a wave: their status values and
/// whether each is alive, kept current by a watch.
#[derive(Default)]
struct Seen {
    objects: BTreeMap<String, BTreeMap<String, HostObject>>,
    alive: BTreeSet<String>,
}

impl Seen {
    /// Fold one key's put (`Some(value)`) or delete.
    fn fold(&mut self, keys: &Keys, key: &str, value: Option<&[u8]>) {
        if let Some(rest) = key.strip_prefix(&keys.status_dir()) {
            let Some((host, name)) = rest.split_once('/') else {
                return;
            };
            let objs = self.objects.entry(host.to_string()).or_default();
            match value.and_then(|v| serde_json::from_slice::<HostObject>(v).ok()) {
                Some(o) => {
                    objs.insert(name.to_string(), o);
                }
                None => {
                    objs.remove(name);
                }
            }
        } else if let Some(host) = key.strip_prefix(&keys.hosts_dir()) {
            if value.is_some() {
                self.alive.insert(host.to_string());
            } else {
                self.alive.remove(host);
            }
        }
    }

    fn host_objects(&self, host: &str) -> Vec<HostObject> {
        self.objects
            .get(host)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }
}

impl Session<'_> {
    /// Read `status/` and `hosts/` at one revision, then watch both from
    /// the next one.
    async fn watch_status(
        &mut self,
    ) -> Result<(Seen, crate::fleet::etcd::WatchStream), RolloutError> {
        let (status_dir, hosts_dir) = (self.keys.status_dir(), self.keys.hosts_dir());
        let txn = Txn::new().and_then(vec![
            TxnOp::get(status_dir.as_str(), Some(GetOptions::new().with_prefix())),
            TxnOp::get(hosts_dir.as_str(), Some(GetOptions::new().with_prefix())),
        ]);
        let err = |e| RolloutError::etcd(self.args, "read the hosts' status", e);
        let resp = self.client.txn(txn).await.map_err(err)?;
        let mut seen = Seen::default();
        for op in resp.op_responses() {
            if let TxnOpResponse::Get(g) = op {
                for kv in g.kvs() {
                    seen.fold(&self.keys, &text(kv.key()), Some(kv.value()));
                }
            }
        }
        let from = resp.header().map(|h| h.revision()).unwrap_or(0) + 1;
        let opts = || Some(WatchOptions::new().with_prefix().with_start_revision(from));
        let err = |e| RolloutError::etcd(self.args, "watch the hosts' status", e);
        let mut stream = self
            .client
            .watch(status_dir.as_str(), opts())
            .await
            .map_err(err)?;
        stream
            .watch(hosts_dir.as_str(), opts())
            .await
            .map_err(err)?;
        Ok((seen, stream))
    }

    /// Watch the hosts of wave `i` until every one is Ready (`None`) or one
    /// failed (its halt).
    async fn judge_wave(
        &mut self,
        i: usize,
        hosts: &[String],
    ) -> Result<Option<Halt>, RolloutError> {
        let (mut seen, mut stream) = match self.watch.take() {
            Some(w) => w,
            None => self.watch_status().await?,
        };
        let start = Instant::now();
        let mut clocks: BTreeMap<String, HostClock> = hosts
            .iter()
            .map(|h| (h.clone(), HostClock::new(start)))
            .collect();
        let (waves, of) = (self.record.waves.len(), hosts.len());
        let mut ready = 0;
        let mut broken = 0;
        loop {
            let now = Instant::now();
            let mut done = Vec::new();
            for (h, clock) in clocks.iter_mut() {
                let got = plan::got(&self.record, h);
                let obs = plan::observe(&got, &seen.host_objects(h), seen.alive.contains(h));
                match clock.judge(
                    &obs,
                    now,
                    self.record.options.stable,
                    self.record.options.progress_deadline,
                ) {
                    Judged::Pending => {}
                    Judged::Ready => done.push(h.clone()),
                    Judged::Failed {
                        object,
                        reason,
                        message,
                    } => {
                        return Ok(Some(Halt {
                            host: h.clone(),
                            object,
                            reason,
                            message,
                        }));
                    }
                }
            }
            for h in done {
                clocks.remove(&h);
                ready += 1;
                self.verdict(&h, VerdictState::Ready, "", "");
                self.progress.event(Event::HostReady {
                    wave: i,
                    waves,
                    host: h,
                    ready,
                    of,
                });
            }
            if clocks.is_empty() {
                self.watch = Some((seen, stream));
                return Ok(None);
            }
            let clock_list: Vec<HostClock> = clocks.values().copied().collect();
            let tick = plan::next_tick(&clock_list, now, &self.record.options);
            tokio::select! {
                m = stream.message() => self.follow(m, &mut seen, &mut stream, &mut broken).await?,
                () = tokio::time::sleep_until(tokio::time::Instant::from_std(tick)) => {}
            }
        }
    }

    /// Fold a watch message into `seen`. A broken watch (the member went
    /// away, lost its leader) is followed on another member, read again
    /// from scratch; after [`RECONNECTS`] breaks in a row, or when no
    /// member answers, the rollout stops (resumable).
    async fn follow(
        &mut self,
        m: Result<Option<crate::fleet::etcd::WatchResponse>, crate::fleet::etcd::Error>,
        seen: &mut Seen,
        stream: &mut crate::fleet::etcd::WatchStream,
        broken: &mut usize,
    ) -> Result<(), RolloutError> {
        let why = match m {
            Ok(Some(m)) if !m.canceled() => {
                *broken = 0;
                for ev in m.events() {
                    let Some(kv) = ev.kv() else { continue };
                    let value = (ev.event_type() == EventType::Put).then(|| kv.value());
                    seen.fold(&self.keys, &text(kv.key()), value);
                }
                return Ok(());
            }
            Ok(Some(m)) => format!("etcd cancelled it: {}", m.cancel_reason()),
            Ok(None) => "the member ended it".to_string(),
            Err(e) => e.to_string(),
        };
        *broken += 1;
        if *broken > RECONNECTS {
            return Err(RolloutError::Conflict(format!(
                "the watch on the hosts' status broke {RECONNECTS} times in a row ({why})"
            )));
        }
        tracing::info!(
            "the watch on the hosts' status broke ({why}); following it on another member"
        );
        self.reconnect().await?;
        (*seen, *stream) = self.watch_status().await?;
        Ok(())
    }

    /// The first failed host: `Halted`, then (unless `--no-undo`) every
    /// changed host put back.
    async fn halt(&mut self, halt: Halt) -> Result<Outcome, RolloutError> {
        self.record.phase = Phase::Halted;
        self.verdict(
            &halt.host.clone(),
            VerdictState::Failed,
            &halt.object.clone(),
            &format!("{}: {}", halt.reason, halt.message),
        );
        self.record.halt = Some(halt.clone());
        self.save().await?;
        self.progress.event(Event::Halted(halt));
        if self.record.options.no_undo {
            return Ok(self.halted_outcome(false));
        }
        self.put_back().await?;
        Ok(self.halted_outcome(true))
    }

    /// Put every host key the rollout wrote back to what it replaced (only
    /// keys that still hold what it wrote): `Undoing`, then `Undone`.
    async fn put_back(&mut self) -> Result<(), RolloutError> {
        self.reconnect_if_gone().await?;
        self.record.phase = Phase::Undoing;
        self.save().await?;
        let written = plan::written(&self.record);
        let (current, _) = self.read_keys(&self.keys.manifests_dir()).await?;
        let mut ops = Vec::new();
        let mut skipped = Vec::new();
        let mut hosts = BTreeSet::new();
        for KeyWrite {
            host,
            name,
            previous,
            ours,
        } in written
        {
            let key = format!("{}{name}", self.keys.host_dir(&host));
            match current.get(&key) {
                Some((v, rev)) if *v == ours => {
                    let guard = Compare::mod_revision(key.clone(), CompareOp::Equal, *rev);
                    let op = match previous {
                        Some(p) => TxnOp::put(key, p, None),
                        None => TxnOp::delete(key, None),
                    };
                    ops.push((guard, op));
                    hosts.insert(host);
                }
                // Never written (the command stopped before), or put back.
                None if previous.is_none() => {}
                Some((v, _)) if previous.as_ref() == Some(v) => {}
                _ => skipped.push(format!("{host}/{name}")),
            }
        }
        let keys = ops.len();
        if !self.write_guarded(ops).await? {
            return Err(RolloutError::Conflict(
                "host keys changed while being put back".into(),
            ));
        }
        for h in hosts {
            if self
                .record
                .verdicts
                .get(&h)
                .is_none_or(|v| v.state != VerdictState::Failed)
            {
                self.verdict(&h, VerdictState::Reverted, "", "put back");
            }
        }
        self.record.phase = Phase::Undone;
        self.save().await?;
        self.progress.event(Event::Undone { keys, skipped });
        Ok(())
    }

    /// Every wave Ready: `all/` written (with `--all`), then the wave keys
    /// deleted (those still holding what the rollout wrote).
    async fn finish(&mut self) -> Result<Outcome, RolloutError> {
        self.reconnect_if_gone().await?;
        let mut removed = 0;
        if self.record.target.selector.is_none() {
            self.write_all().await?;
            let (current, _) = self.read_keys(&self.keys.manifests_dir()).await?;
            let mut ops = Vec::new();
            for w in plan::written(&self.record) {
                let key = format!("{}{}", self.keys.host_dir(&w.host), w.name);
                if let Some((v, rev)) = current.get(&key)
                    && *v == w.ours
                {
                    ops.push((
                        Compare::mod_revision(key.clone(), CompareOp::Equal, *rev),
                        TxnOp::delete(key, None),
                    ));
                }
            }
            removed = ops.len();
            // A key changed meanwhile is someone else's now: left alone.
            self.write_guarded(ops).await?;
        }
        self.record.phase = Phase::Complete;
        self.save().await?;
        self.progress.event(Event::Finished {
            revision: self.record.revision,
            removed,
        });
        Ok(Outcome::Complete {
            revision: self.record.revision,
        })
    }

    /// `all/`: the files put and the gone ones deleted, in one transaction
    /// guarded by what was read.
    async fn write_all(&mut self) -> Result<(), RolloutError> {
        let all_dir = self.keys.all_dir();
        for _ in 0..WRITE_TRIES {
            let (current, _) = self.read_keys(&all_dir).await?;
            let mut ops = Vec::new();
            let puts: Vec<(String, Put)> = self.record.puts.clone().into_iter().collect();
            for (n, p) in puts {
                let key = format!("{all_dir}{n}");
                let guard = match current.get(&key) {
                    Some((v, _)) if *v == p.value => continue,
                    Some((_, rev)) => Compare::mod_revision(key.clone(), CompareOp::Equal, *rev),
                    None => Compare::version(key.clone(), CompareOp::Equal, 0),
                };
                ops.push((guard, TxnOp::put(key, p.value, None)));
            }
            for n in &self.record.deletes {
                let key = format!("{all_dir}{n}");
                if let Some((_, rev)) = current.get(&key) {
                    ops.push((
                        Compare::mod_revision(key.clone(), CompareOp::Equal, *rev),
                        TxnOp::delete(key, None),
                    ));
                }
            }
            if ops.len() > TXN_KEYS {
                return Err(RolloutError::Refused(format!(
                    "the change writes {} keys of {all_dir}, more than one transaction takes ({TXN_KEYS}); roll out in parts",
                    ops.len()
                )));
            }
            if self.write_guarded(ops).await? {
                return Ok(());
            }
        }
        Err(RolloutError::Conflict(format!(
            "{all_dir} kept changing while being written ({WRITE_TRIES} tries)"
        )))
    }
}
