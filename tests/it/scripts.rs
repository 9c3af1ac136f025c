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

/// Issue 23 item 6: the shipped deploy tree passes `scripts/check-deploy.sh`
/// with unitlet's own dashboard among the checked ones, its expressions
/// parsed by promtool and the operator alerts' `promtool test rules`
/// cases run; a copy of the tree with one dashboard expression broken
/// fails, naming the panel.
#[test]
fn check_deploy_parses_the_unitlet_dashboard_and_tests_the_operator_alerts() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = std::env::var("PATH").unwrap_or_default();
    let o = check_deploy(&path);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    for line in [
        "deploy/grafana/dashboards/unitlet.json: valid JSON, uid 'unitlet-operator'",
        "ok: dashboard expressions parse",
        "tests/unitlet_operator_test.yml",
        "ok: rule unit tests",
        "check-deploy: OK",
    ] {
        assert!(out.contains(line), "{line:?} missing:\n{out}");
    }

    let tree = tempfile::tempdir().unwrap();
    for dir in ["deploy", "docs", "manifests", "scripts", "units"] {
        let o = Command::new("cp")
            .arg("-r")
            .arg(root.join(dir))
            .arg(tree.path())
            .output()
            .unwrap();
        assert!(o.status.success(), "cp {dir}: {}", stderr(&o));
    }
    let dash = tree.path().join("deploy/grafana/dashboards/unitlet.json");
    let text = std::fs::read_to_string(&dash).unwrap();
    let good = "sum by (result) (rate(unitlet_reconcile_total{";
    assert!(text.contains(good), "{text}");
    let broken = text.replacen(good, "sum by (result) (rate(unitlet_reconcile_total{{", 1);
    std::fs::write(&dash, broken).unwrap();
    let o = Command::new("bash")
        .arg(tree.path().join("scripts/check-deploy.sh"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{}{err}", stdout(&o));
    assert!(
        err.contains("FAIL: promtool check rules on the dashboards' expressions"),
        "{err}"
    );
    // The promtool step names the panel (the query API check after it too).
    let promtool_step = err
        .split("FAIL: promtool check rules on the dashboards' expressions")
        .next()
        .unwrap_or_default();
    let panel = "FAIL: deploy/grafana/dashboards/unitlet.json.panels[8].targets[0]";
    assert!(promtool_step.contains(panel), "names the panel: {err}");
    assert!(
        !promtool_step.contains("llm-stack.json"),
        "names only the broken one: {err}"
    );
}

/// One run of scripts/quickstart.sh on this machine (PID 1 is not systemd:
/// the private user manager), as root with a HOME of its own, the unitlet
/// binary the tests built (no `cargo build --profile dist`) and a private
/// setup named after this test (`/var/lib/NAME`, `/run/NAME`, cgroups
/// `NAME`), so it touches nothing of a real quickstart's.
struct Quickstart {
    home: tempfile::TempDir,
    demo: String,
}

impl Quickstart {
    fn new() -> Quickstart {
        let home = tempfile::Builder::new()
            .prefix("unitlet-qs-home.")
            .tempdir()
            .unwrap();
        let demo = format!("unitlet-qs-test-{}", std::process::id());
        Quickstart { home, demo }
    }

    fn base(&self) -> PathBuf {
        Path::new("/var/lib").join(&self.demo)
    }

    fn runtime(&self) -> PathBuf {
        Path::new("/run").join(&self.demo)
    }

    /// `scripts/quickstart.sh ARGS`, with a deadline (`timeout`).
    fn run(&self, args: &[&str]) -> Output {
        Command::new("timeout")
            .args(["600", "bash"])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/quickstart.sh"))
            .args(args)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("HOME", self.home.path())
            .env("UNITLET_BIN", crate::support::UNITLET)
            .env("UNITLET_DEMO", &self.demo)
            .stdin(Stdio::null())
            .output()
            .expect("bash scripts/quickstart.sh")
    }

    /// `bash -c 'source BASE/env; SCRIPT'`: as the printed hint says.
    fn sourced(&self, script: &str) -> Output {
        Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source '{}/env' && {script}",
                self.base().display()
            ))
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", self.home.path())
            .stdin(Stdio::null())
            .output()
            .expect("bash")
    }

    /// Every PID in the private setup's cgroups.
    fn pids(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        for cg in self.cgroups() {
            walk(&cg, &mut |p| {
                if p.file_name().is_some_and(|n| n == "cgroup.procs")
                    && let Ok(s) = std::fs::read_to_string(p)
                {
                    pids.extend(s.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
                }
            });
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// The private setup's cgroup directories, one per hierarchy.
    fn cgroups(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
            .unwrap()
            .flatten()
            .map(|e| e.path().join(&self.demo))
            .collect();
        out.push(Path::new("/sys/fs/cgroup").join(&self.demo));
        out.into_iter().filter(|p| p.is_dir()).collect()
    }
}

impl Drop for Quickstart {
    /// A test that failed half-way leaves nothing running either.
    fn drop(&mut self) {
        let _ = self.run(&["--uninstall"]);
        let _ = std::fs::remove_dir_all(self.base());
    }
}

/// Every path under `dir` (files, links and directories), depth first.
fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            walk(&p, f);
        }
        f(&p);
    }
}

/// The regular files and links under `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    walk(dir, &mut |p| {
        if std::fs::symlink_metadata(p).is_ok_and(|m| !m.is_dir()) {
            out.push(p.to_path_buf());
        }
    });
    out.sort();
    out
}

/// Issue 21 items 8, 9 and 10, end to end: quickstart brings the Debian part
/// of the stack to Ready (not merely some condition True), writes an
/// environment file to `source` after which `man unitlet` and `unitlet logs
/// prometheus -n 5` (Prometheus' own lines, with no journald on this
/// machine) work; `--uninstall` then leaves no process, cgroup, runtime
/// directory or installed file, and keeps (and names) a manifest you edited.
#[test]
fn quickstart_logs_man_and_uninstall_leave_nothing_behind() {
    for bin in [
        "/usr/bin/prometheus",
        "/usr/bin/prometheus-node-exporter",
        "/usr/bin/prometheus-alertmanager",
        "/usr/bin/man",
    ] {
        assert!(
            Path::new(bin).exists(),
            "{bin} is missing: scripts/test.sh installs it"
        );
    }
    let qs = Quickstart::new();
    let o = qs.run(&[]);
    let out = stdout(&o);
    assert!(o.status.success(), "quickstart: {out}{}", stderr(&o));
    // Item 10: it says how long it took and where the environment is.
    assert!(out.contains("converged in "), "{out}");
    assert!(out.contains("quickstart took "), "{out}");
    let env_file = qs.base().join("env");
    assert!(
        out.contains(&format!("source {}", env_file.display())),
        "{out}"
    );
    assert!(
        !out.contains("export XDG_RUNTIME_DIR="),
        "no long export line: {out}"
    );
    // Ready, as the sourced environment sees it, for every Service that can
    // be; the others are BinaryMissing.
    let o = qs.sourced("unitlet get -o json");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("unitlet get -o json: {e}: {}{}", stdout(&o), stderr(&o)));
    for name in ["prometheus", "node-exporter", "alertmanager"] {
        let r = crate::support::ready_in(&v, name);
        assert_eq!(
            r.as_ref().map(|r| r.0.as_str()),
            Some("True"),
            "{name}: {r:?}"
        );
    }
    for name in ["grafana", "loki", "promtail"] {
        let r = crate::support::ready_in(&v, name);
        assert_eq!(
            r.as_ref().map(|r| r.1.as_str()),
            Some("BinaryMissing"),
            "{name}: {r:?}"
        );
    }
    // `man unitlet` finds the installed page.
    let o = qs.sourced("man -w unitlet");
    assert!(o.status.success(), "man -w unitlet: {}", stderr(&o));
    assert_eq!(
        stdout(&o).trim(),
        qs.base()
            .join("data/man/man1/unitlet.1")
            .display()
            .to_string()
    );
    // Item 8: Prometheus' own lines (logfmt, from its log file).
    let o = qs.sourced("unitlet logs prometheus -n 5");
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let lines: Vec<String> = stdout(&o).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 5, "{lines:#?}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains("ts=") && l.contains("caller=") && l.contains("level=")),
        "not Prometheus' lines: {lines:#?}"
    );
    // And the operator's own log, with no NAME.
    let o = qs.sourced("unitlet logs -n 20");
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(!stdout(&o).trim().is_empty(), "unitlet's own log is empty");
    // A status hint names the command that works here.
    let o = qs.sourced("unitlet logs node-exporter --since -1h");
    assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("use -n N"), "{}", stderr(&o));

    // Item 9: what quickstart made, before --uninstall.
    let manager: u32 = std::fs::read_to_string(qs.base().join("manager.pid"))
        .expect("quickstart records its manager's PID")
        .trim()
        .parse()
        .unwrap();
    let pids = qs.pids();
    assert!(pids.contains(&manager), "{manager} not in {pids:?}");
    assert!(
        pids.len() >= 5,
        "manager, dbus, unitlet and the stack: {pids:?}"
    );
    let cgroups = qs.cgroups();
    assert!(!cgroups.is_empty());
    let installed_list = qs.base().join("config/unitlet/.installed");
    let installed: Vec<PathBuf> = std::fs::read_to_string(&installed_list)
        .expect("install.sh lists what it installed")
        .lines()
        .filter_map(|l| l.split_once("  ").map(|(_, p)| PathBuf::from(p)))
        .collect();
    let home = qs.home.path();
    for must in [
        home.join(".local/bin/unitlet"),
        qs.base().join("data/man/man1/unitlet.1"),
        qs.base().join("config/systemd/user/unitlet.service"),
        qs.base().join("config/unitlet/manifests/prometheus.yaml"),
    ] {
        assert!(installed.contains(&must), "{} not listed", must.display());
    }
    let unit_files = files_under(&qs.base().join("data/systemd/user"));
    assert!(
        unit_files.iter().any(|f| f.ends_with("prometheus.service")),
        "{unit_files:?}"
    );
    let logs = files_under(&qs.base().join("state/log"));
    assert!(
        logs.iter().any(|f| f.ends_with("prometheus.log")),
        "{logs:?}"
    );
    // A manifest the user edited is kept.
    let edited = qs
        .base()
        .join("config/unitlet/manifests/node-exporter.yaml");
    let mut text = std::fs::read_to_string(&edited).unwrap();
    text.push_str("# mine\n");
    std::fs::write(&edited, &text).unwrap();

    let o = qs.run(&["--uninstall"]);
    let out = stdout(&o);
    assert!(o.status.success(), "--uninstall: {out}{}", stderr(&o));
    assert!(
        out.contains(&edited.display().to_string()),
        "names what it keeps: {out}"
    );
    assert!(out.contains("kept"), "{out}");
    for pid in &pids {
        let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        assert!(
            !cg.contains(&qs.demo),
            "process {pid} of quickstart's still runs: {cg}"
        );
    }
    for cg in &cgroups {
        assert!(!cg.exists(), "cgroup {} is left", cg.display());
    }
    assert!(!qs.runtime().exists(), "{} is left", qs.runtime().display());
    let pid_file = qs.base().join("manager.pid");
    let left: Vec<&PathBuf> = installed
        .iter()
        .chain(&unit_files)
        .chain(&logs)
        .chain([&env_file, &installed_list, &pid_file])
        .filter(|p| std::fs::symlink_metadata(p).is_ok())
        .filter(|p| **p != edited)
        .collect();
    assert!(left.is_empty(), "installed files left: {left:#?}");
    // What is left is what it said it keeps: the edited manifest, the
    // stack's data, the generated secret.
    let rest: Vec<PathBuf> = files_under(&qs.base())
        .into_iter()
        .chain(files_under(home))
        .filter(|p| {
            *p != edited
                && !p.starts_with(qs.base().join("data/unitlet-stack"))
                && !p.starts_with(home.join(".config/unitlet/secrets"))
        })
        .collect();
    assert!(rest.is_empty(), "left behind: {rest:#?}");
    if qs.base().join("data/unitlet-stack").exists() {
        assert!(out.contains("unitlet-stack"), "names the kept data: {out}");
    }
}

/// Issue 21 item 10: quickstart waits for `Ready True` of every Service that
/// can be Ready (not for any condition `True`): a Service still `Starting`
/// keeps it waiting even while another condition of it is True; one whose
/// program is not installed (`BinaryMissing`) cannot be Ready and does not.
#[test]
fn quickstart_waits_for_ready_of_every_service_that_can_be_ready() {
    let ready = |table: &str| -> bool {
        let o = Command::new("bash")
            .arg("-c")
            .arg(format!(
                ". '{}'; printf '%s' \"$T\" | services_ready",
                lib_sh().display()
            ))
            .env("T", table)
            .output()
            .expect("bash");
        assert!(
            matches!(o.status.code(), Some(0 | 1)),
            "services_ready: {}",
            stderr(&o)
        );
        o.status.success()
    };
    let header = "NAME           KIND     READY  REASON         STATE\n";
    let footer = "\nlast reconciled 2s ago by the operator (running)\n";
    let starting = format!(
        "{header}prometheus     Service  False  Starting       activating/start\nalertmanager   Service  True   Running        active/running\ngrafana        Service  False  BinaryMissing  inactive/dead\nprometheus-tsdb Backup  True   Scheduled      active/waiting{footer}"
    );
    assert!(
        !ready(&starting),
        "a Service still Starting is not converged"
    );
    let done = starting.replace(
        "False  Starting       activating/start",
        "True   Running        active/running",
    );
    assert!(ready(&done), "{done}");
    let failed = done.replacen("True   Running", "False  Failed ", 1);
    assert!(!ready(&failed), "{failed}");
    assert!(!ready(""), "no table (unitlet get failed) is not converged");
    assert!(!ready(&format!("{header}{footer}")), "no Service at all");
}
