//! The revision history store: what a Service's revisions were, how each
//! ended, and the pin in force, kept in `STATE_DIR/rollouts/NAME.json`.
//!
//! Data and the file only: the decisions over it (recording, judging,
//! undo, what runs instead) are [`super::policy`]'s.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsutil;

/// Revisions kept per Service.
pub const MAX_REVISIONS: usize = 10;

/// How a revision ended (or that it has not yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RevisionState {
    /// Waiting to be active and ready.
    Progressing,
    /// Active and ready: a good revision, one a rollback may return to.
    Complete,
    /// Failed its health gate.
    Failed,
    /// Replaced by a newer revision before it was judged.
    Superseded,
}

impl std::fmt::Display for RevisionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// One applied definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Revision {
    /// Its number, counting from 1 per Service.
    pub revision: u32,
    /// `plan::content_hash` of `unit`.
    pub hash: String,
    /// The unit file's bytes, as written.
    pub unit: String,
    /// When it was applied (RFC 3339).
    pub applied_at: String,
    /// How it ended, or that it has not.
    pub state: RevisionState,
    /// Why it ended so (failures), empty otherwise.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// When it was judged or superseded (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
}

/// Why a revision other than the manifest's is in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PinCause {
    /// The manifest's revision failed and was rolled back.
    RolledBack,
    /// `unitlet rollout undo`.
    Undo,
}

/// "While the manifest renders to `manifest_hash`, run `revision`."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pin {
    /// The revision that runs instead.
    pub revision: u32,
    /// What the manifest rendered to when the pin was made: the pin holds
    /// while it still does.
    pub manifest_hash: String,
    /// Rollback or undo.
    pub cause: PinCause,
    /// The failed revision (for `RolledBack`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_revision: Option<u32>,
    /// Why the failed revision failed (for `RolledBack`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// The Alertmanager silence made before the rollback, expired once the
    /// rolled-back revision is Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silence: Option<String>,
    /// When the pin was made (RFC 3339): `Ready`'s transition time while
    /// it holds, so it does not move on every pass.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub since: String,
}

/// A Service's revision history and pin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct History {
    /// Oldest first, at most [`MAX_REVISIONS`].
    #[serde(default)]
    pub revisions: Vec<Revision>,
    /// The revision in force instead of the manifest's, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<Pin>,
}

/// The first 12 characters of a hash, for messages and tables.
pub fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

impl History {
    /// Revision `n`, if kept.
    pub fn get(&self, n: u32) -> Option<&Revision> {
        self.revisions.iter().find(|r| r.revision == n)
    }

    pub(crate) fn get_mut(&mut self, n: u32) -> Option<&mut Revision> {
        self.revisions.iter_mut().find(|r| r.revision == n)
    }

    /// The revision that should be running: the pinned one, else the newest.
    pub fn in_force(&self) -> Option<&Revision> {
        match &self.pin {
            Some(p) => self.get(p.revision),
            None => self.revisions.last(),
        }
    }

    /// The number the next revision gets.
    pub(crate) fn next_number(&self) -> u32 {
        self.revisions.last().map_or(1, |r| r.revision + 1)
    }

    /// Keep the newest [`MAX_REVISIONS`], never the one a pin names.
    pub(crate) fn trim(&mut self) {
        let pinned = self.pin.as_ref().map(|p| p.revision);
        while self.revisions.len() > MAX_REVISIONS {
            match self
                .revisions
                .iter()
                .position(|r| Some(r.revision) != pinned)
            {
                Some(i) => {
                    self.revisions.remove(i);
                }
                None => break,
            }
        }
    }

    /// Whether a revision before `n` ended well: one a rollback of `n`
    /// could return to.
    pub fn has_good_before(&self, n: u32) -> bool {
        self.revisions
            .iter()
            .any(|r| r.revision < n && r.state == RevisionState::Complete)
    }

    /// The newest revision, when it is still progressing with nothing
    /// before it to roll back to (not watched: its Ready condition ends it).
    pub fn ungated_progressing(&self) -> Option<u32> {
        let r = self.revisions.last()?;
        (r.state == RevisionState::Progressing && !self.has_good_before(r.revision))
            .then_some(r.revision)
    }

    /// The newest good revision before `n` that differs from it: what a
    /// failure of `n` rolls back to.
    pub fn good_before(&self, n: u32) -> Option<u32> {
        let hash = &self.get(n)?.hash;
        self.revisions
            .iter()
            .rev()
            .find(|g| g.revision < n && g.state == RevisionState::Complete && &g.hash != hash)
            .map(|g| g.revision)
    }

    /// Whether revision `n` failing would be rolled back (a good revision
    /// precedes it).
    pub fn would_roll_back(&self, n: u32) -> bool {
        self.good_before(n).is_some()
    }
}

// ---------------------------------------------------------------------------
// The file.

fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("rollouts")
}

/// Where the history of `name` is kept.
pub fn file(state_dir: &Path, name: &str) -> PathBuf {
    dir(state_dir).join(format!("{name}.json"))
}

/// Reading or writing the history failed.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    /// The history file cannot be read or parsed.
    #[error(
        "cannot read the revision history {path}: {what}; move it aside to start a new history"
    )]
    Read {
        /// The history file.
        path: PathBuf,
        /// Why.
        what: String,
    },
    /// The history file cannot be written.
    #[error("cannot write the revision history {path}")]
    Write {
        /// The history file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The history of `name` (empty if there is none).
///
/// # Errors
/// [`RolloutError::Read`] for a file that exists but cannot be used.
pub fn load(state_dir: &Path, name: &str) -> Result<History, RolloutError> {
    let path = file(state_dir, name);
    // Checked first: a history being created must not read as an error.
    if !path.exists() {
        return Ok(History::default());
    }
    match fsutil::read_regular_capped(&path, false, 16 * 1024 * 1024) {
        Ok(b) => parse(state_dir, name, &b),
        Err(_) if !path.exists() => Ok(History::default()),
        Err(e) => Err(RolloutError::Read { path, what: e }),
    }
}

/// A history of `name` from its serialized bytes.
///
/// # Errors
/// [`RolloutError::Read`] when they are not a history.
pub fn parse(state_dir: &Path, name: &str, bytes: &[u8]) -> Result<History, RolloutError> {
    serde_json::from_slice(bytes).map_err(|e| RolloutError::Read {
        path: file(state_dir, name),
        what: e.to_string(),
    })
}

/// A history serialized as its file holds it.
pub fn to_bytes(h: &History) -> Vec<u8> {
    // Strings, numbers and enums only: serializing cannot fail.
    serde_json::to_vec_pretty(h).unwrap_or_default()
}

/// Write the history of `name` atomically.
///
/// # Errors
/// [`RolloutError::Write`].
pub fn save(state_dir: &Path, name: &str, h: &History) -> Result<(), RolloutError> {
    let path = file(state_dir, name);
    fsutil::create_dir_all(&dir(state_dir))
        .and_then(|()| fsutil::atomic_write(&path, &to_bytes(h), 0o644))
        .map_err(|source| RolloutError::Write { path, source })
}

/// [`load`], remembering what was read by (modification time, size,
/// inode; every save is a new file): a
/// pass looks at every Service's history, and almost never has one changed.
///
/// # Errors
/// As [`load`].
pub fn load_cached(state_dir: &Path, name: &str) -> Result<History, RolloutError> {
    use std::collections::HashMap;
    use std::os::unix::fs::MetadataExt;
    use std::sync::Mutex;
    type Key = (std::time::SystemTime, u64, u64);
    static CACHE: Mutex<Option<HashMap<PathBuf, (Key, History)>>> = Mutex::new(None);
    let path = file(state_dir, name);
    let Some(key) = std::fs::symlink_metadata(&path)
        .ok()
        .and_then(|m| Some((m.modified().ok()?, m.len(), m.ino())))
    else {
        return load(state_dir, name);
    };
    if let Some((k, h)) = CACHE
        .lock()
        .ok()
        .and_then(|c| c.as_ref()?.get(&path).cloned())
        && k == key
    {
        return Ok(h);
    }
    let h = load(state_dir, name)?;
    if let Ok(mut c) = CACHE.lock() {
        c.get_or_insert_with(HashMap::new)
            .insert(path, (key, h.clone()));
    }
    Ok(h)
}

/// Names that have a history file.
pub fn with_history(state_dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir(state_dir))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    e.file_name()
                        .to_str()?
                        .strip_suffix(".json")
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Save many histories with one batched, durable write (the temporaries
/// fsynced together, off the runtime): a pass that starts 200 new Services
/// must not fsync 200 files one after the other beside systemd starting
/// them. One result per item, in order.
pub async fn save_all(
    state_dir: &Path,
    items: Vec<(String, Vec<u8>)>,
) -> Vec<Result<(), RolloutError>> {
    if items.is_empty() {
        return Vec::new();
    }
    let n = items.len();
    let dir_shown = dir(state_dir);
    let state_dir = state_dir.to_path_buf();
    let written = tokio::task::spawn_blocking(move || write_batch(&state_dir, &items)).await;
    written.unwrap_or_else(|e| {
        (0..n)
            .map(|_| {
                Err(RolloutError::Write {
                    path: dir_shown.clone(),
                    source: std::io::Error::other(e.to_string()),
                })
            })
            .collect()
    })
}

/// The blocking part of [`save_all`].
fn write_batch(state_dir: &Path, items: &[(String, Vec<u8>)]) -> Vec<Result<(), RolloutError>> {
    let paths: Vec<PathBuf> = items
        .iter()
        .map(|(name, _)| file(state_dir, name))
        .collect();
    if let Err(e) = fsutil::create_dir_all(&dir(state_dir)) {
        return paths
            .into_iter()
            .map(|path| {
                let source = std::io::Error::new(e.kind(), e.to_string());
                Err(RolloutError::Write { path, source })
            })
            .collect();
    }
    let batch: Vec<(&Path, &[u8], u32)> = paths
        .iter()
        .zip(items)
        .map(|(p, (_, bytes))| (p.as_path(), bytes.as_slice(), 0o644))
        .collect();
    fsutil::atomic_write_batch(&batch)
        .into_iter()
        .zip(&paths)
        .map(|(r, path)| {
            r.map_err(|source| RolloutError::Write {
                path: path.clone(),
                source,
            })
        })
        .collect()
}
