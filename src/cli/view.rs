//! `unitlet get` and `unitlet describe`: the persisted status, corrected by
//! the manifest files as they are now and by live unit states.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::time::Duration;

use super::{CliError, CliResult, Output};
use crate::locations::Locations;
use crate::manager::{LiveProperties, ManagerError, UserManager};
use crate::manifest::{self, LoadedSet};
use crate::status::{ConditionStatus, ConditionType, ObjectStatus, Status};
use crate::systemd::Systemd;

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
    let live = overlay_live_units(&sd, &mut status).await;
    crate::journal::annotate(&loc.state_dir, &mut status);
    for o in status.objects.values_mut() {
        decide_ready(o, &set, live.as_ref().err());
    }
    Ok(status)
}

/// Adds manifests not applied yet, and drops objects whose manifest is
/// gone.
fn overlay_manifests(status: &mut Status, set: &LoadedSet) {
    for m in &set.manifests {
        status
            .objects
            .entry(m.name.clone())
            .or_insert_with(|| ObjectStatus::new(m.kind(), &m.name, &m.file));
    }
    for (name, err) in &set.held {
        status
            .objects
            .entry(name.clone())
            .or_insert_with(|| ObjectStatus::new(manifest::Kind::Service, name, &err.file));
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
/// asked). Returns why it could not be asked.
async fn overlay_live_units(
    sd: &Result<impl UserManager, ManagerError>,
    status: &mut Status,
) -> Result<(), String> {
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
    }
    live.map(|_| ())
}

/// Ready as `get` shows it, decided by the pass's own function
/// (`reconcile::ready::decide`) from the last pass's Ready and what is
/// seen now: the manifest (not applied yet, invalid), the live unit state
/// (`unreachable`: why it cannot be had) and a pending restore (the
/// `RestorePending` condition `journal::annotate` set).
fn decide_ready(o: &mut ObjectStatus, set: &LoadedSet, unreachable: Option<&String>) {
    use crate::reconcile::ready::{Inputs, Live, decide};
    let unit = o.unit.as_ref().map_or(String::new(), |u| u.name.clone());
    let invalid = set
        .held
        .get(&o.name)
        .map(|e| manifest::status_message(&e.to_string()));
    let mut i = Inputs::new(&o.name, &unit, manifest::DesiredState::Running);
    i.previous = o.ready();
    i.not_applied = set.get(&o.name).is_some();
    i.invalid = invalid.as_deref();
    i.live = match (&o.unit, unreachable) {
        (None, _) => Live::Unseen,
        (Some(_), Some(why)) => Live::Unreachable(why),
        (Some(u), None) => Live::SinceLastPass {
            active: &u.active_state,
            sub: &u.sub_state,
        },
    };
    i.restore = o
        .conditions
        .iter()
        .find(|c| c.type_ == ConditionType::RestorePending && c.status == ConditionStatus::True)
        .map(|c| (c.reason, c.message.as_str()));
    if let Some(d) = decide(&i) {
        d.apply(o);
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
    /// The digest of the manifest file last applied.
    #[serde(skip_serializing_if = "str::is_empty")]
    manifest_digest: &'a str,
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
                manifest_digest: &o.manifest_digest,
                last_reconcile_time: status.reconciled_at.as_deref(),
                operator_running: operator.is_some(),
                status_warning: file_warning.as_deref(),
            })
            .collect()
    };
    let mut out = std::io::stdout().lock();
    match output {
        Output::Json => {
            #[expect(
                clippy::expect_used,
                reason = "the status rows (strings, numbers, JSON values) always serialize"
            )]
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

/// NAME, KIND, READY, REASON, STATE of an object: the columns `get` and
/// `fleet get` share.
pub(super) fn status_columns(
    name: &str,
    kind: &str,
    ready: Option<&crate::status::Condition>,
    unit: Option<&crate::status::UnitStatus>,
) -> Vec<String> {
    vec![
        name.to_owned(),
        kind.to_owned(),
        ready
            .map_or(ConditionStatus::Unknown, |c| c.status)
            .to_string(),
        ready.map(|c| c.reason.to_string()).unwrap_or_default(),
        unit.map(|u| format!("{}/{}", u.active_state, u.sub_state))
            .unwrap_or_default(),
    ]
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
        .map(|o| status_columns(&o.name, &o.kind.to_string(), o.ready(), o.unit.as_ref()))
        .collect();
    if wide {
        header.extend(["MEMORY", "CPU", "TASKS", "FILE", "MESSAGE"]);
        let mut usage = match Systemd::connect(loc.bus.as_deref()).await {
            Ok(sd) => live_usage(&sd, objs).await,
            Err(_) => HashMap::new(),
        };
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
fn quota_or(v: Option<u64>, none: &str) -> String {
    v.map(|v| format!("{}%", v / 10_000))
        .unwrap_or_else(|| none.into())
}

/// Live use against limits, short form for `get -o wide`:
/// `[memory current/max, cpu quota, tasks current/max]` by manifest.
async fn live_usage(sd: &impl UserManager, objs: &[&ObjectStatus]) -> HashMap<String, [String; 3]> {
    let mut out = HashMap::new();
    for o in objs {
        let Some(u) = o.unit.as_ref().filter(|u| u.name.ends_with(".service")) else {
            continue;
        };
        let Ok(path) = sd.load_unit(&u.name).await else {
            continue;
        };
        let Ok(p) = sd.live_properties(&u.name, &path).await else {
            continue;
        };
        let u = p.usage;
        let mem = format!(
            "{}/{}",
            bytes_or(u.memory_current, "-"),
            bytes_or(u.memory_max, "∞")
        );
        let tasks = format!(
            "{}/{}",
            count_or(u.tasks_current, "-"),
            count_or(u.tasks_max, "∞")
        );
        let cpu = quota_or(u.cpu_quota_per_sec_usec, "∞");
        out.insert(o.name.clone(), [mem, cpu, tasks]);
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
        if let Ok(sd) = Systemd::connect(loc.bus.as_deref()).await {
            for line in unit_lines(&sd, &u.name).await {
                println!("{line}");
            }
        }
    }
    if o.kind == manifest::Kind::Backup {
        for line in backup_set_lines(loc, name).await {
            println!("{line}");
        }
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

/// A Backup's sets as `unitlet backups NAME` shows them (with the blocks
/// new in each, bytes written and bytes shared), indented under `Sets:`;
/// why they cannot be listed instead of failing `describe`.
async fn backup_set_lines(loc: &Locations, name: &str) -> Vec<String> {
    let mut out = vec!["Sets:".to_owned()];
    match crate::backup_cmd::backups(loc, Some(name)).await {
        Ok(rows) if rows.is_empty() => out.push("  <none>".to_owned()),
        Ok(rows) => out.extend(
            crate::backup_cmd::sets_table(&rows)
                .lines()
                .map(|l| format!("  {l}")),
        ),
        Err(e) => out.push(format!("  cannot be listed: {}", crate::error_chain(&e))),
    }
    out
}

/// The unit's file, state and (for a service) resources, live from the
/// manager, as `describe` prints them; nothing when it cannot be asked.
async fn unit_lines(sd: &impl UserManager, unit: &str) -> Vec<String> {
    let Ok(path) = sd.load_unit(unit).await else {
        return vec![];
    };
    let unit_props = sd.unit_properties(unit, &path).await.unwrap_or_default();
    let props = sd.live_properties(unit, &path).await.unwrap_or_default();
    let mut out = vec![
        format!("  FragmentPath:  {}", unit_props.fragment_path),
        format!("  UnitFileState: {}", unit_props.unit_file_state),
    ];
    if let Some(pid) = props.main_pid {
        out.push(format!("  MainPID:       {pid}"));
    }
    if !props.result.is_empty() {
        out.push(format!("  Result:        {}", props.result));
    }
    if !unit.ends_with(".timer") {
        out.extend(resource_lines(&props));
    }
    out
}

/// A service's live resource use against its limits.
fn resource_lines(props: &LiveProperties) -> Vec<String> {
    let u = &props.usage;
    let cpu = u
        .cpu_usage_nsec
        .map(|v| format!("{:.2}s", v as f64 / 1e9))
        .unwrap_or_else(|| "-".into());
    vec![
        "Resources (live / limit):".to_owned(),
        format!(
            "  Memory:  {} (peak {}) / max {}, high {}",
            bytes_or(u.memory_current, "-"),
            bytes_or(u.memory_peak, "-"),
            bytes_or(u.memory_max, "unlimited"),
            bytes_or(u.memory_high, "unlimited")
        ),
        format!(
            "  CPU:     {cpu} used / quota {}",
            quota_or(u.cpu_quota_per_sec_usec, "unlimited")
        ),
        format!(
            "  Tasks:   {} / max {}",
            count_or(u.tasks_current, "-"),
            count_or(u.tasks_max, "unlimited")
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::Usage;

    /// `describe` and `get -o wide` read a unit's live properties through
    /// the `UserManager` trait: against the in-memory manager, its use
    /// and the limits of its loaded file.
    #[tokio::test]
    async fn live_properties_are_read_through_the_manager_trait() {
        let d = tempfile::tempdir().unwrap();
        let (loc, sd) = crate::reconcile::pass_tests::fake_world(d.path());
        std::fs::write(
            loc.unit_dir.join("web.service"),
            "[Service]\nExecStart=/bin/sleep infinity\nMemoryMax=100M\nCPUQuota=50%\n",
        )
        .unwrap();
        sd.set_usage(
            "web.service",
            Usage {
                memory_current: Some(50 << 20),
                cpu_usage_nsec: Some(1_500_000_000),
                tasks_current: Some(3),
                ..Default::default()
            },
        );
        let lines = unit_lines(&sd, "web.service").await;
        let want = [
            format!(
                "  FragmentPath:  {}",
                loc.unit_dir.join("web.service").display()
            ),
            "  UnitFileState: disabled".to_owned(),
            "  MainPID:       0".to_owned(),
            "Resources (live / limit):".to_owned(),
            "  Memory:  50M (peak -) / max 100M, high unlimited".to_owned(),
            "  CPU:     1.50s used / quota 50%".to_owned(),
            format!(
                "  Tasks:   3 / max {}",
                crate::manager::fake::DEFAULT_TASKS_MAX
            ),
        ];
        assert_eq!(lines, want);
        let mut o = ObjectStatus::new(manifest::Kind::Service, "web", &loc.manifests);
        o.unit = Some(crate::status::UnitStatus {
            name: "web.service".into(),
            active_state: "inactive".into(),
            sub_state: "dead".into(),
        });
        let usage = live_usage(&sd, &[&o]).await;
        let tasks = format!("3/{}", crate::manager::fake::DEFAULT_TASKS_MAX);
        assert_eq!(usage["web"], ["50M/100M".to_owned(), "50%".into(), tasks]);
        // A manager that cannot be asked: nothing, not an error.
        sd.lose_bus();
        assert!(unit_lines(&sd, "web.service").await.is_empty());
    }

    use crate::status::{Reason, UnitStatus};

    fn running() -> ObjectStatus {
        let mut o = ObjectStatus::new(manifest::Kind::Service, "web", "/m/web.yaml".as_ref());
        o.unit = Some(UnitStatus {
            name: "web.service".into(),
            active_state: "active".into(),
            sub_state: "running".into(),
        });
        o.set_ready(
            ConditionStatus::True,
            Reason::Running,
            "web.service is active",
        );
        o
    }

    /// Issue 22: `get` re-decides Ready with the pass's own function from
    /// what it sees now: a pending restore, the live state, an
    /// unreachable manager.
    #[test]
    fn get_decides_ready_with_the_passs_function() {
        let set = LoadedSet::default();
        let mut o = running();
        decide_ready(&mut o, &set, None);
        assert_eq!(o.ready_reason(), Some(Reason::Running), "consistent: kept");
        decide_ready(&mut o, &set, Some(&"no bus".to_string()));
        assert_eq!(o.ready_reason(), Some(Reason::ManagerUnreachable));

        let mut o = running();
        if let Some(u) = o.unit.as_mut() {
            u.active_state = "failed".into();
        }
        decide_ready(&mut o, &set, None);
        assert_eq!(o.ready_reason(), Some(Reason::Failed));

        let mut o = running();
        o.set_condition(
            ConditionType::RestorePending,
            ConditionStatus::True,
            Reason::RestoreInterrupted,
            "an interrupted restore is pending",
        );
        decide_ready(&mut o, &set, None);
        let c = o.ready().expect("ready");
        assert_eq!(
            (c.status, c.reason, c.message.as_str()),
            (
                ConditionStatus::False,
                Reason::RestoreInterrupted,
                "an interrupted restore is pending"
            )
        );
    }
}
