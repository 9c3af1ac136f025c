//! `unitlet backup`, `unitlet backups` and `unitlet restore`: printing and
//! exit status around [`crate::backup_cmd`].

use std::io::{IsTerminal, Write};

use super::error::{CliError, CliResult};
use crate::backup_cmd::{self, RestoreArgs, Restored};
use crate::locations::Locations;
use crate::status::EventType;

/// `unitlet backup NAME`: the new set's id, size and file count, the old
/// sets deleted; warnings on standard error.
pub(super) async fn backup(loc: &Locations, name: String) -> CliResult {
    let mut warnings = Vec::new();
    let progress = std::io::stderr().is_terminal();
    let result = backup_cmd::backup(loc, &name, progress, &mut warnings).await;
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    match result {
        Ok(Some(made)) => {
            let set = &made.set;
            let incremental = [
                set.new_blocks.map(|n| format!("{n} new blocks")),
                set.written
                    .map(|w| format!("{} written", backup_cmd::format_size(w))),
                set.shared
                    .map(|s| format!("{} shared", backup_cmd::format_size(s))),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>();
            let incremental = if incremental.is_empty() {
                String::new()
            } else {
                format!(" ({})", incremental.join(", "))
            };
            println!(
                "backup {name}: set {} complete: {} files, {}{incremental} in {}",
                set.id,
                set.files,
                backup_cmd::format_size(set.size),
                set.path.display()
            );
            for id in made.deleted {
                println!("deleted old set {id} (keep)");
            }
            Ok(())
        }
        // Complete, but pruning failed: said in the warnings.
        Ok(None) => Ok(()),
        Err(e) => Err(CliError::Backup {
            name,
            source: Box::new(e),
        }),
    }
}

/// `unitlet backups [NAME] [-o table|json]`.
pub(super) async fn backups(loc: &Locations, name: Option<&str>, json: bool) -> CliResult {
    let rows = backup_cmd::backups(loc, name)
        .await
        .map_err(|e| CliError::Backups(Box::new(e)))?;
    let text = if json {
        let mut s = serde_json::to_string_pretty(&rows).unwrap_or_default();
        s.push('\n');
        s
    } else if rows.is_empty() {
        eprintln!("no backup sets");
        return Ok(());
    } else {
        if rows.iter().any(|r| r.set.legacy) {
            eprintln!(
                "legacy: the set does not record which Backup made it (it predates unitlet 0.2); it is never pruned, and restored only after adding \"backup\": \"NAME\" to its backup.json"
            );
        }
        backup_cmd::sets_table(&rows)
    };
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    Ok(())
}

/// `unitlet backups verify NAME [ID] [--deep]`: one line per set; exit 1
/// if any failed (or there is none to check).
pub(super) async fn verify(
    loc: &Locations,
    name: String,
    id: Option<&str>,
    deep: bool,
) -> CliResult {
    let results = backup_cmd::verify(loc, &name, id, deep)
        .await
        .map_err(|e| CliError::Backups(Box::new(e)))?;
    let how = if deep {
        "every file re-hashed"
    } else {
        "sizes checked; --deep re-hashes"
    };
    let mut failed = 0;
    for (id, r) in &results {
        match r {
            Ok(set) => println!(
                "set {id}: ok ({} files, {}; {how})",
                set.files,
                backup_cmd::format_size(set.size)
            ),
            Err(e) => {
                failed += 1;
                eprintln!("set {id}: {e}");
            }
        }
    }
    if results.is_empty() {
        eprintln!("no complete backup sets of {name}");
    }
    if failed > 0 || results.is_empty() {
        return Err(CliError::VerifyFailed {
            name,
            failed,
            total: results.len(),
        });
    }
    Ok(())
}

/// `unitlet restore NAME ID`: what Alertmanager said, then the report.
pub(super) async fn restore(
    loc: &Locations,
    name: String,
    id: String,
    mut args: RestoreArgs,
) -> CliResult {
    args.progress = std::io::stderr().is_terminal();
    let mut notes = Vec::new();
    let result = backup_cmd::restore(loc, &name, &id, &args, &mut notes).await;
    for (t, _, m) in &notes {
        let level = if *t == EventType::Warning {
            "warning"
        } else {
            "note"
        };
        eprintln!("{level}: {m}");
    }
    let restored = result.map_err(|e| CliError::restore(&name, &id, e))?;
    match &restored {
        Restored::Prometheus(report) => print!("{report}"),
        Restored::Grafana(report) => print!("{report}"),
    }
    if restored.is_success() {
        Ok(())
    } else {
        Err(CliError::RestoreIncomplete { name, id })
    }
}
