//! Issue 5 acceptance: scheduled Prometheus TSDB snapshots, retention, and a
//! restore that loses nothing — against a real Prometheus run by unitlet in
//! a private user manager.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::support::{UserManager, stderr, stdout, wait_for};

const PROMETHEUS: &str = "/usr/bin/prometheus";
const T: Duration = Duration::from_secs(60);

/// A Prometheus managed by unitlet, with a Backup manifest `tsdb` of it.
struct Prom {
    /// Dropped first: a tmpfs mounted for a test must go before the
    /// manager's temporary directory is removed.
    mount: Option<PathBuf>,
    um: UserManager,
    port: u16,
    data: PathBuf,
}

impl Drop for Prom {
    fn drop(&mut self) {
        if let Some(m) = self.mount.take() {
            let _ = std::process::Command::new("umount").arg(&m).status();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn now() -> f64 {
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
    fn start(keep: u32, backup_extra: &str) -> Prom {
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

    fn wait_ready(&self) {
        wait_for(T, "Prometheus ready", || {
            self.get("/-/ready").filter(|(s, _)| *s == 200).map(|_| ())
        });
    }

    /// The vector result of `expr` at `time`.
    fn query(&self, expr: &str, time: f64) -> Vec<serde_json::Value> {
        let (status, body) = self
            .get(&format!("/api/v1/query?query={}&time={time:.3}", enc(expr)))
            .expect("Prometheus answers queries");
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until Prometheus has scraped itself a few times.
    fn wait_samples(&self) {
        wait_for(T, "a few self-scrapes", || {
            let r = self.query("count_over_time(up[10s])", now());
            r.first()
                .and_then(|s| s["value"][1].as_str()?.parse::<f64>().ok())
                .filter(|n| *n >= 3.0)
                .map(|_| ())
        });
    }

    fn unitlet(&self, args: &[&str]) -> std::process::Output {
        self.um.unitlet(args)
    }

    /// `unitlet backup tsdb`, asserting success; returns the new set ID.
    fn backup(&self) -> String {
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
        assert_eq!(new.len(), 1, "{sets:?}");
        assert!(
            stdout(&o).contains(&new[0]),
            "the set id is printed: {}",
            stdout(&o)
        );
        new[0].clone()
    }

    /// `unitlet backups tsdb -o json`.
    fn sets(&self) -> Vec<serde_json::Value> {
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

fn complete_ids(sets: &[serde_json::Value]) -> Vec<String> {
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
    assert!(
        p.um.systemctl(&["stop", "prometheus.service"])
            .status
            .success()
    );
    std::fs::remove_dir_all(&p.data).unwrap();
    std::fs::create_dir(&p.data).unwrap();
    assert!(
        p.um.systemctl(&["start", "prometheus.service"])
            .status
            .success()
    );
    p.wait_ready();
    assert!(
        p.query("up", before).is_empty(),
        "the wipe lost the samples"
    );

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
    let mut run = p.um.spawn_run(&["--resync", "1s"]);
    p.wait_samples();
    let id = p.backup();
    let after_backup = now();
    // Samples the restore must drop: they were scraped after the backup.
    std::thread::sleep(Duration::from_secs(4));
    let mid = after_backup + 3.0;
    assert!(!p.query("count_over_time(up[2s])", mid).is_empty());

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
    // The operator leaves it alone afterwards too.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(p.main_pid(), restored_pid, "{}", run.log());
    assert!(
        !std::path::Path::new(&p.um.state_dir.join("holds/prometheus")).exists(),
        "the hold is released"
    );
    run.stop();
}

#[test]
fn a_full_destination_leaves_the_set_incomplete_and_earlier_sets_intact() {
    let mut p = Prom::start(7, "");
    // The destination on its own small filesystem: the snapshot is copied
    // (not renamed) there, and a full disk hits mid-copy.
    let dest = p.destination();
    std::fs::create_dir_all(&dest).unwrap();
    let o = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs"])
        .arg(&dest)
        .output()
        .expect("run mount");
    assert!(
        o.status.success(),
        "mount tmpfs (needs root): {}",
        stderr(&o)
    );
    p.mount = Some(dest.clone());
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
    assert!(
        sets.iter().any(|s| s["status"] == "incomplete"),
        "the failed run's set is listed as incomplete: {sets:?}"
    );
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
    use unitlet::prometheus::{Client, PrometheusError, RestoreOptions, RestoreTarget};

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
                unitlet::prometheus::restore_tsdb(target, &opts),
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
    p.wait_ready();
    assert_eq!(p.um.active("prometheus.service"), "active");
    assert!(
        !p.query("up", before).is_empty(),
        "the old data is in use again"
    );
}
