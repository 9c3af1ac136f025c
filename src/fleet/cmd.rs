//! `unitlet fleet push`, `fleet get`, `fleet hosts`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use super::etcd::{Compare, CompareOp, GetOptions, Txn, TxnOp, TxnOpResponse};

use super::publish::{FleetObject, HostRecord};
use super::{EtcdArgs, FleetError, Target, check_key_name};
use crate::cli::{NOT_OK, OK, OPERATIONAL, Output};
use crate::manifest;
use crate::table::print_table;

/// The largest manifest file a push sends (etcd's default request limit is
/// 1.5 MiB).
const MAX_FILE: u64 = 1024 * 1024;

/// How often a push whose guard failed (another push changed the same keys)
/// reads again and retries.
const PUSH_TRIES: usize = 3;

/// etcd's default `--max-txn-ops`.
const MAX_TXN_OPS: usize = 128;

fn fail(msg: impl std::fmt::Display) {
    eprintln!("error: {msg}");
}

/// What a push will do, computed from the directory and the keys in etcd.
/// Pure.
pub fn push_plan(
    files: &BTreeMap<String, Vec<u8>>,
    existing: &BTreeMap<String, (Vec<u8>, i64)>,
) -> (Vec<String>, Vec<String>) {
    let puts = files
        .iter()
        .filter(|(k, v)| existing.get(*k).is_none_or(|(e, _)| e != *v))
        .map(|(k, _)| k.clone())
        .collect();
    let deletes = existing
        .keys()
        .filter(|k| !files.contains_key(*k))
        .cloned()
        .collect();
    (puts, deletes)
}

/// `fleet push DIR`: validate every file, then one guarded transaction.
pub async fn push(etcd: &EtcdArgs, dir: &Path, target: Target) -> i32 {
    if let Target::Host(h) = &target
        && let Err(e) = super::check_host(h)
    {
        fail(e);
        return OPERATIONAL;
    }
    let set = match manifest::load_dir(dir) {
        Ok(s) => s,
        Err(e) => {
            fail(crate::error_chain(&e));
            return NOT_OK;
        }
    };
    if !set.errors.is_empty() {
        for e in &set.errors {
            eprintln!("invalid: {e}");
        }
        fail(format!(
            "{} error(s) in {}: nothing was pushed; fix the file(s) named above and push again",
            set.errors.len(),
            dir.display()
        ));
        return NOT_OK;
    }
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for f in &set.files {
        let name = manifest::implied_name(f);
        if !check_key_name(&name) {
            fail(format!(
                "{}: the file name {name:?} cannot be an etcd key name (letters, digits, '.', '_', '-', '@'; not starting with '.'); rename it. Nothing was pushed",
                f.display()
            ));
            return NOT_OK;
        }
        let bytes = match manifest::read_regular_capped(f, true, MAX_FILE) {
            Ok(b) => b,
            Err(e) => {
                fail(format!("{}: {e}; nothing was pushed", f.display()));
                return NOT_OK;
            }
        };
        if std::str::from_utf8(&bytes).is_err() {
            fail(format!(
                "{}: not UTF-8 text; nothing was pushed",
                f.display()
            ));
            return NOT_OK;
        }
        if files.insert(name.clone(), bytes).is_some() {
            fail(format!(
                "{}: two files in {} are named {name} (.yaml and .yml); keep one. Nothing was pushed",
                f.display(),
                dir.display()
            ));
            return NOT_OK;
        }
    }
    let prefix = etcd.keys().target_dir(&target);
    match push_txn(etcd, &prefix, &files).await {
        Ok((puts, deletes, revision)) => {
            if puts.is_empty() && deletes.is_empty() {
                println!(
                    "nothing to push: the {} manifest file(s) of {} are in etcd under {prefix} already",
                    files.len(),
                    dir.display()
                );
            } else {
                println!(
                    "pushed to {prefix} at revision {revision}: {} written{}, {} deleted{}",
                    puts.len(),
                    list(&puts),
                    deletes.len(),
                    list(&deletes)
                );
            }
            OK
        }
        Err(e) => {
            fail(crate::error_chain(&e));
            OPERATIONAL
        }
    }
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        String::new()
    } else {
        format!(" ({})", names.join(", "))
    }
}

async fn push_txn(
    etcd: &EtcdArgs,
    prefix: &str,
    files: &BTreeMap<String, Vec<u8>>,
) -> Result<(Vec<String>, Vec<String>, i64), FleetError> {
    let mut client = etcd.connect().await?;
    for _ in 0..PUSH_TRIES {
        let resp = client
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await
            .map_err(|e| etcd.etcd_error(format!("read {prefix}"), e))?;
        let existing: BTreeMap<String, (Vec<u8>, i64)> = resp
            .kvs()
            .iter()
            .filter_map(|kv| {
                let k = String::from_utf8_lossy(kv.key()).into_owned();
                k.strip_prefix(prefix)
                    .map(|n| (n.to_string(), (kv.value().to_vec(), kv.mod_revision())))
            })
            .collect();
        let (puts, deletes) = push_plan(files, &existing);
        if puts.is_empty() && deletes.is_empty() {
            let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
            return Ok((puts, deletes, rev));
        }
        if puts.len() + deletes.len() > MAX_TXN_OPS {
            return Err(FleetError::Usage(format!(
                "this push changes {} keys under {prefix}; etcd allows {MAX_TXN_OPS} per transaction by default (raise etcd's --max-txn-ops, or push in parts); nothing was written",
                puts.len() + deletes.len()
            )));
        }
        let mut guard = Vec::new();
        let mut ops = Vec::new();
        for n in &puts {
            let key = format!("{prefix}{n}");
            guard.push(match existing.get(n) {
                Some((_, rev)) => Compare::mod_revision(key.clone(), CompareOp::Equal, *rev),
                None => Compare::version(key.clone(), CompareOp::Equal, 0),
            });
            ops.push(TxnOp::put(key, files[n].clone(), None));
        }
        for n in &deletes {
            let key = format!("{prefix}{n}");
            guard.push(Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                existing[n].1,
            ));
            ops.push(TxnOp::delete(key, None));
        }
        let r = client
            .txn(Txn::new().when(guard).and_then(ops))
            .await
            .map_err(|e| etcd.etcd_error(format!("write {prefix}"), e))?;
        if r.succeeded() {
            let rev = r.header().map(|h| h.revision()).unwrap_or(0);
            return Ok((puts, deletes, rev));
        }
        tracing::info!("another push changed {prefix} meanwhile; reading again");
    }
    Err(FleetError::Contended {
        endpoints: etcd.endpoints_for_people(),
        prefix: prefix.to_string(),
        tries: PUSH_TRIES,
    })
}

/// Read every key under two prefixes at one revision.
async fn read_two(
    etcd: &EtcdArgs,
    a: &str,
    b: &str,
) -> Result<(Vec<(String, Vec<u8>)>, Vec<(String, Vec<u8>)>), FleetError> {
    let mut client = etcd.connect().await?;
    let txn = Txn::new().and_then(vec![
        TxnOp::get(a, Some(GetOptions::new().with_prefix())),
        TxnOp::get(b, Some(GetOptions::new().with_prefix())),
    ]);
    let resp = client
        .txn(txn)
        .await
        .map_err(|e| etcd.etcd_error("read the fleet's status", e))?;
    let mut out = Vec::new();
    for op in resp.op_responses() {
        let mut v = Vec::new();
        if let TxnOpResponse::Get(g) = op {
            for kv in g.kvs() {
                v.push((
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    kv.value().to_vec(),
                ));
            }
        }
        out.push(v);
    }
    let second = out.pop().unwrap_or_default();
    let first = out.pop().unwrap_or_default();
    Ok((first, second))
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

/// `fleet get`: every live host's objects.
pub async fn get(etcd: &EtcdArgs, output: Output) -> i32 {
    let keys = etcd.keys();
    let (status, _) = match read_two(etcd, &keys.status_dir(), &keys.hosts_dir()).await {
        Ok(r) => r,
        Err(e) => {
            fail(crate::error_chain(&e));
            return OPERATIONAL;
        }
    };
    let mut objs: Vec<FleetObject> = Vec::new();
    for (k, v) in &status {
        match serde_json::from_slice::<FleetObject>(v) {
            Ok(o) => objs.push(o),
            Err(e) => {
                tracing::warn!(key = %k, "ignoring a status value that is not an object's status: {e}")
            }
        }
    }
    objs.sort_by(|a, b| (&a.host, &a.name).cmp(&(&b.host, &b.name)));
    let mut out = std::io::stdout().lock();
    match output {
        Output::Json => {
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&objs).expect("serializable")
            );
        }
        Output::Yaml => {
            let _ = write!(
                out,
                "{}",
                serde_saphyr::to_string(&objs).unwrap_or_default()
            );
        }
        Output::Table | Output::Wide => {
            let wide = output == Output::Wide;
            let rows: Vec<Vec<String>> = objs
                .iter()
                .map(|o| {
                    let c = o
                        .conditions
                        .iter()
                        .find(|c| c.type_ == crate::status::ConditionType::Ready);
                    let mut row = vec![
                        o.host.clone(),
                        o.name.clone(),
                        o.kind.to_string(),
                        c.map_or(crate::status::ConditionStatus::Unknown, |c| c.status)
                            .to_string(),
                        c.map(|c| c.reason.to_string()).unwrap_or_default(),
                        o.unit
                            .as_ref()
                            .map(|u| format!("{}/{}", u.active_state, u.sub_state))
                            .unwrap_or_default(),
                        c.map(|c| age(&c.last_transition_time))
                            .unwrap_or_else(|| "-".into()),
                    ];
                    if wide {
                        row.push(c.map(|c| c.message.clone()).unwrap_or_default());
                    }
                    row
                })
                .collect();
            let mut header = vec!["HOST", "NAME", "KIND", "READY", "REASON", "STATE", "AGE"];
            if wide {
                header.push("MESSAGE");
            }
            print_table(&mut out, &header, &rows);
        }
    }
    OK
}

/// `fleet hosts`: hosts whose operator holds a live lease.
pub async fn hosts(etcd: &EtcdArgs, output: Output) -> i32 {
    let keys = etcd.keys();
    let (hosts, status) = match read_two(etcd, &keys.hosts_dir(), &keys.status_dir()).await {
        Ok(r) => r,
        Err(e) => {
            fail(crate::error_chain(&e));
            return OPERATIONAL;
        }
    };
    let mut counts: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for (_, v) in &status {
        if let Ok(o) = serde_json::from_slice::<FleetObject>(v) {
            let e = counts.entry(o.host.clone()).or_default();
            e.0 += 1;
            let ready = o.conditions.iter().any(|c| {
                c.type_ == crate::status::ConditionType::Ready
                    && c.status == crate::status::ConditionStatus::True
            });
            if ready {
                e.1 += 1;
            }
        }
    }
    let records: Vec<HostRecord> = hosts
        .iter()
        .filter_map(|(_, v)| serde_json::from_slice(v).ok())
        .collect();
    let mut out = std::io::stdout().lock();
    match output {
        Output::Json | Output::Yaml => {
            let items: Vec<serde_json::Value> = records
                .iter()
                .map(|r| {
                    let (n, ready) = counts.get(&r.host).copied().unwrap_or_default();
                    let mut v = serde_json::to_value(r).expect("serializable");
                    v["objects"] = n.into();
                    v["ready"] = ready.into();
                    v
                })
                .collect();
            if output == Output::Json {
                let _ = writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&items).expect("serializable")
                );
            } else {
                let _ = write!(
                    out,
                    "{}",
                    serde_saphyr::to_string(&items).unwrap_or_default()
                );
            }
        }
        Output::Table | Output::Wide => {
            let rows: Vec<Vec<String>> = records
                .iter()
                .map(|r| {
                    let (n, ready) = counts.get(&r.host).copied().unwrap_or_default();
                    vec![
                        r.host.clone(),
                        r.hostname.clone(),
                        format!("{ready}/{n}"),
                        age(&r.started_at),
                    ]
                })
                .collect();
            print_table(&mut out, &["HOST", "HOSTNAME", "READY", "UP"], &rows);
        }
    }
    OK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_push_writes_only_what_changed_and_deletes_what_is_gone() {
        let files = BTreeMap::from([
            ("same".to_string(), b"a".to_vec()),
            ("changed".to_string(), b"new".to_vec()),
            ("added".to_string(), b"x".to_vec()),
        ]);
        let existing = BTreeMap::from([
            ("same".to_string(), (b"a".to_vec(), 3)),
            ("changed".to_string(), (b"old".to_vec(), 4)),
            ("removed".to_string(), (b"r".to_vec(), 5)),
        ]);
        let (puts, deletes) = push_plan(&files, &existing);
        assert_eq!(puts, ["added", "changed"]);
        assert_eq!(deletes, ["removed"]);
    }
}
