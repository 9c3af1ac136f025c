//! `unitlet doctor`'s verdicts: can this machine keep unitlet's promises?
//!
//! Each check ends `OK`, `WARN` or `FAIL` with a one-line reason and the fix.
//! The judgements are pure functions over what was read (`/proc`, cgroupfs,
//! `loginctl`, Prometheus' flags, the manifests), so they are unit-tested
//! here; [`machine::run`] gathers the facts, and the command
//! (`cli/doctor.rs`) prints the report and decides the exit status.
//!
//! The same cgroup reading backs the `LimitsEnforced` condition of Services
//! ([`limits_conditions`]): a limit whose controller the user manager does
//! not have is not enforced, and status says so instead of reporting it.

pub mod machine;

use crate::status::{ConditionStatus, ConditionType, Reason};

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::manifest::{self, BackupSource, Exec, GrafanaAuthSpec, Manifest, Resources};
use crate::status::Status;

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Severity {
    #[serde(rename = "OK")]
    Ok,
    #[serde(rename = "WARN")]
    Warn,
    #[serde(rename = "FAIL")]
    Fail,
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Severity::Ok => "OK",
            Severity::Warn => "WARN",
            Severity::Fail => "FAIL",
        })
    }
}

/// One check's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What was checked: `lingering`, `cgroup-controllers`,
    /// `program/NAME`, … (stable, for scripts).
    pub check: String,
    pub status: Severity,
    /// One line: what was found.
    pub reason: String,
    /// What to do about it; empty when nothing needs doing.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub fix: String,
}

impl Check {
    fn new(check: impl Into<String>, status: Severity, reason: impl Into<String>) -> Check {
        Check {
            check: check.into(),
            status,
            reason: reason.into(),
            fix: String::new(),
        }
    }
    fn ok(check: impl Into<String>, reason: impl Into<String>) -> Check {
        Check::new(check, Severity::Ok, reason)
    }
    fn warn(check: impl Into<String>, reason: impl Into<String>, fix: impl Into<String>) -> Check {
        Check::new(check, Severity::Warn, reason).with_fix(fix)
    }
    fn fail(check: impl Into<String>, reason: impl Into<String>, fix: impl Into<String>) -> Check {
        Check::new(check, Severity::Fail, reason).with_fix(fix)
    }
    fn with_fix(mut self, fix: impl Into<String>) -> Check {
        self.fix = fix.into();
        self
    }
}

/// All checks of one run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    /// The worst verdict (OK for no checks).
    pub fn worst(&self) -> Severity {
        self.checks
            .iter()
            .map(|c| c.status)
            .max()
            .unwrap_or(Severity::Ok)
    }

    /// The table `doctor` prints: one line per check, the fix indented
    /// below it, and a summary line.
    pub fn to_table(&self) -> String {
        let width = self.checks.iter().map(|c| c.check.len()).max().unwrap_or(5);
        let mut out = String::new();
        for c in &self.checks {
            out.push_str(&format!(
                "{:<4}  {:<width$}  {}\n",
                c.status.to_string(),
                c.check,
                c.reason
            ));
            if !c.fix.is_empty() {
                out.push_str(&format!("      {:<width$}  fix: {}\n", "", c.fix));
            }
        }
        let n = |s| self.checks.iter().filter(|c| c.status == s).count();
        out.push_str(&format!(
            "{} check(s): {} OK, {} WARN, {} FAIL\n",
            self.checks.len(),
            n(Severity::Ok),
            n(Severity::Warn),
            n(Severity::Fail)
        ));
        out
    }
}

// ---------------------------------------------------------------------------
// Lingering.

/// Judge `loginctl show-user UID --property=Linger --value`: its standard
/// output, or why it could not answer.
pub fn linger_check(answer: Result<String, String>) -> Check {
    const FIX: &str = "run `loginctl enable-linger` (as you), so your services run without a login session and survive logout";
    match answer {
        Ok(v) if v.trim() == "yes" => Check::ok(
            "lingering",
            "lingering is enabled: your services keep running after logout and start at boot",
        ),
        Ok(v) if v.trim() == "no" => Check::warn(
            "lingering",
            "lingering is off: systemd stops your user manager, and every service unitlet runs, when you log out",
            FIX,
        ),
        Ok(v) => Check::warn(
            "lingering",
            format!("lingering is unknown: loginctl answered {:?}", v.trim()),
            FIX,
        ),
        Err(why) => Check::warn(
            "lingering",
            format!("lingering is unknown: {why}"),
            format!("make sure systemd-logind runs, then {FIX}"),
        ),
    }
}

// ---------------------------------------------------------------------------
// cgroup controllers.

/// The controllers resource limits need.
pub const LIMIT_CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];

/// Which cgroup layout the machine uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Hierarchy {
    /// cgroup v2 only (`/sys/fs/cgroup/cgroup.controllers` exists).
    Unified,
    /// cgroup v1 controllers (legacy or hybrid mode).
    Legacy,
}

/// What the user manager's cgroup can use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Controllers {
    pub hierarchy: Hierarchy,
    /// The manager's cgroup (the v2 or `name=systemd` path).
    pub cgroup: String,
    /// Controllers among [`LIMIT_CONTROLLERS`] the manager can use.
    pub available: BTreeSet<String>,
}

/// One line of `/proc/PID/cgroup`: `ID:CONTROLLERS:PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupLine {
    pub controllers: Vec<String>,
    pub path: String,
}

/// Parse `/proc/PID/cgroup`.
pub fn parse_proc_cgroup(text: &str) -> Vec<CgroupLine> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let _id = it.next()?;
            let ctrls = it.next()?;
            let path = it.next()?;
            Some(CgroupLine {
                controllers: ctrls
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .collect(),
                path: path.to_string(),
            })
        })
        .collect()
}

/// Read which controllers the process `pid` (the user manager) can use.
///
/// cgroup v2: the controllers listed in its cgroup's `cgroup.controllers`
/// (what its parent delegated). cgroup v1: a controller whose hierarchy
/// holds the manager in a directory it may write.
pub fn read_controllers(pid: u32, root: &Path) -> Result<Controllers, String> {
    let proc = format!("/proc/{pid}/cgroup");
    let read = |p: &Path| {
        crate::fsutil::read_regular_capped(p, true, 1024 * 1024)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .map_err(|e| format!("{} {e}", p.display()))
    };
    let text = read(Path::new(&proc))?;
    let lines = parse_proc_cgroup(&text);
    let unified = root.join("cgroup.controllers").exists();
    if unified {
        let path = lines
            .iter()
            .find(|l| l.controllers.is_empty())
            .map(|l| l.path.clone())
            .ok_or_else(|| format!("{proc} has no cgroup v2 entry"))?;
        let file = root
            .join(path.trim_start_matches('/'))
            .join("cgroup.controllers");
        let have = read(&file)?;
        let have: BTreeSet<&str> = have.split_whitespace().collect();
        return Ok(Controllers {
            hierarchy: Hierarchy::Unified,
            cgroup: path,
            available: LIMIT_CONTROLLERS
                .iter()
                .filter(|c| have.contains(**c))
                .map(|c| c.to_string())
                .collect(),
        });
    }
    let cgroup = lines
        .iter()
        .find(|l| l.controllers.iter().any(|c| c == "name=systemd"))
        .or_else(|| lines.iter().find(|l| l.controllers.is_empty()))
        .map(|l| l.path.clone())
        .unwrap_or_default();
    let mut available = BTreeSet::new();
    for want in LIMIT_CONTROLLERS {
        let Some(line) = lines
            .iter()
            .find(|l| l.controllers.iter().any(|c| c == want))
        else {
            continue;
        };
        let rel = line.path.trim_start_matches('/');
        let candidates = [
            root.join(line.controllers.join(",")).join(rel),
            root.join(want).join(rel),
        ];
        if candidates
            .iter()
            .any(|d| d.is_dir() && rustix::fs::access(d, rustix::fs::Access::WRITE_OK).is_ok())
        {
            available.insert(want.to_string());
        }
    }
    Ok(Controllers {
        hierarchy: Hierarchy::Legacy,
        cgroup,
        available,
    })
}

/// A limit a Service sets that the user manager cannot enforce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unenforced {
    /// The manifest field (`resources.memoryMax`).
    pub field: &'static str,
    /// Why: the missing controller, or the cgroup version.
    pub why: String,
}

/// Which of `res`'s limits `c` cannot enforce. Pure.
pub fn unenforced(res: &Resources, c: &Controllers) -> Vec<Unenforced> {
    let mut out = Vec::new();
    let missing = |ctrl: &str| !c.available.contains(ctrl);
    let mut need = |set: bool, field: &'static str, ctrl: &str| {
        if set && missing(ctrl) {
            out.push(Unenforced {
                field,
                why: format!("the {ctrl} controller is not available to the user manager"),
            });
        }
    };
    need(res.memory_max.is_some(), "resources.memoryMax", "memory");
    need(res.memory_high.is_some(), "resources.memoryHigh", "memory");
    need(res.cpu_quota.is_some(), "resources.cpuQuota", "cpu");
    need(res.tasks_max.is_some(), "resources.tasksMax", "pids");
    if res.memory_high.is_some()
        && c.hierarchy == Hierarchy::Legacy
        && !out.iter().any(|u| u.field == "resources.memoryHigh")
    {
        out.push(Unenforced {
            field: "resources.memoryHigh",
            why: "MemoryHigh= needs cgroup v2 and this machine uses cgroup v1".into(),
        });
    }
    out
}

/// How to get a missing controller.
fn controllers_fix(c: &Controllers) -> String {
    match c.hierarchy {
        Hierarchy::Unified => {
            "delegate them to your user manager: `sudo systemctl edit user@.service` and add `[Service]` `Delegate=cpu cpuset io memory pids`, then log out and in (or reboot)".into()
        }
        Hierarchy::Legacy => {
            "boot with the unified cgroup hierarchy (kernel option `systemd.unified_cgroup_hierarchy=1`) and delegate `memory cpu pids` to user@.service; cgroup v1 cannot delegate controllers to a user manager".into()
        }
    }
}

/// The `cgroup-controllers` check.
pub fn controllers_check(c: &Result<Controllers, String>) -> Check {
    match c {
        Err(e) => Check::warn(
            "cgroup-controllers",
            format!("cannot tell which cgroup controllers the user manager has: {e}"),
            "make sure /proc and /sys/fs/cgroup are mounted and readable",
        ),
        Ok(c) => {
            let missing: Vec<&str> = LIMIT_CONTROLLERS
                .iter()
                .copied()
                .filter(|x| !c.available.contains(*x))
                .collect();
            let v = match c.hierarchy {
                Hierarchy::Unified => "cgroup v2",
                Hierarchy::Legacy => "cgroup v1",
            };
            if missing.is_empty() {
                let mut r = Check::ok(
                    "cgroup-controllers",
                    format!(
                        "memory, cpu and pids are available to the user manager ({v}, {})",
                        c.cgroup
                    ),
                );
                if c.hierarchy == Hierarchy::Legacy {
                    r = Check::warn(
                        "cgroup-controllers",
                        format!(
                            "memory, cpu and pids are available to the user manager, but on cgroup v1 ({}): resources.memoryHigh is not enforced",
                            c.cgroup
                        ),
                        controllers_fix(c),
                    );
                }
                r
            } else {
                let limits: Vec<&str> = missing
                    .iter()
                    .flat_map(|m| match *m {
                        "memory" => vec!["resources.memoryMax", "resources.memoryHigh"],
                        "cpu" => vec!["resources.cpuQuota"],
                        _ => vec!["resources.tasksMax"],
                    })
                    .collect();
                Check::warn(
                    "cgroup-controllers",
                    format!(
                        "the user manager ({v}, {}) lacks the {} controller(s): {} are NOT enforced",
                        c.cgroup,
                        missing.join(", "),
                        limits.join(", ")
                    ),
                    controllers_fix(c),
                )
            }
        }
    }
}

/// The `limits/NAME` check of one Service with limits.
pub fn limits_check(name: &str, res: &Resources, c: &Controllers) -> Check {
    let u = unenforced(res, c);
    if u.is_empty() {
        Check::ok(format!("limits/{name}"), "every limit it sets is enforced")
    } else {
        Check::fail(
            format!("limits/{name}"),
            format!("not enforced: {}", describe_unenforced(&u)),
            controllers_fix(c),
        )
    }
}

fn describe_unenforced(u: &[Unenforced]) -> String {
    u.iter()
        .map(|x| format!("{} ({})", x.field, x.why))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The user manager's controllers, read through its PID.
pub async fn manager_controllers(
    sd: &impl crate::manager::UserManager,
) -> Result<Controllers, String> {
    let pid = sd.manager_pid().await.map_err(|e| {
        format!(
            "cannot find the user manager's PID: {}",
            crate::error_chain(&e)
        )
    })?;
    let key = PathBuf::from(format!("/proc/{pid}/cgroup"));
    crate::fsutil::off_runtime(&key, crate::fsutil::READ_DEADLINE, move || {
        read_controllers(pid, Path::new("/sys/fs/cgroup"))
    })
    .await
    .map_err(|e| format!("reading {}: {e}", key.display()))?
}

/// Set `LimitsEnforced` on every Service that sets limits: `True` when the
/// user manager has their controllers, `False` (reason `ControllerMissing`)
/// naming each limit that is not enforced and why, `Unknown` when the
/// controllers cannot be read. Services without limits get no condition.
/// Called once per pass after `Ready` is set (a hook in
/// `reconcile::status::refresh_status`).
pub async fn limits_conditions(
    sd: &impl crate::manager::UserManager,
    manifests: &[Manifest],
    status: &mut Status,
) {
    let with_limits: Vec<(&str, &Resources)> = manifests
        .iter()
        .filter_map(|m| Some((m.name.as_str(), &m.as_service()?.resources)))
        .filter(|(_, r)| !r.is_empty())
        .collect();
    for m in manifests {
        if m.as_service().is_some_and(|s| s.resources.is_empty())
            && let Some(o) = status.objects.get_mut(&m.name)
        {
            o.conditions
                .retain(|c| c.type_ != ConditionType::LimitsEnforced);
        }
    }
    if with_limits.is_empty() {
        return;
    }
    let c = manager_controllers(sd).await;
    for (name, res) in with_limits {
        let Some(o) = status.objects.get_mut(name) else {
            continue;
        };
        let (st, reason, msg) = limits_condition(res, &c);
        o.set_condition(ConditionType::LimitsEnforced, st, reason, &msg);
    }
}

/// The `LimitsEnforced` condition for one Service's limits. Pure.
pub fn limits_condition(
    res: &Resources,
    c: &Result<Controllers, String>,
) -> (ConditionStatus, Reason, String) {
    match c {
        Err(e) => (
            ConditionStatus::Unknown,
            Reason::ControllersUnknown,
            format!("cannot tell whether its limits are enforced: {e}"),
        ),
        Ok(c) => {
            let u = unenforced(res, c);
            if u.is_empty() {
                (
                    ConditionStatus::True,
                    Reason::Enforced,
                    "the user manager has the cgroup controllers its limits need".into(),
                )
            } else {
                (
                    ConditionStatus::False,
                    Reason::ControllerMissing,
                    format!(
                        "not enforced: {}; see `unitlet doctor`",
                        describe_unenforced(&u)
                    ),
                )
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Programs, secrets, URLs.

/// Where systemd looks up a `command` program given without a `/`.
pub const SYSTEMD_PATH: [&str; 6] = [
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// The `program/NAME` check: the program exists (WARN when it is not
/// installed), is a file and executable (FAIL otherwise).
pub fn program_check(name: &str, prog: &str) -> Check {
    let check = format!("program/{name}");
    let candidates: Vec<PathBuf> = if prog.contains('/') {
        vec![PathBuf::from(prog)]
    } else {
        SYSTEMD_PATH
            .iter()
            .map(|d| Path::new(d).join(prog))
            .collect()
    };
    let Some(found) = candidates.iter().find(|p| p.exists()) else {
        let where_ = if prog.contains('/') {
            String::new()
        } else {
            format!(" (looked in {})", SYSTEMD_PATH.join(":"))
        };
        // Simply not installed (an optional part of a stack, say): unitlet
        // does not start the Service, shows it BinaryMissing, and starts it
        // once the program is there. Worth knowing, not a failure.
        return Check::warn(
            check,
            format!("{prog} is not installed{where_}: {name} is not started until it is"),
            format!("install {prog}, or fix spec.command of {name}"),
        );
    };
    let meta = std::fs::metadata(found);
    if !meta.as_ref().is_ok_and(|m| m.is_file()) {
        return Check::fail(
            check,
            format!("{} is not a regular file", found.display()),
            format!("fix spec.command of {name}"),
        );
    }
    if rustix::fs::access(found, rustix::fs::Access::EXEC_OK).is_err() {
        return Check::fail(
            check,
            format!("{} is not executable by you", found.display()),
            format!("run `chmod +x {}`", found.display()),
        );
    }
    Check::ok(
        check,
        format!("{} exists and is executable", found.display()),
    )
}

/// What to do about a secret file that fails its check: create it when it
/// does not exist, else make it a private regular file of yours.
fn secret_fix(p: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let shown = p.display();
    match std::fs::metadata(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            format!("create it with `install -m 600 /dev/null {shown}` and put the secret in it")
        }
        Err(e) => format!("make {shown} readable by you ({e})"),
        Ok(m) if !m.is_file() => format!("replace {shown} with a regular file holding the secret"),
        Ok(m) if m.uid() != rustix::process::geteuid().as_raw() => {
            format!("make it yours: `chown \"$(id -u)\" {shown}`, then `chmod 600 {shown}`")
        }
        Ok(_) => format!("run `chmod 600 {shown}`"),
    }
}

/// Secret files a manifest names: (field, path).
pub fn secret_files(m: &Manifest) -> Vec<(&'static str, PathBuf)> {
    let mut out = Vec::new();
    match &m.spec {
        manifest::Spec::Service(s) => {
            if let Some(p) = &s.environment_file {
                out.push(("environmentFile", p.clone()));
            }
            for p in s.credentials.values() {
                out.push(("credentials", p.clone()));
            }
        }
        manifest::Spec::Backup(b) => {
            if let Some(r) = &b.restic {
                out.push(("destination.restic.passwordFile", r.password_file.clone()));
            }
            if let BackupSource::Grafana { auth, .. } = &b.source {
                match auth {
                    GrafanaAuthSpec::TokenFile(p) => out.push(("grafana.tokenFile", p.clone())),
                    GrafanaAuthSpec::Basic { password_file, .. } => {
                        out.push(("grafana.basicAuth.passwordFile", password_file.clone()))
                    }
                }
            }
        }
    }
    out
}

/// Whether a URL's host is loopback without asking DNS: `Some(true)` for
/// loopback addresses and `localhost`, `Some(false)` for other addresses,
/// `None` for names that must be resolved.
pub fn literal_loopback(url: &reqwest::Url) -> Option<bool> {
    let host = url.host_str()?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        return Some(ip.is_loopback());
    }
    let d = bare.trim_end_matches('.').to_ascii_lowercase();
    (d == "localhost" || d.ends_with(".localhost")).then_some(true)
}

/// What Prometheus said about `--web.enable-lifecycle` in
/// `GET /api/v1/status/flags`, if it is a Prometheus that answered.
pub fn lifecycle_flag(flags_body: &str) -> Option<bool> {
    let v: serde_json::Value = serde_json::from_str(flags_body).ok()?;
    match v.get("data")?.get("web.enable-lifecycle")?.as_str()? {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// Whether the argv (or an adopted unit's `ExecStart=`) runs Prometheus,
/// and whether it passes `--web.enable-lifecycle`.
pub fn prometheus_argv(exec: &Exec) -> Option<bool> {
    let argv: Vec<String> = match exec {
        Exec::Command(a) => a.clone(),
        Exec::UnitFile { content, .. } => {
            let unit = crate::unitfile::parse(content);
            let commands = crate::unitfile::exec_commands(unit.last("Service", "ExecStart")?);
            commands.ok()?.into_iter().next()?
        }
    };
    let prog = argv.first()?;
    let base = Path::new(prog.trim_start_matches(['-', '@', '+', '!', ':']))
        .file_name()?
        .to_str()?;
    (base == "prometheus").then(|| {
        argv.iter()
            .any(|a| a == "--web.enable-lifecycle" || a == "--web.enable-lifecycle=true")
    })
}

/// The verdict on a reload URL: what Prometheus' flags said (if it
/// answered), else what the argv says. Pure.
pub fn lifecycle_check(name: &str, url: &str, live: Option<bool>, argv: Option<bool>) -> Check {
    let check = format!("reload/{name}");
    let shown = manifest::redact_url(url);
    let fix = format!(
        "add `--web.enable-lifecycle` to spec.command of {name}: without it Prometheus answers every reload POST with 403 \"Lifecycle API is not enabled.\""
    );
    match (live, argv) {
        (Some(false), _) => Check::fail(
            check,
            format!(
                "Prometheus behind {shown} runs without --web.enable-lifecycle (its /api/v1/status/flags says so): reloads fail with 403"
            ),
            fix,
        ),
        (Some(true), _) => Check::ok(
            check,
            format!("Prometheus behind {shown} has --web.enable-lifecycle"),
        ),
        (None, Some(false)) => Check::fail(
            check,
            format!(
                "{name} runs prometheus without --web.enable-lifecycle: reloads to {shown} will fail with 403"
            ),
            fix,
        ),
        (None, Some(true)) => Check::ok(
            check,
            format!("{name} runs prometheus with --web.enable-lifecycle"),
        ),
        (None, None) => Check::ok(check, format!("reload target {shown} is not Prometheus")),
    }
}

// ---------------------------------------------------------------------------
// Directories.

/// The verdict on a directory unitlet works in.
fn dir_check(check: &str, path: &Path, r: Result<(), String>) -> Check {
    match r {
        Ok(()) => Check::ok(
            check,
            format!("{} is yours and not writable by others", path.display()),
        ),
        Err(e) => Check::fail(
            check,
            e,
            "see the reason; unitlet refuses to work with it as it is",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctl(h: Hierarchy, have: &[&str]) -> Controllers {
        Controllers {
            hierarchy: h,
            cgroup: "/user.slice/user-1000.slice/user@1000.service".into(),
            available: have.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn res() -> Resources {
        Resources {
            memory_max: Some(1 << 30),
            memory_high: Some(1 << 29),
            cpu_quota: Some(150),
            tasks_max: Some(64),
        }
    }

    #[test]
    fn lingering_off_or_unknown_warns() {
        assert_eq!(linger_check(Ok("yes\n".into())).status, Severity::Ok);
        let off = linger_check(Ok("no\n".into()));
        assert_eq!(off.status, Severity::Warn);
        assert!(off.reason.contains("lingering is off"), "{}", off.reason);
        assert!(off.fix.contains("loginctl enable-linger"));
        let unknown = linger_check(Err(
            "`loginctl show-user 0` failed: Failed to connect to bus".into(),
        ));
        assert_eq!(unknown.status, Severity::Warn);
        assert!(
            unknown.reason.starts_with("lingering is unknown: "),
            "{}",
            unknown.reason
        );
        assert!(unknown.reason.contains("Failed to connect to bus"));
    }

    #[test]
    fn proc_cgroup_lines_parse() {
        let l = parse_proc_cgroup("12:cpu,cpuacct:/a\n1:name=systemd:/u\n0::/v2\n");
        assert_eq!(l[0].controllers, ["cpu", "cpuacct"]);
        assert_eq!(l[0].path, "/a");
        assert_eq!(l[1].controllers, ["name=systemd"]);
        assert!(l[2].controllers.is_empty());
        assert_eq!(l[2].path, "/v2");
    }

    #[test]
    fn missing_controllers_name_the_limits_not_enforced() {
        let all = ctl(Hierarchy::Unified, &["memory", "cpu", "pids"]);
        assert!(unenforced(&res(), &all).is_empty());
        assert_eq!(
            limits_condition(&res(), &Ok(all.clone())).0,
            ConditionStatus::True
        );
        let no_cpu = ctl(Hierarchy::Unified, &["memory", "pids"]);
        let u = unenforced(&res(), &no_cpu);
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].field, "resources.cpuQuota");
        let (st, reason, msg) = limits_condition(&res(), &Ok(no_cpu.clone()));
        assert_eq!(
            (st, reason),
            (ConditionStatus::False, Reason::ControllerMissing)
        );
        assert!(
            msg.contains("resources.cpuQuota (the cpu controller is not available"),
            "{msg}"
        );
        // Only the limits a Service sets count.
        let only_mem = Resources {
            memory_max: Some(1),
            ..Default::default()
        };
        assert!(unenforced(&only_mem, &no_cpu).is_empty());
        let check = controllers_check(&Ok(no_cpu));
        assert_eq!(check.status, Severity::Warn);
        assert!(
            check
                .reason
                .contains("lacks the cpu controller(s): resources.cpuQuota are NOT enforced"),
            "{}",
            check.reason
        );
        assert!(check.fix.contains("Delegate="), "{}", check.fix);
        assert_eq!(
            limits_condition(&res(), &Err("x".into())).0,
            ConditionStatus::Unknown
        );
    }

    #[test]
    fn memory_high_is_not_enforced_on_cgroup_v1() {
        let v1 = ctl(Hierarchy::Legacy, &["memory", "cpu", "pids"]);
        let u = unenforced(&res(), &v1);
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].field, "resources.memoryHigh");
        assert!(u[0].why.contains("cgroup v2"));
        let max_only = Resources {
            memory_max: Some(1),
            ..Default::default()
        };
        assert!(unenforced(&max_only, &v1).is_empty());
        assert_eq!(controllers_check(&Ok(v1)).status, Severity::Warn);
    }

    #[test]
    fn read_controllers_from_a_fake_unified_tree() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("cgroup.controllers"), "cpu memory pids io").unwrap();
        // Our own /proc entry says where we are; build that path in the fake root.
        let me = std::process::id();
        let text = std::fs::read_to_string(format!("/proc/{me}/cgroup")).unwrap();
        let path = parse_proc_cgroup(&text)
            .into_iter()
            .find(|l| l.controllers.is_empty())
            .map(|l| l.path)
            .unwrap_or_else(|| "/".into());
        let dir = d.path().join(path.trim_start_matches('/'));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cgroup.controllers"), "memory pids\n").unwrap();
        let c = read_controllers(me, d.path()).unwrap();
        assert_eq!(c.hierarchy, Hierarchy::Unified);
        assert_eq!(c.available, ["memory", "pids"].map(String::from).into());
    }

    /// Issue 21 item 7: the fix for a secret file that does not exist is
    /// to create it, not to `chmod` it.
    #[test]
    fn a_missing_secret_file_is_to_be_created_not_chmodded() {
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("token");
        let fix = secret_fix(&missing);
        assert!(!fix.contains("chmod"), "{fix}");
        assert!(fix.contains("install -m 600 /dev/null"), "{fix}");
        std::fs::write(&missing, "t").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&missing, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(secret_fix(&missing).contains("chmod 600"));
    }

    #[test]
    fn programs_not_installed_warn_not_executable_fail() {
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("nope");
        // Issue 21 item 7: simply not installed (an optional component):
        // the Service waits for it, not started; a warning.
        let c = program_check("web", missing.to_str().unwrap());
        assert_eq!(c.status, Severity::Warn);
        assert!(c.reason.contains("is not installed"), "{}", c.reason);
        assert_eq!(c.check, "program/web");
        let c = program_check("web", "surely-not-a-program-xyz");
        assert_eq!(c.status, Severity::Warn);
        assert!(
            c.reason.contains("looked in /usr/local/sbin"),
            "{}",
            c.reason
        );
        assert_eq!(program_check("web", "sh").status, Severity::Ok);
        let f = d.path().join("script");
        std::fs::write(&f, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        // root may execute nothing without an x bit either.
        let c = program_check("web", f.to_str().unwrap());
        assert_eq!(c.status, Severity::Fail, "{c:?}");
        assert!(c.reason.contains("not executable"));
    }

    #[test]
    fn prometheus_without_lifecycle_is_flagged() {
        let flags = r#"{"status":"success","data":{"web.enable-lifecycle":"false","web.listen-address":"0.0.0.0:9090"}}"#;
        assert_eq!(lifecycle_flag(flags), Some(false));
        assert_eq!(
            lifecycle_flag(&flags.replace("\"false\"", "\"true\"")),
            Some(true)
        );
        assert_eq!(lifecycle_flag("404 page not found"), None);
        let argv =
            |a: &[&str]| prometheus_argv(&Exec::Command(a.iter().map(|s| s.to_string()).collect()));
        assert_eq!(
            argv(&["/usr/bin/prometheus", "--config.file=p.yml"]),
            Some(false)
        );
        assert_eq!(argv(&["prometheus", "--web.enable-lifecycle"]), Some(true));
        assert_eq!(argv(&["/usr/bin/prometheus-alertmanager"]), None);
        let u = Exec::UnitFile {
            path: "/x".into(),
            content: "[Service]\nExecStart=/usr/bin/prometheus --web.enable-lifecycle\n".into(),
        };
        assert_eq!(prometheus_argv(&u), Some(true));
        // Issue 20 item 11: a flag on a continued line is the command's.
        let u = Exec::UnitFile {
            path: "/x".into(),
            content: "[Service]\nExecStart=/usr/bin/prometheus \\\n  --web.enable-lifecycle\n"
                .into(),
        };
        assert_eq!(prometheus_argv(&u), Some(true));
        let url = "http://127.0.0.1:9090/-/reload";
        assert_eq!(
            lifecycle_check("p", url, Some(false), Some(true)).status,
            Severity::Fail
        );
        assert_eq!(
            lifecycle_check("p", url, None, Some(false)).status,
            Severity::Fail
        );
        assert!(
            lifecycle_check("p", url, None, Some(false))
                .fix
                .contains("403")
        );
        assert_eq!(
            lifecycle_check("p", url, Some(true), None).status,
            Severity::Ok
        );
        assert_eq!(lifecycle_check("p", url, None, None).status, Severity::Ok);
    }

    #[test]
    fn loopback_hosts_are_recognised_without_dns() {
        let l = |u: &str| literal_loopback(&reqwest::Url::parse(u).unwrap());
        assert_eq!(l("http://127.0.0.1:9090/-/ready"), Some(true));
        assert_eq!(l("http://[::1]:9090/"), Some(true));
        assert_eq!(l("http://localhost:9090/"), Some(true));
        assert_eq!(l("http://10.0.0.5:9090/"), Some(false));
        assert_eq!(l("http://example.org/"), None);
    }
}
