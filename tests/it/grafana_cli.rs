//! Grafana backups end to end through the CLI: a Backup manifest, its timer,
//! `unitlet backup`, `backups`, `restore [--dry-run]`, against the fake.

use serde_json::json;

use crate::fake_grafana::FakeGrafana;
use crate::support::{UserManager, stderr, stdout};

const TOKEN: &str = "glsa_cli_secret_token_5f2a9c";

fn manifest(url: &str, token_file: &std::path::Path, keep: u32) -> String {
    format!(
        "apiVersion: unitlet/v1\nkind: Backup\nmetadata: {{name: dash}}\nspec:\n  schedule: \"0 3 * * *\"\n  keep: {keep}\n  grafana:\n    url: \"{url}\"\n    tokenFile: {}\n",
        token_file.display()
    )
}

/// Complete sets `unitlet backups dash -o json` lists.
fn complete_sets(um: &UserManager) -> usize {
    let o = um.unitlet(&["backups", "dash", "-o", "json"]);
    let sets: serde_json::Value =
        serde_json::from_slice(&o.stdout).expect("backups -o json prints JSON");
    sets.as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "complete")
        .count()
}

#[test]
fn backup_delete_restore_round_trip_through_the_cli() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let fake = rt.block_on(FakeGrafana::start(TOKEN));
    fake.add_folder("a", "Alpha", None);
    fake.add_folder("b", "Beta", Some("a"));
    fake.add_folder("c", "Gamma", Some("b"));
    let folders = [None, Some("a"), Some("b"), Some("c")];
    for i in 0..40 {
        fake.put_dashboard(
            &format!("d{i:02}"),
            &format!("Dashboard {i:02}"),
            folders[i % 4],
            json!([{"id": 1, "type": "timeseries", "title": format!("p{i}")}]),
        );
    }
    let um = UserManager::start();
    let token_file = um.runtime.join("grafana-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    // Secret files must be private (unitlet refuses group/other access).
    std::fs::set_permissions(
        &token_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    um.write_manifest("dash.yaml", &manifest(fake.url(), &token_file, 2));

    // The same timer scheme as every Backup.
    let o = um.unitlet(&["apply"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(um.active("dash.timer"), "active");

    let o = um.unitlet(&["backup", "dash"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let all = format!("{}{}", stdout(&o), stderr(&o));
    assert!(!all.contains(TOKEN), "the token leaked: {all}");
    let o = um.unitlet(&["backups", "dash", "-o", "json"]);
    let sets: serde_json::Value = serde_json::from_slice(&o.stdout).expect("backups -o json");
    let sets = sets.as_array().unwrap();
    assert_eq!(sets.len(), 1);
    assert_eq!(sets[0]["status"], "complete");
    let id = sets[0]["id"].as_str().unwrap().to_string();

    let folder_key = |f: &crate::fake_grafana::FakeFolder| {
        (f.uid.clone(), f.title.clone(), f.parent_uid.clone())
    };
    let before_folders: Vec<_> = fake.folders().iter().map(folder_key).collect();
    let before: Vec<_> = fake
        .dashboards()
        .into_iter()
        .map(|d| (d.uid.clone(), d.title.clone(), d.folder_uid.clone()))
        .collect();
    fake.clear();
    let o = um.unitlet(&["restore", "dash", &id, "--dry-run"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        fake.dashboards().is_empty() && fake.folders().is_empty(),
        "dry-run changed something"
    );
    let o = um.unitlet(&["restore", "dash", &id]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let after: Vec<_> = fake
        .dashboards()
        .into_iter()
        .map(|d| (d.uid.clone(), d.title.clone(), d.folder_uid.clone()))
        .collect();
    assert_eq!(after, before);
    assert_eq!(
        fake.folders().iter().map(folder_key).collect::<Vec<_>>(),
        before_folders
    );
    let versions = fake.total_versions();
    let o = um.unitlet(&["restore", "dash", &id]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("unchanged"), "{}", stdout(&o));
    assert_eq!(
        fake.total_versions(),
        versions,
        "a repeated restore must add no versions"
    );

    // keep: 2 after three more runs.
    for _ in 0..3 {
        assert!(um.unitlet(&["backup", "dash"]).status.success());
    }
    assert_eq!(complete_sets(&um), 2);

    // A wrong token: a clear 401, no new complete set, the token nowhere.
    std::fs::write(&token_file, "glsa_wrong_token_000\n").unwrap();
    let o = um.unitlet(&["backup", "dash"]);
    assert_eq!(o.status.code(), Some(1));
    let all = format!("{}{}", stdout(&o), stderr(&o));
    assert!(all.contains("401"), "{all}");
    assert!(
        !all.contains("glsa_wrong_token_000") && !all.contains(TOKEN),
        "a token leaked: {all}"
    );
    assert_eq!(complete_sets(&um), 2);
    let status = std::fs::read_to_string(um.state_dir.join("status.json")).unwrap_or_default();
    assert!(!status.contains("glsa_"), "a token leaked into status");
    drop(fake);
    drop(rt);
}

fn report_check(um: &UserManager, name: &str) -> serde_json::Value {
    let o = um.unitlet(&["doctor", "-o", "json"]);
    let report: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("doctor -o json: {e}: {}", stdout(&o)));
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {report:#}"))
        .clone()
}

/// Issue 21 item 5: a Backup's status carries its last run's result: a
/// failed run is `Ready False` with the reason and an event in describe, a
/// successful one is Ready with the time of the last success; `doctor`
/// checks the destination.
#[test]
fn a_backup_whose_run_fails_is_not_ready_with_the_reason_and_an_event() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let fake = rt.block_on(FakeGrafana::start(TOKEN));
    for i in 0..5 {
        fake.put_dashboard(&format!("d{i}"), &format!("D {i}"), None, json!([]));
    }
    let um = UserManager::start();
    let token_file = um.runtime.join("grafana-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(
        &token_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    um.write_manifest("dash.yaml", &manifest(fake.url(), &token_file, 2));
    let o = um.unitlet(&["apply"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));

    // A scheduled run (the timer's oneshot) that fails.
    fake.fail_dashboard_gets(1, usize::MAX);
    let o = um.systemctl(&["start", "dash.service"]);
    assert!(!o.status.success(), "the run fails: {}", stderr(&o));
    let o = um.unitlet(&["apply"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let (st, reason, msg) = um.ready("dash").unwrap();
    assert_eq!(
        (st.as_str(), reason.as_str()),
        ("False", "BackupFailed"),
        "{msg}"
    );
    assert!(msg.contains("500"), "says why: {msg}");
    let o = um.unitlet(&["describe", "dash"]);
    let text = stdout(&o);
    assert!(
        text.lines()
            .any(|l| l.contains("Warning") && l.contains("BackupFailed") && l.contains("500")),
        "describe has the event: {text}"
    );
    // Another pass adds no second event for the same run.
    um.unitlet(&["apply"]);
    let o = um.unitlet(&["describe", "dash"]);
    let events = stdout(&o)
        .lines()
        .filter(|l| l.contains("Warning") && l.contains("BackupFailed"))
        .count();
    assert_eq!(events, 1, "{}", stdout(&o));

    // The next run succeeds: Ready again, saying when.
    fake.fail_dashboard_gets(0, 0);
    let o = um.systemctl(&["start", "dash.service"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = um.unitlet(&["apply"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let (st, reason, msg) = um.ready("dash").unwrap();
    assert_eq!((st.as_str(), reason.as_str()), ("True", "Running"), "{msg}");
    assert!(msg.contains("last success"), "{msg}");

    // The operator notices a run's outcome without waiting for a resync
    // (it runs with `--resync 1h` here): the oneshot's end wakes a pass,
    // and `unitlet backup` records the outcome before it exits.
    let mut run = um.spawn_run(&[]);
    run.settle(std::time::Duration::from_secs(30));
    fake.fail_dashboard_gets(1, usize::MAX);
    let o = um.systemctl(&["start", "dash.service"]);
    assert!(!o.status.success(), "the run fails: {}", stderr(&o));
    um.wait_reason("dash", "BackupFailed", std::time::Duration::from_secs(30));
    fake.fail_dashboard_gets(0, 0);
    let o = um.systemctl(&["start", "dash.service"]);
    assert!(o.status.success(), "{}", stderr(&o));
    um.wait_reason("dash", "Running", std::time::Duration::from_secs(30));
    run.stop();

    // doctor checks the destination.
    let c = report_check(&um, "backup-destination/dash");
    assert_eq!(c["status"], "OK", "{c}");
    let dest = um.state_dir.join("backups/dash");
    std::fs::set_permissions(&dest, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let c = report_check(&um, "backup-destination/dash");
    assert_eq!(c["status"], "FAIL", "{c}");
    assert!(
        c["reason"]
            .as_str()
            .unwrap()
            .contains("writable by other users"),
        "{c}"
    );
    drop(um);
    drop(fake);
    drop(rt);
}
