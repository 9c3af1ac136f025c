//! Issue 12 acceptance 4: Alertmanager silences around planned restarts,
//! against a real Alertmanager (Debian's prometheus-alertmanager) started
//! here on a free loopback port with its own data directory.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::reload::{free_port, http_get};
use crate::support::{UserManager, wait_for};

const T: Duration = Duration::from_secs(30);

/// A private Alertmanager, stopped by PID when dropped.
pub struct Alertmanager {
    pub port: u16,
    child: Child,
}

impl Alertmanager {
    pub fn start(dir: &std::path::Path) -> Alertmanager {
        let port = free_port();
        std::fs::create_dir_all(dir.join("data")).unwrap();
        std::fs::write(
            dir.join("alertmanager.yml"),
            "route:\n  receiver: none\nreceivers:\n  - name: none\n",
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("alertmanager.log")).unwrap();
        let child = Command::new("/usr/bin/prometheus-alertmanager")
            .current_dir(dir)
            .args([
                "--config.file=alertmanager.yml",
                "--storage.path=data",
                &format!("--web.listen-address=127.0.0.1:{port}"),
                "--cluster.listen-address=",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect(
                "start /usr/bin/prometheus-alertmanager (apt-get install prometheus-alertmanager)",
            );
        let am = Alertmanager { port, child };
        wait_for(T, "alertmanager ready", || {
            http_get(&am.url("/-/ready")).filter(|(c, _)| *c == 200)
        });
        am
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Every silence Alertmanager knows.
    pub fn silences(&self) -> Vec<serde_json::Value> {
        let (code, body) = http_get(&self.url("/api/v2/silences")).expect("GET silences");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str::<Vec<serde_json::Value>>(&body).unwrap()
    }

    pub fn stop(&mut self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Seconds since the epoch of an RFC 3339 time.
fn epoch(t: &str) -> f64 {
    humantime::parse_rfc3339_weak(t.trim_end_matches('Z'))
        .or_else(|_| humantime::parse_rfc3339(t))
        .unwrap_or_else(|e| panic!("{t}: {e}"))
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A unit's timestamp property (µs since the epoch) as seconds, read
/// over the manager's bus.
fn unit_time(um: &UserManager, unit: &str, prop: &str) -> f64 {
    let path = format!(
        "/org/freedesktop/systemd1/unit/{}",
        unit.replace('.', "_2e").replace('-', "_2d")
    );
    let mut c = Command::new("busctl");
    for (k, v) in um.envs() {
        c.env(k, v);
    }
    let o = c
        .args([
            "--user",
            "get-property",
            "org.freedesktop.systemd1",
            &path,
            "org.freedesktop.systemd1.Unit",
            prop,
        ])
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&o.stdout);
    let us: u64 = s
        .trim()
        .strip_prefix("t ")
        .unwrap_or_else(|| panic!("{prop}: {s} {}", String::from_utf8_lossy(&o.stderr)))
        .parse()
        .unwrap();
    us as f64 / 1e6
}

fn events(um: &UserManager, object: &str) -> Vec<(String, String)> {
    let v: serde_json::Value = std::fs::read(um.state_dir.join("status.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    v["events"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|e| e["object"] == object)
                .map(|e| {
                    (
                        e["reason"].as_str().unwrap_or("").to_string(),
                        e["message"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn write(p: &PathBuf, s: &str) {
    let tmp = p.with_extension("tmp");
    std::fs::write(&tmp, s).unwrap();
    std::fs::rename(&tmp, p).unwrap();
}

#[test]
fn planned_restart_is_silenced_and_unsilenced_but_a_crash_or_a_dead_alertmanager_is_not() {
    let um = UserManager::start();
    let mut am = Alertmanager::start(&um.runtime.join("am"));
    let etc = um.runtime.join("web-etc");
    std::fs::create_dir_all(&etc).unwrap();
    let cfg = etc.join("web.conf");
    write(&cfg, "v1\n");
    um.write_manifest(
        "web.yaml",
        &format!(
            "apiVersion: unitlet/v1\nkind: Service\nmetadata: {{name: web}}\nspec:\n  command: [/bin/sleep, \"100000\"]\n  restart: always\n  configFiles: [{}]\n  onConfigChange: restart\n  silence:\n    matchers: ['job=\"web\"', 'severity!=\"info\"']\n    for: 10m\n",
            cfg.display()
        ),
    );
    let run = um.spawn_run(&["--alertmanager", &am.url("")]);
    wait_for(T, "web Ready", || um.ready("web").filter(|r| r.0 == "True"));
    assert!(am.silences().is_empty(), "a first start is not silenced");
    let pid0 = um.prop("web.service", "MainPID");

    // 1. A config change restarts web: exactly one silence, made before
    //    the stop, expired within 5 s of Ready.
    write(&cfg, "v2\n");
    let pid1 = wait_for(T, "web restarted", || {
        Some(um.prop("web.service", "MainPID")).filter(|p| p != &pid0 && p != "0")
    });
    let s = wait_for(T, "the silence expired", || {
        let all = am.silences();
        all.iter()
            .find(|s| s["status"]["state"] == "expired")
            .cloned()
    });
    let all = am.silences();
    assert_eq!(all.len(), 1, "exactly one silence: {all:#?}");
    assert_eq!(s["createdBy"], "unitlet");
    assert!(
        s["comment"].as_str().unwrap().contains("web"),
        "{}",
        s["comment"]
    );
    let mut matchers: Vec<(String, String, bool, bool)> = s["matchers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_string(),
                m["value"].as_str().unwrap().to_string(),
                m["isRegex"].as_bool().unwrap(),
                m["isEqual"].as_bool().unwrap_or(true),
            )
        })
        .collect();
    matchers.sort();
    assert_eq!(
        matchers,
        [
            ("job".to_string(), "web".to_string(), false, true),
            ("severity".to_string(), "info".to_string(), false, false),
        ]
    );
    let starts = epoch(s["startsAt"].as_str().unwrap());
    let ends = epoch(s["endsAt"].as_str().unwrap());
    let stopped = unit_time(&um, "web.service", "ActiveExitTimestamp");
    let active = unit_time(&um, "web.service", "ActiveEnterTimestamp");
    assert!(
        starts <= stopped + 0.001,
        "silence starts {starts} after the stop began {stopped}"
    );
    assert!(active >= stopped);
    assert!(
        ends - active < 5.0,
        "expired {:.3}s after web was active again",
        ends - active
    );
    // The silence expires inside the handed-out work; its events reach
    // the status with the pass that folds the work's outcome in.
    let ev = wait_for(T, "the silence's events in the status", || {
        let ev = events(&um, "web");
        ev.iter().any(|(r, _)| r == "SilenceExpired").then_some(ev)
    });
    let pos = |r: &str| ev.iter().position(|(reason, _)| reason == r);
    assert!(
        pos("SilenceCreated") < pos("Restarted") && pos("Restarted") < pos("SilenceExpired"),
        "{ev:#?}"
    );

    // 2. A kill -9 by hand: systemd restarts it (Restart=always), and no
    //    silence is made.
    unsafe {
        libc::kill(pid1.parse::<i32>().unwrap(), libc::SIGKILL);
    }
    let pid2 = wait_for(T, "web restarted by systemd", || {
        Some(um.prop("web.service", "MainPID")).filter(|p| p != &pid1 && p != "0")
    });
    // The operator has seen it: its status names the new process' state
    // after the kill (a pass ran since).
    let killed_at = SystemTime::now();
    um.write_manifest(
        "other.yaml",
        "apiVersion: unitlet/v1\nkind: Service\nmetadata: {name: other}\nspec:\n  command: [/bin/sleep, \"100000\"]\n",
    );
    wait_for(T, "a pass after the kill", || {
        um.ready("other").filter(|r| r.0 == "True")
    });
    assert!(killed_at.elapsed().unwrap() < T);
    assert_eq!(um.prop("web.service", "MainPID"), pid2);
    assert_eq!(am.silences().len(), 1, "a crash is never silenced");

    // 3. Alertmanager down: the restart still happens; the event says why
    //    there is no silence.
    am.stop();
    write(&cfg, "v3\n");
    wait_for(T, "web restarted without Alertmanager", || {
        Some(um.prop("web.service", "MainPID")).filter(|p| p != &pid2 && p != "0")
    });
    let (_, msg) = wait_for(T, "a SilenceFailed event", || {
        events(&um, "web")
            .into_iter()
            .find(|(r, _)| r == "SilenceFailed")
    });
    assert!(msg.contains("goes ahead anyway"), "{msg}");
    assert!(msg.contains("connection refused"), "{msg}");
    assert!(msg.contains(&format!("127.0.0.1:{}", am.port)), "{msg}");
    drop(run);
}

/// The runbook mistake: silences sent to Prometheus' port. Prometheus has
/// no silence API; the error says to point at Alertmanager instead.
#[test]
fn a_silence_sent_to_prometheus_says_to_use_alertmanager() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.yml"), "global: {}\n").unwrap();
    let port = free_port();
    let mut prom = Command::new("/usr/bin/prometheus")
        .current_dir(dir.path())
        .args([
            "--config.file=p.yml",
            "--storage.tsdb.path=data",
            &format!("--web.listen-address=127.0.0.1:{port}"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    wait_for(T, "prometheus ready", || {
        http_get(&format!("{base}/-/ready")).filter(|(c, _)| *c == 200)
    });
    let req = unitlet::alertmanager::SilenceRequest {
        alertmanager: base.clone(),
        service: "web".into(),
        matchers: vec![unitlet::manifest::parse_matcher("job=web").unwrap()],
        duration: Duration::from_secs(60),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let e = rt
        .block_on(unitlet::alertmanager::create(
            &unitlet::reload::http_client(),
            &req,
            "test",
        ))
        .unwrap_err()
        .to_string();
    unsafe {
        libc::kill(prom.id() as i32, libc::SIGTERM);
    }
    let _ = prom.wait();
    assert!(e.contains("answered 404"), "{e}");
    assert!(e.contains("not at Prometheus' :9090"), "{e}");
}

/// A rollback is a planned restart too: silenced before it, unsilenced
/// once the rolled-back revision is Ready.
#[test]
fn a_rollback_is_silenced_until_the_good_revision_is_ready() {
    let um = UserManager::start();
    let am = Alertmanager::start(&um.runtime.join("am"));
    let spec = |cmd: &str| {
        format!(
            "apiVersion: unitlet/v1\nkind: Service\nmetadata: {{name: web, labels: {{job: webjob}}}}\nspec:\n  command: {cmd}\n  rollout: {{timeout: 20s}}\n  silence: {{}}\n"
        )
    };
    um.write_manifest("web.yaml", &spec("[/bin/sleep, \"100000\"]"));
    let _run = um.spawn_run(&["--alertmanager", &am.url("")]);
    crate::rollout::wait_first_revision_complete(&um);
    um.write_manifest("web.yaml", &spec("[/bin/sh, -c, \"exit 1\"]"));
    wait_for(T, "rolled back", || {
        um.ready("web")
            .filter(|r| r.1 == "RolledBack")
            .filter(|_| um.active("web.service") == "active")
    });
    let s = wait_for(T, "the rollback's silence expired", || {
        am.silences()
            .into_iter()
            .find(|s| s["status"]["state"] == "expired")
    });
    assert_eq!(am.silences().len(), 1, "{:#?}", am.silences());
    assert_eq!(s["createdBy"], "unitlet");
    // Made before the failing revision's restart, kept over the rollback.
    assert!(
        s["comment"]
            .as_str()
            .unwrap()
            .contains("restart after a change of its unit"),
        "{s}"
    );
    // The operator expires the silence, then records the event in its next
    // status write: wait for the event rather than read it at once.
    wait_for(
        T,
        "the SilenceExpired event naming the rolled-back revision",
        || {
            events(&um, "web")
                .iter()
                .any(|(r, m)| r == "SilenceExpired" && m.contains("rolled-back revision 1"))
                .then_some(())
        },
    );
    // The default matcher: the job label of the manifest.
    assert_eq!(s["matchers"][0]["name"], "job");
    assert_eq!(s["matchers"][0]["value"], "webjob");
    let starts = epoch(s["startsAt"].as_str().unwrap());
    let ends = epoch(s["endsAt"].as_str().unwrap());
    let active = unit_time(&um, "web.service", "ActiveEnterTimestamp");
    assert!(starts <= active, "made after the rollback started");
    assert!(
        ends - active < 5.0 + super::rollout_settle(),
        "expired {:.1}s after active",
        ends - active
    );
}

/// A restart because the manifest changed is planned too.
#[test]
fn a_restart_for_a_changed_manifest_is_silenced_until_ready() {
    let um = UserManager::start();
    let am = Alertmanager::start(&um.runtime.join("am"));
    let spec = |arg: &str| {
        format!(
            "apiVersion: unitlet/v1\nkind: Service\nmetadata: {{name: web}}\nspec:\n  command: [/bin/sleep, \"{arg}\"]\n  silence: {{matchers: ['job=\"web\"']}}\n"
        )
    };
    um.write_manifest("web.yaml", &spec("100000"));
    let _run = um.spawn_run(&["--alertmanager", &am.url("")]);
    crate::rollout::wait_first_revision_complete(&um);
    assert!(am.silences().is_empty(), "a first start is not silenced");
    um.write_manifest("web.yaml", &spec("200000"));
    let s = wait_for(T, "the silence expired", || {
        am.silences()
            .into_iter()
            .find(|s| s["status"]["state"] == "expired")
    });
    assert_eq!(am.silences().len(), 1, "{:#?}", am.silences());
    assert!(um.prop("web.service", "ExecStart").contains("200000"));
    let starts = epoch(s["startsAt"].as_str().unwrap());
    let ends = epoch(s["endsAt"].as_str().unwrap());
    let stopped = unit_time(&um, "web.service", "ActiveExitTimestamp");
    let active = unit_time(&um, "web.service", "ActiveEnterTimestamp");
    assert!(
        starts <= stopped + 0.001,
        "silence starts {starts} after the stop {stopped}"
    );
    assert!(
        ends - active < 5.0 + super::rollout_settle(),
        "expired {:.1}s after active",
        ends - active
    );
}

/// Issue 21, item 6: a restore that cannot happen (a mistyped set id, a
/// set without its `backup.json`) says so without creating any silence
/// (Alertmanager lists expired silences too: none may exist at all).
#[test]
fn issue21_6_a_restore_of_a_set_that_cannot_be_restored_makes_no_silence() {
    let um = UserManager::start();
    let am = Alertmanager::start(&um.runtime.join("am"));
    let data = um.runtime.join("prom/data");
    let dest = um.runtime.join("sets");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(dest.join("20261127T235501Z")).unwrap();
    um.write_manifest(
        "prometheus.yaml",
        "apiVersion: unitlet/v1\nkind: Service\nmetadata: {name: prometheus}\nspec:\n  command: [/bin/sleep, \"100000\"]\n  silence:\n    matchers: ['job=\"prometheus\"']\n    for: 10m\n",
    );
    um.write_manifest(
        "tsdb.yaml",
        &format!(
            "apiVersion: unitlet/v1\nkind: Backup\nmetadata:\n  name: tsdb\nspec:\n  schedule: every 6h\n  destination: {}\n  prometheus:\n    url: http://127.0.0.1:9\n    dataDir: {}\n    service: prometheus\n",
            dest.display(),
            data.display()
        ),
    );
    for (id, says) in [
        ("20261127T23550IZ", "20261127T23550IZ"),
        ("20261127T235501Z", "incomplete"),
    ] {
        let o = um.unitlet(&["--alertmanager", &am.url(""), "restore", "tsdb", id]);
        let (out, err) = (crate::support::stdout(&o), crate::support::stderr(&o));
        assert_ne!(o.status.code(), Some(0), "{out}{err}");
        assert!(err.contains(says), "{id}: {out}{err}");
        assert_eq!(
            am.silences(),
            Vec::<serde_json::Value>::new(),
            "{id}: {out}{err}"
        );
    }
}
