//! Holds: a person's operation (a restore) asking the operator to keep its
//! hands off a manifest's units until it is done, so `unitlet run` does not
//! start a service that a restore has just stopped.
//!
//! A hold is a file `STATE_DIR/holds/NAME` holding the PID of its owner. A
//! hold whose owner is gone is stale and ignored (a crashed restore never
//! blocks the operator forever).
//!
//! A restore journal ([`crate::journal`]) holds its service too, even when
//! its owner is gone: an interrupted restore may have left the data
//! directory moved aside, so the service must stay untouched until
//! [`crate::journal::recover_interrupted`] has put things right.

use std::path::{Path, PathBuf};

use crate::fsutil;

/// `STATE_DIR/holds`, which the operator watches.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("holds")
}

/// An acquired hold; released (file removed) on drop.
#[derive(Debug)]
pub struct Hold {
    path: PathBuf,
}

impl Hold {
    /// Hold manifest `name` for the lifetime of the returned value.
    ///
    /// # Errors
    /// When the state directory cannot be written.
    pub fn acquire(state_dir: &Path, name: &str) -> std::io::Result<Hold> {
        let path = dir(state_dir).join(name);
        fsutil::atomic_write(&path, std::process::id().to_string().as_bytes(), 0o600)?;
        Ok(Hold { path })
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let _ = fsutil::remove_durable(&self.path);
    }
}

/// Names currently held: by a live process, or by a restore journal
/// (running or interrupted and not yet recovered).
pub fn active_holds(state_dir: &Path) -> Vec<String> {
    let mut out = crate::journal::pending_names(state_dir);
    let Ok(rd) = std::fs::read_dir(dir(state_dir)) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let pid = read_pid(&e.path());
        if pid.is_some_and(fsutil::pid_alive) {
            out.push(name);
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The PID in a hold file: a regular file of a few bytes (a FIFO or a
/// device planted there is no hold, and never blocks the reader).
fn read_pid(path: &Path) -> Option<i32> {
    let b = fsutil::read_regular_capped(path, false, 64).ok()?;
    String::from_utf8_lossy(&b).trim().parse().ok()
}

/// Removes the hold on `name` if its owner is gone (a restore killed
/// before it could release it). A live owner's hold is left alone.
pub fn remove_stale(state_dir: &Path, name: &str) {
    let path = dir(state_dir).join(name);
    let pid = read_pid(&path);
    if pid.is_some_and(|p| !fsutil::pid_alive(p)) {
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
            assert_eq!(active_holds(d.path()), vec!["prometheus".to_string()]);
        }
        assert!(active_holds(d.path()).is_empty());
        std::fs::write(d.path().join("holds/ghost"), "999999999").unwrap();
        assert!(
            active_holds(d.path()).is_empty(),
            "a dead owner's hold is stale"
        );
    }
}
