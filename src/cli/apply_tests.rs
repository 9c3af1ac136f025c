//! `unitlet apply`'s pass against the in-memory user manager: what it
//! saves when the pass fails part-way.

use std::path::PathBuf;
use std::time::Duration;

use super::{ApplyTally, apply_round};
use crate::locations::Locations;
use crate::manager::fake::FakeManager;
use crate::reconcile::Reconciler;
use crate::status::Status;

fn service(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: unitlet/v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  command: [/bin/sleep, infinity]\n{extra}"
    )
}

/// Issue 20 item 6: a stop done before the daemon-reload fails is in the
/// saved status (its event and the pass's error), not lost with the pass.
#[tokio::test]
async fn apply_saves_status_when_the_pass_fails_after_a_stop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (loc, sd) = crate::reconcile::pass_tests::fake_world(dir.path());
    let mut rec = Reconciler::new(loc.clone(), PathBuf::from("/usr/bin/unitlet"));
    rec.set_gc_grace(Duration::ZERO);
    let write = |file: &str, content: &str| {
        std::fs::write(loc.manifests.join(file), content).expect("write manifest");
    };
    write("a.yaml", &service("a", ""));
    write("b.yaml", &service("b", ""));
    let mut tally = ApplyTally::default();
    apply_round(&loc, &sd, &mut rec, Vec::new(), &mut tally)
        .await
        .expect("first pass");
    assert_eq!(sd.state("b.service").0, "active");

    // b is to stop; a's unit changes, which takes a daemon-reload, which
    // fails after the stop.
    write("b.yaml", &service("b", "  state: stopped\n"));
    write("a.yaml", &service("a", "  description: changed\n"));
    sd.fail_reloads(true);
    let err = apply_round(&loc, &sd, &mut rec, Vec::new(), &mut tally)
        .await
        .err()
        .expect("the pass fails");
    assert_eq!(sd.state("b.service").0, "inactive", "b was stopped first");

    let saved = Status::load(&loc.status_file());
    let events: Vec<(&str, &str)> = saved
        .events
        .iter()
        .map(|e| (e.object.as_str(), e.reason.as_str()))
        .collect();
    assert!(
        events.contains(&("b", "Stopped")),
        "the stop is in the saved status: {events:?}"
    );
    let why = saved.operator_error.as_deref().unwrap_or_default();
    assert!(
        why.contains("Connection reset by peer"),
        "the saved status says why the pass failed: {why:?} (error: {err})"
    );
}

/// Issue 20 item 13: a status file that does not parse is moved aside
/// (its events are not lost), and the new status says where it went.
#[tokio::test]
async fn apply_moves_a_corrupt_status_file_aside_and_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let loc = Locations {
        manifests: dir.path().join("manifests"),
        state_dir: dir.path().join("state"),
        unit_dir: dir.path().join("units"),
        bus: None,
        alertmanager: "http://127.0.0.1:9".into(),
    };
    for d in [&loc.manifests, &loc.state_dir, &loc.unit_dir] {
        std::fs::create_dir_all(d).expect("dir");
    }
    let garbage = b"{\"events\": [{\"time\": \"2026-01-01T00:00:00Z\", \"obj";
    std::fs::write(loc.status_file(), garbage).expect("write status");
    let sd = FakeManager::new(&loc.unit_dir, &dir.path().join("config"));
    let mut rec = Reconciler::new(loc.clone(), PathBuf::from("/usr/bin/unitlet"));
    std::fs::write(loc.manifests.join("a.yaml"), service("a", "")).expect("manifest");
    let mut tally = ApplyTally::default();
    apply_round(&loc, &sd, &mut rec, Vec::new(), &mut tally)
        .await
        .expect("the pass runs");
    let aside: Vec<PathBuf> = std::fs::read_dir(&loc.state_dir)
        .expect("state dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("status.json.corrupt-"))
        })
        .collect();
    assert_eq!(aside.len(), 1, "the bad file is kept aside: {aside:?}");
    assert_eq!(std::fs::read(&aside[0]).expect("read aside"), garbage);
    let saved = std::fs::read_to_string(loc.status_file()).expect("new status");
    let name = aside[0].file_name().unwrap().to_str().unwrap();
    assert!(
        saved.contains(name),
        "the new status names the file kept aside: {saved}"
    );
}
