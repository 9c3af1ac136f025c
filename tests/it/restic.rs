//! Issue 24 item 4: restic repositories as Backup destinations, with
//! Debian's real `restic` and (SFTP) a real `sshd` on loopback that the
//! test starts on a free port with generated keys and stops by PID.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::prometheus_backup::{Prom, complete_ids, now};
use crate::reload::free_port;
use crate::support::{stderr, stdout, wait_for};

const RESTIC: &str = "/usr/bin/restic";
const SSHD: &str = "/usr/sbin/sshd";
const T: Duration = Duration::from_secs(60);
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn need(program: &str, package: &str) {
    assert!(
        Path::new(program).exists(),
        "these tests need {program} (apt-get install {package}); they never skip"
    );
}

/// A private password file holding `password`.
fn password_file(dir: &Path, name: &str, password: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("{password}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// A repository as the test sees it: restic run directly, with `PATH`.
struct Repo {
    repository: String,
    password_file: PathBuf,
    path: String,
}

impl Repo {
    fn restic(&self, args: &[&str]) -> Output {
        Command::new(RESTIC)
            .arg("-r")
            .arg(&self.repository)
            .args(args)
            .env("RESTIC_PASSWORD_FILE", &self.password_file)
            .env("PATH", &self.path)
            .arg("--no-cache")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn init(&self) {
        let o = self.restic(&["init"]);
        assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    }

    /// The snapshots restic itself lists, with their `set=` tags.
    fn sets(&self) -> Vec<String> {
        let o = self.restic(&["snapshots", "--json"]);
        assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let mut ids: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["tags"].as_array().cloned().unwrap_or_default())
            .filter_map(|t| t.as_str()?.strip_prefix("set=").map(str::to_owned))
            .collect();
        ids.sort();
        ids
    }

    /// Each snapshot's `(set, parent snapshot ID)`, oldest first, and
    /// its own ID.
    fn parents(&self) -> Vec<(String, Option<String>, String)> {
        let o = self.restic(&["snapshots", "--json"]);
        assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let mut out: Vec<(String, Option<String>, String)> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let set = s["tags"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find_map(|t| t.as_str()?.strip_prefix("set="))
                    .unwrap()
                    .to_owned();
                let parent = s["parent"].as_str().map(str::to_owned);
                (set, parent, s["id"].as_str().unwrap().to_owned())
            })
            .collect();
        out.sort();
        out
    }

    fn spec(&self) -> String {
        format!(
            "  destination:\n    restic:\n      repository: '{}'\n      passwordFile: {}\n",
            self.repository,
            self.password_file.display()
        )
    }
}

/// Backup ×3 with `keep: 2` → the two newest listed (by unitlet and by
/// restic); verify; the data wiped, the newest set restored → Prometheus
/// answers for the time before the backups. Returns the sets kept.
fn backup_keep_verify_restore(p: &Prom, repo: &Repo) -> Vec<String> {
    p.wait_samples();
    let before = now() - 1.0;
    assert!(!p.query("up", before).is_empty());
    let ids: Vec<String> = (0..3).map(|_| p.backup()).collect();
    assert!(ids[0] < ids[1] && ids[1] < ids[2], "{ids:?}");
    let listed = complete_ids(&p.sets());
    assert_eq!(listed, ids[1..].to_vec(), "keep: 2 leaves the two newest");
    assert_eq!(repo.sets(), ids[1..].to_vec(), "restic forgot the oldest");
    // A repeat backup names the newest earlier snapshot as its parent, so
    // restic does not read the files it already has again.
    let parents = repo.parents();
    assert_eq!(
        parents[1].1.as_deref(),
        Some(parents[0].2.as_str()),
        "{parents:?}"
    );
    let o = p.unitlet(&["backups", "tsdb"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains(&ids[2]), "{}", stdout(&o));

    let o = p.unitlet(&["backups", "verify", "tsdb"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    for id in &ids[1..] {
        assert!(
            stdout(&o).contains(&format!("set {id}: ok")),
            "{}",
            stdout(&o)
        );
    }

    // Wipe, then restore the newest set.
    p.wipe(before);
    let o = p.unitlet(&["restore", "tsdb", &ids[2]]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(p.um.active("prometheus.service"), "active");
    assert!(
        !p.query("up", before).is_empty(),
        "samples from before the backups are back"
    );
    // Nothing staged stays behind.
    let staging = p.um.state_dir.join("backups/.restic-tsdb");
    let left: Vec<_> = std::fs::read_dir(&staging)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "staging left behind: {left:?}");
    ids[1..].to_vec()
}

/// `unitlet ARGS` fails with exit 1 and one line on standard error that
/// contains every one of `want`.
fn fails_clearly(p: &Prom, args: &[&str], want: &[&str]) {
    let o = p.unitlet(args);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{args:?}: {}{}",
        stdout(&o),
        stderr(&o)
    );
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{args:?}: one line: {err}");
    for w in want {
        assert!(lines[0].contains(w), "{args:?}: {w:?} in {err}");
    }
    assert!(!lines[0].contains("Fatal:"), "{err}");
    assert!(
        stdout(&o).trim().is_empty() || args[0] == "restore",
        "{args:?}: {}",
        stdout(&o)
    );
}

#[test]
fn issue24_4_a_local_restic_repository_backs_up_keeps_restores_and_verifies() {
    need(RESTIC, "restic");
    let tmp = tempfile::tempdir().unwrap();
    let pw = password_file(tmp.path(), "restic-password", "correct horse");
    let repo = Repo {
        repository: tmp.path().join("repo").to_string_lossy().into_owned(),
        password_file: pw.clone(),
        path: PATH.to_owned(),
    };
    repo.init();
    let p = Prom::start(2, &repo.spec());
    let kept = backup_keep_verify_restore(&p, &repo);

    // A wrong password: one clear error for every command, nothing changed.
    std::fs::write(&pw, "wrong\n").unwrap();
    for args in [
        &["backup", "tsdb"][..],
        &["backups", "tsdb"],
        &["restore", "tsdb", &kept[1]],
    ] {
        fails_clearly(&p, args, &["wrong password", &repo.repository]);
    }
    std::fs::write(&pw, "correct horse\n").unwrap();
    assert_eq!(repo.sets(), kept);

    // A locked repository (an exclusive lock held by a live restic that
    // waits on a FIFO): one clear error, nothing changed.
    let fifo = tmp.path().join("new-password");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let holder = LockHolder(
        Command::new(RESTIC)
            .args([
                "-r",
                &repo.repository,
                "key",
                "passwd",
                "--new-password-file",
            ])
            .arg(&fifo)
            .env("RESTIC_PASSWORD_FILE", &pw)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let locks = Path::new(&repo.repository).join("locks");
    wait_for(T, "restic holds its lock", || {
        std::fs::read_dir(&locks).ok()?.next().map(|_| ())
    });
    for args in [&["backup", "tsdb"][..], &["backups", "tsdb"]] {
        fails_clearly(&p, args, &["is locked", "PID", "unlock", &repo.repository]);
    }
    // The holder finishes (same password) and lets go of its lock.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&fifo)
        .unwrap()
        .write_all(b"correct horse\n")
        .unwrap();
    drop(holder);
    assert_eq!(repo.sets(), kept, "the locked runs changed nothing");
    let id = p.backup();
    assert_eq!(repo.sets(), vec![kept[1].clone(), id]);

    // What restic added (its summary's data_added) is the run's "written";
    // the listing, from snapshot tags, cannot say: "-".
    let o = p.unitlet(&["backup", "tsdb"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    let written = out
        .split_once(" (")
        .and_then(|(_, r)| r.split_once(" written)"))
        .map(|(w, _)| w.to_owned());
    assert!(
        written.is_some_and(|w| w.ends_with('B') && !w.starts_with("0 ")),
        "{out}"
    );
    let o = p.unitlet(&["backups", "tsdb"]);
    let out = stdout(&o);
    assert!(
        out.lines()
            .skip(1)
            .all(|l| l.split_whitespace().rev().take(3).all(|w| w == "-")),
        "{out}"
    );
}

/// The restic that holds the repository's lock; waited for on drop (it
/// exits once its FIFO is written), killed by PID if it is still there.
struct LockHolder(Child);

impl Drop for LockHolder {
    fn drop(&mut self) {
        let deadline = std::time::Instant::now() + T;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A private `sshd` on 127.0.0.1, stopped by PID on drop.
struct Sshd {
    child: Child,
    /// A directory holding an `ssh` that uses this server's keys and port.
    bin: PathBuf,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path) {
    let o = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}

impl Sshd {
    fn start(dir: &Path) -> Sshd {
        need(SSHD, "openssh-server");
        // sshd's privilege separation directory (the package's service
        // would create it).
        std::fs::create_dir_all("/run/sshd").unwrap();
        let (host, user) = (dir.join("host_key"), dir.join("user_key"));
        keygen(&host);
        keygen(&user);
        let keys = dir.join("authorized_keys");
        std::fs::copy(dir.join("user_key.pub"), &keys).unwrap();
        let port = free_port();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPidFile {}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nSubsystem sftp internal-sftp\n",
                host.display(),
                keys.display(),
                dir.join("sshd.pid").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("sshd.log")).unwrap();
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let ssh_config = dir.join("ssh_config");
        std::fs::write(
            &ssh_config,
            format!(
                "Host 127.0.0.1\n  Port {port}\n  IdentityFile {}\n  IdentitiesOnly yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  BatchMode yes\n  LogLevel ERROR\n",
                user.display()
            ),
        )
        .unwrap();
        let bin = dir.join("bin");
        std::fs::create_dir(&bin).unwrap();
        let ssh = bin.join("ssh");
        std::fs::write(
            &ssh,
            format!(
                "#!/bin/sh\nexec /usr/bin/ssh -F {} \"$@\"\n",
                ssh_config.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o755)).unwrap();
        let sshd = Sshd { child, bin };
        wait_for(T, "sshd accepts logins", || {
            let o = Command::new(&ssh)
                .args(["root@127.0.0.1", "true"])
                .stdin(Stdio::null())
                .output()
                .ok()?;
            o.status.success().then_some(())
        });
        sshd
    }

    fn path(&self) -> String {
        format!("{}:{PATH}", self.bin.display())
    }
}

#[test]
fn issue24_4_an_sftp_restic_repository_over_loopback_backs_up_keeps_restores_and_verifies() {
    need(RESTIC, "restic");
    let tmp = tempfile::tempdir().unwrap();
    let sshd = Sshd::start(tmp.path());
    let pw = password_file(tmp.path(), "restic-password", "battery staple");
    let repo = Repo {
        repository: format!("sftp:root@127.0.0.1:{}", tmp.path().join("repo").display()),
        password_file: pw,
        path: sshd.path(),
    };
    repo.init();
    let mut p = Prom::start(2, &repo.spec());
    p.env.push(("PATH", PathBuf::from(sshd.path())));
    backup_keep_verify_restore(&p, &repo);
    drop(p);
    drop(sshd);
}

/// Grafana sets go to a restic repository too: backup, list, restore into
/// an emptied Grafana.
#[test]
fn issue24_4_grafana_sets_go_to_a_restic_repository_and_come_back() {
    need(RESTIC, "restic");
    const TOKEN: &str = "glsa_restic_test_token_0c1d2e";
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let fake = rt.block_on(crate::fake_grafana::FakeGrafana::start(TOKEN));
    fake.add_folder("a", "Alpha", None);
    for i in 0..5 {
        fake.put_dashboard(
            &format!("d{i}"),
            &format!("Dashboard {i}"),
            Some("a"),
            serde_json::json!([{"id": 1, "type": "timeseries", "title": format!("p{i}")}]),
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo {
        repository: tmp.path().join("repo").to_string_lossy().into_owned(),
        password_file: password_file(tmp.path(), "restic-password", "grafana horse"),
        path: PATH.to_owned(),
    };
    repo.init();
    let token = password_file(tmp.path(), "grafana-token", TOKEN);
    let um = crate::support::UserManager::start();
    um.write_manifest(
        "dash.yaml",
        &format!(
            "apiVersion: unitlet/v1\nkind: Backup\nmetadata: {{name: dash}}\nspec:\n  schedule: \"0 3 * * *\"\n  keep: 1\n  grafana:\n    url: \"{}\"\n    tokenFile: {}\n{}",
            fake.url(),
            token.display(),
            repo.spec()
        ),
    );
    let mut ids = Vec::new();
    for _ in 0..2 {
        let o = um.unitlet(&["backup", "dash"]);
        assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
        assert!(!stdout(&o).contains(TOKEN));
        ids.push(repo.sets().last().cloned().unwrap());
    }
    assert_eq!(repo.sets(), vec![ids[1].clone()], "keep: 1");
    let o = um.unitlet(&["backups", "dash", "-o", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let sets: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(sets[0]["id"], ids[1].as_str(), "{sets}");
    assert_eq!(sets[0]["kind"], "grafana", "{sets}");
    assert_eq!(sets[0]["status"], "complete", "{sets}");
    fake.clear();
    let o = um.unitlet(&["restore", "dash", &ids[1]]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(fake.dashboards().len(), 5);
    assert_eq!(fake.folders().len(), 1);
}
