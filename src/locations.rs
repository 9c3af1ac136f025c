//! Where unitlet reads and writes: flags beat environment variables, which
//! beat XDG defaults (see the contract's "Locations and global options").

use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct Locations {
    pub manifests: PathBuf,
    pub state_dir: PathBuf,
    pub unit_dir: PathBuf,
    /// `None` = the session bus.
    pub bus: Option<String>,
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
        }
    }

    pub fn status_file(&self) -> PathBuf {
        self.state_dir.join("status.json")
    }
}
