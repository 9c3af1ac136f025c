//! unitlet: a Kubernetes-style operator for systemd user units.
//!
//! The crate is a pure core (manifest loading, rendering, planning) wrapped
//! by an I/O shell (the systemd client, the applier, the operator loop and
//! the HTTP clients). See ARCHITECTURE.md for the map.

#[cfg(feature = "wip")]
pub mod backup;
#[cfg(feature = "wip")]
pub mod grafana;
pub mod manifest;
pub mod plan;
pub mod render;
pub mod schedule;
