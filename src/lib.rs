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
//!    Alertmanager and etcd clients, `reload`, `restic`;
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
pub(crate) mod lock;
pub mod manager;
pub mod manifest;
pub(crate) mod plan;
pub(crate) mod program;
pub mod prometheus;
pub mod reconcile;
pub(crate) mod render;
pub mod restic;
pub mod schedule;
pub mod silence;
pub mod size;
pub mod status;
pub mod systemd;
pub(crate) mod table;
pub(crate) mod unitfile;
pub(crate) mod work;

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

/// A retry schedule: `first`, doubled after each failure up to `cap`, without
/// end. The one backoff of the crate's retry loops (the operator's reconnects
/// and failed passes, the fleet source and publisher, `StateLock::acquire`):
/// backon's exponential backoff, kept with the delay the next failure waits
/// so a caller can read it without consuming it. No jitter: a loop that
/// wants some applies it to the delay it is given. backon multiplies in
/// `f32` seconds (200 ms doubled is 400.000006 ms); each delay is rounded to
/// the millisecond, tokio's timer resolution, so the schedule is exact.
#[derive(Debug)]
pub(crate) struct RetryDelays {
    first: std::time::Duration,
    cap: std::time::Duration,
    delays: backon::ExponentialBackoff,
    current: std::time::Duration,
}

impl RetryDelays {
    /// Starting at `first`, doubling to `cap`.
    pub(crate) fn new(first: std::time::Duration, cap: std::time::Duration) -> RetryDelays {
        use backon::BackoffBuilder;
        let mut delays = backon::ExponentialBuilder::default()
            .with_min_delay(first)
            .with_max_delay(cap)
            .with_factor(2.0)
            .without_max_times()
            .build();
        let current = delays.next().map_or(first, whole_ms);
        RetryDelays {
            first,
            cap,
            delays,
            current,
        }
    }

    /// What the next failure waits, without moving on.
    pub(crate) fn current(&self) -> std::time::Duration {
        self.current
    }

    /// A failure: the delay to wait now; the next one is twice as long (to
    /// the cap).
    pub(crate) fn failed(&mut self) -> std::time::Duration {
        let now = self.current;
        self.current = self.delays.next().map_or(self.cap, whole_ms);
        now
    }

    /// A success: the next failure waits `first` again.
    pub(crate) fn reset(&mut self) {
        *self = RetryDelays::new(self.first, self.cap);
    }
}

/// `d` rounded to the nearest millisecond.
fn whole_ms(d: std::time::Duration) -> std::time::Duration {
    let ms = (d.as_micros() + 500) / 1000;
    std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::RetryDelays;
    use std::time::Duration;

    #[test]
    fn retry_delays_double_from_first_to_the_cap_and_reset() {
        let ms = Duration::from_millis;
        let mut d = RetryDelays::new(ms(200), Duration::from_secs(30));
        let got: Vec<u128> = (0..10).map(|_| d.failed().as_millis()).collect();
        assert_eq!(
            got,
            [200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000]
        );
        assert_eq!(d.current(), Duration::from_secs(30));
        d.reset();
        assert_eq!(d.current(), ms(200));
        assert_eq!(d.failed(), ms(200));
        assert_eq!(d.failed(), ms(400));
    }
}

pub mod cli;
pub(crate) mod doctor;
pub mod hold;
pub mod journal;
pub(crate) mod logs;
pub mod manual;
pub(crate) mod metrics;
pub mod operator;
pub mod reload;
pub mod rollout;
