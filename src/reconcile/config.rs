//! The config phase: changed config files and readiness waits, handed out
//! as work.

use std::collections::{BTreeMap, BTreeSet};

use tokio::time::Instant;

use crate::manager::UserManager;
use crate::manifest::{Manifest, ServiceSpec};
use crate::reload;
use crate::status::{ConfigState, Reason, Status};
use crate::work::{ConfigWork, Work};

use super::*;

impl Reconciler {
    /// Readiness waits for what was just (re)started: handed out, never
    /// awaited by the pass.
    pub(super) fn readiness_work(
        &mut self,
        prep: &Prepared,
        started: &BTreeSet<String>,
        failures: &BTreeMap<String, String>,
    ) -> Vec<Work> {
        let mut work = Vec::new();
        for m in &prep.loaded.manifests {
            let Some(r) = m.as_service().and_then(|s| s.readiness.as_ref()) else {
                continue;
            };
            if !started.contains(&m.name) || failures.contains_key(&m.name) {
                continue;
            }
            self.waiting_ready
                .insert(m.name.clone(), Instant::now() + r.timeout);
            self.probes.remove(&m.name);
            work.push(Work::Readiness {
                name: m.name.clone(),
                url: r.url.clone(),
                timeout: r.timeout,
            });
        }
        work
    }

    /// Notice changed config files; what needs validating, reloading or a
    /// restart is handed out as [`Work::Config`].
    pub(super) async fn config_phase(
        &mut self,
        sd: &impl UserManager,
        prep: &Prepared,
        started: &BTreeSet<String>,
        failures: &BTreeMap<String, String>,
        status: &mut Status,
    ) -> Vec<Work> {
        let with_config: Vec<(&Manifest, &ServiceSpec)> = prep
            .loaded
            .manifests
            .iter()
            .filter_map(|m| Some((m, m.as_service()?)))
            .filter(|(_, s)| !s.config_files.is_empty())
            .collect();
        let names: Vec<String> = with_config.iter().map(|(m, _)| service_of(m)).collect();
        if names.is_empty() {
            return Vec::new();
        }
        let Ok(live) = sd.list_units(&names).await else {
            return Vec::new();
        };
        let mut work = Vec::new();
        for (m, s) in with_config {
            let name = &m.name;
            if failures.contains_key(name)
                || prep.backing_off.contains(name)
                || prep.on_hold.contains(name)
                || prep.plan.conflicts.iter().any(|c| &c.manifest == name)
            {
                continue;
            }
            let Some(current) = self.current_config(m, s).await else {
                continue;
            };
            let running = live
                .get(&service_of(m))
                .is_some_and(|(l, _)| l.active_state == "active");
            if started.contains(name) || !running || !status.config.contains_key(name) {
                // A (re)start in this pass loaded the current content: one
                // restart, never a restart plus a reload.
                if running || started.contains(name) {
                    self.config_loaded(name, current, status);
                }
                continue;
            }
            work.extend(self.config_change(m, s, current, status));
        }
        work
    }

    /// The content hash of a Service's config files; `None` (and a
    /// `ConfigMissing` issue) when one cannot be read.
    async fn current_config(&mut self, m: &Manifest, s: &ServiceSpec) -> Option<String> {
        let files = s.config_files.clone();
        let hash = tokio::task::spawn_blocking(move || reload::config_hash(&files))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        match hash {
            Ok(h) => {
                if self
                    .config_issue
                    .get(&m.name)
                    .is_some_and(|(r, _)| *r == Reason::ConfigMissing)
                {
                    self.config_issue.remove(&m.name);
                }
                Some(h)
            }
            Err(e) => {
                let issue = (Reason::ConfigMissing, e);
                self.config_issue.insert(m.name.clone(), issue);
                None
            }
        }
    }

    /// The running process has loaded config `current` (it was just
    /// started, or is seen for the first time).
    fn config_loaded(&mut self, name: &str, current: String, status: &mut Status) {
        let state = ConfigState {
            applied: current,
            failing: false,
        };
        status.config.insert(name.to_string(), state);
        self.reload_retry.remove(name);
        self.rejected_config.remove(name);
        if self
            .config_issue
            .get(name)
            .is_some_and(|(r, _)| *r != Reason::NotReady)
        {
            self.config_issue.remove(name);
        }
    }

    /// What a running Service's changed config needs, unless it is the
    /// content the validator refused or a failed reload is not due yet.
    fn config_change(
        &mut self,
        m: &Manifest,
        s: &ServiceSpec,
        current: String,
        status: &Status,
    ) -> Option<Work> {
        let entry = status.config.get(&m.name)?;
        if entry.applied == current && !entry.failing {
            // Back to the content the service runs: what the validator
            // refused is gone, as a fresh `apply` sees it.
            if self.rejected_config.remove(&m.name).is_some()
                && self
                    .config_issue
                    .get(&m.name)
                    .is_some_and(|(r, _)| *r == Reason::ConfigInvalid)
            {
                self.config_issue.remove(&m.name);
            }
            return None;
        }
        if self
            .rejected_config
            .get(&m.name)
            .is_some_and(|(h, _)| *h == current)
        {
            return None; // still the content the validator refused
        }
        if self.reload_retry.get(&m.name).is_some_and(|r| !r.due()) {
            return None;
        }
        Some(Work::Config(ConfigWork {
            name: m.name.clone(),
            unit: service_of(m),
            hash: current,
            config_files: s.config_files.clone(),
            validate: s
                .validate
                .as_ref()
                .map(|argv| (argv.clone(), reload::validate_dir(m, s))),
            on_change: s.on_config_change,
            reload: s.reload.clone(),
            readiness: s.readiness.as_ref().map(|r| (r.url.clone(), r.timeout)),
            // Silence alerts around a planned restart (issue 12).
            silence: crate::silence::request_for(m, &self.loc.alertmanager).map(Box::new),
        }))
    }
}

/// A Service manifest's unit.
fn service_of(m: &Manifest) -> String {
    format!("{}.service", m.name)
}
