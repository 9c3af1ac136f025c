//! Claims of the CHANGELOG (0.1.0 and Unreleased) that no other test
//! proved: each test here quotes the claim it checks.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::{UNITLET, UserManager, service, stderr, stdout, wait_for, wait_seen};

const T: Duration = Duration::from_secs(20);

/// "clean stop on SIGTERM/SIGINT": SIGINT (Ctrl-C in a terminal) stops
/// `unitlet run` with exit status 0, like SIGTERM.
#[test]
fn operator_stops_cleanly_on_sigint() {
    let um = UserManager::start();
    um.write_manifest("x.yaml", &service("x", ""));
    let mut run = um.spawn_run(&[]);
    um.wait_active("x.service", T);
    run.wait_log("connected", T);
    unsafe {
        libc::kill(run.child.id() as i32, libc::SIGINT);
    }
    let st = wait_for(T, "unitlet run to exit on SIGINT", || {
        run.child.try_wait().ok().flatten()
    });
    assert_eq!(
        st.code(),
        Some(0),
        "exit status {st:?}; log:\n{}",
        run.log()
    );
    assert_eq!(
        um.active("x.service"),
        "active",
        "stopping the operator stops no unit"
    );
}

/// "`READY=1`, `STATUS=`, watchdog": `unitlet run` as a `Type=notify` user
/// service with `WatchdogSec=` (as deploy/unitlet.service runs it) becomes
/// active only through READY=1, shows "N ready, M not ready" as its status
/// text, and feeds the watchdog: systemd records fresh keep-alives over
/// several watchdog periods and never restarts it.
#[test]
fn operator_as_a_notify_service_reports_ready_status_and_feeds_the_watchdog() {
    let um = UserManager::start();
    um.write_manifest("x.yaml", &service("x", ""));
    um.write_manifest(
        "broken.yaml",
        &service(
            "broken",
            "  readiness: {http: {url: \"http://127.0.0.1:9/\"}, timeout: 1s}\n",
        ),
    );
    let r = um.runtime.display().to_string();
    // Installed like deploy/install.sh does: into the manager's own config
    // directory, not the directory unitlet manages.
    let dir = um.runtime.join("config/systemd/user");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("unitlet.service"),
        format!(
            "[Unit]\nDescription=unitlet under test\n\n[Service]\nType=notify\nNotifyAccess=main\n\
             ExecStart={UNITLET} run --metrics-addr off --resync 1h\n\
             Environment=DBUS_SESSION_BUS_ADDRESS=unix:path={r}/bus\n\
             Environment=UNITLET_LOG=info\n\
             Restart=on-failure\nRestartSec=100ms\nWatchdogSec=2s\nTimeoutStartSec=30s\n"
        ),
    )
    .unwrap();
    assert!(um.systemctl(&["daemon-reload"]).status.success());
    // `start` of a Type=notify unit returns once READY=1 arrived.
    let o = um.systemctl(&["start", "unitlet.service"]);
    assert!(
        o.status.success(),
        "start: {}; journal is not available, manager log:\n{}",
        stderr(&o),
        std::fs::read_to_string(um.runtime.join("manager.log")).unwrap_or_default()
    );
    assert_eq!(um.active("unitlet.service"), "active");
    assert_eq!(
        um.prop("unitlet.service", "WatchdogUSec"),
        "2s",
        "the watchdog is armed"
    );
    let pid = um.prop("unitlet.service", "MainPID");
    assert_ne!(pid, "0");
    // STATUS= after the pass that converged both Services: x is ready,
    // broken never answers its readiness probe.
    wait_for(T, "StatusText \"1 ready, 1 not ready\"", || {
        (um.prop("unitlet.service", "StatusText") == "1 ready, 1 not ready").then_some(())
    });
    // Watchdog: five distinct keep-alives, the last more than 3 periods
    // (6 s) after the first, with the same main process throughout.
    let stamp = || {
        um.prop("unitlet.service", "WatchdogTimestampMonotonic")
            .parse::<u64>()
            .unwrap_or(0)
    };
    let mut seen: Vec<u64> = Vec::new();
    wait_for(
        Duration::from_secs(30),
        "WatchdogTimestampMonotonic to advance over 3 watchdog periods",
        || {
            assert_eq!(
                um.prop("unitlet.service", "MainPID"),
                pid,
                "unitlet was restarted (watchdog timeout?): {}",
                um.prop("unitlet.service", "Result")
            );
            let s = stamp();
            if s != 0 && seen.last() != Some(&s) {
                seen.push(s);
            }
            (seen.len() >= 5 && seen[seen.len() - 1] - seen[0] > 6_000_000).then_some(())
        },
    );
    assert_eq!(um.active("unitlet.service"), "active");
    assert_eq!(um.prop("unitlet.service", "NRestarts"), "0");
    assert_eq!(um.prop("unitlet.service", "Result"), "success");
    // And it stops cleanly as a unit (SIGTERM from systemd).
    assert!(um.systemctl(&["stop", "unitlet.service"]).status.success());
    assert_eq!(um.prop("unitlet.service", "Result"), "success");
}

/// "`get -o wide` shows live memory (current/max), CPU quota and tasks".
#[test]
fn get_wide_shows_live_memory_cpu_and_tasks_against_limits() {
    let um = UserManager::start();
    um.write_manifest(
        "lim.yaml",
        &service(
            "lim",
            "  resources: {memoryMax: 100M, cpuQuota: 50%, tasksMax: 32}\n",
        ),
    );
    um.write_manifest("free.yaml", &service("free", ""));
    let o = um.unitlet(&["apply"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let o = um.unitlet(&["get", "-o", "wide"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    let col = |h: &str| {
        header
            .iter()
            .position(|c| *c == h)
            .unwrap_or_else(|| panic!("no {h} column in {header:?}\n{out}"))
    };
    let (mem, cpu, tasks) = (col("MEMORY"), col("CPU"), col("TASKS"));
    let row = |name: &str| -> Vec<String> {
        out.lines()
            .map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
            .find(|r| r.first().map(String::as_str) == Some(name))
            .unwrap_or_else(|| panic!("no row for {name}:\n{out}"))
    };
    let lim = row("lim");
    let (cur, max) = lim[mem].split_once('/').expect("MEMORY is current/max");
    assert_eq!(max, "100M", "{out}");
    assert!(
        cur != "-" && cur.chars().next().unwrap().is_ascii_digit(),
        "live memory of a running service: {out}"
    );
    assert_eq!(lim[cpu], "50%", "{out}");
    assert_eq!(lim[tasks], "1/32", "sleep is one task: {out}");
    let free = row("free");
    assert!(free[mem].ends_with("/∞"), "{out}");
    assert_eq!(free[cpu], "∞", "{out}");
}

/// "`NAME.timer` (... `Persistent=true` ...)": a run missed while the timer
/// was not running (its last trigger, systemd's stamp file, is two days old
/// and the schedule is every 6h) is caught up as soon as the timer starts;
/// a timer whose schedule had no point since its (one hour old) last
/// trigger is not run.
#[test]
fn a_missed_backup_run_is_caught_up_when_the_timer_starts() {
    let um = UserManager::start();
    let backup = |name: &str, schedule: &str| {
        format!(
            "apiVersion: unitlet/v1\nkind: Backup\nmetadata:\n  name: {name}\nspec:\n  schedule: \"{schedule}\"\n  \
             prometheus: {{url: \"http://127.0.0.1:9\"}}\n"
        )
    };
    // systemd 252 user managers keep a persistent timer's last trigger as
    // the mtime of $XDG_DATA_HOME/systemd/timers/stamp-NAME.timer and read
    // it when the timer starts (a missing stamp is created as "now").
    let stamps = um.runtime.join("data/systemd/timers");
    std::fs::create_dir_all(&stamps).unwrap();
    let stamp = |name: &str, age: Duration| {
        let stamp = stamps.join(format!("stamp-{name}.timer"));
        std::fs::write(&stamp, "").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&stamp)
            .unwrap()
            .set_modified(std::time::SystemTime::now() - age)
            .unwrap();
    };
    stamp("missed", Duration::from_secs(2 * 24 * 3600));
    // Yearly, at New Year: no point in the last hour (but on January 1st
    // between 00:00 and 01:00, when this control would not hold).
    stamp("fresh", Duration::from_secs(3600));
    um.write_manifest("missed.yaml", &backup("missed", "every 6h"));
    um.write_manifest("fresh.yaml", &backup("fresh", "0 0 1 1 *"));
    let o = um.unitlet(&["apply"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    for t in ["missed.timer", "fresh.timer"] {
        assert_eq!(um.active(t), "active", "{t} started by apply");
        assert_eq!(um.prop(t, "Persistent"), "yes");
    }
    // The catch-up elapses at once plus RandomizedDelaySec=30s at most.
    wait_for(
        Duration::from_secs(60),
        "missed.service to be started by its timer",
        || {
            (um.prop("missed.service", "ExecMainStartTimestampMonotonic") != "0"
                && !um
                    .prop("missed.service", "ExecMainStartTimestampMonotonic")
                    .is_empty())
            .then_some(())
        },
    );
    assert_ne!(
        um.prop("missed.timer", "LastTriggerUSecMonotonic"),
        "0",
        "the run came from the timer"
    );
    // The timer that missed nothing waits for its next calendar point.
    assert_eq!(
        um.prop("fresh.service", "ExecMainStartTimestampMonotonic"),
        "0"
    );
    // `systemctl show --value` prints it as a date: let date(1) parse it.
    let when = um.prop("fresh.timer", "NextElapseUSecRealtime");
    let o = Command::new("date")
        .args(["-d", &when, "+%s"])
        .output()
        .unwrap();
    let next: u64 = stdout(&o)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("NextElapseUSecRealtime {when:?}: {}", stderr(&o)));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        next > now,
        "fresh.timer elapses in the future ({next} vs {now})"
    );
}

fn validate_with(
    dir: &Path,
    config_home: &Path,
    env: Option<&Path>,
    flag: Option<&Path>,
) -> (i32, String) {
    let mut c = Command::new(UNITLET);
    c.env_remove("UNITLET_MANIFESTS")
        .env_remove("UNITLET_STATE_DIR")
        .env_remove("UNITLET_UNIT_DIR")
        .env("XDG_CONFIG_HOME", config_home)
        .current_dir(dir);
    if let Some(e) = env {
        c.env("UNITLET_MANIFESTS", e);
    }
    if let Some(f) = flag {
        c.arg("--manifests").arg(f);
    }
    let o = c.arg("validate").output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        format!("{}{}", stdout(&o), stderr(&o)),
    )
}

/// Precedence of the manifests directory: `--manifests` beats
/// `UNITLET_MANIFESTS`, which beats the default
/// (`$XDG_CONFIG_HOME/unitlet/manifests`).
#[test]
fn manifests_flag_beats_env_and_env_beats_default() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good");
    let bad = tmp.path().join("bad");
    let config = tmp.path().join("config");
    let default = config.join("unitlet/manifests");
    for d in [&good, &bad, &default] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(good.join("a.yaml"), service("a", "")).unwrap();
    let broken = "apiVersion: unitlet/v1\nkind: Service\nmetadata: {name: b}\nspec: {}\n";
    std::fs::write(bad.join("b.yaml"), broken).unwrap();
    std::fs::write(default.join("d.yaml"), broken).unwrap();
    let cwd = tmp.path();
    // Each directory on its own: good is valid, bad and the default are not.
    assert_eq!(validate_with(cwd, &config, None, Some(&good)).0, 0);
    let (code, out) = validate_with(cwd, &config, None, Some(&bad));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("b.yaml"), "{out}");
    let (code, out) = validate_with(cwd, &config, None, None);
    assert_eq!(code, 1, "the default directory is read: {out}");
    assert!(out.contains("d.yaml"), "{out}");
    // Flag over env.
    let (code, out) = validate_with(cwd, &config, Some(&bad), Some(&good));
    assert_eq!(code, 0, "--manifests must beat UNITLET_MANIFESTS: {out}");
    assert!(!out.contains("b.yaml"), "{out}");
    let (code, out) = validate_with(cwd, &config, Some(&good), Some(&bad));
    assert_eq!(code, 1, "--manifests must beat UNITLET_MANIFESTS: {out}");
    // Env over default.
    let (code, out) = validate_with(cwd, &config, Some(&good), None);
    assert_eq!(code, 0, "UNITLET_MANIFESTS must beat the default: {out}");
    assert!(!out.contains("d.yaml"), "{out}");
}

/// `get NAME`, `describe NAME`, `render NAME` and `backups NAME` exit 1 and
/// name the missing object when no manifest has that name.
#[test]
fn unknown_name_exits_1_for_get_describe_render_and_backups() {
    let um = UserManager::start();
    um.write_manifest("x.yaml", &service("x", ""));
    let o = um.unitlet(&["apply"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    for cmd in ["get", "describe", "render", "backups"] {
        let o = um.unitlet(&[cmd, "nosuch"]);
        assert_eq!(
            o.status.code(),
            Some(1),
            "unitlet {cmd} nosuch: {}{}",
            stdout(&o),
            stderr(&o)
        );
        assert!(
            stderr(&o).contains("nosuch"),
            "unitlet {cmd} nosuch must name it: {}",
            stderr(&o)
        );
        // The known name still works (so exit 1 is about the name).
        if cmd != "backups" {
            let o = um.unitlet(&[cmd, "x"]);
            assert_eq!(o.status.code(), Some(0), "unitlet {cmd} x: {}", stderr(&o));
        }
    }
}

// Claims of the Unreleased CHANGELOG without a test elsewhere.

/// "Only one `unitlet run` may operate on a state directory
/// (`STATE_DIR/run.lock`; a second exits 2)."
#[test]
fn a_second_run_on_the_same_state_directory_exits_2() {
    let um = UserManager::start();
    um.write_manifest("x.yaml", &service("x", ""));
    let first = um.spawn_run(&[]);
    first.wait_log("connected", T);
    let mut second = um.spawn_run(&[]);
    let st = wait_for(T, "the second unitlet run to exit", || {
        second.child.try_wait().ok().flatten()
    });
    assert_eq!(st.code(), Some(2), "second run: {}", second.log());
    let why = second.log();
    assert!(
        why.contains(&format!(
            "another `unitlet run` (PID {}) already operates on state directory",
            first.child.id()
        )),
        "the second run names the first: {why}"
    );
    // The first one is undisturbed: still running, x still converged.
    first.next_pass(T);
    assert!(!first.log().contains("stopping"), "{}", first.log());
    assert_eq!(um.active("x.service"), "active");
}

/// "a command that finds it [the state lock] taken says whom it waits
/// for": `apply` waits while another writer holds `STATE_DIR/unitlet.lock`,
/// names it, writes nothing meanwhile, and finishes once it is released.
#[test]
fn apply_waits_for_the_state_lock_and_says_whom_it_waits_for() {
    use std::io::{BufRead, Write};
    use std::os::fd::AsRawFd;
    let um = UserManager::start();
    um.write_manifest("x.yaml", &service("x", ""));
    std::fs::create_dir_all(&um.state_dir).unwrap();
    let mut lock = std::fs::File::options()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(um.state_dir.join("unitlet.lock"))
        .unwrap();
    assert_eq!(
        unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        0
    );
    lock.set_len(0).unwrap();
    write!(lock, "4242 the-test-writer").unwrap();
    let mut child = Command::new(UNITLET)
        .arg("apply")
        .envs(um.envs())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx
        .recv_timeout(T)
        .expect("apply says it waits (within 20 s)");
    assert!(
        line.contains("waiting for the-test-writer (PID 4242)") && line.contains("unitlet.lock")
            || line.contains("waiting for the-test-writer (PID 4242)"),
        "{line}"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "apply must wait for the lock, not give up"
    );
    assert!(
        !um.unit_dir.join("x.service").exists(),
        "nothing is written while another writer holds the lock"
    );
    drop(lock);
    let st = wait_for(T, "apply to finish once the lock is free", || {
        child.try_wait().ok().flatten()
    });
    assert_eq!(st.code(), Some(0));
    assert_eq!(um.active("x.service"), "active");
}

/// "`get` and `describe` correct the last reconcile's `Ready` with the
/// unit's live state: ... an unreachable manager `Unknown`
/// (`ManagerUnreachable`)."
#[test]
fn get_with_the_manager_unreachable_shows_ready_unknown() {
    let um = UserManager::start();
    um.write_manifest("x.yaml", &service("x", ""));
    let o = um.unitlet(&["apply"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(um.ready("x").unwrap().0, "True");
    let o = um.unitlet(&["--bus", "unix:path=/nonexistent/bus", "get", "-o", "json"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let (status, reason, message) = crate::support::ready_in(&v, "x").expect("x listed");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("Unknown", "ManagerUnreachable"),
        "{message}"
    );
    assert!(message.contains("x.service"), "{message}");
    let o = um.unitlet(&["--bus", "unix:path=/nonexistent/bus", "describe", "x"]);
    assert!(stdout(&o).contains("ManagerUnreachable"), "{}", stdout(&o));
}

/// "A SIGTERM that arrives while `unitlet run` starts up stops it
/// cleanly": here it arrives while `run` is still connecting to a bus
/// that accepted the connection but never answers.
#[test]
fn sigterm_while_run_is_still_connecting_stops_it_cleanly() {
    let um = UserManager::start();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("bus");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Hold every connection open, answer nothing.
        let mut held = Vec::new();
        for s in listener.incoming().take(20).flatten() {
            let _ = tx.send(());
            held.push(s);
        }
    });
    let bus = format!("unix:path={}", sock.display());
    let mut run = um.spawn_run(&["--bus", &bus]);
    rx.recv_timeout(T)
        .expect("unitlet run connects to the bus (within 20 s)");
    assert!(run.child.try_wait().unwrap().is_none());
    unsafe {
        libc::kill(run.child.id() as i32, libc::SIGTERM);
    }
    let st = wait_for(
        Duration::from_secs(10),
        "unitlet run to exit on SIGTERM",
        || run.child.try_wait().ok().flatten(),
    );
    assert_eq!(st.code(), Some(0), "{st:?}: {}", run.log());
}

/// "resyncs every `--resync`": with nothing changing, the loop still
/// wakes for a resync once per period and makes a pass.
#[test]
fn run_resyncs_every_period_without_any_event() {
    // Each nextest test is its own process: this reaches only our operator.
    // SAFETY: set before any thread of this test reads the environment.
    unsafe { std::env::set_var("UNITLET_TEST_LOG", "info,unitlet::operator=debug") };
    let um = UserManager::start();
    um.write_manifest("x.yaml", &service("x", ""));
    let run = um.spawn_run(&["--resync", "1s"]);
    um.wait_active("x.service", T);
    run.settle(T);
    let (mark, t0) = (run.mark(), std::time::Instant::now());
    // Nothing is written or changed from here on.
    wait_seen(Duration::from_secs(10), "two resyncs", || {
        match run.count_since(mark, " resync") {
            n if n >= 2 => Ok(()),
            n => Err(format!("{n} resyncs")),
        }
    });
    run.wait_passes(mark, 2, T);
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "two resyncs take about two periods, not {took:?}"
    );
}

/// "`state`": a Service declared `state: stopped` is not started, shows
/// `Ready True Stopped`, and is stopped again when started by hand.
#[test]
fn a_service_declared_stopped_and_started_by_hand_is_stopped_again() {
    let um = UserManager::start();
    um.write_manifest("x.yaml", &service("x", "  state: stopped\n"));
    let o = um.unitlet(&["apply"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(um.active("x.service"), "inactive");
    let (status, reason, _) = um.ready("x").expect("x listed");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Stopped"));
    let run = um.spawn_run(&[]);
    run.settle(T);
    assert!(um.systemctl(&["start", "x.service"]).status.success());
    um.wait_state("x.service", "inactive", T);
    run.settle(T);
    assert_eq!(um.active("x.service"), "inactive");
    assert_eq!(um.wait_ready("x", "True", T).1, "Stopped");
}

/// "`none`" of the config change actions: a changed config file neither
/// restarts nor signals the Service, and the change is recorded (`plan`
/// has nothing left to do).
#[test]
fn on_config_change_none_neither_restarts_nor_reloads() {
    let um = UserManager::start();
    let conf = um.runtime.join("n.conf");
    std::fs::write(&conf, "one").unwrap();
    um.write_manifest(
        "n.yaml",
        &service(
            "n",
            &format!(
                "  configFiles: [{}]\n  onConfigChange: none\n",
                conf.display()
            ),
        ),
    );
    let run = um.spawn_run(&[]);
    um.wait_ready("n", "True", T);
    let pid = um.prop("n.service", "MainPID");
    std::fs::write(&conf, "two").unwrap();
    // The change was seen (the config directory is watched) and acted on.
    run.settle(T);
    assert_eq!(um.prop("n.service", "MainPID"), pid, "{}", run.log());
    assert_eq!(um.prop("n.service", "NRestarts"), "0");
    let o = um.unitlet(&["plan"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
}

/// "`get` (`-o table|wide|json|yaml`)": `-o yaml` lists the same objects,
/// with the same conditions, as `-o json`.
#[test]
fn get_o_yaml_lists_what_get_o_json_lists() {
    let um = UserManager::start();
    um.write_manifest("a.yaml", &service("a", ""));
    um.write_manifest("b.yaml", &service("b", "  state: stopped\n"));
    let o = um.unitlet(&["apply"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let json = um.get_json();
    let o = um.unitlet(&["get", "-o", "yaml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let yaml: serde_json::Value = serde_saphyr::from_str(&stdout(&o))
        .unwrap_or_else(|e| panic!("get -o yaml prints YAML ({e}):\n{}", stdout(&o)));
    let key = |v: &serde_json::Value| -> Vec<(String, serde_json::Value)> {
        v.as_array()
            .expect("a list of objects")
            .iter()
            .map(|o| {
                (
                    o["name"].as_str().unwrap().to_string(),
                    o["conditions"].clone(),
                )
            })
            .collect()
    };
    assert_eq!(key(&yaml), key(&json), "{}", stdout(&o));
    assert_eq!(key(&json).len(), 2);
}

/// "`EnableUnitFiles` remains for `[Install]` sections with aliases": an
/// adopted unit file with `Alias=` is enabled with its alias, which names
/// the same unit.
#[test]
fn an_adopted_unit_with_an_alias_is_enabled_under_both_names() {
    let um = UserManager::start();
    let file = um.runtime.join("al.service");
    std::fs::write(
        &file,
        "[Unit]\nDescription=aliased\n[Service]\nExecStart=/bin/sleep 100000\n\
         [Install]\nWantedBy=default.target\nAlias=al-alias.service\n",
    )
    .unwrap();
    um.write_manifest(
        "al.yaml",
        &format!(
            "apiVersion: unitlet/v1\nkind: Service\nmetadata:\n  name: al\nspec:\n  unitFile: {}\n",
            file.display()
        ),
    );
    let o = um.unitlet(&["apply"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(um.active("al.service"), "active");
    assert_eq!(um.prop("al.service", "UnitFileState"), "enabled");
    assert_eq!(
        um.prop("al-alias.service", "Id"),
        "al.service",
        "the alias names the unit"
    );
    let o = um.unitlet(&["plan"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
}
/// "Status is written at least every 10 s while `run` runs": with nothing
/// changing (and `--resync 1h`), `status.json` is rewritten within 10 s
/// (plus slack) of the last write.
#[test]
fn status_is_rewritten_every_10_s_while_run_runs() {
    let um = UserManager::start();
    um.write_manifest("x.yaml", &service("x", ""));
    let run = um.spawn_run(&[]);
    um.wait_active("x.service", T);
    let status = um.state_dir.join("status.json");
    let mtime = || std::fs::metadata(&status).and_then(|m| m.modified()).ok();
    wait_for(T, "status.json written", mtime);
    // Nothing left to do: every later write is the heartbeat's.
    run.settle(T);
    let first = mtime().unwrap();
    let t0 = std::time::Instant::now();
    wait_seen(
        Duration::from_secs(16),
        "status.json rewritten",
        || match mtime() {
            Some(m) if m > first => Ok(()),
            m => Err(format!(
                "mtime {m:?}, {:?} after the first write",
                t0.elapsed()
            )),
        },
    );
    assert!(!run.log().contains("ERROR"), "{}", run.log());
}
