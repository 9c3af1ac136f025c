//! Directory loading (I/O): listing and reading manifest files, regular-file
//! reads, owner and permission checks.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use super::model::*;
use super::parse::*;
use super::validate::*;

// ---------------------------------------------------------------------------
// Directory loading (I/O).

/// Why the manifests directory itself could not be read: an operational
/// error, never "no manifests" (which would delete everything).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The directory does not exist.
    #[error(
        "manifests directory {path} does not exist; create it or pass --manifests (nothing was changed)"
    )]
    Missing {
        /// The directory.
        path: PathBuf,
    },
    /// The directory exists but cannot be listed.
    #[error("cannot read manifests directory {path} (nothing was changed)")]
    Unreadable {
        /// The directory.
        path: PathBuf,
        /// The error underneath.
        #[source]
        source: std::io::Error,
    },
    /// Someone else can write manifests that would run commands as you.
    #[error(
        "{path} is writable by other users (mode {mode:04o}): anyone who can drop a manifest there runs commands as you; run `chmod go-w {path}`"
    )]
    Insecure {
        /// The directory or file.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// A path given to `validate` is neither a file nor a directory.
    #[error("{} does not exist; give a manifest file or a directory of manifests", path.display())]
    NoSuchPath {
        /// The path given.
        path: PathBuf,
    },
    /// Another user owns it, and so can make its manifests run commands
    /// as you.
    #[error(
        "{path} is owned by uid {owner}, not by you (uid {me}) or root: that user can make its manifests run commands as you; run `chown {me} {path}` if it is yours, or pass another --manifests"
    )]
    NotOwned {
        /// The directory or file.
        path: PathBuf,
        /// Its owner's uid.
        owner: u32,
        /// Our effective uid.
        me: u32,
    },
}

/// Whether `uid` may own manifests (and their directory): you, or root
/// (who can run commands as you anyway, so a root-owned `/etc` directory
/// is safe).
fn trusted_owner(uid: u32) -> Result<(), u32> {
    let me = rustix::process::geteuid().as_raw();
    if uid == me || uid == 0 {
        Ok(())
    } else {
        Err(me)
    }
}

/// The name a file implies when its content cannot be parsed:
/// `prometheus.yaml` → `prometheus`.
pub fn implied_name(file: &Path) -> String {
    file.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Whether a directory entry is a manifest file: `*.yaml` / `*.yml`, not
/// hidden, not an editor's temporary.
pub fn is_manifest_file_name(name: &str) -> bool {
    if name.starts_with('.') || name.starts_with('#') || name.ends_with('~') {
        return false;
    }
    name.ends_with(".yaml") || name.ends_with(".yml")
}

fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

/// Refuse paths that other users own or can write: a manifest runs
/// commands as you.
fn check_owner_mode(path: &Path, meta: &std::fs::Metadata) -> Result<(), LoadError> {
    use std::os::unix::fs::MetadataExt;
    trusted_owner(meta.uid()).map_err(|me| LoadError::NotOwned {
        path: path.to_path_buf(),
        owner: meta.uid(),
        me,
    })?;
    let mode = meta.mode() & 0o7777;
    // Sticky, world-writable directories (like /tmp) are still unsafe for this.
    if mode & 0o022 != 0 {
        return Err(LoadError::Insecure {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// What a load makes of facts about this machine rather than about the
/// manifest: a secret file (`environmentFile`, `credentials`, Grafana's
/// token or password file) that is missing or not private.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostFacts {
    /// The manifest is invalid here and not applied (`run`, `apply`).
    Errors,
    /// The manifest is valid; the fact is a warning (`validate`, which
    /// checks manifests in CI or an editor, away from the host).
    Warnings,
}

/// Load every manifest file directly in `dir`.
///
/// # Errors
/// Only for the directory itself (missing, unreadable, writable by others).
/// Problems with individual files are reported in [`LoadedSet::errors`] and
/// never stop the other files from loading.
pub fn load_dir(dir: &Path) -> Result<LoadedSet, LoadError> {
    let (files, canon_dir) = list_dir(dir)?;
    let mut parsed = Vec::new();
    for f in &files {
        // Removed between the listing and now: it is gone, not broken (an
        // error here would hold its units until the next change).
        if let Err(e) = std::fs::symlink_metadata(f)
            && e.kind() == std::io::ErrorKind::NotFound
        {
            continue;
        }
        parsed.push((
            f.clone(),
            read_manifest_file(f, &canon_dir, true, HostFacts::Errors),
        ));
    }
    let mut set = LoadedSet {
        files: parsed.iter().map(|(f, _)| f.clone()).collect(),
        ..LoadedSet::default()
    };
    assemble(&mut set, parsed);
    Ok(set)
}

/// The manifest files directly in `dir` (sorted), and the directory's
/// canonical path, after checking the directory may hold manifests.
fn list_dir(dir: &Path) -> Result<(Vec<PathBuf>, PathBuf), LoadError> {
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(LoadError::Missing {
                path: dir.to_path_buf(),
            });
        }
        Err(e) => {
            return Err(LoadError::Unreadable {
                path: dir.to_path_buf(),
                source: e,
            });
        }
    };
    if !meta.is_dir() {
        return Err(LoadError::Unreadable {
            path: dir.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
        });
    }
    check_owner_mode(dir, &meta)?;
    let rd = std::fs::read_dir(dir).map_err(|e| LoadError::Unreadable {
        path: dir.to_path_buf(),
        source: e,
    })?;
    let mut files = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| LoadError::Unreadable {
            path: dir.to_path_buf(),
            source: e,
        })?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        if is_manifest_file_name(name) {
            files.push(dir.join(name));
        }
    }
    files.sort();
    let canon_dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    Ok((files, canon_dir))
}

/// The directory a file is checked in: its parent, `.` for a bare name.
fn parent_dir(f: &Path) -> &Path {
    match f.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Load explicit files (for `validate FILE...`). Each file is checked as if
/// it were in its own directory.
pub fn load_files(files: &[PathBuf]) -> LoadedSet {
    let mut set = LoadedSet::default();
    let mut parsed = Vec::new();
    for f in files {
        let dir = parent_dir(f);
        let canon_dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        parsed.push((
            f.clone(),
            read_manifest_file(f, &canon_dir, false, HostFacts::Errors),
        ));
    }
    set.files = files.to_vec();
    assemble(&mut set, parsed);
    set
}

/// Load manifest files and directories of them, as `validate` checks them:
/// a directory means its manifest files (by the manifests directory's
/// rules), and facts about this machine are [`HostFacts::Warnings`]. All
/// the files are one set (a name defined twice among them is an error); a
/// file named twice is read once.
///
/// # Errors
/// A path that does not exist, or a directory that cannot be used (as
/// [`load_dir`]): nothing was checked.
pub fn load_paths(paths: &[PathBuf]) -> Result<LoadedSet, LoadError> {
    let mut todo: Vec<(PathBuf, PathBuf, bool)> = Vec::new();
    for p in paths {
        match std::fs::metadata(p) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(LoadError::NoSuchPath { path: p.clone() });
            }
            Ok(m) if m.is_dir() => {
                let (files, canon_dir) = list_dir(p)?;
                todo.extend(files.into_iter().map(|f| (f, canon_dir.clone(), true)));
            }
            // Anything else is read as a file, and refused as one if it
            // is not a regular file.
            _ => {
                let dir = parent_dir(p);
                let canon_dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
                todo.push((p.clone(), canon_dir, false));
            }
        }
    }
    let mut seen = BTreeSet::new();
    todo.retain(|(f, _, _)| seen.insert(std::fs::canonicalize(f).unwrap_or_else(|_| f.clone())));
    let parsed: Vec<(PathBuf, ParsedFile)> = todo
        .into_iter()
        .map(|(f, canon_dir, in_dir)| {
            let p = read_manifest_file(&f, &canon_dir, in_dir, HostFacts::Warnings);
            (f, p)
        })
        .collect();
    let mut set = LoadedSet {
        files: parsed.iter().map(|(f, _)| f.clone()).collect(),
        ..LoadedSet::default()
    };
    assemble(&mut set, parsed);
    Ok(set)
}

pub use crate::fsutil::{file_type_name, open_regular, read_regular_capped};

/// A file holding a secret (token, password, environment file, credential)
/// must be a regular file only you can read or write, as ssh insists for
/// private keys: anyone else who can read it has the secret, anyone who can
/// write it can change what the service sees.
///
/// # Errors
/// A message naming the path and what is wrong (missing, not a regular
/// file, mode, owner) and the command that fixes it.
pub fn check_secret_file(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let p = path.display();
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "{p} does not exist; create it with `install -m 600 /dev/null {p}` and put the secret in it"
            ));
        }
        Err(e) => return Err(format!("{p} cannot be read: {e}")),
    };
    if !meta.is_file() {
        return Err(format!(
            "{p} is {}, not a regular file",
            file_type_name(meta.file_type())
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{p} is accessible by group or others (mode {mode:04o}); secret files must be private: run `chmod 600 {p}`"
        ));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(format!(
            "{p} is owned by uid {}, not by you (uid {me}); secret files must be your own",
            meta.uid()
        ));
    }
    Ok(())
}

/// Unit files adopted with `spec.unitFile` are refused above this size.
pub const MAX_UNIT_FILE_SIZE: u64 = 256 * 1024;

/// A problem found at load time: the field it is about (`field_at`'s key),
/// the path to show in findings, and the message.
type LoadProblem = (&'static str, String, String);

/// Load-time check of a valid manifest that needs the filesystem: read the
/// adopted unit file (bounded, regular files only).
fn read_unit_file(m: &mut Manifest) -> Result<(), LoadProblem> {
    let field = "spec.unitFile".to_string();
    if let Spec::Service(s) = &mut m.spec
        && let Exec::UnitFile { path, content } = &mut s.exec
    {
        let bytes = read_regular_capped(path, true, MAX_UNIT_FILE_SIZE).map_err(|e| {
            (
                "unitFile",
                field.clone(),
                format!("spec.unitFile {} {e}", path.display()),
            )
        })?;
        let c = String::from_utf8(bytes).map_err(|_| {
            (
                "unitFile",
                field.clone(),
                format!(
                    "spec.unitFile {} is not UTF-8 text; is it a unit file?",
                    path.display()
                ),
            )
        })?;
        if let Some(bad) = c
            .chars()
            .find(|ch| ch.is_control() && *ch != '\n' && *ch != '\t' && *ch != '\r')
        {
            return Err((
                "unitFile",
                field.clone(),
                format!(
                    "spec.unitFile {} contains the control character {bad:?}",
                    path.display()
                ),
            ));
        }
        // Read as systemd reads it, and refuse lines it would
        // refuse or silently drop: the service would not be what
        // the file seems to say.
        crate::unitfile::check(&c).map_err(|e| {
            (
                "unitFile",
                field.clone(),
                format!("spec.unitFile {} {e}; fix the unit file", path.display()),
            )
        })?;
        *content = c;
    }
    Ok(())
}

/// Load-time checks of the facts about this machine a valid manifest
/// depends on: its secret files exist and are private (every problem, not
/// only the first).
fn host_checks(m: &Manifest) -> Vec<LoadProblem> {
    let mut problems = Vec::new();
    match &m.spec {
        Spec::Service(s) => {
            if let Some(f) = &s.environment_file
                && let Err(e) = check_secret_file(f)
            {
                let field = "spec.environmentFile".to_string();
                problems.push((
                    "environmentFile",
                    field,
                    format!("spec.environmentFile: {e}"),
                ));
            }
            for (name, f) in &s.credentials {
                if let Err(e) = check_secret_file(f) {
                    let field = format!("spec.credentials.{name}");
                    let message = format!("{field}: {e}");
                    problems.push(("credentials", field, message));
                }
            }
        }
        Spec::Backup(b) => {
            if let Some(r) = &b.restic
                && r.password_file.exists()
                && let Err(e) = check_secret_file(&r.password_file)
            {
                let key = "destination.restic.passwordFile";
                problems.push((key, format!("spec.{key}"), format!("spec.{key}: {e}")));
            }
            if let BackupSource::Grafana { auth, .. } = &b.source {
                // Missing files are reported when a backup runs (the token
                // may be created after the manifest); a present file must
                // be private already.
                let (key, f) = match auth {
                    GrafanaAuthSpec::TokenFile(f) => ("grafana.tokenFile", f),
                    GrafanaAuthSpec::Basic { password_file, .. } => {
                        ("grafana.basicAuth.passwordFile", password_file)
                    }
                };
                if f.exists()
                    && let Err(e) = check_secret_file(f)
                {
                    problems.push((key, format!("spec.{key}"), format!("spec.{key}: {e}")));
                }
            }
        }
    }
    problems
}

fn file_error(file: &Path, message: impl Into<String>) -> ParsedFile {
    ParsedFile {
        errors: vec![ManifestError {
            file: file.to_path_buf(),
            line: 0,
            column: 0,
            message: message.into(),
            field: None,
        }],
        ..ParsedFile::default()
    }
}

fn read_manifest_file(file: &Path, canon_dir: &Path, in_dir: bool, host: HostFacts) -> ParsedFile {
    let text = match check_manifest_file(file, canon_dir, in_dir)
        .and_then(|()| read_manifest_text(file))
    {
        Ok(t) => t,
        Err(e) => return file_error(file, e),
    };
    let ctx = PathContext {
        manifest_dir: file.parent().map(Path::to_path_buf).unwrap_or_default(),
        home: home_dir(),
    };
    let mut parsed = parse_str(&text, file, &ctx);
    for e in &mut parsed.errors {
        if e.line > 0 && e.field.is_none() {
            e.field = field_path(&text, e.line, e.column);
        }
    }
    // Read adopted unit files now so rendering stays pure.
    let mut keep = Vec::new();
    for mut m in std::mem::take(&mut parsed.manifests) {
        let (doc_line, field_at) = (m.line, m.field_at.clone());
        let problem = |(key, field, message): LoadProblem| {
            let (line, column) = field_at.get(key).copied().unwrap_or((doc_line, 1));
            ManifestError {
                file: file.to_path_buf(),
                line,
                column,
                message,
                field: Some(field),
            }
        };
        if let Err(p) = read_unit_file(&mut m) {
            parsed.errors.push(problem(p));
            continue;
        }
        let facts: Vec<ManifestError> = host_checks(&m).into_iter().map(problem).collect();
        match host {
            HostFacts::Warnings => parsed.warnings.extend(facts),
            HostFacts::Errors if !facts.is_empty() => {
                parsed.errors.extend(facts);
                continue;
            }
            HostFacts::Errors => {}
        }
        keep.push(m);
    }
    parsed.manifests = keep;
    parsed
}

/// Whether `file` may be read as a manifest: in the directory itself (a
/// symlink only to a file beside it), a regular file only its owner can
/// write, of a manifest's size. The error says why not.
fn check_manifest_file(file: &Path, canon_dir: &Path, in_dir: bool) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let lmeta = std::fs::symlink_metadata(file).map_err(|e| format!("cannot read: {e}"))?;
    if lmeta.file_type().is_symlink() && in_dir {
        let target =
            std::fs::canonicalize(file).map_err(|e| format!("is a dangling symlink: {e}"))?;
        if target.parent() != Some(canon_dir) {
            return Err(format!(
                "is a symlink to {}, outside the manifests directory; manifests must live in the directory itself (copy the file in instead)",
                target.display()
            ));
        }
    }
    let meta = std::fs::metadata(file).map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() {
        return Err(format!(
            "is {}, not a regular file",
            file_type_name(meta.file_type())
        ));
    }
    if let Err(me) = trusted_owner(meta.uid()) {
        return Err(format!(
            "is owned by uid {}, not by you (uid {me}) or root: that user could make it run commands as you; run `chown {me} {}` if it is yours",
            meta.uid(),
            file.display()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "is writable by other users (mode {:04o}): anyone could make it run commands as you; run `chmod go-w {}`",
            meta.mode() & 0o7777,
            file.display()
        ));
    }
    if meta.len() > MAX_FILE_SIZE {
        return Err(format!(
            "is {} bytes; manifests are limited to {MAX_FILE_SIZE} bytes — is this really a manifest?",
            meta.len(),
        ));
    }
    Ok(())
}

/// The manifest's text: UTF-8 without NUL bytes, at most
/// [`MAX_FILE_SIZE`] bytes.
fn read_manifest_text(file: &Path) -> Result<String, String> {
    let bytes = read_regular_capped(file, true, MAX_FILE_SIZE)?;
    let text = String::from_utf8(bytes).map_err(|e| {
        format!(
            "is not UTF-8 text (invalid byte at offset {}); is this a binary file?",
            e.utf8_error().valid_up_to()
        )
    })?;
    if text.contains('\0') {
        return Err("contains NUL bytes; is this a binary file?".into());
    }
    Ok(text)
}

/// Merge per-file results: detect duplicate names across (and within)
/// files, and record which names are held back because of errors.
pub(super) fn assemble(set: &mut LoadedSet, parsed: Vec<(PathBuf, ParsedFile)>) {
    let mut by_name: HashMap<String, Vec<Manifest>> = HashMap::new();
    for (file, p) in parsed {
        let whole_file_failed = p.manifests.is_empty() && !p.errors.is_empty();
        for e in &p.errors {
            // For a file that failed as a whole, or a document we could not
            // name, hold the name the file implies.
            if whole_file_failed || e.line == 0 {
                set.held
                    .entry(implied_name(&file))
                    .or_insert_with(|| e.clone());
            }
        }
        if whole_file_failed {
            set.broken_files.insert(file.clone());
        } else {
            for e in &p.errors {
                // A document that failed validation: hold the file's implied
                // name too, since we cannot trust the document's name.
                set.held
                    .entry(implied_name(&file))
                    .or_insert_with(|| e.clone());
            }
        }
        set.errors.extend(p.errors);
        set.warnings.extend(p.warnings);
        for m in p.manifests {
            by_name.entry(m.name.clone()).or_default().push(m);
        }
    }
    let mut names: Vec<_> = by_name.keys().cloned().collect();
    names.sort();
    for name in names {
        let mut ms = by_name.remove(&name).unwrap_or_default();
        if ms.len() == 1
            && let Some(m) = ms.pop()
        {
            if set.held.contains_key(&m.name)
                && set.broken_files.iter().all(|f| implied_name(f) != m.name)
            {
                // Held only because a sibling document in the same file was
                // invalid; a valid document of that name still applies.
                set.held.remove(&m.name);
            }
            set.manifests.push(m);
            continue;
        }
        let places: Vec<String> = ms
            .iter()
            .map(|m| format!("{}:{}", m.file.display(), m.line))
            .collect();
        for m in &ms {
            let e = ManifestError {
                file: m.file.clone(),
                line: m.line,
                column: 1,
                field: Some("metadata.name".into()),
                message: format!(
                    "metadata.name {name:?} is defined {} times ({}); names must be unique across all manifests and kinds — rename or remove one",
                    ms.len(),
                    places.join(", ")
                ),
            };
            set.errors.push(e.clone());
            set.held.entry(name.clone()).or_insert(e);
        }
    }
    hold_after_cycles(set);
    // Names of valid manifests are never also held, except for duplicates.
    let valid: BTreeSet<String> = set.manifests.iter().map(|m| m.name.clone()).collect();
    set.held.retain(|n, _| !valid.contains(n));
    for list in [&mut set.errors, &mut set.warnings] {
        list.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
        list.dedup();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsutil::test_support::{endless_files, mkfifo, within_10s};
    use crate::manifest::test_support::*;

    #[test]
    fn manifest_file_names() {
        assert!(is_manifest_file_name("a.yaml"));
        assert!(is_manifest_file_name("a.yml"));
        for n in [
            ".a.yaml",
            "a.yaml~",
            "#a.yaml#",
            "a.yaml.swp",
            "a.json",
            ".#a.yaml",
            "4913",
        ] {
            assert!(!is_manifest_file_name(n), "{n}");
        }
    }

    #[test]
    fn duplicates_across_files_are_errors_and_held() {
        let mut set = LoadedSet::default();
        let a = parse_str(
            "apiVersion: unitlet/v1\nkind: Service\nmetadata: {name: a}\nspec: {command: [a]}\n",
            Path::new("/m/1.yaml"),
            &ctx(),
        );
        let b = parse_str(
            "apiVersion: unitlet/v1\nkind: Service\nmetadata: {name: a}\nspec: {command: [b]}\n",
            Path::new("/m/2.yaml"),
            &ctx(),
        );
        assemble(
            &mut set,
            vec![
                (PathBuf::from("/m/1.yaml"), a),
                (PathBuf::from("/m/2.yaml"), b),
            ],
        );
        assert!(set.manifests.is_empty());
        assert_eq!(set.errors.len(), 2);
        assert!(set.errors[0].message.contains("defined 2 times"));
        assert!(set.held.contains_key("a"));
    }

    /// Issue 25: every manifest carries the SHA-256 of the bytes of the file
    /// it was parsed from, the same for every document of that file.
    #[test]
    fn manifests_carry_the_digest_of_their_files_bytes() {
        use sha2::{Digest, Sha256};
        let d = tempfile::tempdir().unwrap();
        let two = "# two documents\napiVersion: unitlet/v1\nkind: Service\nmetadata: {name: a}\nspec: {command: [a]}\n---\napiVersion: unitlet/v1\nkind: Service\nmetadata: {name: b}\nspec: {command: [b]}\n";
        let one = format!("{HEAD}  command: [c]\n");
        std::fs::write(d.path().join("two.yaml"), two).unwrap();
        std::fs::write(d.path().join("c.yaml"), &one).unwrap();
        let set = load_dir(d.path()).unwrap();
        let digest = |m: &str| set.get(m).unwrap().digest.clone();
        let two_sha = hex::encode(Sha256::digest(two.as_bytes()));
        assert_eq!(digest("a"), two_sha);
        assert_eq!(digest("b"), two_sha);
        assert_eq!(digest("web"), hex::encode(Sha256::digest(one.as_bytes())));
        assert_eq!(two_sha.len(), 64, "the whole SHA-256, lowercase hex");
    }

    /// Issue 20 item 8: another user's directory or manifest is refused.
    #[test]
    fn manifests_owned_by_another_user_are_refused() {
        use std::os::unix::fs::chown;
        let d = tempfile::tempdir().unwrap();
        let m = d.path().join("a.yaml");
        std::fs::write(&m, format!("{HEAD}  command: [a]\n")).unwrap();
        assert_eq!(load_dir(d.path()).unwrap().manifests.len(), 1);
        chown(d.path(), Some(65534), None).unwrap();
        let e = load_dir(d.path()).unwrap_err().to_string();
        assert!(
            e.contains("owned by uid 65534") && e.contains("chown"),
            "{e}"
        );
        chown(d.path(), Some(rustix::process::geteuid().as_raw()), None).unwrap();
        chown(&m, Some(65534), None).unwrap();
        let set = load_dir(d.path()).unwrap();
        assert!(set.manifests.is_empty());
        assert!(set.held.contains_key("a"), "its units are held");
        let e = &set.errors[0].message;
        assert!(
            e.contains("owned by uid 65534") && e.contains("chown"),
            "{e}"
        );
    }

    #[test]
    fn secret_files_must_be_private_regular_files() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("token");
        std::fs::write(&f, "s3cret").unwrap();
        for mode in [0o644, 0o640, 0o604, 0o620, 0o602] {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = check_secret_file(&f).unwrap_err();
            assert!(
                e.contains(&format!("mode {mode:04o}")) && e.contains(&*f.to_string_lossy()),
                "{e}"
            );
            assert!(!e.contains("s3cret"));
        }
        for mode in [0o600, 0o400] {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
            check_secret_file(&f).unwrap();
        }
        assert!(
            check_secret_file(d.path())
                .unwrap_err()
                .contains("directory")
        );
        assert!(
            check_secret_file(&d.path().join("missing"))
                .unwrap_err()
                .contains("does not exist")
        );
        // Checked when the manifest loads: a Backup's token file and a
        // Service's environment file and credentials.
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let t = f.display();
        for (i, y) in [
            format!("apiVersion: unitlet/v1\nkind: Backup\nmetadata: {{name: b}}\nspec: {{schedule: every 1h, grafana: {{url: 'http://h', tokenFile: {t}}}}}\n"),
            format!("apiVersion: unitlet/v1\nkind: Backup\nmetadata: {{name: b}}\nspec: {{schedule: every 1h, grafana: {{url: 'http://h', basicAuth: {{username: u, passwordFile: {t}}}}}}}\n"),
            format!("{HEAD}  command: [a]\n  environmentFile: {t}\n"),
            format!("{HEAD}  command: [a]\n  credentials: {{pw: {t}}}\n"),
        ]
        .iter()
        .enumerate()
        {
            let m = d.path().join(format!("m{i}.yaml"));
            std::fs::write(&m, y).unwrap();
            let set = load_files(std::slice::from_ref(&m));
            assert!(set.manifests.is_empty(), "{y}");
            assert!(set.errors[0].message.contains("mode 0644"), "{}", set.errors[0]);
            assert!(set.errors[0].line > 1, "points at the field: {}", set.errors[0]);
        }
    }

    /// Issue 23: a missing secret file is a fact about this machine:
    /// `validate` (load_paths) warns and counts the manifest valid; the
    /// operator (load_dir) refuses it. A manifest error stays an error.
    #[test]
    fn secret_files_are_warnings_for_validate_and_errors_for_the_operator() {
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("secrets/web.env");
        std::fs::write(
            d.path().join("web.yaml"),
            format!(
                "{HEAD}  command: [a]\n  environmentFile: {}\n",
                missing.display()
            ),
        )
        .unwrap();
        let applied = load_dir(d.path()).unwrap();
        assert!(applied.manifests.is_empty() && applied.warnings.is_empty());
        assert!(
            applied.errors[0].message.contains("does not exist"),
            "{:?}",
            applied.errors
        );
        let checked = load_paths(&[d.path().to_path_buf()]).unwrap();
        assert_eq!(checked.manifests.len(), 1, "{:?}", checked.errors);
        assert!(checked.errors.is_empty(), "{:?}", checked.errors);
        let w = &checked.warnings[0];
        assert_eq!((w.line, w.column), (7, 20), "{w}");
        assert_eq!(w.field.as_deref(), Some("spec.environmentFile"));
        assert!(w.message.contains("does not exist"), "{w}");
        std::fs::write(d.path().join("bad.yaml"), format!("{HEAD}  comand: [a]\n")).unwrap();
        let checked = load_paths(&[d.path().join("bad.yaml"), d.path().to_path_buf()]).unwrap();
        assert_eq!(
            checked.files.len(),
            2,
            "bad.yaml is read once: {:?}",
            checked.files
        );
        assert_eq!(checked.errors.len(), 1, "{:?}", checked.errors);
        assert_eq!(checked.errors[0].field.as_deref(), Some("spec.comand"));
        let e = load_paths(&[d.path().join("nope.yaml")]).unwrap_err();
        assert!(matches!(e, LoadError::NoSuchPath { .. }), "{e}");
    }

    #[test]
    fn unit_files_and_manifests_must_be_regular_files() {
        let d = tempfile::tempdir().unwrap();
        endless_files(d.path(), "service");
        std::fs::create_dir(d.path().join("dir.service")).unwrap();
        let big = d.path().join("big.service");
        std::fs::write(&big, vec![b'#'; MAX_UNIT_FILE_SIZE as usize + 1]).unwrap();
        for (unit, want) in [
            ("fifo.service", "FIFO"),
            ("zero.service", "character device"),
            ("dir.service", "directory"),
            ("big.service", "limit is"),
        ] {
            let m = d.path().join("m.yaml");
            std::fs::write(&m, format!("{HEAD}  unitFile: {unit}\n")).unwrap();
            let files = vec![m.clone()];
            let what = format!("loading a manifest adopting {unit}");
            let set = within_10s(&what, move || load_files(&files));
            assert!(set.manifests.is_empty(), "{unit}");
            let e = &set.errors[0];
            assert!(e.message.contains(want) && e.message.contains(unit), "{e}");
            assert_eq!((e.line, e.column), (6, 13), "points at spec.unitFile: {e}");
        }
        // A unit file systemd would not read as written is refused, with
        // its line (issue 20 item 11).
        let bad = d.path().join("bad.service");
        std::fs::write(&bad, "[Service]\nExecStart=/bin/x\n  --flag\n").unwrap();
        let m = d.path().join("m.yaml");
        std::fs::write(&m, format!("{HEAD}  unitFile: bad.service\n")).unwrap();
        let set = load_files(std::slice::from_ref(&m));
        let e = &set.errors[0];
        assert!(
            e.message.contains("bad.service line 3") && e.message.contains("not Key=Value"),
            "{e}"
        );
        // A manifest that is a FIFO (behind a symlink, too) is refused
        // without blocking.
        let mfifo = d.path().join("fifo.yaml");
        mkfifo(&mfifo);
        let set = load_files(std::slice::from_ref(&mfifo));
        assert!(set.errors[0].message.contains("FIFO"), "{}", set.errors[0]);
    }
}
