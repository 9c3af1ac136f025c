//! What `unitlet fleet push`, `fleet get` and `fleet hosts` do with etcd:
//! typed results, no printing (the commands are in `cli/fleet.rs`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::etcd::{Compare, CompareOp, GetOptions, Txn, TxnOp, TxnOpResponse};

use super::publish::{FleetObject, HostRecord};
use super::rollout::plan::HostObject;
use super::{EtcdArgs, FleetError, Target, check_key_name};
use crate::manifest;

/// The largest manifest file a push sends (etcd's default request limit is
/// 1.5 MiB).
const MAX_FILE: u64 = 1024 * 1024;

/// How often a push whose guard failed (another push changed the same keys)
/// reads again and retries.
const PUSH_TRIES: usize = 3;

/// etcd's default `--max-txn-ops`.
const MAX_TXN_OPS: usize = 128;

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

/// Why a push wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The directory cannot be read as a manifests directory.
    #[error(transparent)]
    Load(#[from] manifest::LoadError),
    /// Some manifests are invalid; each of `errors` names its file.
    #[error(
        "{} error(s) in {}: nothing was pushed; fix the file(s) named above and push again",
        errors.len(),
        dir.display()
    )]
    Invalid {
        /// The pushed directory.
        dir: PathBuf,
        /// Every problem, with file, line and column.
        errors: Vec<manifest::ManifestError>,
    },
    /// One file cannot be pushed as it is.
    #[error("{}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why, and what to do.
        reason: String,
    },
    /// etcd could not take the push (unreachable, too many keys, other
    /// pushes kept changing the same keys).
    #[error(transparent)]
    Etcd(#[from] FleetError),
}

/// What a push did.
#[derive(Debug)]
pub struct Pushed {
    /// The key prefix pushed to.
    pub prefix: String,
    /// How many manifest files the directory holds.
    pub files: usize,
    /// Keys written (new or changed).
    pub puts: Vec<String>,
    /// Keys deleted (their file is gone).
    pub deletes: Vec<String>,
    /// etcd's revision after the push (or when nothing changed).
    pub revision: i64,
}

/// `fleet push DIR`: validate every file, then one guarded transaction.
///
/// # Errors
/// [`PushError`]: nothing was written.
pub async fn push(etcd: &EtcdArgs, dir: &Path, target: &Target) -> Result<Pushed, PushError> {
    let files = read_push(dir)?;
    let prefix = etcd.keys().target_dir(target);
    let (puts, deletes, revision) = push_txn(etcd, &prefix, &files).await?;
    Ok(Pushed {
        prefix,
        files: files.len(),
        puts,
        deletes,
        revision,
    })
}

/// `fleet rollout DIR`: DIR's manifest files by key name, validated as for
/// a push (every error in [`PushError::Invalid`]; nothing is written).
///
/// # Errors
/// [`PushError`]: DIR unreadable, a manifest invalid, a file unusable.
pub fn rollout_files(dir: &Path) -> Result<BTreeMap<String, String>, PushError> {
    Ok(read_push(dir)?
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
        .collect())
}

/// The directory's manifest files by key name, once every manifest in it
/// is valid and every file can be a key.
fn read_push(dir: &Path) -> Result<BTreeMap<String, Vec<u8>>, PushError> {
    let set = manifest::load_dir(dir)?;
    if !set.errors.is_empty() {
        return Err(PushError::Invalid {
            dir: dir.to_owned(),
            errors: set.errors,
        });
    }
    let refuse = |f: &Path, reason: String| PushError::File {
        path: f.to_owned(),
        reason,
    };
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for f in &set.files {
        let name = manifest::implied_name(f);
        if !check_key_name(&name) {
            return Err(refuse(
                f,
                format!(
                    "the file name {name:?} cannot be an etcd key name (letters, digits, '.', '_', '-', '@'; not starting with '.'); rename it. Nothing was pushed"
                ),
            ));
        }
        let bytes = manifest::read_regular_capped(f, true, MAX_FILE)
            .map_err(|e| refuse(f, format!("{e}; nothing was pushed")))?;
        if std::str::from_utf8(&bytes).is_err() {
            return Err(refuse(f, "not UTF-8 text; nothing was pushed".to_owned()));
        }
        if files.insert(name.clone(), bytes).is_some() {
            return Err(refuse(
                f,
                format!(
                    "two files in {} are named {name} (.yaml and .yml); keep one. Nothing was pushed",
                    dir.display()
                ),
            ));
        }
    }
    Ok(files)
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

/// `fleet get`: every live host's objects, by host and name.
///
/// # Errors
/// etcd cannot be read.
pub async fn objects(etcd: &EtcdArgs) -> Result<Vec<FleetObject>, FleetError> {
    let keys = etcd.keys();
    let (status, _) = read_two(etcd, &keys.status_dir(), &keys.hosts_dir()).await?;
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
    Ok(objs)
}

/// One host whose operator holds a live lease, with how many of its
/// objects there are and how many are Ready.
#[derive(Debug)]
pub struct HostSummary {
    /// What the host's operator published about itself.
    pub record: HostRecord,
    /// Its objects.
    pub objects: usize,
    /// Those with `Ready` `True`.
    pub ready: usize,
    /// The newest fleet rollout whose files it runs at their digests.
    pub revision: Option<u64>,
}

/// `fleet hosts`: hosts whose operator holds a live lease.
///
/// # Errors
/// etcd cannot be read.
pub async fn hosts(etcd: &EtcdArgs) -> Result<Vec<HostSummary>, FleetError> {
    let keys = etcd.keys();
    let (hosts, status) = read_two(etcd, &keys.hosts_dir(), &keys.status_dir()).await?;
    let records = super::rollout::drive::history(etcd).await?;
    let mut judged: BTreeMap<String, Vec<HostObject>> = BTreeMap::new();
    let mut counts: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for (_, v) in &status {
        if let Ok(o) = serde_json::from_slice::<FleetObject>(v) {
            if let Ok(h) = serde_json::from_slice::<HostObject>(v) {
                judged.entry(o.host.clone()).or_default().push(h);
            }
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
    Ok(hosts
        .iter()
        .filter_map(|(_, v)| serde_json::from_slice::<HostRecord>(v).ok())
        .map(|record| {
            let (objects, ready) = counts.get(&record.host).copied().unwrap_or_default();
            let objs = judged
                .get(&record.host)
                .map(Vec::as_slice)
                .unwrap_or_default();
            HostSummary {
                revision: super::rollout::plan::host_revision(&records, objs),
                record,
                objects,
                ready,
            }
        })
        .collect())
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
