//! The integration test crate: one binary, shared support code.

// Test and benchmark code: a panic is how it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod claims;
mod cli_ux;
mod converge;
mod doctor;
mod fleet;
mod fleet_rollout;
mod fleet_rollout_faults;
mod hostile;
mod limits;
mod logs;
mod operator_loop;
mod reload;
mod render;
mod rollout;
mod scripts;
mod silence;
mod stack;
mod state_dir;
mod validate;

mod backup_safety;
mod fake_grafana;
mod grafana;
mod grafana_cli;
mod prometheus_backup;
mod restic;

/// How long a new revision must stay up to count (unitlet's `SETTLE`).
pub fn rollout_settle() -> f64 {
    unitlet::rollout::watch::SETTLE.as_secs_f64()
}
