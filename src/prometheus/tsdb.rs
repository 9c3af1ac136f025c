//! Backup and restore of a Prometheus TSDB directory.
//!
//! Set layout:
//! - `snapshot/<ULID>/{meta.json,index,chunks/…,tombstones}`: the blocks of
//!   the snapshot Prometheus made, exactly as it wrote them;
//! - `prometheus.json`: where it came from and the time range of each block,
//!   so a restore can ask the restored Prometheus for data it must have.
//!
//! Backup puts each block of the snapshot through the destination's block
//! store (`crate::backup::BlockStore`: stored and hashed once, then only
//! hard-linked into each set), and then removes the snapshot from
//! Prometheus' `snapshots/` directory, so that directory does not grow with
//! every scheduled run.
//!
//! Restore copies the set (never moves it: the set must stay restorable)
//! into a sibling of the data directory *before* stopping Prometheus, so a
//! full disk or a damaged file is found while Prometheus still runs on its
//! data, and the downtime is two renames plus a start. On the data
//! directory's filesystem each file is hard-linked (block files are
//! immutable), elsewhere copied in the kernel (`copy_file_range`); each
//! staged file is read back and its sha256 compared with the set's record
//! on hashing threads (one per core), and each copy fsynced on another,
//! while the next file is staged: what is swapped in is what was checked,
//! and durable.

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::client::Client;
use super::swap::{active_state, check_managed, free_sibling, rename, run_job, sd_err, stamp};
use super::{KIND, PrometheusError};
use crate::backup::{FileEntry, SetInfo, SetWriter, Store, VerifiedSet};
use crate::fsutil::sync_tree;
use crate::hold::Hold;
use crate::journal::{self, Journal, Owner, Record, RestoreLock, Step};
use crate::manager::{JobKind, UserManager as _};
use crate::systemd::Systemd;

type Result<T, E = PrometheusError> = std::result::Result<T, E>;

/// The directory inside a set holding the TSDB blocks.
pub const SNAPSHOT_DIR: &str = "snapshot";

/// What the set says about itself beyond `backup.json`.
const INFO_FILE: &str = "prometheus.json";

/// One block of the snapshot, from its `meta.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockRange {
    /// The block's ULID (its directory name).
    pub ulid: String,
    /// First sample time, unix milliseconds, inclusive.
    pub min_time: i64,
    /// Last sample time, unix milliseconds, exclusive.
    pub max_time: i64,
}

/// The content of `prometheus.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SnapshotInfo {
    /// The name Prometheus gave the snapshot.
    snapshot: String,
    /// The Prometheus it came from.
    url: String,
    /// The data directory it was taken out of.
    data_dir: PathBuf,
    /// Blocks, oldest first.
    blocks: Vec<BlockRange>,
}

/// A progress bar on stderr when `enabled` (a terminal), else a no-op:
/// a scheduled run's journal should not fill with redraws.
fn progress_bar(enabled: bool, total: u64, what: &str) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_owned());
    pb
}

/// Runs blocking filesystem work off the async runtime's thread, passing
/// panics on.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Backs up the TSDB of the Prometheus at `client` (whose storage path is
/// `data_dir`) into a new set of `store`.
///
/// # Guarantees
/// The set is complete (has `backup.json`) only if every file of the
/// snapshot is in it and recorded with size and sha256. On any error the
/// set is removed to give the space back; earlier sets are not touched. The snapshot never stays behind in `data_dir/snapshots`.
///
/// # Caveats
/// On the same filesystem the set's files are hard links shared with the
/// live blocks (that is how Prometheus snapshots are made). Prometheus
/// never rewrites block files in place, and restore re-verifies every hash
/// anyway.
///
/// # Errors
/// [`PrometheusError::Unreachable`] and friends when Prometheus cannot
/// snapshot; [`PrometheusError::SnapshotMissing`] when `data_dir` is not
/// its storage path; [`PrometheusError::Copy`] (naming the path) when the
/// destination fills up or is not writable.
pub async fn backup_tsdb(
    client: &Client,
    data_dir: &Path,
    store: &Store,
    progress: bool,
) -> Result<SetInfo> {
    // Asking Prometheus first: if it is down, no empty set is left behind.
    let name = client.snapshot().await?;
    let snapshots = data_dir.join("snapshots");
    let src = snapshots.join(&name);
    tracing::info!(snapshot = %name, dir = %src.display(), "Prometheus made a snapshot");
    let url = client.base_url().to_owned();
    let data_dir = data_dir.to_path_buf();
    let store = store.clone();
    blocking(move || take_snapshot(&store, &url, &data_dir, &name, progress)).await
}

fn take_snapshot(
    store: &Store,
    url: &str,
    data_dir: &Path,
    name: &str,
    progress: bool,
) -> Result<SetInfo> {
    let snapshots = data_dir.join("snapshots");
    let src = snapshots.join(name);
    if !src.is_dir() {
        return Err(PrometheusError::SnapshotMissing {
            url: url.to_owned(),
            name: name.to_owned(),
            path: src,
        });
    }
    // Whatever happens below, the snapshot must not stay in Prometheus'
    // directory: it would pin deleted blocks' disk space forever.
    let result = (|| {
        let mut set = store.begin(url)?;
        let blocks = store_snapshot(store, &mut set, &src, progress)?;
        let info = SnapshotInfo {
            snapshot: name.to_owned(),
            url: url.to_owned(),
            data_dir: data_dir.to_path_buf(),
            blocks,
        };
        // Fails only for a data directory whose path is not UTF-8.
        let bytes = serde_json::to_vec_pretty(&info).map_err(|e| PrometheusError::Io {
            op: "write".into(),
            path: set.dir().join(INFO_FILE),
            source: std::io::Error::other(e),
        })?;
        set.write_file(INFO_FILE, &bytes)?;
        Ok(set.finish()?)
    })();
    if src.exists()
        && let Err(e) = fs::remove_dir_all(&src)
    {
        tracing::warn!(dir = %src.display(), error = %e, "cannot remove the snapshot from Prometheus' snapshots directory; delete it by hand");
    }
    result
}

/// Puts the snapshot into the set: each block directory through the
/// destination's block store (stored once, then only linked), any other
/// file copied into the set. The ranges of the blocks, oldest first.
fn store_snapshot(
    store: &Store,
    set: &mut SetWriter,
    src: &Path,
    progress: bool,
) -> Result<Vec<BlockRange>> {
    let io_err = |source| PrometheusError::Io {
        op: "list".to_owned(),
        path: src.to_path_buf(),
        source,
    };
    let mut entries: Vec<(String, bool)> = Vec::new();
    for e in fs::read_dir(src).map_err(io_err)? {
        let e = e.map_err(io_err)?;
        let ty = e.file_type().map_err(io_err)?;
        let name = e.file_name().to_string_lossy().into_owned();
        if ty.is_dir() || ty.is_file() {
            entries.push((name, ty.is_dir()));
        } else {
            tracing::warn!(path = %e.path().display(), "not a regular file; not backed up");
        }
    }
    entries.sort();
    let blocks = store.blocks()?;
    let pb = progress_bar(progress, tree_size(src), "storing");
    let mut ranges = Vec::new();
    for (name, is_dir) in entries {
        let path = src.join(&name);
        if !is_dir {
            let bytes = fs::read(&path).map_err(|source| PrometheusError::Io {
                op: "read".to_owned(),
                path: path.clone(),
                source,
            })?;
            set.write_file(&format!("{SNAPSHOT_DIR}/{name}"), &bytes)?;
            continue;
        }
        let stored = blocks
            .store(&name, &path)
            .map_err(|e| full_error(e, store, set, src, &path))?;
        set.link_block(&blocks, SNAPSHOT_DIR, &stored)?;
        pb.inc(stored.bytes());
        if let Some(range) = fs::read(blocks.file_path(&stored, "meta.json"))
            .ok()
            .and_then(|b| parse_block_meta(&b))
        {
            ranges.push(range);
        }
    }
    pb.finish_and_clear();
    ranges.sort_by_key(|b| b.min_time);
    Ok(ranges)
}

/// A full destination while storing a block says so, with what the set
/// needed and what is free; other errors pass.
fn full_error(
    e: crate::backup::BackupError,
    store: &Store,
    set: &SetWriter,
    src: &Path,
    block: &Path,
) -> PrometheusError {
    match e {
        crate::backup::BackupError::Write { path, source, .. }
            if crate::backup::is_out_of_space(&source) =>
        {
            let free = rustix::fs::statvfs(store.path())
                .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
                .unwrap_or(0);
            PrometheusError::Copy {
                from: block.to_path_buf(),
                to: path,
                hint: format!(
                    "the backup destination {} is full: the set needed about {} and {} is free there; backup set {} was removed; earlier sets are untouched; free space in {} or set `destination` to a bigger filesystem",
                    store.path().display(),
                    crate::size::size_text(tree_size(src)),
                    crate::size::size_text(free),
                    set.id(),
                    store.path().display()
                ),
                source,
            }
        }
        e => e.into(),
    }
}

/// `(ulid, minTime, maxTime)` of a block's `meta.json`.
fn parse_block_meta(bytes: &[u8]) -> Option<BlockRange> {
    serde_json::from_slice(bytes).ok()
}

/// Regular files below `dir`, relative and `/`-separated, sorted, with
/// sizes. Anything else (a symlink included, never followed) is not backed
/// up, with a warning.
fn list_files(dir: &Path) -> io::Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(dir).min_depth(1).sort_by_file_name() {
        let e = e?;
        let ty = e.file_type();
        if ty.is_file() {
            let rel = e.path().strip_prefix(dir).unwrap_or(e.path());
            out.push((rel.to_string_lossy().into_owned(), e.metadata()?.len()));
        } else if !ty.is_dir() {
            tracing::warn!(path = %e.path().display(), "not a regular file; not backed up");
        }
    }
    Ok(out)
}

fn tree_size(dir: &Path) -> u64 {
    list_files(dir)
        .map(|f| f.iter().map(|x| x.1).sum())
        .unwrap_or(0)
}

type CopyError = (PathBuf, PathBuf, io::Error);

// ---------------------------------------------------------------------------
// Restore

/// What to restore, from where, and who runs Prometheus.
#[derive(Debug, Clone, Copy)]
pub struct RestoreTarget<'a> {
    /// The Backup manifest (messages only).
    pub backup: &'a str,
    /// Its destination.
    pub store: &'a Store,
    /// The set to restore.
    pub id: &'a str,
    /// Prometheus' `--storage.tsdb.path`.
    pub data_dir: &'a Path,
    /// The Service manifest running Prometheus (unit `NAME.service`); the
    /// hold is taken on this name so `unitlet run` leaves it alone.
    pub service: &'a str,
    /// Prometheus, to wait for readiness and check the restored data.
    pub client: &'a Client,
    /// unitlet's state directory, where holds live.
    pub state_dir: &'a Path,
    /// The bus address (`None`: the session bus).
    pub bus: Option<&'a str>,
}

/// How a restore behaves.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Verify and say what would happen; change nothing.
    pub dry_run: bool,
    /// Show progress bars (only when stderr is a terminal).
    pub progress: bool,
    /// Deadline of each stop/start job.
    pub job_timeout: Duration,
    /// How long Prometheus may take to become ready on the restored data
    /// (opening a large TSDB takes a while).
    pub ready_timeout: Duration,
    /// How long the restored data may take to answer the check query.
    pub check_timeout: Duration,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            dry_run: false,
            progress: false,
            job_timeout: Duration::from_secs(90),
            ready_timeout: Duration::from_secs(300),
            check_timeout: Duration::from_secs(60),
        }
    }
}

/// What a restore did (or, dry, would do).
#[derive(Debug, Clone)]
pub struct RestoreReport {
    /// The restored set.
    pub set_id: String,
    /// The data directory now holding the set's data.
    pub data_dir: PathBuf,
    /// The unit that was stopped and started.
    pub unit: String,
    /// Nothing was changed.
    pub dry_run: bool,
    /// Files and bytes copied.
    pub files: usize,
    /// Bytes copied.
    pub bytes: u64,
    /// Where the data that was replaced went (`None`: there was none).
    pub replaced: Option<PathBuf>,
    /// What proved that the restored data answers, if anything could.
    pub checked: Option<String>,
    /// An interrupted earlier restore this one finished or undid first.
    pub recovered: Option<String>,
    /// Dry run: an interrupted restore a real one would recover first.
    pub pending: Option<String>,
}

impl fmt::Display for RestoreReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dd = self.data_dir.display();
        if let Some(r) = &self.recovered {
            writeln!(f, "first, {r}")?;
        }
        if let Some(p) = &self.pending {
            writeln!(f, "note: {p}; a restore recovers it first")?;
        }
        if self.dry_run {
            writeln!(
                f,
                "dry run: backup set {} verified ({} files, {} bytes); nothing was changed. A restore would:",
                self.set_id, self.files, self.bytes
            )?;
            writeln!(f, "  1. copy the set into a sibling of {dd}")?;
            writeln!(f, "  2. stop {}", self.unit)?;
            match &self.replaced {
                Some(r) => writeln!(f, "  3. move {dd} aside to {}", r.display())?,
                None => writeln!(f, "  3. ({dd} does not exist: nothing to move aside)")?,
            }
            writeln!(f, "  4. move the copy into place as {dd}")?;
            writeln!(
                f,
                "  5. start {}, wait until ready and check that the restored data answers queries",
                self.unit
            )?;
            return Ok(());
        }
        writeln!(
            f,
            "restored backup set {} into {dd} ({} files, {} bytes); {} is running",
            self.set_id, self.files, self.bytes, self.unit
        )?;
        if let Some(c) = &self.checked {
            writeln!(f, "checked: {c}")?;
        }
        match &self.replaced {
            Some(r) => writeln!(
                f,
                "the data it replaced was moved to {} (delete it when you no longer need it)",
                r.display()
            ),
            None => writeln!(f, "there was no data at {dd} to replace"),
        }
    }
}

/// The snapshot's block ranges, from the verified set.
///
/// # Errors
/// [`PrometheusError::InvalidSet`] for a block whose `meta.json` is not
/// one: Prometheus might skip such a block silently, and the restore would
/// then lose it while claiming success.
fn set_blocks(set: &VerifiedSet) -> Result<Vec<BlockRange>> {
    let mut blocks = Vec::new();
    for f in set.files() {
        if let Some(block) = f
            .path
            .strip_prefix(&format!("{SNAPSHOT_DIR}/"))
            .and_then(|p| p.strip_suffix("/meta.json"))
            && !block.contains('/')
        {
            let bytes = set.read(&f.path)?;
            match parse_block_meta(&bytes) {
                Some(b) if b.max_time > b.min_time => blocks.push(b),
                _ => {
                    return Err(PrometheusError::InvalidSet {
                        id: set.info().id.clone(),
                        file: f.path.clone(),
                        reason: "not a TSDB block meta.json (ulid, minTime < maxTime)".to_owned(),
                    });
                }
            }
        }
    }
    blocks.sort_by_key(|b| b.min_time);
    Ok(blocks)
}

/// The blocks the data check queries: the oldest and the newest, so both
/// ends of the restored range are proven to be there.
fn check_blocks(blocks: &[BlockRange]) -> Vec<&BlockRange> {
    let mut v: Vec<&BlockRange> = blocks.first().into_iter().collect();
    if let Some(last) = blocks.iter().max_by_key(|b| b.max_time)
        && v.first().is_none_or(|f| f.ulid != last.ulid)
    {
        v.push(last);
    }
    v
}

/// A query that finds any sample of `block`: every series' last sample in
/// the block's whole range, evaluated at its end.
pub fn check_query(block: &BlockRange) -> (String, f64) {
    let range = (block.max_time - block.min_time).max(1);
    (
        format!("count(last_over_time({{__name__=~\".+\"}}[{range}ms]))"),
        (block.max_time - 1) as f64 / 1000.0,
    )
}

/// Stages the set's snapshot in `to` (a new directory) and hashes every
/// staged file, so what lands, and is later swapped in, is exactly what
/// `backup.json` says. Each file is hard-linked when the set is on the data
/// directory's filesystem (TSDB block files are immutable: Prometheus
/// replaces a block's `meta.json` or `tombstones` by rename and never writes
/// into them, which is why its own snapshots are links too), else copied.
fn copy_set(set: &VerifiedSet, to: &Path, mode: u32, progress: bool) -> Result<(usize, u64)> {
    let prefix = format!("{SNAPSHOT_DIR}/");
    let mut files: Vec<_> = set
        .files()
        .iter()
        .filter(|f| f.path.starts_with(&prefix))
        .map(|f| (f, to.join(&f.path[prefix.len()..])))
        .collect();
    // Largest first: the hashing threads finish together.
    files.sort_by_key(|(f, _)| std::cmp::Reverse(f.size));
    let total = files.iter().map(|(f, _)| f.size).sum();
    let copy_err = |from: &Path, to: &Path, source| copy_error(from, to, source);
    fs::DirBuilder::new()
        .mode(mode)
        .create(to)
        .map_err(|e| copy_err(set.dir(), to, e))?;
    // Directories first (empty ones too: a block with no chunks still has
    // its `chunks/` directory), then files.
    let snap = set.dir().join(SNAPSHOT_DIR);
    if snap.is_dir() {
        copy_dirs(&snap, to).map_err(|(from, to, e)| copy_err(&from, &to, e))?;
    }
    let pb = progress_bar(progress, total, "staging");
    let started = std::time::Instant::now();
    // The copies are made durable as they are made (links hold no new
    // data); the directories after.
    let copied = stage_and_check(set, &files, &pb)?;
    pb.finish_and_clear();
    let staged = started.elapsed();
    sync_tree(to).map_err(|e| copy_err(set.dir(), to, e))?;
    tracing::debug!(files = files.len(), copied, bytes = total, ?staged, dirs_synced = ?(started.elapsed() - staged), "set staged, hashed and durable");
    Ok((files.len(), total))
}

/// A restore's copy error: nothing was changed yet.
fn copy_error(from: &Path, to: &Path, source: io::Error) -> PrometheusError {
    PrometheusError::Copy {
        from: from.to_path_buf(),
        to: to.to_path_buf(),
        hint: "nothing was changed; the partial copy was removed".to_owned(),
        source,
    }
}

/// How many staged files may wait for their hash check.
const HASH_QUEUE: usize = 8;

/// Stages each `(recorded file, destination)` ([`stage_file`]: a hard
/// link, else an in-kernel copy) while hashing threads, one per core, read
/// each staged file back (from the page cache) and compare its sha256 with
/// the record, and another thread fsyncs each copy: staging one file
/// overlaps hashing and writing back the ones before, and hashing is
/// spread over the cores. The staged file, not the set's, is hashed: it is
/// what gets swapped in. The first mismatch or error stops all. Returns
/// how many files were copied (all of them durable).
fn stage_and_check(
    set: &VerifiedSet,
    files: &[(&FileEntry, PathBuf)],
    pb: &ProgressBar,
) -> Result<usize> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<&(&FileEntry, PathBuf)>(HASH_QUEUE);
    let rx = std::sync::Mutex::new(rx);
    let (sync_tx, sync_rx) = std::sync::mpsc::channel::<&Path>();
    let failed = AtomicBool::new(false);
    let hashers = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
    std::thread::scope(|scope| {
        let checkers: Vec<_> = (0..hashers)
            .map(|_| scope.spawn(|| check_staged(set, &rx, &failed, pb)))
            .collect();
        let syncer = scope.spawn(move || {
            // Every copy is fsynced, also after a failure: the receiver
            // stays until the stager is done, so it never blocks.
            let mut result = Ok(());
            for path in sync_rx {
                if let Err(e) = crate::fsutil::sync_file(path) {
                    result = result.and(Err(copy_error(set.dir(), path, e)));
                }
            }
            result
        });
        let staged = stage_files(set, files, &tx, &sync_tx, &failed);
        drop((tx, sync_tx));
        let synced = syncer.join().unwrap_or_else(|_| {
            Err(copy_error(
                set.dir(),
                set.dir(),
                io::Error::other("the fsync thread panicked"),
            ))
        });
        let mut checked = Ok(());
        for c in checkers {
            let r = c.join().unwrap_or_else(|_| {
                Err(copy_error(
                    set.dir(),
                    set.dir(),
                    io::Error::other("a hashing thread panicked"),
                ))
            });
            checked = checked.and(r);
        }
        checked.and(staged).and_then(|n| synced.map(|()| n))
    })
}

/// The staging half of [`stage_and_check`]: stages each file, hands it to
/// the hashing threads and each copy to the fsync thread; stops when the
/// hashing threads do (their error is the one to report). Returns how many
/// files were copied.
fn stage_files<'a>(
    set: &VerifiedSet,
    files: &'a [(&FileEntry, PathBuf)],
    tx: &std::sync::mpsc::SyncSender<&'a (&'a FileEntry, PathBuf)>,
    sync_tx: &std::sync::mpsc::Sender<&'a Path>,
    failed: &AtomicBool,
) -> Result<usize> {
    let mut link = true;
    let mut copied = 0;
    // Where the stager's time goes, for the debug log.
    let (mut staging, mut waiting) = (Duration::ZERO, Duration::ZERO);
    for item in files {
        if failed.load(Ordering::Relaxed) {
            break;
        }
        let (f, dest) = item;
        let from = set.dir().join(&f.path);
        let started = std::time::Instant::now();
        match stage_file(&from, dest, &mut link) {
            Ok(Staged::Linked) => {}
            Ok(Staged::Copied) => {
                copied += 1;
                // The fsync thread outlives the stager: this cannot fail.
                let _ = sync_tx.send(dest.as_path());
            }
            Err(e) => return Err(copy_error(&from, dest, e)),
        }
        let staged = started.elapsed();
        staging += staged;
        if tx.send(item).is_err() {
            break;
        }
        waiting += started.elapsed() - staged;
    }
    tracing::debug!(?staging, waiting_for_hashers = ?waiting, "staging done");
    Ok(copied)
}

/// How a file of the set reached the staging directory.
enum Staged {
    /// Hard-linked: same filesystem, no data written.
    Linked,
    /// Copied in the kernel: to be fsynced.
    Copied,
}

/// Hard-links `from` as `to` while `link` holds; once the kernel refuses
/// (another filesystem, or links to files of another owner forbidden),
/// `link` is cleared and this and every later file is copied.
fn stage_file(from: &Path, to: &Path, link: &mut bool) -> io::Result<Staged> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)?;
    }
    if *link {
        match fs::hard_link(from, to) {
            Ok(()) => return Ok(Staged::Linked),
            Err(e)
                if matches!(
                    rustix::io::Errno::from_io_error(&e),
                    Some(rustix::io::Errno::XDEV | rustix::io::Errno::PERM)
                ) =>
            {
                *link = false;
            }
            Err(e) => return Err(e),
        }
    }
    crate::fsutil::copy_file_in_kernel(from, to).map(|_| Staged::Copied)
}

/// One hashing thread of [`stage_and_check`]: checks staged files until
/// the stager is done. After a failure (here or in another thread:
/// `failed`) it only takes files off the queue, so the stager never blocks
/// on a full one; the stager stops at its next file.
fn check_staged(
    set: &VerifiedSet,
    rx: &std::sync::Mutex<std::sync::mpsc::Receiver<&(&FileEntry, PathBuf)>>,
    failed: &AtomicBool,
    pb: &ProgressBar,
) -> Result<()> {
    let mut result = Ok(());
    loop {
        // The lock is held only to take the next file, not to hash it.
        let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
        let Ok((f, dest)) = next else {
            return result;
        };
        if failed.load(Ordering::Relaxed) {
            continue;
        }
        match check_copy(set, f, dest) {
            Ok(()) => pb.inc(f.size),
            Err(e) => {
                failed.store(true, Ordering::Relaxed);
                result = Err(e);
            }
        }
    }
}

/// The sha256 of the staged copy `dest` of `f` against the set's record.
fn check_copy(set: &VerifiedSet, f: &FileEntry, dest: &Path) -> Result<()> {
    let mut hasher = Sha256::new();
    fs::File::open(dest)
        .and_then(|file| {
            crate::fsutil::for_each_chunk(file, 128 * 1024, |c| {
                hasher.update(c);
                Ok(())
            })
        })
        .map_err(|e| copy_error(dest, dest, e))?;
    if hex::encode(hasher.finalize()) != f.sha256 {
        return Err(PrometheusError::ChangedDuringCopy {
            id: set.info().id.clone(),
            file: f.path.clone(),
        });
    }
    Ok(())
}

/// Creates below `dst` the directories of the tree at `src` (no symlink
/// followed).
fn copy_dirs(src: &Path, dst: &Path) -> Result<(), CopyError> {
    for e in walkdir::WalkDir::new(src).min_depth(1) {
        let e = e.map_err(|e| (src.to_path_buf(), dst.to_path_buf(), e.into()))?;
        if e.file_type().is_dir() {
            let to = dst.join(e.path().strip_prefix(src).unwrap_or(e.path()));
            fs::create_dir_all(&to).map_err(|err| (e.path().to_path_buf(), to.clone(), err))?;
        }
    }
    Ok(())
}

/// Restores set `target.id` as Prometheus' data directory.
///
/// Order: take the service's restore lock (refused while another restore
/// of it runs) → recover an interrupted earlier restore of it → verify
/// every file → check the unit is unitlet's and there is room → copy the
/// set next to the data directory (Prometheus still running) → hold the
/// Service so `unitlet run` leaves it alone → stop → move the data
/// directory aside → move the copy into place → start → wait ready → query
/// the restored data → release the hold. Every step after the lock is
/// written to the restore journal ([`crate::journal`]) before it is taken.
///
/// # Guarantees
/// Nothing is stopped or changed unless the whole set verified and the copy
/// succeeded. No data directory is ever deleted: the replaced one is named
/// in the report. If anything fails after the stop, the restored copy is
/// moved aside (`DATADIR.failed-STAMP`), the old data put back, Prometheus
/// started again, and the error ([`PrometheusError::RolledBack`]) says so.
/// If the process dies at any point, the journal stays behind, holds the
/// service, and the next `apply`, `run` pass or `restore` finishes the
/// restore (when it was verified) or undoes it.
///
/// # Errors
/// [`PrometheusError::RestoreRunning`] while another restore of the same
/// service runs; store errors (incomplete, damaged, unknown set),
/// [`PrometheusError::NoSpace`], [`PrometheusError::NotManaged`], systemd
/// and readiness errors.
pub async fn restore_tsdb(t: RestoreTarget<'_>, opts: &RestoreOptions) -> Result<RestoreReport> {
    restore_tsdb_with(t, opts, async || ()).await.0
}

/// [`restore_tsdb`], calling `before_stop` once everything that can be
/// checked was (the set verified, an earlier restore recovered, the
/// Service managed, room for the copy, the copy made), right before the
/// Service is stopped: where `unitlet restore` silences its alerts, so a
/// restore refused for a mistyped set id silences nothing. Returns what
/// `before_stop` returned, if it was called (never on a dry run).
pub async fn restore_tsdb_with<B>(
    t: RestoreTarget<'_>,
    opts: &RestoreOptions,
    before_stop: impl AsyncFnOnce() -> B,
) -> (Result<RestoreReport>, Option<B>) {
    let mut before = None;
    let result = restore_checked_first(t, opts, before_stop, &mut before).await;
    (result, before)
}

/// The body of [`restore_tsdb_with`]: `before` receives what
/// `before_stop` returned, once it was called.
async fn restore_checked_first<B>(
    t: RestoreTarget<'_>,
    opts: &RestoreOptions,
    before_stop: impl AsyncFnOnce() -> B,
    before: &mut Option<B>,
) -> Result<RestoreReport> {
    let unit = format!("{}.service", t.service);
    // The lock first: a second restore of the service is refused at once.
    let lock = (!opts.dry_run).then(|| restore_lock(t)).transpose()?;
    // Layout and sizes here, every sha256 on the staging copy (a dry run's
    // here): all before anything is stopped. See [`verified_set`].
    let (set, blocks) = verified_set(t, opts.dry_run).await?;
    let sd = Systemd::connect(t.bus)
        .await
        .map_err(sd_err("cannot stop and start Prometheus".to_owned()))?;
    // Finish or undo a killed earlier restore (its data may be aside).
    let recovered = match &lock {
        Some(lock) => recover_earlier(lock, &sd, t.data_dir).await?,
        None => None,
    };
    let pending = opts.dry_run.then(|| pending_note(t)).flatten();
    let (files, bytes) = snapshot_size(&set);
    let now = stamp(SystemTime::now());
    let (data_dir, replaced) = placement(t, &now, bytes)?;
    check_managed(&sd, &unit, t.service).await?;
    let mut report = RestoreReport {
        set_id: set.info().id.clone(),
        data_dir: data_dir.clone(),
        unit: unit.clone(),
        dry_run: opts.dry_run,
        files,
        bytes,
        replaced: replaced.clone(),
        checked: None,
        recovered,
        pending,
    };
    let Some(lock) = lock else {
        return Ok(report);
    };
    let (journal, restoring) = stage_copy(t, opts, &set, lock, &data_dir, &replaced, &now).await?;
    *before = Some(before_stop().await);
    let mut journal = stop_for_swap(&sd, t, opts, &unit, journal, &restoring).await?;
    let mut swap = Swap {
        data_dir,
        replaced: None,
        restoring: Some(restoring),
        installed: false,
    };
    let swapped = swap_and_start(
        &sd,
        t,
        opts,
        &unit,
        &blocks,
        &mut swap,
        replaced.as_deref(),
        &mut journal,
    )
    .await;
    match swapped {
        Ok(checked) => {
            report.checked = checked;
            Ok(verified(journal, report))
        }
        Err(cause) => {
            if let Err(e) = journal.rolling_back(crate::error_chain(&cause)) {
                tracing::warn!(error = %e, "cannot record the rollback in the restore journal");
            }
            let (err, consistent) = rollback(&sd, t, opts, &unit, swap, &now, cause).await;
            if consistent {
                finish(journal);
            }
            // Else the journal stays: the service is held, and the next
            // `apply` or `run` pass retries putting the old data back.
            Err(err)
        }
    }
}

/// The restore verified: recorded as done and the journal ended.
fn verified(mut journal: Journal, report: RestoreReport) -> RestoreReport {
    if let Err(e) = journal.step(Step::Done) {
        tracing::warn!(error = %e, "cannot record the verified restore in its journal; finishing anyway");
    }
    finish(journal);
    report
}

/// What an unfinished earlier restore of the service left to do, for a
/// dry run's report.
fn pending_note(t: RestoreTarget<'_>) -> Option<String> {
    journal::pending(t.state_dir)
        .into_iter()
        .find(|p| p.service == t.service)
        .map(|p| p.condition().1)
}

/// Files and bytes of the set's snapshot.
fn snapshot_size(set: &VerifiedSet) -> (usize, u64) {
    let prefix = format!("{SNAPSHOT_DIR}/");
    let snap_files = set.files().iter().filter(|f| f.path.starts_with(&prefix));
    snap_files.fold((0, 0), |(n, b), f| (n + 1, b + f.size))
}

/// The service's restore lock, or [`PrometheusError::RestoreRunning`]
/// naming who holds it.
fn restore_lock(t: RestoreTarget<'_>) -> Result<RestoreLock> {
    let owner = Owner::me(format!("restoring Backup {} set {}", t.backup, t.id));
    match RestoreLock::try_acquire(t.state_dir, t.service, &owner) {
        Ok(Ok(l)) => Ok(l),
        Ok(Err(busy)) => Err(PrometheusError::RestoreRunning {
            service: t.service.to_owned(),
            owner: busy
                .owner()
                .map(|o| o.to_string())
                .unwrap_or_else(|| "its PID could not be read".to_owned()),
        }),
        Err(source) => Err(PrometheusError::Io {
            op: "take the restore lock in".to_owned(),
            path: crate::hold::dir(t.state_dir),
            source,
        }),
    }
}

/// The set and the TSDB blocks it holds, checked before anything else is
/// touched (a hostile or damaged set is refused without even reaching
/// systemd): its layout and sizes, and with `deep` every file's sha256. A
/// restore passes `deep` only for a dry run, which copies nothing; else
/// every file's sha256 is checked on the staging copy as it is made (what
/// is swapped in is what was checked, one read of the set, not two), still
/// before anything is stopped.
async fn verified_set(t: RestoreTarget<'_>, deep: bool) -> Result<(VerifiedSet, Vec<BlockRange>)> {
    let (store, id) = (t.store.clone(), t.id.to_owned());
    let set = blocking(move || store.verify_with(&id, deep)).await?;
    if set.info().kind != KIND {
        return Err(PrometheusError::WrongKind {
            id: set.info().id.clone(),
            kind: set.info().kind.clone(),
        });
    }
    let blocks = set_blocks(&set)?;
    Ok((set, blocks))
}

/// Finishes or undoes an interrupted earlier restore of the service, if
/// any; what it did, for the report.
async fn recover_earlier(
    lock: &RestoreLock,
    sd: &Systemd,
    data_dir: &Path,
) -> Result<Option<String>> {
    let data_dirs = [data_dir.to_path_buf()];
    let Some(outcome) = super::recover::recover_locked(lock, sd, &data_dirs).await else {
        return Ok(None);
    };
    if outcome.result.is_err() {
        return Err(PrometheusError::Unrecovered(outcome.to_string()));
    }
    tracing::warn!("{outcome}");
    Ok(Some(outcome.to_string()))
}

/// The data directory (normalised), and where the data it holds now will
/// be moved aside (none when there is none), once checked that its parent
/// exists and has room for `bytes`.
fn placement(t: RestoreTarget<'_>, now: &str, bytes: u64) -> Result<(PathBuf, Option<PathBuf>)> {
    let config_err = |reason: String| PrometheusError::Config {
        name: t.backup.to_owned(),
        reason,
    };
    let data_dir: PathBuf = t.data_dir.components().collect();
    let parent = data_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or_else(|| {
            config_err(format!(
                "prometheus.dataDir {} has no parent directory",
                data_dir.display()
            ))
        })?
        .to_path_buf();
    if !parent.is_dir() {
        return Err(config_err(format!(
            "the parent of prometheus.dataDir, {}, does not exist",
            parent.display()
        )));
    }
    let replaced = match fs::symlink_metadata(&data_dir) {
        Ok(_) => Some(
            free_sibling(&data_dir, "replaced", now)
                .ok_or_else(|| config_err("no free name for the replaced data".to_owned()))?,
        ),
        Err(_) => None,
    };
    let available = rustix::fs::statvfs(&parent)
        .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
        .unwrap_or(u64::MAX);
    if available < bytes {
        return Err(PrometheusError::NoSpace {
            path: parent,
            needed: bytes,
            available,
        });
    }
    Ok((data_dir, replaced))
}

/// Starts the journal and copies the set next to the data directory while
/// Prometheus still runs on its data: a full disk or a file changed since
/// verification stops the restore here, at no cost. Returns the journal
/// and the copy.
async fn stage_copy(
    t: RestoreTarget<'_>,
    opts: &RestoreOptions,
    set: &VerifiedSet,
    lock: RestoreLock,
    data_dir: &Path,
    replaced: &Option<PathBuf>,
    now: &str,
) -> Result<(Journal, PathBuf)> {
    let restoring =
        free_sibling(data_dir, "restoring", now).ok_or_else(|| PrometheusError::Config {
            name: t.backup.to_owned(),
            reason: "no free name for the restored copy".to_owned(),
        })?;
    let record = Record {
        pid: std::process::id(),
        started: crate::status::now_rfc3339(),
        backup: t.backup.to_owned(),
        set_id: set.info().id.clone(),
        service: t.service.to_owned(),
        data_dir: data_dir.to_path_buf(),
        staging: restoring.clone(),
        replaced: replaced.clone(),
        step: Step::Copy,
        cause: None,
    };
    let journal = Journal::begin(lock, record).map_err(|source| PrometheusError::Io {
        op: "write the restore journal".to_owned(),
        path: t
            .state_dir
            .join(journal::DIR)
            .join(format!("{}.json", t.service)),
        source,
    })?;
    let mode = fs::metadata(data_dir)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o755);
    let (set, to, progress) = (set.clone(), restoring.clone(), opts.progress);
    if let Err(e) = blocking(move || copy_set(&set, &to, mode, progress)).await {
        let _ = fs::remove_dir_all(&restoring);
        finish(journal);
        return Err(e);
    }
    Ok((journal, restoring))
}

/// Holds the Service (so `unitlet run` leaves it alone) and stops it. On
/// failure the copy is removed, the journal ended and the Service left
/// running as it was.
async fn stop_for_swap(
    sd: &Systemd,
    t: RestoreTarget<'_>,
    opts: &RestoreOptions,
    unit: &str,
    mut journal: Journal,
    restoring: &Path,
) -> Result<Journal> {
    let hold = Hold::acquire(t.state_dir, t.service).map_err(|source| PrometheusError::Io {
        op: "hold the Service (so `unitlet run` leaves it alone) in".to_owned(),
        path: t.state_dir.join("holds"),
        source,
    });
    let step = hold.and_then(|h| {
        journal.keep_hold(h);
        record_step(&mut journal, Step::Stop)
    });
    if let Err(e) = step {
        let _ = fs::remove_dir_all(restoring);
        finish(journal);
        return Err(e);
    }
    tracing::info!(unit = %unit, "stopping Prometheus for the restore");
    if let Err(e) = run_job(sd, unit, JobKind::Stop, opts.job_timeout).await {
        let _ = fs::remove_dir_all(restoring);
        // It may be half-stopped; leave it running as it was.
        let _ = run_job(sd, unit, JobKind::Start, opts.job_timeout).await;
        finish(journal);
        return Err(e);
    }
    Ok(journal)
}

/// Writes the journal record of `step` before it is taken.
fn record_step(journal: &mut Journal, step: Step) -> Result<()> {
    journal.step(step).map_err(|source| PrometheusError::Io {
        op: "write the restore journal".to_owned(),
        path: journal.path().to_path_buf(),
        source,
    })
}

/// Ends a journal whose restore left everything consistent.
fn finish(journal: Journal) {
    let path = journal.path().to_path_buf();
    if let Err(e) = journal.finish() {
        tracing::warn!(journal = %path.display(), error = %e, "cannot remove the restore journal; the next `unitlet apply` removes it (there is nothing to undo)");
    }
}

/// What the swap has done so far, for the rollback.
struct Swap {
    data_dir: PathBuf,
    /// Set once the old data was moved aside.
    replaced: Option<PathBuf>,
    /// The copy, while it is not yet in place.
    restoring: Option<PathBuf>,
    /// The copy is in place as `data_dir`.
    installed: bool,
}

#[allow(clippy::too_many_arguments)]
async fn swap_and_start(
    sd: &Systemd,
    t: RestoreTarget<'_>,
    opts: &RestoreOptions,
    unit: &str,
    blocks: &[BlockRange],
    swap: &mut Swap,
    replaced: Option<&Path>,
    journal: &mut Journal,
) -> Result<Option<String>> {
    // A running Prometheus would keep writing into the directory we move.
    let state = active_state(sd, unit).await?;
    if !matches!(state.as_str(), "inactive" | "failed") {
        return Err(PrometheusError::StartedBehindOurBack {
            unit: unit.to_owned(),
            state,
        });
    }
    record_step(journal, Step::MoveAside)?;
    if let Some(r) = replaced {
        rename(&swap.data_dir, r, "move the current data aside")?;
        swap.replaced = Some(r.to_path_buf());
    }
    record_step(journal, Step::Install)?;
    #[expect(
        clippy::expect_used,
        reason = "`restoring` is set when the copy is made, before this step, and taken only here"
    )]
    let restoring = swap.restoring.take().expect("copy exists until installed");
    if let Err(e) = rename(
        &restoring,
        &swap.data_dir,
        "move the restored copy into place",
    ) {
        swap.restoring = Some(restoring);
        return Err(e);
    }
    swap.installed = true;
    record_step(journal, Step::Start)?;
    tracing::info!(unit = %unit, "starting Prometheus on the restored data");
    run_job(sd, unit, JobKind::Start, opts.job_timeout).await?;
    record_step(journal, Step::Verify)?;
    t.client.wait_ready(unit, opts.ready_timeout).await?;
    check_restored_data(t, opts, blocks).await
}

/// Queries restored blocks until each answers with some series (or the
/// check times out); what answered, for the report.
async fn check_restored_data(
    t: RestoreTarget<'_>,
    opts: &RestoreOptions,
    blocks: &[BlockRange],
) -> Result<Option<String>> {
    let mut checked = Vec::new();
    for block in check_blocks(blocks) {
        let (query, time) = check_query(block);
        let deadline = tokio::time::Instant::now() + opts.check_timeout;
        loop {
            let reason = match t.client.query(&query, Some(time)).await {
                Ok(samples) => match samples.first() {
                    Some(s) if s.value > 0.0 => {
                        checked.push(format!(
                            "block {} answers with {} series",
                            block.ulid, s.value
                        ));
                        break;
                    }
                    _ => "no series (is the set older than Prometheus' --storage.tsdb.retention.time?)".to_owned(),
                },
                Err(e) => crate::error_chain(&e),
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(PrometheusError::DataCheck {
                    query,
                    time: format!("{time:.3}"),
                    reason,
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Ok((!checked.is_empty()).then(|| checked.join("; ")))
}

/// Moves the restored copy aside and the previous data back, as far as the
/// swap got; whether the previous data is back in place. What happened is
/// added to `notes`.
fn undo_swap(swap: &Swap, stamp: &str, notes: &mut Vec<String>) -> bool {
    if let Some(r) = &swap.restoring {
        let _ = fs::remove_dir_all(r);
    }
    if swap.installed {
        let moved = free_sibling(&swap.data_dir, "failed", stamp)
            .ok_or_else(|| "no free name to move the restored data aside".to_owned())
            .and_then(|failed| {
                rename(&swap.data_dir, &failed, "move the restored data aside")
                    .map(|()| failed)
                    .map_err(|e| crate::error_chain(&e))
            });
        match moved {
            Ok(failed) => notes.push(format!(
                "the restored data was moved to {}",
                failed.display()
            )),
            Err(note) => {
                notes.push(note);
                notes.push(match &swap.replaced {
                    Some(r) => format!("the previous data is still at {}", r.display()),
                    None => "the previous data was not touched".to_owned(),
                });
                return false;
            }
        }
    }
    let Some(r) = &swap.replaced else {
        notes.push("the previous data was not touched".to_owned());
        return true;
    };
    match rename(r, &swap.data_dir, "put the previous data back") {
        Ok(()) => {
            notes.push(format!(
                "the previous data is back at {}",
                swap.data_dir.display()
            ));
            true
        }
        Err(e) => {
            notes.push(format!(
                "{}; the previous data is still at {}",
                crate::error_chain(&e),
                r.display()
            ));
            false
        }
    }
}

/// Undoes a failed swap: the restored copy aside as `.failed-STAMP`, the
/// old data back, Prometheus started. Returns the error to report, and
/// whether the old data is back in place (when it is not, Prometheus is
/// not started and the journal must stay for a later recovery).
async fn rollback(
    sd: &Systemd,
    t: RestoreTarget<'_>,
    opts: &RestoreOptions,
    unit: &str,
    swap: Swap,
    stamp: &str,
    cause: PrometheusError,
) -> (PrometheusError, bool) {
    tracing::warn!(error = %crate::error_chain(&cause), "restore failed; putting the previous data back");
    let mut notes = Vec::new();
    if let Err(e) = run_job(sd, unit, JobKind::Stop, opts.job_timeout).await {
        notes.push(format!(
            "stopping {unit} again failed ({})",
            crate::error_chain(&e)
        ));
    }
    let back_ok = undo_swap(&swap, stamp, &mut notes);
    if !back_ok {
        notes.push(format!(
            "{unit} was not started: its data is not back in place; it stays on hold until `unitlet apply` finishes undoing the restore"
        ));
        let err = PrometheusError::RolledBack {
            cause: Box::new(cause),
            rollback: notes.join("; "),
        };
        return (err, false);
    }
    // A crash loop on the bad data may have hit the start limit, which
    // would refuse this start.
    sd.reset_failed(unit).await;
    match run_job(sd, unit, JobKind::Start, opts.job_timeout).await {
        Ok(()) => match t.client.wait_ready(unit, opts.ready_timeout).await {
            Ok(()) => notes.push(format!("{unit} was started again and is ready")),
            Err(e) => notes.push(format!(
                "{unit} was started again but is not ready ({})",
                crate::error_chain(&e)
            )),
        },
        Err(e) => notes.push(format!(
            "starting {unit} again failed ({})",
            crate::error_chain(&e)
        )),
    }
    let err = PrometheusError::RolledBack {
        cause: Box::new(cause),
        rollback: notes.join("; "),
    };
    (err, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tree walks behind snapshot copies: sorted relative paths, modes
    /// kept, symlinks neither followed nor copied.
    #[test]
    fn tree_walks_list_files_and_copy_dirs_and_never_follow_links() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("snap");
        fs::create_dir_all(src.join("01B/chunks")).unwrap();
        fs::write(src.join("01B/meta.json"), b"{}").unwrap();
        fs::write(src.join("01B/chunks/000001"), b"12345").unwrap();
        fs::write(src.join("01A"), b"x").unwrap();
        fs::set_permissions(src.join("01A"), fs::Permissions::from_mode(0o640)).unwrap();
        fs::write(d.path().join("outside"), b"secret").unwrap();
        std::os::unix::fs::symlink(d.path().join("outside"), src.join("link")).unwrap();
        std::os::unix::fs::symlink(d.path(), src.join("01B/up")).unwrap();
        let files = list_files(&src).unwrap();
        assert_eq!(
            files,
            [
                ("01A".to_owned(), 1),
                ("01B/chunks/000001".to_owned(), 5),
                ("01B/meta.json".to_owned(), 2)
            ]
        );
        assert_eq!(tree_size(&src), 8);
        let dirs = d.path().join("dirs");
        fs::create_dir(&dirs).unwrap();
        copy_dirs(&src, &dirs).unwrap();
        assert!(dirs.join("01B/chunks").is_dir());
        assert!(list_files(&dirs).unwrap().is_empty());
    }

    #[test]
    fn the_check_queries_the_oldest_and_newest_block_over_their_range() {
        let b = |u: &str, min, max| BlockRange {
            ulid: u.into(),
            min_time: min,
            max_time: max,
        };
        assert!(check_blocks(&[]).is_empty());
        let one = [b("a", 0, 5001)];
        assert_eq!(check_blocks(&one).len(), 1);
        let three = [b("a", 0, 5001), b("b", 5001, 9001), b("c", 9001, 20001)];
        let picked: Vec<&str> = check_blocks(&three)
            .iter()
            .map(|x| x.ulid.as_str())
            .collect();
        assert_eq!(picked, ["a", "c"]);
        let (q, t) = check_query(&three[2]);
        assert_eq!(q, "count(last_over_time({__name__=~\".+\"}[11000ms]))");
        assert_eq!(t, 20.0);
    }

    #[test]
    fn block_meta_parses_prometheus_meta_json() {
        let meta = br#"{"ulid":"01HXYZ","minTime":1700000000000,"maxTime":1700000060000,"stats":{"numSamples":10},"compaction":{"level":1,"sources":["01HXYZ"]},"version":1}"#;
        assert_eq!(
            parse_block_meta(meta),
            Some(BlockRange {
                ulid: "01HXYZ".into(),
                min_time: 1_700_000_000_000,
                max_time: 1_700_000_060_000
            })
        );
        assert_eq!(parse_block_meta(b"{}"), None);
    }

    fn fake_snapshot(data_dir: &Path, name: &str) {
        let b = data_dir.join("snapshots").join(name).join("01HBLOCK");
        fs::create_dir_all(b.join("chunks")).unwrap();
        fs::write(
            b.join("meta.json"),
            br#"{"ulid":"01HBLOCK","minTime":1000,"maxTime":61000}"#,
        )
        .unwrap();
        fs::write(b.join("index"), vec![7u8; 100_000]).unwrap();
        fs::write(b.join("chunks/000001"), vec![9u8; 3_000_000]).unwrap();
        fs::write(b.join("tombstones"), b"").unwrap();
    }

    /// A fake Prometheus snapshot `S1` in `TMP/data`, taken into a set of
    /// Backup `tsdb` in `TMP/backups`.
    fn snapshot_set() -> (tempfile::TempDir, Store, SetInfo) {
        let d = tempfile::tempdir().unwrap();
        let data = d.path().join("data");
        fake_snapshot(&data, "S1");
        let store = Store::open(&d.path().join("backups"), "tsdb", KIND).unwrap();
        let info = take_snapshot(&store, "http://p:9090/", &data, "S1", false).unwrap();
        (d, store, info)
    }

    #[test]
    fn a_snapshot_is_taken_out_of_prometheus_dir_and_sealed() {
        let (d, store, info) = snapshot_set();
        let data = d.path().join("data");
        assert_eq!(info.files, 5, "4 snapshot files and prometheus.json");
        assert!(
            !data.join("snapshots/S1").exists(),
            "Prometheus' snapshots dir must not grow"
        );
        let set = store.verify(&info.id).unwrap();
        assert_eq!(
            set_blocks(&set).unwrap(),
            vec![BlockRange {
                ulid: "01HBLOCK".into(),
                min_time: 1000,
                max_time: 61000
            }]
        );

        // And it restores byte for byte, empty directories included.
        let to = d.path().join("restored");
        fs::remove_file(set.dir().join("snapshot/01HBLOCK/tombstones")).ok();
        assert!(
            copy_set(&set, &to, 0o750, false).is_err(),
            "a file that vanished after verify is an error"
        );
        let _ = fs::remove_dir_all(&to);
        fs::write(set.dir().join("snapshot/01HBLOCK/tombstones"), b"").unwrap();
        let (n, bytes) = copy_set(&set, &to, 0o750, false).unwrap();
        assert_eq!((n, bytes), (4, 3_100_000 + 50));
        assert_eq!(
            fs::read(to.join("01HBLOCK/chunks/000001")).unwrap(),
            vec![9u8; 3_000_000]
        );
        assert_eq!(
            fs::metadata(&to).unwrap().permissions().mode() & 0o777,
            0o750
        );
        assert!(
            set.dir().join("snapshot/01HBLOCK/index").exists(),
            "copy, not move"
        );
    }

    #[test]
    fn a_changed_file_is_caught_while_copying() {
        let (d, store, info) = snapshot_set();
        let set = store.verify(&info.id).unwrap();
        let mut bytes = fs::read(set.dir().join("snapshot/01HBLOCK/index")).unwrap();
        bytes[10] ^= 1;
        fs::write(set.dir().join("snapshot/01HBLOCK/index"), bytes).unwrap();
        let err = copy_set(&set, &d.path().join("r"), 0o755, false).unwrap_err();
        assert!(
            matches!(err, PrometheusError::ChangedDuringCopy { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("is damaged"), "{err}");
    }

    /// On the set's filesystem each file is hard-linked (no data written,
    /// nothing to fsync), on another one copied in the kernel; either way
    /// every staged file is hashed on the hashing threads, a file that no
    /// longer matches `backup.json` is refused, the last one too (its check
    /// ends after the staging has), and a good set lands byte for byte.
    #[test]
    fn staging_links_on_the_same_filesystem_copies_elsewhere_and_hashes_both() {
        use std::os::unix::fs::MetadataExt;
        let (d, store, info) = snapshot_set();
        let set = store.verify(&info.id).unwrap();
        let shm = tempfile::tempdir_in("/dev/shm").unwrap();
        for (root, linked) in [(d.path(), true), (shm.path(), false)] {
            let (n, bytes) = copy_set(&set, &root.join("good"), 0o755, false).unwrap();
            assert_eq!((n, bytes), (4, 3_100_000 + 50));
            for f in [
                "01HBLOCK/index",
                "01HBLOCK/chunks/000001",
                "01HBLOCK/meta.json",
            ] {
                let (from, to) = (
                    set.dir().join("snapshot").join(f),
                    root.join("good").join(f),
                );
                assert_eq!(fs::read(&to).unwrap(), fs::read(&from).unwrap(), "{f}");
                let same_inode =
                    fs::metadata(&to).unwrap().ino() == fs::metadata(&from).unwrap().ino();
                assert_eq!(same_inode, linked, "{f} in {}", root.display());
            }
        }
        // meta.json is the last file with bytes (tombstones is empty);
        // same size, so only its hash tells.
        let meta = set.dir().join("snapshot/01HBLOCK/meta.json");
        let mut changed = fs::read(&meta).unwrap();
        changed[12] = b'X';
        fs::write(&meta, changed).unwrap();
        for root in [d.path(), shm.path()] {
            let err = copy_set(&set, &root.join("bad"), 0o755, false).unwrap_err();
            let PrometheusError::ChangedDuringCopy { file, .. } = &err else {
                panic!("{err}")
            };
            assert_eq!(file, "snapshot/01HBLOCK/meta.json");
            assert!(err.to_string().contains("is damaged"), "{err}");
        }
    }

    /// A set whose files are all damaged, many more than the hashing queue
    /// holds and each long enough to hash that the queue is full when the
    /// first check fails: the hashing threads keep taking files off the
    /// queue after a failure, so the stager is never left blocked on a full
    /// queue, stops, and the damage is reported.
    #[test]
    fn a_set_damaged_throughout_stops_the_staging_without_hanging() {
        let d = tempfile::tempdir().unwrap();
        let data = d.path().join("data");
        fake_snapshot(&data, "S1");
        let chunks = data.join("snapshots/S1/01HBLOCK/chunks");
        for i in 2..=40 {
            fs::write(chunks.join(format!("{i:06}")), vec![i as u8; 512 * 1024]).unwrap();
        }
        let store = Store::open(&d.path().join("backups"), "tsdb", KIND).unwrap();
        let info = take_snapshot(&store, "http://p:9090/", &data, "S1", false).unwrap();
        let set = store.verify(&info.id).unwrap();
        for e in fs::read_dir(set.dir().join("snapshot/01HBLOCK/chunks")).unwrap() {
            let path = e.unwrap().path();
            let mut bytes = fs::read(&path).unwrap();
            bytes[0] ^= 1;
            fs::write(&path, bytes).unwrap();
        }
        let to = d.path().join("r");
        let err = crate::fsutil::test_support::within_10s("staging a damaged set", move || {
            copy_set(&set, &to, 0o755, false).map(|_| ())
        })
        .unwrap_err();
        let PrometheusError::ChangedDuringCopy { file, .. } = &err else {
            panic!("{err}")
        };
        assert!(file.starts_with("snapshot/01HBLOCK/chunks/"), "{file}");
    }

    #[test]
    fn a_missing_snapshot_names_the_data_dir() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("backups"), "tsdb", KIND).unwrap();
        let err = take_snapshot(&store, "http://p:9090/", d.path(), "S9", false).unwrap_err();
        assert!(err.to_string().contains("prometheus.dataDir"), "{err}");
        assert!(store.list().unwrap().is_empty(), "no set is started");
    }
}
