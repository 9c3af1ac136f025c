//! Keeps ARCHITECTURE.md's invariants honest: each is followed by
//! `Guarded by:` and the tests that check it, and each test named exists.
//! Also the grep-level checks some of those invariants name.
//!
//! Pure: reads ARCHITECTURE.md and src/.

// Test and benchmark code: a panic is how it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn architecture() -> String {
    std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md")
}

/// The bullets of the `## Invariants` section, each as one line.
fn invariants(arch: &str) -> Vec<String> {
    let start = arch
        .find("\n## Invariants\n")
        .expect("an Invariants section");
    let rest = &arch[start + 1..];
    let body = &rest[rest.find('\n').unwrap_or(0)..];
    let end = body.find("\n## ").unwrap_or(body.len());
    let mut out: Vec<String> = Vec::new();
    for line in body[..end].lines() {
        if let Some(item) = line.strip_prefix("- ") {
            out.push(item.to_string());
        } else if let Some(last) = out.last_mut()
            && !line.trim().is_empty()
        {
            last.push(' ');
            last.push_str(line.trim());
        }
    }
    out
}

/// The tests named after each `Guarded by:` in `text`: backticked
/// `PATH.rs::…::NAME`.
fn guards(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in text.split("Guarded by:").skip(1) {
        for (i, tok) in part.split('`').enumerate() {
            if i % 2 == 1 && tok.contains(".rs::") {
                out.push(tok.to_string());
            }
        }
    }
    out
}

/// Whether `guard` (`src/x.rs::tests::name`, `tests/it/y.rs::name`) names a
/// test function that exists in that file.
fn exists(guard: &str) -> Result<(), String> {
    let (file, path) = guard
        .split_once(".rs::")
        .ok_or_else(|| format!("{guard}: not PATH.rs::NAME"))?;
    let file = root().join(format!("{file}.rs"));
    let name = path.rsplit("::").next().unwrap_or(path);
    let text = std::fs::read_to_string(&file)
        .map_err(|e| format!("{guard}: cannot read {}: {e}", file.display()))?;
    let defined = text.lines().any(|l| {
        let l = l.trim_start();
        let l = l.strip_prefix("pub ").unwrap_or(l);
        let l = l.strip_prefix("async ").unwrap_or(l);
        l.strip_prefix("fn ")
            .and_then(|r| r.strip_prefix(name))
            .is_some_and(|r| r.starts_with('(') || r.starts_with('<'))
    });
    if defined {
        Ok(())
    } else {
        Err(format!("{guard}: no fn {name} in {}", file.display()))
    }
}

#[test]
fn every_invariant_names_the_tests_that_guard_it_and_they_exist() {
    let arch = architecture();
    let items = invariants(&arch);
    assert!(items.len() > 10, "read {} invariants", items.len());
    let unguarded: Vec<&String> = items.iter().filter(|i| guards(i).is_empty()).collect();
    assert!(
        unguarded.is_empty(),
        "invariants without `Guarded by: PATH.rs::NAME`:\n{unguarded:#?}"
    );
    let missing: Vec<String> = guards(&arch)
        .iter()
        .filter_map(|g| exists(g).err())
        .collect();
    assert!(
        missing.is_empty(),
        "Guarded by names tests that do not exist:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_guard_check_catches_a_missing_test() {
    assert!(exists("tests/claims_doc.rs::the_guard_check_catches_a_missing_test").is_ok());
    assert!(exists("tests/claims_doc.rs::no_such_test").is_err());
    assert!(exists("src/no_such_file.rs::tests::x").is_err());
    let text = "- a claim. Guarded by: `src/lib.rs::tests::x`, `tests/a.rs::y`.\n";
    assert_eq!(guards(text), ["src/lib.rs::tests::x", "tests/a.rs::y"]);
    let arch = "x\n## Invariants\n\nIntro.\n\n- one\n  more. Guarded by: `a.rs::b`.\n- two\n\n## Next\n- not\n";
    assert_eq!(
        invariants(arch),
        ["one more. Guarded by: `a.rs::b`.", "two"]
    );
}

/// Lines of the non-test code of `file` (up to its first `#[cfg(test)]`).
fn code_lines(file: &Path) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    code.lines()
        .enumerate()
        .map(|(n, l)| (n + 1, l.to_string()))
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .collect()
}

/// Whether `word` occurs in `line` not as the tail of a longer name
/// (`File::` is not found in `ParsedFile::`).
fn contains_word(line: &str, word: &str) -> bool {
    line.match_indices(word).any(|(i, _)| {
        !line[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

#[test]
fn pure_modules_do_no_io() {
    let io = [
        "std::fs",
        "fs::",
        "File::",
        "tokio",
        "fsutil",
        "zbus",
        "reqwest",
        "std::process",
        "Command::new",
        "std::net",
        "std::env",
    ];
    let mut found = Vec::new();
    for f in [
        "src/manifest/parse.rs",
        "src/render.rs",
        "src/plan.rs",
        "src/schedule.rs",
        "src/unitfile.rs",
    ] {
        for (n, line) in code_lines(&root().join(f)) {
            if io.iter().any(|w| contains_word(&line, w)) {
                found.push(format!("{f}:{n}: {}", line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "I/O in a pure module:\n{}",
        found.join("\n")
    );
}
