//! Issue 24's benchmark: repeat backups of a TSDB that grows by one block
//! per round, incremental (`unitlet backup`, to Prometheus' own filesystem
//! and to another one) against unitlet 0.2's full sets, `cp -a` of the data
//! directory and `restic backup` of the same snapshot; then restores of
//! the last set (from each destination; from the same filesystem also
//! with a cold page cache) against `cp -a` of the same data.
//!
//! A real Prometheus 2.42 runs as a unitlet Service in a private
//! `systemd --user` (like the integration tests), scraping itself every
//! second so the snapshot has a head; blocks never compact (min and max
//! block duration 2h). The TSDB is backfilled with `promtool`
//! (`common/tsdb_gen.rs`): `TSDB_MB` of it first, then one new 2h block per
//! round (generated once, then Prometheus restarted to load it, out of the
//! measurement; the new blocks go before the oldest one so nothing
//! overlaps the head).
//!
//! Per round, each contender's wall time and the bytes it wrote, counted
//! from its destination: the sizes of the files whose inode was not there
//! before the round (a hard link to a stored block counts nothing).
//! - `inc same fs`: `unitlet backup` with the destination beside the data
//!   (new blocks are hard links of the snapshot's own links);
//! - `inc other fs`: `unitlet backup` to a tmpfs mounted by the bench;
//! - `0.2 full`: what unitlet 0.2 did on another filesystem (the current
//!   code no longer can): the snapshot copied whole into a new set on the
//!   tmpfs (chunked copy, fsync), every file hashed, `backup.json` —
//!   measured, then deleted (one full copy at a time);
//! - `cp -a`: of the data directory, beside it; measured, then deleted;
//! - `restic`: snapshot API, then `restic backup --ignore-ctime` of the
//!   snapshot (always at the same path, the previous snapshot as parent)
//!   into a local repository beside the data.
//!
//! Run: `cargo bench --bench tsdb_incremental` (env `TSDB_MB`, default
//! 2048; `ROUNDS`, default 10; `BENCH_DIR`, default `/var/tmp`; `SHOW_LOG=1`
//! prints each `unitlet backup`'s and `unitlet restore`'s debug log, with
//! times, on stderr; `TSDB_CACHE=DIR` keeps the generated base TSDB in DIR
//! and takes it from there on the next run). Needs root
//! (tmpfs), systemd, Prometheus, promtool and restic. Disk: about 3.5× the
//! TSDB during the rounds (data, its copy, the restic repository), plus 3×
//! the TSDB with the restores (each from the tmpfs leaves a full copy, the
//! data it replaced moved aside).

// Test and benchmark code: a panic is how it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/env.rs"]
mod env;
#[path = "../tests/it/support/mod.rs"]
mod support;
#[path = "common/tsdb_gen.rs"]
mod tsdb_gen;

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use env::env_or;
use support::{Tmpfs, UserManager, stderr, stdout, wait_for};
use tsdb_gen::{BLOCK_MS, Rng, backfill, block_plan, du, http_get};
use unitlet::backup::Store;
use unitlet::prometheus::Client;

const PROMETHEUS: &str = "/usr/bin/prometheus";
const RESTIC: &str = "/usr/bin/restic";

/// Inode → size of every regular file below `dir`.
fn inodes(dir: &Path) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    if !dir.exists() {
        return out;
    }
    for e in walkdir::WalkDir::new(dir) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            let m = e.metadata().unwrap();
            out.push((m.ino(), m.len()));
        }
    }
    out
}

/// Bytes below `dir` with each inode counted once.
fn unique_bytes(dir: &Path) -> u64 {
    let mut seen = HashSet::new();
    inodes(dir)
        .into_iter()
        .filter(|(i, _)| seen.insert(*i))
        .map(|(_, s)| s)
        .sum()
}

/// What a destination gained: the bytes of files whose inode is new.
struct Written(HashSet<u64>);

impl Written {
    fn before(dir: &Path) -> Written {
        Written(inodes(dir).into_iter().map(|(i, _)| i).collect())
    }

    fn since(&self, dir: &Path) -> u64 {
        let mut seen = HashSet::new();
        inodes(dir)
            .into_iter()
            .filter(|(i, _)| !self.0.contains(i) && seen.insert(*i))
            .map(|(_, s)| s)
            .sum()
    }
}

/// `sync`: what earlier steps left dirty is written back before the next
/// measurement starts (not timed).
fn settle() {
    assert!(Command::new("sync").status().unwrap().success());
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

/// The set ID in `backup NAME: set ID complete: …`.
fn set_id(out: &str) -> String {
    out.split_once(": set ")
        .and_then(|(_, r)| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no set id in {out:?}"))
        .to_owned()
}

/// `(name, new, bytes)` of the blocks a set's `backup.json` lists.
fn set_blocks(set: &Path) -> Vec<(String, bool, u64)> {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(set.join("backup.json")).unwrap()).unwrap();
    v["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["name"].as_str().unwrap().to_owned(),
                b["new"].as_bool().unwrap(),
                b["bytes"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Block directories (ULIDs) directly in `dir`.
fn block_names(dir: &Path) -> HashSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("meta.json").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

struct Bench {
    um: UserManager,
    tmp: PathBuf,
    data: PathBuf,
    port: u16,
    rt: tokio::runtime::Runtime,
    url: String,
    /// 0.2's sets, on the tmpfs.
    full_store: Store,
    repo: PathBuf,
    restic_parent: Option<String>,
}

/// One contender's round.
#[derive(Clone, Copy, Default)]
struct Took {
    secs: f64,
    bytes: u64,
}

impl Bench {
    /// A snapshot through the admin API (a new client each time: a pooled
    /// connection does not survive Prometheus' restarts between rounds).
    fn snapshot(&self) -> String {
        let client = Client::new(&self.url, Duration::from_secs(60)).unwrap();
        self.rt.block_on(client.snapshot()).unwrap()
    }

    fn wait_ready(&self) {
        wait_for(Duration::from_secs(300), "Prometheus ready", || {
            (http_get(self.port, "/-/ready") == Some(200)).then_some(())
        });
    }

    fn systemctl(&self, args: &[&str]) {
        let o = self.um.systemctl(args);
        assert!(o.status.success(), "systemctl {args:?}: {}", stderr(&o));
    }

    /// Moves the blocks of `incoming` into the data directory with
    /// Prometheus stopped, and waits until it serves them.
    fn add_blocks(&self, incoming: &Path) {
        self.systemctl(&["stop", "prometheus.service"]);
        for b in block_names(incoming) {
            std::fs::rename(incoming.join(&b), self.data.join(&b)).unwrap();
        }
        self.systemctl(&["start", "prometheus.service"]);
        self.wait_ready();
    }

    /// `unitlet backup NAME`: time, bytes new in `dest`, the set's ID.
    fn unitlet_backup(&self, name: &str, dest: &Path) -> (Took, String) {
        let before = Written::before(dest);
        let log = std::env::var_os("SHOW_LOG").map_or("warn", |_| "debug");
        let t = Instant::now();
        let o = self
            .um
            .unitlet_env(&["backup", name], &[("UNITLET_LOG", Path::new(log))]);
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
        if log == "debug" {
            eprintln!("unitlet backup {name} ({secs:.3}s):\n{}", stderr(&o));
        }
        let id = set_id(&stdout(&o));
        let bytes = before.since(dest);
        (Took { secs, bytes }, id)
    }

    /// Unitlet 0.2's backup to another filesystem: the snapshot copied
    /// whole into a new set, every file hashed; then the set is deleted.
    fn full_set_02(&self) -> Took {
        let t = Instant::now();
        let name = self.snapshot();
        let src = self.data.join("snapshots").join(&name);
        let mut set = self.full_store.begin(&self.url).unwrap();
        let dst = set.dir().join("snapshot");
        let mut files = Vec::new();
        for e in walkdir::WalkDir::new(&src).sort_by_file_name() {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(&src).unwrap();
            if e.file_type().is_dir() {
                std::fs::create_dir_all(dst.join(rel)).unwrap();
            } else {
                unitlet::fsutil::copy_file_with(e.path(), &dst.join(rel), |_| {}).unwrap();
                files.push(format!("snapshot/{}", rel.display()));
            }
        }
        for f in &files {
            set.add_existing(f).unwrap();
        }
        set.write_file("prometheus.json", b"{}").unwrap();
        let info = set.finish().unwrap();
        std::fs::remove_dir_all(&src).unwrap();
        let secs = t.elapsed().as_secs_f64();
        let bytes = du(&info.path);
        std::fs::remove_dir_all(&info.path).unwrap();
        Took { secs, bytes }
    }

    /// `cp -a` of the data directory beside it; then the copy is deleted.
    fn cp_a(&self, from: &Path) -> Took {
        let to = self.tmp.join("cp-copy");
        let t = Instant::now();
        let st = Command::new("cp").arg("-a").arg(from).arg(&to).status();
        assert!(st.unwrap().success());
        let secs = t.elapsed().as_secs_f64();
        let bytes = du(&to);
        std::fs::remove_dir_all(&to).unwrap();
        Took { secs, bytes }
    }

    /// `cp -a` then `sync -f` (the copy made durable, as a restore's is);
    /// then the copy is deleted.
    fn cp_a_sync(&self, from: &Path) -> Took {
        let to = self.tmp.join("cp-copy");
        let t = Instant::now();
        let st = Command::new("cp").arg("-a").arg(from).arg(&to).status();
        assert!(st.unwrap().success());
        let st = Command::new("sync").arg("-f").arg(&to).status();
        assert!(st.unwrap().success());
        let secs = t.elapsed().as_secs_f64();
        let bytes = du(&to);
        std::fs::remove_dir_all(&to).unwrap();
        Took { secs, bytes }
    }

    fn restic(&self, args: &[&str], dir: &Path) -> std::process::Output {
        let o = Command::new(RESTIC)
            .arg("-r")
            .arg(&self.repo)
            .args(args)
            .current_dir(dir)
            .env("RESTIC_PASSWORD", "bench")
            .env("RESTIC_CACHE_DIR", self.tmp.join("restic-cache"))
            .output()
            .unwrap();
        assert!(o.status.success(), "restic {args:?}: {}", stderr(&o));
        o
    }

    /// A snapshot through the API, then `restic backup` of it from the
    /// same path every round (the previous snapshot as parent).
    fn restic_backup(&mut self) -> Took {
        let before = Written::before(&self.repo);
        let src = self.tmp.join("restic-src");
        let t = Instant::now();
        let name = self.snapshot();
        std::fs::rename(self.data.join("snapshots").join(&name), &src).unwrap();
        let mut args = vec!["backup", "--json", "--quiet", "--ignore-ctime"];
        let parent = self.restic_parent.clone();
        if let Some(p) = &parent {
            args.extend(["--parent", p]);
        }
        args.push(".");
        let o = self.restic(&args, &src);
        let secs = t.elapsed().as_secs_f64();
        std::fs::remove_dir_all(&src).unwrap();
        let summary = stdout(&o)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["message_type"] == "summary")
            .expect("restic's summary");
        self.restic_parent = Some(summary["snapshot_id"].as_str().unwrap().to_owned());
        Took {
            secs,
            bytes: before.since(&self.repo),
        }
    }
}

fn manifests(um: &UserManager, port: u16, data: &Path, same: &Path, other: &Path, cfg: &Path) {
    std::fs::write(
        cfg,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: prometheus\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ),
    )
    .unwrap();
    um.write_manifest(
        "prometheus.yaml",
        &format!(
            "apiVersion: unitlet/v1\nkind: Service\nmetadata:\n  name: prometheus\nspec:\n  command: [{PROMETHEUS}, --config.file={}, --storage.tsdb.path={}, --web.listen-address=127.0.0.1:{port}, --web.enable-admin-api, --storage.tsdb.retention.time=100y, --storage.tsdb.min-block-duration=2h, --storage.tsdb.max-block-duration=2h]\n  readiness:\n    http:\n      url: http://127.0.0.1:{port}/-/ready\n",
            cfg.display(),
            data.display()
        ),
    );
    for (name, dest) in [("inc-same", same), ("inc-other", other)] {
        um.write_manifest(
            &format!("{name}.yaml"),
            &format!(
                "apiVersion: unitlet/v1\nkind: Backup\nmetadata:\n  name: {name}\nspec:\n  schedule: every 6h\n  keep: 100\n  destination: {}\n  prometheus:\n    url: http://127.0.0.1:{port}\n    dataDir: {}\n    service: prometheus\n",
                dest.display(),
                data.display()
            ),
        );
    }
}

/// The base TSDB: `blocks` 2h blocks ending two blocks before now.
/// The time a restore's parts take on their own, for the record: `cp -a`
/// then `sync` of the set, sha256 of every file, a Prometheus restart
/// until ready, a snapshot API call.
fn restore_parts(bench: &Bench, dest: &Path, id: &str) -> String {
    settle();
    let cp_sync = bench.cp_a_sync(&dest.join(id).join("snapshot"));
    settle();
    let t = Instant::now();
    Store::open(dest, "inc-same", "prometheus")
        .unwrap()
        .verify(id)
        .unwrap();
    let verify = t.elapsed().as_secs_f64();
    let t = Instant::now();
    std::fs::remove_dir_all(bench.data.join("snapshots").join(bench.snapshot())).unwrap();
    let snap_api = t.elapsed().as_secs_f64();
    let t = Instant::now();
    bench.systemctl(&["restart", "prometheus.service"]);
    bench.wait_ready();
    let restart = t.elapsed().as_secs_f64();
    format!(
        "parts: cp -a + sync {:.2}s; verify (sha256 of every file, one thread) {verify:.2}s; Prometheus restart until ready {restart:.2}s; snapshot API call {snap_api:.2}s",
        cp_sync.secs
    )
}

/// Drops the page cache (clean pages only: `settle` first).
fn drop_caches() {
    settle();
    std::fs::write("/proc/sys/vm/drop_caches", "3").unwrap();
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `unitlet restore NAME ID` end to end against `cp -a` (and `cp -a` +
/// `sync`) of the set's `snapshot/` beside the data directory, each
/// started on a quiet disk, with a cold page cache when `cold`; the three
/// times, in seconds.
fn restore_vs_cp(bench: &Bench, dest: &Path, name: &str, id: &str, cold: bool) -> [f64; 3] {
    let snapshot = dest.join(id).join("snapshot");
    let quiet = || if cold { drop_caches() } else { settle() };
    quiet();
    let cp = bench.cp_a(&snapshot);
    quiet();
    let cp_sync = bench.cp_a_sync(&snapshot);
    quiet();
    let log = std::env::var_os("SHOW_LOG").map_or("info", |_| "debug");
    let t = Instant::now();
    let o = bench
        .um
        .unitlet_env(&["restore", name, id], &[("UNITLET_LOG", Path::new(log))]);
    let restore = t.elapsed().as_secs_f64();
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let cache = if cold { "cold" } else { "warm" };
    println!(
        "restore of {name} set {id} ({:.0} MiB, {cache} cache): {restore:.2}s; cp -a of its snapshot {:.2}s: {:.2}× (goal ≤ 1.5×); cp -a + sync {:.2}s: {:.2}×",
        mib(cp.bytes),
        cp.secs,
        restore / cp.secs,
        cp_sync.secs,
        restore / cp_sync.secs,
    );
    if log == "debug" {
        eprintln!("{}{}", stdout(&o), stderr(&o));
    }
    [restore, cp.secs, cp_sync.secs]
}

/// Fills `data` from `TSDB_CACHE` when it holds a base TSDB (saved there
/// by an earlier run), else backfills one (and saves it when `TSDB_CACHE`
/// is set); the first block's start time. Saves minutes of `promtool` per
/// run when only the restore is measured (`ROUNDS=0`).
fn base_tsdb_cached(tmp: &Path, data: &Path, blocks: u64, first: i64, rng: &mut Rng) -> i64 {
    let Some(cache) = std::env::var_os("TSDB_CACHE").map(PathBuf::from) else {
        base_tsdb(tmp, data, blocks, first, rng);
        return first;
    };
    let stamp = cache.join(format!("first-{blocks}"));
    let cp = |from: &Path, to: &Path| {
        let st = Command::new("cp").arg("-a").arg(from).arg(to).status();
        assert!(st.unwrap().success());
    };
    if let Ok(saved) = std::fs::read_to_string(&stamp) {
        for b in block_names(&cache) {
            cp(&cache.join(&b), &data.join(&b));
        }
        eprintln!("base TSDB copied from {}", cache.display());
        return saved.trim().parse().unwrap();
    }
    base_tsdb(tmp, data, blocks, first, rng);
    let _ = std::fs::remove_dir_all(&cache);
    std::fs::create_dir_all(&cache).unwrap();
    for b in block_names(data) {
        cp(&data.join(&b), &cache.join(&b));
    }
    std::fs::write(&stamp, first.to_string()).unwrap();
    first
}

fn base_tsdb(tmp: &Path, data: &Path, blocks: u64, first: i64, rng: &mut Rng) {
    let t = Instant::now();
    for b in 0..blocks {
        backfill(&tmp.join("in.om"), data, first + b as i64 * BLOCK_MS, rng);
        eprint!("\rbackfilled {}/{blocks} blocks", b + 1);
    }
    eprintln!(
        "\rbackfilled {blocks} blocks, {:.0} MiB, in {:.0}s",
        mib(du(data)),
        t.elapsed().as_secs_f64()
    );
}

fn main() {
    let target_mb = env_or("TSDB_MB", 2048);
    let rounds = env_or("ROUNDS", 10) as i64;
    for tool in [PROMETHEUS, "/usr/bin/promtool", RESTIC] {
        assert!(Path::new(tool).exists(), "this benchmark needs {tool}");
    }
    let tmpdir = tempfile::Builder::new()
        .prefix("unitlet-bench-incr.")
        .tempdir_in(std::env::var_os("BENCH_DIR").unwrap_or_else(|| "/var/tmp".into()))
        .unwrap();
    let tmp = tmpdir.path().to_path_buf();
    let data = tmp.join("data");
    std::fs::create_dir(&data).unwrap();
    let (blocks, first) = block_plan(target_mb, 2);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let first = base_tsdb_cached(&tmp, &data, blocks, first, &mut rng);
    let tsdb_bytes = du(&data);

    // Big enough for the incremental sets and one 0.2 full set beside them.
    let other = Tmpfs::mount(
        &tmp.join("other"),
        &format!("{}m", 3 * mib(tsdb_bytes) as u64 + 2048),
    );
    let same_dest = tmp.join("dest-same");
    let other_dest = other.path().join("dest");
    let um = UserManager::start();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    manifests(
        &um,
        port,
        &data,
        &same_dest,
        &other_dest,
        &tmp.join("prometheus.yml"),
    );
    let o = um.unitlet(&["apply"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let url = format!("http://127.0.0.1:{port}");
    let mut bench = Bench {
        um,
        tmp: tmp.clone(),
        data: data.clone(),
        port,
        rt: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
        url: url.clone(),
        full_store: Store::open(&other.path().join("full"), "full", "prometheus").unwrap(),
        repo: tmp.join("restic-repo"),
        restic_parent: None,
    };
    bench.wait_ready();
    // Some head data to back up.
    std::thread::sleep(Duration::from_secs(5));
    bench.restic(&["init"], &tmp);

    println!(
        "tsdb_incremental: {:.0} MiB in {blocks} blocks, {rounds} rounds",
        mib(tsdb_bytes)
    );
    println!(
        "| round | new block MiB | head MiB | inc same fs s / MiB | inc other fs s / MiB | 0.2 full s / MiB | cp -a s / MiB | restic s / MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut added_bytes = 0;
    let mut rows = Vec::new();
    let mut last_id = (String::new(), String::new());
    for round in 0..=rounds {
        let mut new_block = 0;
        let mut new_name = String::new();
        if round > 0 {
            let incoming = tmp.join("incoming");
            std::fs::create_dir_all(&incoming).unwrap();
            backfill(
                &tmp.join("in.om"),
                &incoming,
                first - round * BLOCK_MS,
                &mut rng,
            );
            new_name = block_names(&incoming).into_iter().next().unwrap();
            new_block = du(&incoming);
            added_bytes += new_block;
            bench.add_blocks(&incoming);
        }
        // Each contender starts on a quiet disk: without the `sync`, the
        // writeback of the previous one's gigabytes (`cp -a`'s, 0.2's)
        // lands in the next one's fsyncs (measured: 0.11 s became 1.5 s).
        settle();
        let (same, id) = bench.unitlet_backup("inc-same", &same_dest);
        settle();
        let (oth, other_id) = bench.unitlet_backup("inc-other", &other_dest);
        let head: u64 = set_blocks(&same_dest.join(&id))
            .iter()
            .filter(|(n, new, _)| *new && !data.join(n).is_dir() && *n != new_name)
            .map(|b| b.2)
            .sum();
        settle();
        let full = bench.full_set_02();
        settle();
        let cp = bench.cp_a(&data);
        settle();
        let restic = bench.restic_backup();
        let row = [same, oth, full, cp, restic];
        let cell = |t: Took| format!("{:.2} / {:.1}", t.secs, mib(t.bytes));
        println!(
            "| {round} | {:.1} | {:.2} | {} |",
            mib(new_block),
            mib(head),
            row.map(cell).join(" | ")
        );
        rows.push((new_block, head, row));
        last_id = (id, other_id);
    }

    // Goals.
    let (first_same, first_other) = (rows[0].2[0], rows[0].2[1]);
    let repeat = &rows[1..];
    let worst_bytes = repeat
        .iter()
        .map(|(nb, head, r)| r[1].bytes as f64 / (nb + head) as f64)
        .fold(0.0, f64::max);
    let worst_time_same = repeat
        .iter()
        .map(|(_, _, r)| r[0].secs / first_same.secs)
        .fold(0.0, f64::max);
    let worst_time_other = repeat
        .iter()
        .map(|(_, _, r)| r[1].secs / first_other.secs)
        .fold(0.0, f64::max);
    let vs_restic = repeat
        .iter()
        .map(|(_, _, r)| r[0].secs / r[4].secs)
        .fold(0.0, f64::max);
    println!(
        "repeat backup (other fs) bytes / (new block + head): worst {worst_bytes:.3} (goal ≤ 1.1)"
    );
    println!(
        "repeat backup time / first backup's: worst {:.1} % same fs, {:.1} % other fs (goal ≤ 10 %)",
        worst_time_same * 100.0,
        worst_time_other * 100.0
    );
    println!(
        "repeat backup (same fs) / restic repeat backup time: worst {vs_restic:.2} (goal ≤ 1)"
    );
    let heads: u64 = rows.iter().map(|r| r.1).sum();
    let total = unique_bytes(&other_dest);
    println!(
        "{} sets on the other fs: {:.0} MiB for a {:.0} MiB TSDB + {:.0} MiB of new blocks + {:.1} MiB of heads: {:.3}× (goal ≤ 1.2×)",
        rows.len(),
        mib(total),
        mib(tsdb_bytes),
        mib(added_bytes),
        mib(heads),
        total as f64 / (tsdb_bytes + added_bytes) as f64
    );
    println!(
        "restic repository: {:.0} MiB",
        mib(unique_bytes(&bench.repo))
    );

    // Restore of the last set against `cp -a` of the same data, from each
    // destination: on Prometheus' filesystem the set's files are linked
    // into place and hashed; from the tmpfs they are copied, hashed and
    // fsynced. From the same filesystem also with a cold page cache (a set
    // written days ago is read from the disk), `cp -a` then too — last:
    // on a virtual machine, memory freed by dropping the cache is slow to
    // touch again for a while (measured: the tmpfs restore's copy 1.3 s
    // before, 3–4 s after). `RESTORE_RUNS` (default 3) of each, `cp -a`
    // and the restore in turn.
    let parts = restore_parts(&bench, &same_dest, &last_id.0);
    println!("{parts}");
    let runs = env_or("RESTORE_RUNS", 3) as usize;
    for (dest, name, id, cold) in [
        (&same_dest, "inc-same", &last_id.0, false),
        (&other_dest, "inc-other", &last_id.1, false),
        (&same_dest, "inc-same", &last_id.0, true),
    ] {
        let times: Vec<[f64; 3]> = (0..runs)
            .map(|_| restore_vs_cp(&bench, dest, name, id, cold))
            .collect();
        let col = |i: usize| times.iter().map(|t| t[i]).collect::<Vec<_>>();
        let (restore, cp, cp_sync) = (median(col(0)), median(col(1)), median(col(2)));
        let fastest_cp = col(1).into_iter().fold(f64::INFINITY, f64::min);
        println!(
            "{name} ({} cache), medians of {runs}: restore {restore:.2}s, cp -a {cp:.2}s (fastest {fastest_cp:.2}s), cp -a + sync {cp_sync:.2}s; restore / cp -a {:.2}× (goal ≤ 1.5×), / fastest cp -a {:.2}×, / cp -a + sync {:.2}×",
            if cold { "cold" } else { "warm" },
            restore / cp,
            restore / fastest_cp,
            restore / cp_sync,
        );
    }
    drop(bench);
    drop(other);
}
