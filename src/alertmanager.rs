//! Alertmanager silences around planned disruption.
//!
//! Before unitlet restarts a Service on purpose (a config change with
//! `onConfigChange: restart`, a restore), it creates a silence through
//! Alertmanager's v2 API (`POST /api/v2/silences`, `createdBy: unitlet`) for
//! the Service's `silence.matchers`, ending after `silence.for`; once the
//! Service is Ready again it expires it (`DELETE /api/v2/silence/{id}`). If
//! unitlet dies in between, the silence simply runs out. Failures that
//! unitlet did not cause (a crash, a `kill -9`) are never silenced: nothing
//! here runs for them. If Alertmanager cannot be reached the action still
//! happens, and an event says why no silence was made.
//!
//! Matcher parsing and request bodies are pure and unit-tested; the client
//! is tested against a real Alertmanager (tests/it/silence.rs).

use std::time::{Duration, SystemTime};

use reqwest::Url;
use serde::{Deserialize, Serialize};

use crate::manifest::Manifest;

/// Where Alertmanager is when `--alertmanager` is not given.
pub const DEFAULT_URL: &str = "http://127.0.0.1:9093";

/// Who silences are created by.
pub const CREATED_BY: &str = "unitlet";

/// How long a silence lasts at most when `silence.for` is not given.
pub const DEFAULT_FOR: Duration = Duration::from_secs(300);

/// One label matcher, as Alertmanager's v2 API takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Matcher {
    pub name: String,
    pub value: String,
    pub is_regex: bool,
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

/// The matchers a Service's silence uses: its own, or `job="JOB"` where
/// JOB is the manifest's `job` label, else its name (the scrape job of the
/// shipped stack's Services is named after them, or labelled so).
pub fn matchers_for(m: &Manifest) -> Vec<Matcher> {
    if let Some(s) = m.as_service().and_then(|s| s.silence.as_ref())
        && let Some(ms) = &s.matchers
    {
        return ms.clone();
    }
    vec![Matcher {
        name: "job".into(),
        value: m
            .labels
            .get("job")
            .cloned()
            .unwrap_or_else(|| m.name.clone()),
        is_regex: false,
        is_equal: true,
    }]
}

/// What to silence around one planned action, decided when the action is
/// (in the pass or the command), carried to whoever acts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SilenceRequest {
    /// Alertmanager's base URL.
    pub alertmanager: String,
    pub service: String,
    pub matchers: Vec<Matcher>,
    /// How long the silence lasts at most.
    pub duration: Duration,
}

/// The silence request for `m`, if it declares `silence`.
pub fn request_for(m: &Manifest, alertmanager: &str) -> Option<SilenceRequest> {
    let s = m.as_service()?.silence.as_ref()?;
    Some(SilenceRequest {
        alertmanager: alertmanager.to_string(),
        service: m.name.clone(),
        matchers: matchers_for(m),
        duration: s.duration,
    })
}

/// The body of `POST /api/v2/silences`. Pure.
pub fn silence_body(
    matchers: &[Matcher],
    now: SystemTime,
    duration: Duration,
    comment: &str,
) -> serde_json::Value {
    let ts = |t: SystemTime| humantime::format_rfc3339_millis(t).to_string();
    serde_json::json!({
        "matchers": matchers,
        "startsAt": ts(now),
        "endsAt": ts(now + duration),
        "createdBy": CREATED_BY,
        "comment": comment,
    })
}

/// Talking to Alertmanager failed.
#[derive(Debug, thiserror::Error)]
pub enum AlertmanagerError {
    /// `--alertmanager` is not a usable base URL.
    #[error(
        "--alertmanager {url:?} is not usable: {why}; give Alertmanager's base URL, e.g. http://127.0.0.1:9093"
    )]
    BadUrl { url: String, why: String },
    /// The request did not get an answer.
    #[error("{method} {url}: {what}{hint}")]
    Request {
        method: &'static str,
        url: String,
        what: String,
        hint: &'static str,
    },
    /// Alertmanager answered, but not with success.
    #[error("{method} {url} answered {status}: {body}{hint}")]
    Status {
        method: &'static str,
        url: String,
        status: u16,
        body: String,
        hint: &'static str,
    },
}

/// The common runbook mistake: silences POSTed to Prometheus (9090),
/// which has no silence API and answers 404.
const NOT_ALERTMANAGER: &str = " (is --alertmanager pointing at Alertmanager, e.g. :9093, and not at Prometheus' :9090? Only Alertmanager has /api/v2/silences)";

fn endpoint(base: &str, path: &str) -> Result<Url, AlertmanagerError> {
    let b = crate::http::base_url(base).map_err(|e| AlertmanagerError::BadUrl {
        url: crate::manifest::redact_url(base),
        why: match e {
            crate::http::BaseUrlError::Invalid(w) => w,
            crate::http::BaseUrlError::Credentials => "it embeds credentials".into(),
        },
    })?;
    b.join(path).map_err(|e| AlertmanagerError::BadUrl {
        url: crate::manifest::redact_url(base),
        why: e.to_string(),
    })
}

fn request_error(method: &'static str, url: &Url, e: reqwest::Error) -> AlertmanagerError {
    let connect = e.is_connect();
    AlertmanagerError::Request {
        method,
        url: url.to_string(),
        what: if connect {
            "connection refused".into()
        } else if e.is_timeout() {
            "timed out".into()
        } else {
            crate::error_chain(&e.without_url())
        },
        hint: if connect {
            " (is Alertmanager running?)"
        } else {
            ""
        },
    }
}

async fn status_error(method: &'static str, url: &Url, r: reqwest::Response) -> AlertmanagerError {
    let status = r.status().as_u16();
    // Only what the message shows is read (up to 4 bytes a character).
    let body = crate::http::body_prefix(r, 1200).await;
    let body: String = String::from_utf8_lossy(&body).chars().take(300).collect();
    AlertmanagerError::Status {
        method,
        url: url.to_string(),
        status,
        body: body.trim().to_string(),
        hint: if status == 404 { NOT_ALERTMANAGER } else { "" },
    }
}

/// A silence's ID comes in a tiny answer; nothing larger is read.
const MAX_ANSWER: u64 = 64 * 1024;

/// Create a silence; returns its ID.
///
/// # Errors
/// [`AlertmanagerError`] naming the URL and what went wrong.
pub async fn create(
    http: &reqwest::Client,
    req: &SilenceRequest,
    comment: &str,
) -> Result<String, AlertmanagerError> {
    let url = endpoint(&req.alertmanager, "api/v2/silences")?;
    let body = silence_body(&req.matchers, SystemTime::now(), req.duration, comment);
    let r = http
        .post(url.clone())
        .timeout(Duration::from_secs(5))
        .json(&body)
        .send()
        .await
        .map_err(|e| request_error("POST", &url, e))?;
    if !r.status().is_success() {
        return Err(status_error("POST", &url, r).await);
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Created {
        #[serde(rename = "silenceID")]
        silence_id: String,
    }
    let not_an_id = |e: String| AlertmanagerError::Status {
        method: "POST",
        url: url.to_string(),
        status: 200,
        body: format!("not a silence ID: {e}"),
        hint: NOT_ALERTMANAGER,
    };
    let mut r = r;
    let bytes = crate::http::read_body(&mut r, MAX_ANSWER)
        .await
        .map_err(|e| not_an_id(crate::error_chain(&e)))?;
    let c: Created = serde_json::from_slice(&bytes).map_err(|e| not_an_id(e.to_string()))?;
    Ok(c.silence_id)
}

/// Expire a silence now.
///
/// # Errors
/// [`AlertmanagerError`] naming the URL and what went wrong.
pub async fn expire(http: &reqwest::Client, base: &str, id: &str) -> Result<(), AlertmanagerError> {
    let url = endpoint(base, &format!("api/v2/silence/{id}"))?;
    let r = http
        .delete(url.clone())
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| request_error("DELETE", &url, e))?;
    if !r.status().is_success() {
        return Err(status_error("DELETE", &url, r).await);
    }
    Ok(())
}

/// What happened to a silence, for the Service's events:
/// `(type, reason, message)`.
pub type Note = (crate::status::EventType, crate::status::EventReason, String);

/// A silence made before an action, to be expired after it.
#[derive(Debug, Clone)]
pub struct Made {
    pub id: String,
}

/// Create the silence for `req` before `action` (e.g. "restart after a
/// config change"); whatever happens, the action goes ahead.
pub async fn before(
    http: &reqwest::Client,
    req: &SilenceRequest,
    action: &str,
    notes: &mut Vec<Note>,
) -> Option<Made> {
    let comment = format!(
        "unitlet: planned {action} of {}; expires when it is Ready again, at the latest after {}",
        req.service,
        humantime::format_duration(req.duration)
    );
    let shown: Vec<String> = req.matchers.iter().map(|m| m.to_string()).collect();
    match create(http, req, &comment).await {
        Ok(id) => {
            notes.push((
                crate::status::EventType::Normal,
                crate::status::EventReason::SilenceCreated,
                format!(
                    "silenced alerts {{{}}} in Alertmanager for up to {} before the {action} (silence {id})",
                    shown.join(", "),
                    humantime::format_duration(req.duration)
                ),
            ));
            Some(Made { id })
        }
        Err(e) => {
            notes.push((
                crate::status::EventType::Warning,
                crate::status::EventReason::SilenceFailed,
                format!(
                    "could not silence alerts {{{}}} before the {action}, which goes ahead anyway: {}",
                    shown.join(", "),
                    crate::error_chain(&e)
                ),
            ));
            None
        }
    }
}

/// Expire a silence made by [`before`]; `why` says what ended it.
pub async fn after(
    http: &reqwest::Client,
    req: &SilenceRequest,
    made: Option<Made>,
    why: &str,
    notes: &mut Vec<Note>,
) {
    let Some(made) = made else { return };
    match expire(http, &req.alertmanager, &made.id).await {
        Ok(()) => notes.push((
            crate::status::EventType::Normal,
            crate::status::EventReason::SilenceExpired,
            format!("expired silence {} in Alertmanager: {why}", made.id),
        )),
        Err(e) => notes.push((
            crate::status::EventType::Warning,
            crate::status::EventReason::SilenceNotExpired,
            format!(
                "could not expire silence {} ({why}); it runs out by itself within {}: {}",
                made.id,
                humantime::format_duration(req.duration),
                crate::error_chain(&e)
            ),
        )),
    }
}

/// Before the restarts a pass is about to queue, silence the Services
/// that declare `silence`: all at once, the pass waiting at most
/// [`PASS_WAIT`]. Returns manifest → silence ID, for expiry once Ready;
/// what happened goes to the Services' events.
pub async fn silence_restarts(
    loc: &crate::locations::Locations,
    prep: &crate::reconcile::Prepared,
    to_start: &[(&crate::plan::Action, crate::systemd::JobKind)],
    status: &mut crate::status::Status,
) -> std::collections::BTreeMap<String, String> {
    let mut reqs: Vec<(SilenceRequest, &'static str)> = Vec::new();
    for (a, k) in to_start {
        if *k != crate::systemd::JobKind::Restart {
            continue;
        }
        let Some(r) = prep
            .loaded
            .get(&a.manifest)
            .and_then(|m| request_for(m, &loc.alertmanager))
        else {
            continue;
        };
        let pin = crate::rollout::load(&loc.state_dir, &a.manifest)
            .ok()
            .and_then(|h| h.pin);
        let action = match &pin {
            // A silence kept from the failed revision's restart covers it.
            Some(p) if p.silence.is_some() => continue,
            Some(p) if p.cause == crate::rollout::PinCause::RolledBack => "rollback",
            Some(_) => "rollout undo",
            None => "restart after a change of its unit",
        };
        reqs.push((r, action));
    }
    let mut out = std::collections::BTreeMap::new();
    if reqs.is_empty() {
        return out;
    }
    let http = crate::reload::http_client();
    let made = futures_util::future::join_all(reqs.iter().map(|(r, action)| {
        let http = http.clone();
        async move {
            let mut notes = Vec::new();
            let made = match tokio::time::timeout(
                PASS_WAIT,
                before(&http, r, action, &mut notes),
            )
            .await
            {
                Ok(m) => m,
                Err(_) => {
                    notes.push((
                        crate::status::EventType::Warning,
                        crate::status::EventReason::SilenceFailed,
                        format!(
                            "Alertmanager at {} did not answer within {PASS_WAIT:?}; the restart goes ahead anyway (a silence made after all runs out by itself)",
                            crate::manifest::redact_url(&r.alertmanager)
                        ),
                    ));
                    None
                }
            };
            (r.service.clone(), made, notes)
        }
    }))
    .await;
    for (name, m, notes) in made {
        for (t, r, msg) in notes {
            status.event(&name, t, r, msg);
        }
        if let Some(m) = m {
            out.insert(name, m.id);
        }
    }
    out
}

/// How long a pass waits for Alertmanager before its restarts.
pub const PASS_WAIT: Duration = Duration::from_secs(3);

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

    #[test]
    fn silence_body_is_what_the_v2_api_takes() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let b = silence_body(
            &[parse_matcher(r#"job="web""#).unwrap()],
            t,
            Duration::from_secs(300),
            "why",
        );
        assert_eq!(b["createdBy"], "unitlet");
        assert_eq!(b["comment"], "why");
        assert_eq!(b["startsAt"], "2027-01-15T08:00:00.000Z");
        assert_eq!(b["endsAt"], "2027-01-15T08:05:00.000Z");
        assert_eq!(
            b["matchers"],
            serde_json::json!([{"name": "job", "value": "web", "isRegex": false, "isEqual": true}])
        );
    }

    #[test]
    fn a_url_with_credentials_or_no_scheme_is_refused() {
        assert!(endpoint("http://u:p@h:9093", "api/v2/silences").is_err());
        assert!(endpoint("127.0.0.1:9093", "api/v2/silences").is_err());
        assert_eq!(
            endpoint("http://127.0.0.1:9093", "api/v2/silence/abc")
                .unwrap()
                .as_str(),
            "http://127.0.0.1:9093/api/v2/silence/abc"
        );
        assert_eq!(
            endpoint("http://h/am/", "api/v2/silences")
                .unwrap()
                .as_str(),
            "http://h/am/api/v2/silences"
        );
    }

    #[tokio::test]
    async fn alertmanager_down_is_a_warning_event_and_no_silence() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let req = SilenceRequest {
            alertmanager: format!("http://127.0.0.1:{port}"),
            service: "web".into(),
            matchers: vec![parse_matcher("job=web").unwrap()],
            duration: DEFAULT_FOR,
        };
        let mut notes = Vec::new();
        let made = before(&crate::reload::http_client(), &req, "restart", &mut notes).await;
        assert!(made.is_none());
        assert_eq!(notes.len(), 1);
        assert_eq!(notes[0].1, crate::status::EventReason::SilenceFailed);
        assert!(notes[0].2.contains("goes ahead anyway"), "{}", notes[0].2);
        assert!(notes[0].2.contains("connection refused"), "{}", notes[0].2);
    }

    /// Issue 20 item 5: an error answer's body is read only as far as the
    /// message shows (it was read whole first; an endless one until the
    /// request's timeout, which then lost it all).
    #[tokio::test]
    async fn an_endless_error_body_is_read_only_as_far_as_shown() {
        let url = crate::http::tests::endless(
            "HTTP/1.1 500 Oops\r\nConnection: close\r\n\r\n",
            b"error! ",
        )
        .await;
        let req = SilenceRequest {
            alertmanager: url,
            service: "web".into(),
            matchers: vec![parse_matcher("job=web").unwrap()],
            duration: DEFAULT_FOR,
        };
        let e = create(&crate::reload::http_client(), &req, "restart")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("answered 500: error! error!"), "{e}");
        let body = e.split_once("answered 500: ").unwrap().1;
        assert!(body.len() <= 300, "{} bytes", body.len());
    }
}
