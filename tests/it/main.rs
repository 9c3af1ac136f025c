//! The integration test crate: one binary, shared support code.

mod support;

mod converge;
mod limits;
mod reload;
mod render;

#[cfg(feature = "wip")]
mod fake_grafana;
#[cfg(feature = "wip")]
mod grafana;
