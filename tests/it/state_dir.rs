//! The state directory holds holds: it is trusted only when nobody else
//! can write it, like the manifests directory.

use std::os::unix::fs::PermissionsExt;

use crate::support::{UserManager, service, stderr, stdout};

fn chmod(p: &std::path::Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn state_dir_writable_by_other_users_is_refused() {
    let um = UserManager::start();
    um.write_manifest("x.yaml", &service("x", ""));
    let holds = um.state_dir.join("holds");
    std::fs::create_dir_all(&holds).unwrap();
    // Somebody else's hold, planted while holds/ was open to all: it names
    // a live process, so it would freeze x for as long as that lives.
    std::fs::write(holds.join("x"), std::process::id().to_string()).unwrap();
    for (dir, mode) in [
        (&um.state_dir, 0o777),
        (&holds, 0o777),
        (&um.state_dir, 0o775),
    ] {
        chmod(dir, mode);
        let o = um.unitlet(&["apply"]);
        assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains(&format!("{} is writable by other users", dir.display()))
                && err.contains(&format!("mode {mode:04o}"))
                && err.contains("owner uid")
                && err.contains(&format!("chmod go-w {}", dir.display())),
            "{err}"
        );
        let o = um.unitlet(&["plan"]);
        assert_eq!(o.status.code(), Some(2), "plan refuses too: {}", stdout(&o));
        assert!(
            !um.unit_dir.join("x.service").exists(),
            "nothing may be applied"
        );
        chmod(dir, 0o755);
    }
    // Someone else's state directory.
    let nobody = 65534;
    std::os::unix::fs::chown(&um.state_dir, Some(nobody), None).unwrap();
    let o = um.unitlet(&["apply"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("is owned by another user") && stderr(&o).contains("uid 65534"),
        "{}",
        stderr(&o)
    );
    std::os::unix::fs::chown(&um.state_dir, Some(unsafe { libc::geteuid() }), None).unwrap();
    // Fixed, and the planted hold removed: x is applied.
    std::fs::remove_file(holds.join("x")).unwrap();
    let o = um.unitlet(&["apply"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(um.active("x.service"), "active");
}

#[test]
fn directories_unitlet_creates_pass_its_own_check_under_umask_002() {
    let um = UserManager::start();
    um.write_manifest("x.yaml", &service("x", ""));
    assert!(!um.state_dir.exists());
    // Each nextest test is its own process: the umask is ours alone, and
    // the unitlet processes started from here inherit it.
    unsafe {
        libc::umask(0o002);
    }
    let mut run = um.spawn_run(&[]);
    run.wait_log("reconciled", std::time::Duration::from_secs(20));
    run.stop();
    use std::os::unix::fs::MetadataExt;
    for d in [um.state_dir.clone(), um.state_dir.join("holds")] {
        let mode = std::fs::metadata(&d).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o755, "{}", d.display());
    }
    let o = um.unitlet(&["apply"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
}

/// A process that has exited: its PID names nobody (for a while).
fn dead_pid() -> u32 {
    let mut c = std::process::Command::new("true").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    pid
}

/// Issue 20, item 4: a planted restore journal (its PID dead, step
/// `copy`, its `staging` naming an unrelated directory) never makes
/// `apply` delete that directory: with the state directory (or its
/// `restores/`) at 0777 nothing is read from it at all, and at 0700 the
/// journal names what no restore of that service creates, so it is stuck,
/// reported, and nothing is touched.
#[test]
fn issue20_4_a_planted_journal_never_deletes_the_directory_it_names() {
    let um = UserManager::start();
    um.write_manifest("x.yaml", &service("x", ""));
    let data = um.runtime.join("prom/data");
    std::fs::create_dir_all(&data).unwrap();
    um.write_manifest(
        "tsdb.yaml",
        &format!(
            "apiVersion: unitlet/v1\nkind: Backup\nmetadata:\n  name: tsdb\nspec:\n  schedule: every 6h\n  prometheus:\n    url: http://127.0.0.1:9\n    dataDir: {}\n    service: x\n",
            data.display()
        ),
    );
    let precious = um.runtime.join("precious");
    std::fs::create_dir_all(&precious).unwrap();
    std::fs::write(precious.join("thesis.tex"), "years of work").unwrap();
    let restores = um.state_dir.join("restores");
    std::fs::create_dir_all(&restores).unwrap();
    let journal = restores.join("x.json");
    let planted = serde_json::json!({
        "pid": dead_pid(),
        "started": "2026-11-28T05:00:00Z",
        "backup": "tsdb",
        "setId": "20261127T235501Z",
        "service": "x",
        "dataDir": data,
        "staging": precious,
        "replaced": null,
        "step": "copy",
    });
    std::fs::write(&journal, serde_json::to_vec(&planted).unwrap()).unwrap();
    let survives = |when: &str| {
        assert_eq!(
            std::fs::read_to_string(precious.join("thesis.tex"))
                .ok()
                .as_deref(),
            Some("years of work"),
            "{when}: the directory the journal names survives"
        );
        assert!(journal.is_file(), "{when}: the journal is kept");
    };
    let plant_victim = || {
        std::fs::create_dir_all(&precious).unwrap();
        std::fs::write(precious.join("thesis.tex"), "years of work").unwrap();
    };
    // Private (0700): the journal names what no restore of x creates, so
    // it is stuck, reported, and nothing is touched.
    chmod(&um.state_dir, 0o700);
    let o = um.unitlet(&["apply"]);
    let err = stderr(&o);
    survives("0700");
    assert!(
        err.contains("could not be recovered")
            && err.contains(&precious.display().to_string())
            && err.contains("never creates")
            && err.contains("nothing was touched"),
        "the stuck journal is reported: {}{err}",
        stdout(&o)
    );
    // It keeps its service held, and says why.
    let (status, reason, _) = um.ready("x").unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "RestoreInterrupted")
    );
    assert_ne!(
        um.active("x.service"),
        "active",
        "a held service is not started"
    );
    // Open to others (0777), the state directory or its restores/: refused
    // before anything is read there.
    for dir in [&um.state_dir, &restores] {
        plant_victim();
        let mine = ["unitlet.lock", "status.json", "restores/.x.lock"];
        for f in mine {
            let _ = std::fs::remove_file(um.state_dir.join(f));
        }
        chmod(dir, 0o777);
        let o = um.unitlet(&["apply"]);
        assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
        assert!(
            stderr(&o).contains(&format!("{} is writable by other users", dir.display())),
            "{}",
            stderr(&o)
        );
        survives(&format!("{} at 0777", dir.display()));
        // No lock was taken, no status written, the journal's lock never
        // opened.
        for f in mine {
            assert!(!um.state_dir.join(f).exists(), "{f} at 0777");
        }
        chmod(dir, 0o700);
    }
}

/// Issue 20, item 3: a journal that cannot be recovered (here: not JSON)
/// beside an idle `unitlet run` neither makes the operator wake itself
/// (nothing it writes wakes it) nor logs the same error at every pass:
/// it is reported once per change.
#[test]
fn issue20_3_a_stuck_journal_does_not_make_the_operator_wake_itself() {
    use std::time::{Duration, Instant};
    const T: Duration = Duration::from_secs(20);
    // Each nextest test is its own process: this reaches only our
    // operator, which then says what woke each pass.
    // SAFETY: set before any thread of this test reads the environment.
    unsafe { std::env::set_var("UNITLET_TEST_LOG", "info,unitlet::operator=debug") };
    let um = UserManager::start();
    um.write_manifest("x.yaml", &service("x", ""));
    let restores = um.state_dir.join("restores");
    std::fs::create_dir_all(&restores).unwrap();
    let journal = restores.join("x.json");
    std::fs::write(&journal, "{ not json").unwrap();
    let run = um.spawn_run(&[]);
    run.wait_log("cannot be read", T);
    // A pass after now, then the loop idle.
    run.settle(T);
    let mark = run.mark();
    // Nothing in the watched directories changes from here on (resync is
    // 1h): watched for a while, failing as soon as a file change wakes the
    // operator. (The fresh user manager may still send unit signals,
    // which are not the operator's own doing.)
    let window = Duration::from_secs(3);
    let t0 = Instant::now();
    while t0.elapsed() < window {
        let wakes = run.count_since(mark, " woken by a file change");
        assert_eq!(
            wakes,
            0,
            "{wakes} file-change wake-ups within {:?} of an idle operator: it wakes itself",
            t0.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let reports = |log: &str| log.matches("cannot be read").count();
    assert_eq!(reports(&run.log()), 1, "reported once: {}", run.log());
    // Another state of the journal is reported once more.
    std::fs::write(&journal, "[1, 2").unwrap();
    run.settle(T);
    assert_eq!(reports(&run.log()), 2, "{}", run.log());
    run.settle(T);
    assert_eq!(reports(&run.log()), 2, "{}", run.log());
    // Removed by hand: x is no longer held.
    std::fs::remove_file(&journal).unwrap();
    run.next_pass(T);
    um.wait_active("x.service", T);
}
