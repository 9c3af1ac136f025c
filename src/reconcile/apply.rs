//! Executing a prepared plan: stops, disables, files, one daemon-reload,
//! enables, limits, starts; then backoff bookkeeping and status.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

use crate::fsutil;
use crate::manager::{JobKind, JobStream, QueuedJob, UserManager};
use crate::manifest::{self, DesiredState};
use crate::plan::{self, Action, Op};
use crate::render::{self, Role};
use crate::status::{EventType, Status};
use crate::work::{JobsWork, StartedJob, Work};

use super::*;

/// What executing one plan has found so far, by manifest.
#[derive(Default)]
struct Applying {
    /// Manifest → the first error from executing its actions.
    failures: BTreeMap<String, String>,
    /// Manifests whose start or restart job was queued (and, when waited
    /// for, succeeded).
    started: BTreeSet<String>,
    /// Alertmanager silences made before planned restarts: manifest →
    /// silence id.
    silenced: BTreeMap<String, String>,
}

impl Applying {
    fn fail(&mut self, manifest: &str, error: String) {
        self.failures.entry(manifest.to_string()).or_insert(error);
    }

    fn failed(&self, manifest: &str) -> bool {
        self.failures.contains_key(manifest)
    }
}

/// From how many starts in one batch unit signals are paused while they
/// run: below it they cost systemd little (~0.5 ms a start here), and a
/// pause delays noticing a unit stopped by hand elsewhere until the batch
/// ends.
const PAUSE_SIGNALS_AT: usize = 16;

/// The longest a batch of `n` starts pauses unit signals: 10 ms a start,
/// between 1 and 5 s (200 starts take ~0.6 s here). A unit stopped by hand
/// meanwhile is healed by the pass that follows the pause.
pub(super) fn pause_length(n: usize) -> Duration {
    (Duration::from_millis(10) * n as u32).clamp(Duration::from_secs(1), Duration::from_secs(5))
}

/// The actions of `plan` with operation `op`.
fn with_op<'a>(actions: &'a [Action], op: &'a Op) -> impl Iterator<Item = &'a Action> + 'a {
    actions.iter().filter(move |a| &a.op == op)
}

impl Reconciler {
    /// Execute a prepared plan, then refresh status. Returns the report.
    ///
    /// # Guarantees
    /// Only units carrying unitlet's marker are stopped, disabled or
    /// removed (the planner guarantees it; the applier re-checks the file
    /// before removing). One daemon-reload per plan at most.
    ///
    /// # Errors
    /// systemd refused the job stream or the daemon-reload, files could
    /// not be written at all, or the live states cannot be listed.
    pub async fn apply(
        &mut self,
        sd: &impl UserManager,
        prep: Prepared,
        status: &mut Status,
    ) -> Result<PassReport, ReconcileError> {
        let started = Instant::now();
        self.forget_lost_readiness_waits(started);
        self.after_jobs_ended(sd, status).await;
        self.record_program(&prep);
        let mut run = Applying::default();
        let deferred_jobs = if prep.plan.is_empty() {
            None
        } else {
            self.execute(sd, &prep, &mut run, status).await?
        };
        // Readiness of what was just (re)started, then config changes:
        // handed out, never waited for here.
        let mut work = self.readiness_work(&prep, &run.started, &run.failures);
        // New revisions are recorded and watched (issue 12).
        let rollouts = self
            .record_revisions(&prep, &mut run, deferred_jobs.as_ref(), status)
            .await;
        work.extend(rollouts.into_iter().map(|w| Work::Rollout(Box::new(w))));
        work.extend(deferred_jobs.map(Work::Jobs));
        let config = self
            .config_phase(sd, &prep, &run.started, &run.failures, status)
            .await;
        work.extend(config);
        record_applied(&prep, &run.failures, status);
        self.track_backoff(&prep, &run.failures, status);
        let readiness = self.readiness_view(&prep).await;
        // Ready says when a rolled-back or pinned revision runs.
        let rollouts = rollout_verdicts(&self.loc.state_dir, &prep).await;
        let facts = PassFacts {
            prep: &prep,
            failures: &run.failures,
            issues: &self.config_issue,
            readiness: &readiness,
            state_dir: &self.loc.state_dir,
            rollouts: &rollouts,
        };
        let last_runs = refresh_status(sd, &facts, status).await?;
        judge_first_revisions(&self.loc.state_dir, &prep, status).await;
        work.extend(self.probe_work(&prep, status));
        let ready = status.objects.values().filter(|o| o.is_ready()).count();
        Ok(PassReport {
            actions: prep.plan.actions.len(),
            daemon_reloads: prep.plan.daemon_reloads(),
            ready,
            not_ready: status.objects.len() - ready,
            failures: run.failures,
            elapsed: started.elapsed(),
            retry_at: self.next_retry(&prep),
            reloads: Vec::new(),
            work,
            skipped: prep.held.names.clone(),
            last_runs,
        })
    }

    /// Record the revisions this pass wrote and started (see
    /// [`crate::rollout::policy::record`]), and end the pins of changed
    /// manifests, restarted or not. Returns the watches to hand out.
    async fn record_revisions(
        &mut self,
        prep: &Prepared,
        run: &mut Applying,
        deferred_jobs: Option<&JobsWork>,
        status: &mut Status,
    ) -> Vec<crate::rollout::policy::RolloutWork> {
        let silenced = std::mem::take(&mut run.silenced);
        let defer = crate::rollout::policy::Unsaved {
            histories: &mut self.unsaved_histories,
            until_jobs_end: deferred_jobs.is_some(),
        };
        let started = started_revisions(prep, &run.started, &run.failures);
        let (rollouts, deferred) = crate::rollout::policy::record(
            &self.loc,
            &prep.loaded,
            &started,
            silenced,
            defer,
            status,
        )
        .await;
        if let Some(j) = deferred_jobs
            && !deferred.is_empty()
        {
            self.after_jobs.entry(j.batch).or_default().histories = deferred;
        }
        crate::rollout::policy::release(&self.loc.state_dir, &prep.unpinned, &run.failures, status);
        rollouts
    }

    /// What start batches left for after their jobs (see [`AfterJobs`]),
    /// once they ended: links made off the runtime (a unit whose
    /// `[Install]` cannot be made by links alone goes to
    /// `EnableUnitFiles`), first revisions saved in one batch.
    async fn after_jobs_ended(&mut self, sd: &impl UserManager, status: &mut Status) {
        let due = std::mem::take(&mut self.after_jobs_due);
        if due.is_empty() {
            return;
        }
        let t = Instant::now();
        let links: Vec<(String, String, String)> =
            due.iter().flat_map(|a| a.links.iter().cloned()).collect();
        let config = self.manager_dirs(sd).await.config.clone();
        let unit_dir = self.loc.unit_dir.clone();
        let linked = tokio::task::spawn_blocking(move || {
            links
                .into_iter()
                // A unit file removed meanwhile (its manifest deleted) is
                // not linked.
                .filter(|(_, unit, _)| unit_dir.join(unit).is_file())
                .map(|(manifest, unit, content)| {
                    let ok = enable_by_links(&config, &unit_dir, &unit, &content).unwrap_or(false);
                    (manifest, unit, ok)
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        let unlinked: Vec<&(String, String, bool)> = linked.iter().filter(|l| !l.2).collect();
        if !unlinked.is_empty() {
            let units: Vec<String> = unlinked.iter().map(|l| l.1.clone()).collect();
            if let Err(e) = sd.enable(&units).await {
                for (manifest, unit, _) in unlinked {
                    let msg = format!("cannot enable {unit}: {e}");
                    status.event(
                        manifest,
                        EventType::Warning,
                        crate::status::EventReason::EnableFailed,
                        msg,
                    );
                }
            }
        }
        let names: Vec<String> = due.into_iter().flat_map(|a| a.histories).collect();
        crate::rollout::policy::save_unsaved(
            &self.loc.state_dir,
            &mut self.unsaved_histories,
            &names,
            status,
        )
        .await;
        tracing::debug!(elapsed = ?t.elapsed(), links = linked.len(), histories = names.len(), "after the start jobs");
    }

    /// A readiness wait ends by its deadline; one still listed well past
    /// it was lost (its task aborted when the bus went away): forget it,
    /// so the Service is probed again instead of showing Starting for ever.
    fn forget_lost_readiness_waits(&mut self, now: Instant) {
        self.waiting_ready
            .retain(|_, until| *until + Duration::from_secs(5) > now);
    }

    /// The plan's actions, in order. Returns the start jobs handed out
    /// (when the pass does not wait for them).
    async fn execute(
        &mut self,
        sd: &impl UserManager,
        prep: &Prepared,
        run: &mut Applying,
        status: &mut Status,
    ) -> Result<Option<JobsWork>, ReconcileError> {
        let t = Instant::now();
        // Subscribe before any job is queued.
        let mut jobs_stream = sd.job_stream().await?;
        let actions = &prep.plan.actions;
        self.stop_units(sd, actions, &mut jobs_stream, run, status)
            .await;
        disable_units(sd, actions, run).await;
        // Enablement links go before the daemon-reload that loads them
        // (systemd caches a loaded unit's enablement until then). Without
        // one, only units systemd has not loaded are linked, and it reads
        // their enablement when first asked: the links are made while it
        // starts them, not before the first start.
        let reloads = prep.plan.daemon_reloads() > 0;
        let enables: BTreeSet<String> = with_op(actions, &Op::Enable)
            .map(|a| a.unit.clone())
            .collect();
        // Without a reload: the units linked after their start.
        let later = if reloads {
            BTreeSet::new()
        } else {
            self.linkable_later(prep)
        };
        let early_links = if reloads {
            Some(self.spawn_links(sd, prep, &enables).await)
        } else {
            None
        };
        self.write_files(prep, run).await?;
        let linked = match early_links {
            Some(links) => links.await.unwrap_or_default(),
            None => BTreeSet::new(),
        };
        tracing::debug!(elapsed = ?t.elapsed(), linked = linked.len(), "files written");
        self.remove_files(sd, actions, run, status).await;
        self.remove_limit_dropins(sd, actions, run).await;
        // One daemon-reload for the whole batch; it also applies the unit
        // files' limits live.
        if reloads {
            sd.reload().await?;
            tracing::debug!(elapsed = ?t.elapsed(), "daemon-reload done");
            enable_units(sd, actions, &linked, run).await;
        } else {
            // Aliases and the like (`EnableUnitFiles`) before the start
            // that loads the unit: systemd learns a unit's other names
            // when it loads it.
            enable_units(sd, actions, &later, run).await;
        }
        done_events(actions, |op| matches!(op, Op::SetLimits(_)), run, status);
        let deferred = self.start_units(sd, prep, jobs_stream, run, status).await;
        tracing::debug!(elapsed = ?t.elapsed(), "start jobs queued");
        let batch = deferred.as_ref().map(|j| j.batch);
        self.link_after_start(sd, prep, batch, &later, &enables, run)
            .await;
        // The live limits of every service this plan touched must now be
        // the manifest's.
        for (manifest, msg) in self.verify_limits(sd, prep, &run.failures).await {
            let event = msg.clone();
            status.event(
                &manifest,
                EventType::Warning,
                crate::status::EventReason::LimitsNotApplied,
                event,
            );
            run.fail(&manifest, msg);
        }
        done_events(actions, |op| matches!(op, Op::Write { .. }), run, status);
        Ok(deferred)
    }

    /// Units enabled by links once started (no daemon-reload in the
    /// plan): when the starts were handed out as `batch`, after its jobs
    /// end (see [`AfterJobs`]); else now.
    async fn link_after_start(
        &mut self,
        sd: &impl UserManager,
        prep: &Prepared,
        batch: Option<u64>,
        later: &BTreeSet<String>,
        enables: &BTreeSet<String>,
        run: &mut Applying,
    ) {
        let actions = &prep.plan.actions;
        if let Some(batch) = batch
            && !later.is_empty()
        {
            // Linked once systemd has started the batch (see `AfterJobs`).
            let links = prep
                .desired
                .iter()
                .filter(|d| later.contains(&d.name) && !run.failed(&d.manifest))
                .map(|d| (d.manifest.clone(), d.name.clone(), d.content.clone()))
                .collect();
            self.after_jobs.entry(batch).or_default().links = links;
        } else if !later.is_empty() {
            let linked = self
                .spawn_links(sd, prep, later)
                .await
                .await
                .unwrap_or_default();
            // A link that could not be made: `EnableUnitFiles` says why.
            let done: BTreeSet<String> = enables
                .iter()
                .filter(|u| !later.contains(*u) || linked.contains(*u))
                .cloned()
                .collect();
            enable_units(sd, actions, &done, run).await;
            tracing::debug!(linked = linked.len(), "enabled");
        }
    }

    /// Stops (GC and `state: stopped`), waited for before files change.
    async fn stop_units(
        &self,
        sd: &impl UserManager,
        actions: &[Action],
        jobs_stream: &mut JobStream,
        run: &mut Applying,
        status: &mut Status,
    ) {
        let mut stops = Vec::new();
        for a in with_op(actions, &Op::Stop) {
            match sd.queue(&a.unit, JobKind::Stop).await {
                Ok(j) => stops.push((a, j)),
                Err(e) => run.fail(&a.manifest, e.to_string()),
            }
        }
        let jobs: Vec<QueuedJob> = stops.iter().map(|(_, j)| j.clone()).collect();
        let results = jobs_stream.wait(sd, &jobs, self.job_timeout).await;
        for ((a, _), r) in stops.iter().zip(results) {
            match r {
                Ok(()) => {
                    let msg = format!("stopped {}: {}", a.unit, a.reason);
                    status.event(
                        &a.manifest,
                        EventType::Normal,
                        crate::status::EventReason::Stopped,
                        msg,
                    );
                }
                Err(e) => {
                    status.event(
                        &a.manifest,
                        EventType::Warning,
                        crate::status::EventReason::StopFailed,
                        e.to_string(),
                    );
                    run.fail(&a.manifest, e.to_string());
                }
            }
        }
    }

    /// All unit files written with one sync, off the runtime.
    async fn write_files(&self, prep: &Prepared, run: &mut Applying) -> Result<(), ReconcileError> {
        let writes: Vec<(&Action, PathBuf, Vec<u8>)> = prep
            .plan
            .actions
            .iter()
            .filter_map(|a| match &a.op {
                Op::Write { path, content } => Some((a, path.clone(), content.clone().into())),
                _ => None,
            })
            .collect();
        if writes.is_empty() {
            return Ok(());
        }
        let owned: Vec<(PathBuf, Vec<u8>)> = writes
            .iter()
            .map(|(_, p, c)| (p.clone(), c.clone()))
            .collect();
        let written = tokio::task::spawn_blocking(move || {
            let batch: Vec<(&Path, &[u8], u32)> = owned
                .iter()
                .map(|(p, c)| (p.as_path(), c.as_slice(), 0o644))
                .collect();
            fsutil::atomic_write_batch(&batch)
        })
        .await
        .map_err(|e| ReconcileError::Stuck(format!("writing unit files failed: {e}")))?;
        for ((a, path, _), r) in writes.iter().zip(written) {
            if let Err(source) = r {
                let e = ReconcileError::UnitDir {
                    what: "write unit file",
                    path: path.clone(),
                    source,
                };
                run.fail(&a.manifest, crate::error_chain(&e));
            }
        }
        Ok(())
    }

    /// Units enabled by links after their start (no daemon-reload in the
    /// plan): those systemd has not loaded whose enablement is only links.
    fn linkable_later(&self, prep: &Prepared) -> BTreeSet<String> {
        with_op(&prep.plan.actions, &Op::Enable)
            .filter(|a| plan::loads_on_demand(prep.observed.live.get(&a.unit)))
            .filter_map(|a| {
                let d = prep.desired.iter().find(|d| d.name == a.unit)?;
                linkable(&a.unit, &d.content).then(|| a.unit.clone())
            })
            .collect()
    }

    /// Enable `units` by symlinks, off the runtime; yields the units linked
    /// (one whose `[Install]` is more than links is left to
    /// `EnableUnitFiles`).
    async fn spawn_links(
        &self,
        sd: &impl UserManager,
        prep: &Prepared,
        units: &BTreeSet<String>,
    ) -> tokio::task::JoinHandle<BTreeSet<String>> {
        let to_link: Vec<(String, String)> = prep
            .desired
            .iter()
            .filter(|d| units.contains(&d.name))
            .map(|d| (d.name.clone(), d.content.clone()))
            .collect();
        let config = self.manager_dirs(sd).await.config.clone();
        let unit_dir = self.loc.unit_dir.clone();
        tokio::task::spawn_blocking(move || {
            to_link
                .into_iter()
                .filter(|(unit, content)| {
                    enable_by_links(&config, &unit_dir, unit, content).unwrap_or(false)
                })
                .map(|(unit, _)| unit)
                .collect()
        })
    }

    /// Removals, each re-checked for unitlet's marker right before.
    async fn remove_files(
        &self,
        sd: &impl UserManager,
        actions: &[Action],
        run: &mut Applying,
        status: &mut Status,
    ) {
        for a in actions {
            let Op::Remove { path } = &a.op else { continue };
            let still_ours = fsutil::read_regular_capped(path, false, MAX_UNIT_BYTES)
                .ok()
                .and_then(|c| render::marker_of(&String::from_utf8_lossy(&c)))
                .as_deref()
                == Some(a.manifest.as_str());
            if !still_ours {
                continue;
            }
            if let Err(source) = fsutil::remove_durable(path) {
                let e = ReconcileError::UnitDir {
                    what: "remove unit file",
                    path: path.clone(),
                    source,
                };
                run.fail(&a.manifest, crate::error_chain(&e));
                continue;
            }
            sd.reset_failed(&a.unit).await;
            let _ = self.manager_dirs(sd).await.remove_limit_dropins(&a.unit);
            status.applied.remove(&a.unit);
            let msg = format!("removed {} ({})", a.unit, a.reason);
            status.event(
                &a.manifest,
                EventType::Normal,
                crate::status::EventReason::Removed,
                msg,
            );
        }
    }

    /// Limits: drop-ins that override the unit file go before the
    /// daemon-reload, which then applies the unit file's limits live.
    async fn remove_limit_dropins(
        &self,
        sd: &impl UserManager,
        actions: &[Action],
        run: &mut Applying,
    ) {
        for a in actions.iter().filter(|a| matches!(a.op, Op::SetLimits(_))) {
            if let Err(e) = self.manager_dirs(sd).await.remove_limit_dropins(&a.unit) {
                let msg = format!("cannot reset the resource limits of {}: {e}", a.unit);
                run.fail(&a.manifest, msg);
            }
        }
    }

    /// Starts and restarts, all queued concurrently (one round trip per
    /// job would dominate a large batch), then waited for together:
    /// systemd orders them by `After=`. The operator never waits here
    /// (`start_wait` zero): the batch is handed out as [`JobsWork`] and
    /// its outcome folded in by a later pass.
    async fn start_units(
        &mut self,
        sd: &impl UserManager,
        prep: &Prepared,
        mut jobs_stream: JobStream,
        run: &mut Applying,
        status: &mut Status,
    ) -> Option<JobsWork> {
        // A restore may have taken a hold since this pass began. Holds
        // that cannot be read start nothing: the next pass tries again.
        let holds_now = match super::active_holds(&self.loc.state_dir).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!("{e}; starting nothing in this pass");
                return None;
            }
        };
        let to_start: Vec<(&Action, JobKind)> = prep
            .plan
            .actions
            .iter()
            .filter(|a| !run.failed(&a.manifest) && !holds_now.contains(&a.manifest))
            .filter_map(|a| match a.op {
                Op::Start => Some((a, JobKind::Start)),
                Op::Restart => Some((a, JobKind::Restart)),
                _ => None,
            })
            .collect();
        // Planned restarts are silenced first (a bounded wait; issue 12).
        run.silenced =
            crate::silence::silence_restarts(&self.loc, &prep.loaded, &to_start, status).await;
        // A large batch the operator hands out starts without unit
        // signals: they would cost systemd ~20 % of the batch.
        let pause = if self.start_wait.is_zero() && to_start.len() >= PAUSE_SIGNALS_AT {
            Some(sd.pause_unit_signals(pause_length(to_start.len())).await)
        } else {
            None
        };
        let queued = queue_all(sd, &to_start, prep.plan.daemon_reloads() > 0).await;
        let mut started = Vec::new();
        for ((a, _), q) in to_start.into_iter().zip(queued) {
            match q {
                Ok(job) => started.push(StartedJob {
                    manifest: a.manifest.clone(),
                    reason: a.reason.clone(),
                    job,
                }),
                Err(e) => run.fail(&a.manifest, e.to_string()),
            }
        }
        if started.is_empty() {
            return None;
        }
        if self.start_wait.is_zero() {
            run.started
                .extend(started.iter().map(|j| j.manifest.clone()));
            self.job_batches += 1;
            if pause.is_some() {
                self.after_jobs.entry(self.job_batches).or_default().pause = pause;
            }
            return Some(JobsWork {
                batch: self.job_batches,
                stream: jobs_stream,
                jobs: started,
            });
        }
        let jobs: Vec<QueuedJob> = started.iter().map(|j| j.job.clone()).collect();
        let results = jobs_stream.wait(sd, &jobs, self.start_wait).await;
        for (j, r) in started.iter().zip(results) {
            let r = r.map_err(|e| e.to_string());
            job_event(status, &j.manifest, &j.job.unit, j.job.kind, &j.reason, &r);
            match r {
                Ok(()) => {
                    run.started.insert(j.manifest.clone());
                }
                Err(e) => run.fail(&j.manifest, e),
            }
        }
        None
    }

    /// Backoff bookkeeping: a failure (or a unit that had failed on its
    /// own and was started again, so a crash loop is not a tight loop)
    /// backs the manifest off; success or an edit resets it. Also records
    /// the spec hash and file digest the pass applied.
    fn track_backoff(
        &mut self,
        prep: &Prepared,
        failures: &BTreeMap<String, String>,
        status: &mut Status,
    ) {
        let crashed: BTreeSet<&str> = prep
            .plan
            .actions
            .iter()
            .filter(|a| a.op == Op::Start && a.restarts_a_failed_unit())
            .map(|a| a.manifest.as_str())
            .collect();
        let now = Instant::now();
        for m in &prep.loaded.manifests {
            if prep.backing_off.contains(&m.name) {
                continue;
            }
            let hash = manifest::spec_hash(m);
            let obj = status
                .objects
                .entry(m.name.clone())
                .or_insert_with(|| crate::status::ObjectStatus::new(m.kind(), &m.name, &m.file));
            if failures.contains_key(&m.name) || crashed.contains(m.name.as_str()) {
                obj.failures = if obj.spec_hash == hash {
                    obj.failures + 1
                } else {
                    1
                };
                let until = now + backoff_delay(obj.failures);
                let spec_hash = hash.clone();
                self.backoff
                    .insert(m.name.clone(), Backoff { until, spec_hash });
            } else {
                obj.failures = 0;
                self.backoff.remove(&m.name);
            }
            obj.spec_hash = hash;
            // Applied (or tried, and failed) from these bytes: a fleet
            // rollout judges the new file by this, success or not.
            obj.manifest_digest.clone_from(&m.digest);
        }
    }

    /// When the earliest backing-off manifest, failing reload or gc grace
    /// is due.
    fn next_retry(&self, prep: &Prepared) -> Option<Instant> {
        let backoffs = self.backoff.values().map(|b| b.until);
        let reloads = self.reload_retry.values().map(|r| r.next);
        backoffs
            .chain(reloads)
            .chain(prep.gc_waiting.values().copied())
            .min()
    }

    /// Running Services' readiness, probed beside the loop (`run`; `apply`
    /// probes inline).
    fn probe_work(&self, prep: &Prepared, status: &Status) -> Vec<Work> {
        if self.inline_probes {
            return Vec::new();
        }
        let mut work = Vec::new();
        for m in &prep.loaded.manifests {
            let Some(r) = m.as_service().and_then(|s| s.readiness.as_ref()) else {
                continue;
            };
            let active = status
                .objects
                .get(&m.name)
                .and_then(|o| o.unit.as_ref())
                .is_some_and(|u| u.active_state == "active");
            if active && !self.waiting_ready.contains_key(&m.name) {
                work.push(Work::Probe {
                    name: m.name.clone(),
                    url: r.url.clone(),
                });
            }
        }
        work
    }

    /// Compare the live limits of each running service the plan wrote,
    /// started, restarted or set limits on with its unit file's. Returns
    /// `(manifest, message)` for each that differs: an apply failure.
    async fn verify_limits(
        &self,
        sd: &impl UserManager,
        prep: &Prepared,
        failures: &BTreeMap<String, String>,
    ) -> Vec<(String, String)> {
        let touched: BTreeSet<&str> = prep
            .plan
            .actions
            .iter()
            .filter(|a| {
                matches!(
                    a.op,
                    Op::Write { .. } | Op::SetLimits(_) | Op::Start | Op::Restart
                )
            })
            .map(|a| a.unit.as_str())
            .collect();
        let mut out = Vec::new();
        for d in &prep.desired {
            let running = matches!(
                d.role,
                Role::Main {
                    state: DesiredState::Running,
                    ..
                }
            );
            if !running
                || !touched.contains(d.name.as_str())
                || failures.contains_key(&d.manifest)
                || !had_limits(prep, d)
            {
                continue;
            }
            let wanted =
                crate::manager::WantedLimits::of_unit(&d.content, prep.observed.default_tasks_max);
            let msg = match sd.limit_differences(&d.name, &wanted).await {
                Ok(diff) if diff.is_empty() => continue,
                Ok(diff) => format!(
                    "live resource limits of {} do not match the manifest after applying: {}; something else sets them (a drop-in: see `systemctl --user cat {}`); remove that setting or change the manifest",
                    d.name,
                    diff.join("; "),
                    d.name
                ),
                Err(e) => format!(
                    "cannot verify the live resource limits of {}: {}",
                    d.name,
                    crate::error_chain(&e)
                ),
            };
            out.push((d.manifest.clone(), msg));
        }
        out
    }
}

/// The Services' main units this pass wrote and whose start or restart
/// was queued (a start that failed at once, e.g. a missing program, fails
/// the revision too), their file still holding what was written: the
/// candidate revisions.
fn started_revisions<'a>(
    prep: &'a Prepared,
    started_ok: &BTreeSet<String>,
    failures: &BTreeMap<String, String>,
) -> Vec<crate::rollout::policy::Started<'a>> {
    let actions = &prep.plan.actions;
    let restarted = |a: &Action| {
        actions
            .iter()
            .any(|b| b.unit == a.unit && matches!(b.op, Op::Start | Op::Restart))
    };
    let mut out = Vec::new();
    for a in actions {
        let Op::Write { content, path } = &a.op else {
            continue;
        };
        let queued = started_ok.contains(&a.manifest)
            || (failures.contains_key(&a.manifest) && restarted(a));
        if a.unit != format!("{}.service", a.manifest)
            || !queued
            || !fsutil::read_regular_capped(path, false, content.len() as u64)
                .is_ok_and(|b| b == content.as_bytes())
        {
            continue;
        }
        let Some(manifest) = prep.loaded.get(&a.manifest) else {
            continue;
        };
        out.push(crate::rollout::policy::Started {
            manifest,
            content,
            on_disk: prep.observed.files.get(&a.unit).map(|f| f.content.as_str()),
        });
    }
    out
}

/// Limits are worth a look when the unit file sets some, or the unit had
/// some before (in its file or set outside it).
fn had_limits(prep: &Prepared, d: &render::DesiredUnit) -> bool {
    plan::has_limit_keys(&d.content)
        || prep
            .observed
            .files
            .get(&d.name)
            .is_some_and(|f| plan::has_limit_keys(&f.content))
        || prep
            .observed
            .live
            .get(&d.name)
            .is_some_and(|l| !l.limit_dropins.is_empty())
}

/// The events of the actions `op` selects (limits set, files written)
/// whose manifest did not fail.
fn done_events(actions: &[Action], op: impl Fn(&Op) -> bool, run: &Applying, status: &mut Status) {
    for a in actions
        .iter()
        .filter(|a| op(&a.op) && !run.failed(&a.manifest))
    {
        let (reason, msg) = match a.op {
            Op::Write { .. } => (
                crate::status::EventReason::Written,
                format!("wrote {}: {}", a.unit, a.reason),
            ),
            _ => (
                crate::status::EventReason::LimitsApplied,
                format!("{}: {}", a.unit, a.reason),
            ),
        };
        status.event(&a.manifest, EventType::Normal, reason, msg);
    }
}

/// Disables, batched.
async fn disable_units(sd: &impl UserManager, actions: &[Action], run: &mut Applying) {
    let disables: Vec<String> = with_op(actions, &Op::Disable)
        .map(|a| a.unit.clone())
        .collect();
    if let Err(e) = sd.disable(&disables).await {
        for a in with_op(actions, &Op::Disable) {
            run.fail(&a.manifest, e.to_string());
        }
    }
}

/// Queue every job at once. A new unit's file is loaded on demand (no
/// daemon-reload in the plan); should systemd still not find it (a unit
/// directory whose mtime did not move, on a filesystem with coarse
/// timestamps), one daemon-reload follows and those jobs are queued again.
async fn queue_all(
    sd: &impl UserManager,
    to_start: &[(&Action, JobKind)],
    reloaded: bool,
) -> Vec<Result<QueuedJob, ManagerError>> {
    let queue = to_start.iter().map(|(a, k)| sd.queue(&a.unit, *k));
    let mut queued = futures_util::future::join_all(queue).await;
    let missing: Vec<usize> = queued
        .iter()
        .enumerate()
        .filter(|(_, q)| q.as_ref().err().is_some_and(ManagerError::is_no_such_unit))
        .map(|(i, _)| i)
        .collect();
    if reloaded || missing.is_empty() {
        return queued;
    }
    tracing::debug!(units = missing.len(), "not found on demand: daemon-reload");
    if let Err(e) = sd.reload().await {
        tracing::warn!("daemon-reload after units were not found: {e}");
        return queued;
    }
    let again = missing
        .iter()
        .map(|&i| sd.queue(&to_start[i].0.unit, to_start[i].1));
    for (i, q) in missing
        .iter()
        .zip(futures_util::future::join_all(again).await)
    {
        queued[*i] = q;
    }
    queued
}

/// Enables not made by links, batched.
async fn enable_units(
    sd: &impl UserManager,
    actions: &[Action],
    linked: &BTreeSet<String>,
    run: &mut Applying,
) {
    let enables: Vec<String> = with_op(actions, &Op::Enable)
        .filter(|a| !run.failed(&a.manifest) && !linked.contains(&a.unit))
        .map(|a| a.unit.clone())
        .collect();
    if let Err(e) = sd.enable(&enables).await {
        for a in with_op(actions, &Op::Enable) {
            run.fail(&a.manifest, e.to_string());
        }
    }
}

/// Record what is now applied in full.
fn record_applied(prep: &Prepared, failures: &BTreeMap<String, String>, status: &mut Status) {
    for d in &prep.desired {
        let conflict = prep.plan.conflicts.iter().any(|c| c.manifest == d.manifest);
        if !failures.contains_key(&d.manifest) && !conflict {
            status
                .applied
                .insert(d.unit_name().to_string(), plan::content_hash(&d.content));
        }
    }
}

/// The rollout pins in force ([`crate::rollout::policy::verdicts`]), read
/// off the runtime; a hung read leaves them out of this pass's Ready
/// conditions.
async fn rollout_verdicts(
    state_dir: &Path,
    prep: &Prepared,
) -> BTreeMap<String, crate::rollout::policy::RolloutVerdict> {
    let (state_dir, manifests) = (state_dir.to_path_buf(), prep.loaded.manifests.clone());
    let key = state_dir.join("rollouts");
    fsutil::off_runtime(&key, fsutil::READ_DEADLINE, move || {
        crate::rollout::policy::verdicts(&state_dir, &manifests)
    })
    .await
    .unwrap_or_else(|e| {
        tracing::warn!(
            "reading the rollout histories in {}: {e}; their conditions wait for the next pass",
            key.display()
        );
        BTreeMap::new()
    })
}

/// [`crate::rollout::policy::judge_first_revisions`] off the runtime (it
/// reads, and may save, histories), on a copy of the status.
async fn judge_first_revisions(state_dir: &Path, prep: &Prepared, status: &Status) {
    let (state_dir, manifests) = (state_dir.to_path_buf(), prep.loaded.manifests.clone());
    let key = state_dir.join("rollouts");
    let copy = status.clone();
    let judged = fsutil::off_runtime(&key, fsutil::READ_DEADLINE, move || {
        crate::rollout::policy::judge_first_revisions(&state_dir, &manifests, &copy);
    })
    .await;
    if let Err(e) = judged {
        tracing::warn!(
            "reading the rollout histories in {}: {e}; first revisions are judged next pass",
            key.display()
        );
    }
}
