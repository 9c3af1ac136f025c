//! `unitlet logs [NAME]`: what a unit wrote, wherever the user manager sends
//! it.
//!
//! Most units log to the journal, and then this is `journalctl --user -u
//! UNIT`. A user manager without a journald (scripts/quickstart.sh's private
//! manager on a machine whose PID 1 is not systemd) would lose that output,
//! so quickstart gives every service a log file (`StandardOutput=append:…`
//! in a drop-in). systemd does not say over D-Bus which file that is, so the
//! path is read from the unit's own files (its fragment, then its drop-ins,
//! the order systemd applies them in).
//!
//! Architecture Invariant: nothing here writes; a log file is only read.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::locations::Locations;
use crate::manager::{ManagerError, UserManager as _};
use crate::systemd::Systemd;

/// Where the journal's stream socket is when a journald runs: units whose
/// output goes to the journal lose it without one.
const JOURNAL_STDOUT: &str = "/run/systemd/journal/stdout";

/// How often `-f` looks for new lines in a log file.
const FOLLOW_POLL: Duration = Duration::from_millis(250);

/// Lines `-f` prints before following when no `-n` is given (as journalctl).
const FOLLOW_DEFAULT_LINES: usize = 10;

/// What `unitlet logs` asks for (the command's flags, parsed in `cli`).
#[derive(Debug, Clone, Default)]
pub struct LogsRequest {
    /// A manifest's name (its unit NAME.service) or a full unit name;
    /// unitlet's own log (unitlet.service) without it.
    pub name: Option<String>,
    /// Keep printing new lines as they are written.
    pub follow: bool,
    /// Only the last N lines.
    pub lines: Option<usize>,
    /// Only lines since TIME, in journalctl's syntax; journal only.
    pub since: Option<String>,
}

/// Where a unit's output goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Sink {
    /// The journal (`journal`, `journal+console`, `kmsg`, `inherit` …).
    Journal,
    /// Plain files (`append:`, `file:`, `truncate:`): standard output's,
    /// then standard error's if it is another one.
    Files(Vec<PathBuf>),
}

#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    /// The manager does not know the unit.
    #[error(
        "the user manager has no unit {unit} (`unitlet get` lists the manifests and their units)"
    )]
    UnknownUnit { unit: String },
    /// The manager cannot be asked where the unit logs.
    #[error("cannot ask the user manager where {unit} logs")]
    Systemd {
        unit: String,
        #[source]
        source: Box<ManagerError>,
    },
    /// The unit's output goes to a journal no journald collects.
    #[error(
        "{unit} logs to the journal (StandardOutput={output}), but no systemd-journald runs here ({JOURNAL_STDOUT} is missing), so its output is lost; run it in a systemd session, or give it a log file (scripts/quickstart.sh does for its private manager)"
    )]
    NoJournal { unit: String, output: String },
    /// The unit's output file could not be worked out from its files.
    #[error("cannot tell which file {unit} logs to: {reason}")]
    FilePath { unit: String, reason: String },
    /// `--since` on plain files.
    #[error(
        "--since needs the journal, and {unit} logs to {} (lines without time stamps); use -n N instead",
        .files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(" and ")
    )]
    SinceOnFile { unit: String, files: Vec<PathBuf> },
    /// A log file (or the journalctl program) could not be read or run.
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    /// journalctl ran and failed (it said why on standard error).
    #[error("journalctl failed ({0})")]
    Journalctl(std::process::ExitStatus),
}

impl LogsError {
    /// Whether the unit is unknown (the answer is "no"), not an
    /// operational failure.
    pub fn is_unknown_unit(&self) -> bool {
        matches!(self, LogsError::UnknownUnit { .. })
    }
}

/// The unit `unitlet logs NAME` shows.
pub fn unit_of(name: Option<&str>) -> String {
    match name {
        None => "unitlet.service".into(),
        Some(n) if n.contains('.') => n.into(),
        Some(n) => format!("{n}.service"),
    }
}

/// Prints what `args` selects of the unit's output to `out` (through
/// journalctl, which prints itself, when the unit logs to the journal).
///
/// # Errors
/// [`LogsError`]: no such unit, no user manager, a file that cannot be
/// read, journalctl failing (it said why on standard error).
pub async fn logs(
    loc: &Locations,
    args: &LogsRequest,
    out: &mut (dyn Write + Send),
) -> Result<(), LogsError> {
    let unit = unit_of(args.name.as_deref());
    let sink = sink_of(loc, &unit).await?;
    match sink {
        Sink::Journal => journalctl(&unit, args),
        Sink::Files(files) => {
            if args.since.is_some() {
                return Err(LogsError::SinceOnFile { unit, files });
            }
            print_files(&files, args, out).await
        }
    }
}

/// Asks the manager where UNIT's output goes.
async fn sink_of(loc: &Locations, unit: &str) -> Result<Sink, LogsError> {
    let sd_err = |source| LogsError::Systemd {
        unit: unit.to_owned(),
        source: Box::new(source),
    };
    let sd = Systemd::connect(loc.bus.as_deref()).await.map_err(sd_err)?;
    let path = sd.load_unit(unit).await.map_err(sd_err)?;
    let props = sd.unit_properties(unit, &path).await.map_err(sd_err)?;
    if props.load_state == "not-found" {
        return Err(LogsError::UnknownUnit { unit: unit.into() });
    }
    if !unit.ends_with(".service") {
        // Timers and others log nothing of their own: their service does.
        return Err(LogsError::FilePath {
            unit: unit.into(),
            reason: "only services have output; name the service".into(),
        });
    }
    let svc = sd.live_properties(unit, &path).await.map_err(sd_err)?;
    let (output, error) = (svc.standard_output, svc.standard_error);
    if !is_file(&output) && !is_file(&error) {
        return if Path::new(JOURNAL_STDOUT).exists() {
            Ok(Sink::Journal)
        } else {
            Err(LogsError::NoJournal {
                unit: unit.into(),
                output,
            })
        };
    }
    let mut texts = vec![props.fragment_path];
    texts.extend(props.drop_in_paths);
    let texts: Vec<String> = texts
        .iter()
        .filter(|p| !p.is_empty())
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .collect();
    let home = std::env::var_os("HOME").map(PathBuf::from);
    output_files(unit, home.as_deref(), &texts).map_err(|reason| LogsError::FilePath {
        unit: unit.into(),
        reason,
    })
}

fn is_file(output: &str) -> bool {
    matches!(output, "append" | "file" | "truncate")
}

/// The files UNIT's standard output and error go to, from its unit file
/// and drop-ins in the order systemd applies them (a later assignment
/// wins, an empty one resets). Pure.
pub fn output_files(unit: &str, home: Option<&Path>, texts: &[String]) -> Result<Sink, String> {
    let (mut out, mut err) = (String::new(), String::new());
    for text in texts {
        let mut section = "";
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                section = line;
                continue;
            }
            if section != "[Service]" {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            match k.trim() {
                "StandardOutput" => out = v.trim().to_owned(),
                "StandardError" => err = v.trim().to_owned(),
                _ => {}
            }
        }
    }
    let path_of = |v: &str| -> Result<Option<PathBuf>, String> {
        let Some((kind, p)) = v.split_once(':') else {
            return Ok(None);
        };
        if !matches!(kind, "append" | "file" | "truncate") {
            return Ok(None);
        }
        expand_specifiers(p, unit, home).map(|p| Some(PathBuf::from(p)))
    };
    let mut files = Vec::new();
    if let Some(p) = path_of(&out)? {
        files.push(p);
    }
    // StandardError= defaults to (and `inherit` means) standard output's.
    if let Some(p) = path_of(&err)?
        && !files.contains(&p)
    {
        files.push(p);
    }
    if files.is_empty() {
        return Err(format!(
            "systemd says it writes to a file, but none of its unit files sets StandardOutput= or StandardError= to append:, file: or truncate: ({})",
            if texts.is_empty() {
                "they could not be read".to_owned()
            } else {
                format!("{} read", texts.len())
            }
        ));
    }
    Ok(Sink::Files(files))
}

/// The unit-name specifiers systemd resolves in a log file's path.
fn expand_specifiers(path: &str, unit: &str, home: Option<&Path>) -> Result<String, String> {
    let stem = unit.rsplit_once('.').map_or(unit, |(s, _)| s);
    let (prefix, instance) = stem.split_once('@').unwrap_or((stem, ""));
    let mut out = String::new();
    let mut chars = path.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('n') => out.push_str(unit),
            Some('N') => out.push_str(stem),
            Some('p') => out.push_str(prefix),
            Some('i') => out.push_str(instance),
            Some('h') => match home {
                Some(h) => out.push_str(&h.display().to_string()),
                None => return Err(format!("{path} uses %h and HOME is not set")),
            },
            Some(s) => {
                return Err(format!(
                    "{path} uses the specifier %{s}, which unitlet does not resolve; read the file directly"
                ));
            }
            None => return Err(format!("{path} ends in a lone %")),
        }
    }
    Ok(out)
}

/// `journalctl --user -u UNIT` with the same selection.
fn journalctl(unit: &str, args: &LogsRequest) -> Result<(), LogsError> {
    let mut c = std::process::Command::new("journalctl");
    c.args(["--user", "--no-pager", "-u", unit]);
    if let Some(n) = args.lines {
        c.arg(format!("--lines={n}"));
    }
    if let Some(s) = &args.since {
        c.arg(format!("--since={s}"));
    }
    if args.follow {
        c.arg("--follow");
    }
    let status = c.status().map_err(|source| LogsError::Io {
        what: "cannot run journalctl".into(),
        source,
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(LogsError::Journalctl(status))
    }
}

/// A file being printed: where the next read starts, and which file that is
/// (a rotated or re-created file is read from its start).
struct Tail {
    path: PathBuf,
    pos: u64,
    ino: u64,
}

async fn print_files(
    files: &[PathBuf],
    args: &LogsRequest,
    out: &mut (dyn Write + Send),
) -> Result<(), LogsError> {
    let io_err = |p: &Path| {
        let what = format!("cannot read {}", p.display());
        move |source| LogsError::Io { what, source }
    };
    let lines = args.lines.or(args.follow.then_some(FOLLOW_DEFAULT_LINES));
    let headers = files.len() > 1;
    let mut tails = Vec::new();
    for p in files {
        if headers {
            let _ = writeln!(out, "==> {} <==", p.display());
        }
        let (pos, ino) = match File::open(p) {
            Ok(mut f) => {
                let ino = f.metadata().map_err(io_err(p))?.ino();
                let start = match lines {
                    Some(n) => start_of_last_lines(&mut f, n).map_err(io_err(p))?,
                    None => 0,
                };
                (copy_from(&mut f, start, out).map_err(io_err(p))?, ino)
            }
            // Not written yet (nothing started since quickstart): empty.
            Err(e) if e.kind() == io::ErrorKind::NotFound => (0, 0),
            Err(e) => return Err(io_err(p)(e)),
        };
        tails.push(Tail {
            path: p.clone(),
            pos,
            ino,
        });
    }
    let _ = out.flush();
    if !args.follow {
        return Ok(());
    }
    let mut last = tails.len().saturating_sub(1);
    loop {
        tokio::time::sleep(FOLLOW_POLL).await;
        for (i, t) in tails.iter_mut().enumerate() {
            let Ok(mut f) = File::open(&t.path) else {
                continue;
            };
            let meta = f.metadata().map_err(io_err(&t.path))?;
            if meta.ino() != t.ino || meta.len() < t.pos {
                (t.ino, t.pos) = (meta.ino(), 0);
            }
            if meta.len() == t.pos {
                continue;
            }
            if headers && i != last {
                let _ = writeln!(out, "\n==> {} <==", t.path.display());
                last = i;
            }
            t.pos = copy_from(&mut f, t.pos, out).map_err(io_err(&t.path))?;
            let _ = out.flush();
        }
    }
}

/// Copies `f` from `start` to its end into `out`; the offset reached.
fn copy_from(f: &mut File, start: u64, out: &mut (dyn Write + Send)) -> io::Result<u64> {
    f.seek(SeekFrom::Start(start))?;
    let n = io::copy(f, out)?;
    Ok(start + n)
}

/// The offset where the last `n` lines of `f` begin (a last line without
/// its newline counts), reading backwards from the end in blocks.
pub fn start_of_last_lines(f: &mut File, n: usize) -> io::Result<u64> {
    const BLOCK: u64 = 64 * 1024;
    let len = f.metadata()?.len();
    if n == 0 {
        return Ok(len);
    }
    let mut end = len;
    // The newline ending the last line does not start a line.
    let mut skip_last = true;
    let mut seen = 0;
    let mut buf = vec![0u8; BLOCK as usize];
    while end > 0 {
        let start = end.saturating_sub(BLOCK);
        let chunk = &mut buf[..(end - start) as usize];
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(chunk)?;
        for (i, b) in chunk.iter().enumerate().rev() {
            if *b != b'\n' {
                continue;
            }
            if skip_last && start + i as u64 == len - 1 {
                skip_last = false;
                continue;
            }
            seen += 1;
            if seen == n {
                return Ok(start + i as u64 + 1);
            }
        }
        skip_last = false;
        end = start;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last(content: &str, n: usize) -> String {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        std::fs::write(&p, content).unwrap();
        let mut f = File::open(&p).unwrap();
        let start = start_of_last_lines(&mut f, n).unwrap();
        content[start as usize..].to_owned()
    }

    #[test]
    fn last_lines_count_a_final_line_with_or_without_its_newline() {
        assert_eq!(last("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(last("a\nb\nc", 2), "b\nc");
        assert_eq!(last("a\nb\nc\n", 5), "a\nb\nc\n");
        assert_eq!(last("a\nb\nc\n", 0), "");
        assert_eq!(last("", 3), "");
        assert_eq!(last("\n\n\n", 2), "\n\n");
    }

    #[test]
    fn last_lines_cross_read_blocks() {
        let line = "x".repeat(1000);
        let content: String = (0..200).map(|i| format!("{i} {line}\n")).collect();
        let tail = last(&content, 150);
        assert_eq!(tail.lines().count(), 150);
        assert!(tail.starts_with("50 x"), "{}", &tail[..10]);
    }

    #[test]
    fn the_log_file_is_the_last_assignment_with_unit_specifiers_resolved() {
        let fragment =
            "[Unit]\nDescription=x\n[Service]\nExecStart=/bin/true\nStandardOutput=journal\n"
                .to_owned();
        let dropin =
            "[Service]\nStandardOutput=append:/var/log/q/%N.log\nStandardError=append:/var/log/q/%N.log\n"
                .to_owned();
        assert_eq!(
            output_files("prometheus.service", None, &[fragment.clone(), dropin]),
            Ok(Sink::Files(vec![PathBuf::from(
                "/var/log/q/prometheus.log"
            )]))
        );
        let split =
            "[Service]\nStandardOutput=file:%h/out-%i\nStandardError=truncate:/e/%p%%.log\n"
                .to_owned();
        assert_eq!(
            output_files("w@a.service", Some(Path::new("/home/me")), &[split]),
            Ok(Sink::Files(vec![
                PathBuf::from("/home/me/out-a"),
                PathBuf::from("/e/w%.log")
            ]))
        );
        // A later empty assignment resets; another section does not count.
        let reset = "[Service]\nStandardOutput=\n[Install]\nStandardOutput=append:/x\n".to_owned();
        assert!(output_files("a.service", None, &[fragment, reset]).is_err());
        let unknown = "[Service]\nStandardOutput=append:%t/a.log\n".to_owned();
        let e = output_files("a.service", None, &[unknown]).unwrap_err();
        assert!(e.contains("%t"), "{e}");
    }

    #[test]
    fn names_map_to_services_and_no_name_to_unitlet_itself() {
        assert_eq!(unit_of(None), "unitlet.service");
        assert_eq!(unit_of(Some("prometheus")), "prometheus.service");
        assert_eq!(
            unit_of(Some("prometheus-tsdb.timer")),
            "prometheus-tsdb.timer"
        );
        // Status messages point here, by the name `logs` takes.
        assert_eq!(
            crate::status::see_logs("prometheus-tsdb.timer"),
            "see `unitlet logs prometheus-tsdb`"
        );
        assert_eq!(
            crate::status::see_logs("prometheus.service"),
            "see `unitlet logs prometheus`"
        );
    }
}
