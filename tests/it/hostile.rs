//! A corpus of hostile manifests dropped beside a running good Service under
//! `unitlet run`: every one is refused with its own message naming its file,
//! nothing blocks (FIFOs, devices, sockets), nothing explodes (alias bombs,
//! deep nesting, huge files), the good Service keeps its process, the
//! operator keeps answering, and no secret shows anywhere.
//!
//! `converge::bad_input_corpus_is_rejected_and_disturbs_nothing` covers the
//! same ground for `validate` and `apply`; this is the operator's side.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use crate::reload::http_get;
use crate::support::{UserManager, service, stderr, stdout, wait_for};

const T: Duration = Duration::from_secs(90);

/// Strings that must never appear in any output.
const SECRETS: &[&str] = &["hunter2", "glsa_SECRET_TOKEN_0001", "ENV_SECRET_0002"];

use crate::reload::free_port;

fn mkfifo(p: &Path, mode: u32) {
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), mode) }, 0, "mkfifo {p:?}");
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn write_mode(p: &Path, bytes: impl AsRef<[u8]>, mode: u32) {
    std::fs::write(p, bytes).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn svc(name: &str, spec: &str) -> String {
    format!("apiVersion: unitlet/v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n{spec}")
}

/// `(file, any of these in its message)` for every class.
type Case = (String, &'static [&'static str]);

/// Lay the corpus out; returns what each file must be refused with. The
/// socket listener must outlive the test.
fn lay_out(um: &UserManager) -> (Vec<Case>, std::os::unix::net::UnixListener) {
    let rt = &um.runtime;
    let m = &um.manifests;
    let mut cases: Vec<Case> = Vec::new();
    let mut extra: Vec<Case> = Vec::new();
    let mut put = |file: &str, content: &[u8], expect: &'static [&'static str]| {
        write_mode(&m.join(file), content, 0o644);
        cases.push((file.to_string(), expect));
    };

    // Unit files that are not regular files, or too large.
    mkfifo(&rt.join("fifo.service"), 0o644);
    std::os::unix::fs::symlink("/dev/zero", rt.join("zero.service")).unwrap();
    std::fs::create_dir(rt.join("dir.service")).unwrap();
    let sock = std::os::unix::net::UnixListener::bind(rt.join("sock.service")).unwrap();
    write_mode(&rt.join("big.service"), vec![b'#'; 300 * 1024], 0o644);
    for (name, unit, expect) in [
        ("unit-fifo", "fifo.service", &["FIFO"][..]),
        ("unit-zero", "zero.service", &["character device"]),
        ("unit-dir", "dir.service", &["directory"]),
        ("unit-socket", "sock.service", &["socket"]),
        ("unit-big", "big.service", &["limit is"]),
    ] {
        put(
            &format!("{name}.yaml"),
            svc(name, &format!("  unitFile: {}\n", rt.join(unit).display())).as_bytes(),
            expect,
        );
    }
    // Manifests that are not regular files.
    mkfifo(&m.join("fifo-manifest.yaml"), 0o644);
    extra.push(("fifo-manifest.yaml".into(), &["FIFO"]));
    std::os::unix::fs::symlink("/dev/zero", m.join("devzero.yaml")).unwrap();
    extra.push(("devzero.yaml".into(), &["outside the manifests directory"]));
    write_mode(&rt.join("outside.yaml"), service("outside", ""), 0o644);
    std::os::unix::fs::symlink(rt.join("outside.yaml"), m.join("outside-link.yaml")).unwrap();
    extra.push((
        "outside-link.yaml".into(),
        &["outside the manifests directory"],
    ));

    // Parser bombs.
    let mut laughs = String::from(
        "apiVersion: unitlet/v1\nkind: Service\nmetadata:\n  name: laughs\n  labels:\n    a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n",
    );
    for i in 1..10 {
        laughs.push_str(&format!(
            "    a{i}: &a{i} [{}]\n",
            vec![format!("*a{}", i - 1); 9].join(", ")
        ));
    }
    laughs.push_str(&format!(
        "spec:\n  command: [{}]\n",
        vec!["*a9"; 300].join(", ")
    ));
    put(
        "laughs.yaml",
        laughs.as_bytes(),
        &["expected", "alias", "budget", "limit"],
    );
    put(
        "deep-flow.yaml",
        svc(
            "deep-flow",
            &format!("  command: {}a{}\n", "[".repeat(10_000), "]".repeat(10_000)),
        )
        .as_bytes(),
        &["deeper than", "recursion limit"],
    );
    let mut deep = svc("deep-block", "  command: [/bin/true]\n  x:\n");
    for i in 0..1000 {
        deep.push_str(&format!("{}k:\n", " ".repeat(3 + i)));
    }
    put("deep-block.yaml", deep.as_bytes(), &["deeper than"]);
    put(
        "deep-seq.yaml",
        svc(
            "deep-seq",
            &format!("  command:\n    {}/bin/true\n", "- ".repeat(10_000)),
        )
        .as_bytes(),
        &["deeper than"],
    );
    put(
        "huge.yaml",
        &vec![b'#'; 10 * 1024 * 1024],
        &["limited to 1048576 bytes"],
    );

    // Bytes that are not YAML text.
    let mut nul = service("nul", "").into_bytes();
    nul.extend_from_slice(b"# \0\n");
    put("nul.yaml", &nul, &["NUL bytes"]);
    let mut bad_utf8 = service("badutf8", "").into_bytes();
    bad_utf8.extend_from_slice(b"# \xff\xfe\n");
    put("badutf8.yaml", &bad_utf8, &["not UTF-8"]);
    let binary: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    put("binary.yaml", &binary, &["binary"]);
    put("syntax.yaml", b"apiVersion: [\n", &["syntax.yaml:"]);
    put("empty.yaml", b"", &["file has no documents"]);
    put(
        "comments.yaml",
        b"# nothing here yet\n\n   \n",
        &["file has no documents"],
    );

    // Tags.
    put(
        "tag-python.yaml",
        svc(
            "tag-python",
            "  command: !!python/object/apply:os.system [\"touch /tmp/pwned\"]\n",
        )
        .as_bytes(),
        &["YAML tag `!!python/object/apply:os.system`"],
    );
    put(
        "tag-custom.yaml",
        svc("tag-custom", "  command: [!custom /bin/true]\n").as_bytes(),
        &["YAML tag `!custom`"],
    );
    put(
        "tag-str.yaml",
        svc("tag-str", "  command: [!!str /bin/true]\n").as_bytes(),
        &["YAML tag `!!str`"],
    );

    // Ordering cycle.
    put(
        "cyc-a.yaml",
        service("cyc-a", "  after: [cyc-b]\n").as_bytes(),
        &["ordering cycle cyc-a → cyc-b → cyc-a"],
    );
    put(
        "cyc-b.yaml",
        service("cyc-b", "  after: [cyc-a]\n").as_bytes(),
        &["ordering cycle cyc-b → cyc-a → cyc-b"],
    );
    put(
        "self-after.yaml",
        service("self-after", "  after: [self-after]\n").as_bytes(),
        &["after itself"],
    );

    // Schema and values.
    put(
        "unknown.yaml",
        service("unknown", "  colour: blue\n").as_bytes(),
        &["unknown field `colour`"],
    );
    put(
        "dupkey.yaml",
        service("dupkey", "  command: [/bin/false]\n").as_bytes(),
        &["duplicate mapping key"],
    );
    put(
        "badname.yaml",
        svc("Bad_Name", "  command: [/bin/true]\n").as_bytes(),
        &["is not valid"],
    );
    put(
        "longname.yaml",
        svc(&"a".repeat(64), "  command: [/bin/true]\n").as_bytes(),
        &["at most 63"],
    );
    put(
        "apiversion.yaml",
        service("apiversion", "")
            .replace("unitlet/v1", "unitlet/v9")
            .as_bytes(),
        &["unsupported apiVersion"],
    );
    put(
        "kind.yaml",
        service("kind", "").replace("Service", "Pod").as_bytes(),
        &["unknown kind"],
    );
    put(
        "both.yaml",
        svc("both", "  command: [/bin/true]\n  unitFile: x.service\n").as_bytes(),
        &["both set"],
    );
    put(
        "nularg.yaml",
        svc("nularg", "  command: [/bin/echo, \"a\\0b\"]\n").as_bytes(),
        &["NUL byte"],
    );
    put(
        "memsize.yaml",
        service("memsize", "  resources: {memoryMax: 2 GB}\n").as_bytes(),
        &["invalid size"],
    );
    put(
        "schedule.yaml",
        b"apiVersion: unitlet/v1\nkind: Backup\nmetadata: {name: schedule}\nspec: {schedule: every 7m, prometheus: {url: 'http://127.0.0.1:9'}}\n",
        &["cannot be kept on the calendar"],
    );
    put(
        "backup-root.yaml",
        b"apiVersion: unitlet/v1\nkind: Backup\nmetadata: {name: backup-root}\nspec: {schedule: every 1h, destination: /, prometheus: {url: 'http://127.0.0.1:9'}}\n",
        &["not a directory of its own", "shared by the whole system"],
    );
    put(
        "url-ftp.yaml",
        service(
            "url-ftp",
            "  readiness: {http: {url: 'ftp://admin:hunter2@127.0.0.1/'}}\n",
        )
        .as_bytes(),
        &["ftp://admin:***@127.0.0.1/"],
    );
    write_mode(&m.join("writable.yaml"), service("writable", ""), 0o666);
    extra.push(("writable.yaml".into(), &["writable by other users"]));

    // Secret files that are not private, missing, or not regular files.
    write_mode(&rt.join("token-open"), "glsa_SECRET_TOKEN_0001\n", 0o644);
    write_mode(&rt.join("env-open"), "ENV_SECRET_0002=1\n", 0o644);
    mkfifo(&rt.join("cred-fifo"), 0o600);
    put(
        "token-open.yaml",
        format!(
            "apiVersion: unitlet/v1\nkind: Backup\nmetadata: {{name: token-open}}\nspec: {{schedule: every 1h, grafana: {{url: 'http://127.0.0.1:9', tokenFile: {}}}}}\n",
            rt.join("token-open").display()
        )
        .as_bytes(),
        &["mode 0644"],
    );
    put(
        "env-open.yaml",
        service(
            "env-open",
            &format!("  environmentFile: {}\n", rt.join("env-open").display()),
        )
        .as_bytes(),
        &["mode 0644"],
    );
    put(
        "env-missing.yaml",
        service(
            "env-missing",
            &format!("  environmentFile: {}\n", rt.join("nope.env").display()),
        )
        .as_bytes(),
        &["does not exist"],
    );
    put(
        "cred-fifo.yaml",
        service(
            "cred-fifo",
            &format!(
                "  credentials: {{key: {}}}\n",
                rt.join("cred-fifo").display()
            ),
        )
        .as_bytes(),
        &["FIFO"],
    );
    cases.extend(extra);
    (cases, sock)
}

/// Every text a person or a scraper can see.
fn everything_shown(um: &UserManager, log: &str, names: &[&str]) -> String {
    let mut all = String::from(log);
    let o = um.unitlet(&["get", "-o", "json"]);
    all.push_str(&stdout(&o));
    all.push_str(&stderr(&o));
    for n in names {
        let o = um.unitlet(&["describe", n]);
        all.push_str(&stdout(&o));
        all.push_str(&stderr(&o));
    }
    all.push_str(&std::fs::read_to_string(um.state_dir.join("status.json")).unwrap_or_default());
    all
}

#[test]
fn hostile_manifests_are_refused_one_by_one_and_disturb_nothing() {
    let um = UserManager::start();
    let mport = free_port();
    let metrics = format!("http://127.0.0.1:{mport}/metrics");
    let run = um.spawn_run(&["--metrics-addr", &format!("127.0.0.1:{mport}")]);
    um.write_manifest("good.yaml", &service("good", ""));
    // A valid Service whose reload and readiness URLs carry credentials:
    // used for the requests, never shown.
    let conf = um.runtime.join("leaky.conf");
    std::fs::write(&conf, "a").unwrap();
    um.write_manifest(
        "leaky.yaml",
        &service(
            "leaky",
            &format!(
                "  configFiles: [{}]\n  onConfigChange: reload\n  reload: {{http: {{url: 'http://admin:hunter2@127.0.0.1:9/-/reload'}}}}\n  readiness: {{http: {{url: 'http://admin:hunter2@127.0.0.1:9/ready'}}, timeout: 1s}}\n",
                conf.display()
            ),
        ),
    );
    um.wait_ready("good", "True", T);
    let pid = um.prop("good.service", "MainPID");
    let (_, _, leaky) = um.wait_reason("leaky", "NotReady", T);
    assert!(leaky.contains("admin:***@127.0.0.1:9"), "{leaky}");
    std::fs::write(&conf, "b").unwrap();

    let (cases, _sock) = lay_out(&um);
    assert!(cases.len() >= 30, "{} classes", cases.len());

    // Each file is reported under the name it implies, with its own message.
    let mut last = String::new();
    let reported = wait_for(T, "every hostile file reported", || {
        let v = um.get_json();
        let objs = v.as_array().unwrap();
        let mut out = Vec::new();
        for (file, _) in &cases {
            let name = file.trim_end_matches(".yaml");
            let Some(o) = objs.iter().find(|o| o["name"] == name) else {
                last = format!("{name} not listed");
                return None;
            };
            let c = o["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["type"] == "Ready")
                .unwrap();
            if c["status"] != "False" {
                last = format!("{name}: {c}");
                return None;
            }
            out.push((file.clone(), c["message"].as_str().unwrap().to_string()));
        }
        Some(out)
    });
    let _ = last;
    for ((file, want), (_, message)) in cases.iter().zip(&reported) {
        assert!(
            message.contains(&format!("/{file}")),
            "{file}: the message must name the file: {message}"
        );
        assert!(
            want.iter().any(|w| message.contains(w)),
            "{file}: expected one of {want:?} in {message:?}"
        );
    }

    // The reload with credentials failed, and says so without them.
    wait_for(T, "leaky's reload failure reported", || {
        let o = um.unitlet(&["describe", "leaky"]);
        stdout(&o).contains("ReloadFailed").then_some(())
    });

    // Nothing else was disturbed, and the operator still answers.
    assert_eq!(
        um.prop("good.service", "MainPID"),
        pid,
        "good was restarted"
    );
    assert_eq!(um.active("good.service"), "active");
    let (code, _) = http_get(&metrics).expect("the metrics endpoint answers");
    assert_eq!(code, 200);
    let units: Vec<String> = std::fs::read_dir(&um.unit_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let mut units = units;
    units.sort();
    assert_eq!(units, vec!["good.service", "leaky.service"]);

    let names: Vec<&str> = cases
        .iter()
        .map(|(f, _)| f.trim_end_matches(".yaml"))
        .chain(["leaky", "good"])
        .collect();
    let shown = everything_shown(&um, &run.log(), &names);
    for s in SECRETS {
        assert!(!shown.contains(s), "{s:?} leaked");
    }

    // A deleted manifest leaves nothing behind in status.
    std::fs::remove_file(um.manifests.join("leaky.yaml")).unwrap();
    wait_for(T, "leaky removed", || {
        (um.active("leaky.service") != "active"
            && !um
                .get_json()
                .as_array()
                .unwrap()
                .iter()
                .any(|o| o["name"] == "leaky"))
        .then_some(())
    });
    let status_json = || -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(um.state_dir.join("status.json")).unwrap()).unwrap()
    };
    wait_for(T, "leaky gone from status.json", || {
        status_json()["objects"]
            .get("leaky")
            .is_none()
            .then_some(())
    });
    assert!(
        !status_json()["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["object"] == "leaky"),
        "events of a deleted manifest stay in status.json"
    );
    let shown = everything_shown(&um, &run.log(), &["good"]);
    for s in SECRETS {
        assert!(!shown.contains(s), "{s:?} leaked");
    }
}

/// Regression: two Services naming each other in `after` made every start
/// job fail ("transaction order is cyclic"), retried for ever. The cycle is
/// now refused at load: both are held, their last good units keep running
/// untouched, and fixing it applies again.
#[test]
fn an_after_cycle_is_held_and_the_last_good_units_keep_running() {
    let um = UserManager::start();
    let run = um.spawn_run(&[]);
    um.write_manifest("a.yaml", &service("a", ""));
    um.write_manifest("b.yaml", &service("b", "  after: [a]\n"));
    for n in ["a", "b"] {
        um.wait_ready(n, "True", T);
    }
    let pids = (
        um.prop("a.service", "MainPID"),
        um.prop("b.service", "MainPID"),
    );
    let unit_a = std::fs::read_to_string(um.unit_dir.join("a.service")).unwrap();
    um.write_manifest("a.yaml", &service("a", "  after: [b]\n"));
    for (n, cycle) in [("a", "a → b → a"), ("b", "b → a → b")] {
        let (_, reason, message) = um.wait_ready_where(n, "held for the cycle", T, |r| {
            r.2.contains("ordering cycle") && r.2.contains("keep running")
        });
        assert_eq!(reason, "Invalid");
        assert!(message.contains(cycle), "{message}");
        assert!(
            message.contains("a.yaml:7:10") && message.contains("b.yaml:7:10"),
            "{message}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(um.unit_dir.join("a.service")).unwrap(),
        unit_a,
        "a held unit was rewritten"
    );
    assert_eq!(
        (
            um.prop("a.service", "MainPID"),
            um.prop("b.service", "MainPID")
        ),
        pids
    );
    assert!(
        !run.log().contains("TransactionOrderIsCyclic"),
        "{}",
        run.log()
    );
    um.write_manifest("a.yaml", &service("a", ""));
    for n in ["a", "b"] {
        um.wait_ready(n, "True", T);
    }
    assert_eq!(
        (
            um.prop("a.service", "MainPID"),
            um.prop("b.service", "MainPID")
        ),
        pids
    );
}

/// Regression: an emptied manifest (an editor truncates before it writes)
/// was "no objects", so its Service was stopped and deleted. A file with no
/// documents is now an error that holds its units.
#[test]
fn an_emptied_manifest_holds_its_units() {
    let um = UserManager::start();
    let _run = um.spawn_run(&[]);
    um.write_manifest("x.yaml", &service("x", ""));
    um.wait_ready("x", "True", T);
    let pid = um.prop("x.service", "MainPID");
    for (i, empty) in ["", "# saved half-way\n\n"].iter().enumerate() {
        // In place, as an editor that truncates and then writes does.
        std::fs::write(um.manifests.join("x.yaml"), empty).unwrap();
        let (_, reason, message) = um.wait_ready_where("x", "held: no documents", T, |r| {
            r.2.contains("no documents")
        });
        assert_eq!(reason, "Invalid", "{i}");
        assert!(message.contains("x.yaml"), "{message}");
        assert_eq!(um.prop("x.service", "MainPID"), pid);
        assert!(um.unit_dir.join("x.service").exists());
        std::fs::write(um.manifests.join("x.yaml"), service("x", "")).unwrap();
        um.wait_ready("x", "True", T);
        assert_eq!(um.prop("x.service", "MainPID"), pid);
    }
}

/// Issue 20 item 5: a FIFO in place of `status.json` beside a running
/// operator. Its pass read the status with a plain blocking read, which
/// waits for a writer forever: /metrics still answered, but a new
/// manifest was never started. The status is now read like every other
/// file: regular files only, bounded, off the runtime with a deadline.
#[test]
fn a_fifo_in_place_of_status_json_stops_no_pass() {
    let um = UserManager::start();
    let mport = free_port();
    let metrics = format!("http://127.0.0.1:{mport}/metrics");
    let run = um.spawn_run(&["--metrics-addr", &format!("127.0.0.1:{mport}")]);
    um.write_manifest("good.yaml", &service("good", ""));
    um.wait_ready("good", "True", T);
    // Nothing more to do: no save of the status can replace the FIFO
    // before the next pass reads it.
    run.settle(T);
    let status = um.state_dir.join("status.json");
    let fifo = um.state_dir.join(".planted-fifo");
    mkfifo(&fifo, 0o600);
    std::fs::rename(&fifo, &status).unwrap();
    um.write_manifest("new.yaml", &service("new", ""));
    um.wait_active("new.service", Duration::from_secs(30));
    let (code, body) = http_get(&metrics).expect("/metrics answers");
    assert_eq!(code, 200, "{body}");
    // The operator's next save replaced the FIFO with a regular file.
    wait_for(T, "status.json a regular file again", || {
        std::fs::symlink_metadata(&status)
            .is_ok_and(|m| m.is_file())
            .then_some(())
    });
    um.wait_ready("new", "True", T);
    drop(run);
}
