//! The restic adapter: runs Debian's `restic` binary for one repository and
//! returns plain types (snapshots, IDs) or a [`ResticError`] that names the
//! repository (its password, and any password in its URL, never) and says
//! what to do.
//!
//! The password reaches restic only as `RESTIC_PASSWORD_FILE`: unitlet never
//! reads it. Every read of restic's output is capped ([`MAX_STDOUT`],
//! [`MAX_STDERR`]); a restic that prints more is stopped and its run
//! failed, never half-parsed. unitlet never runs `restic unlock`: a lock
//! may be a live run's, and only a person can tell it is stale.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

/// The restic binary unitlet runs (Debian's package).
pub const RESTIC: &str = "restic";

/// The oldest restic whose `--json` output and flags unitlet relies on
/// (Debian 12's).
pub const MIN_VERSION: (u32, u32, u32) = (0, 14, 0);

/// Most bytes of standard output read from one restic run (a snapshot
/// list of tens of thousands of snapshots).
pub const MAX_STDOUT: u64 = 32 << 20;

/// Most bytes of standard error kept from one restic run.
pub const MAX_STDERR: u64 = 256 << 10;

/// What went wrong running restic, naming the repository.
#[derive(Debug, thiserror::Error)]
pub enum ResticError {
    /// The binary is not installed.
    #[error(
        "restic is not installed ({0}); install it with `apt-get install restic` (0.14 or newer)"
    )]
    Missing(String),
    /// The binary is older than [`MIN_VERSION`].
    #[error(
        "restic {found} is too old; unitlet needs restic 0.14 or newer (`apt-get install restic`)"
    )]
    TooOld {
        /// The version it printed.
        found: String,
    },
    /// The password file does not open the repository.
    #[error(
        "restic repository {repo}: wrong password (no key in the repository opens with the password in {password_file}); put the repository's password in that file"
    )]
    WrongPassword {
        /// The repository, any password in it hidden.
        repo: String,
        /// The password file named in the manifest.
        password_file: PathBuf,
    },
    /// Another restic process holds a lock that this operation conflicts with.
    #[error(
        "restic repository {repo} is locked: {holder}; nothing was changed. Try again once that run is over; if no restic runs there any more, the lock is stale and `restic -r {repo} unlock` removes it (unitlet never unlocks by itself)"
    )]
    Locked {
        /// The repository, any password in it hidden.
        repo: String,
        /// Who holds the lock, as restic says.
        holder: String,
    },
    /// There is no repository at that location.
    #[error(
        "there is no restic repository at {repo}: {detail}; create it once with `restic -r {repo} init` (with the same password file), or fix destination.restic.repository"
    )]
    NoRepository {
        /// The repository, any password in it hidden.
        repo: String,
        /// What restic said.
        detail: String,
    },
    /// The repository's host cannot be reached.
    #[error(
        "restic repository {repo} cannot be reached: {detail}; check the network, the host and the credentials restic uses for it"
    )]
    Unreachable {
        /// The repository, any password in it hidden.
        repo: String,
        /// What restic said.
        detail: String,
    },
    /// Any other failure of a restic run.
    #[error("restic {op} in repository {repo} failed: {detail}")]
    Failed {
        /// What unitlet asked restic to do (`backup`, `snapshots`, …).
        op: &'static str,
        /// The repository, any password in it hidden.
        repo: String,
        /// What restic said (its last line of standard error), or why its
        /// output could not be used.
        detail: String,
    },
}

/// A restic snapshot, as `restic snapshots --json` lists it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Snapshot {
    /// The full snapshot ID.
    pub id: String,
    /// Its short form.
    #[serde(default)]
    pub short_id: String,
    /// When it was taken (RFC 3339).
    pub time: String,
    /// Its tags.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
}

impl Snapshot {
    /// The value of tag `key=VALUE`, if the snapshot has one.
    pub fn tag(&self, key: &str) -> Option<&str> {
        let prefix = format!("{key}=");
        self.tags
            .iter()
            .flatten()
            .find_map(|t| t.strip_prefix(&prefix))
    }
}

/// What `restic backup` made: the snapshot and what it added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backed {
    /// The new snapshot's full ID.
    pub snapshot_id: String,
    /// Bytes restic added to the repository for it (its summary's
    /// `data_added`, before compression), when restic says.
    pub data_added: Option<u64>,
}

/// One restic repository and its password file.
#[derive(Debug, Clone)]
pub struct Repo {
    repository: String,
    password_file: PathBuf,
}

/// The output of a successful run.
struct Ran {
    stdout: Vec<u8>,
}

impl Repo {
    /// The repository `repository` (any string restic accepts) opened with
    /// the password in `password_file`.
    pub fn new(repository: &str, password_file: &Path) -> Repo {
        Repo {
            repository: repository.to_owned(),
            password_file: password_file.to_path_buf(),
        }
    }

    /// The repository for messages: a password in a URL is hidden.
    pub fn shown(&self) -> String {
        shown(&self.repository)
    }

    /// The snapshots that have every tag of `tags`, oldest first.
    ///
    /// # Errors
    /// [`ResticError`]: nothing is listed unless restic listed everything.
    pub async fn snapshots(&self, tags: &[String]) -> Result<Vec<Snapshot>, ResticError> {
        let mut args = vec!["snapshots".to_owned(), "--json".to_owned()];
        if !tags.is_empty() {
            args.extend(["--tag".to_owned(), tags.join(",")]);
        }
        let ran = self.run("snapshots", &args, None).await?;
        let mut list: Vec<Snapshot> = serde_json::from_slice::<Option<Vec<Snapshot>>>(&ran.stdout)
            .map_err(|e| {
                self.failed(
                    "snapshots",
                    format!("its --json output is not a snapshot list ({e})"),
                )
            })?
            .unwrap_or_default();
        list.sort_by(|a, b| a.time.cmp(&b.time));
        Ok(list)
    }

    /// `restic backup .` run in `dir` (so the snapshot holds `dir`'s
    /// content at its root, whatever `dir`'s path), with `tags`; the new
    /// snapshot's ID and the bytes it added.
    ///
    /// With `parent` (an earlier snapshot of the same layout), a file whose
    /// path, size, modification time and inode are those of the parent's is
    /// not read again (`--parent`, `--ignore-ctime`: a hard link made since
    /// changes only the ctime). Prometheus blocks are immutable and linked,
    /// not copied, on their own filesystem, so a repeat backup reads only
    /// the new blocks and the head.
    ///
    /// # Errors
    /// [`ResticError`]; restic commits a snapshot whole or not at all.
    pub async fn backup(
        &self,
        dir: &Path,
        tags: &[String],
        parent: Option<&str>,
    ) -> Result<Backed, ResticError> {
        let mut args = vec![
            "backup".to_owned(),
            "--json".to_owned(),
            "--quiet".to_owned(),
        ];
        if let Some(p) = parent {
            args.extend([
                "--parent".to_owned(),
                p.to_owned(),
                "--ignore-ctime".to_owned(),
            ]);
        }
        for t in tags {
            args.extend(["--tag".to_owned(), t.clone()]);
        }
        args.push(".".to_owned());
        let ran = self.run("backup", &args, Some(dir)).await?;
        #[derive(Deserialize)]
        struct Summary {
            message_type: String,
            snapshot_id: Option<String>,
            data_added: Option<u64>,
        }
        String::from_utf8_lossy(&ran.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Summary>(l).ok())
            .filter(|s| s.message_type == "summary")
            .find_map(|s| {
                Some(Backed {
                    snapshot_id: s.snapshot_id?,
                    data_added: s.data_added,
                })
            })
            .ok_or_else(|| {
                self.failed(
                    "backup",
                    "its --json output has no summary with the snapshot ID".to_owned(),
                )
            })
    }

    /// `restic forget --keep-last KEEP --prune` of the snapshots that have
    /// every tag of `tags` (grouped together, whatever their paths or
    /// host); the removed snapshots.
    ///
    /// # Errors
    /// [`ResticError`].
    pub async fn forget_keep_last(
        &self,
        keep: u32,
        tags: &[String],
    ) -> Result<Vec<Snapshot>, ResticError> {
        let args: Vec<String> = [
            "forget",
            "--json",
            "--keep-last",
            &keep.to_string(),
            "--prune",
            "--group-by",
            "",
            "--tag",
            &tags.join(","),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let ran = self.run("forget", &args, None).await?;
        #[derive(Deserialize)]
        struct Group {
            remove: Option<Vec<Snapshot>>,
        }
        // The JSON is the first line; prune's report follows as text.
        let text = String::from_utf8_lossy(&ran.stdout);
        let first = text.lines().next().unwrap_or("[]");
        let groups: Vec<Group> = serde_json::from_str::<Option<Vec<Group>>>(first)
            .map_err(|e| {
                self.failed(
                    "forget",
                    format!("its --json output is not a list of groups ({e})"),
                )
            })?
            .unwrap_or_default();
        Ok(groups
            .into_iter()
            .flat_map(|g| g.remove.unwrap_or_default())
            .collect())
    }

    /// `restic restore SNAPSHOT --target TARGET --verify`: the snapshot's
    /// content into `target`, every file read back and checked by restic.
    ///
    /// # Errors
    /// [`ResticError`].
    pub async fn restore(&self, snapshot: &str, target: &Path) -> Result<(), ResticError> {
        let args = vec![
            "restore".to_owned(),
            snapshot.to_owned(),
            "--target".to_owned(),
            target.to_string_lossy().into_owned(),
            "--verify".to_owned(),
        ];
        self.run("restore", &args, None).await.map(|_| ())
    }

    fn failed(&self, op: &'static str, detail: String) -> ResticError {
        ResticError::Failed {
            op,
            repo: self.shown(),
            detail,
        }
    }

    /// Runs `restic -r REPO ARGS…` with the password file, output capped.
    async fn run(
        &self,
        op: &'static str,
        args: &[String],
        cwd: Option<&Path>,
    ) -> Result<Ran, ResticError> {
        let mut cmd = Command::new(RESTIC);
        cmd.arg("--repo")
            .arg(&self.repository)
            .args(args)
            .env("RESTIC_PASSWORD_FILE", &self.password_file)
            .env_remove("RESTIC_PASSWORD")
            .env_remove("RESTIC_PASSWORD_COMMAND")
            .env_remove("RESTIC_REPOSITORY")
            .env_remove("RESTIC_REPOSITORY_FILE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        let mut child = cmd.spawn().map_err(|e| spawn_error(&e))?;
        let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(self.failed(op, "its output could not be read".to_owned()));
        };
        let (out, err) = tokio::join!(read_capped(out, MAX_STDOUT), read_capped(err, MAX_STDERR));
        let (stdout, stderr) = match (out, err) {
            (Ok(o), Ok(e)) => (o, String::from_utf8_lossy(&e).into_owned()),
            (Err(e), _) | (_, Err(e)) => {
                // It would block on a full pipe: stopped, and its run failed.
                let _ = child.kill().await;
                return Err(self.failed(op, e));
            }
        };
        let status = child
            .wait()
            .await
            .map_err(|e| self.failed(op, format!("waiting for it: {e}")))?;
        if status.success() {
            return Ok(Ran { stdout });
        }
        Err(classify(op, &self.shown(), &self.password_file, &stderr))
    }
}

/// Reads at most `limit` bytes; more is an error (the caller's run fails).
async fn read_capped(r: impl AsyncRead + Unpin, limit: u64) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    let mut r = r.take(limit + 1);
    r.read_to_end(&mut buf)
        .await
        .map_err(|e| format!("reading its output: {e}"))?;
    if buf.len() as u64 > limit {
        return Err(format!("it printed more than {limit} bytes"));
    }
    Ok(buf)
}

fn spawn_error(e: &std::io::Error) -> ResticError {
    if e.kind() == std::io::ErrorKind::NotFound {
        ResticError::Missing(format!("no `{RESTIC}` on PATH"))
    } else {
        ResticError::Missing(format!("cannot run `{RESTIC}`: {e}"))
    }
}

/// The error restic's standard error describes, most specific first.
pub fn classify(op: &'static str, repo: &str, password_file: &Path, stderr: &str) -> ResticError {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let has = |s: &str| lines.iter().any(|l| l.contains(s));
    let line_with = |s: &str| {
        lines
            .iter()
            .find(|l| l.contains(s))
            .map(|l| l.trim_start_matches("Fatal: ").to_owned())
            .unwrap_or_default()
    };
    let repo = repo.to_owned();
    if has("wrong password") {
        return ResticError::WrongPassword {
            repo,
            password_file: password_file.to_path_buf(),
        };
    }
    if has("repository is already locked") {
        let l = line_with("already locked");
        let holder = l
            .split_once("already locked")
            .map(|(_, rest)| format!("locked{rest}"))
            .unwrap_or(l);
        let since = line_with("lock was created at");
        let holder = if since.is_empty() {
            holder
        } else {
            format!("{holder} ({since})")
        };
        return ResticError::Locked { repo, holder };
    }
    if has("unable to open config file") || has("Is there a repository at the following location") {
        return ResticError::NoRepository {
            repo,
            detail: line_with("unable to open config file"),
        };
    }
    for marker in [
        "connection refused",
        "Connection refused",
        "no such host",
        "Could not resolve",
        "i/o timeout",
        "network is unreachable",
        "Network is unreachable",
        "unable to start the sftp session",
        "Connection timed out",
        "Permission denied (publickey",
        "Host key verification failed",
    ] {
        if has(marker) {
            let detail = lines
                .iter()
                .filter(|l| !l.contains("Is there a repository"))
                .map(|l| l.trim_start_matches("Fatal: "))
                .collect::<Vec<_>>()
                .join("; ");
            return ResticError::Unreachable { repo, detail };
        }
    }
    let detail = lines
        .last()
        .map(|l| l.trim_start_matches("Fatal: ").to_owned())
        .unwrap_or_else(|| "it exited with an error and said nothing".to_owned());
    ResticError::Failed { op, repo, detail }
}

/// A repository string with any password in a URL (`rest:https://u:p@h/`)
/// replaced by `***`.
pub fn shown(repository: &str) -> String {
    let Some(i) = repository.find("://") else {
        return repository.to_owned();
    };
    let (head, rest) = repository.split_at(i + 3);
    let end = rest.find('/').unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{head}{user}:***@{host}{tail}"),
            None => repository.to_owned(),
        },
        None => repository.to_owned(),
    }
}

/// The installed restic's version, checked against [`MIN_VERSION`].
///
/// # Errors
/// [`ResticError::Missing`] when it cannot be run, [`ResticError::TooOld`].
pub async fn check_version() -> Result<String, ResticError> {
    let out = Command::new(RESTIC)
        .arg("version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| spawn_error(&e))?;
    let text = String::from_utf8_lossy(&out.stdout[..out.stdout.len().min(4096)]).into_owned();
    let found = text.split_whitespace().nth(1).unwrap_or("").to_owned();
    match parse_version(&found) {
        Some(v) if v >= MIN_VERSION => Ok(found),
        Some(_) => Err(ResticError::TooOld { found }),
        None => Err(ResticError::Missing(format!(
            "`{RESTIC} version` printed {:?}, not a version",
            text.trim()
        ))),
    }
}

/// `0.14.0` (or `0.16.4-dev`) as numbers.
fn parse_version(v: &str) -> Option<(u32, u32, u32)> {
    let mut parts = v.split(['.', '-']).map(|p| p.parse::<u32>().ok());
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_repository_urls_are_hidden() {
        assert_eq!(shown("/srv/restic"), "/srv/restic");
        assert_eq!(shown("sftp:u@h:/srv/r"), "sftp:u@h:/srv/r");
        assert_eq!(
            shown("rest:https://u:secret@h:8000/r"),
            "rest:https://u:***@h:8000/r"
        );
        assert_eq!(shown("s3:https://h/bucket"), "s3:https://h/bucket");
    }

    #[test]
    fn versions_are_compared_as_numbers() {
        assert_eq!(parse_version("0.14.0"), Some((0, 14, 0)));
        assert_eq!(parse_version("0.16.4-dev"), Some((0, 16, 4)));
        assert!(parse_version("0.9.6").unwrap() < MIN_VERSION);
        assert!(parse_version("x").is_none());
    }

    #[test]
    fn restic_errors_are_classified_with_what_to_do() {
        let pw = Path::new("/p");
        let e = classify(
            "snapshots",
            "/r",
            pw,
            "Fatal: wrong password or no key found\n",
        );
        assert!(matches!(e, ResticError::WrongPassword { .. }), "{e}");
        assert!(!e.to_string().contains("Fatal"), "{e}");
        let e = classify(
            "backup",
            "/r",
            pw,
            "unable to create lock in backend: repository is already locked exclusively by PID 4396 on vm by root (UID 0, GID 0)\nlock was created at 2026-12-06 10:14:43 (2.2s ago)\nstorage ID 3aca3027\nthe `unlock` command can be used to remove stale locks\n",
        );
        let ResticError::Locked { holder, .. } = &e else {
            panic!("{e}")
        };
        assert!(holder.contains("PID 4396"), "{holder}");
        assert!(e.to_string().contains("unlock"), "{e}");
        let e = classify(
            "snapshots",
            "/r",
            pw,
            "Fatal: unable to open config file: stat /r/config: no such file or directory\nIs there a repository at the following location?\n/r\n",
        );
        assert!(matches!(e, ResticError::NoRepository { .. }), "{e}");
        let e = classify(
            "snapshots",
            "sftp:h:/r",
            pw,
            "subprocess ssh: ssh: connect to host 127.0.0.1 port 1: Connection refused\nFatal: unable to open repository at sftp:127.0.0.1:/x: unable to start the sftp session, error: EOF\n",
        );
        assert!(matches!(e, ResticError::Unreachable { .. }), "{e}");
        let e = classify("backup", "/r", pw, "Fatal: something else\n");
        assert!(e.to_string().ends_with("failed: something else"), "{e}");
    }
}
