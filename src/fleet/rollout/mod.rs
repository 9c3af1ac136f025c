//! Fleet rollouts in waves (docs/fleet.md, "Rollouts in waves"): a change
//! goes to a canary, then to waves of hosts as host keys, and to `all/` once
//! every wave is Ready; the first failing host halts it and the hosts it
//! changed are put back.
//!
//! [`record`] keeps the rollout's record and lock in etcd (a store),
//! [`plan`] is the pure part (the change, the waves, judging a host, what
//! to put back), [`drive`] runs it against etcd (a process); the commands
//! are in `fleet/cmd.rs` and `cli/fleet.rs`.

pub mod drive;
pub mod plan;
pub mod record;
