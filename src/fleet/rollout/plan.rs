//! The pure part of a fleet rollout: the change from a directory against
//! what etcd holds, the waves, judging a host from its published status
//! values and a clock, and the writes that put hosts back. No etcd, no
//! clock of its own: the driver ([`super::drive`]) brings both.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use sha2::Digest as _;

use super::record::{Put, Record, Replaced, RolloutOptions, RolloutTarget};

/// Ready's reason for a host whose `hosts/HOST` key went (its lease
/// expired: it died in its wave).
pub const HOST_GONE: &str = "HostGone";

/// How long a host's `hosts/HOST` key must stay away before the host is
/// judged gone: a host whose etcd member went away takes a new lease and
/// writes its key again, and a watch followed on another member reads
/// everything again.
pub const GONE_GRACE: Duration = Duration::from_secs(10);

/// The reason for a host not Ready within `--progress-deadline`.
pub const DEADLINE: &str = "ProgressDeadlineExceeded";

/// The SHA-256 of a manifest file's bytes, lowercase hex: what hosts
/// publish as `manifestDigest`.
pub fn digest(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// One live host as a rollout sees it at the start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostView {
    /// Its id.
    pub id: String,
    /// Its labels (`unitlet run --host-label`).
    pub labels: BTreeMap<String, String>,
    /// Its own keys `manifests/hosts/HOST/NAME`, by NAME.
    pub own: BTreeMap<String, String>,
}

/// What a rollout writes, and to whom.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    /// The files written, by key name.
    pub puts: BTreeMap<String, Put>,
    /// The `all/` keys deleted at the end (`--all` only).
    pub deletes: Vec<String>,
    /// The hosts that get something, and what: sorted by host id.
    pub names: BTreeMap<String, Vec<String>>,
}

impl Change {
    /// Nothing to write and nothing to delete.
    pub fn is_empty(&self) -> bool {
        self.puts.is_empty() && self.deletes.is_empty()
    }
}

/// The change of a rollout of `files` (DIR's, by key name) to `hosts`
/// (already the targeted ones), given `all` (`manifests/all/`).
///
/// `--all`: files new or changed against `all/`, and `all/` keys whose file
/// is gone; a host gets a changed file unless it has its own key of that
/// name (which overrides `all/`). `--selector`: a host gets a file that
/// differs from what it runs (its own key, else `all/`); nothing is
/// deleted.
pub fn change(
    files: &BTreeMap<String, String>,
    all: &BTreeMap<String, String>,
    hosts: &[HostView],
    target: &RolloutTarget,
) -> Change {
    let put = |v: &String| Put {
        value: v.clone(),
        digest: digest(v.as_bytes()),
    };
    let mut out = Change::default();
    if target.selector.is_none() {
        out.puts = files
            .iter()
            .filter(|(k, v)| all.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), put(v)))
            .collect();
        out.deletes = all
            .keys()
            .filter(|k| !files.contains_key(*k))
            .cloned()
            .collect();
    }
    for h in hosts {
        let names: Vec<String> = files
            .iter()
            .filter(|(k, v)| match &target.selector {
                None => out.puts.contains_key(*k) && !h.own.contains_key(*k),
                Some(_) => h.own.get(*k).or_else(|| all.get(*k)) != Some(*v),
            })
            .map(|(k, _)| k.clone())
            .collect();
        if !names.is_empty() {
            for n in &names {
                out.puts.entry(n.clone()).or_insert_with(|| put(&files[n]));
            }
            out.names.insert(h.id.clone(), names);
        }
    }
    out
}

/// Whether a rerun of `fleet rollout` with `files` (and the `change`
/// computed from them now) is the unfinished rollout `record`: the same
/// target, its deletes (those left) and no other, every file it writes still in DIR with the same
/// digest, and nothing else to write. The hosts it already wrote have the
/// new files by now, so `change.puts` may have shrunk with `--selector`.
pub fn same_change(
    record: &Record,
    files: &BTreeMap<String, String>,
    change: &Change,
    target: &RolloutTarget,
) -> bool {
    // Deletes happen at the final `all/` write: after it (the command
    // killed before it recorded Complete) none is left to do.
    record.target == *target
        && change.deletes.iter().all(|d| record.deletes.contains(d))
        && record.deletes.iter().all(|d| !files.contains_key(d))
        && record.puts.iter().all(|(n, p)| {
            files
                .get(n)
                .is_some_and(|v| digest(v.as_bytes()) == p.digest)
        })
        && change.puts.keys().all(|n| record.puts.contains_key(n))
}

/// The waves: the first `canary` hosts, then `percent` % of the others
/// (rounded up, at least one) per wave, in the order given.
pub fn waves(hosts: &[String], canary: usize, percent: u32) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let canary = canary.min(hosts.len());
    if canary > 0 {
        out.push(hosts[..canary].to_vec());
    }
    let rest = &hosts[canary..];
    let per = (rest.len() * percent.clamp(1, 100) as usize)
        .div_ceil(100)
        .max(1);
    for chunk in rest.chunks(per) {
        out.push(chunk.to_vec());
    }
    out
}

/// The part of a published status value (`status/HOST/NAME`) a rollout
/// judges by.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostObject {
    /// The object's name.
    pub name: String,
    /// The manifest file it came from.
    #[serde(default)]
    pub file: std::path::PathBuf,
    /// Its conditions.
    #[serde(default)]
    pub conditions: Vec<ObjectCondition>,
    /// The SHA-256 of the manifest file it was last reconciled from.
    #[serde(default)]
    pub manifest_digest: String,
}

/// A condition, its reason kept as text.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct ObjectCondition {
    /// `Ready`, …
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False`, `Unknown`.
    pub status: String,
    /// Why, in one word.
    #[serde(default)]
    pub reason: String,
    /// Why, for a person.
    #[serde(default)]
    pub message: String,
}

impl HostObject {
    fn ready(&self) -> Option<&ObjectCondition> {
        self.conditions.iter().find(|c| c.type_ == "Ready")
    }

    /// The key name of its file (the file name without `.yaml`/`.yml`).
    fn key_name(&self) -> Option<&str> {
        let f = self.file.file_name()?.to_str()?;
        f.strip_suffix(".yaml").or_else(|| f.strip_suffix(".yml"))
    }
}

/// What a host's status says now about the files it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// Every object of every file runs the new digest, Ready.
    Good,
    /// Not there yet: the first object that is not, and why.
    Waiting {
        /// The object (or the file, when no object reports it yet).
        object: String,
        /// Its Ready reason (or what is missing).
        reason: String,
        /// Its Ready message.
        message: String,
    },
    /// The new files failed there.
    Failed {
        /// The object.
        object: String,
        /// Why, in one word (`RolledBack`, [`HOST_GONE`]).
        reason: String,
        /// What the host said.
        message: String,
    },
    /// Its `hosts/HOST` key is not there (failed after [`GONE_GRACE`]).
    Gone,
}

/// Judge one host now: `got` is what it got (key name → new digest),
/// `objects` its published status values, `alive` whether its
/// `hosts/HOST` key exists.
pub fn observe(got: &BTreeMap<String, String>, objects: &[HostObject], alive: bool) -> Observation {
    if !alive {
        return Observation::Gone;
    }
    let mut waiting = None;
    for (name, want) in got {
        let mine: Vec<&HostObject> = objects
            .iter()
            .filter(|o| o.key_name() == Some(name.as_str()))
            .collect();
        if mine.is_empty() && waiting.is_none() {
            waiting = Some(Observation::Waiting {
                object: name.clone(),
                reason: "NotReported".into(),
                message: format!("no object from {name}.yaml reported yet"),
            });
        }
        for o in mine {
            let ready = o.ready();
            let at_new = o.manifest_digest == *want;
            if at_new && let Some(c) = ready.filter(|c| c.reason == "RolledBack") {
                return Observation::Failed {
                    object: o.name.clone(),
                    reason: c.reason.clone(),
                    message: c.message.clone(),
                };
            }
            let good = at_new && ready.is_some_and(|c| c.status == "True");
            if !good && waiting.is_none() {
                waiting = Some(Observation::Waiting {
                    object: o.name.clone(),
                    reason: match (at_new, ready) {
                        (false, _) => "NotApplied".into(),
                        (true, Some(c)) => c.reason.clone(),
                        (true, None) => "NoReadyCondition".into(),
                    },
                    message: match (at_new, ready) {
                        (false, _) => {
                            format!("still reconciled from another version of {name}.yaml")
                        }
                        (true, Some(c)) => c.message.clone(),
                        (true, None) => String::new(),
                    },
                });
            }
        }
    }
    waiting.unwrap_or(Observation::Good)
}

/// A host's verdict now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judged {
    /// Not yet: keep watching.
    Pending,
    /// Good for `--stable`.
    Ready,
    /// Failed: why (object, reason, message).
    Failed {
        /// The object.
        object: String,
        /// Why, in one word.
        reason: String,
        /// What the host said.
        message: String,
    },
}

/// One host's clock in its wave: when it was written and since when it has
/// been good.
#[derive(Debug, Clone, Copy)]
pub struct HostClock {
    /// When its wave was written (or the judging resumed).
    pub since: Instant,
    /// Since when it has been [`Observation::Good`] without a break.
    pub good_since: Option<Instant>,
    /// Since when its `hosts/HOST` key has been away.
    pub gone_since: Option<Instant>,
}

impl HostClock {
    /// A clock started at `since`.
    pub fn new(since: Instant) -> HostClock {
        HostClock {
            since,
            good_since: None,
            gone_since: None,
        }
    }

    /// Judge at `now` from `obs`: Ready once good for `stable`; failed at
    /// once on a failure, after [`GONE_GRACE`] away, or when not Ready
    /// `deadline` after `since`.
    pub fn judge(
        &mut self,
        obs: &Observation,
        now: Instant,
        stable: Duration,
        deadline: Duration,
    ) -> Judged {
        if !matches!(obs, Observation::Gone) {
            self.gone_since = None;
        }
        match obs {
            Observation::Gone => {
                self.good_since = None;
                let since = *self.gone_since.get_or_insert(now);
                if now.duration_since(since) < GONE_GRACE {
                    return Judged::Pending;
                }
                Judged::Failed {
                    object: "-".into(),
                    reason: HOST_GONE.into(),
                    message: format!(
                        "the host's operator is gone: its key {} away (its lease expired or was revoked)",
                        humantime::format_duration(GONE_GRACE)
                    ),
                }
            }
            Observation::Failed {
                object,
                reason,
                message,
            } => Judged::Failed {
                object: object.clone(),
                reason: reason.clone(),
                message: message.clone(),
            },
            // Good: Ready once it stayed so for `stable` (a good host is
            // not failed by the deadline while it proves stable).
            Observation::Good => {
                let since = *self.good_since.get_or_insert(now);
                if now.duration_since(since) >= stable {
                    Judged::Ready
                } else {
                    Judged::Pending
                }
            }
            Observation::Waiting {
                object,
                reason,
                message,
            } => {
                self.good_since = None;
                if now.duration_since(self.since) < deadline {
                    return Judged::Pending;
                }
                Judged::Failed {
                    object: object.clone(),
                    reason: DEADLINE.into(),
                    message: format!(
                        "not Ready within --progress-deadline {} (Ready: {reason}: {message})",
                        humantime::format_duration(deadline)
                    ),
                }
            }
        }
    }
}

/// The next moment a verdict can change without a new status value: a
/// host's stable time or deadline running out.
pub fn next_tick(clocks: &[HostClock], now: Instant, opts: &RolloutOptions) -> Instant {
    clocks
        .iter()
        .flat_map(|c| {
            let mut v = vec![c.since + opts.progress_deadline];
            if let Some(g) = c.good_since {
                v.push(g + opts.stable);
            }
            if let Some(g) = c.gone_since {
                v.push(g + GONE_GRACE);
            }
            v
        })
        .filter(|t| *t > now)
        .min()
        .unwrap_or(now + Duration::from_secs(1))
}

/// What `host` got in the record: key name → new digest.
pub fn got(record: &Record, host: &str) -> BTreeMap<String, String> {
    record
        .names
        .get(host)
        .into_iter()
        .flatten()
        .filter_map(|n| record.puts.get(n).map(|p| (n.clone(), p.digest.clone())))
        .collect()
}

/// The newest rollout whose files a host runs, for `fleet hosts`: every
/// object the host publishes from one of the rollout's files is at that
/// file's digest (and not rolled back), and there is at least one.
/// `records` oldest first.
pub fn host_revision(records: &[Record], objects: &[HostObject]) -> Option<u64> {
    records.iter().rev().find_map(|r| {
        let mut seen = false;
        for o in objects {
            let Some(put) = o.key_name().and_then(|n| r.puts.get(n)) else {
                continue;
            };
            let rolled_back = o.ready().is_some_and(|c| c.reason == "RolledBack");
            if o.manifest_digest != put.digest || rolled_back {
                return None;
            }
            seen = true;
        }
        seen.then_some(r.revision)
    })
}

/// One host key a rollout writes or puts back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyWrite {
    /// The host.
    pub host: String,
    /// The key name.
    pub name: String,
    /// What the key held when the rollout wrote it (`None`: no key).
    pub previous: Option<String>,
    /// What the rollout wrote.
    pub ours: String,
}

/// Every host key the rollout wrote so far (waves up to and including
/// `record.wave`, as far as `replaced` says they were written), with what to
/// put back.
pub fn written(record: &Record) -> Vec<KeyWrite> {
    let reached: BTreeSet<&String> = record
        .waves
        .iter()
        .take(record.wave + 1)
        .flatten()
        .collect();
    let mut out = Vec::new();
    for (host, names) in &record.replaced {
        if !reached.contains(host) {
            continue;
        }
        for (name, prev) in names {
            if let Some(p) = record.puts.get(name) {
                out.push(KeyWrite {
                    host: host.clone(),
                    name: name.clone(),
                    previous: prev.as_ref().map(|r: &Replaced| r.value.clone()),
                    ours: p.value.clone(),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("h{i:02}")).collect()
    }

    #[test]
    fn waves_are_the_canary_then_a_rounded_up_percent_of_the_rest() {
        let w = waves(&ids(10), 1, 25);
        let sizes: Vec<usize> = w.iter().map(Vec::len).collect();
        assert_eq!(sizes, [1, 3, 3, 3]);
        assert_eq!(w[0], ["h01"]);
        assert_eq!(w[1], ["h02", "h03", "h04"]);
        assert_eq!(
            waves(&ids(4), 1, 50)
                .iter()
                .map(Vec::len)
                .collect::<Vec<_>>(),
            [1, 2, 1]
        );
        assert_eq!(waves(&ids(3), 5, 25), [ids(3)]);
        assert_eq!(waves(&ids(3), 0, 100), [ids(3)]);
        assert!(waves(&[], 1, 25).is_empty());
        // 1 % of 3 hosts is still one host per wave.
        assert_eq!(waves(&ids(3), 1, 1).len(), 3);
    }

    fn files(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn host(id: &str, own: &[(&str, &str)], labels: &[(&str, &str)]) -> HostView {
        HostView {
            id: id.into(),
            labels: files(labels),
            own: files(own),
        }
    }

    #[test]
    fn with_all_a_host_with_its_own_key_skips_that_file() {
        let dir = files(&[("a", "A2"), ("b", "B"), ("c", "C")]);
        let all = files(&[("a", "A1"), ("b", "B"), ("gone", "G")]);
        let hosts = [host("h1", &[], &[]), host("h2", &[("a", "mine")], &[])];
        let c = change(
            &dir,
            &all,
            &hosts,
            &RolloutTarget {
                all: true,
                selector: None,
            },
        );
        assert_eq!(c.puts.keys().collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(c.puts["a"].digest, digest(b"A2"));
        assert_eq!(c.deletes, ["gone"]);
        assert_eq!(c.names["h1"], ["a", "c"]);
        assert_eq!(c.names["h2"], ["c"]);
        // Nothing new: nothing to do.
        let same = change(
            &all.clone()
                .into_iter()
                .filter(|(k, _)| k != "gone")
                .chain([("gone".into(), "G".into())])
                .collect(),
            &all,
            &hosts,
            &RolloutTarget {
                all: true,
                selector: None,
            },
        );
        assert!(same.is_empty() && same.names.is_empty());
    }

    #[test]
    fn with_a_selector_a_host_gets_what_differs_from_what_it_runs_and_nothing_is_deleted() {
        let dir = files(&[("a", "A2")]);
        let all = files(&[("a", "A1"), ("x", "X")]);
        let sel = RolloutTarget {
            all: false,
            selector: Some("gpu=h100".into()),
        };
        let hosts = [
            host("h1", &[("a", "A2")], &[]),
            host("h2", &[("a", "A0")], &[]),
            host("h3", &[], &[]),
        ];
        let c = change(&dir, &all, &hosts, &sel);
        assert!(c.deletes.is_empty());
        assert_eq!(c.names.keys().collect::<Vec<_>>(), ["h2", "h3"]);
        assert_eq!(c.puts["a"].value, "A2");
    }

    fn obj(file: &str, digest: &str, status: &str, reason: &str) -> HostObject {
        HostObject {
            name: file.into(),
            file: format!("/s/fleet/manifests/{file}.yaml").into(),
            conditions: vec![ObjectCondition {
                type_: "Ready".into(),
                status: status.into(),
                reason: reason.into(),
                message: format!("{reason} message"),
            }],
            manifest_digest: digest.into(),
        }
    }

    #[test]
    fn a_host_is_good_when_every_object_of_its_files_runs_the_new_digest_ready() {
        let got = files(&[("vllm", "new")]);
        assert_eq!(
            observe(&got, &[obj("vllm", "new", "True", "Running")], true),
            Observation::Good
        );
        // Other files do not count.
        let objs = [
            obj("vllm", "new", "True", "Running"),
            obj("other", "x", "False", "Failed"),
        ];
        assert_eq!(observe(&got, &objs, true), Observation::Good);
        // The old digest, Ready: not applied yet.
        let o = observe(&got, &[obj("vllm", "old", "True", "Running")], true);
        assert!(
            matches!(o, Observation::Waiting { ref reason, .. } if reason == "NotApplied"),
            "{o:?}"
        );
        // Nothing reported from the file yet.
        assert!(matches!(
            observe(&got, &[], true),
            Observation::Waiting { .. }
        ));
        // New digest, not Ready yet.
        let o = observe(&got, &[obj("vllm", "new", "False", "Starting")], true);
        assert!(
            matches!(o, Observation::Waiting { ref reason, .. } if reason == "Starting"),
            "{o:?}"
        );
    }

    #[test]
    fn rolled_back_at_the_new_digest_or_a_gone_host_fails_at_once() {
        let got = files(&[("vllm", "new")]);
        let o = observe(&got, &[obj("vllm", "new", "False", "RolledBack")], true);
        assert!(
            matches!(o, Observation::Failed { ref reason, ref object, .. } if reason == "RolledBack" && object == "vllm"),
            "{o:?}"
        );
        // A rollback of an older digest is not this rollout's failure.
        let o = observe(&got, &[obj("vllm", "old", "False", "RolledBack")], true);
        assert!(matches!(o, Observation::Waiting { .. }), "{o:?}");
        let o = observe(&got, &[obj("vllm", "new", "True", "Running")], false);
        assert_eq!(o, Observation::Gone);
    }

    #[test]
    fn a_host_away_for_the_grace_is_gone_and_one_that_comes_back_is_not() {
        let t0 = Instant::now();
        let (s, d) = (Duration::from_secs(1), Duration::from_secs(600));
        let mut c = HostClock::new(t0);
        let gone = Observation::Gone;
        assert_eq!(c.judge(&gone, t0, s, d), Judged::Pending);
        // Back (a new lease), then away again: the grace starts over.
        let back = t0 + GONE_GRACE - Duration::from_secs(1);
        assert_eq!(c.judge(&Observation::Good, back, s, d), Judged::Pending);
        assert_eq!(c.judge(&gone, back, s, d), Judged::Pending);
        assert_eq!(
            c.judge(&gone, back + GONE_GRACE - Duration::from_millis(1), s, d),
            Judged::Pending
        );
        match c.judge(&gone, back + GONE_GRACE, s, d) {
            Judged::Failed { reason, .. } => assert_eq!(reason, HOST_GONE),
            j => panic!("{j:?}"),
        }
    }

    #[test]
    fn ready_needs_stable_good_and_the_deadline_fails_a_waiting_host() {
        let t0 = Instant::now();
        let s = Duration::from_secs(30);
        let d = Duration::from_secs(600);
        let mut c = HostClock::new(t0);
        let good = Observation::Good;
        let waiting = Observation::Waiting {
            object: "vllm".into(),
            reason: "Starting".into(),
            message: "waiting for the unit".into(),
        };
        assert_eq!(c.judge(&good, t0, s, d), Judged::Pending);
        assert_eq!(
            c.judge(&good, t0 + Duration::from_secs(29), s, d),
            Judged::Pending
        );
        // A break restarts the stable time.
        assert_eq!(
            c.judge(&waiting, t0 + Duration::from_secs(29), s, d),
            Judged::Pending
        );
        assert_eq!(
            c.judge(&good, t0 + Duration::from_secs(31), s, d),
            Judged::Pending
        );
        assert_eq!(
            c.judge(&good, t0 + Duration::from_secs(61), s, d),
            Judged::Ready
        );
        let mut c = HostClock::new(t0);
        match c.judge(&waiting, t0 + d, s, d) {
            Judged::Failed {
                object,
                reason,
                message,
            } => {
                assert_eq!((object.as_str(), reason.as_str()), ("vllm", DEADLINE));
                assert!(
                    message.contains("Starting") && message.contains("waiting for the unit"),
                    "{message}"
                );
            }
            j => panic!("{j:?}"),
        }
        // With --stable 0, good is Ready at once.
        let mut c = HostClock::new(t0);
        assert_eq!(c.judge(&good, t0, Duration::ZERO, d), Judged::Ready);
    }

    #[test]
    fn a_host_runs_the_newest_rollout_whose_every_file_it_runs_at_its_digest() {
        use super::super::record::*;
        let rec = |revision: u64, digest: &str| Record {
            revision,
            phase: Phase::Complete,
            puts: BTreeMap::from([(
                "web".into(),
                Put {
                    value: String::new(),
                    digest: digest.into(),
                },
            )]),
            ..test_support::record()
        };
        let records = [rec(1, "d1"), rec(2, "d2"), rec(3, "d3")];
        let web = |d: &str, reason: &str| obj("web", d, "True", reason);
        assert_eq!(host_revision(&records, &[web("d2", "Running")]), Some(2));
        assert_eq!(host_revision(&records, &[web("d3", "Running")]), Some(3));
        // Rolled back from d3: it runs the one before, which no rollout names.
        assert_eq!(host_revision(&records, &[web("d3", "RolledBack")]), None);
        assert_eq!(
            host_revision(&records, &[obj("other", "d3", "True", "Running")]),
            None
        );
        assert_eq!(host_revision(&[], &[web("d3", "Running")]), None);
    }

    #[test]
    fn a_rerun_is_the_same_rollout_when_it_writes_the_same_files_to_the_same_target() {
        use super::super::record::*;
        let all_t = RolloutTarget {
            all: true,
            selector: None,
        };
        let dir = files(&[("a", "A2"), ("b", "B")]);
        let all = files(&[("a", "A1"), ("b", "B")]);
        let hosts = [host("h1", &[], &[]), host("h2", &[], &[])];
        let c = change(&dir, &all, &hosts, &all_t);
        let r = Record {
            revision: 1,
            target: all_t.clone(),
            puts: c.puts.clone(),
            deletes: c.deletes.clone(),
            names: c.names.clone(),
            ..test_support::record()
        };
        assert!(same_change(&r, &dir, &c, &all_t));
        // The canary has its wave key now: with --all the change is the same.
        let later = [host("h1", &[("a", "A2")], &[]), host("h2", &[], &[])];
        assert!(same_change(
            &r,
            &dir,
            &change(&dir, &all, &later, &all_t),
            &all_t
        ));
        // Another version of a, another file, another target: not the same.
        let dir2 = files(&[("a", "A3"), ("b", "B")]);
        assert!(!same_change(
            &r,
            &dir2,
            &change(&dir2, &all, &hosts, &all_t),
            &all_t
        ));
        let dir3 = files(&[("a", "A2"), ("b", "B2")]);
        assert!(!same_change(
            &r,
            &dir3,
            &change(&dir3, &all, &hosts, &all_t),
            &all_t
        ));
        let sel = RolloutTarget {
            all: false,
            selector: Some("gpu=h100".into()),
        };
        assert!(!same_change(
            &r,
            &dir,
            &change(&dir, &all, &hosts, &sel),
            &sel
        ));
    }

    /// Killed after its final `all/` write (puts and deletes done, the
    /// record not yet Complete): a rerun of the same DIR is still that
    /// rollout, though there is nothing left to change against `all/`.
    #[test]
    fn a_rerun_after_the_final_all_write_is_the_same_rollout() {
        use super::super::record::*;
        let all_t = RolloutTarget {
            all: true,
            selector: None,
        };
        let dir = files(&[("a", "A2")]);
        let before = files(&[("a", "A1"), ("c", "C")]);
        let hosts = [host("h1", &[], &[])];
        let c = change(&dir, &before, &hosts, &all_t);
        assert_eq!(c.deletes, vec!["c".to_string()]);
        let r = Record {
            revision: 1,
            phase: Phase::Progressing,
            started_by: String::new(),
            started_at: String::new(),
            updated_at: String::new(),
            dir: String::new(),
            target: all_t.clone(),
            options: RolloutOptions {
                canary: 1,
                wave_percent: 25,
                stable: Duration::ZERO,
                progress_deadline: Duration::from_secs(1),
                no_undo: false,
            },
            puts: c.puts.clone(),
            deletes: c.deletes.clone(),
            hosts: vec!["h1".into()],
            names: c.names.clone(),
            waves: vec![vec!["h1".into()]],
            wave: 0,
            replaced: BTreeMap::new(),
            verdicts: BTreeMap::new(),
            halt: None,
        };
        let after = files(&[("a", "A2")]);
        assert!(same_change(
            &r,
            &dir,
            &change(&dir, &after, &hosts, &all_t),
            &all_t
        ));
        // Putting c back in DIR is another change.
        let dir_c = files(&[("a", "A2"), ("c", "C")]);
        assert!(!same_change(
            &r,
            &dir_c,
            &change(&dir_c, &after, &hosts, &all_t),
            &all_t
        ));
        // So is deleting one more file of all/.
        let more = files(&[("a", "A2"), ("d", "D")]);
        assert!(!same_change(
            &r,
            &dir,
            &change(&dir, &more, &hosts, &all_t),
            &all_t
        ));
    }

    #[test]
    fn what_was_written_is_put_back_from_replaced() {
        use super::super::record::*;
        let r = Record {
            revision: 1,
            phase: Phase::Halted,
            started_by: String::new(),
            started_at: String::new(),
            updated_at: String::new(),
            dir: String::new(),
            target: RolloutTarget {
                all: true,
                selector: None,
            },
            options: RolloutOptions {
                canary: 1,
                wave_percent: 50,
                stable: Duration::ZERO,
                progress_deadline: Duration::from_secs(1),
                no_undo: false,
            },
            puts: BTreeMap::from([(
                "a".into(),
                Put {
                    value: "A2".into(),
                    digest: "d".into(),
                },
            )]),
            deletes: vec![],
            hosts: ids(3),
            names: ids(3)
                .into_iter()
                .map(|h| (h, vec!["a".to_string()]))
                .collect(),
            waves: vec![vec!["h01".into()], vec!["h02".into(), "h03".into()]],
            wave: 0,
            replaced: BTreeMap::from([
                ("h01".into(), BTreeMap::from([("a".into(), None)])),
                (
                    "h02".into(),
                    BTreeMap::from([("a".into(), Some(Replaced { value: "A0".into() }))]),
                ),
            ]),
            verdicts: BTreeMap::new(),
            halt: None,
        };
        // Wave 0 only: h02's replaced entry belongs to a wave not reached.
        let w = written(&r);
        assert_eq!(w.len(), 1);
        assert_eq!(
            (
                w[0].host.as_str(),
                w[0].previous.clone(),
                w[0].ours.as_str()
            ),
            ("h01", None, "A2")
        );
        let r = Record { wave: 1, ..r };
        let w = written(&r);
        assert_eq!(w[1].previous.as_deref(), Some("A0"));
        assert_eq!(got(&r, "h02"), files(&[("a", "d")]));
    }
}
