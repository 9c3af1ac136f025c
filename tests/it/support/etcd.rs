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
    /// With TLS: the directory holding `ca.pem`, the members' `server.pem`
    /// and `server.key`, and a client's `client.pem` and `client.key`;
    /// clients must present a certificate.
    pub tls: Option<PathBuf>,
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
        Self::start_full(n, fast_elections, false)
    }

    /// As [`EtcdCluster::start`], serving clients over TLS only, with
    /// client-certificate authentication (certificates made by openssl).
    pub fn start_tls(n: usize) -> EtcdCluster {
        Self::start_full(n, true, true)
    }

    fn start_full(n: usize, fast_elections: bool, tls: bool) -> EtcdCluster {
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
            tls: tls.then(|| tmp.path().join("tls")),
            _tmp: tmp,
        };
        if let Some(dir) = &c.tls {
            make_certificates(dir);
        }
        for i in 0..n {
            c.start_member(i);
        }
        c.wait_healthy(Duration::from_secs(30));
        c
    }

    pub fn endpoint(&self, i: usize) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.members[i].client_port)
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
        let client = self.endpoint(i);
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
            .args(self.tls_flags(
                &["--cert-file", "--key-file", "--trusted-ca-file"],
                "server",
            ))
            .args(if self.tls.is_some() {
                &["--client-cert-auth"][..]
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

    /// `[cert_flag, DIR/WHO.pem, key_flag, DIR/WHO.key, ca_flag, DIR/ca.pem]`
    /// with TLS, nothing without.
    pub fn tls_flags(&self, flags: &[&str; 3], who: &str) -> Vec<String> {
        let Some(dir) = &self.tls else {
            return Vec::new();
        };
        let files = [format!("{who}.pem"), format!("{who}.key"), "ca.pem".into()];
        flags
            .iter()
            .zip(files)
            .flat_map(|(f, name)| [f.to_string(), dir.join(name).display().to_string()])
            .collect()
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
            .args(self.tls_flags(&["--cert", "--key", "--cacert"], "client"))
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

/// A CA, a server certificate for 127.0.0.1 and a client certificate,
/// made with openssl in `dir`.
fn make_certificates(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let openssl = |args: &[&str]| {
        let o = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("the TLS fleet test needs openssl (Debian package openssl)");
        assert!(
            o.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=unitlet test CA",
    ]);
    for (who, ext) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth",
        ),
        ("client", "extendedKeyUsage=clientAuth"),
    ] {
        std::fs::write(dir.join(format!("{who}.ext")), ext).unwrap();
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{who}.key"),
            "-out",
            &format!("{who}.csr"),
            "-subj",
            &format!("/CN={who}"),
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{who}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{who}.pem"),
            "-days",
            "2",
            "-extfile",
            &format!("{who}.ext"),
        ]);
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill_member(i);
        }
    }
}
