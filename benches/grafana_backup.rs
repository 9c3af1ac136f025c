//! Backup of 1000 dashboards from the fake Grafana, with bounded concurrency
//! and sequentially, in one run so the two numbers are comparable.
//!
//! The fake adds a fixed per-request latency, standing in for a real
//! Grafana's response time; without it the loopback fake answers so fast
//! that concurrency has nothing to hide.
//!
//! Run: `cargo bench --bench grafana_backup` (env `DASHBOARDS`, `LATENCY_MS`,
//! `CONCURRENCY` override the defaults).

// Test and benchmark code: a panic is how it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/env.rs"]
mod env;
use env::env_or;

#[path = "../tests/it/fake_grafana.rs"]
mod fake_grafana;

use std::time::{Duration, Instant};

use fake_grafana::FakeGrafana;
use serde_json::json;
use unitlet::backup::Store;
use unitlet::grafana::{self, Auth, Client};

const TOKEN: &str = "bench-token";

fn main() {
    let dashboards = env_or("DASHBOARDS", 1000) as usize;
    let latency = Duration::from_millis(env_or("LATENCY_MS", 5));
    let concurrency = env_or("CONCURRENCY", 8) as usize;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let fake = FakeGrafana::start(TOKEN).await;
        fake.add_folder("a", "Alpha", None);
        fake.add_folder("b", "Beta", Some("a"));
        for i in 0..dashboards {
            let folder = [None, Some("a"), Some("b")][i % 3];
            let panels = json!([{ "id": 1, "type": "timeseries", "title": format!("Panel {i}"),
                                  "targets": [{ "expr": format!("up{{job=\"{i}\"}}") }] }]);
            fake.put_dashboard(
                &format!("d{i:05}"),
                &format!("Dashboard {i}"),
                folder,
                panels,
            );
        }
        fake.set_latency(latency);
        let client = Client::new(
            fake.url(),
            Auth::Token(TOKEN.into()),
            "bench token",
            Duration::from_secs(30),
        )
        .unwrap();

        println!("backup of {dashboards} dashboards, fake Grafana latency {latency:?} per request");
        let mut results = Vec::new();
        for c in [concurrency, 1] {
            let tmp = tempfile::tempdir().unwrap();
            let store = Store::open(tmp.path(), "dash", "grafana").unwrap();
            let start = Instant::now();
            let report = grafana::backup::backup(&client, &store, c).await.unwrap();
            let elapsed = start.elapsed();
            assert_eq!(report.dashboards, dashboards);
            println!(
                "  concurrency {c:>2}: {:>8.2?}  ({:.0} dashboards/s, set {} bytes)",
                elapsed,
                dashboards as f64 / elapsed.as_secs_f64(),
                report.set.size
            );
            results.push(elapsed);
        }
        println!(
            "  speed-up: {:.1}x",
            results[1].as_secs_f64() / results[0].as_secs_f64()
        );
    });
}
