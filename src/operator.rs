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
use crate::metrics::Metrics;
use crate::reconcile::{ReconcileError, Reconciler};
use crate::status::Status;
use crate::systemd::{self, Systemd};
use crate::work::{Outcome, Work, WorkKind};

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub loc: Locations,
    pub resync: Duration,
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// The unitlet binary Backup oneshots run.
    pub exe: PathBuf,
    /// How long a manifest that disappeared is waited for before its
    /// units are stopped (`--gc-grace`).
    pub gc_grace: Duration,
}

fn sd_notify(states: &[sd_notify::NotifyState<'_>]) {
    let _ = sd_notify::notify(false, states);
}

/// Watches the manifests directory (and its parent, so removal and
/// re-creation are seen) and the unit directory (so a hand edit is undone
/// promptly). Re-arms itself when a watched directory comes back.
///
/// Every change wakes a pass: a burst is collapsed once the directories
/// have been quiet for [`WATCH_QUIET`] (or [`WATCH_MAX_DELAY`] after its
/// first change), and nothing is ever dropped. A semantic debouncer that
/// folds "created, then removed" into nothing, or swallows the writes that
/// follow a create, can leave a pass that read a half-written or vanished
/// file as the last one for an hour.
struct DirWatch {
    watcher: notify::RecommendedWatcher,
    watched: Vec<PathBuf>,
}

/// How long the watched directories must stay quiet before a pass.
const WATCH_QUIET: Duration = Duration::from_millis(30);
/// The longest a stream of changes delays a pass.
const WATCH_MAX_DELAY: Duration = Duration::from_millis(200);

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

impl DirWatch {
    fn new(trigger: Arc<Notify>) -> notify::Result<DirWatch> {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let watcher = notify::recommended_watcher(move |r: notify::Result<notify::Event>| {
            // Our own reads show up as access events: only changes count,
            // or every pass would trigger the next. An error (an overflowed
            // queue) may hide changes, so it counts as one.
            if r.as_ref().map_or(true, |e| is_change(&e.kind)) {
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
        loop {
            let left = WATCH_MAX_DELAY.saturating_sub(first.elapsed());
            if left.is_zero() {
                break;
            }
            match rx.recv_timeout(WATCH_QUIET.min(left)) {
                Ok(()) => {}
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

/// How many objects' waits (readiness, config reloads, probes) run at once.
const MAX_CONCURRENT_WORK: usize = 16;

/// An unchanged status is still written this often, so `get` can tell a
/// live operator's status from a stale one.
const STATUS_HEARTBEAT: Duration = Duration::from_secs(10);

/// Waits handed out by passes, running beside the loop: at most one per
/// object and kind, at most [`MAX_CONCURRENT_WORK`] at once.
struct WorkPool {
    in_flight: HashMap<(WorkKind, String), tokio::task::AbortHandle>,
    slots: Arc<tokio::sync::Semaphore>,
    done_tx: tokio::sync::mpsc::UnboundedSender<Outcome>,
}

impl WorkPool {
    fn spawn(&mut self, work: Work, sd: &Systemd, http: &reqwest::Client, job_timeout: Duration) {
        let key = work.key();
        // Issue 12: a newer revision's watch replaces the older one's
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
        let (slots, tx, sd, http) = (
            self.slots.clone(),
            self.done_tx.clone(),
            sd.clone(),
            http.clone(),
        );
        let h = tokio::spawn(async move {
            let Ok(_slot) = slots.acquire_owned().await else {
                return;
            };
            let _ = tx.send(work.run(sd, http, job_timeout).await);
        });
        self.in_flight.insert(key, h.abort_handle());
    }

    fn abort_all(&mut self) {
        for (_, h) in self.in_flight.drain() {
            h.abort();
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
    let metrics = Arc::new(Metrics::new());
    if let Some(addr) = opts.metrics_addr {
        crate::metrics::serve(addr, metrics.clone())
            .await
            .map_err(|source| RunError::Metrics { addr, source })?;
    }
    let trigger = Arc::new(Notify::new());
    let mut watch = DirWatch::new(trigger.clone()).map_err(|e| RunError::Watch(e.to_string()))?;
    let parent = opts
        .loc
        .manifests
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    // A restore releasing its hold must be seen at once, not at the resync.
    let holds_dir = opts.loc.state_dir.join("holds");
    let _ = crate::fsutil::create_dir_all(&holds_dir);
    watch.arm(&[&opts.loc.manifests, &parent, &opts.loc.unit_dir, &holds_dir]);

    let mut rec = Reconciler::new(opts.loc.clone(), opts.exe.clone());
    rec.inline_probes = false;
    // Start jobs are waited for beside the loop (`Work::Jobs`).
    rec.start_wait = Duration::ZERO;
    rec.gc_grace = opts.gc_grace;
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<Outcome>();
    let mut pool = WorkPool {
        in_flight: HashMap::new(),
        slots: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_WORK)),
        done_tx,
    };
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut last_saved: Option<std::time::Instant> = None;
    let mut sd: Option<Systemd> = None;
    let mut unit_changes: Option<tokio::sync::mpsc::UnboundedReceiver<String>> = None;
    let mut reconnect_delay = Duration::from_millis(200);
    // A failed pass is retried with backoff even when nothing else wakes
    // the loop: the next event may be an hour away.
    let mut error_delay = Duration::from_millis(200);
    let mut ready_sent = false;
    let mut config_dirs: Vec<PathBuf> = Vec::new();

    let mut wd_usec = 0u64;
    let watchdog = sd_notify::watchdog_enabled(false, &mut wd_usec)
        .then(|| Duration::from_micros(wd_usec / 2));
    // The watchdog is fed from its own task, but only while the loop keeps
    // making progress, so a hung loop still gets us restarted.
    let progress = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let clock = std::time::Instant::now();
    let touch = {
        let progress = progress.clone();
        move || {
            progress.store(
                clock.elapsed().as_secs(),
                std::sync::atomic::Ordering::Relaxed,
            )
        }
    };
    if let Some(every) = watchdog {
        let progress = progress.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let last = progress.load(std::sync::atomic::Ordering::Relaxed);
                if clock.elapsed().as_secs().saturating_sub(last) < MAX_PASS_SECS {
                    sd_notify(&[sd_notify::NotifyState::Watchdog]);
                }
            }
        });
    }

    tokio::pin!(shutdown);
    let mut next_resync = tokio::time::Instant::now();
    let mut retry_at: Option<tokio::time::Instant> = None;
    let mut pending = true;

    loop {
        touch();
        if pending {
            pending = false;
            // (Re)connect with backoff when the bus or manager went away.
            if sd.is_none() {
                match Systemd::connect(opts.loc.bus.as_deref()).await {
                    Ok(c) => {
                        if let Err(e) = c.check_unit_dir(&opts.loc.unit_dir).await {
                            tracing::error!("{}", crate::error_chain(&e));
                            return Err(RunError::Setup(crate::error_chain(&e)));
                        }
                        unit_changes = systemd::unit_changes(&c).await.ok();
                        let _ = c.subscribe().await;
                        tracing::info!("connected to the user manager");
                        reconnect_delay = Duration::from_millis(200);
                        sd = Some(c);
                    }
                    Err(e) => {
                        let msg = crate::error_chain(&e);
                        tracing::warn!("{msg}; retrying in {reconnect_delay:?}");
                        metrics.reconcile_error("connect");
                        sd_notify(&[sd_notify::NotifyState::Status(&format!(
                            "cannot reach systemd: {msg}"
                        ))]);
                        retry_at = Some(tokio::time::Instant::now() + reconnect_delay);
                        reconnect_delay = (reconnect_delay * 2).min(Duration::from_secs(30));
                    }
                }
            }
            if let Some(c) = sd.clone() {
                let mut dirs: Vec<&Path> =
                    vec![&opts.loc.manifests, &parent, &opts.loc.unit_dir, &holds_dir];
                dirs.extend(config_dirs.iter().map(PathBuf::as_path));
                watch.arm(&dirs);
                let timer = std::time::Instant::now();
                // systemd forgets Subscribe when it re-executes; renewing it
                // keeps unit-change signals coming (idempotent).
                c.renew_subscription();
                // SIGTERM does not wait for a pass: dropping it mid-way is
                // what a crash does, and a crash is safe (atomic writes; the
                // next pass resumes).
                let outcome = tokio::select! {
                    r = pass(&mut rec, &c, &mut outcomes, &mut last_saved, &mut config_dirs) => r,
                    _ = &mut shutdown => {
                        tracing::info!("stopping (a pass was interrupted; the next start resumes it)");
                        sd_notify(&[sd_notify::NotifyState::Stopping]);
                        pool.abort_all();
                        return Ok(());
                    }
                };
                touch();
                metrics.observe_pass(timer.elapsed());
                match outcome {
                    Ok((report, status)) => {
                        error_delay = Duration::from_millis(200);
                        metrics.set_objects(&status);
                        metrics.reconciled(&status);
                        for (name, outcome) in &report.reloads {
                            metrics.reload(name, outcome);
                        }
                        metrics.set_backups(&opts.loc.state_dir, &status);
                        // Config directories may have appeared: watch them now.
                        let mut dirs: Vec<&Path> =
                            vec![&opts.loc.manifests, &parent, &opts.loc.unit_dir, &holds_dir];
                        dirs.extend(config_dirs.iter().map(PathBuf::as_path));
                        watch.arm(&dirs);
                        if report.actions > 0 || !report.failures.is_empty() {
                            tracing::info!(actions = report.actions, reloads = report.daemon_reloads, ready = report.ready, not_ready = report.not_ready, elapsed = ?report.elapsed, "reconciled");
                        }
                        for (m, e) in &report.failures {
                            tracing::warn!(manifest = %m, "{e}");
                            metrics.reconcile_error("apply");
                        }
                        for w in report.work {
                            pool.spawn(w, &c, &rec.http, rec.job_timeout);
                        }
                        retry_at = report.retry_at.map(tokio::time::Instant::from_std);
                        let summary =
                            format!("{} ready, {} not ready", report.ready, report.not_ready);
                        if !ready_sent {
                            sd_notify(&[
                                sd_notify::NotifyState::Ready,
                                sd_notify::NotifyState::Status(&summary),
                            ]);
                            ready_sent = true;
                        } else {
                            sd_notify(&[sd_notify::NotifyState::Status(&summary)]);
                        }
                    }
                    Err(e) => {
                        let msg = crate::error_chain(&e);
                        tracing::error!("{msg}");
                        metrics.reconcile_error(match &e {
                            ReconcileError::Load(_) => "manifests",
                            ReconcileError::Systemd(_) => "systemd",
                            _ => "io",
                        });
                        sd_notify(&[sd_notify::NotifyState::Status(&format!("error: {msg}"))]);
                        if !ready_sent {
                            // Running but degraded is still "started": systemd
                            // should not kill us for a missing directory.
                            sd_notify(&[sd_notify::NotifyState::Ready]);
                            ready_sent = true;
                        }
                        if e.is_disconnect() {
                            sd = None;
                            unit_changes = None;
                            pool.abort_all();
                            retry_at = Some(tokio::time::Instant::now() + reconnect_delay);
                        } else {
                            retry_at = Some(tokio::time::Instant::now() + error_delay);
                            error_delay = (error_delay * 2).min(Duration::from_secs(30));
                        }
                    }
                }
            }
            next_resync = tokio::time::Instant::now() + opts.resync;
        }
        metrics.set_queue_depth(pool.in_flight.len() + outcomes.len() + usize::from(pending));

        let retry_sleep = async {
            match retry_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        let unit_event = async {
            match unit_changes.as_mut() {
                Some(s) => {
                    let first = s.recv().await;
                    // Collapse a burst into one trigger.
                    while s.try_recv().is_ok() {}
                    first
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut shutdown => {
                tracing::info!("stopping");
                sd_notify(&[sd_notify::NotifyState::Stopping]);
                pool.abort_all();
                return Ok(());
            }
            _ = trigger.notified() => { tracing::debug!("woken by a file change"); pending = true; }
            ev = unit_event => {
                match ev {
                    Some(unit) => { tracing::debug!(%unit, "woken by a unit change"); pending = true }
                    None => { sd = None; unit_changes = None; pending = true; }
                }
            }
            Some(o) = done_rx.recv() => {
                pool.in_flight.remove(&o.key());
                // A probe that says what the last one said changes nothing.
                let news = match &o {
                    Outcome::Probe { name, result } => rec.probes.get(name) != Some(result),
                    _ => true,
                };
                if news {
                    tracing::debug!(key = ?o.key(), "work finished");
                    outcomes.push(o);
                    pending = true;
                }
            }
            _ = tokio::time::sleep_until(next_resync) => { tracing::debug!("resync"); pending = true; }
            _ = retry_sleep => { tracing::debug!("retry timer"); retry_at = None; pending = true; }
        }
    }
}

/// One pass under the state lock: read status, fold in finished work,
/// prepare, apply, save status when it changed (or the heartbeat is due).
async fn pass(
    rec: &mut Reconciler,
    sd: &Systemd,
    outcomes: &mut Vec<Outcome>,
    last_saved: &mut Option<std::time::Instant>,
    config_dirs: &mut Vec<PathBuf>,
) -> Result<(crate::reconcile::PassReport, Status), ReconcileError> {
    let _lock = StateLock::acquire(&rec.loc.state_dir, "unitlet run", |h| {
        tracing::debug!("waiting for {h} to finish writing");
    })
    .await
    .map_err(|e| ReconcileError::Stuck(crate::error_chain(&e)))?;
    let status_path = rec.loc.status_file();
    let mut status = Status::load_async(&status_path).await;
    let before = status.clone();
    let mut reloads = Vec::new();
    for o in outcomes.drain(..) {
        reloads.extend(rec.finish(o, &mut status));
    }
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
                status.event("unitlet", "Warning", "ReconcileError", msg.clone());
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
pub enum RunError {
    /// The metrics listener could not be opened.
    #[error("cannot serve metrics on {addr}: {source}; choose another --metrics-addr")]
    Metrics {
        addr: std::net::SocketAddr,
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
