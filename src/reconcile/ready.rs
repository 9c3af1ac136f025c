//! The Ready condition, decided in exactly one place: [`decide`].
//!
//! Every other module supplies an input ([`Inputs`]: the unit's live
//! state, readiness, the rollout verdict, the restore journal or hold,
//! backoff, start failures, the manifest's own state) and none writes the
//! condition: a pass decides afresh from everything it knows
//! ([`Live::Now`]); a start failure folded in between passes decides from
//! that failure alone; `get` and `describe` correct the last pass's
//! decision with what they see live ([`Live::SinceLastPass`],
//! [`Live::Unreachable`]). [`Decision::apply`] writes the result.
//!
//! Precedence, first that applies: a restore (in progress or interrupted),
//! an invalid manifest, a conflict, backoff, a missing program, a failed
//! apply or start, not applied yet, then the live state (with readiness,
//! config issues, a Backup's last run); a rollout pin then says which
//! revision runs.

use std::time::Duration;

use crate::backup::LastRun;
use crate::manifest::DesiredState;
use crate::rollout::policy::RolloutVerdict;
use crate::schedule::Schedule;
use crate::status::ConditionStatus::{False, True, Unknown};
use crate::status::{Condition, ConditionStatus, ConditionType, ObjectStatus, Reason, see_logs};

/// Ready as decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// True, False or Unknown.
    pub status: ConditionStatus,
    /// One word a script can match.
    pub reason: Reason,
    /// For people: what, why, what to do.
    pub message: String,
    /// The transition time to show instead of the status change's (a
    /// rollback's: when it was made), so it does not move on every pass.
    pub since: Option<String>,
}

impl Decision {
    fn new(status: ConditionStatus, reason: Reason, message: impl Into<String>) -> Decision {
        Decision {
            status,
            reason,
            message: message.into(),
            since: None,
        }
    }

    /// Write it as the object's Ready condition: the one writer.
    pub fn apply(self, obj: &mut ObjectStatus) {
        obj.set_ready(self.status, self.reason, &self.message);
        if let Some(since) = self.since.filter(|s| !s.is_empty())
            && let Some(c) = obj
                .conditions
                .iter_mut()
                .find(|c| c.type_ == ConditionType::Ready)
        {
            c.last_transition_time = since;
        }
    }
}

/// How the object's main unit was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Live<'a> {
    /// Listed by the pass deciding: its state decides.
    Now {
        /// `ActiveState`.
        active: &'a str,
        /// `SubState`.
        sub: &'a str,
    },
    /// Listed after the last pass decided (`get`): it corrects a Ready
    /// True it contradicts, nothing else.
    SinceLastPass {
        /// `ActiveState`.
        active: &'a str,
        /// `SubState`.
        sub: &'a str,
    },
    /// The manager could not be asked (`get`): why. A Ready True cannot
    /// be vouched for.
    Unreachable(&'a str),
    /// Not looked at: the last decision stands unless another input says
    /// otherwise.
    Unseen,
}

/// What is known of a Service's readiness URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness<'a> {
    /// It has none.
    None,
    /// Started, its readiness URL waited for at most this long more.
    Waiting(Duration),
    /// Not probed yet (the operator just started).
    NotProbed,
    /// What the last probe found.
    Probed(Result<(), &'a str>),
}

/// A scheduled Backup's last run, as `unitlet backup` recorded it.
#[derive(Debug, Clone, Copy)]
pub struct BackupRun<'a> {
    /// Its schedule, for messages.
    pub schedule: &'a Schedule,
    /// The record, if it ever ran.
    pub last: Option<&'a LastRun>,
}

/// Everything Ready is decided from, for one object. Build it with
/// [`Inputs::new`] and set what is known.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    /// The object (manifest) name.
    pub name: &'a str,
    /// Its main unit: a Service's service, a Backup's timer.
    pub unit: &'a str,
    /// The state the manifest declares.
    pub declared: DesiredState,
    /// The Ready condition it has (the last decision).
    pub previous: Option<&'a Condition>,
    /// How the main unit was seen.
    pub live: Live<'a>,
    /// A restore holds it (`OnHold`) or is interrupted
    /// (`RestoreInterrupted`): reason and message, from the hold or the
    /// restore journal.
    pub restore: Option<(Reason, &'a str)>,
    /// The manifest does not load: why.
    pub invalid: Option<&'a str>,
    /// A unit of the same name is not unitlet's: why.
    pub conflict: Option<&'a str>,
    /// Backing off after failures; `Some(failure)` with the failed
    /// unit's `(reason, message)` when it has failed.
    pub backing_off: Option<Option<(Reason, &'a str)>>,
    /// The program is not installed: what to do.
    pub program_missing: Option<&'a str>,
    /// Applying failed, in this pass or in a start job it handed out.
    pub apply_failed: Option<&'a str>,
    /// No pass has seen the manifest yet (`get`).
    pub not_applied: bool,
    /// Its readiness URL.
    pub readiness: Readiness<'a>,
    /// A config change refused or failing, or a failed readiness wait.
    pub config_issue: Option<(Reason, &'a str)>,
    /// A Backup's schedule and last run (`None` for a Service).
    pub backup: Option<BackupRun<'a>>,
    /// A pinned revision runs (rollback, undo).
    pub rollout: Option<&'a RolloutVerdict>,
}

impl<'a> Inputs<'a> {
    /// Nothing known but the object and what its manifest declares.
    pub fn new(name: &'a str, unit: &'a str, declared: DesiredState) -> Inputs<'a> {
        Inputs {
            name,
            unit,
            declared,
            previous: None,
            live: Live::Unseen,
            restore: None,
            invalid: None,
            conflict: None,
            backing_off: None,
            program_missing: None,
            apply_failed: None,
            not_applied: false,
            readiness: Readiness::None,
            config_issue: None,
            backup: None,
            rollout: None,
        }
    }

    fn active(&self) -> bool {
        matches!(
            self.live,
            Live::Now {
                active: "active",
                ..
            } | Live::SinceLastPass {
                active: "active",
                ..
            }
        )
    }
}

/// Decide Ready. `None`: the condition it has stands.
pub fn decide(i: &Inputs<'_>) -> Option<Decision> {
    let base = held(i).unwrap_or_else(|| seen(i));
    match i.rollout {
        Some(v) => pinned(i, v, base.as_ref()).or(base),
        None => base,
    }
}

/// What keeps the object from being reconciled as declared, or failed
/// applying it: `Some(decision)` when one of those inputs decides (a
/// decision of `None`: the condition it has stands), `None` when none
/// applies.
fn held(i: &Inputs<'_>) -> Option<Option<Decision>> {
    if let Some((reason, msg)) = i.restore {
        return Some(Some(Decision::new(False, reason, msg)));
    }
    if let Some(msg) = i.invalid {
        let kept = if i.active() {
            " (its last good units keep running)"
        } else {
            ""
        };
        return Some(Some(Decision::new(
            False,
            Reason::Invalid,
            format!("{msg}{kept}"),
        )));
    }
    if let Some(msg) = i.conflict {
        return Some(Some(Decision::new(False, Reason::Conflict, msg)));
    }
    if let Some(failure) = i.backing_off {
        return Some(backing_off(i, failure));
    }
    if let Some(msg) = i.program_missing {
        return Some(Some(Decision::new(False, Reason::BinaryMissing, msg)));
    }
    if let Some(e) = i.apply_failed {
        return Some(Some(Decision::new(False, Reason::ApplyFailed, e)));
    }
    None
}

/// Backing off: why its unit failed, or that it is retried after what
/// went wrong before.
fn backing_off(i: &Inputs<'_>, failure: Option<(Reason, &str)>) -> Option<Decision> {
    if let Some((reason, msg)) = failure {
        let msg = format!("{msg}; unitlet starts it again with exponential backoff");
        return Some(Decision::new(False, reason, msg));
    }
    if let Some(e) = i.apply_failed {
        return Some(Decision::new(False, Reason::ApplyFailed, e));
    }
    let prev = i.previous;
    if prev.is_some_and(|c| c.reason == Reason::BackingOff || c.status == False) {
        return None;
    }
    let prev = prev.map(|c| c.message.as_str()).unwrap_or_default();
    let msg = format!("retrying with exponential backoff after: {prev}");
    Some(Decision::new(False, Reason::BackingOff, msg))
}

/// Ready from what was seen of the unit.
fn seen(i: &Inputs<'_>) -> Option<Decision> {
    if i.not_applied && i.previous.is_none() {
        return Some(Decision::new(
            Unknown,
            Reason::NotApplied,
            "not applied yet; run `unitlet apply` or start `unitlet run`",
        ));
    }
    match i.live {
        Live::Now { active, sub } => Some(state(i, active, sub)?),
        Live::SinceLastPass { active, sub } => corrected(i, active, sub),
        Live::Unreachable(why) => {
            i.previous.filter(|c| c.status == True)?;
            Some(Decision::new(
                Unknown,
                Reason::ManagerUnreachable,
                format!(
                    "cannot check {} live ({why}); the last reconcile found it ready",
                    i.unit
                ),
            ))
        }
        Live::Unseen => None,
    }
}

/// Ready from the unit's live state against the declared one.
fn state(i: &Inputs<'_>, active: &str, sub: &str) -> Option<Decision> {
    let unit = i.unit;
    Some(match (i.declared, active) {
        (DesiredState::Running, "active") => return running(i, sub),
        (DesiredState::Stopped, "inactive" | "failed") => Decision::new(
            True,
            Reason::Stopped,
            format!("{unit} is stopped, as declared"),
        ),
        (_, "activating" | "reloading") => Decision::new(
            False,
            Reason::Starting,
            format!("{unit} is {active} ({sub})"),
        ),
        (_, "failed") => Decision::new(
            False,
            Reason::Failed,
            format!("{unit} failed ({sub}); {}", see_logs(unit)),
        ),
        (_, s) => Decision::new(
            False,
            Reason::NotRunning,
            format!(
                "{unit} is {} ({sub}) but the manifest wants it {}",
                if s.is_empty() { "unknown" } else { s },
                match i.declared {
                    DesiredState::Running => "running",
                    DesiredState::Stopped => "stopped",
                }
            ),
        ),
    })
}

/// Ready of an active unit that should run: its readiness URL, config
/// issues, a Backup's last run, or Running.
fn running(i: &Inputs<'_>, sub: &str) -> Option<Decision> {
    let unit = i.unit;
    let probe = match i.readiness {
        Readiness::Probed(Err(e)) => Some(e),
        _ => None,
    };
    match i.readiness {
        Readiness::Waiting(left) => {
            let msg = format!(
                "{unit} is active, waiting for its readiness URL (up to {}s more)",
                left.as_secs()
            );
            return Some(Decision::new(False, Reason::Starting, msg));
        }
        Readiness::NotProbed if i.config_issue.is_none() => {
            // Not probed yet (the operator just started): keep what the
            // last probe said, if a probe said it.
            let previous = i.previous.map(|c| c.reason);
            let probed = matches!(previous, Some(Reason::Running | Reason::NotReady));
            let msg = format!("{unit} is active; probing its readiness URL");
            return (!probed).then(|| Decision::new(Unknown, Reason::Probing, msg));
        }
        _ => {}
    }
    if let Some((reason, msg)) = i
        .config_issue
        .filter(|(r, _)| *r != Reason::NotReady || probe.is_some())
    {
        return Some(Decision::new(False, reason, msg));
    }
    if let Some(e) = probe {
        let msg = format!("{unit} is active but not ready: {e}");
        return Some(Decision::new(False, Reason::NotReady, msg));
    }
    if let Some(b) = &i.backup {
        return Some(backup(i.name, unit, b));
    }
    let msg = format!("{unit} is active ({sub})");
    Some(Decision::new(True, Reason::Running, msg))
}

/// A scheduled Backup's Ready: its last run's result. The failure message
/// names the run's time, so each failed run changes it (and makes one
/// event).
fn backup(name: &str, unit: &str, b: &BackupRun<'_>) -> Decision {
    let scheduled = format!("{unit} is scheduled ({})", b.schedule);
    let at = |t: u64| {
        humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(t))
            .to_string()
    };
    let Some(run) = b.last else {
        return Decision::new(True, Reason::Running, format!("{scheduled}; no run yet"));
    };
    match (&run.last_error, run.last_success) {
        (Some(e), _) => Decision::new(
            False,
            Reason::BackupFailed,
            format!(
                "the run at {} failed: {e}; {scheduled}, or run `unitlet backup {name}` after fixing it",
                at(run.last_attempt)
            ),
        ),
        (None, Some(t)) => Decision::new(
            True,
            Reason::Running,
            format!(
                "{scheduled}; last success {}{}",
                at(t),
                run.last_set
                    .as_ref()
                    .map(|s| format!(", set {s}"))
                    .unwrap_or_default()
            ),
        ),
        (None, None) => Decision::new(True, Reason::Running, format!("{scheduled}; no run yet")),
    }
}

/// `get`: the last pass's Ready True, corrected when the unit's state now
/// contradicts it.
fn corrected(i: &Inputs<'_>, active: &str, sub: &str) -> Option<Decision> {
    let c = i.previous.filter(|c| c.status == True)?;
    let stopped = c.reason == Reason::Stopped;
    let fine = match active {
        "inactive" | "failed" => stopped,
        "active" => !stopped,
        _ => false,
    };
    if fine {
        return None;
    }
    let (reason, what) = match (active, sub) {
        (_, "auto-restart") => (
            Reason::Restarting,
            "is waiting to be restarted by systemd after it exited",
        ),
        ("failed", _) => (Reason::Failed, "has failed"),
        ("activating" | "reloading", _) => (Reason::Starting, "is starting"),
        ("active", _) => (
            Reason::NotReconciled,
            "is running but the manifest wants it stopped",
        ),
        _ => (Reason::NotRunning, "is not running"),
    };
    let unit = i.unit;
    let msg = format!(
        "{unit} {what} ({active}/{sub}) since the last reconcile; {}",
        see_logs(unit)
    );
    Some(Decision::new(False, reason, msg))
}

/// While a pin holds, Ready says so: `False RolledBack` (naming the failed
/// revision, why, and what runs instead) whenever the unit runs, whatever
/// the manifest's own revision would be reported as; `True Pinned` when
/// it is Ready. `base`: what was decided without the pin.
fn pinned(i: &Inputs<'_>, v: &RolloutVerdict, base: Option<&Decision>) -> Option<Decision> {
    let ready = base.map_or_else(
        || i.previous.map(|c| (c.status, c.message.clone())),
        |d| Some((d.status, d.message.clone())),
    );
    let running = match (ready, &v) {
        (Some((True, msg)), _) => msg,
        (_, RolloutVerdict::RolledBack { .. }) if i.active() => {
            let sub = match i.live {
                Live::Now { sub, .. } | Live::SinceLastPass { sub, .. } => sub,
                _ => "",
            };
            format!("{} is active ({sub})", i.unit)
        }
        _ => return None,
    };
    let name = i.name;
    Some(match v {
        RolloutVerdict::RolledBack {
            failed,
            why,
            revision,
            hash,
            since,
        } => Decision {
            since: Some(since.clone()),
            ..Decision::new(
                False,
                Reason::RolledBack,
                format!(
                    "{failed} failed: {why}; rolled back to revision {revision} ({hash}), which runs instead ({running}); it is not retried until the manifest of {name} changes"
                ),
            )
        },
        RolloutVerdict::Pinned { revision, hash } => Decision::new(
            True,
            Reason::Pinned,
            format!(
                "{running}; pinned to revision {revision} ({hash}) by `unitlet rollout undo` until the manifest of {name} changes"
            ),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(status: ConditionStatus, reason: Reason, message: &str) -> Condition {
        Condition {
            type_: ConditionType::Ready,
            status,
            reason,
            message: message.into(),
            last_transition_time: "t".into(),
        }
    }

    fn inputs(active: &'static str, sub: &'static str) -> Inputs<'static> {
        let mut i = Inputs::new("web", "web.service", DesiredState::Running);
        i.live = Live::Now { active, sub };
        i
    }

    fn got(i: &Inputs<'_>) -> (ConditionStatus, Reason, String) {
        let d = decide(i).expect("a decision");
        (d.status, d.reason, d.message)
    }

    #[test]
    fn the_live_state_against_the_declared_one() {
        let (st, r, msg) = got(&inputs("active", "running"));
        assert_eq!((st, r), (True, Reason::Running));
        assert_eq!(msg, "web.service is active (running)");
        assert_eq!(got(&inputs("activating", "start")).1, Reason::Starting);
        let (_, r, msg) = got(&inputs("failed", "failed"));
        assert_eq!(r, Reason::Failed);
        assert!(msg.contains("see `unitlet logs web`"), "{msg}");
        assert_eq!(got(&inputs("inactive", "dead")).1, Reason::NotRunning);
        let mut stopped = inputs("inactive", "dead");
        stopped.declared = DesiredState::Stopped;
        assert_eq!(got(&stopped).0, True);
        assert_eq!(got(&stopped).1, Reason::Stopped);
        // Not looked at: the last decision stands.
        assert_eq!(
            decide(&Inputs::new("web", "web.service", DesiredState::Running)),
            None
        );
    }

    #[test]
    fn readiness_config_issues_and_a_backups_last_run() {
        let mut i = inputs("active", "running");
        i.readiness = Readiness::Waiting(Duration::from_secs(7));
        assert_eq!(got(&i).1, Reason::Starting);
        assert!(got(&i).2.contains("up to 7s more"));
        i.readiness = Readiness::NotProbed;
        assert_eq!(got(&i).1, Reason::Probing);
        let last = cond(True, Reason::Running, "ok");
        i.previous = Some(&last);
        assert_eq!(decide(&i), None, "a probe's last answer stands");
        i.readiness = Readiness::Probed(Err("503"));
        assert_eq!(got(&i).1, Reason::NotReady);
        i.config_issue = Some((Reason::ConfigInvalid, "refused"));
        assert_eq!(got(&i), (False, Reason::ConfigInvalid, "refused".into()));
        i.readiness = Readiness::Probed(Ok(()));
        i.config_issue = Some((Reason::NotReady, "was not ready"));
        assert_eq!(got(&i).1, Reason::Running, "a good probe clears NotReady");
        let schedule = Schedule::parse("every 1h").expect("schedule");
        let run = LastRun {
            last_attempt: 60,
            last_error: Some("disk full".into()),
            ..Default::default()
        };
        let mut b = inputs("active", "waiting");
        b.backup = Some(BackupRun {
            schedule: &schedule,
            last: Some(&run),
        });
        let (st, r, msg) = got(&b);
        assert_eq!((st, r), (False, Reason::BackupFailed));
        assert!(
            msg.contains("1970-01-01T00:01:00Z failed: disk full"),
            "{msg}"
        );
    }

    /// Each input that holds the object back, and which one wins.
    #[test]
    fn precedence_of_the_inputs() {
        let mut i = inputs("failed", "failed");
        i.apply_failed = Some("start job failed");
        assert_eq!(got(&i).1, Reason::ApplyFailed);
        i.program_missing = Some("install it");
        assert_eq!(got(&i).1, Reason::BinaryMissing);
        i.backing_off = Some(Some((Reason::OOMKilled, "killed")));
        let (_, r, msg) = got(&i);
        assert_eq!(r, Reason::OOMKilled);
        assert!(msg.ends_with("unitlet starts it again with exponential backoff"));
        i.conflict = Some("not unitlet's");
        assert_eq!(got(&i).1, Reason::Conflict);
        i.invalid = Some("f.yaml:1:1: bad");
        assert_eq!(got(&i).2, "f.yaml:1:1: bad", "not running: nothing kept");
        i.restore = Some((Reason::RestoreInterrupted, "pending"));
        assert_eq!(
            got(&i),
            (False, Reason::RestoreInterrupted, "pending".into())
        );
        let mut held = inputs("active", "running");
        held.invalid = Some("bad");
        assert_eq!(got(&held).2, "bad (its last good units keep running)");
    }

    #[test]
    fn backing_off_keeps_a_failure_and_says_what_it_retries() {
        let mut i = inputs("inactive", "dead");
        i.backing_off = Some(None);
        let before = cond(True, Reason::Running, "was fine");
        i.previous = Some(&before);
        let (_, r, msg) = got(&i);
        assert_eq!(r, Reason::BackingOff);
        assert_eq!(msg, "retrying with exponential backoff after: was fine");
        let failed = cond(False, Reason::ApplyFailed, "start failed");
        i.previous = Some(&failed);
        assert_eq!(decide(&i), None);
        i.apply_failed = Some("the start job failed");
        assert_eq!(got(&i).1, Reason::ApplyFailed);
    }

    /// `get`: only a Ready True the unit now contradicts is corrected,
    /// and one that cannot be checked is Unknown.
    #[test]
    fn get_corrects_a_stale_ready_true() {
        let ok = cond(True, Reason::Running, "ok");
        let mut i = Inputs::new("web", "web.service", DesiredState::Running);
        i.previous = Some(&ok);
        i.live = Live::SinceLastPass {
            active: "active",
            sub: "running",
        };
        assert_eq!(decide(&i), None);
        i.live = Live::SinceLastPass {
            active: "activating",
            sub: "auto-restart",
        };
        assert_eq!(got(&i).1, Reason::Restarting);
        i.live = Live::Unreachable("no bus");
        assert_eq!(got(&i).0, Unknown);
        assert_eq!(got(&i).1, Reason::ManagerUnreachable);
        let bad = cond(False, Reason::ConfigInvalid, "refused");
        i.previous = Some(&bad);
        assert_eq!(decide(&i), None, "a False stands");
        let mut new = Inputs::new("web", "", DesiredState::Running);
        new.not_applied = true;
        assert_eq!(got(&new).1, Reason::NotApplied);
    }

    #[test]
    fn a_pin_says_which_revision_runs() {
        let rolled_back = RolloutVerdict::RolledBack {
            failed: "revision 2 (abc)".into(),
            why: "it failed".into(),
            revision: 1,
            hash: "def".into(),
            since: "2026-11-28T08:00:00Z".into(),
        };
        // Whatever the manifest's own revision would say, a running
        // rollback is RolledBack, with the rollback's time.
        let mut i = inputs("active", "running");
        i.program_missing = Some("install it");
        i.rollout = Some(&rolled_back);
        let d = decide(&i).expect("decided");
        assert_eq!((d.status, d.reason), (False, Reason::RolledBack));
        assert!(d.message.starts_with("revision 2 (abc) failed: it failed; rolled back to revision 1 (def), which runs instead (web.service is active (running))"), "{}", d.message);
        assert_eq!(d.since.as_deref(), Some("2026-11-28T08:00:00Z"));
        let mut obj = ObjectStatus::new(crate::manifest::Kind::Service, "web", "/m".as_ref());
        d.apply(&mut obj);
        assert_eq!(
            obj.ready().map(|c| c.last_transition_time.as_str()),
            Some("2026-11-28T08:00:00Z")
        );
        // Not running: the rollback is not what it is.
        let mut down = inputs("failed", "failed");
        down.rollout = Some(&rolled_back);
        assert_eq!(got(&down).1, Reason::Failed);
        let pinned = RolloutVerdict::Pinned {
            revision: 2,
            hash: "abc".into(),
        };
        let mut undo = inputs("active", "running");
        undo.rollout = Some(&pinned);
        let (st, r, msg) = got(&undo);
        assert_eq!((st, r), (True, Reason::Pinned));
        assert!(
            msg.contains("pinned to revision 2 (abc) by `unitlet rollout undo`"),
            "{msg}"
        );
        undo.readiness = Readiness::Probed(Err("503"));
        assert_eq!(
            got(&undo).1,
            Reason::NotReady,
            "only a Ready undo is Pinned"
        );
    }
}
