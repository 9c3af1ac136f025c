//! Fleet simulation against a real 3-member etcd cluster on this machine.
//! Numbers go to BENCHMARKS.md. Run: `cargo bench --bench fleet`
//! (`FLEET_SIZES=100,500` to choose N).
//!
//! For each N (100, 500, 1000 by default), on a fresh cluster:
//! - **watch**: N simulated hosts (in-process, distinct host ids, no
//!   systemd). Each holds what `unitlet run --source etcd` holds: one watch
//!   stream with the two prefix watches of the etcd source, on its own
//!   connection, and the real status publisher (`fleet::publish::run`: its
//!   own connection, a lease with keep-alives, five objects' status
//!   published once, then only changes — none here). Measured: etcd members'
//!   CPU and RSS at steady state, writes per second at steady state (store
//!   revisions), and for 20 pushes of a change to `PREFIX/manifests/all/`
//!   the time until every host has seen it (p50, p99, max over pushes) and
//!   per-host delivery latency.
//! - **poll**: the same N hosts reading the same two prefixes every 10 s
//!   (one linearizable transaction each, random phase) instead of watching,
//!   with the same status publishers; same measurements.

// Test and benchmark code: a panic is how it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/procstat.rs"]
mod procstat;
use procstat::{cpu_ticks, rss_kb};

#[path = "common/env.rs"]
mod env;
#[path = "../tests/it/support/etcd.rs"]
mod etcd;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use env::env_sizes;
use etcd::EtcdCluster;
use tokio::sync::mpsc;
use unitlet::fleet::EtcdArgs;
use unitlet::fleet::etcd::{EventType, GetOptions, Txn, TxnOp, TxnOpResponse, WatchOptions};

const PREFIX: &str = "/bench";
const PUSHES: usize = 20;
const STEADY: Duration = Duration::from_secs(15);
const POLL_EVERY: Duration = Duration::from_secs(10);
const LEASE_TTL: Duration = Duration::from_secs(10);

fn pct(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn ticks_per_sec() -> f64 {
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

/// CPU (% of one core, summed over members) and RSS (MiB, summed) of the
/// members over `window`, and the store revisions written meanwhile.
async fn steady(
    cluster: &EtcdCluster,
    client: &mut unitlet::fleet::etcd::Client,
    window: Duration,
) -> (f64, f64, f64) {
    let pids: Vec<u32> = (0..3).filter_map(|i| cluster.pid(i)).collect();
    let rev = |r: unitlet::fleet::etcd::GetResponse| r.header().map(|h| h.revision()).unwrap_or(0);
    let r0 = rev(client.get("/probe", None).await.unwrap());
    let c0: u64 = pids.iter().map(|p| cpu_ticks(*p)).sum();
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let c1: u64 = pids.iter().map(|p| cpu_ticks(*p)).sum();
    let secs = t0.elapsed().as_secs_f64();
    let r1 = rev(client.get("/probe", None).await.unwrap());
    let cpu = (c1 - c0) as f64 / ticks_per_sec() / secs * 100.0;
    let rss: f64 = pids.iter().map(|p| rss_kb(*p) as f64 / 1024.0).sum();
    (cpu, rss, (r1 - r0) as f64 / secs)
}

/// What a host reports: (host index, push number seen, when).
type Seen = (usize, u64, Instant);

fn status_json(host: &str) -> String {
    let objects: BTreeMap<String, serde_json::Value> = (0..5)
        .map(|i| {
            let name = format!("svc{i}");
            (
                name.clone(),
                serde_json::json!({
                    "kind": "Service", "name": name, "file": format!("/x/{name}.yaml"),
                    "conditions": [{"type": "Ready", "status": "True", "reason": "Running",
                        "message": format!("{name}.service is active (running) on {host}"),
                        "lastTransitionTime": "2026-11-28T05:00:00Z"}],
                    "unit": {"name": format!("{name}.service"), "activeState": "active", "subState": "running"}
                }),
            )
        })
        .collect();
    serde_json::json!({"objects": objects, "reconciledAt": "2026-11-28T05:00:00Z"}).to_string()
}

fn etcd_args(cluster: &EtcdCluster) -> EtcdArgs {
    EtcdArgs {
        endpoints: cluster.endpoints(),
        prefix: PREFIX.into(),
        ..EtcdArgs::default()
    }
}

/// The value's push number: `sleep N`.
fn push_number(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v)
        .ok()?
        .trim()
        .strip_prefix("push ")?
        .parse()
        .ok()
}

/// A simulated host's etcd source: one stream with the two prefix watches,
/// resumed from the last revision seen when it breaks (as the real one).
async fn watcher(
    args: EtcdArgs,
    i: usize,
    ready: mpsc::Sender<()>,
    seen: mpsc::UnboundedSender<Seen>,
) {
    let host = format!("host-{i:05}");
    let keys = args.keys();
    let mut ready = Some(ready);
    let mut rev = 0;
    loop {
        let r: Result<(), String> = async {
            let mut client = args.connect().await.map_err(|e| e.to_string())?;
            if rev == 0 {
                rev = client
                    .get("/probe", None)
                    .await
                    .map_err(|e| e.to_string())?
                    .header()
                    .map(|h| h.revision())
                    .unwrap_or(0);
            }
            let opts = || {
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(rev + 1),
                )
            };
            let mut stream = client
                .watch(keys.all_dir(), opts())
                .await
                .map_err(|e| e.to_string())?;
            stream
                .watch(keys.host_dir(&host), opts())
                .await
                .map_err(|e| e.to_string())?;
            let mut created = 0;
            while let Some(m) = stream.message().await.map_err(|e| e.to_string())? {
                if m.created() {
                    created += 1;
                    if created == 2
                        && let Some(r) = ready.take()
                    {
                        let _ = r.send(()).await;
                    }
                }
                for ev in m.events() {
                    let Some(kv) = ev.kv() else { continue };
                    rev = rev.max(kv.mod_revision());
                    if ev.event_type() == EventType::Put
                        && let Some(n) = push_number(kv.value())
                    {
                        let _ = seen.send((i, n, Instant::now()));
                    }
                }
            }
            Err("stream ended".into())
        }
        .await;
        if let Err(e) = r {
            BROKEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let _ = e;
        }
        tokio::time::sleep(Duration::from_millis(200 + rand::random::<u64>() % 800)).await;
    }
}

/// Watch sessions that broke and were resumed, over the whole run.
static BROKEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

async fn poller(
    args: EtcdArgs,
    i: usize,
    ready: mpsc::Sender<()>,
    seen: mpsc::UnboundedSender<Seen>,
    reads: Arc<std::sync::atomic::AtomicU64>,
) {
    let host = format!("host-{i:05}");
    let keys = args.keys();
    let mut client = loop {
        match args.connect().await {
            Ok(c) => break c,
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    };
    let _ = ready.send(()).await;
    let phase = POLL_EVERY.mul_f64(rand::random::<f64>());
    tokio::time::sleep(phase).await;
    let mut tick = tokio::time::interval(POLL_EVERY);
    let mut last = 0;
    loop {
        tick.tick().await;
        let txn = Txn::new().and_then(vec![
            TxnOp::get(keys.all_dir(), Some(GetOptions::new().with_prefix())),
            TxnOp::get(keys.host_dir(&host), Some(GetOptions::new().with_prefix())),
        ]);
        let Ok(r) = client.txn(txn).await else {
            continue;
        };
        reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for op in r.op_responses() {
            if let TxnOpResponse::Get(g) = op {
                for kv in g.kvs() {
                    if let Some(n) = push_number(kv.value())
                        && n > last
                    {
                        last = n;
                        let _ = seen.send((i, n, Instant::now()));
                    }
                }
            }
        }
    }
}

struct Result_ {
    cpu_idle: f64,
    rss: f64,
    writes_idle: f64,
    all_seen: Vec<f64>,
    per_host: Vec<f64>,
    cpu_push: f64,
    setup: Duration,
}

async fn scenario(n: usize, poll: bool) -> Result_ {
    let cluster = EtcdCluster::start_with(3, false);
    let args = etcd_args(&cluster);
    let mut admin = args.connect().await.unwrap();
    admin
        .put(format!("{PREFIX}/manifests/all/bench"), "push 0", None)
        .await
        .unwrap();
    let (ready_tx, mut ready_rx) = mpsc::channel(n);
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
    let reads = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let dirs = tempfile::tempdir().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let t = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..n {
        let (a, r, s) = (args.clone(), ready_tx.clone(), seen_tx.clone());
        if poll {
            tasks.push(tokio::spawn(poller(a, i, r, s, reads.clone())));
        } else {
            tasks.push(tokio::spawn(watcher(a, i, r, s)));
        }
        // Either way, the real status publisher, with a status of five
        // objects: the same lease, keep-alives and status keys.
        let state = dirs.path().join(format!("h{i}"));
        std::fs::create_dir_all(&state).unwrap();
        let host = format!("host-{i:05}");
        std::fs::write(state.join("status.json"), status_json(&host)).unwrap();
        tasks.push(tokio::spawn(unitlet::fleet::publish::run(
            unitlet::fleet::publish::PublishOptions {
                etcd: args.clone(),
                host,
                state_dir: state,
                ttl: LEASE_TTL,
                labels: Default::default(),
            },
            stop_rx.clone(),
        )));
        // Hosts do not all start in the same millisecond.
        if i % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    drop(ready_tx);
    let mut connected = 0;
    while connected < n {
        match tokio::time::timeout(Duration::from_secs(180), ready_rx.recv()).await {
            Ok(Some(())) => connected += 1,
            _ => panic!("only {connected} of {n} hosts could start watching within 180 s"),
        }
    }
    BROKEN.store(0, std::sync::atomic::Ordering::Relaxed);
    let setup = t.elapsed();
    // Let the publishers' first writes settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (cpu_idle, rss, writes_idle) = steady(&cluster, &mut admin, STEADY).await;
    let reads0 = reads.load(std::sync::atomic::Ordering::Relaxed);
    let pushes = if poll { 3 } else { PUSHES };
    let mut all_seen = Vec::new();
    let mut per_host = Vec::new();
    let pids: Vec<u32> = (0..3).filter_map(|i| cluster.pid(i)).collect();
    let c0: u64 = pids.iter().map(|p| cpu_ticks(*p)).sum();
    let tp = Instant::now();
    for k in 1..=pushes as u64 {
        let t0 = Instant::now();
        admin
            .put(
                format!("{PREFIX}/manifests/all/bench"),
                format!("push {k}"),
                None,
            )
            .await
            .unwrap();
        let mut got = vec![false; n];
        let mut count = 0;
        let deadline = t0 + POLL_EVERY * 3;
        while count < n {
            let Ok(Some((i, seen_n, at))) =
                tokio::time::timeout_at(deadline.into(), seen_rx.recv()).await
            else {
                panic!(
                    "push {k}: only {count} of {n} hosts saw it within {:?}",
                    POLL_EVERY * 3
                );
            };
            if seen_n >= k && !got[i] {
                got[i] = true;
                count += 1;
                per_host.push(at.duration_since(t0).as_secs_f64() * 1000.0);
            }
        }
        all_seen.push(t0.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(500)).await;
        while seen_rx.try_recv().is_ok() {}
    }
    let c1: u64 = pids.iter().map(|p| cpu_ticks(*p)).sum();
    let cpu_push = (c1 - c0) as f64 / ticks_per_sec() / tp.elapsed().as_secs_f64() * 100.0;
    let broken = BROKEN.load(std::sync::atomic::Ordering::Relaxed);
    if broken > 0 {
        eprintln!("  ({broken} watch sessions broke and resumed during the measurement)");
    }
    if poll {
        let r = reads.load(std::sync::atomic::Ordering::Relaxed) - reads0;
        eprintln!("  ({r} polling reads during the pushes)");
    }
    let _ = stop_tx.send(true);
    for t in &tasks {
        t.abort();
    }
    drop(cluster);
    Result_ {
        cpu_idle,
        rss,
        writes_idle,
        all_seen,
        per_host,
        cpu_push,
        setup,
    }
}

fn main() {
    let sizes = env_sizes("FLEET_SIZES", "100,500,1000");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "| N | mode | setup | etcd CPU idle (% of a core, 3 members) | etcd RSS (MiB, 3 members) | writes/s idle | all hosts seen p50 / p99 / max (ms) | per-host p50 / p99 (ms) | etcd CPU during pushes |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for &n in &sizes {
        for poll in [false, true] {
            let r = rt.block_on(scenario(n, poll));
            println!(
                "| {n} | {} | {:.1}s | {:.1} | {:.0} | {:.2} | {:.0} / {:.0} / {:.0} | {:.0} / {:.0} | {:.1} |",
                if poll { "poll 10 s" } else { "watch" },
                r.setup.as_secs_f64(),
                r.cpu_idle,
                r.rss,
                r.writes_idle,
                pct(&r.all_seen, 0.5),
                pct(&r.all_seen, 0.99),
                pct(&r.all_seen, 1.0),
                pct(&r.per_host, 0.5),
                pct(&r.per_host, 0.99),
                r.cpu_push,
            );
        }
    }
}
