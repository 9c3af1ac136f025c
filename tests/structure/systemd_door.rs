// Keeps the shape of the code what ARCHITECTURE.md says it is.
//
// Each check reads the source files in `src/` (no build, no systemd) and
// fails naming the file and line that breaks the rule.

use std::path::{Path, PathBuf};

/// Every `.rs` file under `src/`, sorted.
fn source_files() -> Vec<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    let mut dirs = vec![src];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// `path` relative to the crate, for messages.
fn shown(path: &Path) -> String {
    path.strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The source with comments and the contents of string and character
/// literals blanked out (newlines kept, so line numbers stay), leaving
/// only the code's tokens.
fn code_only(src: &str) -> String {
    let b: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && is_raw_start(&b, i) {
            // r"…", r#"…"#: ends at a quote followed by as many hashes.
            let mut j = i + 1;
            let mut hashes = 0;
            while b[j] == '#' {
                hashes += 1;
                j += 1;
            }
            out.extend(std::iter::repeat_n(' ', j + 1 - i));
            i = j + 1;
            while i < b.len() {
                if b[i] == '"' && (0..hashes).all(|k| b.get(i + 1 + k) == Some(&'#')) {
                    out.extend(std::iter::repeat_n(' ', 1 + hashes));
                    i += 1 + hashes;
                    break;
                }
                out.push(blank(b[i]));
                i += 1;
            }
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < b.len() {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' && is_char_literal(&b, i) {
            // 'x', '\n', '\u{..}' (a lifetime has no closing quote).
            let end = match b[i + 1] {
                '\\' if b.get(i + 2) == Some(&'u') => {
                    (i + 3..b.len()).find(|&j| b[j] == '\'').unwrap_or(i)
                }
                '\\' => i + 3,
                _ => i + 2,
            };
            out.extend(std::iter::repeat_n(' ', end + 1 - i));
            i = end + 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Whether `r` at `i` starts a raw string (not the end of an identifier).
fn is_raw_start(b: &[char], i: usize) -> bool {
    let ident_before = i > 0 && (b[i - 1].is_alphanumeric() || b[i - 1] == '_');
    let mut j = i + 1;
    while j < b.len() && b[j] == '#' {
        j += 1;
    }
    !ident_before && b.get(j) == Some(&'"')
}

/// Whether `'` at `i` opens a character literal rather than a lifetime.
fn is_char_literal(b: &[char], i: usize) -> bool {
    matches!(
        (b.get(i + 1), b.get(i + 2)),
        (Some('\\'), _) | (Some(_), Some('\''))
    )
}

/// `(line, text)` of each line of `code` where `word` is a whole token.
fn token_lines(code: &str, word: &str) -> Vec<(usize, String)> {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    code.lines()
        .enumerate()
        .filter(|(_, line)| {
            line.match_indices(word).any(|(at, _)| {
                let before = line[..at].chars().next_back();
                let after = line[at + word.len()..].chars().next();
                !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
            })
        })
        .map(|(n, line)| (n + 1, line.trim().to_owned()))
        .collect()
}

#[test]
fn the_code_scanner_sees_code_and_not_text() {
    let src = "use zbus::X; // zbus\nlet s = \"zbus\"; let r = r#\"zbus\"#;\n/* zbus */ let c = 'z'; let d = '\\\\'; fn f<'a>(x: &'a zbus) {}\n";
    let lines: Vec<usize> = token_lines(&code_only(src), "zbus")
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(lines, [1, 3]);
    assert!(token_lines("let zbus_x = 1; my_zbus();", "zbus").is_empty());
}

/// ARCHITECTURE.md: only `systemd.rs` talks D-Bus. No other file names
/// the D-Bus crate, its tests included: the rest of the crate reaches the
/// user manager through the `manager::UserManager` trait and its plain
/// types.
#[test]
fn no_zbus_outside_the_systemd_adapter() {
    let adapter = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/systemd.rs");
    let mut found = Vec::new();
    for f in source_files().into_iter().filter(|f| *f != adapter) {
        let src = std::fs::read_to_string(&f).expect("read source");
        for (n, line) in token_lines(&code_only(&src), "zbus") {
            found.push(format!("{}:{n}: {line}", shown(&f)));
        }
    }
    assert!(
        found.is_empty(),
        "zbus used outside src/systemd.rs (go through manager::UserManager):\n{}",
        found.join("\n")
    );
}

/// The trait is the only door to systemd: nothing asks a manager for the
/// D-Bus connection behind it.
#[test]
fn no_as_systemd() {
    let mut found = Vec::new();
    for f in source_files() {
        let src = std::fs::read_to_string(&f).expect("read source");
        for (n, line) in src.lines().enumerate() {
            if line.contains("as_systemd") {
                found.push(format!("{}:{}: {}", shown(&f), n + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "as_systemd found (add a UserManager method instead):\n{}",
        found.join("\n")
    );
}

/// Library code never prints: standard output and error belong to the
/// commands (`src/cli*`, `src/main.rs`, `src/manual.rs`); the library
/// returns typed results and logs through `tracing` (the one exception:
/// a progress bar a command asks for, drawn by indicatif).
#[test]
fn only_the_commands_print() {
    let src_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let commands = |f: &Path| {
        let rel = f.strip_prefix(&src_dir).unwrap_or(f);
        rel.starts_with("cli")
            || rel == Path::new("cli.rs")
            || rel == Path::new("main.rs")
            || rel == Path::new("manual.rs")
    };
    let mut found = Vec::new();
    for f in source_files().into_iter().filter(|f| !commands(f)) {
        let src = std::fs::read_to_string(&f).expect("read source");
        let code = code_only(&src);
        for word in ["println", "print", "eprintln", "eprint"] {
            for (n, line) in token_lines(&code, word) {
                found.push(format!("{}:{n}: {line}", shown(&f)));
            }
        }
        for (n, line) in code.lines().enumerate() {
            if line.contains("io::stdout()") || line.contains("io::stderr()") {
                found.push(format!("{}:{}: {}", shown(&f), n + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "library code prints (return a typed result to its command in src/cli/):\n{}",
        found.join("\n")
    );
}
