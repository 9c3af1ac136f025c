//! The integration test crate: one binary, shared support code.

mod support;

mod converge;
mod limits;
mod reload;
mod render;
mod stack;
mod state_dir;

mod fake_grafana;
mod grafana;
mod grafana_cli;
mod prometheus_backup;
