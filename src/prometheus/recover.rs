//! Recovery of an interrupted Prometheus restore: the process that reads
//! a restore journal ([`crate::journal`], the store) left by a restore that
//! died, and finishes it (when the restored data was verified) or undoes
//! it, stopping Prometheus through the [`UserManager`] trait when its data
//! directory must move.
//!
//! Architecture Invariant: recovery never deletes data. It only renames
//! (the original data back into place; restored data aside as
//! `DATADIR.failed-STAMP`) and removes the staging copy of a backup set,
//! which the set itself still holds — and only at paths a restore of that
//! service creates (its Backup's data directory and siblings named
//! `DATADIR.restoring-STAMP` / `DATADIR.replaced-STAMP`), whatever the
//! journal says; anything else leaves the journal stuck.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::swap;
use crate::fsutil;
use crate::journal::{self, Owner, Record, RestoreLock, Step};
use crate::locations::Locations;
use crate::manager::{JobKind, UserManager};

/// Deadline of the stop job a rollback may need.
const STOP_TIMEOUT: Duration = Duration::from_secs(90);

/// What recovery decided from the journal and the directories on disk;
/// pure, see [`recovery_plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryPlan {
    /// The restore got through verification: keep the restored data.
    Complete {
        /// The staging copy still exists (it should not): remove it.
        remove_staging: bool,
    },
    /// Undo the restore.
    RollBack {
        /// The data directory holds the restored data: stop the service
        /// and move it aside as `DATADIR.failed-STAMP`.
        restored_in_place: bool,
        /// Rename `replaced` back to the data directory.
        put_back: bool,
        /// Remove the staging copy (a copy of the set, which keeps its own).
        remove_staging: bool,
    },
    /// The directories match no point of the procedure; touch nothing.
    Stuck(String),
}

/// What exists on disk, as recovery sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnDisk {
    /// The data directory.
    pub data_dir: bool,
    /// The `replaced` sibling (false when the record has none).
    pub replaced: bool,
    /// The staging copy.
    pub staging: bool,
}

impl OnDisk {
    fn observe(r: &Record) -> OnDisk {
        let exists = |p: &Path| fs::symlink_metadata(p).is_ok();
        OnDisk {
            data_dir: exists(&r.data_dir),
            replaced: r.replaced.as_deref().is_some_and(exists),
            staging: exists(&r.staging),
        }
    }
}

/// Decides how to recover an interrupted restore; pure.
///
/// Renames are atomic, so which of the data directory, `replaced` and the
/// staging copy exist says exactly how far the swap got: `replaced`
/// exists only once the old data was moved there, and from then on the
/// data directory, if it exists, is the restored copy.
pub fn recovery_plan(r: &Record, d: OnDisk) -> RecoveryPlan {
    if r.step == Step::Done {
        return if d.data_dir {
            RecoveryPlan::Complete {
                remove_staging: d.staging,
            }
        } else {
            RecoveryPlan::Stuck(format!(
                "the restore was verified but {} no longer exists",
                r.data_dir.display()
            ))
        };
    }
    match &r.replaced {
        Some(replaced) if d.replaced => RecoveryPlan::RollBack {
            restored_in_place: d.data_dir,
            put_back: true,
            remove_staging: d.staging,
        },
        Some(replaced) if !d.data_dir && r.step > Step::MoveAside => RecoveryPlan::Stuck(format!(
            "neither {} nor the data it replaced at {} exists",
            r.data_dir.display(),
            replaced.display()
        )),
        // The old data was never moved (or was already put back): the
        // data directory, if any, is the original.
        Some(_) => RecoveryPlan::RollBack {
            restored_in_place: false,
            put_back: false,
            remove_staging: d.staging,
        },
        // There was no data directory: one that exists now can only be
        // the restored copy, once the swap began.
        None => RecoveryPlan::RollBack {
            restored_in_place: d.data_dir && r.step >= Step::Install,
            put_back: false,
            remove_staging: d.staging,
        },
    }
}

/// What recovering one interrupted restore did.
#[derive(Debug, Clone)]
pub struct RecoveryOutcome {
    /// The held Service.
    pub service: String,
    /// The journal file (removed unless recovery failed).
    pub journal: PathBuf,
    /// The journal, if it could be read.
    pub record: Option<Record>,
    /// What was done, or why nothing could be (the journal is then kept
    /// and the service stays held).
    pub result: Result<Recovered, String>,
}

/// How an interrupted restore ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovered {
    /// The restored data stays; `replaced` holds what it replaced.
    Completed {
        /// Where the replaced data is.
        replaced: Option<PathBuf>,
    },
    /// The original data is back in place.
    RolledBack {
        /// Each thing done, for people.
        notes: Vec<String>,
    },
}

impl fmt::Display for RecoveryOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match &self.record {
            Some(r) => format!(
                "the restore of Backup {} set {} into {} (PID {}, started {}), interrupted {},",
                r.backup,
                r.set_id,
                r.data_dir.display(),
                r.pid,
                r.started,
                r.step.describe()
            ),
            None => format!("an interrupted restore of {}", self.service),
        };
        match &self.result {
            Ok(Recovered::Completed { replaced }) => {
                write!(f, "{what} had verified the restored data: it stays")?;
                if let Some(p) = replaced {
                    write!(
                        f,
                        "; the data it replaced is at {} (delete it when you no longer need it)",
                        p.display()
                    )?;
                }
                Ok(())
            }
            Ok(Recovered::RolledBack { notes }) => {
                write!(f, "{what} was undone: {}", notes.join("; "))
            }
            Err(e) => write!(
                f,
                "{what} could not be recovered: {e}; {} stays on hold and the next `unitlet apply` or `unitlet run` pass tries again; if this persists, put the data directory right by hand and remove {}",
                self.service,
                self.journal.display()
            ),
        }
    }
}

/// Recovery as a pass runs it: what it reported last for each service,
/// so a journal that stays stuck is logged once per change, not at every
/// pass.
#[derive(Debug, Default)]
pub struct Recoveries {
    /// The last outcome logged, by service.
    reported: BTreeMap<String, String>,
}

impl Recoveries {
    /// Finishes or undoes every interrupted restore ([`recover_interrupted`],
    /// acting only where the Backup manifests say a restore of that Service
    /// works) and logs each outcome once per change. Run by `unitlet
    /// apply` and every `unitlet run` pass under the state lock, before
    /// the pass plans; does nothing (and reads no manifest) without a
    /// journal, and nothing in a state directory that fails its check
    /// (the pass reports that).
    pub async fn run(&mut self, loc: &Locations, sd: &impl UserManager) {
        match journal::pending_names_off_runtime(&loc.state_dir).await {
            Ok(names) if names.is_empty() => {
                self.reported.clear();
                return;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(dir = %loc.state_dir.display(), "reading the restore journals: {e}");
                return;
            }
        }
        if loc.check_state_dir().is_err() {
            return;
        }
        let Some(data_dirs) = data_dirs(loc).await else {
            return;
        };
        let outcomes = recover_interrupted(loc, sd, &data_dirs).await;
        let Ok(pending) = journal::pending_names_off_runtime(&loc.state_dir).await else {
            return;
        };
        let pending: BTreeSet<String> = pending.into_iter().collect();
        for o in outcomes {
            let text = o.to_string();
            if self.reported.get(&o.service) == Some(&text) {
                continue;
            }
            match o.result {
                Ok(_) => tracing::warn!(service = %o.service, "{text}"),
                Err(_) => tracing::error!(service = %o.service, "{text}"),
            }
            self.reported.insert(o.service, text);
        }
        // A journal that is gone (recovered, removed by hand) is reported
        // again if it comes back.
        self.reported.retain(|s, _| pending.contains(s));
    }
}

/// How long reading the manifests for recovery may take (as a pass's own
/// load: a file that never answers must not hang the operator).
const LOAD_DEADLINE: Duration = Duration::from_secs(5);

/// `(service, data directory)` of every Backup manifest that restores a
/// Prometheus Service; `None` when the manifests cannot be read (the pass
/// that follows reports why).
async fn data_dirs(loc: &Locations) -> Option<Vec<(String, PathBuf)>> {
    let d = loc.manifests.clone();
    let load = move || crate::manifest::load_dir(&d);
    let loaded = fsutil::off_runtime(&loc.manifests, LOAD_DEADLINE, load).await;
    let loaded = loaded.ok()?.ok()?;
    let dirs = loaded.manifests.iter().filter_map(|m| match &m.spec {
        crate::manifest::Spec::Backup(b) => match &b.source {
            crate::manifest::BackupSource::Prometheus {
                data_dir: Some(d),
                service: Some(s),
                ..
            } => Some((s.clone(), d.clone())),
            _ => None,
        },
        _ => None,
    });
    Some(dirs.collect())
}

/// Where a restore of each Service may have worked: `(service, data
/// directory)` for every Backup manifest whose `prometheus.service` it is
/// (its `prometheus.dataDir` as written; symlinks are resolved here, as
/// `unitlet restore` resolves them).
pub type DataDirs = [(String, PathBuf)];

/// Recovers every interrupted restore: each journal whose owner is gone
/// (its lock can be taken) is completed when the restored data was
/// verified, else rolled back, and removed. Journals of running restores
/// are left alone.
///
/// Run by `unitlet apply` and every `unitlet run` pass before they
/// converge (after the state directory passed its check), and by
/// `unitlet restore` for its own service. Logs nothing: the caller
/// reports the outcomes (once per change, see
/// [`crate::reconcile::Reconciler`]).
///
/// # Guarantees
/// No data directory is deleted: restored data that is undone is renamed
/// to `DATADIR.failed-STAMP` and the original renamed back. Only paths a
/// restore of that service creates are touched: its data directory (one
/// of `data_dirs`) and siblings of it named `DATADIR.restoring-STAMP` and
/// `DATADIR.replaced-STAMP`; a journal naming anything else is stuck. The
/// service is stopped when its data must be moved, never started: the
/// caller converges it. A journal that cannot be recovered is kept (and
/// keeps its service held), with the reason in the outcome. Nothing is
/// written in the holds directory, which the operator watches.
pub async fn recover_interrupted(
    loc: &Locations,
    sd: &impl UserManager,
    data_dirs: &DataDirs,
) -> Vec<RecoveryOutcome> {
    let mut out = Vec::new();
    let pending = journal::pending_names_off_runtime(&loc.state_dir)
        .await
        .unwrap_or_default();
    for service in pending {
        let owner = Owner::me(format!("recovery of an interrupted restore of {service}"));
        let lock = match RestoreLock::try_lock(&loc.state_dir, &service, &owner) {
            Ok(Ok(l)) => l,
            // Its restore is running: not interrupted.
            Ok(Err(())) => continue,
            Err(e) => {
                out.push(RecoveryOutcome {
                    journal: journal::journal_path(&loc.state_dir, &service),
                    service: service.clone(),
                    record: None,
                    result: Err(format!(
                        "cannot take the restore lock {}: {e}",
                        journal::lock_path(&loc.state_dir, &service).display()
                    )),
                });
                continue;
            }
        };
        let mine: Vec<PathBuf> = data_dirs
            .iter()
            .filter(|(s, _)| *s == service)
            .map(|(_, d)| d.clone())
            .collect();
        if let Some(o) = recover_locked(&lock, sd, &mine).await {
            out.push(o);
        }
    }
    out
}

/// Recovers the journal of `lock`'s service, if it has one, acting only
/// on `data_dirs` (where a restore of it may have worked, see
/// [`DataDirs`]) and their siblings with a restore's names. The caller
/// holds the lock, so its owner is gone.
pub async fn recover_locked(
    lock: &RestoreLock,
    sd: &impl UserManager,
    data_dirs: &[PathBuf],
) -> Option<RecoveryOutcome> {
    let (state_dir, service) = (lock.state_dir(), lock.service());
    let journal = journal::journal_path(state_dir, service);
    let record = match journal::read_off_runtime(state_dir, service).await? {
        Ok(r) => r,
        Err(e) => {
            return Some(RecoveryOutcome {
                journal,
                service: service.to_owned(),
                record: None,
                result: Err(e),
            });
        }
    };
    let expected = expected_data_dirs(data_dirs);
    let result = match check_paths(&record, service, &expected) {
        Err(e) => Err(format!(
            "{e}; nothing was touched: look at the journal and the directories it names"
        )),
        Ok(()) => execute(&record, sd).await,
    };
    let result = result.and_then(|rec| {
        fsutil::remove_durable(&journal)
            .map_err(|e| {
                format!(
                    "the data is consistent again but the journal {} cannot be removed: {e}",
                    journal.display()
                )
            })
            .map(|()| rec)
    });
    if result.is_ok() {
        // The dead restore's hold, if it left one (a removal, which does
        // not wake the operator).
        crate::hold::remove_stale(state_dir, service);
    }
    Some(RecoveryOutcome {
        journal,
        service: service.to_owned(),
        record: Some(record),
        result,
    })
}

/// Every spelling a restore may have recorded for each of `data_dirs`:
/// as written (normalized), resolved (`unitlet restore` resolves a
/// symlinked data directory and swaps the real one), and, when the real
/// directory is moved aside so the link dangles, the link's target.
fn expected_data_dirs(data_dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for d in data_dirs {
        let normalized: PathBuf = d.components().collect();
        if let Ok(real) = fs::canonicalize(&normalized) {
            out.push(real);
        }
        if let Ok(target) = fs::read_link(&normalized) {
            let target = match normalized.parent() {
                Some(parent) if target.is_relative() => parent.join(target),
                _ => target,
            };
            let target: PathBuf = target.components().collect();
            if let (Some(parent), Some(name)) = (target.parent(), target.file_name())
                && let Ok(parent) = fs::canonicalize(parent)
            {
                out.push(parent.join(name));
            }
            out.push(target);
        }
        out.push(normalized);
    }
    out
}

/// Whether `r` names only what a restore of `service` creates: its data
/// directory is one of `expected`, its staging copy and the data it
/// replaced are siblings of it with a restore's names; pure.
///
/// # Errors
/// What is wrong, for people.
fn check_paths(r: &Record, service: &str, expected: &[PathBuf]) -> Result<(), String> {
    if r.service != service {
        return Err(format!(
            "the journal names Service {:?}, not {service:?} as its file name does",
            r.service
        ));
    }
    if !expected.contains(&r.data_dir) {
        return Err(format!(
            "its data directory {} is not the prometheus.dataDir of any Backup manifest whose prometheus.service is {service}",
            r.data_dir.display()
        ));
    }
    let sibling = |label: &str, p: &Path| {
        if is_sibling_named(&r.data_dir, label, p) {
            Ok(())
        } else {
            Err(format!(
                "it names {} as the {}, which a restore of {service} never creates (a sibling of {} named {}.{label}-STAMP)",
                p.display(),
                if label == "restoring" {
                    "copy of the set"
                } else {
                    "data it replaced"
                },
                r.data_dir.display(),
                r.data_dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ))
        }
    };
    sibling("restoring", &r.staging)?;
    if let Some(replaced) = &r.replaced {
        sibling("replaced", replaced)?;
    }
    Ok(())
}

/// Whether `p` is `DATADIR.LABEL-STAMP[-N]` beside `data_dir` (see
/// [`crate::prometheus::swap::sibling`]); pure.
fn is_sibling_named(data_dir: &Path, label: &str, p: &Path) -> bool {
    let (Some(parent), Some(name)) = (data_dir.parent(), data_dir.file_name()) else {
        return false;
    };
    let (Some(p_parent), Some(p_name)) = (p.parent(), p.file_name()) else {
        return false;
    };
    let prefix = format!("{}.{label}-", name.to_string_lossy());
    let Some(rest) = p_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
        return false;
    };
    let (stamp, n) = match rest.split_once('-') {
        Some((s, n)) => (s, Some(n)),
        None => (rest, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let is_stamp = stamp.len() == 16
        && stamp.is_ascii()
        && digits(&stamp[..8])
        && &stamp[8..9] == "T"
        && digits(&stamp[9..15])
        && &stamp[15..] == "Z";
    let n_ok = n.is_none_or(|n| digits(n) && !n.starts_with('0') && n.len() <= 4);
    p_parent == parent && is_stamp && n_ok
}

/// Removes the staging copy of a set (a large tree: off the async
/// runtime's thread); says what happened.
async fn remove_staging(staging: &Path) -> String {
    let path = staging.to_path_buf();
    let removed = tokio::task::spawn_blocking(move || fs::remove_dir_all(&path))
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e.to_string())));
    match removed {
        Ok(()) => format!(
            "the copy {} of the set was removed (the set itself is untouched)",
            staging.display()
        ),
        Err(e) => format!(
            "the copy {} of the set could not be removed ({e}); delete it by hand",
            staging.display()
        ),
    }
}

async fn execute(r: &Record, sd: &impl UserManager) -> Result<Recovered, String> {
    let chain = |e: &dyn std::error::Error| crate::error_chain(e);
    let plan = recovery_plan(r, OnDisk::observe(r));
    match plan {
        RecoveryPlan::Stuck(reason) => Err(reason),
        RecoveryPlan::Complete { remove_staging: rm } => {
            if rm {
                remove_staging(&r.staging).await;
            }
            Ok(Recovered::Completed {
                replaced: r.replaced.clone(),
            })
        }
        RecoveryPlan::RollBack {
            restored_in_place,
            put_back,
            remove_staging: rm,
        } => {
            let mut notes = Vec::new();
            let unit = r.unit();
            if restored_in_place || put_back {
                // Prometheus must not run while its directory moves.
                let state = swap::active_state(sd, &unit).await.map_err(|e| chain(&e))?;
                if !matches!(state.as_str(), "inactive" | "failed") {
                    swap::check_managed(sd, &unit, &r.service)
                        .await
                        .map_err(|e| chain(&e))?;
                    swap::run_job(sd, &unit, JobKind::Stop, STOP_TIMEOUT)
                        .await
                        .map_err(|e| chain(&e))?;
                    notes.push(format!("{unit} (running on the restored data) was stopped"));
                }
            }
            if restored_in_place {
                let failed =
                    swap::free_sibling(&r.data_dir, "failed", &swap::stamp(SystemTime::now()))
                        .ok_or_else(|| "no free name to move the restored data aside".to_owned())?;
                swap::rename(&r.data_dir, &failed, "move the restored data aside")
                    .map_err(|e| chain(&e))?;
                notes.push(format!(
                    "the restored data was moved to {}",
                    failed.display()
                ));
            }
            if put_back && let Some(replaced) = &r.replaced {
                swap::rename(replaced, &r.data_dir, "put the previous data back")
                    .map_err(|e| chain(&e))?;
                notes.push(format!(
                    "the previous data is back at {}",
                    r.data_dir.display()
                ));
            } else if r.replaced.is_some() {
                notes.push(format!(
                    "the original data is in place at {}",
                    r.data_dir.display()
                ));
            } else {
                notes.push(format!(
                    "there was no data at {} before the restore",
                    r.data_dir.display()
                ));
            }
            if rm {
                notes.push(remove_staging(&r.staging).await);
            }
            Ok(Recovered::RolledBack { notes })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::journal::tests::rec;

    fn disk(data_dir: bool, replaced: bool, staging: bool) -> OnDisk {
        OnDisk {
            data_dir,
            replaced,
            staging,
        }
    }

    fn rollback(restored_in_place: bool, put_back: bool, remove_staging: bool) -> RecoveryPlan {
        RecoveryPlan::RollBack {
            restored_in_place,
            put_back,
            remove_staging,
        }
    }

    /// For every case, at each of its steps: the plan for that record
    /// (with or without replaced data) and what is on disk.
    fn assert_plans(replaced: bool, cases: &[(&[Step], OnDisk, RecoveryPlan)]) {
        for (steps, on_disk, want) in cases {
            for step in *steps {
                let plan = recovery_plan(&rec(*step, replaced), *on_disk);
                assert_eq!(&plan, want, "{step} {on_disk:?}");
            }
        }
    }

    #[test]
    fn every_point_of_the_swap_rolls_back_to_the_original_data() {
        use Step::*;
        assert_plans(
            true,
            &[
                // Before the old data moved: it is the original; drop the copy.
                (
                    &[Copy, Stop, MoveAside],
                    disk(true, false, true),
                    rollback(false, false, true),
                ),
                // Moved aside, copy not yet in place.
                (
                    &[MoveAside, Install],
                    disk(false, true, true),
                    rollback(false, true, true),
                ),
                // The copy is in place: it goes aside, the original comes back.
                (
                    &[Install, Start, Verify, RollBack],
                    disk(true, true, false),
                    rollback(true, true, false),
                ),
                // An in-process rollback that already put everything back.
                (
                    &[RollBack],
                    disk(true, false, false),
                    rollback(false, false, false),
                ),
                // Verified: it stays.
                (
                    &[Done],
                    disk(true, true, false),
                    RecoveryPlan::Complete {
                        remove_staging: false,
                    },
                ),
            ],
        );
    }

    #[test]
    fn without_previous_data_only_the_restored_copy_moves() {
        use Step::*;
        assert_plans(
            false,
            &[
                (
                    &[Stop, Install],
                    disk(false, false, true),
                    rollback(false, false, true),
                ),
                (
                    &[Start],
                    disk(true, false, false),
                    rollback(true, false, false),
                ),
            ],
        );
    }

    #[test]
    fn a_state_no_step_explains_touches_nothing() {
        assert!(matches!(
            recovery_plan(&rec(Step::Start, true), disk(false, false, false)),
            RecoveryPlan::Stuck(m) if m.contains("neither")
        ));
        assert!(matches!(
            recovery_plan(&rec(Step::Done, true), disk(false, true, false)),
            RecoveryPlan::Stuck(_)
        ));
    }

    /// Issue 20, item 4: recovery acts only on what a restore of that
    /// service creates; a journal naming anything else is stuck.
    #[test]
    fn issue20_4_recovery_acts_only_on_a_restores_own_paths() {
        let expected = [PathBuf::from("/p/data")];
        let ok = rec(Step::Copy, true);
        assert_eq!(check_paths(&ok, "prometheus", &expected), Ok(()));
        let mut numbered = ok.clone();
        numbered.staging = "/p/data.restoring-20261127T235501Z-2".into();
        numbered.replaced = Some("/p/data.replaced-20261127T235501Z".into());
        assert_eq!(check_paths(&numbered, "prometheus", &expected), Ok(()));
        let bad = |f: &dyn Fn(&mut Record)| {
            let mut r = ok.clone();
            f(&mut r);
            check_paths(&r, "prometheus", &expected).unwrap_err()
        };
        for staging in [
            "/home/u/photos",
            "/p/photos",
            "/p/data.restoring-x",
            "/p/data.replaced-20261127T235501Z",
            "/q/data.restoring-20261127T235501Z",
            "/p/data/../data.restoring-20261127T235501Z",
            "/p/data.restoring-20261127T235501Z-07",
            "/p/data.restoring-2026112XT235501Z",
        ] {
            let e = bad(&|r| r.staging = staging.into());
            assert!(
                e.contains(staging) && e.contains("never creates"),
                "{staging}: {e}"
            );
        }
        let e = bad(&|r| r.replaced = Some("/etc".into()));
        assert!(e.contains("/etc") && e.contains("data it replaced"), "{e}");
        let e = bad(&|r| r.data_dir = "/home/u".into());
        assert!(e.contains("not the prometheus.dataDir"), "{e}");
        let e = bad(&|r| r.service = "other".into());
        assert!(e.contains("\"other\""), "{e}");
        // A Service no Backup manifest restores: nothing is expected.
        assert!(check_paths(&ok, "prometheus", &[]).is_err());
    }

    #[test]
    fn a_symlinked_data_directory_is_expected_by_its_real_path_even_when_moved_aside() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("real/data");
        fs::create_dir_all(&real).unwrap();
        let link = d.path().join("data");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let real = fs::canonicalize(&real).unwrap();
        assert!(expected_data_dirs(std::slice::from_ref(&link)).contains(&real));
        // Moved aside by the restore: the link dangles.
        fs::rename(&real, real.with_file_name("data.replaced-20261127T235501Z")).unwrap();
        assert!(expected_data_dirs(&[link]).contains(&real));
    }

    /// Issue 22: recovery reaches the user manager only through the
    /// `UserManager` trait, so it runs against the in-memory manager: a
    /// restore killed after its copy was put in place is undone — the
    /// running Prometheus stopped, the restored data moved aside, the
    /// original put back, the journal removed.
    #[tokio::test]
    async fn an_interrupted_restore_is_rolled_back_through_the_manager_trait() {
        let d = tempfile::tempdir().unwrap();
        let (loc, sd) = crate::reconcile::pass_tests::fake_world(d.path());
        let unit = "prometheus.service";
        fs::write(
            loc.unit_dir.join(unit),
            "[Unit]\nX-Unitlet-Manifest=prometheus\n[Service]\nExecStart=/bin/true\n",
        )
        .unwrap();
        sd.start_by_hand(unit);
        let data_dir = fs::canonicalize(d.path()).unwrap().join("data");
        let replaced = data_dir.with_file_name("data.replaced-20261127T235501Z");
        fs::create_dir(&data_dir).unwrap();
        fs::write(data_dir.join("restored"), "").unwrap();
        fs::create_dir(&replaced).unwrap();
        fs::write(replaced.join("original"), "").unwrap();
        let record = Record {
            pid: 999_999_999,
            data_dir: data_dir.clone(),
            staging: data_dir.with_file_name("data.restoring-20261127T235501Z"),
            replaced: Some(replaced.clone()),
            ..rec(Step::Start, true)
        };
        let owner = Owner::me("a restore that dies".into());
        let lock = RestoreLock::try_acquire(&loc.state_dir, "prometheus", &owner)
            .unwrap()
            .unwrap();
        // Dropped without finishing: what a killed restore leaves.
        drop(journal::Journal::begin(lock, record).unwrap());

        let dirs = [("prometheus".to_owned(), data_dir.clone())];
        let out = recover_interrupted(&loc, &sd, &dirs).await;
        assert_eq!(out.len(), 1);
        let notes = match &out[0].result {
            Ok(Recovered::RolledBack { notes }) => notes.join("; "),
            other => panic!("{other:?}"),
        };
        assert!(
            notes.contains("prometheus.service (running on the restored data) was stopped"),
            "{notes}"
        );
        assert_eq!(sd.jobs(unit), [JobKind::Stop]);
        assert_eq!(sd.state(unit).0, "inactive");
        assert!(data_dir.join("original").exists(), "the original is back");
        assert!(!replaced.exists());
        let failed: Vec<_> = fs::read_dir(data_dir.parent().unwrap())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| is_sibling_named(&data_dir, "failed", p))
            .collect();
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert!(
            failed[0].join("restored").exists(),
            "the restored data is aside"
        );
        assert!(journal::pending_names(&loc.state_dir).is_empty());
    }

    /// Recovery stops only a unit unitlet manages: a unit without the
    /// Service's marker leaves the journal stuck and the data untouched.
    #[tokio::test]
    async fn recovery_never_stops_a_unit_it_does_not_manage() {
        let d = tempfile::tempdir().unwrap();
        let (loc, sd) = crate::reconcile::pass_tests::fake_world(d.path());
        let unit = "prometheus.service";
        fs::write(loc.unit_dir.join(unit), "[Service]\nExecStart=/bin/true\n").unwrap();
        sd.start_by_hand(unit);
        let data_dir = fs::canonicalize(d.path()).unwrap().join("data");
        let replaced = data_dir.with_file_name("data.replaced-20261127T235501Z");
        fs::create_dir(&data_dir).unwrap();
        fs::create_dir(&replaced).unwrap();
        let record = Record {
            data_dir: data_dir.clone(),
            staging: data_dir.with_file_name("data.restoring-20261127T235501Z"),
            replaced: Some(replaced.clone()),
            ..rec(Step::Start, true)
        };
        let owner = Owner::me("a restore that dies".into());
        let lock = RestoreLock::try_acquire(&loc.state_dir, "prometheus", &owner)
            .unwrap()
            .unwrap();
        drop(journal::Journal::begin(lock, record).unwrap());
        let dirs = [("prometheus".to_owned(), data_dir.clone())];
        let out = recover_interrupted(&loc, &sd, &dirs).await;
        let e = out[0].result.as_ref().unwrap_err();
        assert!(e.contains("not managed by unitlet"), "{e}");
        assert!(sd.jobs(unit).is_empty(), "nothing stopped");
        assert!(data_dir.exists() && replaced.exists(), "nothing moved");
        assert_eq!(journal::pending_names(&loc.state_dir), ["prometheus"]);
    }
}
