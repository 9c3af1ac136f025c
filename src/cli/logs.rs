//! `unitlet logs [NAME]`: the flags, and the output on standard output
//! (what is read and from where is `crate::logs`).

use crate::locations::Locations;
use crate::logs::{LogsError, LogsRequest};

use super::error::{CliError, CliResult};

#[derive(clap::Args, Debug, Clone, Default)]
pub struct LogsArgs {
    /// A manifest's name (its unit NAME.service) or a full unit name;
    /// unitlet's own log (unitlet.service) without it.
    pub name: Option<String>,
    /// Keep printing new lines as they are written.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Print only the last N lines.
    #[arg(short = 'n', long = "lines", value_name = "N")]
    pub lines: Option<usize>,
    /// Only lines since TIME, in journalctl's syntax ("2026-12-06 10:00",
    /// "-1h", "today"); journal only.
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    pub since: Option<String>,
}

/// `unitlet logs`: exit 0 printed; 1 no such unit; 2 operational error
/// (journalctl failing said why itself).
pub async fn command(loc: &Locations, args: LogsArgs) -> CliResult {
    let req = LogsRequest {
        name: args.name,
        follow: args.follow,
        lines: args.lines,
        since: args.since,
    };
    match crate::logs::logs(loc, &req, &mut std::io::stdout()).await {
        Ok(()) => Ok(()),
        Err(LogsError::Journalctl(_)) => Err(CliError::Unavailable),
        Err(e) => Err(CliError::Logs(e)),
    }
}
