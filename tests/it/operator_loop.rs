//! The operator loop: never blocked by one object, one writer at a time,
//! status that never lies, deleted manifests waited for.

use std::io::Read;
use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::reload::{free_port, http_get};
use crate::support::{UserManager, service, stderr, stdout, wait_for};

const T: Duration = Duration::from_secs(20);

/// A server that accepts connections and never answers: a readiness URL
/// that hangs rather than refuses. Bounded: it stops accepting after 500
/// connections and when the test ends (the thread dies with the process).
fn hanging_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().take(500).flatten() {
            held.push(s);
        }
        // Keep the held connections open until the process ends.
        let mut buf = [0u8; 1];
        for mut s in held {
            let _ = s.read(&mut buf);
        }
    });
    port
}

fn metric(um_metrics: &str, series: &str) -> Option<f64> {
    let (_, body) = http_get(um_metrics)?;
    body.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn ready_of(um: &UserManager, name: &str) -> Option<(String, String)> {
    um.ready(name).map(|(s, r, _)| (s, r))
}

#[test]
fn a_service_stuck_in_readiness_does_not_hold_up_the_others() {
    let um = UserManager::start();
    let hang = hanging_server();
    um.write_manifest("other.yaml", &service("other", ""));
    let mport = free_port();
    let metrics = format!("http://127.0.0.1:{mport}/metrics");
    let run = um.spawn_run(&["--metrics-addr", &format!("127.0.0.1:{mport}")]);
    run.wait_log("connected", T);
    um.wait_ready_where("other", "Ready True Running", T, |r| {
        r.0 == "True" && r.1 == "Running"
    });
    // The 120 s: long enough for the checks below on any machine.
    um.write_manifest(
        "slow.yaml",
        &service(
            "slow",
            &format!(
                "  readiness: {{http: {{url: \"http://127.0.0.1:{hang}/ready\"}}, timeout: 120s}}\n"
            ),
        ),
    );
    wait_for(T, "slow active and waiting for readiness", || {
        (um.active("slow.service") == "active" && ready_of(&um, "slow")?.1 == "Starting")
            .then_some(())
    });
    let waiting_since = Instant::now();

    // Meanwhile a unit stopped by hand comes back...
    assert!(um.systemctl(&["stop", "other.service"]).status.success());
    let t = Instant::now();
    um.wait_active("other.service", Duration::from_secs(2));
    eprintln!("other healed in {:?}", t.elapsed());
    // ...a new manifest is started...
    um.write_manifest("fresh.yaml", &service("fresh", ""));
    let t = Instant::now();
    um.wait_active("fresh.service", Duration::from_secs(2));
    eprintln!("fresh active in {:?}", t.elapsed());
    // ...and /metrics answers, with slow's wait counted in the queue.
    let depth = metric(&metrics, "unitlet_queue_depth").expect("queue depth");
    assert!(depth >= 1.0, "slow's readiness wait is queued: {depth}");
    assert!(
        metric(
            &metrics,
            "unitlet_object_last_reconcile_age_seconds{name=\"other\"}"
        )
        .is_some()
    );
    // All of that happened while slow was still waiting.
    assert_eq!(ready_of(&um, "slow").unwrap().1, "Starting");
    assert!(waiting_since.elapsed() < Duration::from_secs(120));

    // slow ends NotReady after its timeout.
    let (_, reason, msg) = um.wait_reason("slow", "NotReady", Duration::from_secs(160));
    assert_eq!(reason, "NotReady");
    assert!(msg.contains("not ready within 120s"), "{msg}");
    assert_eq!(ready_of(&um, "slow").unwrap().0, "False");
}

#[test]
fn a_limits_only_change_applied_beside_run_never_restarts() {
    let um = UserManager::start();
    let m = |q: u32| service("x", &format!("  resources: {{cpuQuota: {q}%}}\n"));
    um.write_manifest("x.yaml", &m(50));
    // A resync every second keeps passes coming beside the applies.
    let run = um.spawn_run(&["--resync", "1s"]);
    run.wait_log("connected", T);
    um.wait_active("x.service", T);
    let pid = um.prop("x.service", "MainPID");
    for trial in 0..10u32 {
        let q = 51 + trial;
        um.write_manifest("x.yaml", &m(q));
        let o = um.unitlet(&["apply"]);
        assert_eq!(
            o.status.code(),
            Some(0),
            "trial {trial}: {}{}",
            stdout(&o),
            stderr(&o)
        );
        // Progress first: a pass of the operator that began after apply
        // returned, and whatever it started, are over.
        run.settle(T);
        assert_eq!(
            um.prop("x.service", "MainPID"),
            pid,
            "trial {trial}: restarted"
        );
        assert_eq!(um.prop("x.service", "NRestarts"), "0");
        assert_eq!(
            um.prop("x.service", "CPUQuotaPerSecUSec"),
            format!("{}ms", q * 10),
            "trial {trial}"
        );
    }
    assert!(!run.log().contains("did not finish"), "{}", run.log());
}

#[test]
fn two_applies_at_once_start_every_unit_exactly_once() {
    let um = UserManager::start();
    for trial in 0..10 {
        let names: Vec<String> = (0..20).map(|i| format!("t{trial}-u{i}")).collect();
        for n in &names {
            um.write_manifest(&format!("{n}.yaml"), &service(n, ""));
        }
        let spawn = || {
            std::process::Command::new(crate::support::UNITLET)
                .arg("apply")
                .envs(um.envs())
                .output()
        };
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(spawn);
            let b = s.spawn(spawn);
            (a.join().unwrap().unwrap(), b.join().unwrap().unwrap())
        });
        for o in [&a, &b] {
            assert_eq!(
                o.status.code(),
                Some(0),
                "trial {trial}: {}{}",
                stdout(o),
                stderr(o)
            );
        }
        let started: Vec<String> = names
            .iter()
            .map(|n| {
                let u = format!("{n}.service");
                assert_eq!(um.active(&u), "active", "trial {trial}: {u}");
                assert_eq!(um.prop(&u, "NRestarts"), "0", "trial {trial}: {u}");
                um.prop(&u, "ExecMainStartTimestampMonotonic")
            })
            .collect();
        // A third apply finds nothing to do and restarts nothing.
        let o = um.unitlet(&["plan"]);
        assert_eq!(o.status.code(), Some(0), "trial {trial}: {}", stdout(&o));
        let o = um.unitlet(&["apply"]);
        assert_eq!(o.status.code(), Some(0));
        for (n, t) in names.iter().zip(&started) {
            assert_eq!(
                &um.prop(&format!("{n}.service"), "ExecMainStartTimestampMonotonic"),
                t
            );
        }
    }
}

#[test]
fn get_never_shows_a_dead_unit_as_ready() {
    let um = UserManager::start();
    um.write_manifest("x.yaml", &service("x", "  restart: \"no\"\n"));
    um.write_manifest("y.yaml", &service("y", "  restartSec: 1h\n"));
    let o = um.unitlet(&["apply"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        ready_of(&um, "x").unwrap(),
        ("True".into(), "Running".into())
    );
    for u in ["x", "y"] {
        let pid: i32 = um.prop(&format!("{u}.service"), "MainPID").parse().unwrap();
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
    um.wait_state("x.service", "failed", T);
    um.wait_prop("y.service", "SubState", "auto-restart", T);
    let v = um.get_json();
    let get = |n: &str| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == n)
            .unwrap()
            .clone()
    };
    let (x, y) = (get("x"), get("y"));
    let ready = |o: &serde_json::Value| {
        o["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap()
            .clone()
    };
    assert_eq!(ready(&x)["status"], "False", "{x}");
    assert_eq!(ready(&x)["reason"], "Failed");
    assert_eq!(x["unit"]["activeState"], "failed");
    assert_eq!(ready(&y)["status"], "False", "{y}");
    assert_eq!(ready(&y)["reason"], "Restarting");
    for o in [&x, &y] {
        assert_eq!(o["operatorRunning"], false);
        let t = o["lastReconcileTime"].as_str().expect("a reconcile time");
        humantime::parse_rfc3339(t).expect("RFC 3339");
    }
    let table = stdout(&um.unitlet(&["get"]));
    assert!(table.contains("no operator running"), "{table}");
    let d = stdout(&um.unitlet(&["describe", "x"]));
    assert!(d.contains("last reconciled"), "{d}");

    let run = um.spawn_run(&[]);
    run.wait_log("connected", T);
    wait_for(T, "operatorRunning true", || {
        (um.get_json()[0]["operatorRunning"] == true).then_some(())
    });
    let table = stdout(&um.unitlet(&["get"]));
    assert!(table.contains("operator running (PID"), "{table}");
}

#[test]
fn a_manifest_deleted_and_recreated_within_the_grace_keeps_its_service() {
    let um = UserManager::start();
    let text = service("x", "");
    um.write_manifest("x.yaml", &text);
    let run = um.spawn_run(&[]);
    run.wait_log("connected", T);
    um.wait_active("x.service", T);
    let pid = um.prop("x.service", "MainPID");
    // An editor that unlinks, then creates.
    std::fs::remove_file(um.manifests.join("x.yaml")).unwrap();
    run.wait_log("manifest disappeared", T);
    std::fs::write(um.manifests.join("x.yaml"), &text).unwrap();
    run.wait_log("manifest is back", T);
    assert_eq!(um.prop("x.service", "MainPID"), pid);
    assert!(um.unit_dir.join("x.service").exists());

    // Deleted for good: stopped and removed once the grace is over.
    std::fs::remove_file(um.manifests.join("x.yaml")).unwrap();
    wait_for(T, "x removed", || {
        (!um.unit_dir.join("x.service").exists()).then_some(())
    });
    assert_ne!(um.active("x.service"), "active");
}

#[test]
fn apply_waits_out_the_grace_and_rechecks_before_removing() {
    let um = UserManager::start();
    um.write_manifest("x.yaml", &service("x", ""));
    assert!(um.unitlet(&["apply"]).status.success());
    let pid = um.prop("x.service", "MainPID");
    std::fs::remove_file(um.manifests.join("x.yaml")).unwrap();
    let mut child = std::process::Command::new(crate::support::UNITLET)
        .args(["apply", "--gc-grace", "5s"])
        .envs(um.envs())
        .env("UNITLET_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Put it back once apply says it waits; apply sees it on its re-check.
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        let n = std::io::BufRead::read_line(&mut err, &mut line).unwrap();
        assert!(
            n > 0,
            "apply ended without waiting for the deleted manifest"
        );
        if line.contains("manifest disappeared") {
            break;
        }
    }
    um.write_manifest("x.yaml", &service("x", ""));
    let mut rest = String::new();
    let _ = err.read_to_string(&mut rest);
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}{rest}", stdout(&o));
    assert!(rest.contains("manifest is back"), "{rest}");
    assert_eq!(um.prop("x.service", "MainPID"), pid);
}

#[test]
fn a_fifo_or_a_device_as_unit_file_is_refused_and_nothing_hangs() {
    let um = UserManager::start();
    let mport = free_port();
    let metrics = format!("http://127.0.0.1:{mport}/metrics");
    let run = um.spawn_run(&["--metrics-addr", &format!("127.0.0.1:{mport}")]);
    run.wait_log("connected", T);
    let fifo = um.manifests.join("..").join("fifo.service");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let zero = um.manifests.join("..").join("zero.service");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let adopt = |name: &str, path: &std::path::Path| {
        format!(
            "apiVersion: unitlet/v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  unitFile: {}\n",
            path.display()
        )
    };
    let t0 = Instant::now();
    um.write_manifest("fifo.yaml", &adopt("fifo", &fifo));
    um.write_manifest("zero.yaml", &adopt("zero", &zero));
    um.write_manifest("good.yaml", &service("good", ""));
    // The metrics endpoint keeps answering fast while those are read.
    let mut slowest = Duration::ZERO;
    let mut seen = (false, false, false);
    while t0.elapsed() < Duration::from_secs(5) && seen != (true, true, true) {
        let t = Instant::now();
        assert!(metric(&metrics, "unitlet_reconciles_total").is_some());
        slowest = slowest.max(t.elapsed());
        seen.0 |= um.active("good.service") == "active";
        seen.1 |= um
            .ready("fifo")
            .is_some_and(|r| r.0 == "False" && r.1 == "Invalid");
        seen.2 |= um
            .ready("zero")
            .is_some_and(|r| r.0 == "False" && r.1 == "Invalid");
    }
    assert_eq!(
        seen,
        (true, true, true),
        "within 5 s: good active, fifo and zero refused"
    );
    eprintln!("slowest /metrics answer: {slowest:?}");
    assert!(slowest < Duration::from_millis(100), "{slowest:?}");
    let (_, _, m) = um.ready("fifo").unwrap();
    assert!(
        m.contains("fifo.service") && m.contains("not a regular file"),
        "{m}"
    );
    let (_, _, m) = um.ready("zero").unwrap();
    assert!(
        m.contains("zero.service") && m.contains("not a regular file"),
        "{m}"
    );
    let rss: u64 = std::fs::read_to_string(format!("/proc/{}/status", run.child.id()))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap();
    assert!(rss < 50 * 1024, "RSS {rss} kB");
}

/// A pass that fails (here: its status cannot be written) is retried by
/// itself. Before, the loop waited for the next file or unit event, which
/// may be an hour away: a transient error froze status until then.
#[test]
fn a_failed_pass_is_retried_without_waiting_for_an_event() {
    let um = UserManager::start();
    std::fs::create_dir_all(&um.state_dir).unwrap();
    let status = um.state_dir.join("status.json");
    // An immutable status file (`chattr +i`, which binds root too): it
    // reads, but every save, a rename over it, fails.
    std::fs::write(&status, "{}").unwrap();
    let chattr = |flag: &str| {
        let o = Command::new("chattr")
            .arg(flag)
            .arg(&status)
            .output()
            .unwrap();
        assert!(o.status.success(), "chattr {flag}: {}", stderr(&o));
    };
    chattr("+i");
    let run = um.spawn_run(&[]);
    run.wait_log("connected", T);
    run.wait_log("status.json", T);
    // Clear the obstacle. Nothing the operator watches changes, so only
    // its own retry can write the status now.
    chattr("-i");
    wait_for(T, "status.json written", || {
        std::fs::read_to_string(&status)
            .is_ok_and(|s| s.contains("reconciledAt"))
            .then_some(())
    });
    let out = um.unitlet(&["get"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("operator running (PID"),
        "{}",
        stdout(&out)
    );
}

/// A large batch starts with unit signals paused (they would cost systemd
/// ~20 % of the batch): the batch still ends by its own `JobRemoved`
/// signals, and a unit stopped by hand meanwhile is healed by the next
/// pass, at the latest the one the pause's end wakes to look at every
/// unit.
#[test]
fn a_unit_stopped_by_hand_while_a_large_batch_starts_is_healed() {
    let um = UserManager::start();
    um.write_manifest("other.yaml", &service("other", ""));
    let run = um.spawn_run(&[]);
    run.wait_log("connected", T);
    um.wait_active("other.service", T);
    // 20 Services whose start jobs take 3 s (longer than the pause's 1 s
    // cap for 20 starts): an adopted unit file that sleeps before it runs.
    let file = um.runtime.join("slow-start.service");
    std::fs::write(
        &file,
        "[Service]\nType=exec\nExecStartPre=/bin/sleep 3\nExecStart=/bin/sleep 100000\n",
    )
    .unwrap();
    let names: Vec<String> = (0..20).map(|i| format!("b{i:02}")).collect();
    // One file of 20 documents, renamed into place: one event, so one pass
    // starts them as one batch (20 files renamed one by one can be seen by
    // two passes on a loaded machine, neither large enough to pause).
    let docs: Vec<String> = names
        .iter()
        .map(|n| {
            format!(
                "apiVersion: unitlet/v1\nkind: Service\nmetadata:\n  name: {n}\nspec:\n  unitFile: {}\n",
                file.display()
            )
        })
        .collect();
    let staged = um.runtime.join("batch.yaml");
    std::fs::write(&staged, docs.join("---\n")).unwrap();
    std::fs::rename(&staged, um.manifests.join("batch.yaml")).unwrap();
    run.wait_log("unit signals paused", T);
    let batch_started = Instant::now();
    assert!(um.systemctl(&["stop", "other.service"]).status.success());
    // Healed by the next pass: at the latest the one the pause's end (its
    // 1 s cap) wakes.
    um.wait_active("other.service", Duration::from_secs(3));
    eprintln!(
        "other healed {:?} after the pause began",
        batch_started.elapsed()
    );
    run.wait_log("unit signals resumed", T);
    // The batch ends by its JobRemoved signals (not the 90 s job timeout):
    // its enablement links, made once its jobs end, appear within seconds.
    let wants = um.runtime.join("config/systemd/user/default.target.wants");
    wait_for(Duration::from_secs(10), "the batch's links", || {
        names
            .iter()
            .all(|n| wants.join(format!("{n}.service")).is_symlink())
            .then_some(())
    });
    for n in &names {
        let unit = format!("{n}.service");
        assert_eq!(um.active(&unit), "active", "{unit}");
        assert_eq!(um.prop(&unit, "NRestarts"), "0", "{unit} started once");
    }
    eprintln!("batch ended and linked in {:?}", batch_started.elapsed());
}

/// The two things a signal pause relies on, against a real user manager:
/// a job this connection queues still ends with its `JobRemoved` while it
/// is not subscribed, and the pause's end wakes the operator to look at
/// every unit (what changed meanwhile was not signalled).
#[test]
fn a_signal_pause_keeps_our_job_signals_and_its_end_asks_for_a_full_look() {
    use unitlet::systemd::{ALL_UNITS, JobKind, Systemd, UserManager as _};
    let um = UserManager::start();
    std::fs::create_dir_all(&um.unit_dir).unwrap();
    std::fs::write(
        um.unit_dir.join("p.service"),
        "[Service]\nType=exec\nExecStart=/bin/sleep 100000\n",
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let bus = format!("unix:path={}/bus", um.runtime.display());
        let sd = Systemd::connect(Some(&bus)).await.unwrap();
        let mut changes = unitlet::systemd::unit_changes(&sd).await.unwrap();
        sd.subscribe().await.unwrap();
        let pause = sd.pause_unit_signals(Duration::from_secs(60)).await;
        let mut jobs = sd.job_stream().await.unwrap();
        let job = sd.queue("p.service", JobKind::Start).await.unwrap();
        let t = Instant::now();
        let r = jobs.wait(&sd, &[job], Duration::from_secs(20)).await;
        assert!(r[0].is_ok(), "{:?}", r[0]);
        // Well under the wait's deadline: the JobRemoved signal came.
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        assert_eq!(um.active("p.service"), "active");
        drop(pause);
        let woke = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(u) = changes.recv().await {
                if u == ALL_UNITS {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(
            woke,
            Ok(true),
            "the pause's end asks for a look at every unit"
        );
    });
}

/// Issue 20, "also check": a user stops a unit by hand six times within
/// ten seconds; systemd refuses the next start (`StartLimitBurst=5`), which
/// unitlet does not reset. `get` and `describe` say so and when unitlet
/// tries again, and the unit is active again, without a human, once the
/// limit's interval has passed.
#[test]
fn start_limit_hit_is_reported_and_healed_after_its_interval() {
    let um = UserManager::start();
    um.write_manifest("web.yaml", &service("web", "  restartSec: 100ms\n"));
    let _run = um.spawn_run(&[]);
    um.wait_ready("web", "True", T);
    let mut hit = false;
    for _ in 0..8 {
        let pid = um.prop("web.service", "MainPID");
        um.systemctl(&["kill", "-s", "KILL", "web.service"]);
        let state = wait_for(T, "web restarted or refused", || {
            let active = um.active("web.service");
            if active == "failed" {
                return Some("limit".to_string());
            }
            (active == "active" && um.prop("web.service", "MainPID") != pid).then_some(active)
        });
        if state == "limit" {
            hit = true;
            break;
        }
    }
    assert!(hit, "systemd never refused a start");
    let refused = Instant::now();
    // `get -o json` (what `get` reads) and `describe` name the limit and
    // what happens next.
    let (_, reason, msg) = um.wait_ready_where("web", "Ready naming the start limit", T, |r| {
        r.0 == "False" && r.2.contains("start limit was hit")
    });
    assert!(msg.contains("5 starts within 10s"), "{reason}: {msg}");
    assert!(msg.contains("unitlet"), "{reason}: {msg}");
    let d = stdout(&um.unitlet(&["describe", "web"]));
    assert!(d.contains("start limit was hit"), "{d}");
    um.wait_active("web.service", Duration::from_secs(40));
    um.wait_ready("web", "True", T);
    assert!(refused.elapsed() < Duration::from_secs(40));
}

/// Issue 23 item 6: after the passes that start a Service, /metrics has
/// controller-runtime's reconcile counter by result and duration
/// histogram, client-go's work-queue series by kind, and `promtool check
/// metrics` finds nothing to say about any of it.
#[test]
fn controller_metrics_after_a_pass_and_promtool_check_metrics_clean() {
    let um = UserManager::start();
    um.write_manifest("web.yaml", &service("web", ""));
    let mport = free_port();
    let metrics = format!("http://127.0.0.1:{mport}/metrics");
    let run = um.spawn_run(&["--metrics-addr", &format!("127.0.0.1:{mport}")]);
    um.wait_active("web.service", T);
    run.settle(T);
    let (code, body) = http_get(&metrics).expect("/metrics answers");
    assert_eq!(code, 200, "{body}");
    let value = |series: &str| {
        body.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{series} not in /metrics:\n{body}"))
    };
    // The pass that queued web's start job left it for later; the pass
    // after the job's end found everything converged.
    assert!(value("unitlet_reconcile_total{result=\"requeue\"}") >= 1.0);
    assert!(value("unitlet_reconcile_total{result=\"success\"}") >= 1.0);
    assert_eq!(value("unitlet_reconcile_total{result=\"error\"}"), 0.0);
    assert!(value("unitlet_reconcile_duration_seconds_count") >= 2.0);
    assert!(body.contains("unitlet_reconcile_duration_seconds_bucket{le=\"+Inf\"}"));
    // The start job went through the work queue and is done.
    assert!(value("unitlet_workqueue_adds_total{kind=\"jobs\"}") >= 1.0);
    assert!(value("unitlet_workqueue_work_duration_seconds_count{kind=\"jobs\"}") >= 1.0);
    assert!(value("unitlet_workqueue_queue_duration_seconds_count{kind=\"jobs\"}") >= 1.0);
    assert_eq!(value("unitlet_workqueue_depth{kind=\"jobs\"}"), 0.0);
    assert_eq!(value("unitlet_workqueue_retries_total{kind=\"jobs\"}"), 0.0);
    // The families from before are still there.
    assert!(value("unitlet_reconciles_total") >= 2.0);
    assert_eq!(value("unitlet_queue_depth"), 0.0);

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian: apt-get install prometheus)");
    use std::io::Write;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let check = promtool.wait_with_output().unwrap();
    assert!(
        check.status.success() && check.stdout.is_empty() && check.stderr.is_empty(),
        "promtool check metrics: {}{}\n{body}",
        stdout(&check),
        stderr(&check)
    );
}
