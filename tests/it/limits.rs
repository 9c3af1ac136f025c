//! Issue 3 acceptance: resource limits rendered, applied live, enforced
//! against drift. The private user manager enforces them for real.

use std::time::Duration;

use crate::support::{UserManager, service, stderr, stdout, wait_for};

const T: Duration = Duration::from_secs(20);

fn limited(name: &str, resources: &str) -> String {
    service(name, &format!("  resources: {{{resources}}}\n"))
}

#[test]
fn service_over_its_memory_limit_is_oom_killed_and_reported() {
    let um = UserManager::start();
    // tail buffers /dev/zero looking for a newline: it grows until killed.
    um.write_manifest(
        "hog.yaml",
        "apiVersion: unitlet/v1\nkind: Service\nmetadata: {name: hog}\nspec:\n  command: [/usr/bin/tail, /dev/zero]\n  restart: \"no\"\n  resources: {memoryMax: 50M}\n",
    );
    let _run = um.spawn_run(&[]);
    let (_, reason, message) = um.wait_ready_where("hog", "Ready False OOMKilled", T, |r| {
        r.0 == "False" && r.1 == "OOMKilled"
    });
    assert_eq!(reason, "OOMKilled");
    assert!(message.contains("memoryMax 50M"), "{message}");
    assert_eq!(
        um.prop("hog.service", "ExecMainStatus"),
        "9",
        "killed by SIGKILL"
    );
}

#[test]
fn cpu_quota_change_is_applied_live_and_survives_daemon_reload() {
    let um = UserManager::start();
    um.write_manifest("w.yaml", &limited("w", "cpuQuota: 50%"));
    assert!(um.unitlet(&["apply"]).status.success());
    assert_eq!(um.prop("w.service", "CPUQuotaPerSecUSec"), "500ms");
    let pid = um.prop("w.service", "MainPID");
    um.write_manifest("w.yaml", &limited("w", "cpuQuota: 150%"));
    let plan = um.unitlet(&["plan"]);
    assert!(
        stdout(&plan)
            .contains("set-limits w.service (CPUQuota=150%): only resource limits changed"),
        "{}",
        stdout(&plan)
    );
    assert!(
        !stdout(&plan).lines().any(|l| l.starts_with("restart ")),
        "{}",
        stdout(&plan)
    );
    let o = um.unitlet(&["apply"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        um.prop("w.service", "MainPID"),
        pid,
        "limits must not restart the service"
    );
    assert_eq!(um.prop("w.service", "CPUQuotaPerSecUSec"), "1.500000s");
    assert!(um.systemctl(&["daemon-reload"]).status.success());
    assert_eq!(um.prop("w.service", "CPUQuotaPerSecUSec"), "1.500000s");
    assert_eq!(um.prop("w.service", "MainPID"), pid);
    // Removing the limit removes it live.
    um.write_manifest("w.yaml", &service("w", ""));
    assert!(um.unitlet(&["apply"]).status.success());
    assert_eq!(um.prop("w.service", "CPUQuotaPerSecUSec"), "infinity");
    assert_eq!(um.prop("w.service", "MainPID"), pid);
    assert!(um.systemctl(&["daemon-reload"]).status.success());
    assert_eq!(um.prop("w.service", "CPUQuotaPerSecUSec"), "infinity");
}

#[test]
fn limits_changed_by_hand_are_restored() {
    let um = UserManager::start();
    um.write_manifest("d.yaml", &limited("d", "memoryMax: 200M, tasksMax: 50"));
    let run = um.spawn_run(&["--resync", "3s"]);
    um.wait_active("d.service", T);
    run.wait_log("reconciled", T);
    let pid = um.prop("d.service", "MainPID");
    assert_eq!(
        um.prop("d.service", "MemoryMax"),
        (200u64 << 20).to_string()
    );
    // set-property drift.
    assert!(
        um.systemctl(&["set-property", "d.service", "MemoryMax=infinity"])
            .status
            .success()
    );
    um.wait_prop("d.service", "MemoryMax", &(200u64 << 20).to_string(), T);
    // After a daemon-reload the hand-made drop-in must agree too.
    assert!(um.systemctl(&["daemon-reload"]).status.success());
    assert_eq!(
        um.prop("d.service", "MemoryMax"),
        (200u64 << 20).to_string()
    );
    // --runtime drift lands in the runtime control directory.
    assert!(
        um.systemctl(&["set-property", "--runtime", "d.service", "TasksMax=7"])
            .status
            .success()
    );
    um.wait_prop("d.service", "TasksMax", "50", T);
    assert!(um.systemctl(&["daemon-reload"]).status.success());
    assert_eq!(um.prop("d.service", "TasksMax"), "50");
    // A hand edit of the unit file.
    let path = um.unit_dir.join("d.service");
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, good.replace("TasksMax=50", "TasksMax=5000")).unwrap();
    assert!(um.systemctl(&["daemon-reload"]).status.success());
    wait_for(T, "unit file restored", || {
        (std::fs::read_to_string(&path).unwrap() == good).then_some(())
    });
    um.wait_prop("d.service", "TasksMax", "50", T);
    assert_eq!(
        um.prop("d.service", "MainPID"),
        pid,
        "restoring limits must not restart"
    );
    let o = um.unitlet(&["describe", "d"]);
    assert!(stdout(&o).contains("LimitsApplied"), "{}", stdout(&o));
    assert!(stdout(&o).contains("Memory:"), "{}", stdout(&o));
}

#[test]
fn invalid_limits_are_rejected_and_previous_limits_stay() {
    let um = UserManager::start();
    um.write_manifest("v.yaml", &limited("v", "memoryMax: 100M, cpuQuota: 50%"));
    assert!(um.unitlet(&["apply"]).status.success());
    let pid = um.prop("v.service", "MainPID");
    for (bad, want) in [
        ("memoryMax: 2 GB", "invalid size"),
        ("memoryMax: -1", "invalid size"),
        ("cpuQuota: 150", "percentage with %"),
        ("cpuQuota: 0%", "0% would never"),
        ("memoryMax: 1.5.5G", "invalid size"),
    ] {
        um.write_manifest("v.yaml", &limited("v", bad));
        let o = um.unitlet(&["validate"]);
        assert_eq!(o.status.code(), Some(1));
        let out = stdout(&o);
        assert!(
            out.contains("v.yaml:7:") && out.contains(want),
            "{bad}: {out}"
        );
        let o = um.unitlet(&["apply"]);
        assert_eq!(o.status.code(), Some(1), "{bad}");
        assert_eq!(
            um.prop("v.service", "MemoryMax"),
            (100u64 << 20).to_string(),
            "{bad}"
        );
        assert_eq!(um.prop("v.service", "CPUQuotaPerSecUSec"), "500ms", "{bad}");
        assert_eq!(um.prop("v.service", "MainPID"), pid, "{bad}");
    }
}

/// Every limit unitlet manages: manifest fragment when set, a changed
/// value, the systemd property, its live value when set and when changed.
const LIMITS: [(&str, &str, &str, &str, &str); 4] = [
    (
        "memoryMax: 100M",
        "memoryMax: 200M",
        "MemoryMax",
        "104857600",
        "209715200",
    ),
    (
        "memoryHigh: 80M",
        "memoryHigh: 90M",
        "MemoryHigh",
        "83886080",
        "94371840",
    ),
    (
        "cpuQuota: 50%",
        "cpuQuota: 60%",
        "CPUQuotaPerSecUSec",
        "500ms",
        "600ms",
    ),
    ("tasksMax: 50", "tasksMax: 60", "TasksMax", "50", "60"),
];

/// systemd's value of `prop` for a unit that does not set it.
fn default_of(um: &UserManager, prop: &str) -> String {
    if prop == "TasksMax" {
        let o = um.systemctl(&["show", "-p", "DefaultTasksMax", "--value"]);
        let v = stdout(&o).trim().to_string();
        assert!(!v.is_empty(), "the manager reports DefaultTasksMax");
        v
    } else {
        "infinity".to_string()
    }
}

fn sleeper(name: &str, secs: &str, limit: Option<&str>) -> String {
    let resources = limit
        .map(|l| format!("  resources: {{{l}}}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: unitlet/v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  command: [/bin/sleep, \"{secs}\"]\n{resources}"
    )
}

fn apply_ok(um: &UserManager) {
    let o = um.unitlet(&["apply"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
}

#[test]
fn removed_limit_returns_to_the_default_live_and_after_daemon_reload() {
    let um = UserManager::start();
    for i in 0..LIMITS.len() {
        um.write_manifest(
            &format!("r{i}.yaml"),
            &sleeper(&format!("r{i}"), "100000", None),
        );
    }
    apply_ok(&um);
    let pids: Vec<String> = (0..LIMITS.len())
        .map(|i| um.prop(&format!("r{i}.service"), "MainPID"))
        .collect();
    // Set on a running service: applied live (the old applier persisted
    // it in a user.control drop-in that outlived the manifest's limit).
    for (i, (set, _, _, _, _)) in LIMITS.iter().enumerate() {
        um.write_manifest(
            &format!("r{i}.yaml"),
            &sleeper(&format!("r{i}"), "100000", Some(set)),
        );
    }
    apply_ok(&um);
    for (i, (_, _, prop, live, _)) in LIMITS.iter().enumerate() {
        let unit = format!("r{i}.service");
        assert_eq!(um.prop(&unit, prop), *live, "{unit} {prop} set");
        assert_eq!(um.prop(&unit, "MainPID"), pids[i], "{unit}: no restart");
    }
    for i in 0..LIMITS.len() {
        um.write_manifest(
            &format!("r{i}.yaml"),
            &sleeper(&format!("r{i}"), "100000", None),
        );
    }
    apply_ok(&um);
    let check = |when: &str| {
        for (i, (_, _, prop, _, _)) in LIMITS.iter().enumerate() {
            let unit = format!("r{i}.service");
            assert_eq!(
                um.prop(&unit, prop),
                default_of(&um, prop),
                "{unit}: {prop} must be back to the default {when}"
            );
            assert_eq!(um.prop(&unit, "MainPID"), pids[i], "{unit}: no restart");
        }
    };
    check("after removing it from the manifest");
    assert!(um.systemctl(&["daemon-reload"]).status.success());
    check("after a daemon-reload");
    let o = um.unitlet(&["plan"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
}

#[test]
fn removed_limit_with_a_restart_returns_to_the_default() {
    let um = UserManager::start();
    for (i, (set, _, _, _, _)) in LIMITS.iter().enumerate() {
        um.write_manifest(
            &format!("q{i}.yaml"),
            &sleeper(&format!("q{i}"), "100000", Some(set)),
        );
    }
    apply_ok(&um);
    // A live-only change first: the old applier persisted it in a
    // user.control drop-in, which then outlived the manifest's limit.
    for (i, (_, changed, _, _, _)) in LIMITS.iter().enumerate() {
        um.write_manifest(
            &format!("q{i}.yaml"),
            &sleeper(&format!("q{i}"), "100000", Some(changed)),
        );
    }
    apply_ok(&um);
    let mut pids = Vec::new();
    for (i, (_, _, prop, _, live)) in LIMITS.iter().enumerate() {
        let unit = format!("q{i}.service");
        assert_eq!(um.prop(&unit, prop), *live, "{unit} {prop} changed live");
        pids.push(um.prop(&unit, "MainPID"));
    }
    // Remove the limit together with a command change: rewrite + restart.
    for i in 0..LIMITS.len() {
        um.write_manifest(
            &format!("q{i}.yaml"),
            &sleeper(&format!("q{i}"), "200000", None),
        );
    }
    apply_ok(&um);
    let check = |when: &str| {
        for (i, (_, _, prop, _, _)) in LIMITS.iter().enumerate() {
            let unit = format!("q{i}.service");
            assert_eq!(
                um.prop(&unit, prop),
                default_of(&um, prop),
                "{unit}: {prop} must be back to the default {when}"
            );
        }
    };
    check("after the restart");
    for (i, pid) in pids.iter().enumerate() {
        assert_ne!(
            &um.prop(&format!("q{i}.service"), "MainPID"),
            pid,
            "restarted"
        );
    }
    assert!(um.systemctl(&["daemon-reload"]).status.success());
    check("after a daemon-reload");
    let o = um.unitlet(&["plan"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
}

#[test]
fn limits_overridden_by_a_drop_in_fail_the_apply() {
    let um = UserManager::start();
    um.write_manifest("o.yaml", &limited("o", "memoryMax: 100M"));
    apply_ok(&um);
    // A drop-in of one's own, sorted after anything set-property writes.
    let d = um.runtime.join("config/systemd/user/o.service.d");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("override.conf"), "[Service]\nMemoryMax=300M\n").unwrap();
    assert!(um.systemctl(&["daemon-reload"]).status.success());
    assert_eq!(
        um.prop("o.service", "MemoryMax"),
        (300u64 << 20).to_string()
    );
    let o = um.unitlet(&["apply"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(
            "failed: o: live resource limits of o.service do not match the manifest after applying"
        ) && err.contains("MemoryMax is 300M, the manifest wants 100M")
            && err.contains("systemctl --user cat o.service"),
        "{err}"
    );
    let o = um.unitlet(&["describe", "o"]);
    assert!(
        stdout(&o).contains("LimitsNotApplied") && stdout(&o).contains("ApplyFailed"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn an_adopted_units_own_limits_stay_when_the_manifest_sets_others() {
    let um = UserManager::start();
    let units = um.manifests.join("../units");
    std::fs::create_dir_all(&units).unwrap();
    std::fs::write(
        units.join("a.service"),
        "[Unit]\nDescription=A\n[Service]\nExecStart=/bin/sleep 100000\nMemoryMax=150M\n[Install]\nWantedBy=default.target\n",
    )
    .unwrap();
    let adopted = |extra: &str| {
        format!(
            "apiVersion: unitlet/v1\nkind: Service\nmetadata: {{name: a}}\nspec:\n  unitFile: ../units/a.service\n{extra}"
        )
    };
    um.write_manifest("a.yaml", &adopted(""));
    apply_ok(&um);
    let mem = (150u64 << 20).to_string();
    assert_eq!(um.prop("a.service", "MemoryMax"), mem);
    // The old applier set every limit the manifest left out to infinity.
    um.write_manifest("a.yaml", &adopted("  resources: {cpuQuota: 50%}\n"));
    apply_ok(&um);
    assert_eq!(um.prop("a.service", "CPUQuotaPerSecUSec"), "500ms");
    assert_eq!(
        um.prop("a.service", "MemoryMax"),
        mem,
        "the file's own limit"
    );
    assert!(um.systemctl(&["daemon-reload"]).status.success());
    assert_eq!(um.prop("a.service", "MemoryMax"), mem);
    let o = um.unitlet(&["plan"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
}

/// The same against the service the limits are for: a real Prometheus keeps
/// running and answering while its limits are set and removed live.
#[test]
fn removed_limits_of_a_real_prometheus_return_to_the_defaults_without_a_restart() {
    let um = UserManager::start();
    let with = "  resources: {memoryMax: 1G, memoryHigh: 900M, cpuQuota: 150%, tasksMax: 256}\n";
    let p = crate::reload::prometheus(&um, "prom", with);
    apply_ok(&um);
    um.wait_ready("prom", "True", Duration::from_secs(30));
    let pid = um.prop("prom.service", "MainPID");
    assert_eq!(um.prop("prom.service", "MemoryMax"), "1073741824");
    assert_eq!(um.prop("prom.service", "TasksMax"), "256");
    // The same manifest without resources.
    crate::reload::prometheus_manifest_for(&um, "prom", &p, "");
    apply_ok(&um);
    let check = |when: &str| {
        for prop in ["MemoryMax", "MemoryHigh", "TasksMax"] {
            assert_eq!(
                um.prop("prom.service", prop),
                default_of(&um, prop),
                "{prop} back to the default {when}"
            );
        }
        assert_eq!(
            um.prop("prom.service", "CPUQuotaPerSecUSec"),
            "infinity",
            "{when}"
        );
        assert_eq!(um.prop("prom.service", "MainPID"), pid, "no restart {when}");
    };
    check("live");
    assert!(um.systemctl(&["daemon-reload"]).status.success());
    check("after daemon-reload");
    assert!(
        crate::reload::http_get(&p.url("/-/ready")).is_some_and(|(c, _)| c == 200),
        "Prometheus still answers"
    );
}
