//! unitlet: a Kubernetes-style operator for systemd user units.
//!
//! The crate is a pure core (manifest loading, rendering, planning) wrapped
//! by an I/O shell (the systemd client, the applier, the operator loop and
//! the HTTP clients). See ARCHITECTURE.md for the map.
//!
//! # Layout
//!
//! Seven layers, lowest first; a file imports only from its own layer or
//! below, with no circles between files (tests/layers.rs, which also holds
//! the table of every file's layer; ARCHITECTURE.md, "Layers"):
//!
//! 1. foundations: this root's helpers, `fsutil`, `unitfile`, `http`,
//!    `table`, `schedule`, `size`;
//! 2. model: `manifest`, `status`, `backup::error` (pure types);
//! 3. adapters: `manager` and `systemd`, the Prometheus, Grafana,
//!    Alertmanager and etcd clients, `reload`;
//! 4. stores: `backup` (sets), `journal`, `rollout` histories, `hold`,
//!    `lock`, `locations`, `program`, `metrics`;
//! 5. reconciler: `render`, `plan`, `reconcile`, `work`, `silence`, `doctor`;
//! 6. processes: `operator`, the fleet source and publisher, the backup and
//!    restore procedures, `logs`;
//! 7. commands: `cli`, `manual`, `fleet::cmd` (and `main.rs`).

pub mod alertmanager;
pub mod backup;
pub mod backup_cmd;
pub mod fleet;
pub mod fsutil;
pub mod grafana;
pub mod http;
pub mod locations;
pub mod lock;
pub mod manager;
pub mod manifest;
pub mod plan;
pub mod program;
pub mod prometheus;
pub mod reconcile;
pub mod render;
pub mod schedule;
pub mod silence;
pub mod size;
pub mod status;
pub mod systemd;
pub mod table;
pub mod unitfile;
pub mod work;

/// An error and all its causes, `: `-separated, for one-line messages.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}
pub mod cli;
pub mod doctor;
pub mod hold;
pub mod journal;
pub mod logs;
pub mod manual;
pub mod metrics;
pub mod operator;
pub mod reload;
pub mod rollout;
