//! YAML text to raw documents: strict deserializing, spans, tag and depth
//! checks, and the error messages that point at a line.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::model::*;

// ---------------------------------------------------------------------------
// Raw, serde-facing shapes. Every field that can fail validation is Spanned
// so the error can carry its line and column.

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(rename = "Manifest", description = "One manifest document.")]
pub(super) struct RawDocument {
    /// The schema version: `unitlet/v1`.
    #[schemars(with = "String")]
    pub(super) api_version: Spanned<String>,
    /// `Service` (a `NAME.service` unit) or `Backup` (a `NAME.timer` and its oneshot service).
    #[schemars(with = "String")]
    pub(super) kind: Spanned<String>,
    /// The object's name and labels.
    #[schemars(with = "RawMetadata")]
    pub(super) metadata: Spanned<RawMetadata>,
    /// The kind's fields.
    #[schemars(with = "Option<RawSpec>")]
    pub(super) spec: Option<Spanned<RawSpec>>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    rename = "Metadata",
    description = "The name (unique across kinds) and labels."
)]
pub(super) struct RawMetadata {
    /// Unique across files and kinds; the stem of the unit names. `[a-z0-9]([a-z0-9-]*[a-z0-9])?`, at most 63 characters.
    #[schemars(with = "String")]
    pub(super) name: Spanned<String>,
    /// Free-form labels; unitlet does not act on them.
    #[serde(default)]
    #[schemars(with = "Option<BTreeMap<String, String>>")]
    pub(super) labels: Option<Spanned<BTreeMap<String, String>>>,
}

/// The union of both kinds' fields; which are allowed is checked per kind so
/// the message can say "not a field of kind Service" rather than "unknown".
#[derive(Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(
    rename = "Spec",
    description = "What the object is: a Service's or a Backup's fields (see docs/manifests.md)."
)]
pub(super) struct RawSpec {
    // Service
    /// Service: `Description=` (default: the name).
    #[schemars(with = "Option<String>")]
    pub(super) description: Option<Spanned<String>>,
    /// Service: the argv of the main process (`ExecStart=`); this or `unitFile`.
    #[schemars(with = "Option<Vec<String>>")]
    pub(super) command: Option<Spanned<Vec<String>>>,
    /// Service: adopt this unit file instead of `command`.
    #[schemars(with = "Option<String>")]
    pub(super) unit_file: Option<Spanned<String>>,
    /// Service: `WorkingDirectory=`.
    #[schemars(with = "Option<String>")]
    pub(super) working_directory: Option<Spanned<String>>,
    /// Service: environment variables.
    #[schemars(with = "Option<BTreeMap<String, String>>")]
    pub(super) environment: Option<Spanned<BTreeMap<String, String>>>,
    /// Service: `EnvironmentFile=`, a private file of secrets (mode 0600).
    #[schemars(with = "Option<String>")]
    pub(super) environment_file: Option<Spanned<String>>,
    /// Service: `LoadCredential=NAME:PATH`, private files the service reads from `$CREDENTIALS_DIRECTORY/NAME`.
    #[schemars(with = "Option<BTreeMap<String, String>>")]
    pub(super) credentials: Option<Spanned<BTreeMap<String, String>>>,
    /// Service: `running` (default) or `stopped`.
    #[schemars(with = "Option<String>")]
    pub(super) state: Option<Spanned<String>>,
    /// Service: started with your session (default true).
    #[schemars(with = "Option<bool>")]
    pub(super) enabled: Option<Spanned<bool>>,
    /// Service: systemd's `Restart=` (default `on-failure`).
    #[schemars(with = "Option<String>")]
    pub(super) restart: Option<Spanned<String>>,
    /// Service: `RestartSec=`, a duration (default `1s`).
    #[schemars(with = "Option<String>")]
    pub(super) restart_sec: Option<Spanned<String>>,
    /// Service: Services started first (`After=`, `Wants=`).
    #[schemars(with = "Option<Vec<String>>")]
    pub(super) after: Option<Spanned<Vec<String>>>,
    /// Service: cgroup limits, kept in force.
    #[schemars(with = "Option<RawResources>")]
    pub(super) resources: Option<Spanned<RawResources>>,
    /// Service: files whose change triggers `onConfigChange`.
    #[schemars(with = "Option<Vec<String>>")]
    pub(super) config_files: Option<Spanned<Vec<String>>>,
    /// Service: `reload`, `restart` (default) or `none`.
    #[schemars(with = "Option<String>")]
    pub(super) on_config_change: Option<Spanned<String>>,
    /// Service: how to reload: `http.url` or `signal`.
    #[schemars(with = "Option<RawReload>")]
    pub(super) reload: Option<Spanned<RawReload>>,
    /// Service: a command run before a reload or restart caused by a config change; non-zero blocks it.
    #[schemars(with = "Option<Vec<String>>")]
    pub(super) validate: Option<Spanned<Vec<String>>>,
    /// Service: ready when this URL answers 2xx.
    #[schemars(with = "Option<RawReadiness>")]
    pub(super) readiness: Option<Spanned<RawReadiness>>,
    /// Service: Alertmanager silence around restarts unitlet makes on purpose.
    #[schemars(with = "Option<RawSilence>")]
    pub(super) silence: Option<Spanned<RawSilence>>,
    /// Service: how a changed definition is judged and rolled back.
    #[schemars(with = "Option<RawRollout>")]
    pub(super) rollout: Option<Spanned<RawRollout>>,
    // Backup
    /// Backup: `every DURATION` or a 5-field cron expression.
    #[schemars(with = "Option<String>")]
    pub(super) schedule: Option<Spanned<String>>,
    /// Backup: complete sets kept (default 7).
    #[schemars(with = "Option<i64>")]
    pub(super) keep: Option<Spanned<i64>>,
    /// Backup: where sets go: a directory (default
    /// `$XDG_STATE_HOME/unitlet/backups/NAME`) or `{restic: {repository,
    /// passwordFile}}`.
    #[schemars(with = "Option<RawDestination>")]
    pub(super) destination: Option<Spanned<RawDestination>>,
    /// Backup: a Prometheus TSDB snapshot; this or `grafana`.
    #[schemars(with = "Option<RawPrometheus>")]
    pub(super) prometheus: Option<Spanned<RawPrometheus>>,
    /// Backup: Grafana dashboards and folders; this or `prometheus`.
    #[schemars(with = "Option<RawGrafana>")]
    pub(super) grafana: Option<Spanned<RawGrafana>>,
}

/// Sizes and percentages are strings or numbers in YAML; accept both and
/// validate the text ourselves so `2 GB` gets a helpful message.
#[derive(Deserialize, JsonSchema)]
#[serde(untagged)]
#[schemars(
    rename = "SizeOrNumber",
    description = "A size (`512M`), a percentage (`150%`) or a number."
)]
pub(super) enum Scalar {
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

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(rename = "Resources", description = "cgroup limits.")]
pub(super) struct RawResources {
    /// `MemoryMax=`, a size (`512M`, `2G`).
    #[schemars(with = "Option<Scalar>")]
    pub(super) memory_max: Option<Spanned<Scalar>>,
    /// `MemoryHigh=`, a size.
    #[schemars(with = "Option<Scalar>")]
    pub(super) memory_high: Option<Spanned<Scalar>>,
    /// `CPUQuota=`, a percentage of one CPU (`150%`).
    #[schemars(with = "Option<Scalar>")]
    pub(super) cpu_quota: Option<Spanned<Scalar>>,
    /// `TasksMax=`, an integer.
    #[schemars(with = "Option<Scalar>")]
    pub(super) tasks_max: Option<Spanned<Scalar>>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Http", description = "An HTTP endpoint.")]
pub(super) struct RawUrl {
    /// The URL.
    #[schemars(with = "String")]
    pub(super) url: Spanned<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    rename = "Reload",
    description = "How to reload: `http.url` or `signal`."
)]
pub(super) struct RawReload {
    /// Reload = HTTP `POST` to this URL; 2xx is success.
    #[schemars(with = "Option<RawUrl>")]
    pub(super) http: Option<Spanned<RawUrl>>,
    /// Reload = send this signal (`SIGHUP`) to the main process.
    #[schemars(with = "Option<String>")]
    pub(super) signal: Option<Spanned<String>>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    rename = "Readiness",
    description = "When the Service counts as ready."
)]
pub(super) struct RawReadiness {
    /// Ready = this URL answers 2xx.
    #[schemars(with = "RawUrl")]
    pub(super) http: Spanned<RawUrl>,
    /// How long to wait to be ready (default `60s`).
    #[schemars(with = "Option<String>")]
    pub(super) timeout: Option<Spanned<String>>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(
    rename = "Rollout",
    description = "How a changed definition is judged and rolled back."
)]
pub(super) struct RawRollout {
    /// Roll a failed revision back by itself (default true).
    #[schemars(with = "Option<bool>")]
    pub(super) auto: Option<Spanned<bool>>,
    /// How long a new revision may take to be active and ready.
    #[schemars(with = "Option<String>")]
    pub(super) timeout: Option<Spanned<String>>,
    /// Automatic restarts that fail a revision beyond this (default 3).
    #[schemars(with = "Option<i64>")]
    pub(super) max_restarts: Option<Spanned<i64>>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    rename = "Silence",
    description = "What to silence in Alertmanager around restarts made on purpose."
)]
pub(super) struct RawSilence {
    /// Alertmanager matchers (default `job="<labels.job or the name>"`).
    #[schemars(with = "Option<Vec<String>>")]
    pub(super) matchers: Option<Spanned<Vec<String>>>,
    /// How long a silence lasts at most.
    #[serde(rename = "for")]
    #[schemars(with = "Option<String>")]
    pub(super) for_: Option<Spanned<String>>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(rename = "Prometheus", description = "Back up a Prometheus TSDB.")]
pub(super) struct RawPrometheus {
    /// Prometheus' base URL (snapshot via its admin API).
    #[schemars(with = "String")]
    pub(super) url: Spanned<String>,
    /// The TSDB directory (needed for restore).
    #[schemars(with = "Option<String>")]
    pub(super) data_dir: Option<Spanned<String>>,
    /// The Service that runs Prometheus (stopped and started around a restore).
    #[schemars(with = "Option<String>")]
    pub(super) service: Option<Spanned<String>>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(
    rename = "Grafana",
    description = "Back up Grafana dashboards and folders."
)]
pub(super) struct RawGrafana {
    /// Grafana's base URL.
    #[schemars(with = "String")]
    pub(super) url: Spanned<String>,
    /// A private file holding a service-account token.
    #[schemars(with = "Option<String>")]
    pub(super) token_file: Option<Spanned<String>>,
    /// Basic authentication, instead of a token.
    #[schemars(with = "Option<RawBasicAuth>")]
    pub(super) basic_auth: Option<Spanned<RawBasicAuth>>,
}

/// `spec.destination`: a directory, or a restic repository.
#[derive(JsonSchema)]
#[serde(untagged)]
#[schemars(
    rename = "Destination",
    description = "A directory of the Backup's own, or `{restic: {repository, passwordFile}}`."
)]
pub(super) enum RawDestination {
    /// A directory.
    Path(String),
    /// A restic repository.
    Restic(RawResticDestination),
}

/// A string is a directory; a mapping is `{restic: …}`, whose own errors
/// (unknown or missing fields) are reported as they are, not as "matches no
/// variant".
impl<'de> Deserialize<'de> for RawDestination {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawDestination;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a directory or {restic: {repository, passwordFile}}")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawDestination, E> {
                Ok(RawDestination::Path(v.to_owned()))
            }
            // A plain scalar is a (relative) directory name, as when this
            // field was only a string.
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawDestination, E> {
                Ok(RawDestination::Path(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawDestination, E> {
                Ok(RawDestination::Path(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<RawDestination, E> {
                Ok(RawDestination::Path(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<RawDestination, E> {
                Ok(RawDestination::Path(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<RawDestination, A::Error> {
                RawResticDestination::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RawDestination::Restic)
            }
        }
        d.deserialize_any(V)
    }
}

/// `destination: {restic: …}`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ResticDestination")]
pub(super) struct RawResticDestination {
    /// The restic repository.
    pub(super) restic: RawRestic,
}

/// A restic repository and its password file.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(rename = "Restic", description = "A restic repository.")]
pub(super) struct RawRestic {
    /// Any repository string restic accepts (`/srv/restic`, `sftp:host:/path`, `s3:…`).
    pub(super) repository: String,
    /// A private file holding the repository password.
    pub(super) password_file: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(rename = "BasicAuth", description = "Grafana basic authentication.")]
pub(super) struct RawBasicAuth {
    /// The user name.
    #[schemars(with = "String")]
    pub(super) username: Spanned<String>,
    /// A private file holding the password.
    #[schemars(with = "String")]
    pub(super) password_file: Spanned<String>,
}

// ---------------------------------------------------------------------------

/// What parsing one file produced: the documents that validated and the
/// problems found. A syntax error makes the whole file one error.
#[derive(Debug, Default)]
pub struct ParsedFile {
    /// The documents that parsed and validated.
    pub manifests: Vec<Manifest>,
    /// What was wrong with the others.
    pub errors: Vec<ManifestError>,
    /// Facts about this machine (see [`HostFacts`](super::HostFacts)):
    /// never from parsing, only from loading.
    pub warnings: Vec<ManifestError>,
}

/// Context a path is resolved against: relative paths are relative to the
/// manifest's directory, `~/` to the home directory.
#[derive(Debug, Clone)]
pub struct PathContext {
    /// The manifests directory: relative paths are relative to it.
    pub manifest_dir: PathBuf,
    /// The home directory `~/` expands to, if known.
    pub home: Option<PathBuf>,
}

impl PathContext {
    /// `p` as an absolute path (`~/` expanded, relative joined onto the
    /// manifests directory).
    ///
    /// # Errors
    /// An empty path, `~/` without a known home directory, or `~user/`.
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

/// The raw documents of one manifest file's text, with the lines blanked
/// out to get past unknown fields (so one run reports every error), for
/// [`parse_str`](super::parse_str) to validate; `None` when the text is
/// beyond that, its errors in `out`. Pure.
pub(super) fn raw_documents(
    text: &str,
    file: &Path,
    out: &mut ParsedFile,
) -> Option<(Vec<Spanned<RawDocument>>, Vec<u64>)> {
    if let Err((line, column, message)) = prescan(text) {
        out.errors.push(ManifestError {
            file: file.to_path_buf(),
            field: None,
            line,
            column,
            message,
        });
        return None;
    }
    // An unknown field stops the typed parse: note it, blank its lines
    // (keeping every other line where it is) and parse again, so one run
    // reports every error of the file.
    let mut blanked: Vec<u64> = Vec::new();
    let mut current = std::borrow::Cow::Borrowed(text);
    let docs: Vec<Spanned<RawDocument>> = loop {
        match serde_saphyr::from_multiple_with_options(&current, yaml_options()) {
            Ok(d) if d.is_empty() => {
                // An editor that truncates before writing saves an empty
                // file for a moment; taking that as "no objects" would
                // garbage-collect the file's units.
                out.errors.push(ManifestError {
                    file: file.to_path_buf(),
                    field: None,
                    line: 0,
                    column: 0,
                    message: "file has no documents; if you meant to delete its objects, remove the file (its units are kept as they are until then)".into(),
                });
                return None;
            }
            Ok(d) => break d,
            Err(e) => {
                let (line, column) = e
                    .location()
                    .map(|l| (l.line(), l.column()))
                    .unwrap_or((0, 0));
                let unknown = e
                    .without_snippet()
                    .to_string()
                    .starts_with("unknown field `");
                if !blanked.is_empty() && !unknown {
                    // Most likely what the blanking left (an empty
                    // mapping): the errors so far say what to fix.
                    return None;
                }
                out.errors.push(ManifestError {
                    file: file.to_path_buf(),
                    field: None,
                    line,
                    column,
                    message: yaml_message(&e, text, line),
                });
                let again = (out.errors.len() < MAX_ERRORS_PER_FILE)
                    .then(|| blank_unknown_field(&current, &e, line, column))
                    .flatten();
                let again = again?;
                blanked.push(line);
                current = std::borrow::Cow::Owned(again);
            }
        }
    };
    Some((docs, blanked))
}

/// Errors reported for one file at most: past that, the file's first
/// errors are what needs fixing.
const MAX_ERRORS_PER_FILE: usize = 20;

/// `text` with the unknown field of `e` (at `line`:`column`) and its
/// nested lines blank, when it is a block mapping key on its own line;
/// `None` otherwise (the parse cannot go on).
fn blank_unknown_field(
    text: &str,
    e: &serde_saphyr::Error,
    line: u64,
    column: u64,
) -> Option<String> {
    let message = e.without_snippet().to_string();
    let field = message.strip_prefix("unknown field `")?.split('`').next()?;
    let lines: Vec<&str> = text.split('\n').collect();
    let at = usize::try_from(line).ok()?.checked_sub(1)?;
    let key_line = lines.get(at)?;
    let col = usize::try_from(column).ok()?.checked_sub(1)?;
    let (before, rest) = (key_line.get(..col)?, key_line.get(col..)?);
    let key_ok =
        before.chars().all(|c| c == ' ') && rest.strip_prefix(field)?.trim_start().starts_with(':');
    if !key_ok {
        return None;
    }
    let indent = |l: &str| l.len() - l.trim_start_matches(' ').len();
    let mut end = at + 1;
    while end < lines.len() && (lines[end].trim().is_empty() || indent(lines[end]) > col) {
        end += 1;
    }
    let mut out = lines;
    for l in &mut out[at..end] {
        *l = "";
    }
    Some(out.join("\n"))
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

/// The field at `line`:`column` of a manifest's text, as a path from its
/// document's root (`spec.resources.memoryMax`, `spec.command[1]`): the
/// key written there, or the key whose value starts there. `None` for a
/// document's root or a place no node starts at. Pure.
pub fn field_path(text: &str, line: u64, column: u64) -> Option<String> {
    use serde_saphyr::granit_parser::{Event, Parser, StructureStyle};
    /// Where the parser stands in one collection.
    enum Frame {
        /// In a mapping: its path, and the key whose value comes next
        /// (`None`: a key comes next).
        Map(String, Option<String>),
        /// In a sequence: its path and the next item's index.
        Seq(String, usize),
    }
    let join = |base: &str, key: &str| match base {
        "" => key.to_string(),
        b => format!("{b}.{key}"),
    };
    let mut stack: Vec<Frame> = Vec::new();
    for ev in Parser::new_from_str(text) {
        let (ev, span) = ev.ok()?;
        let here = span.start.line() as u64 == line && span.start.col() as u64 + 1 == column;
        let is_node = matches!(
            ev,
            Event::Scalar(..)
                | Event::SequenceStart(..)
                | Event::MappingStart(..)
                | Event::Alias(..)
        );
        if !is_node {
            if matches!(ev, Event::SequenceEnd | Event::MappingEnd) {
                stack.pop();
                value_done(&mut stack);
            }
            continue;
        }
        // This node's path, and whether it is a mapping key.
        let (path, key) = match stack.last() {
            None => (String::new(), None),
            Some(Frame::Map(base, None)) => match &ev {
                Event::Scalar(k, ..) => (join(base, k), Some(k.to_string())),
                _ => (base.clone(), Some(String::new())),
            },
            Some(Frame::Map(base, Some(k))) => (join(base, k), None),
            Some(Frame::Seq(base, i)) => (format!("{base}[{i}]"), None),
        };
        // A block mapping starts where its first key does: the key is
        // the field there.
        let block_map = matches!(ev, Event::MappingStart(StructureStyle::Block, ..));
        if here && !path.is_empty() && !block_map {
            return Some(path);
        }
        if let Some(k) = key {
            if let Some(Frame::Map(_, next)) = stack.last_mut() {
                *next = Some(k);
            }
            continue;
        }
        match ev {
            Event::SequenceStart(..) => stack.push(Frame::Seq(path, 0)),
            Event::MappingStart(..) => stack.push(Frame::Map(path, None)),
            _ => value_done(&mut stack),
        }
    }
    /// A value ended: its mapping waits for a key, its sequence for the
    /// next item.
    fn value_done(stack: &mut [Frame]) {
        match stack.last_mut() {
            Some(Frame::Map(_, next)) => *next = None,
            Some(Frame::Seq(_, i)) => *i += 1,
            None => {}
        }
    }
    None
}

/// `spec` fields by kind, for "unknown field" messages: serde only knows
/// the union of both kinds' fields.
pub(super) const SERVICE_FIELDS: &[&str] = &[
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
    "silence",
    "rollout",
];
pub(super) const BACKUP_FIELDS: &[&str] =
    &["schedule", "keep", "destination", "prometheus", "grafana"];

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
    if text.contains("tabs disallowed") || text.contains("tab character") {
        return "a tab in the indentation: YAML indents with spaces only; replace the tab with spaces".into();
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
    let home = misplaced_home(&what, &candidates, field);
    if !home.is_empty() {
        let places: Vec<String> = home.iter().map(|h| format!("`{h}`")).collect();
        return Some(format!(
            "unknown field `{field}`{what}; it belongs one level down, as {}: indent it under that key",
            places.join(" or ")
        ));
    }
    let closest = candidates
        .iter()
        .map(|c| {
            (
                strsim::levenshtein(&field.to_ascii_lowercase(), &c.to_ascii_lowercase()),
                *c,
            )
        })
        .min()
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .map(|(_, c)| format!("; did you mean `{c}`?"));
    Some(match closest {
        // A guess is enough: no list of every field (it would end up in
        // every status message).
        Some(guess) => format!("unknown field `{field}`{what}{guess}"),
        None => format!(
            "unknown field `{field}`{what} (expected one of: {})",
            candidates.join(", ")
        ),
    })
}

/// A manifest error as a status message: the same text without the list
/// of every field an unknown one could have been (`validate` prints it;
/// in `get`, `describe` and events it would drown the message).
pub fn status_message(error: &str) -> String {
    const LIST: &str = " (expected one of: ";
    let mut out = String::with_capacity(error.len());
    let mut rest = error;
    while let Some(i) = rest.find(LIST) {
        out.push_str(&rest[..i]);
        rest = match rest[i..].find(')') {
            Some(j) => &rest[i + j + 1..],
            None => "",
        };
    }
    out.push_str(rest);
    out
}

/// Where a field that is unknown at this level belongs, when it is a field
/// one level down (`http` in a Service spec → `readiness.http`,
/// `reload.http`; `name` in a document → `metadata.name`).
fn misplaced_home(what: &str, candidates: &[&str], field: &str) -> Vec<String> {
    const SERVICE: &[(&str, &[&str])] = &[
        ("http", &["readiness.http", "reload.http"]),
        ("url", &["readiness.http.url", "reload.http.url"]),
        ("timeout", &["readiness.timeout", "rollout.timeout"]),
        ("signal", &["reload.signal"]),
        ("memoryMax", &["resources.memoryMax"]),
        ("memoryHigh", &["resources.memoryHigh"]),
        ("cpuQuota", &["resources.cpuQuota"]),
        ("tasksMax", &["resources.tasksMax"]),
        ("matchers", &["silence.matchers"]),
        ("for", &["silence.for"]),
        ("auto", &["rollout.auto"]),
        ("maxRestarts", &["rollout.maxRestarts"]),
    ];
    const BACKUP: &[(&str, &[&str])] = &[
        ("url", &["prometheus.url", "grafana.url"]),
        ("dataDir", &["prometheus.dataDir"]),
        ("service", &["prometheus.service"]),
        ("tokenFile", &["grafana.tokenFile"]),
        ("basicAuth", &["grafana.basicAuth"]),
    ];
    let table: &[(&str, &[&str])] = match what {
        " in a Service spec" => SERVICE,
        " in a Backup spec" => BACKUP,
        _ if candidates.contains(&"apiVersion") => {
            return if ["name", "labels"].contains(&field) {
                vec![format!("metadata.{field}")]
            } else if SERVICE_FIELDS.contains(&field) || BACKUP_FIELDS.contains(&field) {
                vec![format!("spec.{field}")]
            } else {
                Vec::new()
            };
        }
        _ => return Vec::new(),
    };
    table
        .iter()
        .find(|(f, _)| *f == field)
        .map(|(_, homes)| homes.iter().map(|h| h.to_string()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::status_message;

    #[test]
    fn status_messages_drop_the_list_of_every_field() {
        let e = "f.yaml:6:3: unknown field `zzzq` in a Service spec (expected one of: description, command, unitFile)";
        assert_eq!(
            status_message(e),
            "f.yaml:6:3: unknown field `zzzq` in a Service spec"
        );
        let kept = "f.yaml:6:3: unknown field `comand`; did you mean `command`? (its last good units keep running)";
        assert_eq!(status_message(kept), kept);
    }

    use crate::manifest::test_support::*;
    use std::time::Duration;

    /// The field at an error's place, for `validate -o json`: a key, the
    /// value of a key, a sequence item, in block and flow style, in a
    /// later document.
    #[test]
    fn field_paths_name_the_field_at_a_place() {
        use super::field_path;
        let y = format!(
            "{HEAD}  command: [a, b]\n  resources:\n    memoryMax: 1G\n  comand: x\n---\napiVersion: unitlet/v1\nmetadata: {{name: b, labels: {{k: v}}}}\n"
        );
        let at = |l, c| field_path(&y, l, c);
        assert_eq!(at(1, 1).as_deref(), Some("apiVersion"));
        assert_eq!(at(4, 9).as_deref(), Some("metadata.name"));
        assert_eq!(at(6, 3).as_deref(), Some("spec.command"));
        assert_eq!(at(6, 12).as_deref(), Some("spec.command"));
        assert_eq!(at(6, 16).as_deref(), Some("spec.command[1]"));
        assert_eq!(at(8, 16).as_deref(), Some("spec.resources.memoryMax"));
        assert_eq!(at(9, 3).as_deref(), Some("spec.comand"));
        assert_eq!(at(12, 1).as_deref(), Some("metadata"));
        assert_eq!(at(12, 30).as_deref(), Some("metadata.labels.k"));
        assert_eq!(at(1, 30), None);
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
        assert!(
            e.message.contains("; did you mean `command`?"),
            "{}",
            e.message
        );
        // Too far from every field: no guess.
        let e = one_err(&format!("{HEAD}  zzzzzz: [a]\n"));
        assert!(!e.message.contains("did you mean"), "{}", e.message);
    }

    /// Issue 21 item 12: a field one level too high says where it belongs,
    /// without the list of every spec field.
    #[test]
    fn a_field_at_the_wrong_indentation_says_where_it_belongs() {
        let e = one_err(&format!(
            "{HEAD}  command: [a]\n  http:\n    url: http://x/\n"
        ));
        assert_eq!((e.line, e.column), (7, 3));
        assert!(e.message.contains("`readiness.http`"), "{}", e.message);
        assert!(!e.message.contains("expected one of"), "{}", e.message);
        let e = one_err(&format!("{HEAD}  command: [a]\n  tasksMax: 5\n"));
        assert!(e.message.contains("`resources.tasksMax`"), "{}", e.message);
        // A typo's guess comes without the 20 fields either.
        let e = one_err(&format!("{HEAD}  comand: [a]\n"));
        assert!(!e.message.contains("expected one of"), "{}", e.message);
    }

    /// Issue 21 item 12: a tab in the indentation says to use spaces.
    #[test]
    fn a_tab_says_to_replace_it_with_spaces() {
        let e = one_err(&format!("{HEAD}\tcommand: [a]\n"));
        assert!(
            e.message.contains("replace the tab with spaces"),
            "{}",
            e.message
        );
    }

    /// Issue 21 item 12: `tasksMax: "64"` says to drop the quotes.
    #[test]
    fn a_quoted_number_says_to_drop_the_quotes() {
        let e = one_err(&format!(
            "{HEAD}  command: [a]\n  resources:\n    tasksMax: \"64\"\n"
        ));
        assert!(e.message.contains("without the quotes"), "{}", e.message);
    }

    /// Issue 21 item 12: a bad duration gets one hint, in unitlet's words
    /// (not humantime's list of units).
    #[test]
    fn a_bad_duration_gives_one_hint() {
        for bad in ["5 minuts", "5", "abc"] {
            let e = one_err(&format!("{HEAD}  command: [a]\n  restartSec: {bad}\n"));
            assert!(!e.message.contains("supported units"), "{}", e.message);
            assert!(!e.message.contains("expected number at"), "{}", e.message);
            assert_eq!(e.message.matches("e.g.").count(), 1, "{}", e.message);
        }
    }

    /// Issue 21 item 12: every error of a file, not only the first.
    #[test]
    fn every_error_in_a_file_is_reported() {
        let y = format!(
            "{HEAD}  command: [a]\n  restartSec: 5 minuts\n  bogus: 1\n  resources:\n    tasksMax: \"64\"\n---\napiVersion: unitlet/v1\nkind: Service\nmetadata:\n  name: b\nspec:\n  command: [b]\n  http:\n    url: http://x/\n"
        );
        let p = parse(&y);
        let at: Vec<u64> = p.errors.iter().map(|e| e.line).collect();
        assert_eq!(at, vec![7, 8, 10, 18], "{:#?}", p.errors);
    }

    #[test]
    fn syntax_error_is_one_error_with_location() {
        let e = one_err("apiVersion: unitlet/v1\nkind: Service\nmetadata:\n  name: [a\n");
        assert!(e.line >= 4, "{e}");
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
}
