//! Issue 21 item 8: `unitlet logs NAME` in a user manager without a
//! journald (this machine's PID 1 is not systemd): a unit that writes to a
//! log file (as quickstart's private manager sets up) is read from it, with
//! `-n` and `-f`; one that writes to the journal nobody collects is an error
//! that says so; a status hint names the command.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{UNITLET, UserManager, service, stderr, stdout};

const T: Duration = Duration::from_secs(20);

/// A top-level drop-in sending every service's output to LOGS/NAME.log
/// (what scripts/quickstart.sh writes for its private manager).
fn log_files(um: &UserManager) -> std::path::PathBuf {
    let logs = um.runtime.join("state/log");
    std::fs::create_dir_all(&logs).unwrap();
    let d = um.runtime.join("config/systemd/user/service.d");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("50-logs.conf"),
        format!(
            "[Service]\nStandardOutput=append:{0}/%N.log\nStandardError=append:{0}/%N.log\n",
            logs.display()
        ),
    )
    .unwrap();
    let o = um.systemctl(&["daemon-reload"]);
    assert!(o.status.success(), "{}", stderr(&o));
    logs
}

#[test]
fn logs_reads_the_units_log_file_with_n_and_follow_and_hints_name_it() {
    let um = UserManager::start();
    let logs = log_files(&um);
    // Prints a numbered line each start, then fails: status says Failed.
    um.write_manifest(
        "talk.yaml",
        &service("talk", "  restart: \"no\"\n").replace(
            "[/bin/sleep, \"100000\"]",
            "[/bin/sh, -c, 'echo one; echo two; echo three >&2; exit 3']",
        ),
    );
    let _ = um.unitlet(&["apply"]);
    let (_, _, message) = um.wait_ready("talk", "False", T);
    assert!(
        message.contains("see `unitlet logs talk`"),
        "the hint names the command: {message}"
    );
    let o = um.unitlet(&["logs", "talk"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(stdout(&o), "one\ntwo\nthree\n");
    let o = um.unitlet(&["logs", "talk", "-n", "2"]);
    assert_eq!(stdout(&o), "two\nthree\n", "{}", stderr(&o));
    // -f: new lines appear as the unit writes them.
    let mut c = Command::new(UNITLET);
    for (k, v) in um.envs() {
        c.env(k, v);
    }
    let mut follow = c
        .args(["logs", "talk", "-f", "-n", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Lines arrive through a channel, so every wait has a deadline.
    let (tx, rx) = std::sync::mpsc::channel();
    let out = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let next = || {
        rx.recv_timeout(T)
            .expect("a line from unitlet logs -f within 20s")
    };
    assert_eq!(next(), "three");
    let o = um.systemctl(&["start", "talk.service"]);
    assert!(o.status.success() || um.active("talk.service") == "failed");
    let seen: Vec<String> = (0..3).map(|_| next()).collect();
    assert_eq!(seen, ["one", "two", "three"]);
    let _ = follow.kill();
    let _ = follow.wait();
    // --since needs time stamps a plain file does not have.
    let o = um.unitlet(&["logs", "talk", "--since", "-1h"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&logs.join("talk.log").display().to_string()),
        "{}",
        stderr(&o)
    );
    // An unknown name is the usual exit 1.
    let o = um.unitlet(&["logs", "nope"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("nope.service"), "{}", stderr(&o));
}

/// Without the drop-in, a unit writes to the journal; without a journald
/// that output is lost, and `unitlet logs` says so instead of printing
/// nothing (with a journald, it is journalctl's answer).
#[test]
fn logs_of_a_unit_writing_to_a_journal_nobody_collects_say_so() {
    let um = UserManager::start();
    um.write_manifest("quiet.yaml", &service("quiet", ""));
    let o = um.unitlet(&["apply"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let o = um.unitlet(&["logs", "quiet", "-n", "5"]);
    if Path::new("/run/systemd/journal/stdout").exists() {
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    } else {
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains("quiet.service logs to the journal")
                && err.contains("no systemd-journald runs here"),
            "{err}"
        );
    }
}
