//! The config phase: changed config files and readiness waits, handed out
//! as work.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use crate::status::Status;
use crate::systemd::Systemd;
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
        sd: &Systemd,
        prep: &Prepared,
        started: &BTreeSet<String>,
        failures: &BTreeMap<String, String>,
        status: &mut Status,
    ) -> Vec<Work> {
        use crate::reload;
        let mut work = Vec::new();
        let live_names: Vec<String> = prep
            .loaded
            .manifests
            .iter()
            .filter(|m| m.as_service().is_some_and(|s| !s.config_files.is_empty()))
            .map(|m| format!("{}.service", m.name))
            .collect();
        if live_names.is_empty() {
            return work;
        }
        let live = match sd.list_units(&live_names).await {
            Ok(l) => l,
            Err(_) => return work,
        };
        for m in &prep.loaded.manifests {
            let Some(s) = m.as_service() else { continue };
            if s.config_files.is_empty()
                || failures.contains_key(&m.name)
                || prep.backing_off.contains(&m.name)
                || prep.on_hold.contains(&m.name)
                || prep.plan.conflicts.iter().any(|c| c.manifest == m.name)
            {
                continue;
            }
            let files = s.config_files.clone();
            let current = match tokio::task::spawn_blocking(move || reload::config_hash(&files))
                .await
                .unwrap_or_else(|e| Err(e.to_string()))
            {
                Ok(h) => h,
                Err(e) => {
                    self.config_issue
                        .insert(m.name.clone(), ("ConfigMissing".into(), e));
                    continue;
                }
            };
            if self
                .config_issue
                .get(&m.name)
                .is_some_and(|(r, _)| r == "ConfigMissing")
            {
                self.config_issue.remove(&m.name);
            }
            let unit = format!("{}.service", m.name);
            let running = live
                .get(&unit)
                .is_some_and(|(l, _)| l.active_state == "active");
            let entry = status.config.get(&m.name).cloned();
            // A (re)start in this pass loaded the current content: one
            // restart, never a restart plus a reload.
            if started.contains(&m.name) || entry.is_none() || !running {
                if running || started.contains(&m.name) {
                    status.config.insert(
                        m.name.clone(),
                        crate::status::ConfigState {
                            applied: current.clone(),
                            failing: false,
                        },
                    );
                    self.reload_retry.remove(&m.name);
                    self.rejected_config.remove(&m.name);
                    if self
                        .config_issue
                        .get(&m.name)
                        .is_some_and(|(r, _)| r != "NotReady")
                    {
                        self.config_issue.remove(&m.name);
                    }
                }
                continue;
            }
            let entry = entry.expect("checked above");
            if entry.applied == current && !entry.failing {
                continue;
            }
            if let Some((h, _)) = self.rejected_config.get(&m.name)
                && *h == current
            {
                continue; // still the content the validator refused
            }
            if let Some(r) = self.reload_retry.get(&m.name)
                && !r.due()
            {
                continue;
            }
            work.push(Work::Config(ConfigWork {
                name: m.name.clone(),
                unit,
                hash: current,
                config_files: s.config_files.clone(),
                validate: s
                    .validate
                    .as_ref()
                    .map(|argv| (argv.clone(), reload::validate_dir(m, s))),
                on_change: s.on_config_change,
                reload: s.reload.clone(),
                readiness: s.readiness.as_ref().map(|r| (r.url.clone(), r.timeout)),
                // Issue 12 hook: silence alerts around a planned restart.
                silence: crate::alertmanager::request_for(m, &self.loc.alertmanager).map(Box::new),
            }));
        }
        work
    }
}
