//! Running handed-out work beside the loop (`unitlet run`'s `WorkPool`,
//! and `apply` and `rollout undo` between their passes): readiness waits,
//! probes, config changes, start-job batches and rollout watches. A layer
//! above the reconciler, which only describes the work.

use std::time::Duration;

use super::{JobsWork, Outcome, Work, WorkKind};
use crate::manager::{QueuedJob, UserManager};
use crate::reload;

impl Work {
    /// Do the work. Never touches status: the outcome is folded in by
    /// `Reconciler::finish` under the state lock.
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
                let watched = crate::rollout::watch::run(&work, &sd, &http).await;
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
                let Some(result) =
                    super::run_config(&work, &sd, &http, job_timeout, &mut silence).await
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
