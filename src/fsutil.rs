//! Crash-safe file writes (a crash at any moment leaves the old file or
//! the new one, never half of either) and the one bounded reader (regular
//! files only, capped, off the async runtime with a deadline).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

use std::path::Path;

/// Write `bytes` to `path` atomically: a temporary file in the same
/// directory, fsync, rename over the target, fsync the directory.
///
/// The temporary, `.NAME.unitlet-tmp.PID.RANDOM`, comes from
/// [`tempfile::Builder`]: created exclusively (`O_CREAT|O_EXCL`, so a
/// symlink or anything else found at the name is never opened; another
/// random name is tried), mode 0600 until `mode` is set, and removed again
/// on any failure.
///
/// # Errors
/// Any I/O error; the target is then untouched.
pub fn atomic_write(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = write_temp(path, bytes, mode)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(&parent_dir(path))
}

/// [`atomic_write`] without any fsync: no half-written file ever appears
/// under `path`, but durability is the caller's, by one flush of many files
/// later ([`sync_files`], [`sync_tree`]), as a backup set's files are.
///
/// # Errors
/// Any I/O error; the target is then untouched.
pub fn renamed_write(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = write_temp(path, bytes, mode)?;
    tmp.persist(path).map(drop).map_err(|e| e.error)
}

/// [`atomic_write`] of a file that appears under `path` already `flock`ed
/// (exclusively) through the returned handle: the lock follows the file
/// through the rename, so nobody ever sees it unlocked while the handle
/// lives. The directory is not fsynced.
///
/// # Errors
/// Any I/O error; the target is then untouched.
pub fn atomic_write_locked(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<std::fs::File> {
    let tmp = write_temp(path, bytes, mode)?;
    rustix::fs::flock(tmp.as_file(), rustix::fs::FlockOperation::LockExclusive)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)
}

/// The directory `path` is in (`.` for a bare name).
fn parent_dir(path: &Path) -> std::path::PathBuf {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// Write `bytes` to a new temporary file beside `path` (not yet durable),
/// creating the directory if needed. The file is removed when the handle
/// is dropped without being persisted.
fn write_temp(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<tempfile::NamedTempFile> {
    let dir = parent_dir(path);
    create_dir_all(&dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.unitlet-tmp.{}.", std::process::id()))
        .tempfile_in(&dir)?;
    // Set after creation: the umask must not narrow the mode asked for.
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    tmp.write_all(bytes)?;
    Ok(tmp)
}

/// How many threads fsync a batch's temporaries: concurrent fsyncs share
/// journal commits, so a batch costs a few commits, not one per file.
const SYNC_THREADS: usize = 16;

/// Write many files atomically: every file goes to a temporary, the
/// temporaries are fsynced concurrently, then each is renamed over its
/// target and each directory is fsynced once. A crash leaves every target
/// old or new, never half.
///
/// Only our own files are synced. (A `syncfs` of the whole filesystem was
/// used before; it also flushes whatever else is dirty on it — a build, a
/// busy database — so it grew with the machine's load, not with the batch:
/// 190 ms for 200 unit files on a busy machine against 7 ms for these
/// fsyncs.)
///
/// Returns one result per file; a failure of one file does not stop the
/// others.
pub fn atomic_write_batch(files: &[(&Path, &[u8], u32)]) -> Vec<std::io::Result<()>> {
    // Handles are closed at once (a large batch must not run out of file
    // descriptors) and reopened, without following links, to sync.
    let temps: Vec<std::io::Result<tempfile::TempPath>> = files
        .iter()
        .map(|(path, bytes, mode)| write_temp(path, bytes, *mode).map(|t| t.into_temp_path()))
        .collect();
    let pending: Vec<&Path> = temps
        .iter()
        .filter_map(|t| t.as_ref().ok().map(|p| p.as_ref()))
        .collect();
    let mut results = sync_files(&pending).into_iter();
    let synced: Vec<std::io::Result<()>> = temps
        .iter()
        .map(|t| match t {
            Ok(_) => results
                .next()
                .unwrap_or_else(|| Err(std::io::Error::other("not synced"))),
            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
        })
        .collect();
    let mut dirs = std::collections::BTreeSet::new();
    let mut out = Vec::with_capacity(files.len());
    for (((path, _, _), tmp), synced) in files.iter().zip(temps).zip(synced) {
        // A temporary not persisted is removed when dropped.
        out.push(tmp.and_then(|tmp| {
            synced?;
            tmp.persist(path).map_err(|e| e.error)?;
            dirs.insert(parent_dir(path));
            Ok(())
        }));
    }
    for d in dirs {
        let _ = sync_dir(&d);
    }
    out
}

/// fsync one file (data and metadata), not opened through a symlink.
pub fn sync_file(path: &Path) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(open_flags(rustix::fs::OFlags::NOFOLLOW))
        .open(path)?
        .sync_all()
}

/// fsync each file, up to [`SYNC_THREADS`] at once, opening none through
/// a symlink; one result per path, in order. Only these files are flushed,
/// unlike a `syncfs`, whose cost is whatever else is dirty on the disk.
pub fn sync_files(paths: &[&Path]) -> Vec<std::io::Result<()>> {
    let sync = sync_file;
    let chunk = paths.len().div_ceil(SYNC_THREADS).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = paths
            .chunks(chunk)
            .map(|part| {
                let n = part.len();
                (
                    n,
                    scope.spawn(move || part.iter().map(|p| sync(p)).collect::<Vec<_>>()),
                )
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|(n, h)| {
                h.join().unwrap_or_else(|_| {
                    (0..n)
                        .map(|_| Err(std::io::Error::other("an fsync thread panicked")))
                        .collect()
                })
            })
            .collect()
    })
}

/// The writer's PID if `name` is one of [`atomic_write`]'s temporary files
/// (`.NAME.unitlet-tmp.PID.RANDOM`, or `.NAME.unitlet-tmp.PID` as written
/// before 0.2).
pub fn stale_temp_pid(name: &str) -> Option<i32> {
    let rest = name.strip_prefix('.')?;
    let (_, tail) = rest.rsplit_once(".unitlet-tmp.")?;
    let pid = tail.split_once('.').map_or(tail, |(pid, _)| pid);
    pid.parse().ok()
}

/// Whether a process exists (a temporary file of a live writer is not stale).
pub fn pid_alive(pid: i32) -> bool {
    use rustix::process::{Pid, test_kill_process};
    Pid::from_raw(pid)
        .is_some_and(|p| matches!(test_kill_process(p), Ok(()) | Err(rustix::io::Errno::PERM)))
}

/// `open(2)` flags for [`std::os::unix::fs::OpenOptionsExt::custom_flags`],
/// from rustix's typed ones.
pub fn open_flags(flags: rustix::fs::OFlags) -> i32 {
    i32::try_from(flags.bits()).unwrap_or(0)
}

/// Copies `from` to a new file `to` (its mode kept; `create_new`, so
/// nothing is overwritten), giving every chunk to `inspect` (a hash, a
/// progress bar), then fsyncs the copy. Returns the bytes copied.
///
/// # Errors
/// Any I/O error; `to` may then exist, partly written.
pub fn copy_file_with(from: &Path, to: &Path, inspect: impl FnMut(&[u8])) -> std::io::Result<u64> {
    let (total, output) = copy_open(from, to, inspect)?;
    output.sync_all()?;
    Ok(total)
}

/// Copies `from` to a new file `to` (its mode kept; `create_new`, so
/// nothing is overwritten) in the kernel, with `copy_file_range(2)`: the
/// data never passes through user space (and a filesystem that can share
/// extents may do so). Where the kernel refuses it (`to` on another
/// filesystem, an old kernel), the rest is copied by a read/write loop.
/// Not fsynced: the caller makes its copies durable together
/// ([`sync_files`]). Nothing is hashed: a caller that must know what was
/// written reads `to` back (from the page cache). Returns the bytes copied.
///
/// # Errors
/// Any I/O error; `to` may then exist, partly written.
pub fn copy_file_in_kernel(from: &Path, to: &Path) -> std::io::Result<u64> {
    use rustix::io::Errno;
    let (input, mut output) = open_copy(from, to)?;
    let mut total = 0u64;
    loop {
        // No offsets given: both files' positions advance, so the fallback
        // below continues where the kernel stopped.
        match rustix::fs::copy_file_range(&input, None, &output, None, 1 << 30) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n as u64,
            Err(Errno::INTR) => {}
            Err(Errno::XDEV | Errno::NOSYS | Errno::INVAL | Errno::OPNOTSUPP) => break,
            Err(e) => return Err(e.into()),
        }
    }
    let rest = for_each_chunk(&input, 1024 * 1024, |c| output.write_all(c))?;
    Ok(total + rest)
}

/// Opens `from` for reading and creates `to` (`create_new`) with its mode.
fn open_copy(from: &Path, to: &Path) -> std::io::Result<(std::fs::File, std::fs::File)> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let input = std::fs::File::open(from)?;
    let mode = input.metadata()?.permissions().mode() & 0o7777;
    let output = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(to)?;
    Ok((input, output))
}

/// The copy of [`copy_file_with`]; the new file still open.
fn copy_open(
    from: &Path,
    to: &Path,
    mut inspect: impl FnMut(&[u8]),
) -> std::io::Result<(u64, std::fs::File)> {
    use std::io::Write;
    let (mut input, mut output) = open_copy(from, to)?;
    let total = for_each_chunk(&mut input, 1024 * 1024, |c| {
        inspect(c);
        output.write_all(c)
    })?;
    Ok((total, output))
}

/// Create a directory and its parents, mode 0755 whatever the umask's
/// group bits: unitlet refuses state directories others can write, so it
/// must not create one (a umask of 002 would).
pub fn create_dir_all(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
}

/// fsync a directory so a rename or unlink in it is durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// fsync every directory under (and including) `dir`, deepest first,
/// following no symlink below `dir`.
pub fn sync_tree(dir: &Path) -> std::io::Result<()> {
    for entry in walkdir::WalkDir::new(dir).contents_first(true) {
        let entry = entry?;
        if entry.file_type().is_dir() {
            sync_dir(entry.path())?;
        }
    }
    Ok(())
}

/// Feeds everything `reader` yields to `chunk`, `buf_size` bytes at a
/// time; the number of bytes read.
pub fn for_each_chunk(
    mut reader: impl std::io::Read,
    buf_size: usize,
    mut chunk: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<u64> {
    let mut buf = vec![0u8; buf_size];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(total);
        }
        chunk(&buf[..n])?;
        total += n as u64;
    }
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

// ---------------------------------------------------------------------------
// Bounded reads: regular files only, capped, off the async runtime.

/// What kind of file a mode describes, for "is not a regular file" messages.
pub fn file_type_name(ft: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_file() {
        "a regular file"
    } else if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO (named pipe)"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_symlink() {
        "a symlink"
    } else {
        "not a regular file"
    }
}

/// Open `path` for reading only if it is a regular file, without ever
/// blocking: stat first (a FIFO, device, socket or directory is refused by
/// name, also behind a symlink), open with `O_NONBLOCK` (an opened FIFO
/// would otherwise wait for a writer) and `O_NOFOLLOW` unless `follow`,
/// then fstat the descriptor, so a file swapped between the two is
/// caught too.
///
/// # Errors
/// A message naming what the path is instead, or the I/O error.
pub fn open_regular(path: &Path, follow: bool) -> Result<(std::fs::File, u64), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let meta = if follow {
        std::fs::metadata(path)
    } else {
        std::fs::symlink_metadata(path)
    }
    .map_err(|e| format!("cannot be read: {e}"))?;
    if !meta.is_file() {
        return Err(format!(
            "is {}, not a regular file",
            file_type_name(meta.file_type())
        ));
    }
    use rustix::fs::OFlags;
    let mut flags = OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
    if !follow {
        flags |= OFlags::NOFOLLOW;
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(open_flags(flags))
        .open(path)
        .map_err(|e| format!("cannot be read: {e}"))?;
    let meta = f.metadata().map_err(|e| format!("cannot be read: {e}"))?;
    if !meta.is_file() {
        return Err(format!(
            "is {}, not a regular file",
            file_type_name(meta.file_type())
        ));
    }
    Ok((f, meta.len()))
}

/// Read a regular file (see [`open_regular`]) of at most `cap` bytes.
///
/// # Errors
/// As [`open_regular`], or the file is larger than `cap` (the message
/// names the limit), also when it grows while being read.
pub fn read_regular_capped(path: &Path, follow: bool, cap: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let (f, len) = open_regular(path, follow)?;
    let too_big = |n: u64| format!("is {n} bytes or more; the limit is {cap} bytes");
    if len > cap {
        return Err(too_big(len));
    }
    let mut buf = Vec::with_capacity(len as usize);
    f.take(cap + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("cannot be read: {e}"))?;
    if buf.len() as u64 > cap {
        return Err(too_big(buf.len() as u64));
    }
    Ok(buf)
}

/// How long a file read off the runtime may take before its caller gives
/// up (a file on a hung filesystem must not stop a pass, the metrics or
/// the watchdog).
pub const READ_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// Blocking reads running at once, hung ones included: a read that timed
/// out keeps its thread until the kernel returns, so this also bounds the
/// threads a hung filesystem can hold.
const MAX_READERS: usize = 8;

static READERS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_READERS);

/// One lock per path being read: a path whose earlier read has not
/// returned gets no second thread.
static PATH_LOCKS: std::sync::Mutex<
    std::collections::BTreeMap<std::path::PathBuf, std::sync::Arc<tokio::sync::Mutex<()>>>,
> = std::sync::Mutex::new(std::collections::BTreeMap::new());

fn path_lock(key: &Path) -> std::sync::Arc<tokio::sync::Mutex<()>> {
    let mut locks = PATH_LOCKS.lock().unwrap_or_else(|e| e.into_inner());
    // Forget the locks nobody holds or waits for.
    locks.retain(|_, l| std::sync::Arc::strong_count(l) > 1);
    locks.entry(key.to_path_buf()).or_default().clone()
}

/// Run `f`, blocking I/O on `key`, on a blocking thread, and give up after
/// `deadline`. A call that gives up cannot stop the thread, so retries on
/// a hung file must not pile threads up: `f` runs only once every earlier
/// `f` on the same `key` has returned (a later call waits for it, within
/// its own deadline), and at most [`MAX_READERS`] run at once.
///
/// # Errors
/// A message saying that `f` did not finish (or could not start) in time.
pub async fn off_runtime<T: Send + 'static>(
    key: &Path,
    deadline: std::time::Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let lock = path_lock(key);
    let run = async move {
        let held = lock.lock_owned().await;
        let permit = READERS.acquire().await.map_err(|e| e.to_string())?;
        tokio::task::spawn_blocking(move || {
            let _held = (held, permit);
            f()
        })
        .await
        .map_err(|e| e.to_string())
    };
    match tokio::time::timeout(deadline, run).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "did not answer within {deadline:?}; is its filesystem hung?"
        )),
    }
}

/// [`read_regular_capped`] off the runtime within [`READ_DEADLINE`] (see
/// [`off_runtime`]); `None` if nothing is at `path`.
///
/// # Errors
/// As [`read_regular_capped`] and [`off_runtime`].
pub async fn read_regular(path: &Path, follow: bool, cap: u64) -> Result<Option<Vec<u8>>, String> {
    let p = path.to_path_buf();
    off_runtime(path, READ_DEADLINE, move || {
        read_regular_opt(&p, follow, cap)
    })
    .await?
}

/// [`read_regular_capped`], with `None` if nothing is at `path`.
///
/// # Errors
/// As [`read_regular_capped`].
pub fn read_regular_opt(path: &Path, follow: bool, cap: u64) -> Result<Option<Vec<u8>>, String> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        _ => read_regular_capped(path, follow, cap).map(Some),
    }
}

/// Files that test how readers cope with what is not a regular file.
#[cfg(test)]
pub(crate) mod test_support {
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    /// Makes a FIFO (named pipe) at `path`.
    pub fn mkfifo(path: &Path) {
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    /// In `dir`, `fifo.EXT` (a FIFO) and `zero.EXT` (a symlink to
    /// /dev/zero): reading either would block or never end.
    pub fn endless_files(dir: &Path, ext: &str) -> (PathBuf, PathBuf) {
        let fifo = dir.join(format!("fifo.{ext}"));
        mkfifo(&fifo);
        let zero = dir.join(format!("zero.{ext}"));
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        (fifo, zero)
    }

    /// `f`'s result, run in a thread with a deadline: a reader that blocks
    /// on a FIFO or reads /dev/zero fails the test instead of hanging it.
    pub fn within_10s<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(f()));
        rx.recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("{what} did not return"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The in-kernel copy gives the same bytes and mode on the same
    /// filesystem (`copy_file_range`) and from another (`/dev/shm`, a
    /// tmpfs, where the kernel may refuse and the loop takes over), and
    /// overwrites nothing.
    #[test]
    fn copy_file_in_kernel_copies_bytes_and_mode_and_overwrites_nothing() {
        let d = tempfile::tempdir().unwrap();
        let shm = tempfile::tempdir_in("/dev/shm").unwrap();
        let bytes: Vec<u8> = (0..3_000_017u32).map(|i| (i * 31 % 251) as u8).collect();
        for src_dir in [d.path(), shm.path()] {
            let from = src_dir.join("from");
            std::fs::write(&from, &bytes).unwrap();
            std::fs::set_permissions(&from, std::fs::Permissions::from_mode(0o640)).unwrap();
            let to = d.path().join(format!("to-{}", src_dir == d.path()));
            assert_eq!(copy_file_in_kernel(&from, &to).unwrap(), bytes.len() as u64);
            assert_eq!(std::fs::read(&to).unwrap(), bytes);
            let mode = std::fs::metadata(&to).unwrap().permissions().mode() & 0o7777;
            assert_eq!(mode, 0o640);
            let err = copy_file_in_kernel(&from, &to).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
        }
    }

    /// One syscall crate: the library's system calls go through rustix;
    /// libc only for `cli.rs`'s SIGPIPE reset (rustix's stable API has no
    /// `signal`), and in tests.
    #[test]
    fn system_calls_go_through_rustix() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut found = Vec::new();
        for e in walkdir::WalkDir::new(&src) {
            let e = e.unwrap();
            let path = e.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if !name.ends_with(".rs") || name.ends_with("tests.rs") || path.ends_with("src/cli.rs")
            {
                continue;
            }
            let text = std::fs::read_to_string(path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            for (n, line) in code.lines().enumerate() {
                if line.contains("libc::") {
                    found.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                }
            }
        }
        assert!(found.is_empty(), "use rustix:\n{}", found.join("\n"));
    }

    /// One atomic writer: no file in src/ but this one makes its own
    /// temporary to rename over a target (`tempfile::Builder`, `persist`).
    #[test]
    fn only_fsutil_writes_through_temporaries() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut found = Vec::new();
        for e in walkdir::WalkDir::new(&src) {
            let e = e.unwrap();
            let path = e.path();
            if path.extension().is_none_or(|x| x != "rs") || path.ends_with("fsutil.rs") {
                continue;
            }
            let text = std::fs::read_to_string(path).unwrap();
            for (n, line) in text.lines().enumerate() {
                if line.contains("tempfile::Builder") || line.contains(".persist(") {
                    found.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                }
            }
        }
        assert!(
            found.is_empty(),
            "write through fsutil::atomic_write (or its siblings) instead:\n{}",
            found.join("\n")
        );
    }

    /// Issue 20 item 5: what is not a regular file, or is too large, is
    /// refused without blocking; a missing file is `None`.
    #[tokio::test]
    async fn the_bounded_reader_refuses_fifos_devices_and_large_files() {
        let d = tempfile::tempdir().unwrap();
        let (fifo, zero) = test_support::endless_files(d.path(), "json");
        let deadline = std::time::Duration::from_secs(10);
        for (p, want) in [(&fifo, "FIFO"), (&zero, "character device")] {
            let r = tokio::time::timeout(deadline, read_regular(p, true, 1024))
                .await
                .expect("returns at once");
            assert!(r.as_ref().unwrap_err().contains(want), "{r:?}");
        }
        let big = d.path().join("big");
        std::fs::write(&big, vec![b'x'; 1025]).unwrap();
        let e = read_regular(&big, true, 1024).await.unwrap_err();
        assert!(e.contains("the limit is 1024 bytes"), "{e}");
        assert_eq!(
            read_regular(&big, true, 1025).await.unwrap().unwrap().len(),
            1025
        );
        assert_eq!(
            read_regular(&d.path().join("missing"), true, 1).await,
            Ok(None)
        );
    }

    /// A read that never returns keeps its thread: a retry on the same
    /// path waits for it instead of starting another, and at most
    /// `MAX_READERS` threads are ever held.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hung_reads_do_not_pile_threads_up() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::{Arc, mpsc};
        let started = Arc::new(AtomicUsize::new(0));
        let short = std::time::Duration::from_millis(200);
        let hang = |key: &'static str, started: &Arc<AtomicUsize>| {
            let (tx, rx) = mpsc::channel::<()>();
            let s = started.clone();
            let f = off_runtime(Path::new(key), short, move || {
                s.fetch_add(1, Ordering::SeqCst);
                let _ = rx.recv();
            });
            (tx, f)
        };
        let (release, first) = hang("/hung/a", &started);
        assert!(first.await.unwrap_err().contains("did not answer within"));
        assert_eq!(started.load(Ordering::SeqCst), 1);
        for _ in 0..5 {
            let (_tx, again) = hang("/hung/a", &started);
            assert!(again.await.is_err());
        }
        assert_eq!(
            started.load(Ordering::SeqCst),
            1,
            "no second thread on /hung/a"
        );
        // Once the first returns, the path is read again.
        drop(release);
        let s = started.clone();
        let ok = off_runtime(
            Path::new("/hung/a"),
            std::time::Duration::from_secs(10),
            move || s.fetch_add(1, Ordering::SeqCst),
        );
        assert_eq!(ok.await, Ok(1));
        // Hung reads of many paths hold at most MAX_READERS threads.
        let mut releases = Vec::new();
        for i in 0..MAX_READERS + 3 {
            let key: &'static str = Box::leak(format!("/hung/{i}").into_boxed_str());
            let (tx, f) = hang(key, &started);
            assert!(f.await.is_err());
            releases.push(tx);
        }
        assert_eq!(started.load(Ordering::SeqCst), 2 + MAX_READERS);
    }

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

    /// A symlink planted at a temporary's name must not be followed: the
    /// old code opened it with O_CREAT|O_TRUNC, overwrote its target and
    /// then renamed the symlink over the file being written. Temporaries
    /// now have unpredictable names and are created with O_EXCL, so links
    /// and directories planted at the names of earlier versions are
    /// neither followed nor in the way.
    #[test]
    fn planted_symlink_at_the_temp_name_is_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let units = d.path().join("units");
        std::fs::create_dir(&units).unwrap();
        let pid = std::process::id();
        for (i, batch) in [false, true].into_iter().enumerate() {
            let target = units.join(format!("a{i}.service"));
            let planted = [
                units.join(format!(".a{i}.service.unitlet-tmp.{pid}")),
                units.join(format!(".a{i}.service.unitlet-tmp.{pid}.x")),
            ];
            for p in &planted {
                std::os::unix::fs::symlink(&victim, p).unwrap();
            }
            if batch {
                let r = atomic_write_batch(&[(&target, b"new".as_slice(), 0o644)]);
                r.into_iter().next().unwrap().unwrap();
            } else {
                atomic_write(&target, b"new", 0o644).unwrap();
            }
            assert_eq!(
                std::fs::read(&victim).unwrap(),
                b"precious",
                "batch={batch}"
            );
            let meta = std::fs::symlink_metadata(&target).unwrap();
            assert!(meta.is_file(), "the target is a file, not the planted link");
            assert_eq!(std::fs::read(&target).unwrap(), b"new");
            let temps = std::fs::read_dir(&units)
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| stale_temp_pid(&e.file_name().to_string_lossy()).is_some())
                .count();
            assert_eq!(temps, 2 * (i + 1), "only the planted links remain");
        }
        // A directory at the old temporary name is not in the way.
        let target = units.join("b.service");
        std::fs::write(&target, b"old").unwrap();
        std::fs::create_dir(units.join(format!(".b.service.unitlet-tmp.{pid}"))).unwrap();
        atomic_write(&target, b"new", 0o644).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        // Names of this and earlier versions are recognised as temporaries.
        assert_eq!(stale_temp_pid(".c.service.unitlet-tmp.42.Ab3xYz"), Some(42));
        assert_eq!(stale_temp_pid(".c.service.unitlet-tmp.42"), Some(42));
        assert_eq!(stale_temp_pid(".c.service.unitlet-tmp.x"), None);
    }
}
