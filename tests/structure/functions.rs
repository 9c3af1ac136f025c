// Structural checks over the source tree: properties of the code itself
// (not of its behaviour) that ARCHITECTURE.md promises.

use std::path::{Path, PathBuf};

/// The longest function body src/ may hold, in lines, signature to closing
/// brace (tests aside): a longer one is split into named steps.
const MAX_FUNCTION_LINES: usize = 80;

/// Functions other branches are splitting (rollout.rs, the pass's
/// `execute` and `prepare`), tolerated until they merge: `(file, function)`.
/// The integrator empties this list.
const PENDING_ELSEWHERE: &[(&str, &str)] = &[];

/// One function found in a source file.
#[derive(Debug)]
struct Function {
    name: String,
    /// 1-based line of `fn`.
    line: usize,
    /// Lines from the `fn` line to the closing brace, both included.
    lines: usize,
}

/// The source text with comments, string and character literals blanked
/// out (newlines kept), so that braces can be counted.
fn code_only(src: &str) -> Vec<u8> {
    let b = src.as_bytes();
    let mut out = b.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to.min(b.len())] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                let end = b[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(b.len(), |p| i + p);
                blank(&mut out, i, end);
                i = end;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let (mut depth, mut j) = (1, i + 2);
                while j < b.len() && depth > 0 {
                    if b[j] == b'/' && b.get(j + 1) == Some(&b'*') {
                        depth += 1;
                        j += 2;
                    } else if b[j] == b'*' && b.get(j + 1) == Some(&b'/') {
                        depth -= 1;
                        j += 2;
                    } else {
                        j += 1;
                    }
                }
                blank(&mut out, i, j);
                i = j;
            }
            b'r' if !ident_before(b, i) && matches!(b.get(i + 1), Some(b'"') | Some(b'#')) => {
                let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
                if b.get(i + 1 + hashes) != Some(&b'"') {
                    i += 1;
                    continue;
                }
                let close: Vec<u8> = std::iter::once(b'"')
                    .chain(std::iter::repeat_n(b'#', hashes))
                    .collect();
                let start = i + 2 + hashes;
                let end = b[start..]
                    .windows(close.len())
                    .position(|w| w == close.as_slice())
                    .map_or(b.len(), |p| start + p + close.len());
                blank(&mut out, i, end);
                i = end;
            }
            b'"' => {
                let mut j = i + 1;
                while j < b.len() && b[j] != b'"' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                blank(&mut out, i, j + 1);
                i = j + 1;
            }
            b'\'' => {
                // A character literal ('x', '\n', '\u{..}'), else a lifetime.
                let end = if b.get(i + 1) == Some(&b'\\') {
                    b[i + 2..]
                        .iter()
                        .position(|&c| c == b'\'')
                        .map(|p| i + 2 + p)
                } else {
                    let len = src[i + 1..].chars().next().map_or(1, char::len_utf8);
                    (b.get(i + 1 + len) == Some(&b'\'')).then_some(i + 1 + len)
                };
                match end {
                    Some(e) => {
                        blank(&mut out, i, e + 1);
                        i = e + 1;
                    }
                    None => i += 1,
                }
            }
            _ => i += 1,
        }
    }
    out
}

fn ident_before(b: &[u8], i: usize) -> bool {
    i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')
}

fn line_of(code: &[u8], at: usize) -> usize {
    code[..at].iter().filter(|&&c| c == b'\n').count() + 1
}

/// Where the block opening at `open` (a `{`) closes.
fn block_end(code: &[u8], open: usize) -> usize {
    let mut depth = 0usize;
    for (j, &c) in code.iter().enumerate().skip(open) {
        match c {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return j;
                }
            }
            _ => {}
        }
    }
    code.len()
}

/// Whether the word `word` starts at `i` (not inside a longer identifier).
fn word_at(code: &[u8], i: usize, word: &[u8]) -> bool {
    code[i..].starts_with(word)
        && !ident_before(code, i)
        && code
            .get(i + word.len())
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
}

/// Every function with a body in `src`, outside `#[cfg(test)]` modules.
fn functions(src: &str) -> Vec<Function> {
    let code = code_only(src);
    let mut found = Vec::new();
    let mut i = 0;
    while i < code.len() {
        if code[i..].starts_with(b"#[cfg(test)]") {
            // Skip the item it guards when that is an inline module.
            let mut j = i + b"#[cfg(test)]".len();
            while j < code.len() && code[j].is_ascii_whitespace() {
                j += 1;
            }
            let rest = &code[j..];
            let is_mod = rest.starts_with(b"mod ")
                || rest.starts_with(b"pub mod ")
                || rest.starts_with(b"pub(crate) mod ");
            let brace = rest.iter().position(|&c| c == b'{' || c == b';');
            if let (true, Some(p)) = (is_mod, brace)
                && rest[p] == b'{'
            {
                i = block_end(&code, j + p) + 1;
                continue;
            }
        }
        if word_at(&code, i, b"fn") {
            let name_start = i
                + 2
                + code[i + 2..]
                    .iter()
                    .take_while(|c| c.is_ascii_whitespace())
                    .count();
            let name: String = code[name_start..]
                .iter()
                .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
                .map(|&c| c as char)
                .collect();
            // The body opens at the first `{` outside parentheses and
            // brackets; a `;` there first means a declaration without one.
            let (mut parens, mut j, mut open) = (0i32, name_start, None);
            while j < code.len() {
                match code[j] {
                    b'(' | b'[' => parens += 1,
                    b')' | b']' => parens -= 1,
                    b'{' if parens == 0 => {
                        open = Some(j);
                        break;
                    }
                    b';' if parens == 0 => break,
                    _ => {}
                }
                j += 1;
            }
            if !name.is_empty()
                && let Some(open) = open
            {
                let end = block_end(&code, open);
                let line = line_of(&code, i);
                found.push(Function {
                    name,
                    line,
                    lines: line_of(&code, end) - line + 1,
                });
            }
            i += 2;
            continue;
        }
        i += 1;
    }
    found
}

/// The `.rs` files under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Files compiled only for tests: `*_tests.rs` and modules declared
/// `#[cfg(test)] mod NAME;` (e.g. the in-memory manager).
fn test_only(files: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = files
        .iter()
        .filter(|p| p.to_string_lossy().ends_with("_tests.rs"))
        .cloned()
        .collect();
    for f in files {
        let src = std::fs::read_to_string(f).unwrap();
        let lines: Vec<&str> = src.lines().map(str::trim).collect();
        for w in lines.windows(2) {
            let decl = w[1]
                .trim_start_matches("pub ")
                .trim_start_matches("pub(crate) ");
            if w[0] == "#[cfg(test)]"
                && let Some(name) = decl.strip_prefix("mod ").and_then(|d| d.strip_suffix(';'))
            {
                // `a.rs` and `a/mod.rs` declare children in `a/`; `lib.rs` in src/.
                let dir = match f.file_stem().and_then(|s| s.to_str()) {
                    Some("mod") | Some("lib") => f.parent().unwrap().to_path_buf(),
                    _ => f.with_extension(""),
                };
                out.push(dir.join(format!("{name}.rs")));
                out.push(dir.join(name).join("mod.rs"));
            }
        }
    }
    out
}

#[test]
fn no_function_over_80_lines_in_src() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = rust_files(&root.join("src"));
    let skip = test_only(&files);
    let mut long = Vec::new();
    for f in files.iter().filter(|f| !skip.contains(f)) {
        let rel = f.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let src = std::fs::read_to_string(f).unwrap();
        for func in functions(&src) {
            let pending = PENDING_ELSEWHERE
                .iter()
                .any(|(file, name)| *file == rel && (*name == "*" || *name == func.name));
            if func.lines > MAX_FUNCTION_LINES && !pending {
                long.push(format!(
                    "{rel}:{} fn {} is {} lines",
                    func.line, func.name, func.lines
                ));
            }
        }
    }
    assert!(
        long.is_empty(),
        "functions over {MAX_FUNCTION_LINES} lines (split them into named steps):\n{}",
        long.join("\n")
    );
}

#[test]
fn the_function_scanner_measures_bodies_and_skips_test_modules() {
    let src = "fn a() {\n    let s = \"}\";\n    let c = '{';\n}\n\
               // fn commented() {\n\
               trait T { fn decl(&self) -> [u8; 2]; }\n\
               fn b<'x>(v: &'x str) -> [u8; 2] { let r = r#\"{\"#; [0, 1] }\n\
               #[cfg(test)]\nmod tests {\n    fn in_test() {\n    }\n}\n";
    let found: Vec<(String, usize, usize)> = functions(src)
        .into_iter()
        .map(|f| (f.name, f.line, f.lines))
        .collect();
    assert_eq!(found, vec![("a".to_owned(), 1, 4), ("b".to_owned(), 7, 1)]);
}
