//! `unitlet doctor`: runs the machine checks ([`crate::doctor::machine`]),
//! prints the report and ends with the exit status of its worst verdict.

use super::Format;
use super::error::{CliError, CliResult};
use crate::doctor::{Report, Severity};
use crate::locations::Locations;

/// `unitlet doctor [-o table|json]`.
pub(super) async fn doctor(loc: &Locations, format: Format) -> CliResult {
    let report = crate::doctor::machine::run(loc).await;
    let result = verdict(&report);
    match format {
        Format::Table => print!("{}", report.to_table()),
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&to_json(&report, &result)).unwrap_or_default()
        ),
    }
    result
}

/// What the report ends with: all OK is success, the worst verdict a WARN
/// or a FAIL is [`CliError::DoctorWarn`] or [`CliError::DoctorFail`].
fn verdict(report: &Report) -> CliResult {
    match report.worst() {
        Severity::Ok => Ok(()),
        Severity::Warn => Err(CliError::DoctorWarn),
        Severity::Fail => Err(CliError::DoctorFail),
    }
}

/// `{"checks": [...], "summary": {...}, "exitCode": N}`, `N` the exit
/// status the command ends with.
fn to_json(report: &Report, result: &CliResult) -> serde_json::Value {
    let n = |s| report.checks.iter().filter(|c| c.status == s).count();
    serde_json::json!({
        "checks": report.checks,
        "summary": {"ok": n(Severity::Ok), "warn": n(Severity::Warn), "fail": n(Severity::Fail)},
        "exitCode": super::error::exit_status(result),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Check;

    fn check(name: &str, status: Severity, reason: &str, fix: &str) -> Check {
        Check {
            check: name.into(),
            status,
            reason: reason.into(),
            fix: fix.into(),
        }
    }

    #[test]
    fn exit_code_is_the_worst_verdict() {
        let code = |r: &Report| super::super::error::exit_status(&verdict(r));
        let mut r = Report::default();
        assert_eq!(code(&r), 0);
        r.checks.push(check("a", Severity::Ok, "fine", ""));
        assert_eq!(code(&r), 0);
        r.checks.push(check("b", Severity::Warn, "meh", "do x"));
        assert_eq!(code(&r), 1);
        r.checks.push(check("c", Severity::Fail, "bad", "do y"));
        assert_eq!(code(&r), 2);
        let j = to_json(&r, &verdict(&r));
        assert_eq!(j["checks"][2]["status"], "FAIL");
        assert_eq!(j["summary"]["warn"], 1);
        assert_eq!(j["exitCode"], 2);
        assert!(j["checks"][0].get("fix").is_none());
        let t = r.to_table();
        assert!(t.contains("FAIL  c  bad\n"), "{t}");
        assert!(t.contains("fix: do y"), "{t}");
        assert!(t.ends_with("3 check(s): 1 OK, 1 WARN, 1 FAIL\n"), "{t}");
    }
}
