//! The state directory holds holds: it is trusted only when nobody else
//! can write it, like the manifests directory.

use std::os::unix::fs::PermissionsExt;

use crate::support::{UserManager, service, stderr, stdout};

fn chmod(p: &std::path::Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn state_dir_writable_by_other_users_is_refused() {
    let um = UserManager::start();
    um.write_manifest("x.yaml", &service("x", ""));
    let holds = um.state_dir.join("holds");
    std::fs::create_dir_all(&holds).unwrap();
    // Somebody else's hold, planted while holds/ was open to all: it names
    // a live process, so it would freeze x for as long as that lives.
    std::fs::write(holds.join("x"), std::process::id().to_string()).unwrap();
    for (dir, mode) in [
        (&um.state_dir, 0o777),
        (&holds, 0o777),
        (&um.state_dir, 0o775),
    ] {
        chmod(dir, mode);
        let o = um.unitlet(&["apply"]);
        assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains(&format!("{} is writable by other users", dir.display()))
                && err.contains(&format!("mode {mode:04o}"))
                && err.contains("owner uid")
                && err.contains(&format!("chmod go-w {}", dir.display())),
            "{err}"
        );
        let o = um.unitlet(&["plan"]);
        assert_eq!(o.status.code(), Some(2), "plan refuses too: {}", stdout(&o));
        assert!(
            !um.unit_dir.join("x.service").exists(),
            "nothing may be applied"
        );
        chmod(dir, 0o755);
    }
    // Someone else's state directory.
    let nobody = 65534;
    std::os::unix::fs::chown(&um.state_dir, Some(nobody), None).unwrap();
    let o = um.unitlet(&["apply"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("is owned by another user") && stderr(&o).contains("uid 65534"),
        "{}",
        stderr(&o)
    );
    std::os::unix::fs::chown(&um.state_dir, Some(unsafe { libc::geteuid() }), None).unwrap();
    // Fixed, and the planted hold removed: x is applied.
    std::fs::remove_file(holds.join("x")).unwrap();
    let o = um.unitlet(&["apply"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(um.active("x.service"), "active");
}

#[test]
fn directories_unitlet_creates_pass_its_own_check_under_umask_002() {
    let um = UserManager::start();
    um.write_manifest("x.yaml", &service("x", ""));
    assert!(!um.state_dir.exists());
    // Each nextest test is its own process: the umask is ours alone, and
    // the unitlet processes started from here inherit it.
    unsafe {
        libc::umask(0o002);
    }
    let mut run = um.spawn_run(&[]);
    run.wait_log("reconciled", std::time::Duration::from_secs(20));
    run.stop();
    use std::os::unix::fs::MetadataExt;
    for d in [um.state_dir.clone(), um.state_dir.join("holds")] {
        let mode = std::fs::metadata(&d).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o755, "{}", d.display());
    }
    let o = um.unitlet(&["apply"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
}
