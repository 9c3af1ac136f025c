//! The user manager as the reconciler needs it: [`UserManager`].
//!
//! The D-Bus adapter (`systemd.rs`) implements it; the in-memory
//! `fake::FakeManager` (tests only) implements it with units that load from
//! the unit directory on `daemon-reload`, jobs that complete at once and
//! limits read from the loaded unit files, so a whole pass (prepare → plan →
//! apply → status) is tested in milliseconds without systemd.
//!
//! Jobs follow systemd's documented protocol whatever the implementation:
//! open a [`JobStream`] *before* queueing, key jobs by object path, treat
//! any result but `done` as failure, and give every wait a deadline.
//!
//! Architecture Invariant: the trait is the only door to the user
//! manager. Its signatures carry plain types ([`UnitPath`], [`LiveUnit`],
//! [`UnitProperties`], …) and one error, [`ManagerError`]; nothing in it
//! names the implementation or its D-Bus types (`tests/structure.rs`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::time::Duration;

use crate::status::Reason;

mod error;
#[cfg(test)]
pub mod fake;
mod kmsg;
mod live;

pub use error::{CallFailure, ManagerError};
pub use kmsg::{kernel_log_oom_kill, kernel_log_oom_kill_async};
pub use live::{
    LiveLimits, LiveProperties, LiveUnit, UnitPath, UnitProperties, Usage, WantedLimits,
};

/// Live units by name, each with the path its properties are read from.
pub type ListedUnits = BTreeMap<String, (LiveUnit, UnitPath)>;

/// What a job verb was, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// `StartUnit`.
    Start,
    /// `StopUnit`.
    Stop,
    /// `RestartUnit`.
    Restart,
    /// `ReloadUnit`: the unit's own `ExecReload=`.
    Reload,
}

impl JobKind {
    /// The verb in messages: "start", "stop", "restart", "reload".
    pub fn verb(self) -> &'static str {
        match self {
            JobKind::Start => "start",
            JobKind::Stop => "stop",
            JobKind::Restart => "restart",
            JobKind::Reload => "reload",
        }
    }
}

/// A queued job we are waiting for.
#[derive(Debug, Clone)]
pub struct QueuedJob {
    /// The job's object path: what `JobRemoved` names.
    pub path: String,
    /// The unit the job is for.
    pub unit: String,
    /// What the job does to it.
    pub kind: JobKind,
}

/// How a service's main process last ended: the `Service` properties
/// failure messages are made of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceResult {
    /// `Result=`: `success`, `exit-code`, `signal`, `oom-kill`, …
    pub result: String,
    /// `ExecMainCode=` (a `CLD_*` code: 1 exited, 2 killed, 3 dumped).
    pub code: i32,
    /// `ExecMainStatus=`: exit status or signal number.
    pub status: i32,
    /// `ExecMainPID=`.
    pub pid: u32,
    /// The program of the first `ExecStart=`, when known.
    pub program: Option<String>,
    /// `NRestarts=`: restarts by `Restart=` since the last start by job.
    pub n_restarts: u32,
    /// The unit's start limit (`StartLimitBurst=` starts within
    /// `StartLimitIntervalSec=`; a burst of 0: none).
    pub start_limit: (u32, std::time::Duration),
}

/// `CLD_KILLED`: the main process was killed by a signal.
const CLD_KILLED: i32 = 2;

impl ServiceResult {
    /// Whether systemd's start limit refuses to start the unit: it says
    /// `start-limit-hit`, or its own restarts used up the burst (a
    /// failed restart loop keeps the first failure's `Result=`).
    pub fn start_limit_hit(&self) -> bool {
        let (burst, _) = self.start_limit;
        self.result == "start-limit-hit"
            || (self.result != "success" && burst > 0 && self.n_restarts >= burst)
    }

    /// What the start limit means for the unit, for messages.
    fn start_limit_note(&self) -> String {
        let (burst, interval) = self.start_limit;
        let within = if burst > 0 {
            format!(
                " ({burst} starts within {})",
                humantime::format_duration(interval)
            )
        } else {
            String::new()
        };
        format!(
            "systemd's start limit was hit{within}: it refuses to start the unit until that interval has passed since the burst began, so unitlet's next start after it succeeds"
        )
    }

    /// Why the service failed: `(reason, message)` for its Ready
    /// condition, `None` when it did not. An OOM kill is `OOMKilled` — from
    /// `Result=oom-kill` (cgroup v2), or, on cgroup v1 where systemd only
    /// sees a SIGKILL, confirmed by `oom_logged(pid)` (the kernel log).
    pub fn failure(
        &self,
        unit: &str,
        memory_max: Option<u64>,
        oom_logged: impl FnOnce(u32) -> Option<bool>,
    ) -> Option<(Reason, String)> {
        let (status, pid) = (self.status, self.pid);
        let limit = memory_max
            .map(|b| format!(" (memoryMax {})", crate::size::human_bytes(b)))
            .unwrap_or_default();
        let journal = crate::status::see_logs(unit);
        let oom = |pid_note: String| {
            Some((
                Reason::OOMKilled,
                format!(
                    "{unit} was killed by the kernel OOM killer{pid_note}: it used all the memory it may{limit}; raise resources.memoryMax or find the leak; {journal}"
                ),
            ))
        };
        if self.result == "oom-kill" {
            return oom(String::new());
        }
        if self.result == "signal"
            && self.code == CLD_KILLED
            && status == rustix::process::Signal::KILL.as_raw()
            && pid > 0
        {
            match oom_logged(pid) {
                Some(true) => return oom(format!(" (PID {pid})")),
                _ if memory_max.is_some() => {
                    return Some((
                        Reason::Killed,
                        format!(
                            "{unit} was killed by SIGKILL (PID {pid}), most likely for exceeding its memory limit{limit}; {journal}"
                        ),
                    ));
                }
                _ => {}
            }
        }
        let detail = match self.result.as_str() {
            "exit-code" => format!("exited with status {status}"),
            "signal" | "core-dump" => format!("was killed by signal {status}"),
            "timeout" => "timed out".to_string(),
            "start-limit-hit" => "was started too often".to_string(),
            "success" | "" => return None,
            other => format!("failed ({other})"),
        };
        if self.start_limit_hit() {
            let note = self.start_limit_note();
            return Some((
                Reason::Failed,
                format!("{unit} {detail}; {note}; {journal}"),
            ));
        }
        Some((Reason::Failed, format!("{unit} {detail}; {journal}")))
    }

    /// Why a job of the unit failed, appended to the job failure message.
    pub fn hint(&self, unit: &str) -> String {
        let mut hint = String::new();
        if !self.result.is_empty() && self.result != "success" {
            hint.push_str(&format!(" (service result {}", self.result));
            if self.status != 0 {
                hint.push_str(&format!(", exit status {}", self.status));
            }
            hint.push(')');
        }
        if self.start_limit_hit() {
            hint.push_str(&format!("; {}", self.start_limit_note()));
        }
        if let Some(prog) = &self.program
            && !std::path::Path::new(prog).exists()
        {
            hint.push_str(&format!(
                "; {prog} does not exist — install it or fix spec.command"
            ));
        }
        hint.push_str(&format!("; {}", crate::status::see_logs(unit)));
        hint
    }
}

/// A unit as a rollout watch looks at it, in plain values: one
/// [`UserManager::unit_progress`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitProgress {
    /// `ActiveState` (`inactive` for a unit the manager does not list).
    pub active_state: String,
    /// `SubState` (`not loaded` for a unit the manager does not list).
    pub sub_state: String,
    /// A job is queued or running for it.
    pub job_pending: bool,
    /// `NRestarts`: restarts by `Restart=` since its last start by job.
    pub n_restarts: u32,
}

/// What every [`UserManager`] call returns: a `Send` future of an answer
/// or a [`ManagerError`].
pub trait Answer<T>: Future<Output = Result<T, ManagerError>> + Send {}

impl<T, F: Future<Output = Result<T, ManagerError>> + Send> Answer<T> for F {}

/// A pause of unit signals (see [`UserManager::pause_unit_signals`]);
/// ends when dropped, or at its deadline, whichever is first.
pub struct SignalPause {
    /// Which pause it is, for logs.
    n: u64,
    /// What ends it; run once, on drop.
    end: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl SignalPause {
    /// Pause number `n`, ended by `end` when dropped.
    pub fn new(n: u64, end: impl FnOnce() + Send + Sync + 'static) -> SignalPause {
        SignalPause {
            n,
            end: Some(Box::new(end)),
        }
    }
}

impl std::fmt::Debug for SignalPause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignalPause").field("n", &self.n).finish()
    }
}

impl Drop for SignalPause {
    fn drop(&mut self) {
        if let Some(end) = self.end.take() {
            end();
        }
    }
}

/// What the reconciler asks of the user manager.
///
/// Implemented over D-Bus by the systemd adapter and, in tests, by
/// `fake::FakeManager`.
/// Every future is `Send`, so work using a manager can run on its own task.
pub trait UserManager: Send + Sync {
    /// The manager's unit search path (`UnitPath`).
    fn unit_path(&self) -> impl Answer<Vec<String>>;

    /// State of many units in one call (`ListUnitsByNames`); units that do
    /// not exist are listed as `not-found`.
    fn list_units(&self, names: &[String]) -> impl Answer<ListedUnits>;

    /// Where the unit was loaded from (`FragmentPath`).
    fn fragment_path(&self, unit: &str, path: &UnitPath) -> impl Answer<String>;

    /// Whether the unit file changed since it was loaded (`NeedDaemonReload`).
    fn need_daemon_reload(&self, unit: &str, path: &UnitPath) -> impl Answer<bool>;

    /// Live limits of a service unit.
    fn live_limits(&self, unit: &str, path: &UnitPath) -> impl Answer<LiveLimits>;

    /// How the service's main process last ended.
    fn service_result(&self, unit: &str, path: &UnitPath) -> impl Answer<ServiceResult>;

    /// How often systemd restarted the service by its `Restart=` since
    /// its last start by job (`NRestarts`).
    fn n_restarts(&self, unit: &str, path: &UnitPath) -> impl Answer<u32>;

    /// Load a unit (`LoadUnit`) and return its path.
    fn load_unit(&self, unit: &str) -> impl Answer<UnitPath>;

    /// `daemon-reload`; returns once the reload has finished.
    fn reload(&self) -> impl Answer<()>;

    /// `EnableUnitFiles` (no-op for an empty list).
    fn enable(&self, units: &[String]) -> impl Answer<()>;

    /// `DisableUnitFiles` (no-op for an empty list).
    fn disable(&self, units: &[String]) -> impl Answer<()>;

    /// `ResetFailedUnit`, ignoring errors.
    fn reset_failed(&self, unit: &str) -> impl Future<Output = ()> + Send;

    /// The manager's `DefaultTasksMax`: `TasksMax` of a unit that sets none.
    fn default_tasks_max(&self) -> impl Answer<u64>;

    /// Send a signal to the unit's main process (a `reload.signal`).
    fn kill_main(&self, unit: &str, signal: i32) -> impl Answer<()>;

    /// `systemctl reload`: the unit's own `ExecReload=`, waited for at
    /// most `timeout` (`apply --timeout`; the operator's job deadline).
    fn reload_unit(&self, unit: &str, timeout: Duration) -> impl Answer<()>;

    /// Open the `JobRemoved` stream. Call before queueing jobs.
    fn job_stream(&self) -> impl Answer<JobStream>;

    /// Queue a job; the caller must hold a [`JobStream`] opened earlier.
    fn queue(&self, unit: &str, kind: JobKind) -> impl Answer<QueuedJob>;

    /// The unit's own properties: load state, unit file, drop-ins,
    /// enablement (`unitlet restore` checks a unit is unitlet's by them).
    fn unit_properties(&self, unit: &str, path: &UnitPath) -> impl Answer<UnitProperties>;

    /// What the unit does now (its type's properties: main process,
    /// result, output, resource use), for `describe`, `get -o wide` and
    /// `logs`.
    fn live_properties(&self, unit: &str, path: &UnitPath) -> impl Answer<LiveProperties>;

    /// The PID of the user manager (its cgroup says which controllers it
    /// has: the `LimitsEnforced` condition).
    fn manager_pid(&self) -> impl Answer<u32>;

    /// Stop unit signals for at most `at_most`, or until the returned
    /// pause is dropped: while a large batch of units starts, their
    /// signals cost the manager more than they tell. When the pause ends,
    /// the operator is woken to look at every unit (a change made
    /// meanwhile was not signalled). Jobs queued meanwhile still end with
    /// their `JobRemoved`.
    fn pause_unit_signals(&self, at_most: Duration) -> impl Future<Output = SignalPause> + Send;
    /// One look at a unit for a rollout watch: its state, a pending job,
    /// its restarts (see [`UnitProgress`]).
    fn unit_progress(&self, unit: &str) -> impl Answer<UnitProgress>;

    /// Why a unit failed, for a rollout verdict: the message of
    /// [`UserManager::failure_details`]; `None` when it cannot be had.
    fn failure_message(&self, unit: &str) -> impl Future<Output = Option<String>> + Send {
        async move {
            let path = self.load_unit(unit).await.ok()?;
            let (_, msg) = self.failure_details(unit, &path, None).await?;
            Some(msg)
        }
    }

    /// Why a failed service failed: `(reason, message)` for its Ready
    /// condition (see [`ServiceResult::failure`]).
    fn failure_details(
        &self,
        unit: &str,
        path: &UnitPath,
        memory_max: Option<u64>,
    ) -> impl Future<Output = Option<(Reason, String)>> + Send {
        async move {
            let r = self.service_result(unit, path).await.ok()?;
            // Asked only of a SIGKILLed process (see `failure`), off the runtime.
            let logged = if r.result == "signal"
                && r.status == rustix::process::Signal::KILL.as_raw()
                && r.pid > 0
            {
                kernel_log_oom_kill_async(r.pid).await
            } else {
                None
            };
            r.failure(unit, memory_max, |_| logged)
        }
    }

    /// Why a unit failed, for a job failure message.
    fn failure_hint(&self, unit: &str) -> impl Future<Output = String> + Send {
        async move {
            let Ok(path) = self.load_unit(unit).await else {
                return String::new();
            };
            match self.service_result(unit, &path).await {
                Ok(r) => r.hint(unit),
                Err(_) => String::new(),
            }
        }
    }

    /// Compare a unit's live limits with the wanted ones, after an apply.
    /// Returns what differs (empty when all match).
    fn limit_differences(&self, unit: &str, wanted: &WantedLimits) -> impl Answer<Vec<String>> {
        async move {
            let path = self.load_unit(unit).await?;
            let live = self.live_limits(unit, &path).await?;
            Ok(wanted.differences(&live))
        }
    }
}

/// `JobRemoved` signals, opened before jobs are queued: `(job path,
/// result)` pairs.
///
/// The signals are drained by their own task into an unbounded channel:
/// a bounded queue that nobody reads while hundreds of jobs are queued
/// would stall the connection (and with it the replies we wait for).
pub struct JobStream {
    rx: tokio::sync::mpsc::UnboundedReceiver<(String, String)>,
    drain: Option<tokio::task::JoinHandle<()>>,
    /// Results seen for jobs not (yet) waited for, by object path.
    seen: HashMap<String, String>,
}

impl Drop for JobStream {
    fn drop(&mut self) {
        if let Some(d) = &self.drain {
            d.abort();
        }
    }
}

impl JobStream {
    /// A stream fed by `rx`; `drain` (the task feeding it) is aborted when
    /// the stream is dropped.
    pub fn new(
        rx: tokio::sync::mpsc::UnboundedReceiver<(String, String)>,
        drain: Option<tokio::task::JoinHandle<()>>,
    ) -> JobStream {
        JobStream {
            rx,
            drain,
            seen: HashMap::new(),
        }
    }

    /// Wait for all `jobs` to be removed, each within `timeout`.
    /// Returns one result per job, in order: a job whose end was not
    /// seen because the connection closed is [`ManagerError::JobLost`]
    /// (no failure of the unit), not a timeout.
    pub async fn wait(
        &mut self,
        sd: &impl UserManager,
        jobs: &[QueuedJob],
        timeout: Duration,
    ) -> Vec<Result<(), ManagerError>> {
        let mut pending: HashSet<&str> = jobs.iter().map(|j| j.path.as_str()).collect();
        pending.retain(|p| !self.seen.contains_key(*p));
        let deadline = tokio::time::Instant::now() + timeout;
        let mut closed = false;
        while !pending.is_empty() {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some((p, result))) => {
                    pending.remove(p.as_str());
                    self.seen.insert(p, result);
                }
                Ok(None) => {
                    closed = true;
                    break;
                }
                Err(_) => break,
            }
        }
        let mut out = Vec::with_capacity(jobs.len());
        for j in jobs {
            out.push(match self.seen.remove(&j.path) {
                Some(r) if r == "done" => Ok(()),
                Some(result) => Err(ManagerError::JobFailed {
                    verb: j.kind.verb(),
                    unit: j.unit.clone(),
                    result,
                    hint: match j.kind {
                        JobKind::Stop => String::new(),
                        _ => sd.failure_hint(&j.unit).await,
                    },
                }),
                None if closed => Err(ManagerError::JobLost {
                    verb: j.kind.verb(),
                    unit: j.unit.clone(),
                }),
                None => Err(ManagerError::JobTimeout {
                    verb: j.kind.verb(),
                    unit: j.unit.clone(),
                    timeout,
                }),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn killed(pid: u32) -> ServiceResult {
        ServiceResult {
            result: "signal".into(),
            code: CLD_KILLED,
            status: rustix::process::Signal::KILL.as_raw(),
            pid,
            ..Default::default()
        }
    }

    #[test]
    fn oom_kill_is_reported_as_such() {
        let r = ServiceResult {
            result: "oom-kill".into(),
            ..Default::default()
        };
        let (reason, msg) = r.failure("a.service", Some(1 << 20), |_| None).unwrap();
        assert_eq!(reason, Reason::OOMKilled);
        assert!(msg.contains("memoryMax 1M"), "{msg}");
    }

    #[test]
    fn a_sigkill_is_an_oom_kill_only_when_the_kernel_log_says_so() {
        let (reason, _) = killed(7)
            .failure("a.service", None, |_| Some(true))
            .unwrap();
        assert_eq!(reason, Reason::OOMKilled);
        let (reason, msg) = killed(7)
            .failure("a.service", Some(1 << 20), |_| None)
            .unwrap();
        assert_eq!(reason, Reason::Killed);
        assert!(msg.contains("PID 7"), "{msg}");
        let (reason, _) = killed(7)
            .failure("a.service", None, |_| Some(false))
            .unwrap();
        assert_eq!(reason, Reason::Failed);
    }

    /// Issue 20, "also check": a restart loop that used up the start
    /// limit keeps its first failure's `Result=`; its message says the
    /// limit was hit and that the next start after its interval succeeds.
    #[test]
    fn a_used_up_start_limit_is_named() {
        let r = ServiceResult {
            result: "signal".into(),
            code: CLD_KILLED,
            status: rustix::process::Signal::KILL.as_raw(),
            n_restarts: 5,
            start_limit: (5, std::time::Duration::from_secs(10)),
            ..Default::default()
        };
        let (_, msg) = r.failure("a.service", None, |_| None).unwrap();
        assert!(
            msg.contains("start limit was hit (5 starts within 10s)"),
            "{msg}"
        );
        assert!(r.hint("a.service").contains("start limit was hit"));
        let fewer = ServiceResult { n_restarts: 4, ..r };
        let (_, msg) = fewer.failure("a.service", None, |_| None).unwrap();
        assert!(!msg.contains("start limit"), "{msg}");
    }

    #[test]
    fn success_is_no_failure_and_hints_name_a_missing_program() {
        let ok = ServiceResult {
            result: "success".into(),
            ..Default::default()
        };
        assert_eq!(ok.failure("a.service", None, |_| None), None);
        let r = ServiceResult {
            result: "exit-code".into(),
            status: 203,
            program: Some("/nonexistent/prog".into()),
            ..Default::default()
        };
        let hint = r.hint("a.service");
        assert!(hint.contains("exit status 203"), "{hint}");
        assert!(hint.contains("/nonexistent/prog does not exist"), "{hint}");
    }
}
