//! Keeps the reference in `docs/` true to the code.
//!
//! - Manifests: the fields the parser accepts are asked of the parser itself
//!   (an unknown field at any depth makes it list the fields it knows there),
//!   and must equal the field tables of `docs/manifests.md`, kind by kind.
//!   Each documented example is parsed in place, and every `yaml` block in
//!   `docs/` must be a valid manifest.
//! - Commands: the clap definition of the `unitlet` command line is walked,
//!   and every subcommand, flag, environment variable and default must match
//!   `docs/commands.md`, both ways.
//!
//! Pure: no systemd, no network; it reads `docs/` and calls the parser.

// Test and benchmark code: a panic is how it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use serde_json::{Map, Value, json};
use unitlet::manifest::{PathContext, parse_str};

/// Documented, but implemented in branches that are not merged yet: each may
/// be missing from the code. Once it exists in the code, the test fails until
/// the entry is removed here. The lead empties this list after merging.
/// Entries are (manifest kind, spec field) or (command, long flag).
const PENDING_IN_OTHER_BRANCHES: &[(&str, &str)] = &[];

fn pending(scope: &str, name: &str) -> bool {
    PENDING_IN_OTHER_BRANCHES.contains(&(scope, name))
}

// ---------------------------------------------------------------------------
// Reading the Markdown.

fn docs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs")
}

fn read_doc(name: &str) -> String {
    let p = docs_dir().join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

/// A Markdown table under the `## ` heading it appears in.
struct Table {
    section: String,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

/// The cells of a table line; `\|` is a literal bar.
fn cells(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = line.trim().chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                chars.next();
                out.last_mut().unwrap().push('|');
            }
            '|' => out.push(String::new()),
            c => out.last_mut().unwrap().push(c),
        }
    }
    // Leading and trailing bars leave empty cells at both ends.
    out.remove(0);
    out.pop();
    out.into_iter().map(|c| c.trim().to_string()).collect()
}

/// Lines outside fenced code blocks, with the fence state.
fn prose_lines(md: &str) -> Vec<&str> {
    let mut in_code = false;
    let mut out = Vec::new();
    for line in md.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if !in_code {
            out.push(line);
        }
    }
    out
}

fn tables(md: &str) -> Vec<Table> {
    let mut out: Vec<Table> = Vec::new();
    let mut section = String::new();
    let mut in_table = false;
    for line in prose_lines(md) {
        if let Some(h) = line.strip_prefix("## ") {
            section = h.trim().to_string();
        }
        if !line.trim_start().starts_with('|') {
            in_table = false;
            continue;
        }
        let c = cells(line);
        if !in_table {
            in_table = true;
            out.push(Table {
                section: section.clone(),
                header: c,
                rows: vec![],
            });
        } else if c.iter().all(|x| x.chars().all(|ch| ch == '-' || ch == ':')) {
            // the separator line
        } else {
            out.last_mut().unwrap().rows.push(c);
        }
    }
    out
}

fn headings(md: &str) -> Vec<String> {
    prose_lines(md)
        .into_iter()
        .filter_map(|l| l.strip_prefix("## ").map(|h| h.trim().to_string()))
        .collect()
}

/// Fenced code blocks of a language.
fn code_blocks(md: &str, lang: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in md.lines() {
        let t = line.trim_start();
        match (&mut cur, t.strip_prefix("```")) {
            (None, Some(l)) if l.trim() == lang => cur = Some(String::new()),
            (None, Some(_)) => cur = Some(String::from("\0skip")),
            (Some(b), Some(_)) => {
                if !b.starts_with("\0skip") {
                    out.push(std::mem::take(b));
                }
                cur = None;
            }
            (Some(b), None) => {
                b.push_str(line);
                b.push('\n');
            }
            (None, None) => {}
        }
    }
    out
}

fn unquote(cell: &str) -> String {
    cell.trim().trim_matches('`').to_string()
}

// ---------------------------------------------------------------------------
// Asking the parser.

const PROBE: &str = "zzzDocProbe";

fn parse_errors(text: &str) -> (usize, Vec<String>) {
    let ctx = PathContext {
        manifest_dir: PathBuf::from("/m"),
        home: Some(PathBuf::from("/home/u")),
    };
    let p = parse_str(text, Path::new("/m/probe.yaml"), &ctx);
    (
        p.manifests.len(),
        p.errors.iter().map(|e| e.message.clone()).collect(),
    )
}

fn base_spec(kind: &str) -> Value {
    match kind {
        "Service" => json!({"command": ["/bin/true"]}),
        "Backup" => json!({"schedule": "every 1h", "prometheus": {"url": "http://127.0.0.1:9090"}}),
        _ => json!({}),
    }
}

fn base_doc(kind: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("apiVersion".into(), json!("unitlet/v1"));
    m.insert("kind".into(), json!(kind));
    m.insert("metadata".into(), json!({"name": "probe"}));
    m.insert("spec".into(), base_spec(kind));
    m
}

/// Set `path` in `doc`, creating (or replacing with) objects on the way.
fn set_path(doc: &mut Map<String, Value>, path: &[String], v: Value) {
    let (last, parents) = path.split_last().expect("a non-empty path");
    let mut cur = doc;
    for p in parents {
        let slot = cur.entry(p.clone()).or_insert_with(|| json!({}));
        if !slot.is_object() {
            *slot = json!({});
        }
        cur = slot.as_object_mut().unwrap();
    }
    cur.insert(last.clone(), v);
}

/// Top-level keys in block style (so the parser sees `kind:` on its own
/// line, as in a real file), values as JSON, which is YAML flow syntax.
fn yaml_text(doc: &Map<String, Value>) -> String {
    let order = ["apiVersion", "kind", "metadata", "spec"];
    let mut keys: Vec<&String> = doc.keys().collect();
    keys.sort_by_key(|k| order.iter().position(|o| o == k).unwrap_or(usize::MAX));
    keys.iter().map(|k| format!("{k}: {}\n", doc[*k])).collect()
}

/// The field names an "unknown field" error lists, in either of the two
/// forms the parser produces.
fn expected_fields(msg: &str) -> Option<Vec<String>> {
    let needle = format!("unknown field `{PROBE}`");
    let at = msg.find(&needle)?;
    if let Some(i) = msg.find("(expected one of: ") {
        let rest = &msg[i + "(expected one of: ".len()..];
        let end = rest.find(')')?;
        return Some(
            rest[..end]
                .split(", ")
                .map(|s| s.trim().to_string())
                .collect(),
        );
    }
    let after = &msg[at + needle.len()..];
    Some(
        after
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect(),
    )
}

/// The fields the parser knows at `path` of a document of `kind`, or `None`
/// when the value there is not an object with named fields.
fn fields_at(kind: &str, path: &[String]) -> Option<Vec<String>> {
    let mut doc = base_doc(kind);
    if path.is_empty() {
        doc.insert(PROBE.into(), json!(1));
    } else {
        set_path(&mut doc, path, json!({ PROBE: 1 }));
    }
    let (_, errors) = parse_errors(&yaml_text(&doc));
    errors.iter().find_map(|e| expected_fields(e))
}

/// Every field path under `prefix`, depth first, relative to `prefix`.
fn walk(kind: &str, prefix: &[String], rel: &[String], out: &mut BTreeSet<String>) {
    let mut here: Vec<String> = prefix.to_vec();
    here.extend(rel.iter().cloned());
    let Some(fields) = fields_at(kind, &here) else {
        return;
    };
    for f in fields {
        let mut r = rel.to_vec();
        r.push(f);
        out.insert(r.join("."));
        walk(kind, prefix, &r, out);
    }
}

fn spec_fields(kind: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    walk(kind, &["spec".to_string()], &[], &mut out);
    out
}

fn top(path: &str) -> &str {
    path.split('.').next().unwrap()
}

/// `docs/manifests.md` field tables: section → (field path → example).
fn documented_fields() -> BTreeMap<&'static str, BTreeMap<String, String>> {
    let md = read_doc("manifests.md");
    let mut out: BTreeMap<&'static str, BTreeMap<String, String>> = BTreeMap::new();
    for t in tables(&md) {
        if t.header.first().map(String::as_str) != Some("field") {
            continue;
        }
        assert_eq!(
            t.header,
            ["field", "type", "default", "meaning", "example"],
            "docs/manifests.md: field tables have these columns (section {:?})",
            t.section
        );
        let scope = match t.section.as_str() {
            "Every document" => "document",
            "kind: Service" => "Service",
            "kind: Backup" => "Backup",
            other => panic!(
                "docs/manifests.md: a field table under {other:?}; put it under \"Every document\", \"kind: Service\" or \"kind: Backup\""
            ),
        };
        for r in t.rows {
            assert_eq!(r.len(), 5, "docs/manifests.md: row {r:?} needs 5 cells");
            let field = unquote(&r[0]);
            let example = unquote(&r[4]);
            assert!(
                !example.is_empty(),
                "docs/manifests.md: {scope} field {field} has no example"
            );
            let prev = out.entry(scope).or_default().insert(field.clone(), example);
            assert!(
                prev.is_none(),
                "docs/manifests.md: {scope} field {field} is documented twice"
            );
        }
    }
    out
}

fn yaml_value(example: &str) -> Value {
    serde_saphyr::from_str::<Value>(example)
        .unwrap_or_else(|e| panic!("docs/manifests.md: example {example:?} is not YAML: {e}"))
}

#[test]
fn the_parser_is_asked_about_nested_fields_too() {
    // If probing stopped working, every comparison below would compare
    // empty sets; pin a few fields at each depth.
    let service = spec_fields("Service");
    for f in [
        "command",
        "resources.memoryMax",
        "reload.http.url",
        "readiness.timeout",
    ] {
        assert!(service.contains(f), "{f} not found by probing: {service:?}");
    }
    let backup = spec_fields("Backup");
    for f in [
        "keep",
        "grafana.basicAuth.passwordFile",
        "prometheus.dataDir",
    ] {
        assert!(backup.contains(f), "{f} not found by probing: {backup:?}");
    }
}

#[test]
fn spec_fields_are_split_by_kind_without_gaps() {
    // With an unknown kind the parser lists the union of both kinds' spec
    // fields; for a known kind, that kind's own. A field in the union but
    // in neither kind's list would be accepted but never suggested.
    let union: BTreeSet<String> = fields_at("NoSuchKind", &["spec".to_string()])
        .expect("an unknown spec field is reported with the fields known")
        .into_iter()
        .collect();
    let service: BTreeSet<String> = spec_fields("Service")
        .iter()
        .map(|f| top(f).to_string())
        .collect();
    let backup: BTreeSet<String> = spec_fields("Backup")
        .iter()
        .map(|f| top(f).to_string())
        .collect();
    let both: BTreeSet<String> = service.union(&backup).cloned().collect();
    assert_eq!(
        union, both,
        "src/manifest/parse.rs: the spec fields serde accepts differ from SERVICE_FIELDS + BACKUP_FIELDS"
    );
    assert!(
        service.is_disjoint(&backup),
        "a spec field belongs to both kinds: {:?}",
        service.intersection(&backup).collect::<Vec<_>>()
    );
}

#[test]
fn every_manifest_field_is_documented_and_every_documented_field_exists() {
    let docs = documented_fields();
    let mut problems = Vec::new();

    // The document level: everything outside spec.
    let mut document = BTreeSet::new();
    walk("Service", &[], &[], &mut document);
    document.retain(|f| !f.starts_with("spec."));
    let mut code: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    code.insert("document", document);
    code.insert("Service", spec_fields("Service"));
    code.insert("Backup", spec_fields("Backup"));

    for (scope, fields) in &code {
        let documented = docs.get(scope).cloned().unwrap_or_default();
        for f in fields {
            if !documented.contains_key(f) {
                problems.push(format!(
                    "{scope} field `{f}` is accepted by the parser but missing from docs/manifests.md"
                ));
            }
            if pending(scope, f) {
                problems.push(format!(
                    "{scope} field `{f}` exists in the parser now: remove it from PENDING_IN_OTHER_BRANCHES in tests/docs.rs"
                ));
            }
        }
        for f in documented.keys() {
            if !fields.contains(f) && !pending(scope, top(f)) {
                problems.push(format!(
                    "docs/manifests.md documents {scope} field `{f}`, which the parser does not accept"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn documented_examples_parse_in_place() {
    let docs = documented_fields();
    let mut problems = Vec::new();
    for (scope, fields) in &docs {
        for (field, example) in fields {
            if pending(scope, top(field)) {
                continue;
            }
            let (kind, mut path) = match *scope {
                "document" => ("Service", vec![]),
                k => (k, vec!["spec".to_string()]),
            };
            path.extend(field.split('.').map(str::to_string));
            let mut doc = base_doc(kind);
            set_path(&mut doc, &path, yaml_value(example));
            let text = yaml_text(&doc);
            let (_, errors) = parse_errors(&text);
            // Errors about required siblings or exclusive alternatives are
            // expected (the example is set alone); wrong names and types
            // are not.
            // A value refused by validation is reported as `spec.FIELD: …`,
            // `spec.FIELD "x" is not valid` or `spec.FIELD is empty`.
            let at = path.join(".");
            let about_value = |e: &str| {
                e.starts_with(&format!("{at}:"))
                    || (e.starts_with(&format!("{at} "))
                        && ["is not valid", "is empty", "is not a systemd"]
                            .iter()
                            .any(|w| e.contains(w)))
            };
            for e in errors {
                let bad = e.contains("unknown field")
                    || e.contains("is not a field of kind")
                    || (e.starts_with("invalid manifest:") && !e.contains("missing field"))
                    || about_value(&e);
                if bad {
                    problems.push(format!("{scope} `{field}: {example}`: {e}\n{text}"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn a_field_of_one_kind_is_refused_in_the_other() {
    let docs = documented_fields();
    let mut problems = Vec::new();
    for (kind, other) in [("Service", "Backup"), ("Backup", "Service")] {
        let tops: BTreeSet<&str> = docs[kind].keys().map(|f| top(f)).collect();
        for f in tops {
            if pending(kind, f) {
                continue;
            }
            let mut doc = base_doc(other);
            set_path(
                &mut doc,
                &["spec".into(), f.into()],
                yaml_value(&docs[kind][f]),
            );
            let (n, errors) = parse_errors(&yaml_text(&doc));
            let refused = errors.iter().any(|e| {
                e.contains(&format!("is not a field of kind {other}"))
                    || e.contains("unknown field")
            });
            if n != 0 || !refused {
                problems.push(format!(
                    "spec.{f} (documented for {kind}) is not refused in a {other}: {errors:?}"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn yaml_examples_in_docs_are_valid_manifests() {
    let mut checked = 0;
    for entry in std::fs::read_dir(docs_dir()).expect("docs/ exists") {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("md") {
            continue;
        }
        let md = std::fs::read_to_string(&path).unwrap();
        for block in code_blocks(&md, "yaml") {
            let uses_pending = PENDING_IN_OTHER_BRANCHES
                .iter()
                .any(|(_, f)| !f.starts_with('-') && block.contains(&format!("{f}:")));
            if uses_pending {
                continue;
            }
            let (n, errors) = parse_errors(&block);
            assert!(
                errors.is_empty() && n > 0,
                "{}: this example is not a valid manifest: {errors:?}\n{block}",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 3,
        "expected the manifest examples in docs/, found {checked}"
    );
}

// ---------------------------------------------------------------------------
// The command line.

/// A documented flag row: long names, short names, env cell, default cell,
/// meaning cell.
struct FlagRow {
    longs: BTreeSet<String>,
    shorts: BTreeSet<char>,
    env: String,
    default: String,
    meaning: String,
}

fn flag_rows(t: &Table) -> Vec<FlagRow> {
    assert_eq!(
        t.header,
        ["flag", "env", "default", "meaning"],
        "docs/commands.md: flag tables have these columns (section {:?})",
        t.section
    );
    t.rows
        .iter()
        .map(|r| {
            assert_eq!(r.len(), 4, "docs/commands.md: row {r:?} needs 4 cells");
            let mut longs = BTreeSet::new();
            let mut shorts = BTreeSet::new();
            for tok in r[0].replace('`', "").split([' ', ',']) {
                if let Some(l) = tok.strip_prefix("--") {
                    longs.insert(l.to_string());
                } else if let Some(s) = tok.strip_prefix('-')
                    && s.chars().count() == 1
                {
                    shorts.insert(s.chars().next().unwrap());
                }
            }
            FlagRow {
                longs,
                shorts,
                env: unquote(&r[1]),
                default: unquote(&r[2]),
                meaning: r[3].clone(),
            }
        })
        .collect()
}

/// Compare clap's arguments of one command with its documented rows.
fn check_flags(
    scope: &str,
    args: &[&clap::Arg],
    rows: &[FlagRow],
    extra_ok: &[&str],
    problems: &mut Vec<String>,
) {
    let by_long: BTreeMap<&str, &FlagRow> = rows
        .iter()
        .flat_map(|r| r.longs.iter().map(move |l| (l.as_str(), r)))
        .collect();
    for a in args.iter().filter(|a| !a.is_positional()) {
        let Some(long) = a.get_long() else {
            problems.push(format!("{scope}: argument {} has no long name", a.get_id()));
            continue;
        };
        if pending(scope, &format!("--{long}")) {
            problems.push(format!(
                "{scope} --{long} exists in the code now: remove it from PENDING_IN_OTHER_BRANCHES in tests/docs.rs"
            ));
        }
        let Some(row) = by_long.get(long) else {
            problems.push(format!(
                "{scope} --{long} exists but is missing from docs/commands.md"
            ));
            continue;
        };
        if let Some(s) = a.get_short()
            && !row.shorts.contains(&s)
        {
            problems.push(format!(
                "{scope} --{long}: its short form -{s} is not documented"
            ));
        }
        for s in &row.shorts {
            if a.get_short() != Some(*s) {
                problems.push(format!(
                    "{scope} --{long}: documented short form -{s} does not exist"
                ));
            }
        }
        let env = a
            .get_env()
            .map(|e| e.to_string_lossy().into_owned())
            .unwrap_or_else(|| "—".into());
        if row.env != env {
            problems.push(format!(
                "{scope} --{long}: environment variable is {env:?} in the code, {:?} in docs/commands.md",
                row.env
            ));
        }
        let defaults: Vec<String> = a
            .get_default_values()
            .iter()
            .map(|d| d.to_string_lossy().into_owned())
            .collect();
        if !defaults.is_empty() && row.default != defaults.join(", ") {
            problems.push(format!(
                "{scope} --{long}: default is {:?} in the code, {:?} in docs/commands.md",
                defaults.join(", "),
                row.default
            ));
        }
        let takes_values = a.get_action().takes_values();
        for v in a.get_possible_values() {
            if takes_values
                && !v.is_hide_set()
                && !row.meaning.contains(&format!("`{}`", v.get_name()))
            {
                problems.push(format!(
                    "{scope} --{long}: value `{}` is not explained in docs/commands.md",
                    v.get_name()
                ));
            }
        }
    }
    let known: BTreeSet<&str> = args.iter().filter_map(|a| a.get_long()).collect();
    for l in by_long.keys() {
        if !known.contains(l) && !extra_ok.contains(l) && !pending(scope, &format!("--{l}")) {
            problems.push(format!(
                "docs/commands.md documents {scope} --{l}, which does not exist"
            ));
        }
    }
}

#[test]
fn every_command_and_flag_is_documented_and_every_documented_one_exists() {
    let md = read_doc("commands.md");
    let cmd = unitlet::cli::Cli::command();
    let mut problems = Vec::new();
    let all_tables = tables(&md);
    let flag_tables = |section: &str| -> Vec<FlagRow> {
        all_tables
            .iter()
            .filter(|t| {
                t.section == section && t.header.first().map(String::as_str) == Some("flag")
            })
            .flat_map(flag_rows)
            .collect()
    };

    // Global options: clap adds --help and --version itself.
    let globals: Vec<&clap::Arg> = cmd.get_arguments().collect();
    assert!(
        globals.iter().all(|a| a.is_global_set()),
        "root arguments are global"
    );
    assert!(
        cmd.get_version().is_some(),
        "--version is documented as existing"
    );
    check_flags(
        "global",
        &globals,
        &flag_tables("Global options"),
        &["help", "version"],
        &mut problems,
    );

    // Commands: `## \`unitlet NAME …\`` sections.
    let sections: BTreeMap<String, String> = headings(&md)
        .into_iter()
        .filter_map(|h| {
            let usage = h
                .strip_prefix("`unitlet ")?
                .trim_end_matches('`')
                .to_string();
            let name = usage.split_whitespace().next()?.to_string();
            Some((name, h))
        })
        .collect();
    let mut seen = BTreeSet::new();
    for sc in cmd.get_subcommands() {
        let name = sc.get_name();
        seen.insert(name.to_string());
        let Some(heading) = sections.get(name) else {
            problems.push(format!(
                "command `unitlet {name}` has no \"## `unitlet {name} …`\" section in docs/commands.md"
            ));
            continue;
        };
        let args: Vec<&clap::Arg> = sc.get_arguments().collect();
        for a in args.iter().filter(|a| a.is_positional()) {
            let v = a
                .get_value_names()
                .and_then(|v| v.first().map(|s| s.to_string()))
                .unwrap_or_else(|| a.get_id().as_str().to_uppercase());
            if !heading.contains(&v) {
                problems.push(format!(
                    "`unitlet {name}`: argument {v} is not in its heading {heading:?}"
                ));
            }
        }
        check_flags(name, &args, &flag_tables(heading), &[], &mut problems);
    }
    for name in sections.keys() {
        if !seen.contains(name) {
            problems.push(format!(
                "docs/commands.md documents `unitlet {name}`, which does not exist"
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn markdown_helpers_read_tables_and_blocks() {
    // The checks above are only as good as this parsing: a table with an
    // escaped bar, a heading, a code block that must not count as prose.
    let md = "## A\n\n| field | x |\n|---|---|\n| `a` | `b` \\| `c` |\n\n```yaml\nk: v\n```\n```ini\n## not a heading\n| not | a table |\n```\n";
    let t = tables(md);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].section, "A");
    assert_eq!(
        t[0].rows,
        vec![vec!["`a`".to_string(), "`b` | `c`".to_string()]]
    );
    assert_eq!(headings(md), ["A"]);
    assert_eq!(code_blocks(md, "yaml"), ["k: v\n"]);
    assert_eq!(
        expected_fields("unknown field `zzzDocProbe`, expected `http` or `signal`"),
        Some(vec!["http".to_string(), "signal".to_string()])
    );
    assert_eq!(
        expected_fields("unknown field `zzzDocProbe`  (expected one of: a, b, c)"),
        Some(vec!["a".to_string(), "b".to_string(), "c".to_string()])
    );
    assert_eq!(expected_fields("spec.keep 0 is not valid"), None);
}

// ---------------------------------------------------------------------------
// Status reasons.

/// The `` `Word` `` names in `text`.
fn backticked_words(text: &str) -> BTreeSet<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric()))
        .map(str::to_string)
        .collect()
}

/// Every condition reason of `status::Reason` (but `Unrecognized`, which is
/// never written) is documented under `unitlet get` in docs/commands.md —
/// a row of the Ready reasons table, or the `LimitsEnforced` paragraph after
/// it — and the table has no row the enum lacks; ARCHITECTURE.md's list of
/// reasons is exactly the enum's.
#[test]
fn condition_reasons_in_docs_and_architecture_are_the_enum() {
    use unitlet::status::Reason;
    let enum_reasons: BTreeSet<String> = Reason::ALL
        .iter()
        .filter(|r| **r != Reason::Unrecognized)
        .map(|r| r.as_str().to_string())
        .collect();

    let commands = read_doc("commands.md");
    let table = tables(&commands)
        .into_iter()
        .find(|t| {
            t.header.first().is_some_and(|h| h == "reason")
                && t.header.get(1).is_some_and(|h| h == "Ready")
        })
        .expect("the Ready reasons table in docs/commands.md");
    let rows: BTreeSet<String> = table.rows.iter().map(|r| unquote(&r[0])).collect();
    let unknown: Vec<&String> = rows.difference(&enum_reasons).collect();
    assert!(
        unknown.is_empty(),
        "docs/commands.md documents reasons status::Reason does not have: {unknown:?}"
    );
    let start = commands.find("Ready reasons:").expect("Ready reasons");
    let end = start + commands[start..].find("\n## ").expect("the next command");
    let documented = backticked_words(&commands[start..end]);
    let missing: Vec<&String> = enum_reasons.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "reasons of status::Reason missing from `unitlet get` in docs/commands.md: {missing:?}"
    );

    let arch =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("ARCHITECTURE.md"))
            .unwrap();
    // "… with a `status::Reason`: `Running`, `Stopped`, … (each in …"
    let after = arch
        .split_once("with a `status::Reason`:")
        .expect("ARCHITECTURE.md lists the reasons after \"with a `status::Reason`:\"")
        .1;
    let listed = backticked_words(after.split_once('(').map_or(after, |(l, _)| l));
    assert_eq!(
        listed, enum_reasons,
        "ARCHITECTURE.md's reasons (left) and status::Reason (right) drifted"
    );
}
