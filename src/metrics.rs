//! The operator's own Prometheus metrics, served on `--metrics-addr`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};

use crate::manifest::Kind;
use crate::status::Status;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format_names_counters_with_total() {
        let m = Metrics::new();
        m.observe_pass(Duration::from_millis(3), PassResult::Success);
        m.reload("prom", &crate::reload::ReloadOutcome::Reloaded);
        let t = m.encode_text();
        assert!(t.contains("# HELP unitlet_reconciles_total "), "{t}");
        assert!(t.contains("# TYPE unitlet_reconciles_total counter"), "{t}");
        assert!(t.contains("unitlet_reconciles_total 1"), "{t}");
        assert!(t.contains("unitlet_reloads_total{name=\"prom\"} 1"), "{t}");
        assert!(!t.contains("# EOF"));
    }

    /// Issue 23 item 6: the series every controller has (controller-runtime,
    /// client-go's work queue) are on /metrics after one pass, each work
    /// kind's at zero before any work of it.
    #[test]
    fn controller_series_after_one_pass() {
        let m = Arc::new(Metrics::new());
        m.work_kinds(&["config", "probe"]);
        m.observe_pass(Duration::from_millis(3), PassResult::Requeue);
        let t = m.encode_text();
        for series in [
            "# TYPE unitlet_reconcile_total counter",
            "unitlet_reconcile_total{result=\"success\"} 0",
            "unitlet_reconcile_total{result=\"error\"} 0",
            "unitlet_reconcile_total{result=\"requeue\"} 1",
            "# TYPE unitlet_reconcile_duration_seconds histogram",
            "unitlet_reconcile_duration_seconds_count 1",
            "unitlet_reconciles_total 1",
            "unitlet_workqueue_depth{kind=\"probe\"} 0",
            "unitlet_workqueue_adds_total{kind=\"probe\"} 0",
            "unitlet_workqueue_retries_total{kind=\"probe\"} 0",
            "unitlet_workqueue_queue_duration_seconds_count{kind=\"probe\"} 0",
            "unitlet_workqueue_work_duration_seconds_count{kind=\"probe\"} 0",
        ] {
            assert!(t.contains(series), "{series} missing:\n{t}");
        }
    }

    /// Issue 23 item 6: an item is in the queue's depth from its hand-out
    /// until it takes a slot (or is dropped unstarted); its wait and its
    /// work are timed; a failure that brings it back is a retry.
    #[test]
    fn work_queue_series_follow_an_item() {
        let m = Arc::new(Metrics::new());
        let depth = |m: &Metrics| {
            let t = m.encode_text();
            let line = t
                .lines()
                .find(|l| l.starts_with("unitlet_workqueue_depth{kind=\"config\"}"))
                .map(str::to_owned);
            line.unwrap_or_else(|| panic!("no config depth:\n{t}"))
        };
        let waiting = m.work_added("config");
        let dropped = m.work_added("config");
        assert!(depth(&m).ends_with(" 2"), "{}", depth(&m));
        drop(dropped);
        assert!(depth(&m).ends_with(" 1"), "{}", depth(&m));
        let running = waiting.started();
        assert!(depth(&m).ends_with(" 0"), "{}", depth(&m));
        running.done();
        m.work_retried("config");
        let t = m.encode_text();
        for series in [
            "unitlet_workqueue_adds_total{kind=\"config\"} 2",
            "unitlet_workqueue_queue_duration_seconds_count{kind=\"config\"} 1",
            "unitlet_workqueue_work_duration_seconds_count{kind=\"config\"} 1",
            "unitlet_workqueue_retries_total{kind=\"config\"} 1",
        ] {
            assert!(t.contains(series), "{series} missing:\n{t}");
        }
    }

    fn status_of(objects: &[(Kind, &str)]) -> Status {
        let mut s = Status::default();
        for (kind, name) in objects {
            let o =
                crate::status::ObjectStatus::new(*kind, name, std::path::Path::new("/m/x.yaml"));
            s.objects.insert(name.to_string(), o);
        }
        s
    }

    /// Issue 20 item 2: a Service whose reload failed and a Backup that
    /// succeeded are deleted: their series leave /metrics (the shipped
    /// alerts on them would fire for ever), the others' stay.
    #[test]
    fn series_of_deleted_objects_leave() {
        use crate::reload::ReloadOutcome;
        let run = crate::backup::LastRun {
            last_success: Some(1_700_000_000),
            ..Default::default()
        };
        let runs: std::collections::BTreeMap<String, crate::backup::LastRun> =
            ["nightly", "kept-backup"]
                .iter()
                .map(|b| (b.to_string(), run.clone()))
                .collect();
        let m = Metrics::new();
        let all = status_of(&[
            (Kind::Service, "web"),
            (Kind::Service, "kept"),
            (Kind::Backup, "nightly"),
            (Kind::Backup, "kept-backup"),
        ]);
        let reloads = [
            ("web".to_string(), ReloadOutcome::Reloaded),
            ("web".to_string(), ReloadOutcome::Failed("500".into())),
            ("kept".to_string(), ReloadOutcome::Reloaded),
        ];
        m.passed(&runs, &all, &reloads, &BTreeSet::new());
        let t = m.encode_text();
        for series in [
            "unitlet_last_reload_successful{name=\"web\"} 0",
            "unitlet_reloads_failed_total{name=\"web\"} 1",
            "unitlet_last_backup_success_timestamp_seconds{name=\"nightly\"}",
        ] {
            assert!(t.contains(series), "{series} missing:\n{t}");
        }
        let left = status_of(&[(Kind::Service, "kept"), (Kind::Backup, "kept-backup")]);
        m.passed(&runs, &left, &[], &BTreeSet::new());
        let t = m.encode_text();
        for gone in ["\"web\"", "\"nightly\""] {
            assert!(!t.contains(gone), "{gone} still in /metrics:\n{t}");
        }
        for kept in [
            "unitlet_reloads_total{name=\"kept\"} 1",
            "unitlet_last_reload_successful{name=\"kept\"} 1",
            "unitlet_last_backup_success_timestamp_seconds{name=\"kept-backup\"}",
            "unitlet_object_last_reconcile_age_seconds{name=\"kept\"}",
        ] {
            assert!(t.contains(kept), "{kept} missing:\n{t}");
        }
    }

    /// Issue 20 item 2: an object the pass skipped (backing off, held)
    /// was not reconciled: its age keeps growing while the others' starts
    /// again.
    #[test]
    fn skipped_objects_keep_their_reconcile_age() {
        let m = Metrics::new();
        let status = status_of(&[(Kind::Service, "busy"), (Kind::Service, "held")]);
        let t0 = std::time::Instant::now();
        m.reconciled_at(&status, &BTreeSet::new(), t0);
        let skipped: BTreeSet<String> = ["held".to_string()].into();
        m.reconciled_at(&status, &skipped, t0 + Duration::from_secs(60));
        let at = m.reconciled.lock().unwrap().clone();
        assert_eq!(
            at["busy"],
            t0 + Duration::from_secs(60),
            "busy was reconciled"
        );
        assert_eq!(at["held"], t0, "held's age was reset");
        // Skipped from its first pass on: its age starts then.
        let fresh = status_of(&[(Kind::Service, "new-held")]);
        let skipped: BTreeSet<String> = ["new-held".to_string()].into();
        m.reconciled_at(&fresh, &skipped, t0 + Duration::from_secs(61));
        m.reconciled_at(&fresh, &skipped, t0 + Duration::from_secs(90));
        let at = m.reconciled.lock().unwrap().clone();
        assert_eq!(at["new-held"], t0 + Duration::from_secs(61));
        assert!(!at.contains_key("busy"), "gone objects are forgotten");
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectLabels {
    pub kind: String,
    pub ready: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NameLabels {
    pub name: String,
}

/// The `result` of a pass, as controller-runtime labels its reconciles.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum PassResult {
    /// The pass converged: no failure, nothing left to wait for or retry
    /// (readiness probes of running Services do not count).
    Success,
    /// The pass failed as a whole, or an object's actions failed.
    Error,
    /// The pass worked but left something for later: a backoff or retry
    /// is scheduled, or a wait was handed out (start jobs, readiness, a
    /// config change, a rollout watch).
    Requeue,
}

impl PassResult {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            PassResult::Success => "success",
            PassResult::Error => "error",
            PassResult::Requeue => "requeue",
        }
    }
}

/// Labels of `unitlet_reconcile_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `success`, `error` or `requeue` ([`PassResult::as_str`]).
    pub result: String,
}

/// Labels of the work-queue series: the kind of handed-out work.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkLabels {
    /// The work's kind, as the reconciler names it (`readiness`, `probe`,
    /// `config`, `jobs`, `rollout`).
    pub kind: String,
}

/// A histogram per label set, with the buckets its constructor gives.
type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Buckets of the work-queue histograms: waits for a slot are short,
/// work (readiness waits, rollout watches) may take minutes.
fn work_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    ])
}

pub struct Metrics {
    registry: Mutex<Registry>,
    reloads: Family<NameLabels, Counter>,
    reloads_failed: Family<NameLabels, Counter>,
    last_reload_ok: Family<NameLabels, Gauge>,
    last_reload_ts: Family<NameLabels, FloatGauge>,
    last_backup_ts: Family<NameLabels, FloatGauge>,
    last_backup_ok: Family<NameLabels, Gauge>,
    reconciles: Counter,
    reconcile_results: Family<ResultLabels, Counter>,
    queue: WorkQueueMetrics,
    reconcile_errors: Family<ErrorLabels, Counter>,
    reconcile_duration: Histogram,
    managed: Family<ObjectLabels, Gauge>,
    queue_depth: Gauge,
    reconcile_age: Family<NameLabels, FloatGauge>,
    /// When each object was last reconciled; ages are computed at scrape.
    reconciled: Mutex<std::collections::HashMap<String, std::time::Instant>>,
    /// Objects that have series of their own (`name` label), so those
    /// series go when the object goes.
    named: Mutex<BTreeSet<String>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Handed-out work waiting for its slot (see [`Metrics::work_added`]).
#[must_use = "dropping it takes the work out of the queue's depth"]
pub struct Queued {
    metrics: Arc<Metrics>,
    kind: &'static str,
    since: std::time::Instant,
    started: bool,
}

impl Queued {
    /// The work took its slot: out of the depth, its wait observed.
    pub fn started(mut self) -> Running {
        self.started = true;
        let l = WorkLabels {
            kind: self.kind.into(),
        };
        self.metrics.queue.depth.get_or_create(&l).dec();
        let waited = self.since.elapsed().as_secs_f64();
        self.metrics
            .queue
            .queue_duration
            .get_or_create(&l)
            .observe(waited);
        Running {
            metrics: self.metrics.clone(),
            kind: self.kind,
            since: std::time::Instant::now(),
        }
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        if !self.started {
            let l = WorkLabels {
                kind: self.kind.into(),
            };
            self.metrics.queue.depth.get_or_create(&l).dec();
        }
    }
}

/// Work that took its slot (see [`Queued::started`]).
pub struct Running {
    metrics: Arc<Metrics>,
    kind: &'static str,
    since: std::time::Instant,
}

impl Running {
    /// The work ended: its duration observed. Work stopped before its end
    /// (replaced, or the manager went away) is not observed.
    pub fn done(self) {
        let l = WorkLabels {
            kind: self.kind.into(),
        };
        let took = self.since.elapsed().as_secs_f64();
        self.metrics
            .queue
            .work_duration
            .get_or_create(&l)
            .observe(took);
    }
}

/// `unitlet_reconcile_total{result}`, each result at zero from the start.
fn reconcile_results(r: &mut Registry) -> Family<ResultLabels, Counter> {
    let results: Family<ResultLabels, Counter> = metric(
        r,
        "reconcile",
        "Reconcile passes by result: success (converged), error (failed), requeue (work left for later)",
    );
    for result in [PassResult::Success, PassResult::Error, PassResult::Requeue] {
        let l = ResultLabels {
            result: result.as_str().into(),
        };
        let _ = results.get_or_create(&l);
    }
    results
}

/// The work queue's series, named as client-go's `workqueue_*`.
struct WorkQueueMetrics {
    depth: Family<WorkLabels, Gauge>,
    adds: Family<WorkLabels, Counter>,
    queue_duration: HistogramFamily<WorkLabels>,
    work_duration: HistogramFamily<WorkLabels>,
    retries: Family<WorkLabels, Counter>,
}

impl WorkQueueMetrics {
    fn register(r: &mut Registry) -> WorkQueueMetrics {
        let queue_duration = HistogramFamily::new_with_constructor(work_histogram as fn() -> _);
        r.register(
            "workqueue_queue_duration_seconds",
            "Seconds handed-out work waited for a slot of its kind before it started",
            queue_duration.clone(),
        );
        let work_duration = HistogramFamily::new_with_constructor(work_histogram as fn() -> _);
        r.register(
            "workqueue_work_duration_seconds",
            "Seconds handed-out work ran, by kind",
            work_duration.clone(),
        );
        WorkQueueMetrics {
            depth: metric(
                r,
                "workqueue_depth",
                "Handed-out work waiting for a slot of its kind",
            ),
            adds: metric(r, "workqueue_adds", "Work handed out, by kind"),
            queue_duration,
            work_duration,
            retries: metric(
                r,
                "workqueue_retries",
                "Work whose outcome brings it back: a failed config reload or start job, work lost with the user manager",
            ),
        }
    }
}

/// A gauge of seconds.
type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// A new metric, registered under `name` (metrics are shared handles).
fn metric<M: Metric + Default + Clone>(registry: &mut Registry, name: &str, help: &str) -> M {
    let m = M::default();
    registry.register(name, help, m.clone());
    m
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("unitlet");
        let reconciles = metric(&mut r, "reconciles", "Reconcile passes run");
        let reconcile_errors = metric(
            &mut r,
            "reconcile_errors",
            "Reconcile errors by kind (manifests, systemd, apply, connect, io)",
        );
        let reconcile_duration = Histogram::new([
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ]);
        r.register(
            "reconcile_duration_seconds",
            "Duration of reconcile passes",
            reconcile_duration.clone(),
        );
        Metrics {
            reconciles,
            reconcile_results: reconcile_results(&mut r),
            queue: WorkQueueMetrics::register(&mut r),
            reconcile_errors,
            reconcile_duration,
            managed: metric(
                &mut r,
                "managed_units",
                "Managed objects by kind and readiness",
            ),
            // The config reloader's conventional series (as
            // prometheus-operator's reloader exports them), per Service.
            reloads: metric(
                &mut r,
                "reloads",
                "Reloads or restarts of a Service caused by a config change",
            ),
            reloads_failed: metric(
                &mut r,
                "reloads_failed",
                "Failed reload attempts (validation, HTTP, signal, restart) after a config change",
            ),
            last_reload_ok: metric(
                &mut r,
                "last_reload_successful",
                "Whether the last config reload of a Service succeeded (1) or not (0)",
            ),
            last_reload_ts: metric(
                &mut r,
                "last_reload_success_timestamp_seconds",
                "Time of the last successful config reload of a Service",
            ),
            last_backup_ts: metric(
                &mut r,
                "last_backup_success_timestamp_seconds",
                "Time of the last complete backup set of a Backup manifest",
            ),
            last_backup_ok: metric(
                &mut r,
                "last_backup_successful",
                "Whether the last backup run of a Backup manifest succeeded (1) or not (0)",
            ),
            queue_depth: metric(
                &mut r,
                "queue_depth",
                "Objects waiting: work in flight (readiness, config reloads, probes), outcomes not yet folded in, and a pending pass",
            ),
            reconcile_age: metric(
                &mut r,
                "object_last_reconcile_age_seconds",
                "Seconds since each object was last reconciled",
            ),
            reconciled: Mutex::new(Default::default()),
            named: Mutex::new(BTreeSet::new()),
            registry: Mutex::new(r),
        }
    }

    /// A pass ended after `d`, with `result`.
    pub fn observe_pass(&self, d: Duration, result: PassResult) {
        self.reconciles.inc();
        let l = ResultLabels {
            result: result.as_str().into(),
        };
        self.reconcile_results.get_or_create(&l).inc();
        self.reconcile_duration.observe(d.as_secs_f64());
    }

    /// Create the work-queue series of each kind, at zero, so they are on
    /// /metrics (and in `rate()`s) before the first work of a kind.
    pub fn work_kinds(&self, kinds: &[&str]) {
        for kind in kinds {
            let l = WorkLabels {
                kind: (*kind).into(),
            };
            let _ = self.queue.depth.get_or_create(&l);
            let _ = self.queue.adds.get_or_create(&l);
            let _ = self.queue.retries.get_or_create(&l);
            let _ = self.queue.queue_duration.get_or_create(&l);
            let _ = self.queue.work_duration.get_or_create(&l);
        }
    }

    /// Work of `kind` was handed out: it counts in the depth until it
    /// starts ([`Queued::started`]) or is dropped unstarted.
    pub fn work_added(self: &Arc<Self>, kind: &'static str) -> Queued {
        let l = WorkLabels { kind: kind.into() };
        self.queue.adds.get_or_create(&l).inc();
        self.queue.depth.get_or_create(&l).inc();
        Queued {
            metrics: self.clone(),
            kind,
            since: std::time::Instant::now(),
            started: false,
        }
    }

    /// Work of `kind` ended in a way that brings it back.
    pub fn work_retried(&self, kind: &str) {
        let l = WorkLabels { kind: kind.into() };
        self.queue.retries.get_or_create(&l).inc();
    }

    pub fn reconcile_error(&self, kind: &str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels { kind: kind.into() })
            .inc();
    }

    pub fn set_objects(&self, status: &Status) {
        for kind in [Kind::Service, Kind::Backup] {
            for ready in ["true", "false"] {
                let n = status
                    .objects
                    .values()
                    .filter(|o| o.kind == kind && o.is_ready() == (ready == "true"))
                    .count();
                self.managed
                    .get_or_create(&ObjectLabels {
                        kind: kind.to_string(),
                        ready: ready.into(),
                    })
                    .set(n as i64);
            }
        }
    }

    /// Everything a pass tells: objects by readiness, which objects were
    /// reconciled (all in `status` but the `skipped` ones: backing off,
    /// held), the config reloads it folded in and the Backups' last runs.
    /// Then the series of objects no longer in `status` go, so alerts on
    /// them stop once their manifest is deleted.
    pub fn passed(
        &self,
        last_runs: &std::collections::BTreeMap<String, crate::backup::LastRun>,
        status: &Status,
        reloads: &[(String, crate::reload::ReloadOutcome)],
        skipped: &BTreeSet<String>,
    ) {
        self.set_objects(status);
        self.reconciled(status, skipped);
        for (name, outcome) in reloads {
            self.reload(name, outcome);
        }
        self.set_backups(last_runs, status);
        self.forget_gone(status);
    }

    /// Remove every per-object series of objects not in `status`.
    fn forget_gone(&self, status: &Status) {
        let mut named = self
            .named
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let gone: Vec<String> = named
            .iter()
            .filter(|n| !status.objects.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            let l = NameLabels { name };
            self.reloads.remove(&l);
            self.reloads_failed.remove(&l);
            self.last_reload_ok.remove(&l);
            self.last_reload_ts.remove(&l);
            self.last_backup_ts.remove(&l);
            self.last_backup_ok.remove(&l);
            named.remove(&l.name);
        }
    }

    fn has_series(&self, name: &str) {
        let mut named = self
            .named
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !named.contains(name) {
            named.insert(name.to_string());
        }
    }

    pub fn reload(&self, name: &str, outcome: &crate::reload::ReloadOutcome) {
        use crate::reload::ReloadOutcome;
        self.has_series(name);
        let l = NameLabels { name: name.into() };
        match outcome {
            ReloadOutcome::Reloaded | ReloadOutcome::Restarted => {
                self.reloads.get_or_create(&l).inc();
                self.last_reload_ok.get_or_create(&l).set(1);
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0);
                self.last_reload_ts.get_or_create(&l).set(now);
            }
            ReloadOutcome::Failed(_) | ReloadOutcome::Invalid(_) => {
                self.reloads_failed.get_or_create(&l).inc();
                self.last_reload_ok.get_or_create(&l).set(0);
            }
            ReloadOutcome::Recorded => {}
        }
    }

    /// Backup outcomes, from the `NAME.last.json` files `unitlet backup`
    /// writes (the backups run in their own oneshot processes), as the
    /// pass read them.
    pub fn set_backups(
        &self,
        last_runs: &std::collections::BTreeMap<String, crate::backup::LastRun>,
        status: &Status,
    ) {
        for o in status.objects.values().filter(|o| o.kind == Kind::Backup) {
            let Some(run) = last_runs.get(&o.name) else {
                continue;
            };
            self.has_series(&o.name);
            let l = NameLabels {
                name: o.name.clone(),
            };
            if let Some(ts) = run.last_success {
                self.last_backup_ts.get_or_create(&l).set(ts as f64);
            }
            let ok = run.last_error.is_none();
            self.last_backup_ok.get_or_create(&l).set(ok as i64);
        }
    }

    pub fn set_queue_depth(&self, n: usize) {
        self.queue_depth.set(n as i64);
    }

    /// Record that the objects of `status` were reconciled now, except
    /// the `skipped` ones, whose age goes on (from now if never seen).
    fn reconciled(&self, status: &Status, skipped: &BTreeSet<String>) {
        self.reconciled_at(status, skipped, std::time::Instant::now());
    }

    fn reconciled_at(&self, status: &Status, skipped: &BTreeSet<String>, now: std::time::Instant) {
        let mut r = self
            .reconciled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        r.retain(|n, _| status.objects.contains_key(n));
        for n in status.objects.keys() {
            if skipped.contains(n) {
                r.entry(n.clone()).or_insert(now);
            } else {
                r.insert(n.clone(), now);
            }
        }
    }

    pub fn encode(&self) -> String {
        {
            let r = self
                .reconciled
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            self.reconcile_age.clear();
            for (name, at) in r.iter() {
                self.reconcile_age
                    .get_or_create(&NameLabels { name: name.clone() })
                    .set(at.elapsed().as_secs_f64());
            }
        }
        let mut out = String::new();
        let reg = self
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Writing to a String cannot fail; an error would leave `out` short.
        let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
        out
    }

    /// The classic Prometheus text format (0.0.4), which every Prometheus
    /// and `promtool check metrics` read.
    pub fn encode_text(&self) -> String {
        openmetrics_to_text(&self.encode())
    }
}

/// OpenMetrics → Prometheus text 0.0.4: counters are named with their
/// `_total` suffix in `# HELP`/`# TYPE`, and `# EOF`/`# UNIT` go.
pub fn openmetrics_to_text(om: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for l in om.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ")
            && let Some((name, "counter")) = rest.split_once(' ')
        {
            counters.insert(name.to_string());
        }
    }
    let mut out = String::with_capacity(om.len());
    for l in om.lines() {
        if l == "# EOF" || l.starts_with("# UNIT ") {
            continue;
        }
        let fixed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = l.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(fixed.as_deref().unwrap_or(l));
        out.push('\n');
    }
    out
}

/// Serve `/metrics` on `addr` in the background.
///
/// # Errors
/// When the address cannot be bound.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let m = metrics.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    m.encode_text(),
                )
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(())
}
