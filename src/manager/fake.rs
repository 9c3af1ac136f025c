//! An in-memory user manager for unit tests of whole passes.
//!
//! It keeps what the reconciler relies on from systemd: a unit is loaded
//! from the unit directory when first named and re-read only on
//! `daemon-reload` (so `NeedDaemonReload` and stale content are real);
//! limits come from the loaded unit file and the `user.control` drop-ins
//! `set-property` writes; jobs complete at once and are announced on every
//! open [`JobStream`]; a stopped unit whose file is gone is forgotten.
//! What it does not model: ordering, timers firing, processes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;

use super::{
    CallFailure, JobKind, JobStream, ListedUnits, LiveLimits, LiveProperties, LiveUnit,
    ManagerError, QueuedJob, ServiceResult, SignalPause, UnitPath, UnitProgress, UnitProperties,
    Usage, UserManager, WantedLimits,
};

/// `DefaultTasksMax` of the fake manager.
pub const DEFAULT_TASKS_MAX: u64 = 4915;

/// One unit the fake manager has loaded.
#[derive(Debug, Clone, Default)]
struct Unit {
    /// The unit file as last loaded; `None` = not found.
    content: Option<String>,
    /// The `user.control` drop-ins as last loaded, concatenated.
    dropins: String,
    active: String,
    sub: String,
    result: ServiceResult,
    /// Resource use set by [`FakeManager::set_usage`] (limits come from
    /// the loaded file).
    usage: Usage,
    /// `NRestarts`: restarts by `Restart=` since the last start by job.
    restarts: u32,
}

#[derive(Default)]
struct State {
    units: BTreeMap<String, Unit>,
    streams: Vec<UnboundedSender<(String, String)>>,
    next_job: u64,
    /// Every job queued, in order.
    jobs: Vec<(String, JobKind)>,
    reloads: usize,
    /// Units whose start and restart jobs fail.
    failing: BTreeSet<String>,
    /// Units whose `kill_main` (a signal reload) fails.
    unkillable: BTreeSet<String>,
    /// Daemon-reloads fail (a manager that goes away mid-pass).
    reload_fails: bool,
    /// Signals sent with `kill_main`, by unit.
    signals: Vec<(String, i32)>,
    enabled: BTreeSet<String>,
    /// Unit files seen at the last daemon-reload, when a unit not found
    /// is not loaded from a newer file on demand (systemd before 246, or
    /// a unit directory whose timestamp did not move); `None`: it is.
    no_load_on_demand: Option<BTreeSet<String>>,
    /// Jobs are queued but do not run until [`FakeManager::release_jobs`].
    hold: bool,
    /// Held jobs: `(job path, unit, kind)`.
    held: Vec<(String, String, JobKind)>,
    /// The bus went away ([`FakeManager::lose_bus`]): every call fails as
    /// on a closed connection.
    lost: bool,
    /// The manager's PID, once [`FakeManager::set_manager_pid`] gave it
    /// one (an in-memory manager has no process of its own).
    pid: Option<u32>,
    /// Every signal pause asked for: its longest length.
    pauses: Vec<Duration>,
    /// A signal pause is in force.
    paused: bool,
}

/// The fake user manager; clones share one state.
#[derive(Clone)]
pub struct FakeManager {
    unit_dir: PathBuf,
    /// `…/systemd/user.control`, where `set-property` writes drop-ins.
    control: PathBuf,
    /// `…/systemd/user`, where enablement links go.
    config: PathBuf,
    state: Arc<Mutex<State>>,
}

fn unit_path(name: &str) -> UnitPath {
    let mut enc = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() {
            enc.push(b as char);
        } else {
            enc.push_str(&format!("_{b:02x}"));
        }
    }
    UnitPath::new(format!("/org/freedesktop/systemd1/unit/{enc}"))
}

/// What a log of `(unit, what)` records for `unit`, in order.
fn of_unit<T: Copy>(log: &[(String, T)], unit: &str) -> Vec<T> {
    log.iter()
        .filter(|(u, _)| u == unit)
        .map(|(_, t)| *t)
        .collect()
}

/// What a call on a closed connection returns.
fn closed(call: &'static str) -> ManagerError {
    ManagerError::Call {
        call,
        unit: None,
        cause: std::io::Error::from(std::io::ErrorKind::BrokenPipe).to_string(),
        failure: CallFailure::Disconnected,
    }
}

fn failure(call: &'static str, unit: &str, what: &str) -> ManagerError {
    ManagerError::Call {
        call,
        unit: Some(unit.to_string()),
        cause: what.to_string(),
        failure: if what.contains("org.freedesktop.systemd1.NoSuchUnit") {
            CallFailure::NoSuchUnit
        } else {
            CallFailure::Other
        },
    }
}

impl FakeManager {
    /// A manager whose search path is `unit_dir` plus a config and a
    /// control directory under `config_home` (like `~/.config`).
    pub fn new(unit_dir: &Path, config_home: &Path) -> FakeManager {
        FakeManager {
            unit_dir: unit_dir.to_path_buf(),
            control: config_home.join("systemd/user.control"),
            config: config_home.join("systemd/user"),
            state: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("fake manager state")
    }

    fn read_file(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.unit_dir.join(name)).ok()
    }

    fn read_dropins(&self, name: &str) -> String {
        let dir = self.control.join(format!("{name}.d"));
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        files.sort();
        files
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The unit, loaded from disk when first named (as `LoadUnit` and
    /// `ListUnitsByNames` do). A unit that is not found is not kept.
    fn load<'s>(&self, st: &'s mut State, name: &str) -> &'s mut Unit {
        if !st.units.contains_key(name) {
            let known = st
                .no_load_on_demand
                .as_ref()
                .is_none_or(|k| k.contains(name));
            let unit = Unit {
                content: self.read_file(name).filter(|_| known),
                dropins: self.read_dropins(name),
                active: "inactive".into(),
                sub: "dead".into(),
                result: ServiceResult::default(),
                usage: Usage::default(),
                restarts: 0,
            };
            st.units.insert(name.to_string(), unit);
        }
        st.units.get_mut(name).expect("just loaded")
    }

    fn forget_unloaded(st: &mut State) {
        st.units
            .retain(|_, u| u.content.is_some() || u.active != "inactive");
    }

    /// From now on a unit whose file appeared after the last daemon-reload
    /// is not found until the next one.
    pub fn without_load_on_demand(&self) {
        let files = self.unit_files();
        self.lock().no_load_on_demand = Some(files);
    }

    fn unit_files(&self) -> BTreeSet<String> {
        std::fs::read_dir(&self.unit_dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// Every job queued so far for `unit`.
    pub fn jobs(&self, unit: &str) -> Vec<JobKind> {
        of_unit(&self.lock().jobs, unit)
    }

    /// Units enabled through `EnableUnitFiles` (not by links).
    pub fn enabled_by_call(&self) -> BTreeSet<String> {
        self.lock().enabled.clone()
    }

    /// How many daemon-reloads ran.
    pub fn reloads(&self) -> usize {
        self.lock().reloads
    }

    /// `(ActiveState, SubState)` of a unit (`inactive/dead` if unknown).
    pub fn state(&self, unit: &str) -> (String, String) {
        let st = self.lock();
        st.units.get(unit).map_or_else(
            || ("inactive".into(), "dead".into()),
            |u| (u.active.clone(), u.sub.clone()),
        )
    }

    /// Make start and restart jobs of `unit` fail (`exit-code`, status 1),
    /// or succeed again.
    pub fn fail_starts(&self, unit: &str, fail: bool) {
        let mut st = self.lock();
        if fail {
            st.failing.insert(unit.to_string());
        } else {
            st.failing.remove(unit);
        }
    }

    /// Queue jobs without running them (`true`) until
    /// [`release_jobs`](Self::release_jobs): jobs in flight.
    pub fn hold_jobs(&self, hold: bool) {
        self.lock().hold = hold;
    }

    /// Run the held jobs to their end, announcing each on the open streams.
    pub fn release_jobs(&self) {
        let mut guard = self.lock();
        let st = &mut *guard;
        for (path, name, kind) in std::mem::take(&mut st.held) {
            let mut unit = self.load(st, &name).clone();
            let result = Self::run_job(st, &mut unit, &name, kind);
            st.units.insert(name, unit);
            st.streams
                .retain(|tx| tx.send((path.clone(), result.to_string())).is_ok());
        }
    }

    /// The bus daemon died: every open stream ends and every call fails
    /// as on a closed connection, until [`bus_back`](Self::bus_back). The
    /// manager itself (its units, held jobs) carries on.
    pub fn lose_bus(&self) {
        let mut st = self.lock();
        st.lost = true;
        st.streams.clear();
    }

    /// A new connection works again.
    pub fn bus_back(&self) {
        self.lock().lost = false;
    }

    fn alive(&self, call: &'static str) -> Result<(), ManagerError> {
        if self.lock().lost {
            return Err(closed(call));
        }
        Ok(())
    }

    /// Make daemon-reloads fail, or succeed again.
    pub fn fail_reloads(&self, fail: bool) {
        self.lock().reload_fails = fail;
    }

    /// Make signal reloads of `unit` fail.
    pub fn fail_kills(&self, unit: &str) {
        self.lock().unkillable.insert(unit.to_string());
    }

    /// Signals sent to `unit`'s main process.
    pub fn signals(&self, unit: &str) -> Vec<i32> {
        of_unit(&self.lock().signals, unit)
    }

    /// The unit's main process ended on its own with `result` (a crash):
    /// the unit is `failed`.
    pub fn crash(&self, unit: &str, result: ServiceResult) {
        let mut st = self.lock();
        let u = self.load(&mut st, unit);
        u.active = "failed".into();
        u.sub = "failed".into();
        u.result = result;
    }

    /// systemd restarted the unit by its `Restart=` (its process exited):
    /// `NRestarts` goes up, and it runs again.
    pub fn restarted_by_systemd(&self, unit: &str) {
        let mut st = self.lock();
        let u = self.load(&mut st, unit);
        u.restarts += 1;
        u.active = "active".into();
        u.sub = "running".into();
    }

    /// Start a unit outside unitlet (`systemctl --user start`).
    pub fn start_by_hand(&self, unit: &str) {
        let mut st = self.lock();
        let u = self.load(&mut st, unit);
        u.active = "active".into();
        u.sub = "running".into();
    }

    /// `systemctl --user set-property UNIT KEY=VALUE`: a drop-in in the
    /// control directory, in force at once.
    pub fn set_property(&self, unit: &str, key: &str, value: &str) {
        let dir = self.control.join(format!("{unit}.d"));
        std::fs::create_dir_all(&dir).expect("control dir");
        let file = dir.join(format!("50-{key}.conf"));
        std::fs::write(&file, format!("[Service]\n{key}={value}\n")).expect("drop-in");
        let mut st = self.lock();
        let dropins = self.read_dropins(unit);
        self.load(&mut st, unit).dropins = dropins;
    }

    /// Set the resource use `describe` and `get -o wide` show for `unit`
    /// (its limits stay those of its loaded file).
    pub fn set_usage(&self, unit: &str, usage: Usage) {
        let mut st = self.lock();
        self.load(&mut st, unit).usage = usage;
    }

    /// Give the manager a PID (whose cgroup then says which controllers
    /// it has).
    pub fn set_manager_pid(&self, pid: u32) {
        self.lock().pid = Some(pid);
    }

    /// Every unit-signal pause asked for so far: how long it may last.
    pub fn signal_pauses(&self) -> Vec<Duration> {
        self.lock().pauses.clone()
    }

    /// Whether a unit-signal pause is in force.
    pub fn signals_paused(&self) -> bool {
        self.lock().paused
    }

    /// The live limits of a unit: its loaded file, then its drop-ins.
    fn limits_of(u: &Unit) -> LiveLimits {
        let all = format!("{}\n{}", u.content.as_deref().unwrap_or(""), u.dropins);
        let w = WantedLimits::of_unit(&all, Some(DEFAULT_TASKS_MAX));
        LiveLimits {
            memory_max: w.memory_max.unwrap_or(u64::MAX),
            memory_high: w.memory_high.unwrap_or(u64::MAX),
            cpu_quota_per_sec_usec: w.cpu_quota_per_sec_usec.unwrap_or(u64::MAX),
            tasks_max: w.tasks_max.unwrap_or(u64::MAX),
        }
    }

    /// Run a job to its end at once; returns its result.
    fn run_job(st: &mut State, unit: &mut Unit, name: &str, kind: JobKind) -> &'static str {
        if kind == JobKind::Reload {
            return "done";
        }
        if kind == JobKind::Stop {
            unit.active = "inactive".into();
            unit.sub = "dead".into();
            return "done";
        }
        // A start by job resets `NRestarts`.
        unit.restarts = 0;
        if st.failing.contains(name) {
            unit.active = "failed".into();
            unit.sub = "failed".into();
            unit.result = ServiceResult {
                result: "exit-code".into(),
                code: 1,
                status: 1,
                ..Default::default()
            };
            return "failed";
        }
        unit.active = "active".into();
        unit.sub = if name.ends_with(".timer") {
            "waiting"
        } else {
            "running"
        }
        .into();
        unit.result = ServiceResult {
            result: "success".into(),
            ..Default::default()
        };
        "done"
    }
}

impl UserManager for FakeManager {
    async fn unit_path(&self) -> Result<Vec<String>, ManagerError> {
        Ok([&self.control, &self.config, &self.unit_dir]
            .iter()
            .map(|p| p.display().to_string())
            .collect())
    }

    async fn list_units(&self, names: &[String]) -> Result<ListedUnits, ManagerError> {
        self.alive("ListUnitsByNames")?;
        let mut st = self.lock();
        let mut out = BTreeMap::new();
        for name in names {
            let job_pending = st.held.iter().any(|(_, u, _)| u == name);
            let u = self.load(&mut st, name);
            let live = LiveUnit {
                job_pending,
                load_state: if u.content.is_some() {
                    "loaded"
                } else {
                    "not-found"
                }
                .into(),
                active_state: u.active.clone(),
                sub_state: u.sub.clone(),
                ..Default::default()
            };
            out.insert(name.clone(), (live, unit_path(name)));
        }
        Self::forget_unloaded(&mut st);
        Ok(out)
    }

    async fn fragment_path(&self, unit: &str, _: &UnitPath) -> Result<String, ManagerError> {
        let mut st = self.lock();
        let found = self.load(&mut st, unit).content.is_some();
        Ok(if found {
            self.unit_dir.join(unit).display().to_string()
        } else {
            String::new()
        })
    }

    async fn need_daemon_reload(&self, unit: &str, _: &UnitPath) -> Result<bool, ManagerError> {
        let on_disk = (self.read_file(unit), self.read_dropins(unit));
        let mut st = self.lock();
        let u = self.load(&mut st, unit);
        Ok(on_disk != (u.content.clone(), u.dropins.clone()))
    }

    async fn live_limits(&self, unit: &str, _: &UnitPath) -> Result<LiveLimits, ManagerError> {
        let mut st = self.lock();
        Ok(Self::limits_of(self.load(&mut st, unit)))
    }

    async fn service_result(
        &self,
        unit: &str,
        _: &UnitPath,
    ) -> Result<ServiceResult, ManagerError> {
        self.alive("GetAll")?;
        let mut st = self.lock();
        Ok(self.load(&mut st, unit).result.clone())
    }

    async fn n_restarts(&self, unit: &str, _: &UnitPath) -> Result<u32, ManagerError> {
        self.alive("GetAll")?;
        let mut st = self.lock();
        Ok(self.load(&mut st, unit).restarts)
    }

    async fn unit_progress(&self, unit: &str) -> Result<UnitProgress, ManagerError> {
        self.alive("ListUnitsByNames")?;
        let mut st = self.lock();
        let job_pending = st.held.iter().any(|(_, u, _)| u == unit);
        let u = self.load(&mut st, unit);
        let progress = UnitProgress {
            active_state: u.active.clone(),
            sub_state: u.sub.clone(),
            job_pending,
            n_restarts: u.restarts,
        };
        Self::forget_unloaded(&mut st);
        Ok(progress)
    }

    async fn load_unit(&self, unit: &str) -> Result<UnitPath, ManagerError> {
        self.alive("LoadUnit")?;
        Ok(unit_path(unit))
    }

    async fn reload(&self) -> Result<(), ManagerError> {
        self.alive("Reload")?;
        let files = self.unit_files();
        let mut st = self.lock();
        if st.reload_fails {
            return Err(failure("Reload", "", "Connection reset by peer"));
        }
        st.reloads += 1;
        if let Some(known) = st.no_load_on_demand.as_mut() {
            *known = files;
        }
        let names: Vec<String> = st.units.keys().cloned().collect();
        for name in names {
            let (content, dropins) = (self.read_file(&name), self.read_dropins(&name));
            let u = st.units.get_mut(&name).expect("listed");
            u.content = content;
            u.dropins = dropins;
        }
        Self::forget_unloaded(&mut st);
        Ok(())
    }

    async fn enable(&self, units: &[String]) -> Result<(), ManagerError> {
        self.lock().enabled.extend(units.iter().cloned());
        Ok(())
    }

    async fn disable(&self, units: &[String]) -> Result<(), ManagerError> {
        let mut st = self.lock();
        for u in units {
            st.enabled.remove(u);
        }
        Ok(())
    }

    async fn reset_failed(&self, unit: &str) {
        let mut st = self.lock();
        if let Some(u) = st.units.get_mut(unit)
            && u.active == "failed"
        {
            u.active = "inactive".into();
            u.sub = "dead".into();
        }
        Self::forget_unloaded(&mut st);
    }

    async fn default_tasks_max(&self) -> Result<u64, ManagerError> {
        Ok(DEFAULT_TASKS_MAX)
    }

    async fn kill_main(&self, unit: &str, signal: i32) -> Result<(), ManagerError> {
        let mut st = self.lock();
        if st.unkillable.contains(unit) {
            return Err(failure("KillUnit", unit, "No main process to kill"));
        }
        st.signals.push((unit.to_string(), signal));
        Ok(())
    }

    async fn reload_unit(&self, unit: &str, timeout: Duration) -> Result<(), ManagerError> {
        let mut js = self.job_stream().await?;
        let job = self.queue(unit, JobKind::Reload).await?;
        js.wait(self, &[job], timeout).await.remove(0)
    }

    async fn job_stream(&self) -> Result<JobStream, ManagerError> {
        self.alive("receive JobRemoved")?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.lock().streams.push(tx);
        Ok(JobStream::new(rx, None))
    }

    async fn queue(&self, name: &str, kind: JobKind) -> Result<QueuedJob, ManagerError> {
        self.alive("StartUnit")?;
        let mut guard = self.lock();
        let st = &mut *guard;
        let mut unit = self.load(st, name).clone();
        if unit.content.is_none() && kind != JobKind::Stop {
            Self::forget_unloaded(st);
            let msg = format!("org.freedesktop.systemd1.NoSuchUnit: Unit {name} not found.");
            return Err(failure("StartUnit", name, &msg));
        }
        if kind == JobKind::Reload && unit.active != "active" {
            return Err(failure("ReloadUnit", name, "Unit is not active"));
        }
        st.next_job += 1;
        st.jobs.push((name.to_string(), kind));
        let path = format!("/org/freedesktop/systemd1/job/{}", st.next_job);
        if st.hold {
            st.held.push((path.clone(), name.to_string(), kind));
        } else {
            let result = Self::run_job(st, &mut unit, name, kind);
            st.units.insert(name.to_string(), unit);
            st.streams
                .retain(|tx| tx.send((path.clone(), result.to_string())).is_ok());
        }
        Self::forget_unloaded(st);
        Ok(QueuedJob {
            path,
            unit: name.to_string(),
            kind,
        })
    }

    async fn unit_properties(
        &self,
        unit: &str,
        _: &UnitPath,
    ) -> Result<UnitProperties, ManagerError> {
        self.alive("GetAll")?;
        let enabled = self.lock().enabled.contains(unit);
        let mut st = self.lock();
        let u = self.load(&mut st, unit);
        let found = u.content.is_some();
        let drop_in_paths = if u.dropins.is_empty() {
            vec![]
        } else {
            let dir = self.control.join(format!("{unit}.d"));
            let mut files: Vec<String> = std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path().display().to_string())
                .collect();
            files.sort();
            files
        };
        Ok(UnitProperties {
            load_state: if found { "loaded" } else { "not-found" }.into(),
            fragment_path: if found {
                self.unit_dir.join(unit).display().to_string()
            } else {
                String::new()
            },
            drop_in_paths,
            unit_file_state: if enabled { "enabled" } else { "disabled" }.into(),
        })
    }

    async fn live_properties(
        &self,
        unit: &str,
        _: &UnitPath,
    ) -> Result<LiveProperties, ManagerError> {
        self.alive("GetAll")?;
        let mut st = self.lock();
        let u = self.load(&mut st, unit);
        if unit.ends_with(".timer") {
            return Ok(LiveProperties {
                result: u.result.result.clone(),
                ..Default::default()
            });
        }
        let limits = Self::limits_of(u);
        let set = |v: u64| (v != u64::MAX).then_some(v);
        Ok(LiveProperties {
            main_pid: Some(0),
            result: u.result.result.clone(),
            standard_output: "journal".into(),
            standard_error: "inherit".into(),
            usage: Usage {
                memory_max: set(limits.memory_max),
                memory_high: set(limits.memory_high),
                cpu_quota_per_sec_usec: set(limits.cpu_quota_per_sec_usec),
                tasks_max: set(limits.tasks_max),
                ..u.usage
            },
        })
    }

    async fn manager_pid(&self) -> Result<u32, ManagerError> {
        self.alive("GetConnectionUnixProcessID")?;
        self.lock().pid.ok_or_else(|| ManagerError::Call {
            call: "GetConnectionUnixProcessID",
            unit: None,
            cause: "the in-memory manager has no process".into(),
            failure: CallFailure::Other,
        })
    }

    async fn pause_unit_signals(&self, at_most: Duration) -> SignalPause {
        let n = {
            let mut st = self.lock();
            st.pauses.push(at_most);
            st.paused = true;
            st.pauses.len() as u64
        };
        let state = self.state.clone();
        SignalPause::new(n, move || {
            if let Ok(mut st) = state.lock() {
                st.paused = false;
            }
        })
    }
}
