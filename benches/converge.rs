//! Converge benchmarks against a private, real systemd user manager.
//! Numbers go to BENCHMARKS.md. Run: `cargo bench --bench converge`.
//!
//! Measures (each against the same fresh manager type):
//! 1. one new manifest → unit active, with `unitlet run` watching: from the
//!    manifest's rename into place to systemd's `JobRemoved` (`done`);
//!    p50/p95 over 50 runs;
//! 2. 200 manifests dropped at once (renamed into place) → all active with
//!    `unitlet run`, and whether it daemon-reloaded; against the naive way (per unit: write,
//!    daemon-reload, start) and the floor (write all, one daemon-reload, one
//!    start of all 200) in the same run;
//! 3. a no-op pass over 200 converged units: time, writes, daemon-reloads;
//! 4. `unitlet run` with 200 manifests: RSS, and CPU used while idle.

// Test and benchmark code: a panic is how it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/procstat.rs"]
mod procstat;
use procstat::{cpu_ticks, rss_kb};

#[path = "../tests/it/support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use support::{UserManager, service, wait_for};
use zbus_systemd::systemd1::ManagerProxy;

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

/// A connection to the manager for the bench's own listening. It does not
/// `Subscribe`, as `systemctl start` waiting for its jobs does not: systemd
/// sends a job's `JobRemoved` to the client that queued it (unitlet), as a
/// broadcast the bench sees too. A subscriber would make systemd send every
/// change of every unit to the bus, which costs it ~100 ms of CPU per 200
/// starts here: a cost the floor, waiting like `systemctl`, does not pay.
async fn manager(um: &UserManager) -> (zbus::Connection, ManagerProxy<'static>) {
    let addr = format!("unix:path={}/bus", um.runtime.display());
    let conn = zbus::connection::Builder::address(addr.as_str())
        .build()
        .await
        .unwrap();
    let m = ManagerProxy::new(&conn).await.unwrap();
    (conn, m)
}

async fn one_manifest_latency() {
    let um = UserManager::start();
    let run = um.spawn_run(&[]);
    run.wait_log("connected", Duration::from_secs(20));
    let (_c, m) = manager(&um).await;
    let mut removed = m.receive_job_removed().await.unwrap();
    let mut samples = Vec::new();
    for i in 0..50 {
        let name = format!("lat{i:02}");
        let unit = format!("{name}.service");
        let t0 = Instant::now();
        um.write_manifest(&format!("{name}.yaml"), &service(&name, ""));
        let done = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(sig) = removed.next().await {
                let a = sig.args().unwrap();
                if a.unit() == &unit && a.result() == "done" {
                    return t0.elapsed();
                }
            }
            panic!("stream ended")
        })
        .await
        .expect("JobRemoved within 20s");
        samples.push(done.as_secs_f64() * 1000.0);
    }
    let (p50, p95) = (pct(&mut samples.clone(), 0.5), pct(&mut samples, 0.95));
    println!(
        "one manifest -> active (run, JobRemoved done): p50 {p50:.1} ms, p95 {p95:.1} ms over 50 runs"
    );
}

/// A readiness URL that accepts connections and never answers.
fn hanging_server() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().take(500).flatten() {
            held.push(s);
        }
        std::thread::sleep(Duration::from_secs(3600));
    });
    port
}

/// With one Service stuck waiting for its readiness URL, how fast a unit
/// stopped by hand is active again.
async fn heal_beside_a_stuck_service() {
    let um = UserManager::start();
    let hang = hanging_server();
    um.write_manifest("h.yaml", &service("h", ""));
    let run = um.spawn_run(&[]);
    run.wait_log("connected", Duration::from_secs(20));
    wait_for(Duration::from_secs(20), "h active", || {
        (um.active("h.service") == "active").then_some(())
    });
    um.write_manifest(
        "slow.yaml",
        &service(
            "slow",
            &format!("  readiness: {{http: {{url: \"http://127.0.0.1:{hang}/\"}}, timeout: 1h}}\n"),
        ),
    );
    wait_for(Duration::from_secs(20), "slow active", || {
        (um.active("slow.service") == "active").then_some(())
    });
    let (_c, m) = manager(&um).await;
    let names = vec!["h.service".to_string()];
    let mut samples = Vec::new();
    for _ in 0..20 {
        // systemd refuses a sixth start within 10 s (StartLimitBurst=5):
        // reset its counter so the trials measure unitlet, not the limit.
        assert!(
            um.systemctl(&["reset-failed", "h.service"])
                .status
                .success()
        );
        assert!(um.systemctl(&["stop", "h.service"]).status.success());
        let t0 = Instant::now();
        loop {
            let rows = m.list_units_by_names(names.clone()).await.unwrap();
            if rows[0].3 == "active" {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "h not healed in 30s"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        samples.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    let still_waiting = um.ready("slow").map(|r| r.1).unwrap_or_default();
    if std::env::var_os("SHOW_LOG").is_some() {
        println!("samples: {samples:?}\n{}", run.log());
    }
    let (p50, p95) = (pct(&mut samples.clone(), 0.5), pct(&mut samples, 0.95));
    println!(
        "heal beside a Service stuck in readiness (hand stop -> active): p50 {p50:.1} ms, p95 {p95:.1} ms over 20 trials (slow still {still_waiting})"
    );
}

/// The manifests, written before the clock starts into a directory beside
/// the manifest directory (the same file system), as a user prepares them;
/// returns (staged, final) paths and the time writing them took.
fn stage_all(um: &UserManager, n: usize, prefix: &str) -> (Vec<(PathBuf, PathBuf)>, Duration) {
    let staging = um.runtime.join(format!("staging-{prefix}"));
    std::fs::create_dir_all(&staging).unwrap();
    let t0 = Instant::now();
    let moves = (0..n)
        .map(|i| {
            let name = format!("{prefix}{i:03}");
            let file = format!("{name}.yaml");
            std::fs::write(staging.join(&file), service(&name, "")).unwrap();
            (staging.join(&file), um.manifests.join(&file))
        })
        .collect();
    (moves, t0.elapsed())
}

/// Drop the staged manifests into the manifest directory at once (`mv
/// staged/* manifests/`: one rename each).
fn drop_all(moves: &[(PathBuf, PathBuf)]) {
    for (from, to) in moves {
        std::fs::rename(from, to).unwrap();
    }
}

/// 200 manifests dropped at once into the manager the floor just ran in,
/// watched by `unitlet run`: time from the drop until systemd reports
/// every start job `done` (JobRemoved, no polling that would load
/// systemd), and whether it daemon-reloaded. Returns that time, the time
/// the bench took to write the manifests before the drop, and the
/// daemon-reloads.
///
/// The manifests are written before the clock starts and renamed into
/// place, as the floor's unit file contents are ready before its clock
/// starts: in both, the clock times the tool's work from its input to 200
/// active units. (Writing each manifest inside the window counted the
/// cost of creating 200 files twice against the floor's once, and on this
/// machine's ext4 that cost varies 50x from one directory to the next:
/// see BENCHMARKS.md; the total with that writing is printed beside.)
async fn unitlet_200(
    um: &UserManager,
    show_log: bool,
) -> (Duration, Duration, usize, support::RunningOperator) {
    let run = um.spawn_run(&[]);
    run.wait_log("connected", Duration::from_secs(20));
    let (_c, m) = manager(um).await;
    let loaded_before = units_loaded_at(um);
    let mut removed = m.receive_job_removed().await.unwrap();
    let names: std::collections::HashSet<String> =
        (0..200).map(|i| format!("m{i:03}.service")).collect();
    let c0 = show_log.then(|| cpu_of(um, Some(run.child.id())));
    let (moves, writing) = stage_all(um, 200, "m");
    let wall0 = std::time::SystemTime::now();
    let t0 = Instant::now();
    drop_all(&moves);
    let dropped = t0.elapsed();
    let mut done = std::collections::HashSet::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(sig) = removed.next().await {
            let a = sig.args().unwrap();
            if a.result() == "done" && names.contains(a.unit()) {
                done.insert(a.unit().to_string());
                if done.len() == names.len() {
                    return;
                }
            }
        }
    })
    .await
    .expect("200 units active within 60 s");
    let took = t0.elapsed();
    if let Some(c0) = c0 {
        let c1 = cpu_of(um, Some(run.child.id()));
        println!(
            "unitlet cpu ticks: systemd {} dbus {} unitlet {}",
            c1[0] - c0[0],
            c1[1] - c0[1],
            c1[2] - c0[2]
        );
    }
    // Whether systemd (re)loaded its units meanwhile: its
    // `Reloading` signal goes only to subscribers, and nobody subscribes
    // here (see `manager`).
    let reloads = usize::from(units_loaded_at(um) != loaded_before);
    if show_log {
        // On the log's clock (UTC seconds of the minute), to line up with it.
        let at = |d: Duration| {
            let t = (wall0 + d).duration_since(std::time::UNIX_EPOCH).unwrap();
            format!("{}.{:06}", t.as_secs() % 60, t.subsec_micros())
        };
        println!(
            "unitlet round: t0 {} dropped {} done {}",
            at(Duration::ZERO),
            at(dropped),
            at(took)
        );
        println!("{}", run.log());
    }
    (took, writing, reloads, run)
}

/// The floor: write 200 unit files, one daemon-reload, one `systemctl
/// start` of all 200 (which returns when every job is done). Returns the
/// total and the part spent writing.
///
/// It runs in the manager unitlet then runs in, writing to a sibling of
/// unitlet's unit directory on the same search path
/// (`$XDG_CONFIG_HOME/systemd/user`, unitlet's is `$XDG_DATA_HOME/...`, so
/// unitlet never reads the floor's files): the cost of creating a file on
/// ext4 depends on the directory's block group (inodes deleted in the last
/// minutes are skipped one by one when a new one is allocated), and this
/// machine's fresh temporary directories differ by up to 50x (0.015 to 0.8
/// ms a file). Side by side, the floor and unitlet pay about the same price
/// per file.
fn floor_200(um: &UserManager) -> (Duration, Duration) {
    let dir = um.runtime.join("config/systemd/user");
    std::fs::create_dir_all(&dir).unwrap();
    let t0 = Instant::now();
    let mut units = Vec::new();
    for i in 0..200 {
        let n = format!("f{i:03}");
        std::fs::write(dir.join(format!("{n}.service")), unit_content(&n)).unwrap();
        units.push(format!("{n}.service"));
    }
    let written = t0.elapsed();
    assert!(um.systemctl(&["daemon-reload"]).status.success());
    let reloaded = t0.elapsed();
    let mut args = vec!["start"];
    args.extend(units.iter().map(String::as_str));
    assert!(um.systemctl(&args).status.success());
    if std::env::var_os("SHOW_LOG").is_some() {
        println!(
            "floor: written {written:?}, reloaded {reloaded:?}, started {:?}",
            t0.elapsed()
        );
    }
    (t0.elapsed(), written)
}

fn unit_content(n: &str) -> String {
    format!("[Unit]\nDescription={n}\n[Service]\nType=exec\nExecStart=/bin/sleep 100000\n")
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    pct(&mut v, 0.5)
}

/// When the manager last finished loading its units: changes with every
/// daemon-reload.
fn units_loaded_at(um: &UserManager) -> String {
    let o = um.systemctl(&["show", "-p", "UnitsLoadFinishTimestampMonotonic", "--value"]);
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// CPU ticks of the user manager, its bus daemon and `extra`, for SHOW_LOG.
fn cpu_of(um: &UserManager, extra: Option<u32>) -> [u64; 3] {
    let o = um.systemctl(&["show", "-p", "MainPID", "--value", "dbus.service"]);
    let dbus: u32 = String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    [
        cpu_ticks(um.manager_pid()),
        cpu_ticks(dbus),
        extra.map(cpu_ticks).unwrap_or(0),
    ]
}

async fn two_hundred() {
    // unitlet and the floor, alternated, each on a fresh manager.
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let show_log = std::env::var_os("SHOW_LOG").is_some();
    let (mut ours, mut floors, mut reloads) = (vec![], vec![], vec![]);
    let mut with_writing = vec![];
    let mut last = None;
    let mut per_file = vec![];
    // Runtime directories are removed after the last round, not between
    // rounds: ext4 skips inodes deleted in the last minutes one by one when
    // it allocates one, so a round right after a removal of 1000 files
    // would create its files up to 50x slower than the one before it.
    let mut kept = vec![];
    for _ in 0..rounds {
        drop(last.take());
        // The floor first, then unitlet beside its 200 running units (if
        // anything, a handicap for unitlet), in the same directories.
        let mut um = UserManager::start_with_tmpfs_systemd_runtime();
        kept.push(um.keep_files());
        let c0 = cpu_of(&um, None);
        let (floor, written) = floor_200(&um);
        let c1 = cpu_of(&um, None);
        if show_log {
            println!(
                "floor cpu ticks: systemd {} dbus {}",
                c1[0] - c0[0],
                c1[1] - c0[1]
            );
        }
        floors.push(floor.as_secs_f64() * 1000.0);
        per_file.push(written.as_secs_f64() * 1000.0 / 200.0);
        let (took, writing, r, run) = unitlet_200(&um, show_log).await;
        ours.push(took.as_secs_f64() * 1000.0);
        with_writing.push((took + writing).as_secs_f64() * 1000.0);
        reloads.push(r);
        last = Some((um, run));
    }
    let ratios: Vec<f64> = ours.iter().zip(&floors).map(|(u, f)| u / f).collect();
    println!(
        "200 manifests -> all active (unitlet run): median {:.0} ms over {rounds} rounds {:?}; rounds with a daemon-reload {:?} (0 = none)",
        median(&ours),
        ours.iter().map(|v| v.round() as u64).collect::<Vec<_>>(),
        reloads
    );
    println!(
        "floor (write all, 1 daemon-reload, 1 start) in the same rounds and managers: median {:.0} ms {:?}; creating a file there took {:?} ms",
        median(&floors),
        floors.iter().map(|v| v.round() as u64).collect::<Vec<_>>(),
        per_file
            .iter()
            .map(|v| (v * 1000.0).round() / 1000.0)
            .collect::<Vec<_>>()
    );
    println!(
        "unitlet / floor: median of per-round ratios {:.2}x {:?}",
        median(&ratios),
        ratios
            .iter()
            .map(|r| (r * 100.0).round() / 100.0)
            .collect::<Vec<_>>()
    );
    // Counting the writing of the 200 manifests too (the user's part; it
    // pays for creating 200 files, as the floor's writing does).
    let ratios: Vec<f64> = with_writing
        .iter()
        .zip(&floors)
        .map(|(u, f)| u / f)
        .collect();
    println!(
        "writing the manifests + drop -> all active: median {:.0} ms {:?}; / floor: median of per-round ratios {:.2}x {:?}",
        median(&with_writing),
        with_writing
            .iter()
            .map(|v| v.round() as u64)
            .collect::<Vec<_>>(),
        median(&ratios),
        ratios
            .iter()
            .map(|r| (r * 100.0).round() / 100.0)
            .collect::<Vec<_>>()
    );
    let unitlet = Duration::from_secs_f64(median(&ours) / 1000.0);
    let (um, run) = last.expect("at least one round");

    // RSS and idle CPU of `unitlet run` with 200 manifests.
    std::thread::sleep(Duration::from_secs(1));
    let pid = run.child.id();
    let rss = rss_kb(pid);
    let c0 = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(10));
    let c1 = cpu_ticks(pid);
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    println!(
        "unitlet run with 200 manifests: RSS {:.1} MB; CPU while idle {:.2}% of one core over 10 s ({} ticks)",
        rss as f64 / 1024.0,
        (c1 - c0) as f64 / hz / 10.0 * 100.0,
        c1 - c0
    );
    // The no-op pass is measured with no operator beside it.
    drop(run);
    // No-op pass over the 200 converged units, in-process via the library.
    {
        let loc = unitlet::locations::Locations {
            manifests: um.manifests.clone(),
            state_dir: um.state_dir.clone(),
            unit_dir: um.unit_dir.clone(),
            bus: Some(format!("unix:path={}/bus", um.runtime.display())),
            alertmanager: unitlet::manifest::DEFAULT_ALERTMANAGER_URL.into(),
        };
        let sd = unitlet::systemd::Systemd::connect(loc.bus.as_deref())
            .await
            .unwrap();
        let mut rec = unitlet::reconcile::Reconciler::new(
            loc.clone(),
            std::path::PathBuf::from(support::UNITLET),
        );
        let mut status = unitlet::status::Status::load(&loc.status_file());
        let mut times = Vec::new();
        let mut actions = 0;
        let passes: usize = std::env::var("NOOP_PASSES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20);
        for _ in 0..passes {
            let t = Instant::now();
            let prep = rec.prepare(&sd, &status).await.unwrap();
            actions += prep.plan.actions.len();
            let r = rec.apply(&sd, prep, &mut status).await.unwrap();
            actions += r.actions;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let (p50, p95) = (pct(&mut times.clone(), 0.5), pct(&mut times, 0.95));
        println!(
            "no-op pass over 200 converged units: p50 {p50:.1} ms, p95 {p95:.1} ms over {passes} passes; {actions} actions (writes, reloads) in total"
        );
    }

    drop(um);
    for dir in kept {
        let _ = std::fs::remove_dir_all(dir);
    }

    // The naive way: per unit write, daemon-reload, start.
    let um = UserManager::start();
    std::fs::create_dir_all(&um.unit_dir).unwrap();
    let t0 = Instant::now();
    for i in 0..200 {
        let n = format!("n{i:03}");
        std::fs::write(um.unit_dir.join(format!("{n}.service")), unit_content(&n)).unwrap();
        assert!(um.systemctl(&["daemon-reload"]).status.success());
        assert!(
            um.systemctl(&["start", &format!("{n}.service")])
                .status
                .success()
        );
    }
    let naive = t0.elapsed();
    drop(um);
    println!(
        "200 units, naive (write + daemon-reload + start each): {:.0} ms = {:.1}x unitlet's median",
        naive.as_secs_f64() * 1000.0,
        naive.as_secs_f64() / unitlet.as_secs_f64()
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let only = std::env::var("ONLY").unwrap_or_default();
        if only.is_empty() || only == "heal" {
            heal_beside_a_stuck_service().await;
        }
        if only.is_empty() || only == "one" {
            one_manifest_latency().await;
        }
        if only.is_empty() || only == "200" {
            two_hundred().await;
        }
    });
}
