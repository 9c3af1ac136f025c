//! The command line: parse arguments, call the library, map errors to exit
//! codes (see the contract's Commands table).

#[cfg(test)]
mod apply_tests;
mod backup;
mod doctor;
mod error;
mod fleet;
mod fleet_rollout;
mod logs;
mod output;
pub mod rollout;
mod validate;
mod view;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

use crate::locations::Locations;
use crate::manifest;
use crate::reconcile::Reconciler;
use crate::render;
use crate::status::{ObjectStatus, Status};
use crate::systemd::Systemd;

pub use error::{CliError, CliResult, NOT_OK, OK, OPERATIONAL};
pub(crate) use output::Output;

#[derive(Parser, Debug)]
#[command(
    name = "unitlet",
    version = env!("UNITLET_VERSION"),
    about = "A Kubernetes-style operator for systemd user units",
    propagate_version = true
)]
// The command line of `unitlet`. No `///` comment: clap takes a doc comment
// here as the command's help text, and `about` above is that text.
#[allow(missing_docs)]
pub struct Cli {
    /// Directory of manifests.
    #[arg(long, global = true, env = "UNITLET_MANIFESTS", value_name = "DIR")]
    pub manifests: Option<PathBuf>,
    /// Directory for status and backups.
    #[arg(long, global = true, env = "UNITLET_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Where unit files are written; must be on the user manager's UnitPath.
    #[arg(long, global = true, env = "UNITLET_UNIT_DIR", value_name = "DIR")]
    pub unit_dir: Option<PathBuf>,
    /// D-Bus address of the session bus.
    #[arg(long, global = true, env = "UNITLET_BUS", value_name = "ADDRESS")]
    pub bus: Option<String>,
    /// Alertmanager's base URL, for silences around planned restarts.
    #[arg(
        long,
        global = true,
        env = "UNITLET_ALERTMANAGER",
        value_name = "URL",
        default_value = crate::manifest::DEFAULT_ALERTMANAGER_URL
    )]
    pub alertmanager: String,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// `-o` of `doctor` and `rollout history`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    Table,
    Json,
}

/// `unitlet backups` subcommands.
#[derive(Debug, Subcommand)]
pub enum BackupsCommand {
    /// Check the complete sets of Backup NAME (or set ID): every file
    /// present with its recorded size; with --deep, re-hashed too.
    Verify {
        /// The Backup manifest.
        name: String,
        /// One set (default: every complete set of NAME).
        id: Option<String>,
        /// Re-hash every file (sha256) instead of checking sizes.
        #[arg(long)]
        deep: bool,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Run the operator: watch, converge, resync.
    Run {
        /// Periodic full resync.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        resync: Duration,
        /// Where to serve the operator's own metrics ("off" to disable).
        #[arg(long = "metrics-addr", default_value = "127.0.0.1:9464")]
        metrics_addr: String,
        /// How long a manifest that disappeared is waited for before its
        /// units are stopped and removed (editors that delete and re-create
        /// a file, `git checkout`, `rsync --delete-after`).
        #[arg(long = "gc-grace", env = "UNITLET_GC_GRACE", default_value = "2s", value_parser = parse_duration)]
        gc_grace: Duration,
        /// Where manifests come from: the manifests directory, or etcd
        /// (docs/fleet.md).
        #[arg(long, env = "UNITLET_SOURCE", value_enum, default_value = "dir")]
        source: Source,
        /// This host's id in etcd keys (default: /etc/machine-id).
        #[arg(long = "host-id", env = "UNITLET_HOST_ID", value_name = "ID")]
        host_id: Option<String>,
        /// How long this host's status outlives it in etcd.
        #[arg(long = "lease-ttl", env = "UNITLET_LEASE_TTL", default_value = "10s", value_parser = parse_duration)]
        lease_ttl: Duration,
        /// A label of this host, KEY=VALUE (repeatable; with --source
        /// etcd), which `fleet rollout --selector` matches.
        #[arg(
            long = "host-label",
            env = "UNITLET_HOST_LABELS",
            value_name = "KEY=VALUE",
            value_delimiter = ',',
            value_parser = parse_host_label
        )]
        host_labels: Vec<(String, String)>,
        #[command(flatten)]
        etcd: crate::fleet::EtcdArgs,
    },
    /// Manifests and status of a fleet of hosts in etcd.
    Fleet {
        #[command(flatten)]
        etcd: crate::fleet::EtcdArgs,
        #[command(subcommand)]
        command: FleetCommand,
    },
    /// One full reconcile pass; waits for every started job.
    Apply {
        /// How long to wait for each job.
        #[arg(long, default_value = "90s", value_parser = parse_duration)]
        timeout: Duration,
        /// How long a manifest that disappeared is waited for before its
        /// units are stopped and removed.
        #[arg(long = "gc-grace", env = "UNITLET_GC_GRACE", default_value = "2s", value_parser = parse_duration)]
        gc_grace: Duration,
    },
    /// Show what apply would do, with a reason per action.
    Plan,
    /// Check manifests: files and directories of them (the manifests
    /// directory by default), without needing this machine's services.
    Validate(validate::ValidateArgs),
    /// Print the JSON Schema (draft 2020-12) of the manifest format, for
    /// editors and CI.
    Schema,
    /// Status of managed objects.
    Get {
        name: Option<String>,
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: Output,
    },
    /// Status, conditions, unit properties, live resource use, events.
    Describe { name: String },
    /// Print (or export) the unit files a manifest renders to.
    Render {
        name: String,
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Run the Backup manifest NAME now.
    Backup { name: String },
    /// List backup sets: id, manifest, created, size, status.
    #[command(args_conflicts_with_subcommands = true)]
    Backups {
        #[command(subcommand)]
        command: Option<BackupsCommand>,
        name: Option<String>,
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: Output,
    },
    /// Restore backup set ID of Backup manifest NAME.
    Restore {
        name: String,
        id: String,
        /// Verify and show what would change; change nothing.
        #[arg(long = "dry-run")]
        dry_run: bool,
        /// Grafana: restore only these kinds (comma-separated).
        #[arg(long, value_name = "KIND", value_delimiter = ',')]
        only: Vec<String>,
        /// Grafana: a file (mode 0600) of datasource secure values.
        #[arg(long = "secure-values", value_name = "FILE")]
        secure_values: Option<PathBuf>,
    },
    /// Revision history of a Service, and undo.
    Rollout {
        #[command(subcommand)]
        command: rollout::RolloutCommand,
    },
    /// What a unit wrote: its journal, or its log file (unitlet's own
    /// without NAME).
    Logs(logs::LogsArgs),
    /// Check that this machine can keep unitlet's promises.
    Doctor {
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: Format,
    },
    /// Print the shell completion script for SHELL (bash, zsh or fish).
    Completions { shell: crate::manual::Shell },
    /// Print the manual page unitlet(1) in roff, every command included.
    Man,
}

/// Where `unitlet run` takes manifests from.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub(crate) enum Source {
    Dir,
    Etcd,
}

#[derive(Subcommand, Debug)]
pub(crate) enum FleetCommand {
    /// Validate DIR, then write its manifests and delete removed ones in one
    /// transaction.
    Push {
        dir: PathBuf,
        /// For this host only (its id, as `unitlet run --host-id`).
        #[arg(
            long,
            value_name = "HOST",
            conflicts_with = "all",
            required_unless_present = "all"
        )]
        host: Option<String>,
        /// For every host.
        #[arg(long)]
        all: bool,
    },
    /// Every live host's objects.
    Get {
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: Output,
    },
    /// Hosts whose operator is alive.
    Hosts {
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: Output,
    },
    /// Roll DIR out in waves: a canary, then a share of the hosts at a
    /// time, each wave Ready before the next; halt and put back at the
    /// first failing host.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Rollout {
        #[command(subcommand)]
        command: Option<FleetRolloutCommand>,
        #[command(flatten)]
        args: FleetRolloutArgs,
    },
}

/// `unitlet fleet rollout DIR`'s flags.
#[derive(clap::Args, Debug)]
pub(crate) struct FleetRolloutArgs {
    /// The manifests directory to roll out.
    #[arg(required = true)]
    pub dir: Option<PathBuf>,
    /// To every host, ending with `all/` written.
    #[arg(
        long,
        conflicts_with = "selector",
        required_unless_present = "selector"
    )]
    pub all: bool,
    /// To the hosts whose labels match KEY=VALUE[,KEY=VALUE].
    #[arg(long, value_name = "KEY=VALUE")]
    pub selector: Option<String>,
    /// Hosts in the first wave.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub canary: usize,
    /// Share of the other hosts per later wave, `1%` to `100%`.
    #[arg(long, value_name = "P%", default_value = "25%", value_parser = parse_wave_percent)]
    pub wave: u32,
    /// How long each host must stay Ready before its wave counts.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration_or_zero)]
    pub stable: Duration,
    /// How long a host may take to be Ready after its wave is written.
    #[arg(long = "progress-deadline", value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub progress_deadline: Duration,
    /// On a failing host, halt but leave the changed hosts as they are.
    #[arg(long = "no-undo")]
    pub no_undo: bool,
}

#[derive(Subcommand, Debug)]
pub(crate) enum FleetRolloutCommand {
    /// The newest rollout: phase, wave, each host's verdict, the halt.
    Status {
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: Output,
    },
    /// Every rollout, one line each.
    History,
    /// Continue the unfinished rollout from its wave.
    Resume,
    /// Put back every host the unfinished rollout changed.
    Undo,
}

/// `--wave 25%` (the `%` may be left out).
fn parse_wave_percent(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{s:?} is not a percentage such as 25%"))?;
    if (1..=100).contains(&n) {
        Ok(n)
    } else {
        Err(format!("{s:?}: the share of hosts per wave is 1% to 100%"))
    }
}

/// A duration, where `0` (no wait) is allowed too.
fn parse_duration_or_zero(s: &str) -> Result<Duration, String> {
    if s.trim().trim_end_matches('s') == "0" {
        return Ok(Duration::ZERO);
    }
    manifest::parse_duration(s)
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    manifest::parse_duration(s)
}

/// `--host-label KEY=VALUE`: a bad label is a usage error (exit 2).
fn parse_host_label(s: &str) -> Result<(String, String), String> {
    crate::fleet::parse_label(s).map_err(|e| e.to_string())
}

/// Runs the `unitlet` command line (`main.rs` calls only this): parses the
/// arguments, runs the command and returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    // Like other Unix tools: `unitlet describe x | head` ends quietly
    // instead of panicking on a closed pipe. Only for commands that talk
    // to no HTTP server or etcd: there a peer that closes a connection
    // (a TLS handshake refused, a server restarting) would kill the
    // command without a word, so they keep SIGPIPE ignored and their
    // sockets report EPIPE as errors, as the operator's do.
    if matches!(
        cli.command,
        Command::Plan
            | Command::Validate(_)
            | Command::Schema
            | Command::Get { .. }
            | Command::Describe { .. }
            | Command::Render { .. }
            | Command::Backups { .. }
            | Command::Logs(_)
            | Command::Completions { .. }
            | Command::Man
    ) {
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    init_tracing(matches!(cli.command, Command::Run { .. }));
    let explicit_manifests = cli.manifests.is_some();
    let mut loc = Locations::resolve(cli.manifests, cli.state_dir, cli.unit_dir, cli.bus)
        .with_alertmanager(Some(cli.alertmanager));
    // A state directory fed from etcd has its manifests under it.
    match &cli.command {
        Command::Run {
            source: Source::Etcd,
            ..
        } => loc.manifests = crate::fleet::manifests_dir(&loc.state_dir),
        Command::Run { .. } => {}
        _ if !explicit_manifests => {
            if let Some(d) = crate::fleet::commands_manifests_dir(&loc.state_dir) {
                loc.manifests = d;
            }
        }
        _ => {}
    }
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)
        .and_then(|rt| rt.block_on(dispatch(cli.command, loc)));
    if let Err(e) = &result {
        e.report();
    }
    error::exit_status(&result)
}

fn init_tracing(operator: bool) {
    let default = if operator { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("UNITLET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Under systemd the journal adds timestamps already.
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    use std::io::IsTerminal;
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    if journal {
        let _ = b.without_time().try_init();
    } else {
        let _ = b.try_init();
    }
}

/// The user manager, checked to have the unit directory on its search path.
async fn connect(loc: &Locations) -> Result<Systemd, CliError> {
    let sd = Systemd::connect(loc.bus.as_deref()).await?;
    sd.check_unit_dir(&loc.unit_dir).await?;
    Ok(sd)
}

fn exe() -> PathBuf {
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("unitlet"))
}

async fn dispatch(cmd: Command, loc: Locations) -> CliResult {
    match cmd {
        Command::Run {
            resync,
            metrics_addr,
            gc_grace,
            source,
            host_id,
            lease_ttl,
            host_labels,
            etcd,
        } => {
            let fleet = match source {
                Source::Dir if !host_labels.is_empty() => {
                    return Err(crate::fleet::FleetError::Usage(
                        "--host-label needs --source etcd: labels are published in etcd for `fleet rollout --selector`; add --source etcd or drop --host-label".into(),
                    )
                    .into());
                }
                Source::Dir => None,
                Source::Etcd => Some(crate::fleet::FleetOptions {
                    etcd,
                    host: crate::fleet::host_id(host_id.as_deref())?,
                    state_dir: loc.state_dir.clone(),
                    lease_ttl,
                    labels: crate::fleet::label_map(host_labels)?,
                }),
            };
            run(loc, resync, &metrics_addr, gc_grace, fleet).await
        }
        Command::Fleet { etcd, command } => fleet::fleet_command(&etcd, command).await,
        Command::Apply { timeout, gc_grace } => apply(loc, timeout, gc_grace).await,
        Command::Plan => plan(loc).await,
        Command::Validate(args) => validate::validate(&loc, &args).await,
        Command::Schema => {
            println!("{:#}", manifest::json_schema());
            Ok(())
        }
        Command::Get { name, output } => view::get(&loc, name.as_deref(), output).await,
        Command::Describe { name } => view::describe(&loc, &name).await,
        Command::Render { name, out } => render_cmd(&loc, &name, out.as_deref()),
        Command::Backup { name } => backup::backup(&loc, name).await,
        Command::Backups {
            command: Some(BackupsCommand::Verify { name, id, deep }),
            ..
        } => backup::verify(&loc, name, id.as_deref(), deep).await,
        Command::Backups { name, output, .. } => {
            backup::backups(&loc, name.as_deref(), output == Output::Json).await
        }
        Command::Restore {
            name,
            id,
            dry_run,
            only,
            secure_values,
        } => {
            let args = crate::backup_cmd::RestoreArgs {
                dry_run,
                only,
                secure_values,
                progress: false,
            };
            backup::restore(&loc, name, id, args).await
        }
        Command::Doctor { output } => doctor::doctor(&loc, output).await,
        Command::Logs(args) => logs::command(&loc, args).await,
        Command::Rollout { command } => rollout::command(&loc, command).await,
        Command::Completions { shell } => {
            crate::manual::completions(Cli::command(), shell, &mut std::io::stdout().lock());
            Ok(())
        }
        Command::Man => crate::manual::man_page(Cli::command(), &mut std::io::stdout().lock())
            .map_err(CliError::Man),
    }
}

/// `unitlet run`: the operator, until SIGTERM or SIGINT.
async fn run(
    loc: Locations,
    resync: Duration,
    metrics_addr: &str,
    gc_grace: Duration,
    fleet: Option<crate::fleet::FleetOptions>,
) -> CliResult {
    let metrics_addr = if metrics_addr == "off" || metrics_addr.is_empty() {
        None
    } else {
        let addr = metrics_addr.parse();
        Some(addr.map_err(|_| CliError::MetricsAddr(metrics_addr.to_owned()))?)
    };
    let opts = crate::operator::RunOptions {
        loc,
        resync,
        metrics_addr,
        exe: exe(),
        gc_grace,
        fleet,
    };
    Ok(crate::operator::run(opts, shutdown_signal()).await?)
}

/// The state lock for a command a person runs: if it is busy, say on
/// standard error whom it waits for.
pub(crate) async fn state_lock(
    state_dir: &std::path::Path,
    what: &str,
) -> Result<crate::lock::StateLock, crate::lock::LockError> {
    crate::lock::StateLock::acquire(state_dir, what, |holder| {
        let (pid, who) = holder.split_once(' ').unwrap_or((holder, "unitlet"));
        eprintln!(
            "waiting for {who} (PID {pid}) to finish writing to {}",
            state_dir.display()
        );
    })
    .await
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is
/// called, not when the future is first polled: a SIGTERM that arrives
/// while the operator starts up must stop it cleanly, not kill it.
#[expect(
    clippy::expect_used,
    reason = "SIGTERM and SIGINT handlers install inside the tokio runtime main builds with signals enabled"
)]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
}

/// How many passes `apply` runs at most: the first acts, later ones fold in
/// what the first waited for (readiness, config reloads, the grace of a
/// deleted manifest) and confirm.
const APPLY_ROUNDS: usize = 4;

/// What `apply`'s passes add up to.
#[derive(Default)]
struct ApplyTally {
    actions: usize,
    daemon_reloads: usize,
    plan_text: String,
    failures: std::collections::BTreeMap<String, String>,
    errors: Vec<manifest::ManifestError>,
    status: Status,
    /// Interrupted restores, recovered before each round plans.
    recoveries: crate::prometheus::recover::Recoveries,
}

/// What one `apply` pass leaves to wait for outside the lock.
struct Pending {
    work: Vec<crate::work::Work>,
    gc_until: Option<tokio::time::Instant>,
}

/// One `apply` pass under the state lock: fold in what the previous pass
/// waited for, plan, act, save the status.
async fn apply_round(
    loc: &Locations,
    sd: &impl crate::manager::UserManager,
    rec: &mut Reconciler,
    outcomes: Vec<crate::work::Outcome>,
    tally: &mut ApplyTally,
) -> Result<Pending, CliError> {
    let lock = state_lock(&loc.state_dir, "unitlet apply").await?;
    let mut status = Status::load_for_update_async(&loc.status_file()).await;
    for o in outcomes {
        rec.finish(o, &mut status);
    }
    tally.recoveries.run(loc, sd).await;
    let prep = rec.prepare(sd, &status).await?;
    tally.errors = prep.loaded.errors.clone();
    if !prep.plan.is_empty() {
        tally.plan_text.push_str(&prep.plan.to_string());
    }
    let gc_until = prep.gc_waiting.values().max().copied();
    let report = match rec.apply(sd, prep, &mut status).await {
        Ok(report) => report,
        Err(e) => {
            // What the pass did before it failed (stops, removals, files
            // written) is in `status`: keep it, with why the pass stopped.
            status.operator_error = Some(crate::error_chain(&e));
            status.stamp("unitlet apply");
            if let Err(save) = status.save_async(&loc.status_file()).await {
                tracing::warn!("{}", crate::error_chain(&save));
            }
            return Err(e.into());
        }
    };
    tally.actions += report.actions;
    tally.daemon_reloads += report.daemon_reloads;
    tally.failures.extend(report.failures);
    status.operator_error = None;
    status.stamp("unitlet apply");
    status.save_async(&loc.status_file()).await?;
    drop(lock);
    tally.status = status;
    Ok(Pending {
        work: report.work,
        gc_until,
    })
}

async fn apply(loc: Locations, timeout: Duration, gc_grace: Duration) -> CliResult {
    let sd = connect(&loc).await?;
    let mut rec = Reconciler::new(loc.clone(), exe());
    rec.set_job_timeout(timeout);
    rec.set_start_wait(timeout);
    rec.set_gc_grace(gc_grace);
    let started = std::time::Instant::now();
    let mut tally = ApplyTally::default();
    let mut outcomes = Vec::new();
    for round in 0..APPLY_ROUNDS {
        let pending = apply_round(&loc, &sd, &mut rec, outcomes, &mut tally).await?;
        if (pending.work.is_empty() && pending.gc_until.is_none()) || round + 1 == APPLY_ROUNDS {
            break;
        }
        // Wait outside the lock, so an operator beside us is not held up.
        let work = pending
            .work
            .into_iter()
            .map(|w| w.run(sd.clone(), rec.http_client(), timeout));
        outcomes = futures_util::future::join_all(work).await;
        if let Some(until) = pending.gc_until {
            tokio::time::sleep_until(until).await;
        }
    }
    print_apply_summary(&tally, started.elapsed())
}

/// What `apply` did and what is not Ready, and so its exit status.
fn print_apply_summary(tally: &ApplyTally, took: Duration) -> CliResult {
    if !tally.plan_text.is_empty() {
        print!("{}", tally.plan_text);
    }
    for e in &tally.errors {
        eprintln!("invalid: {e}");
    }
    for (m, e) in &tally.failures {
        eprintln!("failed: {m}: {e}");
    }
    let status = &tally.status;
    let not_ready: Vec<&ObjectStatus> = status.objects.values().filter(|o| !o.is_ready()).collect();
    for o in &not_ready {
        if let Some(c) = o.ready()
            && !tally.failures.contains_key(&o.name)
        {
            eprintln!("not ready: {}: {} ({})", o.name, c.message, c.reason);
        }
    }
    println!(
        "{} object(s): {} ready, {} not ready; {} action(s), {} daemon-reload(s) in {:.0?}",
        status.objects.len(),
        status.objects.len() - not_ready.len(),
        not_ready.len(),
        tally.actions,
        tally.daemon_reloads,
        took
    );
    success(not_ready.is_empty() && tally.errors.is_empty())
}

/// `Ok` when the answer is yes, else the quiet "no" (exit 1).
fn success(yes: bool) -> CliResult {
    if yes {
        Ok(())
    } else {
        Err(CliError::Unsuccessful)
    }
}

async fn plan(loc: Locations) -> CliResult {
    let sd = connect(&loc).await?;
    let mut rec = Reconciler::new(loc.clone(), exe());
    // `plan` shows what will happen to a deleted manifest's units, not the
    // grace before it.
    rec.set_gc_grace(Duration::ZERO);
    let status = Status::load(&loc.status_file());
    if let Some(w) = status.file_warning() {
        eprintln!("warning: {w}");
    }
    let prep = rec.prepare(&sd, &status).await?;
    for e in &prep.loaded.errors {
        println!("! invalid, not applied (its units are kept as they are): {e}");
    }
    for p in crate::journal::pending(&loc.state_dir) {
        println!("! {}: {}", p.service, p.condition().1);
    }
    print!("{}", prep.plan);
    success(prep.plan.is_empty())
}

fn render_cmd(loc: &Locations, name: &str, out: Option<&Path>) -> CliResult {
    let set = manifest::load_dir(&loc.manifests)?;
    let Some(m) = set.get(name) else {
        return Err(match set.held.get(name) {
            Some(e) => CliError::InvalidManifest {
                name: name.to_owned(),
                error: e.clone(),
            },
            None => CliError::NoSuchManifest {
                name: name.to_owned(),
                dir: loc.manifests.clone(),
            },
        });
    };
    let mut rec = Reconciler::new(loc.clone(), exe());
    rec.set_program(crate::program::for_units(loc, &rec.render_context().exe));
    let units = render::render(m, rec.render_context());
    for u in &units {
        match out {
            Some(dir) => {
                let path = dir.join(&u.name);
                crate::fsutil::atomic_write(&path, u.content.as_bytes(), 0o644).map_err(
                    |source| CliError::Export {
                        path: path.clone(),
                        source,
                    },
                )?;
                println!("{}", path.display());
            }
            None => {
                println!("# {}", u.name);
                print!("{}", u.content);
                if units.len() > 1 {
                    println!();
                }
            }
        }
    }
    Ok(())
}
