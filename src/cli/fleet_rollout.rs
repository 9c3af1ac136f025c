//! `unitlet fleet rollout DIR|status|history|resume|undo`: flags, progress
//! (a bar on a terminal, one line per event otherwise), printing and exit
//! status around [`crate::fleet::rollout::drive`].

use std::io::{IsTerminal, Write};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::error::{CliError, CliResult};
use super::output::write_structured;
use super::{FleetRolloutArgs, FleetRolloutCommand, Output};
use crate::fleet::EtcdArgs;
use crate::fleet::cmd::PushError;
use crate::fleet::rollout::drive::{self, Event, Outcome, Progress, Start};
use crate::fleet::rollout::record::{
    self, LockInfo, Record, RolloutError, RolloutOptions, RolloutTarget,
};
use crate::table::print_table;

/// `unitlet fleet rollout …`.
pub(super) async fn command(
    etcd: &EtcdArgs,
    command: Option<FleetRolloutCommand>,
    args: FleetRolloutArgs,
) -> CliResult {
    let mut printer = Printer::new(std::io::stdout().is_terminal());
    // SIGTERM or Ctrl-C: stop, give the lock back at once, stay resumable.
    let stop = super::shutdown_signal;
    let outcome = match command {
        None => interruptible(etcd, stop(), start(etcd, args, &mut printer)).await?,
        Some(FleetRolloutCommand::Resume) => {
            let run = async { Ok(drive::resume(etcd, &mut printer).await?) };
            interruptible(etcd, stop(), run).await?
        }
        Some(FleetRolloutCommand::Undo) => {
            let run = async { Ok(drive::undo(etcd, &mut printer).await?) };
            interruptible(etcd, stop(), run).await?
        }
        Some(FleetRolloutCommand::Status { output }) => {
            let (record, lock) = drive::latest(etcd).await?;
            return print_status(record.as_ref(), lock.as_ref(), output);
        }
        Some(FleetRolloutCommand::History) => {
            print_history(&drive::history(etcd).await?);
            return Ok(());
        }
    };
    printer.done();
    match outcome {
        Outcome::Nothing => {
            println!("nothing to roll out: the targeted hosts run these files already");
            Ok(())
        }
        Outcome::Complete { .. } => Ok(()),
        Outcome::Undone { revision } => {
            println!("rollout {revision} undone");
            Ok(())
        }
        Outcome::Halted {
            revision,
            halt,
            undone,
        } => {
            eprintln!(
                "error: rollout {revision} halted at host {}: object {}: {}: {}; {}",
                halt.host,
                halt.object,
                halt.reason,
                halt.message,
                if undone {
                    "the hosts it changed were put back"
                } else {
                    "the hosts it changed keep the new files (`unitlet fleet rollout undo` puts them back)"
                }
            );
            Err(CliError::Unsuccessful)
        }
    }
}

/// Run `work` until `stop` (a signal): then it is dropped where it is
/// (the record says where: resumable, as after a kill) and the lock this
/// process holds is given back at once.
async fn interruptible(
    etcd: &EtcdArgs,
    stop: impl std::future::Future<Output = ()>,
    work: impl std::future::Future<Output = Result<Outcome, CliError>>,
) -> Result<Outcome, CliError> {
    tokio::select! {
        r = work => return r,
        () = stop => {}
    }
    let released = match etcd.connect().await {
        Ok(mut client) => record::release_own(&mut client, etcd)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let lock = match released {
        Ok(true) => "its lock was given back".to_string(),
        Ok(false) => "it held no lock".to_string(),
        Err(e) => format!("its lock goes when its lease expires ({e})"),
    };
    Err(CliError::FleetRollout(RolloutError::Conflict(format!(
        "interrupted (SIGTERM or SIGINT): {lock}"
    ))))
}

/// `fleet rollout DIR`: validate DIR, then roll it out.
async fn start(
    etcd: &EtcdArgs,
    args: FleetRolloutArgs,
    printer: &mut Printer,
) -> Result<Outcome, CliError> {
    let Some(dir) = args.dir else {
        return Err(CliError::Fleet(crate::fleet::FleetError::Usage(
            "fleet rollout needs DIR, or one of status, history, resume, undo".into(),
        )));
    };
    let files = match crate::fleet::cmd::rollout_files(&dir) {
        Ok(f) => f,
        Err(e) => {
            if let PushError::Invalid { errors, .. } = &e {
                for e in errors {
                    eprintln!("invalid: {e}");
                }
            }
            return Err(CliError::Push(e));
        }
    };
    // The canonical form (sorted pairs), so a rerun with the pairs in
    // another order is the same rollout.
    let selector = match &args.selector {
        Some(s) => Some(crate::fleet::parse_selector(s)?.to_string()),
        None => None,
    };
    let abs = std::path::absolute(&dir).unwrap_or(dir);
    let start = Start {
        files,
        dir: abs.display().to_string(),
        target: RolloutTarget {
            all: selector.is_none(),
            selector,
        },
        options: RolloutOptions {
            canary: args.canary,
            wave_percent: args.wave,
            stable: args.stable,
            progress_deadline: args.progress_deadline,
            no_undo: args.no_undo,
        },
    };
    Ok(drive::rollout(etcd, start, printer).await?)
}

/// Shows [`Event`]s: a bar per wave on a terminal, else one line each.
struct Printer {
    tty: bool,
    bar: Option<ProgressBar>,
}

fn wave_name(wave: usize, waves: usize) -> String {
    let canary = if wave == 0 { " (canary)" } else { "" };
    format!("wave {}/{waves}{canary}", wave + 1)
}

impl Printer {
    fn new(tty: bool) -> Printer {
        Printer { tty, bar: None }
    }

    /// A line, above the bar when there is one.
    fn line(&self, s: String) {
        match &self.bar {
            Some(b) => b.println(s),
            None => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{s}");
                let _ = out.flush();
            }
        }
    }

    fn done(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }

    fn wave_bar(&mut self, name: &str, hosts: usize) {
        self.done();
        if !self.tty {
            return;
        }
        let b = ProgressBar::with_draw_target(Some(hosts as u64), ProgressDrawTarget::stdout());
        if let Ok(style) =
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} hosts ready {elapsed}")
        {
            b.set_style(style.progress_chars("=> "));
        }
        b.set_message(name.to_string());
        b.enable_steady_tick(std::time::Duration::from_millis(200));
        self.bar = Some(b);
    }
}

impl Progress for Printer {
    fn event(&mut self, e: Event) {
        match e {
            Event::Start {
                revision,
                files,
                hosts,
                waves,
                resumed_at,
            } => self.line(match resumed_at {
                Some(w) => format!(
                    "resuming rollout {revision} at wave {}/{waves}: {files} file(s) to {hosts} host(s)",
                    w + 1
                ),
                None => format!(
                    "rollout {revision}: {files} file(s) to {hosts} host(s) in {waves} wave(s)"
                ),
            }),
            Event::WaveWritten {
                wave,
                waves,
                hosts,
                skipped,
            } => {
                let name = wave_name(wave, waves);
                let gone = if skipped.is_empty() {
                    String::new()
                } else {
                    format!("; skipped, gone: {}", few(&skipped))
                };
                self.line(format!("{name}: written to {}{gone}", few(&hosts)));
                self.wave_bar(&name, hosts.len());
            }
            Event::HostReady {
                wave,
                waves,
                host,
                ready,
                of,
            } => {
                let name = wave_name(wave, waves);
                match &self.bar {
                    Some(b) => b.inc(1),
                    None => self.line(format!("{name}: {host} ready")),
                }
                if ready == of {
                    self.done();
                    self.line(format!("{name}: {ready}/{of} hosts ready"));
                }
            }
            Event::Halted(h) => {
                self.done();
                self.line(format!(
                    "halted: host {}, object {}: {}: {}",
                    h.host, h.object, h.reason, h.message
                ));
            }
            Event::Undone { keys, skipped } => {
                let left = if skipped.is_empty() {
                    String::new()
                } else {
                    format!("; left alone (changed by someone else): {}", skipped.join(", "))
                };
                self.line(format!("put back {keys} host key(s){left}"));
            }
            Event::Finished { revision, removed } => {
                self.done();
                self.line(format!(
                    "rollout {revision} complete: {removed} wave key(s) removed"
                ));
            }
        }
    }
}

fn changed(r: &Record) -> String {
    let mut v: Vec<String> = r.puts.keys().cloned().collect();
    v.extend(r.deletes.iter().map(|d| format!("-{d}")));
    v.join(",")
}

/// `fleet rollout status`.
fn print_status(r: Option<&Record>, lock: Option<&LockInfo>, output: Output) -> CliResult {
    let Some(r) = r else {
        println!("no rollout yet");
        return Ok(());
    };
    let mut out = std::io::stdout().lock();
    match output {
        Output::Json | Output::Yaml => write_structured(&mut out, r, output),
        Output::Table | Output::Wide => {
            let _ = writeln!(
                out,
                "rollout {}: {} at wave {}/{}, target {}, started {} by {}",
                r.revision,
                r.phase,
                (r.wave + 1).min(r.waves.len().max(1)),
                r.waves.len(),
                r.target,
                r.started_at,
                r.started_by
            );
            let _ = writeln!(out, "changed: {} (from {})", changed(r), r.dir);
            match lock {
                Some(l) => {
                    let _ = writeln!(
                        out,
                        "locked: {} (the lock of a command that stopped goes within 10 s)",
                        l.describe()
                    );
                }
                None if !r.phase.is_terminal() => {
                    let _ = writeln!(
                        out,
                        "stopped: `unitlet fleet rollout resume` continues it, `unitlet fleet rollout undo` puts its hosts back"
                    );
                }
                None => {}
            }
            if let Some(h) = &r.halt {
                let _ = writeln!(
                    out,
                    "halted: host {}, object {}: {}: {}",
                    h.host, h.object, h.reason, h.message
                );
            }
            print_table(
                &mut out,
                &["HOST", "WAVE", "STATE", "OBJECT", "MESSAGE"],
                &verdict_rows(r),
            );
        }
    }
    Ok(())
}

/// One row per host of `r`, wave by wave.
fn verdict_rows(r: &Record) -> Vec<Vec<String>> {
    r.waves
        .iter()
        .enumerate()
        .flat_map(|(i, hs)| hs.iter().map(move |h| (i, h)))
        .map(|(i, h)| {
            let v = r.verdicts.get(h);
            vec![
                h.clone(),
                (i + 1).to_string(),
                v.map(|v| v.state.to_string())
                    .unwrap_or_else(|| "Pending".into()),
                v.map(|v| v.object.clone())
                    .filter(|o| !o.is_empty())
                    .unwrap_or_else(|| "-".into()),
                v.map(|v| v.message.clone()).unwrap_or_default(),
            ]
        })
        .collect()
}

/// `fleet rollout history`.
fn print_history(records: &[Record]) {
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            vec![
                r.revision.to_string(),
                r.phase.to_string(),
                r.target.to_string(),
                changed(r),
                r.started_at.clone(),
                r.started_by.clone(),
            ]
        })
        .collect();
    print_table(
        &mut std::io::stdout().lock(),
        &["REVISION", "PHASE", "TARGET", "CHANGED", "STARTED", "BY"],
        &rows,
    );
}

/// Host names for a line: all of them up to ten, else how many and the
/// first and last (a wave of a large fleet is hundreds of hosts).
fn few(hosts: &[String]) -> String {
    match hosts {
        [first, .., last] if hosts.len() > 10 => {
            format!("{} hosts ({first} … {last})", hosts.len())
        }
        _ => hosts.join(", "),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Cli, parse_duration_or_zero, parse_wave_percent};
    use clap::Parser;

    #[test]
    fn a_large_wave_is_named_by_its_count_and_ends() {
        let hosts: Vec<String> = (1..=250).map(|i| format!("h{i:03}")).collect();
        assert_eq!(super::few(&hosts), "250 hosts (h001 … h250)");
        assert_eq!(super::few(&hosts[..3]), "h001, h002, h003");
        assert_eq!(super::few(&hosts[..10]).matches(", ").count(), 9);
    }

    #[test]
    fn wave_shares_are_1_to_100_percent_and_stable_may_be_zero() {
        assert_eq!(parse_wave_percent("25%"), Ok(25));
        assert_eq!(parse_wave_percent("100"), Ok(100));
        for bad in ["0%", "101%", "x", ""] {
            assert!(parse_wave_percent(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_duration_or_zero("0"), Ok(std::time::Duration::ZERO));
        assert_eq!(
            parse_duration_or_zero("2s"),
            Ok(std::time::Duration::from_secs(2))
        );
    }

    #[test]
    fn a_rollout_needs_dir_and_all_or_a_selector_and_its_subcommands_need_neither() {
        let parse =
            |a: &[&str]| Cli::try_parse_from([&["unitlet", "fleet", "rollout"], a].concat());
        assert!(parse(&["d"]).is_err(), "--all or --selector");
        assert!(parse(&["d", "--all", "--selector", "a=b"]).is_err());
        assert!(parse(&["--all"]).is_err(), "DIR");
        assert!(parse(&["d", "--all"]).is_ok());
        assert!(
            parse(&[
                "d",
                "--selector",
                "gpu=h100",
                "--canary",
                "2",
                "--wave",
                "50%"
            ])
            .is_ok()
        );
        for sub in [
            &["status", "-o", "json"][..],
            &["history"],
            &["resume"],
            &["undo"],
        ] {
            assert!(parse(sub).is_ok(), "{sub:?}");
        }
    }
}
