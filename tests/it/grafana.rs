//! Grafana backup and restore against the in-memory fake Grafana.

use std::future::Future;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use unitlet::backup::{BackupError, SetStatus, Store};
use unitlet::grafana::restore::{RestoreOptions, RestoreReport};
use unitlet::grafana::{self, Auth, Client, GrafanaError, ObjectKind, Outcome};

use crate::fake_grafana::FakeGrafana;

const TOKEN: &str = "glsa_right_token_0123456789abcdef";
const LABEL: &str = "service-account token from /home/u/.config/grafana-token";
const CONCURRENCY: usize = 8;

/// Every await on the system under test goes through this, so a hang is a
/// failure with a message rather than a stuck test run.
async fn within<F: Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 60s"))
}

async fn within_owned<F: Future>(what: String, f: F) -> F::Output {
    within(&what, f).await
}

fn client_with(fake: &FakeGrafana, auth: Auth) -> Client {
    Client::new(fake.url(), auth, LABEL, Duration::from_secs(5))
        .unwrap()
        .with_retry(4, Duration::from_millis(10))
}

fn client(fake: &FakeGrafana) -> Client {
    client_with(fake, Auth::Token(TOKEN.into()))
}

const FOLDERS: [Option<&str>; 4] = [None, Some("a"), Some("b"), Some("c")];

/// Folders a ⊃ b ⊃ c and `n` dashboards spread over them and the root.
fn populate(fake: &FakeGrafana, n: usize) {
    fake.add_folder("a", "Alpha", None);
    fake.add_folder("b", "Beta", Some("a"));
    fake.add_folder("c", "Gamma", Some("b"));
    for i in 0..n {
        fake.put_dashboard(&uid(i), &title(i), FOLDERS[i % 4], panels(i, "up"));
    }
}

fn uid(i: usize) -> String {
    format!("d{i:03}")
}

fn title(i: usize) -> String {
    format!("Dashboard {i:03}")
}

fn panels(i: usize, metric: &str) -> Value {
    json!([{
        "id": 1, "type": "timeseries", "title": format!("Panel {i}"),
        "gridPos": {"x": 0, "y": 0, "w": 12, "h": 8},
        "targets": [{"expr": format!("{metric}{{job=\"job{i}\"}}"), "refId": "A"}],
    }])
}

type FolderRow = (String, String, Option<String>);
type DashboardRow = (String, String, Option<String>, Value);

/// What must survive a round trip: folders (uid, title, parent) and
/// dashboards (uid, title, folder, panels).
fn snapshot(fake: &FakeGrafana) -> (Vec<FolderRow>, Vec<DashboardRow>) {
    let folders = fake
        .folders()
        .into_iter()
        .map(|f| (f.uid, f.title, f.parent_uid))
        .collect();
    let dashboards = fake
        .dashboards()
        .into_iter()
        .map(|d| (d.uid, d.title, d.folder_uid, d.model["panels"].clone()))
        .collect();
    (folders, dashboards)
}

fn outcome<'r>(report: &'r RestoreReport, uid: &str) -> &'r Outcome {
    &report
        .objects
        .iter()
        .find(|o| o.uid == uid)
        .unwrap_or_else(|| panic!("{uid} not in report:\n{report}"))
        .outcome
}

async fn backup(fake: &FakeGrafana, store: &Store) -> grafana::backup::BackupReport {
    within(
        "backup",
        grafana::backup::backup(&client(fake), store, CONCURRENCY),
    )
    .await
    .unwrap()
}

async fn restore(fake: &FakeGrafana, store: &Store, id: &str, dry_run: bool) -> RestoreReport {
    let opts = RestoreOptions {
        dry_run,
        concurrency: CONCURRENCY,
        ..RestoreOptions::default()
    };
    restore_with(fake, store, id, &opts).await
}

async fn restore_with(
    fake: &FakeGrafana,
    store: &Store,
    id: &str,
    opts: &RestoreOptions,
) -> RestoreReport {
    let set = store.verify(id).unwrap();
    within(
        "restore",
        grafana::restore::restore(&client(fake), &set, opts),
    )
    .await
    .unwrap()
}

fn complete_ids(store: &Store) -> Vec<String> {
    store
        .list()
        .unwrap()
        .into_iter()
        .filter(|s| s.status == SetStatus::Complete)
        .map(|s| s.id)
        .collect()
}

#[tokio::test]
async fn backup_then_restore_into_an_emptied_grafana_recreates_everything() {
    let fake = FakeGrafana::start(TOKEN).await;
    populate(&fake, 300);
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), "dash", grafana::KIND).unwrap();
    // A small page size makes search page 5 times.
    let paged = client(&fake).with_page_size(64);

    let report = within(
        "backup",
        grafana::backup::backup(&paged, &store, CONCURRENCY),
    )
    .await
    .unwrap();
    assert_eq!((report.folders, report.dashboards), (3, 300));
    assert!(report.skipped.is_empty());
    assert_eq!(report.set.status, SetStatus::Complete);
    // folders.json, 8 files of the other kinds, 2 per dashboard.
    assert_eq!(report.set.files, 1 + 8 + 2 * 300);
    assert_eq!(complete_ids(&store), vec![report.set.id.clone()]);

    let dir = &report.set.path;
    let folders: Value =
        serde_json::from_slice(&std::fs::read(dir.join("folders.json")).unwrap()).unwrap();
    assert_eq!(
        folders,
        json!([
            {"uid": "a", "title": "Alpha", "parentUid": null},
            {"uid": "b", "title": "Beta", "parentUid": "a"},
            {"uid": "c", "title": "Gamma", "parentUid": "b"},
        ])
    );
    let full: Value =
        serde_json::from_slice(&std::fs::read(dir.join("dashboards/d001.json")).unwrap()).unwrap();
    assert_eq!(full["meta"]["folderUid"], "a");
    assert_eq!(full["dashboard"]["uid"], "d001");
    let plain: Value =
        serde_json::from_slice(&std::fs::read(dir.join("plain/d001.json")).unwrap()).unwrap();
    assert_eq!(plain["id"], Value::Null);
    assert_eq!(plain["title"], "Dashboard 001");
    assert_eq!(plain["panels"], panels(1, "up"));

    let before = snapshot(&fake);
    fake.clear();
    assert!(fake.dashboards().is_empty());

    let restored = restore(&fake, &store, &report.set.id, false).await;
    assert!(restored.is_success(), "{restored}");
    let folders = restored.counts(ObjectKind::Folder);
    let dashboards = restored.counts(ObjectKind::Dashboard);
    assert_eq!((folders.create, folders.failed), (3, 0), "{restored}");
    assert_eq!(
        (dashboards.create, dashboards.failed),
        (300, 0),
        "{restored}"
    );
    assert_eq!(snapshot(&fake), before);
}

#[tokio::test]
async fn a_second_restore_is_all_unchanged_and_adds_no_versions() {
    let fake = FakeGrafana::start(TOKEN).await;
    populate(&fake, 300);
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), "dash", grafana::KIND).unwrap();
    let id = backup(&fake, &store).await.set.id;
    fake.clear();
    let first = restore(&fake, &store, &id, false).await;
    assert!(first.is_success(), "{first}");

    let versions = fake.total_versions();
    let mutations = fake.mutations();
    assert_eq!(versions, 300, "one version per recreated dashboard");
    let second = restore(&fake, &store, &id, false).await;
    assert!(second.is_success(), "{second}");
    assert_eq!(second.counts(ObjectKind::Folder).unchanged, 3, "{second}");
    assert_eq!(
        second.counts(ObjectKind::Dashboard).unchanged,
        300,
        "{second}"
    );
    assert_eq!(fake.total_versions(), versions);
    assert_eq!(fake.mutations(), mutations);

    // And through Grafana's own versions endpoint.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let body: Value = within(
        "versions",
        reqwest::Client::new()
            .get(format!("{}/api/dashboards/uid/d007/versions", fake.url()))
            .bearer_auth(TOKEN)
            .send(),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(body["versions"].as_array().unwrap().len(), 1, "{body}");
}

/// Collects everything logged while it is the default subscriber.
#[derive(Clone, Default)]
struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogCapture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = format!("{err} / {err:?}");
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(&format!(" / {s} / {s:?}"));
        source = s.source();
    }
    text
}

#[tokio::test]
async fn a_wrong_token_is_a_clear_401_that_never_shows_the_token() {
    let logs = LogCapture::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    // With a single registered dispatcher, tracing-core asks only the
    // *registering thread's* default, so a call site first hit by another
    // test's thread would be cached as "never" for ours too. A second
    // registered dispatcher makes it ask every one of them.
    let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    let _guard = tracing::subscriber::set_default(subscriber);

    let fake = FakeGrafana::start(TOKEN).await;
    populate(&fake, 5);
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), "dash", grafana::KIND).unwrap();
    let wrong = "glsa_WRONG_secret_987654321";
    let bad = client_with(&fake, Auth::Token(wrong.into()));

    let err = within("backup", grafana::backup::backup(&bad, &store, CONCURRENCY))
        .await
        .unwrap_err();
    assert!(matches!(err, GrafanaError::Unauthorized { .. }), "{err:?}");
    let text = err.to_string();
    for expected in [
        "rejected the credentials",
        "401",
        fake.url(),
        LABEL,
        "Viewer",
    ] {
        assert!(text.contains(expected), "{expected:?} missing from: {text}");
    }
    assert!(complete_ids(&store).is_empty());

    // Restore of a good set with the wrong token fails the same way.
    let id = backup(&fake, &store).await.set.id;
    let set = store.verify(&id).unwrap();
    let restore_err = within(
        "restore",
        grafana::restore::restore(&bad, &set, &RestoreOptions::default()),
    )
    .await
    .unwrap_err();
    assert!(restore_err.to_string().contains("Editor"), "{restore_err}");

    // Basic auth: the password is as secret as a token.
    let basic_fake = FakeGrafana::start_basic("admin", "right-password").await;
    basic_fake.add_folder("x", "X", None);
    let wrong_password = "hunter2-wrong-password";
    let basic = client_with(
        &basic_fake,
        Auth::Basic {
            username: "admin".into(),
            password: wrong_password.into(),
        },
    );
    let basic_err = within(
        "backup",
        grafana::backup::backup(&basic, &store, CONCURRENCY),
    )
    .await
    .unwrap_err();
    assert!(basic_err.to_string().contains("401"), "{basic_err}");
    let good_basic = client_with(
        &basic_fake,
        Auth::Basic {
            username: "admin".into(),
            password: "right-password".into(),
        },
    );
    let ok = within(
        "backup",
        grafana::backup::backup(&good_basic, &store, CONCURRENCY),
    )
    .await
    .unwrap();
    assert_eq!(ok.folders, 1);

    let logged = logs.text();
    assert!(
        logged.contains("Grafana request"),
        "nothing was logged: {logged}"
    );
    let everything = [
        error_chain(&err),
        error_chain(&restore_err),
        error_chain(&basic_err),
        format!("{bad:?} {basic:?}"),
        logged,
    ]
    .join("\n");
    for secret in [wrong, TOKEN, wrong_password, "right-password"] {
        assert!(
            !everything.contains(secret),
            "{secret} leaked:\n{everything}"
        );
    }
}

#[tokio::test]
async fn a_500_leaves_no_set_and_prune_ignores_the_incomplete_set_of_a_killed_run() {
    let fake = FakeGrafana::start(TOKEN).await;
    populate(&fake, 20);
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), "dash", grafana::KIND).unwrap();
    let mut complete = Vec::new();
    for _ in 0..3 {
        complete.push(backup(&fake, &store).await.set.id);
    }

    // Every dashboard fetch from the 5th on fails, retries included.
    fake.fail_dashboard_gets(5, usize::MAX);
    let err = within(
        "backup",
        grafana::backup::backup(&client(&fake), &store, CONCURRENCY),
    )
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("500") && text.contains("/api/dashboards/uid/"),
        "{text}"
    );
    // The failed run removed what it wrote.
    assert_eq!(store.list().unwrap().len(), 3);
    assert_eq!(complete_ids(&store), complete);
    // A killed run (no destructor runs) leaves an incomplete set.
    let mut killed = store.begin(fake.url()).unwrap();
    killed.write_file("folders.json", b"[]").unwrap();
    std::mem::forget(killed);
    let sets = store.list().unwrap();
    assert_eq!(sets.len(), 4);
    let incomplete = sets.last().unwrap().clone();
    assert_eq!(incomplete.status, SetStatus::Incomplete);
    assert_eq!(incomplete.kind, "grafana");
    assert!(!incomplete.path.join("backup.json").exists());
    assert_eq!(complete_ids(&store), complete);
    assert!(matches!(
        store.verify(&incomplete.id),
        Err(BackupError::Incomplete { .. })
    ));

    fake.fail_dashboard_gets(0, 0);
    let newest = backup(&fake, &store).await.set.id;
    complete.push(newest.clone());
    let deleted = store.prune(2, &newest).unwrap();
    assert_eq!(deleted, complete[..2].to_vec());
    assert_eq!(complete_ids(&store), complete[2..].to_vec());
    // The incomplete set was neither counted nor deleted.
    let ids: Vec<String> = store.list().unwrap().into_iter().map(|s| s.id).collect();
    assert!(ids.contains(&incomplete.id), "{ids:?}");
    assert_eq!(ids.len(), 3);
}

#[tokio::test]
async fn a_transient_500_is_retried_and_the_backup_completes() {
    let fake = FakeGrafana::start(TOKEN).await;
    populate(&fake, 20);
    fake.fail_dashboard_gets(3, 2);
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), "dash", grafana::KIND).unwrap();
    let report = backup(&fake, &store).await;
    assert_eq!(report.dashboards, 20);
    assert_eq!(report.set.status, SetStatus::Complete);
}

#[tokio::test]
async fn a_name_clash_is_reported_per_dashboard_and_the_rest_is_restored() {
    let fake = FakeGrafana::start(TOKEN).await;
    populate(&fake, 12);
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), "dash", grafana::KIND).unwrap();
    let id = backup(&fake, &store).await.set.id;

    // d001 (folder a) is replaced by another dashboard with its title.
    fake.delete_dashboard("d001");
    fake.put_dashboard("intruder", &title(1), Some("a"), json!([]));
    // d002 (folder b) too, but the clash is one search does not show, so
    // only Grafana's 412 name-exists reveals it.
    fake.delete_dashboard("d002");
    fake.put_dashboard("hidden", &title(2), Some("b"), json!([]));
    fake.hide_from_search("hidden");
    // d003 was edited and is simply restored.
    fake.put_dashboard("d003", &title(3), Some("c"), panels(3, "down"));

    let report = restore(&fake, &store, &id, false).await;
    assert!(!report.is_success());
    match outcome(&report, "d001") {
        Outcome::Failed { reason } => {
            assert!(
                reason.contains("intruder") && reason.contains("folder a"),
                "{reason}"
            )
        }
        other => panic!("d001: {other:?}"),
    }
    match outcome(&report, "d002") {
        Outcome::Failed { reason } => assert!(reason.contains("name-exists"), "{reason}"),
        other => panic!("d002: {other:?}"),
    }
    assert!(
        matches!(outcome(&report, "d003"), Outcome::Update { detail } if detail.contains("version 2")),
        "{report}"
    );
    let counts = report.counts(ObjectKind::Dashboard);
    assert_eq!((counts.failed, counts.update, counts.unchanged), (2, 1, 9));
    assert!(report.to_string().contains("FAILED"), "{report}");

    // Nothing was lost: the other dashboards are untouched.
    for other in ["intruder", "hidden"] {
        let d = fake.dashboard(other).unwrap();
        assert_eq!((d.version, d.model["panels"].clone()), (1, json!([])));
    }
    assert!(fake.dashboard("d001").is_none());
    assert_eq!(
        fake.dashboard("d003").unwrap().model["panels"],
        panels(3, "up")
    );
}

#[tokio::test]
async fn a_dashboard_deleted_between_search_and_fetch_is_skipped_and_reported() {
    let fake = FakeGrafana::start(TOKEN).await;
    populate(&fake, 10);
    fake.delete_after_next_search("d004");
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), "dash", grafana::KIND).unwrap();
    let report = backup(&fake, &store).await;
    assert_eq!(report.dashboards, 9);
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].uid, "d004");
    assert_eq!(report.set.status, SetStatus::Complete);
    assert_eq!(report.set.files, 1 + 8 + 2 * 9);
    assert!(
        report.to_string().contains("skipped dashboard d004"),
        "{report}"
    );
    store.verify(&report.set.id).unwrap();
}

#[tokio::test]
async fn a_dry_run_reports_the_changes_and_makes_none() {
    let fake = FakeGrafana::start(TOKEN).await;
    populate(&fake, 12);
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), "dash", grafana::KIND).unwrap();
    let id = backup(&fake, &store).await.set.id;
    let original = snapshot(&fake);

    fake.rename_folder("b", "Beta (renamed)");
    fake.put_dashboard("d005", &title(5), Some("a"), panels(5, "down"));
    fake.delete_dashboard("d006");
    let changed = snapshot(&fake);
    let mutations = fake.mutations();
    let versions = fake.total_versions();

    let plan = restore(&fake, &store, &id, true).await;
    assert!(plan.dry_run && plan.is_success(), "{plan}");
    assert!(plan.to_string().contains("dry run"), "{plan}");
    assert!(
        matches!(outcome(&plan, "b"), Outcome::Update { detail } if detail.contains("renamed")),
        "{plan}"
    );
    assert!(
        matches!(outcome(&plan, "d005"), Outcome::Update { .. }),
        "{plan}"
    );
    assert_eq!(outcome(&plan, "d006"), &Outcome::Create);
    assert_eq!(plan.counts(ObjectKind::Dashboard).unchanged, 10, "{plan}");
    assert_eq!(plan.counts(ObjectKind::Folder).unchanged, 2, "{plan}");
    assert_eq!(snapshot(&fake), changed);
    assert_eq!(
        (fake.mutations(), fake.total_versions()),
        (mutations, versions)
    );

    // The real run does what the dry run said, and restores the original.
    let done = restore(&fake, &store, &id, false).await;
    let outcomes = |r: &RestoreReport| -> Vec<(String, Outcome)> {
        r.objects
            .iter()
            .map(|o| (o.uid.clone(), o.outcome.clone()))
            .collect()
    };
    assert_eq!(outcomes(&done), outcomes(&plan));
    assert_eq!(snapshot(&fake), original);
}

#[tokio::test]
async fn an_unreachable_grafana_asks_whether_it_is_running() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let client = Client::new(
        &url,
        Auth::Token(TOKEN.into()),
        LABEL,
        Duration::from_secs(2),
    )
    .unwrap()
    .with_retry(3, Duration::from_millis(10));
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), "dash", grafana::KIND).unwrap();
    let err = within(
        "backup",
        grafana::backup::backup(&client, &store, CONCURRENCY),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, GrafanaError::Connect { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains(&format!("is Grafana running at {url}?")),
        "{err}"
    );
    assert!(store.list().unwrap().is_empty());
}

#[tokio::test]
async fn a_slow_grafana_times_out_with_a_clear_error() {
    let fake = FakeGrafana::start(TOKEN).await;
    fake.set_latency(Duration::from_secs(3));
    let client = Client::new(
        fake.url(),
        Auth::Token(TOKEN.into()),
        LABEL,
        Duration::from_millis(200),
    )
    .unwrap()
    .with_retry(2, Duration::from_millis(10));
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), "dash", grafana::KIND).unwrap();
    let err = within(
        "backup",
        grafana::backup::backup(&client, &store, CONCURRENCY),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, GrafanaError::Timeout { .. }), "{err:?}");
    assert!(err.to_string().contains("within 200ms"), "{err}");
}

#[tokio::test]
async fn an_answer_over_the_body_limit_fails_the_backup_and_names_the_limit() {
    let fake = FakeGrafana::start(TOKEN).await;
    populate(&fake, 3);
    // One dashboard of about 2 MiB, which the client below will not read.
    let big: Vec<Value> = (0..20_000)
        .map(|i| json!({"id": i, "type": "text", "title": format!("{i:0>90}")}))
        .collect();
    fake.put_dashboard("huge", "Huge", None, Value::Array(big));
    let client = client(&fake).with_max_body(1 << 20);
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), "dash", grafana::KIND).unwrap();
    let err = within(
        "backup",
        grafana::backup::backup(&client, &store, CONCURRENCY),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, GrafanaError::TooLarge { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("api/dashboards/uid/huge"), "{text}");
    assert!(text.contains("1 MiB (1048576 bytes)"), "{text}");
    assert!(complete_ids(&store).is_empty(), "no complete set");
}

#[tokio::test]
async fn folders_are_walked_through_pages_and_levels_parents_first() {
    let fake = FakeGrafana::start(TOKEN).await;
    for i in 0..5 {
        fake.add_folder(&format!("r{i}"), &format!("Root {i}"), None);
    }
    fake.add_folder("n1", "Nested 1", Some("r3"));
    fake.add_folder("n2", "Nested 2", Some("n1"));
    fake.add_folder("n3", "Nested 3", Some("r3"));
    let folders = within("folders", client(&fake).with_page_size(2).all_folders())
        .await
        .unwrap();
    let uids: Vec<&str> = folders.iter().map(|f| f.uid.as_str()).collect();
    assert_eq!(uids, ["r0", "r1", "r2", "r3", "r4", "n1", "n3", "n2"]);
    let n2 = folders.iter().find(|f| f.uid == "n2").unwrap();
    assert_eq!(n2.parent_uid.as_deref(), Some("n1"));
}

#[tokio::test]
async fn restore_recreates_a_moved_folder_in_its_place() {
    let fake = FakeGrafana::start(TOKEN).await;
    populate(&fake, 4);
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), "dash", grafana::KIND).unwrap();
    let id = backup(&fake, &store).await.set.id;
    let original = snapshot(&fake);

    // Someone moved c to the top level.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let status = within(
        "move",
        reqwest::Client::new()
            .post(format!("{}/api/folders/c/move", fake.url()))
            .bearer_auth(TOKEN)
            .json(&json!({"parentUid": ""}))
            .send(),
    )
    .await
    .unwrap()
    .status();
    assert!(status.is_success());
    assert_eq!(
        fake.folders()
            .iter()
            .find(|f| f.uid == "c")
            .unwrap()
            .parent_uid,
        None
    );

    let report = restore(&fake, &store, &id, false).await;
    assert!(
        matches!(outcome(&report, "c"), Outcome::Update { detail } if detail.contains("moved from the General folder to folder b")),
        "{report}"
    );
    assert_eq!(snapshot(&fake), original);
}

// ---------------------------------------------------------------------------
// The whole instance: every kind, idempotently.

const PROM_SECRET: &str = "prom-basic-auth-secret-7f3a";

fn rule(uid: &str, folder: &str, group: &str, title: &str) -> Value {
    json!({
        "uid": uid, "folderUID": folder, "ruleGroup": group, "title": title,
        "condition": "C",
        "data": [{
            "refId": "A", "datasourceUid": "prom",
            "relativeTimeRange": {"from": 600, "to": 0},
            "model": {"expr": format!("up{{job=\"{uid}\"}} == 0"), "refId": "A"},
        }],
        "for": "5m", "labels": {"severity": "critical"},
        "annotations": {"summary": format!("{title} fired")},
    })
}

/// The acceptance set: 3 nested folders with permissions, 2 datasources
/// (one with a secure field), 2 library panels used by dashboards,
/// `dashboards` dashboards, 5 alert rules in 2 groups, 2 contact points, a
/// policy tree with 2 routes, 1 mute timing, 1 template.
fn seed_everything(fake: &FakeGrafana, dashboards: usize) {
    fake.add_folder("a", "Alpha", None);
    fake.add_folder("b", "Beta", Some("a"));
    fake.add_folder("c", "Gamma", Some("b"));
    fake.set_folder_permissions(
        "a",
        json!([{"role": "Viewer", "permission": 1}, {"teamId": 3, "permission": 2}]),
    );
    fake.set_folder_permissions("b", json!([{"userId": 7, "permission": 4}]));
    fake.set_folder_permissions("c", json!([{"role": "Editor", "permission": 2}]));
    fake.add_datasource(json!({
        "uid": "prom", "name": "Prometheus", "type": "prometheus", "access": "proxy",
        "url": "http://127.0.0.1:9090", "basicAuth": true, "basicAuthUser": "grafana",
        "isDefault": true, "jsonData": {"httpMethod": "POST", "timeInterval": "15s"},
        "secureJsonData": {"basicAuthPassword": PROM_SECRET},
    }));
    fake.add_datasource(json!({
        "uid": "loki", "name": "Loki", "type": "loki", "access": "proxy",
        "url": "http://127.0.0.1:3100", "jsonData": {"maxLines": 1000},
    }));
    fake.add_library_panel(
        "lib-cpu",
        "CPU",
        Some("a"),
        json!({"type": "timeseries", "title": "CPU", "targets": [{"expr": "rate(cpu[5m])"}]}),
    );
    fake.add_library_panel(
        "lib-mem",
        "Memory",
        None,
        json!({"type": "stat", "title": "Memory", "targets": [{"expr": "mem"}]}),
    );
    for i in 0..dashboards {
        let mut p = panels(i, "up");
        if i % 10 == 0 {
            let lib = if i % 20 == 0 {
                ("lib-cpu", "CPU")
            } else {
                ("lib-mem", "Memory")
            };
            p.as_array_mut().unwrap().push(json!({
                "id": 2, "gridPos": {"x": 12, "y": 0, "w": 12, "h": 8},
                "libraryPanel": {"uid": lib.0, "name": lib.1},
            }));
        }
        fake.put_dashboard(&uid(i), &title(i), FOLDERS[i % 4], p);
    }
    fake.put_rule_group(
        "a",
        "g1",
        60,
        json!([
            rule("r1", "a", "g1", "Target down"),
            rule("r2", "a", "g1", "Disk full"),
            rule("r3", "a", "g1", "Memory high"),
        ]),
    );
    fake.put_rule_group(
        "b",
        "g2",
        120,
        json!([
            rule("r4", "b", "g2", "Latency"),
            rule("r5", "b", "g2", "Errors")
        ]),
    );
    fake.add_template(
        "custom.title",
        "{{ define \"custom.title\" }}[{{ .Status }}]{{ end }}",
    );
    fake.add_contact_point(json!({
        "uid": "cp-email", "name": "Email", "type": "email",
        "settings": {"addresses": "ops@example.com", "singleEmail": true},
    }));
    fake.add_contact_point(json!({
        "uid": "cp-hook", "name": "Webhook", "type": "webhook",
        "settings": {"url": "http://127.0.0.1:9/hook", "httpMethod": "POST"},
        "disableResolveMessage": true,
    }));
    fake.add_mute_timing(json!({
        "name": "weekends",
        "time_intervals": [{"weekdays": ["saturday", "sunday"]}],
    }));
    fake.set_policies(json!({
        "receiver": "Email", "group_by": ["alertname"],
        "routes": [
            {"receiver": "Webhook", "object_matchers": [["team", "=", "ops"]],
             "mute_time_intervals": ["weekends"]},
            {"receiver": "Email", "object_matchers": [["severity", "=", "critical"]],
             "group_wait": "10s"},
        ],
    }));
}

fn secure_values() -> grafana::SecureValues {
    grafana::SecureValues::from_map(
        [(
            "prom".to_owned(),
            [("basicAuthPassword".to_owned(), PROM_SECRET.to_owned())].into(),
        )]
        .into(),
    )
}

fn with_secrets() -> RestoreOptions {
    RestoreOptions {
        concurrency: CONCURRENCY,
        secure_values: secure_values(),
        ..RestoreOptions::default()
    }
}

fn writes_since(
    before: &std::collections::BTreeMap<String, usize>,
    fake: &FakeGrafana,
) -> Vec<(String, usize)> {
    fake.writes_by_kind()
        .into_iter()
        .map(|(k, n)| {
            let d = n - before.get(&k).copied().unwrap_or(0);
            (k, d)
        })
        .filter(|(_, d)| *d > 0)
        .collect()
}

#[tokio::test]
async fn the_whole_instance_round_trips_and_a_second_restore_writes_nothing() {
    let fake = FakeGrafana::start(TOKEN).await;
    seed_everything(&fake, 300);
    let original = fake.content();
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), "dash", grafana::KIND).unwrap();
    let report = backup(&fake, &store).await;
    assert_eq!((report.folders, report.dashboards), (3, 300));
    let others: Vec<(String, usize)> = report
        .others
        .iter()
        .map(|(k, n)| (k.plural().to_owned(), *n))
        .collect();
    let expected: Vec<(String, usize)> = [
        ("folder-permissions", 3),
        ("datasources", 2),
        ("library-panels", 2),
        ("templates", 1),
        ("contact-points", 2),
        ("mute-timings", 1),
        ("policies", 1),
        ("alert-rules", 5),
    ]
    .into_iter()
    .map(|(k, n)| (k.to_owned(), n))
    .collect();
    assert_eq!(others, expected, "{report}");
    // The set records which secure fields a datasource has, never values.
    let dir = &report.set.path;
    let datasources = std::fs::read_to_string(dir.join("datasources.json")).unwrap();
    assert!(datasources.contains("basicAuthPassword"), "{datasources}");
    for entry in walk(dir) {
        let text = std::fs::read_to_string(&entry).unwrap_or_default();
        assert!(!text.contains(PROM_SECRET), "secret in {}", entry.display());
    }

    fake.clear();
    assert_ne!(fake.content(), original);
    let (requests, writes) = (fake.requests(), fake.writes());
    let restored = restore_with(&fake, &store, &report.set.id, &with_secrets()).await;
    assert!(restored.is_success(), "{restored}");
    assert_eq!(fake.content(), original, "{restored}");
    for kind in ObjectKind::ALL {
        let c = restored.counts(kind);
        // A wiped Grafana still has its default policy tree: replaced.
        let updates = usize::from(kind == ObjectKind::Policies);
        assert_eq!((c.update, c.failed), (updates, 0), "{kind}: {restored}");
    }
    assert_eq!(restored.counts(ObjectKind::Dashboard).create, 300);
    assert_eq!(restored.counts(ObjectKind::AlertRule).create, 5);
    // Into an empty Grafana: about one request per dashboard, no GET first.
    let used = fake.requests() - requests;
    assert!(
        used <= 330,
        "{used} requests for 300 dashboards and {} other writes",
        fake.writes() - writes - 300
    );
    // Restored alerting stays editable: written without provenance.
    assert!(fake.alert_rules().iter().all(|r| r["provenance"] == ""));
    assert!(fake.contact_points().iter().all(|c| c["provenance"] == ""));

    let before = fake.writes_by_kind();
    let versions = fake.total_versions();
    let rule_writes = fake.rule_writes();
    let again = restore_with(&fake, &store, &report.set.id, &with_secrets()).await;
    assert!(again.is_success(), "{again}");
    assert_eq!(writes_since(&before, &fake), vec![], "{again}");
    assert_eq!(again.writes(), 0, "{again}");
    for kind in ObjectKind::ALL {
        let c = again.counts(kind);
        assert_eq!(c.create + c.update + c.failed, 0, "{kind}: {again}");
    }
    assert_eq!(fake.total_versions(), versions);
    assert_eq!(fake.rule_writes(), rule_writes);
    assert_eq!(fake.content(), original);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn without_secure_values_the_datasource_is_restored_and_its_fields_named() {
    let fake = FakeGrafana::start(TOKEN).await;
    seed_everything(&fake, 8);
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), "dash", grafana::KIND).unwrap();
    let id = backup(&fake, &store).await.set.id;
    fake.clear();

    let plan = restore(&fake, &store, &id, true).await;
    assert_eq!(plan.missing_secrets.len(), 1, "{plan}");
    assert!(!plan.is_success());

    let report = restore(&fake, &store, &id, false).await;
    assert!(!report.is_success(), "{report}");
    assert_eq!(
        report.missing_secrets,
        vec![grafana::MissingSecret {
            uid: "prom".into(),
            name: "Prometheus".into(),
            field: "basicAuthPassword".into(),
        }]
    );
    let text = report.to_string();
    assert!(
        text.contains("RE-ENTER   datasource prom \"Prometheus\": secure field basicAuthPassword"),
        "{text}"
    );
    // Everything else is back; the datasource is, without its password.
    let c = report.counts(ObjectKind::Datasource);
    assert_eq!((c.create, c.failed), (2, 0), "{report}");
    assert!(fake.datasources().iter().any(|d| d["uid"] == "prom"));
    assert!(fake.datasource_secrets("prom").is_empty());
    assert_eq!(report.counts(ObjectKind::Dashboard).create, 8);

    // Supplying the value later sets just that field.
    let before = fake.writes_by_kind();
    let fixed = restore_with(&fake, &store, &id, &with_secrets()).await;
    assert!(fixed.is_success(), "{fixed}");
    assert_eq!(
        writes_since(&before, &fake),
        vec![("datasources".to_owned(), 1)]
    );
    assert_eq!(
        fake.datasource_secrets("prom")
            .get("basicAuthPassword")
            .map(String::as_str),
        Some(PROM_SECRET)
    );
}

#[tokio::test]
async fn only_the_edited_alert_rule_is_written_and_its_group_is_untouched() {
    let fake = FakeGrafana::start(TOKEN).await;
    seed_everything(&fake, 8);
    let original = fake.content();
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), "dash", grafana::KIND).unwrap();
    let id = backup(&fake, &store).await.set.id;

    fake.edit_alert_rule("r2", |r| {
        r["title"] = json!("Disk full (edited)");
        r["for"] = json!("1m");
    });
    let rule_writes = fake.rule_writes();
    let before = fake.writes_by_kind();
    let report = restore(&fake, &store, &id, false).await;
    assert!(report.is_success(), "{report}");
    assert_eq!(
        writes_since(&before, &fake),
        vec![("alert-rules".to_owned(), 1)],
        "{report}"
    );
    assert!(
        matches!(outcome(&report, "r2"), Outcome::Update { .. }),
        "{report}"
    );
    let c = report.counts(ObjectKind::AlertRule);
    assert_eq!((c.update, c.unchanged), (1, 4), "{report}");
    let after = fake.rule_writes();
    for uid in ["r1", "r3", "r4", "r5"] {
        assert_eq!(after.get(uid), rule_writes.get(uid), "{uid} was rewritten");
    }
    assert_eq!(after["r2"], rule_writes.get("r2").copied().unwrap_or(0) + 1);
    assert_eq!(fake.content(), original);
}

#[tokio::test]
async fn only_and_dry_run_restore_just_the_kinds_asked_for() {
    let fake = FakeGrafana::start(TOKEN).await;
    seed_everything(&fake, 4);
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), "dash", grafana::KIND).unwrap();
    let id = backup(&fake, &store).await.set.id;
    // Someone deleted the templates and changed the policy tree.
    let original = fake.content();
    fake.add_template("custom.title", "changed");
    fake.set_policies(json!({"receiver": "Webhook"}));
    fake.delete_dashboard("d001");

    let only = |kinds: &[ObjectKind], dry_run| RestoreOptions {
        dry_run,
        only: Some(kinds.iter().copied().collect()),
        ..with_secrets()
    };
    let before = fake.writes();
    let plan = restore_with(
        &fake,
        &store,
        &id,
        &only(&[ObjectKind::Template, ObjectKind::Policies], true),
    )
    .await;
    assert_eq!(fake.writes(), before, "a dry run wrote: {plan}");
    assert_eq!(plan.kinds, vec![ObjectKind::Template, ObjectKind::Policies]);
    assert_eq!(plan.counts(ObjectKind::Template).update, 1, "{plan}");
    assert_eq!(plan.counts(ObjectKind::Policies).update, 1, "{plan}");
    assert_eq!(plan.counts(ObjectKind::Dashboard), Default::default());

    let before = fake.writes_by_kind();
    let done = restore_with(
        &fake,
        &store,
        &id,
        &only(&[ObjectKind::Template, ObjectKind::Policies], false),
    )
    .await;
    assert!(done.is_success(), "{done}");
    assert_eq!(
        writes_since(&before, &fake),
        vec![("policies".to_owned(), 1), ("templates".to_owned(), 1)]
    );
    assert!(
        fake.dashboard("d001").is_none(),
        "dashboards were not asked for"
    );
    let all = restore(&fake, &store, &id, false).await;
    assert_eq!(all.writes(), 1, "{all}");
    assert_eq!(fake.content(), original);
}

/// `unitlet ARGS` against `dir`'s manifests and state, no systemd needed.
async fn cli(dir: &std::path::Path, args: &[&str]) -> (Option<i32>, String) {
    let out = within(
        "unitlet",
        tokio::process::Command::new(env!("CARGO_BIN_EXE_unitlet"))
            .arg("--manifests")
            .arg(dir.join("manifests"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(args)
            .env_remove("UNITLET_MANIFESTS")
            .env_remove("UNITLET_STATE_DIR")
            .env_remove("UNITLET_BUS")
            .stdin(std::process::Stdio::null())
            .output(),
    )
    .await
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

fn private_file(path: &std::path::Path, content: &str, mode: u32) {
    std::fs::write(path, content).unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_without_the_secure_values_file_exits_1_naming_the_fields() {
    let fake = FakeGrafana::start(TOKEN).await;
    seed_everything(&fake, 6);
    let original = fake.content();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("manifests")).unwrap();
    let token = dir.join("token");
    private_file(&token, TOKEN, 0o600);
    std::fs::write(
        dir.join("manifests/dash.yaml"),
        format!(
            "apiVersion: unitlet/v1\nkind: Backup\nmetadata: {{name: dash}}\nspec:\n  schedule: \"0 3 * * *\"\n  grafana:\n    url: \"{}\"\n    tokenFile: {}\n",
            fake.url(),
            token.display()
        ),
    )
    .unwrap();
    let (code, out) = cli(dir, &["backup", "dash"]).await;
    assert_eq!(code, Some(0), "{out}");
    let (_, listed) = cli(dir, &["backups", "dash", "-o", "json"]).await;
    let sets: Value = serde_json::from_str(&listed).unwrap();
    let id = sets[0]["id"].as_str().unwrap().to_owned();
    fake.clear();

    let (code, out) = cli(dir, &["restore", "dash", &id]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("RE-ENTER   datasource prom \"Prometheus\": secure field basicAuthPassword"),
        "{out}"
    );
    assert!(
        fake.datasources().iter().any(|d| d["uid"] == "prom"),
        "restored anyway"
    );

    // A secure-values file others can read is refused, its content unshown.
    let values = dir.join("secure-values.yaml");
    private_file(
        &values,
        &format!("prom: {{basicAuthPassword: {PROM_SECRET}}}\n"),
        0o644,
    );
    let path = values.to_str().unwrap();
    let (code, out) = cli(dir, &["restore", "dash", &id, "--secure-values", path]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("secure values") && out.contains(path), "{out}");
    assert!(!out.contains(PROM_SECRET), "{out}");
    assert!(fake.datasource_secrets("prom").is_empty());

    // An unknown kind is refused before anything is sent.
    let writes = fake.writes();
    let (code, out) = cli(
        dir,
        &["restore", "dash", &id, "--only", "dashboards,widgets"],
    )
    .await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("\"widgets\"") && out.contains("alert-rules"),
        "{out}"
    );
    assert_eq!(fake.writes(), writes);

    std::fs::set_permissions(&values, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let (code, out) = cli(dir, &["restore", "dash", &id, "--secure-values", path]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains(PROM_SECRET), "{out}");
    assert!(
        out.contains("datasources:        0 create, 1 update"),
        "{out}"
    );
    assert_eq!(fake.content(), original);
}

#[path = "grafana_backup_tool.rs"]
mod tool;

/// grafana-backup-tool, a real client, must be able to use the fake: or
/// `Err` outside CI, where a missing Python may skip this check.
fn backup_tool() -> Option<std::path::PathBuf> {
    match tool::find_or_install() {
        Ok(exe) => Some(exe),
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("grafana-backup-tool {} is needed in CI: {e}", tool::VERSION)
        }
        Err(e) => {
            eprintln!("SKIPPED (not CI): grafana-backup-tool unavailable: {e}");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_backup_tool_round_trips_through_the_fake() {
    let Some(exe) = tokio::task::spawn_blocking(backup_tool).await.unwrap() else {
        return;
    };
    let fake = FakeGrafana::start(TOKEN).await;
    // Top-level folders: the tool restores folders in directory order, so
    // a child may come before its parent (its bug, not the fake's).
    for (uid, name) in [("a", "Alpha"), ("b", "Beta"), ("c", "Gamma")] {
        fake.add_folder(uid, name, None);
    }
    fake.set_folder_permissions(
        "a",
        json!([{"role": "Viewer", "permission": 1}, {"teamId": 3, "permission": 2}]),
    );
    fake.set_folder_permissions("b", json!([{"userId": 7, "permission": 4}]));
    fake.set_folder_permissions("c", json!([{"role": "Editor", "permission": 2}]));
    for i in 0..24 {
        let folder = [None, Some("a"), Some("b"), Some("c")][i % 4];
        fake.put_dashboard(&uid(i), &title(i), folder, panels(i, "up"));
    }
    fake.add_contact_point(json!({
        "uid": "cp-email", "name": "Email", "type": "email",
        "settings": {"addresses": "ops@example.com"},
    }));
    fake.add_contact_point(json!({
        "uid": "cp-hook", "name": "Webhook", "type": "webhook",
        "settings": {"url": "http://127.0.0.1:9/hook"}, "disableResolveMessage": true,
    }));
    // What the tool handles: folders, their permissions, dashboards,
    // contact points. It restores contact points without
    // X-Disable-Provenance, so Grafana marks them provisioned ("api"):
    // compared without provenance.
    let handled = |fake: &FakeGrafana| {
        let mut c = fake.content();
        c.retain(|k, _| {
            [
                "folders",
                "folder-permissions",
                "dashboards",
                "contact-points",
            ]
            .contains(k)
        });
        for cp in c.get_mut("contact-points").unwrap().as_array_mut().unwrap() {
            cp.as_object_mut().unwrap().remove("provenance");
        }
        c
    };
    let before = handled(&fake);

    // Not the default `.tmpXXXX`: the tool's restore globs with `**`,
    // which skips hidden directories, and would find nothing.
    let tmp = tempfile::Builder::new().prefix("gbt-").tempdir().unwrap();
    let work = tmp.path().to_owned();
    let run = |args: Vec<String>| {
        let (exe, work, url) = (exe.clone(), work.clone(), fake.url().to_owned());
        let what = format!("grafana-backup {}", args[0]);
        within_owned(
            what,
            tokio::task::spawn_blocking(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                tool::run(&exe, &work, &url, TOKEN, &args)
            }),
        )
    };
    let saved = run(vec![
        "save".into(),
        "--components=folders,dashboards,contact-points".into(),
    ])
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(handled(&fake) == before, "save changed the fake:\n{saved}");
    assert_eq!(fake.writes(), 0, "save wrote:\n{saved}");

    fake.clear();
    let archive = tool::archive(&work);
    let restored = run(vec![
        "restore".into(),
        "--components=folders,folder_permissions,dashboards,contact_points".into(),
        archive.to_string_lossy().into_owned(),
    ])
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("{e}"));
    let after = handled(&fake);
    for (kind, value) in &before {
        assert_eq!(
            &after[kind], value,
            "{kind} differs after the tool's restore:\n{restored}"
        );
    }
    // It posts every dashboard, and (no upsert) again on a second run.
    assert!(fake.writes_by_kind()["dashboards"] >= 24, "{restored}");
}

/// The fake answers as Grafana documents where clients depend on it.
#[tokio::test]
async fn the_fake_answers_as_grafanas_api_documents() {
    let fake = FakeGrafana::start(TOKEN).await;
    seed_everything(&fake, 2);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let url = |p: &str| format!("{}/api/{p}", fake.url());
    let send = |method: reqwest::Method, p: &str, body: Option<Value>, provenance: bool| {
        let mut r = http.request(method, url(p)).bearer_auth(TOKEN);
        if let Some(b) = body {
            r = r.json(&b);
        }
        if provenance {
            r = r.header("X-Disable-Provenance", "true");
        }
        async move {
            let resp = within("request", r.send()).await.unwrap();
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            (status, text)
        }
    };
    use reqwest::Method as M;

    // No token: 401 with Grafana's message; health needs none.
    let r = within("401", http.get(url("search")).send()).await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["message"], "Unauthorized");
    let r = within("health", http.get(url("health")).send())
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);

    // A missing alert rule: 404 without a body.
    assert_eq!(
        send(M::GET, "v1/provisioning/alert-rules/nope", None, false).await,
        (404, String::new())
    );
    // Secure values are write-only: reads show only which fields are set.
    let (status, text) = send(M::GET, "datasources/uid/prom", None, false).await;
    assert_eq!(status, 200);
    assert!(
        text.contains("\"basicAuthPassword\":true") && !text.contains(PROM_SECRET),
        "{text}"
    );
    let (status, _) = send(M::GET, "datasources", None, false).await;
    assert_eq!(status, 200);
    // A taken datasource name: 409.
    let dup = json!({"name": "Prometheus", "type": "prometheus"});
    assert_eq!(send(M::POST, "datasources", Some(dup), false).await.0, 409);
    // A stale library element version: 412.
    let stale = json!({"name": "CPU", "kind": 1, "model": {}, "version": 99, "folderUid": "a"});
    assert_eq!(
        send(M::PATCH, "library-elements/lib-cpu", Some(stale), false)
            .await
            .0,
        412
    );
    // A stale dashboard version: 412 version-mismatch.
    let (status, text) = send(
        M::POST,
        "dashboards/db",
        Some(json!({"dashboard": {"id": fake.dashboard("d000").unwrap().id, "uid": "d000", "title": "Dashboard 000", "version": 0}})),
        false,
    )
    .await;
    assert_eq!(
        (status, text.contains("version-mismatch")),
        (412, true),
        "{text}"
    );
    // A policy tree naming a receiver that does not exist: 400.
    let bad = json!({"receiver": "nobody"});
    assert_eq!(
        send(M::PUT, "v1/provisioning/policies", Some(bad), true)
            .await
            .0,
        400
    );
    // Provenance: "api" unless the write disables it.
    let cp = |uid: &str| json!({"uid": uid, "name": uid, "type": "email", "settings": {"addresses": "x@y.z"}});
    assert_eq!(
        send(
            M::POST,
            "v1/provisioning/contact-points",
            Some(cp("p1")),
            false
        )
        .await
        .0,
        202
    );
    assert_eq!(
        send(
            M::POST,
            "v1/provisioning/contact-points",
            Some(cp("p2")),
            true
        )
        .await
        .0,
        202
    );
    let provenance: Vec<(Value, Value)> = fake
        .contact_points()
        .into_iter()
        .filter(|c| c["uid"] == "p1" || c["uid"] == "p2")
        .map(|c| (c["uid"].clone(), c["provenance"].clone()))
        .collect();
    assert_eq!(
        provenance,
        vec![(json!("p1"), json!("api")), (json!("p2"), json!(""))]
    );
    // Folder permissions: POST replaces them all.
    let items = json!({"items": [{"role": "Viewer", "permission": 1}]});
    assert_eq!(
        send(M::POST, "folders/a/permissions", Some(items), false)
            .await
            .0,
        200
    );
    assert_eq!(
        fake.folder_permissions("a"),
        vec![json!({"role": "Viewer", "permission": 1})]
    );
    assert_eq!(
        send(M::GET, "folders/zz/permissions", None, false).await.0,
        404
    );
    // Every write was counted under its kind, whatever its answer.
    let kinds = fake.writes_by_kind();
    for (kind, n) in [
        ("datasources", 1),
        ("library-elements", 1),
        ("dashboards", 1),
        ("policies", 1),
        ("contact-points", 2),
        ("folder-permissions", 1),
    ] {
        assert_eq!(kinds.get(kind), Some(&n), "{kind}: {kinds:?}");
    }
}
