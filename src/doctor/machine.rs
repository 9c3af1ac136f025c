//! `unitlet doctor`'s machine checks: gathers the facts (the manifests,
//! the user manager, `loginctl`, Prometheus' flags, DNS, backup
//! destinations, secret files) and judges each with the verdicts of
//! [`super`]. Prints nothing: the command (`cli/doctor.rs`) does.

use std::time::Duration;

use super::{
    Check, Report, controllers_check, dir_check, lifecycle_check, lifecycle_flag, limits_check,
    linger_check, literal_loopback, manager_controllers, program_check, prometheus_argv,
    secret_files, secret_fix,
};
use crate::locations::Locations;
use crate::manifest::{self, Exec, LoadedSet, Manifest, ReloadMethod};
use crate::systemd::Systemd;

/// Runs every check, in a stable order: directories and manifests, the
/// user manager, lingering and cgroup controllers, then each manifest's
/// programs, URLs, backup destination and secret files.
pub async fn run(loc: &Locations) -> Report {
    let mut checks = Vec::new();
    let loaded = manifests_dir(loc, &mut checks);
    checks.push(state_dir(loc));
    let manifests = match loaded {
        Some(l) => {
            for e in &l.errors {
                checks.push(Check::fail(
                    format!("manifest/{}", manifest::implied_name(&e.file)),
                    e.to_string(),
                    "fix the manifest; `unitlet validate` shows every problem",
                ));
            }
            l.manifests
        }
        None => Vec::new(),
    };
    user_manager(loc, &manifests, &mut checks).await;
    let http = crate::reload::http_client();
    for m in &manifests {
        per_manifest(loc, &http, m, &mut checks).await;
    }
    Report { checks }
}

/// The `manifests-dir` check; the manifests when the directory loads.
fn manifests_dir(loc: &Locations, checks: &mut Vec<Check>) -> Option<LoadedSet> {
    match manifest::load_dir(&loc.manifests) {
        Ok(l) => {
            checks.push(dir_check("manifests-dir", &loc.manifests, Ok(())));
            Some(l)
        }
        Err(e) => {
            let p = loc.manifests.display();
            let fix = match &e {
                manifest::LoadError::Missing { .. } | manifest::LoadError::NoSuchPath { .. } => {
                    format!("run `mkdir -p {p}`, or pass --manifests")
                }
                manifest::LoadError::Insecure { .. } => format!("run `chmod go-w {p}`"),
                manifest::LoadError::NotOwned { me, .. } => {
                    format!("run `chown {me} {p}` if it is yours, or pass --manifests")
                }
                manifest::LoadError::Unreadable { .. } => {
                    format!("make {p} a directory you can read, or pass --manifests")
                }
            };
            checks.push(Check::fail("manifests-dir", crate::error_chain(&e), fix));
            None
        }
    }
}

/// The `state-dir` check (a state directory not made yet is fine).
fn state_dir(loc: &Locations) -> Check {
    match loc.check_state_dir() {
        Ok(()) if !loc.state_dir.exists() => Check::ok(
            "state-dir",
            format!(
                "{} does not exist yet; unitlet creates it (mode 0755)",
                loc.state_dir.display()
            ),
        ),
        res => dir_check(
            "state-dir",
            &loc.state_dir,
            res.map_err(|e| crate::error_chain(&e)),
        ),
    }
}

/// The `user-manager`, `unit-dir`, `lingering` and `cgroup-controllers`
/// checks, and `limits/NAME` for each Service that sets limits.
async fn user_manager(loc: &Locations, manifests: &[Manifest], checks: &mut Vec<Check>) {
    let sd = match Systemd::connect(loc.bus.as_deref()).await {
        Ok(sd) => {
            checks.push(Check::ok(
                "user-manager",
                "the user manager answers over D-Bus",
            ));
            Some(sd)
        }
        Err(e) => {
            checks.push(Check::fail(
                "user-manager",
                crate::error_chain(&e),
                "start it (`systemctl --user status`), or pass --bus",
            ));
            None
        }
    };
    if let Some(sd) = &sd {
        checks.push(match sd.check_unit_dir(&loc.unit_dir).await {
            Ok(()) => Check::ok(
                "unit-dir",
                format!(
                    "{} is on the user manager's UnitPath",
                    loc.unit_dir.display()
                ),
            ),
            Err(e) => Check::fail(
                "unit-dir",
                crate::error_chain(&e),
                "pass a --unit-dir on the UnitPath (by default ~/.local/share/systemd/user)",
            ),
        });
    }
    checks.push(linger_check(loginctl_linger().await));
    let Some(sd) = &sd else {
        return;
    };
    let c = manager_controllers(sd).await;
    checks.push(controllers_check(&c));
    if let Ok(c) = &c {
        for m in manifests {
            if let Some(s) = m.as_service()
                && !s.resources.is_empty()
            {
                checks.push(limits_check(&m.name, &s.resources, c));
            }
        }
    }
}

/// One manifest's checks: its program, reload and readiness URLs, backup
/// destination and secret files.
async fn per_manifest(
    loc: &Locations,
    http: &reqwest::Client,
    m: &Manifest,
    checks: &mut Vec<Check>,
) {
    if let Some(s) = m.as_service() {
        if let Exec::Command(argv) = &s.exec {
            checks.push(program_check(&m.name, &argv[0]));
        }
        if let Some(ReloadMethod::Http { url }) = &s.reload {
            let live = prometheus_flags(http, url).await;
            checks.push(lifecycle_check(
                &m.name,
                url,
                live,
                prometheus_argv(&s.exec),
            ));
            checks.push(loopback_check(format!("reload-url/{}", m.name), "reload URL", url).await);
        }
        if let Some(rd) = &s.readiness {
            let check = format!("readiness-url/{}", m.name);
            checks.push(loopback_check(check, "readiness URL", &rd.url).await);
        }
    }
    if let Some(b) = m.as_backup() {
        checks.push(match &b.restic {
            Some(_) => restic_check(&m.name).await,
            None => destination_check(loc, &m.name, b),
        });
    }
    for (field, p) in secret_files(m) {
        let check = format!("secret/{}", m.name);
        checks.push(match manifest::check_secret_file(&p) {
            Ok(()) => Check::ok(check, format!("{field} {} is private", p.display())),
            Err(e) => Check::fail(check, format!("{field} {e}"), secret_fix(&p)),
        });
    }
}

/// `loginctl show-user UID --property=Linger --value`, within 5 s.
async fn loginctl_linger() -> Result<String, String> {
    let uid = rustix::process::getuid().as_raw();
    let run = tokio::process::Command::new("loginctl")
        .args([
            "show-user",
            &uid.to_string(),
            "--property=Linger",
            "--value",
        ])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(Duration::from_secs(5), run).await {
        Err(_) => Err("`loginctl show-user` did not answer within 5s".into()),
        Ok(Err(e)) => Err(format!("cannot run loginctl: {e}")),
        Ok(Ok(o)) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).into_owned()),
        Ok(Ok(o)) => {
            let err = String::from_utf8_lossy(&o.stderr);
            let line = err.lines().next().unwrap_or("").trim();
            Err(format!(
                "`loginctl show-user {uid}` failed ({}): {}",
                o.status,
                if line.is_empty() { "no output" } else { line }
            ))
        }
    }
}

/// The `…-url/NAME` check: the URL's host is (or resolves only to)
/// loopback.
async fn loopback_check(check: String, what: &str, url: &str) -> Check {
    let shown = manifest::redact_url(url);
    let Ok(u) = reqwest::Url::parse(url) else {
        return Check::fail(
            check,
            format!("{what} {shown} is not a URL"),
            "fix the manifest",
        );
    };
    let fix = format!(
        "point {what} at 127.0.0.1 or localhost: unitlet probes it from this machine, and a remote address makes a remote host decide this one's health"
    );
    match literal_loopback(&u) {
        Some(true) => return Check::ok(check, format!("{what} {shown} is loopback")),
        Some(false) => {
            return Check::warn(
                check,
                format!("{what} {shown} is not a loopback address"),
                fix,
            );
        }
        None => {}
    }
    let host = u.host_str().unwrap_or_default().to_string();
    let port = u.port_or_known_default().unwrap_or(80);
    let look = tokio::net::lookup_host((host.clone(), port));
    match tokio::time::timeout(Duration::from_secs(3), look).await {
        Ok(Ok(addrs)) => {
            let addrs: Vec<std::net::SocketAddr> = addrs.collect();
            if !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()) {
                Check::ok(check, format!("{what} {shown} resolves to loopback"))
            } else {
                let ips: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
                Check::warn(
                    check,
                    format!(
                        "{what} {shown}: {host} resolves to {} (not only loopback)",
                        ips.join(", ")
                    ),
                    fix,
                )
            }
        }
        Ok(Err(e)) => Check::warn(
            check,
            format!("{what} {shown}: cannot resolve {host}: {e}"),
            fix,
        ),
        Err(_) => Check::warn(
            check,
            format!("{what} {shown}: resolving {host} timed out"),
            fix,
        ),
    }
}

/// Prometheus' `--web.enable-lifecycle`, from `GET /api/v1/status/flags`
/// beside the reload URL (`None`: not a Prometheus that answered).
async fn prometheus_flags(http: &reqwest::Client, reload_url: &str) -> Option<bool> {
    let mut u = reqwest::Url::parse(reload_url).ok()?;
    let path = u.path().to_string();
    let base = path.strip_suffix("/-/reload")?;
    u.set_path(&format!("{base}/api/v1/status/flags"));
    u.set_query(None);
    let mut r = http
        .get(u)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    let body = crate::http::read_body(&mut r, 1024 * 1024).await.ok()?;
    lifecycle_flag(&String::from_utf8_lossy(&body))
}

/// The `restic/NAME` check of a Backup whose destination is a restic
/// repository: restic is installed and new enough. (The repository itself
/// is not opened: that needs its password and maybe the network.)
async fn restic_check(name: &str) -> Check {
    let check = format!("restic/{name}");
    match crate::restic::check_version().await {
        Ok(v) => Check::ok(
            check,
            format!("restic {v} is installed (0.14 or newer is needed)"),
        ),
        Err(e) => Check::fail(
            check,
            e.to_string(),
            "install Debian's restic: `apt-get install restic`".to_owned(),
        ),
    }
}

/// The `backup-destination/NAME` check: whether a run of Backup NAME
/// could use its destination (the default one included), creating nothing.
fn destination_check(loc: &Locations, name: &str, b: &manifest::BackupSpec) -> Check {
    let dest = crate::backup_cmd::destination(loc, name, b);
    let own = crate::backup::own_backups_dir(loc);
    let check = format!("backup-destination/{name}");
    match crate::backup::inspect_destination(&dest, Some(&own)) {
        Ok(msg) => Check::ok(check, msg),
        Err(e) => Check::fail(
            check,
            e,
            format!(
                "fix it as the reason says, or set spec.destination of {name} to a directory of your own"
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Severity;

    #[tokio::test]
    async fn non_loopback_urls_are_flagged() {
        let c = loopback_check(
            "readiness-url/w".into(),
            "readiness URL",
            "http://192.0.2.1:80/",
        )
        .await;
        assert_eq!(c.status, Severity::Warn);
        assert!(c.reason.contains("not a loopback address"), "{}", c.reason);
        let c = loopback_check(
            "readiness-url/w".into(),
            "readiness URL",
            "http://u:secret@localhost/",
        )
        .await;
        assert_eq!(c.status, Severity::Ok);
        assert!(!c.reason.contains("secret"), "{}", c.reason);
    }
}
