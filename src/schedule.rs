//! Backup schedules: `every DURATION` or a 5-field cron expression, turned
//! into a systemd `OnCalendar=` expression so that `Persistent=true` can run a
//! missed backup at the next start (monotonic timers cannot).
//!
//! Pure: no I/O.

use std::fmt;
use std::time::Duration;

/// A Backup's `schedule`: `every DURATION` or a five-field cron expression,
/// and the `OnCalendar=` of its timer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// What the person wrote, for messages and `describe`.
    pub source: String,
    /// The systemd calendar expression it becomes.
    pub on_calendar: String,
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (OnCalendar={})", self.source, self.on_calendar)
    }
}

impl Schedule {
    /// Parses `every DURATION` (an interval the calendar can keep, e.g.
    /// `every 15m`, `every 1d`) or a cron expression; the error says what
    /// is wrong and what would do.
    pub fn parse(s: &str) -> Result<Schedule, String> {
        let t = s.trim();
        let on_calendar = if let Some(d) = t.strip_prefix("every ") {
            every(d.trim())?
        } else {
            cron(t)?
        };
        Ok(Schedule {
            source: t.to_string(),
            on_calendar,
        })
    }
}

fn every(d: &str) -> Result<String, String> {
    let dur: Duration = humantime::parse_duration(d)
        .map_err(|e| format!("invalid duration {d:?} in \"every {d}\" ({e})"))?;
    let secs = dur.as_secs();
    if dur.subsec_nanos() != 0 || secs == 0 {
        return Err(format!(
            "\"every {d}\": the interval must be a whole number of seconds, at least 1s"
        ));
    }
    let unsupported = || {
        format!(
            "\"every {d}\" cannot be kept on the calendar (it must divide a minute, an hour or a day evenly, or be 7d); \
             use e.g. every 15m, every 6h, every 1d, or a cron expression like \"30 */5 * * *\""
        )
    };
    Ok(match secs {
        s if s < 60 && 60 % s == 0 => format!("*-*-* *:*:00/{s}"),
        s if s < 3600 && s % 60 == 0 && 60 % (s / 60) == 0 => format!("*-*-* *:00/{}:00", s / 60),
        s if s < 86400 && s % 3600 == 0 && 24 % (s / 3600) == 0 => {
            format!("*-*-* 00/{}:00:00", s / 3600)
        }
        86400 => "*-*-* 00:00:00".to_string(),
        604800 => "Mon *-*-* 00:00:00".to_string(),
        _ => return Err(unsupported()),
    })
}

const DOW: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

/// One cron field → systemd calendar component.
fn field(f: &str, what: &str, min: u32, max: u32, step_start: u32) -> Result<String, String> {
    let num = |s: &str| -> Result<u32, String> {
        let n: u32 = s
            .parse()
            .map_err(|_| format!("cron {what} field {f:?}: {s:?} is not a number"))?;
        if n < min || n > max {
            return Err(format!(
                "cron {what} field {f:?}: {n} is outside {min}-{max}"
            ));
        }
        Ok(n)
    };
    let mut parts = Vec::new();
    for item in f.split(',') {
        if item == "*" {
            parts.push("*".to_string());
        } else if let Some(step) = item.strip_prefix("*/") {
            let s = num_step(step, f, what)?;
            parts.push(format!("{step_start:02}/{s}"));
        } else if let Some((range, step)) = item.split_once('/') {
            let s = num_step(step, f, what)?;
            let (a, b) = range
                .split_once('-')
                .ok_or_else(|| format!("cron {what} field {f:?}: expected a-b/step"))?;
            parts.push(format!("{:02}..{:02}/{s}", num(a)?, num(b)?));
        } else if let Some((a, b)) = item.split_once('-') {
            let (a, b) = (num(a)?, num(b)?);
            if a > b {
                return Err(format!(
                    "cron {what} field {f:?}: range {a}-{b} is backwards"
                ));
            }
            parts.push(format!("{a:02}..{b:02}"));
        } else {
            parts.push(format!("{:02}", num(item)?));
        }
    }
    if parts.iter().any(|p| p == "*") && parts.len() > 1 {
        return Err(format!(
            "cron {what} field {f:?}: * cannot be combined with other values"
        ));
    }
    Ok(parts.join(","))
}

fn num_step(s: &str, f: &str, what: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "cron {what} field {f:?}: step {s:?} must be a whole number ≥ 1"
        )),
    }
}

fn dow_field(f: &str) -> Result<String, String> {
    if f == "*" {
        return Ok(String::new());
    }
    let day = |s: &str| -> Result<usize, String> {
        let n: usize = s
            .parse()
            .map_err(|_| format!("cron day-of-week field {f:?}: {s:?} is not a number 0-7"))?;
        if n > 7 {
            return Err(format!("cron day-of-week field {f:?}: {n} is outside 0-7"));
        }
        Ok(n % 7)
    };
    let mut parts = Vec::new();
    for item in f.split(',') {
        if let Some((a, b)) = item.split_once('-') {
            let (a, b) = (day(a)?, day(b)?);
            if a > b {
                return Err(format!(
                    "cron day-of-week field {f:?}: range {item} is backwards"
                ));
            }
            parts.push(format!("{}..{}", DOW[a], DOW[b]));
        } else {
            parts.push(DOW[day(item)?].to_string());
        }
    }
    Ok(parts.join(","))
}

fn cron(s: &str) -> Result<String, String> {
    let fields: Vec<&str> = s.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "{s:?} is neither \"every DURATION\" nor a 5-field cron expression (minute hour day-of-month month day-of-week)"
        ));
    }
    let minute = field(fields[0], "minute", 0, 59, 0)?;
    let hour = field(fields[1], "hour", 0, 23, 0)?;
    let dom = field(fields[2], "day-of-month", 1, 31, 1)?;
    let month = field(fields[3], "month", 1, 12, 1)?;
    let dow = dow_field(fields[4])?;
    if fields[2] != "*" && fields[4] != "*" {
        return Err(format!(
            "{s:?} restricts both day-of-month and day-of-week; cron runs when either matches, systemd only when both do — restrict one of them"
        ));
    }
    let date = format!("*-{month}-{dom}");
    let time = format!("{hour}:{minute}:00");
    Ok(if dow.is_empty() {
        format!("{date} {time}")
    } else {
        format!("{dow} {date} {time}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each good schedule becomes its `OnCalendar=`; each bad one is refused.
    fn check(good: &[(&str, &str)], bad: &[&str]) {
        for (schedule, on_calendar) in good {
            let parsed = Schedule::parse(schedule).unwrap();
            assert_eq!(parsed.on_calendar, *on_calendar, "{schedule}");
        }
        for schedule in bad {
            assert!(Schedule::parse(schedule).is_err(), "{schedule}");
        }
    }

    #[test]
    fn every() {
        let good = [
            ("every 6h", "*-*-* 00/6:00:00"),
            ("every 15m", "*-*-* *:00/15:00"),
            ("every 30s", "*-*-* *:*:00/30"),
            ("every 1d", "*-*-* 00:00:00"),
            ("every 7d", "Mon *-*-* 00:00:00"),
        ];
        let bad = [
            "every 5h",
            "every 7m",
            "every 0s",
            "every 1.5s",
            "every",
            "every x",
        ];
        check(&good, &bad);
    }

    #[test]
    fn cron() {
        let good = [
            ("0 3 * * *", "*-*-* 03:00:00"),
            ("*/15 * * * *", "*-*-* *:00/15:00"),
            ("30 2 * * 1-5", "Mon..Fri *-*-* 02:30:00"),
            ("0 0 1 1,7 *", "*-01,07-01 00:00:00"),
            ("0 0 * * 0,7", "Sun,Sun *-*-* 00:00:00"),
        ];
        let bad = [
            "0 3 * *",
            "60 * * * *",
            "0 24 * * *",
            "0 0 1 * 1",
            "0 0 0 * *",
            "a * * * *",
            "*/0 * * * *",
            "5-1 * * * *",
        ];
        check(&good, &bad);
    }
}
