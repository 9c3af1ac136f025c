//! One writer at a time.
//!
//! Every command that changes systemd, unit files, status or holds (`run`'s
//! passes, `apply`, `backup`, `restore`) takes [`StateLock`] — an exclusive
//! `flock` on `STATE_DIR/unitlet.lock` — for the duration of a write. So an
//! `apply` beside `run` never sees (or shows the operator) half of the
//! other's work: each reads status and unit files after the other finished.
//!
//! `run` also holds [`OperatorLock`] (`STATE_DIR/run.lock`) for its whole
//! life, which is how `get` tells a fresh status from a stale one: if nobody
//! holds it, no operator is keeping the status current.
//!
//! `flock` locks belong to the open file: they vanish when the holder dies,
//! so a `kill -9` never leaves a lock behind.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::{FlockOperation, flock};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The lock file cannot be opened (state directory missing or not ours).
    #[error("cannot open lock file {path}; check the state directory (--state-dir) is writable")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Another operator holds the operator lock.
    #[error(
        "another `unitlet run` (PID {pid}) already operates on state directory {dir}; stop it first, or use another --state-dir"
    )]
    OperatorRunning { pid: String, dir: PathBuf },
    /// The state directory is not private: nothing there is read or
    /// written.
    #[error(transparent)]
    StateDir(#[from] crate::locations::LocationError),
}

fn open(path: &Path) -> Result<File, LockError> {
    if let Some(d) = path.parent() {
        let _ = crate::fsutil::create_dir_all(d);
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(crate::fsutil::open_flags(
            rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC,
        ))
        .open(path)
        .map_err(|source| LockError::Open {
            path: path.to_path_buf(),
            source,
        })
}

/// What the holder wrote into a lock file: `PID WHAT`.
fn holder(f: &mut File) -> String {
    let mut s = String::new();
    let _ = f.seek(std::io::SeekFrom::Start(0));
    let _ = f.take(200).read_to_string(&mut s);
    s.trim().to_string()
}

fn record_holder(f: &mut File, what: &str) {
    let _ = f.set_len(0);
    let _ = f.seek(std::io::SeekFrom::Start(0));
    let _ = write!(f, "{} {what}", std::process::id());
}

/// The exclusive write lock on a state directory, released on drop.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

impl StateLock {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("unitlet.lock")
    }

    /// Take the lock if it is free, once the state directory passed
    /// [`crate::locations::check_state_dir`]: whoever holds this lock
    /// reads status, holds and journals next, and must not trust a
    /// directory others can write.
    ///
    /// # Errors
    /// [`LockError::StateDir`] for a state directory others can write (or
    /// someone else's); when the lock file cannot be opened.
    /// `Ok(Err(holder))` when another process holds the lock (`holder` is
    /// its `PID what`).
    pub fn try_acquire(
        state_dir: &Path,
        what: &str,
    ) -> Result<Result<StateLock, String>, LockError> {
        crate::locations::check_state_dir(state_dir)?;
        let mut f = open(&StateLock::path(state_dir))?;
        match flock(&f, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {
                record_holder(&mut f, what);
                Ok(Ok(StateLock { _file: f }))
            }
            Err(_) => Ok(Err(holder(&mut f))),
        }
    }

    /// Take the lock, waiting for the current holder without blocking the
    /// async runtime. `on_wait` is called once, with the holder, when the
    /// lock is busy (the CLI says who it waits for).
    ///
    /// # Errors
    /// When the lock file cannot be opened.
    pub async fn acquire(
        state_dir: &Path,
        what: &str,
        on_wait: impl FnOnce(&str),
    ) -> Result<StateLock, LockError> {
        let mut on_wait = Some(on_wait);
        // Polled: 2 ms, doubling to 50 ms.
        let mut delays =
            crate::RetryDelays::new(Duration::from_millis(2), Duration::from_millis(50));
        loop {
            match StateLock::try_acquire(state_dir, what)? {
                Ok(l) => return Ok(l),
                Err(h) => {
                    if let Some(f) = on_wait.take() {
                        f(&h);
                    }
                    tokio::time::sleep(delays.failed()).await;
                }
            }
        }
    }
}

/// Held by `unitlet run` for its lifetime.
#[derive(Debug)]
pub struct OperatorLock {
    _file: File,
}

impl OperatorLock {
    fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("run.lock")
    }

    /// # Errors
    /// [`LockError::OperatorRunning`] when another operator holds it.
    pub fn acquire(state_dir: &Path) -> Result<OperatorLock, LockError> {
        let mut f = open(&OperatorLock::path(state_dir))?;
        if flock(&f, FlockOperation::NonBlockingLockExclusive).is_err() {
            let h = holder(&mut f);
            return Err(LockError::OperatorRunning {
                pid: h.split_whitespace().next().unwrap_or("?").to_string(),
                dir: state_dir.to_path_buf(),
            });
        }
        record_holder(&mut f, "unitlet run");
        Ok(OperatorLock { _file: f })
    }
}

/// The PID of the `unitlet run` operating on `state_dir`, if one is.
pub fn operator_pid(state_dir: &Path) -> Option<u32> {
    let path = OperatorLock::path(state_dir);
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(crate::fsutil::open_flags(
            rustix::fs::OFlags::NOFOLLOW
                | rustix::fs::OFlags::CLOEXEC
                | rustix::fs::OFlags::NONBLOCK,
        ))
        .open(path)
        .ok()?;
    match flock(&f, FlockOperation::NonBlockingLockShared) {
        // Nobody holds it exclusively: no operator.
        Ok(()) => None,
        Err(_) => holder(&mut f).split_whitespace().next()?.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_writer_at_a_time_and_released_on_drop() {
        let d = tempfile::tempdir().unwrap();
        let first = StateLock::try_acquire(d.path(), "apply").unwrap().unwrap();
        let busy = StateLock::try_acquire(d.path(), "run")
            .unwrap()
            .unwrap_err();
        assert_eq!(busy, format!("{} apply", std::process::id()));
        drop(first);
        let mut waited = false;
        let _again = StateLock::acquire(d.path(), "run", |_| waited = true)
            .await
            .unwrap();
        assert!(!waited, "a free lock is taken without waiting");
    }

    /// A busy lock is tried again after 2 ms, then 4, 8, 16, 32 and 50 ms
    /// (the cap): a holder leaving at 100 ms is followed at the attempt at
    /// 112 ms (2 + 4 + 8 + 16 + 32 + 50), not before.
    #[tokio::test(start_paused = true)]
    async fn a_busy_lock_is_polled_after_2ms_doubling_to_50ms() {
        let d = tempfile::tempdir().unwrap();
        let held = StateLock::try_acquire(d.path(), "apply").unwrap().unwrap();
        let start = tokio::time::Instant::now();
        let leave = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(held);
        });
        let _l = StateLock::acquire(d.path(), "run", |_| {}).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(112));
        leave.await.unwrap();
    }

    /// Issue 20, item 4: a writer reads nothing from a state directory
    /// others can write (or one of its trusted subdirectories): the lock
    /// is refused before its file is even created.
    #[test]
    fn issue20_4_the_state_lock_refuses_a_state_dir_others_can_write() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let state = d.path().join("state");
        for sub in ["", "holds", "restores", "rollouts"] {
            let dir = state.join(sub);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
            let e = StateLock::try_acquire(&state, "apply").unwrap_err();
            assert!(matches!(e, LockError::StateDir(_)), "{e}");
            assert!(e.to_string().contains("is writable by other users"), "{e}");
            assert!(!StateLock::path(&state).exists(), "nothing is created");
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        drop(StateLock::try_acquire(&state, "apply").unwrap().unwrap());
    }

    #[test]
    fn operator_lock_is_visible_and_exclusive() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(operator_pid(d.path()), None);
        let l = OperatorLock::acquire(d.path()).unwrap();
        assert_eq!(operator_pid(d.path()), Some(std::process::id()));
        assert!(matches!(
            OperatorLock::acquire(d.path()),
            Err(LockError::OperatorRunning { .. })
        ));
        drop(l);
        assert_eq!(operator_pid(d.path()), None);
    }
}
