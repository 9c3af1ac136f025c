//! A Backup's last run, as `unitlet backup` records it in
//! `STATE_DIR/backups/NAME.last.json`: what a Backup's Ready condition
//! and the operator's backup metrics report. A store: it reads and
//! describes the record; `unitlet backup` writes it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::locations::Locations;

/// Where unitlet keeps backups of its own (`STATE_DIR/backups`): a
/// destination inside it is accepted wherever the state directory is.
pub fn own_backups_dir(loc: &Locations) -> PathBuf {
    loc.state_dir.join("backups")
}

/// Where `backup` records its last outcome for the operator's metrics.
pub fn last_run_path(loc: &Locations, name: &str) -> PathBuf {
    last_run_file(&loc.state_dir, name)
}

fn last_run_file(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join("backups").join(format!("{name}.last.json"))
}

/// The last run of Backup `name` as `backup` recorded it; `None` when
/// none ran yet or the record is unreadable (a bounded read).
pub fn read_last_run(state_dir: &Path, name: &str) -> Option<LastRun> {
    let bytes = crate::fsutil::read_regular_capped(
        &last_run_file(state_dir, name),
        true,
        MAX_LAST_RUN_BYTES,
    )
    .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The last runs of the Backups `names` ([`read_last_run`] each), read
/// off the async runtime within [`crate::fsutil::READ_DEADLINE`], so a hung
/// state directory holds up no pass. Names without a record are left out;
/// a read that does not answer in time is logged and reads as no record.
pub async fn read_last_runs(state_dir: &Path, names: Vec<String>) -> BTreeMap<String, LastRun> {
    if names.is_empty() {
        return BTreeMap::new();
    }
    let d = state_dir.to_path_buf();
    let key = d.join("backups");
    let read = crate::fsutil::off_runtime(&key, crate::fsutil::READ_DEADLINE, move || {
        names
            .into_iter()
            .filter_map(|n| read_last_run(&d, &n).map(|r| (n, r)))
            .collect()
    });
    match read.await {
        Ok(runs) => runs,
        Err(e) => {
            tracing::warn!(dir = %key.display(), "reading the Backups' last runs: {e}");
            BTreeMap::new()
        }
    }
}

/// The content of `NAME.last.json`. Times are unix seconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastRun {
    /// When a run last completed a set (kept across failed runs).
    pub last_success: Option<u64>,
    /// When a run last started.
    pub last_attempt: u64,
    /// Why the last run failed; `null` when it succeeded.
    pub last_error: Option<String>,
    /// The set the last successful run made.
    pub last_set: Option<String>,
}

impl LastRun {
    /// The record after a run that started at `attempt`; pure.
    pub fn after(
        previous: Option<LastRun>,
        attempt: u64,
        outcome: Result<&str, String>,
    ) -> LastRun {
        let prev = previous.unwrap_or_default();
        match outcome {
            Ok(set) => LastRun {
                last_success: Some(attempt),
                last_attempt: attempt,
                last_error: None,
                last_set: Some(set.to_owned()),
            },
            Err(e) => LastRun {
                last_success: prev.last_success,
                last_attempt: attempt,
                last_error: Some(e),
                last_set: prev.last_set,
            },
        }
    }
}

/// Largest `NAME.last.json` read; ours are about 200 bytes.
const MAX_LAST_RUN_BYTES: u64 = 64 << 10;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_run_keeps_the_last_success_across_failures() {
        let ok = LastRun::after(None, 100, Ok("S1"));
        assert_eq!(ok.last_success, Some(100));
        assert_eq!(ok.last_error, None);
        let failed = LastRun::after(Some(ok.clone()), 200, Err("Prometheus down".into()));
        assert_eq!(failed.last_success, Some(100));
        assert_eq!(failed.last_attempt, 200);
        assert_eq!(failed.last_error.as_deref(), Some("Prometheus down"));
        assert_eq!(failed.last_set.as_deref(), Some("S1"));
        let v = serde_json::to_value(&failed).unwrap();
        assert_eq!(v["lastSuccess"], 100);
        assert_eq!(v["lastAttempt"], 200);
        let again = LastRun::after(Some(failed), 300, Ok("S2"));
        assert_eq!(
            serde_json::to_value(&again).unwrap()["lastError"],
            serde_json::Value::Null
        );
    }
}
