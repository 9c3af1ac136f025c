//! Issue 7: the shipped stack, checked by the real tools, and installed by
//! deploy/install.sh into a private user manager where unitlet itself runs
//! as `unitlet.service`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::reload::http_get;
use crate::support::{UNITLET, UserManager, stderr, stdout, wait_for};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn shipped_manifests_validate_and_render_units_that_verify() {
    let um = UserManager::start();
    let manifests = repo().join("manifests");
    // Grafana's admin password is in a private file under the home
    // directory (install.sh creates it); validation checks it is private.
    let home = tempfile::Builder::new()
        .prefix("unitlet-home.")
        .tempdir()
        .unwrap();
    let secrets = home.path().join(".config/unitlet/secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    let env_file = secrets.join("grafana.env");
    std::fs::write(&env_file, "GF_SECURITY_ADMIN_PASSWORD=not-in-any-unit\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&env_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let env = [("HOME", home.path())];
    let o = um.unitlet_env(
        &["--manifests", manifests.to_str().unwrap(), "validate"],
        &env,
    );
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("8 manifest(s) valid, 0 error(s)"),
        "{}",
        stdout(&o)
    );
    let out = um.runtime.join("rendered");
    for name in [
        "prometheus",
        "grafana",
        "loki",
        "promtail",
        "node-exporter",
        "alertmanager",
        "prometheus-tsdb",
        "grafana-dashboards",
    ] {
        let o = um.unitlet_env(
            &[
                "--manifests",
                manifests.to_str().unwrap(),
                "render",
                name,
                "--out",
                out.to_str().unwrap(),
            ],
            &env,
        );
        assert!(o.status.success(), "render {name}: {}", stderr(&o));
    }
    let grafana = std::fs::read_to_string(out.join("grafana.service")).unwrap();
    assert!(
        grafana.contains(&format!("EnvironmentFile={}", env_file.display()))
            && !grafana.contains("not-in-any-unit"),
        "{grafana}"
    );
    let files: Vec<PathBuf> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(files.len(), 10, "{files:?}");
    let o = um.verify_units(&files);
    // Syntax only: programs that are not installed here (Grafana, Loki,
    // Promtail) are the one thing allowed to be reported.
    let err = stderr(&o);
    let problems: Vec<&str> = err
        .lines()
        .filter(|l| {
            !(l.contains("grafana-server")
                || l.contains("/usr/bin/loki")
                || l.contains("/usr/bin/promtail"))
        })
        .filter(|l| !l.contains("Unit configuration has fatal error, unit will not be started"))
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert!(
        problems.is_empty(),
        "systemd-analyze verify:\n{}",
        problems.join("\n")
    );
}

/// NAME's Ready condition as `unitlet get` shows it to the user whose home
/// is `home` (manifests name files under `~/`).
fn ready(um: &UserManager, home: &Path, name: &str) -> Option<(String, String, String)> {
    let o = um.unitlet_env(&["get", "-o", "json"], &[("HOME", home)]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
    crate::support::ready_in(&v, name)
}

#[test]
fn install_script_brings_up_the_debian_part_of_the_stack() {
    for bin in [
        "/usr/bin/prometheus",
        "/usr/bin/prometheus-node-exporter",
        "/usr/bin/prometheus-alertmanager",
    ] {
        assert!(
            Path::new(bin).exists(),
            "{bin} is missing: scripts/test.sh installs it"
        );
    }
    let home = tempfile::Builder::new()
        .prefix("unitlet-home.")
        .tempdir()
        .unwrap();
    let um = UserManager::start_with_home(Some(home.path()));
    let mut cmd = std::process::Command::new("bash");
    cmd.arg(repo().join("deploy/install.sh"))
        .env("HOME", home.path())
        .env("UNITLET_BIN", UNITLET);
    for (k, v) in um.envs() {
        cmd.env(k, v);
    }
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "install.sh: {}{}",
        stdout(&o),
        stderr(&o)
    );
    assert_eq!(
        um.active("unitlet.service"),
        "active",
        "unitlet runs as a Type=notify user service"
    );
    // Grafana's admin password was generated into a private file.
    let env_file = home.path().join(".config/unitlet/secrets/grafana.env");
    let meta = std::fs::metadata(&env_file).expect("install.sh creates grafana.env");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let pw = std::fs::read_to_string(&env_file).unwrap();
    let pw = pw
        .trim()
        .strip_prefix("GF_SECURITY_ADMIN_PASSWORD=")
        .expect("the file sets GF_SECURITY_ADMIN_PASSWORD");
    assert!(pw.len() >= 16, "a weak generated password");
    let t = Duration::from_secs(120);
    for name in ["prometheus", "node-exporter", "alertmanager"] {
        wait_for(t, &format!("{name} Ready"), || {
            ready(&um, home.path(), name).filter(|r| r.0 == "True")
        });
    }
    assert_eq!(
        um.prop("prometheus.service", "MemoryMax"),
        (2u64 << 30).to_string()
    );
    assert_eq!(um.prop("prometheus.service", "CPUQuotaPerSecUSec"), "2s");
    assert_eq!(
        um.prop("alertmanager.service", "MemoryMax"),
        (256u64 << 20).to_string()
    );
    assert_eq!(
        um.prop("node-exporter.service", "MemoryMax"),
        (256u64 << 20).to_string()
    );
    for name in ["grafana", "loki", "promtail"] {
        let (status, _reason, message) = wait_for(t, &format!("{name} reported"), || {
            ready(&um, home.path(), name).filter(|r| r.1 == "BinaryMissing")
        });
        assert_eq!(status, "False");
        assert!(
            message.contains("not installed") && message.contains("install"),
            "{message}"
        );
    }
    // node_exporter's target is up in Prometheus (scraped every 30 s).
    wait_for(Duration::from_secs(90), "node target up", || {
        http_get("http://127.0.0.1:9090/api/v1/query?query=up%7Bjob%3D%22node%22%7D")
            .filter(|(_, b)| b.contains("\"1\"]"))
            .map(|_| ())
    });
    let unit = std::fs::read_to_string(um.unit_dir.join("grafana.service")).unwrap();
    assert!(
        unit.contains("EnvironmentFile=") && !unit.contains(pw),
        "{unit}"
    );
    let o = um.systemctl(&["list-timers", "--all", "--no-pager"]);
    assert!(
        stdout(&o).contains("prometheus-tsdb.timer")
            && stdout(&o).contains("grafana-dashboards.timer"),
        "{}",
        stdout(&o)
    );
}
