//! Rendering: a validated manifest becomes the exact bytes of the unit files
//! unitlet owns.
//!
//! Architecture Invariant: rendering is pure. It reads nothing (adopted unit
//! files were read at load time) and the same manifest always renders the
//! same bytes, which is what makes "nothing to do" detectable by comparing
//! files.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::manifest::{BackupSpec, DesiredState, Exec, Manifest, Resources, ServiceSpec, Spec};
use crate::unitfile;

/// The `[Unit]` key that marks a unit file as unitlet's. unitlet never
/// modifies, stops or deletes a unit without it.
pub const MARKER_KEY: &str = "X-Unitlet-Manifest";
/// The manifest file a unit came from, so a file that later fails to parse
/// still holds its units (and they are not garbage-collected).
pub const SOURCE_KEY: &str = "X-Unitlet-Source";

/// What a unit is for, which decides how the planner treats it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A Service's main unit: kept in its desired state.
    Main { state: DesiredState, enabled: bool },
    /// A Backup's timer: kept running and enabled.
    Timer,
    /// A Backup's oneshot: started only by its timer or a person.
    Oneshot,
}

/// One unit file unitlet wants on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredUnit {
    /// Unit name, e.g. `web.service`.
    pub name: String,
    pub manifest: String,
    pub role: Role,
    pub content: String,
    /// Limits to keep in force on the live unit (Services only).
    pub resources: Resources,
    /// Units this one is ordered after, so the plan lists starts in order.
    pub after: Vec<String>,
}

/// Where this unitlet lives, for Backup oneshots that must run the same
/// binary against the same locations.
#[derive(Debug, Clone, Default)]
pub struct RenderContext {
    pub exe: PathBuf,
    pub manifests: PathBuf,
    pub state_dir: PathBuf,
    pub unit_dir: PathBuf,
    pub bus: Option<String>,
}

/// Write `c` as a C escape systemd undoes when it reads a quoted word:
/// `\n`, `\t`, `\r` by name, other ASCII control bytes as `\xNN`, and
/// non-ASCII control characters as `\uXXXX` (systemd re-encodes those as
/// UTF-8). A unit file line then never holds a raw control character.
fn push_c_escape(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\t' => out.push_str("\\t"),
        '\r' => out.push_str("\\r"),
        c if (c as u32) < 0x80 => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c => {
            let _ = write!(out, "\\u{:04x}", c as u32);
        }
    }
}

/// Quote one argument for `ExecStart=` so systemd passes it through
/// verbatim: double quotes, with `\` and `"` escaped, `%` doubled (no
/// specifiers), `$` doubled (no variable expansion) and control characters
/// as C escapes.
///
/// NUL must have been rejected at validation (no argv can carry it).
pub fn quote_exec_arg(arg: &str) -> String {
    let mut out = String::with_capacity(arg.len() + 2);
    out.push('"');
    for c in arg.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            c if c.is_control() => push_c_escape(&mut out, c),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `ExecStart=` value for an argv. A lone `;` would separate commands, so
/// it is written as systemd's escaped `\;`.
pub fn exec_line(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if a == ";" {
                "\\;".to_string()
            } else {
                quote_exec_arg(a)
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Quote an `Environment=` assignment: one double-quoted word, `%` doubled.
/// (`$` is not expanded in `Environment=`, so it stays.)
fn quote_env(key: &str, value: &str) -> String {
    let mut out = String::from("\"");
    for c in format!("{key}={value}").chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '%' => out.push_str("%%"),
            c if c.is_control() => push_c_escape(&mut out, c),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Free text (Description=) with specifiers neutralised.
fn escape_text(s: &str) -> String {
    s.replace('%', "%%")
}

fn escape_path(p: &Path) -> String {
    escape_text(&p.to_string_lossy())
}

/// A duration in systemd's syntax, exact to the microsecond.
pub fn systemd_duration(d: Duration) -> String {
    let us = d.as_micros();
    if us.is_multiple_of(1_000_000) {
        format!("{}s", us / 1_000_000)
    } else if us.is_multiple_of(1000) {
        format!("{}ms", us / 1000)
    } else {
        format!("{us}us")
    }
}

fn header(out: &mut String, m: &Manifest, note: &str) {
    let _ = writeln!(
        out,
        "# Managed by unitlet from manifest \"{}\" ({}).",
        m.name,
        m.file.display()
    );
    let _ = writeln!(out, "# {note}");
    let _ = writeln!(out, "[Unit]");
    let _ = writeln!(out, "{MARKER_KEY}={}", m.name);
    let _ = writeln!(out, "{SOURCE_KEY}={}", escape_path(&m.file));
}

/// Lines for cgroup limits, in systemd's spelling.
pub fn resource_lines(r: &Resources) -> Vec<(&'static str, String)> {
    let mut v = Vec::new();
    if let Some(b) = r.memory_max {
        v.push(("MemoryMax", b.to_string()));
    }
    if let Some(b) = r.memory_high {
        v.push(("MemoryHigh", b.to_string()));
    }
    if let Some(p) = r.cpu_quota {
        v.push(("CPUQuota", format!("{p}%")));
    }
    if let Some(t) = r.tasks_max {
        v.push(("TasksMax", t.to_string()));
    }
    v
}

fn service_settings(out: &mut String, s: &ServiceSpec, adopted: bool) {
    if let Some(w) = &s.working_directory {
        let _ = writeln!(out, "WorkingDirectory={}", escape_path(w));
    }
    for (k, v) in &s.environment {
        let _ = writeln!(out, "Environment={}", quote_env(k, v));
    }
    // Secrets stay in their files: the unit names only the paths.
    if let Some(f) = &s.environment_file {
        let _ = writeln!(out, "EnvironmentFile={}", escape_path(f));
    }
    for (name, f) in &s.credentials {
        let _ = writeln!(out, "LoadCredential={name}:{}", escape_path(f));
    }
    match (&s.restart, adopted) {
        (Some(r), _) => {
            let _ = writeln!(out, "Restart={r}");
        }
        (None, false) => {
            let _ = writeln!(out, "Restart=on-failure");
        }
        (None, true) => {}
    }
    match (s.restart_sec, adopted) {
        (Some(d), _) => {
            let _ = writeln!(out, "RestartSec={}", systemd_duration(d));
        }
        (None, false) => {
            let _ = writeln!(out, "RestartSec=1s");
        }
        (None, true) => {}
    }
    for (k, v) in resource_lines(&s.resources) {
        let _ = writeln!(out, "{k}={v}");
    }
}

fn unit_settings(out: &mut String, m: &Manifest, s: &ServiceSpec, adopted: bool) {
    match (&s.description, adopted) {
        (Some(d), _) => {
            let _ = writeln!(out, "Description={}", escape_text(d));
        }
        (None, false) => {
            let _ = writeln!(out, "Description={}", m.name);
        }
        (None, true) => {}
    }
    for a in &s.after {
        let _ = writeln!(out, "After={a}.service");
        let _ = writeln!(out, "Wants={a}.service");
    }
}

/// Remove unitlet's own keys from an adopted file, so adopting a file that
/// unitlet once wrote does not duplicate them.
fn strip_markers(content: &str) -> String {
    let mut out = String::new();
    for line in content.lines() {
        let t = line.trim_start();
        if t.starts_with(MARKER_KEY)
            || t.starts_with(SOURCE_KEY)
            || t.starts_with("# Managed by unitlet")
        {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn render_service(m: &Manifest, s: &ServiceSpec) -> DesiredUnit {
    let mut out = String::new();
    match &s.exec {
        Exec::Command(argv) => {
            header(
                &mut out,
                m,
                "Do not edit: unitlet rewrites this file. Edit the manifest instead.",
            );
            unit_settings(&mut out, m, s, false);
            out.push_str("\n[Service]\n");
            // exec: the start job fails if the program cannot be executed, so
            // a missing binary is reported instead of looking "started".
            out.push_str("Type=exec\n");
            let _ = writeln!(out, "ExecStart={}", exec_line(argv));
            service_settings(&mut out, s, false);
            out.push_str("\n[Install]\nWantedBy=default.target\n");
        }
        Exec::UnitFile { path, content } => {
            header(
                &mut out,
                m,
                &format!(
                    "Adopted from {}; edit that file or the manifest, not this copy.",
                    path.display()
                ),
            );
            out.push('\n');
            let base = strip_markers(content);
            out.push_str(&base);
            if !base.ends_with('\n') {
                out.push('\n');
            }
            // Settings the manifest gives explicitly override the base file:
            // later assignments in a repeated section win in systemd.
            let mut unit = String::new();
            unit_settings(&mut unit, m, s, true);
            let mut svc = String::new();
            service_settings(&mut svc, s, true);
            if !unit.is_empty() || !svc.is_empty() {
                out.push_str("\n# Overrides from the manifest.\n");
                if !unit.is_empty() {
                    out.push_str("[Unit]\n");
                    out.push_str(&unit);
                }
                if !svc.is_empty() {
                    out.push_str("[Service]\n");
                    out.push_str(&svc);
                }
            }
            if s.enabled && !has_install(&base) {
                out.push_str("\n[Install]\nWantedBy=default.target\n");
            }
        }
    }
    DesiredUnit {
        name: format!("{}.service", m.name),
        manifest: m.name.clone(),
        role: crate::render::Role::Main {
            state: s.state,
            enabled: s.enabled,
        },
        content: out,
        resources: s.resources.clone(),
        after: s.after.iter().map(|a| format!("{a}.service")).collect(),
    }
}

fn has_install(content: &str) -> bool {
    unitfile::parse(content)
        .keys("Install")
        .any(|k| k == "WantedBy" || k == "RequiredBy" || k == "Alias")
}

fn render_backup(m: &Manifest, b: &BackupSpec, ctx: &RenderContext) -> Vec<DesiredUnit> {
    let mut timer = String::new();
    header(
        &mut timer,
        m,
        "Do not edit: unitlet rewrites this file. Edit the manifest instead.",
    );
    let _ = writeln!(
        timer,
        "Description=unitlet backup {} ({})",
        m.name,
        escape_text(&b.schedule.source)
    );
    timer.push_str("\n[Timer]\n");
    let _ = writeln!(timer, "OnCalendar={}", b.schedule.on_calendar);
    // A run missed while the machine was off happens once at next start.
    timer.push_str("Persistent=true\n");
    timer.push_str("RandomizedDelaySec=30s\n");
    let _ = writeln!(timer, "Unit={}.service", m.name);
    timer.push_str("\n[Install]\nWantedBy=timers.target\n");

    let mut svc = String::new();
    header(
        &mut svc,
        m,
        "Do not edit: unitlet rewrites this file. Edit the manifest instead.",
    );
    let _ = writeln!(svc, "Description=unitlet backup {}", m.name);
    svc.push_str("\n[Service]\nType=oneshot\n");
    let mut argv: Vec<String> = vec![ctx.exe.to_string_lossy().into_owned()];
    argv.push("--manifests".into());
    argv.push(ctx.manifests.to_string_lossy().into_owned());
    argv.push("--state-dir".into());
    argv.push(ctx.state_dir.to_string_lossy().into_owned());
    argv.push("--unit-dir".into());
    argv.push(ctx.unit_dir.to_string_lossy().into_owned());
    if let Some(bus) = &ctx.bus {
        argv.push("--bus".into());
        argv.push(bus.clone());
    }
    argv.push("backup".into());
    argv.push(m.name.clone());
    let _ = writeln!(svc, "ExecStart={}", exec_line(&argv));
    vec![
        DesiredUnit {
            name: format!("{}.timer", m.name),
            manifest: m.name.clone(),
            role: Role::Timer,
            content: timer,
            resources: Resources::default(),
            after: vec![],
        },
        DesiredUnit {
            name: format!("{}.service", m.name),
            manifest: m.name.clone(),
            role: Role::Oneshot,
            content: svc,
            resources: Resources::default(),
            after: vec![],
        },
    ]
}

/// Every unit file a manifest becomes.
pub fn render(m: &Manifest, ctx: &RenderContext) -> Vec<DesiredUnit> {
    match &m.spec {
        Spec::Service(s) => vec![render_service(m, s)],
        Spec::Backup(b) => render_backup(m, b, ctx),
    }
}

/// The manifest name in a unit file's marker, if it has one.
pub fn marker_of(content: &str) -> Option<String> {
    unitfile::parse(content)
        .first("Unit", MARKER_KEY)
        .map(str::to_string)
}

/// Whether a unit file's service is a oneshot: its last `[Service]`
/// `Type=` (the one in force) says so.
pub fn is_oneshot(content: &str) -> bool {
    unitfile::parse(content).last("Service", "Type") == Some("oneshot")
}

/// The manifest file recorded in a unit file, if any.
#[cfg(test)]
pub fn source_of(content: &str) -> Option<PathBuf> {
    ownership(content).1
}

/// A unit file's marker and recorded manifest file, read in one parse.
pub fn ownership(content: &str) -> (Option<String>, Option<PathBuf>) {
    let u = unitfile::parse(content);
    let marker = u.first("Unit", MARKER_KEY).map(str::to_string);
    let source = u
        .last("Unit", SOURCE_KEY)
        .map(|s| PathBuf::from(s.replace("%%", "%")));
    (marker, source)
}

/// Keys whose change can be applied to a running unit with
/// `SetUnitProperties`, without a restart.
pub const LIVE_KEYS: &[&str] = &["MemoryMax", "MemoryHigh", "CPUQuota", "TasksMax"];

/// What differs between two versions of a unit file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnitDiff {
    /// `Section.Key` of every setting that differs.
    pub changed: Vec<String>,
    /// Whether every difference is a live-settable resource limit (or a
    /// comment), so no restart is needed.
    pub only_live: bool,
}

/// Every value of every `(section, key)` of a unit file, in order: what
/// two versions are compared by.
fn settings(content: &str) -> BTreeMap<(String, String), Vec<String>> {
    let mut map: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for a in unitfile::parse(content).assignments {
        map.entry((a.section, a.key)).or_default().push(a.value);
    }
    map
}

/// What differs between two versions of a unit file, setting by setting
/// (read as systemd reads them: continued lines are one setting).
pub fn diff_units(old: &str, new: &str) -> UnitDiff {
    let a = settings(old);
    let b = settings(new);
    let mut changed = Vec::new();
    let mut only_live = true;
    let keys: std::collections::BTreeSet<_> = a.keys().chain(b.keys()).cloned().collect();
    for k in keys {
        if a.get(&k) != b.get(&k) {
            let live = k.0 == "Service" && LIVE_KEYS.contains(&k.1.as_str());
            // Unitlet's own source note changes when a manifest moves files;
            // it needs no restart.
            let bookkeeping = k.0 == "Unit" && k.1 == SOURCE_KEY;
            if !live && !bookkeeping {
                only_live = false;
            }
            changed.push(format!("{}.{}", k.0, k.1));
        }
    }
    UnitDiff { changed, only_live }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{PathContext, parse_str};

    fn manifest(y: &str) -> Manifest {
        let p = parse_str(
            y,
            Path::new("/home/u/.config/unitlet/manifests/web.yaml"),
            &PathContext {
                manifest_dir: PathBuf::from("/home/u/.config/unitlet/manifests"),
                home: Some(PathBuf::from("/home/u")),
            },
        );
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        p.manifests.into_iter().next().unwrap()
    }

    fn ctx() -> RenderContext {
        RenderContext {
            exe: PathBuf::from("/usr/bin/unitlet"),
            manifests: PathBuf::from("/home/u/.config/unitlet/manifests"),
            state_dir: PathBuf::from("/home/u/.local/state/unitlet"),
            unit_dir: PathBuf::from("/home/u/.local/share/systemd/user"),
            bus: None,
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_exec_arg("a b"), "\"a b\"");
        assert_eq!(quote_exec_arg("say \"hi\""), "\"say \\\"hi\\\"\"");
        assert_eq!(quote_exec_arg("100%"), "\"100%%\"");
        assert_eq!(quote_exec_arg("$HOME"), "\"$$HOME\"");
        assert_eq!(quote_exec_arg("a\\b"), "\"a\\\\b\"");
        assert_eq!(
            exec_line(&["/bin/sh".into(), "-c".into(), ";".into()]),
            "\"/bin/sh\" \"-c\" \\;"
        );
    }

    #[test]
    fn snapshot_command_service() {
        let units = web_units(
            "command: [/usr/bin/python3, -m, http.server, '8000', 'a b', '100%', '$HOME', 'q\"uote', 'back\\slash']\n  environment: {GREETING: 'hello world', PCT: '50%'}\n  after: [db]\n  workingDirectory: ~/srv\n  resources: {memoryMax: 512M, cpuQuota: 150%}",
        );
        insta::assert_snapshot!(units[0].content);
    }

    /// The units of Service `web` with `spec` (YAML lines, two-space
    /// indented after the first).
    fn web_units(spec: &str) -> Vec<DesiredUnit> {
        let m = manifest(&format!(
            "apiVersion: unitlet/v1\nkind: Service\nmetadata: {{name: web}}\nspec:\n  {spec}\n"
        ));
        render(&m, &ctx())
    }

    /// Service `web` adopting a small unit file, with `extra` spec lines.
    fn adopted(extra: &str) -> Manifest {
        let mut m = manifest(&format!(
            "apiVersion: unitlet/v1\nkind: Service\nmetadata: {{name: web}}\nspec:\n  unitFile: ../units/web.service\n  {extra}\n"
        ));
        if let Spec::Service(ServiceSpec {
            exec: Exec::UnitFile { content, .. },
            ..
        }) = &mut m.spec
        {
            *content = "[Unit]\nDescription=Web\n\n[Service]\nExecStart=/usr/bin/web\n".into();
        }
        m
    }

    #[test]
    fn snapshot_adopted_unit() {
        let m = adopted("resources: {memoryMax: 1G}");
        let units = render(&m, &ctx());
        insta::assert_snapshot!(units[0].content);
        assert_eq!(marker_of(&units[0].content).as_deref(), Some("web"));
    }

    #[test]
    fn snapshot_backup_units() {
        let m = manifest(
            "apiVersion: unitlet/v1\nkind: Backup\nmetadata: {name: tsdb}\nspec:\n  schedule: every 6h\n  keep: 28\n  prometheus: {url: 'http://127.0.0.1:9090', dataDir: /var/lib/prometheus}\n",
        );
        let units = render(&m, &ctx());
        assert_eq!(units.len(), 2);
        insta::assert_snapshot!("backup_timer", units[0].content);
        insta::assert_snapshot!("backup_service", units[1].content);
    }

    #[test]
    fn markers_and_diffs() {
        let m = manifest(
            "apiVersion: unitlet/v1\nkind: Service\nmetadata: {name: web}\nspec: {command: [/bin/true]}\n",
        );
        let a = render(&m, &ctx()).remove(0).content;
        assert_eq!(marker_of(&a).as_deref(), Some("web"));
        assert_eq!(
            source_of(&a),
            Some(PathBuf::from("/home/u/.config/unitlet/manifests/web.yaml"))
        );
        assert_eq!(
            marker_of("[Service]\nX-Unitlet-Manifest=web\n"),
            None,
            "marker must be in [Unit]"
        );
        let m2 = manifest(
            "apiVersion: unitlet/v1\nkind: Service\nmetadata: {name: web}\nspec: {command: [/bin/true], resources: {memoryMax: 1G}}\n",
        );
        let b = render(&m2, &ctx()).remove(0).content;
        let d = diff_units(&a, &b);
        assert!(d.only_live);
        assert_eq!(d.changed, vec!["Service.MemoryMax"]);
        let m3 = manifest(
            "apiVersion: unitlet/v1\nkind: Service\nmetadata: {name: web}\nspec: {command: [/bin/false]}\n",
        );
        let c = render(&m3, &ctx()).remove(0).content;
        let d = diff_units(&a, &c);
        assert!(!d.only_live);
        assert_eq!(d.changed, vec!["Service.ExecStart"]);
    }

    /// Issue 20 item 11: diffs of the shipped, continued node-exporter
    /// unit name `Service.ExecStart`, not the flags of its continuation
    /// lines; an adopted file's continued `WantedBy=` is an `[Install]`.
    #[test]
    fn continued_lines_diff_as_their_key() {
        let shipped = include_str!("../units/node-exporter.service");
        let changed = shipped.replace("/metrics", "/m");
        let d = diff_units(shipped, &changed);
        assert_eq!(d.changed, ["Service.ExecStart"]);
        assert!(!d.only_live);
        assert!(has_install(shipped));
        assert!(!has_install(
            "[Service]\nExecStart=/x \\\n  WantedBy=a.target\n"
        ));
    }

    #[test]
    fn oneshot_is_read_from_the_type_in_force() {
        assert!(is_oneshot("[Service]\nType = oneshot\nExecStart=/x\n"));
        assert!(!is_oneshot(
            "[Service]\nType=oneshot\n[Service]\nType=simple\n"
        ));
        assert!(!is_oneshot("[Service]\nExecStart=/x \\\n  Type=oneshot\n"));
        assert!(!is_oneshot("[Unit]\nType=oneshot\n"));
    }

    #[test]
    fn control_characters_become_c_escapes() {
        assert_eq!(quote_exec_arg("a\nb"), "\"a\\nb\"");
        assert_eq!(quote_exec_arg("a\tb\rc"), "\"a\\tb\\rc\"");
        assert_eq!(quote_exec_arg("\u{1}\u{1b}\u{7f}"), "\"\\x01\\x1b\\x7f\"");
        assert_eq!(quote_exec_arg("\u{85}"), "\"\\u0085\"");
        assert_eq!(quote_env("K", "1\n2%"), "\"K=1\\n2%%\"");
    }

    #[test]
    fn snapshot_multiline_argv_and_environment() {
        let units = web_units(
            "command: [/bin/sh, -c, \"echo one\\necho two\", \"tab\\there\", \"ctl\\x01\"]\n  environment: {SCRIPT: \"line 1\\nline 2\\t(tab)\"}",
        );
        let content = &units[0].content;
        assert!(
            !content.chars().any(|c| c.is_control() && c != '\n'),
            "no raw control character in the unit file"
        );
        insta::assert_snapshot!(content);
    }

    #[test]
    fn snapshot_secrets_are_referenced_never_inlined() {
        let units = web_units(
            "command: [/usr/bin/web]\n  environmentFile: ~/.config/unitlet/secrets/web.env\n  credentials: {admin-password: ~/.config/unitlet/secrets/admin, api.key: /etc/100%/key}",
        );
        insta::assert_snapshot!(units[0].content);
    }

    #[test]
    fn snapshot_adopted_unit_with_secrets() {
        let m = adopted("environmentFile: /s/web.env\n  credentials: {token: /s/token}");
        insta::assert_snapshot!(render(&m, &ctx())[0].content);
    }
}
