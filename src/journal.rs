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
//! This module is the store: the file format, reading and writing it, the
//! lock. Recovering an interrupted restore is a process of its own,
//! `prometheus::recover`.
//!
//! Architecture Invariant: a journal holds its service like a hold
//! ([`held_services`] lists it), so the operator neither starts nor stops
//! it until `prometheus::recover::recover_interrupted` has run and removed
//! it.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::fsutil;
use crate::hold::Hold;
use crate::status::{ConditionStatus, ConditionType, Reason, Status};

/// The directory of journals and locks inside the state directory.
pub const DIR: &str = "restores";

fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join(DIR)
}

/// The journal of `service`.
pub fn journal_path(state_dir: &Path, service: &str) -> PathBuf {
    dir(state_dir).join(format!("{service}.json"))
}

/// The restore lock of `service`. It lives beside the journals, where the
/// operator does not watch: recovery takes it in every pass that finds a
/// journal.
pub fn lock_path(state_dir: &Path, service: &str) -> PathBuf {
    dir(state_dir).join(format!(".{service}.lock"))
}

/// A running restore's beacon, in the holds directory, which the operator
/// watches (a dot file, which [`crate::hold::live_holds`] skips).
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
    pub fn describe(self) -> &'static str {
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
    /// The Service's unit, which runs Prometheus.
    pub fn unit(&self) -> String {
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
    /// The state directory the lock is in.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The service it locks.
    pub fn service(&self) -> &str {
        &self.service
    }

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
    ///
    /// # Errors
    /// `Ok(Err(()))` when another process holds it; `Err` when the state
    /// directory cannot be written.
    pub fn try_lock(
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
        file.write_all(&serde_json::to_vec(owner).map_err(io::Error::other)?)?;
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
/// on purpose: whatever state the data is in, `prometheus::recover`
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
        let bytes = serde_json::to_vec_pretty(&self.record).map_err(io::Error::other)?;
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

/// Reads the journal of `service`, if there is one (`Err`: why it cannot
/// be read, for people).
pub fn read(state_dir: &Path, service: &str) -> Option<Result<Record, String>> {
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

/// [`pending_names`] off the async runtime, within
/// [`crate::fsutil::READ_DEADLINE`]: a hung state directory holds up no
/// pass.
///
/// # Errors
/// When the directory does not answer in time.
pub async fn pending_names_off_runtime(state_dir: &Path) -> Result<Vec<String>, String> {
    let d = state_dir.to_path_buf();
    let key = dir(state_dir);
    crate::fsutil::off_runtime(&key, crate::fsutil::READ_DEADLINE, move || {
        pending_names(&d)
    })
    .await
}

/// [`read`] off the async runtime, within [`crate::fsutil::READ_DEADLINE`]
/// (a journal that does not answer in time is an unusable one).
pub async fn read_off_runtime(state_dir: &Path, service: &str) -> Option<Result<Record, String>> {
    let (d, s) = (state_dir.to_path_buf(), service.to_owned());
    let path = journal_path(state_dir, service);
    match crate::fsutil::off_runtime(&path, crate::fsutil::READ_DEADLINE, move || read(&d, &s))
        .await
    {
        Ok(r) => r,
        Err(e) => Some(Err(format!("the restore journal {} {e}", path.display()))),
    }
}

/// Names the operator must leave alone: held by a live owner
/// ([`crate::hold::live_holds`]), or by a restore journal (its restore
/// running, or interrupted and not yet recovered).
pub fn held_services(state_dir: &Path) -> Vec<String> {
    let mut out = pending_names(state_dir);
    out.extend(crate::hold::live_holds(state_dir));
    out.sort();
    out.dedup();
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
/// without acting on them: a `RestorePending` condition says which
/// restore it is (an input of the Service's `Ready`, which `get` decides
/// with `reconcile::ready::decide`).
pub fn annotate(state_dir: &Path, status: &mut Status) {
    for p in pending(state_dir) {
        let Some(o) = status.objects.get_mut(&p.service) else {
            continue;
        };
        let (reason, message) = p.condition();
        let pending = ConditionType::RestorePending;
        o.set_condition(pending, ConditionStatus::True, reason, &message);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A journal record of a restore at `step` (test fixture).
    pub(crate) fn rec(step: Step, replaced: bool) -> Record {
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
        assert_eq!(held_services(d.path()), ["prometheus"]);
        let p = pending(d.path());
        assert_eq!(p[0].record.as_ref().unwrap().step, Step::Stop);
        // Dropped without finish (a crash): still there.
        drop(j);
        assert_eq!(held_services(d.path()), ["prometheus"]);
        let (reason, msg) = pending(d.path())[0].condition();
        assert_eq!(reason, crate::status::Reason::RestoreInterrupted);
        assert!(msg.contains("set S"), "{msg}");
        let lock = RestoreLock::try_acquire(d.path(), "prometheus", &Owner::me("t".into()))
            .unwrap()
            .unwrap();
        let j = Journal::begin(lock, rec(Step::Copy, true)).unwrap();
        j.finish().unwrap();
        assert!(held_services(d.path()).is_empty());
        assert!(pending(d.path()).is_empty());
    }
}
