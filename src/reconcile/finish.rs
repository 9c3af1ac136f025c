//! Folding finished work into the reconciler's memory and the status:
//! [`Reconciler::finish`].

use crate::reload::{self, ReloadOutcome};
use crate::status::{ConfigState, EventType, Reason, Status};
use crate::work::{ConfigResult, ConfigWork, Outcome};

use super::Reconciler;

impl Reconciler {
    /// Fold a finished [`crate::work::Work`] item into the reconciler's memory and the
    /// status. Returns what a config change did, for metrics.
    pub fn finish(
        &mut self,
        outcome: Outcome,
        status: &mut Status,
    ) -> Option<(String, ReloadOutcome)> {
        match outcome {
            Outcome::Readiness { name, result } => {
                self.waiting_ready.remove(&name);
                // Not ready in time after a start: the Service is not Ready.
                if let Err(e) = &result {
                    status.event(
                        &name,
                        EventType::Warning,
                        crate::status::EventReason::NotReady,
                        e.clone(),
                    );
                    let issue = (Reason::NotReady, e.clone());
                    self.config_issue.insert(name.clone(), issue);
                }
                self.probed(name, result);
                None
            }
            Outcome::Probe { name, result } => {
                self.probed(name, result);
                None
            }
            Outcome::Rollout { work, watched } => {
                crate::rollout::policy::finish(&self.loc.state_dir, &work, watched, status);
                None
            }
            // Nothing was judged (see `Outcome::Lost`).
            Outcome::Lost { .. } => None,
            Outcome::Config {
                work,
                result,
                silence,
            } => {
                // Silence events first, then what the config change did.
                let (before, after): (Vec<_>, Vec<_>) = silence.into_iter().partition(|n| {
                    n.1 == crate::status::EventReason::SilenceCreated
                        || n.1 == crate::status::EventReason::SilenceFailed
                });
                for (t, r, m) in before {
                    status.event(&work.name, t, r, m);
                }
                let name = work.name.clone();
                let done = self.finish_config(*work, result, status);
                for (t, r, m) in after {
                    status.event(&name, t, r, m);
                }
                Some(done)
            }
            Outcome::Jobs { batch, results } => {
                self.jobs_ended(batch);
                for (j, r) in results {
                    let (unit, kind) = (&j.job.unit, j.job.kind);
                    super::job_event(status, &j.manifest, unit, kind, &j.reason, &r);
                    if let Err(e) = r {
                        self.start_failed(&j.manifest, &e, status);
                    }
                }
                None
            }
        }
    }

    /// Remember a readiness probe's result; a success clears a
    /// `NotReady` issue.
    fn probed(&mut self, name: String, result: Result<(), String>) {
        let not_ready = self
            .config_issue
            .get(&name)
            .is_some_and(|(r, _)| *r == Reason::NotReady);
        if result.is_ok() && not_ready {
            self.config_issue.remove(&name);
        }
        self.probes.insert(name, result);
    }

    fn finish_config(
        &mut self,
        w: ConfigWork,
        result: ConfigResult,
        status: &mut Status,
    ) -> (String, ReloadOutcome) {
        let name = w.name.clone();
        let outcome = match result {
            ConfigResult::Invalid(e) => {
                self.config_refused(&w, &e, status);
                ReloadOutcome::Invalid(e)
            }
            ConfigResult::Done(o) => {
                self.config_applied(&w, &o, status);
                o
            }
            ConfigResult::Failed(e) => {
                self.config_reload_failed(&w, &e, status);
                ReloadOutcome::Failed(e)
            }
        };
        (name, outcome)
    }

    /// The validator refused the new content: not validated again until
    /// it changes; the service keeps its previous config.
    fn config_refused(&mut self, w: &ConfigWork, e: &str, status: &mut Status) {
        let name = &w.name;
        let msg = format!("config change not applied: {e}");
        status.event(
            name,
            EventType::Warning,
            crate::status::EventReason::ConfigInvalid,
            msg,
        );
        self.rejected_config
            .insert(name.clone(), (w.hash.clone(), e.to_string()));
        let issue = format!(
            "config change not applied; the service keeps running on its previous config. {e}"
        );
        self.config_issue
            .insert(name.clone(), (Reason::ConfigInvalid, issue));
    }

    /// The change was reloaded, restarted or recorded.
    fn config_applied(&mut self, w: &ConfigWork, o: &ReloadOutcome, status: &mut Status) {
        let name = &w.name;
        self.rejected_config.remove(name);
        let files = w
            .config_files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let (what, how) = match o {
            ReloadOutcome::Restarted => (
                crate::status::EventReason::Restarted,
                format!("restarted {}", w.unit),
            ),
            ReloadOutcome::Recorded => (
                crate::status::EventReason::ConfigRecorded,
                "onConfigChange is none: recorded only".to_string(),
            ),
            _ => (
                crate::status::EventReason::Reloaded,
                format!("reloaded via {}", reload::describe_method(&w.reload)),
            ),
        };
        let msg = format!("config changed ({files}): {how}");
        status.event(name, EventType::Normal, what, msg);
        let state = ConfigState {
            applied: w.hash.clone(),
            failing: false,
        };
        status.config.insert(name.clone(), state);
        self.reload_retry.remove(name);
        self.config_issue.remove(name);
    }

    /// Reloading failed: retried with backoff, and reloaded again even if
    /// the content is reverted.
    fn config_reload_failed(&mut self, w: &ConfigWork, e: &str, status: &mut Status) {
        let name = &w.name;
        self.rejected_config.remove(name);
        let retry = self.reload_retry.entry(name.clone()).or_default();
        let delay = retry.failed();
        let attempts = retry.attempts;
        let msg = format!("{e}; retrying in {delay:.1?}");
        status.event(
            name,
            EventType::Warning,
            crate::status::EventReason::ReloadFailed,
            msg,
        );
        if let Some(c) = status.config.get_mut(name) {
            c.failing = true;
        }
        let issue = format!(
            "{e} (attempt {attempts}; next retry in {delay:.1?}, with exponential backoff)"
        );
        self.config_issue
            .insert(name.clone(), (Reason::ReloadFailed, issue));
    }
}
