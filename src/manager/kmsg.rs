//! The kernel log, asked whether the OOM killer killed a process: what
//! tells an OOM kill from a plain SIGKILL on cgroup v1, where the manager
//! only sees the signal (see `ServiceResult::failure`).

/// Whether the kernel log records an OOM kill of `pid`. `None` when the
/// log cannot be read (an unprivileged user with `dmesg_restrict`).
/// Blocking, but bounded: see [`scan_kernel_log`]; on the async runtime
/// use [`kernel_log_oom_kill_async`].
pub fn kernel_log_oom_kill(pid: u32) -> Option<bool> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(crate::fsutil::open_flags(
            rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::CLOEXEC,
        ))
        .open("/dev/kmsg")
        .ok()?;
    Some(scan_kernel_log(f, &format!("Killed process {pid} ")))
}

/// The kernel log is read at most this far per question (its ring buffer
/// is far smaller; a log that keeps coming must not keep us reading).
const KMSG_MAX_BYTES: usize = 32 * 1024 * 1024;

/// Whether a record of `kmsg` (one per read, ending at `EAGAIN`) contains
/// `needle`, reading at most [`KMSG_MAX_BYTES`] and 100 000 records.
fn scan_kernel_log(mut kmsg: impl std::io::Read, needle: &str) -> bool {
    let mut buf = vec![0u8; 8192];
    let mut total = 0;
    for _ in 0..100_000 {
        match kmsg.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if String::from_utf8_lossy(&buf[..n]).contains(needle) {
                    return true;
                }
                total += n;
                if total >= KMSG_MAX_BYTES {
                    break;
                }
            }
            // An overwritten record.
            Err(e) if rustix::io::Errno::from_io_error(&e) == Some(rustix::io::Errno::PIPE) => {
                continue;
            }
            Err(_) => break,
        }
    }
    false
}

/// [`kernel_log_oom_kill`] off the async runtime, one question at a time
/// (several units killed at once do not each take a thread), within 2 s;
/// `None` (unknown) when it does not answer in time.
pub async fn kernel_log_oom_kill_async(pid: u32) -> Option<bool> {
    let deadline = std::time::Duration::from_secs(2);
    crate::fsutil::off_runtime(std::path::Path::new("/dev/kmsg"), deadline, move || {
        kernel_log_oom_kill(pid)
    })
    .await
    .ok()
    .flatten()
}

#[cfg(test)]
mod kmsg_tests {
    /// Issue 20 item 5: a kernel log that never ends is read only so far.
    #[test]
    fn an_endless_kernel_log_is_read_only_so_far() {
        struct Endless(usize);
        impl std::io::Read for Endless {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                self.0 += buf.len();
                buf.fill(b'x');
                Ok(buf.len())
            }
        }
        let mut log = Endless(0);
        assert!(!super::scan_kernel_log(&mut log, "Killed process 1 "));
        assert!(
            log.0 <= super::KMSG_MAX_BYTES + 8192,
            "{} bytes read",
            log.0
        );
        let rec: &[u8] = b"6,1,2,-;Out of memory: Killed process 42 (x)\n";
        assert!(super::scan_kernel_log(rec, "Killed process 42 "));
    }

    #[tokio::test]
    async fn the_kernel_log_is_asked_off_the_runtime() {
        // Readable or not here, the answer comes within its deadline.
        let r = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            super::kernel_log_oom_kill_async(u32::MAX),
        )
        .await
        .expect("answers");
        assert_ne!(r, Some(true));
    }
}
