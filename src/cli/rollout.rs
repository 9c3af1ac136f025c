//! `unitlet rollout history|undo NAME`: flags, output and exit codes (the
//! codes through [`CliError`]); the history and its decisions are
//! `rollout::history`'s and `rollout::policy`'s.

use std::path::PathBuf;
use std::time::Duration;

use super::{CliError, CliResult};
use crate::locations::Locations;
use crate::reconcile::{PassReport, Reconciler};
use crate::render::Role;
use crate::rollout::history::{self, History, PinCause, short};
use crate::rollout::policy::Undone;
use crate::status::{EventType, Status};
use crate::systemd::Systemd;

/// `-o` of `rollout history`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `REVISION HASH APPLIED OUTCOME REASON` lines.
    Table,
    /// The history file's JSON.
    Json,
}

/// `unitlet rollout …`.
#[derive(clap::Subcommand, Debug)]
pub enum RolloutCommand {
    /// Revisions of Service NAME: number, hash, when, outcome.
    History {
        /// The Service.
        name: String,
        /// `table` or `json`.
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: Format,
    },
    /// Put an earlier revision of Service NAME back and keep it until the
    /// manifest changes.
    Undo {
        /// The Service.
        name: String,
        /// The revision to go back to (default: the one before the
        /// revision in force).
        #[arg(long = "to-revision", value_name = "N")]
        to_revision: Option<u32>,
        /// How long to wait for the restart.
        #[arg(long, default_value = "90s", value_parser = crate::manifest::parse_duration)]
        timeout: Duration,
    },
}

/// Run `unitlet rollout …`.
///
/// # Errors
/// See docs/commands.md: NAME not a Service, nothing to undo or a failed
/// restart ([`CliError::exit_code`] 1); no bus, the state lock, an
/// unusable history or a failed pass (2).
pub async fn command(loc: &Locations, cmd: RolloutCommand) -> CliResult {
    match cmd {
        RolloutCommand::History { name, output } => {
            let h = history::load(&loc.state_dir, &name)?;
            if h.revisions.is_empty() {
                is_service(loc, &name)?;
            }
            match output {
                Format::Table => print!("{}", history_table(&h)),
                Format::Json => println!("{}", String::from_utf8_lossy(&history::to_bytes(&h))),
            }
            Ok(())
        }
        RolloutCommand::Undo {
            name,
            to_revision,
            timeout,
        } => undo(loc, &name, to_revision, timeout).await,
    }
}

/// The table `rollout history` prints. Pure.
pub fn history_table(h: &History) -> String {
    let mut out = format!(
        "{:<9}{:<14}{:<22}{:<13}{}\n",
        "REVISION", "HASH", "APPLIED", "OUTCOME", "REASON"
    );
    let in_force = h.in_force().map(|r| r.revision);
    for r in &h.revisions {
        let mark = if Some(r.revision) == in_force {
            "*"
        } else {
            ""
        };
        out.push_str(&format!(
            "{:<9}{:<14}{:<22}{:<13}{}\n",
            format!("{}{mark}", r.revision),
            short(&r.hash),
            r.applied_at,
            r.state.to_string(),
            r.reason
        ));
    }
    if let Some(p) = &h.pin {
        out.push_str(&format!(
            "* in force: revision {} ({}), until the manifest changes\n",
            p.revision,
            match p.cause {
                PinCause::RolledBack => "rolled back",
                PinCause::Undo => "rollout undo",
            }
        ));
    } else if in_force.is_some() {
        out.push_str("* in force: the manifest's revision\n");
    }
    out
}

/// NAME is a Service (or a manifest that does not load now, which may
/// be one).
fn is_service(loc: &Locations, name: &str) -> CliResult {
    let l = crate::manifest::load_dir(&loc.manifests)?;
    let why = match l.get(name) {
        Some(m) if m.as_service().is_some() => return Ok(()),
        None if l.held.contains_key(name) => return Ok(()),
        Some(_) => format!("{name} is a Backup; only Services have revisions"),
        None => format!(
            "no Service manifest named {name} in {}",
            loc.manifests.display()
        ),
    };
    Err(CliError::NotAService(why))
}

/// One pass of `rollout undo`, under the state lock the caller holds: fold
/// in `outcomes`, plan, act, add `event`, save the status.
async fn undo_pass(
    loc: &Locations,
    sd: &Systemd,
    rec: &mut Reconciler,
    outcomes: Vec<crate::work::Outcome>,
    event: Option<(&str, String)>,
) -> Result<PassReport, String> {
    let mut status = Status::load_for_update_async(&loc.status_file()).await;
    for o in outcomes {
        rec.finish(o, &mut status);
    }
    let result = async {
        let prep = rec.prepare(sd, &status).await?;
        rec.apply(sd, prep, &mut status).await
    }
    .await;
    if let Some((name, msg)) = event {
        status.event(
            name,
            EventType::Normal,
            crate::status::EventReason::RolloutUndone,
            msg,
        );
    }
    status.stamp("unitlet rollout undo");
    let saved = status.save_async(&loc.status_file()).await;
    let report = result.map_err(|e| crate::error_chain(&e))?;
    saved.map_err(|e| crate::error_chain(&e))?;
    Ok(report)
}

/// What Service `name`'s manifest renders to now (its main unit), if it
/// loads: the manifest a pin made by `rollout undo` is for.
fn manifest_unit(
    loc: &Locations,
    ctx: &crate::render::RenderContext,
    name: &str,
) -> Option<String> {
    let loaded = crate::manifest::load_dir(&loc.manifests).ok()?;
    let unit = format!("{name}.service");
    crate::render::render(loaded.get(name)?, ctx)
        .into_iter()
        .find(|d| d.name == unit && matches!(d.role, Role::Main { .. }))
        .map(|d| d.content)
}

/// `(revision, event, what to print)` for what `rollout undo` did. Pure.
fn undo_messages(name: &str, u: Undone) -> (u32, String, String) {
    match u {
        Undone::Pinned(t) => (
            t,
            format!(
                "revision {t} put back by `unitlet rollout undo`; it stays until the manifest changes"
            ),
            format!("{name}: revision {t} is in force until the manifest changes"),
        ),
        Undone::ToManifest(t) => (
            t,
            format!(
                "revision {t}, the manifest's own unit, put back by `unitlet rollout undo`: nothing is pinned"
            ),
            format!(
                "{name}: revision {t} is the manifest's own: nothing is pinned, the manifest's revision is in force"
            ),
        ),
    }
}

const ANNOUNCE: &str = "unitlet rollout undo";

/// `unitlet rollout undo NAME`: pin the revision, then one pass puts it
/// in place and what it handed out is waited for.
async fn undo(loc: &Locations, name: &str, to: Option<u32>, timeout: Duration) -> CliResult {
    is_service(loc, name)?;
    let sd = Systemd::connect(loc.bus.as_deref()).await?;
    let lock = super::state_lock(&loc.state_dir, ANNOUNCE).await?;
    let mut h = history::load(&loc.state_dir, name)?;
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("unitlet"));
    let mut rec = Reconciler::new(loc.clone(), exe);
    rec.set_job_timeout(timeout);
    rec.set_start_wait(timeout);
    let manifest = manifest_unit(loc, rec.render_context(), name);
    let (target, event, done) = match h.undo(to, manifest.as_deref()) {
        Ok(u) => undo_messages(name, u),
        Err(why) => {
            let name = name.to_owned();
            return Err(CliError::Undo { name, why });
        }
    };
    history::save(&loc.state_dir, name, &h)?;
    // One pass puts it in place (a pin makes the plan write and restart it).
    let report = undo_pass(loc, &sd, &mut rec, Vec::new(), Some((name, event))).await;
    drop(lock);
    let report = wait_handed_out(loc, &sd, &mut rec, name, timeout, report).await?;
    let (name, revision) = (name.to_owned(), target);
    match report {
        Ok(r) => match r.failures.get(&name) {
            Some(e) => Err(CliError::UndoApplyFailed {
                name,
                revision,
                why: e.clone(),
            }),
            None => {
                println!("{done}");
                Ok(())
            }
        },
        Err(why) => Err(CliError::UndoPassFailed {
            name,
            revision,
            why,
        }),
    }
}

/// What the undo's pass handed out (the readiness wait after the restart,
/// the watch that expires a silence) is waited for outside the lock, and
/// folded in by one more pass: the Service ends Ready or not, never
/// Starting.
async fn wait_handed_out(
    loc: &Locations,
    sd: &Systemd,
    rec: &mut Reconciler,
    name: &str,
    timeout: Duration,
    mut report: Result<PassReport, String>,
) -> Result<Result<PassReport, String>, CliError> {
    let Ok(r) = &mut report else {
        return Ok(report);
    };
    if r.failures.contains_key(name) || r.work.is_empty() {
        return Ok(report);
    }
    let http = rec.http_client();
    let work = std::mem::take(&mut r.work)
        .into_iter()
        .map(|w| w.run(sd.clone(), http.clone(), timeout));
    let outcomes = futures_util::future::join_all(work).await;
    let _lock = super::state_lock(&loc.state_dir, ANNOUNCE).await?;
    Ok(undo_pass(loc, sd, rec, outcomes, None).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2026-11-28T08:00:00Z";

    #[test]
    fn the_history_table_marks_the_revision_in_force_and_why() {
        let mut h = History::default();
        h.record("good", None, NOW);
        h.finish(1, Ok(()), true, NOW);
        h.record("bad", Some("good"), NOW);
        h.finish(2, Err("it failed".into()), true, NOW);
        let t = history_table(&h);
        assert!(t.lines().nth(1).unwrap().starts_with("1*"), "{t}");
        assert!(t.lines().nth(2).unwrap().contains("Failed"), "{t}");
        assert!(t.ends_with("* in force: revision 1 (rolled back), until the manifest changes\n"));
        h.record("fixed", Some("good"), NOW);
        let t = history_table(&h);
        assert!(t.lines().nth(3).unwrap().starts_with("3*"), "{t}");
        assert!(t.ends_with("* in force: the manifest's revision\n"), "{t}");
    }
}
