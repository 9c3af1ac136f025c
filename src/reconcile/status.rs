//! Status and conditions: each object's status recomputed from the loaded
//! set, failures, readiness and live unit states.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use tokio::time::Instant;

use crate::manager::{ListedUnits, UserManager};
use crate::manifest::{self, DesiredState, Kind, Manifest};
use crate::plan::LiveUnit;
use crate::status::ConditionStatus::{False, True, Unknown};
use crate::status::{ConditionStatus, ObjectStatus, Reason, Status, UnitStatus};

use super::*;

/// How to get a program the shipped stack uses, for a missing binary.
fn install_hint(program: &str) -> &'static str {
    match Path::new(program)
        .file_name()
        .and_then(|f| f.to_str())
        .unwrap_or("")
    {
        "prometheus" | "promtool" => "install it with `apt-get install prometheus`",
        "prometheus-node-exporter" => "install it with `apt-get install prometheus-node-exporter`",
        "prometheus-alertmanager" | "amtool" => {
            "install it with `apt-get install prometheus-alertmanager`"
        }
        "grafana-server" | "grafana" => {
            "install Grafana from Grafana's APT repository (apt.grafana.com, package `grafana`)"
        }
        "loki" => "install Loki from Grafana's APT repository (apt.grafana.com, package `loki`)",
        "promtail" => {
            "install Promtail from Grafana's APT repository (apt.grafana.com, package `promtail`)"
        }
        _ => "install it, or fix spec.command",
    }
}

/// A Service whose program is not installed: say which and how to get it.
pub(super) fn missing_program(m: &manifest::Manifest) -> Option<String> {
    let s = m.as_service()?;
    let crate::manifest::Exec::Command(argv) = &s.exec else {
        return None;
    };
    let prog = &argv[0];
    let missing = if prog.contains('/') {
        !Path::new(prog).exists()
    } else {
        // systemd looks programs up in its own fixed PATH.
        !crate::doctor::SYSTEMD_PATH
            .iter()
            .any(|d| Path::new(d).join(prog).exists())
    };
    missing.then(|| {
        format!(
            "{prog} is not installed: {}; unitlet starts {} once it is",
            install_hint(prog),
            m.name
        )
    })
}

/// What is known about each Service's readiness when status is built.
pub struct ReadinessView {
    /// Started, waiting for their readiness URL until then.
    pub waiting: HashMap<String, Instant>,
    /// The last probe of each running Service; absent = not probed yet.
    pub probes: HashMap<String, Result<(), String>>,
}

impl Reconciler {
    /// `apply` probes now (all at once); `run` uses what its probes last
    /// found.
    pub(super) async fn readiness_view(&self, prep: &Prepared) -> ReadinessView {
        let mut probes = self.probes.clone();
        if self.inline_probes {
            let waits = prep.loaded.manifests.iter().filter_map(|m| {
                let r = m.as_service()?.readiness.as_ref()?;
                if self.waiting_ready.contains_key(&m.name) {
                    return None;
                }
                let http = self.http.clone();
                let (name, url) = (m.name.clone(), r.url.clone());
                Some(async move { (name, crate::reload::probe(&http, &url).await) })
            });
            probes.extend(futures_util::future::join_all(waits).await);
        }
        ReadinessView {
            waiting: self.waiting_ready.clone(),
            probes,
        }
    }
}

/// A Ready condition to set: status, reason, message.
type Ready = (ConditionStatus, Reason, String);

/// What a pass knows when it builds status, for every object.
pub struct PassFacts<'a> {
    pub prep: &'a Prepared,
    /// Manifest → error from executing its actions.
    pub failures: &'a BTreeMap<String, String>,
    /// Why a running Service is not Ready because of its config or its
    /// readiness probe, by manifest.
    pub issues: &'a HashMap<String, (Reason, String)>,
    pub readiness: &'a ReadinessView,
    /// Where `unitlet backup` records each Backup's last run.
    pub state_dir: &'a Path,
}

/// The unit whose state is a manifest's state: a Service's service, a
/// Backup's timer.
fn main_unit(m: &Manifest) -> String {
    match m.kind() {
        Kind::Service => format!("{}.service", m.name),
        Kind::Backup => format!("{}.timer", m.name),
    }
}

fn unit_status(name: &str, l: &LiveUnit) -> UnitStatus {
    UnitStatus {
        name: name.to_string(),
        active_state: l.active_state.clone(),
        sub_state: l.sub_state.clone(),
    }
}

/// Recompute every object's status from the loaded set, this pass's
/// failures and the live unit states: the one place an object's status is
/// built.
///
/// # Errors
/// The live unit states cannot be listed.
pub async fn refresh_status(
    sd: &impl UserManager,
    facts: &PassFacts<'_>,
    status: &mut Status,
) -> Result<(), ReconcileError> {
    let loaded = &facts.prep.loaded;
    let mut names: Vec<String> = loaded.manifests.iter().map(main_unit).collect();
    names.extend(loaded.held.keys().map(|n| format!("{n}.service")));
    let live = sd.list_units(&names).await?;
    let mut keep: BTreeSet<String> = BTreeSet::new();
    let mut events = Vec::new();
    for m in &loaded.manifests {
        keep.insert(m.name.clone());
        let unit = main_unit(m);
        let obj = status
            .objects
            .entry(m.name.clone())
            .or_insert_with(|| ObjectStatus::new(m.kind(), &m.name, &m.file));
        obj.kind = m.kind();
        obj.file = m.file.clone();
        let l = live.get(&unit).map(|(l, _)| l.clone()).unwrap_or_default();
        obj.unit = Some(unit_status(&unit, &l));
        if let Some((st, reason, msg)) = manifest_ready(sd, facts, m, &live, obj).await {
            events.extend(backup_event(m, obj.ready(), reason, &msg));
            obj.set_ready(st, reason, &msg);
        }
    }
    for (name, type_, reason, msg) in events {
        status.event(&name, type_, reason, msg);
    }
    show_invalid_manifests(facts.prep, &live, status, &mut keep);
    show_units_of_broken_files(facts.prep, status, &mut keep);
    // `LimitsEnforced` on Services whose limits the user manager's cgroup
    // controllers cannot enforce (see `doctor`).
    if let Some(sys) = sd.as_systemd() {
        crate::doctor::limits_conditions(sys, &facts.prep.loaded.manifests, status).await;
    }
    status.retain_objects(&keep);
    Ok(())
}

/// A loaded manifest's Ready condition; `None` keeps the one it has.
async fn manifest_ready(
    sd: &impl UserManager,
    facts: &PassFacts<'_>,
    m: &Manifest,
    live: &ListedUnits,
    obj: &ObjectStatus,
) -> Option<Ready> {
    let prep = facts.prep;
    if let Some(c) = prep.plan.conflicts.iter().find(|c| c.manifest == m.name) {
        return Some((False, Reason::Conflict, c.message.clone()));
    }
    if prep.on_hold.contains(&m.name) {
        return Some((
            False,
            Reason::OnHold,
            "a restore is in progress; unitlet leaves this service alone until it ends".into(),
        ));
    }
    if prep.backing_off.contains(&m.name) {
        return backing_off_ready(sd, m, live, obj).await;
    }
    // Whatever state systemd shows (failed, auto-restart), the useful
    // answer is which program to install.
    if let Some(msg) = missing_program(m) {
        return Some((False, Reason::BinaryMissing, msg));
    }
    if let Some(e) = facts.failures.get(&m.name) {
        return Some((False, Reason::ApplyFailed, e.clone()));
    }
    let unit = main_unit(m);
    let l = live.get(&unit).map(|(l, _)| l.clone()).unwrap_or_default();
    state_ready(facts, m, &unit, &l, obj)
}

/// A manifest backing off after failures: why its unit failed, or that it
/// is retried.
async fn backing_off_ready(
    sd: &impl UserManager,
    m: &Manifest,
    live: &ListedUnits,
    obj: &ObjectStatus,
) -> Option<Ready> {
    let unit = main_unit(m);
    let Some((l, path)) = live.get(&unit).filter(|(l, _)| l.active_state == "failed") else {
        let prev = obj.ready();
        if prev.is_some_and(|c| c.reason == Reason::BackingOff || c.status == False) {
            return None;
        }
        let prev = prev.map(|c| c.message.clone()).unwrap_or_default();
        return Some((
            False,
            Reason::BackingOff,
            format!("retrying with exponential backoff after: {prev}"),
        ));
    };
    debug_assert_eq!(l.active_state, "failed");
    let mem = m.as_service().and_then(|s| s.resources.memory_max);
    let (reason, msg) = sd
        .failure_details(&unit, path, mem)
        .await
        .unwrap_or_else(|| (Reason::Failed, format!("{unit} failed")));
    Some((
        False,
        reason,
        format!("{msg}; unitlet starts it again with exponential backoff"),
    ))
}

/// Ready from the unit's live state against the declared one.
fn state_ready(
    facts: &PassFacts<'_>,
    m: &Manifest,
    unit: &str,
    l: &LiveUnit,
    obj: &ObjectStatus,
) -> Option<Ready> {
    let desired = m
        .as_service()
        .map(|s| s.state)
        .unwrap_or(DesiredState::Running);
    let (active, sub) = (l.active_state.as_str(), &l.sub_state);
    Some(match (desired, active) {
        (DesiredState::Running, "active") => {
            return running_ready(m, facts, unit, &l.sub_state, obj.ready_reason());
        }
        (DesiredState::Stopped, "inactive" | "failed") => (
            True,
            Reason::Stopped,
            format!("{unit} is stopped, as declared"),
        ),
        (_, "activating" | "reloading") => (
            False,
            Reason::Starting,
            format!("{unit} is {active} ({sub})"),
        ),
        (_, "failed") => (
            False,
            Reason::Failed,
            format!("{unit} failed ({sub}); {}", crate::status::see_logs(unit)),
        ),
        (_, s) => (
            False,
            Reason::NotRunning,
            format!(
                "{unit} is {} ({sub}) but the manifest wants it {}",
                if s.is_empty() { "unknown" } else { s },
                match desired {
                    DesiredState::Running => "running",
                    DesiredState::Stopped => "stopped",
                }
            ),
        ),
    })
}

/// Ready of an active unit that should run: its readiness URL, config
/// issues, or Running.
fn running_ready(
    m: &Manifest,
    facts: &PassFacts<'_>,
    unit: &str,
    sub_state: &str,
    previous: Option<Reason>,
) -> Option<Ready> {
    let name = &m.name;
    let (probes, issues) = (&facts.readiness.probes, facts.issues);
    let has_readiness = m.as_service().is_some_and(|s| s.readiness.is_some());
    let probe = probes
        .get(name)
        .filter(|_| has_readiness)
        .and_then(|r| r.clone().err());
    if has_readiness && let Some(until) = facts.readiness.waiting.get(name) {
        let left = until.saturating_duration_since(Instant::now());
        return Some((
            False,
            Reason::Starting,
            format!(
                "{unit} is active, waiting for its readiness URL (up to {}s more)",
                left.as_secs()
            ),
        ));
    }
    if has_readiness && !probes.contains_key(name) && !issues.contains_key(name) {
        // Not probed yet (the operator just started): keep what the last
        // probe said, if a probe said it.
        let probed = matches!(previous, Some(Reason::Running | Reason::NotReady));
        return (!probed).then(|| {
            (
                Unknown,
                Reason::Probing,
                format!("{unit} is active; probing its readiness URL"),
            )
        });
    }
    if let Some((reason, message)) = issues
        .get(name)
        .filter(|(r, _)| *r != Reason::NotReady || probe.is_some())
    {
        return Some((False, *reason, message.clone()));
    }
    if let Some(e) = probe {
        return Some((
            False,
            Reason::NotReady,
            format!("{unit} is active but not ready: {e}"),
        ));
    }
    if let Some(b) = m.as_backup() {
        return Some(backup_ready(facts.state_dir, name, unit, &b.schedule));
    }
    Some((
        True,
        Reason::Running,
        format!("{unit} is active ({sub_state})"),
    ))
}

/// A scheduled Backup's Ready: its last run's result, as `unitlet backup`
/// recorded it. The failure message names the run's time, so each failed
/// run changes it (and makes one event).
fn backup_ready(
    state_dir: &Path,
    name: &str,
    unit: &str,
    schedule: &crate::schedule::Schedule,
) -> Ready {
    let scheduled = format!("{unit} is scheduled ({schedule})");
    let at = |t: u64| {
        humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t))
            .to_string()
    };
    let Some(run) = crate::backup::read_last_run(state_dir, name) else {
        return (True, Reason::Running, format!("{scheduled}; no run yet"));
    };
    match (&run.last_error, run.last_success) {
        (Some(e), _) => (
            False,
            Reason::BackupFailed,
            format!(
                "the run at {} failed: {e}; {scheduled}, or run `unitlet backup {name}` after fixing it",
                at(run.last_attempt)
            ),
        ),
        (None, Some(t)) => (
            True,
            Reason::Running,
            format!(
                "{scheduled}; last success {}{}",
                at(t),
                run.last_set
                    .map(|s| format!(", set {s}"))
                    .unwrap_or_default()
            ),
        ),
        (None, None) => (True, Reason::Running, format!("{scheduled}; no run yet")),
    }
}

/// The event a Backup's new Ready makes: a failed run (once per run: its
/// message names the run's time) or the first success after failures.
fn backup_event(
    m: &Manifest,
    previous: Option<&crate::status::Condition>,
    reason: Reason,
    msg: &str,
) -> Option<(
    String,
    crate::status::EventType,
    crate::status::EventReason,
    String,
)> {
    use crate::status::EventType;
    m.as_backup()?;
    let was_failed = previous.is_some_and(|c| c.reason == Reason::BackupFailed);
    if reason == Reason::BackupFailed && previous.is_none_or(|c| c.message != msg) {
        return Some((
            m.name.clone(),
            EventType::Warning,
            crate::status::EventReason::BackupFailed,
            msg.to_owned(),
        ));
    }
    (was_failed && reason == Reason::Running).then(|| {
        (
            m.name.clone(),
            EventType::Normal,
            crate::status::EventReason::BackupSucceeded,
            msg.to_owned(),
        )
    })
}

/// Manifests that failed to load: shown under the name their file implies
/// (or their own name, for a duplicate or invalid document).
fn show_invalid_manifests(
    prep: &Prepared,
    live: &ListedUnits,
    status: &mut Status,
    keep: &mut BTreeSet<String>,
) {
    for (name, err) in &prep.loaded.held {
        keep.insert(name.clone());
        let obj = status
            .objects
            .entry(name.clone())
            .or_insert_with(|| ObjectStatus::new(Kind::Service, name, &err.file));
        obj.file = err.file.clone();
        let unit = format!("{name}.service");
        if let Some((l, _)) = live.get(&unit) {
            obj.unit = Some(unit_status(&unit, l));
        }
        let running = obj
            .unit
            .as_ref()
            .is_some_and(|u| u.active_state == "active");
        let kept = if running {
            " (its last good units keep running)"
        } else {
            ""
        };
        let message = crate::manifest::status_message(&err.to_string());
        obj.set_ready(False, Reason::Invalid, &format!("{message}{kept}"));
    }
}

/// Other manifests that came from a broken file: their units (found by
/// the source recorded in them) are held too, and shown as such.
fn show_units_of_broken_files(prep: &Prepared, status: &mut Status, keep: &mut BTreeSet<String>) {
    for (unit, f) in &prep.observed.files {
        let (Some(owner), Some(src)) = (&f.marker, &f.source) else {
            continue;
        };
        if keep.contains(owner) || !prep.loaded.broken_files.contains(src) {
            continue;
        }
        let Some(err) = prep.loaded.errors.iter().find(|e| &e.file == src) else {
            continue;
        };
        keep.insert(owner.clone());
        let kind = if unit.ends_with(".timer") {
            Kind::Backup
        } else {
            Kind::Service
        };
        let obj = status
            .objects
            .entry(owner.clone())
            .or_insert_with(|| ObjectStatus::new(kind, owner, src));
        obj.set_ready(
            False,
            Reason::Invalid,
            &format!(
                "{} (its last good units keep running)",
                crate::manifest::status_message(&err.to_string())
            ),
        );
    }
}
