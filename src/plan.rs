//! Planning: desired units versus what is on disk and live in systemd →
//! an ordered list of actions, each carrying the reason it was chosen.
//!
//! Architecture Invariant: planning is pure. `unitlet plan` prints the
//! [`Plan`] value; `unitlet apply` executes the very same value.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use crate::manager::{LiveUnit, WantedLimits};
use crate::manifest::{DesiredState, Resources};
use crate::render::{self, DesiredUnit, Role};

/// A unit file found in unitlet's unit directory.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedFile {
    pub path: PathBuf,
    pub content: String,
    /// The manifest named by the ownership marker; `None` = not unitlet's.
    pub marker: Option<String>,
    pub source: Option<PathBuf>,
}

/// The limits unitlet manages, as unit-file keys.
pub const LIMIT_KEYS: [&str; 4] = ["MemoryMax", "MemoryHigh", "CPUQuota", "TasksMax"];

/// Whether a unit file sets any limit unitlet manages.
pub fn has_limit_keys(content: &str) -> bool {
    crate::unitfile::parse(content)
        .keys("Service")
        .any(|key| LIMIT_KEYS.contains(&key))
}

/// Everything the planner knows about the world.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Unit files in the unit directory, by unit name (marked or not).
    pub files: BTreeMap<String, ObservedFile>,
    pub live: BTreeMap<String, LiveUnit>,
    /// Content hash of each unit file as last applied in full (written,
    /// reloaded, restarted). A mismatch means an apply was interrupted.
    pub applied: BTreeMap<String, String>,
    /// The manager's `DefaultTasksMax`: what `TasksMax` is for a unit
    /// that does not set it. `None` = unknown (not compared).
    pub default_tasks_max: Option<u64>,
}

/// Names and files whose units must be left exactly as they are, because
/// their manifest is currently invalid (last good units keep running).
#[derive(Debug, Clone, Default)]
pub struct Held {
    pub names: BTreeSet<String>,
    pub files: BTreeSet<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Write the unit file atomically.
    Write {
        path: PathBuf,
        content: String,
    },
    /// Delete a unit file unitlet owns.
    Remove {
        path: PathBuf,
    },
    /// `daemon-reload`: one per plan, after all file changes.
    DaemonReload,
    Enable,
    Disable,
    /// Make the unit file's limits the live ones without a restart:
    /// remove the `user.control` drop-ins that override them (before the
    /// daemon-reload, which then applies the unit file's limits live).
    SetLimits(Resources),
    Start,
    Restart,
    Stop,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    pub op: Op,
    /// Unit name (`web.service`); empty for `DaemonReload`.
    pub unit: String,
    /// The manifest the action serves.
    pub manifest: String,
    pub reason: String,
}

/// How the reason of a start of a unit that failed on its own begins.
const FAILED_UNIT: &str = "unit failed";

impl Action {
    /// A start of a unit that had failed on its own: not an apply failure,
    /// but it counts for backoff, so a crash loop is not a tight loop.
    pub fn restarts_a_failed_unit(&self) -> bool {
        self.op == Op::Start && self.reason.starts_with(FAILED_UNIT)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = match &self.op {
            Op::Write { path, .. } => format!("write {}", path.display()),
            Op::Remove { path } => format!("remove {}", path.display()),
            Op::DaemonReload => "daemon-reload".to_string(),
            Op::Enable => format!("enable {}", self.unit),
            Op::Disable => format!("disable {}", self.unit),
            Op::SetLimits(r) => {
                let v: Vec<String> = render::resource_lines(r)
                    .into_iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                let v = if v.is_empty() {
                    "no limits".to_string()
                } else {
                    v.join(" ")
                };
                format!("set-limits {} ({v})", self.unit)
            }
            Op::Start => format!("start {}", self.unit),
            Op::Restart => format!("restart {}", self.unit),
            Op::Stop => format!("stop {}", self.unit),
        };
        write!(f, "{verb}: {}", self.reason)
    }
}

/// A manifest that cannot be applied because someone else owns its unit.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    pub manifest: String,
    pub unit: String,
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub conflicts: Vec<Conflict>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    pub fn daemon_reloads(&self) -> usize {
        self.actions
            .iter()
            .filter(|a| a.op == Op::DaemonReload)
            .count()
    }

    /// Manifests touched by the plan.
    pub fn manifests(&self) -> BTreeSet<String> {
        self.actions
            .iter()
            .filter(|a| !a.manifest.is_empty())
            .map(|a| a.manifest.clone())
            .collect()
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.conflicts {
            writeln!(f, "! {} ({}): {}", c.manifest, c.unit, c.message)?;
        }
        if self.actions.is_empty() {
            return writeln!(f, "Nothing to do: every unit matches its manifest.");
        }
        for a in &self.actions {
            writeln!(f, "{a}")?;
        }
        Ok(())
    }
}

pub fn content_hash(content: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(content.as_bytes())[..12])
}

fn is_running(live: Option<&LiveUnit>) -> bool {
    live.is_some_and(|l| {
        matches!(
            l.active_state.as_str(),
            "active" | "activating" | "reloading" | "refreshing"
        )
    })
}

/// Whether systemd has not loaded the unit (never referenced, or looked up
/// and not found): it reads the unit's file when the unit is next
/// referenced (systemd ≥ 246 retries a not-found unit once its unit
/// directories changed), so writing that file needs no daemon-reload. A
/// start that still finds nothing is followed by one (see
/// `reconcile::apply`).
pub fn loads_on_demand(live: Option<&LiveUnit>) -> bool {
    live.is_none_or(|l| l.load_state.is_empty() || l.load_state == "not-found")
}

fn is_enabled(live: Option<&LiveUnit>) -> Option<bool> {
    live.and_then(|l| l.file_state.as_deref()).map(|s| {
        matches!(
            s,
            "enabled" | "enabled-runtime" | "linked" | "linked-runtime" | "alias"
        )
    })
}

/// Start order: a unit after the units it names (`after`), ties by name.
fn start_order(desired: &[DesiredUnit]) -> BTreeMap<String, usize> {
    let by_name: BTreeMap<&str, &DesiredUnit> =
        desired.iter().map(|d| (d.name.as_str(), d)).collect();
    let mut depth: BTreeMap<String, usize> = BTreeMap::new();
    fn visit(
        n: &str,
        by: &BTreeMap<&str, &DesiredUnit>,
        depth: &mut BTreeMap<String, usize>,
        stack: &mut Vec<String>,
    ) -> usize {
        if let Some(d) = depth.get(n) {
            return *d;
        }
        if stack.iter().any(|s| s == n) {
            return 0; // a cycle: systemd breaks it; we just stop recursing
        }
        stack.push(n.to_string());
        let d = by
            .get(n)
            .map(|u| {
                u.after
                    .iter()
                    .map(|a| visit(a, by, depth, stack) + 1)
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0);
        stack.pop();
        depth.insert(n.to_string(), d);
        d
    }
    for d in desired {
        visit(&d.name, &by_name, &mut depth, &mut vec![]);
    }
    depth
}

/// Build the plan.
///
/// `unit_dir` is where unitlet writes; `desired` are the rendered units of
/// every valid manifest; `held` names manifests (and source files) whose
/// units must not be touched.
pub fn plan(unit_dir: &Path, desired: &[DesiredUnit], held: &Held, observed: &Observed) -> Plan {
    // Conflicts first: a manifest with any conflicting unit is not applied.
    let conflicts: Vec<Conflict> = desired
        .iter()
        .filter_map(|d| conflict(unit_dir, d, observed))
        .collect();
    let blocked: BTreeSet<&str> = conflicts.iter().map(|c| c.manifest.as_str()).collect();
    let order = start_order(desired);
    let mut phases = Phases::default();
    for d in desired {
        if blocked.contains(d.manifest.as_str()) {
            continue;
        }
        let unit = UnitSeen {
            d,
            path: unit_dir.join(&d.name),
            file: observed.files.get(&d.name),
            live: observed.live.get(&d.name),
        };
        let depth = order.get(&d.name).copied().unwrap_or(0);
        phases.plan_unit(&unit, observed, depth);
    }
    phases.plan_garbage(desired, held, observed);
    phases.into_plan(conflicts)
}

/// Why a desired unit cannot be applied: a file of that name that is not
/// its manifest's, or a definition elsewhere that takes precedence.
fn conflict(unit_dir: &Path, d: &DesiredUnit, observed: &Observed) -> Option<Conflict> {
    let path = unit_dir.join(&d.name);
    let live = observed.live.get(&d.name);
    let msg = match observed.files.get(&d.name).map(|f| f.marker.as_deref()) {
        Some(None) => Some(format!(
            "unit file {} exists and is not managed by unitlet (it has no {}= key); unitlet leaves it alone. Remove or rename that file, rename the manifest, or adopt the file with spec.unitFile",
            path.display(),
            render::MARKER_KEY
        )),
        Some(Some(other)) if other != d.manifest => Some(format!(
            "unit file {} belongs to manifest {other:?}, not {:?}",
            path.display(),
            d.manifest
        )),
        _ => None,
    };
    let message = msg.or_else(|| {
        let fp = live
            .and_then(|l| l.fragment_path.as_deref())
            .filter(|p| !p.is_empty())?;
        let loaded = live.is_some_and(|l| l.load_state != "not-found");
        (Path::new(fp) != path && loaded).then(|| format!(
            "unit {} is defined by {fp}, which is not unitlet's and takes precedence over {}; unitlet leaves it alone. Remove that file or rename the manifest",
            d.name,
            path.display()
        ))
    })?;
    Some(Conflict {
        manifest: d.manifest.clone(),
        unit: d.name.clone(),
        message,
    })
}

/// A desired unit with what is on disk and live for it.
struct UnitSeen<'a> {
    d: &'a DesiredUnit,
    path: PathBuf,
    file: Option<&'a ObservedFile>,
    live: Option<&'a LiveUnit>,
}

impl UnitSeen<'_> {
    fn action(&self, op: Op, reason: impl Into<String>) -> Action {
        Action {
            op,
            unit: self.d.name.clone(),
            manifest: self.d.manifest.clone(),
            reason: reason.into(),
        }
    }
}

/// What a unit file's change means for the running unit.
#[derive(Default)]
struct FileChange {
    /// Why it must be restarted, if it must.
    restart: Option<String>,
    /// Only resource limits changed: the daemon-reload applies them live.
    live_only: bool,
}

/// The actions of a plan by phase, in the order they run.
#[derive(Default)]
struct Phases {
    stops: Vec<Action>,
    disables: Vec<Action>,
    files: Vec<Action>,
    limits: Vec<Action>,
    /// Unit files change on disk.
    need_reload: bool,
    /// Limits change only live.
    limits_reload: bool,
    enables: Vec<Action>,
    /// By start order (depth in `after`).
    starts: Vec<(usize, Action)>,
}

impl Phases {
    /// File, enablement, active state and limits of one desired unit.
    fn plan_unit(&mut self, u: &UnitSeen<'_>, observed: &Observed, depth: usize) {
        let change = self.plan_file(u, observed);
        self.plan_enablement(u);
        let limits_reason = self.plan_active_state(u, change, observed, depth);
        // Limits set by hand (or by an older unitlet) in the manager's
        // control directory override the unit file even after a restart or
        // a daemon-reload: remove them, whatever the unit's state.
        let dropins = u.live.filter(|l| !l.limit_dropins.is_empty()).map(|l| {
            let files: Vec<String> = l
                .limit_dropins
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            format!(
                "resource limits set outside the manifest override it ({})",
                files.join(", ")
            )
        });
        let reason = match (limits_reason, dropins) {
            (Some(r), Some(why)) => Some(format!("{r}; {why}")),
            (r, why) => r.or(why),
        };
        if let Some(reason) = reason {
            self.limits
                .push(u.action(Op::SetLimits(u.d.resources.clone()), reason));
            // The daemon-reload is what applies the unit file's limits live.
            self.limits_reload = true;
        }
    }

    /// The unit file: written when missing or different; what that means
    /// for the running unit.
    fn plan_file(&mut self, u: &UnitSeen<'_>, observed: &Observed) -> FileChange {
        let d = u.d;
        let write = || Op::Write {
            path: u.path.clone(),
            content: d.content.clone(),
        };
        // systemd loads a unit it has not found yet from its new file on
        // demand (when the unit directories changed since it last looked):
        // only a unit it has loaded needs the daemon-reload.
        let loaded = !loads_on_demand(u.live);
        let Some(f) = u.file else {
            self.files.push(u.action(write(), "unit file is missing"));
            self.need_reload |= loaded;
            return FileChange::default();
        };
        if f.content != d.content {
            let diff = render::diff_units(&f.content, &d.content);
            let what = if diff.changed.is_empty() {
                "comments".to_string()
            } else {
                diff.changed.join(", ")
            };
            let why = format!("unit file differs from the manifest ({what})");
            self.files.push(u.action(write(), why));
            self.need_reload |= loaded;
            let source_only = diff
                .changed
                .iter()
                .all(|c| c == &format!("Unit.{}", render::SOURCE_KEY));
            return FileChange {
                restart: (!diff.only_live && !source_only)
                    .then(|| format!("its definition changed ({what})")),
                live_only: diff.only_live,
            };
        }
        let reload_needed = u.live.and_then(|l| l.need_reload).unwrap_or(false);
        self.need_reload |= reload_needed;
        let restart = match observed.applied.get(&d.name) {
            Some(h) if *h != content_hash(&d.content) => {
                Some("the last apply of its new definition did not finish")
            }
            None if reload_needed => Some("systemd has not loaded its current definition"),
            _ => None,
        };
        FileChange {
            restart: restart.map(String::from),
            live_only: false,
        }
    }

    /// Enabled or disabled as the manifest says.
    fn plan_enablement(&mut self, u: &UnitSeen<'_>) {
        let want = match u.d.role {
            Role::Main { enabled, .. } => enabled,
            Role::Timer => true,
            Role::Oneshot => return,
        };
        let have = is_enabled(u.live);
        if want && have != Some(true) {
            let why = "manifest wants it started with the session";
            self.enables.push(u.action(Op::Enable, why));
        } else if !want && have == Some(true) {
            let why = "manifest has enabled: false";
            self.disables.push(u.action(Op::Disable, why));
        }
    }

    /// Started, restarted or stopped as the manifest's state says. Returns
    /// why the live limits must be set, for a unit left running.
    fn plan_active_state(
        &mut self,
        u: &UnitSeen<'_>,
        change: FileChange,
        observed: &Observed,
        depth: usize,
    ) -> Option<String> {
        let want_running = match u.d.role {
            Role::Main { state, .. } => state == DesiredState::Running,
            Role::Timer => true,
            Role::Oneshot => return None,
        };
        let running = is_running(u.live);
        // A job (ours or a person's) in flight: look again when it ends.
        if u.live.is_some_and(|l| l.job_pending) {
            return None;
        }
        if !want_running {
            if running {
                self.stops
                    .push(u.action(Op::Stop, "manifest has state: stopped"));
            }
            return None;
        }
        if !running {
            self.starts
                .push((depth, u.action(Op::Start, start_reason(u))));
            return None;
        }
        if let Some(r) = change.restart {
            self.starts.push((depth, u.action(Op::Restart, r)));
            return None;
        }
        if change.live_only {
            return Some("only resource limits changed: applied live, no restart".into());
        }
        let wanted = WantedLimits::of_unit(&u.d.content, observed.default_tasks_max);
        u.live
            .and_then(|l| l.limits)
            .filter(|l| !wanted.matches(l))
            .map(|_| "live resource limits differ from the manifest (changed by hand?)".into())
    }

    /// Garbage: marked files whose manifest is gone (and not merely
    /// broken), or no longer defines them: stopped, disabled, removed.
    fn plan_garbage(&mut self, desired: &[DesiredUnit], held: &Held, observed: &Observed) {
        let desired_names: BTreeSet<&str> = desired.iter().map(|d| d.name.as_str()).collect();
        let desired_manifests: BTreeSet<&str> =
            desired.iter().map(|d| d.manifest.as_str()).collect();
        for (name, f) in &observed.files {
            let Some(owner) = &f.marker else { continue };
            if desired_names.contains(name.as_str()) {
                continue;
            }
            let manifest_exists = desired_manifests.contains(owner.as_str());
            let broken = held.names.contains(owner)
                || f.source.as_ref().is_some_and(|s| held.files.contains(s));
            if !manifest_exists && broken {
                // Its manifest is broken right now: keep the last good unit.
                continue;
            }
            let reason = if manifest_exists {
                format!("manifest {owner:?} no longer defines {name}")
            } else {
                format!("manifest {owner:?} was deleted")
            };
            let action = |op: Op| Action {
                op,
                unit: name.clone(),
                manifest: owner.clone(),
                reason: reason.clone(),
            };
            let live = observed.live.get(name);
            if is_running(live) {
                self.stops.push(action(Op::Stop));
            }
            if is_enabled(live) == Some(true) {
                self.disables.push(action(Op::Disable));
            }
            self.files.push(action(Op::Remove {
                path: f.path.clone(),
            }));
            self.need_reload = true;
        }
    }

    /// The phases in order, with one daemon-reload after the files.
    fn into_plan(mut self, conflicts: Vec<Conflict>) -> Plan {
        self.starts
            .sort_by(|a, b| (a.0, &a.1.unit).cmp(&(b.0, &b.1.unit)));
        let mut actions = Vec::new();
        actions.extend(self.stops);
        actions.extend(self.disables);
        actions.extend(self.files);
        actions.extend(self.limits);
        if self.need_reload || self.limits_reload {
            actions.push(Action {
                op: Op::DaemonReload,
                unit: String::new(),
                manifest: String::new(),
                reason: if self.need_reload {
                    "unit files changed on disk".into()
                } else {
                    "makes the unit files' resource limits the live ones".into()
                },
            });
        }
        actions.extend(self.enables);
        actions.extend(self.starts.into_iter().map(|(_, a)| a));
        Plan { actions, conflicts }
    }
}

/// Why a unit that should run and does not is started.
fn start_reason(u: &UnitSeen<'_>) -> String {
    match u.live.map(|l| l.active_state.as_str()) {
        None | Some("") => "unit is new".to_string(),
        Some("failed") => format!(
            "{FAILED_UNIT} ({}); starting it again",
            u.live.map(|l| l.sub_state.as_str()).unwrap_or("")
        ),
        Some(s) if u.file.is_some() => {
            format!("unit is {s} but the manifest wants it running (stopped by hand?)")
        }
        Some(_) => "unit is new".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::LiveLimits;
    use crate::manifest::{PathContext, parse_str};
    use crate::render::{RenderContext, render};

    fn desired(yaml: &str) -> Vec<DesiredUnit> {
        let p = parse_str(
            yaml,
            Path::new("/m/x.yaml"),
            &PathContext {
                manifest_dir: "/m".into(),
                home: None,
            },
        );
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        p.manifests
            .iter()
            .flat_map(|m| render(m, &RenderContext::default()))
            .collect()
    }

    fn svc(name: &str, extra: &str) -> String {
        format!(
            "apiVersion: unitlet/v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{command: [/bin/sleep, '1000']{extra}}}\n---\n"
        )
    }

    fn converged(d: &[DesiredUnit]) -> Observed {
        let mut o = Observed::default();
        for u in d {
            o.files.insert(
                u.name.clone(),
                ObservedFile {
                    path: Path::new("/u").join(&u.name),
                    content: u.content.clone(),
                    marker: Some(u.manifest.clone()),
                    source: Some("/m/x.yaml".into()),
                },
            );
            o.live.insert(
                u.name.clone(),
                LiveUnit {
                    load_state: "loaded".into(),
                    active_state: "active".into(),
                    sub_state: "running".into(),
                    file_state: Some("enabled".into()),
                    ..Default::default()
                },
            );
            o.applied.insert(u.name.clone(), content_hash(&u.content));
        }
        o
    }

    #[test]
    fn fresh_units_are_written_and_started_in_order_without_a_daemon_reload() {
        let d = desired(&format!(
            "{}{}{}",
            svc("c", ", after: [b]"),
            svc("b", ", after: [a]"),
            svc("a", "")
        ));
        let p = plan(Path::new("/u"), &d, &Held::default(), &Observed::default());
        assert_eq!(p.daemon_reloads(), 0, "systemd loads new units on demand");
        let starts: Vec<_> = p
            .actions
            .iter()
            .filter(|a| a.op == Op::Start)
            .map(|a| a.unit.as_str())
            .collect();
        assert_eq!(starts, ["a.service", "b.service", "c.service"]);
        let first_start = p.actions.iter().position(|a| a.op == Op::Start).unwrap();
        assert!(
            p.actions[..first_start]
                .iter()
                .all(|a| matches!(a.op, Op::Write { .. } | Op::Enable)),
            "{:?}",
            p.actions
        );
        assert_eq!(
            p.actions
                .iter()
                .filter(|a| matches!(a.op, Op::Write { .. }))
                .count(),
            3
        );
    }

    #[test]
    fn converged_is_empty() {
        let d = desired(&svc("a", ""));
        let p = plan(Path::new("/u"), &d, &Held::default(), &converged(&d));
        assert!(p.is_empty(), "{p}");
    }

    #[test]
    fn command_change_restarts_limit_change_does_not() {
        let d = desired(&svc("a", ""));
        let o = converged(&d);
        let d2 = desired(&svc("a", ", restart: always"));
        let p = plan(Path::new("/u"), &d2, &Held::default(), &o);
        assert!(
            p.actions
                .iter()
                .any(|a| a.op == Op::Restart && a.reason.contains("Service.Restart")),
            "{p}"
        );
        let d3 = desired(&svc("a", ", resources: {memoryMax: 1G}"));
        let p = plan(Path::new("/u"), &d3, &Held::default(), &o);
        assert!(!p.actions.iter().any(|a| a.op == Op::Restart), "{p}");
        assert!(
            p.actions.iter().any(|a| matches!(a.op, Op::SetLimits(_))),
            "{p}"
        );
    }

    /// Issue 20 item 11: the shipped node-exporter unit continues its
    /// `ExecStart=` over three lines. A changed flag is a changed
    /// `Service.ExecStart` in the plan's reasons, never a key named after
    /// the flag; a flag that looks like a limit is not one.
    #[test]
    fn continued_lines_give_the_plan_real_keys() {
        let shipped = include_str!("../units/node-exporter.service");
        let mut d = desired(&svc("a", ""));
        let mut o = converged(&d);
        o.files.get_mut("a.service").unwrap().content = shipped.to_string();
        d[0].content = shipped.replace("127.0.0.1:9100", "127.0.0.1:9200");
        let p = plan(Path::new("/u"), &d, &Held::default(), &o);
        let restart = p
            .actions
            .iter()
            .find(|a| a.op == Op::Restart)
            .expect("a restart");
        assert!(
            restart.reason.contains("(Service.ExecStart)"),
            "{}",
            restart.reason
        );
        assert!(!format!("{p}").contains("--web"), "{p}");
        let flag = "[Service]\nExecStart=/bin/x \\\n  MemoryMax=1\n";
        assert!(!has_limit_keys(flag));
        assert_eq!(WantedLimits::of_unit(flag, None).memory_max, Some(u64::MAX));
    }

    #[test]
    fn stopped_by_hand_is_started() {
        let d = desired(&svc("a", ""));
        let mut o = converged(&d);
        o.live.get_mut("a.service").unwrap().active_state = "inactive".into();
        let p = plan(Path::new("/u"), &d, &Held::default(), &o);
        assert_eq!(p.actions.len(), 1);
        assert_eq!(p.actions[0].op, Op::Start);
        assert!(p.actions[0].reason.contains("stopped by hand"));
    }

    #[test]
    fn garbage_is_collected_but_held_and_unmarked_are_not() {
        let d = desired(&format!("{}{}", svc("a", ""), svc("b", "")));
        let mut o = converged(&d);
        o.files.insert(
            "x.service".into(),
            ObservedFile {
                path: "/u/x.service".into(),
                content: String::new(),
                marker: None,
                source: None,
            },
        );
        // Manifest b deleted:
        let only_a: Vec<_> = d.iter().filter(|u| u.manifest == "a").cloned().collect();
        let p = plan(Path::new("/u"), &only_a, &Held::default(), &o);
        let ops: Vec<_> = p
            .actions
            .iter()
            .map(|a| {
                (
                    a.unit.as_str(),
                    format!("{:?}", a.op)
                        .split([' ', '{', '('])
                        .next()
                        .unwrap()
                        .to_string(),
                )
            })
            .collect();
        assert_eq!(
            ops,
            [
                ("b.service", "Stop".into()),
                ("b.service", "Disable".into()),
                ("b.service", "Remove".into()),
                ("", "DaemonReload".into())
            ]
        );
        // ...but held when its file is broken:
        let held = Held {
            names: ["b".to_string()].into(),
            files: Default::default(),
        };
        assert!(plan(Path::new("/u"), &only_a, &held, &o).is_empty());
        let held = Held {
            names: Default::default(),
            files: [PathBuf::from("/m/x.yaml")].into(),
        };
        assert!(plan(Path::new("/u"), &only_a, &held, &o).is_empty());
    }

    #[test]
    fn unmarked_unit_of_same_name_is_a_conflict() {
        let d = desired(&svc("a", ""));
        let mut o = Observed::default();
        o.files.insert(
            "a.service".into(),
            ObservedFile {
                path: "/u/a.service".into(),
                content: "[Service]\nExecStart=/bin/x\n".into(),
                marker: None,
                source: None,
            },
        );
        let p = plan(Path::new("/u"), &d, &Held::default(), &o);
        assert!(p.actions.is_empty());
        assert_eq!(p.conflicts.len(), 1);
        assert!(p.conflicts[0].message.contains("not managed by unitlet"));
    }

    #[test]
    fn interrupted_apply_restarts() {
        let d = desired(&svc("a", ""));
        let mut o = converged(&d);
        o.applied.insert("a.service".into(), "old".into());
        let p = plan(Path::new("/u"), &d, &Held::default(), &o);
        assert_eq!(
            p.actions.iter().filter(|a| a.op == Op::Restart).count(),
            1,
            "{p}"
        );
    }

    #[test]
    fn limit_drift_is_restored() {
        let d = desired(&svc("a", ", resources: {memoryMax: 1G}"));
        let mut o = converged(&d);
        o.live.get_mut("a.service").unwrap().limits = Some(LiveLimits {
            memory_max: u64::MAX,
            memory_high: u64::MAX,
            cpu_quota_per_sec_usec: u64::MAX,
            tasks_max: u64::MAX,
        });
        let p = plan(Path::new("/u"), &d, &Held::default(), &o);
        assert!(matches!(p.actions[0].op, Op::SetLimits(_)), "{p}");
    }

    #[test]
    fn limit_dropins_are_removed_whatever_the_units_state() {
        let d = desired(&svc("a", ""));
        let mut o = converged(&d);
        let l = o.live.get_mut("a.service").unwrap();
        l.active_state = "inactive".into();
        l.limit_dropins = vec!["/c/user.control/a.service.d/50-TasksMax.conf".into()];
        let p = plan(Path::new("/u"), &d, &Held::default(), &o);
        let ops: Vec<String> = p.actions.iter().map(|a| a.to_string()).collect();
        assert_eq!(ops.len(), 3, "{p}");
        assert!(
            ops[0].starts_with("set-limits a.service (no limits): resource limits set outside the manifest override it (/c/user.control/a.service.d/50-TasksMax.conf)"),
            "{p}"
        );
        assert_eq!(
            ops[1],
            "daemon-reload: makes the unit files' resource limits the live ones"
        );
        assert!(ops[2].starts_with("start a.service"), "{p}");
    }

    #[test]
    fn unset_tasks_max_wants_the_managers_default() {
        let live = LiveLimits {
            memory_max: 100 << 20,
            memory_high: u64::MAX,
            cpu_quota_per_sec_usec: 500_000,
            tasks_max: 50,
        };
        assert_eq!(
            WantedLimits::of_unit("[Service]\nExecStart=/bin/x\n", Some(4915)).differences(&live),
            [
                "MemoryMax is 100M, the manifest wants infinity",
                "CPUQuota is 50%, the manifest wants infinity",
                "TasksMax is 50, the manifest wants 4915",
            ]
        );
        // Unknown default: TasksMax is not compared.
        let none = WantedLimits::of_unit("[Service]\n", None);
        assert_eq!(none.differences(&live).len(), 2);
        // An adopted file's own limits count; the last assignment wins,
        // an empty one resets, percentages of memory are not compared.
        let own = "[Service]\nMemoryMax=1G\nMemoryMax=100M\nCPUQuota=50%\nTasksMax=10\nTasksMax=\n[Service]\nTasksMax=50\nMemoryHigh=20%\n";
        assert!(
            WantedLimits::of_unit(own, Some(4915)).matches(&live),
            "{:?}",
            WantedLimits::of_unit(own, Some(4915))
        );
        assert!(has_limit_keys(own));
        assert!(!has_limit_keys(
            "[Unit]\nDescription=MemoryMax=1\n[Service]\nExecStart=/x\n"
        ));
        let fractional = WantedLimits::of_unit("[Service]\nCPUQuota=12.5%\n", None);
        assert_eq!(fractional.cpu_quota_per_sec_usec, Some(125_000));
    }
}
