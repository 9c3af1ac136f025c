//! Whole-instance Grafana backup and restore against the fake Grafana with a
//! fixed per-request latency, unitlet vs grafana-backup-tool 1.4.2, same run,
//! same data: 300 dashboards in 3 folders (and the General folder), plus,
//! for unitlet, every other kind it backs up (folder permissions, 2
//! datasources, 2 library panels, 5 alert rules in 2 groups, 2 contact
//! points, the policy tree, a mute timing, a template). grafana-backup-tool
//! does folders and dashboards only (`--components`), which is what it
//! restores correctly.
//!
//! Measured per step: wall time, requests the fake saw, requests per
//! dashboard, writes. Then a repeat restore into the restored instance:
//! unitlet must write nothing.
//!
//! Run: `cargo bench --bench grafana_restore` (env `DASHBOARDS`,
//! `LATENCY_MS` override 300 and 5; `BENCH_DIR` where sets and the tool's
//! files go, default the temporary directory). grafana-backup-tool is taken from
//! `$GRAFANA_BACKUP_TOOL` or installed into `target/tools/` (needs python3
//! and PyPI); without it only unitlet's numbers are printed.

// Test and benchmark code: a panic is how it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/env.rs"]
mod env;
use env::env_or;

#[path = "../tests/it/fake_grafana.rs"]
mod fake_grafana;
#[path = "../tests/it/grafana_backup_tool.rs"]
mod tool;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use fake_grafana::FakeGrafana;
use serde_json::{Value, json};
use unitlet::backup::Store;
use unitlet::grafana::restore::RestoreOptions;
use unitlet::grafana::{self, Auth, Client, SecureValues};

const TOKEN: &str = "bench-token";

fn rule(uid: &str, folder: &str, group: &str) -> Value {
    json!({
        "uid": uid, "folderUID": folder, "ruleGroup": group, "title": format!("Rule {uid}"),
        "condition": "A",
        "data": [{"refId": "A", "datasourceUid": "prom", "model": {"expr": "up == 0"}}],
        "for": "5m", "labels": {"severity": "critical"},
    })
}

fn seed(fake: &FakeGrafana, dashboards: usize) {
    for (uid, title) in [("a", "Alpha"), ("b", "Beta"), ("c", "Gamma")] {
        fake.add_folder(uid, title, None);
        fake.set_folder_permissions(
            uid,
            json!([{"role": "Viewer", "permission": 1}, {"teamId": 2, "permission": 2}]),
        );
    }
    fake.add_datasource(json!({
        "uid": "prom", "name": "Prometheus", "type": "prometheus", "url": "http://127.0.0.1:9090",
        "basicAuth": true, "basicAuthUser": "g", "secureJsonData": {"basicAuthPassword": "pw"},
    }));
    fake.add_datasource(
        json!({"uid": "loki", "name": "Loki", "type": "loki", "url": "http://127.0.0.1:3100"}),
    );
    fake.add_library_panel(
        "lib-cpu",
        "CPU",
        Some("a"),
        json!({"type": "timeseries", "title": "CPU"}),
    );
    fake.add_library_panel(
        "lib-mem",
        "Memory",
        None,
        json!({"type": "stat", "title": "Memory"}),
    );
    for i in 0..dashboards {
        let folder = [None, Some("a"), Some("b"), Some("c")][i % 4];
        let mut panels = vec![json!({
            "id": 1, "type": "timeseries", "title": format!("Panel {i}"),
            "gridPos": {"x": 0, "y": 0, "w": 12, "h": 8},
            "targets": [{"expr": format!("up{{job=\"{i}\"}}"), "refId": "A"}],
        })];
        if i % 10 == 0 {
            panels.push(json!({"id": 2, "libraryPanel": {"uid": "lib-cpu", "name": "CPU"}}));
        }
        fake.put_dashboard(
            &format!("d{i:05}"),
            &format!("Dashboard {i}"),
            folder,
            Value::Array(panels),
        );
    }
    fake.put_rule_group(
        "a",
        "g1",
        60,
        json!([
            rule("r1", "a", "g1"),
            rule("r2", "a", "g1"),
            rule("r3", "a", "g1")
        ]),
    );
    fake.put_rule_group(
        "b",
        "g2",
        120,
        json!([rule("r4", "b", "g2"), rule("r5", "b", "g2")]),
    );
    fake.add_template("t", "{{ define \"t\" }}x{{ end }}");
    fake.add_contact_point(
        json!({"uid": "cp1", "name": "Email", "type": "email", "settings": {"addresses": "a@b.c"}}),
    );
    fake.add_contact_point(
        json!({"uid": "cp2", "name": "Hook", "type": "webhook", "settings": {"url": "http://h"}}),
    );
    fake.add_mute_timing(
        json!({"name": "weekends", "time_intervals": [{"weekdays": ["saturday"]}]}),
    );
    fake.set_policies(json!({"receiver": "Email", "routes": [
        {"receiver": "Hook", "object_matchers": [["team", "=", "ops"]], "mute_time_intervals": ["weekends"]},
        {"receiver": "Email", "object_matchers": [["severity", "=", "critical"]]},
    ]}));
}

/// One measured step.
struct Step {
    name: String,
    time: Duration,
    requests: usize,
    writes: usize,
}

async fn measure<F: Future>(fake: &FakeGrafana, name: &str, f: F) -> (Step, F::Output) {
    let (requests, writes) = (fake.requests(), fake.writes());
    let start = Instant::now();
    let out = f.await;
    let step = Step {
        name: name.to_owned(),
        time: start.elapsed(),
        requests: fake.requests() - requests,
        writes: fake.writes() - writes,
    };
    (step, out)
}

fn main() {
    let dashboards = env_or("DASHBOARDS", 300) as usize;
    let latency = Duration::from_millis(env_or("LATENCY_MS", 5));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let fake = FakeGrafana::start(TOKEN).await;
        seed(&fake, dashboards);
        let original = fake.content();
        fake.set_latency(latency);
        let client = Client::new(fake.url(), Auth::Token(TOKEN.into()), "bench token", Duration::from_secs(30)).unwrap();
        // `BENCH_DIR` (e.g. /dev/shm) takes the sets and the tool's files off
        // a disk other work keeps busy: a set is made durable with syncfs.
        let base: PathBuf = std::env::var_os("BENCH_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let tmp = tempfile::Builder::new()
            .prefix("bench-")
            .tempdir_in(base)
            .unwrap();
        let store = Store::open(&tmp.path().join("sets"), "g", grafana::KIND).unwrap();
        let opts = RestoreOptions {
            secure_values: SecureValues::from_map(BTreeMap::from([(
                "prom".to_owned(),
                BTreeMap::from([("basicAuthPassword".to_owned(), "pw".to_owned())]),
            )])),
            ..RestoreOptions::default()
        };
        let mut steps = Vec::new();

        let (step, report) = measure(&fake, "unitlet backup (every kind)", grafana::backup::backup(&client, &store, 8)).await;
        let report = report.unwrap();
        steps.push(step);
        let set = store.verify(&report.set.id).unwrap();
        fake.clear();
        let (step, restored) = measure(&fake, "unitlet restore into empty (every kind)", grafana::restore::restore(&client, &set, &opts)).await;
        let restored = restored.unwrap();
        assert!(restored.is_success(), "{restored}");
        assert!(fake.content() == original, "unitlet's restore is not the original");
        steps.push(step);
        let versions = fake.total_versions();
        let (step, again) = measure(&fake, "unitlet repeat restore", grafana::restore::restore(&client, &set, &opts)).await;
        assert_eq!(again.unwrap().writes(), 0);
        assert_eq!(fake.total_versions(), versions);
        steps.push(step);

        match tokio::task::spawn_blocking(tool::find_or_install).await.unwrap() {
            Err(e) => println!("grafana-backup-tool unavailable, its rows are missing: {e}"),
            Ok(exe) => {
                let work: PathBuf = tmp.path().join("tool");
                std::fs::create_dir_all(&work).unwrap();
                let run = |args: Vec<String>| {
                    let (exe, work, url) = (exe.clone(), work.clone(), fake.url().to_owned());
                    tokio::task::spawn_blocking(move || {
                        let args: Vec<&str> = args.iter().map(String::as_str).collect();
                        tool::run(&exe, &work, &url, TOKEN, &args).unwrap_or_else(|e| panic!("{e}"));
                    })
                };
                let (step, out) = measure(&fake, "grafana-backup-tool save (folders, dashboards)",
                    run(vec!["save".into(), "--components=folders,dashboards".into()])).await;
                out.unwrap();
                steps.push(step);
                let archive = tool::archive(&work).to_string_lossy().into_owned();
                let restore_args = vec!["restore".to_owned(), "--components=folders,dashboards".to_owned(), archive];
                fake.clear();
                let (step, out) = measure(&fake, "grafana-backup-tool restore into empty (folders, dashboards)", run(restore_args.clone())).await;
                out.unwrap();
                steps.push(step);
                assert_eq!(fake.dashboards().len(), dashboards, "the tool lost dashboards");
                let (step, out) = measure(&fake, "grafana-backup-tool repeat restore", run(restore_args)).await;
                out.unwrap();
                steps.push(step);
            }
        }

        println!("{dashboards} dashboards, 3 folders; fake Grafana latency {latency:?} per request");
        println!("| step | time | requests | requests/dashboard | writes |");
        println!("|---|---|---|---|---|");
        for s in &steps {
            println!(
                "| {} | {:.2?} | {} | {:.2} | {} |",
                s.name, s.time, s.requests, s.requests as f64 / dashboards as f64, s.writes
            );
        }
        if steps.len() == 6 {
            println!(
                "speed-up over grafana-backup-tool: backup {:.1}x, restore into empty {:.1}x, repeat restore {:.1}x",
                steps[3].time.as_secs_f64() / steps[0].time.as_secs_f64(),
                steps[4].time.as_secs_f64() / steps[1].time.as_secs_f64(),
                steps[5].time.as_secs_f64() / steps[2].time.as_secs_f64(),
            );
        }
    });
}
