//! Rendered units as systemd itself reads them.

use std::time::Duration;

use crate::support::{UserManager, stderr, stdout, wait_for};

/// Whatever an argument contains, systemd must hand it to the process
/// verbatim: checked through `/proc/PID/cmdline` of the real process.
#[test]
fn argv_and_environment_survive_systemd_parsing() {
    let um = UserManager::start();
    let args = [
        "a b",
        "q\"uote",
        "it's",
        "100%",
        "%h",
        "$HOME",
        "${USER}",
        "back\\slash",
        "\\n",
        ";",
        "tab\\t",
        "-x",
        "",
        "é ünïcode",
    ];
    let yaml_args: Vec<String> = args
        .iter()
        .map(|a| serde_json::to_string(a).unwrap())
        .collect();
    let manifest = format!(
        "apiVersion: unitlet/v1\nkind: Service\nmetadata: {{name: argv}}\nspec:\n  command: [/bin/sleep, \"100000\", {}]\n  environment: {{WEIRD: {}}}\n",
        yaml_args.join(", "),
        serde_json::to_string("a \"b\" %h $HOME \\ c").unwrap()
    );
    // sleep ignores extra args? No: it rejects them. Use sh -c with exec sleep.
    // sh stays the main process (no exec of its last command), so its argv
    // is what systemd passed.
    let manifest = manifest.replace(
        "[/bin/sleep, \"100000\", ",
        "[/bin/sh, -c, \"sleep 100000; true\", sh, ",
    );
    um.write_manifest("argv.yaml", &manifest);
    let o = um.unitlet(&["apply"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let pid = um.prop("argv.service", "MainPID");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let argv: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let mut want: Vec<String> = ["/bin/sh", "-c", "sleep 100000; true", "sh"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    want.extend(args.iter().map(|s| s.to_string()));
    want.push(String::new()); // cmdline ends with NUL
    assert_eq!(argv, want);
    let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let env: Vec<&[u8]> = env.split(|b| *b == 0).collect();
    assert!(
        env.contains(&"WEIRD=a \"b\" %h $HOME \\ c".as_bytes()),
        "environment mangled"
    );
}

/// Every rendered unit passes `systemd-analyze --user verify`.
#[test]
fn rendered_units_verify() {
    let um = UserManager::start();
    um.write_manifest(
        "all.yaml",
        "apiVersion: unitlet/v1\nkind: Service\nmetadata: {name: full}\nspec:\n  description: \"Full 100% service\"\n  command: [/bin/sleep, \"1\"]\n  workingDirectory: /tmp\n  environment: {A: \"1 2\"}\n  restart: always\n  restartSec: 500ms\n  after: [other]\n  resources: {memoryMax: 512M, memoryHigh: 400M, cpuQuota: 150%, tasksMax: 64}\n---\napiVersion: unitlet/v1\nkind: Service\nmetadata: {name: other}\nspec: {command: [/bin/true], state: stopped, enabled: false}\n---\napiVersion: unitlet/v1\nkind: Backup\nmetadata: {name: snap}\nspec: {schedule: \"30 2 * * 1-5\", prometheus: {url: \"http://127.0.0.1:9090\"}}\n",
    );
    let out = um.runtime.join("export");
    for name in ["full", "other", "snap"] {
        let o = um.unitlet(&["render", name, "--out", out.to_str().unwrap()]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let files: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(files.len(), 4);
    let o = um.verify_units(&files);
    let err = stderr(&o);
    // The Backup oneshot runs the test binary path, which exists; anything
    // systemd-analyze prints is a syntax or semantic problem.
    let problems: Vec<&str> = err
        .lines()
        .filter(|l| !l.contains("other.service") || !l.contains("not found"))
        .collect();
    assert!(
        o.status.success() && problems.is_empty(),
        "systemd-analyze verify: {err}"
    );
}

#[test]
fn backup_timer_is_known_to_systemd() {
    let um = UserManager::start();
    um.write_manifest(
        "snap.yaml",
        "apiVersion: unitlet/v1\nkind: Backup\nmetadata: {name: snap}\nspec: {schedule: every 6h, keep: 2, prometheus: {url: \"http://127.0.0.1:9\"}}\n",
    );
    let o = um.unitlet(&["apply"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(um.active("snap.timer"), "active");
    assert_eq!(um.prop("snap.timer", "UnitFileState"), "enabled");
    let o = um.systemctl(&["list-timers", "--all", "--no-pager"]);
    assert!(stdout(&o).contains("snap.timer"), "{}", stdout(&o));
    assert_eq!(
        um.active("snap.service"),
        "inactive",
        "the oneshot runs only from its timer"
    );
}

/// Regression: an argument or environment value with a newline, a tab or
/// another control byte was refused ("control character"), though systemd
/// carries them through C escapes. They reach the process verbatim, and the
/// unit verifies.
#[test]
fn multiline_argv_and_environment_reach_the_process_verbatim() {
    let um = UserManager::start();
    let args = [
        "line one\nline two",
        "tab\there",
        "ctl\u{1}byte",
        "esc\u{1b}[0m",
    ];
    let yaml_args: Vec<String> = args
        .iter()
        .map(|a| serde_json::to_string(a).unwrap())
        .collect();
    um.write_manifest(
        "ml.yaml",
        &format!(
            "apiVersion: unitlet/v1\nkind: Service\nmetadata: {{name: ml}}\nspec:\n  command: [/bin/sh, -c, \"sleep 100000; true\", sh, {}]\n  environment: {{SCRIPT: {}}}\n",
            yaml_args.join(", "),
            serde_json::to_string("echo 1\necho\t2\u{1}").unwrap()
        ),
    );
    let o = um.unitlet(&["apply"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let pid = um.prop("ml.service", "MainPID");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let argv: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let want: Vec<&[u8]> = ["/bin/sh", "-c", "sleep 100000; true", "sh"]
        .iter()
        .chain(args.iter())
        .chain([""].iter())
        .map(|s| s.as_bytes())
        .collect();
    assert_eq!(argv, want);
    let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(
        env.split(|b| *b == 0)
            .any(|e| e == "SCRIPT=echo 1\necho\t2\u{1}".as_bytes()),
        "environment mangled"
    );
    let unit = std::fs::read_to_string(um.unit_dir.join("ml.service")).unwrap();
    assert!(
        !unit.chars().any(|c| c.is_control() && c != '\n'),
        "raw control characters in the unit file:\n{unit}"
    );
    let o = um.verify_units(&[um.unit_dir.join("ml.service")]);
    assert!(
        o.status.success() && stderr(&o).trim().is_empty(),
        "systemd-analyze verify: {}",
        stderr(&o)
    );
}

/// Secrets given as `environmentFile` and `credentials` reach the service
/// (as variables and as `$CREDENTIALS_DIRECTORY/NAME`) and never appear in
/// the unit file, `render`, `describe` or `get`.
#[test]
fn environment_file_and_credentials_reach_the_service_and_nothing_else() {
    use std::os::unix::fs::PermissionsExt;
    let um = UserManager::start();
    let secrets = um.runtime.join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    let env_file = secrets.join("app.env");
    let cred = secrets.join("db-password");
    std::fs::write(&env_file, "API_KEY=sk-env-0123456789\n").unwrap();
    std::fs::write(&cred, "pw-cred-9876543210").unwrap();
    for f in [&env_file, &cred] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let out = um.runtime.join("seen");
    um.write_manifest(
        "app.yaml",
        &format!(
            "apiVersion: unitlet/v1\nkind: Service\nmetadata: {{name: app}}\nspec:\n  command: [/bin/sh, -c, 'printf \"%s|%s\" \"$API_KEY\" \"$(cat \"$CREDENTIALS_DIRECTORY/db-password\" 2>&1)\" > {}; exec sleep 100000']\n  environmentFile: {}\n  credentials: {{db-password: {}}}\n",
            out.display(),
            env_file.display(),
            cred.display()
        ),
    );
    let o = um.unitlet(&["apply"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let seen = wait_for(
        Duration::from_secs(10),
        "the service to write what it saw",
        || {
            std::fs::read_to_string(&out)
                .ok()
                .filter(|s| s.contains('|'))
        },
    );
    assert_eq!(seen, "sk-env-0123456789|pw-cred-9876543210");
    let mut shown = std::fs::read_to_string(um.unit_dir.join("app.service")).unwrap();
    for args in [
        &["render", "app"][..],
        &["describe", "app"],
        &["get", "-o", "json"],
    ] {
        let o = um.unitlet(args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        shown.push_str(&stdout(&o));
        shown.push_str(&stderr(&o));
    }
    shown.push_str(&std::fs::read_to_string(um.state_dir.join("status.json")).unwrap());
    assert!(shown.contains("LoadCredential=db-password:"), "{shown}");
    for secret in ["sk-env-0123456789", "pw-cred-9876543210"] {
        assert!(!shown.contains(secret), "{secret} leaked:\n{shown}");
    }
}

/// Issue 20 item 9: `apply` from one path and a pass from another (a
/// second link to the same binary) write the same Backup units: the
/// program they run is recorded once, so nothing is rewritten and systemd
/// is not reloaded.
#[test]
fn backup_units_keep_the_recorded_program_whoever_applies() {
    use std::os::unix::fs::MetadataExt;
    let um = UserManager::start();
    um.write_manifest(
        "nightly.yaml",
        "apiVersion: unitlet/v1\nkind: Backup\nmetadata: {name: nightly}\nspec:\n  schedule: every 6h\n  prometheus: {url: \"http://127.0.0.1:9\"}\n",
    );
    let o = um.unitlet(&["apply"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let unit = um.unit_dir.join("nightly.service");
    let first = std::fs::read_to_string(&unit).unwrap();
    let a = crate::support::UNITLET;
    assert!(first.contains(&format!("ExecStart=\"{a}\" ")), "{first}");
    let inode = std::fs::metadata(&unit).unwrap().ino();

    // The same binary under another path (a link: current_exe() does not
    // resolve it, unlike a symlink).
    let b = um.runtime.join("bin/unitlet");
    std::fs::create_dir_all(b.parent().unwrap()).unwrap();
    if std::fs::hard_link(a, &b).is_err() {
        std::fs::copy(a, &b).unwrap();
    }
    let from_b = |args: &[&str]| {
        let mut c = std::process::Command::new(&b);
        c.envs(um.envs())
            .env_remove("UNITLET_MANIFESTS")
            .env_remove("UNITLET_STATE_DIR")
            .env_remove("UNITLET_UNIT_DIR")
            .env_remove("UNITLET_BUS")
            .args(args);
        c.output().unwrap()
    };
    let o = from_b(&["plan"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("Nothing to do"),
        "no rewrite, no daemon-reload: {}",
        stdout(&o)
    );
    let o = from_b(&["apply"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(std::fs::read_to_string(&unit).unwrap(), first);
    assert_eq!(
        std::fs::metadata(&unit).unwrap().ino(),
        inode,
        "the unit file was not rewritten"
    );
    // And back: `apply` from the first path changes nothing either.
    let o = um.unitlet(&["plan"]);
    assert!(stdout(&o).contains("Nothing to do"), "{}", stdout(&o));
}

/// Issue 20 item 11: an adopted unit file with continued lines is read as
/// systemd reads it: its continued `WantedBy=` enables both targets, and a
/// changed argument on a continuation line is a changed `ExecStart=`
/// (a restart), not a comment-only change.
#[test]
fn an_adopted_unit_with_continued_lines_is_read_as_systemd_reads_it() {
    let um = UserManager::start();
    let file = um.runtime.join("cont.service");
    let unit = |secs: &str| {
        format!(
            "[Unit]\nDescription=continued\n[Service]\nExecStart=/bin/sleep \\\n# a comment inside the continued line\n    {secs}\nMemoryMax=150M\n[Install]\nWantedBy=default.target \\\n  basic.target\n"
        )
    };
    std::fs::write(&file, unit("100000")).unwrap();
    um.write_manifest(
        "cont.yaml",
        &format!(
            "apiVersion: unitlet/v1\nkind: Service\nmetadata: {{name: cont}}\nspec:\n  unitFile: {}\n",
            file.display()
        ),
    );
    let o = um.unitlet(&["apply"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let config = um.runtime.join("config/systemd/user");
    for target in ["default.target", "basic.target"] {
        let link = config.join(format!("{target}.wants/cont.service"));
        assert!(
            link.symlink_metadata().is_ok(),
            "{} missing",
            link.display()
        );
    }
    let stray: Vec<_> = std::fs::read_dir(&config)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with('\\'))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
    let o = um.systemctl(&["is-enabled", "cont.service"]);
    assert_eq!(stdout(&o).trim(), "enabled", "{}", stderr(&o));
    assert!(um.prop("cont.service", "ExecStart").contains("100000"));
    let o = um.unitlet(&["plan"]);
    assert!(stdout(&o).contains("Nothing to do"), "{}", stdout(&o));

    std::fs::write(&file, unit("200000")).unwrap();
    let o = um.unitlet(&["plan"]);
    let plan = stdout(&o);
    assert!(plan.contains("(Service.ExecStart)"), "{plan}");
    assert!(plan.contains("restart"), "{plan}");
    let o = um.unitlet(&["apply"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    wait_for(Duration::from_secs(10), "the new argument running", || {
        let pid = um.prop("cont.service", "MainPID");
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        (cmdline == b"/bin/sleep\x00200000\x00").then_some(())
    });
}
