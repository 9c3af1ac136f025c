//! Fleet rollouts in waves (issue 25; docs/fleet.md, "Rollouts in waves"):
//! a real 3-member etcd cluster and four private user managers as hosts.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{RunningOperator, UNITLET, UserManager, stderr, stdout, wait_for};

use crate::fleet::etcd::EtcdCluster;

/// The lease TTL the hosts run with.
const TTL: &str = "4s";

/// How long any one wait may take.
const WAIT: Duration = Duration::from_secs(60);

/// One host: a private user manager and `unitlet run --source etcd`.
#[allow(dead_code)] // op: stopped when dropped
pub(crate) struct Host {
    pub id: &'static str,
    pub um: UserManager,
    pub op: Option<RunningOperator>,
}

impl Host {
    /// Start a host with `labels` (`--host-label`).
    pub fn start(cluster: &EtcdCluster, prefix: &str, id: &'static str, labels: &[&str]) -> Host {
        let um = UserManager::start();
        let eps = cluster.endpoints();
        let mut args = vec![
            "--source",
            "etcd",
            "--host-id",
            id,
            "--etcd-endpoints",
            &eps,
            "--etcd-prefix",
            prefix,
            "--lease-ttl",
            TTL,
        ];
        for l in labels {
            args.extend(["--host-label", l]);
        }
        let op = Some(um.spawn_run(&args));
        Host { id, um, op }
    }

    /// Wait until `unit` is active with `arg` in its command line.
    pub fn wait_running(&self, unit: &str, arg: &str) {
        wait_for(
            WAIT,
            &format!("{unit} running with {arg} on {}", self.id),
            || {
                (self.um.active(unit) == "active" && self.um.prop(unit, "ExecStart").contains(arg))
                    .then_some(())
            },
        );
    }

    /// When `unit` last became active (a restart changes it).
    pub fn started_at(&self, unit: &str) -> String {
        self.um.prop(unit, "ActiveEnterTimestampMonotonic")
    }
}

/// `unitlet fleet ARGS` against `cluster` and `prefix`, stopped (by its
/// PID) if it runs longer than `deadline`.
pub(crate) fn fleet(
    cluster: &EtcdCluster,
    prefix: &str,
    args: &[&str],
    deadline: Duration,
) -> Output {
    let child = Command::new(UNITLET)
        .arg("fleet")
        .args(args)
        .args([
            "--etcd-endpoints",
            &cluster.endpoints(),
            "--etcd-prefix",
            prefix,
        ])
        .env_remove("UNITLET_ETCD_ENDPOINTS")
        .env_remove("UNITLET_ETCD_PREFIX")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run unitlet fleet");
    finish(child, args, deadline)
}

/// Wait for `child` (`unitlet fleet ARGS`) to exit; past `deadline`, stop
/// it (by its PID: it is ours) and fail.
pub(crate) fn finish(mut child: std::process::Child, args: &[&str], deadline: Duration) -> Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > deadline {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!(
                "unitlet fleet {args:?} still running after {deadline:?}: {}{}",
                stdout(&o),
                stderr(&o)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// A Service running `sleep ARG`, judged quickly by its host (a failed
/// start is rolled back at once).
fn manifest(name: &str, command: &str) -> String {
    format!(
        "apiVersion: unitlet/v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  command: [{command}]\n  restartSec: 200ms\n  rollout: {{timeout: 20s, maxRestarts: 0}}\n"
    )
}

fn write(dir: &Path, name: &str, command: &str) {
    std::fs::write(dir.join(format!("{name}.yaml")), manifest(name, command)).unwrap();
}

/// The keys under `dir` (relative to the prefix).
fn keys(cluster: &EtcdCluster, prefix: &str, dir: &str) -> Vec<String> {
    let o = cluster.etcdctl(&[
        "get",
        "--prefix",
        "--keys-only",
        "--",
        &format!("{prefix}/{dir}"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

fn status_json(cluster: &EtcdCluster, prefix: &str) -> serde_json::Value {
    let o = fleet(cluster, prefix, &["rollout", "status", "-o", "json"], WAIT);
    assert!(o.status.success(), "status: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Wait until `fleet hosts` says every host runs rollout `revision`.
fn wait_revisions(cluster: &EtcdCluster, prefix: &str, revision: u64) {
    wait_for(WAIT, &format!("every host at rollout {revision}"), || {
        let o = fleet(cluster, prefix, &["hosts", "-o", "json"], WAIT);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
        let hosts = v.as_array()?;
        (!hosts.is_empty() && hosts.iter().all(|h| h["revision"] == revision)).then_some(())
    });
}

fn ok(o: &Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed ({:?}): {}{}",
        o.status.code(),
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

/// Issue 25, items 1 and 2, on one fleet of four hosts: a good change goes
/// to the canary, then the waves, then `all/`, and every host runs it with
/// no wave key left; then a change that exits at start reaches only the
/// canary, which is put back, and the rollout exits 1 naming it.
#[test]
fn fleet_rollout_a_good_change_goes_in_waves_and_a_bad_one_stops_at_the_canary() {
    let cluster = EtcdCluster::start(3);
    let prefix = "/it-rollout";
    let ids = ["h1", "h2", "h3", "h4"];
    let hosts: Vec<Host> = ids
        .iter()
        .map(|id| Host::start(&cluster, prefix, id, &[]))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "web", "/bin/sleep, \"100001\"");
    let d = dir.path().to_str().unwrap();
    ok(
        &fleet(&cluster, prefix, &["push", d, "--all"], WAIT),
        "push",
    );
    for h in &hosts {
        h.wait_running("web.service", "100001");
    }
    wait_for(WAIT, "every host published", || {
        (keys(&cluster, prefix, "hosts/").len() == 4).then_some(())
    });

    // 1. A good change.
    write(dir.path(), "web", "/bin/sleep, \"100002\"");
    let args = [
        "rollout",
        d,
        "--all",
        "--canary",
        "1",
        "--wave",
        "50%",
        "--stable",
        "2s",
        "--progress-deadline",
        "60s",
    ];
    let out = ok(
        &fleet(&cluster, prefix, &args, Duration::from_secs(240)),
        "rollout",
    );
    eprintln!("{out}");
    let canary = out
        .find("wave 1/3 (canary): written to h1")
        .unwrap_or_else(|| panic!("{out}"));
    let second = out
        .find("wave 2/3: written to h2, h3")
        .unwrap_or_else(|| panic!("{out}"));
    let third = out
        .find("wave 3/3: written to h4")
        .unwrap_or_else(|| panic!("{out}"));
    let h1_ready = out.find("h1 ready").unwrap_or_else(|| panic!("{out}"));
    assert!(
        canary < h1_ready && h1_ready < second && second < third,
        "{out}"
    );
    assert!(out.contains("rollout 1 complete"), "{out}");
    for h in &hosts {
        h.wait_running("web.service", "100002");
    }
    assert!(
        keys(&cluster, prefix, "manifests/hosts/").is_empty(),
        "wave keys left"
    );
    let all = cluster.etcdctl(&[
        "get",
        "--print-value-only",
        "--",
        &format!("{prefix}/manifests/all/web"),
    ]);
    assert!(stdout(&all).contains("100002"), "{}", stdout(&all));
    let history = ok(
        &fleet(&cluster, prefix, &["rollout", "history"], WAIT),
        "history",
    );
    assert!(
        history
            .lines()
            .any(|l| l.starts_with("1 ") && l.contains("Complete") && l.contains("web")),
        "{history}"
    );

    // 2. A change that exits at start.
    let before: Vec<String> = hosts[1..]
        .iter()
        .map(|h| h.started_at("web.service"))
        .collect();
    write(dir.path(), "web", "/bin/sh, -c, \"exit 3\"");
    let args = [
        "rollout",
        d,
        "--all",
        "--canary",
        "1",
        "--wave",
        "50%",
        "--stable",
        "2s",
        "--progress-deadline",
        "60s",
    ];
    let o = fleet(&cluster, prefix, &args, Duration::from_secs(240));
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    eprintln!("{}{err}", stdout(&o));
    assert!(
        err.contains("host h1") && err.contains("RolledBack"),
        "{err}"
    );
    // The canary is back on the previous revision; no key is left.
    hosts[0].wait_running("web.service", "100002");
    assert!(
        keys(&cluster, prefix, "manifests/hosts/").is_empty(),
        "wave keys left"
    );
    let st = status_json(&cluster, prefix);
    assert_eq!(st["revision"], 2);
    assert_eq!(st["phase"], "Undone", "{st}");
    assert_eq!(st["halt"]["host"], "h1", "{st}");
    // Every host runs rollout 1's files again.
    wait_revisions(&cluster, prefix, 1);
    // The other hosts never ran it: not restarted, same command line.
    for (h, t) in hosts[1..].iter().zip(&before) {
        assert_eq!(h.started_at("web.service"), *t, "{} restarted", h.id);
        assert!(
            h.um.prop("web.service", "ExecStart").contains("100002"),
            "{}",
            h.id
        );
    }
}

/// Issue 25, item 6: `--selector gpu=h100` changes only the labelled hosts;
/// their keys stay as their own (no `all/` step).
#[test]
fn fleet_rollout_with_a_selector_changes_only_the_labelled_hosts() {
    let cluster = EtcdCluster::start(3);
    let prefix = "/it-rollout-sel";
    let labels: [(&'static str, &[&str]); 4] = [
        ("h1", &["gpu=h100"]),
        ("h2", &["gpu=a100"]),
        ("h3", &["gpu=h100", "zone=b"]),
        ("h4", &[]),
    ];
    let hosts: Vec<Host> = labels
        .iter()
        .map(|(id, l)| Host::start(&cluster, prefix, id, l))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "web", "/bin/sleep, \"100001\"");
    let d = dir.path().to_str().unwrap();
    ok(
        &fleet(&cluster, prefix, &["push", d, "--all"], WAIT),
        "push",
    );
    for h in &hosts {
        h.wait_running("web.service", "100001");
    }
    wait_for(WAIT, "every host published", || {
        (keys(&cluster, prefix, "hosts/").len() == 4).then_some(())
    });
    let before: Vec<String> = [&hosts[1], &hosts[3]]
        .iter()
        .map(|h| h.started_at("web.service"))
        .collect();
    write(dir.path(), "web", "/bin/sleep, \"100003\"");
    let args = [
        "rollout",
        d,
        "--selector",
        "gpu=h100",
        "--stable",
        "2s",
        "--progress-deadline",
        "60s",
    ];
    let out = ok(
        &fleet(&cluster, prefix, &args, Duration::from_secs(240)),
        "rollout --selector",
    );
    assert!(out.contains("to 2 host(s)"), "{out}");
    hosts[0].wait_running("web.service", "100003");
    hosts[2].wait_running("web.service", "100003");
    for (h, t) in [&hosts[1], &hosts[3]].iter().zip(&before) {
        assert_eq!(h.started_at("web.service"), *t, "{} restarted", h.id);
        assert!(
            h.um.prop("web.service", "ExecStart").contains("100001"),
            "{}",
            h.id
        );
    }
    let mut own = keys(&cluster, prefix, "manifests/hosts/");
    own.sort();
    assert_eq!(
        own,
        [
            format!("{prefix}/manifests/hosts/h1/web"),
            format!("{prefix}/manifests/hosts/h3/web")
        ]
    );
    let st = status_json(&cluster, prefix);
    assert_eq!(st["phase"], "Complete", "{st}");
    assert_eq!(st["target"]["selector"], "gpu=h100", "{st}");
}

/// One etcd member going down mid-rollout (of 3: a quorum is left) does not
/// stop it: the command follows its watch and its lock's keep-alives on
/// another member. The member it talks to is, 5 times in 6, the one
/// killed (listed five times in `--etcd-endpoints`).
#[test]
fn fleet_rollout_goes_on_when_one_etcd_member_goes_down() {
    let mut cluster = EtcdCluster::start(3);
    let prefix = "/it-rollout-member";
    let hosts: Vec<Host> = ["h1", "h2"]
        .iter()
        .map(|id| Host::start(&cluster, prefix, id, &[]))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    write(dir.path(), "web", "/bin/sleep, \"100001\"");
    ok(
        &fleet(&cluster, prefix, &["push", d, "--all"], WAIT),
        "push",
    );
    for h in &hosts {
        h.wait_running("web.service", "100001");
    }
    wait_for(WAIT, "every host published", || {
        (keys(&cluster, prefix, "hosts/").len() == 2).then_some(())
    });
    write(dir.path(), "web", "/bin/sleep, \"100002\"");
    let e0 = cluster.endpoint(0);
    let eps = format!("{e0},{e0},{e0},{e0},{e0},{}", cluster.endpoint(1));
    let child = Command::new(UNITLET)
        .args(["fleet", "rollout", d, "--all", "--stable", "6s"])
        .args(["--progress-deadline", "60s", "--etcd-endpoints", &eps])
        .args(["--etcd-prefix", prefix])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The canary runs it: the command is judging wave 1.
    hosts[0].wait_running("web.service", "100002");
    cluster.kill_member(0);
    let out = finish(child, &["rollout"], Duration::from_secs(120));
    let text = ok(&out, "rollout with a member down");
    assert!(text.contains("rollout 1 complete"), "{text}");
    hosts[1].wait_running("web.service", "100002");
    assert!(
        keys(&cluster, prefix, "manifests/hosts/").is_empty(),
        "wave keys left"
    );
}
