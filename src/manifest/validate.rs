//! Raw documents to the typed model: field checks, services, backups and
//! `after` cycles.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde_saphyr::Spanned;

use crate::schedule::Schedule;

use super::load::*;
use super::model::*;
use super::parse::*;

struct Ctx<'a> {
    file: &'a Path,
}

impl Ctx<'_> {
    fn err<T>(
        &self,
        at: &serde_saphyr::Location,
        message: impl Into<String>,
    ) -> Result<T, ManifestError> {
        Err(ManifestError {
            file: self.file.to_path_buf(),
            line: at.line(),
            column: at.column(),
            message: message.into(),
        })
    }
}

/// `[a-z0-9]([a-z0-9-]*[a-z0-9])?`, at most 63 characters: a DNS label, so it
/// is safe as a unit name, a file name and a metric label.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("name is empty".into());
    }
    if name.len() > 63 {
        return Err(format!(
            "name {name:?} is {} characters long; at most 63 are allowed",
            name.len()
        ));
    }
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok_chars || name.starts_with('-') || name.ends_with('-') {
        return Err(format!(
            "name {name:?} is not valid: use lowercase letters, digits and '-', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

fn check_text(what: &str, s: &str) -> Result<(), String> {
    if let Some(c) = s.chars().find(|c| c.is_control()) {
        return Err(format!(
            "{what} contains the control character {:?}; systemd unit files cannot carry it safely",
            c
        ));
    }
    Ok(())
}

/// Arguments and environment values reach the process through systemd's C
/// escapes (`\n`, `\t`, `\xNN`), so anything but NUL, which no C string
/// can carry, is allowed.
fn check_no_nul(what: &str, s: &str) -> Result<(), String> {
    if s.contains('\0') {
        return Err(format!(
            "{what} contains a NUL byte, which no program argument or environment value can carry"
        ));
    }
    Ok(())
}

/// systemd credential names: a file name in `$CREDENTIALS_DIRECTORY`.
fn check_credential_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid credential name (letters, digits, '_', '-', '.'; not starting with '.')"
        ))
    }
}

/// A URL with any `user:password@` replaced by `user:***@`, for every place
/// a URL is shown (status, events, logs, errors). The real URL is still
/// what requests use.
pub fn redact_url(s: &str) -> String {
    let Some(scheme_end) = s.find("://") else {
        return s.to_string();
    };
    let rest = &s[scheme_end + 3..];
    let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..auth_end];
    let Some(at) = authority.rfind('@') else {
        return s.to_string();
    };
    let userinfo = &authority[..at];
    let user = userinfo.split(':').next().unwrap_or("");
    format!("{}{user}:***@{}", &s[..scheme_end + 3], &rest[at + 1..])
}

fn check_url(s: &str) -> Result<(), String> {
    let shown = redact_url(s);
    check_text("URL", s).map_err(|_| format!("URL {shown:?} contains a control character"))?;
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
        .ok_or_else(|| format!("URL {shown:?} must start with http:// or https://"))?;
    if rest.is_empty() || rest.starts_with('/') || rest.contains(' ') {
        return Err(format!("URL {shown:?} has no host"));
    }
    Ok(())
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("invalid duration {s:?} ({e}); use e.g. 500ms, 30s, 6h, 7d"))
}

/// Memory size in systemd's spelling: bytes with an optional K/M/G/T suffix
/// (powers of 1024). Rejects `2 GB`, negatives, fractions of bytes and zero.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let help = "use a whole number of bytes or a number with K, M, G or T (powers of 1024), e.g. 512M or 2G";
    if t.is_empty() {
        return Err(format!("empty size; {help}"));
    }
    let (num, mult) = match t.as_bytes()[t.len() - 1] {
        b'K' | b'k' => (&t[..t.len() - 1], 1u64 << 10),
        b'M' | b'm' => (&t[..t.len() - 1], 1 << 20),
        b'G' | b'g' => (&t[..t.len() - 1], 1 << 30),
        b'T' | b't' => (&t[..t.len() - 1], 1 << 40),
        b'0'..=b'9' => (t, 1),
        _ => return Err(format!("invalid size {s:?}; {help}")),
    };
    let valid = !num.is_empty()
        && num.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && num.bytes().filter(|&b| b == b'.').count() <= 1
        && !num.starts_with('.')
        && !num.ends_with('.');
    if !valid {
        return Err(format!("invalid size {s:?}; {help}"));
    }
    let value: f64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}; {help}"))?;
    let bytes = value * mult as f64;
    if !(bytes.is_finite()) || bytes < 1.0 || bytes > (u64::MAX / 2) as f64 {
        return Err(format!("size {s:?} is out of range; {help}"));
    }
    if mult == 1 && num.contains('.') {
        return Err(format!(
            "invalid size {s:?}: a byte count must be a whole number"
        ));
    }
    Ok(bytes.round() as u64)
}

/// CPU quota as a percentage with `%`: `150%` = one and a half CPUs.
pub fn parse_percent(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let Some(num) = t.strip_suffix('%') else {
        return Err(format!(
            "invalid CPU quota {s:?}: write a percentage with %, e.g. 50% or 150% (100% is one CPU)"
        ));
    };
    let n: u64 = num.trim().parse().map_err(|_| {
        format!("invalid CPU quota {s:?}: write a whole percentage, e.g. 50% or 150%")
    })?;
    if n == 0 {
        return Err(format!(
            "invalid CPU quota {s:?}: 0% would never let the service run; remove the limit instead"
        ));
    }
    if n > 100_000 {
        return Err(format!("CPU quota {s:?} is out of range"));
    }
    Ok(n)
}

const RESTART_VALUES: &[&str] = &[
    "no",
    "on-success",
    "on-failure",
    "on-abnormal",
    "on-watchdog",
    "on-abort",
    "always",
];

const SIGNALS: &[(&str, i32)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("USR2", libc::SIGUSR2),
    ("TERM", libc::SIGTERM),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("WINCH", libc::SIGWINCH),
];

/// `SIGHUP`, `HUP` or `hup` → (canonical name, number).
pub fn parse_signal(s: &str) -> Result<(String, i32), String> {
    let up = s.trim().to_ascii_uppercase();
    let bare = up.strip_prefix("SIG").unwrap_or(&up);
    SIGNALS
        .iter()
        .find(|(n, _)| *n == bare)
        .map(|(n, num)| (format!("SIG{n}"), *num))
        .ok_or_else(|| {
            let names: Vec<String> = SIGNALS.iter().map(|(n, _)| format!("SIG{n}")).collect();
            format!("unknown signal {s:?}; use one of {}", names.join(", "))
        })
}

pub(super) fn validate_document(
    doc: Spanned<RawDocument>,
    file: &Path,
    pctx: &PathContext,
) -> Result<Manifest, ManifestError> {
    let c = Ctx { file };
    let doc_loc = doc.referenced;
    let raw = doc.value;
    if raw.api_version.value != API_VERSION {
        return c.err(
            &raw.api_version.referenced,
            format!(
                "unsupported apiVersion {:?}; this unitlet understands {API_VERSION:?}",
                raw.api_version.value
            ),
        );
    }
    let kind = match raw.kind.value.as_str() {
        "Service" => Kind::Service,
        "Backup" => Kind::Backup,
        other => {
            return c.err(
                &raw.kind.referenced,
                format!("unknown kind {other:?}; use Service or Backup"),
            );
        }
    };
    let name = raw.metadata.value.name;
    if let Err(m) = check_name(&name.value) {
        return c.err(&name.referenced, format!("metadata.name: {m}"));
    }
    let mut labels = BTreeMap::new();
    if let Some(l) = raw.metadata.value.labels {
        for (k, v) in l.value {
            if let Err(m) = check_text("label", &k).and_then(|_| check_text("label", &v)) {
                return c.err(&l.referenced, format!("metadata.labels: {m}"));
            }
            labels.insert(k, v);
        }
    }
    let Some(spec) = raw.spec else {
        return c.err(&doc_loc, format!("{kind} {:?} has no spec", name.value));
    };
    let spec_loc = spec.referenced;
    let spec = spec.value;
    let mut field_at = BTreeMap::new();
    {
        let mut at = |k: &'static str, l: &serde_saphyr::Location| {
            field_at.insert(k, (l.line(), l.column()));
        };
        if let Some(a) = &spec.after {
            at("after", &a.referenced);
        }
        if let Some(u) = &spec.unit_file {
            at("unitFile", &u.referenced);
        }
        if let Some(e) = &spec.environment_file {
            at("environmentFile", &e.referenced);
        }
        if let Some(c) = &spec.credentials {
            at("credentials", &c.referenced);
        }
        if let Some(g) = &spec.grafana {
            if let Some(t) = &g.value.token_file {
                at("grafana.tokenFile", &t.referenced);
            }
            if let Some(b) = &g.value.basic_auth {
                at(
                    "grafana.basicAuth.passwordFile",
                    &b.value.password_file.referenced,
                );
            }
        }
    }
    let spec = match kind {
        Kind::Service => Spec::Service(validate_service(&c, pctx, &name.value, spec, &spec_loc)?),
        Kind::Backup => Spec::Backup(validate_backup(&c, pctx, spec, &spec_loc)?),
    };
    Ok(Manifest {
        name: name.value,
        labels,
        file: file.to_path_buf(),
        line: doc_loc.line(),
        field_at,
        spec,
    })
}

macro_rules! reject_fields {
    ($c:expr, $spec:expr, $kind:literal, $($field:ident => $yaml:literal),*) => {
        $(
            if let Some(f) = &$spec.$field {
                return $c.err(&f.referenced, format!("spec.{} is not a field of kind {}", $yaml, $kind));
            }
        )*
    };
}

fn validate_service(
    c: &Ctx<'_>,
    pctx: &PathContext,
    name: &str,
    spec: RawSpec,
    spec_loc: &serde_saphyr::Location,
) -> Result<ServiceSpec, ManifestError> {
    reject_fields!(c, spec, "Service",
        schedule => "schedule", keep => "keep", destination => "destination",
        prometheus => "prometheus", grafana => "grafana");

    let description = match spec.description {
        Some(d) => {
            if let Err(m) = check_text("description", &d.value) {
                return c.err(&d.referenced, format!("spec.description: {m}"));
            }
            Some(d.value)
        }
        None => None,
    };

    let exec = match (spec.command, spec.unit_file) {
        (Some(cmd), Some(uf)) => {
            let _ = cmd;
            return c.err(&uf.referenced, "spec.command and spec.unitFile are both set; use exactly one of them");
        }
        (None, None) => return c.err(spec_loc, "a Service needs spec.command (the argv to run) or spec.unitFile (a unit file to adopt)"),
        (Some(cmd), None) => {
            if cmd.value.is_empty() {
                return c.err(&cmd.referenced, "spec.command is empty; give the program and its arguments, e.g. [/usr/bin/prometheus, --web.enable-lifecycle]");
            }
            if cmd.value[0].trim().is_empty() {
                return c.err(&cmd.referenced, "spec.command[0] (the program) is empty");
            }
            if let Some(ch) = cmd.value[0].chars().next()
                && "-@+!:".contains(ch)
            {
                return c.err(
                    &cmd.referenced,
                    format!("spec.command[0] {:?} starts with {ch:?}, which systemd reads as an ExecStart= prefix; give the program's path", cmd.value[0]),
                );
            }
            for (i, a) in cmd.value.iter().enumerate() {
                if let Err(m) = check_no_nul("argument", a) {
                    return c.err(&cmd.referenced, format!("spec.command[{i}]: {m}"));
                }
            }
            Exec::Command(cmd.value)
        }
        (None, Some(uf)) => match pctx.resolve(&uf.value) {
            Ok(path) => {
                let fname = path.file_name().and_then(|f| f.to_str()).unwrap_or("");
                if !fname.ends_with(".service") {
                    return c.err(&uf.referenced, format!("spec.unitFile {:?} must be a .service unit file", uf.value));
                }
                Exec::UnitFile { path, content: String::new() }
            }
            Err(m) => return c.err(&uf.referenced, format!("spec.unitFile: {m}")),
        },
    };

    let working_directory = match spec.working_directory {
        Some(w) => match pctx.resolve(&w.value).and_then(|p| {
            check_text("path", &p.to_string_lossy())?;
            Ok(p)
        }) {
            Ok(p) => Some(p),
            Err(m) => return c.err(&w.referenced, format!("spec.workingDirectory: {m}")),
        },
        None => None,
    };

    let mut environment = BTreeMap::new();
    if let Some(env) = spec.environment {
        for (k, v) in env.value {
            let key_ok = !k.is_empty()
                && !k.as_bytes()[0].is_ascii_digit()
                && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !key_ok {
                return c.err(&env.referenced, format!("spec.environment: {k:?} is not a valid variable name (letters, digits, _; not starting with a digit)"));
            }
            if let Err(m) = check_no_nul("value", &v) {
                return c.err(&env.referenced, format!("spec.environment.{k}: {m}"));
            }
            environment.insert(k, v);
        }
    }
    let environment_file = match spec.environment_file {
        None => None,
        Some(f) => match pctx.resolve(&f.value).and_then(|p| {
            check_text("path", &p.to_string_lossy())?;
            Ok(p)
        }) {
            Ok(p) => Some(p),
            Err(m) => return c.err(&f.referenced, format!("spec.environmentFile: {m}")),
        },
    };
    let mut credentials = BTreeMap::new();
    if let Some(creds) = spec.credentials {
        for (k, v) in creds.value {
            if let Err(m) = check_credential_name(&k) {
                return c.err(&creds.referenced, format!("spec.credentials: {m}"));
            }
            match pctx.resolve(&v).and_then(|p| {
                check_text("path", &p.to_string_lossy())?;
                Ok(p)
            }) {
                Ok(p) => {
                    credentials.insert(k, p);
                }
                Err(m) => return c.err(&creds.referenced, format!("spec.credentials.{k}: {m}")),
            }
        }
    }

    let state = match spec.state {
        None => DesiredState::Running,
        Some(s) => match s.value.as_str() {
            "running" => DesiredState::Running,
            "stopped" => DesiredState::Stopped,
            other => {
                return c.err(
                    &s.referenced,
                    format!("spec.state {other:?} is not valid; use running or stopped"),
                );
            }
        },
    };
    let enabled = spec.enabled.map(|e| e.value).unwrap_or(true);

    let restart = match spec.restart {
        None => None,
        Some(r) => {
            if !RESTART_VALUES.contains(&r.value.as_str()) {
                return c.err(
                    &r.referenced,
                    format!(
                        "spec.restart {:?} is not a systemd Restart= value; use one of {}",
                        r.value,
                        RESTART_VALUES.join(", ")
                    ),
                );
            }
            Some(r.value)
        }
    };
    let restart_sec = match spec.restart_sec {
        None => None,
        Some(r) => match parse_duration(&r.value) {
            Ok(d) => Some(d),
            Err(m) => return c.err(&r.referenced, format!("spec.restartSec: {m}")),
        },
    };

    let mut after = Vec::new();
    if let Some(a) = spec.after {
        let mut seen = BTreeSet::new();
        for n in a.value {
            if let Err(m) = check_name(&n) {
                return c.err(&a.referenced, format!("spec.after: {m}"));
            }
            if n == name {
                return c.err(
                    &a.referenced,
                    format!("spec.after: {name:?} cannot be ordered after itself"),
                );
            }
            if seen.insert(n.clone()) {
                after.push(n);
            }
        }
    }

    let mut resources = Resources::default();
    if let Some(r) = spec.resources {
        let r = r.value;
        if let Some(v) = r.memory_max {
            resources.memory_max = Some(
                parse_size(&v.value.to_string())
                    .or_else(|m| c.err(&v.referenced, format!("spec.resources.memoryMax: {m}")))?,
            );
        }
        if let Some(v) = r.memory_high {
            resources.memory_high =
                Some(parse_size(&v.value.to_string()).or_else(|m| {
                    c.err(&v.referenced, format!("spec.resources.memoryHigh: {m}"))
                })?);
        }
        if let Some(v) = r.cpu_quota {
            resources.cpu_quota = Some(
                parse_percent(&v.value.to_string())
                    .or_else(|m| c.err(&v.referenced, format!("spec.resources.cpuQuota: {m}")))?,
            );
        }
        if let Some(v) = r.tasks_max {
            let n = match &v.value {
                Scalar::Int(i) if *i >= 1 => *i as u64,
                other => return c.err(&v.referenced, format!("spec.resources.tasksMax: {other:?} is not valid; give a whole number of at least 1", other = other.to_string())),
            };
            resources.tasks_max = Some(n);
        }
    }

    let mut config_files = Vec::new();
    if let Some(cf) = spec.config_files {
        for p in cf.value {
            match pctx.resolve(&p) {
                Ok(p) => config_files.push(p),
                Err(m) => return c.err(&cf.referenced, format!("spec.configFiles: {m}")),
            }
        }
    }
    let on_config_change =
        match spec.on_config_change {
            None => OnConfigChange::Restart,
            Some(o) => match o.value.as_str() {
                "reload" => OnConfigChange::Reload,
                "restart" => OnConfigChange::Restart,
                "none" => OnConfigChange::None,
                other => return c.err(
                    &o.referenced,
                    format!(
                        "spec.onConfigChange {other:?} is not valid; use reload, restart or none"
                    ),
                ),
            },
        };
    let reload = match spec.reload {
        None => None,
        Some(r) => {
            let loc = r.referenced;
            match (r.value.http, r.value.signal) {
                (Some(_), Some(s)) => {
                    return c.err(
                        &s.referenced,
                        "spec.reload: give either http or signal, not both",
                    );
                }
                (None, None) => return c.err(&loc, "spec.reload: give http.url or signal"),
                (Some(h), None) => {
                    if let Err(m) = check_url(&h.value.url.value) {
                        return c.err(
                            &h.value.url.referenced,
                            format!("spec.reload.http.url: {m}"),
                        );
                    }
                    Some(ReloadMethod::Http {
                        url: h.value.url.value,
                    })
                }
                (None, Some(s)) => match parse_signal(&s.value) {
                    Ok((name, number)) => Some(ReloadMethod::Signal { name, number }),
                    Err(m) => return c.err(&s.referenced, format!("spec.reload.signal: {m}")),
                },
            }
        }
    };
    if on_config_change == OnConfigChange::Reload
        && reload.is_none()
        && matches!(exec, Exec::Command(_))
    {
        return c.err(spec_loc, "spec.onConfigChange is reload but spec.reload is not set; add reload.http.url or reload.signal");
    }
    let validate = match spec.validate {
        None => None,
        Some(v) => {
            if v.value.is_empty() || v.value[0].trim().is_empty() {
                return c.err(&v.referenced, "spec.validate is empty; give a command, e.g. [promtool, check, config, prometheus.yml]");
            }
            for a in &v.value {
                if let Err(m) = check_no_nul("argument", a) {
                    return c.err(&v.referenced, format!("spec.validate: {m}"));
                }
            }
            Some(v.value)
        }
    };
    let readiness = match spec.readiness {
        None => None,
        Some(r) => {
            let url = r.value.http.value.url;
            if let Err(m) = check_url(&url.value) {
                return c.err(&url.referenced, format!("spec.readiness.http.url: {m}"));
            }
            let timeout = match r.value.timeout {
                None => Duration::from_secs(60),
                Some(t) => parse_duration(&t.value)
                    .or_else(|m| c.err(&t.referenced, format!("spec.readiness.timeout: {m}")))?,
            };
            Some(Readiness {
                url: url.value,
                timeout,
            })
        }
    };
    let silence = match spec.silence {
        None => None,
        Some(sl) => {
            let matchers = match sl.value.matchers {
                None => None,
                Some(ms) => {
                    if ms.value.is_empty() {
                        return c.err(
                            &ms.referenced,
                            "spec.silence.matchers is empty, which would silence every alert; leave it out for job=\"NAME\", or give matchers like job=\"prometheus\"",
                        );
                    }
                    let mut out = Vec::new();
                    for m in &ms.value {
                        out.push(crate::alertmanager::parse_matcher(m).or_else(|e| {
                            c.err(&ms.referenced, format!("spec.silence.matchers: {e}"))
                        })?);
                    }
                    Some(out)
                }
            };
            let duration = match sl.value.for_ {
                None => crate::alertmanager::DEFAULT_FOR,
                Some(f) => {
                    let d = parse_duration(&f.value)
                        .or_else(|m| c.err(&f.referenced, format!("spec.silence.for: {m}")))?;
                    if d < Duration::from_secs(1) {
                        return c.err(
                            &f.referenced,
                            "spec.silence.for must be at least 1s; it is how long a silence lasts at most",
                        );
                    }
                    d
                }
            };
            Some(crate::manifest::Silence { matchers, duration })
        }
    };
    let mut rollout = crate::manifest::RolloutSpec::default();
    if let Some(r) = spec.rollout {
        if let Some(a) = r.value.auto {
            rollout.auto = a.value;
        }
        if let Some(t) = r.value.timeout {
            let d = parse_duration(&t.value)
                .or_else(|m| c.err(&t.referenced, format!("spec.rollout.timeout: {m}")))?;
            if d < Duration::from_secs(1) {
                return c.err(
                    &t.referenced,
                    "spec.rollout.timeout must be at least 1s: a new revision needs time to start",
                );
            }
            rollout.timeout = Some(d);
        }
        if let Some(n) = r.value.max_restarts {
            if !(0..=1000).contains(&n.value) {
                return c.err(
                    &n.referenced,
                    format!(
                        "spec.rollout.maxRestarts {} is not valid; give 0 to 1000",
                        n.value
                    ),
                );
            }
            rollout.max_restarts = n.value as u32;
        }
    }

    Ok(ServiceSpec {
        description,
        exec,
        working_directory,
        environment,
        environment_file,
        credentials,
        state,
        enabled,
        restart,
        restart_sec,
        after,
        resources,
        config_files,
        on_config_change,
        reload,
        validate,
        readiness,
        silence,
        rollout,
    })
}

fn validate_backup(
    c: &Ctx<'_>,
    pctx: &PathContext,
    spec: RawSpec,
    spec_loc: &serde_saphyr::Location,
) -> Result<BackupSpec, ManifestError> {
    reject_fields!(c, spec, "Backup",
        description => "description", command => "command", unit_file => "unitFile",
        working_directory => "workingDirectory", environment => "environment",
        environment_file => "environmentFile", credentials => "credentials", state => "state",
        enabled => "enabled", restart => "restart", restart_sec => "restartSec", after => "after",
        resources => "resources", config_files => "configFiles", on_config_change => "onConfigChange",
        reload => "reload", validate => "validate", readiness => "readiness",
        silence => "silence", rollout => "rollout");
    let Some(sched) = spec.schedule else {
        return c.err(
            spec_loc,
            "a Backup needs spec.schedule, e.g. \"every 6h\" or \"0 3 * * *\"",
        );
    };
    let schedule = Schedule::parse(&sched.value)
        .or_else(|m| c.err(&sched.referenced, format!("spec.schedule: {m}")))?;
    let keep = match spec.keep {
        None => 7,
        Some(k) if k.value >= 1 && k.value <= 100_000 => k.value as u32,
        Some(k) => {
            return c.err(
                &k.referenced,
                format!(
                    "spec.keep {} is not valid; keep at least 1 backup set",
                    k.value
                ),
            );
        }
    };
    let destination = match spec.destination {
        None => None,
        Some(d) => {
            let p = pctx
                .resolve(&d.value)
                .or_else(|m| c.err(&d.referenced, format!("spec.destination: {m}")))?;
            crate::backup::check_destination_path(&p)
                .or_else(|m| c.err(&d.referenced, format!("spec.destination: {m}")))?;
            // Sets are directories DEST/ID and old ones are deleted: the
            // destination must be a directory of their own.
            // `/` and top-level directories (`/etc`, `/tmp`), the home
            // directory and the manifests directory are shared.
            let shared = p.components().count() <= 2
                || pctx.home.as_deref() == Some(p.as_path())
                || p == pctx.manifest_dir;
            if shared {
                return c.err(
                    &d.referenced,
                    format!(
                        "spec.destination {} is not a directory of its own (backup sets are created and pruned in it); give one, e.g. ~/backups/NAME",
                        p.display()
                    ),
                );
            }
            Some(p)
        }
    };
    let source = match (spec.prometheus, spec.grafana) {
        (Some(_), Some(g)) => {
            return c.err(
                &g.referenced,
                "spec.prometheus and spec.grafana are both set; a Backup has exactly one source",
            );
        }
        (None, None) => return c.err(spec_loc, "a Backup needs spec.prometheus or spec.grafana"),
        (Some(p), None) => {
            let p = p.value;
            check_url(&p.url.value)
                .or_else(|m| c.err(&p.url.referenced, format!("spec.prometheus.url: {m}")))?;
            let data_dir =
                match p.data_dir {
                    None => None,
                    Some(d) => Some(pctx.resolve(&d.value).or_else(|m| {
                        c.err(&d.referenced, format!("spec.prometheus.dataDir: {m}"))
                    })?),
                };
            let service = match p.service {
                None => None,
                Some(s) => {
                    check_name(&s.value).or_else(|m| {
                        c.err(&s.referenced, format!("spec.prometheus.service: {m}"))
                    })?;
                    Some(s.value)
                }
            };
            BackupSource::Prometheus {
                url: p.url.value,
                data_dir,
                service,
            }
        }
        (None, Some(g)) => {
            let gl = g.referenced;
            let g = g.value;
            check_url(&g.url.value)
                .or_else(|m| c.err(&g.url.referenced, format!("spec.grafana.url: {m}")))?;
            let auth = match (g.token_file, g.basic_auth) {
                (Some(_), Some(b)) => {
                    return c.err(
                        &b.referenced,
                        "spec.grafana: give tokenFile or basicAuth, not both",
                    );
                }
                (None, None) => {
                    return c.err(
                        &gl,
                        "spec.grafana needs tokenFile (a service-account token) or basicAuth",
                    );
                }
                (Some(t), None) => {
                    GrafanaAuthSpec::TokenFile(pctx.resolve(&t.value).or_else(|m| {
                        c.err(&t.referenced, format!("spec.grafana.tokenFile: {m}"))
                    })?)
                }
                (None, Some(b)) => {
                    let b = b.value;
                    check_text("username", &b.username.value).or_else(|m| {
                        c.err(
                            &b.username.referenced,
                            format!("spec.grafana.basicAuth.username: {m}"),
                        )
                    })?;
                    GrafanaAuthSpec::Basic {
                        username: b.username.value,
                        password_file: pctx.resolve(&b.password_file.value).or_else(|m| {
                            c.err(
                                &b.password_file.referenced,
                                format!("spec.grafana.basicAuth.passwordFile: {m}"),
                            )
                        })?,
                    }
                }
            };
            BackupSource::Grafana {
                url: g.url.value,
                auth,
            }
        }
    };
    Ok(BackupSpec {
        schedule,
        keep,
        destination,
        source,
    })
}

/// The shortest `after` cycle through `start`, as the list of names from
/// `start` back to it, if there is one.
fn after_cycle_through(start: &str, edges: &BTreeMap<&str, Vec<&str>>) -> Option<Vec<String>> {
    let mut parent: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(n) = queue.pop_front() {
        for &next in edges.get(n).map(Vec::as_slice).unwrap_or_default() {
            if next == start {
                let mut path = vec![n];
                let mut cur = n;
                while cur != start {
                    cur = parent[cur];
                    path.push(cur);
                }
                path.reverse();
                path.push(start);
                return Some(path.into_iter().map(str::to_string).collect());
            }
            if !parent.contains_key(next) && next != start {
                parent.insert(next, n);
                queue.push_back(next);
            }
        }
    }
    None
}

/// Services whose `after` lists form a cycle can never start (systemd
/// fails every start job with "transaction order is cyclic"), and retrying
/// would loop for ever. Every member is held with an error naming the
/// cycle and where each of its `after` entries is written; their last
/// good units stay as they are.
pub(super) fn hold_after_cycles(set: &mut LoadedSet) {
    let by_name: BTreeMap<&str, &Manifest> = set
        .manifests
        .iter()
        .filter(|m| m.kind() == Kind::Service)
        .map(|m| (m.name.as_str(), m))
        .collect();
    let edges: BTreeMap<&str, Vec<&str>> = by_name
        .iter()
        .map(|(&n, m)| {
            let after = m.as_service().map(|s| s.after.as_slice()).unwrap_or(&[]);
            (
                n,
                after
                    .iter()
                    .map(String::as_str)
                    .filter(|a| by_name.contains_key(a))
                    .collect(),
            )
        })
        .collect();
    let mut cyclic: Vec<(String, ManifestError)> = Vec::new();
    for (&name, m) in &by_name {
        let Some(cycle) = after_cycle_through(name, &edges) else {
            continue;
        };
        let places: Vec<String> = cycle[..cycle.len() - 1]
            .iter()
            .map(|n| {
                let m = by_name[n.as_str()];
                let (l, c) = m.field_at.get("after").copied().unwrap_or((m.line, 1));
                format!("{n}: {}:{l}:{c}", m.file.display())
            })
            .collect();
        let (line, column) = m.field_at.get("after").copied().unwrap_or((m.line, 1));
        cyclic.push((
            name.to_string(),
            ManifestError {
                file: m.file.clone(),
                line,
                column,
                message: format!(
                    "spec.after makes an ordering cycle {} ({}); systemd refuses to start any service in it — remove one of these `after` entries",
                    cycle.join(" → "),
                    places.join(", ")
                ),
            },
        ));
    }
    for (name, e) in cyclic {
        set.manifests.retain(|m| m.name != name);
        set.errors.push(e.clone());
        set.held.insert(name, e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::test_support::*;
    use std::path::PathBuf;

    #[test]
    fn parses_a_full_service() {
        let y = format!(
            "{HEAD}  description: Web\n  command: [/bin/sleep, '100']\n  workingDirectory: ../w\n  environment: {{A: b}}\n  state: stopped\n  enabled: false\n  restart: always\n  restartSec: 2s\n  after: [db]\n  resources: {{memoryMax: 512M, memoryHigh: 1.5G, cpuQuota: 150%, tasksMax: 20}}\n  configFiles: [~/c.yml]\n  onConfigChange: reload\n  reload: {{http: {{url: 'http://127.0.0.1:9090/-/reload'}}}}\n  validate: [promtool, check, config, c.yml]\n  readiness: {{http: {{url: 'http://127.0.0.1:9090/-/ready'}}, timeout: 5s}}\n"
        );
        let p = parse(&y);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        let s = p.manifests[0].as_service().unwrap();
        assert_eq!(s.working_directory.as_deref(), Some(Path::new("/w")));
        assert_eq!(s.config_files, vec![PathBuf::from("/home/u/c.yml")]);
        assert_eq!(s.resources.memory_max, Some(512 << 20));
        assert_eq!(s.resources.memory_high, Some(1536 << 20));
        assert_eq!(s.resources.cpu_quota, Some(150));
        assert_eq!(s.resources.tasks_max, Some(20));
        assert_eq!(s.state, DesiredState::Stopped);
        assert!(!s.enabled);
        assert_eq!(s.restart_sec, Some(Duration::from_secs(2)));
        assert_eq!(
            s.readiness.as_ref().unwrap().timeout,
            Duration::from_secs(5)
        );
    }

    #[test]
    fn silence_defaults_to_the_job_of_the_service_and_refuses_silencing_everything() {
        let p = parse(&format!("{HEAD}  command: [a]\n  silence: {{}}\n"));
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        let m = &p.manifests[0];
        let s = m.as_service().unwrap().silence.as_ref().unwrap();
        assert_eq!(s.duration, Duration::from_secs(300));
        assert_eq!(s.matchers, None);
        let d = crate::alertmanager::matchers_for(m);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].to_string(), format!("job={:?}", m.name));
        let p = parse(&format!(
            "{HEAD}  command: [a]\n  silence: {{matchers: ['job=\"x\"', 'alertname=~\"A.*\"'], for: 10m}}\n"
        ));
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        let s = p.manifests[0]
            .as_service()
            .unwrap()
            .silence
            .clone()
            .unwrap();
        assert_eq!(s.duration, Duration::from_secs(600));
        assert_eq!(s.matchers.unwrap()[1].to_string(), "alertname=~\"A.*\"");
        for (bad, says) in [
            ("silence: {matchers: []}", "would silence every alert"),
            ("silence: {matchers: [job]}", "no operator"),
            ("silence: {for: 0s}", "at least 1s"),
            ("silence: {for: soon}", "spec.silence.for"),
            ("silence: {until: 5m}", "unknown field"),
        ] {
            let p = parse(&format!("{HEAD}  command: [a]\n  {bad}\n"));
            assert!(
                p.errors.iter().any(|e| e.message.contains(says)),
                "{bad}: {:?}",
                p.errors
            );
        }
        let p = parse(
            "apiVersion: unitlet/v1\nkind: Backup\nmetadata: {name: b}\nspec:\n  schedule: every 6h\n  silence: {}\n  prometheus: {url: 'http://h:9090'}\n",
        );
        assert!(
            p.errors.iter().any(|e| e
                .message
                .contains("spec.silence is not a field of kind Backup")),
            "{:?}",
            p.errors
        );
    }

    #[test]
    fn bad_inputs_are_located_and_explained() {
        let cases: &[(&str, &str, u64)] = &[
            (
                "apiVersion: v2\nkind: Service\nmetadata: {name: a}\nspec: {command: [a]}\n",
                "unsupported apiVersion",
                1,
            ),
            (
                "apiVersion: unitlet/v1\nkind: Pod\nmetadata: {name: a}\nspec: {command: [a]}\n",
                "unknown kind",
                2,
            ),
            (
                "apiVersion: unitlet/v1\nkind: Service\nmetadata: {name: ../x}\nspec: {command: [a]}\n",
                "not valid",
                3,
            ),
            (
                "apiVersion: unitlet/v1\nkind: Service\nmetadata: {name: Web}\nspec: {command: [a]}\n",
                "not valid",
                3,
            ),
            (
                "apiVersion: unitlet/v1\nkind: Service\nmetadata: {name: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa}\nspec: {command: [a]}\n",
                "at most 63",
                3,
            ),
            (
                "apiVersion: unitlet/v1\nkind: Service\nmetadata: {name: a}\nspec: {command: []}\n",
                "spec.command is empty",
                4,
            ),
            (
                "apiVersion: unitlet/v1\nkind: Service\nmetadata: {name: a}\nspec: {command: [a], unitFile: a.service}\n",
                "both set",
                4,
            ),
            (
                "apiVersion: unitlet/v1\nkind: Service\nmetadata: {name: a}\nspec: {command: [\"a\\0b\"]}\n",
                "NUL byte",
                4,
            ),
            (
                "apiVersion: unitlet/v1\nkind: Service\nmetadata: {name: a}\nspec: {command: [a], environment: {X: \"1\\x002\"}}\n",
                "NUL byte",
                4,
            ),
            (
                "apiVersion: unitlet/v1\nkind: Service\nmetadata: {name: a}\nspec: {command: [a], credentials: {\"../x\": /s}}\n",
                "not a valid credential name",
                4,
            ),
            (
                "apiVersion: unitlet/v1\nkind: Service\nmetadata: {name: a}\nspec: {command: [a], resources: {memoryMax: 2 GB}}\n",
                "invalid size",
                4,
            ),
            (
                "apiVersion: unitlet/v1\nkind: Service\nmetadata: {name: a}\nspec: {command: [a], resources: {memoryMax: -1}}\n",
                "invalid size",
                4,
            ),
            (
                "apiVersion: unitlet/v1\nkind: Service\nmetadata: {name: a}\nspec: {command: [a], resources: {memoryMax: 1.5.5G}}\n",
                "invalid size",
                4,
            ),
            (
                "apiVersion: unitlet/v1\nkind: Service\nmetadata: {name: a}\nspec: {command: [a], resources: {cpuQuota: 150}}\n",
                "with %",
                4,
            ),
            (
                "apiVersion: unitlet/v1\nkind: Service\nmetadata: {name: a}\nspec: {command: [a], resources: {cpuQuota: 0%}}\n",
                "0%",
                4,
            ),
            (
                "apiVersion: unitlet/v1\nkind: Service\nmetadata: {name: a}\nspec: {command: [a], schedule: every 1h}\n",
                "not a field of kind Service",
                4,
            ),
            (
                "apiVersion: unitlet/v1\nkind: Service\nmetadata: {name: a}\nspec: {command: [a], after: [a]}\n",
                "after itself",
                4,
            ),
            (
                "apiVersion: unitlet/v1\nkind: Service\nmetadata: {name: a}\nspec: {command: [a], restart: sometimes}\n",
                "Restart=",
                4,
            ),
            (
                "apiVersion: unitlet/v1\nkind: Backup\nmetadata: {name: a}\nspec: {schedule: every 1h, keep: 0, prometheus: {url: 'http://x'}}\n",
                "keep at least 1",
                4,
            ),
            (
                "apiVersion: unitlet/v1\nkind: Backup\nmetadata: {name: a}\nspec: {schedule: every 1h}\n",
                "spec.prometheus or spec.grafana",
                4,
            ),
            (
                "apiVersion: unitlet/v1\nkind: Backup\nmetadata: {name: a}\nspec: {schedule: every 1h, destination: /, prometheus: {url: 'http://x'}}\n",
                "spec.destination: / is a directory shared by the whole system",
                4,
            ),
            (
                "apiVersion: unitlet/v1\nkind: Backup\nmetadata: {name: a}\nspec: {schedule: every 1h, destination: /etc/backups, prometheus: {url: 'http://x'}}\n",
                "/etc/backups is a system directory",
                4,
            ),
            (
                "apiVersion: unitlet/v1\nkind: Backup\nmetadata: {name: a}\nspec: {schedule: every 1h, destination: ~/, prometheus: {url: 'http://x'}}\n",
                "not a directory of its own",
                4,
            ),
        ];
        for (y, want, line) in cases {
            let e = one_err(y);
            assert!(e.message.contains(want), "{y:?}: {e}");
            assert_eq!(e.line, *line, "{y:?}: {e}");
            assert!(e.column >= 1, "{y:?}: {e}");
        }
    }

    #[test]
    fn sizes_and_percentages() {
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("50M").unwrap(), 50 << 20);
        for bad in ["2 GB", "-1", "1.5.5G", "G", "0", "1.5", "", "2GB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_percent("150%").unwrap(), 150);
        for bad in ["150", "0%", "-5%", "1.5%", "%"] {
            assert!(parse_percent(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names() {
        for ok in ["a", "a-b", "0a", "prometheus", &"a".repeat(63)] {
            check_name(ok).unwrap();
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", "../x", &"a".repeat(64)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn newlines_tabs_and_control_bytes_are_allowed_in_argv_and_environment() {
        let p = parse(&format!(
            "{HEAD}  command: [/bin/echo, \"a\\nb\\tc\\x01d\"]\n  environment: {{X: \"1\\n2\"}}\n"
        ));
        assert!(p.errors.is_empty(), "{:?}", p.errors);
    }

    #[test]
    fn userinfo_is_redacted_in_urls_and_url_errors() {
        assert_eq!(
            redact_url("http://user:hunter2@127.0.0.1:9090/-/reload"),
            "http://user:***@127.0.0.1:9090/-/reload"
        );
        assert_eq!(redact_url("https://tok@h"), "https://tok:***@h");
        assert_eq!(redact_url("http://h/a@b"), "http://h/a@b");
        assert_eq!(redact_url("http://h:1/"), "http://h:1/");
        assert_eq!(redact_url("http://a:b@c@h/"), "http://a:***@h/");
        let e = one_err(&format!(
            "{HEAD}  command: [a]\n  readiness: {{http: {{url: 'ftp://u:hunter2@h/'}}}}\n"
        ));
        assert!(!e.message.contains("hunter2"), "{e}");
    }

    #[test]
    fn after_cycles_are_held_with_the_cycle_and_its_places() {
        let svc = |n: &str, after: &str| {
            format!(
                "apiVersion: unitlet/v1\nkind: Service\nmetadata: {{name: {n}}}\nspec:\n  command: [a]\n  after: [{after}]\n"
            )
        };
        let set = assemble_texts(&[
            ("/m/a.yaml", &svc("a", "b")),
            ("/m/b.yaml", &svc("b", "a")),
            ("/m/c.yaml", &svc("c", "a")),
            ("/m/x.yaml", &svc("x", "y")),
            ("/m/y.yaml", &svc("y", "z")),
            ("/m/z.yaml", &svc("z", "x")),
        ]);
        let names: Vec<&str> = set.manifests.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, vec!["c"], "only c is outside a cycle");
        let a = &set.held["a"];
        assert_eq!(
            (a.file.as_path(), a.line, a.column),
            (Path::new("/m/a.yaml"), 6, 10)
        );
        assert!(a.message.contains("a → b → a"), "{a}");
        assert!(a.message.contains("a: /m/a.yaml:6:10"), "{a}");
        assert!(a.message.contains("b: /m/b.yaml:6:10"), "{a}");
        assert!(set.held["b"].message.contains("b → a → b"));
        assert!(
            set.held["y"].message.contains("y → z → x → y"),
            "{}",
            set.held["y"]
        );
        assert_eq!(set.errors.len(), 5);
    }
}
