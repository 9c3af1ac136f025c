//! What a Prometheus restore and the recovery of an interrupted one
//! share: the data directory's siblings (`DATADIR.LABEL-STAMP`), durable
//! renames, and stopping and starting the Prometheus unit, through the
//! [`UserManager`] trait (so both run against the in-memory manager in
//! tests).

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::PrometheusError;
use crate::manager::{JobKind, ManagerError, UserManager};

type Result<T, E = PrometheusError> = std::result::Result<T, E>;

/// The sibling `DATADIR.LABEL-STAMP[-N]` of `data_dir`; pure.
///
/// # Errors
/// When `data_dir` has no final component (`/`).
pub fn sibling(data_dir: &Path, label: &str, stamp: &str, n: u32) -> Option<PathBuf> {
    // Normalizing drops a trailing `/`, which would otherwise make the
    // sibling a child.
    let normalized: PathBuf = data_dir.components().collect();
    let name = normalized.file_name()?.to_string_lossy().into_owned();
    let suffix = if n <= 1 {
        String::new()
    } else {
        format!("-{n}")
    };
    Some(normalized.with_file_name(format!("{name}.{label}-{stamp}{suffix}")))
}

/// A sibling name nobody uses yet.
pub fn free_sibling(data_dir: &Path, label: &str, stamp: &str) -> Option<PathBuf> {
    (1..10_000)
        .filter_map(|n| sibling(data_dir, label, stamp, n))
        .find(|p| fs::symlink_metadata(p).is_err())
}

/// `20261127T235501Z`, the same shape as set IDs.
pub fn stamp(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect()
}

fn sync_parent(p: &Path) {
    if let Some(parent) = p.parent() {
        let _ = File::open(parent).and_then(|d| d.sync_all());
    }
}

/// Renames `from` to `to` and syncs the directory, so the rename is
/// durable before the next step; `op` says what for, in the error.
pub fn rename(from: &Path, to: &Path, op: &str) -> Result<()> {
    fs::rename(from, to).map_err(|source| PrometheusError::Io {
        op: format!("{op} (to {})", to.display()),
        path: from.to_path_buf(),
        source,
    })?;
    sync_parent(to);
    Ok(())
}

/// A user-manager error, with what was being done.
pub fn sd_err(context: String) -> impl FnOnce(ManagerError) -> PrometheusError {
    move |source| PrometheusError::Systemd {
        context,
        source: Box::new(source),
    }
}

/// Refuses to touch a unit that does not carry the marker of `manifest`
/// (the contract: unitlet never stops a unit it does not manage).
pub async fn check_managed(sd: &impl UserManager, unit: &str, manifest: &str) -> Result<()> {
    let path = sd
        .load_unit(unit)
        .await
        .map_err(sd_err(format!("cannot look up {unit}")))?;
    let props = sd
        .unit_properties(unit, &path)
        .await
        .map_err(sd_err(format!("cannot read the properties of {unit}")))?;
    let (load_state, fragment) = (props.load_state, props.fragment_path);
    if load_state != "loaded" || fragment.is_empty() {
        return Err(PrometheusError::NotManaged {
            unit: unit.to_owned(),
            manifest: manifest.to_owned(),
            fragment: format!("(systemd says LoadState={load_state})"),
        });
    }
    let managed = std::iter::once(&fragment)
        .chain(&props.drop_in_paths)
        .any(|p| {
            fs::read_to_string(p)
                .ok()
                .and_then(|c| crate::render::marker_of(&c))
                .is_some_and(|m| m == manifest)
        });
    if managed {
        Ok(())
    } else {
        Err(PrometheusError::NotManaged {
            unit: unit.to_owned(),
            manifest: manifest.to_owned(),
            fragment,
        })
    }
}

/// Runs a `kind` job of `unit` to its end, within `timeout` (a start
/// first resets the unit's failed state, so systemd's start limit does not
/// refuse a start after our own stop).
pub async fn run_job(
    sd: &impl UserManager,
    unit: &str,
    kind: JobKind,
    timeout: Duration,
) -> Result<()> {
    let what = match kind {
        JobKind::Start => "start",
        JobKind::Stop => "stop",
        JobKind::Restart => "restart",
        JobKind::Reload => "reload",
    };
    // A few restores in a row would hit the start rate limit.
    if kind == JobKind::Start {
        sd.reset_failed(unit).await;
    }
    // Subscribe before queueing, or a fast job's JobRemoved is missed.
    let mut stream = sd
        .job_stream()
        .await
        .map_err(sd_err(format!("cannot {what} {unit}")))?;
    let job = sd
        .queue(unit, kind)
        .await
        .map_err(sd_err(format!("cannot {what} {unit}")))?;
    stream
        .wait(sd, std::slice::from_ref(&job), timeout)
        .await
        .pop()
        .unwrap_or(Ok(()))
        .map_err(sd_err(format!("cannot {what} {unit}")))
}

/// The unit's `ActiveState` (`inactive` when the manager does not list it).
pub async fn active_state(sd: &impl UserManager, unit: &str) -> Result<String> {
    let units = sd
        .list_units(&[unit.to_owned()])
        .await
        .map_err(sd_err(format!("cannot read the state of {unit}")))?;
    Ok(units
        .get(unit)
        .map(|(u, _)| u.active_state.clone())
        .unwrap_or_else(|| "inactive".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siblings_are_next_to_the_data_dir_whatever_its_spelling() {
        let s = sibling(
            Path::new("/srv/prom/data/"),
            "replaced",
            "20261127T235501Z",
            1,
        );
        assert_eq!(
            s.unwrap(),
            PathBuf::from("/srv/prom/data.replaced-20261127T235501Z")
        );
        let s = sibling(Path::new("/srv/prom/data"), "failed", "20261127T235501Z", 3);
        assert_eq!(
            s.unwrap(),
            PathBuf::from("/srv/prom/data.failed-20261127T235501Z-3")
        );
        assert_eq!(sibling(Path::new("/"), "replaced", "x", 1), None);
    }

    #[test]
    fn free_sibling_skips_names_in_use() {
        let d = tempfile::tempdir().unwrap();
        let data = d.path().join("data");
        fs::create_dir(d.path().join("data.replaced-S")).unwrap();
        fs::write(d.path().join("data.replaced-S-2"), b"").unwrap();
        assert_eq!(
            free_sibling(&data, "replaced", "S").unwrap(),
            d.path().join("data.replaced-S-3")
        );
    }

    #[test]
    fn stamps_look_like_set_ids() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_823_701);
        assert_eq!(stamp(t), "20261127T235501Z");
    }
}
