//! The block store of a destination: one copy of each immutable block
//! (a Prometheus TSDB block, named by its ULID), shared by every set that
//! holds it through hard links.
//!
//! Layout: `DESTINATION/blocks/KEY/` holds the block's files as they were
//! stored plus `block.json` (their sizes and sha256, computed once, when the
//! block was stored). `KEY` is `NAME-FINGERPRINT`: the block's name plus a
//! hash of its file list, sizes and small metadata files (`meta.json`,
//! `tombstones`), so a block whose tombstones changed is stored again rather
//! than confused with the old copy. A set links the block's files into its
//! own directory (`ID/snapshot/ULID/…`), so each set stays a complete
//! directory that `cp -a` or `promtool tsdb list` reads on its own.
//!
//! Crash safety, in order:
//! - a new block is written under `blocks/.incoming-KEY/` (files linked or
//!   copied, fsynced, then `block.json` atomically), then renamed to
//!   `blocks/KEY` and the directory fsynced: `blocks/KEY` exists only
//!   complete. A `.incoming-*` left by a killed run is removed by the next
//!   run (under the lock).
//! - a set refers to a block by hard links only; nothing counts references,
//!   so nothing can get out of step with the links. A block is referenced
//!   when one of its files is the same inode as a file in any set directory
//!   of the destination (complete or not, any Backup).
//! - [`BlockStore::sweep`] (run by prune) frees unreferenced blocks by
//!   renaming them to `blocks/.deleting-KEY`, fsyncing, and removing; the
//!   next run finishes a removal a crash interrupted. A block stored by a
//!   run killed before its set was linked is unreferenced and freed by the
//!   next prune.
//! - `blocks/.lock` is `flock`ed exclusively while blocks are stored and
//!   linked into a set, and while sweeping, so a sweep never frees a block
//!   a run is about to link.

use std::collections::HashSet;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{
    BackupError, DELETING_PREFIX, FileEntry, MAX_MANIFEST_BYTES, Result, SetId, hash_reader,
    is_safe_rel_path, read_capped, write_atomic,
};
use crate::fsutil::sync_dir;

/// The directory of the block store inside a destination.
pub const BLOCKS_DIR: &str = "blocks";

/// A stored block's own manifest, written last.
const BLOCK_MANIFEST: &str = "block.json";

/// Prefix of a block being written.
const INCOMING_PREFIX: &str = ".incoming-";

/// Held while storing, linking and sweeping.
const LOCK_FILE: &str = ".lock";

/// Files up to this size are part of a block's fingerprint by content.
const FINGERPRINT_FILES: [&str; 2] = ["meta.json", "tombstones"];

/// The content of `block.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlockManifest {
    format_version: u32,
    /// The block's name (its ULID).
    name: String,
    /// Relative to the block directory.
    files: Vec<FileEntry>,
}

/// A block in the store, ready to be linked into a set.
#[derive(Debug, Clone)]
pub struct StoredBlock {
    /// The block's name (its ULID).
    pub name: String,
    /// Its directory name in the store.
    pub key: String,
    /// Its files, relative to the block directory, with the hashes taken
    /// when it was stored.
    pub files: Vec<FileEntry>,
    /// Stored by this run (`false`: it was already there, nothing was
    /// copied or hashed).
    pub new: bool,
}

impl StoredBlock {
    /// Total bytes of its files.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// The block store of one destination, locked while it lives.
#[derive(Debug)]
pub struct BlockStore {
    root: PathBuf,
    dir: PathBuf,
    _lock: File,
}

/// Test hook (debug builds only, like the journal's): with
/// `UNITLET_TEST_CRASH_AT=STEP` the process kills itself with SIGKILL at
/// that step of a backup or prune, the same as a `kill -9` there.
#[cfg(debug_assertions)]
pub(crate) fn crash_point(step: &str) {
    if std::env::var("UNITLET_TEST_CRASH_AT").is_ok_and(|s| s == step) {
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    }
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub(crate) fn crash_point(_step: &str) {}

impl BlockStore {
    /// Opens (creating) `root/blocks`, waits for its lock, and removes
    /// what killed runs left there.
    pub(super) fn open(root: &Path) -> Result<BlockStore> {
        let dir = root.join(BLOCKS_DIR);
        let err = |path: &Path, source| BackupError::Destination {
            path: path.to_path_buf(),
            source,
        };
        match fs::symlink_metadata(&dir) {
            Ok(m) if !m.is_dir() => {
                return Err(BackupError::UnsafeDestination {
                    path: dir,
                    reason: "it is not a directory (the block store must be one); move it away"
                        .to_owned(),
                });
            }
            Ok(_) => {}
            Err(_) => {
                DirBuilder::new()
                    .mode(0o700)
                    .create(&dir)
                    .or_else(|e| {
                        if e.kind() == io::ErrorKind::AlreadyExists {
                            Ok(())
                        } else {
                            Err(e)
                        }
                    })
                    .and_then(|()| sync_dir(root))
                    .map_err(|e| err(&dir, e))?;
            }
        }
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(crate::fsutil::open_flags(rustix::fs::OFlags::NOFOLLOW))
            .open(dir.join(LOCK_FILE))
            .map_err(|e| err(&dir, e))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| err(&dir, e.into()))?;
        let store = BlockStore {
            root: root.to_path_buf(),
            dir,
            _lock: lock,
        };
        store.remove_leftovers();
        Ok(store)
    }

    /// The store directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Removes `.incoming-*` and `.deleting-*` left by killed runs (we
    /// hold the lock, so no live run is writing them). Best effort.
    fn remove_leftovers(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            if is_dir
                && (name.starts_with(INCOMING_PREFIX) || name.starts_with(DELETING_PREFIX))
                && let Err(err) = fs::remove_dir_all(e.path())
            {
                tracing::warn!(path = %e.path().display(), error = %err, "cannot remove the leftover of an interrupted backup or prune");
            }
        }
    }

    /// Stores the block directory `src` named `name` unless the same block
    /// (same key) is stored already, in which case nothing is read or
    /// hashed but its small metadata files.
    ///
    /// On the destination's filesystem files are hard-linked from `src`
    /// (as Prometheus' snapshot links them from its data), elsewhere copied.
    ///
    /// # Errors
    /// [`BackupError::InvalidPath`] for a name that is not one path
    /// component; [`BackupError::Read`] / [`BackupError::Write`] on I/O.
    pub fn store(&self, name: &str, src: &Path) -> Result<StoredBlock> {
        if !is_safe_rel_path(name) || name.contains('/') || name.starts_with('.') {
            return Err(BackupError::InvalidPath {
                id: BLOCKS_DIR.to_owned(),
                path: name.to_owned(),
            });
        }
        let files = list_block_files(src).map_err(|source| BackupError::Read {
            path: src.to_path_buf(),
            source,
        })?;
        let key = format!("{name}-{}", fingerprint(src, &files)?);
        let dir = self.dir.join(&key);
        if let Some(m) = self.read_manifest(&key) {
            return Ok(StoredBlock {
                name: name.to_owned(),
                key,
                files: m.files,
                new: false,
            });
        }
        if dir.exists() {
            // No readable block.json: not ours or damaged; set it aside.
            self.remove(&key)?;
        }
        let incoming = self.dir.join(format!("{INCOMING_PREFIX}{key}"));
        let result = self.write_block(name, src, &files, &incoming);
        let entries = match result {
            Ok(entries) => entries,
            Err(e) => {
                let _ = fs::remove_dir_all(&incoming);
                return Err(e);
            }
        };
        crash_point("block-written");
        let write_err = |source| BackupError::Write {
            id: BLOCKS_DIR.to_owned(),
            path: dir.clone(),
            source,
        };
        fs::rename(&incoming, &dir).map_err(write_err)?;
        sync_dir(&self.dir).map_err(write_err)?;
        crash_point("block-stored");
        tracing::info!(block = %key, "stored a new block");
        Ok(StoredBlock {
            name: name.to_owned(),
            key,
            files: entries,
            new: true,
        })
    }

    /// Links or copies `files` of `src` into `incoming`, hashing each
    /// once, fsyncs them, and writes `block.json`.
    fn write_block(
        &self,
        name: &str,
        src: &Path,
        files: &[(String, u64)],
        incoming: &Path,
    ) -> Result<Vec<FileEntry>> {
        if incoming.exists() {
            let _ = fs::remove_dir_all(incoming);
        }
        let write_err = |path: &Path, source| BackupError::Write {
            id: BLOCKS_DIR.to_owned(),
            path: path.to_path_buf(),
            source,
        };
        DirBuilder::new()
            .mode(0o700)
            .create(incoming)
            .map_err(|e| write_err(incoming, e))?;
        let mut entries = Vec::with_capacity(files.len());
        for (rel, _) in files {
            let from = src.join(rel);
            let to = incoming.join(rel);
            if let Some(parent) = to.parent() {
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(parent)
                    .map_err(|e| write_err(parent, e))?;
            }
            let (size, sha256) = link_or_copy(&from, &to).map_err(|e| write_err(&to, e))?;
            entries.push(FileEntry {
                path: rel.clone(),
                size,
                sha256,
            });
        }
        crate::fsutil::sync_tree(incoming).map_err(|e| write_err(incoming, e))?;
        let manifest = BlockManifest {
            format_version: 1,
            name: name.to_owned(),
            files: entries.clone(),
        };
        let bytes =
            serde_json::to_vec_pretty(&manifest).map_err(|e| write_err(incoming, e.into()))?;
        write_atomic(incoming, BLOCK_MANIFEST, &bytes)
            .and_then(|()| sync_dir(incoming))
            .map_err(|e| write_err(&incoming.join(BLOCK_MANIFEST), e))?;
        Ok(entries)
    }

    /// `block.json` of a stored block, if it is there and readable.
    fn read_manifest(&self, key: &str) -> Option<BlockManifest> {
        let dir = self.dir.join(key);
        let bytes = read_capped(&dir, BLOCK_MANIFEST, MAX_MANIFEST_BYTES)
            .ok()
            .flatten()?;
        let m: BlockManifest = serde_json::from_slice(&bytes).ok()?;
        m.files
            .iter()
            .all(|f| is_safe_rel_path(&f.path) && f.path != BLOCK_MANIFEST)
            .then_some(m)
    }

    /// The path of a stored block's file.
    pub fn file_path(&self, block: &StoredBlock, rel: &str) -> PathBuf {
        self.dir.join(&block.key).join(rel)
    }

    /// Frees every stored block that no set directory in the destination
    /// links to; returns their keys.
    ///
    /// # Errors
    /// [`BackupError::Read`] if the destination cannot be listed (nothing
    /// is freed then), [`BackupError::Delete`] if a block cannot be removed.
    pub fn sweep(&self) -> Result<Vec<String>> {
        let referenced = self.set_inodes()?;
        let read_err = |source| BackupError::Read {
            path: self.dir.clone(),
            source,
        };
        let mut freed = Vec::new();
        let mut keys: Vec<String> = fs::read_dir(&self.dir)
            .map_err(read_err)?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        keys.sort();
        for key in keys {
            let used = walkdir::WalkDir::new(self.dir.join(&key))
                .min_depth(1)
                .into_iter()
                .filter_map(|e| e.ok())
                .filter(|e| e.file_type().is_file() && e.file_name() != BLOCK_MANIFEST)
                .filter_map(|e| e.metadata().ok())
                .any(|m| referenced.contains(&(m.dev(), m.ino())));
            if !used {
                self.remove(&key)?;
                tracing::info!(block = %key, "freed a block no set refers to");
                freed.push(key);
            }
        }
        Ok(freed)
    }

    /// Renames a block aside, fsyncs, removes it.
    fn remove(&self, key: &str) -> Result<()> {
        let path = self.dir.join(key);
        let aside = self.dir.join(format!("{DELETING_PREFIX}{key}"));
        let err = |source| BackupError::Delete {
            path: path.clone(),
            source,
        };
        fs::rename(&path, &aside).map_err(err)?;
        sync_dir(&self.dir).map_err(err)?;
        crash_point("block-freeing");
        fs::remove_dir_all(&aside).map_err(err)
    }

    /// `(dev, inode)` of every regular file in every set directory of the
    /// destination (any Backup, complete or not).
    fn set_inodes(&self) -> Result<HashSet<(u64, u64)>> {
        let read_err = |path: &Path, source: io::Error| BackupError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mut inodes = HashSet::new();
        for entry in fs::read_dir(&self.root).map_err(|e| read_err(&self.root, e))? {
            let entry = entry.map_err(|e| read_err(&self.root, e))?;
            let is_set = entry.file_type().is_ok_and(|t| t.is_dir())
                && entry
                    .file_name()
                    .to_str()
                    .is_some_and(|n| n.parse::<SetId>().is_ok());
            if !is_set {
                continue;
            }
            for e in walkdir::WalkDir::new(entry.path()).min_depth(1) {
                let e = e.map_err(|e| read_err(&entry.path(), e.into()))?;
                if e.file_type().is_file() {
                    let m = e.metadata().map_err(|err| read_err(e.path(), err.into()))?;
                    inodes.insert((m.dev(), m.ino()));
                }
            }
        }
        Ok(inodes)
    }
}

/// Regular files below a block directory, relative, sorted, with sizes.
fn list_block_files(dir: &Path) -> io::Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(dir).min_depth(1).sort_by_file_name() {
        let e = e?;
        if e.file_type().is_file() {
            let rel = e.path().strip_prefix(dir).unwrap_or(e.path());
            let rel = rel.to_string_lossy().into_owned();
            if rel == BLOCK_MANIFEST {
                continue;
            }
            out.push((rel, e.metadata()?.len()));
        } else if !e.file_type().is_dir() {
            tracing::warn!(path = %e.path().display(), "not a regular file; not backed up");
        }
    }
    Ok(out)
}

/// Hash of the file list with sizes and of the content of the small
/// metadata files: what tells two copies of a block with the same name
/// apart.
fn fingerprint(src: &Path, files: &[(String, u64)]) -> Result<String> {
    let mut h = Sha256::new();
    for (rel, size) in files {
        h.update(rel.as_bytes());
        h.update([0]);
        h.update(size.to_le_bytes());
        if FINGERPRINT_FILES.contains(&rel.as_str()) {
            let path = src.join(rel);
            let file = File::open(&path).map_err(|source| BackupError::Read {
                path: path.clone(),
                source,
            })?;
            let (_, sha) =
                hash_reader(file).map_err(|source| BackupError::Read { path, source })?;
            h.update(sha.as_bytes());
        }
    }
    Ok(hex::encode(&h.finalize()[..8]))
}

/// Hard-links `from` to `to` (same filesystem) and hashes it, or copies
/// it (another filesystem) hashing while copying and fsyncing the copy.
fn link_or_copy(from: &Path, to: &Path) -> io::Result<(u64, String)> {
    match fs::hard_link(from, to) {
        Ok(()) => {
            let file = File::open(to)?;
            let r = hash_reader(&file)?;
            file.sync_all()?;
            return Ok(r);
        }
        Err(e)
            if matches!(
                rustix::io::Errno::from_io_error(&e),
                Some(rustix::io::Errno::XDEV | rustix::io::Errno::PERM)
            ) => {}
        Err(e) => return Err(e),
    }
    let mut hasher = Sha256::new();
    let size = crate::fsutil::copy_file_with(from, to, |c| hasher.update(c))?;
    Ok((size, hex::encode(hasher.finalize())))
}

#[cfg(test)]
mod tests {
    use super::super::{SetStatus, Store};
    use super::*;

    fn block(dir: &Path, name: &str, index: &[u8]) -> PathBuf {
        let b = dir.join(name);
        fs::create_dir_all(b.join("chunks")).unwrap();
        fs::write(b.join("meta.json"), format!("{{\"ulid\":\"{name}\"}}")).unwrap();
        fs::write(b.join("index"), index).unwrap();
        fs::write(b.join("chunks/000001"), b"chunk data").unwrap();
        fs::write(b.join("tombstones"), b"t0").unwrap();
        b
    }

    /// Replaces a file the way Prometheus does (new file, rename): the
    /// stored hard link keeps the old content.
    fn replace(path: &Path, bytes: &[u8]) {
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, bytes).unwrap();
        fs::rename(&tmp, path).unwrap();
    }

    fn setup() -> (tempfile::TempDir, Store, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("dest");
        let store = Store::open(&dest, "tsdb", "prometheus").unwrap();
        let src = d.path().join("snap");
        fs::create_dir_all(&src).unwrap();
        (d, store, src)
    }

    /// A complete set linking `blocks` from the store.
    fn set_of(store: &Store, blocks: &[&StoredBlock]) -> String {
        let bs = store.blocks().unwrap();
        let mut w = store.begin("http://p").unwrap();
        for b in blocks {
            w.link_block(&bs, "snapshot", b).unwrap();
        }
        w.finish().unwrap().id
    }

    #[test]
    fn a_stored_block_is_linked_not_copied_or_hashed_again() {
        let (_d, store, src) = setup();
        let a = block(&src, "01A", b"index-a");
        let first = store.blocks().unwrap().store("01A", &a).unwrap();
        assert!(first.new);
        // Same name, list, sizes, meta.json and tombstones: the stored copy
        // is used without reading the rest (a changed index of the same
        // size is not even noticed — blocks are immutable).
        replace(&a.join("index"), b"index-b");
        let again = store.blocks().unwrap().store("01A", &a).unwrap();
        assert!(!again.new);
        assert_eq!(again.key, first.key);
        assert_eq!(again.files, first.files);
        // Changed tombstones: a different copy.
        replace(&a.join("tombstones"), b"t1");
        let third = store.blocks().unwrap().store("01A", &a).unwrap();
        assert!(third.new);
        assert_ne!(third.key, first.key);

        let id = set_of(&store, &[&first]);
        let set = store.verify(&id).unwrap();
        assert!(
            set.files()
                .iter()
                .any(|f| f.path == "snapshot/01A/chunks/000001")
        );
        let info = store.list().unwrap().pop().unwrap();
        assert_eq!(info.status, SetStatus::Complete);
        assert_eq!(info.new_blocks, Some(1));
        assert_eq!(info.shared, Some(0));
        let id2 = set_of(&store, &[&again]);
        let info2 = store
            .list()
            .unwrap()
            .into_iter()
            .find(|s| s.id == id2)
            .unwrap();
        assert_eq!((info2.new_blocks, info2.written), (Some(0), Some(0)));
        assert_eq!(info2.shared, Some(info2.size));
        use std::os::unix::fs::MetadataExt;
        let ino = |id: &str| {
            fs::metadata(store.path().join(id).join("snapshot/01A/index"))
                .unwrap()
                .ino()
        };
        assert_eq!(ino(&id), ino(&id2), "the two sets share the stored file");
    }

    #[test]
    fn a_killed_store_leaves_nothing_the_next_open_does_not_remove() {
        let (_d, store, _src) = setup();
        let bs = store.blocks().unwrap();
        let incoming = bs.path().join(".incoming-01A-x");
        let deleting = bs.path().join(".deleting-01B-x");
        fs::create_dir_all(incoming.join("chunks")).unwrap();
        fs::create_dir_all(&deleting).unwrap();
        drop(bs);
        let bs = store.blocks().unwrap();
        assert!(!incoming.exists() && !deleting.exists());
        assert!(store_keys(&bs).is_empty());
    }

    #[test]
    fn a_block_dir_without_block_json_is_not_trusted_and_stored_again() {
        let (_d, store, src) = setup();
        let a = block(&src, "01A", b"index");
        let bs = store.blocks().unwrap();
        let stored = bs.store("01A", &a).unwrap();
        fs::remove_file(bs.path().join(&stored.key).join(BLOCK_MANIFEST)).unwrap();
        let again = bs.store("01A", &a).unwrap();
        assert!(again.new);
        assert!(bs.path().join(&again.key).join(BLOCK_MANIFEST).is_file());
    }

    fn store_keys(bs: &BlockStore) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(bs.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != LOCK_FILE)
            .collect();
        v.sort();
        v
    }

    #[test]
    fn prune_frees_only_blocks_no_remaining_set_links() {
        let (_d, store, src) = setup();
        let bs = store.blocks().unwrap();
        let a = bs.store("01A", &block(&src, "01A", b"a")).unwrap();
        let b = bs.store("01B", &block(&src, "01B", b"b")).unwrap();
        let c = bs.store("01C", &block(&src, "01C", b"c")).unwrap();
        // Stored by a run killed before it linked it into its set.
        let orphan = bs.store("01D", &block(&src, "01D", b"d")).unwrap();
        drop(bs);
        let _s1 = set_of(&store, &[&a, &b]);
        let s2 = set_of(&store, &[&a, &c]);
        // An incomplete set (a run still writing) links b too.
        let bs = store.blocks().unwrap();
        let mut running = store.begin("http://p").unwrap();
        running.link_block(&bs, "snapshot", &b).unwrap();
        drop(bs);
        let deleted = store.prune(1, &s2).unwrap();
        assert_eq!(deleted.len(), 1);
        let bs = store.blocks().unwrap();
        let keys = store_keys(&bs);
        assert_eq!(keys, vec![a.key.clone(), b.key.clone(), c.key.clone()]);
        assert!(!keys.contains(&orphan.key));
        drop(bs);
        drop(running); // a failed run removes its set
        store.prune(1, &s2).unwrap();
        let bs = store.blocks().unwrap();
        assert_eq!(store_keys(&bs), vec![a.key.clone(), c.key.clone()]);
        store.verify(&s2).unwrap();
    }
}
