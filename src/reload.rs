//! Config changes: notice that a Service's `configFiles` changed (by content
//! hash, never mtime), validate them, and reload or restart the service.
//!
//! Done better than a sidecar reloader on its known failures: the applied
//! hash is recorded only after a successful reload, and a failed reload is
//! retried (with backoff and jitter) even when the content is reverted, so
//! the process' own "last reload successful" recovers.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use sha2::{Digest, Sha256};

use crate::manifest::{Manifest, ReloadMethod, ServiceSpec, redact_url};

/// Config files larger than this are refused (and named) instead of hashed:
/// a config file is text, and hashing a huge or endless file would stall
/// every pass.
pub const MAX_CONFIG_FILE_SIZE: u64 = 64 * 1024 * 1024;

/// The combined content hash of a Service's config files, streamed: each
/// file must be a regular file (a FIFO or device would block or never
/// end) of at most [`MAX_CONFIG_FILE_SIZE`] bytes.
///
/// # Errors
/// Names the first file that cannot be read, is not a regular file or is
/// too large.
pub fn config_hash(files: &[PathBuf]) -> Result<String, String> {
    use std::io::Read;
    let mut h = Sha256::new();
    for f in files {
        let err = |e: String| format!("config file {} {e}", f.display());
        let (file, _) = crate::manifest::open_regular(f, true).map_err(err)?;
        let mut inner = Sha256::new();
        let mut limited = file.take(MAX_CONFIG_FILE_SIZE + 1);
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        loop {
            let n = limited
                .read(&mut buf)
                .map_err(|e| err(format!("cannot be read: {e}")))?;
            if n == 0 {
                break;
            }
            total += n as u64;
            if total > MAX_CONFIG_FILE_SIZE {
                return Err(err(format!(
                    "is larger than {MAX_CONFIG_FILE_SIZE} bytes, the limit for a config file"
                )));
            }
            inner.update(&buf[..n]);
        }
        h.update(f.to_string_lossy().as_bytes());
        h.update([0]);
        h.update(inner.finalize());
    }
    Ok(hex::encode(&h.finalize()[..12]))
}

/// Directories to watch for config changes: editors save by writing a
/// temporary file and renaming it over, which only the directory sees.
pub fn watch_dirs(manifests: &[Manifest]) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = manifests
        .iter()
        .filter_map(Manifest::as_service)
        .flat_map(|s| {
            s.config_files
                .iter()
                .filter_map(|f| f.parent().map(Path::to_path_buf))
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Keep at most this much of a validator's or server's output in status.
const MAX_OUTPUT: usize = 600;

/// Output longer than [`MAX_OUTPUT`] keeps its first and last lines (the
/// command and the verdict are usually there) with the cut marked.
pub fn trim_output(s: &str) -> String {
    let t = s.trim();
    summarize(t, t, t.len() as u64)
}

/// `head` is the start of an output of `total` bytes, `tail` its end
/// (the same text when all of it was kept).
fn summarize(head: &str, tail: &str, total: u64) -> String {
    if head.len() as u64 == total && head.len() <= MAX_OUTPUT {
        return head.trim().to_string();
    }
    let half = MAX_OUTPUT / 2;
    let mut first = String::new();
    for line in head.split_inclusive('\n') {
        if first.len() + line.len() > half {
            if first.is_empty() {
                first.push_str(&line[..floor_char(line, half)]);
            }
            break;
        }
        first.push_str(line);
    }
    let mut last: Vec<&str> = Vec::new();
    let mut last_len = 0;
    for line in tail.trim_end().rsplit('\n') {
        if last_len + line.len() + 1 > half {
            if last.is_empty() {
                let start = ceil_char(line, line.len() - half.min(line.len()));
                last.push(&line[start..]);
            }
            break;
        }
        last.push(line);
        last_len += line.len() + 1;
    }
    last.reverse();
    let last = last.join("\n");
    let cut = total.saturating_sub((first.len() + last.len()) as u64);
    format!("{}\n[… {cut} bytes cut …]\n{}", first.trim_end(), last)
}

fn floor_char(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_char(s: &str, mut i: usize) -> usize {
    while i < s.len() && !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

/// A bounded capture of a stream: its first and last [`MAX_OUTPUT`] bytes
/// and its length, however much a validator prints.
#[derive(Default)]
struct Capture {
    head: Vec<u8>,
    tail: std::collections::VecDeque<u8>,
    total: u64,
}

impl Capture {
    fn push(&mut self, mut buf: &[u8]) {
        self.total += buf.len() as u64;
        let room = MAX_OUTPUT.saturating_sub(self.head.len());
        let take = room.min(buf.len());
        self.head.extend_from_slice(&buf[..take]);
        buf = &buf[take..];
        if buf.len() > MAX_OUTPUT {
            buf = &buf[buf.len() - MAX_OUTPUT..];
        }
        self.tail.extend(buf);
        while self.tail.len() > MAX_OUTPUT {
            self.tail.pop_front();
        }
    }

    async fn drain(r: Option<impl tokio::io::AsyncRead + Unpin>) -> Capture {
        use tokio::io::AsyncReadExt;
        let mut c = Capture::default();
        let Some(mut r) = r else { return c };
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = r.read(&mut buf).await {
            if n == 0 {
                break;
            }
            c.push(&buf[..n]);
        }
        c
    }

    /// Everything kept, for a stream that was not cut.
    fn text(&self) -> Option<String> {
        (self.total == (self.head.len() + self.tail.len()) as u64).then(|| {
            let mut all = self.head.clone();
            all.extend(self.tail.iter());
            String::from_utf8_lossy(&all).into_owned()
        })
    }

    fn summary(&self) -> String {
        match self.text() {
            Some(t) => trim_output(&t),
            None => {
                let tail: Vec<u8> = self.tail.iter().copied().collect();
                summarize(
                    String::from_utf8_lossy(&self.head).trim_start(),
                    &String::from_utf8_lossy(&tail),
                    self.total,
                )
            }
        }
    }
}

/// Where a Service's `validate` command runs: its working directory, else
/// the directory of its manifest (so relative paths read the same as in
/// the manifest).
pub fn validate_dir(m: &Manifest, s: &ServiceSpec) -> PathBuf {
    s.working_directory.clone().unwrap_or_else(|| {
        m.file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    })
}

/// Run the validator; `Err` carries its output, bounded: however much it
/// prints, only its first and last lines are kept.
pub async fn run_validate(argv: &[String], dir: &Path, timeout: Duration) -> Result<(), String> {
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("validator `{}` could not run: {e}", argv[0]))?;
    let out = Capture::drain(child.stdout.take());
    let err = Capture::drain(child.stderr.take());
    let run = async {
        let (out, err, status) = tokio::join!(out, err, child.wait());
        (out, err, status)
    };
    match tokio::time::timeout(timeout, run).await {
        Err(_) => Err(format!(
            "validator `{}` did not finish within {timeout:?}",
            argv.join(" ")
        )),
        Ok((_, _, Err(e))) => Err(format!("validator `{}` could not run: {e}", argv[0])),
        Ok((_, _, Ok(status))) if status.success() => Ok(()),
        Ok((out, err, Ok(status))) => {
            let mut text = out.summary();
            let e = err.summary();
            if !text.is_empty() && !e.is_empty() {
                text.push('\n');
            }
            text.push_str(&e);
            Err(format!(
                "validator `{}` failed ({status}): {}",
                argv.join(" "),
                text
            ))
        }
    }
}

/// Bodies of reload and readiness answers are read only this far: they
/// go into a status message, and a server must not make us buffer more.
const MAX_BODY: usize = 8 * 1024;

/// The first [`MAX_BODY`] bytes of a response body.
async fn bounded_body(resp: reqwest::Response) -> String {
    String::from_utf8_lossy(&crate::http::body_prefix(resp, MAX_BODY).await).into_owned()
}

/// A request error as text without the URL (reqwest's own message embeds
/// it, userinfo and all); the caller names the redacted URL.
fn request_error(e: reqwest::Error) -> String {
    if e.is_connect() {
        "connection refused".to_string()
    } else if e.is_timeout() {
        "timed out".to_string()
    } else {
        crate::error_chain(&e.without_url())
    }
}

/// The HTTP client of reloads, readiness probes and silences: 10 s per
/// request, 3 s to connect.
#[expect(
    clippy::expect_used,
    reason = "a builder with only timeouts set fails only if the TLS backend cannot start, which no request could survive either"
)]
pub fn http_client() -> reqwest::Client {
    crate::http::client_builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(3))
        .build()
        .expect("a TLS provider is installed")
}

/// POST to a reload endpoint; success is 2xx only. Messages show the URL
/// with its userinfo redacted.
pub async fn http_reload(client: &reqwest::Client, url: &str) -> Result<(), String> {
    let shown = redact_url(url);
    let resp = client.post(url).send().await.map_err(|e| {
        let connect = e.is_connect();
        let text = request_error(e);
        if connect {
            format!("reload POST {shown}: {text} (is the service up?)")
        } else {
            format!("reload POST {shown}: {text}")
        }
    })?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let body = bounded_body(resp).await;
    Err(format!(
        "reload POST {shown} returned {status}: {}",
        trim_output(&body)
    ))
}

/// Wait until `url` answers 2xx, within `timeout`.
pub async fn wait_ready(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match client.get(url).timeout(Duration::from_secs(2)).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => format!("returned {}", r.status()),
            Err(e) => request_error(e),
        };
        if Instant::now() >= deadline {
            return Err(format!(
                "readiness {} not ready within {timeout:?} ({last})",
                redact_url(url)
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One probe of a readiness URL.
pub async fn probe(client: &reqwest::Client, url: &str) -> Result<(), String> {
    match client.get(url).timeout(Duration::from_secs(2)).send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!(
            "readiness probe {} returned {}",
            redact_url(url),
            r.status()
        )),
        Err(e) => Err(format!(
            "readiness probe {}: {}",
            redact_url(url),
            request_error(e)
        )),
    }
}

/// Retry state for a failing reload: exponential backoff with jitter, so a
/// broken config never becomes a tight loop of POSTs.
#[derive(Debug)]
pub struct RetryState {
    /// Failed attempts so far.
    pub attempts: u32,
    /// On tokio's clock, so retry schedules are tested with paused time.
    pub next: tokio::time::Instant,
    delays: backon::ExponentialBackoff,
}

impl RetryState {
    /// No failure yet: due at once.
    pub fn new() -> RetryState {
        let delays = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_secs(1))
            .with_max_delay(Duration::from_secs(120))
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build();
        RetryState {
            attempts: 0,
            next: tokio::time::Instant::now(),
            delays,
        }
    }

    /// Record a failure; returns the delay until the next attempt.
    pub fn failed(&mut self) -> Duration {
        self.attempts += 1;
        let d = self.delays.next().unwrap_or(Duration::from_secs(120));
        self.next = tokio::time::Instant::now() + d;
        d
    }

    /// Whether the next attempt's time has come.
    pub fn due(&self) -> bool {
        tokio::time::Instant::now() >= self.next
    }
}

impl Default for RetryState {
    fn default() -> Self {
        Self::new()
    }
}

/// What the pass did about one Service's config, for metrics and events.
#[derive(Debug, Clone, PartialEq)]
pub enum ReloadOutcome {
    /// The running process reloaded the change.
    Reloaded,
    /// The Service was restarted for it.
    Restarted,
    /// Recorded only (`onConfigChange: none`).
    Recorded,
    /// Reloading failed: why.
    Failed(String),
    /// The validator refused the change: why.
    Invalid(String),
}

/// How a Service's config is reloaded, for messages (`POST URL` with the
/// URL redacted, a signal, or a restart).
pub fn describe_method(m: &Option<ReloadMethod>) -> String {
    match m {
        Some(ReloadMethod::Http { url }) => format!("POST {}", redact_url(url)),
        Some(ReloadMethod::Signal { name, .. }) => format!("signal {name}"),
        None => "reload".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_changes_with_content_not_mtime() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("p.yml");
        std::fs::write(&f, "a").unwrap();
        let h1 = config_hash(std::slice::from_ref(&f)).unwrap();
        std::fs::write(&f, "a").unwrap();
        assert_eq!(config_hash(std::slice::from_ref(&f)).unwrap(), h1);
        std::fs::write(&f, "b").unwrap();
        assert_ne!(config_hash(std::slice::from_ref(&f)).unwrap(), h1);
        assert!(
            config_hash(&[d.path().join("missing")])
                .unwrap_err()
                .contains("missing")
        );
    }

    #[test]
    fn retry_backs_off() {
        let mut r = RetryState::new();
        let a = r.failed();
        let b = r.failed();
        let c = r.failed();
        assert!(a >= Duration::from_secs(1));
        assert!(c > a, "{a:?} {b:?} {c:?}");
        assert!(!r.due());
    }

    #[test]
    fn output_is_trimmed() {
        assert_eq!(trim_output("  x \n"), "x");
        let long = trim_output(&"é".repeat(1000));
        assert!(long.contains("bytes cut"), "{long}");
        assert!(long.len() < 700, "{}", long.len());
    }

    /// The argv of `/bin/sh -c script`.
    fn sh(script: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), script.into()]
    }

    #[tokio::test]
    async fn validator_output_is_reported() {
        let d = tempfile::tempdir().unwrap();
        run_validate(&["/bin/true".into()], d.path(), Duration::from_secs(5))
            .await
            .unwrap();
        let e = run_validate(
            &sh("echo bad config >&2; exit 3"),
            d.path(),
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert!(
            e.contains("bad config") && e.contains("exit status: 3"),
            "{e}"
        );
        let e = run_validate(&["/nonexistent".into()], d.path(), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(e.contains("could not run"), "{e}");
    }

    #[test]
    fn config_hash_refuses_what_is_not_a_regular_file() {
        let d = tempfile::tempdir().unwrap();
        let (fifo, zero) = crate::fsutil::test_support::endless_files(d.path(), "yml");
        let sock = d.path().join("sock.yml");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        for (f, what) in [
            (&fifo, "FIFO"),
            (&zero, "character device"),
            (&sock, "socket"),
            (&d.path().to_path_buf(), "directory"),
        ] {
            let files = vec![f.clone()];
            let call = format!("config_hash of {f:?}");
            let e = crate::fsutil::test_support::within_10s(&call, move || config_hash(&files))
                .unwrap_err();
            assert!(e.contains(what) && e.contains(&*f.to_string_lossy()), "{e}");
        }
    }

    #[tokio::test]
    async fn validator_output_is_bounded_and_keeps_first_and_last_lines() {
        let d = tempfile::tempdir().unwrap();
        let script = "echo FIRST LINE; head -c 20000000 /dev/zero | tr '\\0' x; echo; echo LAST LINE; exit 1";
        let e = run_validate(&sh(script), d.path(), Duration::from_secs(60))
            .await
            .unwrap_err();
        assert!(e.contains("FIRST LINE") && e.contains("LAST LINE"), "{e}");
        assert!(e.contains("bytes cut"), "{e}");
        assert!(e.len() < 1500, "{} bytes", e.len());
    }

    /// A one-shot HTTP server: answers every connection with `status` and
    /// an endless body, and records the requests it saw.
    async fn endless_server(
        status: &'static str,
    ) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let _ = tx.send(String::from_utf8_lossy(&buf[..n]).into_owned());
                    let head = format!("HTTP/1.1 {status}\r\ncontent-type: text/plain\r\n\r\n");
                    if s.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    let chunk = vec![b'x'; 64 * 1024];
                    while s.write_all(&chunk).await.is_ok() {}
                });
            }
        });
        (format!("http://{addr}"), rx)
    }

    #[tokio::test]
    async fn reload_url_userinfo_is_used_but_never_shown() {
        let client = http_client();
        let (base, mut seen) = endless_server("500 Internal Server Error").await;
        let url = base.replace("http://", "http://admin:hunter2@") + "/-/reload";
        let e = tokio::time::timeout(Duration::from_secs(20), http_reload(&client, &url))
            .await
            .expect("a bounded read of an endless body")
            .unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
        assert!(e.contains("admin:***@") && e.contains("500"), "{e}");
        assert!(e.len() < 1500, "{} bytes", e.len());
        let req = seen.recv().await.unwrap();
        assert!(
            req.to_ascii_lowercase().contains("authorization: basic"),
            "the real URL (with its credentials) is what is requested: {req}"
        );
        // Connection errors and readiness messages too.
        let closed = "http://admin:hunter2@127.0.0.1:9/";
        for e in [
            http_reload(&client, closed).await.unwrap_err(),
            probe(&client, closed).await.unwrap_err(),
            wait_ready(&client, closed, Duration::from_millis(10))
                .await
                .unwrap_err(),
            describe_method(&Some(ReloadMethod::Http { url: closed.into() })),
        ] {
            assert!(!e.contains("hunter2") && e.contains("admin:***@"), "{e}");
        }
    }
}
