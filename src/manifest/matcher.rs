//! Alertmanager label matchers and the defaults of `spec.silence` and
//! `--alertmanager`: part of the model, since manifests hold them and
//! several layers (the validator, the silence policy, the Alertmanager
//! client, the command line) need them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where Alertmanager is when `--alertmanager` is not given.
pub const DEFAULT_ALERTMANAGER_URL: &str = "http://127.0.0.1:9093";

/// How long a silence lasts at most when `silence.for` is not given.
pub const DEFAULT_SILENCE_FOR: Duration = Duration::from_secs(300);

/// One label matcher, as Alertmanager's v2 API takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Matcher {
    /// The label's name.
    pub name: String,
    /// The value, or the regular expression, it is compared with.
    pub value: String,
    /// `=~`/`!~`: `value` is a regular expression.
    pub is_regex: bool,
    /// `=`/`=~` (true) or `!=`/`!~` (false).
    #[serde(default = "yes")]
    pub is_equal: bool,
}

fn yes() -> bool {
    true
}

impl std::fmt::Display for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = match (self.is_equal, self.is_regex) {
            (true, false) => "=",
            (false, false) => "!=",
            (true, true) => "=~",
            (false, true) => "!~",
        };
        write!(f, "{}{op}{:?}", self.name, self.value)
    }
}

/// Parse a matcher in Prometheus' syntax: `job="prometheus"`,
/// `alertname=~"Target.*"`, `severity!="info"`, `env!~"dev|test"`; the
/// value may be unquoted (`job=prometheus`).
///
/// # Errors
/// A message saying what is wrong and what a matcher looks like.
pub fn parse_matcher(s: &str) -> Result<Matcher, String> {
    let help =
        r#"write a matcher like job="prometheus", alertname=~"Target.*" or severity!="info""#;
    let t = s.trim();
    let op_at = t
        .find(['=', '!'])
        .ok_or_else(|| format!("matcher {s:?} has no operator (=, !=, =~, !~); {help}"))?;
    let name = t[..op_at].trim();
    let rest = &t[op_at..];
    let (is_equal, is_regex, value) = if let Some(v) = rest.strip_prefix("=~") {
        (true, true, v)
    } else if let Some(v) = rest.strip_prefix("!~") {
        (false, true, v)
    } else if let Some(v) = rest.strip_prefix("!=") {
        (false, false, v)
    } else if let Some(v) = rest.strip_prefix('=') {
        (true, false, v)
    } else {
        return Err(format!(
            "matcher {s:?} has no operator (=, !=, =~, !~); {help}"
        ));
    };
    let valid_name = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid_name {
        return Err(format!(
            "matcher {s:?}: {name:?} is not a label name (letters, digits and _, not starting with a digit); {help}"
        ));
    }
    let v = value.trim();
    let value = if let Some(inner) = v.strip_prefix('"') {
        let inner = inner.strip_suffix('"').ok_or_else(|| {
            format!("matcher {s:?}: the value's closing quote is missing; {help}")
        })?;
        inner.replace("\\\"", "\"").replace("\\\\", "\\")
    } else {
        v.to_string()
    };
    if value.chars().any(char::is_control) {
        return Err(format!("matcher {s:?} contains a control character"));
    }
    // An `=` matcher on the empty string matches every alert lacking the
    // label, and a silence that matches everything hides every page.
    if is_equal && !is_regex && value.is_empty() {
        return Err(format!(
            "matcher {s:?} matches alerts without a {name} label, i.e. nearly everything; give a value"
        ));
    }
    Ok(Matcher {
        name: name.to_string(),
        value,
        is_regex,
        is_equal,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matchers_parse_in_prometheus_syntax() {
        let m = parse_matcher(r#"job="prometheus""#).unwrap();
        assert_eq!(
            m,
            Matcher {
                name: "job".into(),
                value: "prometheus".into(),
                is_regex: false,
                is_equal: true
            }
        );
        assert_eq!(m.to_string(), r#"job="prometheus""#);
        let m = parse_matcher(r#"alertname =~ "Target.*""#).unwrap();
        assert!(m.is_regex && m.is_equal);
        assert_eq!(m.value, "Target.*");
        let m = parse_matcher("severity!=info").unwrap();
        assert!(!m.is_regex && !m.is_equal);
        assert_eq!(m.value, "info");
        let m = parse_matcher(r#"env!~"dev|test""#).unwrap();
        assert!(m.is_regex && !m.is_equal);
        assert_eq!(m.to_string(), r#"env!~"dev|test""#);
        for bad in ["job", "=x", "1job=x", "job=\"x", "job=\"\"", "a-b=c"] {
            assert!(parse_matcher(bad).is_err(), "{bad}");
        }
        assert!(parse_matcher("job").unwrap_err().contains("no operator"));
    }
}
