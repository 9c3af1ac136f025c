//! Observing what is: unit files on disk, the manager's directories,
//! enablement, and enabling by links.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::fsutil;
use crate::manager::LiveUnit;
use crate::manager::UnitPath;
use crate::manager::UserManager;
use crate::manifest::DesiredState;
use crate::plan::{self, Observed, ObservedFile};
use crate::render::{self, DesiredUnit, Role};
use crate::status::Status;
use crate::unitfile::{self, UnitFile};

use super::*;

fn unit_files_in(dir: &Path) -> Result<BTreeMap<String, ObservedFile>, ReconcileError> {
    let mut out = BTreeMap::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(source) => {
            return Err(ReconcileError::UnitDir {
                what: "read unit directory",
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    for ent in rd.flatten() {
        let name = ent.file_name().to_string_lossy().into_owned();
        if let Some(pid) = fsutil::stale_temp_pid(&name) {
            // Left by a unitlet killed mid-write; the target file is intact.
            if !fsutil::pid_alive(pid) {
                let _ = std::fs::remove_file(dir.join(&name));
            }
            continue;
        }
        if name.starts_with('.') || !(name.ends_with(".service") || name.ends_with(".timer")) {
            continue;
        }
        let path = dir.join(&name);
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_file() {
            // Symlinks and directories are never unitlet's: record them as
            // unmarked so a manifest of the same name reports a conflict.
            out.insert(
                name,
                ObservedFile {
                    path,
                    content: String::new(),
                    marker: None,
                    source: None,
                },
            );
            continue;
        }
        // Too large or swapped for something else: unmarked, never ours.
        let content = fsutil::read_regular_capped(&path, false, MAX_UNIT_BYTES)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let (marker, source) = render::ownership(&content);
        out.insert(
            name,
            ObservedFile {
                path,
                content,
                marker,
                source,
            },
        );
    }
    Ok(out)
}

/// The user manager's own directories, as it reports them in `UnitPath`
/// (not as our environment guesses them: `unitlet` may run with other XDG
/// variables than the manager).
#[derive(Debug, Clone)]
pub struct ManagerDirs {
    /// Where `systemctl --user enable` puts `*.wants/` symlinks.
    pub config: PathBuf,
    /// Where `set-property` / `SetUnitProperties` persist settings
    /// (`user.control` in the config and runtime directories).
    pub control: Vec<PathBuf>,
}

impl ManagerDirs {
    /// From the manager's `UnitPath`; falls back to the XDG environment.
    pub fn from_unit_path(unit_path: &[String]) -> ManagerDirs {
        let control: Vec<PathBuf> = unit_path
            .iter()
            .filter(|p| p.ends_with("/systemd/user.control"))
            .map(PathBuf::from)
            .collect();
        // systemd lists the persistent control directory first; the config
        // directory is its sibling.
        let config = control
            .first()
            .and_then(|c| c.parent())
            .map(|p| p.join("user"))
            .filter(|c| unit_path.iter().any(|p| Path::new(p) == c))
            .unwrap_or_else(|| {
                crate::locations::xdg("XDG_CONFIG_HOME", ".config").join("systemd/user")
            });
        let control = if control.is_empty() {
            ManagerDirs::from_env().control
        } else {
            control
        };
        ManagerDirs { config, control }
    }

    /// The user manager's directories as systemd derives them from the
    /// environment, for when it cannot be asked: `$XDG_CONFIG_HOME/systemd/user`
    /// and the control directories (persistent, and under `$XDG_RUNTIME_DIR`).
    pub fn from_env() -> ManagerDirs {
        let mut control =
            vec![crate::locations::xdg("XDG_CONFIG_HOME", ".config").join("systemd/user.control")];
        if let Some(rt) = std::env::var_os("XDG_RUNTIME_DIR").filter(|r| !r.is_empty()) {
            control.push(PathBuf::from(rt).join("systemd/user.control"));
        }
        ManagerDirs {
            config: crate::locations::xdg("XDG_CONFIG_HOME", ".config").join("systemd/user"),
            control,
        }
    }

    fn control_dirs(&self, unit: &str) -> impl Iterator<Item = PathBuf> + '_ {
        let d = format!("{unit}.d");
        self.control.iter().map(move |c| c.join(&d))
    }

    /// The drop-ins in the control directories that set a limit unitlet
    /// manages (`systemctl set-property`): they override the unit file.
    fn limit_dropins(&self, unit: &str) -> Vec<PathBuf> {
        self.control_dirs(unit)
            .filter(|d| d.is_dir())
            .flat_map(|d| LIMIT_DROPINS.iter().map(move |f| d.join(f)))
            .filter(|p| std::fs::symlink_metadata(p).is_ok())
            .collect()
    }

    /// Remove the drop-ins that set limits unitlet manages, so the unit
    /// file's limits (or systemd's defaults) apply after the next
    /// daemon-reload; and so a later unit of the same name does not
    /// inherit them.
    ///
    /// # Errors
    /// The first drop-in that exists and cannot be removed.
    pub(super) fn remove_limit_dropins(&self, unit: &str) -> std::io::Result<()> {
        let mut first_err = None;
        for d in self.control_dirs(unit) {
            for f in LIMIT_DROPINS {
                let p = d.join(f);
                if let Err(e) = fsutil::remove_durable(&p) {
                    first_err.get_or_insert(std::io::Error::new(
                        e.kind(),
                        format!("cannot remove {}: {e}", p.display()),
                    ));
                }
            }
            let _ = std::fs::remove_dir(&d);
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// The drop-ins `SetUnitProperties` writes for the limits unitlet manages.
const LIMIT_DROPINS: &[&str] = &[
    "50-MemoryMax.conf",
    "50-MemoryHigh.conf",
    "50-CPUQuota.conf",
    "50-CPUQuotaPerSecUSec.conf",
    "50-TasksMax.conf",
];

/// The `.wants/` and `.requires/` directories (relative to the manager's
/// config directory) that `systemctl --user enable` links a unit into, from
/// its `[Install]` section.
/// As systemd reads the lists: quoted words, and an empty assignment
/// empties the list so far (an assignment it cannot split is ignored, as
/// systemd ignores it).
fn install_dirs(parsed: &UnitFile) -> Vec<String> {
    let mut dirs = Vec::new();
    for (key, suffix) in [("WantedBy", "wants"), ("RequiredBy", "requires")] {
        let mut targets: Vec<String> = Vec::new();
        for value in parsed.values("Install", key) {
            if value.is_empty() {
                targets.clear();
            } else if let Ok(words) = unitfile::words(value) {
                targets.extend(words);
            }
        }
        dirs.extend(targets.into_iter().map(|t| format!("{t}.{suffix}")));
    }
    dirs
}

/// `enabled`, `disabled` or `static`, read from the `[Install]` section and
/// the symlinks `systemctl --user enable` creates in the manager's config
/// directory.
fn enablement(config: &Path, unit: &str, content: &str) -> String {
    let dirs = install_dirs(&unitfile::parse(content));
    if dirs.is_empty() {
        "static".into()
    } else if dirs
        .iter()
        .any(|d| std::fs::symlink_metadata(config.join(d).join(unit)).is_ok())
    {
        "enabled".into()
    } else {
        "disabled".into()
    }
}

/// Whether enabling `unit` is only `.wants`/`.requires` links (no alias,
/// `Also=` or template instance): what [`enable_by_links`] makes itself.
pub(super) fn linkable(unit: &str, content: &str) -> bool {
    only_links(unit, &unitfile::parse(content))
}

fn only_links(unit: &str, parsed: &UnitFile) -> bool {
    let simple = parsed
        .keys("Install")
        .all(|key| key == "WantedBy" || key == "RequiredBy");
    simple && !unit.contains('@')
}

/// Enable `unit` the way `systemctl --user enable` does — a symlink to the
/// unit file in `TARGET.wants/` (or `.requires/`) of the manager's config
/// directory — without a round trip through systemd, which for a batch of
/// 200 units costs more than writing them (`EnableUnitFiles` resolves every
/// unit on every search path). systemd reads the links at its next
/// daemon-reload, or when it first looks at a unit it has not cached the
/// enablement of. Returns false (and creates nothing) for an `[Install]`
/// section with more than `WantedBy=`/`RequiredBy=` (an alias, `Also=`, a
/// template): those go through `EnableUnitFiles`.
pub(super) fn enable_by_links(
    config: &Path,
    unit_dir: &Path,
    unit: &str,
    content: &str,
) -> std::io::Result<bool> {
    let parsed = unitfile::parse(content);
    if !only_links(unit, &parsed) {
        return Ok(false);
    }
    let target = unit_dir.join(unit);
    for d in install_dirs(&parsed) {
        let dir = config.join(d);
        fsutil::create_dir_all(&dir)?;
        let link = dir.join(unit);
        match std::fs::read_link(&link) {
            Ok(to) if to == target => continue,
            // Only a link is replaced, never a file.
            Ok(_) => std::fs::remove_file(&link)?,
            Err(_) => {}
        }
        std::os::unix::fs::symlink(&target, &link)?;
    }
    Ok(true)
}

/// What only matters for some desired units, fetched only for them:
/// where the unit is defined (its file differs or is not loaded), whether
/// systemd has loaded the current file (the last apply is in doubt), and
/// the live limits (a running service with limits to keep).
async fn look_closer(
    sd: &impl UserManager,
    d: &DesiredUnit,
    file: Option<&ObservedFile>,
    unit: &mut LiveUnit,
    path: &UnitPath,
    applied: Option<&String>,
) {
    let name = &d.name;
    let differs = file.is_none_or(|f| f.content != d.content);
    let loaded = unit.load_state == "loaded";
    if (differs || !loaded) && unit.load_state != "not-found" {
        unit.fragment_path = Some(sd.fragment_path(name, path).await.unwrap_or_default());
    }
    if !differs && loaded && applied != Some(&plan::content_hash(&d.content)) {
        unit.need_reload = Some(sd.need_daemon_reload(name, path).await.unwrap_or(false));
    }
    let should_run = matches!(
        d.role,
        Role::Main {
            state: DesiredState::Running,
            ..
        }
    );
    let has_limits = plan::has_limit_keys(&d.content) || !unit.limit_dropins.is_empty();
    if should_run && unit.active_state == "active" && !differs && has_limits {
        unit.limits = sd.live_limits(name, path).await.ok();
    }
}

impl Reconciler {
    pub(super) async fn observe(
        &self,
        sd: &impl UserManager,
        desired: &[DesiredUnit],
        status: &Status,
    ) -> Result<Observed, ReconcileError> {
        let dirs = self.manager_dirs(sd).await.clone();
        let t = Instant::now();
        let unit_dir = self.loc.unit_dir.clone();
        // Off the runtime, within a deadline: a hung unit directory stops
        // this pass (retried), never the loop.
        let key = unit_dir.clone();
        let read = move || unit_files_in(&unit_dir);
        let files = crate::fsutil::off_runtime(&key, super::LOAD_DEADLINE, read)
            .await
            .map_err(|e| {
                ReconcileError::Stuck(format!(
                    "reading the unit directory {} failed: {e}",
                    key.display()
                ))
            })??;
        tracing::debug!(elapsed = ?t.elapsed(), "read unit directory");
        let mut names: BTreeSet<String> = desired.iter().map(|d| d.name.clone()).collect();
        names.extend(
            files
                .iter()
                .filter(|(_, f)| f.marker.is_some())
                .map(|(n, _)| n.clone()),
        );
        let names: Vec<String> = names.into_iter().collect();
        let listed = sd.list_units(&names).await?;
        tracing::debug!(elapsed = ?t.elapsed(), "ListUnitsByNames");
        // Enablement from the wants/requires symlinks EnableUnitFiles makes:
        // systemd's ListUnitFilesByPatterns walks every unit directory and
        // costs ~50 ms for 200 units, far more than the rest of a pass.
        let file_states: HashMap<String, String> = names
            .iter()
            .filter_map(|n| {
                files
                    .get(n)
                    .map(|f| (n.clone(), enablement(&dirs.config, n, &f.content)))
            })
            .collect();
        let mut live = BTreeMap::new();
        for (name, (mut unit, path)) in listed {
            unit.file_state = file_states.get(&name).cloned();
            if let Some(d) = desired.iter().find(|d| d.name == name) {
                unit.limit_dropins = dirs.limit_dropins(&name);
                let file = files.get(&name);
                look_closer(sd, d, file, &mut unit, &path, status.applied.get(&name)).await;
            }
            live.insert(name, unit);
        }
        Ok(Observed {
            files,
            live,
            applied: status.applied.clone(),
            default_tasks_max: sd.default_tasks_max().await.ok(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 20 item 11: a continued `WantedBy=` names both targets, and
    /// enablement is read from them (not from a `\\.wants` directory).
    #[test]
    fn continued_install_lines_enable_every_target() {
        let t = tempfile::tempdir().unwrap();
        let (config, units) = (t.path().join("config"), t.path().join("units"));
        let content =
            "[Service]\nExecStart=/bin/x\n[Install]\nWantedBy=a.target \\\n  \"b.target\"\n";
        assert!(linkable("x.service", content));
        assert!(enable_by_links(&config, &units, "x.service", content).unwrap());
        let mut made: Vec<String> = std::fs::read_dir(&config)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        made.sort();
        assert_eq!(made, ["a.target.wants", "b.target.wants"]);
        assert_eq!(enablement(&config, "x.service", content), "enabled");
    }

    #[test]
    fn manager_dirs_come_from_unit_path() {
        let up: Vec<String> = [
            "/h/.config/systemd/user.control",
            "/run/u/systemd/user.control",
            "/run/u/systemd/transient",
            "/h/.config/systemd/user",
            "/etc/systemd/user",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let d = ManagerDirs::from_unit_path(&up);
        assert_eq!(d.config, PathBuf::from("/h/.config/systemd/user"));
        assert_eq!(
            d.control,
            vec![
                PathBuf::from("/h/.config/systemd/user.control"),
                PathBuf::from("/run/u/systemd/user.control")
            ]
        );
    }
}
