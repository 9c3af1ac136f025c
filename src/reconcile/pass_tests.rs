//! Whole passes (prepare → plan → apply → status) against the in-memory
//! user manager: the reconcile logic in milliseconds, without systemd. The
//! same behaviour against a real user manager is in `tests/it/`.

use std::path::PathBuf;
use std::time::Duration;

use crate::locations::Locations;
use crate::manager::fake::FakeManager;
use crate::manager::{JobKind, ServiceResult};
use crate::status::ConditionStatus::{False, True};
use crate::status::{ConditionStatus, Reason, Status};
use crate::work::{Outcome, Work};

use super::{PassReport, Reconciler};

/// A manifests directory, a unit directory, a state directory and a fake
/// user manager, with the status that passes leave behind.
struct World {
    dir: tempfile::TempDir,
    sd: FakeManager,
    rec: Reconciler,
    status: Status,
}

fn service(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: unitlet/v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  command: [/bin/sleep, infinity]\n{extra}"
    )
}

/// The spec lines of a memory limit.
fn memory_max(size: &str) -> String {
    format!("  resources:\n    memoryMax: {size}\n")
}

/// Manifests, state and unit directories made under `dir`, and an
/// in-memory manager over them: what every whole-pass test (here, in
/// `cli` and in `operator`) starts from.
pub(crate) fn fake_world(dir: &std::path::Path) -> (Locations, FakeManager) {
    let loc = Locations {
        manifests: dir.join("manifests"),
        state_dir: dir.join("state"),
        unit_dir: dir.join("units"),
        bus: None,
        // Nothing listens here: silences fail fast and are only events.
        alertmanager: "http://127.0.0.1:9".into(),
    };
    for d in [&loc.manifests, &loc.state_dir, &loc.unit_dir] {
        std::fs::create_dir_all(d).expect("dir");
    }
    let sd = FakeManager::new(&loc.unit_dir, &dir.join("config"));
    (loc, sd)
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let (loc, sd) = fake_world(dir.path());
        let mut rec = Reconciler::new(loc, PathBuf::from("/usr/bin/unitlet"));
        rec.gc_grace = Duration::ZERO;
        World {
            dir,
            sd,
            rec,
            status: Status::default(),
        }
    }

    fn write(&self, file: &str, content: &str) {
        let path = self.rec.loc.manifests.join(file);
        std::fs::write(path, content).expect("write manifest");
    }

    fn remove(&self, file: &str) {
        std::fs::remove_file(self.rec.loc.manifests.join(file)).expect("remove manifest");
    }

    fn unit_file(&self, unit: &str) -> Option<String> {
        std::fs::read_to_string(self.rec.loc.unit_dir.join(unit)).ok()
    }

    /// One pass; the work it hands out is returned, not run. Rollout
    /// watches are left out: they watch D-Bus properties only the real
    /// manager has (tests/it/rollout.rs covers them).
    async fn pass(&mut self) -> PassReport {
        let prep = self
            .rec
            .prepare(&self.sd, &self.status)
            .await
            .expect("prepare");
        let mut r = self
            .rec
            .apply(&self.sd, prep, &mut self.status)
            .await
            .expect("apply");
        r.work.retain(|w| !matches!(w, Work::Rollout(_)));
        r
    }

    /// A running Service `web` whose config file (returned) is reloaded
    /// with SIGHUP.
    async fn with_config_reloaded_by_sighup() -> (World, PathBuf) {
        let mut w = World::new();
        let conf = w.dir.path().join("web.conf");
        std::fs::write(&conf, "a").unwrap();
        let extra = format!(
            "  configFiles: [{}]\n  onConfigChange: reload\n  reload:\n    signal: SIGHUP\n",
            conf.display()
        );
        w.write("web.yaml", &service("web", &extra));
        let r = w.pass().await;
        assert!(r.work.is_empty(), "nothing to reload yet: {:?}", r.work);
        (w, conf)
    }

    /// Run handed-out work against the fake manager and fold it in.
    async fn run_work(&mut self, work: Vec<Work>) {
        for w in work {
            let o: Outcome = w
                .run(
                    self.sd.clone(),
                    self.rec.http.clone(),
                    Duration::from_secs(5),
                )
                .await;
            self.rec.finish(o, &mut self.status);
        }
    }

    fn ready(&self, name: &str) -> (ConditionStatus, Reason, String) {
        let c = self.status.objects[name]
            .ready()
            .expect("a Ready condition");
        (c.status, c.reason, c.message.clone())
    }

    fn live_memory_max(&self, unit: &str) -> u64 {
        let sd = self.sd.clone();
        let unit = unit.to_string();
        futures_util::FutureExt::now_or_never(async move {
            use crate::manager::UserManager;
            let path = sd.load_unit(&unit).await?;
            sd.live_limits(&unit, &path).await
        })
        .expect("the fake answers at once")
        .expect("limits")
        .memory_max
    }
}

#[tokio::test]
async fn a_new_manifest_is_started_once_and_then_left_alone() {
    let mut w = World::new();
    w.write("web.yaml", &service("web", ""));
    let r = w.pass().await;
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    assert_eq!(w.sd.jobs("web.service"), vec![JobKind::Start]);
    assert_eq!(w.sd.reloads(), 0, "a new unit is loaded on demand");
    assert!(w.unit_file("web.service").is_some());
    let (st, reason, msg) = w.ready("web");
    assert_eq!((st, reason), (True, Reason::Running), "{msg}");

    let r = w.pass().await;
    assert_eq!(r.actions, 0, "a second pass has nothing to do");
    assert_eq!(w.sd.jobs("web.service"), vec![JobKind::Start]);
    assert_eq!(w.sd.reloads(), 0);
}

/// Issue 21 item 7: a Service whose program is not installed is not
/// started (no restart loop), shows BinaryMissing, and is started by the
/// first pass after the program appears.
#[tokio::test]
async fn a_service_whose_program_is_missing_is_started_only_once_it_is_installed() {
    let mut w = World::new();
    let prog = w.dir.path().join("bin/grafana-server");
    let m = format!(
        "apiVersion: unitlet/v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  command: [{}]\n",
        prog.display()
    );
    w.write("web.yaml", &m);
    w.pass().await;
    assert_eq!(w.sd.jobs("web.service"), vec![], "nothing is started");
    assert!(w.unit_file("web.service").is_some(), "the unit is written");
    let (st, reason, msg) = w.ready("web");
    assert_eq!((st, reason), (False, Reason::BinaryMissing), "{msg}");
    w.pass().await;
    assert_eq!(w.sd.jobs("web.service"), vec![], "nor by the next pass");

    std::fs::create_dir_all(prog.parent().unwrap()).unwrap();
    std::fs::write(&prog, "#!/bin/sh\nexec sleep 100\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
    w.pass().await;
    assert_eq!(w.sd.jobs("web.service"), vec![JobKind::Start]);
    let (st, reason, msg) = w.ready("web");
    assert_eq!((st, reason), (True, Reason::Running), "{msg}");
}

#[tokio::test]
async fn a_new_unit_systemd_does_not_find_on_demand_gets_one_daemon_reload() {
    let mut w = World::new();
    w.sd.without_load_on_demand();
    w.write("web.yaml", &service("web", ""));
    w.write("api.yaml", &service("api", ""));
    let r = w.pass().await;
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    assert_eq!(w.sd.reloads(), 1, "one daemon-reload for both");
    for unit in ["web.service", "api.service"] {
        assert_eq!(w.sd.state(unit).0, "active", "{unit}");
    }
    assert_eq!(w.ready("web").0, True);

    let r = w.pass().await;
    assert_eq!(r.actions, 0, "a second pass has nothing to do");
    assert_eq!(w.sd.reloads(), 1);
}

#[tokio::test]
async fn links_and_first_histories_of_a_handed_out_batch_wait_for_its_jobs() {
    let mut w = World::new();
    // As the operator: the start jobs are handed out, not waited for.
    w.rec.start_wait = Duration::ZERO;
    w.write("web.yaml", &service("web", ""));
    let wants = w
        .dir
        .path()
        .join("config/systemd/user/default.target.wants/web.service");
    let history = w.rec.loc.state_dir.join("rollouts/web.json");
    let r = w.pass().await;
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    assert_eq!(w.sd.jobs("web.service"), vec![JobKind::Start]);
    let jobs: Vec<Work> = r
        .work
        .into_iter()
        .filter(|x| matches!(x, Work::Jobs(_)))
        .collect();
    assert_eq!(jobs.len(), 1, "the start is handed out");
    assert!(!wants.exists(), "no link while the batch starts");
    assert!(!history.exists(), "no history file while the batch starts");

    // A pass meanwhile neither enables it another way nor starts it again.
    let r = w.pass().await;
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    assert!(
        w.sd.enabled_by_call().is_empty(),
        "{:?}",
        w.sd.enabled_by_call()
    );
    assert!(!wants.exists());

    // The batch ends: the next pass links it and saves revision 1.
    w.run_work(jobs).await;
    let r = w.pass().await;
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    assert!(
        std::fs::read_link(&wants).is_ok(),
        "linked once the batch ended"
    );
    assert!(
        w.sd.enabled_by_call().is_empty(),
        "by a link, not EnableUnitFiles"
    );
    let h = crate::rollout::history::load(&w.rec.loc.state_dir, "web").expect("history");
    assert_eq!(h.revisions.len(), 1, "{h:?}");
    assert_eq!(h.revisions[0].revision, 1);
    assert_eq!(
        w.sd.jobs("web.service"),
        vec![JobKind::Start],
        "started once"
    );

    // An edit records revision 2 on top of it.
    w.write("web.yaml", &service("web", "  description: changed\n"));
    let r = w.pass().await;
    w.run_work(r.work).await;
    w.pass().await;
    let h = crate::rollout::history::load(&w.rec.loc.state_dir, "web").expect("history");
    let revs: Vec<u32> = h.revisions.iter().map(|r| r.revision).collect();
    assert_eq!(revs, vec![1, 2]);
}

#[tokio::test]
async fn an_edit_before_the_batch_ends_keeps_the_unsaved_first_revision() {
    let mut w = World::new();
    w.rec.start_wait = Duration::ZERO;
    w.write("web.yaml", &service("web", ""));
    let first = w.pass().await.work;
    // Edited while the first start still runs: revision 2 builds on the
    // unsaved revision 1, and the first batch's end does not undo it.
    w.write("web.yaml", &service("web", "  description: changed\n"));
    let second = w.pass().await.work;
    w.run_work(second).await;
    w.run_work(first).await;
    w.pass().await;
    let h = crate::rollout::history::load(&w.rec.loc.state_dir, "web").expect("history");
    let revs: Vec<(u32, String)> = h
        .revisions
        .iter()
        .map(|r| (r.revision, r.reason.clone()))
        .collect();
    assert_eq!(revs.len(), 2, "{revs:?}");
    assert_eq!(revs[0].0, 1);
    assert_eq!(revs[1].0, 2);
    assert!(
        !revs[0].1.contains("before unitlet"),
        "revision 1 is the one unitlet recorded, not a guess from the file: {revs:?}"
    );
}

#[tokio::test]
async fn a_changed_unit_file_of_a_loaded_unit_is_reloaded_once_beside_new_ones() {
    let mut w = World::new();
    w.write("web.yaml", &service("web", ""));
    w.pass().await;
    w.write("web.yaml", &service("web", "  description: changed\n"));
    w.write("api.yaml", &service("api", ""));
    let r = w.pass().await;
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    assert_eq!(w.sd.reloads(), 1);
    assert_eq!(
        w.sd.jobs("web.service"),
        vec![JobKind::Start, JobKind::Restart]
    );
    assert_eq!(w.sd.jobs("api.service"), vec![JobKind::Start]);
}

#[tokio::test]
async fn a_limits_only_change_is_applied_live_without_a_restart() {
    let mut w = World::new();
    w.write("web.yaml", &service("web", &memory_max("100M")));
    w.pass().await;
    assert_eq!(w.live_memory_max("web.service"), 100 << 20);

    w.write("web.yaml", &service("web", &memory_max("200M")));
    let r = w.pass().await;
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    assert_eq!(w.sd.jobs("web.service"), vec![JobKind::Start], "no restart");
    assert_eq!(w.live_memory_max("web.service"), 200 << 20);
    assert!(
        w.status
            .events_for("web")
            .any(|e| e.reason == crate::status::EventReason::LimitsApplied),
        "{:?}",
        w.status.events
    );
    assert_eq!(w.ready("web").0, True);
}

#[tokio::test]
async fn a_limit_changed_by_hand_is_restored_without_a_restart() {
    let mut w = World::new();
    w.write("web.yaml", &service("web", &memory_max("100M")));
    w.pass().await;
    w.sd.set_property("web.service", "MemoryMax", "314572800");
    assert_eq!(w.live_memory_max("web.service"), 300 << 20);

    let r = w.pass().await;
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    assert_eq!(w.live_memory_max("web.service"), 100 << 20);
    assert_eq!(w.sd.jobs("web.service"), vec![JobKind::Start], "no restart");
}

#[tokio::test]
async fn garbage_collection_stops_and_removes_only_units_unitlet_owns() {
    let mut w = World::new();
    w.write("web.yaml", &service("web", ""));
    w.pass().await;
    // A unit of someone else's, running, in the same directory.
    let foreign = "[Service]\nExecStart=/bin/sleep infinity\n";
    std::fs::write(w.rec.loc.unit_dir.join("other.service"), foreign).unwrap();
    w.sd.start_by_hand("other.service");

    w.remove("web.yaml");
    let r = w.pass().await;
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    assert_eq!(
        w.sd.jobs("web.service"),
        vec![JobKind::Start, JobKind::Stop]
    );
    assert_eq!(w.unit_file("web.service"), None);
    assert!(!w.status.objects.contains_key("web"));
    assert!(w.sd.jobs("other.service").is_empty());
    assert_eq!(w.sd.state("other.service").0, "active");
    assert_eq!(w.unit_file("other.service").as_deref(), Some(foreign));
}

/// Issue 25: the status says which file bytes the object was last
/// reconciled from; an edit (even of a comment only) moves it, an invalid
/// file (not applied) does not.
#[tokio::test]
async fn the_status_carries_the_digest_of_the_file_last_applied() {
    use sha2::{Digest, Sha256};
    let sha = |s: &str| hex::encode(Sha256::digest(s.as_bytes()));
    let digest = |w: &World| w.status.objects["web"].manifest_digest.clone();
    let mut w = World::new();
    let first = service("web", "");
    w.write("web.yaml", &first);
    w.pass().await;
    assert_eq!(digest(&w), sha(&first));

    let commented = format!("# a comment only\n{first}");
    w.write("web.yaml", &commented);
    let r = w.pass().await;
    assert_eq!(r.actions, 0, "the spec did not change");
    assert_eq!(digest(&w), sha(&commented));

    let second = service("web", &memory_max("64M"));
    w.write("web.yaml", &second);
    w.pass().await;
    assert_eq!(digest(&w), sha(&second));

    w.write("web.yaml", &service("web", "  bogusField: 1\n"));
    w.pass().await;
    assert_eq!(digest(&w), sha(&second), "an invalid file is not applied");
    let json = serde_json::to_value(&w.status.objects["web"]).unwrap();
    assert_eq!(json["manifestDigest"], sha(&second));
}

#[tokio::test]
async fn a_manifest_turned_invalid_keeps_its_units_running_untouched() {
    let mut w = World::new();
    w.write("web.yaml", &service("web", ""));
    w.pass().await;
    let before = w.unit_file("web.service");

    w.write("web.yaml", &service("web", "  bogusField: 1\n"));
    let r = w.pass().await;
    assert_eq!(r.actions, 0, "nothing is done to a held unit");
    assert_eq!(w.sd.jobs("web.service"), vec![JobKind::Start]);
    assert_eq!(w.sd.state("web.service").0, "active");
    assert_eq!(w.unit_file("web.service"), before);
    let (st, reason, msg) = w.ready("web");
    assert_eq!((st, reason), (False, Reason::Invalid));
    assert!(msg.contains("its last good units keep running"), "{msg}");
}

#[tokio::test(start_paused = true)]
async fn a_failing_start_backs_off_exponentially_on_tokios_clock() {
    let mut w = World::new();
    w.sd.fail_starts("web.service", true);
    w.write("web.yaml", &service("web", ""));
    let r = w.pass().await;
    assert!(r.failures.contains_key("web"), "{:?}", r.failures);
    assert_eq!(w.ready("web").1, Reason::ApplyFailed);
    assert_eq!(w.status.objects["web"].failures, 1);
    let first_retry = r.retry_at.expect("a retry is scheduled");

    // Within the backoff: not started again.
    w.pass().await;
    assert_eq!(w.sd.jobs("web.service").len(), 1);
    assert_eq!(w.ready("web").1, Reason::Failed, "{:?}", w.ready("web"));

    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(tokio::time::Instant::now() >= first_retry);
    let r = w.pass().await;
    assert_eq!(w.sd.jobs("web.service").len(), 2, "retried after 1 s");
    assert_eq!(w.status.objects["web"].failures, 2);
    let second = r.retry_at.expect("a retry is scheduled") - tokio::time::Instant::now();
    assert_eq!(second, Duration::from_secs(2), "the delay doubles");

    // Fixed: the next retry succeeds. Starting a unit that had failed
    // still counts, so the backoff is forgotten one quiet pass later.
    w.sd.fail_starts("web.service", false);
    tokio::time::advance(second).await;
    let r = w.pass().await;
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    assert_eq!(w.ready("web").0, True);
    let third = r.retry_at.expect("still backing off") - tokio::time::Instant::now();
    tokio::time::advance(third).await;
    w.pass().await;
    assert_eq!(w.sd.jobs("web.service").len(), 3);
    assert_eq!(w.status.objects["web"].failures, 0);
    assert!(w.rec.backoff.is_empty());
}

/// Issue 20 item 2: a pass that skips a backing-off object says so, so
/// its `unitlet_object_last_reconcile_age_seconds` is not reset; the
/// objects it reconciled are not listed.
#[tokio::test(start_paused = true)]
async fn a_backing_off_object_is_reported_as_skipped() {
    let mut w = World::new();
    w.sd.fail_starts("web.service", true);
    w.write("web.yaml", &service("web", ""));
    w.write("ok.yaml", &service("ok", ""));
    let r = w.pass().await;
    assert!(r.failures.contains_key("web"), "{:?}", r.failures);
    assert!(r.skipped.is_empty(), "{:?}", r.skipped);
    let r = w.pass().await;
    assert_eq!(r.skipped, ["web".to_string()].into(), "within its backoff");
    tokio::time::advance(Duration::from_secs(1)).await;
    let r = w.pass().await;
    assert!(r.skipped.is_empty(), "retried: {:?}", r.skipped);
}

fn oom_kill() -> ServiceResult {
    ServiceResult {
        result: "oom-kill".into(),
        ..Default::default()
    }
}

#[tokio::test(start_paused = true)]
async fn a_crash_is_reported_with_its_cause_and_restarted_with_backoff() {
    let mut w = World::new();
    w.write("web.yaml", &service("web", &memory_max("64M")));
    w.pass().await;
    w.sd.crash("web.service", oom_kill());
    // Restarted at once, but the crash counts for backoff.
    w.pass().await;
    assert_eq!(w.sd.jobs("web.service").len(), 2);
    assert_eq!(w.status.objects["web"].failures, 1);
    w.sd.crash("web.service", oom_kill());
    w.pass().await;
    assert_eq!(w.sd.jobs("web.service").len(), 2, "backing off");
    let (st, reason, msg) = w.ready("web");
    assert_eq!((st, reason), (False, Reason::OOMKilled), "{msg}");
    assert!(msg.contains("memoryMax 64M"), "{msg}");
}

#[tokio::test(start_paused = true)]
async fn a_removed_manifest_keeps_its_units_for_the_gc_grace() {
    let mut w = World::new();
    w.rec.gc_grace = Duration::from_secs(2);
    w.write("web.yaml", &service("web", ""));
    w.pass().await;

    w.remove("web.yaml");
    let r = w.pass().await;
    assert_eq!(w.sd.jobs("web.service"), vec![JobKind::Start]);
    let grace_end = r.retry_at.expect("the end of the grace is a retry");
    assert_eq!(
        grace_end - tokio::time::Instant::now(),
        Duration::from_secs(2)
    );

    // Back within the grace: never stopped.
    tokio::time::advance(Duration::from_secs(1)).await;
    w.write("web.yaml", &service("web", ""));
    w.pass().await;
    tokio::time::advance(Duration::from_secs(5)).await;
    w.pass().await;
    assert_eq!(w.sd.jobs("web.service"), vec![JobKind::Start]);

    // Gone for longer than the grace: stopped and removed.
    w.remove("web.yaml");
    w.pass().await;
    assert_eq!(w.sd.jobs("web.service"), vec![JobKind::Start]);
    tokio::time::advance(Duration::from_secs(2)).await;
    w.pass().await;
    assert_eq!(
        w.sd.jobs("web.service"),
        vec![JobKind::Start, JobKind::Stop]
    );
    assert_eq!(w.unit_file("web.service"), None);
}

#[tokio::test(start_paused = true)]
async fn a_failing_reload_is_retried_on_tokios_clock() {
    let (mut w, conf) = World::with_config_reloaded_by_sighup().await;

    std::fs::write(&conf, "b").unwrap();
    w.sd.fail_kills("web.service");
    let r = w.pass().await;
    assert_eq!(r.work.len(), 1, "{:?}", r.work);
    w.run_work(r.work).await;
    let (st, reason, _) = {
        w.pass().await;
        w.ready("web")
    };
    assert_eq!((st, reason), (False, Reason::ReloadFailed));
    let retry = w.rec.reload_retry["web"].next;

    // Not due yet: no new attempt.
    let r = w.pass().await;
    assert!(r.work.is_empty(), "{:?}", r.work);
    assert_eq!(r.retry_at, Some(retry));

    tokio::time::advance(retry - tokio::time::Instant::now()).await;
    let r = w.pass().await;
    assert_eq!(r.work.len(), 1, "retried when due: {:?}", r.work);
}

#[tokio::test(start_paused = true)]
async fn a_config_change_is_reloaded_by_signal_without_a_restart() {
    let (mut w, conf) = World::with_config_reloaded_by_sighup().await;
    std::fs::write(&conf, "b").unwrap();
    let r = w.pass().await;
    w.run_work(r.work).await;
    assert_eq!(w.sd.signals("web.service"), vec![libc::SIGHUP]);
    assert_eq!(w.sd.jobs("web.service"), vec![JobKind::Start]);
    let r = w.pass().await;
    assert!(r.work.is_empty(), "applied once: {:?}", r.work);
    assert_eq!(w.ready("web").0, True);
}

#[tokio::test]
async fn a_unit_file_unitlet_does_not_own_is_a_conflict_and_left_alone() {
    let mut w = World::new();
    let foreign = "[Service]\nExecStart=/bin/true\n";
    std::fs::write(w.rec.loc.unit_dir.join("web.service"), foreign).unwrap();
    w.write("web.yaml", &service("web", ""));
    let r = w.pass().await;
    assert_eq!(r.actions, 0, "nothing is done about a foreign unit");
    assert!(w.sd.jobs("web.service").is_empty());
    assert_eq!(w.unit_file("web.service").as_deref(), Some(foreign));
    let (st, reason, msg) = w.ready("web");
    assert_eq!((st, reason), (False, Reason::Conflict));
    assert!(msg.contains("not managed by unitlet"), "{msg}");
}

#[tokio::test]
async fn state_stopped_stops_the_unit_and_reports_it_stopped() {
    let mut w = World::new();
    w.write("web.yaml", &service("web", ""));
    w.pass().await;
    w.write("web.yaml", &service("web", "  state: stopped\n"));
    w.pass().await;
    assert_eq!(
        w.sd.jobs("web.service"),
        vec![JobKind::Start, JobKind::Stop]
    );
    assert_eq!(w.ready("web").1, Reason::Stopped);
    let r = w.pass().await;
    assert_eq!(r.actions, 0, "stopped as declared: nothing to do");
}

/// Issue 21 item 4: a refused config reverted to the content the service
/// runs ends ConfigInvalid in a long-lived reconciler (`run`) as in a fresh
/// one (`apply`), and the next pass does not put it back.
#[tokio::test]
async fn a_refused_config_reverted_to_what_runs_is_no_longer_invalid() {
    let mut w = World::new();
    let conf = w.dir.path().join("web.conf");
    std::fs::write(&conf, "good").unwrap();
    let extra = format!(
        "  configFiles: [{c}]\n  onConfigChange: reload\n  reload:\n    signal: SIGHUP\n  validate: [/bin/sh, -c, \"! grep -q bad {c}\"]\n",
        c = conf.display()
    );
    w.write("web.yaml", &service("web", &extra));
    w.pass().await;
    assert_eq!(w.ready("web").0, True);
    std::fs::write(&conf, "bad").unwrap();
    let r = w.pass().await;
    w.run_work(r.work).await;
    w.pass().await;
    assert_eq!(w.ready("web").1, Reason::ConfigInvalid);
    std::fs::write(&conf, "good").unwrap();
    let r = w.pass().await;
    assert!(r.work.is_empty(), "nothing to reload: {:?}", r.work);
    assert_eq!(w.ready("web").0, True, "{:?}", w.ready("web"));
    w.pass().await;
    assert_eq!(w.ready("web").0, True, "{:?}", w.ready("web"));
    assert!(w.sd.signals("web.service").is_empty(), "never reloaded");
}

/// Issue 21 items 1 and 2: a rolled-back revision runs with the
/// manifest's limits (the plan has nothing more to do), and the manifest
/// fixed back to what runs ends the pin without a restart.
#[tokio::test]
async fn a_pinned_revision_keeps_the_manifests_limits_and_a_fixed_manifest_ends_the_pin() {
    use crate::rollout::history::{History, Pin, PinCause, Revision, RevisionState};
    let mut w = World::new();
    let limits = "  resources: {memoryMax: 100M, cpuQuota: 20%}\n";
    let good = service("web", limits);
    w.write("web.yaml", &good);
    w.pass().await;
    let good_unit = w.unit_file("web.service").unwrap();
    // As after a rollback: revision 1 from before the limits, revision 2
    // (a missing program) failed, revision 1 pinned.
    let bad = good.replace("/bin/sleep", "/usr/bin/pyhton3");
    w.write("web.yaml", &bad);
    let prep = w.rec.prepare(&w.sd, &w.status).await.unwrap();
    let bad_unit = prep.desired[0].content.clone();
    let revision = |n, unit: &str, state| Revision {
        revision: n,
        hash: crate::plan::content_hash(unit),
        unit: unit.to_string(),
        applied_at: "2026-12-06T06:00:00Z".into(),
        state,
        reason: String::new(),
        ended_at: None,
    };
    let before_limits = crate::rollout::policy::with_limits(&good_unit, "");
    let h = History {
        revisions: vec![
            revision(1, &before_limits, RevisionState::Complete),
            revision(2, &bad_unit, RevisionState::Failed),
        ],
        pin: Some(Pin {
            revision: 1,
            manifest_hash: crate::plan::content_hash(&bad_unit),
            cause: PinCause::RolledBack,
            failed_revision: Some(2),
            reason: "pyhton3 does not exist".into(),
            silence: None,
            since: String::new(),
        }),
    };
    crate::rollout::history::save(&w.rec.loc.state_dir, "web", &h).unwrap();
    let r = w.pass().await;
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    assert_eq!(w.unit_file("web.service").unwrap(), good_unit);
    assert_eq!(w.live_memory_max("web.service"), 100 << 20);
    assert_eq!(w.ready("web").1, Reason::RolledBack);
    let r = w.pass().await;
    assert_eq!(r.actions, 0, "the plan agrees with what runs");

    w.write("web.yaml", &good);
    let jobs = w.sd.jobs("web.service");
    let r = w.pass().await;
    assert_eq!(r.actions, 0, "what runs is the manifest's");
    assert_eq!(w.sd.jobs("web.service"), jobs, "no restart");
    let (st, reason, msg) = w.ready("web");
    assert_eq!((st, reason), (True, Reason::Running), "{msg}");
    let h = crate::rollout::history::load(&w.rec.loc.state_dir, "web").unwrap();
    assert!(h.pin.is_none());
    let r3 = h.in_force().unwrap();
    assert_eq!((r3.revision, r3.state), (3, RevisionState::Complete));
    assert_eq!(r3.unit, good_unit);
}

/// Issue 20 item 5: a FIFO planted where a hold goes is no hold, and the
/// pass reads it without blocking (it waited for a writer forever).
#[test]
fn a_fifo_planted_as_a_hold_blocks_no_pass() {
    let w = World::new();
    w.write("web.yaml", &service("web", ""));
    let holds = w.rec.loc.state_dir.join("holds");
    std::fs::create_dir_all(&holds).unwrap();
    crate::fsutil::test_support::mkfifo(&holds.join("web"));
    let w = crate::fsutil::test_support::within_10s("a pass beside a FIFO hold", move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut w = w;
            let r = w.pass().await;
            assert!(r.failures.is_empty(), "{:?}", r.failures);
            w
        })
    });
    assert_eq!(w.sd.jobs("web.service"), vec![JobKind::Start]);
}

/// Issue 22: a large batch the operator hands out pauses unit signals
/// through the `UserManager` trait (no D-Bus connection asked for), and the
/// pause ends when the batch's jobs end; a smaller batch does not pause.
#[tokio::test]
async fn a_large_handed_out_batch_pauses_unit_signals_until_its_jobs_end() {
    let mut w = World::new();
    w.rec.start_wait = Duration::ZERO;
    for i in 0..15 {
        w.write(&format!("s{i}.yaml"), &service(&format!("s{i}"), ""));
    }
    let small = w.pass().await.work;
    assert!(w.sd.signal_pauses().is_empty(), "15 starts: no pause");
    w.run_work(small).await;
    for i in 15..31 {
        w.write(&format!("s{i}.yaml"), &service(&format!("s{i}"), ""));
    }
    let r = w.pass().await;
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    assert_eq!(
        w.sd.signal_pauses(),
        [super::apply::pause_length(16)],
        "16 starts: one pause"
    );
    assert!(w.sd.signals_paused(), "paused while the batch runs");
    let jobs: Vec<Work> = r
        .work
        .into_iter()
        .filter(|x| matches!(x, Work::Jobs(_)))
        .collect();
    assert_eq!(jobs.len(), 1);
    w.run_work(jobs).await;
    assert!(!w.sd.signals_paused(), "resumed once its jobs ended");
}

/// Issue 22: `LimitsEnforced` is decided through the `UserManager` trait
/// (the manager's PID), so it runs against the in-memory manager: a
/// Service with limits gets the condition, one without gets none.
#[tokio::test]
async fn limits_enforced_asks_the_manager_through_the_trait() {
    let mut w = World::new();
    w.write("web.yaml", &service("web", &memory_max("100M")));
    w.write("plain.yaml", &service("plain", ""));
    w.pass().await;
    let limits = |w: &World, name: &str| {
        w.status.objects[name]
            .conditions
            .iter()
            .find(|c| c.type_ == crate::status::ConditionType::LimitsEnforced)
            .map(|c| (c.status, c.reason, c.message.clone()))
    };
    assert_eq!(limits(&w, "plain"), None, "no limits, no condition");
    let (st, reason, msg) = limits(&w, "web").expect("LimitsEnforced on web");
    assert_eq!(
        (st, reason),
        (ConditionStatus::Unknown, Reason::ControllersUnknown)
    );
    assert!(
        msg.contains("the in-memory manager has no process"),
        "{msg}"
    );
    // Given a PID, its cgroup is what is read.
    w.sd.set_manager_pid(u32::MAX);
    w.pass().await;
    let (_, _, msg) = limits(&w, "web").expect("LimitsEnforced on web");
    assert!(msg.contains(&format!("/proc/{}/cgroup", u32::MAX)), "{msg}");
}
