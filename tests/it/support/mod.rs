//! Shared support for integration tests: a private, real systemd user
//! manager per test, in its own runtime directory and cgroup subtree.
//!
//! It never touches PID 1's cgroups or a real user session: the manager is
//! started inside cgroup directories created for it (so it manages only that
//! subtree) and talks only to its own socket-activated session bus.

#![allow(dead_code)]

pub mod etcd;
pub mod fleet;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const UNITLET: &str = env!("CARGO_BIN_EXE_unitlet");

/// Fail loudly (never skip) when the environment cannot host a manager.
fn require(cond: bool, what: &str) {
    if !cond {
        panic!(
            "integration tests need {what}; install systemd, dbus and dbus-user-session (bash .ci/run does) — these tests never skip{}",
            if std::env::var("CI").as_deref() == Ok("true") {
                " (CI=true)"
            } else {
                ""
            }
        );
    }
}

/// Poll `f` until it returns `Some`, or panic after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Poll `f` until it returns `Ok`, or panic after `timeout` saying what
/// the last `Err` was: what was observed instead of what was awaited.
pub fn wait_seen<T, S: std::fmt::Debug>(
    timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> Result<T, S>,
) -> T {
    let start = Instant::now();
    loop {
        let last = match f() {
            Ok(v) => return v,
            Err(seen) => seen,
        };
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}; last seen: {last:?}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

static SEQ: AtomicU32 = AtomicU32::new(0);

pub struct UserManager {
    pub runtime: PathBuf,
    pub manifests: PathBuf,
    pub unit_dir: PathBuf,
    pub state_dir: PathBuf,
    cgroups: Vec<PathBuf>,
    child: Child,
    home: PathBuf,
    _tmp: tempfile::TempDir,
}

/// `systemd --user`, moved into our own cgroups before it execs.
fn spawn_manager(runtime: &Path, cgroups: &[PathBuf], home: &Path) -> Child {
    let moves: String = cgroups
        .iter()
        .map(|c| format!("echo $$ > {}/cgroup.procs || exit 97; ", c.display()))
        .collect();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(runtime.join("manager.log"))
        .unwrap();
    Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("{moves} exec /usr/lib/systemd/systemd --user"))
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("HOME", home)
        .env("XDG_RUNTIME_DIR", runtime)
        .env("XDG_CONFIG_HOME", runtime.join("config"))
        .env("XDG_DATA_HOME", runtime.join("data"))
        .env("XDG_STATE_HOME", runtime.join("state"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn systemd --user")
}

impl UserManager {
    pub fn start() -> UserManager {
        Self::start_with_home(None)
    }

    /// A manager whose `$XDG_RUNTIME_DIR/systemd` is a tmpfs of its own,
    /// as on a machine where the runtime directory is `/run/user/UID`:
    /// what systemd creates and removes there for every unit it starts
    /// (`units/invocation:*` links) then stays off the disk the unit files
    /// and manifests are on (benchmarks).
    pub fn start_with_tmpfs_systemd_runtime() -> UserManager {
        Self::start_inner(None, true)
    }

    /// A manager whose `$HOME` (and so `%h`) is `home`.
    pub fn start_with_home(home: Option<&Path>) -> UserManager {
        Self::start_inner(home, false)
    }

    fn start_inner(home: Option<&Path>, tmpfs_systemd_runtime: bool) -> UserManager {
        require(
            Path::new("/usr/lib/systemd/systemd").exists(),
            "/usr/lib/systemd/systemd",
        );
        require(
            Path::new("/usr/bin/dbus-daemon").exists()
                || Path::new("/usr/bin/dbus-broker").exists(),
            "a D-Bus daemon",
        );
        require(Path::new("/sys/fs/cgroup").is_dir(), "/sys/fs/cgroup");
        std::fs::create_dir_all("/run/systemd/system").expect("create /run/systemd/system");
        let tmp = tempfile::Builder::new()
            .prefix("unitlet-it.")
            .tempdir()
            .expect("tempdir");
        let runtime = tmp.path().to_path_buf();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
        share_mount(&runtime);
        for d in ["config", "data", "state", "config/unitlet/manifests"] {
            std::fs::create_dir_all(runtime.join(d)).unwrap();
        }
        if tmpfs_systemd_runtime {
            let dir = runtime.join("systemd");
            std::fs::create_dir_all(&dir).unwrap();
            let status = Command::new("mount")
                .args(["-t", "tmpfs", "-o", "mode=0755,size=64m", "tmpfs"])
                .arg(&dir)
                .status()
                .expect("mount");
            assert!(status.success(), "mount a tmpfs on {}", dir.display());
        }
        for d in ["config", "config/unitlet", "config/unitlet/manifests"] {
            std::fs::set_permissions(runtime.join(d), std::fs::Permissions::from_mode(0o755))
                .unwrap();
        }
        // Our own cgroup under every hierarchy.
        let name = format!(
            "unitlet-it-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let mut cgroups = Vec::new();
        for ent in std::fs::read_dir("/sys/fs/cgroup")
            .expect("read /sys/fs/cgroup")
            .flatten()
        {
            let h = ent.path();
            if !h.is_dir() || !h.join("cgroup.procs").exists() && !h.join("tasks").exists() {
                // cgroup2 root has cgroup.procs; v1 hierarchies too.
                if !h.join("cgroup.procs").exists() {
                    continue;
                }
            }
            let cg = h.join(&name);
            if std::fs::create_dir(&cg).is_ok() {
                // cgroup v1 cpuset refuses tasks until it has CPUs and memory nodes.
                for f in ["cpuset.cpus", "cpuset.mems"] {
                    if let Ok(v) = std::fs::read_to_string(h.join(f)) {
                        let _ = std::fs::write(cg.join(f), v.trim());
                    }
                }
                cgroups.push(cg);
            }
        }
        if Path::new("/sys/fs/cgroup/cgroup.procs").exists() && cgroups.is_empty() {
            // Pure cgroup2 mount.
            let cg = PathBuf::from("/sys/fs/cgroup").join(&name);
            std::fs::create_dir(&cg).expect("create cgroup");
            cgroups.push(cg);
        }
        require(
            !cgroups.is_empty(),
            "writable cgroup hierarchies under /sys/fs/cgroup (run as root)",
        );
        let home = home.map(Path::to_path_buf).unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
        });
        let child = spawn_manager(&runtime, &cgroups, &home);
        let um = UserManager {
            manifests: runtime.join("config/unitlet/manifests"),
            unit_dir: runtime.join("data/systemd/user"),
            state_dir: runtime.join("state/unitlet"),
            runtime,
            cgroups,
            child,
            home,
            _tmp: tmp,
        };
        um.wait_up();
        um
    }

    fn wait_up(&self) {
        let log = self.runtime.join("manager.log");
        let start = Instant::now();
        let mut last = String::new();
        loop {
            if start.elapsed() > Duration::from_secs(20) {
                panic!(
                    "the user manager did not come up within 20s (is-system-running: {last:?}); its log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
            if !self.runtime.join("bus").exists() || !self.runtime.join("systemd/private").exists()
            {
                continue;
            }
            let out = self.systemctl(&["is-system-running"]);
            last = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if last == "running" || last == "degraded" {
                break;
            }
        }
    }

    /// Stop the manager (and with it the session bus) and start a new one
    /// in the same runtime directory and cgroups, as after a re-login.
    pub fn restart(&mut self) {
        let _ = self
            .command("systemctl")
            .args(["--user", "exit"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        wait_for(Duration::from_secs(20), "the user manager to exit", || {
            self.child.try_wait().ok().flatten()
        });
        for cg in &self.cgroups {
            kill_tree(cg);
        }
        let _ = std::fs::remove_file(self.runtime.join("bus"));
        self.child = spawn_manager(&self.runtime, &self.cgroups, &self.home);
        self.wait_up();
    }

    /// Leave the runtime directory behind when dropped (a benchmark removes
    /// them all at its end: files deleted between its rounds would slow the
    /// next round's file creation, see `benches/converge.rs`).
    pub fn keep_files(&mut self) -> PathBuf {
        self._tmp.disable_cleanup(true);
        self.runtime.clone()
    }

    /// PID of `systemd --user` (the shell that started it exec'd it).
    pub fn manager_pid(&self) -> u32 {
        self.child.id()
    }

    pub fn envs(&self) -> Vec<(String, String)> {
        let r = self.runtime.display().to_string();
        vec![
            ("XDG_RUNTIME_DIR".into(), r.clone()),
            ("XDG_CONFIG_HOME".into(), format!("{r}/config")),
            ("XDG_DATA_HOME".into(), format!("{r}/data")),
            ("XDG_STATE_HOME".into(), format!("{r}/state")),
            (
                "DBUS_SESSION_BUS_ADDRESS".into(),
                format!("unix:path={r}/bus"),
            ),
        ]
    }

    fn command(&self, prog: &str) -> Command {
        let mut c = Command::new(prog);
        for (k, v) in self.envs() {
            c.env(k, v);
        }
        c.env_remove("UNITLET_MANIFESTS")
            .env_remove("UNITLET_STATE_DIR")
            .env_remove("UNITLET_UNIT_DIR")
            .env_remove("UNITLET_BUS");
        c.stdin(Stdio::null());
        c
    }

    pub fn systemctl(&self, args: &[&str]) -> Output {
        self.command("systemctl")
            .arg("--user")
            .args(args)
            .output()
            .expect("systemctl")
    }

    /// `systemctl --user show UNIT -p PROP --value`.
    pub fn prop(&self, unit: &str, prop: &str) -> String {
        let o = self.systemctl(&["show", unit, "-p", prop, "--value"]);
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// The unique bus name owning NAME on the session bus ("" when none):
    /// a re-executed manager comes back under a new one.
    pub fn bus_owner(&self, name: &str) -> String {
        let o = self
            .command("busctl")
            .args([
                "--user",
                "call",
                "org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus",
                "GetNameOwner",
                "s",
                name,
            ])
            .output()
            .expect("busctl");
        let out = String::from_utf8_lossy(&o.stdout);
        out.trim()
            .trim_start_matches("s ")
            .trim_matches('"')
            .to_string()
    }

    /// `systemctl --user show -p PROP --value`: a property of the manager.
    pub fn manager_prop(&self, prop: &str) -> String {
        let o = self.systemctl(&["show", "-p", prop, "--value"]);
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    pub fn active(&self, unit: &str) -> String {
        self.prop(unit, "ActiveState")
    }

    /// Wait until UNIT's `ActiveState` is `want`; a timeout names the last
    /// state seen (`ActiveState/SubState`, `Result`, `MainPID`).
    pub fn wait_state(&self, unit: &str, want: &str, timeout: Duration) {
        wait_seen(timeout, &format!("{unit} {want}"), || {
            let o = self.systemctl(&["show", unit, "-p", "ActiveState,SubState,Result,MainPID"]);
            let props = String::from_utf8_lossy(&o.stdout).into_owned();
            let state = props
                .lines()
                .find_map(|l| l.strip_prefix("ActiveState="))
                .unwrap_or_default();
            if state == want {
                Ok(())
            } else {
                Err(props.split_whitespace().collect::<Vec<_>>().join(" "))
            }
        })
    }

    /// Wait until UNIT is active.
    pub fn wait_active(&self, unit: &str, timeout: Duration) {
        self.wait_state(unit, "active", timeout)
    }

    /// Wait until UNIT's PROP is `want`; a timeout names the last value.
    pub fn wait_prop(&self, unit: &str, prop: &str, want: &str, timeout: Duration) {
        wait_seen(timeout, &format!("{unit} {prop}={want}"), || {
            let v = self.prop(unit, prop);
            if v == want { Ok(()) } else { Err(v) }
        })
    }

    /// `systemd-analyze --user verify FILES` against this manager.
    pub fn verify_units(&self, files: &[PathBuf]) -> Output {
        self.command("systemd-analyze")
            .args(["--user", "verify"])
            .args(files)
            .output()
            .expect("systemd-analyze")
    }

    pub fn unitlet(&self, args: &[&str]) -> Output {
        self.command(UNITLET)
            .args(args)
            .output()
            .expect("run unitlet")
    }

    /// `unitlet ARGS` with extra environment (e.g. another `HOME`).
    pub fn unitlet_env(&self, args: &[&str], env: &[(&str, &Path)]) -> Output {
        let mut c = self.command(UNITLET);
        for (k, v) in env {
            c.env(k, v);
        }
        c.args(args).output().expect("run unitlet")
    }

    /// Start `unitlet run` in the background.
    pub fn spawn_run(&self, extra: &[&str]) -> RunningOperator {
        let log = self
            .runtime
            .join(format!("run-{}.log", SEQ.fetch_add(1, Ordering::SeqCst)));
        let f = std::fs::File::create(&log).unwrap();
        let child = self
            .command(UNITLET)
            .arg("run")
            .args(if extra.contains(&"--metrics-addr") {
                &[][..]
            } else {
                &["--metrics-addr", "off"][..]
            })
            .args(if extra.contains(&"--resync") {
                &[][..]
            } else {
                &["--resync", "1h"][..]
            })
            .args(extra)
            .env(
                "UNITLET_LOG",
                // The pass lines are what `wait_passes` counts.
                format!(
                    "{},unitlet::pass=debug",
                    std::env::var("UNITLET_TEST_LOG").unwrap_or_else(|_| "info".into())
                ),
            )
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("spawn unitlet run");
        RunningOperator {
            child,
            log,
            poke: self
                .manifests
                .parent()
                .expect("the manifests directory has a parent")
                .join(".unitlet-test-poke"),
        }
    }

    pub fn write_manifest(&self, file: &str, content: &str) {
        // Rename over, as editors and config tools do.
        let tmp = self.manifests.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, content).unwrap();
        std::fs::rename(&tmp, self.manifests.join(file)).unwrap();
    }

    pub fn get_json(&self) -> serde_json::Value {
        let o = self.unitlet(&["get", "-o", "json"]);
        assert!(
            o.status.success(),
            "get failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).expect("get -o json prints JSON")
    }

    /// `(status, reason, message)` of NAME's Ready condition.
    pub fn ready(&self, name: &str) -> Option<(String, String, String)> {
        ready_in(&self.get_json(), name)
    }

    /// Wait until NAME's Ready condition satisfies `ok` and return it; a
    /// timeout names the last condition seen (or that there was none).
    pub fn wait_ready_where(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        ok: impl Fn(&(String, String, String)) -> bool,
    ) -> (String, String, String) {
        wait_seen(timeout, &format!("{name}: {what}"), || {
            match self.ready(name) {
                Some(r) if ok(&r) => Ok(r),
                Some(r) => Err(format!("Ready {} {}: {}", r.0, r.1, r.2)),
                None => Err(format!("no Ready condition for {name}")),
            }
        })
    }

    /// Wait until NAME is `Ready` with STATUS (`True`/`False`/`Unknown`).
    pub fn wait_ready(
        &self,
        name: &str,
        status: &str,
        timeout: Duration,
    ) -> (String, String, String) {
        self.wait_ready_where(name, &format!("Ready {status}"), timeout, |r| r.0 == status)
    }

    /// Wait until NAME's Ready reason is REASON.
    pub fn wait_reason(
        &self,
        name: &str,
        reason: &str,
        timeout: Duration,
    ) -> (String, String, String) {
        self.wait_ready_where(name, &format!("reason {reason}"), timeout, |r| {
            r.1 == reason
        })
    }
}

impl Drop for UserManager {
    fn drop(&mut self) {
        let _ = self
            .command("systemctl")
            .args(["--user", "exit"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let start = Instant::now();
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            if start.elapsed() > Duration::from_secs(10) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Kill whatever is left in our subtree, then remove it, deepest first.
        for cg in &self.cgroups {
            kill_tree(cg);
        }
        for cg in &self.cgroups {
            remove_tree(cg);
        }
        // Lazily: credential mounts below it go with it.
        let c = std::ffi::CString::new(self.runtime.as_os_str().as_encoded_bytes()).unwrap();
        unsafe {
            libc::umount2(c.as_ptr(), libc::MNT_DETACH);
        }
    }
}

/// Make the runtime directory a shared mount point of its own (`mount
/// --bind D D && mount --make-shared D`): the manager mounts each service's
/// credentials (`LoadCredential=`) below `$XDG_RUNTIME_DIR/credentials`, and
/// a service sees that mount only if it propagates into its namespace.
fn share_mount(dir: &Path) {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    let none = std::ffi::CString::new("none").unwrap();
    let ok = unsafe {
        libc::mount(
            c.as_ptr(),
            c.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        ) == 0
            && libc::mount(
                none.as_ptr(),
                c.as_ptr(),
                std::ptr::null(),
                libc::MS_SHARED,
                std::ptr::null(),
            ) == 0
    };
    require(
        ok,
        "permission to bind-mount the manager's runtime directory shared (run as root)",
    );
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default()
}

fn kill_tree(cg: &Path) {
    for d in subdirs(cg) {
        kill_tree(&d);
    }
    if let Ok(procs) = std::fs::read_to_string(cg.join("cgroup.procs")) {
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

fn remove_tree(cg: &Path) {
    for d in subdirs(cg) {
        remove_tree(&d);
    }
    for _ in 0..50 {
        if std::fs::remove_dir(cg).is_ok() || !cg.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub struct RunningOperator {
    pub child: Child,
    pub log: PathBuf,
    /// Written by [`RunningOperator::poke`] to wake the operator.
    poke: PathBuf,
}

impl RunningOperator {
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// The log from byte `mark` on.
    fn log_since(&self, mark: usize) -> String {
        let bytes = std::fs::read(&self.log).unwrap_or_default();
        String::from_utf8_lossy(bytes.get(mark..).unwrap_or_default()).into_owned()
    }

    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        wait_seen(timeout, &format!("{needle:?} in the operator log"), || {
            let log = self.log();
            if log.contains(needle) {
                Ok(())
            } else {
                Err(format!("last line {:?}", log.lines().last().unwrap_or("")))
            }
        });
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        wait_for(
            Duration::from_secs(10),
            "unitlet run to exit on SIGTERM",
            || self.child.try_wait().ok().flatten(),
        )
    }

    /// A point in the operator's log. Take it *after* an event has
    /// happened (a file written, `systemctl` returned), then
    /// [`wait_passes`](Self::wait_passes) for passes that began after it,
    /// so saw the event.
    pub fn mark(&self) -> usize {
        std::fs::metadata(&self.log).map_or(0, |m| m.len() as usize)
    }

    /// What the operator's loop did after `mark`, from the lines it logs
    /// at debug level for target `unitlet::pass`: `pass starts` when a
    /// pass begins, `waiting queue=N` each time it goes back to waiting
    /// (N: work in flight beside the loop, outcomes not yet folded in, a
    /// pass due).
    fn passes_since(&self, mark: usize) -> Passes {
        let mut p = Passes::default();
        let mut open = false;
        for l in self.log_since(mark).lines() {
            if l.ends_with(" pass starts") {
                p.started += 1;
                open = true;
            } else if let Some((_, n)) = l.split_once(" waiting queue=") {
                let queue: usize = n.trim().parse().unwrap_or(usize::MAX);
                if open {
                    p.finished += 1;
                    open = false;
                }
                if p.started > 0 {
                    p.queue = Some(queue);
                    p.settled |= queue == 0;
                }
            }
        }
        p
    }

    /// How many log lines after `mark` end with `suffix`.
    pub fn count_since(&self, mark: usize, suffix: &str) -> usize {
        self.log_since(mark)
            .lines()
            .filter(|l| l.ends_with(suffix))
            .count()
    }

    /// Whether the log ends inside a pass (its last pass line is `pass
    /// starts`). Read after [`kill9`](Self::kill9): the kill landed mid-pass.
    pub fn mid_pass(&self) -> bool {
        let p = self.passes_since(0);
        p.started > p.finished
    }

    /// Wait until `n` whole operator passes started after `mark` and
    /// finished. A timeout says how many did.
    pub fn wait_passes(&self, mark: usize, n: usize, timeout: Duration) {
        wait_seen(
            timeout,
            &format!("{n} whole operator passes after the mark"),
            || match self.passes_since(mark) {
                p if p.finished >= n => Ok(()),
                p => Err(p),
            },
        )
    }

    /// Wait for one whole pass that started after `mark`.
    pub fn wait_pass(&self, mark: usize, timeout: Duration) {
        self.wait_passes(mark, 1, timeout)
    }

    /// Make the operator look again: write a file in a directory it
    /// watches (a dotfile next to the manifests directory, which the
    /// loader ignores) and return the mark taken before.
    pub fn poke(&self) -> usize {
        let mark = self.mark();
        std::fs::write(&self.poke, mark.to_string()).expect("write the poke file");
        mark
    }

    /// Poke the operator and wait for a whole pass that started after now:
    /// whatever happened before this call has been seen and acted on.
    pub fn next_pass(&self, timeout: Duration) {
        let mark = self.poke();
        self.wait_pass(mark, timeout);
    }

    /// Poke the operator and wait until, after a pass that started after
    /// now, its loop goes back to waiting with nothing queued: no start
    /// job, readiness wait, reload or probe running beside it, no outcome
    /// left to fold in, no pass due. Until something changes, nothing more
    /// happens.
    pub fn settle(&self, timeout: Duration) {
        let mark = self.poke();
        wait_seen(
            timeout,
            "a pass after now, then the operator idle (queue 0)",
            || match self.passes_since(mark) {
                p if p.settled => Ok(()),
                p => Err(p),
            },
        )
    }
}

/// See [`RunningOperator::passes_since`].
#[derive(Debug, Default)]
struct Passes {
    started: usize,
    finished: usize,
    /// The queue the loop last went back to waiting with.
    queue: Option<usize>,
    /// It went back to waiting with nothing queued.
    settled: bool,
}

impl Drop for RunningOperator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            // What the operator did is the first thing a failure needs.
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let from = lines.len().saturating_sub(150);
            eprintln!(
                "--- last {} lines of the operator log ---\n{}\n--- end of operator log ---",
                lines.len() - from,
                lines[from..].join("\n")
            );
        }
    }
}

/// `(status, reason, message)` of NAME's Ready condition in `get -o json`.
pub fn ready_in(v: &serde_json::Value, name: &str) -> Option<(String, String, String)> {
    let obj = v.as_array()?.iter().find(|o| o["name"] == name)?;
    let c = obj["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")?;
    Some((
        c["status"].as_str()?.into(),
        c["reason"].as_str()?.into(),
        c["message"].as_str()?.into(),
    ))
}

pub fn service(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: unitlet/v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  command: [/bin/sleep, \"100000\"]\n{extra}"
    )
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A tmpfs of `size` (as `mount` takes it: `8m`, `2g`) mounted on `dir`
/// (created if missing) with mode 0700, so it may be a backup destination:
/// a second filesystem, or a small one, for one test or benchmark.
/// Unmounted when dropped, also when the test fails. Needs root.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let o = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            o.status.success(),
            "mount tmpfs on {} (needs root): {}",
            dir.display(),
            stderr(&o)
        );
        Tmpfs(dir.to_path_buf())
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}
