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

use crate::manifest::{Manifest, ReloadMethod, ServiceSpec};

/// The combined content hash of a Service's config files.
///
/// # Errors
/// Names the first file that cannot be read.
pub fn config_hash(files: &[PathBuf]) -> Result<String, String> {
    let mut h = Sha256::new();
    for f in files {
        let bytes = std::fs::read(f)
            .map_err(|e| format!("config file {} cannot be read: {e}", f.display()))?;
        h.update(f.to_string_lossy().as_bytes());
        h.update([0]);
        h.update(Sha256::digest(&bytes));
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

pub fn trim_output(s: &str) -> String {
    let t = s.trim();
    if t.len() <= MAX_OUTPUT {
        return t.to_string();
    }
    let mut cut = MAX_OUTPUT;
    while !t.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &t[..cut])
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

/// Run the validator; `Err` carries its (trimmed) output.
pub async fn run_validate(argv: &[String], dir: &Path, timeout: Duration) -> Result<(), String> {
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let child = cmd.output();
    match tokio::time::timeout(timeout, child).await {
        Err(_) => Err(format!(
            "validator `{}` did not finish within {timeout:?}",
            argv.join(" ")
        )),
        Ok(Err(e)) => Err(format!("validator `{}` could not run: {e}", argv[0])),
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            Err(format!(
                "validator `{}` failed ({}): {}",
                argv.join(" "),
                out.status,
                trim_output(&text)
            ))
        }
    }
}

pub fn http_client() -> reqwest::Client {
    crate::http::client_builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(3))
        .build()
        .expect("a TLS provider is installed")
}

/// POST to a reload endpoint; success is 2xx only.
pub async fn http_reload(client: &reqwest::Client, url: &str) -> Result<(), String> {
    let resp = client.post(url).send().await.map_err(|e| {
        if e.is_connect() {
            format!("reload POST {url}: connection refused (is the service up?)")
        } else if e.is_timeout() {
            format!("reload POST {url}: timed out")
        } else {
            format!("reload POST {url}: {e}")
        }
    })?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let body = resp.text().await.unwrap_or_default();
    Err(format!(
        "reload POST {url} returned {status}: {}",
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
            Err(e) if e.is_connect() => "connection refused".to_string(),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(format!(
                "readiness {url} not ready within {timeout:?} ({last})"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One probe of a readiness URL.
pub async fn probe(client: &reqwest::Client, url: &str) -> Result<(), String> {
    match client.get(url).timeout(Duration::from_secs(2)).send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("readiness probe {url} returned {}", r.status())),
        Err(e) if e.is_connect() => Err(format!("readiness probe {url}: connection refused")),
        Err(e) => Err(format!("readiness probe {url}: {e}")),
    }
}

/// Retry state for a failing reload: exponential backoff with jitter, so a
/// broken config never becomes a tight loop of POSTs.
#[derive(Debug)]
pub struct RetryState {
    pub attempts: u32,
    pub next: Instant,
    delays: backon::ExponentialBackoff,
}

impl RetryState {
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
            next: Instant::now(),
            delays,
        }
    }

    /// Record a failure; returns the delay until the next attempt.
    pub fn failed(&mut self) -> Duration {
        self.attempts += 1;
        let d = self.delays.next().unwrap_or(Duration::from_secs(120));
        self.next = Instant::now() + d;
        d
    }

    pub fn due(&self) -> bool {
        Instant::now() >= self.next
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
    Reloaded,
    Restarted,
    Recorded,
    Failed(String),
    Invalid(String),
}

pub fn describe_method(m: &Option<ReloadMethod>) -> String {
    match m {
        Some(ReloadMethod::Http { url }) => format!("POST {url}"),
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
        assert!(trim_output(&"é".repeat(1000)).ends_with('…'));
    }

    #[tokio::test]
    async fn validator_output_is_reported() {
        let d = tempfile::tempdir().unwrap();
        run_validate(&["/bin/true".into()], d.path(), Duration::from_secs(5))
            .await
            .unwrap();
        let e = run_validate(
            &[
                "/bin/sh".into(),
                "-c".into(),
                "echo bad config >&2; exit 3".into(),
            ],
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
}
