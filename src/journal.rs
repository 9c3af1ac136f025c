//! The restore journal: a Prometheus restore written down step by step, so
//! a restore killed at any moment (Ctrl-C, `kill -9`, a crash, a power cut)
//! is finished or undone by the next `unitlet` command that touches the
//! service, and Prometheus is never started on a missing or mixed data
//! directory in between.
//!
//! Files, per Service being restored:
//! - `STATE_DIR/restores/SERVICE.json`, the journal: who restores what, the
//!   paths involved, and the step it is *about* to take. Written with
//!   [`fsutil::atomic_write`] before each step (write-ahead), removed when
//!   the restore ends in a consistent state.
//! - `STATE_DIR/restores/.SERVICE.lock`, an `flock(2)`ed file naming its
//!   owner: held by a running restore (and by whoever recovers one). The
//!   kernel drops the lock when its owner dies however it dies, so "the
//!   journal's owner is dead" is exactly "the lock can be taken" — immune
//!   to PID reuse. Lock files are never removed (removing one would let
//!   two processes lock different files).
//! - `STATE_DIR/holds/.SERVICE.restore-lock`, the running restore's
//!   beacon: a file it keeps open for writing (and never writes). The
//!   holds directory is what `unitlet run` watches, so the restore's end,
//!   however it ends, closes it and wakes the operator to recover at once.
//!   Recovery never opens it, nor writes anything in `holds/`: nothing the
//!   operator does wakes the operator.
//!
//! Architecture Invariant: a journal holds its service like a hold
//! ([`crate::hold::active_holds`] lists it), so the operator neither starts
//! nor stops it until [`recover_interrupted`] has run and removed it.
//!
//! Architecture Invariant: recovery never deletes data. It only renames
//! (the original data back into place; restored data aside as
//! `DATADIR.failed-STAMP`) and removes the staging copy of a backup set,
//! which the set itself still holds — and only at paths a restore of that
//! service creates (its Backup's data directory and siblings named
//! `DATADIR.restoring-STAMP` / `DATADIR.replaced-STAMP`), whatever the
//! journal says; anything else leaves the journal stuck.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::fsutil;
use crate::hold::Hold;
use crate::locations::Locations;
use crate::status::{ConditionStatus, ConditionType, Reason, Status};
use crate::systemd::Systemd;

/// The directory of journals and locks inside the state directory.
pub const DIR: &str = "restores";

/// Deadline of the stop job a rollback may need.
const STOP_TIMEOUT: Duration = Duration::from_secs(90);

fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join(DIR)
}

fn journal_path(state_dir: &Path, service: &str) -> PathBuf {
    dir(state_dir).join(format!("{service}.json"))
}

/// The lock lives beside the journals, where the operator does not watch:
/// recovery takes it in every pass that finds a journal.
fn lock_path(state_dir: &Path, service: &str) -> PathBuf {
    dir(state_dir).join(format!(".{service}.lock"))
}

/// A running restore's beacon, in the holds directory, which the operator
/// watches (a dot file, which [`crate::hold::active_holds`] skips).
fn beacon_path(state_dir: &Path, service: &str) -> PathBuf {
    crate::hold::dir(state_dir).join(format!(".{service}.restore-lock"))
}

/// A step of a restore, in the order they are taken. The journal records
/// the step that is about to be taken: whatever the journal says, every
/// earlier step is complete and this one may or may not have happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// About to copy the set into the staging directory, next to the data
    /// directory; Prometheus still runs on its data.
    Copy,
    /// The staging copy is complete and durable; about to stop the service.
    Stop,
    /// The service is stopped; about to move the data directory aside to
    /// `replaced`.
    MoveAside,
    /// The old data is aside (if there was any); about to rename the
    /// staging copy into place.
    Install,
    /// The restored data is in place; about to start the service.
    Start,
    /// The service was started; about to wait until it is ready and check
    /// that the restored data answers queries.
    Verify,
    /// Verified: the restore is complete, only cleanup is left.
    Done,
    /// The restore failed and is being undone by the process that ran it.
    RollBack,
}

impl Step {
    /// Every step, in order.
    pub const ALL: [Step; 8] = [
        Step::Copy,
        Step::Stop,
        Step::MoveAside,
        Step::Install,
        Step::Start,
        Step::Verify,
        Step::Done,
        Step::RollBack,
    ];

    /// The name used in the journal and by the test hooks.
    pub fn name(self) -> &'static str {
        match self {
            Step::Copy => "copy",
            Step::Stop => "stop",
            Step::MoveAside => "move-aside",
            Step::Install => "install",
            Step::Start => "start",
            Step::Verify => "verify",
            Step::Done => "done",
            Step::RollBack => "roll-back",
        }
    }

    /// What has happened when the journal says this step is next, for
    /// people.
    fn describe(self) -> &'static str {
        match self {
            Step::Copy => "while copying the backup set (nothing was changed yet)",
            Step::Stop => "after copying the set, before stopping the service",
            Step::MoveAside => "after stopping the service, before moving its data aside",
            Step::Install => {
                "after moving the data aside, before putting the restored data in place"
            }
            Step::Start => "after putting the restored data in place, before starting the service",
            Step::Verify => "after starting the service, before the restored data was verified",
            Step::Done => "after the restored data was verified",
            Step::RollBack => "while undoing a failed restore",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The content of a journal file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// The process running the restore.
    pub pid: u32,
    /// When the restore started (RFC 3339).
    pub started: String,
    /// The Backup manifest.
    pub backup: String,
    /// The set being restored.
    pub set_id: String,
    /// The Service manifest running Prometheus (unit `SERVICE.service`).
    pub service: String,
    /// Prometheus' data directory (normalized, symlinks resolved).
    pub data_dir: PathBuf,
    /// Where the set is copied before it is renamed into place.
    pub staging: PathBuf,
    /// Where the current data directory goes; `None`: there is none.
    pub replaced: Option<PathBuf>,
    /// The step about to be taken.
    pub step: Step,
    /// Why the restore is being rolled back (step `roll-back`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
}

impl Record {
    fn unit(&self) -> String {
        format!("{}.service", self.service)
    }
}

/// Who holds a restore lock, as written into the lock file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Owner {
    /// Its process.
    pub pid: u32,
    /// What it does: `restore of Backup tsdb set ID` or `recovery of an
    /// interrupted restore`.
    pub what: String,
    /// Since when (RFC 3339).
    pub started: String,
}

impl Owner {
    /// This process, doing `what`.
    pub fn me(what: String) -> Owner {
        Owner {
            pid: std::process::id(),
            what,
            started: crate::status::now_rfc3339(),
        }
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PID {}, {}, started {}",
            self.pid, self.what, self.started
        )
    }
}

/// The exclusive right to restore (or recover) one service. Released when
/// dropped or when its process dies.
#[derive(Debug)]
pub struct RestoreLock {
    /// The `flock` lives on this descriptor, which also holds the owner.
    _lock: File,
    /// A restore's beacon (`None` for recovery), open for writing for as
    /// long as the lock is held: when the restore ends, however it ends,
    /// the kernel closes it, and the operator, which watches the holds
    /// directory, sees that close and runs a pass that recovers an
    /// interrupted restore at once.
    _beacon: Option<File>,
    state_dir: PathBuf,
    service: String,
}

/// Someone else holds the lock.
#[derive(Debug, Clone)]
pub struct Busy {
    path: PathBuf,
}

impl Busy {
    /// Who holds it, when its lock file can be read.
    pub fn owner(&self) -> Option<Owner> {
        read_owner(&self.path)
    }
}

impl RestoreLock {
    /// Takes the lock of `service` without waiting, for a restore: with
    /// the beacon that wakes the operator when the restore ends.
    ///
    /// # Errors
    /// `Ok(Err(Busy))` when another process holds it; `Err` when the state
    /// directory cannot be written.
    pub fn try_acquire(
        state_dir: &Path,
        service: &str,
        owner: &Owner,
    ) -> io::Result<Result<RestoreLock, Busy>> {
        let Ok(mut lock) = Self::try_lock(state_dir, service, owner)? else {
            return Ok(Err(Busy {
                path: lock_path(state_dir, service),
            }));
        };
        fsutil::create_dir_all(&crate::hold::dir(state_dir))?;
        lock._beacon = Some(
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(crate::fsutil::open_flags(
                    rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC,
                ))
                .open(beacon_path(state_dir, service))?,
        );
        Ok(Ok(lock))
    }

    /// Takes the lock of `service` without waiting, writing nothing
    /// outside `restores/` (recovery, which the operator runs in a pass).
    fn try_lock(
        state_dir: &Path,
        service: &str,
        owner: &Owner,
    ) -> io::Result<Result<RestoreLock, ()>> {
        let path = lock_path(state_dir, service);
        fsutil::create_dir_all(&dir(state_dir))?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(crate::fsutil::open_flags(
                rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC,
            ))
            .open(&path)?;
        use rustix::fs::{FlockOperation, flock};
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => return Ok(Err(())),
            Err(e) => return Err(e.into()),
        }
        // In place, never renamed over: the lock lives on this inode.
        file.set_len(0)?;
        file.write_all(&serde_json::to_vec(owner).expect("plain struct serializes"))?;
        Ok(Ok(RestoreLock {
            _lock: file,
            _beacon: None,
            state_dir: state_dir.to_path_buf(),
            service: service.to_owned(),
        }))
    }
}

/// The owner named in a lock file. Its owner writes it right after taking
/// the lock, so a reader may catch it half-written: retried for a while.
fn read_owner(path: &Path) -> Option<Owner> {
    for _ in 0..40 {
        let mut s = String::new();
        if let Ok((f, _)) = crate::fsutil::open_regular(path, false)
            && f.take(64 * 1024).read_to_string(&mut s).is_ok()
            && let Ok(o) = serde_json::from_str(&s)
        {
            return Some(o);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    None
}

/// A journal being written by the restore that owns it.
///
/// Dropping it without [`Journal::finish`] leaves the journal file behind
/// on purpose: whatever state the data is in, [`recover_interrupted`]
/// sorts it out, and until then the service stays held.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    record: Record,
    /// Dropped after the journal file is removed: releasing the hold wakes
    /// the operator, which must then find no journal.
    hold: Option<Hold>,
    _lock: RestoreLock,
}

impl Journal {
    /// Writes the first record (its `step`) under `lock`.
    ///
    /// # Errors
    /// When the journal cannot be written; nothing was changed then.
    pub fn begin(lock: RestoreLock, record: Record) -> io::Result<Journal> {
        let j = Journal {
            path: journal_path(&lock.state_dir, &lock.service),
            record,
            hold: None,
            _lock: lock,
        };
        j.write()?;
        Ok(j)
    }

    /// The current record.
    pub fn record(&self) -> &Record {
        &self.record
    }

    /// Where the journal lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps `hold` until the journal is finished.
    pub fn keep_hold(&mut self, hold: Hold) {
        self.hold = Some(hold);
    }

    /// Records that `step` is next, durably, before it is taken.
    ///
    /// # Errors
    /// When the journal cannot be written: the step must not be taken.
    pub fn step(&mut self, step: Step) -> io::Result<()> {
        self.record.step = step;
        self.write()
    }

    /// Records that the restore is being rolled back because of `cause`.
    pub fn rolling_back(&mut self, cause: String) -> io::Result<()> {
        self.record.cause = Some(cause);
        self.step(Step::RollBack)
    }

    fn write(&self) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(&self.record).expect("plain struct serializes");
        fsutil::atomic_write(&self.path, &bytes, 0o600)?;
        test_hooks(self.record.step);
        Ok(())
    }

    /// The restore ended in a consistent state: remove the journal, then
    /// release the hold and the lock.
    ///
    /// # Errors
    /// When the journal cannot be removed (it is then recovered later,
    /// which finds nothing to undo).
    pub fn finish(mut self) -> io::Result<()> {
        let r = fsutil::remove_durable(&self.path);
        drop(self.hold.take());
        r
    }
}

/// Test-only hooks, read after each journal record is durable. Compiled
/// only into builds with debug assertions (what `cargo build` and the
/// integration tests run, `target/debug/unitlet`): the release and `dist`
/// binaries, which users run, have neither the hooks nor their names.
///
/// - `UNITLET_TEST_CRASH_AFTER=STEP`: the process kills itself with
///   SIGKILL right after writing the record of STEP (a `kill -9` at the
///   worst moment, deterministically).
/// - `UNITLET_TEST_PAUSE_AFTER=STEP:FILE`: after writing the record of
///   STEP, create `FILE.waiting` and wait (at most 5 minutes) until FILE
///   exists, so a test can act while the restore is in that state.
#[cfg(debug_assertions)]
fn test_hooks(step: Step) {
    if std::env::var("UNITLET_TEST_CRASH_AFTER").is_ok_and(|s| s == step.name()) {
        // SIGKILL, not abort(): no unwinding, no core, no handler — the
        // same as `kill -9`.
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    }
    if let Ok(v) = std::env::var("UNITLET_TEST_PAUSE_AFTER")
        && let Some((s, file)) = v.split_once(':')
        && s == step.name()
    {
        let file = PathBuf::from(file);
        let mut waiting = file.clone().into_os_string();
        waiting.push(".waiting");
        let _ = fs::write(&waiting, std::process::id().to_string());
        let deadline = std::time::Instant::now() + Duration::from_secs(300);
        while !file.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Release builds: no hooks (see the debug version).
#[cfg(not(debug_assertions))]
fn test_hooks(_step: Step) {}

/// Reads the journal of `service`, if there is one.
fn read(state_dir: &Path, service: &str) -> Option<Result<Record, String>> {
    let path = journal_path(state_dir, service);
    match crate::fsutil::read_regular_opt(&path, false, 16 * 1024 * 1024) {
        Ok(Some(b)) => Some(serde_json::from_slice(&b).map_err(|e| {
            format!(
                "the restore journal {} cannot be read ({e}); look at the data directory and its siblings, then remove the journal by hand",
                path.display()
            )
        })),
        Ok(None) => None,
        Err(e) => Some(Err(format!(
            "the restore journal {} {e}",
            path.display()
        ))),
    }
}

/// Services with a journal, whether its restore runs or was interrupted.
pub fn pending_names(state_dir: &Path) -> Vec<String> {
    let Ok(rd) = fs::read_dir(dir(state_dir)) else {
        return vec![];
    };
    let mut out: Vec<String> = rd
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                return None;
            }
            name.strip_suffix(".json").map(str::to_owned)
        })
        .collect();
    out.sort();
    out
}

/// A journal found on disk, for `get` and `describe`.
#[derive(Debug, Clone)]
pub struct Pending {
    /// The held Service.
    pub service: String,
    /// The journal, or why it cannot be read.
    pub record: Result<Record, String>,
    /// Whether its restore process still runs (by PID: for display only).
    pub running: bool,
}

impl Pending {
    /// `(reason, message)` for the Service's `Ready` condition.
    pub fn condition(&self) -> (Reason, String) {
        match &self.record {
            Ok(r) if self.running => (
                Reason::OnHold,
                format!(
                    "a restore is in progress: Backup {} set {}, PID {}, started {}, next step {}; unitlet leaves this service alone until it ends",
                    r.backup, r.set_id, r.pid, r.started, r.step
                ),
            ),
            Ok(r) => (
                Reason::RestoreInterrupted,
                format!(
                    "an interrupted restore is pending: Backup {} set {} (PID {}, started {}) stopped {}; the next `unitlet apply`, `unitlet run` pass or `unitlet restore` of it finishes or undoes it, and the service is left alone until then",
                    r.backup,
                    r.set_id,
                    r.pid,
                    r.started,
                    r.step.describe()
                ),
            ),
            Err(e) => (Reason::RestoreInterrupted, e.clone()),
        }
    }
}

/// Every journal on disk.
pub fn pending(state_dir: &Path) -> Vec<Pending> {
    pending_names(state_dir)
        .into_iter()
        .filter_map(|service| {
            let record = read(state_dir, &service)?;
            let running = record
                .as_ref()
                .is_ok_and(|r| r.pid != std::process::id() && fsutil::pid_alive(r.pid as i32));
            Some(Pending {
                service,
                record,
                running,
            })
        })
        .collect()
}

/// Shows pending restores in `status` (what `get` and `describe` print)
/// without acting on them: the Service's `Ready` turns `False` with the
/// reason, and a `RestorePending` condition says which restore it is.
pub fn annotate(state_dir: &Path, status: &mut Status) {
    for p in pending(state_dir) {
        let Some(o) = status.objects.get_mut(&p.service) else {
            continue;
        };
        let (reason, message) = p.condition();
        o.set_ready(ConditionStatus::False, reason, &message);
        let pending = ConditionType::RestorePending;
        o.set_condition(pending, ConditionStatus::True, reason, &message);
    }
}

/// What recovery decided from the journal and the directories on disk;
/// pure, see [`recovery_plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryPlan {
    /// The restore got through verification: keep the restored data.
    Complete {
        /// The staging copy still exists (it should not): remove it.
        remove_staging: bool,
    },
    /// Undo the restore.
    RollBack {
        /// The data directory holds the restored data: stop the service
        /// and move it aside as `DATADIR.failed-STAMP`.
        restored_in_place: bool,
        /// Rename `replaced` back to the data directory.
        put_back: bool,
        /// Remove the staging copy (a copy of the set, which keeps its own).
        remove_staging: bool,
    },
    /// The directories match no point of the procedure; touch nothing.
    Stuck(String),
}

/// What exists on disk, as recovery sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnDisk {
    /// The data directory.
    pub data_dir: bool,
    /// The `replaced` sibling (false when the record has none).
    pub replaced: bool,
    /// The staging copy.
    pub staging: bool,
}

impl OnDisk {
    fn observe(r: &Record) -> OnDisk {
        let exists = |p: &Path| fs::symlink_metadata(p).is_ok();
        OnDisk {
            data_dir: exists(&r.data_dir),
            replaced: r.replaced.as_deref().is_some_and(exists),
            staging: exists(&r.staging),
        }
    }
}

/// Decides how to recover an interrupted restore; pure.
///
/// Renames are atomic, so which of the data directory, `replaced` and the
/// staging copy exist says exactly how far the swap got: `replaced`
/// exists only once the old data was moved there, and from then on the
/// data directory, if it exists, is the restored copy.
pub fn recovery_plan(r: &Record, d: OnDisk) -> RecoveryPlan {
    if r.step == Step::Done {
        return if d.data_dir {
            RecoveryPlan::Complete {
                remove_staging: d.staging,
            }
        } else {
            RecoveryPlan::Stuck(format!(
                "the restore was verified but {} no longer exists",
                r.data_dir.display()
            ))
        };
    }
    match &r.replaced {
        Some(replaced) if d.replaced => RecoveryPlan::RollBack {
            restored_in_place: d.data_dir,
            put_back: true,
            remove_staging: d.staging,
        },
        Some(replaced) if !d.data_dir && r.step > Step::MoveAside => RecoveryPlan::Stuck(format!(
            "neither {} nor the data it replaced at {} exists",
            r.data_dir.display(),
            replaced.display()
        )),
        // The old data was never moved (or was already put back): the
        // data directory, if any, is the original.
        Some(_) => RecoveryPlan::RollBack {
            restored_in_place: false,
            put_back: false,
            remove_staging: d.staging,
        },
        // There was no data directory: one that exists now can only be
        // the restored copy, once the swap began.
        None => RecoveryPlan::RollBack {
            restored_in_place: d.data_dir && r.step >= Step::Install,
            put_back: false,
            remove_staging: d.staging,
        },
    }
}

/// What recovering one interrupted restore did.
#[derive(Debug, Clone)]
pub struct RecoveryOutcome {
    /// The held Service.
    pub service: String,
    /// The journal file (removed unless recovery failed).
    pub journal: PathBuf,
    /// The journal, if it could be read.
    pub record: Option<Record>,
    /// What was done, or why nothing could be (the journal is then kept
    /// and the service stays held).
    pub result: Result<Recovered, String>,
}

/// How an interrupted restore ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovered {
    /// The restored data stays; `replaced` holds what it replaced.
    Completed {
        /// Where the replaced data is.
        replaced: Option<PathBuf>,
    },
    /// The original data is back in place.
    RolledBack {
        /// Each thing done, for people.
        notes: Vec<String>,
    },
}

impl fmt::Display for RecoveryOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match &self.record {
            Some(r) => format!(
                "the restore of Backup {} set {} into {} (PID {}, started {}), interrupted {},",
                r.backup,
                r.set_id,
                r.data_dir.display(),
                r.pid,
                r.started,
                r.step.describe()
            ),
            None => format!("an interrupted restore of {}", self.service),
        };
        match &self.result {
            Ok(Recovered::Completed { replaced }) => {
                write!(f, "{what} had verified the restored data: it stays")?;
                if let Some(p) = replaced {
                    write!(
                        f,
                        "; the data it replaced is at {} (delete it when you no longer need it)",
                        p.display()
                    )?;
                }
                Ok(())
            }
            Ok(Recovered::RolledBack { notes }) => {
                write!(f, "{what} was undone: {}", notes.join("; "))
            }
            Err(e) => write!(
                f,
                "{what} could not be recovered: {e}; {} stays on hold and the next `unitlet apply` or `unitlet run` pass tries again; if this persists, put the data directory right by hand and remove {}",
                self.service,
                self.journal.display()
            ),
        }
    }
}

/// Where a restore of each Service may have worked: `(service, data
/// directory)` for every Backup manifest whose `prometheus.service` it is
/// (its `prometheus.dataDir` as written; symlinks are resolved here, as
/// `unitlet restore` resolves them).
pub type DataDirs = [(String, PathBuf)];

/// Recovers every interrupted restore: each journal whose owner is gone
/// (its lock can be taken) is completed when the restored data was
/// verified, else rolled back, and removed. Journals of running restores
/// are left alone.
///
/// Run by `unitlet apply` and every `unitlet run` pass before they
/// converge (after the state directory passed its check), and by
/// `unitlet restore` for its own service. Logs nothing: the caller
/// reports the outcomes (once per change, see
/// [`crate::reconcile::Reconciler`]).
///
/// # Guarantees
/// No data directory is deleted: restored data that is undone is renamed
/// to `DATADIR.failed-STAMP` and the original renamed back. Only paths a
/// restore of that service creates are touched: its data directory (one
/// of `data_dirs`) and siblings of it named `DATADIR.restoring-STAMP` and
/// `DATADIR.replaced-STAMP`; a journal naming anything else is stuck. The
/// service is stopped when its data must be moved, never started: the
/// caller converges it. A journal that cannot be recovered is kept (and
/// keeps its service held), with the reason in the outcome. Nothing is
/// written in the holds directory, which the operator watches.
pub async fn recover_interrupted(
    loc: &Locations,
    sd: &Systemd,
    data_dirs: &DataDirs,
) -> Vec<RecoveryOutcome> {
    let mut out = Vec::new();
    for service in pending_names(&loc.state_dir) {
        let owner = Owner::me(format!("recovery of an interrupted restore of {service}"));
        let lock = match RestoreLock::try_lock(&loc.state_dir, &service, &owner) {
            Ok(Ok(l)) => l,
            // Its restore is running: not interrupted.
            Ok(Err(())) => continue,
            Err(e) => {
                out.push(RecoveryOutcome {
                    journal: journal_path(&loc.state_dir, &service),
                    service: service.clone(),
                    record: None,
                    result: Err(format!(
                        "cannot take the restore lock {}: {e}",
                        lock_path(&loc.state_dir, &service).display()
                    )),
                });
                continue;
            }
        };
        let mine: Vec<PathBuf> = data_dirs
            .iter()
            .filter(|(s, _)| *s == service)
            .map(|(_, d)| d.clone())
            .collect();
        if let Some(o) = recover_locked(&lock, sd, &mine).await {
            out.push(o);
        }
    }
    out
}

/// Recovers the journal of `lock`'s service, if it has one, acting only
/// on `data_dirs` (where a restore of it may have worked, see
/// [`DataDirs`]) and their siblings with a restore's names. The caller
/// holds the lock, so its owner is gone.
pub async fn recover_locked(
    lock: &RestoreLock,
    sd: &Systemd,
    data_dirs: &[PathBuf],
) -> Option<RecoveryOutcome> {
    let (state_dir, service) = (&lock.state_dir, &lock.service);
    let journal = journal_path(state_dir, service);
    let record = match read(state_dir, service)? {
        Ok(r) => r,
        Err(e) => {
            return Some(RecoveryOutcome {
                journal,
                service: service.clone(),
                record: None,
                result: Err(e),
            });
        }
    };
    let expected = expected_data_dirs(data_dirs);
    let result = match check_paths(&record, service, &expected) {
        Err(e) => Err(format!(
            "{e}; nothing was touched: look at the journal and the directories it names"
        )),
        Ok(()) => execute(&record, sd).await,
    };
    let result = result.and_then(|rec| {
        fsutil::remove_durable(&journal)
            .map_err(|e| {
                format!(
                    "the data is consistent again but the journal {} cannot be removed: {e}",
                    journal.display()
                )
            })
            .map(|()| rec)
    });
    if result.is_ok() {
        // The dead restore's hold, if it left one (a removal, which does
        // not wake the operator).
        crate::hold::remove_stale(state_dir, service);
    }
    Some(RecoveryOutcome {
        journal,
        service: service.clone(),
        record: Some(record),
        result,
    })
}

/// Every spelling a restore may have recorded for each of `data_dirs`:
/// as written (normalized), resolved (`unitlet restore` resolves a
/// symlinked data directory and swaps the real one), and, when the real
/// directory is moved aside so the link dangles, the link's target.
fn expected_data_dirs(data_dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for d in data_dirs {
        let normalized: PathBuf = d.components().collect();
        if let Ok(real) = fs::canonicalize(&normalized) {
            out.push(real);
        }
        if let Ok(target) = fs::read_link(&normalized) {
            let target = match normalized.parent() {
                Some(parent) if target.is_relative() => parent.join(target),
                _ => target,
            };
            let target: PathBuf = target.components().collect();
            if let (Some(parent), Some(name)) = (target.parent(), target.file_name())
                && let Ok(parent) = fs::canonicalize(parent)
            {
                out.push(parent.join(name));
            }
            out.push(target);
        }
        out.push(normalized);
    }
    out
}

/// Whether `r` names only what a restore of `service` creates: its data
/// directory is one of `expected`, its staging copy and the data it
/// replaced are siblings of it with a restore's names; pure.
///
/// # Errors
/// What is wrong, for people.
fn check_paths(r: &Record, service: &str, expected: &[PathBuf]) -> Result<(), String> {
    if r.service != service {
        return Err(format!(
            "the journal names Service {:?}, not {service:?} as its file name does",
            r.service
        ));
    }
    if !expected.contains(&r.data_dir) {
        return Err(format!(
            "its data directory {} is not the prometheus.dataDir of any Backup manifest whose prometheus.service is {service}",
            r.data_dir.display()
        ));
    }
    let sibling = |label: &str, p: &Path| {
        if is_sibling_named(&r.data_dir, label, p) {
            Ok(())
        } else {
            Err(format!(
                "it names {} as the {}, which a restore of {service} never creates (a sibling of {} named {}.{label}-STAMP)",
                p.display(),
                if label == "restoring" {
                    "copy of the set"
                } else {
                    "data it replaced"
                },
                r.data_dir.display(),
                r.data_dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ))
        }
    };
    sibling("restoring", &r.staging)?;
    if let Some(replaced) = &r.replaced {
        sibling("replaced", replaced)?;
    }
    Ok(())
}

/// Whether `p` is `DATADIR.LABEL-STAMP[-N]` beside `data_dir` (see
/// [`crate::prometheus::tsdb::sibling`]); pure.
fn is_sibling_named(data_dir: &Path, label: &str, p: &Path) -> bool {
    let (Some(parent), Some(name)) = (data_dir.parent(), data_dir.file_name()) else {
        return false;
    };
    let (Some(p_parent), Some(p_name)) = (p.parent(), p.file_name()) else {
        return false;
    };
    let prefix = format!("{}.{label}-", name.to_string_lossy());
    let Some(rest) = p_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
        return false;
    };
    let (stamp, n) = match rest.split_once('-') {
        Some((s, n)) => (s, Some(n)),
        None => (rest, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let is_stamp = stamp.len() == 16
        && stamp.is_ascii()
        && digits(&stamp[..8])
        && &stamp[8..9] == "T"
        && digits(&stamp[9..15])
        && &stamp[15..] == "Z";
    let n_ok = n.is_none_or(|n| digits(n) && !n.starts_with('0') && n.len() <= 4);
    p_parent == parent && is_stamp && n_ok
}

/// Removes the staging copy of a set (a large tree: off the async
/// runtime's thread); says what happened.
async fn remove_staging(staging: &Path) -> String {
    let path = staging.to_path_buf();
    let removed = tokio::task::spawn_blocking(move || fs::remove_dir_all(&path))
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e.to_string())));
    match removed {
        Ok(()) => format!(
            "the copy {} of the set was removed (the set itself is untouched)",
            staging.display()
        ),
        Err(e) => format!(
            "the copy {} of the set could not be removed ({e}); delete it by hand",
            staging.display()
        ),
    }
}

async fn execute(r: &Record, sd: &Systemd) -> Result<Recovered, String> {
    use crate::prometheus::tsdb;
    let chain = |e: &dyn std::error::Error| crate::error_chain(e);
    let plan = recovery_plan(r, OnDisk::observe(r));
    match plan {
        RecoveryPlan::Stuck(reason) => Err(reason),
        RecoveryPlan::Complete { remove_staging: rm } => {
            if rm {
                remove_staging(&r.staging).await;
            }
            Ok(Recovered::Completed {
                replaced: r.replaced.clone(),
            })
        }
        RecoveryPlan::RollBack {
            restored_in_place,
            put_back,
            remove_staging: rm,
        } => {
            let mut notes = Vec::new();
            let unit = r.unit();
            if restored_in_place || put_back {
                // Prometheus must not run while its directory moves.
                let state = tsdb::active_state(sd, &unit).await.map_err(|e| chain(&e))?;
                if !matches!(state.as_str(), "inactive" | "failed") {
                    tsdb::check_managed(sd, &unit, &r.service)
                        .await
                        .map_err(|e| chain(&e))?;
                    tsdb::run_job(sd, &unit, crate::systemd::JobKind::Stop, STOP_TIMEOUT)
                        .await
                        .map_err(|e| chain(&e))?;
                    notes.push(format!("{unit} (running on the restored data) was stopped"));
                }
            }
            if restored_in_place {
                let failed =
                    tsdb::free_sibling(&r.data_dir, "failed", &tsdb::stamp(SystemTime::now()))
                        .ok_or_else(|| "no free name to move the restored data aside".to_owned())?;
                tsdb::rename(&r.data_dir, &failed, "move the restored data aside")
                    .map_err(|e| chain(&e))?;
                notes.push(format!(
                    "the restored data was moved to {}",
                    failed.display()
                ));
            }
            if put_back && let Some(replaced) = &r.replaced {
                tsdb::rename(replaced, &r.data_dir, "put the previous data back")
                    .map_err(|e| chain(&e))?;
                notes.push(format!(
                    "the previous data is back at {}",
                    r.data_dir.display()
                ));
            } else if r.replaced.is_some() {
                notes.push(format!(
                    "the original data is in place at {}",
                    r.data_dir.display()
                ));
            } else {
                notes.push(format!(
                    "there was no data at {} before the restore",
                    r.data_dir.display()
                ));
            }
            if rm {
                notes.push(remove_staging(&r.staging).await);
            }
            Ok(Recovered::RolledBack { notes })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(step: Step, replaced: bool) -> Record {
        Record {
            pid: 999_999_999,
            started: "2026-11-28T05:00:00Z".into(),
            backup: "tsdb".into(),
            set_id: "S".into(),
            service: "prometheus".into(),
            data_dir: "/p/data".into(),
            staging: "/p/data.restoring-20261127T235501Z".into(),
            replaced: replaced.then(|| "/p/data.replaced-20261127T235501Z".into()),
            step,
            cause: None,
        }
    }

    fn disk(data_dir: bool, replaced: bool, staging: bool) -> OnDisk {
        OnDisk {
            data_dir,
            replaced,
            staging,
        }
    }

    fn rollback(restored_in_place: bool, put_back: bool, remove_staging: bool) -> RecoveryPlan {
        RecoveryPlan::RollBack {
            restored_in_place,
            put_back,
            remove_staging,
        }
    }

    /// For every case, at each of its steps: the plan for that record
    /// (with or without replaced data) and what is on disk.
    fn assert_plans(replaced: bool, cases: &[(&[Step], OnDisk, RecoveryPlan)]) {
        for (steps, on_disk, want) in cases {
            for step in *steps {
                let plan = recovery_plan(&rec(*step, replaced), *on_disk);
                assert_eq!(&plan, want, "{step} {on_disk:?}");
            }
        }
    }

    #[test]
    fn every_point_of_the_swap_rolls_back_to_the_original_data() {
        use Step::*;
        assert_plans(
            true,
            &[
                // Before the old data moved: it is the original; drop the copy.
                (
                    &[Copy, Stop, MoveAside],
                    disk(true, false, true),
                    rollback(false, false, true),
                ),
                // Moved aside, copy not yet in place.
                (
                    &[MoveAside, Install],
                    disk(false, true, true),
                    rollback(false, true, true),
                ),
                // The copy is in place: it goes aside, the original comes back.
                (
                    &[Install, Start, Verify, RollBack],
                    disk(true, true, false),
                    rollback(true, true, false),
                ),
                // An in-process rollback that already put everything back.
                (
                    &[RollBack],
                    disk(true, false, false),
                    rollback(false, false, false),
                ),
                // Verified: it stays.
                (
                    &[Done],
                    disk(true, true, false),
                    RecoveryPlan::Complete {
                        remove_staging: false,
                    },
                ),
            ],
        );
    }

    #[test]
    fn without_previous_data_only_the_restored_copy_moves() {
        use Step::*;
        assert_plans(
            false,
            &[
                (
                    &[Stop, Install],
                    disk(false, false, true),
                    rollback(false, false, true),
                ),
                (
                    &[Start],
                    disk(true, false, false),
                    rollback(true, false, false),
                ),
            ],
        );
    }

    #[test]
    fn a_state_no_step_explains_touches_nothing() {
        assert!(matches!(
            recovery_plan(&rec(Step::Start, true), disk(false, false, false)),
            RecoveryPlan::Stuck(m) if m.contains("neither")
        ));
        assert!(matches!(
            recovery_plan(&rec(Step::Done, true), disk(false, true, false)),
            RecoveryPlan::Stuck(_)
        ));
    }

    /// Issue 20, item 4: recovery acts only on what a restore of that
    /// service creates; a journal naming anything else is stuck.
    #[test]
    fn issue20_4_recovery_acts_only_on_a_restores_own_paths() {
        let expected = [PathBuf::from("/p/data")];
        let ok = rec(Step::Copy, true);
        assert_eq!(check_paths(&ok, "prometheus", &expected), Ok(()));
        let mut numbered = ok.clone();
        numbered.staging = "/p/data.restoring-20261127T235501Z-2".into();
        numbered.replaced = Some("/p/data.replaced-20261127T235501Z".into());
        assert_eq!(check_paths(&numbered, "prometheus", &expected), Ok(()));
        let bad = |f: &dyn Fn(&mut Record)| {
            let mut r = ok.clone();
            f(&mut r);
            check_paths(&r, "prometheus", &expected).unwrap_err()
        };
        for staging in [
            "/home/u/photos",
            "/p/photos",
            "/p/data.restoring-x",
            "/p/data.replaced-20261127T235501Z",
            "/q/data.restoring-20261127T235501Z",
            "/p/data/../data.restoring-20261127T235501Z",
            "/p/data.restoring-20261127T235501Z-07",
            "/p/data.restoring-2026112XT235501Z",
        ] {
            let e = bad(&|r| r.staging = staging.into());
            assert!(
                e.contains(staging) && e.contains("never creates"),
                "{staging}: {e}"
            );
        }
        let e = bad(&|r| r.replaced = Some("/etc".into()));
        assert!(e.contains("/etc") && e.contains("data it replaced"), "{e}");
        let e = bad(&|r| r.data_dir = "/home/u".into());
        assert!(e.contains("not the prometheus.dataDir"), "{e}");
        let e = bad(&|r| r.service = "other".into());
        assert!(e.contains("\"other\""), "{e}");
        // A Service no Backup manifest restores: nothing is expected.
        assert!(check_paths(&ok, "prometheus", &[]).is_err());
    }

    #[test]
    fn a_symlinked_data_directory_is_expected_by_its_real_path_even_when_moved_aside() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("real/data");
        fs::create_dir_all(&real).unwrap();
        let link = d.path().join("data");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let real = fs::canonicalize(&real).unwrap();
        assert!(expected_data_dirs(std::slice::from_ref(&link)).contains(&real));
        // Moved aside by the restore: the link dangles.
        fs::rename(&real, real.with_file_name("data.replaced-20261127T235501Z")).unwrap();
        assert!(expected_data_dirs(&[link]).contains(&real));
    }

    /// Issue 20, item 12: the test hooks exist only where debug
    /// assertions are on. Run under a release profile (`cargo nextest run
    /// --cargo-profile release`, or this binary built with `-C
    /// debug-assertions=off`), the first check fails if the hooks' names
    /// are compiled in; the second keeps every release profile (what
    /// users install) without debug assertions.
    #[test]
    fn issue20_12_test_hooks_are_compiled_only_into_debug_builds() {
        // Built at run time, so the needle itself is not in the binary.
        let needles: Vec<String> = ["CRASH", "PAUSE"]
            .iter()
            .map(|w| format!("{}_TEST_{}_AFTER", std::hint::black_box("UNITLET"), w))
            .collect();
        let exe = fs::read(std::env::current_exe().unwrap()).unwrap();
        for needle in &needles {
            let found = exe.windows(needle.len()).any(|w| w == needle.as_bytes());
            assert_eq!(
                found,
                cfg!(debug_assertions),
                "{needle} compiled in: {found}; debug assertions: {}",
                cfg!(debug_assertions)
            );
        }
        let cargo_toml = include_str!("../Cargo.toml");
        let mut profile = String::new();
        for line in cargo_toml.lines().map(str::trim) {
            if line.starts_with('[') {
                profile = line.to_owned();
            } else if line.replace(' ', "").starts_with("debug-assertions=true") {
                assert!(
                    ["[profile.dev]", "[profile.test]"].contains(&profile.as_str()),
                    "{profile} turns debug assertions on, and with them the restore journal's test hooks"
                );
            }
        }
    }

    #[test]
    fn steps_are_ordered_and_named() {
        let names: Vec<&str> = Step::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(
            names,
            [
                "copy",
                "stop",
                "move-aside",
                "install",
                "start",
                "verify",
                "done",
                "roll-back"
            ]
        );
        for s in Step::ALL {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.name()));
        }
        assert!(Step::Copy < Step::Done && Step::Done < Step::RollBack);
    }

    #[test]
    fn the_lock_refuses_a_second_owner_and_names_the_first() {
        let d = tempfile::tempdir().unwrap();
        let first = Owner::me("restore of Backup tsdb set S1".into());
        let lock = RestoreLock::try_acquire(d.path(), "prometheus", &first)
            .unwrap()
            .unwrap();
        let busy = RestoreLock::try_acquire(d.path(), "prometheus", &Owner::me("x".into()))
            .unwrap()
            .unwrap_err();
        assert_eq!(busy.owner(), Some(first));
        // Another service is independent.
        assert!(
            RestoreLock::try_acquire(d.path(), "other", &Owner::me("y".into()))
                .unwrap()
                .is_ok()
        );
        drop(lock);
        assert!(
            RestoreLock::try_acquire(d.path(), "prometheus", &Owner::me("z".into()))
                .unwrap()
                .is_ok()
        );
    }

    #[test]
    fn a_journal_holds_its_service_until_finished() {
        let d = tempfile::tempdir().unwrap();
        let lock = RestoreLock::try_acquire(d.path(), "prometheus", &Owner::me("t".into()))
            .unwrap()
            .unwrap();
        let mut j = Journal::begin(lock, rec(Step::Copy, true)).unwrap();
        j.step(Step::Stop).unwrap();
        assert_eq!(pending_names(d.path()), ["prometheus"]);
        assert_eq!(crate::hold::active_holds(d.path()), ["prometheus"]);
        let p = pending(d.path());
        assert_eq!(p[0].record.as_ref().unwrap().step, Step::Stop);
        // Dropped without finish (a crash): still there.
        drop(j);
        assert_eq!(crate::hold::active_holds(d.path()), ["prometheus"]);
        let (reason, msg) = pending(d.path())[0].condition();
        assert_eq!(reason, crate::status::Reason::RestoreInterrupted);
        assert!(msg.contains("set S"), "{msg}");
        let lock = RestoreLock::try_acquire(d.path(), "prometheus", &Owner::me("t".into()))
            .unwrap()
            .unwrap();
        let j = Journal::begin(lock, rec(Step::Copy, true)).unwrap();
        j.finish().unwrap();
        assert!(crate::hold::active_holds(d.path()).is_empty());
        assert!(pending(d.path()).is_empty());
    }
}
