//! Rendered units as systemd itself reads them.

use crate::support::{UserManager, stderr, stdout};

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
