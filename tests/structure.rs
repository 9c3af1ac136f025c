//! Structural checks over the source tree: properties of the code itself
//! (not of its behaviour) that ARCHITECTURE.md promises. Each check reads
//! the source files in `src/` (no build, no systemd) and fails naming the
//! file and line that breaks the rule.

// Test code: a panic is how it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "structure/functions.rs"]
mod functions;
#[path = "structure/systemd_door.rs"]
mod systemd_door;
