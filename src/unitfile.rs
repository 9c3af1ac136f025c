//! Unit files as systemd reads them: the one parser every part of unitlet
//! uses to look inside a unit file (markers, `[Install]`, limits, diffs,
//! `Type=`, `ExecStart=`).
//!
//! The rules are systemd's (`systemd.syntax(7)`, `conf-parser.c`):
//! - a line ending in an unescaped `\` continues on the next line; the `\`
//!   becomes a space;
//! - a line whose first non-blank character is `#` or `;` is a comment, also
//!   in the middle of a continued line (the continuation goes on after it);
//! - `[Section]` starts a section; `Key=Value` assigns, key and value
//!   stripped of surrounding whitespace; a key may be assigned many times,
//!   and every assignment is kept, in order (an empty value resets a list
//!   in systemd, which is the reader's business);
//! - a value is one string: whether it is split into words, and how quotes
//!   and escapes are read, depends on the setting ([`words`] does it the
//!   way `WantedBy=` and `ExecStart=` are read).
//!
//! Architecture Invariant: pure. No I/O, no systemd.

use std::fmt;

/// One `Key=Value` assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub section: String,
    pub key: String,
    /// The value with continuations joined, stripped of surrounding blanks.
    pub value: String,
    /// The 1-based line the assignment starts on, for messages.
    pub line: usize,
}

/// A line systemd would not take as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct SyntaxError {
    /// 1-based line number.
    pub line: usize,
    pub problem: Problem,
}

/// What is wrong with a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// `[Section` without the closing bracket: systemd refuses the file.
    SectionHeader(String),
    /// An assignment before the first `[Section]`: systemd ignores it.
    OutsideSection(String),
    /// A line that is neither a section, a comment nor `Key=Value`:
    /// systemd ignores it.
    MissingEquals(String),
    /// `=Value` with no key: systemd ignores it.
    MissingKey(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::SectionHeader(l) => {
                write!(f, "invalid section header {l:?}; write it as [Section]")
            }
            Problem::OutsideSection(l) => write!(
                f,
                "{l:?} comes before any [Section] header; move it into [Unit], [Service] or [Install]"
            ),
            Problem::MissingEquals(l) => write!(
                f,
                "{l:?} is not Key=Value; a long value continues on the next line only after a trailing \\"
            ),
            Problem::MissingKey(l) => write!(f, "{l:?} has no key before '='"),
        }
    }
}

/// A parsed unit file: its assignments in file order, and the lines
/// systemd would refuse or ignore.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitFile {
    pub assignments: Vec<Assignment>,
    pub errors: Vec<SyntaxError>,
}

impl UnitFile {
    /// Every value assigned to `key` in sections named `section`, in order.
    pub fn values<'a, 'k>(
        &'a self,
        section: &'k str,
        key: &'k str,
    ) -> impl Iterator<Item = &'a str> + use<'a, 'k> {
        self.assignments
            .iter()
            .filter(move |a| a.section == section && a.key == key)
            .map(|a| a.value.as_str())
    }

    /// The first value of `key` in `section`.
    pub fn first(&self, section: &str, key: &str) -> Option<&str> {
        self.values(section, key).next()
    }

    /// The last value of `key` in `section`: the one in force for a
    /// single-valued setting.
    pub fn last(&self, section: &str, key: &str) -> Option<&str> {
        self.values(section, key).last()
    }

    /// The keys assigned in `section` (with repeats), in order.
    pub fn keys<'a, 'k>(&'a self, section: &'k str) -> impl Iterator<Item = &'a str> + use<'a, 'k> {
        self.assignments
            .iter()
            .filter(move |a| a.section == section)
            .map(|a| a.key.as_str())
    }

    /// The first problem, if any: what [`check`] reports.
    pub fn first_error(&self) -> Option<&SyntaxError> {
        self.errors.first()
    }
}

/// Whether a (continued) line ends in a `\` that is not itself escaped.
fn ends_escaped(s: &str) -> bool {
    s.bytes().rev().take_while(|&b| b == b'\\').count() % 2 == 1
}

/// Parse a unit file the way systemd does. Never fails: lines systemd
/// would refuse or ignore are left out and listed in `errors`.
pub fn parse(content: &str) -> UnitFile {
    let mut out = UnitFile::default();
    let mut section: Option<String> = None;
    // A line continued with `\`: its text so far and its first line.
    let mut pending: Option<(String, usize)> = None;
    for (i, raw) in content.lines().enumerate() {
        let n = i + 1;
        let trimmed = raw.trim_start();
        if trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        match pending.take() {
            Some((mut text, start)) => {
                text.push_str(raw);
                if ends_escaped(&text) {
                    text.pop();
                    text.push(' ');
                    pending = Some((text, start));
                } else {
                    line(&mut out, &mut section, &text, start);
                }
            }
            // Most lines are not continued: no copy.
            None if ends_escaped(raw) => {
                let mut text = raw[..raw.len() - 1].to_string();
                text.push(' ');
                pending = Some((text, n));
            }
            None => line(&mut out, &mut section, raw, n),
        }
    }
    if let Some((text, start)) = pending {
        line(&mut out, &mut section, &text, start);
    }
    out
}

/// One logical line (continuations joined).
fn line(out: &mut UnitFile, section: &mut Option<String>, text: &str, n: usize) {
    let l = text.trim();
    if l.is_empty() {
        return;
    }
    let error = |problem| SyntaxError { line: n, problem };
    if let Some(rest) = l.strip_prefix('[') {
        match rest.strip_suffix(']') {
            Some(name) => *section = Some(name.to_string()),
            None => {
                out.errors.push(error(Problem::SectionHeader(l.into())));
                // systemd refuses the whole file; what follows is not in
                // the section before.
                *section = None;
            }
        }
        return;
    }
    let Some(current) = section.as_ref() else {
        out.errors.push(error(Problem::OutsideSection(l.into())));
        return;
    };
    let Some((key, value)) = l.split_once('=') else {
        out.errors.push(error(Problem::MissingEquals(l.into())));
        return;
    };
    let key = key.trim();
    if key.is_empty() {
        out.errors.push(error(Problem::MissingKey(l.into())));
        return;
    }
    out.assignments.push(Assignment {
        section: current.clone(),
        key: key.to_string(),
        value: value.trim().to_string(),
        line: n,
    });
}

/// Parse and refuse what systemd would refuse or silently ignore, so a
/// unit file that does not say what its author meant is reported instead
/// of installed.
///
/// # Errors
/// The first bad line, with its number.
pub fn check(content: &str) -> Result<UnitFile, SyntaxError> {
    let u = parse(content);
    match u.first_error() {
        Some(e) => Err(e.clone()),
        None => Ok(u),
    }
}

/// A value that cannot be split into words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WordsError {
    /// A quote opened and never closed.
    #[error("unterminated {0} quote in {1:?}")]
    Unterminated(char, String),
    /// A `\` at the very end.
    #[error("trailing backslash in {0:?}")]
    TrailingBackslash(String),
}

/// A C escape after `\` (the `\` already read): `\n`, `\t`, `\xNN`,
/// `\uXXXX`, …; an unknown one stands for the character itself.
fn unescape(chars: &mut std::iter::Peekable<std::str::Chars<'_>>, c: char) -> char {
    let hex = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>, n: usize| {
        let digits: String = (0..n)
            .filter_map(|_| chars.next_if(char::is_ascii_hexdigit))
            .collect();
        u32::from_str_radix(&digits, 16)
            .ok()
            .and_then(char::from_u32)
    };
    match c {
        'n' => '\n',
        't' => '\t',
        'r' => '\r',
        'a' => '\x07',
        'b' => '\x08',
        'f' => '\x0c',
        'v' => '\x0b',
        's' => ' ',
        'x' => hex(chars, 2).unwrap_or('x'),
        'u' => hex(chars, 4).unwrap_or('u'),
        'U' => hex(chars, 8).unwrap_or('U'),
        c => c,
    }
}

/// Split a value into words as systemd does for list settings
/// (`WantedBy=`) and command lines (`ExecStart=`): blanks separate words;
/// `"…"` and `'…'` quote a whole word (the opening quote only at a word's
/// start, the closing one followed by a blank or the end, as
/// `systemd.service(5)` says); `\` escapes C-style inside and outside
/// quotes.
///
/// # Errors
/// An unterminated quote or a trailing `\`.
pub fn words(value: &str) -> Result<Vec<String>, WordsError> {
    Ok(split(value)?.into_iter().map(|w| w.text).collect())
}

/// A word and whether it was written as a bare `;` (a command separator
/// in `ExecStart=`, unlike `\;` or `";"`).
struct Word {
    text: String,
    bare_semicolon: bool,
}

fn split(value: &str) -> Result<Vec<Word>, WordsError> {
    let mut out = Vec::new();
    let mut chars = value.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&first) = chars.peek() else {
            return Ok(out);
        };
        let mut text = String::new();
        let mut plain = true;
        if first == '"' || first == '\'' {
            chars.next();
            plain = false;
            loop {
                match chars.next() {
                    None => return Err(WordsError::Unterminated(first, value.into())),
                    Some(c) if c == first => break,
                    Some('\\') => match chars.next() {
                        Some(e) => text.push(unescape(&mut chars, e)),
                        None => return Err(WordsError::TrailingBackslash(value.into())),
                    },
                    Some(c) => text.push(c),
                }
            }
            if chars.peek().is_some_and(|c| !c.is_whitespace()) {
                return Err(WordsError::Unterminated(first, value.into()));
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    plain = false;
                    match chars.next() {
                        Some(e) => text.push(unescape(&mut chars, e)),
                        None => return Err(WordsError::TrailingBackslash(value.into())),
                    }
                } else {
                    text.push(c);
                }
            }
        }
        let bare_semicolon = plain && text == ";";
        out.push(Word {
            text,
            bare_semicolon,
        });
    }
}

/// The argv of every command in an `ExecStart=`-like value, as systemd
/// reads them: commands separated by a lone `;`, and each program's
/// prefixes (`@`, `-`, `:`, `+`, `!`) removed. `@` also drops the next
/// word (it is `argv[0]`, not an argument).
///
/// # Errors
/// The value cannot be split into words.
pub fn exec_commands(value: &str) -> Result<Vec<Vec<String>>, WordsError> {
    let mut commands = Vec::new();
    let mut cur: Vec<String> = Vec::new();
    let mut argv0_follows = false;
    for Word {
        text: w,
        bare_semicolon,
    } in split(value)?
    {
        if bare_semicolon {
            commands.push(std::mem::take(&mut cur));
            continue;
        }
        if cur.is_empty() && !argv0_follows {
            let program = w.trim_start_matches(['@', '-', ':', '+', '!']);
            let prefix = &w[..w.len() - program.len()];
            cur.push(program.to_string());
            argv0_follows = prefix.contains('@');
            continue;
        }
        if argv0_follows {
            argv0_follows = false;
            continue;
        }
        cur.push(w);
    }
    if !cur.is_empty() {
        commands.push(cur);
    }
    Ok(commands)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE_EXPORTER: &str = include_str!("../units/node-exporter.service");

    /// Issue 20 item 11: the shipped unit's continued `ExecStart=` is one
    /// assignment, and no key is named after a flag.
    #[test]
    fn the_shipped_node_exporter_unit_parses_into_its_real_keys() {
        let u = check(NODE_EXPORTER).expect("the shipped unit is valid");
        let keys: Vec<(&str, &str)> = u
            .assignments
            .iter()
            .map(|a| (a.section.as_str(), a.key.as_str()))
            .collect();
        assert_eq!(
            keys,
            [
                ("Unit", "Description"),
                ("Unit", "Documentation"),
                ("Service", "Type"),
                ("Service", "ExecStart"),
                ("Service", "Restart"),
                ("Service", "RestartSec"),
                ("Service", "NoNewPrivileges"),
                ("Install", "WantedBy"),
            ]
        );
        let exec = u.last("Service", "ExecStart").unwrap();
        assert_eq!(
            exec_commands(exec).unwrap(),
            [vec![
                "/usr/bin/prometheus-node-exporter".to_string(),
                "--web.listen-address=127.0.0.1:9100".into(),
                "--web.telemetry-path=/metrics".into(),
            ]]
        );
        assert_eq!(u.first("Install", "WantedBy"), Some("default.target"));
    }

    #[test]
    fn continuations_follow_systemd() {
        // A comment inside a continued line is skipped and the line goes
        // on; an escaped backslash does not continue; a blank line ends a
        // continuation; the last line may end in one.
        let u = parse(
            "[Service]\nA=one \\\n# comment\n; other\n  two\\\nthree\nB=x\\\\\nC=y\\\n\nD=z\\",
        );
        let got: Vec<(&str, &str, usize)> = u
            .assignments
            .iter()
            .map(|a| (a.key.as_str(), a.value.as_str(), a.line))
            .collect();
        assert_eq!(
            got,
            [
                ("A", "one    two three", 2),
                ("B", "x\\\\", 7),
                ("C", "y", 8),
                ("D", "z", 10),
            ]
        );
        assert!(u.errors.is_empty(), "{:?}", u.errors);
    }

    #[test]
    fn repeated_keys_and_sections_are_kept_in_order() {
        let u =
            parse("[Service]\nMemoryMax=1\n[Unit]\nA=b\n[Service]\nMemoryMax=\n MemoryMax = 2 \n");
        assert_eq!(
            u.values("Service", "MemoryMax").collect::<Vec<_>>(),
            ["1", "", "2"]
        );
        assert_eq!(u.last("Service", "MemoryMax"), Some("2"));
        assert_eq!(u.first("Service", "MemoryMax"), Some("1"));
        assert_eq!(u.keys("Unit").collect::<Vec<_>>(), ["A"]);
        // `=` in a value stays; a comment marker after text is text.
        let u = parse("[Unit]\nDescription=a=b # not a comment\n");
        assert_eq!(u.first("Unit", "Description"), Some("a=b # not a comment"));
    }

    #[test]
    fn bad_lines_are_reported_with_their_numbers() {
        let cases = [
            ("Key=v\n[Unit]\n", 1, "before any [Section]"),
            ("[Unit]\n[Service\nA=b\n", 2, "invalid section header"),
            ("[Unit]\n\n--flag\n", 3, "is not Key=Value"),
            ("[Unit]\n=v\n", 2, "no key"),
        ];
        for (text, line, want) in cases {
            let e = check(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.to_string().contains(want), "{text:?}: {e}");
        }
        // After a bad header nothing lands in the section before it.
        let u = parse("[Unit]\n[Service\nA=b\n");
        assert!(u.assignments.is_empty());
    }

    #[test]
    fn words_unquote_and_unescape() {
        assert_eq!(
            words(r#"a.target  "b c.target" 'd e' f\x41\ g "h\"i""#).unwrap(),
            ["a.target", "b c.target", "d e", "fA g", "h\"i"]
        );
        assert!(matches!(
            words("\"open"),
            Err(WordsError::Unterminated('"', _))
        ));
        assert!(matches!(
            words("a\\"),
            Err(WordsError::TrailingBackslash(_))
        ));
        assert_eq!(words("   ").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn exec_commands_drop_prefixes_and_split_on_semicolons() {
        assert_eq!(
            exec_commands(r#"-/bin/a "x y" ; @/bin/b argv0 z \; w"#).unwrap(),
            [
                vec!["/bin/a".to_string(), "x y".into()],
                vec!["/bin/b".to_string(), "z".into(), ";".into(), "w".into()],
            ]
        );
    }

    /// What unitlet renders reads back as the argv it came from.
    #[test]
    fn rendered_exec_lines_read_back() {
        let argv: Vec<String> = ["/bin/x", "a b", "c\"d", "e\\f", "tab\there", ";"]
            .map(String::from)
            .to_vec();
        let line = crate::render::exec_line(&argv);
        assert_eq!(exec_commands(&line).unwrap(), [argv]);
    }
}
