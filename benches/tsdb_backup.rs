//! Backup and verify throughput of a real Prometheus TSDB, against `cp -a`
//! of the same directory in the same run, so the numbers are comparable on
//! whatever machine runs it.
//!
//! The TSDB is backfilled with `promtool tsdb create-blocks-from
//! openmetrics` from random values with jittered timestamps (which defeats
//! most of Gorilla compression, so few samples make many bytes), one input
//! file per 2h block to keep promtool's memory small. A real Prometheus then
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

use std::io::{BufWriter, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use unitlet::backup::Store;
use unitlet::prometheus::Client;
use unitlet::prometheus::tsdb::backup_tsdb;

const SERIES: u64 = 1000;
const SAMPLES_PER_SERIES: u64 = 4000;
/// Measured with promtool 2.42 on this data: about 9.6 bytes per sample.
const BYTES_PER_SAMPLE: u64 = 9;
const BLOCK_MS: i64 = 2 * 3600 * 1000;

/// xorshift64*: deterministic, fast, good enough to defeat compression.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// One 2h block's worth of OpenMetrics text starting at `start_ms`.
fn write_chunk(path: &Path, start_ms: i64, rng: &mut Rng) {
    let mut f = BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    writeln!(
        f,
        "# HELP bench_value Random values.\n# TYPE bench_value gauge"
    )
    .unwrap();
    let step = BLOCK_MS / SAMPLES_PER_SERIES as i64 - 40;
    for s in 0..SERIES {
        let mut t = start_ms;
        for _ in 0..SAMPLES_PER_SERIES {
            t += step + (rng.next() % 30) as i64;
            let v = (rng.next() >> 11) as f64 / (1u64 << 53) as f64 * 1e6;
            writeln!(
                f,
                "bench_value{{series=\"{s}\"}} {v} {}.{:03}",
                t / 1000,
                t % 1000
            )
            .unwrap();
        }
    }
    writeln!(f, "# EOF").unwrap();
    f.flush().unwrap();
}

fn du(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let ty = e.file_type().unwrap();
        if ty.is_dir() {
            total += du(&e.path());
        } else if ty.is_file() {
            total += e.metadata().unwrap().len();
        }
    }
    total
}

fn http_get(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\n\r\n").ok()?;
    let mut r = String::new();
    s.read_to_string(&mut r).ok()?;
    r.split_whitespace().nth(1)?.parse().ok()
}

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

    let per_block = SERIES * SAMPLES_PER_SERIES * BYTES_PER_SAMPLE;
    let blocks = (target_mb << 20).div_ceil(per_block).max(1);
    let now_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // Aligned to 2h so each input file is exactly one block.
    let first = (now_ms / BLOCK_MS - blocks as i64 - 1) * BLOCK_MS;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let t = Instant::now();
    for b in 0..blocks {
        let input = tmp.path().join("in.om");
        write_chunk(&input, first + b as i64 * BLOCK_MS, &mut rng);
        let st = Command::new("/usr/bin/promtool")
            .args(["tsdb", "create-blocks-from", "openmetrics", "-q"])
            .arg(&input)
            .arg(&data)
            .status()
            .unwrap();
        assert!(st.success(), "promtool failed");
        std::fs::remove_file(&input).unwrap();
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
