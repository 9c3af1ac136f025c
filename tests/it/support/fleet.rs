//! Hosts of a fleet fed from a test etcd cluster: each a private user
//! manager running `unitlet run --source etcd`, plus `unitlet fleet …`
//! against the cluster and a few etcd reads for assertions.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::etcd::EtcdCluster;
use super::{RunningOperator, UNITLET, UserManager, stderr, stdout, wait_for};

/// The lease TTL hosts run with by default: short, so a dead host goes
/// quickly.
pub const TTL: Duration = Duration::from_secs(4);

/// unitlet's flags for a TLS cluster's client certificate, key and CA.
pub const TLS_FLAGS: &[&str; 3] = &["--etcd-cert", "--etcd-key", "--etcd-ca"];

/// One host: a user manager and, once started, its operator.
pub struct Host {
    pub id: &'static str,
    pub um: UserManager,
    pub op: Option<RunningOperator>,
}

impl Host {
    pub fn new(id: &'static str) -> Host {
        Host {
            id,
            um: UserManager::start(),
            op: None,
        }
    }

    /// Start the operator with the default lease TTL.
    pub fn start(&mut self, cluster: &EtcdCluster, prefix: &str) {
        self.start_with(cluster, prefix, &[]);
    }

    /// As [`Host::start`], with more `unitlet run` flags.
    pub fn start_with(&mut self, cluster: &EtcdCluster, prefix: &str, extra: &[&str]) {
        self.start_with_ttl(cluster, prefix, TTL, extra);
    }

    /// Start the operator with lease TTL `ttl` and `extra` flags.
    pub fn start_with_ttl(
        &mut self,
        cluster: &EtcdCluster,
        prefix: &str,
        ttl: Duration,
        extra: &[&str],
    ) {
        let ttl = format!("{}s", ttl.as_secs());
        let eps = cluster.endpoints();
        let tls = cluster.tls_flags(TLS_FLAGS, "client");
        let mut args = vec![
            "--source",
            "etcd",
            "--host-id",
            self.id,
            "--etcd-endpoints",
            &eps,
            "--etcd-prefix",
            prefix,
            "--lease-ttl",
            &ttl,
        ];
        args.extend(tls.iter().map(String::as_str));
        args.extend(extra);
        self.op = Some(self.um.spawn_run(&args));
    }

    pub fn log(&self) -> String {
        self.op.as_ref().map(|o| o.log()).unwrap_or_default()
    }

    pub fn exec_start(&self, unit: &str) -> String {
        self.um.prop(unit, "ExecStart")
    }

    /// Wait until `unit` runs with `arg` in its command line.
    pub fn wait_running(&self, unit: &str, arg: &str, timeout: Duration) {
        wait_for(
            timeout,
            &format!("{unit} running with {arg} on host {}", self.id),
            || {
                (self.um.active(unit) == "active" && self.exec_start(unit).contains(arg))
                    .then_some(())
            },
        );
    }
}

/// `unitlet fleet ARGS` against `cluster` under `prefix`, not yet run.
pub fn fleet_command(cluster: &EtcdCluster, prefix: &str, args: &[&str]) -> Command {
    fleet_command_at(cluster, &cluster.endpoints(), prefix, args)
}

/// As [`fleet_command`], given only `endpoints` (some of the cluster's
/// members: the one the command talks to).
pub fn fleet_command_at(
    cluster: &EtcdCluster,
    endpoints: &str,
    prefix: &str,
    args: &[&str],
) -> Command {
    let mut c = Command::new(UNITLET);
    c.arg("fleet")
        .args(args)
        .args(cluster.tls_flags(TLS_FLAGS, "client"))
        .args(["--etcd-endpoints", endpoints, "--etcd-prefix", prefix])
        .env_remove("UNITLET_ETCD_ENDPOINTS")
        .env_remove("UNITLET_ETCD_PREFIX")
        .stdin(Stdio::null());
    c
}

/// Run `unitlet fleet ARGS` to its end.
pub fn fleet(cluster: &EtcdCluster, prefix: &str, args: &[&str]) -> Output {
    fleet_command(cluster, prefix, args)
        .output()
        .expect("run unitlet fleet")
}

/// `fleet push DIR TARGET…`, which must succeed; its output.
pub fn push(cluster: &EtcdCluster, prefix: &str, dir: &Path, target: &[&str]) -> String {
    let mut args = vec!["push", dir.to_str().unwrap()];
    args.extend(target);
    let o = fleet(cluster, prefix, &args);
    assert!(
        o.status.success(),
        "fleet push {target:?} failed: {}{}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// A Service running `sleep ARG`: the argument tells versions apart.
pub fn manifest(name: &str, arg: &str) -> String {
    format!(
        "apiVersion: unitlet/v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  command: [/bin/sleep, \"{arg}\"]\n"
    )
}

/// Write [`manifest`] as `DIR/NAME.yaml`.
pub fn write(dir: &Path, name: &str, arg: &str) {
    std::fs::write(dir.join(format!("{name}.yaml")), manifest(name, arg)).unwrap();
}

/// The keys under `prefix` (etcdctl), sorted; empty when etcd cannot answer.
pub fn keys(cluster: &EtcdCluster, prefix: &str) -> Vec<String> {
    let o = cluster.etcdctl(&["get", "--prefix", "--keys-only", "--", prefix]);
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// The value of `key` and its mod_revision, `None` when it does not exist
/// (or etcd cannot answer).
pub fn get(cluster: &EtcdCluster, key: &str) -> Option<(String, i64)> {
    let o = cluster.etcdctl(&["get", "--print-value-only", "--", key]);
    if !o.status.success() || o.stdout.is_empty() {
        return None;
    }
    let value = String::from_utf8_lossy(&o.stdout)
        .trim_end_matches('\n')
        .to_string();
    let j = cluster.etcdctl(&["get", "-w", "json", "--", key]);
    let v: serde_json::Value = serde_json::from_slice(&j.stdout).ok()?;
    let rev = v["kvs"][0]["mod_revision"].as_i64()?;
    Some((value, rev))
}

/// A `unitlet fleet …` running in the background, its stdout and stderr
/// read through pipes as they come.
pub struct Background {
    pub child: Child,
    out: Arc<Mutex<String>>,
    err: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

fn pump(r: impl Read + Send + 'static, into: Arc<Mutex<String>>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut r = BufReader::new(r);
        let mut line = Vec::new();
        while let Ok(n) = r.read_until(b'\n', &mut line) {
            if n == 0 {
                break;
            }
            into.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&line));
            line.clear();
        }
    })
}

impl Background {
    pub fn spawn(mut c: Command) -> Background {
        let mut child = c
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn unitlet fleet");
        let out = Arc::new(Mutex::new(String::new()));
        let err = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            pump(child.stdout.take().unwrap(), out.clone()),
            pump(child.stderr.take().unwrap(), err.clone()),
        ];
        Background {
            child,
            out,
            err,
            readers,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stdout(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> String {
        self.err.lock().unwrap().clone()
    }

    /// Wait until its stdout has a line containing `needle`.
    pub fn wait_line(&mut self, needle: &str, timeout: Duration) {
        wait_for(timeout, &format!("{needle:?} in the output"), || {
            if self.stdout().lines().any(|l| l.contains(needle)) {
                return Some(());
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!(
                    "exited ({st}) before printing {needle:?}:\n{}{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            None
        });
    }

    /// Panic with its output if it has exited: for polls that wait for
    /// something it should do while it runs.
    pub fn assert_running(&mut self) {
        if let Ok(Some(st)) = self.child.try_wait() {
            panic!(
                "unitlet fleet exited ({st}) while it should run:\n{}{}",
                self.stdout(),
                self.stderr()
            );
        }
    }

    /// SIGKILL it (by its PID) and reap it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether it exited; its code.
    pub fn try_exit(&mut self) -> Option<Option<i32>> {
        self.child.try_wait().ok().flatten().map(|s| s.code())
    }

    /// Wait for it to exit: its exit code, stdout and stderr.
    pub fn wait_exit(&mut self, timeout: Duration) -> (Option<i32>, String, String) {
        let code = wait_for(timeout, "unitlet fleet to exit", || self.try_exit());
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        (code, self.stdout(), self.stderr())
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- unitlet fleet (pid {}) stdout ---\n{}--- stderr ---\n{}--- end ---",
                self.child.id(),
                self.stdout(),
                self.stderr()
            );
        }
    }
}
