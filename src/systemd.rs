//! The user manager over D-Bus.
//!
//! Architecture Invariant: this is the only module that talks D-Bus.
//!
//! Jobs follow systemd's documented protocol: `Subscribe` and open the
//! `JobRemoved` stream *before* queueing any job, key jobs by object path,
//! treat any result but `done` as failure, and give every wait a deadline.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures_util::StreamExt;
use zbus::{Connection, MatchRule, MessageStream, proxy::CacheProperties};
use zbus::{OwnedObjectPath, OwnedVariant as OwnedValue, Variant as Value};
use zbus_systemd::systemd1::{ManagerProxy, UnitProxy};

use crate::manager::{
    CallFailure, ListedUnits, LiveLimits, LiveProperties, LiveUnit, ManagerError, ServiceResult,
    SignalPause, UnitPath, UnitProgress, UnitProperties, Usage,
};
pub use crate::manager::{JobKind, JobStream, QueuedJob, UserManager};

/// A failed D-Bus call as a [`ManagerError`]: its text, and whether the
/// manager said it has no such unit or the connection is gone.
fn call_error(call: &'static str, unit: Option<&str>, e: zbus::Error) -> ManagerError {
    let text = e.to_string();
    let failure = if text.contains("org.freedesktop.systemd1.NoSuchUnit") {
        CallFailure::NoSuchUnit
    } else if matches!(e, zbus::Error::InputOutput(_)) || text.contains("ServiceUnknown") {
        CallFailure::Disconnected
    } else {
        CallFailure::Other
    };
    ManagerError::Call {
        call,
        unit: unit.map(str::to_string),
        cause: crate::error_chain(&e),
        failure,
    }
}

fn call<T>(call: &'static str, unit: Option<&str>, r: zbus::Result<T>) -> Result<T, ManagerError> {
    r.map_err(|e| call_error(call, unit, e))
}

/// The D-Bus object path of `path`.
fn object_path(unit: &str, path: &UnitPath) -> Result<OwnedObjectPath, ManagerError> {
    call(
        "unit path",
        Some(unit),
        OwnedObjectPath::try_from(path.as_str()),
    )
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
    /// The unit-signal pause in force (its number), 0 for none: see
    /// [`UserManager::pause_unit_signals`].
    paused: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Where [`unit_changes`] delivers, to wake the operator when a pause
    /// ends (what changed meanwhile was not signalled).
    /// Weak: the channel must still close when the connection does.
    changes_tx:
        std::sync::Arc<std::sync::Mutex<Option<tokio::sync::mpsc::WeakUnboundedSender<String>>>>,
}

/// The name sent through [`unit_changes`] when every unit must be looked
/// at again (the manager re-executed, or a signal pause ended).
pub const ALL_UNITS: &str = "org.freedesktop.systemd1";

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
    /// [`ManagerError::Connect`] when the bus or the manager is unreachable.
    pub async fn connect(address: Option<&str>) -> Result<Systemd, ManagerError> {
        let address = address.map(str::to_string).or_else(default_bus_address);
        let shown = address.clone().unwrap_or_else(|| "(session bus)".into());
        let connect_err = |source: zbus::Error| ManagerError::Connect {
            address: shown.clone(),
            cause: crate::error_chain(&source),
        };
        let builder = match &address {
            Some(a) => zbus::connection::Builder::address(a.as_str()),
            None => zbus::connection::Builder::session(),
        };
        let conn = builder.build().await.map_err(connect_err)?;
        let manager = ManagerProxy::builder(&conn)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(connect_err)?;
        // Fail now, with the connect error, if nobody answers for systemd.
        manager.version().await.map_err(connect_err)?;
        Ok(Systemd {
            conn,
            manager,
            subscribed: Default::default(),
            paused: Default::default(),
            changes_tx: Default::default(),
        })
    }

    /// Stop unit signals for a while: `Unsubscribe`, until the returned
    /// pause is dropped or `at_most` has passed; then `Subscribe` again
    /// and wake the operator through [`unit_changes`] with [`ALL_UNITS`],
    /// so a pass looks at every unit (a change made meanwhile was not
    /// signalled).
    ///
    /// Why: while any client is subscribed, systemd sends every change of
    /// every unit to the bus. Starting 200 units, that is about 1,200
    /// `PropertiesChanged` messages, which cost systemd ~100 ms of CPU here
    /// (~20 % of the batch, measured in `benches/converge.rs`). The jobs
    /// this connection queues still end with their `JobRemoved`: systemd
    /// sends it to the client that queued the job, subscribed or not (as
    /// `systemctl start` relies on).
    async fn pause_signals(&self, at_most: Duration) -> SignalPause {
        use std::sync::atomic::Ordering::SeqCst;
        static PAUSES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let n = PAUSES.fetch_add(1, SeqCst);
        self.paused.store(n, SeqCst);
        match self.manager.unsubscribe().await {
            Ok(()) => tracing::info!(
                pause = n,
                "unit signals paused while a large batch of units starts"
            ),
            // Not subscribed (systemd re-executed): nothing to pause.
            Err(e) => tracing::debug!(pause = n, "Unsubscribe: {e}"),
        }
        let me = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(at_most).await;
            me.end_pause(n);
        });
        let me = self.clone();
        SignalPause::new(n, move || me.end_pause(n))
    }

    /// End pause `n` if it is still the one in force.
    fn end_pause(&self, n: u64) {
        use std::sync::atomic::Ordering::SeqCst;
        if self.paused.compare_exchange(n, 0, SeqCst, SeqCst).is_err() {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let me = self.clone();
        rt.spawn(async move {
            let _ = me.subscribe().await;
            tracing::info!(pause = n, "unit signals resumed");
            let tx = me
                .changes_tx
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .as_ref()
                .and_then(|w| w.upgrade());
            if let Some(tx) = tx {
                let _ = tx.send(ALL_UNITS.to_string());
            }
        });
    }

    fn is_paused(&self) -> bool {
        self.paused.load(std::sync::atomic::Ordering::SeqCst) != 0
    }

    /// `Subscribe`, tolerating "already subscribed" (systemd forgets
    /// subscriptions when it re-executes, so we call it again per pass).
    pub async fn subscribe(&self) -> Result<(), ManagerError> {
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
        if self.is_paused() {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let _ = me.subscribe().await;
        });
    }

    /// Check that `dir` is on the manager's unit search path.
    pub async fn check_unit_dir(&self, dir: &std::path::Path) -> Result<(), ManagerError> {
        let paths = self.unit_path().await?;
        let canon = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        let ok = paths.iter().any(|p| {
            let pc = std::fs::canonicalize(p).unwrap_or_else(|_| p.into());
            pc == canon || std::path::Path::new(p) == dir
        });
        if ok {
            Ok(())
        } else {
            Err(ManagerError::NotOnUnitPath {
                dir: dir.display().to_string(),
                path: paths.join(":"),
            })
        }
    }

    async fn unit_proxy(
        &self,
        unit: &str,
        path: &UnitPath,
    ) -> Result<UnitProxy<'static>, ManagerError> {
        let path = object_path(unit, path)?;
        call(
            "unit proxy",
            None,
            async {
                UnitProxy::builder(&self.conn)
                    .path(path)
                    .cache_properties(CacheProperties::No)
                    .build()
                    .await
            }
            .await,
        )
    }

    /// All properties of one interface of a unit, in one call.
    async fn get_all(
        &self,
        unit: &str,
        path: &UnitPath,
        interface: &str,
    ) -> Result<HashMap<String, OwnedValue>, ManagerError> {
        let path = object_path(unit, path)?;
        let props = zbus::fdo::PropertiesProxy::builder(&self.conn)
            .destination("org.freedesktop.systemd1")
            .path(path)
            .cache_properties(CacheProperties::No);
        let props = call("Properties", Some(unit), props.build().await)?;
        let iface = zbus::names::InterfaceName::try_from(interface.to_string())
            .map_err(|e| call_error("GetAll", Some(unit), e))?;
        call(
            "GetAll",
            Some(unit),
            props.get_all(iface).await.map_err(zbus::Error::from),
        )
    }

    async fn service_properties(
        &self,
        unit: &str,
        path: &UnitPath,
    ) -> Result<HashMap<String, OwnedValue>, ManagerError> {
        self.get_all(unit, path, "org.freedesktop.systemd1.Service")
            .await
    }
}

/// `EnableUnitFiles` or `DisableUnitFiles` of `units`: `call` (which
/// sends nothing until awaited) is not made for an empty list.
async fn unit_files_call<T>(
    method: &'static str,
    units: &[String],
    call_: impl std::future::Future<Output = zbus::Result<T>>,
) -> Result<(), ManagerError> {
    let Some(first) = units.first() else {
        return Ok(());
    };
    call(method, Some(first), call_.await.map(drop))
}

/// The first program of an `ExecStart=` property value.
fn exec_start_program(exec: &OwnedValue) -> Option<String> {
    let Value::Array(a) = Value::from(exec.clone()) else {
        return None;
    };
    let Some(Value::Structure(s)) = a.iter().next() else {
        return None;
    };
    match s.fields().first() {
        Some(Value::Str(prog)) => Some(prog.to_string()),
        _ => None,
    }
}

impl UserManager for Systemd {
    async fn unit_path(&self) -> Result<Vec<String>, ManagerError> {
        call("UnitPath", None, self.manager.unit_path().await)
    }

    async fn list_units(&self, names: &[String]) -> Result<ListedUnits, ManagerError> {
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
            let unit = LiveUnit {
                load_state: load,
                active_state: active,
                sub_state: sub,
                job_pending: job_id != 0,
                ..Default::default()
            };
            out.insert(name, (unit, UnitPath::new(path.as_str())));
        }
        Ok(out)
    }

    async fn fragment_path(&self, unit: &str, path: &UnitPath) -> Result<String, ManagerError> {
        let p = self.unit_proxy(unit, path).await?;
        call("FragmentPath", Some(unit), p.fragment_path().await)
    }

    async fn need_daemon_reload(&self, unit: &str, path: &UnitPath) -> Result<bool, ManagerError> {
        let p = self.unit_proxy(unit, path).await?;
        call("NeedDaemonReload", Some(unit), p.need_daemon_reload().await)
    }

    async fn live_limits(&self, unit: &str, path: &UnitPath) -> Result<LiveLimits, ManagerError> {
        let all = self.service_properties(unit, path).await?;
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

    async fn service_result(
        &self,
        unit: &str,
        path: &UnitPath,
    ) -> Result<ServiceResult, ManagerError> {
        let all = self.service_properties(unit, path).await?;
        let int = |k: &str| all.get(k).and_then(|v| i32::try_from(v).ok()).unwrap_or(0);
        // The start limit is the Unit interface's; a failure to read it
        // only leaves it out of messages.
        let limits = self
            .get_all(unit, path, "org.freedesktop.systemd1.Unit")
            .await
            .unwrap_or_default();
        let burst = limits
            .get("StartLimitBurst")
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(0);
        let interval = limits
            .get("StartLimitIntervalUSec")
            .and_then(|v| u64::try_from(v).ok())
            .map_or(Duration::ZERO, Duration::from_micros);
        Ok(ServiceResult {
            n_restarts: all
                .get("NRestarts")
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(0),
            start_limit: (burst, interval),
            result: all
                .get("Result")
                .and_then(|v| String::try_from(v.clone()).ok())
                .unwrap_or_default(),
            code: int("ExecMainCode"),
            status: int("ExecMainStatus"),
            pid: all
                .get("ExecMainPID")
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(0),
            program: all.get("ExecStart").and_then(exec_start_program),
        })
    }

    async fn n_restarts(&self, unit: &str, path: &UnitPath) -> Result<u32, ManagerError> {
        let all = self.service_properties(unit, path).await?;
        Ok(all
            .get("NRestarts")
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(0))
    }

    async fn unit_progress(&self, unit: &str) -> Result<UnitProgress, ManagerError> {
        let listed = self.list_units(&[unit.to_string()]).await?;
        let Some((l, path)) = listed.get(unit) else {
            return Ok(UnitProgress {
                active_state: "inactive".into(),
                sub_state: "not loaded".into(),
                ..Default::default()
            });
        };
        Ok(UnitProgress {
            active_state: l.active_state.clone(),
            sub_state: l.sub_state.clone(),
            job_pending: l.job_pending,
            n_restarts: self.n_restarts(unit, path).await?,
        })
    }

    async fn load_unit(&self, unit: &str) -> Result<UnitPath, ManagerError> {
        let path = call(
            "LoadUnit",
            Some(unit),
            self.manager.load_unit(unit.to_string()).await,
        )?;
        Ok(UnitPath::new(path.as_str()))
    }

    async fn reload(&self) -> Result<(), ManagerError> {
        call("Reload", None, self.manager.reload().await)
    }

    async fn enable(&self, units: &[String]) -> Result<(), ManagerError> {
        let enable = self.manager.enable_unit_files(units.to_vec(), false, true);
        unit_files_call("EnableUnitFiles", units, enable).await
    }

    async fn disable(&self, units: &[String]) -> Result<(), ManagerError> {
        let disable = self.manager.disable_unit_files(units.to_vec(), false);
        unit_files_call("DisableUnitFiles", units, disable).await
    }

    async fn reset_failed(&self, unit: &str) {
        let _ = self.manager.reset_failed_unit(unit.to_string()).await;
    }

    async fn default_tasks_max(&self) -> Result<u64, ManagerError> {
        call(
            "DefaultTasksMax",
            None,
            self.manager.default_tasks_max().await,
        )
    }

    async fn kill_main(&self, unit: &str, signal: i32) -> Result<(), ManagerError> {
        call(
            "KillUnit",
            Some(unit),
            self.manager
                .kill_unit(unit.to_string(), "main".into(), signal)
                .await,
        )
    }

    async fn reload_unit(&self, unit: &str, timeout: Duration) -> Result<(), ManagerError> {
        let mut js = self.job_stream().await?;
        let job = self.queue(unit, JobKind::Reload).await?;
        js.wait(self, &[job], timeout).await.remove(0)
    }

    async fn job_stream(&self) -> Result<JobStream, ManagerError> {
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
        Ok(JobStream::new(rx, Some(drain)))
    }

    async fn queue(&self, unit: &str, kind: JobKind) -> Result<QueuedJob, ManagerError> {
        let (mode, name) = ("replace".to_string(), unit.to_string());
        let (method, r) = match kind {
            JobKind::Start => ("StartUnit", self.manager.start_unit(name, mode).await),
            JobKind::Stop => ("StopUnit", self.manager.stop_unit(name, mode).await),
            JobKind::Restart => ("RestartUnit", self.manager.restart_unit(name, mode).await),
            JobKind::Reload => ("ReloadUnit", self.manager.reload_unit(name, mode).await),
        };
        Ok(QueuedJob {
            path: call(method, Some(unit), r)?.to_string(),
            unit: unit.to_string(),
            kind,
        })
    }

    async fn unit_properties(
        &self,
        unit: &str,
        path: &UnitPath,
    ) -> Result<UnitProperties, ManagerError> {
        let props = self
            .get_all(unit, path, "org.freedesktop.systemd1.Unit")
            .await?;
        Ok(UnitProperties {
            load_state: string(&props, "LoadState"),
            fragment_path: string(&props, "FragmentPath"),
            drop_in_paths: props
                .get("DropInPaths")
                .and_then(|v| <Vec<String>>::try_from(v.clone()).ok())
                .unwrap_or_default(),
            unit_file_state: string(&props, "UnitFileState"),
        })
    }

    async fn live_properties(
        &self,
        unit: &str,
        path: &UnitPath,
    ) -> Result<LiveProperties, ManagerError> {
        let iface = if unit.ends_with(".timer") {
            "org.freedesktop.systemd1.Timer"
        } else {
            "org.freedesktop.systemd1.Service"
        };
        let p = self.get_all(unit, path, iface).await?;
        // Unset (systemd's `u64::MAX`) or absent: unknown.
        let num = |k: &str| {
            p.get(k)
                .and_then(|v| u64::try_from(v).ok())
                .filter(|v| *v != u64::MAX)
        };
        Ok(LiveProperties {
            main_pid: p.get("MainPID").and_then(|v| u32::try_from(v).ok()),
            result: string(&p, "Result"),
            standard_output: string(&p, "StandardOutput"),
            standard_error: string(&p, "StandardError"),
            usage: Usage {
                memory_current: num("MemoryCurrent"),
                memory_peak: num("MemoryPeak"),
                memory_max: num("MemoryMax"),
                memory_high: num("MemoryHigh"),
                cpu_usage_nsec: num("CPUUsageNSec"),
                cpu_quota_per_sec_usec: num("CPUQuotaPerSecUSec"),
                tasks_current: num("TasksCurrent"),
                tasks_max: num("TasksMax"),
            },
        })
    }

    async fn manager_pid(&self) -> Result<u32, ManagerError> {
        let dbus = call(
            "org.freedesktop.DBus",
            None,
            zbus::fdo::DBusProxy::new(&self.conn).await,
        )?;
        let name = call(
            "GetConnectionUnixProcessID",
            None,
            zbus::names::BusName::try_from("org.freedesktop.systemd1"),
        )?;
        call(
            "GetConnectionUnixProcessID",
            None,
            dbus.get_connection_unix_process_id(name)
                .await
                .map_err(zbus::Error::from),
        )
    }

    async fn pause_unit_signals(&self, at_most: Duration) -> SignalPause {
        self.pause_signals(at_most).await
    }
}

/// A string property, empty when absent or of another type.
fn string(props: &HashMap<String, OwnedValue>, key: &str) -> String {
    props
        .get(key)
        .and_then(|v| String::try_from(v.clone()).ok())
        .unwrap_or_default()
}

/// A stream of "this unit's state changed" notifications, by unit name, so
/// a unit stopped or failed by hand is noticed at once.
///
/// Drained by its own task into an unbounded channel, so signals arriving
/// while a pass runs never stall the connection; the channel closes when
/// the connection does.
pub async fn unit_changes(
    sd: &Systemd,
) -> Result<tokio::sync::mpsc::UnboundedReceiver<String>, ManagerError> {
    // Only the Unit interface's PropertiesChanged: systemd sends it with
    // every change of a unit (each one carries ActiveState, and a
    // `set-property` of a limit sends it beside the Service interface's), so
    // the Service interface's twin, which doubles the traffic the bus
    // routes to us, adds nothing. The body is never parsed: the path names
    // the unit, and a burst of 200 starting units costs a header each.
    let rule = MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .sender("org.freedesktop.systemd1")
        .interface("org.freedesktop.DBus.Properties")
        .member("PropertiesChanged")
        .path_namespace("/org/freedesktop/systemd1/unit")
        .arg(0, "org.freedesktop.systemd1.Unit")
        .build()
        .map_err(|e| call_error("match rule", None, e))?;
    let stream = call(
        "AddMatch",
        None,
        MessageStream::for_match_rule(rule, &sd.conn, std::num::NonZeroUsize::new(1024)).await,
    )?;
    let names = stream.filter_map(|msg| async move {
        let msg = msg.ok()?;
        let path = msg.header().path()?.as_str().to_string();
        unit_name_from_path(&path)
    });
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    *sd.changes_tx
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(tx.downgrade());
    // A re-executed manager comes back under a new bus name and has
    // forgotten our Subscribe: treat that as a change too.
    if let Ok(mut owners) = sd.manager.inner().receive_owner_changed().await {
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(_owner) = owners.next().await {
                if tx.send(ALL_UNITS.to_string()).is_err() {
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
