//! Rollout policy: what the history's decisions are, and the hooks a pass
//! calls — [`substitute`] (a pin's bytes in place of the manifest's),
//! [`record`] (new revisions, and the watches handed out for them),
//! [`release`] (a changed manifest ends its pin), [`finish`] (a watch's
//! verdict folded in) — plus the pure verdict of one look at a unit
//! ([`judge`]). Reads and writes the history through [`super::history`];
//! never the reconciler's types: a pass hands in plain inputs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::history::{self, History, Pin, PinCause, Revision, RevisionState, RolloutError, short};
use crate::locations::Locations;
use crate::manager::UnitProgress;
use crate::manifest::{LoadedSet, Manifest};
use crate::plan::content_hash;
use crate::render::{DesiredUnit, Role};
use crate::status::{ConditionStatus, EventType, Reason, Status, now_rfc3339};

/// Default `rollout.timeout` without a readiness URL.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// What [`History::finish`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finished {
    /// Active and ready: the revision is good.
    Complete,
    /// Failed; rolled back to this revision (if there was a good one and
    /// rollback is on).
    Failed {
        /// The revision pinned instead, if any.
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
pub(crate) fn same_unit(a: &str, b: &str) -> bool {
    with_limits(a, "") == with_limits(b, "")
}

impl History {
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
        let n = self.next_number();
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
        let n = self.next_number();
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

    /// Revision `n`'s health gate ended with `result`; a failure pins the
    /// newest good revision before it when `auto` (rollback).
    pub fn finish(
        &mut self,
        n: u32,
        result: Result<(), String>,
        auto: bool,
        now: &str,
    ) -> Finished {
        let newest = self.revisions.last().map(|r| r.revision);
        let good = self.good_before(n);
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
        let why = match result {
            Ok(()) => {
                r.state = RevisionState::Complete;
                return Finished::Complete;
            }
            Err(why) => why,
        };
        r.state = RevisionState::Failed;
        r.reason = why.clone();
        let hash = r.hash.clone();
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

    /// What the pin in force means for the Service's Ready condition
    /// (an input of `reconcile::ready::decide`); `None` without one.
    pub fn verdict(&self) -> Option<RolloutVerdict> {
        let p = self.pin.as_ref()?;
        let r = self.get(p.revision)?;
        let (revision, hash) = (r.revision, short(&r.hash).to_string());
        Some(match p.cause {
            PinCause::RolledBack => RolloutVerdict::RolledBack {
                failed: p
                    .failed_revision
                    .and_then(|n| self.get(n))
                    .map(|f| format!("revision {} ({})", f.revision, short(&f.hash)))
                    .unwrap_or_else(|| "the manifest's revision".into()),
                why: p.reason.clone(),
                revision,
                hash,
                since: p.since.clone(),
            },
            PinCause::Undo => RolloutVerdict::Pinned { revision, hash },
        })
    }
}

/// A pin in force, as the Service's Ready condition needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolloutVerdict {
    /// A failed revision was rolled back.
    RolledBack {
        /// The failed revision, for people ("revision 2 (abc…)").
        failed: String,
        /// Why it failed.
        why: String,
        /// The revision that runs instead.
        revision: u32,
        /// Its short hash.
        hash: String,
        /// When the rollback was made (RFC 3339).
        since: String,
    },
    /// `unitlet rollout undo` pinned a revision.
    Pinned {
        /// The revision that runs.
        revision: u32,
        /// Its short hash.
        hash: String,
    },
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

// ---------------------------------------------------------------------------
// Hooks into a pass.

/// Put a pinned revision's bytes (with the manifest's limits) in place of
/// what the manifest renders to (rollback, undo). Called in
/// `Reconciler::prepare` after rendering. Returns, by Service, what the
/// manifest renders to when it has a pin that no longer holds (see
/// [`release`]).
pub fn substitute(state_dir: &Path, desired: &mut [DesiredUnit]) -> BTreeMap<String, String> {
    let mut unpinned = BTreeMap::new();
    let names = history::with_history(state_dir);
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
        match history::load_cached(state_dir, &d.manifest) {
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
    unpinned: &BTreeMap<String, String>,
    failures: &BTreeMap<String, String>,
    status: &mut Status,
) {
    for (name, manifest) in unpinned.iter().filter(|(n, _)| !failures.contains_key(*n)) {
        let Some(mut h) = usable(status, name, history::load(state_dir, name)) else {
            continue;
        };
        let Some((pin, recorded)) = h.release(manifest, &now_rfc3339()) else {
            continue;
        };
        if usable(status, name, history::save(state_dir, name, &h)).is_none() {
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

/// Watch one new revision (see `rollout::watch::watch`): what the watch
/// needs, in plain values, so it runs beside the loop.
#[derive(Debug, Clone)]
pub struct RolloutWork {
    /// The Service.
    pub name: String,
    /// Its service unit.
    pub unit: String,
    /// The revision watched (0: none, only a silence to expire).
    pub revision: u32,
    /// `rollout.timeout` (or the readiness timeout, or [`DEFAULT_TIMEOUT`]).
    pub timeout: Duration,
    /// `rollout.maxRestarts`.
    pub max_restarts: u32,
    /// The readiness URL, probed once the unit is active.
    pub readiness: Option<String>,
    /// `rollout.auto`: a failure is rolled back.
    pub auto: bool,
    /// Where the history is, for the rollback decision.
    pub state_dir: PathBuf,
    /// The Service's silence, for a rollback (`spec.silence`).
    pub silence: Option<Box<crate::alertmanager::SilenceRequest>>,
    /// Watching a rollback: the silence to expire once it is Ready.
    pub expire: Option<String>,
    /// The silence made before this revision's restart: expired when it
    /// is judged, or kept for the rollback that follows its failure.
    pub unsilence: Option<String>,
}

impl RolloutWork {
    /// A watch of `revision` of Service `m` with its manifest's gate, no
    /// rollback and no silence to expire; `None` for a Backup.
    pub fn new(m: &Manifest, loc: &Locations, revision: u32) -> Option<RolloutWork> {
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
            silence: crate::silence::request_for(m, &loc.alertmanager).map(Box::new),
            expire: None,
            unsilence: None,
        })
    }

    /// A watch that only expires silence `id` once revision `revision` is
    /// Ready (after a rollback, or a restart that made no revision).
    fn expiring(m: &Manifest, loc: &Locations, revision: u32, id: String) -> Option<RolloutWork> {
        let mut w = RolloutWork::new(m, loc, revision)?;
        w.expire = Some(id);
        Some(w)
    }
}

/// What a watch found, and what happened to silences meanwhile.
#[derive(Debug, Clone)]
pub struct Watched {
    /// The verdict: `Err(why)` when the revision failed.
    pub result: Result<(), String>,
    /// What happened to silences, for events.
    pub notes: Vec<crate::silence::Note>,
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

impl Recorded {
    /// A new Service's first revision, with nothing to roll back to: it
    /// may wait for its start to end (no watch needs the file).
    fn is_first(&self) -> bool {
        matches!(
            self,
            Recorded::Revision {
                n: 1,
                oneshot: false,
                good_before: false
            }
        )
    }
}

/// Histories recorded but not saved yet: the first revision of a new
/// Service, when its start is handed out as a batch, is saved once the
/// batch's jobs end (`AfterJobs` in `reconcile`).
pub struct Unsaved<'a> {
    /// Service → its history, serialized; read instead of the file.
    pub histories: &'a mut BTreeMap<String, Vec<u8>>,
    /// Whether this pass's starts were handed out (so first revisions may
    /// wait for them to end).
    pub until_jobs_end: bool,
}

/// Save the unsaved histories of `names` (those recorded again since were
/// saved then) in one batch.
pub async fn save_unsaved(
    state_dir: &Path,
    unsaved: &mut BTreeMap<String, Vec<u8>>,
    names: &[String],
    status: &mut Status,
) {
    let items: Vec<(String, Vec<u8>)> = names
        .iter()
        .filter_map(|n| Some((n.clone(), unsaved.remove(n)?)))
        .collect();
    let shown: Vec<String> = items.iter().map(|(n, _)| n.clone()).collect();
    for (name, r) in shown.iter().zip(history::save_all(state_dir, items).await) {
        usable(status, name, r);
    }
}

/// A Service unit a pass wrote and then started or restarted (or whose
/// start failed at once): a candidate revision, as the pass hands it in.
pub struct Started<'a> {
    /// The Service's manifest.
    pub manifest: &'a Manifest,
    /// The unit file's bytes, as written (and read back).
    pub content: &'a str,
    /// What the file held before the pass wrote it.
    pub on_disk: Option<&'a str>,
}

/// Record the revisions a pass wrote and started, and hand out a watch
/// for each new one. Called in `Reconciler::apply` after the start jobs;
/// `silenced`: the silences made before its restarts, by Service.
/// Returns the watches and the Services whose first revision was left in
/// `unsaved` (see [`Unsaved`]).
pub async fn record(
    loc: &Locations,
    loaded: &LoadedSet,
    started: &[Started<'_>],
    mut silenced: BTreeMap<String, String>,
    unsaved: Unsaved<'_>,
    status: &mut Status,
) -> (Vec<RolloutWork>, Vec<String>) {
    let (mut steps, mut to_save, mut deferred) = (Vec::new(), Vec::new(), Vec::new());
    for s in started {
        let name = &s.manifest.name;
        let Some((step, h)) = record_one(loc, s, &mut silenced, unsaved.histories, status) else {
            continue;
        };
        let bytes = history::to_bytes(&h);
        let defer = step.is_first() && unsaved.until_jobs_end;
        if defer {
            unsaved.histories.insert(name.clone(), bytes);
            deferred.push(name.clone());
        } else {
            to_save.push((name.clone(), bytes));
        }
        steps.push((s, step, !defer));
    }
    let mut saved = history::save_all(&loc.state_dir, to_save).await.into_iter();
    let mut out = Vec::new();
    for (s, step, now) in steps {
        let r = match now {
            true => saved.next().unwrap_or_else(|| {
                let path = history::file(&loc.state_dir, &s.manifest.name);
                let source = std::io::Error::other("no result from the batched write");
                Err(RolloutError::Write { path, source })
            }),
            false => Ok(()),
        };
        out.extend(after_saved(loc, s, step, r, &mut silenced, status));
    }
    // Restarts that made no revision: expire their silences once Ready.
    for (name, id) in silenced {
        let m = loaded.get(&name);
        out.extend(m.and_then(|m| RolloutWork::expiring(m, loc, 0, id)));
    }
    (out, deferred)
}

/// Record one started unit in its history (not saved yet). `None` when
/// it is no new revision and no rollback to watch, or the history is
/// unusable.
fn record_one(
    loc: &Locations,
    s: &Started<'_>,
    silenced: &mut BTreeMap<String, String>,
    unsaved: &mut BTreeMap<String, Vec<u8>>,
    status: &mut Status,
) -> Option<(Recorded, History)> {
    let name = &s.manifest.name;
    let kept = unsaved.remove(name);
    let loaded = match &kept {
        Some(b) => history::parse(&loc.state_dir, name, b),
        None => history::load(&loc.state_dir, name),
    };
    let mut h = usable(status, name, loaded)?;
    let now = now_rfc3339();
    let step = match h.record(s.content, s.on_disk, &now) {
        Some(n) => {
            // A oneshot (an adopted unit file) ends inactive when it
            // worked: "active and ready" does not apply, so it is not
            // health-gated.
            let oneshot = crate::render::is_oneshot(s.content);
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
            let pinned = h.pin.as_mut().and_then(|p| {
                let id = p.silence.take().or_else(|| silenced.remove(name))?;
                Some((p.revision, id))
            });
            let Some((revision, id)) = pinned else {
                // Unchanged: an unsaved history stays unsaved.
                unsaved.extend(kept.map(|b| (name.clone(), b)));
                return None;
            };
            Recorded::Pinned { revision, id }
        }
    };
    Some((step, h))
}

/// A recorded history was saved (`r`): its events, and the watch to hand
/// out, if any.
fn after_saved(
    loc: &Locations,
    s: &Started<'_>,
    step: Recorded,
    r: Result<(), RolloutError>,
    silenced: &mut BTreeMap<String, String>,
    status: &mut Status,
) -> Option<RolloutWork> {
    let m = s.manifest;
    let name = &m.name;
    let (n, oneshot, good_before) = match step {
        Recorded::Pinned { revision, id } => {
            return r
                .ok()
                .and_then(|()| RolloutWork::expiring(m, loc, revision, id));
        }
        Recorded::Revision {
            n,
            oneshot,
            good_before,
        } => (n, oneshot, good_before),
    };
    usable(status, name, r)?;
    let mut w = RolloutWork::new(m, loc, n)?;
    let hash = content_hash(s.content);
    if oneshot {
        let msg = format!(
            "revision {n} of {} applied (Type=oneshot: not health-gated)",
            w.unit
        );
        status.event(
            name,
            EventType::Normal,
            crate::status::EventReason::RolloutComplete,
            msg,
        );
        let id = silenced.remove(name)?;
        return RolloutWork::expiring(m, loc, n, id);
    }
    if !good_before {
        // Nothing to roll back to (a new Service): no watch polling the
        // manager beside its start; its Ready condition judges it
        // (`judge_first_revisions`), so 200 new Services cost nothing extra.
        let msg = format!(
            "revision {n} ({}) of {} is the first: nothing to roll back to, so its Ready condition decides how it ends",
            short(&hash),
            w.unit
        );
        status.event(
            name,
            EventType::Normal,
            crate::status::EventReason::RolloutProgressing,
            msg,
        );
        return None;
    }
    let msg = format!(
        "revision {n} ({}) of {} is progressing: it must be active{} within {}",
        short(&hash),
        w.unit,
        if w.readiness.is_some() {
            " and ready"
        } else {
            ""
        },
        humantime::format_duration(w.timeout)
    );
    status.event(
        name,
        EventType::Normal,
        crate::status::EventReason::RolloutProgressing,
        msg,
    );
    w.auto = m.as_service().is_some_and(|s| s.rollout.auto);
    w.unsilence = silenced.remove(name);
    Some(w)
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
    let Some(mut h) = usable(status, &w.name, history::load(state_dir, &w.name)) else {
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
        let _ = history::save(state_dir, &w.name, &h);
        return;
    }
    if usable(status, &w.name, history::save(state_dir, &w.name, &h)).is_none() {
        return;
    }
    finished_event(w, &done, &result.err().unwrap_or_default(), status);
}

/// The event a judged revision makes.
fn finished_event(w: &RolloutWork, done: &Finished, why: &str, status: &mut Status) {
    let (n, unit) = (w.revision, &w.unit);
    let (type_, reason, msg) = match done {
        Finished::Complete => (
            EventType::Normal,
            crate::status::EventReason::RolloutComplete,
            format!("revision {n} of {unit} is active and ready"),
        ),
        Finished::Failed {
            rolled_back_to: Some(g),
        } => (
            EventType::Warning,
            crate::status::EventReason::RolledBack,
            format!("revision {n} of {unit} failed: {why}; rolling back to revision {g}"),
        ),
        Finished::Failed {
            rolled_back_to: None,
        } => (
            EventType::Warning,
            crate::status::EventReason::RolloutFailed,
            format!(
                "revision {n} of {unit} failed: {why}; {}",
                if w.auto {
                    "there is no earlier good revision to roll back to"
                } else {
                    "rollout.auto is false: not rolled back"
                }
            ),
        ),
        Finished::Stale => return,
    };
    status.event(&w.name, type_, reason, msg);
}

/// The pins in force, by Service (those with a history among
/// `manifests`): inputs of their Ready condition. Reads the histories
/// (cached): call it off the runtime.
pub fn verdicts(state_dir: &Path, manifests: &[Manifest]) -> BTreeMap<String, RolloutVerdict> {
    let names = history::with_history(state_dir);
    manifests
        .iter()
        .filter(|m| names.contains(&m.name))
        .filter_map(|m| {
            let h = history::load_cached(state_dir, &m.name).ok()?;
            Some((m.name.clone(), h.verdict()?))
        })
        .collect()
}

/// End first revisions (not watched: nothing to roll back to) by their
/// Service's Ready condition: Complete once Ready, Failed when the unit
/// failed or cannot start. Reads Ready, writes only histories: call it
/// off the runtime, after status is refreshed.
pub fn judge_first_revisions(state_dir: &Path, manifests: &[Manifest], status: &Status) {
    let names = history::with_history(state_dir);
    for m in manifests.iter().filter(|m| names.contains(&m.name)) {
        let Some(c) = status.objects.get(&m.name).and_then(|o| o.ready()) else {
            continue;
        };
        let Ok(mut h) = history::load_cached(state_dir, &m.name) else {
            continue;
        };
        let Some(n) = h.ungated_progressing() else {
            continue;
        };
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
            _ => continue,
        };
        if !matches!(h.finish(n, result, false, &now_rfc3339()), Finished::Stale)
            && let Err(e) = history::save(state_dir, &m.name, &h)
        {
            tracing::warn!(manifest = %m.name, "{}", crate::error_chain(&e));
        }
    }
}

/// What one observation says, given the restarts counted from `baseline`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Active, no job pending: good if it stays so (and is ready).
    Up,
    /// Not yet: starting, a job pending, or restarted within the budget.
    Waiting,
    /// Failed, or restarted more than `rollout.maxRestarts`: why.
    Failed(String),
}

/// Judge one observation. Pure.
pub fn judge(o: &UnitProgress, baseline: u32, max_restarts: u32) -> Verdict {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::history::MAX_REVISIONS;

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
        match h.verdict() {
            Some(RolloutVerdict::RolledBack {
                failed,
                why,
                revision: 1,
                ..
            }) => {
                let bad = format!("revision 2 ({})", short(&content_hash("bad")));
                assert_eq!((failed, why.as_str()), (bad, "it failed (failed)"));
            }
            other => panic!("{other:?}"),
        }
        // A fixed manifest is a new revision and ends the pin.
        assert_eq!(h.record("fixed", Some("good"), NOW), Some(3));
        assert!(h.pin.is_none());
        assert_eq!(h.substitute("bad"), None);
        assert_eq!(h.get(2).unwrap().state, RevisionState::Failed);
        assert_eq!(h.in_force().map(|r| r.revision), Some(3));
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
        assert!(matches!(
            h.verdict(),
            Some(RolloutVerdict::Pinned { revision: 2, .. })
        ));
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
        let o = |a: &str, job: bool, n: u32| UnitProgress {
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
