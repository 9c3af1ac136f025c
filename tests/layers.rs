//! Keeps the layering of ARCHITECTURE.md true of the code.
//!
//! Reads every `src/**/*.rs`, collects what each file imports from the crate
//! (`use crate::…`, grouped `use crate::{a, b::{c, d}}`, `super::…` and
//! `self::…` paths, inline `crate::x::y` paths, and `m::x` where `m` is a
//! submodule or a module imported by `use`), resolves each to the file that
//! defines the named item (following re-exports, globs included) and checks:
//!
//! - every file has a layer in [`LAYERS`], and every entry names a file;
//! - no file imports from a higher layer than its own;
//! - no cycle between files. A module's file (`x.rs`, `x/mod.rs`) and the
//!   files of its own submodules are one unit here: the parent declares its
//!   children, re-exports and dispatches to them while they share its error
//!   type, so a parent's imports *from its own descendants* are checked for
//!   layers but not counted as cycle edges. Every other edge, siblings
//!   included, is.
//!
//! `#[cfg(test)]` items and `*_tests.rs` files are skipped: tests may reach
//! anywhere. Pure: it reads `src/` only.

// Test code: a panic is how it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The layers, lowest first; a file may import only from its own layer or
/// below. Drawn in ARCHITECTURE.md ("Layers"); keep both the same.
const LAYER_NAMES: [&str; 7] = [
    "foundations",
    "model",
    "adapters",
    "stores",
    "reconciler",
    "processes",
    "commands",
];

/// Every file of `src/`, by module path (`crate` is `lib.rs`, `main` is
/// `main.rs`), with its layer (1 = foundations … 7 = commands).
const LAYERS: &[(&str, u8)] = &[
    // 1 foundations: files, bounded reads, the unit-file parser, HTTP,
    // tables, schedules, the crate root's helpers.
    ("crate", 1),
    ("fsutil", 1),
    ("unitfile", 1),
    ("http", 1),
    ("table", 1),
    ("size", 1),
    ("schedule", 1),
    // 2 model: manifests (pure), status types.
    ("manifest", 2),
    ("manifest::model", 2),
    ("manifest::parse", 2),
    ("manifest::validate", 2),
    ("manifest::load", 2),
    ("manifest::matcher", 2),
    ("manifest::schema", 2),
    ("status", 2),
    ("backup::error", 2),
    // 3 adapters: plain types in and out.
    ("manager", 3),
    ("manager::fake", 3),
    ("manager::error", 3),
    ("manager::live", 3),
    ("manager::kmsg", 3),
    ("systemd", 3),
    ("prometheus", 3),
    ("prometheus::client", 3),
    ("grafana", 3),
    ("grafana::client", 3),
    ("grafana::kinds", 3),
    ("alertmanager", 3),
    ("fleet", 3),
    ("fleet::etcd", 3),
    ("reload", 3),
    ("restic", 3),
    // 4 stores.
    ("backup", 4),
    ("backup::last_run", 4),
    ("backup::blocks", 4),
    ("journal", 4),
    ("rollout", 4),
    ("rollout::history", 4),
    ("hold", 4),
    ("lock", 4),
    ("locations", 4),
    ("program", 4),
    ("metrics", 4),
    ("fleet::rollout", 4),
    ("fleet::rollout::record", 4),
    // 5 reconciler.
    ("render", 5),
    ("plan", 5),
    ("reconcile", 5),
    ("reconcile::apply", 5),
    ("reconcile::config", 5),
    ("reconcile::observe", 5),
    ("reconcile::status", 5),
    ("reconcile::ready", 5),
    ("reconcile::finish", 5),
    ("rollout::policy", 5),
    ("silence", 5),
    ("work", 5),
    ("doctor", 5),
    ("fleet::rollout::plan", 5),
    // 6 processes.
    ("operator", 6),
    ("fleet::source", 6),
    ("fleet::publish", 6),
    ("fleet::run", 6),
    ("backup_cmd", 6),
    ("backup_cmd::restic", 6),
    ("grafana::backup", 6),
    ("grafana::restore", 6),
    ("prometheus::tsdb", 6),
    ("prometheus::swap", 6),
    ("prometheus::recover", 6),
    ("rollout::watch", 6),
    ("work::run", 6),
    ("doctor::machine", 6),
    ("logs", 6),
    ("fleet::rollout::drive", 6),
    // 7 commands.
    ("cli", 7),
    ("cli::error", 7),
    ("cli::view", 7),
    ("cli::output", 7),
    ("cli::backup", 7),
    ("cli::doctor", 7),
    ("cli::fleet", 7),
    ("cli::fleet_rollout", 7),
    ("cli::rollout", 7),
    ("cli::validate", 7),
    ("cli::logs", 7),
    ("fleet::cmd", 7),
    ("manual", 7),
    ("main", 7),
];

/// Imports (importer, imported) that other branches of issue 22 remove while
/// this one is written; tolerated by both checks, and only these. The
/// integrator empties this list after merging them: the test must then pass
/// with it empty (an entry whose import is gone already fails
/// `every_file_has_a_layer`).
const PENDING_ELSEWHERE: &[(&str, &str)] = &[];

// ---------------------------------------------------------------------------
// Lexing: comments and literals blanked, identifiers and punctuation kept,
// each with its line.

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    /// `::`
    Sep,
    Punct(char),
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    line: usize,
}

fn lex(src: &str) -> Vec<Token> {
    let c: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    // Skips to just past the first `close` from `j`, counting lines.
    let count = |from: usize, to: usize, line: &mut usize| {
        *line += c[from..to.min(c.len())]
            .iter()
            .filter(|&&x| x == '\n')
            .count();
    };
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && c.get(i + 1) == Some(&'*') {
            let (start, mut depth) = (i, 0);
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            count(start, i, &mut line);
        } else if let Some(end) = raw_string_end(&c, i) {
            count(i, end, &mut line);
            i = end;
        } else if ch == '"' || (ch == 'b' && c.get(i + 1) == Some(&'"')) {
            let start = i;
            i += if ch == 'b' { 2 } else { 1 };
            while i < c.len() && c[i] != '"' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            count(start, i, &mut line);
        } else if ch == '\'' || (ch == 'b' && c.get(i + 1) == Some(&'\'')) {
            let q = if ch == 'b' { i + 1 } else { i };
            if c.get(q + 1) == Some(&'\\') {
                // An escaped char literal: to its closing quote.
                i = q + 2;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if c.get(q + 2) == Some(&'\'') {
                i = q + 3;
            } else {
                // A lifetime or label: the quote alone.
                i = q + 1;
            }
        } else if ch.is_alphabetic() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            let mut word: String = c[start..i].iter().collect();
            if let Some(w) = word.strip_prefix("r#") {
                word = w.to_string();
            }
            out.push(Token {
                tok: Tok::Ident(word),
                line,
            });
        } else if ch.is_ascii_digit() {
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_' || c[i] == '.') {
                i += 1;
            }
        } else if ch == ':' && c.get(i + 1) == Some(&':') {
            out.push(Token {
                tok: Tok::Sep,
                line,
            });
            i += 2;
        } else {
            out.push(Token {
                tok: Tok::Punct(ch),
                line,
            });
            i += 1;
        }
    }
    out
}

/// `r"…"`, `r#"…"#`, `br"…"`: where the literal ends, if one starts at `i`.
fn raw_string_end(c: &[char], i: usize) -> Option<usize> {
    let mut j = i;
    if c.get(j) == Some(&'b') {
        j += 1;
    }
    if c.get(j) != Some(&'r') || (i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_')) {
        return None;
    }
    j += 1;
    let mut hashes = 0;
    while c.get(j) == Some(&'#') {
        hashes += 1;
        j += 1;
    }
    if c.get(j) != Some(&'"') {
        return None;
    }
    j += 1;
    while j < c.len() {
        if c[j] == '"' && (0..hashes).all(|k| c.get(j + 1 + k) == Some(&'#')) {
            return Some(j + 1 + hashes);
        }
        j += 1;
    }
    Some(c.len())
}

fn is(t: Option<&Token>, p: char) -> bool {
    matches!(t, Some(Token { tok: Tok::Punct(x), .. }) if *x == p)
}

fn ident(t: Option<&Token>) -> Option<&str> {
    match t {
        Some(Token {
            tok: Tok::Ident(s), ..
        }) => Some(s),
        _ => None,
    }
}

/// The tokens without `#[cfg(test)]` items (the attribute, any attributes
/// after it, and the item up to its `;` or its closing brace).
fn strip_cfg_test(toks: Vec<Token>) -> Vec<Token> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let cfg_test = is(toks.get(i), '#')
            && is(toks.get(i + 1), '[')
            && ident(toks.get(i + 2)) == Some("cfg")
            && is(toks.get(i + 3), '(')
            && ident(toks.get(i + 4)) == Some("test")
            && is(toks.get(i + 5), ')')
            && is(toks.get(i + 6), ']');
        if !cfg_test {
            out.push(toks[i].clone());
            i += 1;
            continue;
        }
        i += 7;
        let mut depth = 0i32;
        while i < toks.len() {
            match &toks[i].tok {
                Tok::Punct('(' | '[') => depth += 1,
                Tok::Punct(')' | ']') => depth -= 1,
                Tok::Punct('{') => depth += 1,
                Tok::Punct('}') => {
                    depth -= 1;
                    if depth == 0 {
                        i += 1;
                        break;
                    }
                }
                Tok::Punct(';') if depth == 0 => {
                    i += 1;
                    break;
                }
                _ => {}
            }
            i += 1;
        }
    }
    out
}

// ---------------------------------------------------------------------------
// One file: its child modules, the names it defines, its `use` leaves and
// inline paths.

/// A path as written, with the line it is on.
#[derive(Clone, Debug)]
struct Written {
    line: usize,
    /// Segments as written (`crate`, `super`, `self`, or a name).
    path: Vec<String>,
    /// `use … as name` / the last segment: the name this brings in scope.
    alias: Option<String>,
    /// A `use` leaf (true) or an inline path (false).
    is_use: bool,
    /// `use path::*`.
    glob: bool,
}

#[derive(Debug, Default)]
struct Parsed {
    /// `mod name;` (and inline `mod name { … }`) outside tests.
    children: BTreeSet<String>,
    /// Names of items defined at the top of the file.
    defines: BTreeSet<String>,
    /// `use` leaves and inline paths.
    paths: Vec<Written>,
}

const ITEM_KEYWORDS: &[&str] = &[
    "fn", "struct", "enum", "const", "static", "type", "trait", "union", "mod",
];

fn parse_file(src: &str) -> Parsed {
    let toks = strip_cfg_test(lex(src));
    let mut p = Parsed::default();
    let mut depth = 0i32;
    let mut i = 0;
    while i < toks.len() {
        let t = &toks[i];
        match &t.tok {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => depth -= 1,
            Tok::Ident(w)
                if w == "use"
                    && !matches!(toks.get(i.wrapping_sub(1)).map(|t| &t.tok), Some(Tok::Sep)) =>
            {
                let mut leaves = Vec::new();
                i = use_tree(&toks, i + 1, &mut Vec::new(), &mut leaves);
                p.paths.extend(leaves);
                continue;
            }
            Tok::Ident(w) if depth == 0 && ITEM_KEYWORDS.contains(&w.as_str()) => {
                let prev = toks.get(i.wrapping_sub(1)).map(|t| &t.tok);
                if let Some(name) = ident(toks.get(i + 1))
                    && !matches!(prev, Some(Tok::Sep))
                    && !(w == "const" && matches!(name, "fn" | "unsafe" | "async"))
                {
                    p.defines.insert(name.to_string());
                    if w == "mod" {
                        p.children.insert(name.to_string());
                    }
                }
            }
            Tok::Ident(w)
                if !matches!(toks.get(i.wrapping_sub(1)).map(|t| &t.tok), Some(Tok::Sep))
                    && toks.get(i + 1).map(|t| &t.tok) == Some(&Tok::Sep) =>
            {
                // An inline path `w::a::b`: every one is kept; resolution
                // drops those that are not the crate's.
                let mut path = vec![w.clone()];
                let mut j = i + 1;
                while toks.get(j).map(|t| &t.tok) == Some(&Tok::Sep) {
                    match ident(toks.get(j + 1)) {
                        Some(s) => path.push(s.to_string()),
                        None => break,
                    }
                    j += 2;
                }
                p.paths.push(Written {
                    line: t.line,
                    path,
                    alias: None,
                    is_use: false,
                    glob: false,
                });
                i = j;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    p
}

/// Parses one use tree at `i` (after `use`, or inside braces) with `prefix`
/// already read; pushes its leaves; returns the index after the tree (past
/// the `;` at the top level).
fn use_tree(
    toks: &[Token],
    mut i: usize,
    prefix: &mut Vec<String>,
    leaves: &mut Vec<Written>,
) -> usize {
    let base = prefix.len();
    let line = toks.get(i).map_or(0, |t| t.line);
    if toks.get(i).map(|t| &t.tok) == Some(&Tok::Sep) {
        i += 1; // a leading `::`
    }
    loop {
        match toks.get(i).map(|t| &t.tok) {
            Some(Tok::Ident(s)) => {
                prefix.push(s.clone());
                i += 1;
                if toks.get(i).map(|t| &t.tok) == Some(&Tok::Sep) {
                    i += 1;
                    continue;
                }
                let mut alias = prefix.last().cloned();
                if ident(toks.get(i)) == Some("as") {
                    alias = ident(toks.get(i + 1)).map(str::to_string);
                    i += 2;
                }
                if prefix.last().map(String::as_str) == Some("self") {
                    prefix.pop();
                    if ident(toks.get(i.wrapping_sub(1))) == Some("self") {
                        alias = prefix.last().cloned();
                    }
                }
                leaves.push(Written {
                    line,
                    path: prefix.clone(),
                    alias,
                    is_use: true,
                    glob: false,
                });
                break;
            }
            Some(Tok::Punct('*')) => {
                leaves.push(Written {
                    line,
                    path: prefix.clone(),
                    alias: None,
                    is_use: true,
                    glob: true,
                });
                i += 1;
                break;
            }
            Some(Tok::Punct('{')) => {
                i += 1;
                loop {
                    match toks.get(i).map(|t| &t.tok) {
                        Some(Tok::Punct('}')) => {
                            i += 1;
                            break;
                        }
                        Some(Tok::Punct(',')) => i += 1,
                        None => break,
                        _ => i = use_tree(toks, i, prefix, leaves),
                    }
                }
                break;
            }
            _ => break,
        }
    }
    prefix.truncate(base);
    if base == 0 {
        // The top level: on to the end of the statement.
        while i < toks.len() && !is(toks.get(i), ';') {
            i += 1;
        }
        i += 1;
    }
    i
}

// ---------------------------------------------------------------------------
// The crate: files by module path, resolution of paths to files.

struct Crate {
    /// Module path (`a::b`, `crate`, `main`) → file, relative to `src/`.
    files: BTreeMap<String, Module>,
}

struct Module {
    rel: String,
    parsed: Parsed,
}

fn module_path(rel: &str) -> String {
    let rel = rel.trim_end_matches(".rs");
    match rel {
        "lib" => "crate".to_string(),
        "main" => "main".to_string(),
        _ => rel.trim_end_matches("/mod").replace('/', "::"),
    }
}

fn segs(m: &str) -> Vec<String> {
    if m == "crate" {
        Vec::new()
    } else {
        m.split("::").map(str::to_string).collect()
    }
}

fn key(segs: &[String]) -> String {
    if segs.is_empty() {
        "crate".to_string()
    } else {
        segs.join("::")
    }
}

fn is_test_file(rel: &str) -> bool {
    rel.ends_with("_tests.rs")
}

fn load_crate(src: &Path) -> Crate {
    let mut files = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        for e in entries {
            let path = e.expect("directory entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().and_then(|x| x.to_str()) != Some("rs") {
                continue;
            }
            let rel = path
                .strip_prefix(src)
                .expect("under src")
                .to_string_lossy()
                .into_owned();
            if is_test_file(&rel) {
                continue;
            }
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            files.insert(
                module_path(&rel),
                Module {
                    rel,
                    parsed: parse_file(&text),
                },
            );
        }
    }
    Crate { files }
}

/// An import from one file of another.
#[derive(Clone, Debug)]
struct Edge {
    from: String,
    line: usize,
    to: String,
    /// The path as written, for messages.
    written: String,
}

impl Crate {
    /// The absolute module path a written path starts from, in module `m`
    /// with the file's module aliases; `None` for other crates and locals.
    fn absolute(
        &self,
        m: &[String],
        w: &[String],
        aliases: &BTreeMap<String, Vec<String>>,
    ) -> Option<Vec<String>> {
        let (first, rest) = w.split_first()?;
        let mut base: Vec<String> = match first.as_str() {
            "crate" => Vec::new(),
            "unitlet" if key(m) == "main" => Vec::new(),
            "self" => m.to_vec(),
            "super" => {
                let mut b = m.to_vec();
                b.pop();
                b
            }
            name => {
                let mut child = m.to_vec();
                child.push(name.to_string());
                if key(m) != "main"
                    && self.files.contains_key(&key(&child))
                    && self.files[&key(m)].parsed.children.contains(name)
                {
                    child
                } else {
                    aliases.get(name)?.clone()
                }
            }
        };
        let mut rest = rest.iter();
        let mut next = rest.next();
        while first == "super" && next.map(String::as_str) == Some("super") {
            base.pop();
            next = rest.next();
        }
        base.extend(next.cloned());
        base.extend(rest.cloned());
        Some(base)
    }

    /// The file (module path) an absolute path's item is defined in.
    fn resolve(&self, path: &[String]) -> Option<String> {
        // The longest prefix that is a file's module.
        let n = (0..=path.len())
            .rev()
            .find(|&n| self.files.contains_key(&key(&path[..n])))?;
        let m = key(&path[..n]);
        match path.get(n) {
            None => Some(m),
            Some(name) => Some(self.find_name(&m, name, &mut BTreeSet::new()).unwrap_or(m)),
        }
    }

    /// Where `name`, seen through module `m`, is defined (following `use`s).
    fn find_name(&self, m: &str, name: &str, seen: &mut BTreeSet<String>) -> Option<String> {
        if !seen.insert(m.to_string()) {
            return None;
        }
        let module = self.files.get(m)?;
        if module.parsed.defines.contains(name) {
            return Some(m.to_string());
        }
        let aliases = BTreeMap::new();
        for w in module.parsed.paths.iter().filter(|w| w.is_use) {
            let Some(abs) = self.absolute(&segs(m), &w.path, &aliases) else {
                continue;
            };
            if w.glob {
                if let Some(f) = self
                    .files
                    .get(&key(&abs))
                    .and_then(|_| self.find_name(&key(&abs), name, seen))
                {
                    return Some(f);
                }
            } else if w.alias.as_deref() == Some(name) {
                return self.resolve(&abs);
            }
        }
        None
    }

    /// Every import between two different files.
    fn edges(&self) -> Vec<Edge> {
        let mut out = Vec::new();
        for (m, module) in &self.files {
            let here = segs(m);
            let here = if m == "main" {
                vec!["main".to_string()]
            } else {
                here
            };
            // Modules brought in scope by `use` (`use crate::plan;`).
            let mut aliases = BTreeMap::new();
            for w in module.parsed.paths.iter().filter(|w| w.is_use && !w.glob) {
                if let (Some(abs), Some(alias)) =
                    (self.absolute(&here, &w.path, &BTreeMap::new()), &w.alias)
                    && self.files.contains_key(&key(&abs))
                {
                    aliases.insert(alias.clone(), abs);
                }
            }
            for w in &module.parsed.paths {
                let Some(abs) = self.absolute(&here, &w.path, &aliases) else {
                    continue;
                };
                let Some(to) = self.resolve(&abs) else {
                    continue;
                };
                if &to != m {
                    out.push(Edge {
                        from: m.clone(),
                        line: w.line,
                        to,
                        written: w.path.join("::") + if w.glob { "::*" } else { "" },
                    });
                }
            }
        }
        out
    }
}

fn the_crate() -> Crate {
    load_crate(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
}

fn layer_of(m: &str) -> u8 {
    LAYERS
        .iter()
        .find(|(n, _)| *n == m)
        .map(|(_, l)| *l)
        .unwrap_or_else(|| panic!("{m} has no layer in LAYERS"))
}

fn layer_name(l: u8) -> String {
    format!("{l} {}", LAYER_NAMES[usize::from(l) - 1])
}

fn pending(from: &str, to: &str) -> bool {
    PENDING_ELSEWHERE.contains(&(from, to))
}

/// `a` is `b` or one of its submodules.
fn within(a: &str, b: &str) -> bool {
    b == "crate" || a == b || a.starts_with(&format!("{b}::"))
}

// ---------------------------------------------------------------------------
// The checks.

#[test]
fn every_file_has_a_layer() {
    let krate = the_crate();
    let mut problems = Vec::new();
    for (m, module) in &krate.files {
        if !LAYERS.iter().any(|(n, _)| n == m) {
            problems.push(format!("src/{} ({m}) has no layer: add it to LAYERS in tests/layers.rs and to ARCHITECTURE.md", module.rel));
        }
    }
    let mut seen = BTreeSet::new();
    for (n, l) in LAYERS {
        if !krate.files.contains_key(*n) {
            problems.push(format!(
                "LAYERS names {n}, which is no file of src/ any more"
            ));
        }
        if !seen.insert(*n) {
            problems.push(format!("LAYERS names {n} twice"));
        }
        if !(1..=7).contains(l) {
            problems.push(format!("LAYERS gives {n} layer {l}, not 1–7"));
        }
    }
    for (from, to) in PENDING_ELSEWHERE {
        if !krate.edges().iter().any(|e| e.from == *from && e.to == *to) {
            problems.push(format!(
                "PENDING_ELSEWHERE has {from} -> {to}, which is gone: remove it"
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

#[test]
fn imports_only_go_down() {
    let krate = the_crate();
    // (importer, line, imported) → the paths written there.
    let mut upward: BTreeMap<(String, usize, String), Vec<String>> = BTreeMap::new();
    for e in krate.edges() {
        if layer_of(&e.to) > layer_of(&e.from) && !pending(&e.from, &e.to) {
            upward
                .entry((e.from, e.line, e.to))
                .or_default()
                .push(e.written);
        }
    }
    let problems: Vec<String> = upward
        .iter()
        .map(|((from, line, to), written)| {
            format!(
                "src/{}:{line}: {from} (layer {}) imports {to} (layer {}) via `{}`",
                krate.files[from].rel,
                layer_name(layer_of(from)),
                layer_name(layer_of(to)),
                written.join("`, `")
            )
        })
        .collect();
    assert!(
        problems.is_empty(),
        "\n{} import(s) from a lower layer to a higher one (see ARCHITECTURE.md, Layers):\n{}\n",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn no_cycles_between_files() {
    let krate = the_crate();
    let mut graph: BTreeMap<String, BTreeMap<String, Edge>> = BTreeMap::new();
    for m in krate.files.keys() {
        graph.entry(m.clone()).or_default();
    }
    for e in krate.edges() {
        // A parent's imports from its own submodules are not cycle edges.
        if within(&e.to, &e.from) || pending(&e.from, &e.to) {
            continue;
        }
        graph
            .get_mut(&e.from)
            .expect("a file")
            .entry(e.to.clone())
            .or_insert(e);
    }
    let cycles = strongly_connected(&graph);
    let mut problems = Vec::new();
    for c in &cycles {
        let mut lines = vec![format!("cycle between {} files: {}", c.len(), c.join(", "))];
        for a in c {
            for (b, e) in &graph[a] {
                if c.contains(b) {
                    lines.push(format!(
                        "  src/{}:{}: {a} -> {b} via `{}`",
                        krate.files[a].rel, e.line, e.written
                    ));
                }
            }
        }
        problems.push(lines.join("\n"));
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

/// Tarjan's strongly connected components with more than one node.
fn strongly_connected(g: &BTreeMap<String, BTreeMap<String, Edge>>) -> Vec<Vec<String>> {
    struct St<'a> {
        g: &'a BTreeMap<String, BTreeMap<String, Edge>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut St<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on.insert(v);
        let g = s.g;
        for w in g[v].keys() {
            if !s.index.contains_key(w.as_str()) {
                visit(s, w);
                let lw = s.low[w.as_str()];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on.contains(w.as_str()) {
                let iw = s.index[w.as_str()];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut s = St {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

// ---------------------------------------------------------------------------
// The reader itself, on small crates written here.

fn crate_of(files: &[(&str, &str)]) -> Crate {
    Crate {
        files: files
            .iter()
            .map(|(rel, text)| {
                (
                    module_path(rel),
                    Module {
                        rel: rel.to_string(),
                        parsed: parse_file(text),
                    },
                )
            })
            .collect(),
    }
}

fn edge_list(k: &Crate) -> BTreeSet<(String, usize, String)> {
    k.edges()
        .into_iter()
        .map(|e| (e.from, e.line, e.to))
        .collect()
}

#[test]
fn reader_follows_grouped_inline_super_and_reexported_paths() {
    let k = crate_of(&[
        (
            "lib.rs",
            "pub mod a;\npub mod b;\npub mod c;\npub fn root() {}\n",
        ),
        (
            "a/mod.rs",
            "mod inner;\npub use inner::*;\npub struct Top;\n",
        ),
        ("a/inner.rs", "use super::Top;\npub fn deep() {}\n"),
        (
            "b.rs",
            "use crate::{a::{self, deep}, c::{C as Cee}};\n\
             // crate::c::commented\n\
             fn f() { let _ = \"crate::c::in_a_string\"; a::deep(); crate::root(); }\n\
             #[cfg(test)]\nmod tests { use crate::c::Test; }\n",
        ),
        (
            "c.rs",
            "pub struct C;\npub fn g() -> u8 { 'x' as u8 + b'y' }\n",
        ),
    ]);
    let got = edge_list(&k);
    let want: BTreeSet<_> = [
        ("a", 2, "a::inner"),
        ("a::inner", 1, "a"),
        ("b", 1, "a"),
        ("b", 1, "a::inner"),
        ("b", 1, "c"),
        ("b", 3, "a::inner"),
        ("b", 3, "crate"),
    ]
    .into_iter()
    .map(|(a, l, b)| (a.to_string(), l, b.to_string()))
    .collect();
    assert_eq!(got, want);
}

#[test]
fn reader_finds_a_sibling_cycle_but_not_a_parent_facade() {
    let k = crate_of(&[
        ("lib.rs", "pub mod g;\n"),
        (
            "g/mod.rs",
            "mod x;\nmod y;\npub use x::X;\npub struct Error;\n",
        ),
        ("g/x.rs", "use super::{Error, y::Y};\npub struct X;\n"),
        ("g/y.rs", "pub struct Y;\nfn f() { super::x::X; }\n"),
    ]);
    let mut graph: BTreeMap<String, BTreeMap<String, Edge>> = k
        .files
        .keys()
        .map(|m| (m.clone(), BTreeMap::new()))
        .collect();
    for e in k.edges() {
        if !within(&e.to, &e.from) {
            graph
                .get_mut(&e.from)
                .expect("a file")
                .insert(e.to.clone(), e);
        }
    }
    assert_eq!(
        strongly_connected(&graph),
        vec![vec!["g::x".to_string(), "g::y".to_string()]]
    );
}

#[test]
fn reader_skips_comments_raw_strings_and_lifetimes() {
    let p = parse_file(
        "fn f<'a>(x: &'a str) -> &'a str { let _ = r#\"crate::no \"quoted\" \"#; /* crate::no /* nested */ crate::no */ x }\nfn g() { crate::yes::here(); }\n",
    );
    let paths: Vec<_> = p
        .paths
        .iter()
        .map(|w| (w.line, w.path.join("::")))
        .collect();
    assert_eq!(paths, vec![(2, "crate::yes::here".to_string())]);
}
