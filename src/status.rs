//! Status: conditions per manifest, recent events, and what was last
//! applied — persisted atomically in the state directory so `get` and
//! `describe` in another process see what `run` is doing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::fsutil;

/// The object name of the operator's own events.
pub const OPERATOR: &str = "unitlet";

/// Events kept in the status file; older ones are dropped.
pub const MAX_EVENTS: usize = 500;

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub reason: String,
    pub message: String,
    /// Changes only when `status` changes.
    pub last_transition_time: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnitStatus {
    pub name: String,
    pub active_state: String,
    pub sub_state: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStatus {
    pub kind: String,
    pub name: String,
    pub file: PathBuf,
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
}

impl ObjectStatus {
    pub fn ready(&self) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == "Ready")
    }

    pub fn is_ready(&self) -> bool {
        self.ready().is_some_and(|c| c.status == "True")
    }

    /// Set a condition; the transition time moves only on a status change.
    pub fn set_condition(&mut self, type_: &str, status: &str, reason: &str, message: &str) {
        match self.conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) => {
                if c.status != status {
                    c.last_transition_time = now_rfc3339();
                }
                c.status = status.into();
                c.reason = reason.into();
                c.message = message.into();
            }
            None => self.conditions.push(Condition {
                type_: type_.into(),
                status: status.into(),
                reason: reason.into(),
                message: message.into(),
                last_transition_time: now_rfc3339(),
            }),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub time: String,
    pub object: String,
    /// `Normal` or `Warning`, as in Kubernetes.
    #[serde(rename = "type")]
    pub type_: String,
    pub reason: String,
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
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
pub struct Status {
    #[serde(default)]
    pub objects: BTreeMap<String, ObjectStatus>,
    /// Unit name → content hash last applied in full.
    #[serde(default)]
    pub applied: BTreeMap<String, String>,
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
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The state directory or file cannot be written.
    #[error("cannot write status to {path}; check the state directory (--state-dir) is writable")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Status {
    /// Load the status file; a missing or unreadable one is an empty status
    /// (it is a cache of what the reconciler computes, not a source of truth
    /// for anything destructive).
    pub fn load(path: &Path) -> Status {
        std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Stamp the status as reconciled now by `who`.
    pub fn stamp(&mut self, who: &str) {
        self.reconciled_at = Some(now_rfc3339());
        self.reconciled_by = Some(format!("{who} (PID {})", std::process::id()));
    }

    /// [`Status::load`] off the async runtime.
    pub async fn load_async(path: &Path) -> Status {
        let p = path.to_path_buf();
        tokio::task::spawn_blocking(move || Status::load(&p))
            .await
            .unwrap_or_default()
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

    pub fn save(&self, path: &Path) -> Result<(), StatusError> {
        let bytes = serde_json::to_vec_pretty(self).expect("status serializes");
        fsutil::atomic_write(path, &bytes, 0o600).map_err(|source| StatusError::Write {
            path: path.to_path_buf(),
            source,
        })
    }

    pub fn event(&mut self, object: &str, type_: &str, reason: &str, message: impl Into<String>) {
        self.events.push(Event {
            time: now_rfc3339(),
            object: object.into(),
            type_: type_.into(),
            reason: reason.into(),
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

    pub fn events_for<'a>(&'a self, object: &'a str) -> impl Iterator<Item = &'a Event> + 'a {
        self.events.iter().filter(move |e| e.object == object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_on_status_change() {
        let mut o = ObjectStatus {
            kind: "Service".into(),
            name: "a".into(),
            file: "/m/a.yaml".into(),
            conditions: vec![],
            unit: None,
            failures: 0,
            spec_hash: String::new(),
        };
        o.set_condition("Ready", "True", "Running", "ok");
        o.conditions[0].last_transition_time = "then".into();
        o.set_condition("Ready", "True", "Running", "still ok");
        assert_eq!(o.conditions[0].last_transition_time, "then");
        assert_eq!(o.conditions[0].message, "still ok");
        o.set_condition("Ready", "False", "Failed", "boom");
        assert_ne!(o.conditions[0].last_transition_time, "then");
    }

    #[test]
    fn round_trips_and_bounds_events() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Status::default();
        for i in 0..(MAX_EVENTS + 10) {
            s.event("a", "Normal", "Started", format!("{i}"));
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
            s.objects.insert(
                n.into(),
                ObjectStatus {
                    kind: "Service".into(),
                    name: n.into(),
                    file: format!("/m/{n}.yaml").into(),
                    conditions: vec![],
                    unit: None,
                    failures: 0,
                    spec_hash: String::new(),
                },
            );
            s.config.insert(n.into(), ConfigState::default());
            s.event(
                n,
                "Warning",
                "ReloadFailed",
                format!("{n} POST http://u:***@h/"),
            );
        }
        s.event(OPERATOR, "Warning", "ReconcileError", "bus gone");
        s.retain_objects(&["kept".to_string()].into());
        assert_eq!(s.objects.keys().collect::<Vec<_>>(), vec!["kept"]);
        assert_eq!(s.config.keys().collect::<Vec<_>>(), vec!["kept"]);
        let objs: Vec<&str> = s.events.iter().map(|e| e.object.as_str()).collect();
        assert_eq!(objs, vec!["kept", OPERATOR]);
    }
}
