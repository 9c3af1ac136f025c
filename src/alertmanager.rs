//! The Alertmanager v2 client: create a silence (`POST /api/v2/silences`,
//! `createdBy: unitlet`) and expire one (`DELETE /api/v2/silence/{id}`).
//! Plain types in and out; what is silenced when, and the events that say
//! so, are the silence policy's ([`crate::silence`]).
//!
//! Request bodies are pure and unit-tested; the client is tested against a
//! real Alertmanager (tests/it/silence.rs).

use std::time::{Duration, SystemTime};

use reqwest::Url;
use serde::Deserialize;

use crate::manifest::Matcher;

/// Who silences are created by.
pub const CREATED_BY: &str = "unitlet";

/// What to silence around one planned action, decided when the action is
/// (in the pass or the command), carried to whoever acts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SilenceRequest {
    /// Alertmanager's base URL.
    pub alertmanager: String,
    /// The Service the silence is for (named in its comment).
    pub service: String,
    /// What the silence matches.
    pub matchers: Vec<Matcher>,
    /// How long the silence lasts at most.
    pub duration: Duration,
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
    BadUrl {
        /// The URL given.
        url: String,
        /// Why it cannot be a base URL.
        why: String,
    },
    /// The request did not get an answer.
    #[error("{method} {url}: {what}{hint}")]
    Request {
        /// The HTTP method ("POST" or "DELETE").
        method: &'static str,
        /// The request's URL.
        url: String,
        /// What went wrong (connection refused, timeout, …).
        what: String,
        /// Appended to the message: a likely cause and fix, or empty.
        hint: &'static str,
    },
    /// Alertmanager answered, but not with success.
    #[error("{method} {url} answered {status}: {body}{hint}")]
    Status {
        /// The HTTP method ("POST" or "DELETE").
        method: &'static str,
        /// The request's URL.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The start of the answer's body.
        body: String,
        /// Appended to the message: a likely cause and fix, or empty.
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

#[cfg(test)]
#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{DEFAULT_SILENCE_FOR as DEFAULT_FOR, parse_matcher};

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
