//! `unitlet get` and `unitlet describe`: the persisted status, corrected by
//! the manifest files as they are now and by live unit states.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::time::Duration;

use super::{CliError, CliResult, Output};
use crate::locations::Locations;
use crate::manifest::{self, LoadedSet};
use crate::status::{ConditionStatus, ObjectStatus, Reason, Status};
use crate::systemd::{Systemd, UserManager as _};

/// Properties of a unit as systemd reports them over D-Bus.
type Props = HashMap<String, zbus::OwnedVariant>;

/// Status as `get` shows it: the persisted status, corrected by the current
/// manifest files (a file broken since the last pass shows as such) and by
/// live unit states when systemd is reachable.
///
/// # Errors
/// Like `plan`: the manifests directory cannot be read, or there is
/// nothing to show and no user manager answers (a shell without the
/// session's environment), rather than an empty table.
async fn current_status(loc: &Locations) -> Result<Status, CliError> {
    let mut status = Status::load(&loc.status_file());
    let set = manifest::load_dir(&loc.manifests)
        .map_err(|e| CliError::Reconcile(crate::reconcile::ReconcileError::Load(e)))?;
    overlay_manifests(&mut status, &set);
    let sd = match Systemd::connect(loc.bus.as_deref()).await {
        Err(e) if status.objects.is_empty() => return Err(e.into()),
        sd => sd,
    };
    if let Err(e) = &sd {
        eprintln!(
            "warning: unit states are unknown: {}",
            crate::error_chain(e)
        );
    }
    overlay_live_units(&sd, &mut status).await;
    crate::journal::annotate(&loc.state_dir, &mut status);
    Ok(status)
}

/// Adds manifests not applied yet, marks invalid ones, and drops objects
/// whose manifest is gone.
fn overlay_manifests(status: &mut Status, set: &LoadedSet) {
    for m in &set.manifests {
        status.objects.entry(m.name.clone()).or_insert_with(|| {
            let mut o = ObjectStatus::new(m.kind(), &m.name, &m.file);
            o.set_ready(
                ConditionStatus::Unknown,
                Reason::NotApplied,
                "not applied yet; run `unitlet apply` or start `unitlet run`",
            );
            o
        });
    }
    for (name, err) in &set.held {
        let o = status
            .objects
            .entry(name.clone())
            .or_insert_with(|| ObjectStatus::new(manifest::Kind::Service, name, &err.file));
        let message = manifest::status_message(&err.to_string());
        if o.ready()
            .is_none_or(|c| c.reason != Reason::Invalid || !c.message.starts_with(&message))
        {
            o.set_ready(ConditionStatus::False, Reason::Invalid, &message);
        }
    }
    let present: BTreeSet<&String> = set
        .manifests
        .iter()
        .map(|m| &m.name)
        .chain(set.held.keys())
        .collect();
    status
        .objects
        .retain(|n, o| present.contains(n) || set.broken_files.contains(&o.file));
}

/// Unit states as systemd reports them now ("unknown" when it cannot be
/// asked), and Ready corrected to match.
async fn overlay_live_units(
    sd: &Result<Systemd, crate::systemd::SystemdError>,
    status: &mut Status,
) {
    let names: Vec<String> = status
        .objects
        .values()
        .filter_map(|o| o.unit.as_ref().map(|u| u.name.clone()))
        .collect();
    let live = match sd {
        Ok(sd) => sd.list_units(&names).await.map_err(|e| e.to_string()),
        Err(e) => Err(crate::error_chain(e)),
    };
    for o in status.objects.values_mut() {
        let Some(u) = o.unit.as_mut() else { continue };
        match &live {
            Ok(live) => {
                if let Some((l, _)) = live.get(&u.name) {
                    u.active_state = l.active_state.clone();
                    u.sub_state = l.sub_state.clone();
                }
            }
            Err(_) => {
                u.active_state = "unknown".into();
                u.sub_state = "unknown".into();
            }
        }
        o.correct_ready(live.as_ref().err());
    }
}

/// How fresh a status is, for people.
fn freshness(status: &Status, operator: Option<u32>) -> String {
    let when = status
        .reconciled_at
        .as_deref()
        .and_then(|t| humantime::parse_rfc3339(t).ok())
        .map(|t| {
            let ago = std::time::SystemTime::now()
                .duration_since(t)
                .unwrap_or_default();
            format!(
                "last reconciled {} ago by {}",
                humantime::format_duration(Duration::from_secs(ago.as_secs())),
                status.reconciled_by.as_deref().unwrap_or("unitlet")
            )
        })
        .unwrap_or_else(|| "never reconciled".into());
    match operator {
        Some(pid) => format!("{when}; operator running (PID {pid})"),
        None => format!(
            "{when}; no operator running, so conditions are as of then (unit states are live); start `unitlet run` or run `unitlet apply`"
        ),
    }
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct GetItem<'a> {
    kind: &'a manifest::Kind,
    name: &'a str,
    file: &'a std::path::Path,
    conditions: &'a [crate::status::Condition],
    #[serde(skip_serializing_if = "Option::is_none")]
    unit: Option<&'a crate::status::UnitStatus>,
    /// When the status was last reconciled (RFC 3339), null if never.
    last_reconcile_time: Option<&'a str>,
    /// Whether a `unitlet run` is keeping this status current.
    operator_running: bool,
    /// The status file could not be used (or was moved aside): why.
    #[serde(skip_serializing_if = "Option::is_none")]
    status_warning: Option<&'a str>,
}

/// The object NAME, or the error for an unknown NAME.
fn find<'a>(loc: &Locations, status: &'a Status, name: &str) -> Result<&'a ObjectStatus, CliError> {
    status
        .objects
        .get(name)
        .ok_or_else(|| CliError::UnknownName {
            name: name.to_owned(),
            dir: loc.manifests.clone(),
        })
}

/// `unitlet get [NAME] [-o table|wide|json|yaml]`.
pub(super) async fn get(loc: &Locations, name: Option<&str>, output: Output) -> CliResult {
    let status = current_status(loc).await?;
    if let Some(e) = &status.operator_error {
        eprintln!("warning: the operator's last pass failed: {e}");
    }
    let file_warning = status.file_warning();
    if let Some(w) = &file_warning {
        eprintln!("warning: {w}");
    }
    if let Some(w) = crate::fleet::source_warning(&loc.state_dir) {
        eprintln!("warning: {w}");
    }
    let operator = crate::lock::operator_pid(&loc.state_dir);
    let objs: Vec<&ObjectStatus> = match name {
        Some(n) => vec![find(loc, &status, n)?],
        None => status.objects.values().collect(),
    };
    let items = || -> Vec<GetItem> {
        objs.iter()
            .map(|o| GetItem {
                kind: &o.kind,
                name: &o.name,
                file: &o.file,
                conditions: &o.conditions,
                unit: o.unit.as_ref(),
                last_reconcile_time: status.reconciled_at.as_deref(),
                operator_running: operator.is_some(),
                status_warning: file_warning.as_deref(),
            })
            .collect()
    };
    let mut out = std::io::stdout().lock();
    match output {
        Output::Json => {
            let json = serde_json::to_string_pretty(&items()).expect("serializable");
            let _ = writeln!(out, "{json}");
        }
        Output::Yaml => {
            let _ = write!(
                out,
                "{}",
                serde_saphyr::to_string(&items()).unwrap_or_default()
            );
        }
        Output::Table | Output::Wide => {
            let (header, rows) = get_table(loc, &objs, output == Output::Wide).await;
            crate::table::print_table(&mut out, &header, &rows);
            let _ = writeln!(out, "\n{}", freshness(&status, operator));
        }
    }
    Ok(())
}

/// The header and rows of `get`'s table; `wide` adds live use against
/// limits, the manifest file and the Ready message.
async fn get_table(
    loc: &Locations,
    objs: &[&ObjectStatus],
    wide: bool,
) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let mut header = vec!["NAME", "KIND", "READY", "REASON", "STATE"];
    let mut rows: Vec<Vec<String>> = objs
        .iter()
        .map(|o| {
            let c = o.ready();
            vec![
                o.name.clone(),
                o.kind.to_string(),
                c.map_or(ConditionStatus::Unknown, |c| c.status).to_string(),
                c.map(|c| c.reason.to_string()).unwrap_or_default(),
                o.unit
                    .as_ref()
                    .map(|u| format!("{}/{}", u.active_state, u.sub_state))
                    .unwrap_or_default(),
            ]
        })
        .collect();
    if wide {
        header.extend(["MEMORY", "CPU", "TASKS", "FILE", "MESSAGE"]);
        let mut usage = live_usage(loc, objs).await;
        for (row, o) in rows.iter_mut().zip(objs) {
            let [mem, cpu, tasks] = usage
                .remove(&o.name)
                .unwrap_or_else(|| ["-".into(), "-".into(), "-".into()]);
            let message = o.ready().map(|c| c.message.clone()).unwrap_or_default();
            row.extend([mem, cpu, tasks, o.file.display().to_string(), message]);
        }
    }
    (header, rows)
}

/// A numeric property; `None` when absent or systemd's "unset" (`u64::MAX`).
fn num(props: &Props, key: &str) -> Option<u64> {
    props
        .get(key)
        .and_then(|v| u64::try_from(v).ok())
        .filter(|v| *v != u64::MAX)
}

/// A byte count for people (`512M`), or `none`.
fn bytes_or(v: Option<u64>, none: &str) -> String {
    v.map(crate::size::human_bytes)
        .unwrap_or_else(|| none.into())
}

/// A count, or `none`.
fn count_or(v: Option<u64>, none: &str) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| none.into())
}

/// The CPU quota as a percentage of one CPU, or `none`.
fn quota_or(props: &Props, none: &str) -> String {
    num(props, "CPUQuotaPerSecUSec")
        .map(|v| format!("{}%", v / 10_000))
        .unwrap_or_else(|| none.into())
}

/// Live use against limits, short form for `get -o wide`:
/// `[memory current/max, cpu quota, tasks current/max]` by manifest.
async fn live_usage(loc: &Locations, objs: &[&ObjectStatus]) -> HashMap<String, [String; 3]> {
    let mut out = HashMap::new();
    let Ok(sd) = Systemd::connect(loc.bus.as_deref()).await else {
        return out;
    };
    for o in objs {
        let Some(u) = o.unit.as_ref().filter(|u| u.name.ends_with(".service")) else {
            continue;
        };
        let Ok(path) = sd.load_unit(&u.name).await else {
            continue;
        };
        let Ok(p) = sd
            .get_all(&u.name, &path, "org.freedesktop.systemd1.Service")
            .await
        else {
            continue;
        };
        let mem = format!(
            "{}/{}",
            bytes_or(num(&p, "MemoryCurrent"), "-"),
            bytes_or(num(&p, "MemoryMax"), "∞")
        );
        let tasks = format!(
            "{}/{}",
            count_or(num(&p, "TasksCurrent"), "-"),
            count_or(num(&p, "TasksMax"), "∞")
        );
        out.insert(o.name.clone(), [mem, quota_or(&p, "∞"), tasks]);
    }
    out
}

/// `unitlet describe NAME`.
pub(super) async fn describe(loc: &Locations, name: &str) -> CliResult {
    let status = current_status(loc).await?;
    if let Some(w) = status.file_warning() {
        eprintln!("warning: {w}");
    }
    let o = find(loc, &status, name)?;
    println!("Name:   {}", o.name);
    println!("Kind:   {}", o.kind);
    println!("File:   {}", o.file.display());
    println!(
        "Status: {}",
        freshness(&status, crate::lock::operator_pid(&loc.state_dir))
    );
    println!("Conditions:");
    for c in &o.conditions {
        println!(
            "  {}={}  reason={}  since {}",
            c.type_, c.status, c.reason, c.last_transition_time
        );
        println!("    {}", c.message);
    }
    if let Some(u) = &o.unit {
        println!("Unit:   {} ({}/{})", u.name, u.active_state, u.sub_state);
        describe_unit(loc, &u.name).await;
    }
    println!("Events:");
    let evs: Vec<_> = status.events_for(name).collect();
    if evs.is_empty() {
        println!("  <none>");
    }
    for e in evs.iter().rev().take(20).rev() {
        println!(
            "  {}  {:<7}  {:<14}  {}",
            e.time, e.type_, e.reason, e.message
        );
    }
    Ok(())
}

/// The unit's file, state and (for a service) resources, live from systemd;
/// nothing when systemd cannot be asked.
async fn describe_unit(loc: &Locations, unit: &str) {
    let Ok(sd) = Systemd::connect(loc.bus.as_deref()).await else {
        return;
    };
    let Ok(path) = sd.load_unit(unit).await else {
        return;
    };
    let unit_props = sd
        .get_all(unit, &path, "org.freedesktop.systemd1.Unit")
        .await
        .unwrap_or_default();
    let service = !unit.ends_with(".timer");
    let iface = if service {
        "org.freedesktop.systemd1.Service"
    } else {
        "org.freedesktop.systemd1.Timer"
    };
    let props = sd.get_all(unit, &path, iface).await.unwrap_or_default();
    let text = |m: &Props, k: &str| {
        m.get(k)
            .and_then(|v| String::try_from(v.clone()).ok())
            .unwrap_or_default()
    };
    println!("  FragmentPath:  {}", text(&unit_props, "FragmentPath"));
    println!("  UnitFileState: {}", text(&unit_props, "UnitFileState"));
    if let Some(pid) = props.get("MainPID").and_then(|v| u32::try_from(v).ok()) {
        println!("  MainPID:       {pid}");
    }
    let r = text(&props, "Result");
    if !r.is_empty() {
        println!("  Result:        {r}");
    }
    if service {
        print_resources(&props);
    }
}

/// A service's live resource use against its limits.
fn print_resources(props: &Props) {
    let n = |k: &str| num(props, k);
    println!("Resources (live / limit):");
    println!(
        "  Memory:  {} (peak {}) / max {}, high {}",
        bytes_or(n("MemoryCurrent"), "-"),
        bytes_or(n("MemoryPeak"), "-"),
        bytes_or(n("MemoryMax"), "unlimited"),
        bytes_or(n("MemoryHigh"), "unlimited")
    );
    let cpu = n("CPUUsageNSec")
        .map(|v| format!("{:.2}s", v as f64 / 1e9))
        .unwrap_or_else(|| "-".into());
    println!(
        "  CPU:     {cpu} used / quota {}",
        quota_or(props, "unlimited")
    );
    println!(
        "  Tasks:   {} / max {}",
        count_or(n("TasksCurrent"), "-"),
        count_or(n("TasksMax"), "unlimited")
    );
}
