//! Manifests: the YAML documents a person writes, parsed strictly and
//! validated into the typed model the rest of unitlet works from.
//!
//! Architecture Invariant: [`parse_str`] and everything it calls is pure (no
//! I/O). Only [`load_dir`] touches the filesystem, to list and read files and
//! the unit files that manifests adopt.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;
use sha2::{Digest, Sha256};

use crate::schedule::Schedule;

/// The only `apiVersion` this release understands.
pub const API_VERSION: &str = "unitlet/v1";

/// Manifest files larger than this are refused before parsing: a manifest is
/// a few hundred bytes, and a huge file is a mistake or an attack.
pub const MAX_FILE_SIZE: u64 = 1024 * 1024;

/// A validated manifest, ready to render.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// The file the manifest came from, so status and errors can point at it.
    pub file: PathBuf,
    /// Line of the document within the file (1-based).
    pub line: u64,
    /// Where fields checked after parsing are written (line, column), so
    /// an ordering cycle or an unusable file points at its field: keys are
    /// `after`, `unitFile`, `environmentFile`, `credentials`,
    /// `grafana.tokenFile`, `grafana.basicAuth.passwordFile`.
    pub field_at: BTreeMap<&'static str, (u64, u64)>,
    pub spec: Spec,
}

impl Manifest {
    pub fn kind(&self) -> Kind {
        match self.spec {
            Spec::Service(_) => Kind::Service,
            Spec::Backup(_) => Kind::Backup,
        }
    }

    pub fn as_service(&self) -> Option<&ServiceSpec> {
        match &self.spec {
            Spec::Service(s) => Some(s),
            Spec::Backup(_) => None,
        }
    }

    pub fn as_backup(&self) -> Option<&BackupSpec> {
        match &self.spec {
            Spec::Backup(b) => Some(b),
            Spec::Service(_) => None,
        }
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Kind {
    Service,
    Backup,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Service => "Service",
            Kind::Backup => "Backup",
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // few, long-lived values
pub enum Spec {
    Service(ServiceSpec),
    Backup(BackupSpec),
}

/// How the main process is described: an argv unitlet renders, or a unit
/// file the person already has and wants managed.
#[derive(Debug, Clone, PartialEq)]
pub enum Exec {
    Command(Vec<String>),
    /// `content` is read at load time so that rendering stays pure.
    UnitFile {
        path: PathBuf,
        content: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DesiredState {
    Running,
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnConfigChange {
    Reload,
    Restart,
    None,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ReloadMethod {
    Http { url: String },
    Signal { name: String, number: i32 },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Readiness {
    pub url: String,
    pub timeout: Duration,
}

/// cgroup limits. Values are kept in systemd's own spelling (already
/// validated) so rendering and `SetUnitProperties` agree on them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    /// Bytes.
    pub memory_max: Option<u64>,
    pub memory_high: Option<u64>,
    /// Percent of one CPU (150 = 1.5 CPUs).
    pub cpu_quota: Option<u64>,
    pub tasks_max: Option<u64>,
}

impl Resources {
    pub fn is_empty(&self) -> bool {
        *self == Resources::default()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSpec {
    pub description: Option<String>,
    pub exec: Exec,
    pub working_directory: Option<PathBuf>,
    pub environment: BTreeMap<String, String>,
    /// `EnvironmentFile=`: variables that must not sit in a unit file
    /// (passwords, API keys). Checked at load time to be a private regular
    /// file; its content is never read by unitlet.
    pub environment_file: Option<PathBuf>,
    /// `LoadCredential=NAME:PATH`: secrets the service reads from
    /// `$CREDENTIALS_DIRECTORY/NAME`. Same checks as `environment_file`.
    pub credentials: BTreeMap<String, PathBuf>,
    pub state: DesiredState,
    pub enabled: bool,
    /// `None` means "not given": a rendered unit uses `on-failure`; an
    /// adopted unit file keeps its own setting.
    pub restart: Option<String>,
    pub restart_sec: Option<Duration>,
    pub after: Vec<String>,
    pub resources: Resources,
    pub config_files: Vec<PathBuf>,
    pub on_config_change: OnConfigChange,
    pub reload: Option<ReloadMethod>,
    pub validate: Option<Vec<String>>,
    pub readiness: Option<Readiness>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum BackupSource {
    Prometheus {
        url: String,
        data_dir: Option<PathBuf>,
        service: Option<String>,
    },
    Grafana {
        url: String,
        auth: GrafanaAuthSpec,
    },
}

/// Where Grafana credentials live. The secrets themselves are read only
/// when a backup runs, never stored in the model.
#[derive(Debug, Clone, PartialEq)]
pub enum GrafanaAuthSpec {
    TokenFile(PathBuf),
    Basic {
        username: String,
        password_file: PathBuf,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct BackupSpec {
    pub schedule: Schedule,
    pub keep: u32,
    pub destination: Option<PathBuf>,
    pub source: BackupSource,
}

/// A problem with a manifest file, located as precisely as we can.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ManifestError {
    pub file: PathBuf,
    /// 1-based; 0 when the problem is the file as a whole.
    pub line: u64,
    pub column: u64,
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            )
        }
    }
}

impl std::error::Error for ManifestError {}

// ---------------------------------------------------------------------------
// Raw, serde-facing shapes. Every field that can fail validation is Spanned
// so the error can carry its line and column.

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawDocument {
    api_version: Spanned<String>,
    kind: Spanned<String>,
    metadata: Spanned<RawMetadata>,
    spec: Option<Spanned<RawSpec>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetadata {
    name: Spanned<String>,
    #[serde(default)]
    labels: Option<Spanned<BTreeMap<String, String>>>,
}

/// The union of both kinds' fields; which are allowed is checked per kind so
/// the message can say "not a field of kind Service" rather than "unknown".
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSpec {
    // Service
    description: Option<Spanned<String>>,
    command: Option<Spanned<Vec<String>>>,
    unit_file: Option<Spanned<String>>,
    working_directory: Option<Spanned<String>>,
    environment: Option<Spanned<BTreeMap<String, String>>>,
    environment_file: Option<Spanned<String>>,
    credentials: Option<Spanned<BTreeMap<String, String>>>,
    state: Option<Spanned<String>>,
    enabled: Option<Spanned<bool>>,
    restart: Option<Spanned<String>>,
    restart_sec: Option<Spanned<String>>,
    after: Option<Spanned<Vec<String>>>,
    resources: Option<Spanned<RawResources>>,
    config_files: Option<Spanned<Vec<String>>>,
    on_config_change: Option<Spanned<String>>,
    reload: Option<Spanned<RawReload>>,
    validate: Option<Spanned<Vec<String>>>,
    readiness: Option<Spanned<RawReadiness>>,
    // Backup
    schedule: Option<Spanned<String>>,
    keep: Option<Spanned<i64>>,
    destination: Option<Spanned<String>>,
    prometheus: Option<Spanned<RawPrometheus>>,
    grafana: Option<Spanned<RawGrafana>>,
}

/// Sizes and percentages are strings or numbers in YAML; accept both and
/// validate the text ourselves so `2 GB` gets a helpful message.
#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    Int(i64),
    Float(f64),
    Str(String),
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Str(s) => f.write_str(s),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawResources {
    memory_max: Option<Spanned<Scalar>>,
    memory_high: Option<Spanned<Scalar>>,
    cpu_quota: Option<Spanned<Scalar>>,
    tasks_max: Option<Spanned<Scalar>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUrl {
    url: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReload {
    http: Option<Spanned<RawUrl>>,
    signal: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReadiness {
    http: Spanned<RawUrl>,
    timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawPrometheus {
    url: Spanned<String>,
    data_dir: Option<Spanned<String>>,
    service: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawGrafana {
    url: Spanned<String>,
    token_file: Option<Spanned<String>>,
    basic_auth: Option<Spanned<RawBasicAuth>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawBasicAuth {
    username: Spanned<String>,
    password_file: Spanned<String>,
}

// ---------------------------------------------------------------------------

/// What parsing one file produced: the documents that validated and the
/// problems found. A syntax error makes the whole file one error.
#[derive(Debug, Default)]
pub struct ParsedFile {
    pub manifests: Vec<Manifest>,
    pub errors: Vec<ManifestError>,
}

/// Context a path is resolved against: relative paths are relative to the
/// manifest's directory, `~/` to the home directory.
#[derive(Debug, Clone)]
pub struct PathContext {
    pub manifest_dir: PathBuf,
    pub home: Option<PathBuf>,
}

impl PathContext {
    pub fn resolve(&self, p: &str) -> Result<PathBuf, String> {
        if p.is_empty() {
            return Err("empty path".into());
        }
        if let Some(rest) = p.strip_prefix("~/") {
            let home = self
                .home
                .as_ref()
                .ok_or_else(|| format!("path {p:?} starts with ~/ but HOME is not set"))?;
            return Ok(normalize(&home.join(rest)));
        }
        if p.starts_with('~') {
            return Err(format!("path {p:?}: only ~/ (your own home) is supported"));
        }
        let path = Path::new(p);
        if path.is_absolute() {
            Ok(normalize(path))
        } else {
            Ok(normalize(&self.manifest_dir.join(path)))
        }
    }
}

/// Lexical normalisation (`a/./b/../c` → `a/c`) so rendered paths are tidy
/// and comparable; symlinks are not resolved on purpose (no I/O here).
fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Parse and validate the text of one manifest file. Pure.
///
/// Adopted unit files (`spec.unitFile`) are returned with empty content;
/// [`load_dir`] and [`load_files`] fill it in.
pub fn parse_str(text: &str, file: &Path, ctx: &PathContext) -> ParsedFile {
    let mut out = ParsedFile::default();
    if let Err((line, column, message)) = prescan(text) {
        out.errors.push(ManifestError {
            file: file.to_path_buf(),
            line,
            column,
            message,
        });
        return out;
    }
    let docs: Vec<Spanned<RawDocument>> = match serde_saphyr::from_multiple_with_options(
        text,
        yaml_options(),
    ) {
        Ok(d) if d.is_empty() => {
            // An editor that truncates before writing saves an empty file
            // for a moment; taking that as "no objects" would garbage-collect
            // the file's units.
            out.errors.push(ManifestError {
                file: file.to_path_buf(),
                line: 0,
                column: 0,
                message: "file has no documents; if you meant to delete its objects, remove the file (its units are kept as they are until then)".into(),
            });
            return out;
        }
        Ok(d) => d,
        Err(e) => {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((0, 0));
            out.errors.push(ManifestError {
                file: file.to_path_buf(),
                line,
                column,
                message: yaml_message(&e, text, line),
            });
            return out;
        }
    };
    for doc in docs {
        match validate_document(doc, file, ctx) {
            Ok(m) => out.manifests.push(m),
            Err(e) => out.errors.push(e),
        }
    }
    out
}

/// Collections nested deeper than this are refused before deserializing:
/// no manifest needs more than a handful of levels, and deep nesting is a
/// way to exhaust the stack.
pub const MAX_DEPTH: usize = 32;

/// Anchors and aliases beyond these counts are refused (billion laughs):
/// a manifest needs none, a long one a few.
const MAX_ALIASES: usize = 256;
const MAX_ANCHOR_EVENTS: usize = 16_384;

fn yaml_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_aliases = MAX_ALIASES;
    budget.max_anchors = MAX_ALIASES;
    budget.max_recorded_anchor_events = MAX_ANCHOR_EVENTS;
    budget.max_events = 200_000;
    let mut o = serde_saphyr::Options::default();
    o.budget = Some(budget);
    o
}

/// Walk the YAML event stream (no alias expansion, no deserialization)
/// and refuse what the typed parse would accept or choke on: any tag
/// (`!!python/object`, `!custom`, even `!!str`: manifests are plain data,
/// and a tag that is silently ignored hides what the author meant), and
/// nesting deeper than [`MAX_DEPTH`]. Syntax errors are left to the
/// deserializer, which words them better.
fn prescan(text: &str) -> Result<(), (u64, u64, String)> {
    use serde_saphyr::granit_parser::{Event, Parser};
    let mut depth = 0usize;
    for ev in Parser::new_from_str(text) {
        let Ok((ev, span)) = ev else {
            return Ok(());
        };
        let tag = match &ev {
            Event::Scalar(_, _, _, t)
            | Event::SequenceStart(_, _, t)
            | Event::MappingStart(_, _, t) => t.as_ref(),
            _ => None,
        };
        if let Some(tag) = tag {
            let at = span.tag_start().unwrap_or(span.start);
            let written = format!("{}{}", tag.original_handle(), tag.suffix());
            return Err((
                at.line() as u64,
                at.col() as u64 + 1,
                format!(
                    "YAML tag `{written}` is not allowed: manifests are plain data (strings, numbers, lists, maps); remove the tag"
                ),
            ));
        }
        match ev {
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err((
                        span.start.line() as u64,
                        span.start.col() as u64 + 1,
                        format!(
                            "nesting is deeper than {MAX_DEPTH} levels; a manifest needs only a few"
                        ),
                    ));
                }
            }
            Event::SequenceEnd | Event::MappingEnd => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// `spec` fields by kind, for "unknown field" messages: serde only knows
/// the union of both kinds' fields.
const SERVICE_FIELDS: &[&str] = &[
    "description",
    "command",
    "unitFile",
    "workingDirectory",
    "environment",
    "environmentFile",
    "credentials",
    "state",
    "enabled",
    "restart",
    "restartSec",
    "after",
    "resources",
    "configFiles",
    "onConfigChange",
    "reload",
    "validate",
    "readiness",
];
const BACKUP_FIELDS: &[&str] = &["schedule", "keep", "destination", "prometheus", "grafana"];

fn yaml_message(e: &serde_saphyr::Error, source: &str, line: u64) -> String {
    let text = e.without_snippet().to_string();
    // serde-saphyr appends " at line N, column M"; we print the location
    // ourselves in file:line:col form.
    let text = match text
        .rfind(" (used at line ")
        .or_else(|| text.rfind(" at line "))
    {
        Some(i) if text[i..].contains(", column ") => text[..i].to_string(),
        _ => text,
    };
    // The library's advice is for programmers, not for manifest authors.
    let text = text.replace(
        ", set DuplicateKeyPolicy in Options if acceptable",
        " (each key may appear once; remove one of them)",
    );
    if let Some(better) = unknown_field_message(&text, source, line) {
        return better;
    }
    format!("invalid manifest: {text}")
}

/// "unknown field `comand`, expected one of …" → the fields of the
/// document's own kind, and the closest one as a suggestion.
fn unknown_field_message(text: &str, source: &str, line: u64) -> Option<String> {
    let rest = text.strip_prefix("unknown field `")?;
    let (field, expected) = rest.split_once("`, expected one of ")?;
    let mut candidates: Vec<&str> = expected.split(", ").map(|s| s.trim_matches('`')).collect();
    let mut what = String::new();
    // A spec field: narrow to the fields of the document's kind.
    if candidates.contains(&"command") && candidates.contains(&"schedule") {
        let lines: Vec<&str> = source.lines().collect();
        let upto = (line as usize).min(lines.len());
        let kind = lines[..upto]
            .iter()
            .rev()
            .take_while(|l| l.trim() != "---")
            .find_map(|l| {
                l.strip_prefix("kind:")
                    .map(|k| k.trim().trim_matches(['"', '\'']).to_string())
            });
        match kind.as_deref() {
            Some("Service") => {
                candidates = SERVICE_FIELDS.to_vec();
                what = " in a Service spec".into();
            }
            Some("Backup") => {
                candidates = BACKUP_FIELDS.to_vec();
                what = " in a Backup spec".into();
            }
            _ => {}
        }
    }
    let closest = candidates
        .iter()
        .map(|c| {
            (
                edit_distance(&field.to_ascii_lowercase(), &c.to_ascii_lowercase()),
                *c,
            )
        })
        .min()
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .map(|(_, c)| format!("; did you mean `{c}`?"))
        .unwrap_or_default();
    Some(format!(
        "unknown field `{field}` {what}{closest} (expected one of: {})",
        candidates.join(", ")
    ))
}

/// Levenshtein distance, for "did you mean".
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

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

fn validate_document(
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
        reload => "reload", validate => "validate", readiness => "readiness");
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

// ---------------------------------------------------------------------------
// Directory loading (I/O).

/// Everything found in the manifests directory.
#[derive(Debug, Default)]
pub struct LoadedSet {
    /// Valid manifests, unique by name.
    pub manifests: Vec<Manifest>,
    /// Problems, per file. A file with an error in any document may still
    /// have contributed other valid documents.
    pub errors: Vec<ManifestError>,
    /// Names that appear in some file but are not applied because of an
    /// error: the file's implied name for unparsable files, or the names of
    /// documents that failed validation or collided. Units of these names
    /// are held as they are (never garbage-collected).
    pub held: BTreeMap<String, ManifestError>,
    /// Files that failed to parse as a whole.
    pub broken_files: BTreeSet<PathBuf>,
    /// Files that were considered (valid or not).
    pub files: Vec<PathBuf>,
}

impl LoadedSet {
    pub fn get(&self, name: &str) -> Option<&Manifest> {
        self.manifests.iter().find(|m| m.name == name)
    }
}

/// Why the manifests directory itself could not be read: an operational
/// error, never "no manifests" (which would delete everything).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The directory does not exist.
    #[error(
        "manifests directory {path} does not exist; create it or pass --manifests (nothing was changed)"
    )]
    Missing { path: PathBuf },
    /// The directory exists but cannot be listed.
    #[error("cannot read manifests directory {path} (nothing was changed)")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Someone else can write manifests that would run commands as you.
    #[error(
        "{path} is writable by other users (mode {mode:04o}): anyone who can drop a manifest there runs commands as you; run `chmod go-w {path}`"
    )]
    Insecure { path: PathBuf, mode: u32 },
}

/// The name a file implies when its content cannot be parsed:
/// `prometheus.yaml` → `prometheus`.
pub fn implied_name(file: &Path) -> String {
    file.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Whether a directory entry is a manifest file: `*.yaml` / `*.yml`, not
/// hidden, not an editor's temporary.
pub fn is_manifest_file_name(name: &str) -> bool {
    if name.starts_with('.') || name.starts_with('#') || name.ends_with('~') {
        return false;
    }
    name.ends_with(".yaml") || name.ends_with(".yml")
}

fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

/// Refuse paths that other users can write: a manifest runs commands as you.
fn check_owner_mode(path: &Path, meta: &std::fs::Metadata) -> Result<(), LoadError> {
    use std::os::unix::fs::MetadataExt;
    let mode = meta.mode() & 0o7777;
    // Sticky, world-writable directories (like /tmp) are still unsafe for this.
    if mode & 0o022 != 0 {
        return Err(LoadError::Insecure {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Load every manifest file directly in `dir`.
///
/// # Errors
/// Only for the directory itself (missing, unreadable, writable by others).
/// Problems with individual files are reported in [`LoadedSet::errors`] and
/// never stop the other files from loading.
pub fn load_dir(dir: &Path) -> Result<LoadedSet, LoadError> {
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(LoadError::Missing {
                path: dir.to_path_buf(),
            });
        }
        Err(e) => {
            return Err(LoadError::Unreadable {
                path: dir.to_path_buf(),
                source: e,
            });
        }
    };
    if !meta.is_dir() {
        return Err(LoadError::Unreadable {
            path: dir.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
        });
    }
    check_owner_mode(dir, &meta)?;
    let rd = std::fs::read_dir(dir).map_err(|e| LoadError::Unreadable {
        path: dir.to_path_buf(),
        source: e,
    })?;
    let mut files = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| LoadError::Unreadable {
            path: dir.to_path_buf(),
            source: e,
        })?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        if is_manifest_file_name(name) {
            files.push(dir.join(name));
        }
    }
    files.sort();
    let canon_dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut set = LoadedSet::default();
    let mut parsed = Vec::new();
    for f in &files {
        parsed.push((f.clone(), read_manifest_file(f, &canon_dir, true)));
    }
    set.files = files;
    assemble(&mut set, parsed);
    Ok(set)
}

/// Load explicit files (for `validate FILE...`). Each file is checked as if
/// it were in its own directory.
pub fn load_files(files: &[PathBuf]) -> LoadedSet {
    let mut set = LoadedSet::default();
    let mut parsed = Vec::new();
    for f in files {
        let dir = f
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                }
            })
            .unwrap_or(Path::new("."));
        let canon_dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        parsed.push((f.clone(), read_manifest_file(f, &canon_dir, false)));
    }
    set.files = files.to_vec();
    assemble(&mut set, parsed);
    set
}

/// What kind of file a mode describes, for "is not a regular file" messages.
pub fn file_type_name(ft: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_file() {
        "a regular file"
    } else if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO (named pipe)"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_symlink() {
        "a symlink"
    } else {
        "not a regular file"
    }
}

/// Open `path` for reading only if it is a regular file, without ever
/// blocking: stat first (a FIFO, device, socket or directory is refused by
/// name, also behind a symlink), open with `O_NONBLOCK` (an opened FIFO
/// would otherwise wait for a writer) and `O_NOFOLLOW` unless `follow`,
/// then fstat the descriptor, so a file swapped between the two is
/// caught too.
///
/// # Errors
/// A message naming what the path is instead, or the I/O error.
pub fn open_regular(path: &Path, follow: bool) -> Result<(std::fs::File, u64), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let meta = if follow {
        std::fs::metadata(path)
    } else {
        std::fs::symlink_metadata(path)
    }
    .map_err(|e| format!("cannot be read: {e}"))?;
    if !meta.is_file() {
        return Err(format!(
            "is {}, not a regular file",
            file_type_name(meta.file_type())
        ));
    }
    let mut flags = libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY;
    if !follow {
        flags |= libc::O_NOFOLLOW;
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|e| format!("cannot be read: {e}"))?;
    let meta = f.metadata().map_err(|e| format!("cannot be read: {e}"))?;
    if !meta.is_file() {
        return Err(format!(
            "is {}, not a regular file",
            file_type_name(meta.file_type())
        ));
    }
    Ok((f, meta.len()))
}

/// Read a regular file (see [`open_regular`]) of at most `cap` bytes.
///
/// # Errors
/// As [`open_regular`], or the file is larger than `cap` (the message
/// names the limit), also when it grows while being read.
pub fn read_regular_capped(path: &Path, follow: bool, cap: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let (f, len) = open_regular(path, follow)?;
    let too_big = |n: u64| format!("is {n} bytes or more; the limit is {cap} bytes");
    if len > cap {
        return Err(too_big(len));
    }
    let mut buf = Vec::with_capacity(len as usize);
    f.take(cap + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("cannot be read: {e}"))?;
    if buf.len() as u64 > cap {
        return Err(too_big(buf.len() as u64));
    }
    Ok(buf)
}

/// A file holding a secret (token, password, environment file, credential)
/// must be a regular file only you can read or write, as ssh insists for
/// private keys: anyone else who can read it has the secret, anyone who can
/// write it can change what the service sees.
///
/// # Errors
/// A message naming the path and what is wrong (missing, not a regular
/// file, mode, owner) and the command that fixes it.
pub fn check_secret_file(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let p = path.display();
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "{p} does not exist; create it with `install -m 600 /dev/null {p}` and put the secret in it"
            ));
        }
        Err(e) => return Err(format!("{p} cannot be read: {e}")),
    };
    if !meta.is_file() {
        return Err(format!(
            "{p} is {}, not a regular file",
            file_type_name(meta.file_type())
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{p} is accessible by group or others (mode {mode:04o}); secret files must be private: run `chmod 600 {p}`"
        ));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(format!(
            "{p} is owned by uid {}, not by you (uid {me}); secret files must be your own",
            meta.uid()
        ));
    }
    Ok(())
}

/// Unit files adopted with `spec.unitFile` are refused above this size.
pub const MAX_UNIT_FILE_SIZE: u64 = 256 * 1024;

/// Load-time checks of a valid manifest that need the filesystem: read the
/// adopted unit file (bounded, regular files only) and check secret files.
fn load_time_checks(m: &mut Manifest) -> Result<(), (&'static str, String)> {
    match &mut m.spec {
        Spec::Service(s) => {
            if let Exec::UnitFile { path, content } = &mut s.exec {
                let bytes = read_regular_capped(path, true, MAX_UNIT_FILE_SIZE)
                    .map_err(|e| ("unitFile", format!("spec.unitFile {} {e}", path.display())))?;
                let c = String::from_utf8(bytes).map_err(|_| {
                    (
                        "unitFile",
                        format!(
                            "spec.unitFile {} is not UTF-8 text; is it a unit file?",
                            path.display()
                        ),
                    )
                })?;
                if let Some(bad) = c
                    .chars()
                    .find(|ch| ch.is_control() && *ch != '\n' && *ch != '\t' && *ch != '\r')
                {
                    return Err((
                        "unitFile",
                        format!(
                            "spec.unitFile {} contains the control character {bad:?}",
                            path.display()
                        ),
                    ));
                }
                *content = c;
            }
            if let Some(f) = &s.environment_file {
                check_secret_file(f)
                    .map_err(|e| ("environmentFile", format!("spec.environmentFile: {e}")))?;
            }
            for (name, f) in &s.credentials {
                check_secret_file(f)
                    .map_err(|e| ("credentials", format!("spec.credentials.{name}: {e}")))?;
            }
        }
        Spec::Backup(b) => {
            if let BackupSource::Grafana { auth, .. } = &b.source {
                // Missing files are reported when a backup runs (the token
                // may be created after the manifest); a present file must
                // be private already.
                let (field, f) = match auth {
                    GrafanaAuthSpec::TokenFile(f) => ("grafana.tokenFile", f),
                    GrafanaAuthSpec::Basic { password_file, .. } => {
                        ("grafana.basicAuth.passwordFile", password_file)
                    }
                };
                if f.exists() {
                    check_secret_file(f).map_err(|e| (field, format!("spec.{field}: {e}")))?;
                }
            }
        }
    }
    Ok(())
}

fn file_error(file: &Path, message: impl Into<String>) -> ParsedFile {
    ParsedFile {
        manifests: vec![],
        errors: vec![ManifestError {
            file: file.to_path_buf(),
            line: 0,
            column: 0,
            message: message.into(),
        }],
    }
}

fn read_manifest_file(file: &Path, canon_dir: &Path, in_dir: bool) -> ParsedFile {
    use std::os::unix::fs::MetadataExt;
    let lmeta = match std::fs::symlink_metadata(file) {
        Ok(m) => m,
        Err(e) => return file_error(file, format!("cannot read: {e}")),
    };
    if lmeta.file_type().is_symlink() && in_dir {
        match std::fs::canonicalize(file) {
            Ok(target) => {
                if target.parent() != Some(canon_dir) {
                    return file_error(
                        file,
                        format!(
                            "is a symlink to {}, outside the manifests directory; manifests must live in the directory itself (copy the file in instead)",
                            target.display()
                        ),
                    );
                }
            }
            Err(e) => return file_error(file, format!("is a dangling symlink: {e}")),
        }
    }
    let meta = match std::fs::metadata(file) {
        Ok(m) => m,
        Err(e) => return file_error(file, format!("cannot read: {e}")),
    };
    if !meta.is_file() {
        return file_error(
            file,
            format!(
                "is {}, not a regular file",
                file_type_name(meta.file_type())
            ),
        );
    }
    if meta.mode() & 0o022 != 0 {
        return file_error(
            file,
            format!(
                "is writable by other users (mode {:04o}): anyone could make it run commands as you; run `chmod go-w {}`",
                meta.mode() & 0o7777,
                file.display()
            ),
        );
    }
    if meta.len() > MAX_FILE_SIZE {
        return file_error(
            file,
            format!(
                "is {} bytes; manifests are limited to {MAX_FILE_SIZE} bytes — is this really a manifest?",
                meta.len(),
            ),
        );
    }
    let bytes = match read_regular_capped(file, true, MAX_FILE_SIZE) {
        Ok(b) => b,
        Err(e) => return file_error(file, e),
    };
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            return file_error(
                file,
                format!(
                    "is not UTF-8 text (invalid byte at offset {}); is this a binary file?",
                    e.utf8_error().valid_up_to()
                ),
            );
        }
    };
    if text.contains('\0') {
        return file_error(file, "contains NUL bytes; is this a binary file?");
    }
    let ctx = PathContext {
        manifest_dir: file.parent().map(Path::to_path_buf).unwrap_or_default(),
        home: home_dir(),
    };
    let mut parsed = parse_str(&text, file, &ctx);
    // Read adopted unit files now so rendering stays pure.
    let mut keep = Vec::new();
    for mut m in std::mem::take(&mut parsed.manifests) {
        match load_time_checks(&mut m) {
            Ok(()) => keep.push(m),
            Err((field, message)) => {
                let (line, column) = m.field_at.get(field).copied().unwrap_or((m.line, 1));
                parsed.errors.push(ManifestError {
                    file: file.to_path_buf(),
                    line,
                    column,
                    message,
                })
            }
        }
    }
    parsed.manifests = keep;
    parsed
}

/// Merge per-file results: detect duplicate names across (and within)
/// files, and record which names are held back because of errors.
fn assemble(set: &mut LoadedSet, parsed: Vec<(PathBuf, ParsedFile)>) {
    let mut by_name: HashMap<String, Vec<Manifest>> = HashMap::new();
    for (file, p) in parsed {
        let whole_file_failed = p.manifests.is_empty() && !p.errors.is_empty();
        for e in &p.errors {
            // For a file that failed as a whole, or a document we could not
            // name, hold the name the file implies.
            if whole_file_failed || e.line == 0 {
                set.held
                    .entry(implied_name(&file))
                    .or_insert_with(|| e.clone());
            }
        }
        if whole_file_failed {
            set.broken_files.insert(file.clone());
        } else {
            for e in &p.errors {
                // A document that failed validation: hold the file's implied
                // name too, since we cannot trust the document's name.
                set.held
                    .entry(implied_name(&file))
                    .or_insert_with(|| e.clone());
            }
        }
        set.errors.extend(p.errors);
        for m in p.manifests {
            by_name.entry(m.name.clone()).or_default().push(m);
        }
    }
    let mut names: Vec<_> = by_name.keys().cloned().collect();
    names.sort();
    for name in names {
        let ms = by_name.remove(&name).unwrap_or_default();
        if ms.len() == 1 {
            let m = ms.into_iter().next().expect("one element");
            if set.held.contains_key(&m.name)
                && set.broken_files.iter().all(|f| implied_name(f) != m.name)
            {
                // Held only because a sibling document in the same file was
                // invalid; a valid document of that name still applies.
                set.held.remove(&m.name);
            }
            set.manifests.push(m);
            continue;
        }
        let places: Vec<String> = ms
            .iter()
            .map(|m| format!("{}:{}", m.file.display(), m.line))
            .collect();
        for m in &ms {
            let e = ManifestError {
                file: m.file.clone(),
                line: m.line,
                column: 1,
                message: format!(
                    "metadata.name {name:?} is defined {} times ({}); names must be unique across all manifests and kinds — rename or remove one",
                    ms.len(),
                    places.join(", ")
                ),
            };
            set.errors.push(e.clone());
            set.held.entry(name.clone()).or_insert(e);
        }
    }
    hold_after_cycles(set);
    // Names of valid manifests are never also held, except for duplicates.
    let valid: BTreeSet<String> = set.manifests.iter().map(|m| m.name.clone()).collect();
    set.held.retain(|n, _| !valid.contains(n));
    set.errors
        .sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    set.errors.dedup();
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
fn hold_after_cycles(set: &mut LoadedSet) {
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

/// Stable content hash of a value's debug form, used to notice spec changes
/// (for backoff reset) without a canonical serializer.
pub fn spec_hash(m: &Manifest) -> String {
    let mut h = Sha256::new();
    h.update(format!("{:?}", m.spec).as_bytes());
    hex::encode(&h.finalize()[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> PathContext {
        PathContext {
            manifest_dir: PathBuf::from("/m"),
            home: Some(PathBuf::from("/home/u")),
        }
    }

    fn parse(y: &str) -> ParsedFile {
        parse_str(y, Path::new("/m/x.yaml"), &ctx())
    }

    fn one_err(y: &str) -> ManifestError {
        let p = parse(y);
        assert!(
            p.manifests.is_empty(),
            "expected an error, got {:?}",
            p.manifests
        );
        assert_eq!(p.errors.len(), 1, "{:?}", p.errors);
        p.errors[0].clone()
    }

    const HEAD: &str = "apiVersion: unitlet/v1\nkind: Service\nmetadata:\n  name: web\nspec:\n";

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
    fn multi_document_files() {
        let y = format!(
            "{HEAD}  command: [a]\n---\napiVersion: unitlet/v1\nkind: Service\nmetadata: {{name: b}}\nspec: {{command: [b]}}\n"
        );
        let p = parse(&y);
        assert_eq!(p.manifests.len(), 2);
        assert_eq!(p.manifests[1].line, 8);
    }

    #[test]
    fn unknown_field_has_location() {
        let e = one_err(&format!("{HEAD}  comand: [a]\n"));
        assert_eq!((e.line, e.column), (6, 3));
        assert!(
            e.message.contains("unknown field `comand`"),
            "{}",
            e.message
        );
        assert_eq!(e.to_string().split(": ").next().unwrap(), "/m/x.yaml:6:3");
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
    fn syntax_error_is_one_error_with_location() {
        let e = one_err("apiVersion: unitlet/v1\nkind: Service\nmetadata:\n  name: [a\n");
        assert!(e.line >= 4, "{e}");
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
    fn manifest_file_names() {
        assert!(is_manifest_file_name("a.yaml"));
        assert!(is_manifest_file_name("a.yml"));
        for n in [
            ".a.yaml",
            "a.yaml~",
            "#a.yaml#",
            "a.yaml.swp",
            "a.json",
            ".#a.yaml",
            "4913",
        ] {
            assert!(!is_manifest_file_name(n), "{n}");
        }
    }

    #[test]
    fn duplicates_across_files_are_errors_and_held() {
        let mut set = LoadedSet::default();
        let a = parse_str(
            "apiVersion: unitlet/v1\nkind: Service\nmetadata: {name: a}\nspec: {command: [a]}\n",
            Path::new("/m/1.yaml"),
            &ctx(),
        );
        let b = parse_str(
            "apiVersion: unitlet/v1\nkind: Service\nmetadata: {name: a}\nspec: {command: [b]}\n",
            Path::new("/m/2.yaml"),
            &ctx(),
        );
        assemble(
            &mut set,
            vec![
                (PathBuf::from("/m/1.yaml"), a),
                (PathBuf::from("/m/2.yaml"), b),
            ],
        );
        assert!(set.manifests.is_empty());
        assert_eq!(set.errors.len(), 2);
        assert!(set.errors[0].message.contains("defined 2 times"));
        assert!(set.held.contains_key("a"));
    }

    #[test]
    fn yaml_tags_are_rejected_with_their_location() {
        for (tag, at) in [
            ("!!python/object:os.system", (6, 13)),
            ("!custom", (6, 13)),
            ("!!str", (6, 13)),
            ("!<tag:yaml.org,2002:str>", (6, 13)),
        ] {
            let y = format!("{HEAD}  command: [{tag} /bin/true]\n");
            let e = one_err(&y);
            assert!(e.message.contains("YAML tag"), "{tag}: {e}");
            assert!(e.message.contains("not allowed"), "{tag}: {e}");
            assert_eq!((e.line, e.column), at, "{tag}: {e}");
        }
        // On a mapping, and on the document itself.
        let e = one_err(&format!(
            "{HEAD}  resources: !!map {{memoryMax: 1G}}\n  command: [a]\n"
        ));
        assert!(e.message.contains("`!!map`"), "{e}");
        let e = one_err(&format!("--- !thing\n{HEAD}  command: [a]\n"));
        assert_eq!(e.line, 1, "{e}");
    }

    #[test]
    fn deep_nesting_and_alias_bombs_are_refused_quickly() {
        let deep = format!(
            "{HEAD}  command: {}a{}\n",
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        let e = one_err(&deep);
        assert!(
            e.message.contains("deeper than") || e.message.contains("recursion limit"),
            "{e}"
        );
        let mut block = format!("{HEAD}  labels:\n");
        for i in 0..10_000 {
            block.push_str(&format!("{}k{i}:\n", " ".repeat(4 + i)));
        }
        let e = one_err(&block);
        assert!(e.message.contains("deeper than"), "{e}");
        // 10 000 nested block sequences on one line.
        let e = one_err(&format!("{HEAD}  command:\n    {}a\n", "- ".repeat(10_000)));
        assert!(e.message.contains("deeper than"), "{e}");
        let mut lol = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        for i in 1..10 {
            let prev = (b'a' + i - 1) as char;
            let cur = (b'a' + i) as char;
            lol.push_str(&format!(
                "{cur}: &{cur} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
            ));
        }
        let t = std::time::Instant::now();
        let p = parse(&format!(
            "{HEAD}  command: [a]\n  labels: {{x: y}}\n---\n{lol}"
        ));
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert!(!p.errors.is_empty());
    }

    #[test]
    fn a_file_with_no_documents_is_an_error_not_an_empty_set() {
        for y in ["", "   \n\n", "# just a comment\n", "---\n", "---\n...\n"] {
            let e = one_err(y);
            assert!(e.message.contains("file has no documents"), "{y:?}: {e}");
            assert!(e.message.contains("remove the file"), "{y:?}: {e}");
            assert_eq!(e.line, 0);
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

    fn assemble_texts(files: &[(&str, &str)]) -> LoadedSet {
        let mut set = LoadedSet::default();
        let parsed = files
            .iter()
            .map(|(f, y)| (PathBuf::from(f), parse_str(y, Path::new(f), &ctx())))
            .collect();
        assemble(&mut set, parsed);
        set
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

    #[test]
    fn secret_files_must_be_private_regular_files() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("token");
        std::fs::write(&f, "s3cret").unwrap();
        for mode in [0o644, 0o640, 0o604, 0o620, 0o602] {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = check_secret_file(&f).unwrap_err();
            assert!(
                e.contains(&format!("mode {mode:04o}")) && e.contains(&*f.to_string_lossy()),
                "{e}"
            );
            assert!(!e.contains("s3cret"));
        }
        for mode in [0o600, 0o400] {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
            check_secret_file(&f).unwrap();
        }
        assert!(
            check_secret_file(d.path())
                .unwrap_err()
                .contains("directory")
        );
        assert!(
            check_secret_file(&d.path().join("missing"))
                .unwrap_err()
                .contains("does not exist")
        );
        // Checked when the manifest loads: a Backup's token file and a
        // Service's environment file and credentials.
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let t = f.display();
        for (i, y) in [
            format!("apiVersion: unitlet/v1\nkind: Backup\nmetadata: {{name: b}}\nspec: {{schedule: every 1h, grafana: {{url: 'http://h', tokenFile: {t}}}}}\n"),
            format!("apiVersion: unitlet/v1\nkind: Backup\nmetadata: {{name: b}}\nspec: {{schedule: every 1h, grafana: {{url: 'http://h', basicAuth: {{username: u, passwordFile: {t}}}}}}}\n"),
            format!("{HEAD}  command: [a]\n  environmentFile: {t}\n"),
            format!("{HEAD}  command: [a]\n  credentials: {{pw: {t}}}\n"),
        ]
        .iter()
        .enumerate()
        {
            let m = d.path().join(format!("m{i}.yaml"));
            std::fs::write(&m, y).unwrap();
            let set = load_files(std::slice::from_ref(&m));
            assert!(set.manifests.is_empty(), "{y}");
            assert!(set.errors[0].message.contains("mode 0644"), "{}", set.errors[0]);
            assert!(set.errors[0].line > 1, "points at the field: {}", set.errors[0]);
        }
    }

    #[test]
    fn unit_files_and_manifests_must_be_regular_files() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("fifo.service");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let zero = d.path().join("zero.service");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        std::fs::create_dir(d.path().join("dir.service")).unwrap();
        let big = d.path().join("big.service");
        std::fs::write(&big, vec![b'#'; MAX_UNIT_FILE_SIZE as usize + 1]).unwrap();
        for (unit, want) in [
            ("fifo.service", "FIFO"),
            ("zero.service", "character device"),
            ("dir.service", "directory"),
            ("big.service", "limit is"),
        ] {
            let m = d.path().join("m.yaml");
            std::fs::write(&m, format!("{HEAD}  unitFile: {unit}\n")).unwrap();
            // In a thread with a deadline: reading a FIFO or /dev/zero would
            // otherwise block (or run) for ever.
            let (tx, rx) = std::sync::mpsc::channel();
            let files = vec![m.clone()];
            std::thread::spawn(move || tx.send(load_files(&files)));
            let set = rx
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("loading a manifest adopting {unit} did not return"));
            assert!(set.manifests.is_empty(), "{unit}");
            let e = &set.errors[0];
            assert!(e.message.contains(want) && e.message.contains(unit), "{e}");
            assert_eq!((e.line, e.column), (6, 13), "points at spec.unitFile: {e}");
        }
        // A manifest that is a FIFO (behind a symlink, too) is refused
        // without blocking.
        let mfifo = d.path().join("fifo.yaml");
        let c = std::ffi::CString::new(mfifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let set = load_files(std::slice::from_ref(&mfifo));
        assert!(set.errors[0].message.contains("FIFO"), "{}", set.errors[0]);
    }
}
