//! `unitlet run`: the operator loop.
//!
//! Events (a manifest file changed, a unit changed state, the resync timer,
//! a backoff expiring) only *trigger* a pass; triggers arriving while a pass
//! runs collapse into one more pass. Passes are serialised, so there is one
//! reconcile per object at a time, and every pass compares desired with
//! observed state from scratch (level-triggered).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::Notify;

use std::collections::HashMap;

use crate::locations::Locations;
use crate::lock::StateLock;
use crate::manager::UserManager;
use crate::metrics::Metrics;
use crate::prometheus::recover::Recoveries;
use crate::reconcile::{ReconcileError, Reconciler};
use crate::status::Status;
use crate::systemd::{self, Systemd};
use crate::work::{Outcome, Work, WorkKind};

/// What `unitlet run` was asked to do.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Where the manifests, state and unit directory are.
    pub loc: Locations,
    /// A pass at least this often, whatever else wakes the loop (`--resync`).
    pub resync: Duration,
    /// Where to serve metrics (`--metrics-addr`), if anywhere.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// The unitlet binary Backup oneshots run.
    pub exe: PathBuf,
    /// How long a manifest that disappeared is waited for before its
    /// units are stopped (`--gc-grace`).
    pub gc_grace: Duration,
    /// `--source etcd`: the etcd source and status publisher to run beside
    /// the loop (`loc.manifests` is then their materialised directory).
    pub fleet: Option<crate::fleet::FleetOptions>,
}

fn sd_notify(states: &[sd_notify::NotifyState<'_>]) {
    let _ = sd_notify::notify(false, states);
}

/// Watches the manifests directory (and its parent, so removal and
/// re-creation are seen) and the unit directory (so a hand edit is undone
/// promptly). Re-arms itself when a watched directory comes back.
///
/// Every change wakes a pass: a burst is collapsed once the directories
/// have been quiet for a while (see [`WATCH_QUIET`]; [`WATCH_MAX_DELAY`]
/// after its first change at most), and nothing is ever dropped. A semantic debouncer that
/// folds "created, then removed" into nothing, or swallows the writes that
/// follow a create, can leave a pass that read a half-written or vanished
/// file as the last one for an hour.
struct DirWatch {
    watcher: notify::RecommendedWatcher,
    watched: Vec<PathBuf>,
}

/// How long the watched directories must stay quiet before a pass: four
/// times the widest gap between the burst's changes so far, at least
/// [`WATCH_QUIET_MIN`] and at most [`WATCH_QUIET`]. A `cp` of 200 files
/// (gaps of microseconds) is taken 8 ms after its last file; a deploy tool
/// writing a file every 10 ms still lands in one pass.
const WATCH_QUIET: Duration = Duration::from_millis(30);
const WATCH_QUIET_MIN: Duration = Duration::from_millis(8);
/// The longest a stream of changes delays a pass.
const WATCH_MAX_DELAY: Duration = Duration::from_millis(500);

fn is_change(kind: &notify::EventKind) -> bool {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode, MetadataKind, ModifyKind};
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)) => false,
        _ => true,
    }
}

/// Whether `e` in the holds directory `holds` is no change to a pass: a
/// removal there is a stale hold cleaned up (by recovery, in a pass: it
/// must not wake the next), since a hold's owner removes it and *then*
/// closes it, and that close is what counts (see [`crate::hold`]).
fn is_quiet_hold_removal(e: &notify::Event, holds: &Path) -> bool {
    matches!(e.kind, notify::EventKind::Remove(_))
        && !e.paths.is_empty()
        && e.paths.iter().all(|p| p.parent() == Some(holds))
}

impl DirWatch {
    fn new(trigger: Arc<Notify>, holds: PathBuf) -> notify::Result<DirWatch> {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let watcher = notify::recommended_watcher(move |r: notify::Result<notify::Event>| {
            // Our own reads show up as access events: only changes count,
            // or every pass would trigger the next. An error (an overflowed
            // queue) may hide changes, so it counts as one.
            if r.as_ref().map_or(true, |e| {
                is_change(&e.kind) && !is_quiet_hold_removal(e, &holds)
            }) {
                let _ = tx.send(());
            }
        })?;
        std::thread::Builder::new()
            .name("unitlet-watch".into())
            .spawn(move || debounce(&rx, &trigger))
            .map_err(notify::Error::io)?;
        Ok(DirWatch {
            watcher,
            watched: vec![],
        })
    }

    /// Make sure every directory that exists is watched.
    fn arm(&mut self, dirs: &[&Path]) {
        for d in dirs {
            let want = d.to_path_buf();
            let alive = want.is_dir();
            let have = self.watched.contains(&want);
            if alive && !have {
                if self
                    .watcher
                    .watch(&want, RecursiveMode::NonRecursive)
                    .is_ok()
                {
                    self.watched.push(want);
                }
            } else if !alive && have {
                let _ = self.watcher.unwatch(&want);
                self.watched.retain(|w| w != &want);
            }
        }
    }
}

/// Collapse each burst of change signals into one wake-up of the loop.
fn debounce(rx: &std::sync::mpsc::Receiver<()>, trigger: &Notify) {
    use std::sync::mpsc::RecvTimeoutError;
    while rx.recv().is_ok() {
        let first = std::time::Instant::now();
        let (mut last, mut widest) = (first, Duration::ZERO);
        loop {
            let left = WATCH_MAX_DELAY.saturating_sub(first.elapsed());
            if left.is_zero() {
                break;
            }
            let quiet = (widest * 4).clamp(WATCH_QUIET_MIN, WATCH_QUIET);
            match rx.recv_timeout(quiet.min(left)) {
                Ok(()) => {
                    let now = std::time::Instant::now();
                    widest = widest.max(now - last);
                    last = now;
                }
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    trigger.notify_one();
                    return;
                }
            }
        }
        trigger.notify_one();
    }
}

/// A pass taking longer than this is considered hung: the watchdog is no
/// longer fed and systemd restarts us (when `WatchdogSec=` is set).
const MAX_PASS_SECS: u64 = 600;

/// How many objects' waits of one kind (readiness waits, config changes,
/// probes, rollout watches) run at once. Start-job batches take no slot:
/// one task per pass's batch, their deadline counting from their hand-out.
const MAX_CONCURRENT_WORK: usize = 16;

/// An unchanged status is still written this often, so `get` can tell a
/// live operator's status from a stale one.
const STATUS_HEARTBEAT: Duration = Duration::from_secs(10);

/// Waits handed out by passes, running beside the loop: at most one per
/// object and kind, at most [`MAX_CONCURRENT_WORK`] of a kind at once, so
/// minutes-long readiness waits or rollout watches never hold up a start
/// batch, a config change or a probe.
struct WorkPool {
    in_flight: HashMap<(WorkKind, String), tokio::task::AbortHandle>,
    /// Units with a start or restart job in a batch still waited for, and
    /// the batch: their state changes are the batch's to report (its end
    /// brings the next pass), so they do not each wake a pass — 200 units
    /// starting would otherwise make back-to-back passes ask the manager
    /// about all of them while it starts them.
    starting: HashMap<String, u64>,
    /// The rollout watches in flight, by Service: what is watched again
    /// when the bus or the manager goes away before their verdict.
    watching: HashMap<String, crate::rollout::policy::RolloutWork>,
    /// Slots of each kind but [`WorkKind::Jobs`].
    slots: HashMap<WorkKind, Arc<tokio::sync::Semaphore>>,
    done_tx: tokio::sync::mpsc::UnboundedSender<Outcome>,
    /// The work-queue series: depth, wait, work time and retries by kind.
    metrics: Arc<Metrics>,
}

impl WorkPool {
    fn spawn<M: UserManager + Clone + 'static>(
        &mut self,
        work: Work,
        sd: &M,
        http: &reqwest::Client,
        job_timeout: Duration,
    ) {
        let key = work.key();
        // A newer revision's watch replaces the older one's
        // (the older revision is already marked Superseded).
        if key.0 == WorkKind::Rollout
            && let Some(h) = self.in_flight.remove(&key)
        {
            h.abort();
        }
        if self.in_flight.contains_key(&key) {
            return; // duplicates collapse
        }
        // A new readiness wait (after a restart) replaces a probe.
        if key.0 == WorkKind::Readiness
            && let Some(h) = self.in_flight.remove(&(WorkKind::Probe, key.1.clone()))
        {
            h.abort();
        }
        if let Work::Jobs(j) = &work {
            for job in &j.jobs {
                self.starting.insert(job.job.unit.clone(), j.batch);
            }
        }
        if let Work::Rollout(r) = &work {
            self.watching.insert(r.name.clone(), (**r).clone());
        }
        let slots = match key.0 {
            WorkKind::Jobs => None,
            kind => Some(
                self.slots
                    .entry(kind)
                    .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_WORK))),
            ),
        };
        let queued = self.metrics.work_added(key.0.label());
        let (slots, tx, sd, http) = (
            slots.cloned(),
            self.done_tx.clone(),
            sd.clone(),
            http.clone(),
        );
        let h = tokio::spawn(async move {
            let _slot = match slots {
                Some(s) => match s.acquire_owned().await {
                    Ok(slot) => Some(slot),
                    Err(_) => return,
                },
                None => None,
            };
            let running = queued.started();
            let outcome = work.run(sd, http, job_timeout).await;
            running.done();
            let _ = tx.send(outcome);
        });
        self.in_flight.insert(key, h.abort_handle());
    }

    fn abort_all(&mut self) {
        for (_, h) in self.in_flight.drain() {
            h.abort();
        }
        self.starting.clear();
        self.watching.clear();
    }

    /// The bus or the manager went away: stop the work that talks to it,
    /// judging nothing (readiness waits and probes, plain HTTP, go on).
    /// Returns the rollout watches stopped, to be run again once
    /// reconnected.
    fn manager_lost(&mut self) -> Vec<crate::rollout::policy::RolloutWork> {
        self.in_flight.retain(|(kind, _), h| {
            let talks_to_manager =
                matches!(kind, WorkKind::Jobs | WorkKind::Config | WorkKind::Rollout);
            if talks_to_manager {
                h.abort();
            }
            !talks_to_manager
        });
        self.starting.clear();
        self.watching.drain().map(|(_, w)| w).collect()
    }

    /// A piece of work ended: forget it (and, for a job batch, its units).
    fn finished(&mut self, o: &Outcome) {
        let key = o.key();
        if o.retried() {
            self.metrics.work_retried(key.0.label());
        }
        self.in_flight.remove(&key);
        if key.0 == WorkKind::Rollout {
            self.watching.remove(&key.1);
        }
        if let Outcome::Jobs { batch, .. } = o {
            self.starting.retain(|_, b| b != batch);
        }
    }
}

/// What woke the loop.
enum Wake {
    Shutdown,
    FileChange,
    /// Units changed state, a burst at once (`None`: the manager's
    /// connection closed).
    UnitChange(Option<Vec<String>>),
    WorkDone(Outcome),
    Resync,
    Retry,
    /// The status has not been written for [`STATUS_HEARTBEAT`].
    Heartbeat,
}

/// Feeds systemd's watchdog from its own task, but only while the loop
/// keeps making progress, so a hung loop still gets us restarted.
struct Progress {
    /// Seconds since `clock` at the loop's last sign of life.
    last: Arc<std::sync::atomic::AtomicU64>,
    clock: std::time::Instant,
}

impl Progress {
    fn start() -> Progress {
        let p = Progress {
            last: Arc::default(),
            clock: std::time::Instant::now(),
        };
        let mut wd_usec = 0u64;
        if sd_notify::watchdog_enabled(false, &mut wd_usec) {
            let every = Duration::from_micros(wd_usec / 2);
            let (last, clock) = (p.last.clone(), p.clock);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    let last = last.load(std::sync::atomic::Ordering::Relaxed);
                    if clock.elapsed().as_secs().saturating_sub(last) < MAX_PASS_SECS {
                        sd_notify(&[sd_notify::NotifyState::Watchdog]);
                    }
                }
            });
        }
        p
    }

    fn touch(&self) {
        self.last.store(
            self.clock.elapsed().as_secs(),
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}

/// The operator loop's state between wake-ups.
struct Operator {
    opts: RunOptions,
    metrics: Arc<Metrics>,
    watch: DirWatch,
    /// The manifests directory's parent, where its removal and re-creation
    /// are seen.
    parent: PathBuf,
    /// Where restores keep holds: a released hold is seen at once, not at
    /// the resync.
    holds_dir: PathBuf,
    rec: Reconciler,
    /// Interrupted restores, recovered at the start of every pass.
    recoveries: Recoveries,
    pool: WorkPool,
    /// Finished work, folded in by the next pass.
    outcomes: Vec<Outcome>,
    /// Rollout watches stopped because the bus or the manager went away,
    /// handed out again after the next pass on a live connection: a
    /// watch starts afresh from the live state, with its whole
    /// `rollout.timeout` (time without a manager is no time to judge).
    resume: Vec<crate::rollout::policy::RolloutWork>,
    last_saved: Option<std::time::Instant>,
    sd: Option<Systemd>,
    unit_changes: Option<tokio::sync::mpsc::UnboundedReceiver<String>>,
    reconnect_delay: crate::RetryDelays,
    /// A failed pass is retried with backoff even when nothing else wakes
    /// the loop: the next event may be an hour away.
    error_delay: crate::RetryDelays,
    ready_sent: bool,
    /// Directories of the Services' config files, watched too.
    config_dirs: Vec<PathBuf>,
    retry_at: Option<tokio::time::Instant>,
}

/// The first reconnect or retry delay; each failure doubles it, to
/// [`LAST_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(200);
const LAST_RETRY: Duration = Duration::from_secs(30);

impl Operator {
    /// Metrics, watches and the reconciler, before the first pass.
    async fn start(
        opts: RunOptions,
        trigger: Arc<Notify>,
        done_tx: tokio::sync::mpsc::UnboundedSender<Outcome>,
    ) -> Result<Operator, RunError> {
        let metrics = Arc::new(Metrics::new());
        metrics.work_kinds(&WorkKind::ALL.map(WorkKind::label));
        if let Some(addr) = opts.metrics_addr {
            crate::metrics::serve(addr, metrics.clone())
                .await
                .map_err(|source| RunError::Metrics { addr, source })?;
        }
        let holds_dir = crate::hold::dir(&opts.loc.state_dir);
        let watch = DirWatch::new(trigger, holds_dir.clone())
            .map_err(|e| RunError::Watch(e.to_string()))?;
        let parent = opts
            .loc
            .manifests
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/"));
        let _ = crate::fsutil::create_dir_all(&holds_dir);
        let mut rec = Reconciler::new(opts.loc.clone(), opts.exe.clone());
        rec.set_inline_probes(false);
        // Start jobs are waited for beside the loop (`Work::Jobs`).
        rec.set_start_wait(Duration::ZERO);
        rec.set_gc_grace(opts.gc_grace);
        let mut op = Operator {
            opts,
            metrics: metrics.clone(),
            watch,
            parent,
            holds_dir,
            rec,
            recoveries: Recoveries::default(),
            pool: WorkPool {
                in_flight: HashMap::new(),
                starting: HashMap::new(),
                watching: HashMap::new(),
                slots: HashMap::new(),
                done_tx,
                metrics,
            },
            outcomes: Vec::new(),
            resume: Vec::new(),
            last_saved: None,
            sd: None,
            unit_changes: None,
            reconnect_delay: crate::RetryDelays::new(FIRST_RETRY, LAST_RETRY),
            error_delay: crate::RetryDelays::new(FIRST_RETRY, LAST_RETRY),
            ready_sent: false,
            config_dirs: Vec::new(),
            retry_at: None,
        };
        op.arm_watches();
        Ok(op)
    }

    /// Watch every directory that exists now.
    fn arm_watches(&mut self) {
        let loc = &self.opts.loc;
        let mut dirs: Vec<&Path> =
            vec![&loc.manifests, &self.parent, &loc.unit_dir, &self.holds_dir];
        dirs.extend(self.config_dirs.iter().map(PathBuf::as_path));
        self.watch.arm(&dirs);
    }

    /// (Re)connect, with backoff when the bus or manager is away.
    ///
    /// # Errors
    /// The unit directory is not on the manager's search path: retrying
    /// cannot fix that.
    async fn connect(&mut self) -> Result<(), RunError> {
        match Systemd::connect(self.opts.loc.bus.as_deref()).await {
            Ok(c) => {
                if let Err(e) = c.check_unit_dir(&self.opts.loc.unit_dir).await {
                    tracing::error!("{}", crate::error_chain(&e));
                    return Err(RunError::Setup(crate::error_chain(&e)));
                }
                self.unit_changes = systemd::unit_changes(&c).await.ok();
                let _ = c.subscribe().await;
                tracing::info!("connected to the user manager");
                self.reconnect_delay.reset();
                self.sd = Some(c);
            }
            Err(e) => {
                let msg = crate::error_chain(&e);
                let delay = self.reconnect_delay.failed();
                tracing::warn!("{msg}; retrying in {delay:?}");
                self.metrics.reconcile_error("connect");
                sd_notify(&[sd_notify::NotifyState::Status(&format!(
                    "cannot reach systemd: {msg}"
                ))]);
                self.retry_at = Some(tokio::time::Instant::now() + delay);
            }
        }
        Ok(())
    }

    /// Tell systemd how things are; the first time, that we are ready
    /// (running but degraded is still "started": systemd should not kill
    /// us for a missing directory).
    fn notify_status(&mut self, status: &str) {
        let status = sd_notify::NotifyState::Status(status);
        if self.ready_sent {
            sd_notify(&[status]);
        } else {
            sd_notify(&[sd_notify::NotifyState::Ready, status]);
            self.ready_sent = true;
        }
    }

    /// After a pass: metrics, logs, handed-out work, the next retry.
    async fn passed<M: UserManager + Clone + 'static>(
        &mut self,
        report: crate::reconcile::PassReport,
        status: &Status,
        c: &M,
    ) {
        self.error_delay.reset();
        let m = &self.metrics;
        m.passed(&report.last_runs, status, &report.reloads, &report.skipped);
        // Config directories may have appeared: watch them now.
        self.arm_watches();
        if report.actions > 0 || !report.failures.is_empty() {
            tracing::info!(actions = report.actions, reloads = report.daemon_reloads, ready = report.ready, not_ready = report.not_ready, elapsed = ?report.elapsed, "reconciled");
        }
        for (manifest, e) in &report.failures {
            tracing::warn!(manifest = %manifest, "{e}");
            self.metrics.reconcile_error("apply");
        }
        // Watches the bus's loss stopped first: a newer revision's watch
        // in this pass's work replaces its Service's.
        let resumed = self.resume.drain(..).map(|r| Work::Rollout(Box::new(r)));
        for w in resumed.collect::<Vec<_>>().into_iter().chain(report.work) {
            self.pool
                .spawn(w, c, &self.rec.http_client(), self.rec.job_timeout());
        }
        self.retry_at = report.retry_at;
        let mut summary = format!("{} ready, {} not ready", report.ready, report.not_ready);
        if self.opts.fleet.is_some()
            && let Some(w) = source_warning(&self.opts.loc.state_dir).await
        {
            summary = format!("{summary}; {w}");
        }
        self.notify_status(&summary);
    }

    /// After a failed pass: retried with backoff; a lost connection is
    /// reconnected.
    fn pass_failed(&mut self, e: &ReconcileError) {
        let msg = crate::error_chain(e);
        tracing::error!("{msg}");
        self.metrics.reconcile_error(match e {
            ReconcileError::Load(_) => "manifests",
            ReconcileError::Systemd(_) => "systemd",
            _ => "io",
        });
        self.notify_status(&format!("error: {msg}"));
        let now = tokio::time::Instant::now();
        if e.is_disconnect() {
            self.disconnected();
            self.retry_at = Some(now + self.reconnect_delay.current());
        } else {
            self.retry_at = Some(now + self.error_delay.failed());
        }
    }

    /// The bus or the manager went away: handed-out work that talks to it
    /// stops without a verdict; after reconnecting, a pass reads the live
    /// state and the stopped rollout watches run again.
    fn disconnected(&mut self) {
        self.sd = None;
        self.unit_changes = None;
        let watches = self.pool.manager_lost();
        self.resume.extend(watches);
        self.rec.handed_out_work_lost();
    }

    fn stop(&mut self, why: &str) {
        tracing::info!("{why}");
        sd_notify(&[sd_notify::NotifyState::Stopping]);
        self.pool.abort_all();
    }

    /// Write the status's time stamp without a pass, so `get` can tell a
    /// live operator's status from a stale one however long the resync.
    /// Every change wakes a pass, so the status is as current as its stamp.
    async fn heartbeat(&mut self) {
        let loc = self.rec.locations();
        let path = loc.status_file();
        let beat = async {
            let _lock = StateLock::acquire(&loc.state_dir, "unitlet run", |_| {})
                .await
                .map_err(|e| crate::error_chain(&e))?;
            let mut status = Status::load_for_update_async(&path).await;
            status.stamp("unitlet run");
            status
                .save_async(&path)
                .await
                .map_err(|e| crate::error_chain(&e))
        };
        if let Err(e) = beat.await {
            tracing::warn!("cannot write the status heartbeat: {e}");
        }
        // Also after a failure: the next try is a heartbeat away.
        self.last_saved = Some(std::time::Instant::now());
    }

    /// Whether a wake-up calls for a pass.
    fn woken(&mut self, wake: Wake) -> bool {
        match wake {
            Wake::Shutdown | Wake::Heartbeat => false,
            Wake::FileChange => {
                tracing::debug!("woken by a file change");
                true
            }
            Wake::UnitChange(Some(units)) => {
                match units.iter().find(|u| !self.pool.starting.contains_key(*u)) {
                    Some(unit) => {
                        tracing::debug!(%unit, "woken by a unit change");
                        true
                    }
                    // Their start-job batch reports them when it ends.
                    None => false,
                }
            }
            Wake::UnitChange(None) => {
                tracing::warn!("the connection to the user manager closed; reconnecting");
                self.disconnected();
                true
            }
            Wake::WorkDone(o @ Outcome::Lost { .. }) => {
                // Seen by the work before the loop: the next pass tells
                // whether the manager is back (or reconnects).
                self.pool.finished(&o);
                if let Outcome::Lost { key, resume } = o {
                    tracing::debug!(?key, "work lost the user manager");
                    self.resume.extend(resume.map(|r| *r));
                }
                true
            }
            Wake::WorkDone(o) => {
                self.pool.finished(&o);
                // A probe that says what the last one said changes nothing.
                let news = match &o {
                    Outcome::Probe { name, result } => self.rec.last_probe(name) != Some(result),
                    _ => true,
                };
                if news {
                    tracing::debug!(key = ?o.key(), "work finished");
                    self.outcomes.push(o);
                }
                news
            }
            Wake::Resync => {
                tracing::debug!("resync");
                true
            }
            Wake::Retry => {
                tracing::debug!("retry timer");
                self.retry_at = None;
                true
            }
        }
    }
}

/// Run the operator until `shutdown` resolves.
///
/// # Errors
/// Only for failures to start (e.g. the metrics address is taken, another
/// operator runs on the same state directory). Once running, errors are
/// reported in status and logs and retried; the loop never stops a unit
/// because something failed.
pub async fn run(opts: RunOptions, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let _operator = crate::lock::OperatorLock::acquire(&opts.loc.state_dir)
        .map_err(|e| RunError::Setup(crate::error_chain(&e)))?;
    // The fleet tasks start under the operator lock and stop (revoking the
    // status lease) whichever way the loop ends.
    let fleet = match opts.fleet.clone() {
        Some(f) => Some(crate::fleet::run::start(f)),
        None => {
            crate::fleet::forget(&opts.loc.state_dir);
            None
        }
    };
    let result = run_locked(opts, shutdown).await;
    if let Some(f) = fleet {
        f.stop().await;
    }
    result
}

async fn run_locked(opts: RunOptions, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let trigger = Arc::new(Notify::new());
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<Outcome>();
    let mut op = Operator::start(opts, trigger.clone(), done_tx).await?;
    let progress = Progress::start();
    tokio::pin!(shutdown);
    let mut next_resync = tokio::time::Instant::now();
    let mut pending = true;
    loop {
        progress.touch();
        if pending {
            pending = false;
            if !run_pass(&mut op, &progress, &mut shutdown).await? {
                return Ok(());
            }
            next_resync = tokio::time::Instant::now() + op.opts.resync;
        }
        let depth = op.pool.in_flight.len() + op.outcomes.len() + usize::from(pending);
        op.metrics.set_queue_depth(depth);
        tracing::debug!(target: "unitlet::pass", queue = depth, "waiting");
        let wake = next_wake(&mut op, &trigger, &mut done_rx, next_resync, &mut shutdown).await;
        if matches!(wake, Wake::Shutdown) {
            op.stop("stopping");
            return Ok(());
        }
        if matches!(wake, Wake::Heartbeat) {
            let beat = tokio::select! {
                () = op.heartbeat() => true,
                _ = &mut shutdown => false,
            };
            if !beat {
                op.stop("stopping");
                return Ok(());
            }
            continue;
        }
        pending |= op.woken(wake);
    }
}

/// [`crate::fleet::source_warning`] off the async runtime, within
/// [`crate::fsutil::READ_DEADLINE`] (no warning when it does not answer).
async fn source_warning(state_dir: &std::path::Path) -> Option<String> {
    let d = state_dir.to_path_buf();
    let key = d.join("fleet");
    let read = move || crate::fleet::source_warning(&d);
    crate::fsutil::off_runtime(&key, crate::fsutil::READ_DEADLINE, read)
        .await
        .ok()
        .flatten()
}

/// Runs one pass, connecting to the user manager first when not connected.
/// `Ok(false)` when a shutdown came first (the operator is stopped then).
async fn run_pass(
    op: &mut Operator,
    progress: &Progress,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Result<bool, RunError> {
    if op.sd.is_none() {
        // A bus that accepts but never answers must not hold up a SIGTERM.
        let connected = tokio::select! {
            r = op.connect() => Some(r),
            _ = &mut *shutdown => None,
        };
        match connected {
            Some(r) => r?,
            None => {
                op.stop("stopping (while connecting to the user manager)");
                return Ok(false);
            }
        }
    }
    let Some(c) = op.sd.clone() else {
        return Ok(true);
    };
    op.arm_watches();
    let timer = std::time::Instant::now();
    // Tests wait for whole passes with these two lines.
    tracing::debug!(target: "unitlet::pass", "pass starts");
    // systemd forgets Subscribe when it re-executes; renewing it
    // keeps unit-change signals coming (idempotent).
    c.renew_subscription();
    // SIGTERM does not wait for a pass: dropping it mid-way is
    // what a crash does, and a crash is safe (atomic writes; the
    // next pass resumes).
    let pass = pass(
        &mut op.rec,
        &mut op.recoveries,
        &c,
        &mut op.outcomes,
        &mut op.last_saved,
        &mut op.config_dirs,
    );
    let outcome = tokio::select! {
        r = pass => Some(r),
        _ = &mut *shutdown => None,
    };
    let Some(outcome) = outcome else {
        op.stop("stopping (a pass was interrupted; the next start resumes it)");
        return Ok(false);
    };
    progress.touch();
    let result = match &outcome {
        Ok((report, _)) => report.result(),
        Err(_) => crate::metrics::PassResult::Error,
    };
    op.metrics.observe_pass(timer.elapsed(), result);
    match outcome {
        Ok((report, status)) => op.passed(report, &status, &c).await,
        Err(e) => op.pass_failed(&e),
    }
    Ok(true)
}

/// Wait for the next reason to run a pass (or to stop).
async fn next_wake(
    op: &mut Operator,
    trigger: &Notify,
    done_rx: &mut tokio::sync::mpsc::UnboundedReceiver<Outcome>,
    next_resync: tokio::time::Instant,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Wake {
    let retry_at = op.retry_at;
    let retry_sleep = async {
        match retry_at {
            Some(t) => tokio::time::sleep_until(t).await,
            None => std::future::pending().await,
        }
    };
    let unit_event = async {
        match op.unit_changes.as_mut() {
            Some(s) => {
                let mut units = vec![s.recv().await?];
                // Collapse a burst into one trigger.
                while let Ok(u) = s.try_recv() {
                    units.push(u);
                }
                Some(units)
            }
            None => std::future::pending().await,
        }
    };
    let heartbeat_at = op
        .last_saved
        .map(|t| tokio::time::Instant::from_std(t + STATUS_HEARTBEAT));
    let heartbeat = async {
        match heartbeat_at {
            Some(t) => tokio::time::sleep_until(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = shutdown.as_mut() => Wake::Shutdown,
        _ = heartbeat => Wake::Heartbeat,
        _ = trigger.notified() => Wake::FileChange,
        ev = unit_event => Wake::UnitChange(ev),
        Some(o) = done_rx.recv() => Wake::WorkDone(o),
        _ = tokio::time::sleep_until(next_resync) => Wake::Resync,
        _ = retry_sleep => Wake::Retry,
    }
}

/// One pass under the state lock: read status, fold in finished work,
/// prepare, apply, save status when it changed (or the heartbeat is due).
async fn pass(
    rec: &mut Reconciler,
    recoveries: &mut Recoveries,
    sd: &Systemd,
    outcomes: &mut Vec<Outcome>,
    last_saved: &mut Option<std::time::Instant>,
    config_dirs: &mut Vec<PathBuf>,
) -> Result<(crate::reconcile::PassReport, Status), ReconcileError> {
    let _lock = StateLock::acquire(&rec.locations().state_dir, "unitlet run", |h| {
        tracing::debug!("waiting for {h} to finish writing");
    })
    .await
    .map_err(|e| ReconcileError::Stuck(crate::error_chain(&e)))?;
    let status_path = rec.locations().status_file();
    let mut status = Status::load_for_update_async(&status_path).await;
    let before = status.clone();
    let mut reloads = Vec::new();
    for o in outcomes.drain(..) {
        reloads.extend(rec.finish(o, &mut status));
    }
    recoveries.run(rec.locations(), sd).await;
    let result = async {
        let prep = rec.prepare(sd, &status).await?;
        *config_dirs = crate::reload::watch_dirs(&prep.loaded.manifests);
        rec.apply(sd, prep, &mut status).await
    }
    .await;
    match &result {
        Ok(_) => {
            if status.operator_error.take().is_some() {
                tracing::info!("recovered");
            }
        }
        Err(e) => {
            let msg = crate::error_chain(e);
            if status.operator_error.as_deref() != Some(msg.as_str()) {
                status.event(
                    crate::status::OPERATOR,
                    crate::status::EventType::Warning,
                    crate::status::EventReason::ReconcileError,
                    msg.clone(),
                );
                status.operator_error = Some(msg);
            }
        }
    }
    let heartbeat = last_saved.is_none_or(|t| t.elapsed() >= STATUS_HEARTBEAT);
    if status != before || heartbeat {
        status.stamp("unitlet run");
        status.save_async(&status_path).await?;
        *last_saved = Some(std::time::Instant::now());
    }
    let mut report = result?;
    report.reloads.extend(reloads);
    Ok((report, status))
}

#[derive(Debug, thiserror::Error)]
/// Why `run` stopped or could not start.
pub enum RunError {
    /// The metrics listener could not be opened.
    #[error("cannot serve metrics on {addr}: {source}; choose another --metrics-addr")]
    Metrics {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// The error underneath.
        #[source]
        source: std::io::Error,
    },
    /// The file watcher could not start.
    #[error("cannot watch files: {0}")]
    Watch(String),
    /// A configuration problem that retrying cannot fix.
    #[error("{0}")]
    Setup(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::fake::FakeManager;
    use crate::status::ConditionStatus;

    /// An operator (its pool, reconciler and wake-up handling) against the
    /// in-memory manager, on tokio's paused clock.
    struct Bench {
        _dir: tempfile::TempDir,
        op: Operator,
        sd: FakeManager,
        status: Status,
        done_rx: tokio::sync::mpsc::UnboundedReceiver<Outcome>,
    }

    fn service(name: &str, command: &str) -> String {
        format!(
            "apiVersion: unitlet/v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  command: {command}\n"
        )
    }

    impl Bench {
        async fn new() -> Bench {
            let dir = tempfile::tempdir().expect("tempdir");
            let (loc, sd) = crate::reconcile::pass_tests::fake_world(dir.path());
            let opts = RunOptions {
                loc,
                resync: Duration::from_secs(3600),
                metrics_addr: None,
                exe: PathBuf::from("/usr/bin/unitlet"),
                gc_grace: Duration::ZERO,
                fleet: None,
            };
            let (done_tx, done_rx) = tokio::sync::mpsc::unbounded_channel();
            let op = Operator::start(opts, Arc::new(Notify::new()), done_tx)
                .await
                .expect("operator");
            Bench {
                _dir: dir,
                op,
                sd,
                status: Status::default(),
                done_rx,
            }
        }

        fn write(&self, name: &str, command: &str) {
            let path = self.op.opts.loc.manifests.join(format!("{name}.yaml"));
            std::fs::write(path, service(name, command)).expect("write manifest");
        }

        /// A pass as `run` makes one: fold in finished work, prepare,
        /// apply, hand the work out.
        async fn pass(&mut self) {
            for o in std::mem::take(&mut self.op.outcomes) {
                self.op.rec.finish(o, &mut self.status);
            }
            let prep = self.op.rec.prepare(&self.sd, &self.status).await;
            let prep = prep.expect("prepare");
            let report = self.op.rec.apply(&self.sd, prep, &mut self.status).await;
            let report = report.expect("apply");
            let status = self.status.clone();
            self.op.passed(report, &status, &self.sd).await;
        }

        /// Let handed-out work run for `d`, each finished item waking the
        /// loop as in `run`.
        async fn run_for(&mut self, d: Duration) {
            let until = tokio::time::Instant::now() + d;
            loop {
                tokio::select! {
                    Some(o) = self.done_rx.recv() => {
                        self.op.woken(Wake::WorkDone(o));
                    }
                    () = tokio::time::sleep_until(until) => break,
                }
            }
        }

        /// Events whose reason is one of `reasons`.
        fn events(&self, reasons: &[&str]) -> Vec<String> {
            self.status
                .events
                .iter()
                .filter(|e| reasons.contains(&e.reason.as_str()))
                .map(|e| format!("{} {}: {}", e.object, e.reason, e.message))
                .collect()
        }

        fn revisions(&self, name: &str) -> Vec<crate::rollout::history::RevisionState> {
            let h =
                crate::rollout::history::load(&self.op.opts.loc.state_dir, name).expect("history");
            h.revisions.iter().map(|r| r.state).collect()
        }

        fn ready(&self, name: &str) -> (ConditionStatus, String) {
            let c = self.status.objects[name].ready().expect("Ready");
            (c.status, c.message.clone())
        }
    }

    /// The retry schedule of a failed pass and of reconnecting: 200 ms,
    /// doubling to 30 s; a good pass (or connection) starts it over. A lost
    /// connection's first retry waits the current reconnect delay without
    /// moving it on (the reconnect that follows does).
    #[tokio::test(start_paused = true)]
    async fn failed_passes_and_reconnects_retry_after_200ms_doubling_to_30s() {
        let mut b = Bench::new().await;
        let waits = |op: &Operator| {
            let at = op.retry_at.expect("a retry is armed");
            (at - tokio::time::Instant::now()).as_millis()
        };
        let stuck = ReconcileError::Stuck("reading the manifests did not finish".into());
        let mut got = Vec::new();
        for _ in 0..10 {
            b.op.pass_failed(&stuck);
            got.push(waits(&b.op));
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        let want = [200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000];
        assert_eq!(got, want);
        b.pass().await;
        b.op.pass_failed(&stuck);
        assert_eq!(waits(&b.op), 200, "a good pass starts the schedule over");

        // Nothing listens on this bus address: every connect fails.
        let nobus = b._dir.path().join("no-bus");
        b.op.opts.loc.bus = Some(format!("unix:path={}", nobus.display()));
        let mut got = Vec::new();
        for _ in 0..10 {
            b.op.connect().await.expect("a failed connect is retried");
            got.push(waits(&b.op));
        }
        assert_eq!(got, want);
        let lost = ReconcileError::Systemd(crate::manager::ManagerError::JobLost {
            verb: "start",
            unit: "web.service".into(),
        });
        b.op.pass_failed(&lost);
        assert_eq!(
            waits(&b.op),
            30000,
            "the current reconnect delay, unchanged"
        );
    }

    /// Issue 20, item 1: the bus daemon dies while a new revision is in its
    /// rollout window and a batch of 20 starts is in flight. The work
    /// handed out runs on the dead connection first (what it sees before
    /// the loop does), then the loop hears of it (`UnitChange(None)`, the
    /// unit-signal channel closing), long past the job and rollout
    /// deadlines: nothing is judged; once the bus is back, the revision
    /// completes and every Service is Ready.
    #[tokio::test(start_paused = true)]
    async fn item1_losing_the_bus_judges_no_handed_out_work() {
        use crate::rollout::history::RevisionState::{Complete, Progressing};
        let mut b = Bench::new().await;
        b.write("web", "[/bin/sleep, \"100000\"]");
        b.pass().await;
        b.run_for(Duration::from_secs(1)).await;
        b.pass().await;
        assert_eq!(b.revisions("web"), [Complete]);

        // A new revision of web and 20 new Services, their jobs in flight.
        b.sd.hold_jobs(true);
        b.write("web", "[/bin/sleep, \"200000\"]");
        for i in 0..20 {
            b.write(&format!("new{i}"), "[/bin/sleep, infinity]");
        }
        b.pass().await;
        assert!(
            b.op.pool.in_flight.keys().any(|k| k.0 == WorkKind::Rollout),
            "web's revision 2 is watched: {:?}",
            b.op.pool.in_flight.keys()
        );
        b.run_for(Duration::from_secs(1)).await;

        b.sd.lose_bus();
        b.run_for(Duration::from_secs(1)).await;
        b.op.woken(Wake::UnitChange(None));
        b.run_for(Duration::from_secs(200)).await;
        for o in std::mem::take(&mut b.op.outcomes) {
            b.op.rec.finish(o, &mut b.status);
        }
        let judged = [
            "StartFailed",
            "RestartFailed",
            "RolledBack",
            "RolloutFailed",
        ];
        assert_eq!(b.events(&judged), Vec::<String>::new());
        assert!(!b.op.rec.is_backing_off());
        assert_eq!(b.revisions("web"), [Complete, Progressing]);

        // The manager ran the jobs meanwhile; the bus is back.
        b.sd.release_jobs();
        b.sd.bus_back();
        b.pass().await;
        b.run_for(Duration::from_secs(10)).await;
        b.pass().await;
        assert_eq!(b.events(&judged), Vec::<String>::new());
        assert_eq!(b.revisions("web"), [Complete, Complete]);
        assert!(!b.events(&["RolloutComplete"]).is_empty());
        for i in 0..20 {
            let name = format!("new{i}");
            assert_eq!(b.ready(&name).0, ConditionStatus::True, "{name}");
        }
        assert_eq!(b.ready("web").0, ConditionStatus::True);
    }

    /// Issue 20, item 7: 16 readiness waits of minutes fill their slots;
    /// a start batch handed out after them runs at once, so its deadline
    /// (the job timeout, 5 s here) counts from its hand-out.
    #[tokio::test(start_paused = true)]
    async fn item7_a_start_batch_never_waits_behind_readiness_waits() {
        let mut b = Bench::new().await;
        b.op.rec.set_job_timeout(Duration::from_secs(5));
        for i in 0..MAX_CONCURRENT_WORK {
            let wait = Work::Readiness {
                name: format!("slow{i}"),
                url: "http://127.0.0.1:9/ready".into(),
                timeout: Duration::from_secs(600),
            };
            b.op.pool
                .spawn(wait, &b.sd, &b.op.rec.http_client(), b.op.rec.job_timeout());
        }
        b.run_for(Duration::from_secs(1)).await;
        b.sd.hold_jobs(true);
        b.write("web", "[/bin/sleep, infinity]");
        b.pass().await;
        b.run_for(Duration::from_secs(6)).await;
        let ended: Vec<String> =
            b.op.outcomes
                .iter()
                .filter_map(|o| match o {
                    Outcome::Jobs { results, .. } => Some(format!("{results:?}")),
                    _ => None,
                })
                .collect();
        assert_eq!(ended.len(), 1, "the batch ended by its deadline: {ended:?}");
        assert!(ended[0].contains("did not finish within 5s"), "{ended:?}");
    }
}
