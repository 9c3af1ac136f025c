//! `unitlet fleet push|get|hosts`: flags, printing and exit status around
//! [`crate::fleet::cmd`].

use std::time::Duration;

use super::error::{CliError, CliResult};
use super::output::write_structured;
use super::{FleetCommand, Output};
use crate::fleet::cmd::{HostSummary, PushError, Pushed};
use crate::fleet::publish::FleetObject;
use crate::fleet::{EtcdArgs, Target};
use crate::status::ConditionType;
use crate::table::print_table;

/// `unitlet fleet push|get|hosts`.
pub(super) async fn fleet_command(etcd: &EtcdArgs, command: FleetCommand) -> CliResult {
    match command {
        FleetCommand::Push { dir, host, all: _ } => {
            let target = match host {
                Some(h) => {
                    crate::fleet::check_host(&h)?;
                    Target::Host(h)
                }
                None => Target::All,
            };
            match crate::fleet::cmd::push(etcd, &dir, &target).await {
                Ok(pushed) => {
                    print_pushed(&pushed, &dir);
                    Ok(())
                }
                Err(e) => {
                    if let PushError::Invalid { errors, .. } = &e {
                        for e in errors {
                            eprintln!("invalid: {e}");
                        }
                    }
                    Err(CliError::Push(e))
                }
            }
        }
        FleetCommand::Get { output } => {
            print_objects(&crate::fleet::cmd::objects(etcd).await?, output);
            Ok(())
        }
        FleetCommand::Hosts { output } => {
            print_hosts(&crate::fleet::cmd::hosts(etcd).await?, output);
            Ok(())
        }
        FleetCommand::Rollout { command, args } => {
            super::fleet_rollout::command(etcd, command, args).await
        }
    }
}

fn print_pushed(p: &Pushed, dir: &std::path::Path) {
    if p.puts.is_empty() && p.deletes.is_empty() {
        println!(
            "nothing to push: the {} manifest file(s) of {} are in etcd under {} already",
            p.files,
            dir.display(),
            p.prefix
        );
    } else {
        println!(
            "pushed to {} at revision {}: {} written{}, {} deleted{}",
            p.prefix,
            p.revision,
            p.puts.len(),
            list(&p.puts),
            p.deletes.len(),
            list(&p.deletes)
        );
    }
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        String::new()
    } else {
        format!(" ({})", names.join(", "))
    }
}

fn age(rfc3339: &str) -> String {
    humantime::parse_rfc3339(rfc3339)
        .ok()
        .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
        .map(|d| short_duration(Duration::from_secs(d.as_secs())))
        .unwrap_or_else(|| "-".into())
}

/// `kubectl`-style ages: `42s`, `5m`, `3h`, `2d`.
fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// `fleet get`'s answer.
fn print_objects(objs: &[FleetObject], output: Output) {
    let mut out = std::io::stdout().lock();
    match output {
        Output::Json | Output::Yaml => write_structured(&mut out, objs, output),
        Output::Table | Output::Wide => {
            let wide = output == Output::Wide;
            let rows: Vec<Vec<String>> = objs.iter().map(|o| object_row(o, wide)).collect();
            let mut header = vec!["HOST", "NAME", "KIND", "READY", "REASON", "STATE", "AGE"];
            if wide {
                header.push("MESSAGE");
            }
            print_table(&mut out, &header, &rows);
        }
    }
}

fn object_row(o: &FleetObject, wide: bool) -> Vec<String> {
    let c = o
        .conditions
        .iter()
        .find(|c| c.type_ == ConditionType::Ready);
    let mut row = vec![o.host.clone()];
    row.extend(super::view::status_columns(
        &o.name,
        &o.kind,
        c,
        o.unit.as_ref(),
    ));
    row.push(
        c.map(|c| age(&c.last_transition_time))
            .unwrap_or_else(|| "-".into()),
    );
    if wide {
        row.push(c.map(|c| c.message.clone()).unwrap_or_default());
    }
    row
}

/// A host's labels as `fleet hosts` shows them: `gpu=h100,zone=a`, `-`
/// for none.
fn labels_cell(labels: &std::collections::BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "-".into();
    }
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.join(",")
}

/// `fleet hosts`' answer.
fn print_hosts(hosts: &[HostSummary], output: Output) {
    let mut out = std::io::stdout().lock();
    match output {
        Output::Json | Output::Yaml => {
            let items: Vec<serde_json::Value> = hosts
                .iter()
                .map(|h| {
                    let mut v = serde_json::to_value(&h.record).unwrap_or_default();
                    v["objects"] = h.objects.into();
                    v["ready"] = h.ready.into();
                    v["revision"] = h.revision.into();
                    v
                })
                .collect();
            write_structured(&mut out, &items, output);
        }
        Output::Table | Output::Wide => {
            let rows: Vec<Vec<String>> = hosts
                .iter()
                .map(|h| {
                    vec![
                        h.record.host.clone(),
                        h.record.hostname.clone(),
                        format!("{}/{}", h.ready, h.objects),
                        age(&h.record.started_at),
                        h.revision.map_or_else(|| "-".into(), |r| r.to_string()),
                        labels_cell(&h.record.labels),
                    ]
                })
                .collect();
            let header = ["HOST", "HOSTNAME", "READY", "UP", "REVISION", "LABELS"];
            print_table(&mut out, &header, &rows);
        }
    }
}
