//! Health-gated rollouts: revision history, automatic rollback, undo.
//!
//! Every definition of a Service's unit that unitlet writes and then starts
//! or restarts is a **revision**, kept (the rendered unit bytes, their hash,
//! when, and how it ended) in `STATE_DIR/rollouts/NAME.json`, the last
//! [`MAX_REVISIONS`]. A new revision is `Progressing` until the unit is
//! active (and its readiness URL answers, if it has one) and has stayed so
//! for [`SETTLE`], within `rollout.timeout`; it is `Failed` if the unit
//! fails, is restarted by systemd more than `rollout.maxRestarts` times, or
//! misses the deadline ([`RolloutWork::watch`], run beside the loop as
//! `work::Work::Rollout`).
//!
//! A failed revision is rolled back: a **pin** records "while the manifest
//! renders to hash H, run revision R instead", and every pass puts R's
//! bytes in place of the manifest's ([`substitute`]), so the plan writes
//! and restarts it and the failed revision is not retried until the
//! manifest changes. `unitlet rollout undo` sets the same kind of pin by
//! hand. Config files are never touched: only unit files are revisions.
//!
//! The history and its decisions are pure ([`History`]); the shell reads
//! and writes the file (atomically, under the state lock) and watches the
//! unit.

use crate::manager::UserManager;
use crate::status::{ConditionStatus, ConditionType, EventType, Reason};

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::Instant;

use serde::{Deserialize, Serialize};

use crate::fsutil;
use crate::locations::Locations;
use crate::plan::{Op, content_hash};
use crate::reconcile::Prepared;
use crate::render::{DesiredUnit, Role};
use crate::status::{Status, now_rfc3339};
use crate::systemd::Systemd;

/// Revisions kept per Service.
pub const MAX_REVISIONS: usize = 10;

/// How long a new revision must stay active (and ready) to count: a
/// program that exits right after it starts is active for an instant.
pub const SETTLE: Duration = Duration::from_secs(2);

/// Default `rollout.timeout` without a readiness URL.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

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
    pub revision: u32,
    /// [`content_hash`] of `unit`.
    pub hash: String,
    /// The unit file's bytes, as written.
    pub unit: String,
    /// When it was applied (RFC 3339).
    pub applied_at: String,
    pub state: RevisionState,
    /// Why it ended so (failures), empty otherwise.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
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
    pub revision: u32,
    pub manifest_hash: String,
    pub cause: PinCause,
    /// The failed revision (for `RolledBack`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_revision: Option<u32>,
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
    #[serde(default)]
    pub revisions: Vec<Revision>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<Pin>,
}

/// What [`History::finish`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finished {
    Complete,
    /// Failed; rolled back to this revision (if there was a good one and
    /// rollback is on).
    Failed {
        rolled_back_to: Option<u32>,
    },
    /// Not the newest any more, or already judged: nothing to do.
    Stale,
}

/// What [`History::undo`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undone {
    /// Revision N is pinned until the manifest changes.
    Pinned(u32),
    /// Revision N is the manifest's own unit: no pin (any pin ended).
    ToManifest(u32),
}

/// Whether `line` (trimmed) sets a limit [`crate::render::LIVE_KEYS`]
/// names, in a `[Service]` section.
fn is_limit(line: &str) -> bool {
    line.split_once('=')
        .is_some_and(|(k, _)| crate::render::LIVE_KEYS.contains(&k.trim()))
}

/// The `[Service]` limit lines of a unit file, in order.
fn limit_lines(unit: &str) -> Vec<&str> {
    let mut section = "";
    let mut out = Vec::new();
    for line in unit.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            section = t;
        } else if section == "[Service]" && is_limit(t) {
            out.push(t);
        }
    }
    out
}

/// `unit` with its resource limits replaced by those `from` sets: placed
/// after the last setting of its last `[Service]` section, in `from`'s
/// order (the last one wins in systemd). Pure.
pub fn with_limits(unit: &str, from: &str) -> String {
    let limits = limit_lines(from);
    let mut lines: Vec<&str> = Vec::new();
    let mut section = "";
    let mut at = None;
    for line in unit.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            section = t;
        } else if section == "[Service]" && is_limit(t) {
            continue;
        }
        lines.push(line);
        if section == "[Service]" && !t.is_empty() && !t.starts_with(['#', ';']) {
            at = Some(lines.len());
        }
    }
    let at = match at {
        Some(i) => i,
        None if limits.is_empty() => lines.len(),
        None => {
            lines.extend(["", "[Service]"]);
            lines.len()
        }
    };
    lines.splice(at..at, limits);
    let mut out = lines.join("\n");
    if unit.ends_with('\n') || unit.is_empty() {
        out.push('\n');
    }
    out
}

/// Whether two unit files differ at most in their resource limits.
fn same_unit(a: &str, b: &str) -> bool {
    with_limits(a, "") == with_limits(b, "")
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

impl History {
    pub fn get(&self, n: u32) -> Option<&Revision> {
        self.revisions.iter().find(|r| r.revision == n)
    }

    fn get_mut(&mut self, n: u32) -> Option<&mut Revision> {
        self.revisions.iter_mut().find(|r| r.revision == n)
    }

    /// The revision that should be running: the pinned one, else the newest.
    pub fn in_force(&self) -> Option<&Revision> {
        match &self.pin {
            Some(p) => self.get(p.revision),
            None => self.revisions.last(),
        }
    }

    /// The unit bytes to write instead of `manifest` (what the manifest
    /// renders to), when a pin holds for it: the pinned revision's unit
    /// with the manifest's resource limits, which are the manifest's
    /// promise whatever revision runs.
    pub fn substitute(&self, manifest: &str) -> Option<String> {
        let p = self.pin.as_ref()?;
        if p.manifest_hash != content_hash(manifest) {
            return None;
        }
        self.get(p.revision).map(|r| with_limits(&r.unit, manifest))
    }

    /// The manifest now renders to `manifest`, for which the pin does not
    /// hold, and the pass left what runs as it was (no restart): the pin
    /// ends, since a changed manifest is a new desired state. When what
    /// runs, the pinned revision with the manifest's limits, is the
    /// manifest's own unit, it is recorded as a revision (so the history
    /// says the manifest's revision is in force). Returns the pin that
    /// ended and the revision recorded.
    pub fn release(&mut self, manifest: &str, now: &str) -> Option<(Pin, Option<u32>)> {
        let hash = content_hash(manifest);
        if self.pin.as_ref()?.manifest_hash == hash {
            return None;
        }
        let pin = self.pin.take()?;
        let Some(pinned) = self
            .get(pin.revision)
            .filter(|r| same_unit(&r.unit, manifest))
        else {
            return Some((pin, None));
        };
        if self.revisions.last().is_some_and(|r| r.hash == hash) {
            return Some((pin, None));
        }
        let state = match pinned.state {
            RevisionState::Failed => RevisionState::Failed,
            _ => RevisionState::Complete,
        };
        let reason = format!(
            "revision {}'s unit with the manifest's limits: the manifest's again, applied without a restart",
            pinned.revision
        );
        let n = self.revisions.last().map_or(1, |r| r.revision + 1);
        self.revisions.push(Revision {
            revision: n,
            hash,
            unit: manifest.to_string(),
            applied_at: now.to_string(),
            state,
            reason,
            ended_at: Some(now.to_string()),
        });
        self.trim();
        Some((pin, Some(n)))
    }

    /// Keep the newest [`MAX_REVISIONS`], never the one a pin names.
    fn trim(&mut self) {
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

    /// A unit file with `content` was written and started. Returns the new
    /// revision's number, or `None` when it is not a new revision (the
    /// pinned one put back, or the newest one written again).
    ///
    /// `on_disk` is what the file held before: with no history yet it is
    /// kept as revision 1, so the very first change can be rolled back.
    pub fn record(&mut self, content: &str, on_disk: Option<&str>, now: &str) -> Option<u32> {
        let hash = content_hash(content);
        // No unit file and no pin: a Service created (again) under this
        // name; an old history belongs to something that was deleted.
        if on_disk.is_none() && self.pin.is_none() {
            self.revisions.clear();
        }
        if let Some(p) = &self.pin {
            // The pinned revision put back (with the manifest's limits).
            if self
                .get(p.revision)
                .is_some_and(|r| same_unit(&r.unit, content))
            {
                return None;
            }
            // The manifest changed: the pin ends.
            self.pin = None;
        }
        if self.revisions.last().is_some_and(|r| r.hash == hash) {
            return None;
        }
        if self.revisions.is_empty()
            && let Some(old) = on_disk.filter(|o| content_hash(o) != hash)
        {
            self.revisions.push(Revision {
                revision: 1,
                hash: content_hash(old),
                unit: old.to_string(),
                applied_at: now.to_string(),
                state: RevisionState::Complete,
                reason: "in force before unitlet kept its history".into(),
                ended_at: None,
            });
        }
        for r in &mut self.revisions {
            if r.state == RevisionState::Progressing {
                r.state = RevisionState::Superseded;
                r.ended_at = Some(now.to_string());
            }
        }
        let n = self.revisions.last().map_or(1, |r| r.revision + 1);
        self.revisions.push(Revision {
            revision: n,
            hash,
            unit: content.to_string(),
            applied_at: now.to_string(),
            state: RevisionState::Progressing,
            reason: String::new(),
            ended_at: None,
        });
        self.trim();
        Some(n)
    }

    /// Revision `n`'s health gate ended with `result`.
    /// Whether a revision before `n` ended well: one a rollback of `n`
    /// could return to.
    pub fn has_good_before(&self, n: u32) -> bool {
        self.revisions
            .iter()
            .any(|r| r.revision < n && r.state == RevisionState::Complete)
    }

    /// The newest revision, when it is still progressing with nothing
    /// before it to roll back to (not watched: see [`record`]).
    fn ungated_progressing(&self) -> Option<u32> {
        let r = self.revisions.last()?;
        (r.state == RevisionState::Progressing && !self.has_good_before(r.revision))
            .then_some(r.revision)
    }

    pub fn finish(
        &mut self,
        n: u32,
        result: Result<(), String>,
        auto: bool,
        now: &str,
    ) -> Finished {
        let newest = self.revisions.last().map(|r| r.revision);
        let Some(r) = self.get_mut(n) else {
            return Finished::Stale;
        };
        if r.state != RevisionState::Progressing {
            return Finished::Stale;
        }
        r.ended_at = Some(now.to_string());
        if newest != Some(n) {
            r.state = RevisionState::Superseded;
            return Finished::Stale;
        }
        match result {
            Ok(()) => {
                r.state = RevisionState::Complete;
                Finished::Complete
            }
            Err(why) => {
                r.state = RevisionState::Failed;
                r.reason = why.clone();
                let hash = r.hash.clone();
                let good = self
                    .revisions
                    .iter()
                    .rev()
                    .find(|g| {
                        g.revision < n && g.state == RevisionState::Complete && g.hash != hash
                    })
                    .map(|g| g.revision);
                let rolled_back_to = good.filter(|_| auto);
                if let Some(g) = rolled_back_to {
                    self.pin = Some(Pin {
                        revision: g,
                        manifest_hash: hash,
                        cause: PinCause::RolledBack,
                        failed_revision: Some(n),
                        reason: why,
                        silence: None,
                        since: now.to_string(),
                    });
                }
                Finished::Failed { rolled_back_to }
            }
        }
    }

    /// Whether revision `n` failing would be rolled back (a good revision
    /// precedes it).
    pub fn would_roll_back(&self, n: u32) -> bool {
        let Some(hash) = self.get(n).map(|r| r.hash.clone()) else {
            return false;
        };
        self.revisions
            .iter()
            .any(|g| g.revision < n && g.state == RevisionState::Complete && g.hash != hash)
    }

    /// Pin revision `to` (default: the newest revision before the one in
    /// force that ended well and differs from it; never a failed one).
    /// Going back to the manifest's own unit ends the pin instead.
    /// `manifest`: what the manifest renders to now, when known (else the
    /// pin's manifest, or the newest revision, stands for it).
    ///
    /// # Errors
    /// A message when there is no such revision or nothing to go back to.
    pub fn undo(&mut self, to: Option<u32>, manifest: Option<&str>) -> Result<Undone, String> {
        let current = self
            .in_force()
            .ok_or("it has no revisions yet: unitlet records one each time it writes and starts the Service")?;
        let (current, current_unit) = (current.revision, current.unit.clone());
        let target = match to {
            Some(n) => self.get(n).map(|r| r.revision).ok_or_else(|| {
                format!(
                    "it has no revision {n}; `unitlet rollout history` lists {}",
                    self.revisions
                        .iter()
                        .map(|r| r.revision.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?,
            None => self
                .revisions
                .iter()
                .rev()
                .skip_while(|r| r.revision != current)
                .skip(1)
                .find(|r| r.state == RevisionState::Complete && !same_unit(&r.unit, &current_unit))
                .map(|r| r.revision)
                .ok_or_else(|| {
                    format!(
                        "no revision before revision {current} ended well (Complete) and differs from it; `unitlet rollout history` lists them, `--to-revision N` picks one"
                    )
                })?,
        };
        if target == current {
            return Err(format!("revision {target} is already in force"));
        }
        let manifest_hash = match (manifest, &self.pin) {
            (Some(m), _) => content_hash(m),
            (None, Some(p)) => p.manifest_hash.clone(),
            (None, None) => self
                .revisions
                .last()
                .map(|r| r.hash.clone())
                .unwrap_or_default(),
        };
        let manifest = manifest.or_else(|| {
            let r = self
                .revisions
                .iter()
                .rev()
                .find(|r| r.hash == manifest_hash);
            r.map(|r| r.unit.as_str())
        });
        if let (Some(m), Some(t)) = (manifest, self.get(target))
            && same_unit(m, &t.unit)
        {
            self.pin = None;
            return Ok(Undone::ToManifest(target));
        }
        self.pin = Some(Pin {
            revision: target,
            manifest_hash,
            cause: PinCause::Undo,
            failed_revision: None,
            reason: String::new(),
            silence: None,
            since: now_rfc3339(),
        });
        Ok(Undone::Pinned(target))
    }

    /// What the Service's `Ready` condition should say instead of
    /// `Running` while a pin holds: `(status, reason, message)`.
    pub fn ready_override(
        &self,
        name: &str,
        running: &str,
    ) -> Option<(ConditionStatus, Reason, String)> {
        let p = self.pin.as_ref()?;
        let r = self.get(p.revision)?;
        match p.cause {
            PinCause::RolledBack => {
                let failed = p
                    .failed_revision
                    .and_then(|n| self.get(n))
                    .map(|f| format!("revision {} ({})", f.revision, short(&f.hash)))
                    .unwrap_or_else(|| "the manifest's revision".into());
                Some((
                    ConditionStatus::False,
                    Reason::RolledBack,
                    format!(
                        "{failed} failed: {}; rolled back to revision {} ({}), which runs instead ({running}); it is not retried until the manifest of {name} changes",
                        p.reason,
                        r.revision,
                        short(&r.hash)
                    ),
                ))
            }
            PinCause::Undo => Some((
                ConditionStatus::True,
                Reason::Pinned,
                format!(
                    "{running}; pinned to revision {} ({}) by `unitlet rollout undo` until the manifest of {name} changes",
                    r.revision,
                    short(&r.hash)
                ),
            )),
        }
    }
}

// ---------------------------------------------------------------------------
// The store.

fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("rollouts")
}

fn file(state_dir: &Path, name: &str) -> PathBuf {
    dir(state_dir).join(format!("{name}.json"))
}

/// Reading or writing the history failed.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    /// The history file cannot be read or parsed.
    #[error(
        "cannot read the revision history {path}: {what}; move it aside to start a new history"
    )]
    Read { path: PathBuf, what: String },
    /// The history file cannot be written.
    #[error("cannot write the revision history {path}")]
    Write {
        path: PathBuf,
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
    match crate::fsutil::read_regular_capped(&path, false, 16 * 1024 * 1024) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| RolloutError::Read {
            path,
            what: e.to_string(),
        }),
        Err(_) if !path.exists() => Ok(History::default()),
        Err(e) => Err(RolloutError::Read { path, what: e }),
    }
}

/// A history that cannot be read or written is an event on its Service,
/// not an error of the pass; `None` then.
fn usable<T>(status: &mut Status, name: &str, r: Result<T, RolloutError>) -> Option<T> {
    r.map_err(|e| {
        status.event(
            name,
            EventType::Warning,
            crate::status::EventReason::RolloutHistoryUnusable,
            crate::error_chain(&e),
        )
    })
    .ok()
}

/// Write the history of `name` atomically.
///
/// # Errors
/// [`RolloutError::Write`].
pub fn save(state_dir: &Path, name: &str, h: &History) -> Result<(), RolloutError> {
    let path = file(state_dir, name);
    let bytes = serde_json::to_vec_pretty(h).expect("a history serializes");
    fsutil::create_dir_all(&dir(state_dir))
        .and_then(|()| fsutil::atomic_write(&path, &bytes, 0o644))
        .map_err(|source| RolloutError::Write { path, source })
}

/// [`load`], remembering what was read by (modification time, size,
/// inode; every save is a new file): a
/// pass looks at every Service's history, and almost never has one changed.
fn load_cached(state_dir: &Path, name: &str) -> Result<History, RolloutError> {
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
fn with_history(state_dir: &Path) -> BTreeSet<String> {
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

// ---------------------------------------------------------------------------
// Hooks into a pass.

/// Put a pinned revision's bytes (with the manifest's limits) in place of
/// what the manifest renders to (rollback, undo). Called in
/// `Reconciler::prepare` after rendering. Returns, by Service, what the
/// manifest renders to when it has a pin that no longer holds (see
/// [`release`]).
pub fn substitute(
    state_dir: &Path,
    desired: &mut [DesiredUnit],
) -> std::collections::BTreeMap<String, String> {
    let mut unpinned = std::collections::BTreeMap::new();
    let names = with_history(state_dir);
    if names.is_empty() {
        return unpinned;
    }
    for d in desired.iter_mut() {
        if !matches!(d.role, Role::Main { .. })
            || !names.contains(&d.manifest)
            || d.name != format!("{}.service", d.manifest)
        {
            continue;
        }
        match load_cached(state_dir, &d.manifest) {
            Ok(h) => match h.substitute(&d.content) {
                Some(c) => d.content = c,
                None if h.pin.is_some() => {
                    unpinned.insert(d.manifest.clone(), d.content.clone());
                }
                None => {}
            },
            Err(e) => tracing::warn!("{}", crate::error_chain(&e)),
        }
    }
    unpinned
}

/// End the pins of Services whose manifest changed (`unpinned`, from
/// [`substitute`]) when the pass left them running as they were: a change
/// that needs no restart (limits only, or back to the pinned revision's
/// unit) is a new desired state too. (A change that restarts ends its pin
/// in [`record`].) Called in `Reconciler::apply` after [`record`].
pub fn release(
    state_dir: &Path,
    unpinned: &std::collections::BTreeMap<String, String>,
    failures: &std::collections::BTreeMap<String, String>,
    status: &mut Status,
) {
    for (name, manifest) in unpinned.iter().filter(|(n, _)| !failures.contains_key(*n)) {
        let Some(mut h) = usable(status, name, load(state_dir, name)) else {
            continue;
        };
        let Some((pin, recorded)) = h.release(manifest, &now_rfc3339()) else {
            continue;
        };
        if usable(status, name, save(state_dir, name, &h)).is_none() {
            continue;
        }
        let was = match pin.cause {
            PinCause::RolledBack => "rolled back to",
            PinCause::Undo => "pinned by `unitlet rollout undo` to",
        };
        let now = match recorded {
            Some(n) => format!("revision {n}, the manifest's, is in force without a restart"),
            None => "the manifest's revision is in force".to_string(),
        };
        status.event(
            name,
            EventType::Normal,
            crate::status::EventReason::PinEnded,
            format!(
                "the manifest of {name} changed, so it is no longer {was} revision {}: {now}",
                pin.revision
            ),
        );
    }
}

/// Watch one new revision (see [`RolloutWork::watch`]).
#[derive(Debug, Clone)]
pub struct RolloutWork {
    pub name: String,
    pub unit: String,
    pub revision: u32,
    pub timeout: Duration,
    pub max_restarts: u32,
    pub readiness: Option<String>,
    pub auto: bool,
    pub state_dir: PathBuf,
    /// The Service's silence, for a rollback (`spec.silence`).
    pub silence: Option<Box<crate::alertmanager::SilenceRequest>>,
    /// Watching a rollback: the silence to expire once it is Ready.
    pub expire: Option<String>,
    /// The silence made before this revision's restart: expired when it
    /// is judged, or kept for the rollback that follows its failure.
    pub unsilence: Option<String>,
}

/// What a watch found, and what happened to silences meanwhile.
#[derive(Debug, Clone)]
pub struct Watched {
    pub result: Result<(), String>,
    pub notes: Vec<crate::alertmanager::Note>,
    /// A silence made before the coming rollback.
    pub silence: Option<String>,
    /// The bus or the manager went away before a verdict: `result` is
    /// no judgement, and the watch is run again once reconnected.
    pub lost: bool,
}

/// What a history written by [`record`] leads to once it is saved.
enum Recorded {
    /// A rollback was just put in place: watch it, to expire the silence
    /// made before it once it is Ready.
    Pinned { revision: u32, id: String },
    /// Revision `n` was recorded; `good_before`: an earlier revision
    /// ended well (a rollback could return to it).
    Revision {
        n: u32,
        oneshot: bool,
        good_before: bool,
    },
}

/// Save many histories with one batched, durable write (the temporaries
/// fsynced together, off the runtime): a pass that starts 200 new Services
/// must not fsync 200 files one after the other beside systemd starting
/// them.
async fn save_all(
    state_dir: &Path,
    items: Vec<(String, Vec<u8>)>,
) -> Vec<Result<(), RolloutError>> {
    if items.is_empty() {
        return Vec::new();
    }
    let n = items.len();
    let dir_shown = dir(state_dir);
    let state_dir = state_dir.to_path_buf();
    let written = tokio::task::spawn_blocking(move || {
        let paths: Vec<PathBuf> = items
            .iter()
            .map(|(name, _)| file(&state_dir, name))
            .collect();
        if let Err(e) = fsutil::create_dir_all(&dir(&state_dir)) {
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
            .zip(&items)
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
            .collect::<Vec<_>>()
    })
    .await;
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

/// Histories recorded but not saved yet: the first revision of a new
/// Service, when its start is handed out as a batch, is saved once the
/// batch's jobs end (`AfterJobs` in `reconcile`).
pub struct Unsaved<'a> {
    /// Service → its history, serialized; read instead of the file.
    pub histories: &'a mut std::collections::BTreeMap<String, Vec<u8>>,
    /// Whether this pass's starts were handed out (so first revisions may
    /// wait for them to end).
    pub until_jobs_end: bool,
}

/// Save the unsaved histories of `names` (those recorded again since were
/// saved then) in one batch.
pub async fn save_unsaved(
    state_dir: &Path,
    unsaved: &mut std::collections::BTreeMap<String, Vec<u8>>,
    names: &[String],
    status: &mut Status,
) {
    let items: Vec<(String, Vec<u8>)> = names
        .iter()
        .filter_map(|n| Some((n.clone(), unsaved.remove(n)?)))
        .collect();
    let shown: Vec<String> = items.iter().map(|(n, _)| n.clone()).collect();
    for (name, r) in shown.iter().zip(save_all(state_dir, items).await) {
        usable(status, name, r);
    }
}

/// Record the revisions this pass wrote and started, and hand out a watch
/// for each new one. Called in `Reconciler::apply` after the start jobs.
/// Returns the watches and the Services whose first revision was left in
/// `unsaved` (see [`Unsaved`]).
pub async fn record(
    loc: &Locations,
    prep: &Prepared,
    started_ok: &BTreeSet<String>,
    failures: &std::collections::BTreeMap<String, String>,
    mut silenced: std::collections::BTreeMap<String, String>,
    unsaved: Unsaved<'_>,
    status: &mut Status,
) -> (Vec<RolloutWork>, Vec<String>) {
    let mut out = Vec::new();
    let mut steps = Vec::new();
    let mut to_save = Vec::new();
    let mut deferred = Vec::new();
    let expire_watch = |m: &crate::manifest::Manifest, revision: u32, id: String| {
        let s = m.as_service()?;
        Some(RolloutWork {
            name: m.name.clone(),
            unit: format!("{}.service", m.name),
            revision,
            timeout: s
                .rollout
                .timeout
                .or(s.readiness.as_ref().map(|r| r.timeout))
                .unwrap_or(DEFAULT_TIMEOUT),
            max_restarts: s.rollout.max_restarts,
            readiness: s.readiness.as_ref().map(|r| r.url.clone()),
            auto: false,
            state_dir: loc.state_dir.clone(),
            silence: crate::alertmanager::request_for(m, &loc.alertmanager).map(Box::new),
            expire: Some(id),
            unsilence: None,
        })
    };
    for a in &prep.plan.actions {
        let Op::Write { content, path } = &a.op else {
            continue;
        };
        // Written, and a start or restart was queued (a start that failed
        // at once, e.g. a missing program, fails the revision too).
        let queued = started_ok.contains(&a.manifest)
            || (failures.contains_key(&a.manifest)
                && prep
                    .plan
                    .actions
                    .iter()
                    .any(|b| b.unit == a.unit && matches!(b.op, Op::Start | Op::Restart)));
        if a.unit != format!("{}.service", a.manifest)
            || !queued
            || !crate::fsutil::read_regular_capped(path, false, content.len() as u64)
                .is_ok_and(|b| b == content.as_bytes())
        {
            continue;
        }
        let Some(m) = prep.loaded.get(&a.manifest) else {
            continue;
        };
        let Some(s) = m.as_service() else { continue };
        let state_dir = loc.state_dir.as_path();
        let silence = crate::alertmanager::request_for(m, &loc.alertmanager).map(Box::new);
        let timeout = s
            .rollout
            .timeout
            .or(s.readiness.as_ref().map(|r| r.timeout))
            .unwrap_or(DEFAULT_TIMEOUT);
        let loaded = match unsaved.histories.remove(&m.name) {
            Some(b) => serde_json::from_slice(&b).map_err(|e| RolloutError::Read {
                path: file(state_dir, &m.name),
                what: e.to_string(),
            }),
            None => load(state_dir, &m.name),
        };
        let Some(mut h) = usable(status, &m.name, loaded) else {
            continue;
        };
        let on_disk = prep.observed.files.get(&a.unit).map(|f| f.content.as_str());
        let now = now_rfc3339();
        let step = match h.record(content, on_disk, &now) {
            Some(n) => {
                // A oneshot (an adopted unit file) ends inactive when it
                // worked: "active and ready" does not apply, so it is not
                // health-gated.
                let oneshot = crate::render::is_oneshot(content);
                if oneshot {
                    h.finish(n, Ok(()), false, &now);
                }
                let good_before = h.has_good_before(n);
                Recorded::Revision {
                    n,
                    oneshot,
                    good_before,
                }
            }
            None => {
                let Some(p) = h.pin.as_mut() else { continue };
                let Some(id) = p.silence.take().or_else(|| silenced.remove(&m.name)) else {
                    continue;
                };
                Recorded::Pinned {
                    revision: p.revision,
                    id,
                }
            }
        };
        let bytes = serde_json::to_vec_pretty(&h).expect("a history serializes");
        // A new Service's first revision, with nothing to roll back to,
        // waits for its start to end (no watch needs the file).
        let first = matches!(
            step,
            Recorded::Revision {
                n: 1,
                oneshot: false,
                good_before: false
            }
        );
        if first && unsaved.until_jobs_end {
            unsaved.histories.insert(m.name.clone(), bytes);
            deferred.push(m.name.clone());
            steps.push((a, m, s, silence, timeout, step, false));
        } else {
            steps.push((a, m, s, silence, timeout, step, true));
            to_save.push((m.name.clone(), bytes));
        }
    }
    let mut saved = save_all(&loc.state_dir, to_save).await.into_iter();
    for (a, m, s, silence, timeout, step, now) in steps {
        let r = if now {
            saved.next().expect("one result per history saved")
        } else {
            Ok(())
        };
        let state_dir = loc.state_dir.as_path();
        let content = match &a.op {
            Op::Write { content, .. } => content,
            _ => continue,
        };
        let (n, oneshot, good_before) = match step {
            Recorded::Pinned { revision, id } => {
                if r.is_ok() {
                    out.push(RolloutWork {
                        name: m.name.clone(),
                        unit: a.unit.clone(),
                        revision,
                        timeout,
                        max_restarts: s.rollout.max_restarts,
                        readiness: s.readiness.as_ref().map(|r| r.url.clone()),
                        auto: false,
                        state_dir: state_dir.to_path_buf(),
                        silence,
                        expire: Some(id),
                        unsilence: None,
                    });
                }
                continue;
            }
            Recorded::Revision {
                n,
                oneshot,
                good_before,
            } => (n, oneshot, good_before),
        };
        if usable(status, &m.name, r).is_none() {
            continue;
        }
        if oneshot {
            status.event(
                &m.name,
                EventType::Normal,
                crate::status::EventReason::RolloutComplete,
                format!(
                    "revision {n} of {} applied (Type=oneshot: not health-gated)",
                    a.unit
                ),
            );
            if let Some(id) = silenced.remove(&m.name)
                && let Some(w) = expire_watch(m, n, id)
            {
                out.push(w);
            }
            continue;
        }
        if !good_before {
            // Nothing to roll back to (a new Service): no watch polling the
            // manager beside its start; its Ready condition judges it
            // (`conditions`), so 200 new Services cost nothing extra.
            status.event(
                &m.name,
                EventType::Normal,
                crate::status::EventReason::RolloutProgressing,
                format!(
                    "revision {n} ({}) of {} is the first: nothing to roll back to, so its Ready condition decides how it ends",
                    short(&content_hash(content)),
                    a.unit
                ),
            );
            continue;
        }
        status.event(
            &m.name,
            EventType::Normal,
            crate::status::EventReason::RolloutProgressing,
            format!(
                "revision {n} ({}) of {} is progressing: it must be active{} within {}",
                short(&content_hash(content)),
                a.unit,
                if s.readiness.is_some() {
                    " and ready"
                } else {
                    ""
                },
                humantime::format_duration(timeout)
            ),
        );
        out.push(RolloutWork {
            name: m.name.clone(),
            unit: a.unit.clone(),
            revision: n,
            timeout,
            max_restarts: s.rollout.max_restarts,
            readiness: s.readiness.as_ref().map(|r| r.url.clone()),
            auto: s.rollout.auto,
            state_dir: state_dir.to_path_buf(),
            silence,
            expire: None,
            unsilence: silenced.remove(&m.name),
        });
    }
    // Restarts that made no revision: expire their silences once Ready.
    for (name, id) in silenced {
        if let Some(w) = prep.loaded.get(&name).and_then(|m| expire_watch(m, 0, id)) {
            out.push(w);
        }
    }
    (out, deferred)
}

/// Fold a watch's result into the history and status. Called from
/// `Reconciler::finish`, under the state lock.
pub fn finish(state_dir: &Path, w: &RolloutWork, watched: Watched, status: &mut Status) {
    let Watched {
        result,
        notes,
        silence,
        lost,
    } = watched;
    if lost {
        return;
    }
    for (t, r, m) in notes {
        status.event(&w.name, t, r, m);
    }
    let Some(mut h) = usable(status, &w.name, load(state_dir, &w.name)) else {
        return;
    };
    let done = h.finish(w.revision, result.clone(), w.auto, &now_rfc3339());
    if let (
        Finished::Failed {
            rolled_back_to: Some(_),
        },
        Some(p),
    ) = (&done, h.pin.as_mut())
    {
        p.silence = silence;
    }
    if done == Finished::Stale {
        let _ = save(state_dir, &w.name, &h);
        return;
    }
    if usable(status, &w.name, save(state_dir, &w.name, &h)).is_none() {
        return;
    }
    let why = result.err().unwrap_or_default();
    match done {
        Finished::Complete => status.event(
            &w.name,
            EventType::Normal,
            crate::status::EventReason::RolloutComplete,
            format!("revision {} of {} is active and ready", w.revision, w.unit),
        ),
        Finished::Failed {
            rolled_back_to: Some(g),
        } => status.event(
            &w.name,
            EventType::Warning,
            crate::status::EventReason::RolledBack,
            format!(
                "revision {} of {} failed: {why}; rolling back to revision {g}",
                w.revision, w.unit
            ),
        ),
        Finished::Failed {
            rolled_back_to: None,
        } => status.event(
            &w.name,
            EventType::Warning,
            crate::status::EventReason::RolloutFailed,
            format!(
                "revision {} of {} failed: {why}; {}",
                w.revision,
                w.unit,
                if w.auto {
                    "there is no earlier good revision to roll back to"
                } else {
                    "rollout.auto is false: not rolled back"
                }
            ),
        ),
        Finished::Stale => {}
    }
}

/// End a first revision (not watched) by its Service's Ready condition:
/// Complete once Ready, Failed when the unit failed or cannot start. No
/// rollback: there is nothing to roll back to.
fn judge_by_ready(
    state_dir: &Path,
    name: &str,
    mut h: History,
    n: u32,
    obj: &crate::status::ObjectStatus,
) {
    let Some(c) = obj.ready() else { return };
    let result = match (c.status, c.reason) {
        (ConditionStatus::True, _) => Ok(()),
        (
            ConditionStatus::False,
            Reason::Failed
            | Reason::OOMKilled
            | Reason::Killed
            | Reason::BinaryMissing
            | Reason::ApplyFailed
            | Reason::BackingOff,
        ) => Err(c.message.clone()),
        _ => return,
    };
    if !matches!(h.finish(n, result, false, &now_rfc3339()), Finished::Stale)
        && let Err(e) = save(state_dir, name, &h)
    {
        tracing::warn!(manifest = %name, "{}", crate::error_chain(&e));
    }
}

/// While a pin holds, `Ready` says so: `False RolledBack` (naming the
/// failed revision, why, and what runs instead) or `True Pinned`. A first
/// revision is ended by its Ready condition here. Called after status is
/// refreshed in `Reconciler::apply`.
pub fn conditions(state_dir: &Path, manifests: &[crate::manifest::Manifest], status: &mut Status) {
    let names = with_history(state_dir);
    for m in manifests.iter().filter(|m| names.contains(&m.name)) {
        let Some(obj) = status.objects.get_mut(&m.name) else {
            continue;
        };
        let Ok(h) = load_cached(state_dir, &m.name) else {
            continue;
        };
        if let Some(n) = h.ungated_progressing() {
            judge_by_ready(state_dir, &m.name, h.clone(), n, obj);
        }
        let Some(pin) = &h.pin else { continue };
        let ready = obj.ready().cloned();
        let is_true = ready
            .as_ref()
            .is_some_and(|c| c.status == ConditionStatus::True);
        // A rolled-back Service that runs is RolledBack, whatever the
        // manifest's own revision would be reported as (BinaryMissing, …).
        let active = obj.unit.as_ref().filter(|u| u.active_state == "active");
        let running = match (&ready, active) {
            (Some(c), _) if is_true => c.message.clone(),
            (_, Some(u)) if pin.cause == PinCause::RolledBack => {
                format!("{} is active ({})", u.name, u.sub_state)
            }
            _ => continue,
        };
        if let Some((st, reason, msg)) = h.ready_override(&m.name, &running) {
            obj.set_ready(st, reason, &msg);
            if pin.cause == PinCause::RolledBack
                && !pin.since.is_empty()
                && let Some(c) = obj
                    .conditions
                    .iter_mut()
                    .find(|c| c.type_ == ConditionType::Ready)
            {
                c.last_transition_time = pin.since.clone();
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Watching a revision.

/// One look at the unit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    pub active_state: String,
    pub sub_state: String,
    pub job_pending: bool,
    pub n_restarts: u32,
}

/// What one observation says, given the restarts counted from `baseline`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Active, no job pending: good if it stays so (and is ready).
    Up,
    Waiting,
    Failed(String),
}

/// Judge one observation. Pure.
pub fn judge(o: &Observation, baseline: u32, max_restarts: u32) -> Verdict {
    let restarts = o.n_restarts.saturating_sub(baseline);
    if restarts > max_restarts {
        return Verdict::Failed(format!(
            "systemd restarted it {restarts} times (more than rollout.maxRestarts {max_restarts})"
        ));
    }
    if o.job_pending {
        return Verdict::Waiting;
    }
    match o.active_state.as_str() {
        "failed" => Verdict::Failed(format!("it failed ({})", o.sub_state)),
        "active" => Verdict::Up,
        _ => Verdict::Waiting,
    }
}

impl RolloutWork {
    async fn observe(
        &self,
        sd: &impl UserManager,
    ) -> Result<Observation, crate::systemd::SystemdError> {
        let live = sd.list_units(std::slice::from_ref(&self.unit)).await?;
        let Some((l, path)) = live.get(&self.unit) else {
            return Ok(Observation {
                active_state: "inactive".into(),
                sub_state: "not loaded".into(),
                ..Default::default()
            });
        };
        Ok(Observation {
            active_state: l.active_state.clone(),
            sub_state: l.sub_state.clone(),
            job_pending: l.job_pending,
            n_restarts: sd.n_restarts(&self.unit, path).await?,
        })
    }

    /// Watch, then handle silences: before a rollback that is coming,
    /// make one; after a watched rollback, expire the one made before it.
    pub async fn run(&self, sd: &impl UserManager, http: &reqwest::Client) -> Watched {
        let Some(result) = self.watch(sd, http).await else {
            return Watched {
                result: Err("the connection to the user manager was lost".into()),
                notes: Vec::new(),
                silence: None,
                lost: true,
            };
        };
        let mut notes = Vec::new();
        let mut silence = None;
        if let Some(req) = &self.silence {
            if let Some(id) = &self.expire {
                let why = match &result {
                    Ok(()) => format!(
                        "the rolled-back revision {} of {} is Ready",
                        self.revision, self.unit
                    ),
                    Err(e) => format!(
                        "the rolled-back revision {} of {} is not Ready either ({e}), which must not stay silent",
                        self.revision, self.unit
                    ),
                };
                let made = Some(crate::alertmanager::Made { id: id.clone() });
                crate::alertmanager::after(http, req, made, &why, &mut notes).await;
            } else if result.is_err()
                && self.auto
                && load(&self.state_dir, &self.name).is_ok_and(|h| h.would_roll_back(self.revision))
            {
                // The silence of the restart covers the rollback too;
                // without one, the rollback's pass makes one before it
                // restarts the Service.
                silence = self.unsilence.clone();
            } else if let Some(id) = &self.unsilence {
                let why = match &result {
                    Ok(()) => format!("revision {} of {} is Ready", self.revision, self.unit),
                    Err(e) => format!(
                        "revision {} of {} failed ({e}), which must not stay silent",
                        self.revision, self.unit
                    ),
                };
                let made = Some(crate::alertmanager::Made { id: id.clone() });
                crate::alertmanager::after(http, req, made, &why, &mut notes).await;
            }
        }
        Watched {
            result: if self.expire.is_some() {
                Ok(())
            } else {
                result
            },
            notes,
            silence,
            lost: false,
        }
    }

    /// Wait until the revision is good (active, ready, for [`SETTLE`]) or
    /// has failed. Never longer than `timeout` (plus one probe). `None`
    /// when the bus or the manager went away: nothing is judged then (the
    /// operator watches again, from the live state, once reconnected).
    ///
    /// # Errors
    /// Why the revision failed.
    pub async fn watch(
        &self,
        sd: &impl UserManager,
        http: &reqwest::Client,
    ) -> Option<Result<(), String>> {
        let start = Instant::now();
        let deadline = start + self.timeout;
        let mut baseline: Option<u32> = None;
        let mut up_since: Option<Instant> = None;
        let mut last;
        loop {
            match self.observe(sd).await {
                Ok(o) => {
                    // A start or restart by job resets NRestarts: count
                    // from the lowest value seen.
                    let b = baseline.map_or(o.n_restarts, |b| b.min(o.n_restarts));
                    baseline = Some(b);
                    last = format!("{} ({})", o.active_state, o.sub_state);
                    match judge(&o, b, self.max_restarts) {
                        Verdict::Failed(why) => {
                            let detail = match sd.list_units(std::slice::from_ref(&self.unit)).await
                            {
                                Ok(l) => match l.get(&self.unit) {
                                    Some((_, p)) => sd.failure_details(&self.unit, p, None).await,
                                    None => None,
                                },
                                Err(_) => None,
                            };
                            return Some(Err(match detail {
                                Some((_, d)) => format!("{why}: {d}"),
                                None => why,
                            }));
                        }
                        Verdict::Waiting => up_since = None,
                        Verdict::Up => {
                            let ready = match &self.readiness {
                                None => Ok(()),
                                Some(u) => crate::reload::probe(http, u).await,
                            };
                            match ready {
                                Ok(()) => {
                                    let since = *up_since.get_or_insert_with(Instant::now);
                                    if since.elapsed() >= SETTLE {
                                        return Some(Ok(()));
                                    }
                                }
                                Err(e) => {
                                    up_since = None;
                                    last = format!("active but not ready: {e}");
                                }
                            }
                        }
                    }
                }
                // The bus or the manager went away: no verdict.
                Err(e) if e.is_disconnect() => return None,
                Err(e) => last = crate::error_chain(&e),
            }
            if Instant::now() >= deadline {
                return Some(Err(format!(
                    "not active{} within rollout.timeout {} (last: {last})",
                    if self.readiness.is_some() {
                        " and ready"
                    } else {
                        ""
                    },
                    humantime::format_duration(self.timeout)
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

// ---------------------------------------------------------------------------
// `unitlet rollout`.

/// `unitlet rollout …`.
#[derive(clap::Subcommand, Debug)]
pub enum RolloutCommand {
    /// Revisions of Service NAME: number, hash, when, outcome.
    History {
        name: String,
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: crate::doctor::Format,
    },
    /// Put an earlier revision of Service NAME back and keep it until the
    /// manifest changes.
    Undo {
        name: String,
        /// The revision to go back to (default: the one before the
        /// revision in force).
        #[arg(long = "to-revision", value_name = "N")]
        to_revision: Option<u32>,
        /// How long to wait for the restart.
        #[arg(long, default_value = "90s", value_parser = crate::manifest::parse_duration)]
        timeout: Duration,
    },
}

/// The table `rollout history` prints. Pure.
pub fn history_table(h: &History) -> String {
    let mut out = format!(
        "{:<9}{:<14}{:<22}{:<13}{}\n",
        "REVISION", "HASH", "APPLIED", "OUTCOME", "REASON"
    );
    let in_force = h.in_force().map(|r| r.revision);
    for r in &h.revisions {
        let mark = if Some(r.revision) == in_force {
            "*"
        } else {
            ""
        };
        out.push_str(&format!(
            "{:<9}{:<14}{:<22}{:<13}{}\n",
            format!("{}{mark}", r.revision),
            short(&r.hash),
            r.applied_at,
            r.state.to_string(),
            r.reason
        ));
    }
    if let Some(p) = &h.pin {
        out.push_str(&format!(
            "* in force: revision {} ({}), until the manifest changes\n",
            p.revision,
            match p.cause {
                PinCause::RolledBack => "rolled back",
                PinCause::Undo => "rollout undo",
            }
        ));
    } else if in_force.is_some() {
        out.push_str("* in force: the manifest's revision\n");
    }
    out
}

fn is_service(loc: &Locations, name: &str) -> Result<(), String> {
    let l = crate::manifest::load_dir(&loc.manifests).map_err(|e| crate::error_chain(&e))?;
    match l.get(name) {
        Some(m) if m.as_service().is_some() => Ok(()),
        Some(_) => Err(format!("{name} is a Backup; only Services have revisions")),
        None if l.held.contains_key(name) => Ok(()),
        None => Err(format!(
            "no Service manifest named {name} in {}",
            loc.manifests.display()
        )),
    }
}

/// Run `unitlet rollout …`; returns the exit code.
pub async fn command(loc: &Locations, cmd: RolloutCommand) -> i32 {
    match cmd {
        RolloutCommand::History { name, output } => {
            let h = match load(&loc.state_dir, &name) {
                Ok(h) => h,
                Err(e) => {
                    eprintln!("error: {}", crate::error_chain(&e));
                    return 2;
                }
            };
            if h.revisions.is_empty() && is_service(loc, &name).is_err() {
                eprintln!("error: {}", is_service(loc, &name).unwrap_err());
                return 1;
            }
            match output {
                crate::doctor::Format::Table => print!("{}", history_table(&h)),
                crate::doctor::Format::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&h).expect("a history serializes")
                ),
            }
            0
        }
        RolloutCommand::Undo {
            name,
            to_revision,
            timeout,
        } => undo(loc, &name, to_revision, timeout).await,
    }
}

/// One pass of `rollout undo`, under the state lock the caller holds: fold
/// in `outcomes`, plan, act, add `event`, save the status.
async fn undo_pass(
    loc: &Locations,
    sd: &Systemd,
    rec: &mut crate::reconcile::Reconciler,
    outcomes: Vec<crate::work::Outcome>,
    event: Option<(&str, String)>,
) -> Result<crate::reconcile::PassReport, String> {
    let mut status = Status::load_for_update_async(&loc.status_file()).await;
    for o in outcomes {
        rec.finish(o, &mut status);
    }
    let result = async {
        let prep = rec.prepare(sd, &status).await?;
        rec.apply(sd, prep, &mut status).await
    }
    .await;
    if let Some((name, msg)) = event {
        status.event(
            name,
            EventType::Normal,
            crate::status::EventReason::RolloutUndone,
            msg,
        );
    }
    status.stamp("unitlet rollout undo");
    let saved = status.save_async(&loc.status_file()).await;
    let report = result.map_err(|e| crate::error_chain(&e))?;
    saved.map_err(|e| crate::error_chain(&e))?;
    Ok(report)
}

/// What Service `name`'s manifest renders to now (its main unit), if it
/// loads: the manifest a pin made by `rollout undo` is for.
fn manifest_unit(
    loc: &Locations,
    ctx: &crate::render::RenderContext,
    name: &str,
) -> Option<String> {
    let loaded = crate::manifest::load_dir(&loc.manifests).ok()?;
    let unit = format!("{name}.service");
    crate::render::render(loaded.get(name)?, ctx)
        .into_iter()
        .find(|d| d.name == unit && matches!(d.role, Role::Main { .. }))
        .map(|d| d.content)
}

/// `(revision, event, what to print)` for what `rollout undo` did. Pure.
fn undo_messages(name: &str, u: Undone) -> (u32, String, String) {
    match u {
        Undone::Pinned(t) => (
            t,
            format!(
                "revision {t} put back by `unitlet rollout undo`; it stays until the manifest changes"
            ),
            format!("{name}: revision {t} is in force until the manifest changes"),
        ),
        Undone::ToManifest(t) => (
            t,
            format!(
                "revision {t}, the manifest's own unit, put back by `unitlet rollout undo`: nothing is pinned"
            ),
            format!(
                "{name}: revision {t} is the manifest's own: nothing is pinned, the manifest's revision is in force"
            ),
        ),
    }
}

async fn undo(loc: &Locations, name: &str, to: Option<u32>, timeout: Duration) -> i32 {
    if let Err(e) = is_service(loc, name) {
        eprintln!("error: {e}");
        return 1;
    }
    let fail = |e: &dyn std::error::Error| {
        eprintln!("error: {}", crate::error_chain(e));
        2
    };
    let sd = match Systemd::connect(loc.bus.as_deref()).await {
        Ok(sd) => sd,
        Err(e) => return fail(&e),
    };
    let announce = "unitlet rollout undo";
    let lock = match crate::lock::StateLock::acquire_announced(&loc.state_dir, announce).await {
        Ok(l) => l,
        Err(e) => return fail(&e),
    };
    let mut h = match load(&loc.state_dir, name) {
        Ok(h) => h,
        Err(e) => return fail(&e),
    };
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("unitlet"));
    let mut rec = crate::reconcile::Reconciler::new(loc.clone(), exe);
    rec.job_timeout = timeout;
    rec.start_wait = timeout;
    let manifest = manifest_unit(loc, &rec.render_ctx, name);
    let (target, event, done) = match h.undo(to, manifest.as_deref()) {
        Ok(u) => undo_messages(name, u),
        Err(e) => {
            eprintln!("error: cannot undo the rollout of {name}: {e}");
            return 1;
        }
    };
    if let Err(e) = save(&loc.state_dir, name, &h) {
        return fail(&e);
    }
    // One pass puts it in place (a pin makes the plan write and restart it).
    let mut report = undo_pass(loc, &sd, &mut rec, Vec::new(), Some((name, event))).await;
    drop(lock);
    // What it handed out (the readiness wait after the restart, the watch
    // that expires a silence) is waited for outside the lock, and folded
    // in by one more pass: the Service ends Ready or not, never Starting.
    if let Ok(r) = &mut report
        && !r.failures.contains_key(name)
        && !r.work.is_empty()
    {
        let work = std::mem::take(&mut r.work)
            .into_iter()
            .map(|w| w.run(sd.clone(), rec.http.clone(), timeout));
        let outcomes = futures_util::future::join_all(work).await;
        match crate::lock::StateLock::acquire_announced(&loc.state_dir, announce).await {
            Ok(_lock) => report = undo_pass(loc, &sd, &mut rec, outcomes, None).await,
            Err(e) => return fail(&e),
        }
    }
    match report {
        Ok(r) => {
            if let Some(e) = r.failures.get(name) {
                eprintln!(
                    "error: revision {target} of {name} is in place, but applying it failed: {e}"
                );
                return 1;
            }
            println!("{done}");
            0
        }
        Err(e) => {
            eprintln!("error: revision {target} of {name} is in place, but the pass failed: {e}");
            2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2026-11-28T08:00:00Z";

    #[test]
    fn a_failed_revision_pins_the_last_good_one_until_the_manifest_changes() {
        let mut h = History::default();
        assert_eq!(h.record("good", None, NOW), Some(1));
        assert_eq!(h.finish(1, Ok(()), true, NOW), Finished::Complete);
        assert_eq!(h.record("bad", Some("good"), NOW), Some(2));
        assert_eq!(
            h.finish(2, Err("it failed (failed)".into()), true, NOW),
            Finished::Failed {
                rolled_back_to: Some(1)
            }
        );
        assert_eq!(h.get(2).unwrap().state, RevisionState::Failed);
        // While the manifest renders to "bad", "good" is written instead.
        assert_eq!(h.substitute("bad").as_deref(), Some("good"));
        assert_eq!(h.substitute("other"), None);
        // Writing the pinned revision back is not a new revision.
        assert_eq!(h.record("good", Some("bad"), NOW), None);
        let (st, reason, msg) = h
            .ready_override("web", "web.service is active (running)")
            .unwrap();
        assert_eq!((st, reason), (ConditionStatus::False, Reason::RolledBack));
        assert!(
            msg.starts_with(&format!(
                "revision 2 ({}) failed: it failed",
                short(&content_hash("bad"))
            )),
            "{msg}"
        );
        assert!(msg.contains("rolled back to revision 1"), "{msg}");
        // A fixed manifest is a new revision and ends the pin.
        assert_eq!(h.record("fixed", Some("good"), NOW), Some(3));
        assert!(h.pin.is_none());
        assert_eq!(h.substitute("bad"), None);
        let t = history_table(&h);
        assert!(t.lines().nth(2).unwrap().contains("Failed"), "{t}");
        assert!(t.lines().nth(3).unwrap().starts_with("3*"), "{t}");
    }

    #[test]
    fn no_rollback_without_a_good_revision_or_with_auto_off() {
        let mut h = History::default();
        h.record("bad", None, NOW);
        assert_eq!(
            h.finish(1, Err("x".into()), true, NOW),
            Finished::Failed {
                rolled_back_to: None
            }
        );
        let mut h = History::default();
        h.record("good", None, NOW);
        h.finish(1, Ok(()), true, NOW);
        h.record("bad", Some("good"), NOW);
        assert_eq!(
            h.finish(2, Err("x".into()), false, NOW),
            Finished::Failed {
                rolled_back_to: None
            }
        );
        assert!(h.pin.is_none());
    }

    #[test]
    fn the_unit_on_disk_before_any_history_is_revision_one() {
        let mut h = History::default();
        assert_eq!(h.record("new", Some("old"), NOW), Some(2));
        assert_eq!(h.get(1).unwrap().unit, "old");
        assert_eq!(h.get(1).unwrap().state, RevisionState::Complete);
        assert_eq!(
            h.finish(2, Err("x".into()), true, NOW),
            Finished::Failed {
                rolled_back_to: Some(1)
            }
        );
    }

    #[test]
    fn a_superseded_revision_is_stale_and_history_is_bounded() {
        let mut h = History::default();
        h.record("a", None, NOW);
        h.record("b", Some("a"), NOW);
        assert_eq!(h.get(1).unwrap().state, RevisionState::Superseded);
        assert_eq!(h.finish(1, Err("late".into()), true, NOW), Finished::Stale);
        assert!(h.pin.is_none());
        for i in 0..20 {
            h.record(&format!("v{i}"), Some("b"), NOW);
        }
        assert_eq!(h.revisions.len(), MAX_REVISIONS);
        assert_eq!(h.revisions.last().unwrap().revision, 22);
    }

    #[test]
    fn a_service_created_again_under_an_old_name_starts_a_new_history() {
        let mut h = History::default();
        h.record("old-service", None, NOW);
        h.finish(1, Ok(()), true, NOW);
        assert_eq!(h.record("new-service", None, NOW), Some(1));
        assert_eq!(h.revisions.len(), 1);
        assert_eq!(
            h.finish(1, Err("x".into()), true, NOW),
            Finished::Failed {
                rolled_back_to: None
            }
        );
    }

    #[test]
    fn undo_goes_back_one_or_to_a_chosen_revision() {
        let mut h = History::default();
        assert!(h.undo(None, None).unwrap_err().contains("no revisions"));
        for (i, c) in ["a", "b", "c"].iter().enumerate() {
            h.record(c, (i > 0).then_some("previous"), NOW);
            h.finish(i as u32 + 1, Ok(()), true, NOW);
        }
        assert_eq!(h.undo(None, None), Ok(Undone::Pinned(2)));
        assert_eq!(h.substitute("c").as_deref(), Some("b"));
        let (st, reason, msg) = h.ready_override("web", "web.service is active").unwrap();
        assert_eq!((st, reason), (ConditionStatus::True, Reason::Pinned));
        assert!(msg.contains("pinned to revision 2"), "{msg}");
        // Undo again goes back further, for the same manifest.
        assert_eq!(h.undo(None, None), Ok(Undone::Pinned(1)));
        assert_eq!(h.substitute("c").as_deref(), Some("a"));
        assert_eq!(h.undo(Some(3), None), Ok(Undone::ToManifest(3)));
        assert!(
            h.undo(Some(3), None)
                .unwrap_err()
                .contains("already in force")
        );
        assert!(h.undo(Some(9), None).unwrap_err().contains("no revision 9"));
    }

    const UNIT: &str = "[Unit]\nDescription=web\n\n[Service]\nExecStart=/bin/web\nRestart=on-failure\n\n[Install]\nWantedBy=default.target\n";

    fn limited(unit: &str, command: &str) -> String {
        unit.replace("/bin/web", command).replace(
            "Restart=on-failure\n",
            "Restart=on-failure\nMemoryMax=104857600\nCPUQuota=20%\n",
        )
    }

    #[test]
    fn limits_come_from_the_manifest_whatever_unit_runs() {
        let with = limited(UNIT, "/bin/web");
        assert_eq!(with_limits(UNIT, &with), with);
        assert_eq!(with_limits(&with, UNIT), UNIT);
        assert_eq!(with_limits(&with, &with), with);
        assert!(same_unit(UNIT, &with));
        assert!(!same_unit(UNIT, &limited(UNIT, "/bin/other")));
        // Adopted units: the manifest's overrides come last, in order.
        let adopted = "[Service]\nExecStart=/bin/web\nMemoryMax=1\n\n[Service]\nMemoryMax=2\n";
        assert_eq!(
            with_limits("[Service]\nExecStart=/bin/old\n", adopted),
            "[Service]\nExecStart=/bin/old\nMemoryMax=1\nMemoryMax=2\n"
        );
    }

    /// Issue 21 item 1: limits added without a new revision, then a failed
    /// revision: the rollback runs revision 1 with the manifest's limits.
    #[test]
    fn a_rollback_keeps_the_manifests_limits() {
        let mut h = History::default();
        h.record(UNIT, None, NOW);
        h.finish(1, Ok(()), true, NOW);
        let bad = limited(UNIT, "/bin/pyhton3");
        assert_eq!(
            h.record(&bad, Some(&limited(UNIT, "/bin/web")), NOW),
            Some(2)
        );
        h.finish(2, Err("missing".into()), true, NOW);
        let put_back = h.substitute(&bad).unwrap();
        assert_eq!(put_back, limited(UNIT, "/bin/web"));
        // Writing it is the pinned revision put back, not a new one.
        assert_eq!(h.record(&put_back, Some(&bad), NOW), None);
        assert_eq!(h.pin.as_ref().map(|p| p.revision), Some(1));
    }

    /// Issue 21 item 2: a manifest changed back to what runs ends the pin
    /// without a restart, and the manifest's revision is in force.
    #[test]
    fn a_changed_manifest_ends_the_pin_without_a_restart() {
        let mut h = History::default();
        h.record(UNIT, None, NOW);
        h.finish(1, Ok(()), true, NOW);
        let bad = limited(UNIT, "/bin/pyhton3");
        h.record(&bad, Some(UNIT), NOW);
        h.finish(2, Err("missing".into()), true, NOW);
        assert_eq!(h.release(&bad, NOW), None, "the pin holds for its manifest");
        let fixed = limited(UNIT, "/bin/web");
        let (pin, n) = h.release(&fixed, NOW).unwrap();
        assert_eq!((pin.cause, n), (PinCause::RolledBack, Some(3)));
        assert!(h.pin.is_none());
        let r = h.in_force().unwrap();
        assert_eq!(
            (r.revision, r.state, r.unit.as_str()),
            (3, RevisionState::Complete, fixed.as_str())
        );
        assert!(history_table(&h).contains("in force: the manifest's revision"));
        // A change that is not what runs ends the pin; the restart that
        // follows records it.
        h.record(&bad, Some(&fixed), NOW);
        h.finish(4, Err("missing".into()), true, NOW);
        assert_eq!(h.pin.as_ref().map(|p| p.revision), Some(3));
        let other = limited(UNIT, "/bin/other");
        assert_eq!(h.release(&other, NOW).map(|(_, n)| n), Some(None));
        assert!(h.pin.is_none());
    }

    /// Issue 21 item 3: undo never goes back to a failed revision, and
    /// undo to the manifest's own revision is no pin.
    #[test]
    fn undo_skips_failed_revisions_and_the_manifests_own_is_no_pin() {
        let mut h = History::default();
        h.record(UNIT, None, NOW);
        h.finish(1, Ok(()), true, NOW);
        let bad = UNIT.replace("/bin/web", "/bin/pyhton3");
        h.record(&bad, Some(UNIT), NOW);
        h.finish(2, Err("missing".into()), true, NOW);
        let fixed = UNIT.replace("/bin/web", "/bin/web --fixed");
        h.record(&fixed, Some(UNIT), NOW);
        h.finish(3, Ok(()), true, NOW);
        assert!(h.pin.is_none());
        assert_eq!(h.undo(None, Some(&fixed)), Ok(Undone::Pinned(1)));
        assert_eq!(h.substitute(&fixed).as_deref(), Some(UNIT));
        assert!(
            h.undo(None, None)
                .unwrap_err()
                .contains("no revision before revision 1")
        );
        assert_eq!(h.undo(Some(3), Some(&fixed)), Ok(Undone::ToManifest(3)));
        assert!(h.pin.is_none());
        assert_eq!(h.in_force().map(|r| r.revision), Some(3));
        // Chosen by number, a failed revision can still be pinned.
        assert_eq!(h.undo(Some(2), None), Ok(Undone::Pinned(2)));
        // After a limits-only change (no revision), undo pins for the
        // manifest as it renders now, and the pinned unit gets its limits.
        let now = limited(&fixed, "/bin/web");
        assert_eq!(h.undo(Some(1), Some(&now)), Ok(Undone::Pinned(1)));
        assert_eq!(h.substitute(&now), Some(limited(UNIT, "/bin/web")));
        assert_eq!(h.undo(Some(3), Some(&now)), Ok(Undone::ToManifest(3)));
    }

    #[test]
    fn judging_an_observation() {
        let o = |a: &str, job: bool, n: u32| Observation {
            active_state: a.into(),
            sub_state: "x".into(),
            job_pending: job,
            n_restarts: n,
        };
        assert_eq!(judge(&o("active", false, 0), 0, 3), Verdict::Up);
        assert_eq!(judge(&o("active", true, 0), 0, 3), Verdict::Waiting);
        assert_eq!(judge(&o("activating", false, 3), 0, 3), Verdict::Waiting);
        assert!(
            matches!(judge(&o("activating", false, 4), 0, 3), Verdict::Failed(w) if w.contains("4 times"))
        );
        assert!(matches!(
            judge(&o("failed", false, 0), 0, 3),
            Verdict::Failed(_)
        ));
        assert_eq!(judge(&o("active", false, 9), 8, 3), Verdict::Up);
    }
}
