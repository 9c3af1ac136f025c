//! Sets `UNITLET_VERSION` for `unitlet --version` and the man page: the
//! crate version, and the commit when built from a git checkout of this
//! repository ("0.2.0 (commit 1a2b3c4)"). Without git, or outside a
//! checkout (a crate tarball), just the version.

use std::path::{Path, PathBuf};
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let version = env!("CARGO_PKG_VERSION");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // Only this repository's own checkout: a copy unpacked inside some
    // other repository must not show that repository's commit.
    let own = git(&dir, &["rev-parse", "--show-toplevel"])
        .and_then(|t| std::fs::canonicalize(t).ok())
        .zip(std::fs::canonicalize(&dir).ok())
        .is_some_and(|(top, here)| top == here);
    let commit = own
        .then(|| git(&dir, &["rev-parse", "--short", "HEAD"]))
        .flatten();
    match commit {
        Some(c) => {
            println!("cargo:rustc-env=UNITLET_VERSION={version} (commit {c})");
            // Rebuild the string when HEAD moves (a commit, a checkout).
            // Only files that exist: a missing one would rerun this script
            // on every build.
            let mut watch = vec!["HEAD".to_string(), "logs/HEAD".to_string()];
            watch.extend(git(&dir, &["rev-parse", "--symbolic-full-name", "HEAD"]));
            for what in watch {
                if let Some(p) = git(&dir, &["rev-parse", "--git-path", &what])
                    && dir.join(&p).exists()
                {
                    println!("cargo:rerun-if-changed={}", dir.join(p).display());
                }
            }
        }
        None => println!("cargo:rustc-env=UNITLET_VERSION={version}"),
    }
}
