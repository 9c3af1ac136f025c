//! grafana-backup-tool 1.4.2 (`pip install grafana-backup==1.4.2`), a real
//! client of Grafana's API, finds and installs itself for the fake's
//! honesty check (tests/it/grafana.rs) and the benchmark.
//!
//! Shared with benches/grafana_restore.rs.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The version checked against: its behaviour (and its bugs) are known.
pub const VERSION: &str = "1.4.2";

/// `grafana-backup` from `$GRAFANA_BACKUP_TOOL`, else the private virtualenv
/// under `target/tools/` (created with `python3 -m venv` and `pip install
/// grafana-backup==1.4.2` when missing). `Err` says why it is unavailable.
pub fn find_or_install() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("GRAFANA_BACKUP_TOOL") {
        return Ok(PathBuf::from(p));
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("target/tools/grafana-backup-{VERSION}"));
    let exe = venv.join("bin/grafana-backup");
    // Written last: a venv without it is half made and made again.
    let done = venv.join("installed-by-unitlet-tests");
    if exe.is_file() && done.is_file() {
        return Ok(exe);
    }
    let run = |cmd: &mut Command, what: &str| -> Result<(), String> {
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("{what}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{what} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    let _ = std::fs::remove_dir_all(&venv);
    run(
        Command::new("python3").args(["-m", "venv"]).arg(&venv),
        "python3 -m venv (Debian: apt-get install python3-venv)",
    )?;
    run(
        Command::new(venv.join("bin/pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            &format!("grafana-backup=={VERSION}"),
        ]),
        &format!("pip install grafana-backup=={VERSION}"),
    )?;
    std::fs::write(&done, VERSION).map_err(|e| e.to_string())?;
    Ok(exe)
}

/// Runs `grafana-backup ARGS` against `url` with `token`, its output kept
/// in `work`; returns the combined output, or `Err` with it on failure.
pub fn run(
    exe: &Path,
    work: &Path,
    url: &str,
    token: &str,
    args: &[&str],
) -> Result<String, String> {
    let out = Command::new(exe)
        .args(args)
        .current_dir(work)
        .env("HOME", work)
        .env("GRAFANA_URL", url)
        .env("GRAFANA_TOKEN", token)
        .env("BACKUP_DIR", work.join("_OUTPUT_"))
        .env("DEBUG", "false")
        .env("VERIFY_SSL", "false")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!(
            "grafana-backup {args:?} failed ({}):\n{text}",
            out.status
        ))
    }
}

/// The newest archive `save` left in `work/_OUTPUT_`.
pub fn archive(work: &Path) -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir(work.join("_OUTPUT_"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".tar.gz"))
        .collect();
    found.sort();
    found.pop().expect("grafana-backup save left an archive")
}
