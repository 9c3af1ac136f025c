//! The user manager over D-Bus.
//!
//! Architecture Invariant: this is the only module that talks D-Bus.
//!
//! Jobs follow systemd's documented protocol: `Subscribe` and open the
//! `JobRemoved` stream *before* queueing any job, key jobs by object path,
//! treat any result but `done` as failure, and give every wait a deadline.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use futures_util::StreamExt;
use zbus::{Connection, MatchRule, MessageStream, proxy::CacheProperties};
use zbus::{OwnedObjectPath, OwnedVariant as OwnedValue, Variant as Value};
use zbus_systemd::systemd1::{ManagerProxy, UnitProxy};

use crate::plan::{LiveLimits, LiveUnit, WantedLimits};

#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    /// No session bus / user manager to talk to.
    #[error(
        "cannot connect to the user's systemd over D-Bus at {address}: {source}; is a user manager running (systemctl --user status)? Set --bus or DBUS_SESSION_BUS_ADDRESS"
    )]
    Connect {
        address: String,
        #[source]
        source: zbus::Error,
    },
    /// A method call failed.
    #[error("systemd {call} failed{}: {source}", unit.as_ref().map(|u| format!(" for {u}")).unwrap_or_default())]
    Call {
        call: &'static str,
        unit: Option<String>,
        #[source]
        source: zbus::Error,
    },
    /// A job ended with a result other than `done`.
    #[error("{verb} of {unit} failed: job result {result:?}{hint}")]
    JobFailed {
        verb: &'static str,
        unit: String,
        result: String,
        hint: String,
    },
    /// A job did not finish in time.
    #[error("{verb} of {unit} did not finish within {timeout:?}")]
    JobTimeout {
        verb: &'static str,
        unit: String,
        timeout: Duration,
    },
    /// The unit directory is not on the manager's search path.
    #[error(
        "unit directory {dir} is not on the user manager's unit search path ({path}); pass --unit-dir with one of those directories (e.g. $XDG_DATA_HOME/systemd/user)"
    )]
    NotOnUnitPath { dir: String, path: String },
}

impl SystemdError {
    /// Whether the connection itself is gone (reconnect), rather than one
    /// call having failed.
    pub fn is_disconnect(&self) -> bool {
        let e = match self {
            SystemdError::Connect { .. } => return true,
            SystemdError::Call { source, .. } => source,
            _ => return false,
        };
        matches!(e, zbus::Error::InputOutput(_)) || e.to_string().contains("ServiceUnknown")
    }
}

fn call<T>(call: &'static str, unit: Option<&str>, r: zbus::Result<T>) -> Result<T, SystemdError> {
    r.map_err(|source| SystemdError::Call {
        call,
        unit: unit.map(str::to_string),
        source,
    })
}

/// The bus address unitlet uses: `--bus`, else the session bus.
pub fn default_bus_address() -> Option<String> {
    if let Ok(a) = std::env::var("DBUS_SESSION_BUS_ADDRESS")
        && !a.is_empty()
    {
        return Some(a);
    }
    std::env::var("XDG_RUNTIME_DIR")
        .ok()
        .filter(|d| !d.is_empty())
        .map(|d| format!("unix:path={d}/bus"))
}

/// A connection to the user manager.
#[derive(Clone)]
pub struct Systemd {
    conn: Connection,
    manager: ManagerProxy<'static>,
    /// `Subscribe` succeeded on this connection once: later renewals need
    /// not be awaited (see [`Systemd::renew_subscription`]).
    subscribed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// What a job verb was, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    Start,
    Stop,
    Restart,
}

impl JobKind {
    fn verb(self) -> &'static str {
        match self {
            JobKind::Start => "start",
            JobKind::Stop => "stop",
            JobKind::Restart => "restart",
        }
    }
}

/// A queued job we are waiting for.
#[derive(Debug, Clone)]
pub struct QueuedJob {
    pub path: OwnedObjectPath,
    pub unit: String,
    pub kind: JobKind,
}

/// `JobRemoved` signals, opened before jobs are queued.
///
/// The signal stream is drained by its own task into an unbounded channel:
/// a bounded zbus queue that nobody reads while we queue hundreds of jobs
/// would stall the connection (and with it the replies we wait for).
pub struct JobStream {
    rx: tokio::sync::mpsc::UnboundedReceiver<(String, String)>,
    drain: tokio::task::JoinHandle<()>,
    /// Results seen for jobs not (yet) waited for, by object path.
    seen: HashMap<String, String>,
}

impl Drop for JobStream {
    fn drop(&mut self) {
        self.drain.abort();
    }
}

/// Decode a unit object path (`/org/freedesktop/systemd1/unit/web_2eservice`)
/// into its unit name.
pub fn unit_name_from_path(path: &str) -> Option<String> {
    let enc = path.strip_prefix("/org/freedesktop/systemd1/unit/")?;
    let b = enc.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'_' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl Systemd {
    /// Connect to the bus at `address` (or the session bus).
    ///
    /// # Errors
    /// [`SystemdError::Connect`] when the bus or the manager is unreachable.
    pub async fn connect(address: Option<&str>) -> Result<Systemd, SystemdError> {
        let addr = address
            .map(str::to_string)
            .or_else(default_bus_address)
            .unwrap_or_else(|| "(session bus)".into());
        let builder = match address.map(str::to_string).or_else(default_bus_address) {
            Some(a) => zbus::connection::Builder::address(a.as_str()),
            None => zbus::connection::Builder::session(),
        };
        let conn = builder
            .build()
            .await
            .map_err(|source| SystemdError::Connect {
                address: addr.clone(),
                source,
            })?;
        let manager = ManagerProxy::builder(&conn)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(|source| SystemdError::Connect {
                address: addr.clone(),
                source,
            })?;
        // Fail now, with the connect error, if nobody answers for systemd.
        manager
            .version()
            .await
            .map_err(|source| SystemdError::Connect {
                address: addr.clone(),
                source,
            })?;
        Ok(Systemd {
            conn,
            manager,
            subscribed: Default::default(),
        })
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Ask for signals and open the `JobRemoved` stream. Call before
    /// queueing jobs.
    pub async fn job_stream(&self) -> Result<JobStream, SystemdError> {
        let stream = call(
            "receive JobRemoved",
            None,
            self.manager.receive_job_removed().await,
        )?;
        // Once subscribed, the operator renews per pass without waiting.
        if !self.subscribed.load(std::sync::atomic::Ordering::Relaxed) {
            self.subscribe().await?;
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let drain = tokio::spawn(async move {
            let mut stream = stream;
            while let Some(sig) = stream.next().await {
                if let Ok(args) = sig.args()
                    && tx
                        .send((args.job().as_str().to_string(), args.result().to_string()))
                        .is_err()
                {
                    break;
                }
            }
        });
        Ok(JobStream {
            rx,
            drain,
            seen: HashMap::new(),
        })
    }

    /// `Subscribe`, tolerating "already subscribed" (systemd forgets
    /// subscriptions when it re-executes, so we call it again per pass).
    pub async fn subscribe(&self) -> Result<(), SystemdError> {
        let r = match self.manager.subscribe().await {
            Ok(()) => Ok(()),
            Err(zbus::Error::MethodError(name, _, _))
                if name.as_str().contains("AlreadySubscribed") =>
            {
                Ok(())
            }
            Err(e) => call("Subscribe", None, Err(e)),
        };
        if r.is_ok() {
            self.subscribed
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        r
    }

    /// Renew `Subscribe` (systemd forgets it when it re-executes) without
    /// waiting for the answer: a busy manager — one starting 200 units —
    /// answers late, and a pass must not wait for that. The call goes out
    /// at the caller's next await, so systemd, which handles one
    /// connection's calls in order, still sees it before any job this pass
    /// queues.
    pub fn renew_subscription(&self) {
        let me = self.clone();
        tokio::spawn(async move {
            let _ = me.subscribe().await;
        });
    }

    pub async fn unit_path(&self) -> Result<Vec<String>, SystemdError> {
        call("UnitPath", None, self.manager.unit_path().await)
    }

    /// Check that `dir` is on the manager's unit search path.
    pub async fn check_unit_dir(&self, dir: &std::path::Path) -> Result<(), SystemdError> {
        let paths = self.unit_path().await?;
        let canon = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        let ok = paths.iter().any(|p| {
            let pc = std::fs::canonicalize(p).unwrap_or_else(|_| p.into());
            pc == canon || std::path::Path::new(p) == dir
        });
        if ok {
            Ok(())
        } else {
            Err(SystemdError::NotOnUnitPath {
                dir: dir.display().to_string(),
                path: paths.join(":"),
            })
        }
    }

    /// State of many units in one call.
    pub async fn list_units(
        &self,
        names: &[String],
    ) -> Result<BTreeMap<String, (LiveUnit, OwnedObjectPath)>, SystemdError> {
        let mut out = BTreeMap::new();
        if names.is_empty() {
            return Ok(out);
        }
        let rows = call(
            "ListUnitsByNames",
            None,
            self.manager.list_units_by_names(names.to_vec()).await,
        )?;
        for (name, _desc, load, active, sub, _followed, path, job_id, _jt, _jp) in rows {
            out.insert(
                name,
                (
                    LiveUnit {
                        load_state: load,
                        active_state: active,
                        sub_state: sub,
                        job_pending: job_id != 0,
                        ..Default::default()
                    },
                    path,
                ),
            );
        }
        Ok(out)
    }

    async fn unit_proxy(&self, path: &OwnedObjectPath) -> Result<UnitProxy<'static>, SystemdError> {
        call(
            "unit proxy",
            None,
            async {
                UnitProxy::builder(&self.conn)
                    .path(path.clone())
                    .cache_properties(CacheProperties::No)
                    .build()
                    .await
            }
            .await,
        )
    }

    pub async fn fragment_path(
        &self,
        unit: &str,
        path: &OwnedObjectPath,
    ) -> Result<String, SystemdError> {
        let p = self.unit_proxy(path).await?;
        call("FragmentPath", Some(unit), p.fragment_path().await)
    }

    pub async fn need_daemon_reload(
        &self,
        unit: &str,
        path: &OwnedObjectPath,
    ) -> Result<bool, SystemdError> {
        let p = self.unit_proxy(path).await?;
        call("NeedDaemonReload", Some(unit), p.need_daemon_reload().await)
    }

    /// Live limits of a service unit.
    pub async fn live_limits(
        &self,
        unit: &str,
        path: &OwnedObjectPath,
    ) -> Result<LiveLimits, SystemdError> {
        let all = self
            .get_all(unit, path, "org.freedesktop.systemd1.Service")
            .await?;
        let g = |k: &str| {
            all.get(k)
                .and_then(|v| u64::try_from(v).ok())
                .unwrap_or(u64::MAX)
        };
        Ok(LiveLimits {
            memory_max: g("MemoryMax"),
            memory_high: g("MemoryHigh"),
            cpu_quota_per_sec_usec: g("CPUQuotaPerSecUSec"),
            tasks_max: g("TasksMax"),
        })
    }

    /// All properties of one interface of a unit, in one call.
    pub async fn get_all(
        &self,
        unit: &str,
        path: &OwnedObjectPath,
        interface: &str,
    ) -> Result<HashMap<String, OwnedValue>, SystemdError> {
        let props = zbus::fdo::PropertiesProxy::builder(&self.conn)
            .destination("org.freedesktop.systemd1")
            .path(path.clone())
            .cache_properties(CacheProperties::No);
        let props = call("Properties", Some(unit), props.build().await)?;
        let iface = zbus::names::InterfaceName::try_from(interface.to_string()).map_err(|e| {
            SystemdError::Call {
                call: "GetAll",
                unit: Some(unit.into()),
                source: e,
            }
        })?;
        call(
            "GetAll",
            Some(unit),
            props.get_all(iface).await.map_err(zbus::Error::from),
        )
    }

    pub async fn load_unit(&self, unit: &str) -> Result<OwnedObjectPath, SystemdError> {
        call(
            "LoadUnit",
            Some(unit),
            self.manager.load_unit(unit.to_string()).await,
        )
    }

    /// `daemon-reload`. The reply comes after the reload has finished.
    pub async fn reload(&self) -> Result<(), SystemdError> {
        call("Reload", None, self.manager.reload().await)
    }

    pub async fn enable(&self, units: &[String]) -> Result<(), SystemdError> {
        if units.is_empty() {
            return Ok(());
        }
        call(
            "EnableUnitFiles",
            units.first().map(String::as_str),
            self.manager
                .enable_unit_files(units.to_vec(), false, true)
                .await,
        )?;
        Ok(())
    }

    pub async fn disable(&self, units: &[String]) -> Result<(), SystemdError> {
        if units.is_empty() {
            return Ok(());
        }
        call(
            "DisableUnitFiles",
            units.first().map(String::as_str),
            self.manager.disable_unit_files(units.to_vec(), false).await,
        )?;
        Ok(())
    }

    pub async fn reset_failed(&self, unit: &str) {
        let _ = self.manager.reset_failed_unit(unit.to_string()).await;
    }

    /// The manager's `DefaultTasksMax`: `TasksMax` of a unit that sets none.
    pub async fn default_tasks_max(&self) -> Result<u64, SystemdError> {
        call(
            "DefaultTasksMax",
            None,
            self.manager.default_tasks_max().await,
        )
    }

    /// Compare a unit's live limits with the wanted ones, after an apply.
    ///
    /// Returns what differs (empty when all match).
    ///
    /// # Errors
    /// The unit or its properties cannot be read.
    pub async fn limit_differences(
        &self,
        unit: &str,
        wanted: &WantedLimits,
    ) -> Result<Vec<String>, SystemdError> {
        let path = self.load_unit(unit).await?;
        let live = self.live_limits(unit, &path).await?;
        Ok(wanted.differences(&live))
    }

    /// Send a signal to the unit's main process (a `reload.signal`).
    pub async fn kill_main(&self, unit: &str, signal: i32) -> Result<(), SystemdError> {
        call(
            "KillUnit",
            Some(unit),
            self.manager
                .kill_unit(unit.to_string(), "main".into(), signal)
                .await,
        )
    }

    /// `systemctl reload`: the unit's own `ExecReload=`, for adopted units.
    pub async fn reload_unit(&self, unit: &str) -> Result<(), SystemdError> {
        let mut js = self.job_stream().await?;
        let path = call(
            "ReloadUnit",
            Some(unit),
            self.manager
                .reload_unit(unit.to_string(), "replace".into())
                .await,
        )?;
        let job = QueuedJob {
            path,
            unit: unit.to_string(),
            kind: JobKind::Restart,
        };
        js.wait(self, &[job], Duration::from_secs(90))
            .await
            .remove(0)
    }

    /// Queue a job; the caller must hold a [`JobStream`] opened earlier.
    pub async fn queue(&self, unit: &str, kind: JobKind) -> Result<QueuedJob, SystemdError> {
        let mode = "replace".to_string();
        let r = match kind {
            JobKind::Start => self.manager.start_unit(unit.to_string(), mode).await,
            JobKind::Stop => self.manager.stop_unit(unit.to_string(), mode).await,
            JobKind::Restart => self.manager.restart_unit(unit.to_string(), mode).await,
        };
        let path = call(
            match kind {
                JobKind::Start => "StartUnit",
                JobKind::Stop => "StopUnit",
                JobKind::Restart => "RestartUnit",
            },
            Some(unit),
            r,
        )?;
        Ok(QueuedJob {
            path,
            unit: unit.to_string(),
            kind,
        })
    }

    /// Why a failed service failed: `(reason, message)` for its Ready
    /// condition. An OOM kill is reported as `OOMKilled` — from systemd's
    /// `Result=oom-kill` (cgroup v2), or, on cgroup v1 where systemd only
    /// sees a SIGKILL, confirmed from the kernel log when it is readable.
    pub async fn failure_details(
        &self,
        unit: &str,
        path: &OwnedObjectPath,
        memory_max: Option<u64>,
    ) -> Option<(String, String)> {
        let all = self
            .get_all(unit, path, "org.freedesktop.systemd1.Service")
            .await
            .ok()?;
        let result = all
            .get("Result")
            .and_then(|v| String::try_from(v.clone()).ok())
            .unwrap_or_default();
        let code = all
            .get("ExecMainCode")
            .and_then(|v| i32::try_from(v).ok())
            .unwrap_or(0);
        let status = all
            .get("ExecMainStatus")
            .and_then(|v| i32::try_from(v).ok())
            .unwrap_or(0);
        let pid = all
            .get("ExecMainPID")
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(0);
        let limit = memory_max
            .map(|b| format!(" (memoryMax {})", crate::render::human_bytes(b)))
            .unwrap_or_default();
        let journal = format!("see `journalctl --user -u {unit}`");
        if result == "oom-kill" {
            return Some((
                "OOMKilled".into(),
                format!(
                    "{unit} was killed by the kernel OOM killer: it used all the memory it may{limit}; raise resources.memoryMax or find the leak; {journal}"
                ),
            ));
        }
        // CLD_KILLED = 2
        if result == "signal" && code == 2 && status == libc::SIGKILL && pid > 0 {
            match kernel_log_oom_kill(pid) {
                Some(true) => {
                    return Some((
                        "OOMKilled".into(),
                        format!(
                            "{unit} was killed by the kernel OOM killer (PID {pid}): it used all the memory it may{limit}; raise resources.memoryMax or find the leak; {journal}"
                        ),
                    ));
                }
                _ if memory_max.is_some() => {
                    return Some((
                        "Killed".into(),
                        format!(
                            "{unit} was killed by SIGKILL (PID {pid}), most likely for exceeding its memory limit{limit}; {journal}"
                        ),
                    ));
                }
                _ => {}
            }
        }
        let detail = match (result.as_str(), code) {
            ("exit-code", _) => format!("exited with status {status}"),
            ("signal" | "core-dump", _) => format!("was killed by signal {status}"),
            ("timeout", _) => "timed out".to_string(),
            ("start-limit-hit", _) => "restarted too often (start limit hit)".to_string(),
            ("success", _) | ("", _) => return None,
            (other, _) => format!("failed ({other})"),
        };
        Some(("Failed".into(), format!("{unit} {detail}; {journal}")))
    }

    /// Why a unit failed, for a job failure message.
    pub async fn failure_hint(&self, unit: &str) -> String {
        let Ok(path) = self.manager.get_unit(unit.to_string()).await else {
            return String::new();
        };
        let Ok(all) = self
            .get_all(unit, &path, "org.freedesktop.systemd1.Service")
            .await
        else {
            return String::new();
        };
        let result = all
            .get("Result")
            .and_then(|v| String::try_from(v.clone()).ok())
            .unwrap_or_default();
        let status = all
            .get("ExecMainStatus")
            .and_then(|v| i32::try_from(v).ok())
            .unwrap_or(0);
        let mut hint = String::new();
        if !result.is_empty() && result != "success" {
            hint.push_str(&format!(" (service result {result}"));
            if status != 0 {
                hint.push_str(&format!(", exit status {status}"));
            }
            hint.push(')');
        }
        if let Some(exec) = all.get("ExecStart")
            && let Value::Array(a) = Value::from(exec.clone())
            && let Some(Value::Structure(s)) = a.iter().next()
            && let Some(Value::Str(prog)) = s.fields().first()
            && !std::path::Path::new(prog.as_str()).exists()
        {
            hint.push_str(&format!(
                "; {prog} does not exist — install it or fix spec.command"
            ));
        }
        hint.push_str(&format!("; see `journalctl --user -u {unit}`"));
        hint
    }
}

impl JobStream {
    /// Wait for all `jobs` to be removed, each within `timeout`.
    /// Returns one result per job, in order.
    pub async fn wait(
        &mut self,
        sd: &Systemd,
        jobs: &[QueuedJob],
        timeout: Duration,
    ) -> Vec<Result<(), SystemdError>> {
        let mut pending: HashSet<String> =
            jobs.iter().map(|j| j.path.as_str().to_string()).collect();
        pending.retain(|p| !self.seen.contains_key(p));
        let deadline = tokio::time::Instant::now() + timeout;
        while !pending.is_empty() {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some((p, result))) => {
                    pending.remove(&p);
                    self.seen.insert(p, result);
                }
                Ok(None) | Err(_) => break,
            }
        }
        let mut out = Vec::with_capacity(jobs.len());
        for j in jobs {
            match self.seen.remove(j.path.as_str()) {
                Some(r) if r == "done" => out.push(Ok(())),
                Some(result) => {
                    let hint = if j.kind == JobKind::Stop {
                        String::new()
                    } else {
                        sd.failure_hint(&j.unit).await
                    };
                    out.push(Err(SystemdError::JobFailed {
                        verb: j.kind.verb(),
                        unit: j.unit.clone(),
                        result,
                        hint,
                    }))
                }
                None => out.push(Err(SystemdError::JobTimeout {
                    verb: j.kind.verb(),
                    unit: j.unit.clone(),
                    timeout,
                })),
            }
        }
        out
    }
}

/// Whether the kernel log records an OOM kill of `pid`. `None` when the
/// log cannot be read (an unprivileged user with `dmesg_restrict`).
pub fn kernel_log_oom_kill(pid: u32) -> Option<bool> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
        .ok()?;
    let needle = format!("Killed process {pid} ");
    let mut buf = vec![0u8; 8192];
    // Each read returns one record; stop at EAGAIN (end of the buffer).
    for _ in 0..100_000 {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if String::from_utf8_lossy(&buf[..n]).contains(&needle) {
                    return Some(true);
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue, // overwritten record
            Err(_) => break,
        }
    }
    Some(false)
}

/// A stream of "this unit's state changed" notifications, by unit name, so
/// a unit stopped or failed by hand is noticed at once.
///
/// Drained by its own task into an unbounded channel, so signals arriving
/// while a pass runs never stall the connection; the channel closes when
/// the connection does.
pub async fn unit_changes(
    sd: &Systemd,
) -> Result<tokio::sync::mpsc::UnboundedReceiver<String>, SystemdError> {
    let rule = MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .sender("org.freedesktop.systemd1")
        .interface("org.freedesktop.DBus.Properties")
        .member("PropertiesChanged")
        .path_namespace("/org/freedesktop/systemd1/unit")
        .build()
        .map_err(|source| SystemdError::Call {
            call: "match rule",
            unit: None,
            source,
        })?;
    let stream = call(
        "AddMatch",
        None,
        MessageStream::for_match_rule(rule, &sd.conn, std::num::NonZeroUsize::new(1024)).await,
    )?;
    let names = stream.filter_map(|msg| async move {
        let msg = msg.ok()?;
        let path = msg.header().path()?.as_str().to_string();
        let (iface, changed, _inv): (String, HashMap<String, OwnedValue>, Vec<String>) =
            msg.body().deserialize().ok()?;
        if iface != "org.freedesktop.systemd1.Unit" && iface != "org.freedesktop.systemd1.Service" {
            return None;
        }
        // Active state, and limits changed by hand (set-property), both
        // deserve a prompt look; anything else waits for the resync.
        let interesting = changed.is_empty()
            || [
                "ActiveState",
                "MemoryMax",
                "MemoryHigh",
                "CPUQuotaPerSecUSec",
                "TasksMax",
            ]
            .iter()
            .any(|k| changed.contains_key(*k));
        if !interesting {
            return None;
        }
        unit_name_from_path(&path)
    });
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    // A re-executed manager comes back under a new bus name and has
    // forgotten our Subscribe: treat that as a change too.
    if let Ok(mut owners) = sd.manager.inner().receive_owner_changed().await {
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(_owner) = owners.next().await {
                if tx.send("org.freedesktop.systemd1".to_string()).is_err() {
                    break;
                }
            }
        });
    }
    tokio::spawn(async move {
        let mut names = std::pin::pin!(names);
        while let Some(n) = names.next().await {
            if tx.send(n).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

// Issue 12 (`unitlet doctor`, `LimitsEnforced`): which process is the user
// manager, so its cgroup can be read from /proc.
impl Systemd {
    /// PID of the user manager, as the bus daemon knows it.
    ///
    /// # Errors
    /// [`SystemdError::Call`] when the bus cannot say.
    pub async fn manager_pid(&self) -> Result<u32, SystemdError> {
        let dbus = call(
            "org.freedesktop.DBus",
            None,
            zbus::fdo::DBusProxy::new(&self.conn).await,
        )?;
        let name =
            zbus::names::BusName::try_from("org.freedesktop.systemd1").expect("a valid bus name");
        call(
            "GetConnectionUnixProcessID",
            None,
            dbus.get_connection_unix_process_id(name)
                .await
                .map_err(zbus::Error::from),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_unit_paths() {
        assert_eq!(
            unit_name_from_path("/org/freedesktop/systemd1/unit/web_2eservice").as_deref(),
            Some("web.service")
        );
        assert_eq!(
            unit_name_from_path("/org/freedesktop/systemd1/unit/node_2dexporter_2eservice")
                .as_deref(),
            Some("node-exporter.service")
        );
        assert_eq!(
            unit_name_from_path("/org/freedesktop/systemd1/unit/_31_2eservice").as_deref(),
            Some("1.service")
        );
        assert_eq!(unit_name_from_path("/other"), None);
    }
}
