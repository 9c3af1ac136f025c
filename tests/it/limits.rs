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
    let (_, reason, message) = wait_for(T, "hog reported OOM-killed", || {
        um.ready("hog")
            .filter(|r| r.0 == "False" && r.1 == "OOMKilled")
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
    wait_for(T, "d active", || {
        (um.active("d.service") == "active").then_some(())
    });
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
    wait_for(T, "MemoryMax restored", || {
        (um.prop("d.service", "MemoryMax") == (200u64 << 20).to_string()).then_some(())
    });
    // After a daemon-reload the hand-made drop-in must agree too.
    assert!(um.systemctl(&["daemon-reload"]).status.success());
    assert_eq!(
        um.prop("d.service", "MemoryMax"),
        (200u64 << 20).to_string()
    );
    // A hand edit of the unit file.
    let path = um.unit_dir.join("d.service");
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, good.replace("TasksMax=50", "TasksMax=5000")).unwrap();
    assert!(um.systemctl(&["daemon-reload"]).status.success());
    wait_for(T, "unit file restored", || {
        (std::fs::read_to_string(&path).unwrap() == good).then_some(())
    });
    wait_for(T, "TasksMax restored", || {
        (um.prop("d.service", "TasksMax") == "50").then_some(())
    });
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
