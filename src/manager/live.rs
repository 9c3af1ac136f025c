//! What the user manager reports about units, as plain data: their
//! state ([`LiveUnit`]), their live limits ([`LiveLimits`]) and what a unit
//! file asks for ([`WantedLimits`]), their own and their type's properties
//! ([`UnitProperties`], [`LiveProperties`]). Whatever implements
//! [`super::UserManager`] answers in these types; the planner and the
//! commands read them.

use std::path::PathBuf;

/// A unit's object path, as `ListUnitsByNames` and `LoadUnit` return it:
/// what the properties of the unit are asked by. Opaque to everyone but
/// the implementation that made it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UnitPath(String);

impl UnitPath {
    /// A path as the manager spelled it.
    pub fn new(path: impl Into<String>) -> UnitPath {
        UnitPath(path.into())
    }

    /// The path as the manager spelled it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A unit as the user manager sees it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LiveUnit {
    /// `LoadState`: `loaded`, `not-found`, …
    pub load_state: String,
    /// `ActiveState`: `active`, `inactive`, `failed`, …
    pub active_state: String,
    /// `SubState`: `running`, `dead`, `auto-restart`, …
    pub sub_state: String,
    /// A job is queued or running for the unit: leave it alone this pass.
    pub job_pending: bool,
    /// Where systemd loaded the unit from (fetched only when it matters).
    pub fragment_path: Option<String>,
    /// `UnitFileState` (enabled, disabled, static, …), if known.
    pub file_state: Option<String>,
    /// `NeedDaemonReload`, fetched only when the last apply is in doubt.
    pub need_reload: Option<bool>,
    /// Live cgroup limits, when fetched (u64::MAX = unlimited).
    pub limits: Option<LiveLimits>,
    /// Drop-ins in the manager's `user.control` directories that set a
    /// limit unitlet manages (`systemctl set-property`, or an older
    /// unitlet): they override the unit file, also after a daemon-reload.
    pub limit_dropins: Vec<PathBuf>,
}

/// Live values of the limits unitlet enforces, as systemd reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveLimits {
    /// `MemoryMax`, bytes.
    pub memory_max: u64,
    /// `MemoryHigh`, bytes.
    pub memory_high: u64,
    /// `CPUQuotaPerSecUSec`: µs of CPU time per second.
    pub cpu_quota_per_sec_usec: u64,
    /// `TasksMax`.
    pub tasks_max: u64,
}

/// The live limits a unit file asks for; a limit it does not set is
/// systemd's default. `None` = not compared (a value unitlet does not
/// evaluate, like a percentage of memory, or an unknown default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WantedLimits {
    /// `MemoryMax`, bytes.
    pub memory_max: Option<u64>,
    /// `MemoryHigh`, bytes.
    pub memory_high: Option<u64>,
    /// `CPUQuotaPerSecUSec`: µs of CPU time per second.
    pub cpu_quota_per_sec_usec: Option<u64>,
    /// `TasksMax`.
    pub tasks_max: Option<u64>,
}

impl WantedLimits {
    /// From the unit file unitlet writes (the manifest's `resources`, and
    /// for an adopted unit the file's own settings): in its `[Service]`
    /// sections the last assignment of a key wins and an empty one resets
    /// it, as in systemd. An unset `TasksMax=` is the manager's
    /// `DefaultTasksMax` (not infinity).
    pub fn of_unit(content: &str, default_tasks_max: Option<u64>) -> WantedLimits {
        let parsed = crate::unitfile::parse(content);
        let last = |key: &str| parsed.last("Service", key).filter(|v| !v.is_empty());
        WantedLimits {
            memory_max: last("MemoryMax").map_or(Some(u64::MAX), parse_bytes),
            memory_high: last("MemoryHigh").map_or(Some(u64::MAX), parse_bytes),
            cpu_quota_per_sec_usec: last("CPUQuota").map_or(Some(u64::MAX), parse_quota),
            tasks_max: last("TasksMax").map_or(default_tasks_max, parse_count),
        }
    }

    /// Whether the live values are the wanted ones.
    pub fn matches(&self, live: &LiveLimits) -> bool {
        self.differences(live).is_empty()
    }

    /// Each live value that is not the wanted one, as
    /// `MemoryMax is 300M, the manifest wants 100M`.
    pub fn differences(&self, live: &LiveLimits) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |prop: &str, have: u64, want: Option<u64>, show: fn(u64) -> String| {
            if let Some(want) = want
                && have != want
            {
                out.push(format!(
                    "{prop} is {}, the manifest wants {}",
                    show(have),
                    show(want)
                ));
            }
        };
        check("MemoryMax", live.memory_max, self.memory_max, show_bytes);
        check("MemoryHigh", live.memory_high, self.memory_high, show_bytes);
        check(
            "CPUQuota",
            live.cpu_quota_per_sec_usec,
            self.cpu_quota_per_sec_usec,
            show_quota,
        );
        check("TasksMax", live.tasks_max, self.tasks_max, show_count);
        out
    }
}

/// `1073741824`, `512M`, `infinity` → bytes; percentages → `None`.
fn parse_bytes(v: &str) -> Option<u64> {
    if v == "infinity" {
        return Some(u64::MAX);
    }
    let (num, shift) = match v.char_indices().last()? {
        (i, 'K') => (&v[..i], 10),
        (i, 'M') => (&v[..i], 20),
        (i, 'G') => (&v[..i], 30),
        (i, 'T') => (&v[..i], 40),
        (i, 'P') => (&v[..i], 50),
        (i, 'E') => (&v[..i], 60),
        _ => (v, 0),
    };
    num.parse::<u64>().ok()?.checked_mul(1u64 << shift)
}

/// `150%`, `12.5%` → µs of CPU time per second.
fn parse_quota(v: &str) -> Option<u64> {
    let p: f64 = v.strip_suffix('%')?.parse().ok()?;
    (p > 0.0).then(|| (p * 10_000.0).round() as u64)
}

/// `50`, `infinity` → a count; percentages → `None`.
fn parse_count(v: &str) -> Option<u64> {
    if v == "infinity" {
        Some(u64::MAX)
    } else {
        v.parse().ok()
    }
}

fn show_count(v: u64) -> String {
    if v == u64::MAX {
        "infinity".into()
    } else {
        v.to_string()
    }
}

fn show_bytes(v: u64) -> String {
    match v {
        u64::MAX => "infinity".into(),
        v if v != 0 && v % (1 << 30) == 0 => format!("{}G", v >> 30),
        v if v != 0 && v % (1 << 20) == 0 => format!("{}M", v >> 20),
        v if v != 0 && v % (1 << 10) == 0 => format!("{}K", v >> 10),
        v => v.to_string(),
    }
}

fn show_quota(v: u64) -> String {
    if v == u64::MAX {
        "infinity".into()
    } else {
        // CPUQuotaPerSecUSec: µs of CPU time per second of wall time.
        format!("{}%", v as f64 / 10_000.0)
    }
}

/// A unit's own properties (systemd's `Unit` interface): what it was
/// loaded from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitProperties {
    /// `LoadState`: `loaded`, `not-found`, `masked`, …
    pub load_state: String,
    /// `FragmentPath`: the unit file, empty when there is none.
    pub fragment_path: String,
    /// `DropInPaths`: its drop-ins, in the order they apply.
    pub drop_in_paths: Vec<String>,
    /// `UnitFileState`: `enabled`, `disabled`, `static`, …
    pub unit_file_state: String,
}

/// What a unit does now, from its type's properties (a service's, or a
/// timer's: a timer has no process, output or resources of its own).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveProperties {
    /// `MainPID`, when the type has one (0: no process now).
    pub main_pid: Option<u32>,
    /// `Result`: `success`, `exit-code`, …; empty when unknown.
    pub result: String,
    /// `StandardOutput` (`journal`, `append:…` shows as `append`, …).
    pub standard_output: String,
    /// `StandardError`.
    pub standard_error: String,
    /// Resource use and limits; every field `None` for a timer.
    pub usage: Usage,
}

/// A service's live resource use against its limits; `None`: unknown, or
/// systemd's "not set" (for a limit: unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// `MemoryCurrent`, bytes.
    pub memory_current: Option<u64>,
    /// `MemoryPeak`, bytes.
    pub memory_peak: Option<u64>,
    /// `MemoryMax`, bytes.
    pub memory_max: Option<u64>,
    /// `MemoryHigh`, bytes.
    pub memory_high: Option<u64>,
    /// `CPUUsageNSec`: CPU time used, ns.
    pub cpu_usage_nsec: Option<u64>,
    /// `CPUQuotaPerSecUSec`: µs of CPU time per second.
    pub cpu_quota_per_sec_usec: Option<u64>,
    /// `TasksCurrent`.
    pub tasks_current: Option<u64>,
    /// `TasksMax`.
    pub tasks_max: Option<u64>,
}
