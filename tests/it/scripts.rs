//! scripts/lib.sh stops only what it started: a policy-rc.d keeps Debian
//! from starting packaged daemons at install time, and a packaged daemon
//! already running is found by executable and user, never by name pattern.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::support::{stderr, stdout, wait_for};

fn lib_sh() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/lib.sh")
}

/// `bash -c '. scripts/lib.sh; SCRIPT'` with `POLICY_RC_D` pointing at `policy`.
fn bash(policy: &Path, script: &str) -> Output {
    Command::new("bash")
        .arg("-c")
        .arg(format!(". '{}'; {script}", lib_sh().display()))
        .env("POLICY_RC_D", policy)
        .stdin(Stdio::null())
        .output()
        .expect("bash")
}

#[test]
fn install_runs_under_a_policy_rc_d_that_denies_starts_and_restores_the_previous_one() {
    let tmp = tempfile::tempdir().unwrap();
    let policy = tmp.path().join("policy-rc.d");
    // None before: one denying every start (exit 101) during the command,
    // gone afterwards; the command's status is passed on.
    let o = bash(
        &policy,
        r#"without_daemon_starts sh -c '"$POLICY_RC_D" prometheus start; echo "policy=$?"; exit 3'; echo "rc=$?""#,
    );
    assert!(
        stdout(&o).contains("policy=101") && stdout(&o).contains("rc=3"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    assert!(!policy.exists(), "the policy-rc.d we created is removed");
    // One before: put back byte for byte with its mode, on success too.
    std::fs::write(&policy, "#!/bin/sh\n# the admin's own\nexit 0\n").unwrap();
    std::fs::set_permissions(&policy, std::fs::Permissions::from_mode(0o700)).unwrap();
    let o = bash(
        &policy,
        r#"without_daemon_starts sh -c '"$POLICY_RC_D" x start; echo "policy=$?"'; echo "rc=$?""#,
    );
    assert!(
        stdout(&o).contains("policy=101") && stdout(&o).contains("rc=0"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    assert_eq!(
        std::fs::read_to_string(&policy).unwrap(),
        "#!/bin/sh\n# the admin's own\nexit 0\n"
    );
    assert_eq!(
        std::fs::metadata(&policy).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left.len(), 1, "no temporary files left: {left:?}");
}

/// A packaged daemon already running (as user `prometheus`, the way the
/// init script starts it) is stopped by PID; the same program run by
/// another user (e.g. a test's own Prometheus) is left alone.
#[test]
fn stop_packaged_daemon_stops_only_the_packaged_users_process() {
    use std::os::unix::process::CommandExt;
    let exe = "/usr/bin/prometheus-node-exporter";
    assert!(
        Path::new(exe).exists(),
        "{exe} is missing: scripts/test.sh installs it"
    );
    let id = |flag: &str| -> u32 {
        let o = Command::new("id")
            .args([flag, "prometheus"])
            .output()
            .unwrap();
        stdout(&o)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("no user prometheus (the Debian package creates it)"))
    };
    let (uid, gid) = (id("-u"), id("-g"));
    let start = |as_prometheus: bool| {
        let mut c = Command::new(exe);
        c.arg("--web.listen-address=127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if as_prometheus {
            c.uid(uid).gid(gid);
        }
        c.spawn().expect("start node exporter")
    };
    let mut packaged = start(true);
    let mut ours = start(false);
    // Both running their program (exec done) before the script looks.
    for pid in [packaged.id(), ours.id()] {
        wait_for(Duration::from_secs(10), "node exporter exec'd", || {
            (std::fs::read_link(format!("/proc/{pid}/exe")).ok()? == Path::new(exe)).then_some(())
        });
    }
    let pid1_is_systemd =
        std::fs::read_to_string("/proc/1/comm").is_ok_and(|c| c.trim() == "systemd");
    let o = bash(
        Path::new("/nonexistent"),
        "packaged_daemon_pids prometheus-node-exporter",
    );
    let found: Vec<u32> = stdout(&o).lines().filter_map(|l| l.parse().ok()).collect();
    assert!(
        found.contains(&packaged.id()),
        "found {found:?}, want {}",
        packaged.id()
    );
    assert!(
        !found.contains(&ours.id()),
        "root's node exporter must not be selected: {found:?}"
    );
    if !pid1_is_systemd {
        let o = bash(
            Path::new("/nonexistent"),
            "stop_packaged_daemon prometheus-node-exporter",
        );
        assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
        assert!(
            stdout(&o).contains(&format!("PIDs {}", packaged.id())),
            "says what it stops: {}",
            stdout(&o)
        );
        wait_for(Duration::from_secs(10), "the packaged one to exit", || {
            packaged.try_wait().ok().flatten()
        });
        assert!(
            ours.try_wait().unwrap().is_none(),
            "root's node exporter must still run"
        );
    }
    let _ = packaged.kill();
    let _ = packaged.wait();
    let _ = ours.kill();
    let _ = ours.wait();
}

/// A PATH with every program of the usual directories but `without`.
fn path_without(dir: &Path, without: &str) -> String {
    std::fs::create_dir_all(dir).unwrap();
    for from in ["/usr/local/bin", "/usr/bin", "/usr/sbin", "/bin", "/sbin"] {
        let Ok(rd) = std::fs::read_dir(from) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            let link = dir.join(&name);
            if name != without && !link.exists() {
                let _ = std::os::unix::fs::symlink(e.path(), link);
            }
        }
    }
    dir.display().to_string()
}

fn check_deploy(path: &str) -> Output {
    Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check-deploy.sh"))
        .env("PATH", path)
        .stdin(Stdio::null())
        .output()
        .expect("bash scripts/check-deploy.sh")
}

/// `scripts/check-deploy.sh` never skips a check: each tool a check needs
/// (promtool, amtool, systemd-analyze, python3 with PyYAML, prometheus for
/// the PromQL checks) missing is exit 2 naming it and how to install it,
/// never a run that passes without that check.
#[test]
fn check_deploy_fails_with_exit_2_when_a_tool_a_check_needs_is_missing() {
    let tmp = tempfile::tempdir().unwrap();
    for tool in ["promtool", "amtool", "systemd-analyze", "prometheus"] {
        let path = path_without(&tmp.path().join(format!("no-{tool}")), tool);
        let o = check_deploy(&path);
        let err = stderr(&o);
        assert_eq!(
            o.status.code(),
            Some(2),
            "without {tool}: {}{err}",
            stdout(&o)
        );
        assert!(
            err.contains(&format!("{tool} not found")),
            "names {tool}: {err}"
        );
        assert!(
            !stdout(&o).contains("check-deploy: OK"),
            "without {tool}: {}",
            stdout(&o)
        );
    }
    // python3 without PyYAML (-S: no site packages).
    let dir = tmp.path().join("no-yaml");
    let path = path_without(&dir, "python3");
    std::fs::write(
        dir.join("python3"),
        "#!/bin/sh\nexec /usr/bin/python3 -S \"$@\"\n",
    )
    .unwrap();
    std::fs::set_permissions(dir.join("python3"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = check_deploy(&path);
    assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("PyYAML") && stderr(&o).contains("python3-yaml"),
        "{}",
        stderr(&o)
    );
}
