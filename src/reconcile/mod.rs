//! One reconcile pass: load → render → observe → plan → apply → status.
//!
//! The pass is level-triggered: it never asks *why* it runs, it compares
//! what the manifests want with what is on disk and live in systemd.
//! `apply` runs one pass; `run` runs them on events and on a timer.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::fsutil;
use crate::locations::Locations;
use crate::manifest::{self, DesiredState, LoadError, LoadedSet};
use crate::plan::{self, Held, Observed, Op, Plan};
use crate::render::{self, DesiredUnit, RenderContext, Role};
use crate::status::Status;
use crate::systemd::{JobKind, Systemd, SystemdError};
use crate::work::{JobsWork, StartedJob, Work};

mod config;
mod observe;
mod status;

pub use observe::*;
pub use status::*;

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The manifests directory cannot be used; nothing was changed.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// systemd could not be reached or refused a batch operation.
    #[error(transparent)]
    Systemd(#[from] SystemdError),
    /// The unit directory cannot be read or written.
    #[error("cannot {what} {path}")]
    UnitDir {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Status could not be saved.
    #[error(transparent)]
    Status(#[from] crate::status::StatusError),
    /// Reading files did not finish in time.
    #[error("{0}")]
    Stuck(String),
    /// The state directory (holds, status) cannot be trusted.
    #[error(transparent)]
    StateDir(#[from] crate::locations::LocationError),
}

impl ReconcileError {
    pub fn is_disconnect(&self) -> bool {
        matches!(self, ReconcileError::Systemd(e) if e.is_disconnect())
    }
}

/// Everything a pass computed before touching anything: what `plan` prints.
pub struct Prepared {
    pub loaded: LoadedSet,
    pub desired: Vec<DesiredUnit>,
    pub held: Held,
    pub observed: Observed,
    pub plan: Plan,
    /// Manifests skipped this pass because they are backing off.
    pub backing_off: BTreeSet<String>,
    /// Manifests a restore holds: left exactly as they are.
    pub on_hold: BTreeSet<String>,
    /// Manifests that disappeared less than `gc_grace` ago: their units
    /// are left alone until then (by manifest: when the grace ends).
    pub gc_waiting: BTreeMap<String, Instant>,
}

/// The outcome of one pass.
#[derive(Debug, Default)]
pub struct PassReport {
    pub actions: usize,
    pub daemon_reloads: usize,
    /// Manifest → error from executing its actions.
    pub failures: BTreeMap<String, String>,
    pub ready: usize,
    pub not_ready: usize,
    pub elapsed: Duration,
    /// When the earliest backing-off manifest (or failing reload) should
    /// be retried.
    pub retry_at: Option<Instant>,
    /// What was done about changed config files, by manifest.
    pub reloads: Vec<(String, crate::reload::ReloadOutcome)>,
    /// Waits handed out by the pass (readiness, config changes, probes).
    pub work: Vec<Work>,
}

/// Per-object backoff after failures, reset on success or on an edit.
#[derive(Debug, Clone)]
pub struct Backoff {
    pub until: Instant,
    pub spec_hash: String,
}

/// Record how a start or restart job ended.
pub(crate) fn job_event(
    status: &mut Status,
    manifest: &str,
    unit: &str,
    kind: JobKind,
    reason: &str,
    result: &Result<(), String>,
) {
    let (ok_reason, bad_reason) = match kind {
        JobKind::Restart => ("Restarted", "RestartFailed"),
        _ => ("Started", "StartFailed"),
    };
    match result {
        Ok(()) => status.event(
            manifest,
            "Normal",
            ok_reason,
            format!("{} {unit}: {reason}", ok_reason.to_lowercase()),
        ),
        Err(e) => status.event(manifest, "Warning", bad_reason, e.clone()),
    }
}

/// The default of `--gc-grace`.
pub const DEFAULT_GC_GRACE: Duration = Duration::from_secs(2);

pub fn backoff_delay(failures: u32) -> Duration {
    let secs = 1u64 << failures.saturating_sub(1).min(8);
    Duration::from_secs(secs.min(300))
}

/// What survives between passes of one `run`.
pub struct Reconciler {
    pub loc: Locations,
    pub render_ctx: RenderContext,
    pub backoff: HashMap<String, Backoff>,
    /// How long to wait for each job.
    pub job_timeout: Duration,
    /// Failing reloads waiting for their next attempt, by manifest.
    pub reload_retry: HashMap<String, crate::reload::RetryState>,
    /// Config content that failed validation, by manifest: not validated
    /// again until it changes.
    pub rejected_config: HashMap<String, (String, String)>,
    /// Why a running service is not Ready because of its config or its
    /// readiness probe: `(reason, message)`, by manifest.
    pub config_issue: HashMap<String, (String, String)>,
    pub http: reqwest::Client,
    /// How long a pass waits for start jobs. `apply` waits for them to
    /// end (`job_timeout`); the operator (zero) hands the wait out as
    /// [`Work::Jobs`].
    pub start_wait: Duration,
    /// Batches of start jobs handed out, to tell them apart.
    job_batches: u64,
    /// Started Services waiting for their readiness URL, until when.
    pub waiting_ready: HashMap<String, Instant>,
    /// The last readiness probe of each running Service.
    pub probes: HashMap<String, Result<(), String>>,
    /// Probe readiness during the pass (`apply`) instead of handing probes
    /// out (`run`).
    pub inline_probes: bool,
    /// How long a manifest that disappeared is waited for before its units
    /// are stopped and removed (editors that delete and re-create, `git
    /// checkout`, `rsync --delete-after`).
    pub gc_grace: Duration,
    /// When each manifest owning units was first seen missing.
    missing_since: HashMap<String, Instant>,
    /// Finish or undo interrupted restores before each pass (`plan`, which
    /// changes nothing, turns it off).
    pub recover_restores: bool,
    /// The manager's directories, read once from its `UnitPath`.
    dirs: std::sync::OnceLock<ManagerDirs>,
}

/// How long loading the manifests may take before the pass gives up (a
/// file that never answers must not hang the operator).
const LOAD_DEADLINE: Duration = Duration::from_secs(5);

/// `manifest::load_dir` off the async runtime, within [`LOAD_DEADLINE`].
async fn load_manifests(dir: &Path) -> Result<LoadedSet, ReconcileError> {
    let d = dir.to_path_buf();
    let task = tokio::task::spawn_blocking(move || manifest::load_dir(&d));
    match tokio::time::timeout(LOAD_DEADLINE, task).await {
        Ok(Ok(r)) => Ok(r?),
        Ok(Err(e)) => Err(ReconcileError::Stuck(format!(
            "loading manifests failed: {e}"
        ))),
        Err(_) => Err(ReconcileError::Stuck(format!(
            "reading the manifests in {} did not finish within {LOAD_DEADLINE:?}; is one of them on a hung filesystem?",
            dir.display()
        ))),
    }
}

impl Reconciler {
    /// A start job handed out by an earlier pass failed: the object is not
    /// Ready, and backs off like a failure found in a pass.
    pub fn start_failed(&mut self, manifest: &str, error: &str, status: &mut Status) {
        let Some(obj) = status.objects.get_mut(manifest) else {
            return;
        };
        obj.set_condition("Ready", "False", "ApplyFailed", error);
        obj.failures += 1;
        self.backoff.insert(
            manifest.to_string(),
            Backoff {
                until: Instant::now() + backoff_delay(obj.failures),
                spec_hash: obj.spec_hash.clone(),
            },
        );
    }

    async fn manager_dirs(&self, sd: &Systemd) -> &ManagerDirs {
        if let Some(d) = self.dirs.get() {
            return d;
        }
        match sd.unit_path().await {
            Ok(p) => self.dirs.get_or_init(|| ManagerDirs::from_unit_path(&p)),
            Err(_) => self.dirs.get_or_init(ManagerDirs::from_env),
        }
    }

    pub fn new(loc: Locations, exe: PathBuf) -> Reconciler {
        let render_ctx = RenderContext {
            exe,
            manifests: loc.manifests.clone(),
            state_dir: loc.state_dir.clone(),
            unit_dir: loc.unit_dir.clone(),
            bus: loc.bus.clone(),
        };
        Reconciler {
            loc,
            render_ctx,
            backoff: HashMap::new(),
            job_timeout: Duration::from_secs(90),
            reload_retry: HashMap::new(),
            rejected_config: HashMap::new(),
            config_issue: HashMap::new(),
            http: crate::reload::http_client(),
            start_wait: Duration::from_secs(90),
            job_batches: 0,
            waiting_ready: HashMap::new(),
            probes: HashMap::new(),
            inline_probes: true,
            gc_grace: DEFAULT_GC_GRACE,
            missing_since: HashMap::new(),
            recover_restores: true,
            dirs: std::sync::OnceLock::new(),
        }
    }

    /// Load, render and observe, then plan. Changes nothing, except that
    /// it first finishes or undoes interrupted restores (see
    /// [`crate::journal`]; off when `recover_restores` is false).
    pub async fn prepare(
        &mut self,
        sd: &Systemd,
        status: &Status,
    ) -> Result<Prepared, ReconcileError> {
        if self.recover_restores {
            crate::journal::recover_interrupted(&self.loc, sd).await;
        }
        let t = Instant::now();
        let loaded = load_manifests(&self.loc.manifests).await?;
        // Holds found there keep the operator off a service: trust them
        // only in a directory nobody else can write.
        self.loc.check_state_dir()?;
        tracing::debug!(elapsed = ?t.elapsed(), manifests = loaded.manifests.len(), "loaded manifests");
        let mut held = Held {
            names: loaded.held.keys().cloned().collect(),
            files: loaded.broken_files.clone(),
        };
        // Files with any error hold the units they produced before.
        for e in &loaded.errors {
            held.files.insert(e.file.clone());
        }
        // A restore in progress holds its service: leave it exactly as is.
        let holds = crate::hold::active_holds(&self.loc.state_dir);
        let now = Instant::now();
        let mut backing_off = BTreeSet::new();
        let mut desired = Vec::new();
        for m in &loaded.manifests {
            if holds.contains(&m.name) {
                held.names.insert(m.name.clone());
                continue;
            }
            if let Some(b) = self.backoff.get(&m.name)
                && b.until > now
                && b.spec_hash == manifest::spec_hash(m)
            {
                backing_off.insert(m.name.clone());
                held.names.insert(m.name.clone());
                continue;
            }
            desired.extend(render::render(m, &self.render_ctx));
        }
        // Issue 12 hook: a pinned revision (rollback, undo) replaces the
        // manifest's unit bytes.
        crate::rollout::substitute(&self.loc.state_dir, &mut desired);
        let observed = self.observe(sd, &desired, status).await?;
        let gc_waiting = self.gc_grace_holds(&loaded, &mut held, &observed, now);
        let plan = plan::plan(&self.loc.unit_dir, &desired, &held, &observed);
        Ok(Prepared {
            loaded,
            desired,
            held,
            observed,
            plan,
            backing_off,
            on_hold: holds.into_iter().collect(),
            gc_waiting,
        })
    }

    /// Hold the units of manifests that disappeared within the grace
    /// period, so a delete-and-recreate never stops a service. Returns when
    /// each grace ends.
    fn gc_grace_holds(
        &mut self,
        loaded: &LoadedSet,
        held: &mut Held,
        observed: &Observed,
        now: Instant,
    ) -> BTreeMap<String, Instant> {
        let present: BTreeSet<&str> = loaded
            .manifests
            .iter()
            .map(|m| m.name.as_str())
            .chain(loaded.held.keys().map(String::as_str))
            .collect();
        let missing: BTreeSet<String> = observed
            .files
            .values()
            .filter(|f| f.source.as_ref().is_none_or(|s| !held.files.contains(s)))
            .filter_map(|f| f.marker.clone())
            .filter(|owner| !present.contains(owner.as_str()))
            .collect();
        for back in self.missing_since.keys().filter(|n| !missing.contains(*n)) {
            if present.contains(back.as_str()) {
                tracing::info!(manifest = %back, "manifest is back within the grace period; its units were left running");
            }
        }
        self.missing_since.retain(|n, _| missing.contains(n));
        let mut waiting = BTreeMap::new();
        for owner in missing {
            let since = *self.missing_since.entry(owner.clone()).or_insert_with(|| {
                if !self.gc_grace.is_zero() {
                    tracing::info!(manifest = %owner, grace = ?self.gc_grace, "manifest disappeared; its units are kept for the grace period in case it comes back");
                }
                now
            });
            let until = since + self.gc_grace;
            if now < until {
                held.names.insert(owner.clone());
                waiting.insert(owner, until);
            }
        }
        waiting
    }

    /// Execute a prepared plan, then refresh status. Returns the report.
    ///
    /// # Guarantees
    /// Only units carrying unitlet's marker are stopped, disabled or
    /// removed (the planner guarantees it; the applier re-checks the file
    /// before removing). One daemon-reload per plan at most.
    pub async fn apply(
        &mut self,
        sd: &Systemd,
        prep: Prepared,
        status: &mut Status,
    ) -> Result<PassReport, ReconcileError> {
        let started = Instant::now();
        // A readiness wait ends by its deadline; one still listed well past
        // it was lost (its task aborted when the bus went away): forget it,
        // so the Service is probed again instead of showing Starting for ever.
        self.waiting_ready
            .retain(|_, until| *until + Duration::from_secs(5) > started);
        let mut report = PassReport {
            actions: prep.plan.actions.len(),
            daemon_reloads: prep.plan.daemon_reloads(),
            ..Default::default()
        };
        let mut failures: BTreeMap<String, String> = BTreeMap::new();
        // Manifests whose unit had failed on its own and was started again:
        // not an apply failure, but it counts for backoff so a crash loop
        // is not a tight loop.
        let mut started_ok: BTreeSet<String> = BTreeSet::new();
        // Issue 12: Alertmanager silences made before planned restarts.
        let mut silenced = BTreeMap::new();
        let crashed: BTreeSet<String> = prep
            .plan
            .actions
            .iter()
            .filter(|a| a.op == Op::Start && a.reason.starts_with("unit failed"))
            .map(|a| a.manifest.clone())
            .collect();
        let fail = |failures: &mut BTreeMap<String, String>, m: &str, e: String| {
            failures.entry(m.to_string()).or_insert(e);
        };

        let mut deferred_jobs: Option<JobsWork> = None;
        if !prep.plan.is_empty() {
            // Subscribe before any job is queued.
            let mut jobs_stream = sd.job_stream().await?;
            let actions = &prep.plan.actions;
            tracing::debug!(elapsed = ?started.elapsed(), "subscribed to jobs");

            // 1. Stops (GC and state: stopped), waited for before files change.
            let mut stop_jobs = Vec::new();
            for a in actions.iter().filter(|a| a.op == Op::Stop) {
                match sd.queue(&a.unit, JobKind::Stop).await {
                    Ok(j) => stop_jobs.push((a, j)),
                    Err(e) => fail(&mut failures, &a.manifest, e.to_string()),
                }
            }
            let jobs: Vec<_> = stop_jobs.iter().map(|(_, j)| j.clone()).collect();
            let results = jobs_stream.wait(sd, &jobs, self.job_timeout).await;
            for ((a, _), r) in stop_jobs.iter().zip(results) {
                match r {
                    Ok(()) => status.event(
                        &a.manifest,
                        "Normal",
                        "Stopped",
                        format!("stopped {}: {}", a.unit, a.reason),
                    ),
                    Err(e) => {
                        status.event(&a.manifest, "Warning", "StopFailed", e.to_string());
                        fail(&mut failures, &a.manifest, e.to_string());
                    }
                }
            }

            // 2. Disables, batched.
            let disables: Vec<String> = actions
                .iter()
                .filter(|a| a.op == Op::Disable)
                .map(|a| a.unit.clone())
                .collect();
            if let Err(e) = sd.disable(&disables).await {
                for a in actions.iter().filter(|a| a.op == Op::Disable) {
                    fail(&mut failures, &a.manifest, e.to_string());
                }
            }

            // 3. Files: all writes with one sync, then removals.
            let writes: Vec<(&crate::plan::Action, &Path, &[u8])> = actions
                .iter()
                .filter_map(|a| match &a.op {
                    Op::Write { path, content } => Some((a, path.as_path(), content.as_bytes())),
                    _ => None,
                })
                .collect();
            let owned: Vec<(PathBuf, Vec<u8>)> = writes
                .iter()
                .map(|(_, p, c)| (p.to_path_buf(), c.to_vec()))
                .collect();
            // Enables by symlink, before the daemon-reload that loads them
            // (only when one follows: systemd caches what it last read of a
            // unit's enablement until then), made while the unit files are
            // written: they are independent, in different directories.
            let config = self.manager_dirs(sd).await.config.clone();
            let reload_follows = prep.plan.daemon_reloads() > 0;
            let to_link: Vec<(String, String)> = actions
                .iter()
                .filter(|a| a.op == Op::Enable && reload_follows)
                .filter_map(|a| {
                    let d = prep.desired.iter().find(|d| d.name == a.unit)?;
                    Some((a.unit.clone(), d.content.clone()))
                })
                .collect();
            let unit_dir = self.loc.unit_dir.clone();
            let write = tokio::task::spawn_blocking(move || {
                let batch: Vec<(&Path, &[u8], u32)> = owned
                    .iter()
                    .map(|(p, c)| (p.as_path(), c.as_slice(), 0o644))
                    .collect();
                fsutil::atomic_write_batch(&batch)
            });
            let link = tokio::task::spawn_blocking(move || {
                to_link
                    .into_iter()
                    .filter(|(unit, content)| {
                        enable_by_links(&config, &unit_dir, unit, content).unwrap_or(false)
                    })
                    .map(|(unit, _)| unit)
                    .collect::<BTreeSet<String>>()
            });
            let (written, linked) = tokio::join!(write, link);
            let written = written
                .map_err(|e| ReconcileError::Stuck(format!("writing unit files failed: {e}")))?;
            let linked = linked.unwrap_or_default();
            tracing::debug!(elapsed = ?started.elapsed(), linked = linked.len(), "enabled by links");
            for ((a, path, _), r) in writes.iter().zip(written) {
                if let Err(source) = r {
                    let e = ReconcileError::UnitDir {
                        what: "write unit file",
                        path: path.to_path_buf(),
                        source,
                    };
                    fail(&mut failures, &a.manifest, crate::error_chain(&e));
                }
            }
            for a in actions {
                if let Op::Remove { path } = &a.op {
                    // Re-check ownership right before deleting.
                    let still_ours = std::fs::read_to_string(path)
                        .ok()
                        .and_then(|c| render::marker_of(&c))
                        .as_deref()
                        == Some(a.manifest.as_str());
                    if still_ours {
                        if let Err(source) = fsutil::remove_durable(path) {
                            let e = ReconcileError::UnitDir {
                                what: "remove unit file",
                                path: path.clone(),
                                source,
                            };
                            fail(&mut failures, &a.manifest, crate::error_chain(&e));
                        } else {
                            sd.reset_failed(&a.unit).await;
                            let _ = self.manager_dirs(sd).await.remove_limit_dropins(&a.unit);
                            status.applied.remove(&a.unit);
                            status.event(
                                &a.manifest,
                                "Normal",
                                "Removed",
                                format!("removed {} ({})", a.unit, a.reason),
                            );
                        }
                    }
                }
            }

            // Limits: drop-ins that override the unit file go before the
            // daemon-reload, which then applies the unit file's limits live.
            for a in actions.iter().filter(|a| matches!(a.op, Op::SetLimits(_))) {
                if let Err(e) = self.manager_dirs(sd).await.remove_limit_dropins(&a.unit) {
                    fail(
                        &mut failures,
                        &a.manifest,
                        format!("cannot reset the resource limits of {}: {e}", a.unit),
                    );
                }
            }

            tracing::debug!(elapsed = ?started.elapsed(), "files written");
            // 4. One daemon-reload for the whole batch.
            if prep.plan.daemon_reloads() > 0 {
                sd.reload().await?;
            }

            tracing::debug!(elapsed = ?started.elapsed(), "daemon-reload done");
            // 5. Enables, batched.
            let enables: Vec<String> = actions
                .iter()
                .filter(|a| a.op == Op::Enable && !failures.contains_key(&a.manifest))
                .filter(|a| !linked.contains(&a.unit))
                .map(|a| a.unit.clone())
                .collect();
            if let Err(e) = sd.enable(&enables).await {
                for a in actions.iter().filter(|a| a.op == Op::Enable) {
                    fail(&mut failures, &a.manifest, e.to_string());
                }
            }

            tracing::debug!(elapsed = ?started.elapsed(), "enabled");
            // 6. Live limits: applied by the daemon-reload above.
            for a in actions {
                if matches!(a.op, Op::SetLimits(_)) && !failures.contains_key(&a.manifest) {
                    status.event(
                        &a.manifest,
                        "Normal",
                        "LimitsApplied",
                        format!("{}: {}", a.unit, a.reason),
                    );
                }
            }

            // 7. Starts and restarts, all queued, then waited for together:
            // systemd orders them by After=.
            // Queued concurrently: one round trip per job would dominate
            // a large batch.
            // A restore may have taken a hold since this pass began.
            let holds_now = crate::hold::active_holds(&self.loc.state_dir);
            let to_start: Vec<(&crate::plan::Action, JobKind)> = actions
                .iter()
                .filter(|a| !failures.contains_key(&a.manifest) && !holds_now.contains(&a.manifest))
                .filter_map(|a| match a.op {
                    Op::Start => Some((a, JobKind::Start)),
                    Op::Restart => Some((a, JobKind::Restart)),
                    _ => None,
                })
                .collect();
            // Issue 12 hook: silence planned restarts first (bounded wait).
            silenced =
                crate::alertmanager::silence_restarts(&self.loc, &prep, &to_start, status).await;
            let queued =
                futures_util::future::join_all(to_start.iter().map(|(a, k)| sd.queue(&a.unit, *k)))
                    .await;
            tracing::debug!(elapsed = ?started.elapsed(), jobs = queued.len(), "start jobs queued");
            let mut start_jobs = Vec::new();
            for ((a, _), q) in to_start.into_iter().zip(queued) {
                match q {
                    Ok(j) => start_jobs.push((a, j)),
                    Err(e) => fail(&mut failures, &a.manifest, e.to_string()),
                }
            }
            if self.start_wait.is_zero() {
                // The operator never waits for a start here: the jobs'
                // ends are waited for beside the loop (`Work::Jobs`), and
                // their outcome folded in by another pass.
                for (a, _) in &start_jobs {
                    started_ok.insert(a.manifest.clone());
                }
                if !start_jobs.is_empty() {
                    self.job_batches += 1;
                    deferred_jobs = Some(JobsWork {
                        batch: self.job_batches,
                        stream: jobs_stream,
                        jobs: start_jobs
                            .iter()
                            .map(|(a, j)| StartedJob {
                                manifest: a.manifest.clone(),
                                reason: a.reason.clone(),
                                job: j.clone(),
                            })
                            .collect(),
                    });
                }
            } else {
                let jobs: Vec<_> = start_jobs.iter().map(|(_, j)| j.clone()).collect();
                let results = jobs_stream.wait(sd, &jobs, self.start_wait).await;
                for ((a, j), r) in start_jobs.iter().zip(results) {
                    if r.is_ok() {
                        started_ok.insert(a.manifest.clone());
                    }
                    let r = r.map_err(|e| e.to_string());
                    job_event(status, &a.manifest, &j.unit, j.kind, &a.reason, &r);
                    if let Err(e) = r {
                        fail(&mut failures, &a.manifest, e);
                    }
                }
            }
            tracing::debug!(elapsed = ?started.elapsed(), "start jobs done");
            // 8. Verify: the live limits of every service this plan touched
            // must now be the manifest's.
            for (manifest, msg) in self.verify_limits(sd, &prep, &failures).await {
                status.event(&manifest, "Warning", "LimitsNotApplied", msg.clone());
                fail(&mut failures, &manifest, msg);
            }
            for a in actions.iter().filter(|a| matches!(a.op, Op::Write { .. })) {
                if !failures.contains_key(&a.manifest) {
                    status.event(
                        &a.manifest,
                        "Normal",
                        "Written",
                        format!("wrote {}: {}", a.unit, a.reason),
                    );
                }
            }
        }

        // Readiness of what was just (re)started, then config changes:
        // handed out, never waited for here.
        report.work = self.readiness_work(&prep, &started_ok, &failures);
        // Issue 12 hook: new revisions are recorded and watched.
        report.work.extend(
            crate::rollout::record(&self.loc, &prep, &started_ok, &failures, silenced, status)
                .into_iter()
                .map(|w| Work::Rollout(Box::new(w))),
        );
        report.work.extend(deferred_jobs.map(Work::Jobs));
        report.work.extend(
            self.config_phase(sd, &prep, &started_ok, &failures, status)
                .await,
        );

        // Record what is now applied in full.
        for d in &prep.desired {
            if !failures.contains_key(&d.manifest)
                && !prep.plan.conflicts.iter().any(|c| c.manifest == d.manifest)
            {
                status
                    .applied
                    .insert(d.unit_name().to_string(), plan::content_hash(&d.content));
            }
        }

        // Backoff bookkeeping.
        let now = Instant::now();
        for m in &prep.loaded.manifests {
            if prep.backing_off.contains(&m.name) {
                continue;
            }
            let hash = manifest::spec_hash(m);
            let obj = status
                .objects
                .entry(m.name.clone())
                .or_insert_with(|| empty_object(m.kind(), &m.name, &m.file));
            if failures.contains_key(&m.name) || crashed.contains(&m.name) {
                obj.failures = if obj.spec_hash == hash {
                    obj.failures + 1
                } else {
                    1
                };
                self.backoff.insert(
                    m.name.clone(),
                    Backoff {
                        until: now + backoff_delay(obj.failures),
                        spec_hash: hash.clone(),
                    },
                );
            } else {
                obj.failures = 0;
                self.backoff.remove(&m.name);
            }
            obj.spec_hash = hash;
        }
        report.retry_at = self
            .backoff
            .values()
            .map(|b| b.until)
            .chain(self.reload_retry.values().map(|r| r.next))
            .chain(prep.gc_waiting.values().copied())
            .min();

        let readiness = self.readiness_view(&prep).await;
        refresh_status(sd, &prep, &failures, &self.config_issue, &readiness, status).await?;
        // Issue 12 hook: Ready says when a rolled-back or pinned revision runs.
        crate::rollout::conditions(&self.loc.state_dir, &prep.loaded.manifests, status);
        if !self.inline_probes {
            // Running Services' readiness is probed beside the loop.
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
                    report.work.push(Work::Probe {
                        name: m.name.clone(),
                        url: r.url.clone(),
                    });
                }
            }
        }
        report.ready = status.objects.values().filter(|o| o.is_ready()).count();
        report.not_ready = status.objects.len() - report.ready;
        report.failures = failures;
        report.elapsed = started.elapsed();
        Ok(report)
    }
}

impl Reconciler {
    /// Compare the live limits of each running service the plan wrote,
    /// started, restarted or set limits on with its unit file's. Returns
    /// `(manifest, message)` for each that differs: an apply failure.
    async fn verify_limits(
        &self,
        sd: &Systemd,
        prep: &Prepared,
        failures: &BTreeMap<String, String>,
    ) -> Vec<(String, String)> {
        let mut out = Vec::new();
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
        for d in &prep.desired {
            let running = matches!(
                d.role,
                Role::Main {
                    state: DesiredState::Running,
                    ..
                }
            );
            // Limits are worth a look when the unit file sets some, or the
            // unit had some before (in its file or set outside it).
            let had_limits = plan::has_limit_keys(&d.content)
                || prep
                    .observed
                    .files
                    .get(&d.name)
                    .is_some_and(|f| plan::has_limit_keys(&f.content))
                || prep
                    .observed
                    .live
                    .get(&d.name)
                    .is_some_and(|l| !l.limit_dropins.is_empty());
            if !running
                || !touched.contains(d.name.as_str())
                || failures.contains_key(&d.manifest)
                || !had_limits
            {
                continue;
            }
            let wanted = plan::WantedLimits::of_unit(&d.content, prep.observed.default_tasks_max);
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

impl DesiredUnit {
    pub fn unit_name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff_delay(1), Duration::from_secs(1));
        assert_eq!(backoff_delay(2), Duration::from_secs(2));
        assert_eq!(backoff_delay(5), Duration::from_secs(16));
        assert_eq!(backoff_delay(30), Duration::from_secs(256));
    }
}
