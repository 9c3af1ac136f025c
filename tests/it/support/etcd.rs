//! A real etcd cluster on loopback ports for tests and benches: its own
//! data directories in a temporary directory, members stopped by PID.
//! Shared with `benches/fleet.rs` (included by path), so it uses std only.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ETCD: &str = "/usr/bin/etcd";
pub const ETCDCTL: &str = "/usr/bin/etcdctl";

pub struct Member {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub child: Option<Child>,
}

pub struct EtcdCluster {
    pub members: Vec<Member>,
    dir: PathBuf,
    token: String,
    /// Tests elect in 0.5 s (heartbeat 50 ms); benches keep etcd's defaults.
    fast_elections: bool,
    _tmp: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl EtcdCluster {
    /// Start `n` members with fast elections (for tests) and wait until the
    /// cluster has a leader.
    pub fn start(n: usize) -> EtcdCluster {
        Self::start_with(n, true)
    }

    /// As [`EtcdCluster::start`]; `fast_elections: false` keeps etcd's
    /// default heartbeat (100 ms) and election timeout (1 s).
    pub fn start_with(n: usize, fast_elections: bool) -> EtcdCluster {
        assert!(
            Path::new(ETCD).exists() && Path::new(ETCDCTL).exists(),
            "the fleet tests need etcd 3.4+ ({ETCD}, {ETCDCTL}): install the Debian packages etcd-server and etcd-client (bash .ci/run does) — these tests never skip"
        );
        let tmp = tempfile::Builder::new()
            .prefix("unitlet-etcd.")
            .tempdir()
            .unwrap();
        let members = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                child: None,
            })
            .collect();
        let mut c = EtcdCluster {
            members,
            dir: tmp.path().to_path_buf(),
            token: format!("unitlet-test-{}-{}", std::process::id(), free_port()),
            fast_elections,
            _tmp: tmp,
        };
        for i in 0..n {
            c.start_member(i);
        }
        c.wait_healthy(Duration::from_secs(30));
        c
    }

    pub fn endpoint(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[i].client_port)
    }

    /// Every member's client URL, comma-separated.
    pub fn endpoints(&self) -> String {
        (0..self.members.len())
            .map(|i| self.endpoint(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn start_member(&mut self, i: usize) {
        let ic = self.initial_cluster();
        let m = &self.members[i];
        assert!(m.child.is_none(), "member {i} runs already");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{}.log", m.name)))
            .unwrap();
        let client = format!("http://127.0.0.1:{}", m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let child = Command::new(ETCD)
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(self.dir.join(&m.name))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &ic])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &self.token])
            .args(if self.fast_elections {
                &["--heartbeat-interval", "50", "--election-timeout", "500"][..]
            } else {
                &[][..]
            })
            .args(["--logger", "zap", "--log-level", "warn"])
            .env_remove("ETCD_NAME")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        self.members[i].child = Some(child);
    }

    /// SIGKILL member `i` and reap it.
    pub fn kill_member(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].child.as_ref().map(Child::id)
    }

    pub fn etcdctl(&self, args: &[&str]) -> std::process::Output {
        Command::new(ETCDCTL)
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.endpoints(), "--command-timeout", "5s"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run etcdctl")
    }

    /// Wait until a linearizable read succeeds (there is a leader and a
    /// quorum).
    pub fn wait_healthy(&self, timeout: Duration) {
        let start = Instant::now();
        loop {
            let o = self.etcdctl(&["get", "--", "/health-probe"]);
            if o.status.success() {
                return;
            }
            if start.elapsed() > timeout {
                panic!(
                    "etcd cluster not healthy after {timeout:?}: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The current revision of the store.
    pub fn revision(&self) -> i64 {
        let o = self.etcdctl(&["get", "-w", "json", "--", "/health-probe"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let s = String::from_utf8_lossy(&o.stdout);
        let i = s.find("\"revision\":").expect("revision in the header") + 11;
        s[i..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap()
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill_member(i);
        }
    }
}
