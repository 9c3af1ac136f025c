//! Issue 12 acceptance 5: `unitlet doctor` against a private real user
//! manager; every verdict is compared with what the sandbox really is,
//! found here independently of unitlet's code.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use crate::reload::{free_port, http_get};
use crate::support::{UserManager, service, stdout, wait_for};

/// What the sandbox's user manager can use, read the test's own way.
fn sandbox_controllers(pid: u32) -> (bool, BTreeSet<String>) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let root = Path::new("/sys/fs/cgroup");
    let mut have = BTreeSet::new();
    if root.join("cgroup.controllers").exists() {
        let path = text.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
        let list = std::fs::read_to_string(
            root.join(path.trim_start_matches('/'))
                .join("cgroup.controllers"),
        )
        .unwrap();
        for c in list.split_whitespace() {
            have.insert(c.to_string());
        }
        (true, have)
    } else {
        for l in text.lines() {
            let mut it = l.splitn(3, ':');
            let (_, ctrls, path) = (it.next(), it.next().unwrap(), it.next().unwrap());
            for c in ctrls.split(',') {
                // Run as root here: an existing directory is a writable one.
                if root.join(c).join(path.trim_start_matches('/')).is_dir()
                    || root.join(ctrls).join(path.trim_start_matches('/')).is_dir()
                {
                    have.insert(c.to_string());
                }
            }
        }
        (false, have)
    }
}

fn check<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {report:#}"))
}

#[test]
fn doctor_verdicts_match_the_sandbox() {
    let um = UserManager::start();
    let port = free_port();
    let prom_dir = um.runtime.join("prom");
    std::fs::create_dir_all(prom_dir.join("data")).unwrap();
    std::fs::write(
        prom_dir.join("prometheus.yml"),
        "global:\n  scrape_interval: 15s\n",
    )
    .unwrap();
    // A real Prometheus started without --web.enable-lifecycle, but with
    // a reload URL: every reload would be refused.
    um.write_manifest(
        "prom.yaml",
        &format!(
            "apiVersion: unitlet/v1\nkind: Service\nmetadata: {{name: prom}}\nspec:\n  command: [/usr/bin/prometheus, --config.file=prometheus.yml, --storage.tsdb.path=data, \"--web.listen-address=127.0.0.1:{port}\"]\n  workingDirectory: {}\n  onConfigChange: reload\n  reload: {{http: {{url: \"http://127.0.0.1:{port}/-/reload\"}}}}\n  readiness: {{http: {{url: \"http://localhost:{port}/-/ready\"}}, timeout: 30s}}\n",
            prom_dir.display()
        ),
    );
    let env = um.runtime.join("web.env");
    std::fs::write(&env, "A=b\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&env, std::fs::Permissions::from_mode(0o600)).unwrap();
    um.write_manifest(
        "web.yaml",
        &service(
            "web",
            &format!(
                "  environmentFile: {}\n  resources: {{memoryMax: 200M, memoryHigh: 150M, cpuQuota: 50%, tasksMax: 64}}\n  readiness: {{http: {{url: \"http://192.0.2.1:9/ready\"}}, timeout: 2s}}\n",
                env.display()
            ),
        ),
    );
    um.write_manifest(
        "ghost.yaml",
        "apiVersion: unitlet/v1\nkind: Service\nmetadata: {name: ghost}\nspec:\n  command: [/nonexistent/ghost-program, --flag]\n",
    );
    let _ = um.unitlet(&["apply", "--timeout", "20s"]);
    // Prometheus is up: doctor asks it, not only its argv.
    wait_for(Duration::from_secs(30), "prometheus ready", || {
        http_get(&format!("http://127.0.0.1:{port}/-/ready")).filter(|(c, _)| *c == 200)
    });

    let o = um.unitlet(&["doctor", "-o", "json"]);
    let text = stdout(&o);
    let report: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("doctor -o json: {e}: {text}"));
    // ghost fails, so 2.
    assert_eq!(o.status.code(), Some(2), "{report:#}");
    assert_eq!(report["exitCode"], 2);

    for ok in [
        "user-manager",
        "unit-dir",
        "manifests-dir",
        "state-dir",
        "secret/web",
    ] {
        assert_eq!(check(&report, ok)["status"], "OK", "{ok}: {report:#}");
    }

    // Lingering, as loginctl tells this sandbox (no logind here: unknown).
    let uid = unsafe { libc::getuid() };
    let lc = std::process::Command::new("loginctl")
        .args([
            "show-user",
            &uid.to_string(),
            "--property=Linger",
            "--value",
        ])
        .output()
        .unwrap();
    let linger = check(&report, "lingering");
    if lc.status.success() && String::from_utf8_lossy(&lc.stdout).trim() == "yes" {
        assert_eq!(linger["status"], "OK", "{linger}");
    } else {
        assert_eq!(linger["status"], "WARN", "{linger}");
        assert!(
            linger["fix"]
                .as_str()
                .unwrap()
                .contains("loginctl enable-linger")
        );
        if !lc.status.success() {
            let r = linger["reason"].as_str().unwrap();
            assert!(r.starts_with("lingering is unknown: "), "{r}");
        }
    }

    // Controllers, as the sandbox's cgroupfs has them.
    let (unified, have) = sandbox_controllers(um.manager_pid());
    let missing: Vec<&str> = ["memory", "cpu", "pids"]
        .into_iter()
        .filter(|c| !have.contains(*c))
        .collect();
    let cg = check(&report, "cgroup-controllers");
    let limits = check(&report, "limits/web");
    let (_, get) = (
        (),
        serde_json::from_str::<serde_json::Value>(&stdout(&um.unitlet(&["get", "-o", "json"])))
            .unwrap(),
    );
    let web = get
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "web")
        .unwrap();
    let cond = web["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "LimitsEnforced")
        .unwrap_or_else(|| panic!("no LimitsEnforced on web: {web:#}"));
    let enforced_all = missing.is_empty() && unified;
    if enforced_all {
        assert_eq!(cg["status"], "OK", "{cg}");
        assert_eq!(limits["status"], "OK", "{limits}");
        assert_eq!(cond["status"], "True", "{cond}");
    } else {
        assert_eq!(cg["status"], "WARN", "{cg}");
        assert_eq!(limits["status"], "FAIL", "{limits}");
        assert_eq!(cond["status"], "False", "{cond}");
        assert_eq!(cond["reason"], "ControllerMissing", "{cond}");
        let msg = cond["message"].as_str().unwrap();
        for m in &missing {
            assert!(cg["reason"].as_str().unwrap().contains(m), "{cg}");
            let field = match *m {
                "memory" => "resources.memoryMax",
                "cpu" => "resources.cpuQuota",
                _ => "resources.tasksMax",
            };
            assert!(msg.contains(field), "{msg}");
        }
        if !unified {
            assert!(msg.contains("resources.memoryHigh"), "{msg}");
            assert!(msg.contains("cgroup v1"), "{msg}");
        }
    }

    // The missing program is named; simply not installed, it is a
    // warning (issue 21 item 7: the Service waits for it, not started).
    let ghost = check(&report, "program/ghost");
    assert_eq!(ghost["status"], "WARN", "{ghost}");
    assert!(
        ghost["reason"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/ghost-program is not installed"),
        "{ghost}"
    );
    assert_eq!(check(&report, "program/web")["status"], "OK");

    // Prometheus said it has no lifecycle API.
    let reload = check(&report, "reload/prom");
    assert_eq!(reload["status"], "FAIL", "{reload}");
    assert!(
        reload["reason"]
            .as_str()
            .unwrap()
            .contains("/api/v1/status/flags says so"),
        "{reload}"
    );
    assert!(
        reload["fix"]
            .as_str()
            .unwrap()
            .contains("--web.enable-lifecycle")
    );
    // …which is what a reload POST then meets.
    let post = std::process::Command::new("curl")
        .args([
            "-s",
            "-m",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
        ])
        .arg(format!("http://127.0.0.1:{port}/-/reload"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&post.stdout), "403");

    // URLs: loopback ones pass, a remote one is flagged.
    assert_eq!(check(&report, "reload-url/prom")["status"], "OK");
    assert_eq!(check(&report, "readiness-url/prom")["status"], "OK");
    let remote = check(&report, "readiness-url/web");
    assert_eq!(remote["status"], "WARN", "{remote}");
    assert!(remote["reason"].as_str().unwrap().contains("192.0.2.1"));

    // The table says the same, with the same exit code.
    let t = um.unitlet(&["doctor"]);
    assert_eq!(t.status.code(), Some(2));
    let table = stdout(&t);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("WARN") && l.contains("program/ghost")),
        "{table}"
    );
}

#[test]
fn doctor_refuses_an_unsafe_secret_and_a_world_writable_state_dir() {
    let um = UserManager::start();
    let tok = um.runtime.join("token");
    std::fs::write(&tok, "t0ken-value\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tok, std::fs::Permissions::from_mode(0o644)).unwrap();
    um.write_manifest(
        "dash.yaml",
        &format!(
            "apiVersion: unitlet/v1\nkind: Backup\nmetadata: {{name: dash}}\nspec:\n  schedule: every 1d\n  grafana: {{url: \"http://127.0.0.1:3000\", tokenFile: {}}}\n",
            tok.display()
        ),
    );
    std::fs::create_dir_all(&um.state_dir).unwrap();
    std::fs::set_permissions(&um.state_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let o = um.unitlet(&["doctor", "-o", "json"]);
    assert_eq!(o.status.code(), Some(2));
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let m = check(&report, "manifest/dash");
    assert_eq!(m["status"], "FAIL", "{m}");
    assert!(m["reason"].as_str().unwrap().contains("chmod 600"), "{m}");
    let s = check(&report, "state-dir");
    assert_eq!(s["status"], "FAIL", "{s}");
    assert!(
        s["reason"]
            .as_str()
            .unwrap()
            .contains("writable by other users")
    );
    assert!(!stdout(&o).contains("t0ken-value"));
}
