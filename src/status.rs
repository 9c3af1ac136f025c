//! Status: conditions per manifest, recent events, and what was last
//! applied — persisted atomically in the state directory so `get` and
//! `describe` in another process see what `run` is doing.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::fsutil;
use crate::manifest::Kind;

/// An enum that is a fixed set of strings in status JSON and output: each
/// variant serializes (and displays) as its own name.
macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name { $($(#[$vm])* $v,)* }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$v,)*];

            /// The variant's name: what status JSON and output show.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$v => stringify!($v),)* }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }
    };
}

string_enum! {
    /// What a condition is about.
    ConditionType {
        /// Whether the object is as its manifest declares.
        Ready,
        /// A restore of the Service is in progress or interrupted.
        RestorePending,
        /// Whether the user manager can enforce the Service's limits.
        LimitsEnforced,
    }
}

string_enum! {
    /// A condition's status, as in Kubernetes.
    ConditionStatus {
        /// The condition holds.
        True,
        /// It does not.
        False,
        /// Not known (e.g. the user manager cannot be asked).
        Unknown,
    }
}

string_enum! {
    /// Why a condition has its status: one word a script can match.
    Reason {
        /// Running (a Service) or scheduled (a Backup), and ready.
        Running,
        /// Stopped, as declared.
        Stopped,
        /// Activating, or waiting for its readiness URL.
        Starting,
        /// Active, its readiness URL not probed yet.
        Probing,
        /// Active but its readiness URL fails.
        NotReady,
        /// Not running although the manifest wants it running (or the
        /// reverse).
        NotRunning,
        /// Running although the manifest wants it stopped (seen by `get`).
        NotReconciled,
        /// Waiting to be restarted by systemd after it exited.
        Restarting,
        /// The unit failed.
        Failed,
        /// The kernel OOM killer killed the main process.
        OOMKilled,
        /// SIGKILL, most likely for exceeding the memory limit.
        Killed,
        /// Applying the manifest failed.
        ApplyFailed,
        /// Failing, retried with exponential backoff.
        BackingOff,
        /// The program the Service runs is not installed.
        BinaryMissing,
        /// A unit of the same name is not unitlet's.
        Conflict,
        /// The manifest is invalid; its last good units are kept.
        Invalid,
        /// A restore holds the Service.
        OnHold,
        /// An interrupted restore is pending.
        RestoreInterrupted,
        /// A config file cannot be read.
        ConfigMissing,
        /// The validator refused a config change.
        ConfigInvalid,
        /// Reloading a changed config failed; retried.
        ReloadFailed,
        /// Not applied by any pass yet (seen by `get`).
        NotApplied,
        /// The user manager cannot be reached (seen by `get`).
        ManagerUnreachable,
        /// A new revision failed; the previous good one runs instead.
        RolledBack,
        /// `rollout undo` pinned a revision until the manifest changes.
        Pinned,
        /// A Backup's last run failed.
        BackupFailed,
        /// The limits' cgroup controllers are available (LimitsEnforced).
        Enforced,
        /// A cgroup controller a limit needs is missing (LimitsEnforced).
        ControllerMissing,
        /// The user manager's controllers cannot be read (LimitsEnforced).
        ControllersUnknown,
        /// A reason this version does not know (a status file written by
        /// another version).
        #[serde(other)]
        Unrecognized,
    }
}

string_enum! {
    /// Why an event happened: one word a script can match, written in
    /// `status.json` as the variant's name (the strings events always had).
    EventReason {
        /// A unit file was written.
        Written,
        /// A unit file of a removed manifest was removed.
        Removed,
        /// A unit was stopped.
        Stopped,
        /// Stopping a unit failed.
        StopFailed,
        /// A unit was started.
        Started,
        /// Starting a unit failed.
        StartFailed,
        /// A unit was restarted.
        Restarted,
        /// Restarting a unit failed.
        RestartFailed,
        /// Enabling a unit failed.
        EnableFailed,
        /// A Service's limits were applied live.
        LimitsApplied,
        /// A Service's limits could not be applied.
        LimitsNotApplied,
        /// A readiness probe failed.
        NotReady,
        /// A config change was reloaded into the running process.
        Reloaded,
        /// A config change was recorded only (`onConfigChange: none`).
        ConfigRecorded,
        /// The validator refused a config change.
        ConfigInvalid,
        /// Reloading a changed config failed; retried.
        ReloadFailed,
        /// A new revision is being watched.
        RolloutProgressing,
        /// A new revision is active and ready.
        RolloutComplete,
        /// A new revision failed; the previous good one runs again.
        RolledBack,
        /// A new revision failed with nothing to roll back to.
        RolloutFailed,
        /// `rollout undo` pinned a revision.
        RolloutUndone,
        /// A pin ended because the manifest changed.
        PinEnded,
        /// A Service's rollout history cannot be read.
        RolloutHistoryUnusable,
        /// A silence was made in Alertmanager before a planned disruption.
        SilenceCreated,
        /// A silence could not be made; the action went ahead.
        SilenceFailed,
        /// A silence was expired once the Service was Ready.
        SilenceExpired,
        /// A silence could not be expired; it runs out by itself.
        SilenceNotExpired,
        /// A Backup's run failed.
        BackupFailed,
        /// A Backup's first run to succeed after failures.
        BackupSucceeded,
        /// A pass failed (an event of the operator itself).
        ReconcileError,
        /// `status.json` could not be used and was moved aside.
        StatusUnreadable,
        /// A reason this version does not know (a status file written by
        /// another version).
        #[serde(other)]
        Unrecognized,
    }
}

string_enum! {
    /// An event's type, as in Kubernetes.
    EventType {
        /// Something unitlet did as planned.
        Normal,
        /// Something that failed or needs a person.
        Warning,
    }
}

/// The object name of the operator's own events.
pub const OPERATOR: &str = "unitlet";

/// Events kept in the status file; older ones are dropped.
pub const MAX_EVENTS: usize = 500;

/// Where a status message about UNIT points for its output: `see
/// \`unitlet logs NAME\`` (NAME's service, also for its timer), which finds
/// the journal or the log file the unit writes to.
pub fn see_logs(unit: &str) -> String {
    let name = unit.rsplit_once('.').map_or(unit, |(stem, _)| stem);
    format!("see `unitlet logs {name}`")
}

/// A status file larger than this is not read (it is refused as if
/// unreadable: a cache, rebuilt by the next pass).
const MAX_STATUS_BYTES: u64 = 64 * 1024 * 1024;

/// Now, as RFC 3339 in whole seconds (UTC): the time format of status.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
/// One condition of an object, as in Kubernetes.
pub struct Condition {
    /// What it is about.
    #[serde(rename = "type")]
    pub type_: ConditionType,
    /// Whether it holds.
    pub status: ConditionStatus,
    /// Why, in one word.
    pub reason: Reason,
    /// Why, for a person.
    pub message: String,
    /// Changes only when `status` changes.
    pub last_transition_time: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
/// The live state of an object's main unit, as systemd last said.
pub struct UnitStatus {
    /// The unit's name.
    pub name: String,
    /// systemd's `ActiveState`.
    pub active_state: String,
    /// systemd's `SubState`.
    pub sub_state: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
/// The status of one manifest.
pub struct ObjectStatus {
    /// The manifest's kind.
    pub kind: Kind,
    /// Its `metadata.name`.
    pub name: String,
    /// The file it was loaded from.
    pub file: PathBuf,
    /// Its conditions, at most one of each type.
    pub conditions: Vec<Condition>,
    /// The main unit (a Service's service, a Backup's timer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<UnitStatus>,
    /// Consecutive failed reconciles, for backoff.
    #[serde(default)]
    pub failures: u32,
    /// Spec hash of the last reconcile attempt, so an edit resets backoff.
    #[serde(default)]
    pub spec_hash: String,
    /// The digest of the manifest file's bytes the object was last
    /// reconciled from ([`crate::manifest::Manifest::digest`]): how a
    /// fleet rollout knows a host applied the new file. Empty (and left
    /// out) until a pass applies the manifest.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub manifest_digest: String,
}

impl ObjectStatus {
    /// A status with no conditions yet.
    pub fn new(kind: Kind, name: &str, file: &Path) -> ObjectStatus {
        ObjectStatus {
            kind,
            name: name.to_string(),
            file: file.to_path_buf(),
            conditions: vec![],
            unit: None,
            failures: 0,
            spec_hash: String::new(),
            manifest_digest: String::new(),
        }
    }

    /// The Ready condition, if there is one.
    pub fn ready(&self) -> Option<&Condition> {
        self.conditions
            .iter()
            .find(|c| c.type_ == ConditionType::Ready)
    }

    /// Whether Ready is `True`.
    pub fn is_ready(&self) -> bool {
        self.ready()
            .is_some_and(|c| c.status == ConditionStatus::True)
    }

    /// The reason of the Ready condition, if there is one.
    pub fn ready_reason(&self) -> Option<Reason> {
        self.ready().map(|c| c.reason)
    }

    /// Set the Ready condition (see [`ObjectStatus::set_condition`]).
    pub fn set_ready(&mut self, status: ConditionStatus, reason: Reason, message: &str) {
        self.set_condition(ConditionType::Ready, status, reason, message);
    }

    /// Set a condition; the transition time moves only on a status change.
    pub fn set_condition(
        &mut self,
        type_: ConditionType,
        status: ConditionStatus,
        reason: Reason,
        message: &str,
    ) {
        match self.conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) => {
                if c.status != status {
                    c.last_transition_time = now_rfc3339();
                }
                c.status = status;
                c.reason = reason;
                c.message = message.into();
            }
            None => self.conditions.push(Condition {
                type_,
                status,
                reason,
                message: message.into(),
                last_transition_time: now_rfc3339(),
            }),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
/// Something that happened to an object (or to the operator, [`OPERATOR`]).
pub struct Event {
    /// When, RFC 3339.
    pub time: String,
    /// The manifest's name, or [`OPERATOR`].
    pub object: String,
    /// Normal or Warning.
    #[serde(rename = "type")]
    pub type_: EventType,
    /// What happened, in one word.
    pub reason: EventReason,
    /// What happened, for a person.
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
/// A Service's config files as last applied.
pub struct ConfigState {
    /// Content hash the running process has loaded.
    pub applied: String,
    /// The last reload failed: reload again even if the content is
    /// reverted to `applied`, so the process' own status recovers.
    #[serde(default)]
    pub failing: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
/// What `STATE_DIR/status.json` holds: written by passes, read by `get`
/// and `describe`.
pub struct Status {
    /// Each manifest's status, by name.
    #[serde(default)]
    pub objects: BTreeMap<String, ObjectStatus>,
    /// Unit name → content hash last applied in full.
    #[serde(default)]
    pub applied: BTreeMap<String, String>,
    /// The last [`MAX_EVENTS`] events, oldest first.
    #[serde(default)]
    pub events: Vec<Event>,
    /// Config files last applied per Service (content hash), and whether the
    /// last reload of them failed.
    #[serde(default)]
    pub config: BTreeMap<String, ConfigState>,
    /// The last operational error (bus, directory), cleared on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator_error: Option<String>,
    /// When a pass last finished (RFC 3339): how fresh this status is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconciled_at: Option<String>,
    /// Who ran that pass (`unitlet run (PID n)`, `unitlet apply (PID n)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconciled_by: Option<String>,
    /// The last status file found unusable, and where it was kept: `get`
    /// warns about it while that file is there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved_aside: Option<MovedAside>,
    /// Why the status file just read could not be used, when a reader
    /// ([`Status::load`]) found it so; never saved.
    #[serde(skip)]
    pub unreadable: Option<String>,
}

/// A status file that could not be used, moved aside by the writer that
/// found it (its events are still in it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MovedAside {
    /// Where the file is now.
    pub file: PathBuf,
    /// Why it could not be used.
    pub reason: String,
    /// When it was moved (RFC 3339).
    pub time: String,
}

/// What reading the status file found.
enum Read {
    Missing,
    Good(Box<Status>),
    /// Unreadable, or not status JSON: why.
    Bad(String),
}

fn read(path: &Path) -> Read {
    classify(fsutil::read_regular_opt(path, false, MAX_STATUS_BYTES))
}

/// What a bounded, regular-files-only read of the status file gave.
fn classify(read: Result<Option<Vec<u8>>, String>) -> Read {
    match read {
        Ok(None) => Read::Missing,
        Err(e) => Read::Bad(format!("cannot be read: {e}")),
        Ok(Some(bytes)) => match serde_json::from_slice(&bytes) {
            Ok(s) => Read::Good(Box::new(s)),
            Err(e) => Read::Bad(format!("is not valid status JSON: {e}")),
        },
    }
}

/// `PATH.corrupt-TIMESTAMP` (with `-N` when that is taken): where an
/// unusable status file is kept.
fn aside_path(path: &Path) -> PathBuf {
    let stamp: String = now_rfc3339()
        .chars()
        .filter(|c| !"-:".contains(*c))
        .collect();
    let base = format!("{}.corrupt-{stamp}", path.display());
    let mut candidate = PathBuf::from(&base);
    let mut n = 1;
    while candidate.symlink_metadata().is_ok() {
        candidate = PathBuf::from(format!("{base}-{n}"));
        n += 1;
    }
    candidate
}

/// Why status could not be saved.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The state directory or file cannot be written.
    #[error("cannot write status to {path}; check the state directory (--state-dir) is writable")]
    Write {
        /// The status file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
}

impl Status {
    /// Load the status file for reading (`get`, `plan`): a missing one is
    /// an empty status (it is a cache of what the reconciler computes, not
    /// a source of truth for anything destructive); an unusable one too,
    /// with [`Status::unreadable`] saying why. Nothing is moved: only a
    /// writer may ([`Status::load_for_update`]).
    pub fn load(path: &Path) -> Status {
        Status::from_read(path, read(path))
    }

    /// The status [`Status::load`] makes of what was read.
    fn from_read(path: &Path, read: Read) -> Status {
        match read {
            Read::Missing => Status::default(),
            Read::Good(s) => *s,
            Read::Bad(why) => Status {
                unreadable: Some(format!(
                    "the status file {} {why}; the next pass (`unitlet run` or `unitlet apply`) keeps it aside and starts a new one",
                    path.display()
                )),
                ..Status::default()
            },
        }
    }

    /// Load the status file to update it, holding the state lock: an
    /// unusable one is moved aside to `status.json.corrupt-TIMESTAMP`
    /// (its events kept there), logged, and named in the new status
    /// ([`Status::moved_aside`], an operator event) instead of being
    /// silently replaced by an empty status.
    pub fn load_for_update(path: &Path) -> Status {
        let why = match read(path) {
            Read::Missing => return Status::default(),
            Read::Good(s) => return *s,
            Read::Bad(why) => why,
        };
        let aside = aside_path(path);
        let mut status = Status::default();
        let message = match std::fs::rename(path, &aside) {
            Ok(()) => {
                tracing::warn!(
                    "the status file {} {why}; moved it aside to {} and started a new status",
                    path.display(),
                    aside.display()
                );
                status.moved_aside = Some(MovedAside {
                    file: aside.clone(),
                    reason: why.clone(),
                    time: now_rfc3339(),
                });
                format!(
                    "the status file {why}; kept as {} (earlier events are there)",
                    aside.display()
                )
            }
            Err(e) => {
                tracing::error!(
                    "the status file {} {why}, and cannot be moved aside to {}: {e}; it is replaced by a new status",
                    path.display(),
                    aside.display()
                );
                format!("the status file {why}, and could not be kept aside: {e}")
            }
        };
        status.event(
            OPERATOR,
            EventType::Warning,
            crate::status::EventReason::StatusUnreadable,
            message,
        );
        status
    }

    /// [`Status::load_for_update`] off the async runtime.
    pub async fn load_for_update_async(path: &Path) -> Status {
        let p = path.to_path_buf();
        tokio::task::spawn_blocking(move || Status::load_for_update(&p))
            .await
            .unwrap_or_default()
    }

    /// What `get` should warn about the status file itself: unusable now,
    /// or moved aside earlier (while the file kept aside is there).
    pub fn file_warning(&self) -> Option<String> {
        if let Some(why) = &self.unreadable {
            return Some(why.clone());
        }
        let m = self.moved_aside.as_ref()?;
        m.file.symlink_metadata().ok()?;
        Some(format!(
            "the status file {} and was moved aside at {} to {}; events before then are in that file (delete it to silence this warning)",
            m.reason,
            m.time,
            m.file.display()
        ))
    }

    /// Stamp the status as reconciled now by `who`.
    pub fn stamp(&mut self, who: &str) {
        self.reconciled_at = Some(now_rfc3339());
        self.reconciled_by = Some(format!("{who} (PID {})", std::process::id()));
    }

    /// [`Status::load`] off the async runtime.
    pub async fn load_async(path: &Path) -> Status {
        let read = fsutil::read_regular(path, false, MAX_STATUS_BYTES).await;
        Status::from_read(path, classify(read))
    }

    /// [`Status::save`] off the async runtime.
    ///
    /// # Errors
    /// As [`Status::save`].
    pub async fn save_async(&self, path: &Path) -> Result<(), StatusError> {
        let (s, p) = (self.clone(), path.to_path_buf());
        tokio::task::spawn_blocking(move || s.save(&p))
            .await
            .unwrap_or_else(|e| {
                Err(StatusError::Write {
                    path: path.to_path_buf(),
                    source: std::io::Error::other(e.to_string()),
                })
            })
    }

    /// Write status to `path` atomically.
    ///
    /// # Errors
    /// [`StatusError::Write`].
    pub fn save(&self, path: &Path) -> Result<(), StatusError> {
        let bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other);
        let written = bytes.and_then(|b| fsutil::atomic_write(path, &b, 0o600));
        written.map_err(|source| StatusError::Write {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Record an event, dropping the oldest beyond [`MAX_EVENTS`].
    pub fn event(
        &mut self,
        object: &str,
        type_: EventType,
        reason: EventReason,
        message: impl Into<String>,
    ) {
        self.events.push(Event {
            time: now_rfc3339(),
            object: object.into(),
            type_,
            reason,
            message: message.into(),
        });
        if self.events.len() > MAX_EVENTS {
            let drop = self.events.len() - MAX_EVENTS;
            self.events.drain(..drop);
        }
    }

    /// Forget every object not in `keep`: its status, its config state and
    /// its events (nothing shows them once the object is gone, and they
    /// may name what the manifest held). Events of the operator itself
    /// (`unitlet`) stay.
    pub fn retain_objects(&mut self, keep: &std::collections::BTreeSet<String>) {
        self.objects.retain(|n, _| keep.contains(n));
        self.config.retain(|n, _| keep.contains(n));
        self.events
            .retain(|e| e.object == OPERATOR || keep.contains(&e.object));
    }

    /// The events of `object`, oldest first.
    pub fn events_for<'a>(&'a self, object: &'a str) -> impl Iterator<Item = &'a Event> + 'a {
        self.events.iter().filter(move |e| e.object == object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Event reasons are typed, and `status.json` keeps the strings events
    /// always had: each reads back as itself and is written as it was read;
    /// a reason of another version reads as `Unrecognized`.
    #[test]
    fn event_reasons_read_and_write_the_strings_of_status_json() {
        let old = [
            "Written",
            "Removed",
            "Stopped",
            "StopFailed",
            "Started",
            "StartFailed",
            "Restarted",
            "RestartFailed",
            "EnableFailed",
            "LimitsApplied",
            "LimitsNotApplied",
            "NotReady",
            "Reloaded",
            "ConfigRecorded",
            "ConfigInvalid",
            "ReloadFailed",
            "RolloutProgressing",
            "RolloutComplete",
            "RolledBack",
            "RolloutFailed",
            "RolloutUndone",
            "PinEnded",
            "RolloutHistoryUnusable",
            "SilenceCreated",
            "SilenceFailed",
            "SilenceExpired",
            "SilenceNotExpired",
            "BackupFailed",
            "BackupSucceeded",
            "ReconcileError",
            "StatusUnreadable",
        ];
        for r in old {
            let json = format!(
                r#"{{"time":"t","object":"o","type":"Normal","reason":"{r}","message":"m"}}"#
            );
            let e: Event = serde_json::from_str(&json).unwrap();
            assert_eq!(e.reason.as_str(), r);
            assert_eq!(serde_json::to_string(&e).unwrap(), json);
        }
        let known: Vec<&str> = EventReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(known.len(), old.len() + 1, "{known:?}");
        let json = r#"{"time":"t","object":"o","type":"Normal","reason":"Frobbed","message":"m"}"#;
        let e: Event = serde_json::from_str(json).unwrap();
        assert_eq!(e.reason, EventReason::Unrecognized);
    }

    #[test]
    fn transition_time_moves_only_on_status_change() {
        let mut o = ObjectStatus::new(Kind::Service, "a", Path::new("/m/a.yaml"));
        o.set_ready(ConditionStatus::True, Reason::Running, "ok");
        o.conditions[0].last_transition_time = "then".into();
        o.set_ready(ConditionStatus::True, Reason::Running, "still ok");
        assert_eq!(o.conditions[0].last_transition_time, "then");
        assert_eq!(o.conditions[0].message, "still ok");
        o.set_ready(ConditionStatus::False, Reason::Failed, "boom");
        assert_ne!(o.conditions[0].last_transition_time, "then");
    }

    #[test]
    fn enums_serialize_to_the_strings_of_the_status_contract() {
        let mut o = ObjectStatus::new(Kind::Backup, "b", Path::new("/m/b.yaml"));
        o.set_ready(ConditionStatus::False, Reason::OOMKilled, "m");
        o.set_condition(
            ConditionType::RestorePending,
            ConditionStatus::Unknown,
            Reason::RestoreInterrupted,
            "r",
        );
        for c in &mut o.conditions {
            c.last_transition_time = "t".into();
        }
        let json = serde_json::to_string(&o).unwrap();
        assert_eq!(
            json,
            r#"{"kind":"Backup","name":"b","file":"/m/b.yaml","conditions":[{"type":"Ready","status":"False","reason":"OOMKilled","message":"m","lastTransitionTime":"t"},{"type":"RestorePending","status":"Unknown","reason":"RestoreInterrupted","message":"r","lastTransitionTime":"t"}],"failures":0,"specHash":""}"#
        );
        assert_eq!(serde_json::from_str::<ObjectStatus>(&json).unwrap(), o);
        let mut s = Status::default();
        s.event(
            "b",
            EventType::Warning,
            crate::status::EventReason::StopFailed,
            "x",
        );
        assert!(
            serde_json::to_string(&s.events[0])
                .unwrap()
                .contains(r#""type":"Warning""#)
        );
        // Padded like the strings `describe` used to print.
        assert_eq!(format!("{:<7}|", EventType::Normal), "Normal |");
    }

    #[test]
    fn a_reason_written_by_another_version_does_not_lose_the_status() {
        let c: Condition = serde_json::from_str(
            r#"{"type":"Ready","status":"True","reason":"SomethingNew","message":"","lastTransitionTime":"t"}"#,
        )
        .unwrap();
        assert_eq!(c.reason, Reason::Unrecognized);
    }

    #[test]
    fn round_trips_and_bounds_events() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Status::default();
        for i in 0..(MAX_EVENTS + 10) {
            s.event(
                "a",
                EventType::Normal,
                crate::status::EventReason::Started,
                format!("{i}"),
            );
        }
        assert_eq!(s.events.len(), MAX_EVENTS);
        let p = d.path().join("status.json");
        s.save(&p).unwrap();
        assert_eq!(Status::load(&p), s);
        assert_eq!(Status::load(&d.path().join("missing")), Status::default());
    }

    #[test]
    fn a_deleted_manifest_leaves_nothing_in_status() {
        let mut s = Status::default();
        for n in ["gone", "kept"] {
            let file = PathBuf::from(format!("/m/{n}.yaml"));
            s.objects
                .insert(n.into(), ObjectStatus::new(Kind::Service, n, &file));
            s.config.insert(n.into(), ConfigState::default());
            s.event(
                n,
                EventType::Warning,
                crate::status::EventReason::ReloadFailed,
                format!("{n} POST http://u:***@h/"),
            );
        }
        s.event(
            OPERATOR,
            EventType::Warning,
            crate::status::EventReason::ReconcileError,
            "bus gone",
        );
        s.retain_objects(&["kept".to_string()].into());
        assert_eq!(s.objects.keys().collect::<Vec<_>>(), vec!["kept"]);
        assert_eq!(s.config.keys().collect::<Vec<_>>(), vec!["kept"]);
        let objs: Vec<&str> = s.events.iter().map(|e| e.object.as_str()).collect();
        assert_eq!(objs, vec!["kept", OPERATOR]);
    }
}
