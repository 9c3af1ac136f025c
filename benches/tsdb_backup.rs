//! Backup and verify throughput of a real Prometheus TSDB, against `cp -a`
//! of the same directory in the same run, so the numbers are comparable on
//! whatever machine runs it.
//!
//! The TSDB is backfilled with `promtool tsdb create-blocks-from
//! openmetrics` (`common/tsdb_gen.rs`). A real Prometheus then
//! serves it so the backup goes through the snapshot API exactly as
//! `unitlet backup` does.
//!
//! All reads are from a warm page cache (the data was just written): the
//! numbers compare unitlet's work with a plain copy, not disks.
//!
//! Run: `cargo bench --bench tsdb_backup` (env `TSDB_MB`, default 512).

// Test and benchmark code: a panic is how it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/env.rs"]
mod env;
use env::env_or;

#[path = "common/tsdb_gen.rs"]
mod tsdb_gen;
use tsdb_gen::{BLOCK_MS, Rng, backfill, block_plan, du, http_get};

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use unitlet::backup::Store;
use unitlet::prometheus::Client;
use unitlet::prometheus::tsdb::backup_tsdb;

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn mb_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let target_mb = env_or("TSDB_MB", 512);
    for tool in ["/usr/bin/prometheus", "/usr/bin/promtool"] {
        assert!(Path::new(tool).exists(), "this benchmark needs {tool}");
    }
    let tmp = tempfile::Builder::new()
        .prefix("unitlet-bench-tsdb.")
        .tempdir_in(std::env::var_os("BENCH_DIR").unwrap_or_else(|| "/var/tmp".into()))
        .unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();

    let (blocks, first) = block_plan(target_mb, 1);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let t = Instant::now();
    for b in 0..blocks {
        let input = tmp.path().join("in.om");
        backfill(&input, &data, first + b as i64 * BLOCK_MS, &mut rng);
        eprint!("\rbackfilled {}/{blocks} blocks", b + 1);
    }
    let size = du(&data);
    eprintln!(
        "\rbackfilled {blocks} blocks, {:.0} MiB, in {:.1}s",
        size as f64 / (1 << 20) as f64,
        t.elapsed().as_secs_f64()
    );
    assert!(
        size >= target_mb << 20 || std::env::var_os("TSDB_MB").is_some(),
        "the TSDB came out smaller than {target_mb} MiB ({size} bytes); raise BYTES_PER_SAMPLE's estimate"
    );

    // A real Prometheus on it; no compaction, so nothing rewrites blocks
    // while we measure.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = tmp.path().join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 1m\n").unwrap();
    let _prom = Prometheus(
        Command::new("/usr/bin/prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args([
                "--web.enable-admin-api",
                "--storage.tsdb.retention.time=100y",
                "--storage.tsdb.min-block-duration=2h",
                "--storage.tsdb.max-block-duration=2h",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let start = Instant::now();
    while http_get(port, "/-/ready") != Some(200) {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "Prometheus did not become ready"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = Store::open(&tmp.path().join("backups"), "tsdb", "prometheus").unwrap();
    let client = Client::new(&format!("http://127.0.0.1:{port}"), Duration::from_secs(30)).unwrap();

    let t = Instant::now();
    let set = rt
        .block_on(backup_tsdb(&client, &data, &store, false))
        .expect("backup");
    let backup = t.elapsed();
    let t = Instant::now();
    store.verify(&set.id).expect("verify");
    let verify = t.elapsed();
    let t = Instant::now();
    let st = Command::new("cp")
        .arg("-a")
        .arg(&data)
        .arg(tmp.path().join("cp-copy"))
        .status()
        .unwrap();
    assert!(st.success());
    let cp = t.elapsed();

    let mib = set.size as f64 / (1 << 20) as f64;
    println!(
        "tsdb_backup: {mib:.0} MiB in {} files ({blocks} blocks)",
        set.files
    );
    println!(
        "  backup (snapshot + move + sha256 + seal): {:>7.2}s  {:>8.0} MiB/s",
        backup.as_secs_f64(),
        mb_s(set.size, backup)
    );
    println!(
        "  verify (sha256 of every file):            {:>7.2}s  {:>8.0} MiB/s",
        verify.as_secs_f64(),
        mb_s(set.size, verify)
    );
    println!(
        "  cp -a of the data directory:              {:>7.2}s  {:>8.0} MiB/s",
        cp.as_secs_f64(),
        mb_s(size, cp)
    );
    println!(
        "  backup + verify vs cp -a:                 {:.2}x the time",
        (backup + verify).as_secs_f64() / cp.as_secs_f64()
    );
}
