//! Issue 2 acceptance: converging a manifests directory into a real user
//! manager.

use std::time::Duration;

use crate::support::{UserManager, service, stderr, stdout, wait_for, wait_seen};

const T: Duration = Duration::from_secs(20);

#[test]
fn three_manifests_with_after_apply_and_are_ready() {
    let um = UserManager::start();
    um.write_manifest("a.yaml", &service("a", ""));
    um.write_manifest("b.yaml", &service("b", "  after: [a]\n"));
    um.write_manifest("c.yaml", &service("c", "  after: [b]\n"));
    let o = um.unitlet(&["apply"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    for u in ["a", "b", "c"] {
        assert_eq!(um.active(&format!("{u}.service")), "active");
        let (status, reason, _) = um.ready(u).expect("listed");
        assert_eq!((status.as_str(), reason.as_str()), ("True", "Running"));
    }
    assert!(um.prop("b.service", "After").contains("a.service"));
    assert!(um.prop("b.service", "Wants").contains("a.service"));
    assert!(um.prop("c.service", "After").contains("b.service"));
    assert_eq!(um.prop("a.service", "UnitFileState"), "enabled");
    // c started after b after a.
    let t = |u: &str| {
        um.prop(u, "ActiveEnterTimestampMonotonic")
            .parse::<u64>()
            .unwrap()
    };
    assert!(t("a.service") <= t("b.service") && t("b.service") <= t("c.service"));
    let v = um.get_json();
    for o in v.as_array().unwrap() {
        assert_eq!(o["kind"], "Service");
        assert!(o["file"].as_str().unwrap().ends_with(".yaml"));
        assert_eq!(o["unit"]["activeState"], "active");
        assert_eq!(o["unit"]["subState"], "running");
        assert!(
            o["conditions"][0]["lastTransitionTime"]
                .as_str()
                .unwrap()
                .ends_with('Z')
        );
    }
}

#[test]
fn run_creates_restarts_and_garbage_collects() {
    let um = UserManager::start();
    let _run = um.spawn_run(&[]);
    um.write_manifest("web.yaml", &service("web", ""));
    um.wait_active("web.service", T);
    let pid1 = um.prop("web.service", "MainPID");
    um.write_manifest("web.yaml", &service("web", "").replace("100000", "200000"));
    let pid2 = wait_for(T, "web restarted", || {
        let p = um.prop("web.service", "MainPID");
        (p != pid1 && p != "0" && um.active("web.service") == "active").then_some(p)
    });
    let cmdline = std::fs::read_to_string(format!("/proc/{pid2}/cmdline")).unwrap();
    assert_eq!(cmdline, "/bin/sleep\x00200000\x00");
    std::fs::remove_file(um.manifests.join("web.yaml")).unwrap();
    wait_for(T, "web removed", || {
        (!um.unit_dir.join("web.service").exists()).then_some(())
    });
    um.wait_state("web.service", "inactive", T);
    assert_ne!(um.prop("web.service", "UnitFileState"), "enabled");
    let wants = um
        .runtime
        .join("config/systemd/user/default.target.wants/web.service");
    assert!(!wants.exists(), "enable symlink left behind");
}

#[test]
fn stopped_by_hand_is_started_again_promptly() {
    let um = UserManager::start();
    um.write_manifest("x.yaml", &service("x", ""));
    assert!(um.unitlet(&["apply"]).status.success());
    // --resync 1h: only the unit-state subscription can bring it back.
    let run = um.spawn_run(&[]);
    // Its first pass is over (subscribed, x seen active): the stop below
    // is news to a settled operator.
    run.wait_pass(0, T);
    assert!(um.systemctl(&["stop", "x.service"]).status.success());
    let start = std::time::Instant::now();
    um.wait_active("x.service", Duration::from_secs(2));
    eprintln!("restarted after {:?}", start.elapsed());
}

#[test]
fn hand_edit_is_restored_and_unmarked_unit_is_left_alone() {
    let um = UserManager::start();
    um.write_manifest("x.yaml", &service("x", ""));
    assert!(um.unitlet(&["apply"]).status.success());
    let path = um.unit_dir.join("x.service");
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, good.replace("100000", "5")).unwrap();
    let o = um.unitlet(&["apply"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), good);

    // An unmarked unit with a manifest's name: never touched.
    let foreign = "[Unit]\nDescription=not unitlet's\n[Service]\nExecStart=/bin/sleep 100001\n";
    std::fs::write(um.unit_dir.join("y.service"), foreign).unwrap();
    assert!(um.systemctl(&["daemon-reload"]).status.success());
    assert!(um.systemctl(&["start", "y.service"]).status.success());
    let pid = um.prop("y.service", "MainPID");
    um.write_manifest("y.yaml", &service("y", ""));
    let o = um.unitlet(&["apply"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        std::fs::read_to_string(um.unit_dir.join("y.service")).unwrap(),
        foreign
    );
    assert_eq!(um.prop("y.service", "MainPID"), pid);
    let (status, reason, message) = um.ready("y").unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("False", "Conflict"));
    assert!(message.contains("not managed by unitlet"), "{message}");
    // Deleting the manifest does not delete the foreign unit either.
    std::fs::remove_file(um.manifests.join("y.yaml")).unwrap();
    um.unitlet(&["apply"]);
    assert!(um.unit_dir.join("y.service").exists());
    assert_eq!(um.active("y.service"), "active");
}

#[test]
fn invalid_yaml_keeps_the_last_good_unit() {
    let um = UserManager::start();
    let run = um.spawn_run(&[]);
    um.write_manifest("x.yaml", &service("x", ""));
    um.wait_active("x.service", T);
    let pid = um.prop("x.service", "MainPID");
    um.write_manifest(
        "x.yaml",
        "apiVersion: unitlet/v1\nkind: Service\nmetadata:\n  name: [x\n",
    );
    let (_, _, message) = um.wait_ready("x", "False", T);
    assert!(message.contains("x.yaml:4:"), "{message}");
    // One more whole pass with the invalid file: still nothing touched.
    run.next_pass(T);
    assert_eq!(um.prop("x.service", "MainPID"), pid);
    assert_eq!(um.active("x.service"), "active");
    um.write_manifest("x.yaml", &service("x", ""));
    um.wait_ready("x", "True", T);
    assert_eq!(
        um.prop("x.service", "MainPID"),
        pid,
        "fixing the file must not restart an unchanged unit"
    );
}

#[test]
fn bad_input_corpus_is_rejected_and_disturbs_nothing() {
    let um = UserManager::start();
    um.write_manifest("good.yaml", &service("good", ""));
    assert!(um.unitlet(&["apply"]).status.success());
    let pid = um.prop("good.service", "MainPID");
    let head = "apiVersion: unitlet/v1\nkind: Service\nmetadata:\n  name: ";
    let outside = um.runtime.join("outside.yaml");
    std::fs::write(&outside, service("outside", "")).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("syntax.yaml", b"apiVersion: [\n".to_vec(), "syntax.yaml:"),
        (
            "apiversion.yaml",
            service("v", "")
                .replace("unitlet/v1", "unitlet/v9")
                .into_bytes(),
            "unsupported apiVersion",
        ),
        (
            "kind.yaml",
            service("k", "").replace("Service", "Pod").into_bytes(),
            "unknown kind",
        ),
        (
            "unknown.yaml",
            service("u", "  colour: blue\n").into_bytes(),
            "unknown field `colour`",
        ),
        (
            "dotdot.yaml",
            format!("{head}../evil\nspec: {{command: [/bin/true]}}\n").into_bytes(),
            "is not valid",
        ),
        (
            "upper.yaml",
            format!("{head}Evil\nspec: {{command: [/bin/true]}}\n").into_bytes(),
            "is not valid",
        ),
        (
            "long.yaml",
            format!("{head}{}\nspec: {{command: [/bin/true]}}\n", "a".repeat(64)).into_bytes(),
            "at most 63",
        ),
        (
            "dup.yaml",
            service("good", "").into_bytes(),
            "defined 2 times",
        ),
        (
            "empty.yaml",
            format!("{head}e\nspec: {{command: []}}\n").into_bytes(),
            "spec.command is empty",
        ),
        (
            "both.yaml",
            format!("{head}bo\nspec: {{command: [/bin/true], unitFile: x.service}}\n").into_bytes(),
            "both set",
        ),
        (
            "ctrl.yaml",
            format!("{head}ct\nspec: {{command: [\"/bin/echo\", \"a\\0b\"]}}\n").into_bytes(),
            "NUL byte",
        ),
        (
            "ctrlenv.yaml",
            format!("{head}ce\nspec: {{command: [/bin/true], environment: {{A: \"x\\0y\"}}}}\n")
                .into_bytes(),
            "NUL byte",
        ),
        ("huge.yaml", vec![b'#'; 10 * 1024 * 1024], "limited to"),
        (
            "binary.yaml",
            (0..4096u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect(),
            "binary",
        ),
    ];
    for (file, bytes, _) in &cases {
        std::fs::write(um.manifests.join(file), bytes).unwrap();
    }
    std::os::unix::fs::symlink(&outside, um.manifests.join("link.yaml")).unwrap();

    let o = um.unitlet(&["validate"]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    for (file, _, want) in &cases {
        let line = out
            .lines()
            .find(|l| l.contains(&format!("/{file}")))
            .unwrap_or_else(|| panic!("no error for {file}:\n{out}"));
        assert!(line.contains(want), "{file}: expected {want:?} in {line:?}");
    }
    assert!(
        out.lines()
            .any(|l| l.contains("link.yaml") && l.contains("outside the manifests directory")),
        "{out}"
    );
    // Errors that concern one place carry file:line:col.
    assert!(
        out.lines().any(|l| l.contains("/unknown.yaml:7:3:")),
        "{out}"
    );

    let o = um.unitlet(&["apply"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(
        um.prop("good.service", "MainPID"),
        pid,
        "the good unit was disturbed"
    );
    assert_eq!(um.active("good.service"), "active");
    let units: Vec<String> = std::fs::read_dir(&um.unit_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        units,
        vec!["good.service".to_string()],
        "nothing else may be written"
    );
    let (status, _, message) = um.ready("good").unwrap();
    assert_eq!(
        status, "False",
        "a duplicate name must be reported on the original too"
    );
    assert!(message.contains("defined 2 times"));
}

#[test]
fn removed_manifests_directory_stops_nothing() {
    let um = UserManager::start();
    let run = um.spawn_run(&[]);
    um.write_manifest("x.yaml", &service("x", ""));
    um.wait_active("x.service", T);
    let pid = um.prop("x.service", "MainPID");
    let aside = um.runtime.join("manifests.aside");
    std::fs::rename(&um.manifests, &aside).unwrap();
    let mark = run.mark();
    run.wait_log("does not exist", T);
    let o = um.unitlet(&["get"]);
    assert!(
        stderr(&o).contains("does not exist"),
        "get should surface the operator error: {}",
        stderr(&o)
    );
    // The failed pass and its retry both saw the directory missing.
    run.wait_passes(mark, 2, T);
    assert_eq!(um.active("x.service"), "active");
    assert_eq!(um.prop("x.service", "MainPID"), pid);
    assert!(um.unit_dir.join("x.service").exists());
    std::fs::rename(&aside, &um.manifests).unwrap();
    um.write_manifest("y.yaml", &service("y", ""));
    um.wait_active("y.service", T);
    assert_eq!(um.prop("x.service", "MainPID"), pid);
}

#[test]
fn sigkill_mid_apply_then_restart_converges() {
    let um = UserManager::start();
    let mut run = um.spawn_run(&[]);
    run.wait_log("connected", T);
    for i in 0..50 {
        std::fs::write(
            um.manifests.join(format!("s{i:02}.yaml")),
            service(&format!("s{i:02}"), ""),
        )
        .unwrap();
    }
    // Kill as soon as the first unit file lands: mid-apply.
    let deadline = std::time::Instant::now() + T;
    while std::fs::read_dir(&um.unit_dir)
        .map(|mut rd| rd.next().is_none())
        .unwrap_or(true)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no unit file appeared within {T:?}"
        );
        std::thread::sleep(Duration::from_micros(500));
    }
    run.kill9();
    // Proof that it died mid-apply, from what only the operator changes
    // and so froze at the kill: its log ends inside a pass, or not every
    // unit got its `.wants` link (an apply of 50 new units links them
    // last, after their start jobs end). Counting started units would
    // prove nothing: start jobs queued before the kill still run.
    let wants = um.runtime.join("config/systemd/user/default.target.wants");
    let linked = || {
        std::fs::read_dir(&wants)
            .map(|rd| rd.flatten().count())
            .unwrap_or(0)
    };
    let at_kill = linked();
    assert!(
        run.mid_pass() || at_kill < 50,
        "the kill must land mid-apply: inside a pass {}, {at_kill} of 50 units linked",
        run.mid_pass()
    );
    eprintln!(
        "killed inside a pass: {}, {at_kill} of 50 units linked",
        run.mid_pass()
    );
    let _run2 = um.spawn_run(&[]);
    wait_seen(Duration::from_secs(60), "all 50 active", || {
        let left: Vec<String> = (0..50)
            .map(|i| format!("s{i:02}.service"))
            .filter(|u| um.active(u) != "active")
            .collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("not active: {left:?}"))
        }
    });
    wait_seen(T, "all 50 linked after the restart", || match linked() {
        50 => Ok(()),
        n => Err(format!("{n} of 50 linked")),
    });
    let names: Vec<String> = (0..50).map(|i| format!("s{i:02}")).collect();
    assert_unit_dir_clean(&um, &names, "after the restart");
}

/// After a crash and a restart: every file in the unit directory is the
/// whole unit of one of `names`, owned by its manifest; no temporaries.
fn assert_unit_dir_clean(um: &UserManager, names: &[String], trial: &str) {
    for ent in std::fs::read_dir(&um.unit_dir).unwrap().flatten() {
        let name = ent.file_name().to_string_lossy().into_owned();
        assert!(
            !name.starts_with('.'),
            "temporary file left behind: {name}, {trial}"
        );
        let stem = name.trim_end_matches(".service");
        assert!(
            names.iter().any(|n| n == stem),
            "unexpected {name}, {trial}"
        );
        let content = std::fs::read_to_string(ent.path()).unwrap();
        assert!(
            content.contains(&format!("X-Unitlet-Manifest={stem}\n")),
            "{name} unowned or half-written, {trial}"
        );
        assert!(
            content.trim_end().ends_with("WantedBy=default.target"),
            "{name} half-written, {trial}"
        );
    }
}

#[test]
fn plan_reports_nothing_then_the_change_and_its_reason() {
    let um = UserManager::start();
    um.write_manifest("x.yaml", &service("x", ""));
    let o = um.unitlet(&["plan"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("start x.service: unit is new"),
        "{}",
        stdout(&o)
    );
    assert!(um.unitlet(&["apply"]).status.success());
    let o = um.unitlet(&["plan"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).contains("Nothing to do"));
    um.write_manifest("x.yaml", &service("x", "  restart: always\n"));
    let o = um.unitlet(&["plan"]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(
        out.contains("x.service: unit file differs from the manifest (Service.Restart)"),
        "{out}"
    );
    assert!(
        out.contains("restart x.service: its definition changed (Service.Restart)"),
        "{out}"
    );
    // plan changed nothing:
    assert!(
        !std::fs::read_to_string(um.unit_dir.join("x.service"))
            .unwrap()
            .contains("Restart=always")
    );
}

#[test]
fn operator_stops_cleanly_on_sigterm() {
    let um = UserManager::start();
    let mut run = um.spawn_run(&[]);
    run.wait_log("connected", T);
    let st = run.stop();
    assert!(st.success(), "exit status {st:?}");
}

#[test]
fn plan_and_apply_exit_2_without_a_bus() {
    let um = UserManager::start();
    let o = um.unitlet(&["--bus", "unix:path=/nonexistent/bus", "apply"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot connect"), "{}", stderr(&o));
    let o = um.unitlet(&["--bus", "unix:path=/nonexistent/bus", "plan"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn a_reexecuted_manager_is_followed() {
    let um = UserManager::start();
    um.write_manifest("x.yaml", &service("x", ""));
    let run = um.spawn_run(&[]);
    um.wait_active("x.service", T);
    run.wait_log("connected", T);
    let owner = || um.bus_owner("org.freedesktop.systemd1");
    let before = owner();
    assert!(
        before.starts_with(':'),
        "systemd owns its bus name: {before:?}"
    );
    assert!(um.systemctl(&["daemon-reexec"]).status.success());
    // The new manager is back on the bus (under a new unique name), and
    // the operator has made a whole pass since (which renews its
    // subscription).
    wait_seen(T, "the re-executed manager back on the bus", || {
        let now = owner();
        if now != before && now.starts_with(':') {
            Ok(())
        } else {
            Err(now)
        }
    });
    run.next_pass(T);
    // Still subscribed: a stop by hand is undone without waiting for a resync.
    assert!(um.systemctl(&["stop", "x.service"]).status.success());
    um.wait_active("x.service", Duration::from_secs(3));
}

#[test]
fn manifests_writable_by_other_users_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let um = UserManager::start();
    um.write_manifest("x.yaml", &service("x", ""));
    std::fs::set_permissions(&um.manifests, std::fs::Permissions::from_mode(0o777)).unwrap();
    let o = um.unitlet(&["apply"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("writable by other users (mode 0777)") && err.contains("chmod go-w"),
        "{err}"
    );
    assert!(
        !um.unit_dir.join("x.service").exists(),
        "nothing may be applied"
    );
    std::fs::set_permissions(&um.manifests, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        um.manifests.join("x.yaml"),
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    let o = um.unitlet(&["validate"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("x.yaml: error: is writable by other users (mode 0666)"),
        "{}",
        stdout(&o)
    );
    let o = um.unitlet(&["apply"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(!um.unit_dir.join("x.service").exists());
}

/// Issue 20 item 8: a manifests directory or manifest owned by another
/// user is refused (that user could make it run commands as you), with the
/// command that fixes it, and nothing already running is stopped.
#[test]
fn manifests_owned_by_another_user_are_refused() {
    use std::os::unix::fs::chown;
    let um = UserManager::start();
    um.write_manifest("x.yaml", &service("x", ""));
    let o = um.unitlet(&["apply"]);
    assert!(o.status.success(), "{}", stderr(&o));
    um.wait_active("x.service", T);
    let pid = um.prop("x.service", "MainPID");
    chown(&um.manifests, Some(65534), None).unwrap();
    let o = um.unitlet(&["apply"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("is owned by uid 65534") && err.contains("chown"),
        "{err}"
    );
    let me = unsafe { libc::geteuid() };
    chown(&um.manifests, Some(me), None).unwrap();
    // Now the file: its units are held, not stopped.
    chown(um.manifests.join("x.yaml"), Some(65534), None).unwrap();
    let o = um.unitlet(&["validate"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("x.yaml: error: is owned by uid 65534") && stdout(&o).contains("chown"),
        "{}",
        stdout(&o)
    );
    let o = um.unitlet(&["apply"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(um.active("x.service"), "active");
    assert_eq!(um.prop("x.service", "MainPID"), pid, "nothing restarted");
    assert!(um.unit_dir.join("x.service").exists());
}

#[test]
fn sigterm_does_not_wait_for_a_slow_pass() {
    let um = UserManager::start();
    // Never ready: the pass would wait its full readiness timeout.
    um.write_manifest(
        "slow.yaml",
        &service(
            "slow",
            "  readiness: {http: {url: \"http://127.0.0.1:9/\"}, timeout: 120s}\n",
        ),
    );
    let mut run = um.spawn_run(&[]);
    um.wait_active("slow.service", T);
    // The readiness wait is under way (and never ends by itself).
    um.wait_reason("slow", "Starting", T);
    let start = std::time::Instant::now();
    let st = run.stop();
    assert!(st.success(), "{st:?}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(
        um.active("slow.service"),
        "active",
        "stopping the operator stops no unit"
    );
}

#[test]
fn operator_reconnects_after_the_user_manager_restarts() {
    let mut um = UserManager::start();
    um.write_manifest("x.yaml", &service("x", ""));
    let run = um.spawn_run(&[]);
    um.wait_active("x.service", T);
    // The manager exits (taking the session bus with it) and comes back.
    um.restart();
    run.wait_log("connected to the user manager", T);
    wait_for(T, "unitlet reconnected", || {
        (run.log().matches("connected to the user manager").count() >= 2).then_some(())
    });
    // x is enabled, so the new manager started it; a stop by hand is
    // noticed over the new connection.
    um.wait_active("x.service", T);
    // A whole pass over the new connection (subscribed) before the stop.
    run.next_pass(T);
    assert!(um.systemctl(&["stop", "x.service"]).status.success());
    um.wait_active("x.service", Duration::from_secs(3));
}

#[test]
fn a_held_service_is_left_alone_until_the_hold_is_released() {
    let um = UserManager::start();
    um.write_manifest("x.yaml", &service("x", ""));
    let run = um.spawn_run(&[]);
    um.wait_active("x.service", T);
    run.wait_log("connected", T);
    // What a restore does: hold x (owner: this live process, holding the
    // hold's lock), then stop it.
    let hold = um.state_dir.join("holds/x");
    std::fs::create_dir_all(hold.parent().unwrap()).unwrap();
    std::fs::write(&hold, std::process::id().to_string()).unwrap();
    let held = std::fs::OpenOptions::new().write(true).open(&hold).unwrap();
    assert_eq!(
        unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&held), libc::LOCK_EX) },
        0
    );
    um.wait_reason("x", "OnHold", T);
    assert!(um.systemctl(&["stop", "x.service"]).status.success());
    // The stop was seen: a whole pass began after it (and a resync-free
    // operator has no other reason to look again).
    run.next_pass(T);
    assert_eq!(
        um.active("x.service"),
        "inactive",
        "the operator must not start a held service"
    );
    // Releasing the hold (removed, then closed, as `Hold` does) is
    // noticed at once (resync is 1h here).
    std::fs::remove_file(&hold).unwrap();
    drop(held);
    um.wait_active("x.service", Duration::from_secs(3));
    um.wait_ready("x", "True", T);
}

/// Crash-consistency soak: `kill -9` of `unitlet run` at random moments
/// while it applies 50 new manifests, then a restart must converge with
/// nothing left behind. Each kill is aimed by watching the unit directory
/// (kill once a random number of unit files exist) and checked afterwards:
/// it landed mid-apply when the operator's log ends inside a pass and
/// between 1 and 49 unit files exist, or temporaries of a batch being
/// written do (a kill inside the first batch leaves no whole unit file).
/// Most kills must land so, or the soak proves nothing. Reproduce a run
/// with `UNITLET_SOAK_SEED=N`.
#[test]
fn sigkill_at_random_moments_mid_apply_always_converges() {
    const TRIALS: usize = 30;
    const N: usize = 50;
    let um = UserManager::start();
    let seed: u64 = std::env::var("UNITLET_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("UNITLET_SOAK_SEED={seed}");
    let mut rng = seed;
    let mut next = move || {
        // xorshift64
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let names: Vec<String> = (0..N).map(|i| format!("k{i:02}")).collect();
    let wants = um.runtime.join("config/systemd/user/default.target.wants");
    let entries = || -> Vec<String> {
        std::fs::read_dir(&um.unit_dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let unit_files = || -> Vec<String> {
        let mut v = entries();
        v.retain(|n| !n.starts_with('.'));
        v
    };
    let links = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&wants)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    let started = std::time::Instant::now();
    let (mut proven, mut with_temps_left) = (0, 0);
    // (unit files at the kill, killed inside a pass) for every trial.
    let mut kills: Vec<(usize, bool)> = Vec::new();
    for attempt in 1..=TRIALS {
        let target = 1 + (next() % (N as u64 - 1)) as usize;
        let mut run = um.spawn_run(&[]);
        run.wait_log("connected", T);
        // Written a few ms apart, as a deploy tool copies files: the
        // operator applies them over several passes.
        for n in &names {
            std::fs::write(um.manifests.join(format!("{n}.yaml")), service(n, "")).unwrap();
            std::thread::sleep(Duration::from_millis(10));
        }
        // Kill as soon as `target` unit files exist; every other trial
        // counts temporaries too, to kill inside a batch write.
        let with_temps = attempt % 2 == 0;
        let deadline = std::time::Instant::now() + T;
        loop {
            let seen = if with_temps {
                entries().len()
            } else {
                unit_files().len()
            };
            if seen >= target {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "only {seen} of the {target} unit files to kill at appeared within {T:?} (trial {attempt}, seed {seed})"
            );
            std::thread::sleep(Duration::from_micros(500));
        }
        run.kill9();
        // Where it died: how many unit files were whole, and whether its
        // log ends inside a pass.
        let at_kill = unit_files().len();
        let temps_at_kill = entries().len() - at_kill;
        let mid_pass = run.mid_pass();
        kills.push((at_kill, mid_pass));
        if mid_pass && ((1..N).contains(&at_kill) || temps_at_kill > 0) {
            proven += 1;
            if temps_at_kill > 0 {
                with_temps_left += 1;
            }
        }
        let attempts = attempt;
        let trial = format!(
            "trial {attempts} (killed at {at_kill}/{N} unit files, {}, seed {seed})",
            if mid_pass {
                "inside a pass"
            } else {
                "between passes"
            }
        );
        // No grace for deleted manifests: the reset below removes them all.
        let mut run2 = um.spawn_run(&["--gc-grace", "0s"]);
        wait_seen(
            Duration::from_secs(60),
            &format!("all {N} active, {trial}"),
            || {
                let left: Vec<&String> = names
                    .iter()
                    .filter(|n| um.active(&format!("{n}.service")) != "active")
                    .collect();
                if left.is_empty() {
                    Ok(())
                } else {
                    Err(format!("not active: {left:?}"))
                }
            },
        );
        wait_for(T, &format!("`unitlet plan` exits 0, {trial}"), || {
            (um.unitlet(&["plan"]).status.code() == Some(0)).then_some(())
        });
        assert_unit_dir_clean(&um, &names, &trial);
        let l = links();
        assert_eq!(l.len(), N, "one .wants link per unit, {trial}: {l:?}");
        for link in &l {
            let to = std::fs::read_link(link).unwrap();
            assert!(
                to.starts_with(&um.unit_dir) && to.exists(),
                "stale .wants link {} -> {}, {trial}",
                link.display(),
                to.display()
            );
        }
        // Reset for the next trial: delete the manifests, wait for GC.
        for n in &names {
            std::fs::remove_file(um.manifests.join(format!("{n}.yaml"))).unwrap();
        }
        wait_seen(T, &format!("garbage collected, {trial}"), || {
            let (files, links) = (unit_files(), links());
            if files.is_empty() && links.is_empty() {
                Ok(())
            } else {
                Err(format!("unit files {files:?}, .wants links {links:?}"))
            }
        });
        run2.stop();
    }
    eprintln!(
        "{proven} of {TRIALS} kills mid-apply, {:.1?}; {with_temps_left} left temporaries; (unit files, inside a pass) at each kill: {kills:?}",
        started.elapsed()
    );
    assert!(
        proven * 2 >= TRIALS,
        "only {proven} of {TRIALS} kills landed mid-apply (inside a pass, with 0 < unit files < {N} or temporaries left), \
         fewer than half: the soak did not test crashes mid-apply (seed {seed}); \
         (unit files, inside a pass) at each kill: {kills:?}"
    );
}
