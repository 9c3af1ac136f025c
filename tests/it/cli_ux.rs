//! What the commands say in the common slips: a shell without unitlet's
//! environment, a corrupt status file, mistyped manifests, a program that
//! is not installed (issues 20 and 21).

use std::path::Path;
use std::process::{Command, Output, Stdio};

use std::time::Duration;

use crate::support::{UNITLET, UserManager, service, stderr, stdout};

const T: Duration = Duration::from_secs(30);

/// `unitlet ARGS` in an environment with nothing but `HOME` and `PATH`
/// (and `extra`): no XDG directories, no session bus.
fn bare(home: &Path, args: &[&str], extra: &[(&str, &str)]) -> Output {
    let mut c = Command::new(UNITLET);
    c.env_clear()
        .env("HOME", home)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    for (k, v) in extra {
        c.env(k, v);
    }
    c.args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run unitlet")
}

/// A bus address where nothing answers.
fn nowhere(home: &Path) -> String {
    format!("unix:path={}/no-bus-here", home.display())
}

/// Issue 21 item 11: `get` without a manifests directory says so and exits
/// 2, as `plan` does, instead of an empty table and 0.
#[test]
fn get_without_a_manifests_directory_says_so_and_exits_2() {
    let home = tempfile::tempdir().unwrap();
    let o = bare(home.path(), &["get"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("does not exist") && stderr(&o).contains("manifests"),
        "{}",
        stderr(&o)
    );
    assert!(
        !stdout(&o).contains("NAME"),
        "no empty table: {}",
        stdout(&o)
    );
}

/// Issue 21 item 11: `get` with nothing to show because no user manager
/// answers says so and exits 2.
#[test]
fn get_with_no_user_manager_and_nothing_to_show_says_so_and_exits_2() {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join(".config/unitlet/manifests")).unwrap();
    let bus = nowhere(home.path());
    let o = bare(home.path(), &["get"], &[("UNITLET_BUS", &bus)]);
    assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("cannot connect to the user's systemd"),
        "{}",
        stderr(&o)
    );
}

/// Issue 20 item 13: `get` reports a status file it cannot use, and one
/// moved aside earlier, on stderr and in `-o json`.
#[test]
fn get_reports_a_corrupt_status_file() {
    let home = tempfile::tempdir().unwrap();
    let manifests = home.path().join(".config/unitlet/manifests");
    let state = home.path().join(".local/state/unitlet");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    std::fs::set_permissions(&state, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    std::fs::write(manifests.join("x.yaml"), service("x", "")).unwrap();
    std::fs::write(state.join("status.json"), "{\"objects\": {").unwrap();
    let bus = nowhere(home.path());
    let env = [("UNITLET_BUS", bus.as_str())];
    let o = bare(home.path(), &["get"], &env);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("status.json is not valid status JSON") && err.contains("aside"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(state.join("status.json")).unwrap(),
        b"{\"objects\": {",
        "a reader moves nothing"
    );

    // As the next pass leaves it: moved aside, named in the new status.
    let aside = state.join("status.json.corrupt-20261206T000000Z");
    std::fs::rename(state.join("status.json"), &aside).unwrap();
    let status = serde_json::json!({"movedAside": {
        "file": aside, "reason": "is not valid status JSON: EOF", "time": "2026-12-06T00:00:00Z"}});
    std::fs::write(state.join("status.json"), status.to_string()).unwrap();
    let o = bare(home.path(), &["get", "-o", "json"], &env);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains(&aside.display().to_string()),
        "{}",
        stderr(&o)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let w = v[0]["statusWarning"].as_str().unwrap_or_default();
    assert!(w.contains(&aside.display().to_string()), "{v}");
    // Once the file kept aside is deleted, the warning goes.
    std::fs::remove_file(&aside).unwrap();
    let o = bare(home.path(), &["get"], &env);
    assert!(!stderr(&o).contains("aside"), "{}", stderr(&o));
}

/// Issue 21 item 7: a Service whose program is not installed is not
/// started (no restart loop: NRestarts stays 0), shows BinaryMissing,
/// `doctor` only warns about it, and the operator starts it once the
/// program appears.
#[test]
fn a_service_whose_program_is_missing_is_not_started_until_it_is_installed() {
    let um = UserManager::start();
    let prog = um.runtime.join("opt/bin/grafana-server");
    um.write_manifest(
        "graf.yaml",
        &format!(
            "apiVersion: unitlet/v1\nkind: Service\nmetadata:\n  name: graf\nspec:\n  command: [{}, \"100000\"]\n  restart: always\n  restartSec: 100ms\n",
            prog.display()
        ),
    );
    let o = um.unitlet(&["apply", "--timeout", "10s"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let (status, reason, message) = um.ready("graf").expect("graf listed");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "BinaryMissing"),
        "{message}"
    );
    assert_eq!(um.active("graf.service"), "inactive", "never started");
    assert_eq!(um.prop("graf.service", "NRestarts"), "0");

    let o = um.unitlet(&["doctor", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("doctor json");
    let check = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "program/graf")
        .expect("a program check");
    assert_eq!(check["status"], "WARN", "{check}");

    let mut run = um.spawn_run(&["--resync", "1s"]);
    let mark = run.mark();
    run.wait_passes(mark, 2, T);
    assert_eq!(
        um.active("graf.service"),
        "inactive",
        "the operator waits too"
    );
    assert_eq!(um.prop("graf.service", "NRestarts"), "0");
    std::fs::create_dir_all(prog.parent().unwrap()).unwrap();
    std::fs::write(&prog, "#!/bin/sh\nexec sleep \"$1\"\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
    um.wait_ready("graf", "True", T);
    assert_eq!(um.active("graf.service"), "active");
    assert_eq!(um.prop("graf.service", "NRestarts"), "0");
    assert!(run.stop().success());
}

/// Issue 21 item 12, at the command line: `validate` prints every error
/// of a file, each with its hint, and counts them.
#[test]
fn validate_prints_every_error_of_a_file_with_its_hint() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("web.yaml");
    std::fs::write(
        &f,
        "apiVersion: unitlet/v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  command: [/bin/true]\n  restartSec: 5 minuts\n  http:\n    url: http://127.0.0.1:1/\n  resources:\n    tasksMax: \"64\"\n",
    )
    .unwrap();
    let o = bare(dir.path(), &["validate", f.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines[0].contains("web.yaml:7:") && lines[0].contains("e.g. 500ms"),
        "{out}"
    );
    assert!(
        lines[1].contains("web.yaml:8:") && lines[1].contains("`readiness.http`"),
        "{out}"
    );
    assert!(
        lines[2].contains("web.yaml:11:") && lines[2].contains("without the quotes"),
        "{out}"
    );
    assert!(lines[3].contains("3 error(s) in 1 file(s)"), "{out}");
    assert!(!out.contains("expected one of"), "{out}");
    let tab = dir.path().join("tab.yaml");
    std::fs::write(
        &tab,
        "apiVersion: unitlet/v1\nkind: Service\nmetadata:\n\tname: tab\n",
    )
    .unwrap();
    let o = bare(dir.path(), &["validate", tab.to_str().unwrap()], &[]);
    assert!(
        stdout(&o).contains("replace the tab with spaces"),
        "{}",
        stdout(&o)
    );
}

/// A status message about an unknown field says which and where, without
/// the list of every field (`validate` prints that list; `get` does not).
#[test]
fn status_messages_do_not_carry_the_list_of_every_field() {
    let home = tempfile::tempdir().unwrap();
    let manifests = home.path().join(".config/unitlet/manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(
        manifests.join("web.yaml"),
        "apiVersion: unitlet/v1\nkind: Service\nmetadata: {name: web}\nspec:\n  command: [/bin/true]\n  zzzq: 1\n",
    )
    .unwrap();
    let bus = nowhere(home.path());
    let env = [("UNITLET_BUS", bus.as_str())];
    let o = bare(home.path(), &["validate"], &env);
    assert!(stdout(&o).contains("expected one of"), "{}", stdout(&o));
    let o = bare(home.path(), &["get", "-o", "json"], &env);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let ready = v[0]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .cloned()
        .unwrap_or_default();
    let msg = ready["message"].as_str().unwrap_or_default();
    assert_eq!(ready["reason"], "Invalid", "{v}");
    assert!(msg.contains("unknown field `zzzq`"), "{msg}");
    assert!(!msg.contains("expected one of"), "{msg}");
}

/// A missing manifests directory is one cause with one exit status: 2
/// (operational), whichever command meets it. It was 1 from `validate`,
/// `render`, `backup`, `backups` and `restore`, 2 from `get` (and from
/// `apply` and `plan`, which need a user manager first).
#[test]
fn a_missing_manifests_directory_exits_2_from_every_command() {
    let home = tempfile::tempdir().unwrap();
    let missing = home.path().join("no-manifests-here");
    let dir = missing.to_str().unwrap();
    let bus = nowhere(home.path());
    let env = [("UNITLET_BUS", bus.as_str()), ("UNITLET_MANIFESTS", dir)];
    for args in [
        &["validate"][..],
        &["render", "web"],
        &["get"],
        &["backup", "tsdb"],
        &["backups"],
        &["restore", "tsdb", "S1", "--dry-run"],
    ] {
        let o = bare(home.path(), args, &env);
        assert_eq!(
            o.status.code(),
            Some(2),
            "unitlet {}: {}{}",
            args.join(" "),
            stdout(&o),
            stderr(&o)
        );
        assert!(
            stderr(&o).contains("no-manifests-here"),
            "unitlet {} names the directory: {}",
            args.join(" "),
            stderr(&o)
        );
    }
}
