//! Waiting, taken out of the pass.
//!
//! A pass never waits for one object: whatever takes time for a single
//! Service — its readiness URL after a start, validating and reloading or
//! restarting it after a config change, probing its readiness — is handed
//! out as a [`Work`] item. `unitlet run` runs each on its own task (a bounded
//! number at once, one per object and kind: duplicates collapse) and folds
//! the [`Outcome`] back into the reconciler and status with
//! `Reconciler::finish`, then runs another pass. `unitlet apply` runs the
//! same items itself between two passes. Either way the object is
//! "requeued": its status says what it waits for, and nothing else waits
//! for it.

use std::path::PathBuf;
use std::time::Duration;

mod run;

use crate::manager::{JobKind, JobStream, QueuedJob, UserManager};
use crate::manifest::{OnConfigChange, ReloadMethod};
use crate::reload::{self, ReloadOutcome};

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
    Rollout(Box<crate::rollout::policy::RolloutWork>),
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

impl WorkKind {
    /// Every kind, for metrics that show each from the start.
    pub const ALL: [WorkKind; 5] = [
        WorkKind::Readiness,
        WorkKind::Probe,
        WorkKind::Config,
        WorkKind::Jobs,
        WorkKind::Rollout,
    ];

    /// The `kind` label of the work-queue metrics.
    pub fn label(self) -> &'static str {
        match self {
            WorkKind::Readiness => "readiness",
            WorkKind::Probe => "probe",
            WorkKind::Config => "config",
            WorkKind::Jobs => "jobs",
            WorkKind::Rollout => "rollout",
        }
    }
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
        silence: Vec<crate::silence::Note>,
    },
    Jobs {
        batch: u64,
        results: Vec<(StartedJob, Result<(), String>)>,
    },
    Rollout {
        work: Box<crate::rollout::policy::RolloutWork>,
        watched: crate::rollout::policy::Watched,
    },
    /// The bus or the manager went away before the work could end: it
    /// judged nothing. A rollout watch (`resume`) is handed out again
    /// once a pass has run on a live connection; anything else is looked
    /// at afresh by that pass.
    Lost {
        key: (WorkKind, String),
        resume: Option<Box<crate::rollout::policy::RolloutWork>>,
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

    /// Whether this outcome brings its work back, a retry in the
    /// work-queue metrics: a failed reload (retried with backoff), a
    /// failed start job (the object backs off and is started again), or
    /// work lost with the user manager (handed out again).
    pub fn retried(&self) -> bool {
        match self {
            Outcome::Config { result, .. } => matches!(result, ConfigResult::Failed(_)),
            Outcome::Jobs { results, .. } => results.iter().any(|(_, r)| r.is_err()),
            Outcome::Lost { .. } => true,
            Outcome::Readiness { .. } | Outcome::Probe { .. } | Outcome::Rollout { .. } => false,
        }
    }
}

pub(crate) async fn run_config(
    w: &ConfigWork,
    sd: &impl UserManager,
    http: &reqwest::Client,
    job_timeout: Duration,
    notes: &mut Vec<crate::silence::Note>,
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
            crate::silence::before(http, req, "restart after a config change", notes).await,
        )),
        _ => None,
    };
    // The bus or the manager going away is no verdict on the change.
    let mut lost = false;
    let mut seen = |e: crate::manager::ManagerError| {
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
        crate::silence::after(http, req, made, &why, notes).await;
    }
    Some(match result {
        Ok(o) => ConfigResult::Done(o),
        // The bus or the manager went away mid-way: no verdict.
        Err(_) if lost => return None,
        Err(e) => ConfigResult::Failed(e),
    })
}

pub(crate) async fn restart(
    sd: &impl UserManager,
    unit: &str,
    timeout: Duration,
) -> Result<ReloadOutcome, crate::manager::ManagerError> {
    let mut js = sd.job_stream().await?;
    let j = sd.queue(unit, JobKind::Restart).await?;
    js.wait(sd, &[j], timeout)
        .await
        .remove(0)
        .map(|()| ReloadOutcome::Restarted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::fake::FakeManager;

    /// Issue 23 item 6: the outcomes that bring their work back are the
    /// work queue's retries; a refused config (not tried again until
    /// edited) or a failed probe (probed again anyway) are not.
    #[test]
    fn retries_are_the_outcomes_that_bring_work_back() {
        let config = |result| Outcome::Config {
            work: Box::new(ConfigWork {
                name: "web".into(),
                unit: "web.service".into(),
                hash: "h".into(),
                config_files: Vec::new(),
                validate: None,
                on_change: OnConfigChange::Reload,
                reload: None,
                readiness: None,
                silence: None,
            }),
            result,
            silence: Vec::new(),
        };
        assert!(config(ConfigResult::Failed("500".into())).retried());
        assert!(!config(ConfigResult::Invalid("bad".into())).retried());
        assert!(!config(ConfigResult::Done(ReloadOutcome::Reloaded)).retried());
        let lost = Outcome::Lost {
            key: (WorkKind::Config, "web".into()),
            resume: None,
        };
        assert!(lost.retried());
        let probe = Outcome::Probe {
            name: "web".into(),
            result: Err("refused".into()),
        };
        assert!(!probe.retried());
        let labels: Vec<_> = WorkKind::ALL.map(WorkKind::label).to_vec();
        assert_eq!(labels, ["readiness", "probe", "config", "jobs", "rollout"]);
    }

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
