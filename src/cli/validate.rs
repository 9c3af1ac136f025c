//! `unitlet validate`: check manifests the way CI and editors need, away
//! from the host. What is wrong with a manifest is an error; what is only
//! true of this machine (a secret file missing, a program not installed,
//! the unit directory not on the manager's path) is a warning, or an error
//! with `--strict`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Serialize;

use super::{CliError, CliResult};
use crate::locations::Locations;
use crate::manifest::{self, Exec, LoadError, LoadedSet, ManifestError};

/// `unitlet validate [PATH...] [--strict] [-o text|json]`.
#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// Manifest files, and directories whose `.yaml`/`.yml` files are
    /// manifests (default: the manifests directory).
    #[arg(value_name = "PATH")]
    pub files: Vec<PathBuf>,
    /// Facts about this machine (a missing environment file or credential,
    /// a program not installed, the unit directory not on the manager's
    /// path) are errors, not warnings.
    #[arg(long)]
    pub strict: bool,
    /// `text`: one `FILE:LINE:COL: error|warning: MESSAGE` line per
    /// finding; `json`: every finding with its field, for tools.
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    pub output: ValidateOutput,
}

/// How `validate` prints its findings.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum ValidateOutput {
    Text,
    Json,
}

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The manifest is invalid (exit 1).
    Error,
    /// A fact about this machine; the manifest is valid.
    Warning,
}

/// One problem `validate` reports.
#[derive(Debug, Serialize)]
pub struct Finding {
    /// The manifest file; `None` for a fact about the machine alone.
    pub file: Option<PathBuf>,
    /// 1-based; 0 when the problem is the file as a whole.
    pub line: u64,
    pub column: u64,
    pub severity: Severity,
    /// The field, as a path (`spec.environmentFile`), when known.
    pub field: Option<String>,
    pub message: String,
}

impl Finding {
    fn of(e: &ManifestError, severity: Severity) -> Finding {
        Finding {
            file: Some(e.file.clone()),
            line: e.line,
            column: e.column,
            severity,
            field: e.field.clone(),
            message: e.message.clone(),
        }
    }

    /// `FILE:LINE:COL: SEVERITY: MESSAGE`, the form compilers use and
    /// editors and CI annotate from.
    fn line(&self) -> String {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let at = match (&self.file, self.line) {
            (None, _) => String::new(),
            (Some(f), 0) => format!("{}: ", f.display()),
            (Some(f), l) => format!("{}:{l}:{}: ", f.display(), self.column),
        };
        format!("{at}{severity}: {}", self.message)
    }
}

/// What `validate -o json` prints.
#[derive(Debug, Serialize)]
struct Report<'a> {
    valid: bool,
    manifests: usize,
    files: usize,
    errors: usize,
    warnings: usize,
    findings: &'a [Finding],
}

/// `unitlet validate`: exit 0 when every manifest is valid (warnings
/// allowed unless `--strict`), 1 when some is not, 2 when a path cannot be
/// read at all.
pub async fn validate(loc: &Locations, args: &ValidateArgs) -> CliResult {
    let set = match load(loc, &args.files) {
        Ok(set) => set,
        Err(e) => {
            eprintln!("error: {}", crate::error_chain(&e));
            return Err(CliError::Unavailable);
        }
    };
    let facts = if args.strict {
        Severity::Error
    } else {
        Severity::Warning
    };
    let mut findings: Vec<Finding> = set
        .errors
        .iter()
        .map(|e| Finding::of(e, Severity::Error))
        .collect();
    findings.extend(set.warnings.iter().map(|e| Finding::of(e, facts)));
    findings.extend(missing_programs(&set).into_iter().map(|mut f| {
        f.severity = facts;
        f
    }));
    findings.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    if let Some(message) = unit_dir_fact(loc).await {
        findings.push(Finding {
            file: None,
            line: 0,
            column: 0,
            severity: facts,
            field: None,
            message,
        });
    }
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    let warnings = findings.len() - errors;
    match args.output {
        ValidateOutput::Json => {
            let report = Report {
                valid: errors == 0,
                manifests: set.manifests.len(),
                files: set.files.len(),
                errors,
                warnings,
                findings: &findings,
            };
            println!("{:#}", serde_json::json!(report));
        }
        ValidateOutput::Text => {
            for f in &findings {
                println!("{}", f.line());
            }
            println!(
                "{} manifest(s) valid, {errors} error(s) in {} file(s), {warnings} warning(s)",
                set.manifests.len(),
                set.files.len(),
            );
        }
    }
    if errors == 0 {
        Ok(())
    } else {
        Err(CliError::Unsuccessful)
    }
}

/// The manifests of `paths`, or of the manifests directory without any.
fn load(loc: &Locations, paths: &[PathBuf]) -> Result<LoadedSet, LoadError> {
    if !paths.is_empty() {
        return manifest::load_paths(paths);
    }
    manifest::load_paths(std::slice::from_ref(&loc.manifests)).map_err(|e| match e {
        LoadError::NoSuchPath { path } => LoadError::Missing { path },
        e => e,
    })
}

/// Services whose program is not installed here (as `doctor` and the
/// operator look it up: systemd's own PATH), at their `spec.command`.
fn missing_programs(set: &LoadedSet) -> Vec<Finding> {
    let mut out = Vec::new();
    for m in &set.manifests {
        let Some(Exec::Command(argv)) = m.as_service().map(|s| &s.exec) else {
            continue;
        };
        let Some(prog) = argv.first() else { continue };
        let check = crate::doctor::program_check(&m.name, prog);
        if check.status == crate::doctor::Severity::Ok {
            continue;
        }
        let (line, column) = m.field_at.get("command").copied().unwrap_or((m.line, 1));
        out.push(Finding {
            file: Some(m.file.clone()),
            line,
            column,
            severity: Severity::Warning,
            field: Some("spec.command".into()),
            message: format!("spec.command: {}; {}", check.reason, check.fix),
        });
    }
    out
}

/// How long `validate` waits for the user manager: the check is a bonus,
/// never a reason to hang in CI.
const MANAGER_DEADLINE: Duration = Duration::from_secs(2);

/// Why the unit directory will not do on this machine, when a user manager
/// answers and says so; `None` when it is on the manager's unit path or no
/// manager answers (CI, a container: nothing to check against).
async fn unit_dir_fact(loc: &Locations) -> Option<String> {
    let check = async {
        let sd = crate::systemd::Systemd::connect(loc.bus.as_deref())
            .await
            .ok()?;
        match sd.check_unit_dir(&loc.unit_dir).await {
            Err(e @ crate::manager::ManagerError::NotOnUnitPath { .. }) => Some(e.to_string()),
            _ => None,
        }
    };
    tokio::time::timeout(MANAGER_DEADLINE, check)
        .await
        .ok()
        .flatten()
}
