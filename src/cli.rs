//! The command line: parse arguments, call the library, map errors to exit
//! codes (see the contract's Commands table).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::locations::Locations;
use crate::manifest;
use crate::reconcile::{ReconcileError, Reconciler};
use crate::render;
use crate::status::{ObjectStatus, Status};
use crate::systemd::Systemd;

#[derive(Parser, Debug)]
#[command(
    name = "unitlet",
    version,
    about = "A Kubernetes-style operator for systemd user units",
    propagate_version = true
)]
pub struct Cli {
    /// Directory of manifests.
    #[arg(long, global = true, env = "UNITLET_MANIFESTS", value_name = "DIR")]
    pub manifests: Option<PathBuf>,
    /// Directory for status and backups.
    #[arg(
        long = "state-dir",
        global = true,
        env = "UNITLET_STATE_DIR",
        value_name = "DIR"
    )]
    pub state_dir: Option<PathBuf>,
    /// Where unit files are written; must be on the user manager's UnitPath.
    #[arg(
        long = "unit-dir",
        global = true,
        env = "UNITLET_UNIT_DIR",
        value_name = "DIR"
    )]
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
        default_value = crate::alertmanager::DEFAULT_URL
    )]
    pub alertmanager: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Output {
    Table,
    Wide,
    Json,
    Yaml,
}

#[derive(Subcommand, Debug)]
pub enum Command {
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
    /// Parse and validate manifests (the whole directory by default).
    Validate { files: Vec<PathBuf> },
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
    Backups {
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
    },
    /// Revision history of a Service, and undo (issue 12).
    Rollout {
        #[command(subcommand)]
        command: crate::rollout::RolloutCommand,
    },
    /// Check that this machine can keep unitlet's promises (issue 12).
    Doctor {
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: crate::doctor::Format,
    },
    /// Print the shell completion script for SHELL (bash, zsh or fish).
    Completions { shell: crate::manual::Shell },
    /// Print the manual page unitlet(1) in roff, every command included.
    Man,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    manifest::parse_duration(s)
}

/// Exit codes.
pub const OK: i32 = 0;
pub const NOT_OK: i32 = 1;
pub const OPERATIONAL: i32 = 2;

pub fn main() -> i32 {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run { .. }) {
        // Like other Unix tools: `unitlet describe x | head` ends quietly
        // instead of panicking on a closed pipe. (The operator keeps
        // SIGPIPE ignored: its sockets report EPIPE as errors.)
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    init_tracing(matches!(cli.command, Command::Run { .. }));
    let loc = Locations::resolve(cli.manifests, cli.state_dir, cli.unit_dir, cli.bus)
        .with_alertmanager(Some(cli.alertmanager));
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return OPERATIONAL;
        }
    };
    rt.block_on(dispatch(cli.command, loc))
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

fn fail(msg: impl std::fmt::Display) {
    eprintln!("error: {msg}");
}

async fn connect(loc: &Locations) -> Result<Systemd, i32> {
    match Systemd::connect(loc.bus.as_deref()).await {
        Ok(sd) => {
            if let Err(e) = sd.check_unit_dir(&loc.unit_dir).await {
                fail(crate::error_chain(&e));
                return Err(OPERATIONAL);
            }
            Ok(sd)
        }
        Err(e) => {
            fail(crate::error_chain(&e));
            Err(OPERATIONAL)
        }
    }
}

fn exe() -> PathBuf {
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("unitlet"))
}

async fn dispatch(cmd: Command, loc: Locations) -> i32 {
    match cmd {
        Command::Run {
            resync,
            metrics_addr,
            gc_grace,
        } => {
            let metrics_addr = if metrics_addr == "off" || metrics_addr.is_empty() {
                None
            } else {
                match metrics_addr.parse() {
                    Ok(a) => Some(a),
                    Err(_) => {
                        fail(format!(
                            "--metrics-addr {metrics_addr:?} is not HOST:PORT (e.g. 127.0.0.1:9464) or \"off\""
                        ));
                        return OPERATIONAL;
                    }
                }
            };
            let opts = crate::operator::RunOptions {
                loc,
                resync,
                metrics_addr,
                exe: exe(),
                gc_grace,
            };
            match crate::operator::run(opts, shutdown_signal()).await {
                Ok(()) => OK,
                Err(e) => {
                    fail(crate::error_chain(&e));
                    OPERATIONAL
                }
            }
        }
        Command::Apply { timeout, gc_grace } => apply(loc, timeout, gc_grace).await,
        Command::Plan => plan(loc).await,
        Command::Validate { files } => validate(&loc, &files),
        Command::Get { name, output } => get(&loc, name.as_deref(), output).await,
        Command::Describe { name } => describe(&loc, &name).await,
        Command::Render { name, out } => render_cmd(&loc, &name, out.as_deref()),
        Command::Backup { name } => crate::backup_cmd::backup(&loc, &name).await,
        Command::Backups { name, output } => {
            crate::backup_cmd::backups(&loc, name.as_deref(), output == Output::Json)
        }
        Command::Restore { name, id, dry_run } => {
            crate::backup_cmd::restore(&loc, &name, &id, dry_run).await
        }
        Command::Doctor { output } => crate::doctor::command(&loc, output).await,
        Command::Rollout { command } => crate::rollout::command(&loc, command).await,
        Command::Completions { shell } => {
            crate::manual::completions(shell, &mut std::io::stdout().lock());
            OK
        }
        Command::Man => match crate::manual::man_page(&mut std::io::stdout().lock()) {
            Ok(()) => OK,
            Err(e) => {
                fail(format!(
                    "cannot write the manual page to standard output: {e}"
                ));
                OPERATIONAL
            }
        },
    }
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is
/// called, not when the future is first polled: a SIGTERM that arrives
/// while the operator starts up must stop it cleanly, not kill it.
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

fn reconcile_exit(e: &ReconcileError) -> i32 {
    fail(crate::error_chain(e));
    OPERATIONAL
}

/// How many passes `apply` runs at most: the first acts, later ones fold in
/// what the first waited for (readiness, config reloads, the grace of a
/// deleted manifest) and confirm.
const APPLY_ROUNDS: usize = 4;

/// The state lock for a CLI command, saying whom it waits for.
async fn state_lock(loc: &Locations, what: &str) -> Result<crate::lock::StateLock, i32> {
    crate::lock::StateLock::acquire_announced(&loc.state_dir, what)
        .await
        .map_err(|e| {
            fail(crate::error_chain(&e));
            OPERATIONAL
        })
}

async fn apply(loc: Locations, timeout: Duration, gc_grace: Duration) -> i32 {
    let sd = match connect(&loc).await {
        Ok(sd) => sd,
        Err(code) => return code,
    };
    let mut rec = Reconciler::new(loc.clone(), exe());
    rec.job_timeout = timeout;
    rec.start_wait = timeout;
    rec.gc_grace = gc_grace;
    let mut outcomes: Vec<crate::work::Outcome> = Vec::new();
    let mut actions = 0;
    let mut daemon_reloads = 0;
    let mut plan_text = String::new();
    let started = std::time::Instant::now();
    let mut failures = std::collections::BTreeMap::new();
    let mut errors = Vec::new();
    let mut status = Status::default();
    for round in 0..APPLY_ROUNDS {
        let lock = match state_lock(&loc, "unitlet apply").await {
            Ok(l) => l,
            Err(code) => return code,
        };
        status = Status::load_async(&loc.status_file()).await;
        for o in outcomes.drain(..) {
            rec.finish(o, &mut status);
        }
        let prep = match rec.prepare(&sd, &status).await {
            Ok(p) => p,
            Err(e) => return reconcile_exit(&e),
        };
        errors = prep.loaded.errors.clone();
        if !prep.plan.is_empty() {
            plan_text.push_str(&prep.plan.to_string());
        }
        let gc_until = prep.gc_waiting.values().max().copied();
        let report = match rec.apply(&sd, prep, &mut status).await {
            Ok(r) => r,
            Err(e) => return reconcile_exit(&e),
        };
        actions += report.actions;
        daemon_reloads += report.daemon_reloads;
        failures.extend(report.failures);
        status.operator_error = None;
        status.stamp("unitlet apply");
        if let Err(e) = status.save_async(&loc.status_file()).await {
            fail(crate::error_chain(&e));
            return OPERATIONAL;
        }
        drop(lock);
        if (report.work.is_empty() && gc_until.is_none()) || round + 1 == APPLY_ROUNDS {
            break;
        }
        // Wait outside the lock, so an operator beside us is not held up.
        let work = report
            .work
            .into_iter()
            .map(|w| w.run(sd.clone(), rec.http.clone(), timeout));
        outcomes = futures_util::future::join_all(work).await;
        if let Some(until) = gc_until {
            tokio::time::sleep_until(tokio::time::Instant::from_std(until)).await;
        }
    }
    if !plan_text.is_empty() {
        print!("{plan_text}");
    }
    for e in &errors {
        eprintln!("invalid: {e}");
    }
    for (m, e) in &failures {
        eprintln!("failed: {m}: {e}");
    }
    let not_ready: Vec<&ObjectStatus> = status.objects.values().filter(|o| !o.is_ready()).collect();
    for o in &not_ready {
        if let Some(c) = o.ready()
            && !failures.contains_key(&o.name)
        {
            eprintln!("not ready: {}: {} ({})", o.name, c.message, c.reason);
        }
    }
    let ready = status.objects.len() - not_ready.len();
    println!(
        "{} object(s): {} ready, {} not ready; {} action(s), {} daemon-reload(s) in {:.0?}",
        status.objects.len(),
        ready,
        not_ready.len(),
        actions,
        daemon_reloads,
        started.elapsed()
    );
    if not_ready.is_empty() && errors.is_empty() {
        OK
    } else {
        NOT_OK
    }
}

async fn plan(loc: Locations) -> i32 {
    let sd = match connect(&loc).await {
        Ok(sd) => sd,
        Err(code) => return code,
    };
    let mut rec = Reconciler::new(loc.clone(), exe());
    // `plan` shows what will happen to a deleted manifest's units, not the
    // grace before it.
    rec.gc_grace = Duration::ZERO;
    rec.recover_restores = false;
    let status = Status::load(&loc.status_file());
    let prep = match rec.prepare(&sd, &status).await {
        Ok(p) => p,
        Err(e) => return reconcile_exit(&e),
    };
    for e in &prep.loaded.errors {
        println!("! invalid, not applied (its units are kept as they are): {e}");
    }
    for p in crate::journal::pending(&loc.state_dir) {
        println!("! {}: {}", p.service, p.condition().1);
    }
    print!("{}", prep.plan);
    if prep.plan.is_empty() { OK } else { NOT_OK }
}

fn validate(loc: &Locations, files: &[PathBuf]) -> i32 {
    let set = if files.is_empty() {
        match manifest::load_dir(&loc.manifests) {
            Ok(s) => s,
            Err(e) => {
                fail(crate::error_chain(&e));
                return NOT_OK;
            }
        }
    } else {
        manifest::load_files(files)
    };
    for e in &set.errors {
        println!("{e}");
    }
    println!(
        "{} manifest(s) valid, {} error(s) in {} file(s)",
        set.manifests.len(),
        set.errors.len(),
        set.files.len()
    );
    if set.errors.is_empty() { OK } else { NOT_OK }
}

/// Status as `get` shows it: the persisted status, corrected by the current
/// manifest files (a file broken since the last pass shows as such) and by
/// live unit states when systemd is reachable.
async fn current_status(loc: &Locations) -> Result<Status, i32> {
    let mut status = Status::load(&loc.status_file());
    // An unreadable directory shows the persisted status as it is.
    if let Ok(set) = manifest::load_dir(&loc.manifests) {
        {
            for m in &set.manifests {
                status.objects.entry(m.name.clone()).or_insert_with(|| {
                    let mut o = ObjectStatus {
                        kind: m.kind().to_string(),
                        name: m.name.clone(),
                        file: m.file.clone(),
                        conditions: vec![],
                        unit: None,
                        failures: 0,
                        spec_hash: String::new(),
                    };
                    o.set_condition(
                        "Ready",
                        "Unknown",
                        "NotApplied",
                        "not applied yet; run `unitlet apply` or start `unitlet run`",
                    );
                    o
                });
            }
            for (name, err) in &set.held {
                let o = status
                    .objects
                    .entry(name.clone())
                    .or_insert_with(|| ObjectStatus {
                        kind: "Service".into(),
                        name: name.clone(),
                        file: err.file.clone(),
                        conditions: vec![],
                        unit: None,
                        failures: 0,
                        spec_hash: String::new(),
                    });
                if o.ready().is_none_or(|c| {
                    c.reason != "Invalid" || !c.message.starts_with(&err.to_string())
                }) {
                    o.set_condition("Ready", "False", "Invalid", &err.to_string());
                }
            }
            let present: std::collections::BTreeSet<&String> = set
                .manifests
                .iter()
                .map(|m| &m.name)
                .chain(set.held.keys())
                .collect();
            status
                .objects
                .retain(|n, o| present.contains(n) || set.broken_files.contains(&o.file));
        }
    }
    let names: Vec<String> = status
        .objects
        .values()
        .filter_map(|o| o.unit.as_ref().map(|u| u.name.clone()))
        .collect();
    let live = match Systemd::connect(loc.bus.as_deref()).await {
        Ok(sd) => sd.list_units(&names).await.map_err(|e| e.to_string()),
        Err(e) => Err(crate::error_chain(&e)),
    };
    for o in status.objects.values_mut() {
        let Some(u) = o.unit.as_mut() else { continue };
        match &live {
            Ok(live) => {
                if let Some((l, _)) = live.get(&u.name) {
                    u.active_state = l.active_state.clone();
                    u.sub_state = l.sub_state.clone();
                }
            }
            Err(_) => {
                u.active_state = "unknown".into();
                u.sub_state = "unknown".into();
            }
        }
        correct_ready(o, live.as_ref().err());
    }
    crate::journal::annotate(&loc.state_dir, &mut status);
    Ok(status)
}

/// The last reconcile's Ready condition may be older than the unit's
/// state: never show Ready True for a unit that is not running now.
pub(crate) fn correct_ready(o: &mut ObjectStatus, unreachable: Option<&String>) {
    let Some(u) = o.unit.clone() else { return };
    if !o.is_ready() {
        return;
    }
    if let Some(e) = unreachable {
        o.set_condition(
            "Ready",
            "Unknown",
            "ManagerUnreachable",
            &format!(
                "cannot check {} live ({e}); the last reconcile found it ready",
                u.name
            ),
        );
        return;
    }
    let stopped_as_declared = o.ready().is_some_and(|c| c.reason == "Stopped")
        && matches!(u.active_state.as_str(), "inactive" | "failed");
    let fine = stopped_as_declared
        || (u.active_state == "active" && o.ready().is_none_or(|c| c.reason != "Stopped"));
    if fine {
        return;
    }
    let (reason, what) = match (u.active_state.as_str(), u.sub_state.as_str()) {
        (_, "auto-restart") => (
            "Restarting",
            "is waiting to be restarted by systemd after it exited",
        ),
        ("failed", _) => ("Failed", "has failed"),
        ("activating" | "reloading", _) => ("Starting", "is starting"),
        ("active", _) => (
            "NotReconciled",
            "is running but the manifest wants it stopped",
        ),
        _ => ("NotRunning", "is not running"),
    };
    o.set_condition(
        "Ready",
        "False",
        reason,
        &format!(
            "{} {what} ({}/{}) since the last reconcile; see `journalctl --user -u {}`",
            u.name, u.active_state, u.sub_state, u.name
        ),
    );
}

/// How fresh a status is, for people.
fn freshness(status: &Status, operator: Option<u32>) -> String {
    let when = status
        .reconciled_at
        .as_deref()
        .and_then(|t| humantime::parse_rfc3339(t).ok())
        .map(|t| {
            let ago = std::time::SystemTime::now()
                .duration_since(t)
                .unwrap_or_default();
            format!(
                "last reconciled {} ago by {}",
                humantime::format_duration(Duration::from_secs(ago.as_secs())),
                status.reconciled_by.as_deref().unwrap_or("unitlet")
            )
        })
        .unwrap_or_else(|| "never reconciled".into());
    match operator {
        Some(pid) => format!("{when}; operator running (PID {pid})"),
        None => format!(
            "{when}; no operator running, so conditions are as of then (unit states are live); start `unitlet run` or run `unitlet apply`"
        ),
    }
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct GetItem<'a> {
    kind: &'a str,
    name: &'a str,
    file: &'a std::path::Path,
    conditions: &'a [crate::status::Condition],
    #[serde(skip_serializing_if = "Option::is_none")]
    unit: Option<&'a crate::status::UnitStatus>,
    /// When the status was last reconciled (RFC 3339), null if never.
    last_reconcile_time: Option<&'a str>,
    /// Whether a `unitlet run` is keeping this status current.
    operator_running: bool,
}

async fn get(loc: &Locations, name: Option<&str>, output: Output) -> i32 {
    let status = match current_status(loc).await {
        Ok(s) => s,
        Err(c) => return c,
    };
    if let Some(e) = &status.operator_error {
        eprintln!("warning: the operator's last pass failed: {e}");
    }
    let operator = crate::lock::operator_pid(&loc.state_dir);
    let objs: Vec<&ObjectStatus> = match name {
        Some(n) => match status.objects.get(n) {
            Some(o) => vec![o],
            None => {
                fail(format!(
                    "no manifest named {n:?} in {}; `unitlet get` lists them",
                    loc.manifests.display()
                ));
                return NOT_OK;
            }
        },
        None => status.objects.values().collect(),
    };
    let items: Vec<GetItem> = objs
        .iter()
        .map(|o| GetItem {
            kind: &o.kind,
            name: &o.name,
            file: &o.file,
            conditions: &o.conditions,
            unit: o.unit.as_ref(),
            last_reconcile_time: status.reconciled_at.as_deref(),
            operator_running: operator.is_some(),
        })
        .collect();
    let mut out = std::io::stdout().lock();
    match output {
        Output::Json => {
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&items).expect("serializable")
            );
        }
        Output::Yaml => {
            let _ = write!(
                out,
                "{}",
                serde_saphyr::to_string(&items).unwrap_or_default()
            );
        }
        Output::Table | Output::Wide => {
            let wide = output == Output::Wide;
            let mut rows = vec![];
            for o in &objs {
                let c = o.ready();
                let mut row = vec![
                    o.name.clone(),
                    o.kind.clone(),
                    c.map(|c| c.status.clone())
                        .unwrap_or_else(|| "Unknown".into()),
                    c.map(|c| c.reason.clone()).unwrap_or_default(),
                    o.unit
                        .as_ref()
                        .map(|u| format!("{}/{}", u.active_state, u.sub_state))
                        .unwrap_or_default(),
                ];
                if wide {
                    row.push(o.file.display().to_string());
                    row.push(c.map(|c| c.message.clone()).unwrap_or_default());
                }
                rows.push(row);
            }
            let mut header = vec!["NAME", "KIND", "READY", "REASON", "STATE"];
            if wide {
                header.extend(["MEMORY", "CPU", "TASKS", "FILE", "MESSAGE"]);
                let usage = live_usage(loc, &objs).await;
                for (row, o) in rows.iter_mut().zip(&objs) {
                    let (mem, cpu, tasks) = usage
                        .get(&o.name)
                        .cloned()
                        .unwrap_or_else(|| ("-".into(), "-".into(), "-".into()));
                    row.insert(5, mem);
                    row.insert(6, cpu);
                    row.insert(7, tasks);
                }
            }
            print_table(&mut out, &header, &rows);
            let _ = writeln!(out, "\n{}", freshness(&status, operator));
        }
    }
    OK
}

/// Live use against limits, short form for `get -o wide`:
/// `(memory current/max, cpu quota, tasks current/max)` by manifest.
async fn live_usage(
    loc: &Locations,
    objs: &[&ObjectStatus],
) -> std::collections::HashMap<String, (String, String, String)> {
    let mut out = std::collections::HashMap::new();
    let Ok(sd) = Systemd::connect(loc.bus.as_deref()).await else {
        return out;
    };
    for o in objs {
        let Some(u) = o.unit.as_ref().filter(|u| u.name.ends_with(".service")) else {
            continue;
        };
        let Ok(path) = sd.load_unit(&u.name).await else {
            continue;
        };
        let Ok(p) = sd
            .get_all(&u.name, &path, "org.freedesktop.systemd1.Service")
            .await
        else {
            continue;
        };
        let n = |k: &str| {
            p.get(k)
                .and_then(|v| u64::try_from(v).ok())
                .filter(|v| *v != u64::MAX)
        };
        let mem = format!(
            "{}/{}",
            n("MemoryCurrent")
                .map(crate::render::human_bytes)
                .unwrap_or_else(|| "-".into()),
            n("MemoryMax")
                .map(crate::render::human_bytes)
                .unwrap_or_else(|| "∞".into())
        );
        let cpu = n("CPUQuotaPerSecUSec")
            .map(|v| format!("{}%", v / 10_000))
            .unwrap_or_else(|| "∞".into());
        let tasks = format!(
            "{}/{}",
            n("TasksCurrent")
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into()),
            n("TasksMax")
                .map(|v| v.to_string())
                .unwrap_or_else(|| "∞".into())
        );
        out.insert(o.name.clone(), (mem, cpu, tasks));
    }
    out
}

/// A plain aligned table, as `kubectl get` prints them.
pub fn print_table(out: &mut impl Write, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}   ", w = widths[i]));
            }
        }
        s.trim_end().to_string()
    };
    let _ = writeln!(out, "{}", line(header.to_vec()));
    for r in rows {
        let _ = writeln!(out, "{}", line(r.iter().map(String::as_str).collect()));
    }
}

async fn describe(loc: &Locations, name: &str) -> i32 {
    let status = match current_status(loc).await {
        Ok(s) => s,
        Err(c) => return c,
    };
    let Some(o) = status.objects.get(name) else {
        fail(format!(
            "no manifest named {name:?} in {}; `unitlet get` lists them",
            loc.manifests.display()
        ));
        return NOT_OK;
    };
    println!("Name:   {}", o.name);
    println!("Kind:   {}", o.kind);
    println!("File:   {}", o.file.display());
    println!(
        "Status: {}",
        freshness(&status, crate::lock::operator_pid(&loc.state_dir))
    );
    println!("Conditions:");
    for c in &o.conditions {
        println!(
            "  {}={}  reason={}  since {}",
            c.type_, c.status, c.reason, c.last_transition_time
        );
        println!("    {}", c.message);
    }
    if let Some(u) = &o.unit {
        println!("Unit:   {} ({}/{})", u.name, u.active_state, u.sub_state);
        if let Ok(sd) = Systemd::connect(loc.bus.as_deref()).await
            && let Ok(path) = sd.load_unit(&u.name).await
        {
            let unit_props = sd
                .get_all(&u.name, &path, "org.freedesktop.systemd1.Unit")
                .await
                .unwrap_or_default();
            let iface = if u.name.ends_with(".timer") {
                "org.freedesktop.systemd1.Timer"
            } else {
                "org.freedesktop.systemd1.Service"
            };
            let props = sd.get_all(&u.name, &path, iface).await.unwrap_or_default();
            let s = |m: &std::collections::HashMap<String, zbus::OwnedVariant>, k: &str| {
                m.get(k)
                    .and_then(|v| String::try_from(v.clone()).ok())
                    .unwrap_or_default()
            };
            let n = |k: &str| props.get(k).and_then(|v| u64::try_from(v).ok());
            let n32 = |k: &str| props.get(k).and_then(|v| u32::try_from(v).ok());
            println!("  FragmentPath:  {}", s(&unit_props, "FragmentPath"));
            println!("  UnitFileState: {}", s(&unit_props, "UnitFileState"));
            if let Some(pid) = n32("MainPID") {
                println!("  MainPID:       {pid}");
            }
            let r = s(&props, "Result");
            if !r.is_empty() {
                println!("  Result:        {r}");
            }
            if iface.ends_with("Service") {
                let fmt_bytes = |v: Option<u64>| match v {
                    None | Some(u64::MAX) => "-".to_string(),
                    Some(b) => crate::render::human_bytes(b),
                };
                let lim = |v: Option<u64>| match v {
                    None | Some(u64::MAX) => "unlimited".to_string(),
                    Some(b) => crate::render::human_bytes(b),
                };
                println!("Resources (live / limit):");
                println!(
                    "  Memory:  {} (peak {}) / max {}, high {}",
                    fmt_bytes(n("MemoryCurrent")),
                    fmt_bytes(n("MemoryPeak")),
                    lim(n("MemoryMax")),
                    lim(n("MemoryHigh"))
                );
                let cpu = n("CPUUsageNSec")
                    .filter(|v| *v != u64::MAX)
                    .map(|v| format!("{:.2}s", v as f64 / 1e9))
                    .unwrap_or_else(|| "-".into());
                let quota = n("CPUQuotaPerSecUSec")
                    .filter(|v| *v != u64::MAX)
                    .map(|v| format!("{}%", v / 10_000))
                    .unwrap_or_else(|| "unlimited".into());
                println!("  CPU:     {cpu} used / quota {quota}");
                let tasks = n("TasksCurrent")
                    .filter(|v| *v != u64::MAX)
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "-".into());
                let tmax = n("TasksMax")
                    .filter(|v| *v != u64::MAX)
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "unlimited".into());
                println!("  Tasks:   {tasks} / max {tmax}");
            }
        }
    }
    println!("Events:");
    let evs: Vec<_> = status.events_for(name).collect();
    if evs.is_empty() {
        println!("  <none>");
    }
    for e in evs.iter().rev().take(20).rev() {
        println!(
            "  {}  {:<7}  {:<14}  {}",
            e.time, e.type_, e.reason, e.message
        );
    }
    OK
}

fn render_cmd(loc: &Locations, name: &str, out: Option<&std::path::Path>) -> i32 {
    let set = match manifest::load_dir(&loc.manifests) {
        Ok(s) => s,
        Err(e) => {
            fail(crate::error_chain(&e));
            return NOT_OK;
        }
    };
    let Some(m) = set.get(name) else {
        if let Some(e) = set.held.get(name) {
            fail(format!("manifest {name:?} is invalid: {e}"));
        } else {
            fail(format!(
                "no manifest named {name:?} in {}",
                loc.manifests.display()
            ));
        }
        return NOT_OK;
    };
    let rec = Reconciler::new(loc.clone(), exe());
    let units = render::render(m, &rec.render_ctx);
    for u in &units {
        match out {
            Some(dir) => {
                let p = dir.join(&u.name);
                if let Err(e) = crate::fsutil::atomic_write(&p, u.content.as_bytes(), 0o644) {
                    fail(format!("cannot write {}: {e}", p.display()));
                    return NOT_OK;
                }
                println!("{}", p.display());
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
    OK
}
