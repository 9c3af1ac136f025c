//! Status and conditions: each object's status recomputed from the loaded
//! set, failures, readiness and live unit states.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::time::Instant;

use crate::manifest::{self, DesiredState, Kind};
use crate::status::{ObjectStatus, Status, UnitStatus};
use crate::systemd::Systemd;

use super::*;

pub(super) fn empty_object(kind: Kind, name: &str, file: &Path) -> ObjectStatus {
    ObjectStatus {
        kind: kind.to_string(),
        name: name.to_string(),
        file: file.to_path_buf(),
        conditions: vec![],
        unit: None,
        failures: 0,
        spec_hash: String::new(),
    }
}

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
fn missing_program(m: &manifest::Manifest) -> Option<String> {
    let s = m.as_service()?;
    let crate::manifest::Exec::Command(argv) = &s.exec else {
        return None;
    };
    let prog = &argv[0];
    let missing = if prog.contains('/') {
        !Path::new(prog).exists()
    } else {
        // systemd looks programs up in its own fixed PATH.
        ![
            "/usr/local/sbin",
            "/usr/local/bin",
            "/usr/sbin",
            "/usr/bin",
            "/sbin",
            "/bin",
        ]
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

/// Recompute every object's status from the loaded set, this pass's
/// failures and the live unit states.
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

pub async fn refresh_status(
    sd: &Systemd,
    prep: &Prepared,
    failures: &BTreeMap<String, String>,
    issues: &HashMap<String, (String, String)>,
    readiness: &ReadinessView,
    status: &mut Status,
) -> Result<(), ReconcileError> {
    // Main unit per manifest.
    let main_unit = |m: &manifest::Manifest| match m.kind() {
        Kind::Service => format!("{}.service", m.name),
        Kind::Backup => format!("{}.timer", m.name),
    };
    let mut names: Vec<String> = prep.loaded.manifests.iter().map(main_unit).collect();
    for n in prep.loaded.held.keys() {
        names.push(format!("{n}.service"));
    }
    let live = sd.list_units(&names).await?;
    let mut keep: BTreeSet<String> = BTreeSet::new();

    for m in &prep.loaded.manifests {
        keep.insert(m.name.clone());
        let unit = main_unit(m);
        let obj = status
            .objects
            .entry(m.name.clone())
            .or_insert_with(|| empty_object(m.kind(), &m.name, &m.file));
        obj.kind = m.kind().to_string();
        obj.file = m.file.clone();
        let l = live.get(&unit).map(|(l, _)| l.clone()).unwrap_or_default();
        obj.unit = Some(UnitStatus {
            name: unit.clone(),
            active_state: l.active_state.clone(),
            sub_state: l.sub_state.clone(),
        });
        if let Some(c) = prep.plan.conflicts.iter().find(|c| c.manifest == m.name) {
            obj.set_condition("Ready", "False", "Conflict", &c.message);
            continue;
        }
        if prep.on_hold.contains(&m.name) {
            obj.set_condition(
                "Ready",
                "False",
                "OnHold",
                "a restore is in progress; unitlet leaves this service alone until it ends",
            );
            continue;
        }
        if prep.backing_off.contains(&m.name) {
            if l.active_state == "failed" {
                let mem = m.as_service().and_then(|s| s.resources.memory_max);
                let details = match live.get(&unit) {
                    Some((_, path)) => sd.failure_details(&unit, path, mem).await,
                    None => None,
                };
                let (reason, msg) =
                    details.unwrap_or_else(|| ("Failed".into(), format!("{unit} failed")));
                obj.set_condition(
                    "Ready",
                    "False",
                    &reason,
                    &format!("{msg}; unitlet starts it again with exponential backoff"),
                );
            } else if obj
                .ready()
                .is_none_or(|c| c.reason != "BackingOff" && c.status != "False")
            {
                let prev = obj.ready().map(|c| c.message.clone()).unwrap_or_default();
                obj.set_condition(
                    "Ready",
                    "False",
                    "BackingOff",
                    &format!("retrying with exponential backoff after: {prev}"),
                );
            }
            continue;
        }
        if let Some(msg) = missing_program(m) {
            // Whatever state systemd shows (failed, auto-restart), the
            // useful answer is which program to install.
            obj.set_condition("Ready", "False", "BinaryMissing", &msg);
            continue;
        }
        if let Some(e) = failures.get(&m.name) {
            match missing_program(m) {
                Some(msg) => obj.set_condition("Ready", "False", "BinaryMissing", &msg),
                None => obj.set_condition("Ready", "False", "ApplyFailed", e),
            }
            continue;
        }
        let desired_state = m
            .as_service()
            .map(|s| s.state)
            .unwrap_or(DesiredState::Running);
        match (desired_state, l.active_state.as_str()) {
            (DesiredState::Running, "active") => {
                let msg = match m.kind() {
                    Kind::Service => format!("{unit} is active ({})", l.sub_state),
                    Kind::Backup => format!(
                        "{unit} is scheduled ({})",
                        m.as_backup()
                            .map(|b| b.schedule.to_string())
                            .unwrap_or_default()
                    ),
                };
                let has_readiness = m.as_service().is_some_and(|s| s.readiness.is_some());
                let probe = match readiness.probes.get(&m.name) {
                    Some(r) if has_readiness => r.clone().err(),
                    _ => None,
                };
                if has_readiness && let Some(until) = readiness.waiting.get(&m.name) {
                    let left = until.saturating_duration_since(Instant::now());
                    obj.set_condition(
                        "Ready",
                        "False",
                        "Starting",
                        &format!(
                            "{unit} is active, waiting for its readiness URL (up to {}s more)",
                            left.as_secs()
                        ),
                    );
                } else if has_readiness
                    && !readiness.probes.contains_key(&m.name)
                    && !issues.contains_key(&m.name)
                {
                    // Not probed yet (the operator just started): keep what
                    // the last probe said, if a probe said it.
                    if obj
                        .ready()
                        .is_none_or(|c| c.reason != "Running" && c.reason != "NotReady")
                    {
                        obj.set_condition(
                            "Ready",
                            "Unknown",
                            "Probing",
                            &format!("{unit} is active; probing its readiness URL"),
                        );
                    }
                } else if let Some((reason, message)) = issues
                    .get(&m.name)
                    .filter(|(r, _)| r != "NotReady" || probe.is_some())
                {
                    obj.set_condition("Ready", "False", reason, message)
                } else if let Some(e) = probe {
                    obj.set_condition(
                        "Ready",
                        "False",
                        "NotReady",
                        &format!("{unit} is active but not ready: {e}"),
                    )
                } else {
                    obj.set_condition("Ready", "True", "Running", &msg)
                }
            }
            (DesiredState::Stopped, "inactive" | "failed") => obj.set_condition(
                "Ready",
                "True",
                "Stopped",
                &format!("{unit} is stopped, as declared"),
            ),
            (_, "activating" | "reloading") => obj.set_condition(
                "Ready",
                "False",
                "Starting",
                &format!("{unit} is {} ({})", l.active_state, l.sub_state),
            ),
            (_, "failed") => obj.set_condition(
                "Ready",
                "False",
                "Failed",
                &format!(
                    "{unit} failed ({}); see `journalctl --user -u {unit}`",
                    l.sub_state
                ),
            ),
            (_, s) => obj.set_condition(
                "Ready",
                "False",
                "NotRunning",
                &format!(
                    "{unit} is {} ({}) but the manifest wants it {}",
                    if s.is_empty() { "unknown" } else { s },
                    l.sub_state,
                    if desired_state == DesiredState::Running {
                        "running"
                    } else {
                        "stopped"
                    }
                ),
            ),
        }
    }
    // Manifests that failed to load: shown under the name their file implies
    // (or their own name, for a duplicate or invalid document).
    for (name, err) in &prep.loaded.held {
        keep.insert(name.clone());
        let obj = status
            .objects
            .entry(name.clone())
            .or_insert_with(|| empty_object(Kind::Service, name, &err.file));
        obj.file = err.file.clone();
        if let Some((l, _)) = live.get(&format!("{name}.service")) {
            obj.unit = Some(UnitStatus {
                name: format!("{name}.service"),
                active_state: l.active_state.clone(),
                sub_state: l.sub_state.clone(),
            });
        }
        let kept = if obj
            .unit
            .as_ref()
            .is_some_and(|u| u.active_state == "active")
        {
            " (its last good units keep running)"
        } else {
            ""
        };
        obj.set_condition("Ready", "False", "Invalid", &format!("{err}{kept}"));
    }
    // Other manifests that came from a broken file: their units (found by
    // the source recorded in them) are held too, and shown as such.
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
            .or_insert_with(|| empty_object(kind, owner, src));
        obj.set_condition(
            "Ready",
            "False",
            "Invalid",
            &format!("{err} (its last good units keep running)"),
        );
    }
    // Issue 12 hook: `LimitsEnforced` on Services whose limits the user
    // manager's cgroup controllers cannot enforce (see `doctor`).
    crate::doctor::limits_conditions(sd, &prep.loaded.manifests, status).await;
    status.retain_objects(&keep);
    Ok(())
}
