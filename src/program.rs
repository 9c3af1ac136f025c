//! The unitlet program a Backup's oneshot runs (`ExecStart=PROGRAM …
//! backup NAME`), recorded once in `STATE_DIR/program`.
//!
//! Why recorded: `current_exe()` is whichever binary runs now. When
//! `apply` runs from one path (`~/.cargo/bin/unitlet`) and the operator
//! from another (`/usr/local/bin/unitlet`), each would render its own path
//! into the Backup units, rewrite them and reload systemd on every pass.
//! The first unitlet that writes Backup units records its path; every
//! later one renders that path while it is still an executable file. When
//! it is gone, the running binary's path is used and recorded instead.

use std::path::{Path, PathBuf};

use crate::locations::Locations;

/// The record is one absolute path; anything longer is not one.
const MAX_RECORD: u64 = 4096;

/// Where the program is recorded.
pub fn record_file(loc: &Locations) -> PathBuf {
    loc.state_dir.join("program")
}

/// Whether `p` is a program that can be run: absolute, a regular file
/// (after symlinks) with an execute bit.
pub fn runnable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.is_absolute()
        && std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The recorded program, if the state directory can be trusted (anyone
/// who can write there could name another program) and it still names a
/// runnable file.
pub fn recorded(loc: &Locations) -> Option<PathBuf> {
    loc.check_state_dir().ok()?;
    let bytes = crate::manifest::read_regular_capped(&record_file(loc), false, MAX_RECORD).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let p = PathBuf::from(text.trim_end_matches('\n'));
    runnable(&p).then_some(p)
}

/// The program Backup units run: the recorded one, else `running`.
pub fn for_units(loc: &Locations, running: &Path) -> PathBuf {
    recorded(loc).unwrap_or_else(|| running.to_path_buf())
}

/// Record `program` (only a runnable one), so later passes from other
/// paths render the same units.
///
/// # Errors
/// The record cannot be written.
pub fn record(loc: &Locations, program: &Path) -> std::io::Result<bool> {
    if !runnable(program) {
        return Ok(false);
    }
    let mut text = program.as_os_str().as_encoded_bytes().to_vec();
    text.push(b'\n');
    crate::fsutil::atomic_write(&record_file(loc), &text, 0o600)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(dir: &Path) -> Locations {
        let loc = Locations {
            manifests: dir.join("manifests"),
            state_dir: dir.join("state"),
            unit_dir: dir.join("units"),
            bus: None,
            alertmanager: "http://127.0.0.1:9".into(),
        };
        for d in [&loc.state_dir, &loc.state_dir.join("holds")] {
            std::fs::create_dir_all(d).unwrap();
        }
        loc
    }

    fn program(dir: &Path, name: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        std::fs::write(&p, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    /// Issue 20 item 9: the first runnable program recorded wins; another
    /// running path renders it, until it is no longer runnable.
    #[test]
    fn the_recorded_program_is_used_while_it_can_run() {
        let t = tempfile::tempdir().unwrap();
        let loc = loc(t.path());
        let (a, b) = (program(t.path(), "a"), program(t.path(), "b"));
        assert_eq!(for_units(&loc, &b), b, "nothing recorded yet");
        assert!(!record(&loc, &t.path().join("missing")).unwrap());
        assert!(!record_file(&loc).exists(), "only a runnable program");
        assert!(record(&loc, &a).unwrap());
        assert_eq!(for_units(&loc, &b), a);
        // Not executable any more, or gone: the running one.
        std::fs::set_permissions(&a, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        assert_eq!(for_units(&loc, &b), b);
        std::fs::remove_file(&a).unwrap();
        assert_eq!(for_units(&loc, &b), b);
    }

    /// A record in a state directory others can write is not trusted.
    #[test]
    fn a_record_in_an_open_state_directory_is_ignored() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let loc = loc(t.path());
        let (a, b) = (program(t.path(), "a"), program(t.path(), "b"));
        record(&loc, &a).unwrap();
        std::fs::set_permissions(&loc.state_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(for_units(&loc, &b), b);
    }
}
