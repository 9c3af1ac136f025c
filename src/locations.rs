//! Where unitlet reads and writes: flags beat environment variables, which
//! beat XDG defaults (see the contract's "Locations and global options").

use std::path::{Path, PathBuf};

/// Where unitlet keeps state cannot be trusted.
#[derive(Debug, thiserror::Error)]
pub enum LocationError {
    /// The state directory (or its `holds/`, `restores/` or `rollouts/`)
    /// is someone else's or writable by others: anyone who can write there
    /// can plant a hold that keeps unitlet off a service, a restore journal
    /// that has unitlet move directories, or forge its status.
    #[error(
        "{path} {problem} (owner uid {owner}, mode {mode:04o}): anyone who can write there can plant a hold that keeps unitlet off a service or a restore journal that has it move data; {fix}"
    )]
    InsecureStateDir {
        /// The directory refused.
        path: PathBuf,
        /// What is wrong with it ("is owned by another user", …).
        problem: String,
        /// Its owner's uid.
        owner: u32,
        /// Its permission bits (printed in octal).
        mode: u32,
        /// What to do about it.
        fix: String,
    },
    /// The state directory exists but cannot be inspected.
    #[error("cannot use the state directory {path}: {what}")]
    StateDirUnusable {
        /// The directory.
        path: PathBuf,
        /// What could not be done with it.
        what: String,
        /// The error underneath, if there was one.
        #[source]
        source: Option<std::io::Error>,
    },
}

/// Refuse a directory that is not yours or that others can write.
/// A missing directory is fine (unitlet creates it, mode 0755).
fn check_private_dir(path: &Path) -> Result<(), LocationError> {
    use std::os::unix::fs::MetadataExt;
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(LocationError::StateDirUnusable {
                path: path.to_path_buf(),
                what: "cannot read its owner and mode".into(),
                source: Some(e),
            });
        }
    };
    if !meta.is_dir() {
        return Err(LocationError::StateDirUnusable {
            path: path.to_path_buf(),
            what: "it is not a directory; remove it or pass another --state-dir".into(),
            source: None,
        });
    }
    let mode = meta.mode() & 0o7777;
    let owner = meta.uid();
    let me = rustix::process::geteuid().as_raw();
    let insecure = |problem: String, fix: String| LocationError::InsecureStateDir {
        path: path.to_path_buf(),
        problem,
        owner,
        mode,
        fix,
    };
    if owner != me {
        return Err(insecure(
            format!("is owned by another user (you are uid {me})"),
            format!(
                "run `chown {me} {}` if it is yours, or pass another --state-dir",
                path.display()
            ),
        ));
    }
    // Sticky, world-writable directories (like /tmp) are still unsafe here.
    if mode & 0o022 != 0 {
        return Err(insecure(
            "is writable by other users".into(),
            format!("run `chmod go-w {}`", path.display()),
        ));
    }
    Ok(())
}

/// The state directory's subdirectories whose files unitlet acts on: holds
/// keep the operator off a service, restore journals (`restores/`) have
/// recovery rename data, revision histories (`rollouts/`) pin unit bytes.
pub const TRUSTED_SUBDIRS: [&str; 3] = ["holds", "restores", "rollouts"];

/// Check that `state_dir` and its [`TRUSTED_SUBDIRS`] are yours and not
/// writable by others, like the manifests directory. Every writer checks
/// this before it reads anything there (taking [`crate::lock::StateLock`]
/// does, and so does a pass), so a planted file is never acted on.
///
/// # Errors
/// [`LocationError`] naming the directory, its owner and mode, and what
/// to do.
pub fn check_state_dir(state_dir: &Path) -> Result<(), LocationError> {
    check_private_dir(state_dir)?;
    for sub in TRUSTED_SUBDIRS {
        check_private_dir(&state_dir.join(sub))?;
    }
    Ok(())
}

/// Where one unitlet reads and writes, resolved from flags, environment
/// variables and XDG defaults.
#[derive(Debug, Clone)]
pub struct Locations {
    /// The manifests directory (`--manifests`).
    pub manifests: PathBuf,
    /// The state directory: status, holds, journals, backups by default
    /// (`--state-dir`).
    pub state_dir: PathBuf,
    /// Where rendered unit files are written (`--unit-dir`).
    pub unit_dir: PathBuf,
    /// `None` = the session bus.
    pub bus: Option<String>,
    /// Alertmanager's base URL, for silences (`--alertmanager`).
    pub alertmanager: String,
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// An XDG base directory: the variable if set to an absolute path, else
/// `$HOME/<fallback>`.
pub fn xdg(var: &str, fallback: &str) -> PathBuf {
    match std::env::var_os(var).map(PathBuf::from) {
        Some(p) if p.is_absolute() => p,
        _ => home().join(fallback),
    }
}

impl Locations {
    /// Resolve from explicit values (flags or their env variables, already
    /// merged by clap) and XDG defaults.
    pub fn resolve(
        manifests: Option<PathBuf>,
        state_dir: Option<PathBuf>,
        unit_dir: Option<PathBuf>,
        bus: Option<String>,
    ) -> Locations {
        let abs = |p: PathBuf| {
            if p.is_absolute() {
                p
            } else {
                std::env::current_dir().map(|c| c.join(&p)).unwrap_or(p)
            }
        };
        Locations {
            manifests: abs(manifests
                .unwrap_or_else(|| xdg("XDG_CONFIG_HOME", ".config").join("unitlet/manifests"))),
            state_dir: abs(
                state_dir.unwrap_or_else(|| xdg("XDG_STATE_HOME", ".local/state").join("unitlet"))
            ),
            unit_dir: abs(unit_dir
                .unwrap_or_else(|| xdg("XDG_DATA_HOME", ".local/share").join("systemd/user"))),
            bus: bus.filter(|b| !b.is_empty()),
            alertmanager: crate::manifest::DEFAULT_ALERTMANAGER_URL.to_string(),
        }
    }

    /// The same locations with Alertmanager at `url` (if given).
    pub fn with_alertmanager(mut self, url: Option<String>) -> Locations {
        if let Some(u) = url.filter(|u| !u.is_empty()) {
            self.alertmanager = u;
        }
        self
    }

    /// The status file, `status.json` in the state directory.
    pub fn status_file(&self) -> PathBuf {
        self.state_dir.join("status.json")
    }

    /// [`check_state_dir`] of this state directory.
    ///
    /// # Errors
    /// See [`check_state_dir`].
    pub fn check_state_dir(&self) -> Result<(), LocationError> {
        check_state_dir(&self.state_dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn state_dir_writable_by_others_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let loc = Locations::resolve(None, Some(d.path().join("state")), None, None);
        loc.check_state_dir()
            .expect("a missing state directory is fine");
        std::fs::create_dir_all(d.path().join("state/holds")).unwrap();
        let mode = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        mode(&loc.state_dir, 0o755);
        mode(&loc.state_dir.join("holds"), 0o700);
        loc.check_state_dir().unwrap();
        for sub in ["restores", "rollouts"] {
            std::fs::create_dir_all(loc.state_dir.join(sub)).unwrap();
        }
        for (dir, m) in [
            (loc.state_dir.clone(), 0o777),
            (loc.state_dir.join("holds"), 0o775),
            (loc.state_dir.join("restores"), 0o777),
            (loc.state_dir.join("rollouts"), 0o722),
        ] {
            mode(&dir, m);
            let e = loc.check_state_dir().unwrap_err().to_string();
            assert!(
                e.contains(&format!("{} is writable by other users", dir.display()))
                    && e.contains(&format!("mode {m:04o}"))
                    && e.contains("owner uid")
                    && e.contains(&format!("chmod go-w {}", dir.display())),
                "{e}"
            );
            mode(&dir, 0o755);
        }
        std::fs::remove_dir(loc.state_dir.join("holds")).unwrap();
        std::fs::write(loc.state_dir.join("holds"), "").unwrap();
        let e = loc.check_state_dir().unwrap_err().to_string();
        assert!(e.contains("not a directory"), "{e}");
    }
}
