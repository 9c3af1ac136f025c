//! Health-gated rollouts: revision history, automatic rollback, undo.
//!
//! Every definition of a Service's unit that unitlet writes and then starts
//! or restarts is a **revision**, kept (the rendered unit bytes, their hash,
//! when, and how it ended) in `STATE_DIR/rollouts/NAME.json`, the last
//! [`history::MAX_REVISIONS`]. A new revision is `Progressing` until the unit is
//! active (and its readiness URL answers, if it has one) and has stayed so
//! for [`watch::SETTLE`], within `rollout.timeout`; it is `Failed` if the unit
//! fails, is restarted by systemd more than `rollout.maxRestarts` times, or
//! misses the deadline ([`watch::watch`], run beside the loop as
//! `work::Work::Rollout`).
//!
//! A failed revision is rolled back: a **pin** records "while the manifest
//! renders to hash H, run revision R instead", and every pass puts R's
//! bytes in place of the manifest's ([`policy::substitute`]), so the plan writes
//! and restarts it and the failed revision is not retried until the
//! manifest changes. `unitlet rollout undo` sets the same kind of pin by
//! hand. Config files are never touched: only unit files are revisions.
//!
//! Three layers: [`history`] is the store (the data and its file, read
//! and written atomically under the state lock), [`policy`] the decisions
//! and the hooks a pass calls (pure where it can be; it never imports the
//! reconciler), [`watch`] the watch that runs beside the loop. The
//! `unitlet rollout` command is `cli::rollout`'s.

pub mod history;
pub mod policy;
pub mod watch;
