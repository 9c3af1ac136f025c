//! Waiting, taken out of the pass.
//!
//! A pass never waits for one object: whatever takes time for a single
//! Service — its readiness URL after a start, validating and reloading or
//! restarting it after a config change, probing its readiness — is handed
//! out as a [`Work`] item. `unitlet run` runs each on its own task (a bounded
//! number at once, one per object and kind: duplicates collapse) and folds
//! the [`Outcome`] back into the reconciler and status with
//! [`Reconciler::finish`], then runs another pass. `unitlet apply` runs the
//! same items itself between two passes. Either way the object is
//! "requeued": its status says what it waits for, and nothing else waits
//! for it.

use std::path::PathBuf;
use std::time::Duration;

use crate::manager::{JobKind, JobStream, QueuedJob, UserManager};
use crate::manifest::{OnConfigChange, ReloadMethod};
use crate::reconcile::Reconciler;
use crate::reload::{self, ReloadOutcome};
use crate::status::{ConfigState, EventReason, EventType, Reason, Status};

/// One object's wait (or, for start jobs, one batch's).
#[derive(Debug)]
pub enum Work {
    /// Wait for a just (re)started Service's readiness URL.
    Readiness {
        name: String,
        url: String,
        timeout: Duration,
    },
    /// Probe a running Service's readiness URL once.
    Probe { name: String, url: String },
    /// Act on a changed config: validate, then reload or restart.
    Config(ConfigWork),
    /// Wait for the start and restart jobs a pass queued.
    Jobs(JobsWork),
    /// Judge a new revision: active and ready in time, or failed.
    Rollout(Box<crate::rollout::RolloutWork>),
}

/// Start and restart jobs queued by one pass, with the `JobRemoved`
/// stream opened before they were queued.
pub struct JobsWork {
    pub batch: u64,
    pub stream: JobStream,
    pub jobs: Vec<StartedJob>,
}

impl std::fmt::Debug for JobsWork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobsWork")
            .field("batch", &self.batch)
            .field("jobs", &self.jobs)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct StartedJob {
    pub manifest: String,
    /// Why the plan started it, for the event.
    pub reason: String,
    pub job: QueuedJob,
}

/// Which kind of work, for collapsing duplicates: one of each per object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkKind {
    Readiness,
    Probe,
    Config,
    Jobs,
    Rollout,
}

/// What a config change needs done, decided by the pass.
#[derive(Debug, Clone)]
pub struct ConfigWork {
    pub name: String,
    pub unit: String,
    /// The config content hash this work applies.
    pub hash: String,
    pub config_files: Vec<PathBuf>,
    pub validate: Option<(Vec<String>, PathBuf)>,
    pub on_change: OnConfigChange,
    pub reload: Option<ReloadMethod>,
    pub readiness: Option<(String, Duration)>,
    /// Silence alerts around a restart (the Service's `silence`).
    pub silence: Option<Box<crate::alertmanager::SilenceRequest>>,
}

/// The result of a [`Work`] item.
#[derive(Debug, Clone)]
pub enum Outcome {
    Readiness {
        name: String,
        result: Result<(), String>,
    },
    Probe {
        name: String,
        result: Result<(), String>,
    },
    Config {
        work: Box<ConfigWork>,
        result: ConfigResult,
        /// What happened to the silence around a restart, for events.
        silence: Vec<crate::alertmanager::Note>,
    },
    Jobs {
        batch: u64,
        results: Vec<(StartedJob, Result<(), String>)>,
    },
    Rollout {
        work: Box<crate::rollout::RolloutWork>,
        watched: crate::rollout::Watched,
    },
    /// The bus or the manager went away before the work could end: it
    /// judged nothing. A rollout watch (`resume`) is handed out again
    /// once a pass has run on a live connection; anything else is looked
    /// at afresh by that pass.
    Lost {
        key: (WorkKind, String),
        resume: Option<Box<crate::rollout::RolloutWork>>,
    },
}

#[derive(Debug, Clone)]
pub enum ConfigResult {
    /// The validator refused the new content.
    Invalid(String),
    Done(ReloadOutcome),
    Failed(String),
}

impl Work {
    pub fn key(&self) -> (WorkKind, String) {
        match self {
            Work::Readiness { name, .. } => (WorkKind::Readiness, name.clone()),
            Work::Probe { name, .. } => (WorkKind::Probe, name.clone()),
            Work::Config(c) => (WorkKind::Config, c.name.clone()),
            Work::Jobs(j) => (WorkKind::Jobs, j.batch.to_string()),
            Work::Rollout(r) => (WorkKind::Rollout, r.name.clone()),
        }
    }

    /// Do the work. Never touches status: the outcome is folded in by
    /// [`Reconciler::finish`] under the state lock.
    pub async fn run(
        self,
        sd: impl UserManager,
        http: reqwest::Client,
        job_timeout: Duration,
    ) -> Outcome {
        match self {
            Work::Readiness { name, url, timeout } => Outcome::Readiness {
                result: reload::wait_ready(&http, &url, timeout).await,
                name,
            },
            Work::Probe { name, url } => Outcome::Probe {
                result: reload::probe(&http, &url).await,
                name,
            },
            Work::Jobs(JobsWork {
                batch,
                mut stream,
                jobs,
            }) => {
                let queued: Vec<QueuedJob> = jobs.iter().map(|j| j.job.clone()).collect();
                let results = stream.wait(&sd, &queued, job_timeout).await;
                Outcome::Jobs {
                    batch,
                    // A job whose end was lost with the connection is no
                    // verdict: the next pass reads its unit's live state.
                    results: jobs
                        .into_iter()
                        .zip(results)
                        .filter(|(_, r)| !r.as_ref().is_err_and(|e| e.is_disconnect()))
                        .map(|(j, r)| (j, r.map_err(|e| e.to_string())))
                        .collect(),
                }
            }
            Work::Rollout(work) => {
                let watched = work.run(&sd, &http).await;
                if watched.lost {
                    let key = (WorkKind::Rollout, work.name.clone());
                    return Outcome::Lost {
                        key,
                        resume: Some(work),
                    };
                }
                Outcome::Rollout { watched, work }
            }
            Work::Config(work) => {
                let mut silence = Vec::new();
                let Some(result) = run_config(&work, &sd, &http, job_timeout, &mut silence).await
                else {
                    let key = (WorkKind::Config, work.name.clone());
                    return Outcome::Lost { key, resume: None };
                };
                Outcome::Config {
                    work: Box::new(work),
                    result,
                    silence,
                }
            }
        }
    }
}

impl Outcome {
    pub fn key(&self) -> (WorkKind, String) {
        match self {
            Outcome::Readiness { name, .. } => (WorkKind::Readiness, name.clone()),
            Outcome::Probe { name, .. } => (WorkKind::Probe, name.clone()),
            Outcome::Config { work, .. } => (WorkKind::Config, work.name.clone()),
            Outcome::Jobs { batch, .. } => (WorkKind::Jobs, batch.to_string()),
            Outcome::Rollout { work, .. } => (WorkKind::Rollout, work.name.clone()),
            Outcome::Lost { key, .. } => key.clone(),
        }
    }
}

async fn run_config(
    w: &ConfigWork,
    sd: &impl UserManager,
    http: &reqwest::Client,
    job_timeout: Duration,
    notes: &mut Vec<crate::alertmanager::Note>,
) -> Option<ConfigResult> {
    // Validate first: a failure blocks the reload or restart.
    if let Some((argv, dir)) = &w.validate
        && let Err(e) = reload::run_validate(argv, dir, Duration::from_secs(60)).await
    {
        return Some(ConfigResult::Invalid(e));
    }
    // A planned restart: silence its alerts first.
    let silence = match (&w.silence, w.on_change) {
        (Some(req), OnConfigChange::Restart) => Some((
            req,
            crate::alertmanager::before(http, req, "restart after a config change", notes).await,
        )),
        _ => None,
    };
    // The bus or the manager going away is no verdict on the change.
    let mut lost = false;
    let mut seen = |e: crate::systemd::SystemdError| {
        lost |= e.is_disconnect();
        e.to_string()
    };
    let result: Result<ReloadOutcome, String> = match w.on_change {
        OnConfigChange::None => Ok(ReloadOutcome::Recorded),
        OnConfigChange::Restart => restart(sd, &w.unit, job_timeout).await.map_err(&mut seen),
        OnConfigChange::Reload => match &w.reload {
            Some(ReloadMethod::Http { url }) => reload::http_reload(http, url)
                .await
                .map(|_| ReloadOutcome::Reloaded),
            Some(ReloadMethod::Signal { number, .. }) => sd
                .kill_main(&w.unit, *number)
                .await
                .map(|_| ReloadOutcome::Reloaded)
                .map_err(&mut seen),
            None => sd
                .reload_unit(&w.unit, job_timeout)
                .await
                .map(|_| ReloadOutcome::Reloaded)
                .map_err(&mut seen),
        },
    };
    let result = match (result, &w.readiness) {
        (Ok(o), Some((url, timeout))) if o != ReloadOutcome::Recorded => {
            reload::wait_ready(http, url, *timeout).await.map(|_| o)
        }
        (r, _) => r,
    };
    if let Some((req, made)) = silence {
        let why = match &result {
            Ok(_) => format!("{} is Ready again", w.unit),
            Err(_) => format!(
                "the restart of {} failed, which must not stay silent",
                w.unit
            ),
        };
        crate::alertmanager::after(http, req, made, &why, notes).await;
    }
    Some(match result {
        Ok(o) => ConfigResult::Done(o),
        // The bus or the manager went away mid-way: no verdict.
        Err(_) if lost => return None,
        Err(e) => ConfigResult::Failed(e),
    })
}

async fn restart(
    sd: &impl UserManager,
    unit: &str,
    timeout: Duration,
) -> Result<ReloadOutcome, crate::systemd::SystemdError> {
    let mut js = sd.job_stream().await?;
    let j = sd.queue(unit, JobKind::Restart).await?;
    js.wait(sd, &[j], timeout)
        .await
        .remove(0)
        .map(|()| ReloadOutcome::Restarted)
}

impl Reconciler {
    /// Fold a finished [`Work`] item into the reconciler's memory and the
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
                crate::rollout::finish(&self.loc.state_dir, &work, watched, status);
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
                    matches!(
                        n.1,
                        EventReason::SilenceCreated | EventReason::SilenceFailed
                    )
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
                    crate::reconcile::job_event(status, &j.manifest, unit, kind, &j.reason, &r);
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
            ReloadOutcome::Restarted => (EventReason::Restarted, format!("restarted {}", w.unit)),
            ReloadOutcome::Recorded => (
                EventReason::ConfigRecorded,
                "onConfigChange is none: recorded only".to_string(),
            ),
            _ => (
                EventReason::Reloaded,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::fake::FakeManager;

    /// Issue 20, item 10: a unit's own reload (`ExecReload=`) is queued
    /// and reported as a reload, and waited for the job deadline (`apply
    /// --timeout`), not a fixed 90 s.
    #[tokio::test(start_paused = true)]
    async fn item10_a_reload_is_a_reload_with_the_job_deadline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let units = dir.path().join("units");
        std::fs::create_dir_all(&units).expect("dir");
        let unit = "[Service]\nExecStart=/bin/sleep infinity\nExecReload=/bin/sleep 600\n";
        std::fs::write(units.join("web.service"), unit).expect("unit");
        let sd = FakeManager::new(&units, &dir.path().join("config"));
        sd.start_by_hand("web.service");
        sd.hold_jobs(true);
        let work = Work::Config(ConfigWork {
            name: "web".into(),
            unit: "web.service".into(),
            hash: "h".into(),
            config_files: vec![dir.path().join("web.conf")],
            validate: None,
            on_change: OnConfigChange::Reload,
            reload: None,
            readiness: None,
            silence: None,
        });
        let o = work
            .run(sd.clone(), reload::http_client(), Duration::from_secs(5))
            .await;
        match o {
            Outcome::Config {
                result: ConfigResult::Failed(e),
                ..
            } => assert_eq!(e, "reload of web.service did not finish within 5s"),
            other => panic!("{other:?}"),
        }
        assert_eq!(sd.jobs("web.service"), [JobKind::Reload]);
    }
}
