//! A TSDB for the backup benches: `promtool tsdb create-blocks-from
//! openmetrics` of random values with jittered timestamps (which defeats
//! most of Gorilla compression, so few samples make many bytes), one input
//! file per 2h block to keep promtool's memory small.

use std::io::{BufWriter, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

pub const SERIES: u64 = 1000;
pub const SAMPLES_PER_SERIES: u64 = 4000;
/// Measured with promtool 2.42 on this data: about 9.6 bytes per sample.
pub const BYTES_PER_SAMPLE: u64 = 9;
pub const BLOCK_MS: i64 = 2 * 3600 * 1000;

/// xorshift64*: deterministic, fast, good enough to defeat compression.
pub struct Rng(pub u64);

/// How many 2h blocks make a TSDB of `target_mb`, and the start of the
/// first (unix ms, aligned to 2h so each input file is exactly one
/// block), the last one ending `gap` blocks before now.
pub fn block_plan(target_mb: u64, gap: i64) -> (u64, i64) {
    let per_block = SERIES * SAMPLES_PER_SERIES * BYTES_PER_SAMPLE;
    let blocks = (target_mb << 20).div_ceil(per_block).max(1);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    (blocks, (now_ms / BLOCK_MS - blocks as i64 - gap) * BLOCK_MS)
}

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// One 2h block's worth of OpenMetrics text starting at `start_ms`.
pub fn write_chunk(path: &Path, start_ms: i64, rng: &mut Rng) {
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

/// Backfills one 2h block starting at `start_ms` into `out` (its input
/// written to `input`, then removed).
pub fn backfill(input: &Path, out: &Path, start_ms: i64, rng: &mut Rng) {
    write_chunk(input, start_ms, rng);
    let st = Command::new("/usr/bin/promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics", "-q"])
        .arg(input)
        .arg(out)
        .status()
        .unwrap();
    assert!(st.success(), "promtool failed");
    std::fs::remove_file(input).unwrap();
}

/// Bytes of the regular files below `dir` (a hard link counted each time).
pub fn du(dir: &Path) -> u64 {
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

/// `GET path` on 127.0.0.1:`port`: the status code, if anything answers.
pub fn http_get(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\n\r\n").ok()?;
    let mut r = String::new();
    s.read_to_string(&mut r).ok()?;
    r.split_whitespace().nth(1)?.parse().ok()
}
