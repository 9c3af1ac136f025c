//! `unitlet fleet rollout` against a real 3-member etcd cluster on this
//! machine, with N simulated hosts. Numbers go to BENCHMARKS.md.
//! Run: `cargo bench --bench fleet_rollout` (`FLEET_SIZES=100,500` to
//! choose N; default 100, 500, 1000).
//!
//! A simulated host (in-process, no systemd) does what a host's
//! `unitlet run --source etcd` does for a rollout, nothing more: it publishes
//! `PREFIX/hosts/HOST`, holds one watch stream with the source's two prefix
//! watches (`manifests/all/`, `manifests/hosts/HOST/`), and when the
//! effective value of its manifest changes it waits its own *report time*
//! (a fixed random delay per host, 200–800 ms: the time a real host takes to
//! restart a unit and find it Ready) and then writes its status key with the
//! new `manifestDigest` and `Ready True`.
//!
//! Per N, on a fresh cluster: one `unitlet fleet rollout DIR --all` (the real
//! binary) with `--stable 0s`, then one with `--stable 5s`, each a new value
//! of the same manifest. Measured: the wall time of the command, against the
//! floor of the same waves — the sum over the waves (read from the
//! rollout's record) of the slowest host's measured report time plus
//! `--stable`; and every key the rollout wrote (a watch from the revision
//! before it, read after it), per host.

// Test and benchmark code: a panic is how it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/env.rs"]
mod env;
#[path = "../tests/it/support/etcd.rs"]
mod etcd;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use env::env_sizes;
use etcd::EtcdCluster;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use unitlet::fleet::EtcdArgs;
use unitlet::fleet::etcd::{Client, EventType, GetOptions, WatchOptions};

const PREFIX: &str = "/bench";
const NAME: &str = "svc";

/// A Service running `sleep ARG`: the argument tells versions apart.
fn manifest(arg: &str) -> String {
    format!(
        "apiVersion: unitlet/v1\nkind: Service\nmetadata:\n  name: {NAME}\nspec:\n  command: [/bin/sleep, \"{arg}\"]\n"
    )
}

fn digest(v: &[u8]) -> String {
    hex::encode(Sha256::digest(v))
}

fn etcd_args(cluster: &EtcdCluster) -> EtcdArgs {
    EtcdArgs {
        endpoints: cluster.endpoints(),
        prefix: PREFIX.into(),
        ..EtcdArgs::default()
    }
}

/// The status value a host's publisher writes for one object.
fn status_value(host: &str, digest: &str) -> String {
    serde_json::json!({
        "kind": "Service", "name": NAME, "file": format!("/x/{NAME}.yaml"),
        "conditions": [{"type": "Ready", "status": "True", "reason": "Running",
            "message": format!("{NAME}.service is active (running)"),
            "lastTransitionTime": "2026-12-06T12:00:00Z"}],
        "unit": {"name": format!("{NAME}.service"), "activeState": "active", "subState": "running"},
        "lastReconcileTime": "2026-12-06T12:00:00Z",
        "operatorRunning": true,
        "manifestDigest": digest,
        "host": host,
    })
    .to_string()
}

fn host_value(host: &str) -> String {
    serde_json::json!({
        "host": host, "hostname": host, "pid": 1, "startedAt": "2026-12-06T12:00:00Z",
        "source": "etcd", "leaseTtl": 600, "labels": {},
    })
    .to_string()
}

/// What a host reports: (host id, digest, time from seeing the change to
/// its status write being acknowledged).
type Report = (String, String, Duration);

/// The effective value of NAME for a host: its own key over `all/`.
#[derive(Default)]
struct Effective {
    all: Option<Vec<u8>>,
    own: Option<Vec<u8>>,
}

impl Effective {
    fn value(&self) -> Option<&[u8]> {
        self.own.as_deref().or(self.all.as_deref())
    }
}

/// One simulated host (see the module comment).
async fn host(
    args: EtcdArgs,
    id: String,
    delay: Duration,
    ready: mpsc::Sender<()>,
    reports: mpsc::UnboundedSender<Report>,
) {
    let keys = args.keys();
    let mut client = args.connect().await.unwrap();
    client
        .put(keys.host_key(&id), host_value(&id), None)
        .await
        .unwrap();
    let all_key = format!("{}{NAME}", keys.all_dir());
    let own_key = format!("{}{NAME}", keys.host_dir(&id));
    let status_key = format!("{}{NAME}", keys.status_host_dir(&id));
    let mut eff = Effective::default();
    let got = client.get(all_key.clone(), None).await.unwrap();
    let rev = got.header().map(|h| h.revision()).unwrap_or(0);
    eff.all = got.kvs().first().map(|kv| kv.value().to_vec());
    let mut reported = digest(eff.value().unwrap());
    client
        .put(status_key.clone(), status_value(&id, &reported), None)
        .await
        .unwrap();
    let opts = || {
        Some(
            WatchOptions::new()
                .with_prefix()
                .with_start_revision(rev + 1),
        )
    };
    let mut stream = client.watch(keys.all_dir(), opts()).await.unwrap();
    stream.watch(keys.host_dir(&id), opts()).await.unwrap();
    let mut ready = Some(ready);
    let mut created = 0;
    while let Some(m) = stream.message().await.unwrap() {
        if m.created() {
            created += 1;
            if created == 2
                && let Some(r) = ready.take()
            {
                r.send(()).await.unwrap();
            }
        }
        for ev in m.events() {
            let Some(kv) = ev.kv() else { continue };
            let v = (ev.event_type() == EventType::Put).then(|| kv.value().to_vec());
            if kv.key() == all_key.as_bytes() {
                eff.all = v;
            } else if kv.key() == own_key.as_bytes() {
                eff.own = v;
            }
        }
        let Some(now) = eff.value().map(digest) else {
            continue;
        };
        if now != reported {
            let seen = Instant::now();
            tokio::time::sleep(delay).await;
            client
                .put(status_key.clone(), status_value(&id, &now), None)
                .await
                .unwrap();
            reported = now;
            let _ = reports.send((id.clone(), reported.clone(), seen.elapsed()));
        }
    }
}

/// The newest rollout record.
async fn newest_record(client: &mut Client) -> serde_json::Value {
    let r = client
        .get(
            format!("{PREFIX}/rollouts/revisions/"),
            Some(GetOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    let kv = r.kvs().last().expect("no rollout record in etcd");
    serde_json::from_slice(kv.value()).unwrap()
}

/// Keys written under PREFIX between `from` (exclusive) and `to`
/// (inclusive), by class: (manifests/hosts, manifests/all, rollouts, status).
async fn writes(args: &EtcdArgs, from: i64, to: i64) -> (u64, u64, u64, u64) {
    let mut client = args.connect().await.unwrap();
    let mut stream = client
        .watch(
            format!("{PREFIX}/"),
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(from + 1),
            ),
        )
        .await
        .unwrap();
    let (mut hosts, mut all, mut rollouts, mut status) = (0, 0, 0, 0);
    let mut last = from;
    while last < to {
        let m = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .expect("the history watch stalled")
            .unwrap()
            .expect("the history watch ended");
        for ev in m.events() {
            let Some(kv) = ev.kv() else { continue };
            last = last.max(kv.mod_revision());
            if kv.mod_revision() > to {
                continue;
            }
            let key = String::from_utf8_lossy(kv.key());
            let rest = key.strip_prefix(PREFIX).unwrap_or(&key);
            if rest.starts_with("/manifests/hosts/") {
                hosts += 1;
            } else if rest.starts_with("/manifests/all/") {
                all += 1;
            } else if rest.starts_with("/rollouts/") {
                rollouts += 1;
            } else if rest.starts_with("/status/") {
                status += 1;
            }
        }
    }
    (hosts, all, rollouts, status)
}

async fn revision(client: &mut Client) -> i64 {
    let r = client.get("/probe", None).await.unwrap();
    r.header().map(|h| h.revision()).unwrap_or(0)
}

struct Run {
    wall: Duration,
    floor: Duration,
    waves: usize,
    slowest: Vec<Duration>,
    writes: (u64, u64, u64, u64),
}

/// One `unitlet fleet rollout DIR --all` of version `arg`, judged.
async fn rollout(
    cluster: &EtcdCluster,
    args: &EtcdArgs,
    dir: &Path,
    arg: &str,
    stable: Duration,
    reports: &mut mpsc::UnboundedReceiver<Report>,
) -> Run {
    let value = manifest(arg);
    let want = digest(value.as_bytes());
    std::fs::write(dir.join(format!("{NAME}.yaml")), &value).unwrap();
    let mut admin = args.connect().await.unwrap();
    let rev0 = revision(&mut admin).await;
    let stable_s = format!("{}s", stable.as_secs());
    let bin = env!("CARGO_BIN_EXE_unitlet").to_string();
    let cmd_args: Vec<String> = [
        "fleet",
        "rollout",
        dir.to_str().unwrap(),
        "--all",
        "--stable",
        &stable_s,
        "--etcd-endpoints",
        &cluster.endpoints(),
        "--etcd-prefix",
        PREFIX,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let t0 = Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut child = std::process::Command::new(bin)
            .args(&cmd_args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // With FLEET_ROLLOUT_TRACE set, each line of the command's output
        // with the time it arrived: where the time over the floor goes.
        let trace = std::env::var_os("FLEET_ROLLOUT_TRACE").is_some();
        let mut stdout = Vec::new();
        for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
            let line = line.unwrap();
            if trace {
                eprintln!("{:>8.3}s {line}", t0.elapsed().as_secs_f64());
            }
            stdout.extend_from_slice(line.as_bytes());
            stdout.push(b'\n');
        }
        let mut out = child.wait_with_output().unwrap();
        out.stdout = stdout;
        out
    })
    .await
    .unwrap();
    let wall = t0.elapsed();
    assert!(
        out.status.success(),
        "fleet rollout failed ({:?}): {}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let rev1 = revision(&mut admin).await;
    let mut took: BTreeMap<String, Duration> = BTreeMap::new();
    while let Ok((h, d, t)) = reports.try_recv() {
        if d == want {
            took.insert(h, t);
        }
    }
    let record = newest_record(&mut admin).await;
    let waves: Vec<Vec<String>> = serde_json::from_value(record["waves"].clone()).unwrap();
    let slowest: Vec<Duration> = waves
        .iter()
        .map(|w| {
            w.iter()
                .map(|h| {
                    *took
                        .get(h)
                        .unwrap_or_else(|| panic!("{h} never reported {arg}"))
                })
                .max()
                .unwrap_or_default()
        })
        .collect();
    let floor = slowest.iter().map(|s| *s + stable).sum();
    Run {
        wall,
        floor,
        waves: waves.len(),
        slowest,
        writes: writes(args, rev0, rev1).await,
    }
}

async fn scenario(n: usize) -> Vec<(Duration, Run)> {
    let cluster = EtcdCluster::start_with(3, false);
    let args = etcd_args(&cluster);
    let mut admin = args.connect().await.unwrap();
    admin
        .put(
            format!("{PREFIX}/manifests/all/{NAME}"),
            manifest("v0"),
            None,
        )
        .await
        .unwrap();
    let (ready_tx, mut ready_rx) = mpsc::channel(n);
    let (report_tx, mut report_rx) = mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for i in 0..n {
        let delay = Duration::from_millis(200 + rand::random::<u64>() % 601);
        tasks.push(tokio::spawn(host(
            args.clone(),
            format!("host-{i:05}"),
            delay,
            ready_tx.clone(),
            report_tx.clone(),
        )));
        if i % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    drop(ready_tx);
    for k in 0..n {
        tokio::time::timeout(Duration::from_secs(180), ready_rx.recv())
            .await
            .unwrap_or_else(|_| panic!("only {k} of {n} hosts started within 180 s"))
            .expect("a simulated host failed");
    }
    let dir = tempfile::tempdir().unwrap();
    let mut runs = Vec::new();
    for (arg, stable) in [("v1", 0), ("v2", 5)] {
        let stable = Duration::from_secs(stable);
        runs.push((
            stable,
            rollout(&cluster, &args, dir.path(), arg, stable, &mut report_rx).await,
        ));
    }
    for t in &tasks {
        t.abort();
    }
    drop(cluster);
    runs
}

fn main() {
    let sizes = env_sizes("FLEET_SIZES", "100,500,1000");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "| N | --stable | waves | rollout (s) | floor (s) | rollout / floor | slowest report per wave (ms) | keys written per host: hosts/ + all/ + rollouts/ | host status writes |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for &n in &sizes {
        for (stable, r) in rt.block_on(scenario(n)) {
            let (h, a, ro, st) = r.writes;
            let slowest: Vec<String> = r
                .slowest
                .iter()
                .map(|d| d.as_millis().to_string())
                .collect();
            println!(
                "| {n} | {}s | {} | {:.2} | {:.2} | {:.2}× | {} | {:.2} ({h} + {a} + {ro}) | {st} |",
                stable.as_secs(),
                r.waves,
                r.wall.as_secs_f64(),
                r.floor.as_secs_f64(),
                r.wall.as_secs_f64() / r.floor.as_secs_f64(),
                slowest.join(", "),
                (h + a + ro) as f64 / n as f64,
            );
        }
    }
}
