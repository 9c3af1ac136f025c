//! A benchmark's knobs from the environment.

// Each bench includes this file and uses part of it.
#![allow(dead_code)]

/// `name` parsed as a number, or `default` when unset or not a number.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `name` as a comma-separated list of numbers (`FLEET_SIZES=100,500`),
/// or `default` when unset; entries that are not numbers are skipped.
pub fn env_sizes(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}
