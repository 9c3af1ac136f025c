//! Directory loading (I/O): listing and reading manifest files, regular-file
//! reads, owner and permission checks.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use super::model::*;
use super::parse::*;
use super::validate::*;

// ---------------------------------------------------------------------------
// Directory loading (I/O).

/// Everything found in the manifests directory.
#[derive(Debug, Default)]
pub struct LoadedSet {
    /// Valid manifests, unique by name.
    pub manifests: Vec<Manifest>,
    /// Problems, per file. A file with an error in any document may still
    /// have contributed other valid documents.
    pub errors: Vec<ManifestError>,
    /// Names that appear in some file but are not applied because of an
    /// error: the file's implied name for unparsable files, or the names of
    /// documents that failed validation or collided. Units of these names
    /// are held as they are (never garbage-collected).
    pub held: BTreeMap<String, ManifestError>,
    /// Files that failed to parse as a whole.
    pub broken_files: BTreeSet<PathBuf>,
    /// Files that were considered (valid or not).
    pub files: Vec<PathBuf>,
}

impl LoadedSet {
    /// The valid manifest named `name`.
    pub fn get(&self, name: &str) -> Option<&Manifest> {
        self.manifests.iter().find(|m| m.name == name)
    }
}

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

/// Load every manifest file directly in `dir`.
///
/// # Errors
/// Only for the directory itself (missing, unreadable, writable by others).
/// Problems with individual files are reported in [`LoadedSet::errors`] and
/// never stop the other files from loading.
pub fn load_dir(dir: &Path) -> Result<LoadedSet, LoadError> {
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
    let mut set = LoadedSet::default();
    let mut parsed = Vec::new();
    for f in &files {
        // Removed between the listing and now: it is gone, not broken (an
        // error here would hold its units until the next change).
        if let Err(e) = std::fs::symlink_metadata(f)
            && e.kind() == std::io::ErrorKind::NotFound
        {
            continue;
        }
        parsed.push((f.clone(), read_manifest_file(f, &canon_dir, true)));
    }
    set.files = parsed.iter().map(|(f, _)| f.clone()).collect();
    assemble(&mut set, parsed);
    Ok(set)
}

/// Load explicit files (for `validate FILE...`). Each file is checked as if
/// it were in its own directory.
pub fn load_files(files: &[PathBuf]) -> LoadedSet {
    let mut set = LoadedSet::default();
    let mut parsed = Vec::new();
    for f in files {
        let dir = f
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                }
            })
            .unwrap_or(Path::new("."));
        let canon_dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        parsed.push((f.clone(), read_manifest_file(f, &canon_dir, false)));
    }
    set.files = files.to_vec();
    assemble(&mut set, parsed);
    set
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

/// Load-time checks of a valid manifest that need the filesystem: read the
/// adopted unit file (bounded, regular files only) and check secret files.
fn load_time_checks(m: &mut Manifest) -> Result<(), (&'static str, String)> {
    match &mut m.spec {
        Spec::Service(s) => {
            if let Exec::UnitFile { path, content } = &mut s.exec {
                let bytes = read_regular_capped(path, true, MAX_UNIT_FILE_SIZE)
                    .map_err(|e| ("unitFile", format!("spec.unitFile {} {e}", path.display())))?;
                let c = String::from_utf8(bytes).map_err(|_| {
                    (
                        "unitFile",
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
                        format!("spec.unitFile {} {e}; fix the unit file", path.display()),
                    )
                })?;
                *content = c;
            }
            if let Some(f) = &s.environment_file {
                check_secret_file(f)
                    .map_err(|e| ("environmentFile", format!("spec.environmentFile: {e}")))?;
            }
            for (name, f) in &s.credentials {
                check_secret_file(f)
                    .map_err(|e| ("credentials", format!("spec.credentials.{name}: {e}")))?;
            }
        }
        Spec::Backup(b) => {
            if let BackupSource::Grafana { auth, .. } = &b.source {
                // Missing files are reported when a backup runs (the token
                // may be created after the manifest); a present file must
                // be private already.
                let (field, f) = match auth {
                    GrafanaAuthSpec::TokenFile(f) => ("grafana.tokenFile", f),
                    GrafanaAuthSpec::Basic { password_file, .. } => {
                        ("grafana.basicAuth.passwordFile", password_file)
                    }
                };
                if f.exists() {
                    check_secret_file(f).map_err(|e| (field, format!("spec.{field}: {e}")))?;
                }
            }
        }
    }
    Ok(())
}

fn file_error(file: &Path, message: impl Into<String>) -> ParsedFile {
    ParsedFile {
        manifests: vec![],
        errors: vec![ManifestError {
            file: file.to_path_buf(),
            line: 0,
            column: 0,
            message: message.into(),
        }],
    }
}

fn read_manifest_file(file: &Path, canon_dir: &Path, in_dir: bool) -> ParsedFile {
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
    // Read adopted unit files now so rendering stays pure.
    let mut keep = Vec::new();
    for mut m in std::mem::take(&mut parsed.manifests) {
        match load_time_checks(&mut m) {
            Ok(()) => keep.push(m),
            Err((field, message)) => {
                let (line, column) = m.field_at.get(field).copied().unwrap_or((m.line, 1));
                parsed.errors.push(ManifestError {
                    file: file.to_path_buf(),
                    line,
                    column,
                    message,
                })
            }
        }
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
    set.errors
        .sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    set.errors.dedup();
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
