//! One reconcile pass: load → render → observe → plan → apply → status.
//!
//! The pass is level-triggered: it never asks *why* it runs, it compares
//! what the manifests want with what is on disk and live in systemd.
//! `apply` runs one pass; `run` runs them on events and on a timer.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

use crate::locations::Locations;
use crate::manager::ManagerError;
use crate::manager::{JobKind, UserManager};
use crate::manifest::{self, LoadError, LoadedSet};
use crate::plan::{self, Held, Observed, Plan};
use crate::render::{self, DesiredUnit, RenderContext};
use crate::status::{EventReason, EventType, Reason, Status};
use crate::work::Work;

mod apply;
mod config;
mod finish;
mod observe;
#[cfg(test)]
pub(crate) mod pass_tests;
pub mod ready;
mod status;

pub use observe::*;
pub use status::*;

/// Why a pass could not be prepared or applied.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The manifests directory cannot be used; nothing was changed.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// systemd could not be reached or refused a batch operation.
    #[error(transparent)]
    Systemd(#[from] ManagerError),
    /// The unit directory cannot be read or written.
    #[error("cannot {what} {path}")]
    UnitDir {
        /// What was being done ("write unit file", "read unit directory", …).
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error underneath.
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
    /// Whether the user manager's connection was lost (the operator
    /// reconnects rather than counting a failed pass).
    pub fn is_disconnect(&self) -> bool {
        matches!(self, ReconcileError::Systemd(e) if e.is_disconnect())
    }
}

/// Everything a pass computed before touching anything: what `plan` prints.
pub struct Prepared {
    pub(crate) loaded: LoadedSet,
    pub(crate) desired: Vec<DesiredUnit>,
    pub(crate) held: Held,
    pub(crate) observed: Observed,
    /// The actions the pass takes, each with its reason.
    pub plan: Plan,
    /// Manifests skipped this pass because they are backing off.
    pub backing_off: BTreeSet<String>,
    /// Manifests a restore holds: left exactly as they are.
    pub on_hold: BTreeSet<String>,
    /// Manifests that disappeared less than `gc_grace` ago: their units
    /// are left alone until then (by manifest: when the grace ends).
    pub gc_waiting: BTreeMap<String, Instant>,
    /// Services whose manifest changed since their revision was pinned:
    /// what the manifest renders to (the pin ends, `rollout::policy::release`).
    pub unpinned: BTreeMap<String, String>,
}

/// The outcome of one pass.
#[derive(Debug, Default)]
pub struct PassReport {
    /// How many actions the plan had.
    pub actions: usize,
    /// How many `daemon-reload`s the plan had.
    pub daemon_reloads: usize,
    /// Manifest → error from executing its actions.
    pub failures: BTreeMap<String, String>,
    /// Objects Ready after the pass.
    pub ready: usize,
    /// Objects not Ready after the pass.
    pub not_ready: usize,
    /// How long the pass took.
    pub elapsed: Duration,
    /// When the earliest backing-off manifest (or failing reload) should
    /// be retried.
    pub retry_at: Option<Instant>,
    /// What was done about changed config files, by manifest.
    pub reloads: Vec<(String, crate::reload::ReloadOutcome)>,
    /// Waits handed out by the pass (readiness, config changes, probes).
    pub work: Vec<Work>,
    /// Objects whose units the pass left alone: backing off, held by a
    /// restore, a broken manifest file or the gc grace. Not reconciled.
    pub skipped: BTreeSet<String>,
    /// The Backups' last runs as the pass read them (for their Ready
    /// condition), by name: the metrics take them from here.
    pub last_runs: BTreeMap<String, crate::backup::LastRun>,
}

impl PassReport {
    /// How the pass went, for `unitlet_reconcile_total{result}`: an
    /// object's failed actions make it an error; a scheduled retry or
    /// backoff, or a wait handed out (anything but the readiness probes
    /// every pass hands out for running Services), a requeue; else it
    /// converged.
    pub fn result(&self) -> crate::metrics::PassResult {
        use crate::metrics::PassResult;
        let waits = self.work.iter().any(|w| !matches!(w, Work::Probe { .. }));
        if !self.failures.is_empty() {
            PassResult::Error
        } else if self.retry_at.is_some() || waits {
            PassResult::Requeue
        } else {
            PassResult::Success
        }
    }
}

/// Per-object backoff after failures, reset on success or on an edit.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    pub(crate) until: Instant,
    pub(crate) spec_hash: String,
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
        JobKind::Restart => (EventReason::Restarted, EventReason::RestartFailed),
        _ => (EventReason::Started, EventReason::StartFailed),
    };
    match result {
        Ok(()) => status.event(
            manifest,
            EventType::Normal,
            ok_reason,
            format!("{} {unit}: {reason}", ok_reason.as_str().to_lowercase()),
        ),
        Err(e) => status.event(manifest, EventType::Warning, bad_reason, e.clone()),
    }
}

/// The default of `--gc-grace`.
pub const DEFAULT_GC_GRACE: Duration = Duration::from_secs(2);

pub(crate) fn backoff_delay(failures: u32) -> Duration {
    let secs = 1u64 << failures.saturating_sub(1).min(8);
    Duration::from_secs(secs.min(300))
}

/// What survives between passes of one `run`.
pub struct Reconciler {
    loc: Locations,
    render_ctx: RenderContext,
    backoff: HashMap<String, Backoff>,
    /// How long to wait for each job.
    job_timeout: Duration,
    /// Failing reloads waiting for their next attempt, by manifest.
    reload_retry: HashMap<String, crate::reload::RetryState>,
    /// Config content that failed validation, by manifest: not validated
    /// again until it changes.
    rejected_config: HashMap<String, (String, String)>,
    /// Why a running service is not Ready because of its config or its
    /// readiness probe: `(reason, message)`, by manifest.
    config_issue: HashMap<String, (Reason, String)>,
    http: reqwest::Client,
    /// How long a pass waits for start jobs. `apply` waits for them to
    /// end (`job_timeout`); the operator (zero) hands the wait out as
    /// [`Work::Jobs`].
    start_wait: Duration,
    /// Batches of start jobs handed out, to tell them apart.
    job_batches: u64,
    /// Started Services waiting for their readiness URL, until when.
    waiting_ready: HashMap<String, Instant>,
    /// The last readiness probe of each running Service.
    probes: HashMap<String, Result<(), String>>,
    /// Probe readiness during the pass (`apply`) instead of handing probes
    /// out (`run`).
    inline_probes: bool,
    /// How long a manifest that disappeared is waited for before its units
    /// are stopped and removed (editors that delete and re-create, `git
    /// checkout`, `rsync --delete-after`).
    gc_grace: Duration,
    /// When each manifest owning units was first seen missing.
    missing_since: HashMap<String, Instant>,
    /// The manager's directories, read once from its `UnitPath`.
    dirs: std::sync::OnceLock<ManagerDirs>,
    /// What start batches handed out as [`Work::Jobs`] leave for after
    /// their jobs end, by batch: see [`AfterJobs`].
    after_jobs: BTreeMap<u64, AfterJobs>,
    /// The same, of batches whose jobs have ended: done first thing in the
    /// next [`Reconciler::apply`].
    after_jobs_due: Vec<AfterJobs>,
    /// First revisions recorded but not saved yet (saved with their
    /// batch's [`AfterJobs`]), by Service: what `rollout::policy::record` reads
    /// instead of the file until then.
    unsaved_histories: BTreeMap<String, Vec<u8>>,
    /// The binary running now; Backup units run the recorded program
    /// instead while there is one (see [`crate::program`]).
    running_program: PathBuf,
    /// Whether this pass found a usable record of the program.
    program_recorded: bool,
}

/// Bookkeeping a batch of new Services leaves until systemd has started
/// them: their enablement links and their first rollout revisions. Made
/// while systemd starts 200 units, these 400 file creations took CPU from
/// it on a two-core machine; nothing waits for them (a Service's status and
/// its start do not), and losing them to a crash loses nothing: the next
/// pass enables a unit found not enabled, and a Service without a history
/// keeps its unit file as revision 1 at its next change.
#[derive(Debug, Default)]
pub(crate) struct AfterJobs {
    /// `(manifest, unit, unit file content)` to enable by links.
    pub links: Vec<(String, String, String)>,
    /// Services whose history waits in `unsaved_histories`.
    pub histories: Vec<String>,
    /// Unit signals paused while a large batch starts; resumed when its
    /// jobs end (see [`UserManager::pause_unit_signals`]).
    pub pause: Option<crate::manager::SignalPause>,
}

/// How long loading the manifests may take before the pass gives up (a
/// file that never answers must not hang the operator).
const LOAD_DEADLINE: Duration = Duration::from_secs(5);

/// Unit files are read only this far (unitlet's own are far smaller).
const MAX_UNIT_BYTES: u64 = 4 * 1024 * 1024;

/// `manifest::load_dir` off the async runtime, within [`LOAD_DEADLINE`]
/// (a retry waits for a load still hung, see [`crate::fsutil::off_runtime`]).
async fn load_manifests(dir: &Path) -> Result<LoadedSet, ReconcileError> {
    let d = dir.to_path_buf();
    match crate::fsutil::off_runtime(dir, LOAD_DEADLINE, move || manifest::load_dir(&d)).await {
        Ok(r) => Ok(r?),
        Err(e) => Err(ReconcileError::Stuck(format!(
            "reading the manifests in {}: {e}",
            dir.display()
        ))),
    }
}

/// [`crate::journal::held_services`] off the async runtime, within
/// [`crate::fsutil::READ_DEADLINE`]. Unknown holds stop the pass: a
/// restore's service must not be touched.
async fn active_holds(state_dir: &Path) -> Result<Vec<String>, ReconcileError> {
    let d = state_dir.to_path_buf();
    let key = d.join("holds");
    crate::fsutil::off_runtime(&key, crate::fsutil::READ_DEADLINE, move || {
        crate::journal::held_services(&d)
    })
    .await
    .map_err(|e| ReconcileError::Stuck(format!("reading the holds in {}: {e}", key.display())))
}

impl Reconciler {
    /// A start job handed out by an earlier pass failed: the object is not
    /// Ready, and backs off like a failure found in a pass.
    pub fn start_failed(&mut self, manifest: &str, error: &str, status: &mut Status) {
        let Some(obj) = status.objects.get_mut(manifest) else {
            return;
        };
        let unit = obj
            .unit
            .as_ref()
            .map(|u| u.name.clone())
            .unwrap_or_default();
        let mut inputs = ready::Inputs::new(manifest, &unit, manifest::DesiredState::Running);
        inputs.previous = obj.ready();
        inputs.apply_failed = Some(error);
        if let Some(d) = ready::decide(&inputs) {
            d.apply(obj);
        }
        obj.failures += 1;
        self.backoff.insert(
            manifest.to_string(),
            Backoff {
                until: Instant::now() + backoff_delay(obj.failures),
                spec_hash: obj.spec_hash.clone(),
            },
        );
    }

    /// How long each job is waited for (`apply --timeout`; the
    /// operator's job deadline).
    pub fn set_job_timeout(&mut self, timeout: Duration) {
        self.job_timeout = timeout;
    }

    /// How long a pass waits for its start jobs: `apply` and `rollout
    /// undo` wait; the operator (zero) hands the wait out as [`Work::Jobs`].
    pub fn set_start_wait(&mut self, wait: Duration) {
        self.start_wait = wait;
    }

    /// Hand readiness probes out as work (`run`) instead of probing
    /// during the pass (`apply`).
    pub fn set_inline_probes(&mut self, inline: bool) {
        self.inline_probes = inline;
    }

    /// How long a manifest that disappeared is waited for before its
    /// units are stopped and removed (`--gc-grace`; zero for `plan`).
    pub fn set_gc_grace(&mut self, grace: Duration) {
        self.gc_grace = grace;
    }

    /// Render Backup units with this program (`render` shows the one
    /// recorded, see [`crate::program`]).
    pub fn set_program(&mut self, exe: PathBuf) {
        self.render_ctx.exe = exe;
    }

    /// Where things are.
    pub fn locations(&self) -> &Locations {
        &self.loc
    }

    /// How long each job is waited for.
    pub fn job_timeout(&self) -> Duration {
        self.job_timeout
    }

    /// The last readiness probe of Service `name`, if any.
    pub fn last_probe(&self, name: &str) -> Option<&Result<(), String>> {
        self.probes.get(name)
    }

    /// Whether any object is backing off.
    pub fn is_backing_off(&self) -> bool {
        !self.backoff.is_empty()
    }

    /// What units are rendered with (the program Backup units run, the
    /// directories).
    pub fn render_context(&self) -> &RenderContext {
        &self.render_ctx
    }

    /// The HTTP client readiness probes, reloads and silences use: what
    /// handed-out work runs with.
    pub fn http_client(&self) -> reqwest::Client {
        self.http.clone()
    }

    async fn manager_dirs(&self, sd: &impl UserManager) -> &ManagerDirs {
        if let Some(d) = self.dirs.get() {
            return d;
        }
        match sd.unit_path().await {
            Ok(p) => self.dirs.get_or_init(|| ManagerDirs::from_unit_path(&p)),
            Err(_) => self.dirs.get_or_init(ManagerDirs::from_env),
        }
    }

    /// A reconciler for the directories of `loc`, whose Backup units run
    /// the unitlet binary `exe`.
    pub fn new(loc: Locations, exe: PathBuf) -> Reconciler {
        let render_ctx = RenderContext {
            exe: exe.clone(),
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
            dirs: std::sync::OnceLock::new(),
            after_jobs: BTreeMap::new(),
            after_jobs_due: Vec::new(),
            unsaved_histories: BTreeMap::new(),
            running_program: exe,
            program_recorded: false,
        }
    }

    /// Render Backup units with the recorded program, or the running one
    /// when none is recorded (read off the runtime: a file read).
    async fn resolve_program(&mut self) {
        let loc = self.loc.clone();
        let task = tokio::task::spawn_blocking(move || crate::program::recorded(&loc));
        let recorded = tokio::time::timeout(LOAD_DEADLINE, task)
            .await
            .ok()
            .and_then(Result::ok)
            .flatten();
        self.program_recorded = recorded.is_some();
        self.render_ctx.exe = recorded.unwrap_or_else(|| self.running_program.clone());
    }

    /// Record the program Backup units run the first time they are
    /// written (under the state lock, like every write of a pass).
    fn record_program(&mut self, prep: &Prepared) {
        if self.program_recorded || !prep.desired.iter().any(|d| d.role == render::Role::Oneshot) {
            return;
        }
        match crate::program::record(&self.loc, &self.render_ctx.exe) {
            Ok(true) => {
                tracing::info!(program = %self.render_ctx.exe.display(), "recorded the program Backup units run");
                self.program_recorded = true;
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(
                "cannot record the program Backup units run in {}: {e}",
                crate::program::record_file(&self.loc).display()
            ),
        }
    }

    /// A handed-out batch's jobs ended: what it left for then is due.
    pub(crate) fn jobs_ended(&mut self, batch: u64) {
        if let Some(a) = self.after_jobs.remove(&batch) {
            self.due(a);
        }
    }

    /// Due at the next pass; unit signals again from now on (the pass
    /// the pause's end wakes looks at every unit).
    fn due(&mut self, mut a: AfterJobs) {
        a.pause = None;
        self.after_jobs_due.push(a);
    }

    /// The operator lost its handed-out work (the bus went away): what the
    /// batches left is due at the next pass, which finds every unit as it
    /// is (links of a unit still starting do no harm).
    pub fn handed_out_work_lost(&mut self) {
        for (_, a) in std::mem::take(&mut self.after_jobs) {
            self.due(a);
        }
    }

    /// Units whose links wait for their batch (due or not): not planned
    /// for `EnableUnitFiles` meanwhile.
    fn links_waiting(&self) -> BTreeSet<&str> {
        self.after_jobs
            .values()
            .chain(&self.after_jobs_due)
            .flat_map(|a| a.links.iter().map(|(_, u, _)| u.as_str()))
            .collect()
    }

    /// Load, render and observe, then plan. Changes nothing (interrupted
    /// restores are recovered before, by `prometheus::recover::Recoveries`,
    /// under the same lock).
    pub async fn prepare(
        &mut self,
        sd: &impl UserManager,
        status: &Status,
    ) -> Result<Prepared, ReconcileError> {
        // Holds and restore journals found there keep the operator off a
        // service and have recovery move data: nothing is read from a
        // directory others can write.
        self.loc.check_state_dir()?;
        let t = Instant::now();
        let loaded = load_manifests(&self.loc.manifests).await?;
        self.resolve_program().await;
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
        let holds = active_holds(&self.loc.state_dir).await?;
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
        let missing = missing_programs(&loaded, &desired);
        let (desired, unpinned) = pinned_revisions(&self.loc.state_dir, desired).await?;
        let observed = self.observe(sd, &desired, status).await?;
        let gc_waiting = self.gc_grace_holds(&loaded, &mut held, &observed, now);
        let mut plan = plan::plan(&self.loc.unit_dir, &desired, &held, &observed);
        let waiting = self.links_waiting();
        plan.actions
            .retain(|a| !(a.op == plan::Op::Enable && waiting.contains(a.unit.as_str())));
        hold_back_missing_programs(&mut plan, &missing, &desired);
        Ok(Prepared {
            loaded,
            desired,
            held,
            observed,
            plan,
            backing_off,
            on_hold: holds.into_iter().collect(),
            gc_waiting,
            unpinned,
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
}

/// A pinned revision (rollback, undo) replaces the manifest's unit bytes
/// ([`crate::rollout::policy::substitute`]). It reads the histories: off
/// the runtime, within [`crate::fsutil::READ_DEADLINE`].
async fn pinned_revisions(
    state_dir: &Path,
    mut desired: Vec<DesiredUnit>,
) -> Result<(Vec<DesiredUnit>, BTreeMap<String, String>), ReconcileError> {
    let state_dir = state_dir.to_path_buf();
    let key = state_dir.join("rollouts");
    crate::fsutil::off_runtime(&key, crate::fsutil::READ_DEADLINE, move || {
        let unpinned = crate::rollout::policy::substitute(&state_dir, &mut desired);
        (desired, unpinned)
    })
    .await
    .map_err(|e| {
        ReconcileError::Stuck(format!(
            "reading the rollout histories in {}: {e}",
            key.display()
        ))
    })
}

/// Services whose program is not installed, with their rendered service
/// unit (to tell a pinned revision, whose program may be there, apart).
fn missing_programs(loaded: &LoadedSet, desired: &[DesiredUnit]) -> BTreeMap<String, String> {
    loaded
        .manifests
        .iter()
        .filter(|m| status::missing_program(m).is_some())
        .filter_map(|m| {
            let unit = format!("{}.service", m.name);
            let u = desired.iter().find(|u| u.name == unit)?;
            Some((m.name.clone(), u.content.clone()))
        })
        .collect()
}

/// A Service whose program is not installed is not started: it would only
/// fail and be restarted by systemd again and again. It shows
/// BinaryMissing; a pass after the program appears (the resync at the
/// latest) starts it. A running one being changed to it is restarted as
/// usual (and rolled back), and a pinned revision is not held back.
fn hold_back_missing_programs(
    plan: &mut Plan,
    missing: &BTreeMap<String, String>,
    desired: &[DesiredUnit],
) {
    let missing: BTreeSet<&str> = missing
        .iter()
        .filter(|(name, content)| {
            let unit = format!("{name}.service");
            desired
                .iter()
                .any(|u| u.name == unit && &u.content == *content)
        })
        .map(|(name, _)| name.as_str())
        .collect();
    plan.actions
        .retain(|a| !(a.op == plan::Op::Start && missing.contains(a.manifest.as_str())));
}

impl DesiredUnit {
    pub(crate) fn unit_name(&self) -> &str {
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

    /// Issue 23 item 6: what `unitlet_reconcile_total{result}` says of a
    /// pass: the probes every pass hands out leave it converged; a wait
    /// or a retry left for later is a requeue; a failed action an error.
    #[test]
    fn a_pass_result_is_success_requeue_or_error() {
        use crate::metrics::PassResult;
        let probe = || Work::Probe {
            name: "web".into(),
            url: "http://127.0.0.1:1/ready".into(),
        };
        let mut r = PassReport {
            work: vec![probe()],
            ..PassReport::default()
        };
        assert_eq!(r.result(), PassResult::Success);
        r.work.push(Work::Readiness {
            name: "api".into(),
            url: "http://127.0.0.1:1/ready".into(),
            timeout: Duration::from_secs(5),
        });
        assert_eq!(r.result(), PassResult::Requeue);
        let backing_off = PassReport {
            retry_at: Some(Instant::now()),
            ..PassReport::default()
        };
        assert_eq!(backing_off.result(), PassResult::Requeue);
        r.failures.insert("api".into(), "write failed".into());
        assert_eq!(r.result(), PassResult::Error);
    }
}
