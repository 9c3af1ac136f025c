//! Fleet rollouts that go wrong (issue 25, acceptance 3–5; docs/fleet.md,
//! "Rollouts in waves"): the tool SIGKILLed after its first wave (status,
//! resume, a fresh run that resumes, undo), a second rollout while one runs,
//! the lock of a killed tool expiring with its lease, and etcd's quorum lost
//! mid-wave. A real 3-member etcd cluster and four hosts, each a private
//! user manager running `unitlet run --source etcd`.

use std::path::Path;
use std::time::Duration;

use crate::support::etcd::EtcdCluster;
use crate::support::fleet::{
    Background, Host, TTL, fleet, fleet_command, fleet_command_at, get, keys, push, write,
};
use crate::support::{stderr, stdout, wait_for, wait_seen};

/// The four hosts, in the order a rollout takes them (by host id).
const IDS: [&str; 4] = ["h1", "h2", "h3", "h4"];

/// The lock of a killed tool expires with its lease (TTL 10 s): the
/// deadline for it to go, with room for a loaded machine.
const LOCK_GONE: Duration = Duration::from_secs(25);

/// Four hosts on `prefix`, all running `svc` with `sleep ARG` from an
/// `all/` push of `dir`, and all listed (their `hosts/HOST` keys live).
fn four_hosts(
    cluster: &EtcdCluster,
    prefix: &str,
    ttl: Duration,
    dir: &Path,
    arg: &str,
) -> Vec<Host> {
    let mut hosts: Vec<Host> = IDS.iter().map(|id| Host::new(id)).collect();
    for h in &mut hosts {
        h.start_with_ttl(cluster, prefix, ttl, &[]);
    }
    write(dir, "svc", arg);
    push(cluster, prefix, dir, &["--all"]);
    for h in &hosts {
        h.wait_running("svc.service", arg, Duration::from_secs(60));
    }
    wait_seen(Duration::from_secs(30), "all four hosts listed", || {
        let listed = keys(cluster, &format!("{prefix}/hosts/"));
        if listed.len() == IDS.len() {
            Ok(())
        } else {
            Err(listed)
        }
    });
    hosts
}

/// The newest rollout record, parsed.
fn record(cluster: &EtcdCluster, prefix: &str) -> Option<serde_json::Value> {
    let newest = keys(cluster, &format!("{prefix}/rollouts/revisions/")).pop()?;
    let (value, _) = get(cluster, &newest)?;
    Some(serde_json::from_str(&value).expect("a rollout record is JSON"))
}

/// The rollout lock's value, parsed, while it is held.
fn lock(cluster: &EtcdCluster, prefix: &str) -> Option<serde_json::Value> {
    let (value, _) = get(cluster, &format!("{prefix}/rollouts/lock"))?;
    Some(serde_json::from_str(&value).expect("the rollout lock is JSON"))
}

/// The host keys under `manifests/hosts/` (the waves' keys here: these
/// tests push nothing per host).
fn wave_keys(cluster: &EtcdCluster, prefix: &str) -> Vec<String> {
    keys(cluster, &format!("{prefix}/manifests/hosts/"))
}

fn wave_key(prefix: &str, host: &str) -> String {
    format!("{prefix}/manifests/hosts/{host}/svc")
}

/// Wait until the newest record is revision `rev` at wave index `wave`
/// (the canary judged and the next wave's record durable).
fn wait_record_wave(
    r: &mut Background,
    cluster: &EtcdCluster,
    prefix: &str,
    rev: u64,
    wave: u64,
    timeout: Duration,
) {
    wait_seen(
        timeout,
        &format!("rollout {rev}'s record at wave {wave}"),
        || {
            r.assert_running();
            match record(cluster, prefix) {
                Some(v)
                    if v["revision"] == rev && v["wave"] == wave && v["phase"] == "Progressing" =>
                {
                    Ok(())
                }
                other => {
                    Err(other
                        .map(|v| (v["revision"].clone(), v["phase"].clone(), v["wave"].clone())))
                }
            }
        },
    );
}

/// Wait until the SIGKILLed tool's lock is gone (its lease expired).
fn wait_lock_gone(cluster: &EtcdCluster, prefix: &str) {
    wait_seen(
        LOCK_GONE,
        "the killed rollout's lock to expire",
        || match lock(cluster, prefix) {
            None => Ok(()),
            Some(l) => Err(l),
        },
    );
}

/// Run `fleet rollout ARGS` in the background.
fn spawn_rollout(cluster: &EtcdCluster, prefix: &str, args: &[&str]) -> Background {
    let mut all = vec!["rollout"];
    all.extend(args);
    Background::spawn(fleet_command(cluster, prefix, &all))
}

/// `fleet rollout ARGS` to its end (within `timeout`), which must exit
/// `code`; its stdout and stderr.
fn rollout_to_end(
    cluster: &EtcdCluster,
    prefix: &str,
    args: &[&str],
    code: i32,
    timeout: Duration,
) -> (String, String) {
    let mut r = spawn_rollout(cluster, prefix, args);
    let (got, out, err) = r.wait_exit(timeout);
    assert_eq!(got, Some(code), "fleet rollout {args:?}:\n{out}{err}");
    (out, err)
}

/// Every host runs `svc` with `arg`; no wave key is left; `all/svc` has it.
fn assert_fleet_on(cluster: &EtcdCluster, prefix: &str, hosts: &[Host], arg: &str) {
    for h in hosts {
        h.wait_running("svc.service", arg, Duration::from_secs(30));
    }
    assert_eq!(
        wave_keys(cluster, prefix),
        Vec::<String>::new(),
        "wave keys left"
    );
    let (all, _) = get(cluster, &format!("{prefix}/manifests/all/svc")).expect("all/svc");
    assert!(all.contains(arg), "all/svc is {all}");
}

/// A second rollout (another change), a resume and an undo while a rollout
/// runs are refused, exit 2, naming the running one: its revision and who
/// started it (its PID).
fn assert_refused_while_running(
    cluster: &EtcdCluster,
    prefix: &str,
    rev: u64,
    pid: u32,
    other: &Path,
) {
    let other = other.to_str().unwrap();
    for args in [
        &["rollout", other, "--all"][..],
        &["rollout", "resume"][..],
        &["rollout", "undo"][..],
        // A push would be overwritten by the rollout's last step.
        &["push", other, "--all"][..],
    ] {
        let o = fleet(cluster, prefix, args);
        let err = stderr(&o);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{args:?} while rollout {rev} runs:\n{}{err}",
            stdout(&o)
        );
        assert!(
            err.contains(&format!("rollout {rev} is in progress"))
                && err.contains(&format!("pid {pid}")),
            "{args:?} should name rollout {rev} and who started it (pid {pid}):\n{err}"
        );
    }
}

/// Acceptance 3 and 5, and the lock's release: a rollout killed after its
/// first wave says where it stopped, is resumed by `resume` and by a fresh
/// run of the same rollout (which does not rewrite the canary), and is put
/// back by `undo`; a second rollout while one runs is refused.
#[test]
fn killed_rollout_resumes_reruns_or_undoes_and_a_second_rollout_is_refused() {
    let cluster = EtcdCluster::start(3);
    let prefix = "/it-rollout-kill";
    let dir = tempfile::tempdir().unwrap();
    let hosts = four_hosts(&cluster, prefix, TTL, dir.path(), "200001");
    let d = dir.path().to_str().unwrap();
    // Canary h1, then h2–h4 in one wave; a long --stable keeps the tool
    // surely mid-wave while the test acts.
    let args = [
        "--all", "--canary", "1", "--wave", "100%", "--stable", "20s",
    ];
    let rollout_args: Vec<&str> = [d].iter().chain(args.iter()).copied().collect();

    // 3a. Killed right after the record says wave 1.
    write(dir.path(), "svc", "200002");
    let mut r = spawn_rollout(&cluster, prefix, &rollout_args);
    wait_seen(Duration::from_secs(30), "rollout 1's lock", || {
        r.assert_running();
        match lock(&cluster, prefix) {
            Some(l) if l["revision"] == 1 => Ok(()),
            other => Err(other),
        }
    });
    // 5. While it runs, a second one is refused, naming it.
    let other = tempfile::tempdir().unwrap();
    write(other.path(), "svc", "299999");
    assert_refused_while_running(&cluster, prefix, 1, r.pid(), other.path());
    let running = stdout(&fleet(&cluster, prefix, &["rollout", "status"]));
    assert!(
        running.contains("locked: rollout 1 is in progress")
            && running.contains(&format!("pid {}", r.pid())),
        "`fleet rollout status` names the command running it:\n{running}"
    );
    wait_record_wave(&mut r, &cluster, prefix, 1, 1, Duration::from_secs(90));
    let killed_pid = r.pid();
    r.kill9();
    // Everything it printed, read to the end of the pipe.
    let (code, out, _) = r.wait_exit(Duration::from_secs(5));
    assert_eq!(code, None, "it was killed, it did not exit");
    assert!(
        out.contains("wave 1/2 (canary): h1 ready"),
        "the canary's progress was printed:\n{out}"
    );

    let o = fleet(&cluster, prefix, &["rollout", "status", "-o", "json"]);
    assert!(o.status.success(), "status: {}", stderr(&o));
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(st["phase"], "Progressing", "{st}");
    assert_eq!(st["wave"], 1, "{st}");
    assert_eq!(st["verdicts"]["h1"]["state"], "Ready", "{st}");
    let o = fleet(&cluster, prefix, &["rollout", "status"]);
    let plain = stdout(&o);
    assert!(
        plain.contains("Progressing") && plain.contains("2/2"),
        "`fleet rollout status` should say rollout 1 stopped at wave 2/2:\n{plain}"
    );
    // The killed tool's lock holds until its lease expires, then goes.
    let o = fleet(&cluster, prefix, &["rollout", "resume"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "resume under a live lock: {}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains(&format!("pid {killed_pid}"))
            && stderr(&o).contains("that process is gone"),
        "{}",
        stderr(&o)
    );
    wait_lock_gone(&cluster, prefix);
    let stopped = stdout(&fleet(&cluster, prefix, &["rollout", "status"]));
    assert!(
        stopped.contains("stopped: ") && stopped.contains("fleet rollout resume"),
        "`fleet rollout status` says it stopped:\n{stopped}"
    );
    // Unfinished: another change is refused, naming both ways out.
    let o = fleet(
        &cluster,
        prefix,
        &["rollout", other.path().to_str().unwrap(), "--all"],
    );
    let err = stderr(&o);
    assert_eq!(
        o.status.code(),
        Some(2),
        "another change over rollout 1:\n{}{err}",
        stdout(&o)
    );
    assert!(
        err.contains("rollout 1")
            && err.contains("fleet rollout resume")
            && err.contains("fleet rollout undo"),
        "{err}"
    );
    // And a push, which would race the rollout's last step: refused, all/
    // untouched.
    let all_before = get(&cluster, &format!("{prefix}/manifests/all/svc"));
    let o = fleet(
        &cluster,
        prefix,
        &["push", other.path().to_str().unwrap(), "--all"],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "push over rollout 1:\n{err}");
    assert!(
        err.contains("rollout 1 stopped unfinished")
            && err.contains("fleet rollout resume")
            && err.contains("nothing was pushed"),
        "{err}"
    );
    assert_eq!(
        get(&cluster, &format!("{prefix}/manifests/all/svc")),
        all_before,
        "the refused push wrote all/svc"
    );
    let (out, _) = rollout_to_end(&cluster, prefix, &["resume"], 0, Duration::from_secs(120));
    assert_fleet_on(&cluster, prefix, &hosts, "200002");
    assert_eq!(
        record(&cluster, prefix).unwrap()["phase"],
        "Complete",
        "{out}"
    );

    // 3b. Killed after wave 1's keys are written; a fresh run of the same
    // rollout resumes it and never rewrites the canary's key.
    write(dir.path(), "svc", "200003");
    let mut r = spawn_rollout(&cluster, prefix, &rollout_args);
    wait_record_wave(&mut r, &cluster, prefix, 2, 1, Duration::from_secs(90));
    wait_for(Duration::from_secs(30), "wave 1's keys written", || {
        r.assert_running();
        IDS[1..]
            .iter()
            .all(|h| get(&cluster, &wave_key(prefix, h)).is_some())
            .then_some(())
    });
    r.kill9();
    let (_, canary_rev) = get(&cluster, &wave_key(prefix, "h1")).expect("the canary's key");
    wait_lock_gone(&cluster, prefix);
    let mut r = spawn_rollout(&cluster, prefix, &rollout_args);
    r.wait_line("resuming rollout 2 at wave 2/2", Duration::from_secs(30));
    let code = wait_for(
        Duration::from_secs(120),
        "the resumed rollout to end",
        || {
            if let Some((_, rev)) = get(&cluster, &wave_key(prefix, "h1")) {
                assert_eq!(
                    rev,
                    canary_rev,
                    "the fresh run rewrote the canary's key:\n{}",
                    r.stdout()
                );
            }
            r.try_exit()
        },
    );
    let (_, out, err) = r.wait_exit(Duration::from_secs(5));
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(
        keys(&cluster, &format!("{prefix}/rollouts/revisions/")).len(),
        2,
        "the fresh run made a new revision instead of resuming"
    );
    assert_fleet_on(&cluster, prefix, &hosts, "200003");
    assert_eq!(record(&cluster, prefix).unwrap()["phase"], "Complete");

    // 3c. Killed once every host runs the change; undo puts them all back.
    write(dir.path(), "svc", "200004");
    let mut r = spawn_rollout(&cluster, prefix, &rollout_args);
    wait_record_wave(&mut r, &cluster, prefix, 3, 1, Duration::from_secs(90));
    for h in &hosts {
        h.wait_running("svc.service", "200004", Duration::from_secs(30));
    }
    r.kill9();
    assert_eq!(
        wave_keys(&cluster, prefix).len(),
        4,
        "all four hosts changed"
    );
    wait_lock_gone(&cluster, prefix);
    let (out, err) = rollout_to_end(&cluster, prefix, &["undo"], 0, Duration::from_secs(60));
    assert!(out.contains("rollout 3 undone"), "{out}{err}");
    assert_fleet_on(&cluster, prefix, &hosts, "200003");
    let rec = record(&cluster, prefix).unwrap();
    assert_eq!(rec["revision"], 3, "{out}{err}");
    assert_eq!(rec["phase"], "Undone", "{out}{err}");

    // 3d. A fresh run of a halted rollout is its resume too: halted with
    // --no-undo, it is refused (fix the file, or undo), not run again.
    write(dir.path(), "svc", "not-a-number");
    let halting: Vec<&str> = rollout_args
        .iter()
        .copied()
        .chain(["--progress-deadline", "5s", "--no-undo"])
        .collect();
    let (out, err) = rollout_to_end(&cluster, prefix, &halting, 1, Duration::from_secs(60));
    assert!(err.contains("halted at host h1"), "{out}{err}");
    let rec = record(&cluster, prefix).unwrap();
    assert_eq!(
        (&rec["revision"], &rec["phase"]),
        (&4.into(), &"Halted".into()),
        "{rec}"
    );
    let (_, canary_rev) = get(&cluster, &wave_key(prefix, "h1")).expect("h1 keeps the change");
    for args in [&halting[..], &["resume"][..]] {
        let (out, err) = rollout_to_end(&cluster, prefix, args, 2, Duration::from_secs(30));
        assert!(
            err.contains("--no-undo") && err.contains("fleet rollout undo"),
            "{args:?}:\n{out}{err}"
        );
    }
    assert_eq!(wave_keys(&cluster, prefix), vec![wave_key(prefix, "h1")]);
    assert_eq!(
        get(&cluster, &wave_key(prefix, "h1")).unwrap().1,
        canary_rev,
        "h1's key was rewritten"
    );
    assert_eq!(record(&cluster, prefix).unwrap()["phase"], "Halted");
    rollout_to_end(&cluster, prefix, &["undo"], 0, Duration::from_secs(60));
    assert_fleet_on(&cluster, prefix, &hosts, "200003");
}

/// Acceptance 4: etcd's quorum lost while a wave is judged → exit 2,
/// nothing beyond that wave changed; once the members are back, `resume`
/// completes the rollout. Twice: the command talks to one member, so once
/// it is the member left without a quorum (requests hang, watches are
/// cancelled for "no leader"), once one of the members killed (the
/// connection goes).
#[test]
fn quorum_lost_mid_wave_exits_2_changes_nothing_beyond_the_wave_and_resumes() {
    let mut cluster = EtcdCluster::start(3);
    let prefix = "/it-rollout-quorum";
    let dir = tempfile::tempdir().unwrap();
    // Hosts' leases long enough to outlast the outage: a host dropping out
    // is another failure than this one.
    let hosts = four_hosts(
        &cluster,
        prefix,
        Duration::from_secs(60),
        dir.path(),
        "300001",
    );
    let d = dir.path().to_str().unwrap();
    for (revision, member, old, new) in [(1u64, 0, "300001", "300002"), (2, 1, "300002", "300003")]
    {
        eprintln!("rollout {revision}: the command talks to member {member}; members 1 and 2 die");
        // One host per wave: h1 (canary), h2, h3, h4.
        write(dir.path(), "svc", new);
        let mut r = Background::spawn(fleet_command_at(
            &cluster,
            &cluster.endpoint(member),
            prefix,
            &[
                "rollout", d, "--all", "--canary", "1", "--wave", "25%", "--stable", "5s",
            ],
        ));
        wait_record_wave(
            &mut r,
            &cluster,
            prefix,
            revision,
            1,
            Duration::from_secs(60),
        );
        wait_for(Duration::from_secs(30), "wave 2's key for h2", || {
            r.assert_running();
            get(&cluster, &wave_key(prefix, "h2")).filter(|(v, _)| v.contains(new))
        });
        cluster.kill_member(1);
        cluster.kill_member(2);
        let (code, out, err) = r.wait_exit(Duration::from_secs(90));
        eprintln!("quorum lost mid-wave:\n{out}{err}");
        assert_eq!(code, Some(2), "quorum lost mid-wave:\n{out}{err}");
        assert!(
            err.contains("fleet rollout resume"),
            "says how to go on:\n{err}"
        );
        for h in &hosts[2..] {
            assert!(
                h.exec_start("svc.service").contains(old),
                "{} changed",
                h.id
            );
        }

        cluster.start_member(1);
        cluster.start_member(2);
        cluster.wait_healthy(Duration::from_secs(30));
        assert_eq!(
            wave_keys(&cluster, prefix),
            vec![wave_key(prefix, "h1"), wave_key(prefix, "h2")],
            "only the canary's and the current wave's keys"
        );
        let rec = record(&cluster, prefix).unwrap();
        assert_eq!(
            (&rec["revision"], &rec["phase"], &rec["wave"]),
            (&revision.into(), &"Progressing".into(), &1.into()),
            "{rec}"
        );
        let (all, _) = get(&cluster, &format!("{prefix}/manifests/all/svc")).unwrap();
        assert!(all.contains(old), "all/svc changed: {all}");
        for h in &hosts[2..] {
            assert!(
                h.exec_start("svc.service").contains(old),
                "{} changed",
                h.id
            );
        }

        wait_lock_gone(&cluster, prefix);
        rollout_to_end(&cluster, prefix, &["resume"], 0, Duration::from_secs(120));
        assert_fleet_on(&cluster, prefix, &hosts, new);
        assert_eq!(record(&cluster, prefix).unwrap()["phase"], "Complete");
    }
}

/// SIGTERM (or Ctrl-C) mid-wave: the command gives its lock back at once
/// (no waiting for the lease) and exits 2 saying the rollout stays
/// resumable; `resume` can run right away and completes it.
#[test]
fn interrupted_rollout_gives_its_lock_back_at_once_and_resumes() {
    let cluster = EtcdCluster::start(3);
    let prefix = "/it-rollout-term";
    let dir = tempfile::tempdir().unwrap();
    let hosts = four_hosts(&cluster, prefix, TTL, dir.path(), "400001");
    let d = dir.path().to_str().unwrap();
    write(dir.path(), "svc", "400002");
    let mut r = spawn_rollout(
        &cluster,
        prefix,
        &[
            d, "--all", "--canary", "1", "--wave", "100%", "--stable", "20s",
        ],
    );
    wait_for(Duration::from_secs(30), "the canary's key", || {
        r.assert_running();
        get(&cluster, &wave_key(prefix, "h1")).map(|_| ())
    });
    assert!(
        lock(&cluster, prefix).is_some(),
        "the rollout holds the lock"
    );
    // SAFETY: a signal to the child this test started, by its PID.
    unsafe {
        libc::kill(r.pid() as i32, libc::SIGTERM);
    }
    let (code, out, err) = r.wait_exit(Duration::from_secs(15));
    assert_eq!(code, Some(2), "SIGTERM mid-wave:\n{out}{err}");
    assert!(
        err.contains("interrupted") && err.contains("fleet rollout resume"),
        "{err}"
    );
    assert_eq!(lock(&cluster, prefix), None, "the lock was given back");
    let rec = record(&cluster, prefix).unwrap();
    assert_eq!(rec["phase"], "Progressing", "{rec}");
    rollout_to_end(&cluster, prefix, &["resume"], 0, Duration::from_secs(120));
    assert_fleet_on(&cluster, prefix, &hosts, "400002");
}
