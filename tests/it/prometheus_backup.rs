//! Issue 5 acceptance: scheduled Prometheus TSDB snapshots, retention, and a
//! restore that loses nothing — against a real Prometheus run by unitlet in
//! a private user manager.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::reload::free_port;
use crate::support::{Tmpfs, UserManager, stderr, stdout, wait_for, wait_seen};

const PROMETHEUS: &str = "/usr/bin/prometheus";
const T: Duration = Duration::from_secs(60);

/// A Prometheus managed by unitlet, with a Backup manifest `tsdb` of it.
pub(crate) struct Prom {
    /// Dropped first: a tmpfs mounted for a test must go before the
    /// manager's temporary directory is removed.
    mount: Option<Tmpfs>,
    pub(crate) um: UserManager,
    port: u16,
    pub(crate) data: PathBuf,
    /// Extra environment of every `unitlet` run (`PATH` for an `ssh`
    /// wrapper).
    pub(crate) env: Vec<(&'static str, PathBuf)>,
}

pub(crate) fn now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Percent-encodes a query parameter value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

impl Prom {
    pub(crate) fn start(keep: u32, backup_extra: &str) -> Prom {
        assert!(
            Path::new(PROMETHEUS).exists(),
            "these tests need a real Prometheus at {PROMETHEUS} (apt-get install prometheus); they never skip"
        );
        let um = UserManager::start();
        let port = free_port();
        let dir = um.runtime.join("prom");
        let data = dir.join("data");
        std::fs::create_dir_all(&data).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: prometheus\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
            ),
        )
        .unwrap();
        um.write_manifest(
            "prometheus.yaml",
            &format!(
                "apiVersion: unitlet/v1\nkind: Service\nmetadata:\n  name: prometheus\nspec:\n  command: [{PROMETHEUS}, --config.file={}, --storage.tsdb.path={}, --web.listen-address=127.0.0.1:{port}, --web.enable-admin-api, --web.enable-lifecycle]\n  readiness:\n    http:\n      url: http://127.0.0.1:{port}/-/ready\n",
                config.display(),
                data.display()
            ),
        );
        um.write_manifest(
            "tsdb.yaml",
            &format!(
                "apiVersion: unitlet/v1\nkind: Backup\nmetadata:\n  name: tsdb\nspec:\n  schedule: every 6h\n  keep: {keep}\n  prometheus:\n    url: http://127.0.0.1:{port}\n    dataDir: {}\n    service: prometheus\n{backup_extra}",
                data.display()
            ),
        );
        let o = um.unitlet(&["apply"]);
        assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
        let p = Prom {
            mount: None,
            um,
            port,
            data,
            env: Vec::new(),
        };
        p.wait_ready();
        p
    }

    /// `GET path` on Prometheus: `(status, body)`, or `None` if nothing
    /// answers.
    fn get(&self, path: &str) -> Option<(u16, String)> {
        let addr = format!("127.0.0.1:{}", self.port);
        let mut s =
            TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
        let mut resp = String::new();
        s.read_to_string(&mut resp).ok()?;
        let status = resp.split_whitespace().nth(1)?.parse().ok()?;
        let body = resp.split_once("\r\n\r\n")?.1.to_string();
        Some((status, body))
    }

    /// Stop Prometheus, empty its data directory, start it again: the
    /// samples from before `before` are gone (checked).
    pub(crate) fn wipe(&self, before: f64) {
        assert!(
            self.um
                .systemctl(&["stop", "prometheus.service"])
                .status
                .success()
        );
        std::fs::remove_dir_all(&self.data).unwrap();
        std::fs::create_dir(&self.data).unwrap();
        assert!(
            self.um
                .systemctl(&["start", "prometheus.service"])
                .status
                .success()
        );
        self.wait_ready();
        assert!(
            self.query("up", before).is_empty(),
            "the wipe lost the samples"
        );
    }

    pub(crate) fn wait_ready(&self) {
        wait_for(T, "Prometheus ready", || {
            self.get("/-/ready").filter(|(s, _)| *s == 200).map(|_| ())
        });
    }

    /// The vector result of `expr` at `time`.
    pub(crate) fn query(&self, expr: &str, time: f64) -> Vec<serde_json::Value> {
        let (status, body) = self
            .get(&format!("/api/v1/query?query={}&time={time:.3}", enc(expr)))
            .expect("Prometheus answers queries");
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until Prometheus has scraped itself a few times.
    pub(crate) fn wait_samples(&self) {
        wait_for(T, "a few self-scrapes", || {
            let r = self.query("count_over_time(up[10s])", now());
            r.first()
                .and_then(|s| s["value"][1].as_str()?.parse::<f64>().ok())
                .filter(|n| *n >= 3.0)
                .map(|_| ())
        });
    }

    pub(crate) fn unitlet(&self, args: &[&str]) -> std::process::Output {
        let env: Vec<(&str, &Path)> = self.env.iter().map(|(k, v)| (*k, v.as_path())).collect();
        self.um.unitlet_env(args, &env)
    }

    /// `unitlet backup tsdb`, asserting success; returns the new set ID.
    pub(crate) fn backup(&self) -> String {
        let before: Vec<String> = self
            .sets()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect();
        let o = self.unitlet(&["backup", "tsdb"]);
        assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
        let sets = self.sets();
        let new: Vec<String> = sets
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .filter(|id| !before.contains(id))
            .collect();
        assert_eq!(new.len(), 1, "{sets:?} {}{}", stdout(&o), stderr(&o));
        assert!(
            stdout(&o).contains(&new[0]),
            "the set id is printed: {}",
            stdout(&o)
        );
        new[0].clone()
    }

    /// `unitlet backups tsdb -o json`.
    pub(crate) fn sets(&self) -> Vec<serde_json::Value> {
        let o = self.unitlet(&["backups", "tsdb", "-o", "json"]);
        assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
        serde_json::from_slice::<serde_json::Value>(&o.stdout)
            .expect("backups -o json prints JSON")
            .as_array()
            .unwrap()
            .clone()
    }

    fn destination(&self) -> PathBuf {
        self.um.state_dir.join("backups/tsdb")
    }

    fn main_pid(&self) -> String {
        self.um.prop("prometheus.service", "MainPID")
    }

    fn siblings(&self, label: &str) -> Vec<PathBuf> {
        let prefix = format!("data.{label}-");
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.data.parent().unwrap())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .map(|e| e.path())
            .collect();
        v.sort();
        v
    }
}

pub(crate) fn complete_ids(sets: &[serde_json::Value]) -> Vec<String> {
    sets.iter()
        .filter(|s| s["status"] == "complete")
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn backup_timer_is_known_and_its_service_makes_a_complete_set() {
    let p = Prom::start(7, "");
    let timers = p.um.systemctl(&["list-timers", "--all", "--no-pager"]);
    assert!(
        stdout(&timers).contains("tsdb.timer"),
        "timer not listed: {}",
        stdout(&timers)
    );
    p.wait_samples();
    // A oneshot's start returns once it has finished.
    let o = p.um.systemctl(&["start", "tsdb.service"]);
    assert!(
        o.status.success(),
        "tsdb.service failed: {}\n{}",
        stderr(&o),
        stdout(&p.um.systemctl(&["status", "tsdb.service", "--no-pager"]))
    );
    assert_eq!(p.um.prop("tsdb.service", "Result"), "success");
    let sets = p.sets();
    assert_eq!(complete_ids(&sets).len(), 1, "{sets:?}");
    let set = &sets[0];
    assert_eq!(set["kind"], "prometheus");
    assert!(set["size"].as_u64().unwrap() > 0);
    let dir = PathBuf::from(set["path"].as_str().unwrap());
    assert!(dir.join("backup.json").is_file());
    assert!(dir.join("snapshot").is_dir());
    // The snapshot was taken out of Prometheus' own directory.
    let left = std::fs::read_dir(p.data.join("snapshots"))
        .map(|rd| rd.count())
        .unwrap_or(0);
    assert_eq!(left, 0, "Prometheus' snapshots directory must not grow");
    // The outcome is recorded for the operator's metrics.
    let last: serde_json::Value = serde_json::from_slice(
        &std::fs::read(p.um.state_dir.join("backups/tsdb.last.json")).unwrap(),
    )
    .unwrap();
    assert!(last["lastSuccess"].as_u64().unwrap() > 0, "{last}");
    assert!(last["lastError"].is_null(), "{last}");
    // The table lists it too.
    let o = p.unitlet(&["backups"]);
    assert_eq!(o.status.code(), Some(0));
    let table = stdout(&o);
    assert!(table.starts_with("ID"), "{table}");
    assert!(
        table.contains("tsdb") && table.contains("complete"),
        "{table}"
    );
}

#[test]
fn keep_two_after_four_runs_and_incomplete_sets_are_never_counted_or_restored() {
    let p = Prom::start(2, "");
    p.wait_samples();
    let first = p.backup();
    // An incomplete set made by hand, older than the others.
    let fake = p.destination().join("20200101T000000Z");
    std::fs::create_dir_all(fake.join("snapshot")).unwrap();
    std::fs::write(fake.join("snapshot/index"), b"half a TSDB").unwrap();
    let mut ids = vec![first];
    for _ in 0..3 {
        ids.push(p.backup());
    }
    let sets = p.sets();
    assert_eq!(complete_ids(&sets), ids[2..].to_vec(), "{sets:?}");
    let fake_row = sets
        .iter()
        .find(|s| s["id"] == "20200101T000000Z")
        .expect("the incomplete set is listed");
    assert_eq!(fake_row["status"], "incomplete");
    assert!(fake.is_dir(), "an incomplete set is never pruned");

    let pid = p.main_pid();
    let o = p.unitlet(&["restore", "tsdb", "20200101T000000Z"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("incomplete"), "{}", stderr(&o));
    assert_eq!(p.main_pid(), pid, "Prometheus was not touched");
    assert!(p.siblings("replaced").is_empty());

    // Prometheus down: a clear error, recorded for the metrics.
    let o = p.um.systemctl(&["stop", "prometheus.service"]);
    assert!(o.status.success());
    let o = p.unitlet(&["backup", "tsdb"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("is not reachable; is it running?"),
        "{}",
        stderr(&o)
    );
    let last: serde_json::Value = serde_json::from_slice(
        &std::fs::read(p.um.state_dir.join("backups/tsdb.last.json")).unwrap(),
    )
    .unwrap();
    assert!(
        last["lastError"]
            .as_str()
            .unwrap()
            .contains("not reachable")
    );
    assert!(
        last["lastSuccess"].as_u64().is_some(),
        "the last success is kept"
    );
    assert_eq!(complete_ids(&p.sets()), ids[2..].to_vec());
}

#[test]
fn restore_brings_back_samples_after_the_data_was_wiped() {
    let p = Prom::start(7, "");
    p.wait_samples();
    let before = now() - 1.0;
    assert!(!p.query("up", before).is_empty());
    let id = p.backup();

    // Wipe.
    p.wipe(before);

    // A dry run verifies and changes nothing.
    let pid = p.main_pid();
    let o = p.unitlet(&["restore", "tsdb", &id, "--dry-run"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("dry run"), "{}", stdout(&o));
    assert_eq!(p.main_pid(), pid);
    assert!(p.siblings("replaced").is_empty());

    let o = p.unitlet(&["restore", "tsdb", &id]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let replaced = p.siblings("replaced");
    assert_eq!(replaced.len(), 1, "the wiped data was moved aside");
    assert!(
        stdout(&o).contains(&*replaced[0].to_string_lossy()),
        "the output names where the old data went: {}",
        stdout(&o)
    );
    assert_eq!(p.um.active("prometheus.service"), "active");
    assert_ne!(p.main_pid(), pid);
    assert!(
        !p.query("up", before).is_empty(),
        "samples from before the backup are back"
    );
    assert!(!p.query("prometheus_build_info", before).is_empty());
    // The set is intact after the restore (copied, not moved).
    let o = p.unitlet(&["restore", "tsdb", &id, "--dry-run"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
}

#[test]
fn restore_beside_run_is_not_undone_and_a_corrupted_set_is_refused_first() {
    let p = Prom::start(7, "");
    let mport = crate::reload::free_port();
    let metrics = format!("http://127.0.0.1:{mport}/metrics");
    let mut run = p.um.spawn_run(&[
        "--resync",
        "1s",
        "--metrics-addr",
        &format!("127.0.0.1:{mport}"),
    ]);
    p.wait_samples();
    let before_backup = now();
    let id = p.backup();
    let after_backup = now();
    // "`unitlet_last_backup_success_timestamp_seconds` per object": the
    // operator reports the set just made.
    let series = "unitlet_last_backup_success_timestamp_seconds{name=\"tsdb\"}";
    let stamp = wait_seen(T, &format!("{series} of the new set"), || {
        let body = crate::reload::http_get(&metrics)
            .map(|(_, b)| b)
            .unwrap_or_default();
        let v = body
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok());
        match v {
            Some(t) if t >= before_backup.floor() => Ok(t),
            v => Err(format!("{v:?}")),
        }
    });
    assert!(stamp <= after_backup + 1.0, "{stamp} vs {after_backup}");
    // Samples the restore must drop: scraped after the backup, in the 2 s
    // before `mid`, which must be in the past before the restore (or the
    // restored Prometheus could scrape into that window again).
    let mid = after_backup + 2.5;
    wait_seen(
        T,
        "self-scrapes after the backup, up to a past `mid`",
        || {
            let (t, got) = (now(), p.query("count_over_time(up[2s])", mid));
            if t > mid && !got.is_empty() {
                Ok(())
            } else {
                Err(format!("{:.1} s past mid, samples {got:?}", t - mid))
            }
        },
    );

    // A corrupted set is refused before anything is stopped.
    let bad = p.backup();
    let set_dir = p.destination().join(&bad);
    let chunk = walk(&set_dir.join("snapshot"))
        .into_iter()
        .filter(|f| f.to_string_lossy().contains("/chunks/"))
        .max_by_key(|f| std::fs::metadata(f).unwrap().len())
        .expect("the snapshot has a chunks file");
    // Break the hard link first: the file may be shared with a live block.
    let mut bytes = std::fs::read(&chunk).unwrap();
    std::fs::remove_file(&chunk).unwrap();
    let i = bytes.len() / 2;
    bytes[i] ^= 0x40;
    std::fs::write(&chunk, bytes).unwrap();
    let pid = p.main_pid();
    let o = p.unitlet(&["restore", "tsdb", &bad]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("damaged"), "{}", stderr(&o));
    assert_eq!(p.main_pid(), pid, "nothing was stopped");
    assert!(p.siblings("replaced").is_empty());
    assert!(p.siblings("restoring").is_empty());

    // The good set, restored while `unitlet run` resyncs every second.
    let o = p.unitlet(&["restore", "tsdb", &id]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(p.siblings("replaced").len(), 1);
    assert_eq!(p.um.active("prometheus.service"), "active");
    let restored_pid = p.main_pid();
    assert_ne!(restored_pid, pid);
    p.wait_ready();
    assert!(
        p.query("count_over_time(up[2s])", mid).is_empty(),
        "Prometheus runs on the restored data, which ends at the backup"
    );
    assert!(!p.query("up", after_backup - 1.0).is_empty());
    // The operator leaves it alone afterwards too: a pass that began after
    // the restore, and whatever it started, are over.
    run.settle(T);
    assert_eq!(p.main_pid(), restored_pid, "{}", run.log());
    assert!(
        !std::path::Path::new(&p.um.state_dir.join("holds/prometheus")).exists(),
        "the hold is released"
    );
    run.stop();
}

#[test]
fn a_full_destination_removes_the_set_and_leaves_earlier_sets_intact() {
    let mut p = Prom::start(7, "");
    // The destination on its own small filesystem: the snapshot is copied
    // (not renamed) there, and a full disk hits mid-copy.
    let dest = p.destination();
    p.mount = Some(Tmpfs::mount(&dest, "8m"));
    p.wait_samples();
    let good = p.backup();
    // Leave two pages free: the in-progress marker fits, the blocks do not.
    let filler = dest.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 4096];
    while f.write_all(&chunk).is_ok() {}
    drop(f);
    let len = std::fs::metadata(&filler).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&filler)
        .unwrap();
    f.set_len(len.saturating_sub(8192)).unwrap();
    drop(f);

    let o = p.unitlet(&["backup", "tsdb"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("No space left on device"), "{err}");
    assert!(
        err.contains(&*dest.to_string_lossy()),
        "names the path: {err}"
    );
    let sets = p.sets();
    assert_eq!(complete_ids(&sets), vec![good.clone()], "{sets:?}");
    assert!(err.contains("is full: the set needed about"), "{err}");
    assert_eq!(sets.len(), 1, "the failed run's set was removed: {sets:?}");
    let o = p.unitlet(&["restore", "tsdb", &good, "--dry-run"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "the earlier set still verifies: {}",
        stderr(&o)
    );
    let left = std::fs::read_dir(p.data.join("snapshots"))
        .map(|rd| rd.count())
        .unwrap_or(0);
    assert_eq!(left, 0, "the failed run's snapshot does not stay behind");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

#[test]
fn a_restore_that_prometheus_cannot_start_on_puts_the_old_data_back() {
    use unitlet::backup::Store;
    use unitlet::prometheus::tsdb::{RestoreOptions, RestoreTarget};
    use unitlet::prometheus::{Client, PrometheusError};

    let p = Prom::start(7, "");
    p.wait_samples();
    let before = now() - 1.0;
    let store = Store::open(&p.destination(), "tsdb", "prometheus").unwrap();
    let block = "snapshot/01HZZZZZZZZZZZZZZZZZZZZZZZ";
    // A set that verifies but whose block has no valid meta.json: refused
    // before anything is stopped (Prometheus might skip such a block).
    let mut w = store.begin("http://test").unwrap();
    w.write_file(&format!("{block}/meta.json"), b"{not json")
        .unwrap();
    let not_tsdb = w.finish().unwrap().id;
    // A set with a valid meta.json but a block Prometheus cannot use.
    let mut w = store.begin("http://test").unwrap();
    let end = (now() * 1000.0) as i64 - 60_000;
    w.write_file(
        &format!("{block}/meta.json"),
        format!(
            r#"{{"ulid":"01HZZZZZZZZZZZZZZZZZZZZZZZ","minTime":{},"maxTime":{end},"stats":{{"numSamples":10,"numSeries":1,"numChunks":1}},"compaction":{{"level":1,"sources":["01HZZZZZZZZZZZZZZZZZZZZZZZ"]}},"version":1}}"#,
            end - 600_000
        )
        .as_bytes(),
    )
    .unwrap();
    w.write_file(&format!("{block}/index"), b"garbage").unwrap();
    w.write_file(&format!("{block}/chunks/000001"), b"garbage")
        .unwrap();
    w.write_file(&format!("{block}/tombstones"), b"").unwrap();
    let id = w.finish().unwrap().id;

    let pid = p.main_pid();
    let o = p.unitlet(&["restore", "tsdb", &not_tsdb]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("meta.json"), "{}", stderr(&o));
    assert_eq!(p.main_pid(), pid, "nothing was stopped");

    let client = Client::new(
        &format!("http://127.0.0.1:{}", p.port),
        Duration::from_secs(5),
    )
    .unwrap();
    let bus = format!("unix:path={}/bus", p.um.runtime.display());
    let target = RestoreTarget {
        backup: "tsdb",
        store: &store,
        id: &id,
        data_dir: &p.data,
        service: "prometheus",
        client: &client,
        state_dir: &p.um.state_dir,
        bus: Some(&bus),
    };
    let opts = RestoreOptions {
        ready_timeout: Duration::from_secs(10),
        check_timeout: Duration::from_secs(5),
        job_timeout: Duration::from_secs(30),
        ..RestoreOptions::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = rt
        .block_on(async {
            tokio::time::timeout(
                Duration::from_secs(120),
                unitlet::prometheus::tsdb::restore_tsdb(target, &opts),
            )
            .await
        })
        .expect("restore finishes in time")
        .unwrap_err();
    let msg = unitlet::error_chain(&err);
    assert!(matches!(err, PrometheusError::RolledBack { .. }), "{msg}");
    assert!(msg.contains("previous data is back"), "{msg}");
    assert!(msg.contains("started again and is ready"), "{msg}");
    assert_eq!(p.siblings("failed").len(), 1, "{msg}");
    assert!(p.siblings("replaced").is_empty(), "moved back: {msg}");
    assert!(
        !p.journal().exists(),
        "a rollback that put the old data back ends its journal"
    );
    p.wait_ready();
    assert_eq!(p.um.active("prometheus.service"), "active");
    assert!(
        !p.query("up", before).is_empty(),
        "the old data is in use again"
    );
}

// ---------------------------------------------------------------------------
// Journaled restore: a restore killed at any step, and restores racing.

const PROMTOOL: &str = "/usr/bin/promtool";

/// A directory of TSDB blocks (made by promtool) holding one series,
/// `restore_marker{which="WHICH"}`, sampled every 15s over 10 minutes
/// ending at `end` (unix seconds).
fn marker_blocks(dir: &Path, which: &str, end: i64) -> PathBuf {
    assert!(
        Path::new(PROMTOOL).exists(),
        "these tests need promtool at {PROMTOOL} (apt-get install prometheus); they never skip"
    );
    let input = dir.join(format!("{which}.om"));
    let mut om =
        String::from("# HELP restore_marker which data this is\n# TYPE restore_marker gauge\n");
    for i in 0..=40 {
        om.push_str(&format!(
            "restore_marker{{which=\"{which}\"}} 1 {}\n",
            end - 600 + i * 15
        ));
    }
    om.push_str("# EOF\n");
    std::fs::write(&input, om).unwrap();
    let out = dir.join(which);
    let o = std::process::Command::new(PROMTOOL)
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&input)
        .arg(&out)
        .output()
        .expect("run promtool");
    assert!(o.status.success(), "promtool: {}{}", stdout(&o), stderr(&o));
    assert!(!block_dirs(&out).is_empty(), "promtool made no block");
    out
}

/// The TSDB block directories (ULIDs) directly in `dir`.
fn block_dirs(dir: &Path) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().join("meta.json").is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn copy_dir(from: &Path, to: &Path) {
    let o = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .output()
        .unwrap();
    assert!(o.status.success(), "cp -a: {}", stderr(&o));
}

impl Prom {
    /// `unitlet restore tsdb ID` with extra environment (the test hooks).
    fn restore_cmd(&self, id: &str, env: &[(&str, String)]) -> std::process::Command {
        let mut c = std::process::Command::new(crate::support::UNITLET);
        c.envs(self.um.envs())
            .env_remove("UNITLET_MANIFESTS")
            .env_remove("UNITLET_STATE_DIR")
            .env_remove("UNITLET_UNIT_DIR")
            .env_remove("UNITLET_BUS")
            .args(["restore", "tsdb", id])
            .stdin(std::process::Stdio::null());
        for (k, v) in env {
            c.env(k, v);
        }
        c
    }

    fn journal(&self) -> PathBuf {
        self.um.state_dir.join("restores/prometheus.json")
    }

    /// Which `restore_marker` series Prometheus answers with at `time`.
    fn marker(&self, time: i64) -> Vec<String> {
        let mut v: Vec<String> = self
            .query("restore_marker", time as f64)
            .iter()
            .filter_map(|s| s["metric"]["which"].as_str().map(str::to_owned))
            .collect();
        v.sort();
        v
    }

    /// Stops Prometheus, replaces its data (and every sibling earlier
    /// rounds left) with a copy of `template`, and starts it again.
    fn reset_data(&self, template: &Path) {
        let o = self.um.systemctl(&["stop", "prometheus.service"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let parent = self.data.parent().unwrap();
        for e in std::fs::read_dir(parent).unwrap().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n == "data" || n.starts_with("data.") {
                std::fs::remove_dir_all(e.path()).unwrap();
            }
        }
        copy_dir(template, &self.data);
        // Many starts in a few seconds: keep systemd's start limit out of it.
        self.um.systemctl(&["reset-failed", "prometheus.service"]);
        let o = self.um.systemctl(&["start", "prometheus.service"]);
        assert!(o.status.success(), "{}", stderr(&o));
        self.wait_ready();
    }
}

/// Regression (issue: restore interrupted between moving the data aside
/// and putting the restored data in place left no data directory, and the
/// operator then started Prometheus on an empty TSDB): `kill -9` right
/// after each journal step; the next `unitlet apply` (or `unitlet run`
/// pass) leaves the original data, or the restored data once it was
/// verified — never none, never a mix — and Prometheus answers for it.
#[test]
fn a_restore_killed_at_any_step_never_leaves_prometheus_without_its_data() {
    use std::os::unix::process::ExitStatusExt;
    let p = Prom::start(7, "");
    let work = p.um.runtime.join("marker");
    std::fs::create_dir_all(&work).unwrap();
    let end = now() as i64 - 1800;
    let original = marker_blocks(&work, "original", end);
    let backup = marker_blocks(&work, "backup", end);
    let (original_blocks, backup_blocks) = (block_dirs(&original), block_dirs(&backup));
    assert!(original_blocks.is_disjoint(&backup_blocks));

    // A complete set holding the backup blocks.
    let store = unitlet::backup::Store::open(&p.destination(), "tsdb", "prometheus").unwrap();
    let mut w = store
        .begin(&format!("http://127.0.0.1:{}", p.port))
        .unwrap();
    for f in walk(&backup) {
        let rel = f
            .strip_prefix(&backup)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        w.write_file(&format!("snapshot/{rel}"), &std::fs::read(&f).unwrap())
            .unwrap();
    }
    let id = w.finish().unwrap().id;

    let steps = [
        "copy",
        "stop",
        "move-aside",
        "install",
        "start",
        "verify",
        "done",
    ];
    // Every step with `apply` as the next command; then `install` (no data
    // directory at all) with `unitlet run` already running and killed from
    // outside, and `verify` (Prometheus running on the unverified copy)
    // with another `restore` as the next command.
    let rounds = steps
        .iter()
        .map(|s| (*s, Next::Apply))
        .chain([("install", Next::Run), ("verify", Next::Restore)]);
    for (step, next) in rounds {
        let round = format!("round {step}, then {next:?}");
        p.reset_data(&original);
        assert_eq!(p.marker(end), ["original"], "{round}: setup");
        let mut run = None;
        if next == Next::Run {
            // `kill -9` from outside while `unitlet run` (resyncing only
            // hourly) holds off: the restore's death must wake it.
            let gate = p.um.runtime.join("gate-run");
            let mut restore = p
                .restore_cmd(
                    &id,
                    &[(
                        "UNITLET_TEST_PAUSE_AFTER",
                        format!("{step}:{}", gate.display()),
                    )],
                )
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            wait_for(T, "the restore to pause", || {
                p.um.runtime.join("gate-run.waiting").exists().then_some(())
            });
            let r = p.um.spawn_run(&["--resync", "1h"]);
            // Its pass saw the running restore and left the service alone.
            wait_for(T, "the operator to put prometheus on hold", || {
                let s: serde_json::Value = serde_json::from_slice(
                    &std::fs::read(p.um.state_dir.join("status.json")).ok()?,
                )
                .ok()?;
                let ready = s["objects"]["prometheus"]["conditions"]
                    .as_array()?
                    .iter()
                    .find(|c| c["type"] == "Ready")?
                    .clone();
                (ready["reason"] == "OnHold").then_some(())
            });
            assert!(!p.data.exists(), "{round}: the operator did not touch it");
            unsafe {
                libc::kill(restore.id() as i32, libc::SIGKILL);
            }
            assert_eq!(restore.wait().unwrap().signal(), Some(libc::SIGKILL));
            run = Some(r);
        } else {
            let o = p
                .restore_cmd(&id, &[("UNITLET_TEST_CRASH_AFTER", step.to_owned())])
                .output()
                .unwrap();
            assert_eq!(
                o.status.signal(),
                Some(libc::SIGKILL),
                "{round}: the restore kills itself after the step: {:?} {}{}",
                o.status,
                stdout(&o),
                stderr(&o)
            );
            assert!(p.journal().is_file(), "{round}: the journal stays");
        }

        if step == "install" && next == Next::Apply {
            // The state the defect was about: no data directory at all.
            assert!(!p.data.exists(), "{round}: the data is aside");
            // `plan`, `get`, `describe` and a dry run say so and change
            // nothing.
            let o = p.unitlet(&["plan"]);
            assert!(
                stdout(&o).contains("interrupted restore is pending"),
                "{}{}",
                stdout(&o),
                stderr(&o)
            );
            let (status, reason, msg) = p.um.ready("prometheus").unwrap();
            assert_eq!(
                (status.as_str(), reason.as_str()),
                ("False", "RestoreInterrupted"),
                "{msg}"
            );
            assert!(msg.contains(&id), "the message names the set: {msg}");
            let o = p.unitlet(&["describe", "prometheus"]);
            assert!(stdout(&o).contains("RestorePending=True"), "{}", stdout(&o));
            let o = p.unitlet(&["restore", "tsdb", &id, "--dry-run"]);
            assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
            assert!(
                stdout(&o).contains("a restore recovers it first"),
                "{}",
                stdout(&o)
            );
            assert!(
                p.journal().is_file() && !p.data.exists(),
                "nothing was recovered"
            );
        }

        let expected = match next {
            Next::Run => {
                let run = run.as_mut().unwrap();
                wait_for(T, "the operator to recover the restore", || {
                    (!p.journal().exists()).then_some(())
                });
                p.wait_ready();
                assert!(
                    run.log().contains("was undone"),
                    "the operator logs the recovery: {}",
                    run.log()
                );
                run.stop();
                "original"
            }
            Next::Apply => {
                let o = p.unitlet(&["apply"]);
                assert_eq!(
                    o.status.code(),
                    Some(0),
                    "{round}: {}{}",
                    stdout(&o),
                    stderr(&o)
                );
                let (expected, says) = if step == "done" {
                    ("backup", "had verified the restored data: it stays")
                } else {
                    ("original", "was undone")
                };
                assert!(stderr(&o).contains(says), "{round}: {}", stderr(&o));
                expected
            }
            Next::Restore => {
                let o = p.unitlet(&["restore", "tsdb", &id]);
                assert_eq!(
                    o.status.code(),
                    Some(0),
                    "{round}: {}{}",
                    stdout(&o),
                    stderr(&o)
                );
                assert!(
                    stdout(&o).starts_with("first, the restore of Backup tsdb"),
                    "{round}: the interrupted restore was recovered first: {}",
                    stdout(&o)
                );
                // The original went aside once, for this restore.
                assert_eq!(p.siblings("replaced").len(), 1, "{round}");
                "backup"
            }
        };
        assert!(!p.journal().exists(), "{round}: recovered");
        assert!(
            !p.um.state_dir.join("holds/prometheus").exists(),
            "{round}: the dead restore's hold is gone"
        );
        let blocks = if expected == "backup" {
            &backup_blocks
        } else {
            &original_blocks
        };
        assert_eq!(
            &block_dirs(&p.data),
            blocks,
            "{round}: the data directory holds the {expected} blocks, and only them"
        );
        assert!(
            p.siblings("restoring").is_empty(),
            "{round}: no staging copy left"
        );
        p.wait_ready();
        assert_eq!(p.um.active("prometheus.service"), "active");
        assert_eq!(
            p.marker(end),
            [expected],
            "{round}: Prometheus answers for the {expected} data"
        );
        // Undone after the copy was in place: it is aside, named.
        let moved_in = ["start", "verify"].contains(&step);
        assert_eq!(
            p.siblings("failed").len(),
            usize::from(moved_in),
            "{round}: {:?}",
            p.siblings("failed")
        );
        if step == "done" {
            assert_eq!(p.siblings("replaced").len(), 1, "the replaced data is kept");
        }
    }
}

/// What runs after the killed restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Apply,
    Run,
    Restore,
}

/// A restore started while another restore of the same service runs is
/// refused with exit 2, naming the running one; the first one completes.
#[test]
fn a_second_restore_of_the_same_service_is_refused_while_the_first_runs() {
    let p = Prom::start(7, "");
    p.wait_samples();
    let id = p.backup();
    let gate = p.um.runtime.join("gate");
    let waiting = p.um.runtime.join("gate.waiting");
    let log = |n: &str| std::fs::File::create(p.um.runtime.join(n)).unwrap();
    let mut first = p
        .restore_cmd(
            &id,
            &[(
                "UNITLET_TEST_PAUSE_AFTER",
                format!("stop:{}", gate.display()),
            )],
        )
        .stdout(log("first.out"))
        .stderr(log("first.err"))
        .spawn()
        .unwrap();
    // Paused with the set copied and the service held, before the stop.
    wait_for(T, "the first restore to reach its pause", || {
        waiting.exists().then_some(())
    });
    let pid = p.main_pid();

    let o = p.unitlet(&["restore", "tsdb", &id]);
    assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("PID {}", first.id())),
        "names the running restore's PID: {err}"
    );
    assert!(err.contains(&id) && err.contains("started "), "{err}");
    assert!(
        err.contains("another restore of prometheus is running"),
        "{err}"
    );
    assert_eq!(
        p.siblings("restoring").len(),
        1,
        "only the first one's copy"
    );
    assert_eq!(p.main_pid(), pid, "the refused restore touched nothing");

    std::fs::write(&gate, "").unwrap();
    let status = wait_for(Duration::from_secs(120), "the first restore to end", || {
        first.try_wait().unwrap()
    });
    let out = std::fs::read_to_string(p.um.runtime.join("first.out")).unwrap();
    let err = std::fs::read_to_string(p.um.runtime.join("first.err")).unwrap();
    assert!(status.success(), "{status:?}: {out}{err}");
    assert!(out.contains(&format!("restored backup set {id}")), "{out}");
    assert_eq!(p.siblings("replaced").len(), 1);
    assert!(p.siblings("restoring").is_empty());
    assert!(!p.journal().exists());
    assert_eq!(p.um.active("prometheus.service"), "active");
    assert_ne!(p.main_pid(), pid);
}

/// Issue 21, item 6, the other side: a restore that goes ahead is still
/// silenced — one silence, made once its checks passed, expired when the
/// restore is done — while one refused for a mistyped set id makes none.
#[test]
fn issue21_6_a_restore_that_goes_ahead_is_silenced_once_its_checks_passed() {
    let p = Prom::start(7, "");
    let am = crate::silence::Alertmanager::start(&p.um.runtime.join("am"));
    let manifest = p.um.manifests.join("prometheus.yaml");
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    text.push_str("  silence: {}\n");
    p.um.write_manifest("prometheus.yaml", &text);
    p.wait_samples();
    let id = p.backup();
    let restore = |id: &str| p.unitlet(&["--alertmanager", &am.url(""), "restore", "tsdb", id]);
    let o = restore("20261127T23550IZ");
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(am.silences().is_empty(), "{}", stderr(&o));
    let o = restore(&id);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let silences = am.silences();
    assert_eq!(silences.len(), 1, "{silences:?}");
    assert!(
        silences[0]["comment"]
            .as_str()
            .unwrap()
            .contains("planned restore of prometheus"),
        "{silences:?}"
    );
    assert_eq!(silences[0]["status"]["state"], "expired", "{silences:?}");
}

// ---------------------------------------------------------------------------
// Issue 24: incremental TSDB sets over a block store in the destination.

/// `(dev, inode) -> size` of every regular file below `dir`.
fn inodes(dir: &Path) -> std::collections::BTreeMap<(u64, u64), u64> {
    use std::os::unix::fs::MetadataExt;
    if !dir.exists() {
        return Default::default();
    }
    walk(dir)
        .iter()
        .filter_map(|f| std::fs::symlink_metadata(f).ok())
        .filter(|m| m.is_file())
        .map(|m| ((m.dev(), m.ino()), m.len()))
        .collect()
}

/// Total bytes of the regular files below `dir`.
fn tree_bytes(dir: &Path) -> u64 {
    inodes(dir).values().sum()
}

/// The `blocks` a set's `backup.json` records: `(name, key)`.
fn set_blocks(dest: &Path, id: &str) -> Vec<(String, String)> {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dest.join(id).join("backup.json")).unwrap()).unwrap();
    m["blocks"]
        .as_array()
        .expect("an incremental set records its blocks")
        .iter()
        .map(|b| {
            (
                b["name"].as_str().unwrap().to_owned(),
                b["key"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The directories of the destination's block store, leftovers included.
fn store_entries(dest: &Path) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(dest.join("blocks"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().unwrap().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

impl Prom {
    /// Mounts a tmpfs over the destination (unmounted when `self` drops,
    /// whatever happens): a second filesystem.
    fn mount_destination(&mut self, size: &str) {
        self.mount = Some(Tmpfs::mount(&self.destination(), size));
    }

    /// Stops Prometheus, adds the blocks in `from` to its data, starts it.
    fn add_blocks(&self, from: &Path) {
        let o = self.um.systemctl(&["stop", "prometheus.service"]);
        assert!(o.status.success(), "{}", stderr(&o));
        for b in block_dirs(from) {
            copy_dir(&from.join(&b), &self.data.join(&b));
        }
        self.um.systemctl(&["reset-failed", "prometheus.service"]);
        let o = self.um.systemctl(&["start", "prometheus.service"]);
        assert!(o.status.success(), "{}", stderr(&o));
        self.wait_ready();
    }

    /// `unitlet backup tsdb` with the test hook env, expected to be killed.
    fn backup_killed_at(&self, step: &str) {
        use std::os::unix::process::ExitStatusExt;
        let o = self.um.unitlet_env(
            &["backup", "tsdb"],
            &[("UNITLET_TEST_CRASH_AT", Path::new(step))],
        );
        assert_eq!(
            o.status.signal(),
            Some(9),
            "killed at {step}: {}{}",
            stdout(&o),
            stderr(&o)
        );
    }

    /// Every set listed complete verifies (a dry-run restore re-hashes
    /// every file); returns their IDs.
    fn complete_sets_verify(&self) -> Vec<String> {
        let ids = complete_ids(&self.sets());
        for id in &ids {
            let o = self.unitlet(&["restore", "tsdb", id, "--dry-run"]);
            assert_eq!(o.status.code(), Some(0), "set {id}: {}", stderr(&o));
        }
        ids
    }

    /// Nothing left over: every set complete, no `.deleting-`/`.incoming-`,
    /// and the block store holds exactly the blocks the sets record.
    fn assert_clean(&self) {
        let dest = self.destination();
        let sets = self.sets();
        assert!(sets.iter().all(|s| s["status"] == "complete"), "{sets:?}");
        let stray: Vec<String> = std::fs::read_dir(&dest)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(stray.is_empty(), "leftovers in the destination: {stray:?}");
        let mut held = std::collections::BTreeSet::new();
        for id in complete_ids(&sets) {
            held.extend(set_blocks(&dest, &id).into_iter().map(|b| b.1));
        }
        let stored: std::collections::BTreeSet<String> = store_entries(&dest)
            .into_iter()
            .filter(|n| !n.starts_with(".lock"))
            .collect();
        assert_eq!(stored, held, "the store holds exactly the sets' blocks");
    }
}

/// Issue 24 items 1 and 2: three backups with a new block between each;
/// the second and third write only the new block and the head, shared
/// blocks are the same files; the last set restores to a Prometheus that
/// answers for every block, the others verify.
fn three_incremental_backups(p: &Prom) {
    let dest = p.destination();
    let work = p.um.runtime.join("incr");
    std::fs::create_dir_all(&work).unwrap();
    p.wait_samples();
    // A day apart: no two in one compaction range, so Prometheus leaves
    // them as they are.
    let base = now() as i64 - 4 * 86400;
    let mut ends = Vec::new();
    let mut ids: Vec<String> = Vec::new();
    for i in 0..3i64 {
        let end = base + i * 86400;
        let which = format!("b{i}");
        let blocks = marker_blocks(&work, &which, end);
        p.add_blocks(&blocks);
        ends.push((which, end));
        let before = inodes(&dest);
        let id = p.backup();
        let after = inodes(&dest);
        let written: u64 = after
            .iter()
            .filter(|(k, _)| !before.contains_key(k))
            .map(|(_, s)| s)
            .sum();
        if let Some(prev) = ids.last() {
            let old: std::collections::BTreeSet<String> =
                set_blocks(&dest, prev).into_iter().map(|b| b.0).collect();
            let new: Vec<String> = set_blocks(&dest, &id)
                .into_iter()
                .map(|b| b.0)
                .filter(|b| !old.contains(b))
                .collect();
            let added = block_dirs(&blocks);
            assert!(
                added.iter().all(|b| new.contains(b)) && new.len() == added.len() + 1,
                "new in set {id}: the added block(s) {added:?} and the head: {new:?}"
            );
            let set = dest.join(&id);
            let expected: u64 = new
                .iter()
                .map(|b| tree_bytes(&set.join("snapshot").join(b)))
                .sum::<u64>()
                + tree_bytes(&set) // upper bound for the set's own json files
                    - tree_bytes(&set.join("snapshot"))
                + set_blocks(&dest, &id)
                    .iter()
                    .filter(|b| new.contains(&b.0))
                    .map(|b| {
                        std::fs::metadata(dest.join("blocks").join(&b.1).join("block.json"))
                            .unwrap()
                            .len()
                    })
                    .sum::<u64>();
            assert!(
                written <= expected,
                "set {id} wrote {written} bytes, the new block and head are {expected}"
            );
            // A block shared with the previous set is the same file.
            let shared = old.iter().find(|b| !new.contains(b)).unwrap();
            let m = |s: &str| {
                std::os::unix::fs::MetadataExt::ino(
                    &std::fs::metadata(dest.join(s).join("snapshot").join(shared).join("index"))
                        .unwrap(),
                )
            };
            assert_eq!(m(prev), m(&id), "block {shared} is shared, not copied");
            let row = p.sets().into_iter().find(|s| s["id"] == *id).unwrap();
            assert_eq!(row["new_blocks"], new.len(), "{row}");
            assert!(row["shared"].as_u64().unwrap() > 0, "{row}");
            // The table and `describe` show the same three numbers.
            let size = |k: &str| unitlet::backup_cmd::format_size(row[k].as_u64().unwrap());
            let cells = format!("{} {} {}", new.len(), size("written"), size("shared"));
            for cmd in [&["backups", "tsdb"][..], &["describe", "tsdb"]] {
                let o = p.unitlet(cmd);
                assert_eq!(o.status.code(), Some(0), "{cmd:?}: {}", stderr(&o));
                let out = stdout(&o);
                let line = out.lines().find(|l| l.contains(id.as_str()));
                let words = |l: &str| l.split_whitespace().collect::<Vec<_>>().join(" ");
                assert!(
                    line.is_some_and(|l| words(l).ends_with(&cells)),
                    "{cmd:?} shows set {id} with {cells}:\n{out}"
                );
            }
        }
        ids.push(id);
    }
    assert_eq!(p.complete_sets_verify(), ids);
    p.assert_clean();
    // The last set restores and Prometheus answers over its whole range.
    let o = p.unitlet(&["restore", "tsdb", ids.last().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    for (which, end) in &ends {
        assert_eq!(p.marker(end - 60), vec![which.clone()], "block {which}");
    }
    // promtool reads a set on its own.
    let o = std::process::Command::new(PROMTOOL)
        .args(["tsdb", "list"])
        .arg(dest.join(&ids[0]).join("snapshot"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn issue24_1_incremental_sets_write_only_new_blocks_and_the_head() {
    let p = Prom::start(7, "");
    three_incremental_backups(&p);
}

#[test]
fn issue24_2_incremental_sets_on_another_filesystem() {
    let mut p = Prom::start(7, "");
    p.mount_destination("256m");
    three_incremental_backups(&p);
}

#[test]
fn issue24_2_a_backup_or_prune_killed_at_any_step_loses_no_complete_set() {
    let mut p = Prom::start(2, "");
    p.mount_destination("256m");
    p.wait_samples();
    p.backup();
    p.backup();
    for step in [
        "block-written",
        "block-stored",
        "set-files-durable",
        "set-deleting",
        "block-freeing",
    ] {
        p.backup_killed_at(step);
        let complete = p.complete_sets_verify();
        assert!(complete.len() >= 2, "after {step}: {complete:?}");
        // (Not `p.backup()`: the new set may take the ID of the killed
        // run's incomplete set, which it removes first.)
        let o = p.unitlet(&["backup", "tsdb"]);
        assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
        p.assert_clean();
        assert_eq!(complete_ids(&p.sets()).len(), 2, "after {step}");
    }
}

#[test]
fn issue24_3_keep_two_frees_only_the_blocks_of_pruned_sets() {
    let p = Prom::start(2, "");
    let dest = p.destination();
    p.wait_samples();
    let mut held = std::collections::BTreeMap::new();
    for _ in 0..5 {
        let id = p.backup();
        held.insert(id.clone(), set_blocks(&dest, &id));
    }
    let kept = complete_ids(&p.sets());
    assert_eq!(kept.len(), 2);
    let kept_keys: std::collections::BTreeSet<String> = kept
        .iter()
        .flat_map(|id| held[id].iter().map(|b| b.1.clone()))
        .collect();
    let stored = store_entries(&dest);
    for (id, blocks) in &held {
        for (_, key) in blocks {
            assert_eq!(
                stored.contains(key),
                kept_keys.contains(key),
                "block {key} of set {id}"
            );
        }
    }
    p.complete_sets_verify();
    p.assert_clean();
    // `backups verify`: sizes by default, hashes with --deep.
    for args in [
        &["backups", "verify", "tsdb"][..],
        &["backups", "verify", "tsdb", "--deep"],
    ] {
        let o = p.unitlet(args);
        assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
        assert_eq!(stdout(&o).matches(": ok (").count(), 2, "{}", stdout(&o));
    }
    // A stored block damaged in place, same size: only --deep sees it.
    let newest = kept.last().unwrap();
    let (name, key) = held[newest][0].clone();
    let index = dest.join("blocks").join(&key).join("index");
    let mut bytes = std::fs::read(&index).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&index, &bytes).unwrap();
    let o = p.unitlet(&["backups", "verify", "tsdb", newest]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let o = p.unitlet(&["backups", "verify", "tsdb", newest, "--deep"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains(&format!("snapshot/{name}/index has sha256")),
        "{}",
        stderr(&o)
    );
}
