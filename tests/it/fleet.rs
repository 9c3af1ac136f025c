//! A fleet fed from etcd (docs/fleet.md; issue 15's acceptance): a real
//! 3-member etcd cluster on loopback ports and two private user managers as
//! two hosts.

use std::time::{Duration, Instant};

use crate::support::fleet::{Host, TTL, fleet, manifest, push, write};
use crate::support::{UNITLET, stderr, stdout, wait_for};

/// The test etcd cluster (tests/it/support/etcd.rs), under the name the
/// rollout tests use.
pub(crate) use crate::support::etcd;
use etcd::EtcdCluster;

fn fleet_get(cluster: &EtcdCluster, prefix: &str) -> Vec<serde_json::Value> {
    let o = fleet(cluster, prefix, &["get", "-o", "json"]);
    assert!(o.status.success(), "fleet get: {}", stderr(&o));
    serde_json::from_slice::<serde_json::Value>(&o.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn ready_objects(objs: &[serde_json::Value]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = objs
        .iter()
        .filter(|o| {
            o["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
        .map(|o| {
            (
                o["host"].as_str().unwrap().to_string(),
                o["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

fn hosts_listed(cluster: &EtcdCluster, prefix: &str) -> Vec<String> {
    let o = fleet(cluster, prefix, &["hosts", "-o", "json"]);
    assert!(o.status.success(), "fleet hosts: {}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|h| h["host"].as_str().unwrap().to_string())
        .collect()
}

/// Acceptance 1–5 in one story, on one cluster (starting managers and etcd
/// is the slow part).
#[test]
fn fleet_of_two_hosts_converges_survives_etcd_outages_resyncs_and_forgets_dead_hosts() {
    let mut cluster = EtcdCluster::start(3);
    let prefix = "/it-fleet";
    let mut a = Host::new("host-a");
    let mut b = Host::new("host-b");
    a.start(&cluster, prefix);
    b.start(&cluster, prefix);

    // 1. Three manifests for all, one for host B.
    let all = tempfile::tempdir().unwrap();
    let only_b = tempfile::tempdir().unwrap();
    for n in ["f1", "f2", "f3"] {
        write(all.path(), n, "100001");
    }
    write(only_b.path(), "f4", "100004");
    push(&cluster, prefix, all.path(), &["--all"]);
    push(&cluster, prefix, only_b.path(), &["--host", "host-b"]);
    for n in ["f1", "f2", "f3"] {
        a.wait_running(&format!("{n}.service"), "100001", Duration::from_secs(30));
        b.wait_running(&format!("{n}.service"), "100001", Duration::from_secs(30));
    }
    b.wait_running("f4.service", "100004", Duration::from_secs(30));
    assert_ne!(
        a.um.active("f4.service"),
        "active",
        "host A runs B's manifest"
    );
    let want: Vec<(String, String)> = [
        ("host-a", "f1"),
        ("host-a", "f2"),
        ("host-a", "f3"),
        ("host-b", "f1"),
        ("host-b", "f2"),
        ("host-b", "f3"),
        ("host-b", "f4"),
    ]
    .iter()
    .map(|(h, n)| (h.to_string(), n.to_string()))
    .collect();
    wait_for(
        Duration::from_secs(15),
        "fleet get to show 7 Ready objects with host names",
        || (ready_objects(&fleet_get(&cluster, prefix)) == want).then_some(()),
    );
    let table = stdout(&fleet(&cluster, prefix, &["get"]));
    assert!(table.contains("host-b") && table.contains("f4"), "{table}");

    // 2. Edit one manifest: both hosts converge; delete one: both stop it.
    write(all.path(), "f1", "100011");
    let t = Instant::now();
    push(&cluster, prefix, all.path(), &["--all"]);
    a.wait_running("f1.service", "100011", Duration::from_secs(10));
    b.wait_running("f1.service", "100011", Duration::from_secs(10));
    let converged = t.elapsed();
    eprintln!("edit pushed → both hosts converged in {converged:?}");
    assert!(
        converged <= Duration::from_secs(2),
        "both hosts should converge within 2 s of a push, took {converged:?}"
    );
    std::fs::remove_file(all.path().join("f2.yaml")).unwrap();
    let out = push(&cluster, prefix, all.path(), &["--all"]);
    assert!(out.contains("1 deleted (f2)"), "{out}");
    for h in [&a, &b] {
        wait_for(
            Duration::from_secs(15),
            &format!("f2 stopped on {}", h.id),
            || (h.um.active("f2.service") != "active").then_some(()),
        );
    }

    // 3a. One member down: pushes and convergence still work.
    cluster.kill_member(0);
    write(all.path(), "f3", "100013");
    push(&cluster, prefix, all.path(), &["--all"]);
    a.wait_running("f3.service", "100013", Duration::from_secs(20));
    b.wait_running("f3.service", "100013", Duration::from_secs(20));

    // 3b. Every member down: units keep running, status says so.
    b.op.as_mut().unwrap().stop();
    cluster.kill_member(1);
    cluster.kill_member(2);
    wait_for(
        Duration::from_secs(30),
        "host A's `unitlet get` to say etcd is unreachable",
        || {
            let o = a.um.unitlet(&["get"]);
            stderr(&o).contains("is unreachable").then_some(())
        },
    );
    for n in ["f1", "f3"] {
        assert_eq!(a.um.active(&format!("{n}.service")), "active");
        assert_eq!(b.um.active(&format!("{n}.service")), "active");
    }
    assert!(
        a.um.state_dir.join("fleet/manifests/f1.yaml").is_file(),
        "the materialised manifests stay while etcd is unreachable"
    );

    // 3c. Members back: A resumes from its revision; a change pushed while
    // B's operator was stopped is applied when it starts.
    for i in 0..3 {
        cluster.start_member(i);
    }
    cluster.wait_healthy(Duration::from_secs(30));
    write(all.path(), "f3", "100023");
    push(&cluster, prefix, all.path(), &["--all"]);
    a.wait_running("f3.service", "100023", Duration::from_secs(40));
    assert!(
        a.log()
            .contains("reachable again; resuming from the revisions applied"),
        "{}",
        a.log()
    );
    assert!(
        !a.um
            .unitlet(&["get"])
            .stderr
            .windows(11)
            .any(|w| w == b"unreachable")
    );
    b.start(&cluster, prefix);
    b.wait_running("f3.service", "100023", Duration::from_secs(30));
    assert!(
        !b.log().contains("full snapshot"),
        "B resumes by watching from its saved revision, not by reading everything:\n{}",
        b.log()
    );

    // 4. A compaction past a stopped operator's revision: full resync.
    b.op.as_mut().unwrap().stop();
    write(all.path(), "f1", "100031");
    std::fs::remove_file(all.path().join("f3.yaml")).unwrap();
    push(&cluster, prefix, all.path(), &["--all"]);
    a.wait_running("f1.service", "100031", Duration::from_secs(20));
    let rev = cluster.revision();
    let o = cluster.etcdctl(&["compact", &rev.to_string(), "--physical"]);
    assert!(
        o.status.success(),
        "compact: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    b.start(&cluster, prefix);
    b.wait_running("f1.service", "100031", Duration::from_secs(30));
    wait_for(
        Duration::from_secs(30),
        "f3 stopped on host B after the resync",
        || (b.um.active("f3.service") != "active").then_some(()),
    );
    let log = b.log();
    assert!(
        log.contains("compacted") && log.contains("full snapshot"),
        "B resynced fully:\n{log}"
    );
    assert_eq!(
        b.um.active("f4.service"),
        "active",
        "the resync keeps B's own key"
    );

    // A host key overrides the `all` key of the same name, on that host
    // only; deleting it brings the `all` version back.
    write(only_b.path(), "f1", "100041");
    push(&cluster, prefix, only_b.path(), &["--host", "host-b"]);
    b.wait_running("f1.service", "100041", Duration::from_secs(20));
    std::fs::remove_file(only_b.path().join("f1.yaml")).unwrap();
    push(&cluster, prefix, only_b.path(), &["--host", "host-b"]);
    b.wait_running("f1.service", "100031", Duration::from_secs(20));
    assert!(
        a.exec_start("f1.service").contains("100031"),
        "host B's key changed host A"
    );

    // 5. Host B's operator dies: its status and host key go with its lease.
    wait_for(Duration::from_secs(15), "host B listed", || {
        hosts_listed(&cluster, prefix)
            .contains(&"host-b".to_string())
            .then_some(())
    });
    b.op.as_mut().unwrap().kill9();
    let killed = Instant::now();
    wait_for(
        TTL + Duration::from_secs(5),
        "host B's keys to expire",
        || {
            let gone = !hosts_listed(&cluster, prefix).contains(&"host-b".to_string())
                && fleet_get(&cluster, prefix)
                    .iter()
                    .all(|o| o["host"] != "host-b");
            gone.then_some(())
        },
    );
    eprintln!(
        "host B's keys expired {:?} after it was killed",
        killed.elapsed()
    );
    assert!(hosts_listed(&cluster, prefix).contains(&"host-a".to_string()));
    // Its units are not the fleet's to stop: they keep running.
    assert_eq!(b.um.active("f4.service"), "active");
}

/// Acceptance 6: one invalid manifest → nothing written, the file named.
#[test]
fn fleet_push_with_one_invalid_manifest_writes_nothing_and_names_the_file() {
    let cluster = EtcdCluster::start(3);
    let prefix = "/it-invalid";
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "good", "1");
    push(&cluster, prefix, dir.path(), &["--all"]);
    let before = cluster.etcdctl(&["get", "--prefix", prefix]);

    write(dir.path(), "good", "2");
    write(dir.path(), "other", "3");
    std::fs::write(
        dir.path().join("broken.yaml"),
        "apiVersion: unitlet/v1\nkind: Service\nmetadata:\n  name: broken\nspec:\n  comand: [/bin/true]\n",
    )
    .unwrap();
    let o = fleet(
        &cluster,
        prefix,
        &["push", dir.path().to_str().unwrap(), "--all"],
    );
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("broken.yaml"), "{}", stderr(&o));
    assert!(stderr(&o).contains("nothing was pushed"), "{}", stderr(&o));
    let after = cluster.etcdctl(&["get", "--prefix", prefix]);
    assert_eq!(
        String::from_utf8_lossy(&before.stdout),
        String::from_utf8_lossy(&after.stdout),
        "an invalid push changed etcd"
    );
    assert!(String::from_utf8_lossy(&after.stdout).contains("\"1\""));

    // Without the broken file the same push goes through, in one revision.
    std::fs::remove_file(dir.path().join("broken.yaml")).unwrap();
    let rev = cluster.revision();
    let out = push(&cluster, prefix, dir.path(), &["--all"]);
    assert!(out.contains("2 written (good, other)"), "{out}");
    assert_eq!(cluster.revision(), rev + 1, "one push is one transaction");
    // Pushing the same directory again writes nothing.
    let out = push(&cluster, prefix, dir.path(), &["--all"]);
    assert!(out.starts_with("nothing to push"), "{out}");
    assert_eq!(cluster.revision(), rev + 1);
}

/// etcd unreachable: a push writes nothing, exits 2 and says where it tried.
#[test]
fn fleet_push_to_an_unreachable_etcd_exits_2_and_names_the_endpoints() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "good", "1");
    let ep = format!("http://127.0.0.1:{port}");
    let o = std::process::Command::new(UNITLET)
        .args(["fleet", "push", dir.path().to_str().unwrap(), "--all"])
        .args(["--etcd-endpoints", &ep])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains(&ep), "{}", stderr(&o));
}

/// With etcd authentication: the password comes from a file and appears in
/// no message, also when it is wrong.
#[test]
fn fleet_with_etcd_auth_reads_the_password_file_and_never_prints_it() {
    let cluster = EtcdCluster::start(1);
    let ok = cluster.etcdctl(&["user", "add", "root", "--new-user-password", "s3cret-right"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let ok = cluster.etcdctl(&["auth", "enable"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "good", "1");
    let secrets = tempfile::tempdir().unwrap();
    let pw = secrets.path().join("pw");
    let run_with_mode = |password: &str, mode: u32| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(&pw, format!("{password}\n")).unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(mode)).unwrap();
        std::process::Command::new(UNITLET)
            .args(["fleet", "push", dir.path().to_str().unwrap(), "--all"])
            .args(["--etcd-endpoints", &cluster.endpoints()])
            .args(["--etcd-user", "root", "--etcd-password-file"])
            .arg(&pw)
            .env("UNITLET_LOG", "debug")
            .output()
            .unwrap()
    };
    let run = |password: &str| run_with_mode(password, 0o600);
    // Issue 20 item 5: a password file others can read is refused, like
    // every other secret file, before anything is sent.
    let o = run_with_mode("s3cret-right", 0o644);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("mode 0644") && stderr(&o).contains("chmod 600"),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("s3cret") && !stdout(&o).contains("s3cret"));
    assert!(!stdout(&o).contains("written"), "{}", stdout(&o));
    let o = run("s3cret-wrong");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        !stderr(&o).contains("s3cret") && !stdout(&o).contains("s3cret"),
        "{}",
        stderr(&o)
    );
    let o = run("s3cret-right");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("1 written (good)"), "{}", stdout(&o));
    assert!(!stderr(&o).contains("s3cret") && !stdout(&o).contains("s3cret"));
}

/// A first start applies what etcd already holds, without waiting for the
/// resync (an hour here): the snapshot creates the materialised directory
/// under a directory the operator watches.
#[test]
fn fleet_first_start_applies_what_etcd_holds_without_waiting_for_the_resync() {
    let cluster = EtcdCluster::start(1);
    let prefix = "/it-first";
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "first", "100051");
    push(&cluster, prefix, dir.path(), &["--all"]);
    let mut h = Host::new("host-first");
    h.start(&cluster, prefix);
    h.wait_running("first.service", "100051", Duration::from_secs(15));
}

/// Over TLS with client-certificate authentication: push and read with the
/// CA, certificate and key files, and a host watches and applies what was
/// pushed; without a client certificate etcd refuses the connection and the
/// push exits 2 naming the endpoint.
#[test]
fn fleet_over_tls_with_a_client_certificate_pushes_watches_and_applies() {
    let cluster = EtcdCluster::start_tls(1);
    let prefix = "/it-tls";
    let mut h = Host::new("host-tls");
    h.start(&cluster, prefix);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "secure", "100061");
    assert!(push(&cluster, prefix, dir.path(), &["--all"]).contains("1 written (secure)"));
    // Pushed after the host started: it arrives through the watch.
    h.wait_running("secure.service", "100061", Duration::from_secs(20));
    let ca = cluster.tls.as_ref().unwrap().join("ca.pem");
    let o = std::process::Command::new(UNITLET)
        .args(["fleet", "push", dir.path().to_str().unwrap(), "--all"])
        .args([
            "--etcd-endpoints",
            &cluster.endpoints(),
            "--etcd-prefix",
            prefix,
        ])
        .arg("--etcd-ca")
        .arg(&ca)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains(&cluster.endpoints()), "{}", stderr(&o));
}

/// Issue 25: a host's status value in etcd says which value of the manifest
/// key it last applied: `manifestDigest` is the SHA-256 of the value pushed
/// (the file's bytes), and it moves when a new value is pushed. `get -o
/// json` on the host and `fleet get -o json` show it too.
#[test]
fn fleet_status_values_carry_the_digest_of_the_pushed_value() {
    use sha2::{Digest, Sha256};
    let sha = |arg: &str| hex::encode(Sha256::digest(manifest("dig", arg).as_bytes()));
    let cluster = EtcdCluster::start(1);
    let prefix = "/it-digest";
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "dig", "100071");
    push(&cluster, prefix, dir.path(), &["--all"]);
    let mut h = Host::new("host-digest");
    h.start(&cluster, prefix);
    let key = format!("{prefix}/status/host-digest/dig");
    let in_etcd = || -> Option<String> {
        let o = cluster.etcdctl(&["get", "--print-value-only", "--", &key]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
        v["manifestDigest"].as_str().map(str::to_string)
    };
    for arg in ["100071", "100072"] {
        if arg != "100071" {
            write(dir.path(), "dig", arg);
            push(&cluster, prefix, dir.path(), &["--all"]);
        }
        h.wait_running("dig.service", arg, Duration::from_secs(20));
        let want = sha(arg);
        wait_for(
            Duration::from_secs(20),
            &format!("{key} carrying manifestDigest {want}"),
            || (in_etcd().as_deref() == Some(want.as_str())).then_some(()),
        );
    }
    let objs = fleet_get(&cluster, prefix);
    let dig = objs.iter().find(|o| o["name"] == "dig").unwrap();
    assert_eq!(dig["manifestDigest"], sha("100072"), "{dig}");
    let local = h.um.get_json();
    assert_eq!(local[0]["manifestDigest"], sha("100072"), "{local}");
}

/// Issue 25: a host's labels (`--host-label`, repeatable) are published in
/// its host key and shown by `fleet hosts` (LABELS) and `fleet hosts -o
/// json` (`labels`, `{}` for a host without any); a bad label, or labels
/// without `--source etcd`, are usage errors (exit 2).
#[test]
fn fleet_hosts_show_the_labels_hosts_run_with() {
    let cluster = EtcdCluster::start(1);
    let prefix = "/it-labels";
    let mut labelled = Host::new("host-gpu");
    labelled.start_with(
        &cluster,
        prefix,
        &["--host-label", "zone=a", "--host-label", "gpu=h100"],
    );
    let mut plain = Host::new("host-plain");
    plain.start(&cluster, prefix);
    let labels = wait_for(Duration::from_secs(20), "both hosts listed", || {
        let o = fleet(&cluster, prefix, &["hosts", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
        let hosts = v.as_array()?;
        (hosts.len() == 2).then(|| {
            hosts
                .iter()
                .map(|h| (h["host"].as_str().unwrap().to_string(), h["labels"].clone()))
                .collect::<Vec<_>>()
        })
    });
    assert_eq!(
        labels,
        [
            (
                "host-gpu".to_string(),
                serde_json::json!({"gpu": "h100", "zone": "a"})
            ),
            ("host-plain".to_string(), serde_json::json!({})),
        ]
    );
    let o = fleet(&cluster, prefix, &["hosts"]);
    let table = stdout(&o);
    let header = table.lines().next().unwrap();
    assert!(header.split_whitespace().any(|c| c == "LABELS"), "{table}");
    let row = |h: &str| {
        table
            .lines()
            .find(|l| l.starts_with(h))
            .unwrap()
            .to_string()
    };
    assert!(
        row("host-gpu").trim_end().ends_with(" gpu=h100,zone=a"),
        "{table}"
    );
    assert!(row("host-plain").trim_end().ends_with(" -"), "{table}");

    let run = |args: &[&str]| {
        let o = labelled.um.unitlet(&[&["run"], args].concat());
        (o.status.code(), stderr(&o))
    };
    let (code, err) = run(&["--source", "etcd", "--host-label", "g u=x"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(r#"key "g u" may hold only letters"#), "{err}");
    let (code, err) = run(&["--host-label", "gpu=h100"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--host-label needs --source etcd"), "{err}");
}
