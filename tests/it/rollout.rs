//! Issue 12 acceptance 1–3: health-gated rollouts with automatic rollback,
//! revision history and undo, against a private real user manager.

use std::time::{Duration, Instant};

use crate::reload::free_port;
use crate::support::{UserManager, stderr, stdout, wait_for};

const T: Duration = Duration::from_secs(30);

fn web(command: &str, extra: &str) -> String {
    format!(
        "apiVersion: unitlet/v1\nkind: Service\nmetadata: {{name: web}}\nspec:\n  command: {command}\n{extra}"
    )
}

pub fn history(um: &UserManager) -> serde_json::Value {
    let o = um.unitlet(&["rollout", "history", "web", "-o", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_str(&stdout(&o)).unwrap()
}

/// Wait until `web`'s history is exactly revision 1, Complete.
pub fn wait_first_revision_complete(um: &UserManager) {
    wait_for(T, "revision 1 complete", || {
        (states(&history(um)) == [(1, "Complete".to_string())]).then_some(())
    });
}

pub fn states(h: &serde_json::Value) -> Vec<(u64, String)> {
    h["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["revision"].as_u64().unwrap(),
                r["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn unit_file(um: &UserManager) -> String {
    std::fs::read_to_string(um.unit_dir.join("web.service")).unwrap_or_default()
}

fn reconciled_at(um: &UserManager) -> Option<String> {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(um.state_dir.join("status.json")).ok()?).ok()?;
    v["reconciledAt"].as_str().map(str::to_string)
}

#[test]
fn a_revision_that_exits_at_start_is_rolled_back_and_not_retried_until_fixed() {
    let um = UserManager::start();
    let rollout = "  rollout: {timeout: 20s}\n";
    um.write_manifest("web.yaml", &web("[/bin/sleep, \"100000\"]", rollout));
    let _run = um.spawn_run(&["--resync", "2s"]);
    wait_first_revision_complete(&um);
    let good = unit_file(&um);
    assert!(good.contains("/bin/sleep"), "{good}");

    um.write_manifest("web.yaml", &web("[/bin/sh, -c, \"exit 1\"]", rollout));
    let changed = Instant::now();
    let (_, _, msg) = wait_for(Duration::from_secs(25), "rolled back to revision 1", || {
        um.ready("web")
            .filter(|r| r.0 == "False" && r.1 == "RolledBack")
            .filter(|_| unit_file(&um) == good && um.active("web.service") == "active")
    });
    assert!(
        changed.elapsed() < Duration::from_secs(25),
        "rollback took {:?}",
        changed.elapsed()
    );
    assert!(msg.starts_with("revision 2 ("), "{msg}");
    assert!(
        msg.contains("restarted it") || msg.contains("exited with status 1"),
        "{msg}"
    );
    assert!(msg.contains("rolled back to revision 1"), "{msg}");
    assert_eq!(
        states(&history(&um)),
        [(1, "Complete".to_string()), (2, "Failed".to_string())]
    );
    let table = stdout(&um.unitlet(&["rollout", "history", "web"]));
    assert!(table.contains("rolled back"), "{table}");
    assert!(um.prop("web.service", "ExecStart").contains("/bin/sleep"));

    // Not retried: for 60 s of passes (the operator resyncs every 2 s) the
    // good revision stays, running the same process.
    let pid = um.prop("web.service", "MainPID");
    let since = |um: &UserManager| {
        um.get_json()
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == "web")
            .and_then(|o| {
                o["conditions"]
                    .as_array()?
                    .iter()
                    .find(|c| c["type"] == "Ready")
                    .map(|c| c["lastTransitionTime"].clone())
            })
    };
    let transition = since(&um);
    let mut passes = std::collections::BTreeSet::new();
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(60) {
        assert_eq!(unit_file(&um), good, "the failed revision was retried");
        assert_eq!(um.prop("web.service", "MainPID"), pid);
        assert_eq!(since(&um), transition, "Ready's transition time moved");
        if let Some(t) = reconciled_at(&um) {
            passes.insert(t);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // An unchanged status is written every 10 s (the heartbeat).
    assert!(passes.len() >= 5, "only {} status writes", passes.len());
    assert_eq!(states(&history(&um)).len(), 2);

    // Fixing the manifest rolls out a new revision.
    um.write_manifest("web.yaml", &web("[/bin/sleep, \"200000\"]", rollout));
    wait_for(T, "revision 3 complete and Ready", || {
        (states(&history(&um)).last() == Some(&(3, "Complete".to_string())))
            .then(|| um.ready("web"))
            .flatten()
            .filter(|r| r.0 == "True" && r.1 == "Running")
    });
    assert!(unit_file(&um).contains("200000"));
    assert!(history(&um)["pin"].is_null());
}

#[test]
fn a_revision_whose_readiness_never_answers_is_rolled_back_after_the_timeout() {
    let um = UserManager::start();
    let (a, b) = (free_port(), free_port());
    let serve =
        |port: u16| format!("[/usr/bin/python3, -m, http.server, \"{port}\", --bind, 127.0.0.1]");
    let extra = format!(
        "  readiness: {{http: {{url: \"http://127.0.0.1:{a}/\"}}, timeout: 20s}}\n  rollout: {{timeout: 6s}}\n"
    );
    um.write_manifest("web.yaml", &web(&serve(a), &extra));
    let _run = um.spawn_run(&[]);
    wait_first_revision_complete(&um);
    let good = unit_file(&um);
    // Serves on another port: active, but its readiness URL never answers.
    um.write_manifest("web.yaml", &web(&serve(b), &extra));
    let changed = Instant::now();
    let (_, _, msg) = wait_for(Duration::from_secs(20), "rolled back", || {
        um.ready("web")
            .filter(|r| r.0 == "False" && r.1 == "RolledBack")
            .filter(|_| unit_file(&um) == good && um.active("web.service") == "active")
    });
    let took = changed.elapsed();
    assert!(
        took >= Duration::from_secs(6),
        "rolled back after {took:?}, before the timeout"
    );
    assert!(msg.contains("within rollout.timeout 6s"), "{msg}");
    assert!(msg.contains("not ready"), "{msg}");
    assert_eq!(
        states(&history(&um)),
        [(1, "Complete".to_string()), (2, "Failed".to_string())]
    );
    // The good revision serves again.
    wait_for(T, "revision 1 answers", || {
        crate::reload::http_get(&format!("http://127.0.0.1:{a}/")).filter(|(c, _)| *c == 200)
    });
}

#[test]
fn rollout_undo_puts_the_previous_revision_back_and_keeps_it() {
    let um = UserManager::start();
    um.write_manifest("web.yaml", &web("[/bin/sleep, \"100000\"]", ""));
    let _run = um.spawn_run(&["--resync", "2s"]);
    wait_first_revision_complete(&um);
    um.write_manifest("web.yaml", &web("[/bin/sleep, \"200000\"]", ""));
    wait_for(T, "revision 2 complete", || {
        (states(&history(&um)).last() == Some(&(2, "Complete".to_string()))).then_some(())
    });
    let rev1 = history(&um)["revisions"][0]["unit"]
        .as_str()
        .unwrap()
        .to_string();
    let pid = um.prop("web.service", "MainPID");
    let o = um.unitlet(&["rollout", "undo", "web"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("revision 1 is in force"),
        "{}",
        stdout(&o)
    );
    assert_eq!(unit_file(&um), rev1);
    let new_pid = um.prop("web.service", "MainPID");
    assert_ne!(new_pid, pid);
    assert_ne!(new_pid, "0");
    assert!(um.prop("web.service", "ExecStart").contains("100000"));
    let (st, _, msg) = wait_for(T, "get says pinned", || {
        um.ready("web").filter(|r| r.1 == "Pinned")
    });
    assert_eq!(st, "True");
    assert!(msg.contains("pinned to revision 1"), "{msg}");
    // The operator does not put the manifest's revision back.
    let before = reconciled_at(&um);
    wait_for(T, "two more passes", || {
        let now = reconciled_at(&um);
        (now != before).then_some(())
    });
    let mid = reconciled_at(&um);
    wait_for(T, "another pass", || {
        (reconciled_at(&um) != mid).then_some(())
    });
    assert_eq!(unit_file(&um), rev1);
    assert_eq!(um.prop("web.service", "MainPID"), new_pid);
    // A chosen revision.
    let o = um.unitlet(&["rollout", "undo", "web", "--to-revision", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(um.prop("web.service", "ExecStart").contains("200000"));
    let o = um.unitlet(&["rollout", "undo", "web", "--to-revision", "7"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no revision 7"), "{}", stderr(&o));
}

#[test]
fn a_revision_whose_program_is_missing_is_rolled_back() {
    let um = UserManager::start();
    um.write_manifest("web.yaml", &web("[/bin/sleep, \"100000\"]", ""));
    let _run = um.spawn_run(&[]);
    wait_first_revision_complete(&um);
    let good = unit_file(&um);
    um.write_manifest("web.yaml", &web("[/nonexistent/web-v2]", ""));
    let (_, _, msg) = wait_for(T, "rolled back", || {
        um.ready("web")
            .filter(|r| r.1 == "RolledBack")
            .filter(|_| unit_file(&um) == good && um.active("web.service") == "active")
    });
    assert!(msg.starts_with("revision 2 ("), "{msg}");
    assert_eq!(
        states(&history(&um)),
        [(1, "Complete".to_string()), (2, "Failed".to_string())]
    );
}

#[test]
fn apply_rolls_back_a_failed_revision_and_says_so() {
    let um = UserManager::start();
    um.write_manifest("web.yaml", &web("[/bin/sleep, \"100000\"]", ""));
    let o = um.unitlet(&["apply"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(states(&history(&um)), [(1, "Complete".to_string())]);
    let good = unit_file(&um);
    um.write_manifest("web.yaml", &web("[/bin/sh, -c, \"exit 1\"]", ""));
    let o = um.unitlet(&["apply"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    // Under load the bad restart's job itself may fail (the program exits
    // before systemd finishes the job): then apply reports that failure
    // rather than the RolledBack condition; either way it is rolled back.
    let err = stderr(&o);
    assert!(
        (err.contains("not ready: web: revision 2 (") && err.contains("(RolledBack)"))
            || err.contains("failed: web: restart of web.service failed"),
        "{err}"
    );
    let (st, reason, msg) = um.ready("web").unwrap();
    assert_eq!(
        (st.as_str(), reason.as_str()),
        ("False", "RolledBack"),
        "{msg}"
    );
    assert!(msg.starts_with("revision 2 ("), "{msg}");
    assert_eq!(unit_file(&um), good);
    assert_eq!(um.active("web.service"), "active");
    assert_eq!(
        states(&history(&um)),
        [(1, "Complete".to_string()), (2, "Failed".to_string())]
    );
    // Nothing to do until the manifest changes: the plan keeps revision 1.
    let o = um.unitlet(&["plan"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
}

#[test]
fn a_revision_changed_again_while_progressing_is_superseded_and_the_newest_judged() {
    let um = UserManager::start();
    um.write_manifest("web.yaml", &web("[/bin/sleep, \"100000\"]", ""));
    let _run = um.spawn_run(&[]);
    wait_first_revision_complete(&um);
    um.write_manifest("web.yaml", &web("[/bin/sleep, \"200000\"]", ""));
    // Revision 2 is being watched (it needs 2 s of being up) when the
    // manifest changes again.
    wait_for(T, "revision 2 progressing", || {
        (states(&history(&um)).last() == Some(&(2, "Progressing".to_string()))).then_some(())
    });
    um.write_manifest("web.yaml", &web("[/bin/sleep, \"300000\"]", ""));
    wait_for(T, "revision 3 complete", || {
        (states(&history(&um)).last() == Some(&(3, "Complete".to_string()))).then_some(())
    });
    assert_eq!(
        states(&history(&um)),
        [
            (1, "Complete".to_string()),
            (2, "Superseded".to_string()),
            (3, "Complete".to_string())
        ]
    );
    assert!(um.prop("web.service", "ExecStart").contains("300000"));
}

// ---------------------------------------------------------------------------
// Issue 21 items 1–3: limits, RolledBack and undo, as a new user hit them.

/// A Python web server on `port`, its readiness URL, and `extra`.
fn server(port: u16, program: &str, extra: &str) -> String {
    web(
        &format!("[{program}, -m, http.server, \"{port}\", --bind, 127.0.0.1]"),
        &format!(
            "  readiness: {{http: {{url: \"http://127.0.0.1:{port}/\"}}, timeout: 20s}}\n  rollout: {{timeout: 20s}}\n{extra}"
        ),
    )
}

const LIMITS: &str = "  resources: {memoryMax: 100M, cpuQuota: 20%}\n";

/// The condition `type` of `name` in `get -o json`: (status, reason).
fn condition(um: &UserManager, name: &str, type_: &str) -> Option<(String, String)> {
    let v = um.get_json();
    let c = v.as_array()?.iter().find(|o| o["name"] == name)?["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)?
        .clone();
    Some((
        c["status"].as_str()?.to_string(),
        c["reason"].as_str()?.to_string(),
    ))
}

/// Issue 21 item 1's sequence up to the rollback: a server, then limits
/// (no new revision), then a command whose program does not exist,
/// rolled back. Returns the port.
fn limits_then_a_missing_program_rolled_back(um: &UserManager) -> u16 {
    let port = free_port();
    um.write_manifest("web.yaml", &server(port, "/usr/bin/python3", ""));
    wait_first_revision_complete(um);
    um.wait_ready("web", "True", T);
    um.write_manifest("web.yaml", &server(port, "/usr/bin/python3", LIMITS));
    um.wait_prop("web.service", "MemoryMax", "104857600", T);
    assert_eq!(
        states(&history(um)),
        [(1, "Complete".to_string())],
        "a limits-only change is not a revision"
    );
    um.write_manifest("web.yaml", &server(port, "/usr/bin/pyhton3", LIMITS));
    wait_for(T, "rolled back to revision 1", || {
        um.ready("web")
            .filter(|r| r.1 == "RolledBack")
            .filter(|_| um.active("web.service") == "active")
            .filter(|_| um.prop("web.service", "ExecStart").contains("python3"))
    });
    port
}

#[test]
fn issue21_1_an_automatic_rollback_keeps_the_manifests_limits() {
    let um = UserManager::start();
    let _run = um.spawn_run(&["--resync", "2s"]);
    limits_then_a_missing_program_rolled_back(&um);
    assert_eq!(
        states(&history(&um)),
        [(1, "Complete".to_string()), (2, "Failed".to_string())]
    );
    // The rolled-back revision runs with the manifest's limits.
    assert_eq!(um.prop("web.service", "MemoryMax"), "104857600");
    assert_eq!(um.prop("web.service", "CPUQuotaPerSecUSec"), "200ms");
    let file = unit_file(&um);
    assert!(file.contains("MemoryMax=104857600"), "{file}");
    assert!(!file.contains("pyhton3"), "{file}");
    let wide = stdout(&um.unitlet(&["get", "-o", "wide"]));
    let row = wide.lines().find(|l| l.starts_with("web ")).unwrap();
    assert!(row.contains("/100M"), "{wide}");
    assert!(!row.contains('∞'), "{wide}");
    // What describe and plan say agrees with the live values.
    assert_eq!(
        condition(&um, "web", "LimitsEnforced").map(|c| c.0),
        Some("True".to_string())
    );
    let o = um.unitlet(&["describe", "web"]);
    assert!(stdout(&o).contains("LimitsEnforced"), "{}", stdout(&o));
    let o = um.unitlet(&["plan"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
}

#[test]
fn issue21_2_fixing_the_manifest_clears_rolled_back_without_a_restart() {
    let um = UserManager::start();
    let run = um.spawn_run(&["--resync", "2s"]);
    let port = limits_then_a_missing_program_rolled_back(&um);
    let pid = um.prop("web.service", "MainPID");
    // The command fixed back (limits kept): what runs is now exactly what
    // the manifest says, so nothing restarts, and RolledBack ends.
    um.write_manifest("web.yaml", &server(port, "/usr/bin/python3", LIMITS));
    let (_, _, msg) = um.wait_ready_where("web", "True Running", T, |r| {
        r.0 == "True" && r.1 == "Running"
    });
    assert!(!msg.contains("revision"), "{msg}");
    assert_eq!(um.prop("web.service", "MainPID"), pid, "no restart needed");
    let h = history(&um);
    assert!(h["pin"].is_null(), "{h:#}");
    let table = stdout(&um.unitlet(&["rollout", "history", "web"]));
    assert!(!table.contains("rolled back"), "{table}");
    assert!(
        table.contains("in force: the manifest's revision"),
        "{table}"
    );
    // The in-force revision is the manifest's, not the failed one.
    let in_force = table
        .lines()
        .find(|l| l.contains('*') && !l.starts_with('*'));
    assert!(in_force.is_some_and(|l| !l.contains("Failed")), "{table}");
    run.settle(T);
    assert_eq!(um.ready("web").map(|r| r.1), Some("Running".to_string()));
    let o = um.unitlet(&["apply"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(um.ready("web").map(|r| r.1), Some("Running".to_string()));
    assert_eq!(um.prop("web.service", "MemoryMax"), "104857600");

    // A limits-only change after another rollback clears it too: the
    // changed manifest is a new desired state, tried again (and, still
    // failing, rolled back again, limits in force).
    um.write_manifest("web.yaml", &server(port, "/usr/bin/pyhton3", LIMITS));
    um.wait_reason("web", "RolledBack", T);
    let failed = states(&history(&um)).len();
    let more = "  resources: {memoryMax: 120M, cpuQuota: 20%}\n";
    um.write_manifest("web.yaml", &server(port, "/usr/bin/pyhton3", more));
    wait_for(T, "the new manifest tried and rolled back", || {
        (states(&history(&um)).len() > failed)
            .then(|| um.ready("web"))
            .flatten()
            .filter(|r| r.1 == "RolledBack")
            .filter(|_| um.prop("web.service", "MemoryMax") == "125829120")
    });
}

#[test]
fn issue21_3_undo_never_picks_a_failed_revision_and_undo_to_the_manifests_is_no_pin() {
    let um = UserManager::start();
    let run = um.spawn_run(&["--resync", "2s"]);
    let port = free_port();
    um.write_manifest("web.yaml", &server(port, "/usr/bin/python3", ""));
    wait_first_revision_complete(&um);
    // Revision 2: a typo, rolled back. Revision 3: fixed by an edit that
    // restarts (a working directory), Complete.
    um.write_manifest("web.yaml", &server(port, "/usr/bin/pyhton3", ""));
    um.wait_reason("web", "RolledBack", T);
    let fixed = "  workingDirectory: /tmp\n";
    um.write_manifest("web.yaml", &server(port, "/usr/bin/python3", fixed));
    wait_for(T, "revision 3 complete", || {
        (states(&history(&um))
            == [
                (1, "Complete".to_string()),
                (2, "Failed".to_string()),
                (3, "Complete".to_string()),
            ])
        .then_some(())
    });
    um.wait_reason("web", "Running", T);

    // Undo goes back to the newest healthy revision before 3: 1, not 2.
    let o = um.unitlet(&["rollout", "undo", "web"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("revision 1 is in force"),
        "{}",
        stdout(&o)
    );
    assert!(um.prop("web.service", "ExecStart").contains("python3"));
    assert!(!unit_file(&um).contains("WorkingDirectory"));
    let (st, _, msg) = um.wait_reason("web", "Pinned", T);
    assert_eq!(st, "True", "{msg}");
    assert!(msg.contains("pinned to revision 1"), "{msg}");

    // Undo to revision 3, the manifest's own: no pin; Ready, not Starting.
    let o = um.unitlet(&["rollout", "undo", "web", "--to-revision", "3"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("manifest"), "{}", stdout(&o));
    assert!(unit_file(&um).contains("WorkingDirectory=/tmp"));
    assert!(history(&um)["pin"].is_null());
    let (st, reason, msg) = um.ready("web").unwrap();
    assert_eq!((st.as_str(), reason.as_str()), ("True", "Running"), "{msg}");
    run.settle(T);
    let (st, reason, msg) = um.ready("web").unwrap();
    assert_eq!((st.as_str(), reason.as_str()), ("True", "Running"), "{msg}");
    let table = stdout(&um.unitlet(&["rollout", "history", "web"]));
    assert!(
        table.contains("in force: the manifest's revision"),
        "{table}"
    );
    assert!(table.lines().any(|l| l.starts_with("3*")), "{table}");
}

/// A readiness URL the test answers: 200 while `ok` is set, 503 otherwise.
fn switchable_ready_server(ok: std::sync::Arc<std::sync::atomic::AtomicBool>) -> u16 {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
            let _ = s.read(&mut buf);
            let status = if ok.load(std::sync::atomic::Ordering::SeqCst) {
                "200 OK"
            } else {
                "503 Service Unavailable"
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    port
}

/// PID of the private manager's bus daemon (`dbus.service`), asked over
/// systemd's private socket, not the bus.
fn bus_daemon_pid(um: &UserManager) -> i32 {
    let o = um.systemctl(&["show", "-p", "MainPID", "--value", "dbus.service"]);
    stdout(&o).trim().parse().unwrap_or(0)
}

/// Kill the bus daemon by PID; returns the PID killed.
fn kill_bus(um: &UserManager) -> i32 {
    let pid = wait_for(T, "the bus daemon's PID", || {
        Some(bus_daemon_pid(um)).filter(|p| *p > 0)
    });
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    pid
}

/// Events in status.json whose reason is one of `reasons`.
pub fn events_with(um: &UserManager, reasons: &[&str]) -> Vec<String> {
    let Ok(bytes) = std::fs::read(um.state_dir.join("status.json")) else {
        return Vec::new();
    };
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    v["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| reasons.iter().any(|r| e["reason"] == *r))
        .map(|e| e.to_string())
        .collect()
}

const JUDGED: [&str; 5] = [
    "StartFailed",
    "RestartFailed",
    "ApplyFailed",
    "RolledBack",
    "RolloutFailed",
];

/// Issue 20, item 1: the bus daemon is killed while a new revision is in
/// its rollout window (waiting for its readiness URL): nothing is rolled
/// back or failed, and the revision completes once the bus is back.
#[test]
fn item1_killing_the_bus_in_a_rollout_window_rolls_nothing_back() {
    let um = UserManager::start();
    let ok = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let port = switchable_ready_server(ok.clone());
    let extra = format!(
        "  readiness: {{http: {{url: \"http://127.0.0.1:{port}/\"}}, timeout: 90s}}\n  rollout: {{timeout: 90s}}\n"
    );
    um.write_manifest("web.yaml", &web("[/bin/sleep, \"100000\"]", &extra));
    let run = um.spawn_run(&["--resync", "2s"]);
    wait_first_revision_complete(&um);

    ok.store(false, std::sync::atomic::Ordering::SeqCst);
    um.write_manifest("web.yaml", &web("[/bin/sleep, \"200000\"]", &extra));
    wait_for(T, "revision 2 progressing", || {
        (states(&history(&um)) == [(1, "Complete".into()), (2, "Progressing".into())]).then_some(())
    });
    let killed = kill_bus(&um);
    // The operator reconnects (activating the bus again through its socket).
    wait_for(Duration::from_secs(60), "a new bus daemon", || {
        Some(bus_daemon_pid(&um)).filter(|p| *p > 0 && *p != killed)
    });
    wait_for(T, "the operator connected again", || {
        (run.count_since(0, "connected to the user manager") >= 2).then_some(())
    });
    ok.store(true, std::sync::atomic::Ordering::SeqCst);
    wait_for(Duration::from_secs(60), "revision 2 complete", || {
        (states(&history(&um)) == [(1, "Complete".into()), (2, "Complete".into())]).then_some(())
    });
    assert_eq!(events_with(&um, &JUDGED), Vec::<String>::new());
    assert!(um.prop("web.service", "ExecStart").contains("200000"));
    um.wait_ready("web", "True", T);
}

/// Issue 20, item 1: the bus daemon is killed while a batch of 20 starts
/// is in flight (each start takes 4 s): no start is judged failed, and
/// every Service is Ready once the bus is back.
#[test]
fn item1_killing_the_bus_during_a_start_batch_fails_no_start() {
    let um = UserManager::start();
    let dir = um.runtime.join("slow");
    std::fs::create_dir_all(&dir).unwrap();
    let _run = um.spawn_run(&["--resync", "2s"]);
    for i in 0..20 {
        let unit = dir.join(format!("s{i}.service"));
        std::fs::write(
            &unit,
            "[Service]\nExecStartPre=/bin/sleep 4\nExecStart=/bin/sleep 100000\n",
        )
        .unwrap();
        um.write_manifest(
            &format!("s{i}.yaml"),
            &format!(
                "apiVersion: unitlet/v1\nkind: Service\nmetadata: {{name: s{i}}}\nspec:\n  unitFile: {}\n",
                unit.display()
            ),
        );
    }
    wait_for(T, "the starts in flight", || {
        (0..20)
            .all(|i| um.active(&format!("s{i}.service")) == "activating")
            .then_some(())
    });
    let killed = kill_bus(&um);
    wait_for(Duration::from_secs(60), "a new bus daemon", || {
        Some(bus_daemon_pid(&um)).filter(|p| *p > 0 && *p != killed)
    });
    for i in 0..20 {
        um.wait_ready(&format!("s{i}"), "True", Duration::from_secs(60));
    }
    assert_eq!(events_with(&um, &JUDGED), Vec::<String>::new());
}
