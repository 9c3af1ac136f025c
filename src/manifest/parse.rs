//! YAML text to raw documents: strict deserializing, spans, tag and depth
//! checks, and the error messages that point at a line.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::model::*;
use super::validate::*;

// ---------------------------------------------------------------------------
// Raw, serde-facing shapes. Every field that can fail validation is Spanned
// so the error can carry its line and column.

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawDocument {
    pub(super) api_version: Spanned<String>,
    pub(super) kind: Spanned<String>,
    pub(super) metadata: Spanned<RawMetadata>,
    pub(super) spec: Option<Spanned<RawSpec>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetadata {
    pub(super) name: Spanned<String>,
    #[serde(default)]
    pub(super) labels: Option<Spanned<BTreeMap<String, String>>>,
}

/// The union of both kinds' fields; which are allowed is checked per kind so
/// the message can say "not a field of kind Service" rather than "unknown".
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawSpec {
    // Service
    pub(super) description: Option<Spanned<String>>,
    pub(super) command: Option<Spanned<Vec<String>>>,
    pub(super) unit_file: Option<Spanned<String>>,
    pub(super) working_directory: Option<Spanned<String>>,
    pub(super) environment: Option<Spanned<BTreeMap<String, String>>>,
    pub(super) environment_file: Option<Spanned<String>>,
    pub(super) credentials: Option<Spanned<BTreeMap<String, String>>>,
    pub(super) state: Option<Spanned<String>>,
    pub(super) enabled: Option<Spanned<bool>>,
    pub(super) restart: Option<Spanned<String>>,
    pub(super) restart_sec: Option<Spanned<String>>,
    pub(super) after: Option<Spanned<Vec<String>>>,
    pub(super) resources: Option<Spanned<RawResources>>,
    pub(super) config_files: Option<Spanned<Vec<String>>>,
    pub(super) on_config_change: Option<Spanned<String>>,
    pub(super) reload: Option<Spanned<RawReload>>,
    pub(super) validate: Option<Spanned<Vec<String>>>,
    pub(super) readiness: Option<Spanned<RawReadiness>>,
    pub(super) silence: Option<Spanned<RawSilence>>,
    pub(super) rollout: Option<Spanned<RawRollout>>,
    // Backup
    pub(super) schedule: Option<Spanned<String>>,
    pub(super) keep: Option<Spanned<i64>>,
    pub(super) destination: Option<Spanned<String>>,
    pub(super) prometheus: Option<Spanned<RawPrometheus>>,
    pub(super) grafana: Option<Spanned<RawGrafana>>,
}

/// Sizes and percentages are strings or numbers in YAML; accept both and
/// validate the text ourselves so `2 GB` gets a helpful message.
#[derive(Deserialize)]
#[serde(untagged)]
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawResources {
    pub(super) memory_max: Option<Spanned<Scalar>>,
    pub(super) memory_high: Option<Spanned<Scalar>>,
    pub(super) cpu_quota: Option<Spanned<Scalar>>,
    pub(super) tasks_max: Option<Spanned<Scalar>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUrl {
    pub(super) url: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReload {
    pub(super) http: Option<Spanned<RawUrl>>,
    pub(super) signal: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReadiness {
    pub(super) http: Spanned<RawUrl>,
    pub(super) timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawRollout {
    pub(super) auto: Option<Spanned<bool>>,
    pub(super) timeout: Option<Spanned<String>>,
    pub(super) max_restarts: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSilence {
    pub(super) matchers: Option<Spanned<Vec<String>>>,
    #[serde(rename = "for")]
    pub(super) for_: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawPrometheus {
    pub(super) url: Spanned<String>,
    pub(super) data_dir: Option<Spanned<String>>,
    pub(super) service: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawGrafana {
    pub(super) url: Spanned<String>,
    pub(super) token_file: Option<Spanned<String>>,
    pub(super) basic_auth: Option<Spanned<RawBasicAuth>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawBasicAuth {
    pub(super) username: Spanned<String>,
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

/// Parse and validate the text of one manifest file. Pure.
///
/// Adopted unit files (`spec.unitFile`) are returned with empty content;
/// [`load_dir`](super::load_dir) and [`load_files`](super::load_files) fill it in.
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
                    line: 0,
                    column: 0,
                    message: "file has no documents; if you meant to delete its objects, remove the file (its units are kept as they are until then)".into(),
                });
                return out;
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
                    return out;
                }
                out.errors.push(ManifestError {
                    file: file.to_path_buf(),
                    line,
                    column,
                    message: yaml_message(&e, text, line),
                });
                let again = (out.errors.len() < MAX_ERRORS_PER_FILE)
                    .then(|| blank_unknown_field(&current, &e, line, column))
                    .flatten();
                let Some(again) = again else { return out };
                blanked.push(line);
                current = std::borrow::Cow::Owned(again);
            }
        }
    };
    validate_documents(docs, &blanked, file, ctx, &mut out);
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
    "silence",
    "rollout",
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
