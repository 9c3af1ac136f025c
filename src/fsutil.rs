//! Crash-safe file writes: a crash at any moment leaves the old file or the
//! new one, never half of either.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Write `bytes` to `path` atomically: a temporary file in the same
/// directory, fsync, rename over the target, fsync the directory.
///
/// # Errors
/// Any I/O error; the target is then untouched (a stray temporary file may
/// remain, named `.NAME.unitlet-tmp.PID`, and is overwritten next time).
pub fn atomic_write(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let (dir, tmp) = write_temp(path, bytes, mode)?;
    let result = (|| {
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_dir(&dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Write `bytes` to the temporary file beside `path` (not yet durable).
/// Returns the directory and the temporary's path.
fn write_temp(
    path: &Path,
    bytes: &[u8],
    mode: u32,
) -> std::io::Result<(std::path::PathBuf, std::path::PathBuf)> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    std::fs::create_dir_all(&dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.unitlet-tmp.{}", std::process::id()));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)
    })();
    match written {
        Ok(()) => Ok((dir, tmp)),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Write many files atomically with one filesystem sync instead of two
/// fsyncs each: every file goes to a temporary, `syncfs` makes them all
/// durable, then each is renamed over its target and the directories are
/// fsynced once. A crash leaves every target old or new, never half.
///
/// Returns one result per file; a failure of one file does not stop the
/// others.
pub fn atomic_write_batch(files: &[(&Path, &[u8], u32)]) -> Vec<std::io::Result<()>> {
    let mut temps: Vec<std::io::Result<std::path::PathBuf>> = Vec::with_capacity(files.len());
    for (path, bytes, mode) in files {
        temps.push(write_temp(path, bytes, *mode).map(|(_, tmp)| tmp));
    }
    // One sync for all temporaries (they share the unit directory's fs).
    let mut synced = true;
    if let Some((first, _, _)) = files.first() {
        let dir = first.parent().unwrap_or(Path::new("."));
        synced = std::fs::File::open(dir)
            .map(|f| {
                use std::os::fd::AsRawFd;
                unsafe { libc::syncfs(f.as_raw_fd()) == 0 }
            })
            .unwrap_or(false);
    }
    let mut dirs = std::collections::BTreeSet::new();
    let mut out = Vec::with_capacity(files.len());
    for ((path, _, _), tmp) in files.iter().zip(temps) {
        out.push((|| {
            let tmp = tmp?;
            if !synced {
                std::fs::File::open(&tmp)?.sync_all()?;
            }
            if let Err(e) = std::fs::rename(&tmp, path) {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
            if let Some(d) = path.parent() {
                dirs.insert(d.to_path_buf());
            }
            Ok(())
        })());
    }
    for d in dirs {
        let _ = sync_dir(&d);
    }
    out
}

/// The writer's PID if `name` is one of [`atomic_write`]'s temporary files.
pub fn stale_temp_pid(name: &str) -> Option<i32> {
    let rest = name.strip_prefix('.')?;
    let (_, pid) = rest.rsplit_once(".unitlet-tmp.")?;
    pid.parse().ok()
}

/// Whether a process exists (a temporary file of a live writer is not stale).
pub fn pid_alive(pid: i32) -> bool {
    pid > 0
        && (unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
}

/// fsync a directory so a rename or unlink in it is durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Remove a file and make the removal durable.
pub fn remove_durable(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_replaces() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/a.service");
        atomic_write(&p, b"one", 0o644).unwrap();
        atomic_write(&p, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let leftovers: Vec<_> = std::fs::read_dir(d.path().join("sub")).unwrap().collect();
        assert_eq!(leftovers.len(), 1);
        remove_durable(&p).unwrap();
        remove_durable(&p).unwrap();
        assert_eq!(stale_temp_pid(".a.service.unitlet-tmp.42"), Some(42));
        assert_eq!(stale_temp_pid("a.service"), None);
        assert!(pid_alive(std::process::id() as i32));
        let a = d.path().join("b/x.service");
        let b = d.path().join("b/y.service");
        let r = atomic_write_batch(&[(&a, b"x", 0o644), (&b, b"y", 0o644)]);
        assert!(r.iter().all(|r| r.is_ok()));
        assert_eq!(std::fs::read(&a).unwrap(), b"x");
        assert_eq!(std::fs::read_dir(d.path().join("b")).unwrap().count(), 2);
        assert!(!p.exists());
    }
}
