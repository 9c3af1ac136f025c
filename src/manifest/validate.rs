//! Raw documents to the typed model: field checks, services, backups and
//! `after` cycles.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde_saphyr::Spanned;

use crate::schedule::Schedule;

use super::model::*;
use super::parse::*;

struct Ctx<'a> {
    file: &'a Path,
    /// Errors of fields checked on after them, so one pass reports every
    /// error of a document (see [`Ctx::keep`]).
    errors: std::cell::RefCell<Vec<ManifestError>>,
}

impl Ctx<'_> {
    /// The checked value, or (its error kept for the document's report)
    /// the field's default, so the checks of the other fields go on.
    fn keep<U: Default>(&self, r: Result<U, ManifestError>) -> U {
        r.unwrap_or_else(|e| {
            self.errors.borrow_mut().push(e);
            U::default()
        })
    }

    /// [`Ctx::keep`] for an optional nested section.
    fn nested<T, U>(
        &self,
        v: Option<Spanned<T>>,
        check: impl FnOnce(T) -> Result<U, ManifestError>,
    ) -> Option<U> {
        self.keep(v.map(|s| check(s.value)).transpose())
    }

    /// `check` applied to an optional field; an error is located at the
    /// field and prefixed with `what: ` (unless `what` is empty).
    fn opt<T, U>(
        &self,
        field: Option<Spanned<T>>,
        what: &str,
        check: impl FnOnce(T) -> Result<U, String>,
    ) -> Result<Option<U>, ManifestError> {
        field.map(|f| self.one(f, what, check)).transpose()
    }

    /// `check` applied to a field; an error is located at the field and
    /// prefixed with `what: ` (unless `what` is empty).
    fn one<T, U>(
        &self,
        field: Spanned<T>,
        what: &str,
        check: impl FnOnce(T) -> Result<U, String>,
    ) -> Result<U, ManifestError> {
        let at = field.referenced;
        check(field.value).or_else(|m| match what {
            "" => self.err(&at, m),
            what => self.err(&at, format!("{what}: {m}")),
        })
    }

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
            field: None,
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

pub use crate::http::redact_url;

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

/// A manifest duration (`30s`, `5m`, `1h30m`: humantime's syntax).
///
/// # Errors
/// What is wrong with `s`, for a validation message.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    humantime::parse_duration(t).map_err(|_| {
        let hint = if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
            format!("a unit is needed, e.g. {t}s")
        } else {
            "write a number and a unit (ms, s, min, h, d), e.g. 500ms, 30s, 6h, 7d".to_owned()
        };
        format!("invalid duration {s:?}: {hint}")
    })
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

use rustix::process::Signal;

const SIGNALS: &[(&str, i32)] = &[
    ("HUP", Signal::HUP.as_raw()),
    ("INT", Signal::INT.as_raw()),
    ("QUIT", Signal::QUIT.as_raw()),
    ("KILL", Signal::KILL.as_raw()),
    ("USR1", Signal::USR1.as_raw()),
    ("USR2", Signal::USR2.as_raw()),
    ("TERM", Signal::TERM.as_raw()),
    ("CONT", Signal::CONT.as_raw()),
    ("STOP", Signal::STOP.as_raw()),
    ("WINCH", Signal::WINCH.as_raw()),
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

/// Directories that hold the system or are shared by every user: a Backup
/// destination there (or below the first group) is refused, whoever owns
/// it. Backups belong in a directory of their own.
const SYSTEM_TREES: &[&str] = &[
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/sbin",
    "/sys",
    "/usr",
    "/var/lib",
    "/var/cache",
    "/var/log",
    "/var/spool",
    "/var/run",
    "/var/mail",
    "/snap",
];
/// Refused as the destination itself, though their subdirectories are fine.
const SHARED_DIRS: &[&str] = &[
    "/",
    "/home",
    "/tmp",
    "/var",
    "/var/tmp",
    "/var/backups",
    "/opt",
    "/srv",
    "/mnt",
    "/media",
    "/run",
    "/run/user",
    "/root",
];

/// Whether `path` may be a Backup destination, judged from the path alone:
/// absolute, and neither a system directory nor a directory shared by all
/// users. Pure; `backup::Store::open` also applies it to where symlinks lead and
/// checks ownership and mode.
///
/// # Errors
/// Why not, and what to do, as one sentence.
pub fn check_destination_path(path: &Path) -> Result<(), String> {
    if !path.is_absolute() {
        return Err(format!("{} is not an absolute path", path.display()));
    }
    if path
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(format!(
            "{} contains `.` or `..`; give the directory plainly",
            path.display()
        ));
    }
    let hint = "backups need a directory of their own, e.g. ~/backups/NAME (or leave destination unset for $XDG_STATE_HOME/unitlet/backups/NAME)";
    if SHARED_DIRS.iter().any(|d| path == Path::new(d)) {
        return Err(format!(
            "{} is a directory shared by the whole system; {hint}",
            path.display()
        ));
    }
    // `/run/user/UID/...` (XDG_RUNTIME_DIR) is the user's own.
    let in_run = path.starts_with("/run") && !path.starts_with("/run/user");
    if in_run || SYSTEM_TREES.iter().any(|d| path.starts_with(d)) {
        return Err(format!("{} is a system directory; {hint}", path.display()));
    }
    Ok(())
}

/// Parse and validate the text of one manifest file. Pure.
///
/// Every manifest returned carries the digest of `text`
/// ([`Manifest::digest`]): the loaders pass the file's bytes unchanged.
///
/// Adopted unit files (`spec.unitFile`) are returned with empty content;
/// [`load_dir`](super::load_dir) and [`load_files`](super::load_files) fill it in.
pub fn parse_str(text: &str, file: &Path, ctx: &PathContext) -> ParsedFile {
    let mut out = ParsedFile::default();
    if let Some((docs, blanked)) = super::parse::raw_documents(text, file, &mut out) {
        validate_documents(docs, &blanked, file, ctx, &mut out);
    }
    let digest = manifest_digest(text.as_bytes());
    for m in &mut out.manifests {
        m.digest.clone_from(&digest);
    }
    out
}

/// Validate each document into `out`; a document with a field blanked out
/// (a line in `blanked`) is reported, never applied.
fn validate_documents(
    docs: Vec<Spanned<RawDocument>>,
    blanked: &[u64],
    file: &Path,
    ctx: &PathContext,
    out: &mut ParsedFile,
) {
    let starts: Vec<u64> = docs.iter().map(|d| d.referenced.line()).collect();
    for (i, doc) in docs.into_iter().enumerate() {
        let (from, to) = (starts[i], starts.get(i + 1).copied().unwrap_or(u64::MAX));
        let tainted = blanked.iter().any(|l| (from..to).contains(l));
        // What is missing is located at the document or its spec: for a
        // document with a field blanked out, that may be the blanking.
        let at = |l: &serde_saphyr::Location| (l.line(), l.column());
        let anchors = [
            Some(at(&doc.referenced)),
            doc.value.spec.as_ref().map(|s| at(&s.referenced)),
        ];
        match validate_document(doc, file, ctx) {
            Ok(m) if !tainted => out.manifests.push(m),
            Ok(_) => {}
            Err(e) => out.errors.extend(
                e.into_iter()
                    .filter(|e| !tainted || !anchors.contains(&Some((e.line, e.column)))),
            ),
        }
    }
    out.errors.sort_by_key(|e| (e.line, e.column));
}

/// A document → its manifest, or every error found in it (by line).
fn validate_document(
    doc: Spanned<RawDocument>,
    file: &Path,
    pctx: &PathContext,
) -> Result<Manifest, Vec<ManifestError>> {
    let c = Ctx {
        file,
        errors: Default::default(),
    };
    let result = validate_fields(&c, doc, file, pctx);
    let mut errors = c.errors.take();
    match result {
        Ok(m) if errors.is_empty() => return Ok(m),
        Ok(_) => {}
        Err(e) => errors.push(e),
    }
    errors.sort_by_key(|e| (e.line, e.column));
    Err(errors)
}

fn validate_fields(
    c: &Ctx<'_>,
    doc: Spanned<RawDocument>,
    file: &Path,
    pctx: &PathContext,
) -> Result<Manifest, ManifestError> {
    let doc_loc = doc.referenced;
    let raw = doc.value;
    c.one(raw.api_version, "", |v| {
        if v == API_VERSION {
            Ok(())
        } else {
            Err(format!(
                "unsupported apiVersion {v:?}; this unitlet understands {API_VERSION:?}"
            ))
        }
    })?;
    let kind = c.one(raw.kind, "", |k| match k.as_str() {
        "Service" => Ok(Kind::Service),
        "Backup" => Ok(Kind::Backup),
        other => Err(format!("unknown kind {other:?}; use Service or Backup")),
    })?;
    let name = raw.metadata.value.name;
    if let Err(m) = check_name(&name.value) {
        return c.err(&name.referenced, format!("metadata.name: {m}"));
    }
    let labels = c
        .opt(raw.metadata.value.labels, "metadata.labels", |l| {
            for (k, v) in &l {
                check_text("label", k).and_then(|_| check_text("label", v))?;
            }
            Ok(l)
        })?
        .unwrap_or_default();
    let Some(spec) = raw.spec else {
        return c.err(&doc_loc, format!("{kind} {:?} has no spec", name.value));
    };
    let spec_loc = spec.referenced;
    let spec = spec.value;
    let field_at = field_locations(&spec);
    let spec = match kind {
        Kind::Service => Spec::Service(validate_service(c, pctx, &name.value, spec, &spec_loc)?),
        Kind::Backup => Spec::Backup(validate_backup(c, pctx, spec, &spec_loc)?),
    };
    Ok(Manifest {
        name: name.value,
        labels,
        file: file.to_path_buf(),
        line: doc_loc.line(),
        // The whole file's, set by `parse_str` once every document is read.
        digest: String::new(),
        field_at,
        spec,
    })
}

/// Where the fields that are checked again later (when their files are
/// read) stand, so those later errors can be located too.
fn field_locations(spec: &RawSpec) -> BTreeMap<&'static str, (u64, u64)> {
    let mut field_at = BTreeMap::new();
    let mut at = |k: &'static str, l: &serde_saphyr::Location| {
        field_at.insert(k, (l.line(), l.column()));
    };
    if let Some(c) = &spec.command {
        at("command", &c.referenced);
    }
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
    if let Some(d) = &spec.destination
        && matches!(d.value, RawDestination::Restic(_))
    {
        at("destination.restic.passwordFile", &d.referenced);
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
    field_at
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

/// A path resolved against the manifest's directory that a unit file can
/// carry (no control characters).
fn unit_path(pctx: &PathContext, p: &str) -> Result<PathBuf, String> {
    let p = pctx.resolve(p)?;
    check_text("path", &p.to_string_lossy())?;
    Ok(p)
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
    let description = c.keep(c.opt(spec.description, "spec.description", |d| {
        check_text("description", &d).map(|()| d)
    }));
    let exec = validate_exec(c, pctx, spec.command, spec.unit_file, spec_loc)?;
    let working_directory = c.keep(c.opt(spec.working_directory, "spec.workingDirectory", |w| {
        unit_path(pctx, &w)
    }));
    let environment = c.keep(c.opt(spec.environment, "", check_environment));
    let environment_file = c.keep(c.opt(spec.environment_file, "spec.environmentFile", |f| {
        unit_path(pctx, &f)
    }));
    let credentials = c.keep(c.opt(spec.credentials, "", |cr| check_credentials(pctx, cr)));
    let state = c.keep(c.opt(spec.state, "", parse_state));
    let restart = c.keep(c.opt(spec.restart, "", check_restart));
    let restart_sec = c.keep(c.opt(spec.restart_sec, "spec.restartSec", |r| parse_duration(&r)));
    let after = c.keep(c.opt(spec.after, "spec.after", |a| check_after(name, a)));
    let resources = match spec.resources {
        Some(r) => c.keep(validate_resources(c, r.value)),
        None => Resources::default(),
    };
    let config_files = c.keep(c.opt(spec.config_files, "spec.configFiles", |cf| {
        cf.iter().map(|p| pctx.resolve(p)).collect()
    }));
    let on_config_change = c.keep(c.opt(spec.on_config_change, "", parse_on_config_change));
    let on_config_change = on_config_change.unwrap_or(OnConfigChange::Restart);
    let reload_given = spec.reload.is_some();
    let reload = c.keep(spec.reload.map(|r| validate_reload(c, r)).transpose());
    if on_config_change == OnConfigChange::Reload
        && !reload_given
        && matches!(exec, Exec::Command(_))
    {
        return c.err(spec_loc, "spec.onConfigChange is reload but spec.reload is not set; add reload.http.url or reload.signal");
    }
    Ok(ServiceSpec {
        description,
        exec,
        working_directory,
        environment: environment.unwrap_or_default(),
        environment_file,
        credentials: credentials.unwrap_or_default(),
        state: state.unwrap_or(DesiredState::Running),
        enabled: spec.enabled.map(|e| e.value).unwrap_or(true),
        restart,
        restart_sec,
        after: after.unwrap_or_default(),
        resources,
        config_files: config_files.unwrap_or_default(),
        on_config_change,
        reload,
        validate: c.keep(c.opt(spec.validate, "", check_validate_command)),
        readiness: c.nested(spec.readiness, |r| validate_readiness(c, r)),
        silence: c.nested(spec.silence, |s| validate_silence(c, s)),
        rollout: c
            .nested(spec.rollout, |r| validate_rollout(c, r))
            .unwrap_or_default(),
    })
}

/// `spec.silence`: Alertmanager matchers (never none at all: that would
/// silence every alert) and how long a silence lasts at most.
fn validate_silence(
    c: &Ctx<'_>,
    sl: super::parse::RawSilence,
) -> Result<crate::manifest::Silence, ManifestError> {
    let matchers = match sl.matchers {
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
                out.push(
                    super::matcher::parse_matcher(m).or_else(|e| {
                        c.err(&ms.referenced, format!("spec.silence.matchers: {e}"))
                    })?,
                );
            }
            Some(out)
        }
    };
    let duration = c.opt(sl.for_, "spec.silence.for", |f| {
        let d = parse_duration(&f)?;
        if d < Duration::from_secs(1) {
            return Err("must be at least 1s; it is how long a silence lasts at most".to_owned());
        }
        Ok(d)
    })?;
    Ok(crate::manifest::Silence {
        matchers,
        duration: duration.unwrap_or(super::matcher::DEFAULT_SILENCE_FOR),
    })
}

/// `spec.rollout`: automatic rollback, its deadline and restart budget.
fn validate_rollout(
    c: &Ctx<'_>,
    r: super::parse::RawRollout,
) -> Result<crate::manifest::RolloutSpec, ManifestError> {
    let mut rollout = crate::manifest::RolloutSpec::default();
    if let Some(a) = r.auto {
        rollout.auto = a.value;
    }
    rollout.timeout = c.opt(r.timeout, "spec.rollout.timeout", |t| {
        let d = parse_duration(&t)?;
        if d < Duration::from_secs(1) {
            return Err("must be at least 1s: a new revision needs time to start".to_owned());
        }
        Ok(d)
    })?;
    if let Some(n) = c.opt(r.max_restarts, "", |n| {
        u32::try_from(n)
            .ok()
            .filter(|n| *n <= 1000)
            .ok_or_else(|| format!("spec.rollout.maxRestarts {n} is not valid; give 0 to 1000"))
    })? {
        rollout.max_restarts = n;
    }
    Ok(rollout)
}

/// `spec.credentials`: credential names and the files they come from.
fn check_credentials(
    pctx: &PathContext,
    creds: BTreeMap<String, String>,
) -> Result<BTreeMap<String, PathBuf>, String> {
    let check = |(k, v): (String, String)| {
        check_credential_name(&k).map_err(|m| format!("spec.credentials: {m}"))?;
        let p = unit_path(pctx, &v).map_err(|m| format!("spec.credentials.{k}: {m}"))?;
        Ok((k, p))
    };
    creds.into_iter().map(check).collect()
}

fn parse_state(s: String) -> Result<DesiredState, String> {
    match s.as_str() {
        "running" => Ok(DesiredState::Running),
        "stopped" => Ok(DesiredState::Stopped),
        other => Err(format!(
            "spec.state {other:?} is not valid; use running or stopped"
        )),
    }
}

fn check_restart(r: String) -> Result<String, String> {
    if RESTART_VALUES.contains(&r.as_str()) {
        return Ok(r);
    }
    let all = RESTART_VALUES.join(", ");
    Err(format!(
        "spec.restart {r:?} is not a systemd Restart= value; use one of {all}"
    ))
}

fn parse_on_config_change(o: String) -> Result<OnConfigChange, String> {
    match o.as_str() {
        "reload" => Ok(OnConfigChange::Reload),
        "restart" => Ok(OnConfigChange::Restart),
        "none" => Ok(OnConfigChange::None),
        other => Err(format!(
            "spec.onConfigChange {other:?} is not valid; use reload, restart or none"
        )),
    }
}

/// `spec.command` or `spec.unitFile`, exactly one.
fn validate_exec(
    c: &Ctx<'_>,
    pctx: &PathContext,
    command: Option<Spanned<Vec<String>>>,
    unit_file: Option<Spanned<String>>,
    spec_loc: &serde_saphyr::Location,
) -> Result<Exec, ManifestError> {
    match (command, unit_file) {
        (Some(_), Some(uf)) => c.err(&uf.referenced, "spec.command and spec.unitFile are both set; use exactly one of them"),
        (None, None) => c.err(spec_loc, "a Service needs spec.command (the argv to run) or spec.unitFile (a unit file to adopt)"),
        (Some(cmd), None) => c.one(cmd, "", check_command).map(Exec::Command),
        (None, Some(uf)) => c.one(uf, "", |uf| {
            let path = pctx.resolve(&uf).map_err(|m| format!("spec.unitFile: {m}"))?;
            let fname = path.file_name().and_then(|f| f.to_str()).unwrap_or("");
            if !fname.ends_with(".service") {
                return Err(format!("spec.unitFile {uf:?} must be a .service unit file"));
            }
            Ok(Exec::UnitFile { path, content: String::new() })
        }),
    }
}

/// `spec.command`: a program (not an `ExecStart=` prefix) and arguments.
fn check_command(cmd: Vec<String>) -> Result<Vec<String>, String> {
    let Some(program) = cmd.first() else {
        return Err("spec.command is empty; give the program and its arguments, e.g. [/usr/bin/prometheus, --web.enable-lifecycle]".into());
    };
    if program.trim().is_empty() {
        return Err("spec.command[0] (the program) is empty".into());
    }
    if let Some(ch) = program.chars().next()
        && "-@+!:".contains(ch)
    {
        return Err(format!(
            "spec.command[0] {program:?} starts with {ch:?}, which systemd reads as an ExecStart= prefix; give the program's path"
        ));
    }
    for (i, a) in cmd.iter().enumerate() {
        check_no_nul("argument", a).map_err(|m| format!("spec.command[{i}]: {m}"))?;
    }
    Ok(cmd)
}

/// `spec.environment`: variable names and values a process can receive.
fn check_environment(env: BTreeMap<String, String>) -> Result<BTreeMap<String, String>, String> {
    for (k, v) in &env {
        let key_ok = !k.is_empty()
            && !k.as_bytes()[0].is_ascii_digit()
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !key_ok {
            return Err(format!(
                "spec.environment: {k:?} is not a valid variable name (letters, digits, _; not starting with a digit)"
            ));
        }
        check_no_nul("value", v).map_err(|m| format!("spec.environment.{k}: {m}"))?;
    }
    Ok(env)
}

/// `spec.after`: valid names, not the Service itself, duplicates dropped.
fn check_after(name: &str, after: Vec<String>) -> Result<Vec<String>, String> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for n in after {
        check_name(&n)?;
        if n == name {
            return Err(format!("{name:?} cannot be ordered after itself"));
        }
        if seen.insert(n.clone()) {
            out.push(n);
        }
    }
    Ok(out)
}

/// `spec.validate`: a command with no NUL in its arguments.
fn check_validate_command(argv: Vec<String>) -> Result<Vec<String>, String> {
    if argv.first().is_none_or(|a| a.trim().is_empty()) {
        return Err("spec.validate is empty; give a command, e.g. [promtool, check, config, prometheus.yml]".into());
    }
    for a in &argv {
        check_no_nul("argument", a).map_err(|m| format!("spec.validate: {m}"))?;
    }
    Ok(argv)
}

fn validate_resources(c: &Ctx<'_>, r: RawResources) -> Result<Resources, ManifestError> {
    let size = |v: Scalar| parse_size(&v.to_string());
    Ok(Resources {
        memory_max: c.opt(r.memory_max, "spec.resources.memoryMax", size)?,
        memory_high: c.opt(r.memory_high, "spec.resources.memoryHigh", size)?,
        cpu_quota: c.opt(r.cpu_quota, "spec.resources.cpuQuota", |v| {
            parse_percent(&v.to_string())
        })?,
        tasks_max: c.opt(r.tasks_max, "spec.resources.tasksMax", |v| match v {
            Scalar::Int(i) if i >= 1 => Ok(i as u64),
            Scalar::Str(q) if q.trim().parse::<u64>().is_ok_and(|n| n >= 1) => Err(format!(
                "{q:?} is a quoted string; write the number without the quotes (tasksMax: {})",
                q.trim()
            )),
            other => Err(format!(
                "{:?} is not valid; give a whole number of at least 1",
                other.to_string()
            )),
        })?,
    })
}

/// `spec.reload`: an HTTP endpoint or a signal, exactly one.
fn validate_reload(c: &Ctx<'_>, r: Spanned<RawReload>) -> Result<ReloadMethod, ManifestError> {
    match (r.value.http, r.value.signal) {
        (Some(_), Some(s)) => c.err(
            &s.referenced,
            "spec.reload: give either http or signal, not both",
        ),
        (None, None) => c.err(&r.referenced, "spec.reload: give http.url or signal"),
        (Some(h), None) => c.one(h.value.url, "spec.reload.http.url", |url| {
            check_url(&url)?;
            Ok(ReloadMethod::Http { url })
        }),
        (None, Some(s)) => c.one(s, "spec.reload.signal", |s| {
            let (name, number) = parse_signal(&s)?;
            Ok(ReloadMethod::Signal { name, number })
        }),
    }
}

fn validate_readiness(c: &Ctx<'_>, r: RawReadiness) -> Result<Readiness, ManifestError> {
    let url = c.one(r.http.value.url, "spec.readiness.http.url", |url| {
        check_url(&url).map(|()| url)
    })?;
    let timeout = c.opt(r.timeout, "spec.readiness.timeout", |t| parse_duration(&t))?;
    Ok(Readiness {
        url,
        timeout: timeout.unwrap_or(Duration::from_secs(60)),
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
    let schedule = c.one(sched, "spec.schedule", |s| Schedule::parse(&s))?;
    let keep = c.opt(spec.keep, "", |k| match k {
        1..=100_000 => Ok(k as u32),
        _ => Err(format!(
            "spec.keep {k} is not valid; keep at least 1 backup set"
        )),
    })?;
    let target = c.opt(spec.destination, "", |d| match d {
        RawDestination::Path(d) => check_destination(pctx, &d).map(|p| (Some(p), None)),
        RawDestination::Restic(r) => check_restic(pctx, r.restic).map(|r| (None, Some(r))),
    })?;
    let (destination, restic) = target.unwrap_or((None, None));
    let source = match (spec.prometheus, spec.grafana) {
        (Some(_), Some(g)) => {
            return c.err(
                &g.referenced,
                "spec.prometheus and spec.grafana are both set; a Backup has exactly one source",
            );
        }
        (None, None) => return c.err(spec_loc, "a Backup needs spec.prometheus or spec.grafana"),
        (Some(p), None) => prometheus_source(c, pctx, p.value)?,
        (None, Some(g)) => grafana_source(c, pctx, g)?,
    };
    Ok(BackupSpec {
        schedule,
        keep: keep.unwrap_or(7),
        destination,
        restic,
        source,
    })
}

/// `spec.destination.restic`: a repository string restic can be given as
/// one argument, and a password file (resolved like every path; its
/// privacy is checked when it is read, like `grafana.tokenFile`).
fn check_restic(pctx: &PathContext, r: RawRestic) -> Result<ResticDestination, String> {
    let repository = r.repository.trim().to_owned();
    if repository.is_empty() {
        return Err("spec.destination.restic.repository is empty; give a repository restic accepts, e.g. /srv/restic or sftp:user@host:/srv/restic".to_owned());
    }
    if repository.starts_with('-') {
        return Err(format!(
            "spec.destination.restic.repository {repository:?} starts with '-', which restic would read as an option"
        ));
    }
    check_text("spec.destination.restic.repository", &repository)?;
    let password_file = pctx
        .resolve(&r.password_file)
        .map_err(|m| format!("spec.destination.restic.passwordFile: {m}"))?;
    Ok(ResticDestination {
        repository,
        password_file,
    })
}

/// `spec.destination`: an absolute directory of the Backup's own.
fn check_destination(pctx: &PathContext, d: &str) -> Result<PathBuf, String> {
    let p = pctx
        .resolve(d)
        .and_then(|p| check_destination_path(&p).map(|()| p))
        .map_err(|m| format!("spec.destination: {m}"))?;
    // Sets are directories DEST/ID and old ones are deleted: the
    // destination must be a directory of their own.
    // `/` and top-level directories (`/etc`, `/tmp`), the home
    // directory and the manifests directory are shared.
    let shared = p.components().count() <= 2
        || pctx.home.as_deref() == Some(p.as_path())
        || p == pctx.manifest_dir;
    if shared {
        return Err(format!(
            "spec.destination {} is not a directory of its own (backup sets are created and pruned in it); give one, e.g. ~/backups/NAME",
            p.display()
        ));
    }
    Ok(p)
}

fn prometheus_source(
    c: &Ctx<'_>,
    pctx: &PathContext,
    p: RawPrometheus,
) -> Result<BackupSource, ManifestError> {
    let url = c.one(p.url, "spec.prometheus.url", |u| check_url(&u).map(|()| u))?;
    let data_dir = c.opt(p.data_dir, "spec.prometheus.dataDir", |d| pctx.resolve(&d))?;
    let service = c.opt(p.service, "spec.prometheus.service", |s| {
        check_name(&s).map(|()| s)
    })?;
    Ok(BackupSource::Prometheus {
        url,
        data_dir,
        service,
    })
}

fn grafana_source(
    c: &Ctx<'_>,
    pctx: &PathContext,
    g: Spanned<RawGrafana>,
) -> Result<BackupSource, ManifestError> {
    let gl = g.referenced;
    let g = g.value;
    let url = c.one(g.url, "spec.grafana.url", |u| check_url(&u).map(|()| u))?;
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
            GrafanaAuthSpec::TokenFile(c.one(t, "spec.grafana.tokenFile", |t| pctx.resolve(&t))?)
        }
        (None, Some(b)) => {
            let b = b.value;
            let username = c.one(b.username, "spec.grafana.basicAuth.username", |u| {
                check_text("username", &u).map(|()| u)
            })?;
            let password_file = c.one(
                b.password_file,
                "spec.grafana.basicAuth.passwordFile",
                |p| pctx.resolve(&p),
            )?;
            GrafanaAuthSpec::Basic {
                username,
                password_file,
            }
        }
    };
    Ok(BackupSource::Grafana { url, auth })
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
                field: Some("spec.after".into()),
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
        let d = crate::silence::matchers_for(m);
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
    fn bad_documents_are_located_and_explained() {
        let doc = |head: &str| format!("{head}\nspec: {{command: [a]}}\n");
        let long = "a".repeat(68);
        let cases = [
            (
                doc("apiVersion: v2\nkind: Service\nmetadata: {name: a}"),
                "unsupported apiVersion",
                1,
            ),
            (
                doc("apiVersion: unitlet/v1\nkind: Pod\nmetadata: {name: a}"),
                "unknown kind",
                2,
            ),
            (
                doc("apiVersion: unitlet/v1\nkind: Service\nmetadata: {name: ../x}"),
                "not valid",
                3,
            ),
            (
                doc("apiVersion: unitlet/v1\nkind: Service\nmetadata: {name: Web}"),
                "not valid",
                3,
            ),
            (
                doc(&format!(
                    "apiVersion: unitlet/v1\nkind: Service\nmetadata: {{name: {long}}}"
                )),
                "at most 63",
                3,
            ),
        ];
        for (y, want, line) in &cases {
            assert_located(y, want, *line);
        }
    }

    /// Parsing `y` gives one error, whose message contains `want`, at `line`.
    fn assert_located(y: &str, want: &str, line: u64) {
        let e = one_err(y);
        assert!(e.message.contains(want), "{y:?}: {e}");
        assert_eq!(e.line, line, "{y:?}: {e}");
        assert!(e.column >= 1, "{y:?}: {e}");
    }

    /// A `kind` document whose spec is `common` and each case's fields
    /// gives the case's error on the spec's line.
    fn assert_spec_errors(kind: &str, common: &str, cases: &[(&str, &str)]) {
        for (spec, want) in cases {
            let y = format!(
                "apiVersion: unitlet/v1\nkind: {kind}\nmetadata: {{name: a}}\nspec: {{{common}{spec}}}\n"
            );
            assert_located(&y, want, 4);
        }
    }

    #[test]
    fn bad_service_specs_are_located_and_explained() {
        let cases = [
            ("command: []", "spec.command is empty"),
            ("command: [a], unitFile: a.service", "both set"),
            ("command: [\"a\\0b\"]", "NUL byte"),
            ("command: [a], environment: {X: \"1\\x002\"}", "NUL byte"),
            (
                "command: [a], credentials: {\"../x\": /s}",
                "not a valid credential name",
            ),
            ("command: [a], resources: {memoryMax: 2 GB}", "invalid size"),
            ("command: [a], resources: {memoryMax: -1}", "invalid size"),
            (
                "command: [a], resources: {memoryMax: 1.5.5G}",
                "invalid size",
            ),
            ("command: [a], resources: {cpuQuota: 150}", "with %"),
            ("command: [a], resources: {cpuQuota: 0%}", "0%"),
            (
                "command: [a], schedule: every 1h",
                "not a field of kind Service",
            ),
            ("command: [a], after: [a]", "after itself"),
            ("command: [a], restart: sometimes", "Restart="),
        ];
        assert_spec_errors("Service", "", &cases);
    }

    #[test]
    fn bad_backup_specs_are_located_and_explained() {
        let cases = [
            ("keep: 0, prometheus: {url: 'http://x'}", "keep at least 1"),
            (
                "destination: /, prometheus: {url: 'http://x'}",
                "spec.destination: / is a directory shared by the whole system",
            ),
            (
                "destination: /etc/backups, prometheus: {url: 'http://x'}",
                "/etc/backups is a system directory",
            ),
            (
                "destination: ~/, prometheus: {url: 'http://x'}",
                "not a directory of its own",
            ),
            ("keep: 2", "spec.prometheus or spec.grafana"),
            (
                "destination: {restic: {repository: '', passwordFile: /p}}, prometheus: {url: 'http://x'}",
                "repository is empty",
            ),
            (
                "destination: {restic: {repository: '-o x', passwordFile: /p}}, prometheus: {url: 'http://x'}",
                "read as an option",
            ),
            (
                "destination: {restic: {repository: /r}}, prometheus: {url: 'http://x'}",
                "passwordFile",
            ),
            (
                "destination: {restic: {repository: /r, passwordFile: /p, extra: 1}}, prometheus: {url: 'http://x'}",
                "unknown field `extra`",
            ),
            (
                "destination: [a], prometheus: {url: 'http://x'}",
                "a directory or {restic",
            ),
        ];
        assert_spec_errors("Backup", "schedule: every 1h, ", &cases);
    }

    /// Issue 24: `destination: {restic: …}` is a repository and a password
    /// file resolved like every path; no directory destination then.
    #[test]
    fn a_restic_destination_is_a_repository_and_a_password_file() {
        let p = parse(
            "apiVersion: unitlet/v1\nkind: Backup\nmetadata: {name: a}\nspec: {schedule: every 1h, destination: {restic: {repository: 'sftp:u@h:/srv/r', passwordFile: secrets/restic}}, prometheus: {url: 'http://x'}}\n",
        );
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        let b = p.manifests[0].as_backup().unwrap();
        assert_eq!(b.destination, None);
        let r = b.restic.as_ref().unwrap();
        assert_eq!(r.repository, "sftp:u@h:/srv/r");
        assert_eq!(r.password_file, PathBuf::from("/m/secrets/restic"));
        assert!(
            p.manifests[0]
                .field_at
                .contains_key("destination.restic.passwordFile")
        );
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
        assert_eq!(redact_url("https://tok@h"), "https://tok:***@h/");
        assert_eq!(redact_url("http://h/a@b"), "http://h/a@b");
        assert_eq!(redact_url("http://h:1/"), "http://h:1/");
        assert_eq!(redact_url("http://a:b@c@h/"), "http://a:***@h/");
        // An etcd endpoint is often given without a scheme.
        assert_eq!(redact_url("u:hunter2@h:2379"), "u:***@h:2379/");
        assert_eq!(redact_url("h:2379"), "h:2379");
        // What does not parse still never shows its password.
        assert_eq!(redact_url("http://u:hunter2@h:99999/"), "***@h:99999/");
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
