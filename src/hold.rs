//! Holds: a person's operation (a restore) asking the operator to keep its
//! hands off a manifest's units until it is done, so `unitlet run` does not
//! start a service that a restore has just stopped.
//!
//! A hold is a file `STATE_DIR/holds/NAME` that its owner keeps open and
//! `flock(2)`ed for as long as it holds (it also names the owner's PID, for
//! people). The kernel drops the lock when the owner dies however it dies,
//! so a hold whose lock can be taken is stale and ignored — whatever PID it
//! names, alive or reused (a crashed restore never blocks the operator
//! forever).
//!
//! Its owner removes the file while still holding the lock, then closes
//! it: that close is what wakes `unitlet run`, which watches the holds
//! directory (a removal alone changes nothing a pass looks at, so the
//! operator's own removal of a stale hold does not wake it).
//!
//! A restore journal holds its service too, even when its owner is gone
//! (an interrupted restore may have left the data directory moved aside):
//! `journal::held_services` adds the journals to [`live_holds`].

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{FlockOperation, flock};

use crate::fsutil;

/// How long [`Hold::acquire`] waits for someone probing the hold (a pass
/// takes its lock for an instant) or holding it.
const ACQUIRE_WAIT: Duration = Duration::from_secs(5);

/// `STATE_DIR/holds`, which the operator watches.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("holds")
}

/// An acquired hold; released (file removed, lock dropped) on drop.
#[derive(Debug)]
pub struct Hold {
    path: PathBuf,
    /// The lock lives on this descriptor, open for writing: closing it is
    /// what the operator sees.
    _file: File,
}

fn open_hold(path: &Path, write: bool) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .create(write)
        .truncate(false)
        .mode(0o600)
        .custom_flags(crate::fsutil::open_flags(
            rustix::fs::OFlags::NOFOLLOW
                | rustix::fs::OFlags::CLOEXEC
                | rustix::fs::OFlags::NONBLOCK,
        ))
        .open(path)
}

/// Whether `f` is still the file at `path` (not removed or replaced since
/// it was opened): a lock on a removed file holds nothing.
fn is_current(f: &File, path: &Path) -> bool {
    match (f.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

impl Hold {
    /// Hold manifest `name` for the lifetime of the returned value.
    ///
    /// # Errors
    /// When the state directory cannot be written, or another live
    /// process holds `name` for longer than a few seconds.
    pub fn acquire(state_dir: &Path, name: &str) -> std::io::Result<Hold> {
        Hold::acquire_within(state_dir, name, ACQUIRE_WAIT)
    }

    fn acquire_within(state_dir: &Path, name: &str, wait: Duration) -> std::io::Result<Hold> {
        let path = dir(state_dir).join(name);
        fsutil::create_dir_all(&dir(state_dir))?;
        let deadline = Instant::now() + wait;
        loop {
            let mut f = open_hold(&path, true)?;
            match flock(&f, FlockOperation::NonBlockingLockExclusive) {
                // Whoever held it before removed it meanwhile: lock the
                // file the path names now.
                Ok(()) if !is_current(&f, &path) => continue,
                Ok(()) => {
                    f.set_len(0)?;
                    f.write_all(std::process::id().to_string().as_bytes())?;
                    return Ok(Hold { path, _file: f });
                }
                Err(e) if e == rustix::io::Errno::WOULDBLOCK && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                    let pid = std::fs::read_to_string(&path).unwrap_or_default();
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::WouldBlock,
                        format!(
                            "{} is held by another process (PID {})",
                            path.display(),
                            pid.trim()
                        ),
                    ));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        // Removed under the lock, so nobody takes a lock on this file
        // after we let go; the close that follows wakes the operator.
        let _ = fsutil::remove_durable(&self.path);
    }
}

/// Whether someone holds the hold at `path` (its lock is taken). Only
/// regular files count; the probe opens it read-only, which no watcher
/// counts as a change.
fn held(path: &Path) -> bool {
    let Ok(f) = open_hold(path, false) else {
        return false;
    };
    if !f.metadata().is_ok_and(|m| m.is_file()) {
        return false;
    }
    flock(&f, FlockOperation::NonBlockingLockShared) == Err(rustix::io::Errno::WOULDBLOCK)
}

/// Names currently held by a live owner (its lock is taken). A restore
/// journal holds its service too: `journal::held_services` lists both.
pub fn live_holds(state_dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir(state_dir)) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if held(&e.path()) {
            out.push(name);
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Removes the hold on `name` if nobody holds it (a restore killed before
/// it could release it). A held hold is left alone. Writes nothing else:
/// the removal alone does not wake the operator.
pub fn remove_stale(state_dir: &Path, name: &str) {
    let path = dir(state_dir).join(name);
    let Ok(f) = open_hold(&path, false) else {
        return;
    };
    if f.metadata().is_ok_and(|m| m.is_file())
        && flock(&f, FlockOperation::NonBlockingLockExclusive).is_ok()
        && is_current(&f, &path)
    {
        let _ = fsutil::remove_durable(&path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hold_lifecycle_and_stale_holds() {
        let d = tempfile::tempdir().unwrap();
        {
            let _h = Hold::acquire(d.path(), "prometheus").unwrap();
            assert_eq!(live_holds(d.path()), vec!["prometheus".to_string()]);
            // A probe or a cleanup never takes a live hold away.
            remove_stale(d.path(), "prometheus");
            assert_eq!(live_holds(d.path()), vec!["prometheus".to_string()]);
        }
        assert!(live_holds(d.path()).is_empty());
        assert!(!d.path().join("holds/prometheus").exists(), "released");
        std::fs::write(d.path().join("holds/ghost"), "999999999").unwrap();
        assert!(
            live_holds(d.path()).is_empty(),
            "a dead owner's hold is stale"
        );
        remove_stale(d.path(), "ghost");
        assert!(!d.path().join("holds/ghost").exists());
    }

    /// Issue 20, item 14: a hold is judged by its lock, not by the PID it
    /// names: a reused PID (here: a live one, ours) keeps nothing held.
    #[test]
    fn issue20_14_a_hold_naming_a_live_pid_but_not_locked_is_stale() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("holds")).unwrap();
        let path = d.path().join("holds/prometheus");
        std::fs::write(&path, std::process::id().to_string()).unwrap();
        assert!(
            live_holds(d.path()).is_empty(),
            "nobody holds its lock: stale, whatever PID it names"
        );
        // Acquired over the stale file, it holds; the same file, not a new one.
        let h = Hold::acquire(d.path(), "prometheus").unwrap();
        assert_eq!(live_holds(d.path()), ["prometheus"]);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            std::process::id().to_string()
        );
        // A second holder waits, then says who holds it.
        let e = std::thread::scope(|s| {
            s.spawn(|| {
                // flock locks belong to the open file: another open in this
                // process conflicts like another process would.
                Hold::acquire_within(d.path(), "prometheus", Duration::from_millis(50)).unwrap_err()
            })
            .join()
            .unwrap()
        });
        assert!(e.to_string().contains("held by another process"), "{e}");
        drop(h);
        assert!(live_holds(d.path()).is_empty());
    }
}
