//! Status and conditions: each object's status recomputed from the loaded
//! set, failures, readiness and live unit states.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use tokio::time::Instant;

use crate::backup::LastRun;
use crate::manager::LiveUnit;
use crate::manager::{ListedUnits, UserManager};
use crate::manifest::{self, DesiredState, Kind, Manifest};
use crate::rollout::policy::RolloutVerdict;
use crate::status::{ObjectStatus, Reason, Status, UnitStatus};

use super::ready;
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

/// What a pass knows when it builds status, for every object.
pub(crate) struct PassFacts<'a> {
    pub prep: &'a Prepared,
    /// Manifest → error from executing its actions.
    pub failures: &'a BTreeMap<String, String>,
    /// Why a running Service is not Ready because of its config or its
    /// readiness probe, by manifest.
    pub issues: &'a HashMap<String, (Reason, String)>,
    pub readiness: &'a ReadinessView,
    /// Where `unitlet backup` records each Backup's last run.
    pub state_dir: &'a Path,
    /// The rollout pins in force, by Service.
    pub rollouts: &'a BTreeMap<String, RolloutVerdict>,
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

/// The message of a Service a restore holds.
const ON_HOLD: &str = "a restore is in progress; unitlet leaves this service alone until it ends";

/// Recompute every object's status from the loaded set, this pass's
/// failures and the live unit states; each Ready is decided by
/// [`ready::decide`].
///
/// # Errors
/// The live unit states cannot be listed.
pub(crate) async fn refresh_status(
    sd: &impl UserManager,
    facts: &PassFacts<'_>,
    status: &mut Status,
) -> Result<BTreeMap<String, LastRun>, ReconcileError> {
    let loaded = &facts.prep.loaded;
    let mut names: Vec<String> = loaded.manifests.iter().map(main_unit).collect();
    names.extend(loaded.held.keys().map(|n| format!("{n}.service")));
    names.extend(units_of_broken_files(facts.prep).map(|(unit, ..)| unit.clone()));
    let live = sd.list_units(&names).await?;
    let backups = loaded.manifests.iter().filter(|m| m.as_backup().is_some());
    let last_runs =
        crate::backup::read_last_runs(facts.state_dir, backups.map(|m| m.name.clone()).collect())
            .await;
    let mut keep: BTreeSet<String> = BTreeSet::new();
    let mut events = Vec::new();
    for m in &loaded.manifests {
        keep.insert(m.name.clone());
        let unit = main_unit(m);
        let l = live.get(&unit).map(|(l, _)| l.clone()).unwrap_or_default();
        let failure = failure_when_backing_off(sd, facts, m, &live).await;
        let last_run = last_runs.get(&m.name).cloned();
        let missing = missing_program(m);
        let obj = status
            .objects
            .entry(m.name.clone())
            .or_insert_with(|| ObjectStatus::new(m.kind(), &m.name, &m.file));
        obj.kind = m.kind();
        obj.file = m.file.clone();
        obj.unit = Some(unit_status(&unit, &l));
        let known = Known {
            unit: &unit,
            live: &l,
            failure: failure.as_ref(),
            last_run: last_run.as_ref(),
            missing: missing.as_deref(),
        };
        if let Some(d) = ready::decide(&manifest_inputs(facts, m, &known, obj.ready())) {
            events.extend(backup_event(m, obj.ready(), d.reason, &d.message));
            d.apply(obj);
        }
    }
    for (name, type_, reason, msg) in events {
        status.event(&name, type_, reason, msg);
    }
    show_invalid_manifests(facts.prep, &live, status, &mut keep);
    show_units_of_broken_files(facts.prep, &live, status, &mut keep);
    // `LimitsEnforced` on Services whose limits the user manager's cgroup
    // controllers cannot enforce (see `doctor`).
    crate::doctor::limits_conditions(sd, &facts.prep.loaded.manifests, status).await;
    status.retain_objects(&keep);
    Ok(last_runs)
}

/// What a pass found about one manifest's units, beside [`PassFacts`].
struct Known<'a> {
    unit: &'a str,
    live: &'a LiveUnit,
    /// Why its unit failed, when it backs off and its unit failed.
    failure: Option<&'a (Reason, String)>,
    /// A Backup's last run.
    last_run: Option<&'a crate::backup::LastRun>,
    /// Its program is not installed: what to do.
    missing: Option<&'a str>,
}

/// The inputs of a loaded manifest's Ready.
fn manifest_inputs<'a>(
    facts: &'a PassFacts<'_>,
    m: &'a Manifest,
    k: &Known<'a>,
    previous: Option<&'a crate::status::Condition>,
) -> ready::Inputs<'a> {
    let prep = facts.prep;
    let name = m.name.as_str();
    let declared = m.as_service().map_or(DesiredState::Running, |s| s.state);
    let mut i = ready::Inputs::new(name, k.unit, declared);
    i.previous = previous;
    i.live = ready::Live::Now {
        active: &k.live.active_state,
        sub: &k.live.sub_state,
    };
    i.restore = prep
        .on_hold
        .contains(name)
        .then_some((Reason::OnHold, ON_HOLD));
    let conflict = prep.plan.conflicts.iter().find(|c| c.manifest == name);
    i.conflict = conflict.map(|c| c.message.as_str());
    i.backing_off = prep
        .backing_off
        .contains(name)
        .then(|| k.failure.map(|(r, msg)| (*r, msg.as_str())));
    i.program_missing = k.missing;
    i.apply_failed = facts.failures.get(name).map(String::as_str);
    i.readiness = readiness(facts.readiness, m);
    i.config_issue = facts.issues.get(name).map(|(r, msg)| (*r, msg.as_str()));
    i.backup = m.as_backup().map(|b| ready::BackupRun {
        schedule: &b.schedule,
        last: k.last_run,
    });
    i.rollout = facts.rollouts.get(name);
    i
}

/// What is known of a Service's readiness URL.
fn readiness<'a>(view: &'a ReadinessView, m: &Manifest) -> ready::Readiness<'a> {
    if m.as_service().is_none_or(|s| s.readiness.is_none()) {
        return ready::Readiness::None;
    }
    if let Some(until) = view.waiting.get(&m.name) {
        return ready::Readiness::Waiting(until.saturating_duration_since(Instant::now()));
    }
    match view.probes.get(&m.name) {
        Some(r) => ready::Readiness::Probed(r.as_ref().map(|_| ()).map_err(String::as_str)),
        None => ready::Readiness::NotProbed,
    }
}

/// Why a manifest backing off after failures has its unit failed, if it
/// has.
async fn failure_when_backing_off(
    sd: &impl UserManager,
    facts: &PassFacts<'_>,
    m: &Manifest,
    live: &ListedUnits,
) -> Option<(Reason, String)> {
    if !facts.prep.backing_off.contains(&m.name) {
        return None;
    }
    let unit = main_unit(m);
    let (_, path) = live
        .get(&unit)
        .filter(|(l, _)| l.active_state == "failed")?;
    let mem = m.as_service().and_then(|s| s.resources.memory_max);
    let found = sd.failure_details(&unit, path, mem).await;
    Some(found.unwrap_or_else(|| (Reason::Failed, format!("{unit} failed"))))
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
        let message = crate::manifest::status_message(&err.to_string());
        decide_invalid(obj, &unit, &message);
    }
}

/// An object whose manifest does not load: Ready from that and the last
/// unit state seen.
fn decide_invalid(obj: &mut ObjectStatus, unit: &str, message: &str) {
    let mut i = ready::Inputs::new(&obj.name, unit, DesiredState::Running);
    i.previous = obj.ready();
    i.invalid = Some(message);
    if let Some(u) = &obj.unit {
        i.live = ready::Live::Now {
            active: &u.active_state,
            sub: &u.sub_state,
        };
    }
    if let Some(d) = ready::decide(&i) {
        d.apply(obj);
    }
}

/// Units of other manifests from a broken file (found by the source
/// recorded in them): `(unit, owner, source file)`.
fn units_of_broken_files(
    prep: &Prepared,
) -> impl Iterator<Item = (&String, &String, &std::path::PathBuf)> {
    prep.observed.files.iter().filter_map(|(unit, f)| {
        let (owner, src) = (f.marker.as_ref()?, f.source.as_ref()?);
        prep.loaded
            .broken_files
            .contains(src)
            .then_some((unit, owner, src))
    })
}

/// Other manifests that came from a broken file: their units are held
/// too, and shown as such.
fn show_units_of_broken_files(
    prep: &Prepared,
    live: &ListedUnits,
    status: &mut Status,
    keep: &mut BTreeSet<String>,
) {
    for (unit, owner, src) in units_of_broken_files(prep) {
        if keep.contains(owner) {
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
        if let Some((l, _)) = live.get(unit) {
            obj.unit = Some(unit_status(unit, l));
        }
        let message = crate::manifest::status_message(&err.to_string());
        decide_invalid(obj, unit, &message);
    }
}
