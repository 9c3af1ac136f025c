//! Shared support for integration tests: a private, real systemd user
//! manager per test, in its own runtime directory and cgroup subtree.
//!
//! It never touches PID 1's cgroups or a real user session: the manager is
//! started inside cgroup directories created for it (so it manages only that
//! subtree) and talks only to its own socket-activated session bus.

#![allow(dead_code)]

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

    /// A manager whose `$HOME` (and so `%h`) is `home`.
    pub fn start_with_home(home: Option<&Path>) -> UserManager {
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

    pub fn active(&self, unit: &str) -> String {
        self.prop(unit, "ActiveState")
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
                std::env::var("UNITLET_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("spawn unitlet run");
        RunningOperator { child, log }
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
}

impl RunningOperator {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        wait_for(timeout, &format!("{needle:?} in the operator log"), || {
            self.log().contains(needle).then_some(())
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
