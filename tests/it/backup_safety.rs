//! Backup sets are data from disk that someone else may have touched: a
//! restore must refuse a hostile or foreign set before its first write, and
//! Backups sharing a destination must never touch each other's sets.
//!
//! Everything runs through the `unitlet` binary against the fake Grafana,
//! which counts write requests; the Grafana commands need no user manager.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::fake_grafana::FakeGrafana;
use crate::support::{Tmpfs, UNITLET, stderr, stdout};

const TOKEN: &str = "glsa_safety_token_8c1d";

/// A manifests directory, a state directory and a token file in a private
/// temporary directory, and a way to run `unitlet` on them.
struct Cli {
    root: PathBuf,
    manifests: PathBuf,
    state: PathBuf,
    token: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Cli {
    fn new() -> Cli {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700)).unwrap();
        let manifests = root.join("manifests");
        std::fs::create_dir(&manifests).unwrap();
        std::fs::set_permissions(&manifests, std::fs::Permissions::from_mode(0o700)).unwrap();
        let token = root.join("grafana-token");
        std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
        Cli {
            state: root.join("state"),
            manifests,
            token,
            root,
            _tmp: tmp,
        }
    }

    /// A Grafana Backup `name` with `keep` and an optional destination.
    fn grafana_backup(&self, name: &str, url: &str, keep: u32, destination: Option<&Path>) {
        let dest = destination
            .map(|d| format!("  destination: {}\n", d.display()))
            .unwrap_or_default();
        self.write_manifest(
            name,
            &format!(
                "apiVersion: unitlet/v1\nkind: Backup\nmetadata: {{name: {name}}}\nspec:\n  schedule: every 6h\n  keep: {keep}\n{dest}  grafana:\n    url: \"{url}\"\n    tokenFile: {}\n",
                self.token.display()
            ),
        );
    }

    fn write_manifest(&self, name: &str, body: &str) {
        std::fs::write(self.manifests.join(format!("{name}.yaml")), body).unwrap();
    }

    fn unitlet(&self, args: &[&str]) -> Output {
        Command::new(UNITLET)
            .args(args)
            .env("UNITLET_MANIFESTS", &self.manifests)
            .env("UNITLET_STATE_DIR", &self.state)
            .env("UNITLET_UNIT_DIR", self.root.join("units"))
            .env("XDG_RUNTIME_DIR", &self.root)
            .env_remove("UNITLET_BUS")
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .stdin(Stdio::null())
            .output()
            .expect("run unitlet")
    }

    /// `unitlet backup NAME`, which must succeed; returns the new set's ID.
    fn backup(&self, name: &str) -> String {
        let before: Vec<String> = self.set_rows(name).iter().map(id_of).collect();
        let o = self.unitlet(&["backup", name]);
        assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
        self.set_rows(name)
            .iter()
            .map(id_of)
            .find(|id| !before.contains(id))
            .expect("backup made a new set")
    }

    /// `unitlet backups NAME -o json`.
    fn set_rows(&self, name: &str) -> Vec<Value> {
        let o = self.unitlet(&["backups", name, "-o", "json"]);
        assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
        serde_json::from_slice::<Value>(&o.stdout)
            .expect("backups -o json prints JSON")
            .as_array()
            .unwrap()
            .clone()
    }

    fn default_destination(&self, name: &str) -> PathBuf {
        self.state.join("backups").join(name)
    }
}

fn id_of(row: &Value) -> String {
    row["id"].as_str().unwrap().to_owned()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A runtime, a fake Grafana holding [`populate`]'s objects, and a
/// sandbox to run unitlet in. Drop the fake before the runtime.
fn populated_grafana() -> (tokio::runtime::Runtime, FakeGrafana, Cli) {
    let rt = runtime();
    let fake = rt.block_on(FakeGrafana::start(TOKEN));
    populate(&fake);
    (rt, fake, Cli::new())
}

/// Folders a ⊃ b and a few dashboards in them and in the root.
fn populate(fake: &FakeGrafana) {
    fake.add_folder("a", "Alpha", None);
    fake.add_folder("b", "Beta", Some("a"));
    for (i, folder) in [None, Some("a"), Some("b"), None].into_iter().enumerate() {
        fake.put_dashboard(
            &format!("d{i}"),
            &format!("Dashboard {i}"),
            folder,
            json!([{"id": 1, "type": "timeseries", "title": format!("p{i}")}]),
        );
    }
}

/// Rewrites `backup.json` of the set in `dir` through `edit`, as anyone
/// able to write to the destination could.
fn edit_manifest(dir: &Path, edit: impl FnOnce(&mut Value)) {
    let path = dir.join("backup.json");
    let mut v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

/// Records `bytes` as the content of `rel` in `backup.json`: what a forger
/// does so that checksums still match.
fn record(dir: &Path, rel: &str, bytes: &[u8]) {
    edit_manifest(dir, |v| {
        let files = v["files"].as_array_mut().unwrap();
        let entry = files
            .iter_mut()
            .find(|f| f["path"] == rel)
            .unwrap_or_else(|| panic!("{rel} is not in backup.json"));
        entry["size"] = json!(bytes.len());
        entry["sha256"] = json!(hex::encode(Sha256::digest(bytes)));
    });
}

/// Every path below `dir` with its size and modification time, to prove
/// that nothing in it was written.
fn tree(dir: &Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            out.push((e.path(), m.len(), m.modified().unwrap()));
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// `restore BACKUP ID`, dry run and real, each exits 1 naming `needle`.
fn restore_fails_both_ways(cli: &Cli, backup: &str, id: &str, needle: &str) {
    for dry in [true, false] {
        let mut args = vec!["restore", backup, id];
        if dry {
            args.push("--dry-run");
        }
        let o = cli.unitlet(&args);
        assert_eq!(
            o.status.code(),
            Some(1),
            "{args:?}: {}{}",
            stdout(&o),
            stderr(&o)
        );
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
    }
}

/// Restores `id` of Backup `dash` (dry and real) and asserts both are
/// refused with `needle` in the error, without a single write to Grafana or
/// the destination.
fn assert_refused(cli: &Cli, fake: &FakeGrafana, id: &str, needle: &str) {
    let dest = cli.default_destination("dash");
    let before = tree(&dest);
    restore_fails_both_ways(cli, "dash", id, needle);
    assert_eq!(fake.writes(), 0, "a refused restore wrote to Grafana");
    assert!(
        fake.folders().is_empty() && fake.dashboards().is_empty(),
        "a refused restore changed Grafana"
    );
    assert_eq!(
        tree(&dest),
        before,
        "a refused restore wrote to the destination"
    );
}

#[test]
fn backups_sharing_a_destination_never_prune_or_restore_each_others_sets() {
    let (rt, fake, cli) = populated_grafana();
    let shared = cli.root.join("shared");
    cli.grafana_backup("a", fake.url(), 1, Some(&shared));
    cli.grafana_backup("b", fake.url(), 2, Some(&shared));

    // A set of unitlet 0.1: its backup.json names no Backup.
    let legacy = cli.backup("b");
    edit_manifest(&shared.join(&legacy), |v| {
        v.as_object_mut().unwrap().remove("backup");
    });
    let b1 = cli.backup("b");
    let b2 = cli.backup("b");
    let mut a_ids = Vec::new();
    for _ in 0..3 {
        a_ids.push(cli.backup("a"));
    }

    // A's keep: 1 deleted A's older sets, and nothing else.
    for id in [&b1, &b2, &legacy] {
        assert!(shared.join(id).is_dir(), "{id} was deleted by a's keep");
    }
    for id in &a_ids[..2] {
        assert!(!shared.join(id).exists(), "{id} of a was not pruned");
    }
    let rows = cli.set_rows("a");
    let listed: Vec<(String, bool)> = rows
        .iter()
        .map(|r| (id_of(r), r["legacy"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        listed,
        vec![(legacy.clone(), true), (a_ids[2].clone(), false)],
        "backups a lists a's sets and legacy ones only: {rows:?}"
    );
    assert_eq!(rows[1]["backup"], "a");
    assert_eq!(rows[0]["backup"], Value::Null);
    let ids_b: Vec<String> = cli.set_rows("b").iter().map(id_of).collect();
    assert_eq!(ids_b, vec![legacy.clone(), b1.clone(), b2.clone()]);

    // The table marks the legacy set.
    let o = cli.unitlet(&["backups", "a"]);
    let table = stdout(&o);
    let line = table.lines().find(|l| l.starts_with(&legacy)).unwrap();
    // A 0.2 set records no blocks, bytes written or shared: `-`.
    let words = line.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(words.ends_with("complete (legacy) - - -"), "{table}");

    // B's next runs prune only B's own sets, never the legacy one.
    cli.backup("b");
    cli.backup("b");
    assert!(shared.join(&legacy).is_dir(), "a legacy set was pruned");
    assert!(!shared.join(&b1).exists() && !shared.join(&b2).exists());
    assert!(shared.join(&a_ids[2]).is_dir(), "b's keep deleted a's set");

    // Neither a foreign nor a legacy set is restored, and nothing is written.
    fake.clear();
    let b_last = cli.set_rows("b").iter().map(id_of).next_back().unwrap();
    let o = cli.unitlet(&["restore", "a", &b_last]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("belongs to Backup b"), "{}", stderr(&o));
    let o = cli.unitlet(&["restore", "a", &legacy]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("does not record which Backup made it"),
        "{}",
        stderr(&o)
    );
    assert_eq!(fake.writes(), 0);
    // Its own set restores.
    let o = cli.unitlet(&["restore", "a", &a_ids[2]]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(fake.dashboards().len(), 4);
    drop(fake);
    drop(rt);
}

/// A set whose backup.json lists `../NAME` (with the right checksum) is
/// refused, so a set cannot make a restore read outside of it.
#[test]
fn a_parent_path_in_backup_json_is_refused_before_any_write() {
    let (rt, fake, cli) = populated_grafana();
    cli.grafana_backup("dash", fake.url(), 5, None);
    let id = cli.backup("dash");
    let dest = cli.default_destination("dash");
    let set = dest.join(&id);
    // A real dashboard file, placed beside the set.
    let outside = std::fs::read(set.join("dashboards/d0.json")).unwrap();
    std::fs::write(dest.join("d0.json"), &outside).unwrap();
    edit_manifest(&set, |v| {
        v["files"].as_array_mut().unwrap().push(json!({
            "path": "dashboards/../../d0.json",
            "size": outside.len(),
            "sha256": hex::encode(Sha256::digest(&outside)),
        }));
    });
    fake.clear();
    assert_refused(&cli, &fake, &id, "is not a path inside the set");
    drop(fake);
    drop(rt);
}

/// A dashboard file replaced by a symlink to a file outside the set, with
/// size and sha256 updated in backup.json, used to be restored as if it
/// were part of the set.
#[test]
fn a_set_file_replaced_by_a_symlink_is_refused_before_any_write() {
    let (rt, fake, cli) = populated_grafana();
    cli.grafana_backup("dash", fake.url(), 5, None);
    let id = cli.backup("dash");
    let set = cli.default_destination("dash").join(&id);
    let evil = serde_json::to_vec(&json!({
        "dashboard": {"uid": "d0", "title": "Planted", "panels": []},
        "meta": {},
    }))
    .unwrap();
    let outside = cli.root.join("planted.json");
    std::fs::write(&outside, &evil).unwrap();
    let file = set.join("dashboards/d0.json");
    std::fs::remove_file(&file).unwrap();
    std::os::unix::fs::symlink(&outside, &file).unwrap();
    record(&set, "dashboards/d0.json", &evil);
    fake.clear();
    assert_refused(&cli, &fake, &id, "dashboards/d0.json is a symbolic link");
    drop(fake);
    drop(rt);
}

/// A set directory that is itself a symlink was restored although
/// `backups` does not list it.
#[test]
fn a_set_directory_that_is_a_symlink_is_refused_before_any_write() {
    let (rt, fake, cli) = populated_grafana();
    cli.grafana_backup("dash", fake.url(), 5, None);
    let id = cli.backup("dash");
    let dest = cli.default_destination("dash");
    let elsewhere = cli.root.join("elsewhere");
    std::fs::rename(dest.join(&id), &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, dest.join(&id)).unwrap();
    assert!(cli.set_rows("dash").is_empty(), "a symlink is not listed");
    fake.clear();
    assert_refused(&cli, &fake, &id, "is a symbolic link");
    drop(fake);
    drop(rt);
}

/// A 1 GB (sparse) backup.json is refused by its size before it is read:
/// neither `backups` nor `restore` reads it into memory.
#[test]
fn a_huge_backup_json_is_refused_by_size_without_being_read() {
    let (rt, fake, cli) = populated_grafana();
    cli.grafana_backup("dash", fake.url(), 5, None);
    let id = cli.backup("dash");
    let set = cli.default_destination("dash").join(&id);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(set.join("backup.json"))
        .unwrap();
    f.set_len(1 << 30).unwrap();
    drop(f);
    let rows = cli.set_rows("dash");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["status"], "incomplete", "{rows:?}");
    fake.clear();
    assert_refused(&cli, &fake, &id, "over the limit of 64 MiB");
    // The largest RSS of any unitlet run by this test (ru_maxrss is KiB).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) },
        0
    );
    let peak_mib = usage.ru_maxrss / 1024;
    assert!(
        peak_mib < 200,
        "a unitlet process peaked at {peak_mib} MiB RSS"
    );
    drop(fake);
    drop(rt);
}

/// A dashboard uid `..` failed in `--dry-run`, yet the real restore created
/// folders and dashboards before failing with exit 1.
#[test]
fn a_dashboard_uid_dot_dot_is_refused_before_any_write() {
    let (rt, fake, cli) = populated_grafana();
    cli.grafana_backup("dash", fake.url(), 5, None);
    let id = cli.backup("dash");
    let set = cli.default_destination("dash").join(&id);
    // The last dashboard restore would send gets the uid `..`.
    let rel = "dashboards/d3.json";
    let mut doc: Value = serde_json::from_slice(&std::fs::read(set.join(rel)).unwrap()).unwrap();
    doc["dashboard"]["uid"] = json!("..");
    let bytes = serde_json::to_vec_pretty(&doc).unwrap();
    std::fs::write(set.join(rel), &bytes).unwrap();
    record(&set, rel, &bytes);
    fake.clear();
    assert_refused(&cli, &fake, &id, "dashboard uid \"..\"");
    drop(fake);
    drop(rt);
}

/// Everything restore sends is checked first: a dashboard in a folder that
/// is neither in the set nor in Grafana, two dashboards with one title in
/// one folder, a folder that is its own ancestor, malformed JSON.
#[test]
fn a_set_restore_could_only_partly_apply_is_refused_before_any_write() {
    let (rt, fake, cli) = populated_grafana();
    cli.grafana_backup("dash", fake.url(), 10, None);
    let dest = cli.default_destination("dash");
    type Tamper = fn(&Path);
    let cases: [(Tamper, &str); 4] = [
        (
            |set| {
                let rel = "dashboards/d3.json";
                let mut doc: Value =
                    serde_json::from_slice(&std::fs::read(set.join(rel)).unwrap()).unwrap();
                doc["meta"]["folderUid"] = json!("nowhere");
                let bytes = serde_json::to_vec_pretty(&doc).unwrap();
                std::fs::write(set.join(rel), &bytes).unwrap();
                record(set, rel, &bytes);
            },
            "neither in the set nor in Grafana",
        ),
        (
            |set| {
                let rel = "dashboards/d3.json";
                let mut doc: Value =
                    serde_json::from_slice(&std::fs::read(set.join(rel)).unwrap()).unwrap();
                doc["dashboard"]["title"] = json!("Dashboard 0");
                let bytes = serde_json::to_vec_pretty(&doc).unwrap();
                std::fs::write(set.join(rel), &bytes).unwrap();
                record(set, rel, &bytes);
            },
            "are both titled \"Dashboard 0\"",
        ),
        (
            |set| {
                let bytes = serde_json::to_vec(&json!([
                    {"uid": "a", "title": "Alpha", "parentUid": "b"},
                    {"uid": "b", "title": "Beta", "parentUid": "a"},
                ]))
                .unwrap();
                std::fs::write(set.join("folders.json"), &bytes).unwrap();
                record(set, "folders.json", &bytes);
            },
            "is its own ancestor",
        ),
        (
            |set| {
                let rel = "dashboards/d3.json";
                let bytes = b"{\"dashboard\": {\"uid\": \"d3\", ".to_vec();
                std::fs::write(set.join(rel), &bytes).unwrap();
                record(set, rel, &bytes);
            },
            "dashboards/d3.json is not a valid Grafana backup file",
        ),
    ];
    let mut ids = Vec::new();
    for _ in &cases {
        ids.push(cli.backup("dash"));
    }
    fake.clear();
    for ((tamper, needle), id) in cases.iter().zip(&ids) {
        tamper(&dest.join(id));
        assert_refused(&cli, &fake, id, needle);
    }
    drop(fake);
    drop(rt);
}

#[test]
fn a_system_or_shared_destination_is_refused_with_a_clear_message() {
    let cli = Cli::new();
    for (dest, needle) in [
        ("/", "/ is a directory shared by the whole system"),
        ("/etc/unitlet", "/etc/unitlet is a system directory"),
    ] {
        cli.write_manifest(
            "dash",
            &format!(
                "apiVersion: unitlet/v1\nkind: Backup\nmetadata: {{name: dash}}\nspec:\n  schedule: every 6h\n  destination: {dest}\n  grafana:\n    url: \"http://127.0.0.1:9\"\n    tokenFile: {}\n",
                cli.token.display()
            ),
        );
        let o = cli.unitlet(&["backup", "dash"]);
        assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
        let err = stderr(&o);
        assert!(err.contains("spec.destination"), "{err}");
        assert!(err.contains(needle), "{err}");
    }
}

#[test]
fn a_destination_other_users_can_write_is_refused_and_left_untouched() {
    let (rt, fake, cli) = populated_grafana();
    let dest = cli.root.join("group-writable");
    std::fs::create_dir(&dest).unwrap();
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o770)).unwrap();
    cli.grafana_backup("dash", fake.url(), 5, Some(&dest));
    let o = cli.unitlet(&["backup", "dash"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("writable by other users"), "{err}");
    assert!(
        err.contains(&format!("chmod go-w {}", dest.display())),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 0);
    drop(fake);
    drop(rt);
}

/// The same hostile sets for a Prometheus Backup: refused by verification,
/// before the data directory, its siblings or Prometheus are touched.
#[test]
fn hostile_prometheus_sets_are_refused_before_anything_is_touched() {
    use unitlet::backup::Store;

    let cli = Cli::new();
    // Stands in for Prometheus: a restore that got past verification would
    // connect to it (or stop the service first).
    let prometheus = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    prometheus.set_nonblocking(true).unwrap();
    let data = cli.root.join("data");
    std::fs::create_dir_all(data.join("wal")).unwrap();
    std::fs::write(data.join("wal/00000000"), b"live data").unwrap();
    cli.write_manifest(
        "tsdb",
        &format!(
            "apiVersion: unitlet/v1\nkind: Backup\nmetadata: {{name: tsdb}}\nspec:\n  schedule: every 6h\n  prometheus:\n    url: \"http://{}\"\n    dataDir: {}\n    service: prometheus\n",
            prometheus.local_addr().unwrap(),
            data.display()
        ),
    );
    let dest = cli.default_destination("tsdb");
    let store = Store::open(&dest, "tsdb", "prometheus").unwrap();
    let block = "snapshot/01HZZZZZZZZZZZZZZZZZZZZZZZ";
    let make_set = || {
        let mut w = store.begin("http://test").unwrap();
        w.write_file(
            &format!("{block}/meta.json"),
            b"{\"ulid\":\"01HZZZZZZZZZZZZZZZZZZZZZZZ\"}",
        )
        .unwrap();
        w.write_file(&format!("{block}/index"), b"index").unwrap();
        w.finish().unwrap().path
    };
    let outside = cli.root.join("planted");
    std::fs::write(&outside, b"planted").unwrap();

    let mut hostile: Vec<(PathBuf, &str)> = Vec::new();
    // A file replaced by a symlink, its checksum updated.
    let set = make_set();
    let rel = format!("{block}/index");
    std::fs::remove_file(set.join(&rel)).unwrap();
    std::os::unix::fs::symlink(&outside, set.join(&rel)).unwrap();
    record(&set, &rel, b"planted");
    hostile.push((set, "is a symbolic link"));
    // A `../` path with the right checksum.
    let set = make_set();
    edit_manifest(&set, |v| {
        v["files"].as_array_mut().unwrap().push(json!({
            "path": "snapshot/../../../planted",
            "size": 7,
            "sha256": hex::encode(Sha256::digest(b"planted")),
        }));
    });
    hostile.push((set, "is not a path inside the set"));
    // A huge backup.json.
    let set = make_set();
    std::fs::OpenOptions::new()
        .write(true)
        .open(set.join("backup.json"))
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    hostile.push((set, "over the limit of 64 MiB"));
    // A set directory that is a symlink.
    let set = make_set();
    let moved = cli.root.join("moved-set");
    std::fs::rename(&set, &moved).unwrap();
    std::os::unix::fs::symlink(&moved, &set).unwrap();
    hostile.push((set, "is a symbolic link"));

    let data_before = tree(&data);
    let siblings = || {
        let mut v: Vec<_> = std::fs::read_dir(&cli.root)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        v.sort();
        v
    };
    let siblings_before = siblings();
    for (set, needle) in &hostile {
        let id = set.file_name().unwrap().to_str().unwrap();
        let dest_before = tree(&dest);
        restore_fails_both_ways(&cli, "tsdb", id, needle);
        assert_eq!(
            tree(&dest),
            dest_before,
            "{id}: the destination was written"
        );
    }
    assert_eq!(tree(&data), data_before, "the data directory was touched");
    assert_eq!(siblings(), siblings_before, "something was moved aside");
    assert!(
        prometheus.accept().is_err(),
        "a refused restore connected to Prometheus"
    );
}

fn put_dashboards(fake: &FakeGrafana, range: std::ops::Range<usize>) {
    for i in range {
        fake.put_dashboard(
            &format!("full{i}"),
            &format!("Dashboard {i}"),
            None,
            json!([{"id": 1, "type": "timeseries", "title": format!("p{i}")}]),
        );
    }
}

/// Issue 20 item 15: a run that fills the destination fails saying so and
/// how much the set needed, removes what it wrote, and the next (small)
/// run succeeds.
#[test]
fn a_run_that_fills_the_destination_removes_its_set_and_the_next_run_succeeds() {
    let rt = runtime();
    let fake = rt.block_on(FakeGrafana::start(TOKEN));
    let cli = Cli::new();
    let dest = cli.root.join("small");
    let disk = Tmpfs::mount(&dest, "2m");
    put_dashboards(&fake, 0..50);
    cli.grafana_backup("dash", fake.url(), 5, Some(&dest));
    let first = cli.backup("dash");

    put_dashboards(&fake, 50..3000);
    let o = cli.unitlet(&["backup", "dash"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("backup destination {} is full", dest.display())),
        "says the destination is full: {err}"
    );
    assert!(
        err.contains("needed about") && err.contains("MiB on disk"),
        "says how much: {err}"
    );
    let mut left: Vec<String> = std::fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, vec![first.clone()], "the failed run left nothing");

    for i in 50..3000 {
        fake.delete_dashboard(&format!("full{i}"));
    }
    let second = cli.backup("dash");
    let rows = cli.set_rows("dash");
    let ids: Vec<String> = rows.iter().map(id_of).collect();
    assert_eq!(ids, vec![first, second], "{rows:?}");
    assert!(rows.iter().all(|r| r["status"] == "complete"), "{rows:?}");
    drop(disk);
    drop(fake);
    drop(rt);
}

/// Issue 21 item 5: with the state directory under `/var/lib` (where
/// quickstart puts it), the default destination is unitlet's own and is
/// accepted, by `backup` and by `doctor`.
#[test]
fn the_default_destination_is_accepted_under_a_state_dir_in_var_lib() {
    let (rt, fake, mut cli) = populated_grafana();
    let base = tempfile::Builder::new()
        .prefix("unitlet-it-state.")
        .tempdir_in("/var/lib")
        .unwrap();
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    cli.state = base.path().join("state/unitlet");
    cli.grafana_backup("dash", fake.url(), 5, None);
    let id = cli.backup("dash");
    let set = base.path().join("state/unitlet/backups/dash").join(&id);
    assert!(set.join("backup.json").is_file(), "{}", set.display());
    let o = cli.unitlet(&["doctor", "-o", "json"]);
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    let c = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "backup-destination/dash")
        .unwrap_or_else(|| panic!("no destination check: {report:#}"))
        .clone();
    assert_eq!(c["status"], "OK", "{c}");
    drop(fake);
    drop(rt);
}
