//! The silence policy: which planned disruptions are silenced in
//! Alertmanager, and how each silence made and expired becomes an event.
//!
//! Before unitlet restarts a Service on purpose (a change of its unit, a
//! config change with `onConfigChange: restart`, a rollback, `rollout undo`,
//! a restore), it creates a silence for the Service's `silence.matchers`,
//! ending after `silence.for`; once the Service is Ready again it expires it.
//! If unitlet dies in between, the silence simply runs out. Failures that
//! unitlet did not cause (a crash, a `kill -9`) are never silenced: nothing
//! here runs for them. If Alertmanager cannot be reached the action still
//! happens, and an event says why no silence was made. The HTTP calls are
//! [`crate::alertmanager`]'s.

use std::time::Duration;

use crate::alertmanager::{SilenceRequest, create, expire};
use crate::manager::JobKind;
use crate::manifest::{LoadedSet, Manifest, Matcher};

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

/// What happened to a silence, for the Service's events:
/// `(type, reason, message)`.
pub type Note = (crate::status::EventType, crate::status::EventReason, String);

/// A silence made before an action, to be expired after it.
#[derive(Debug, Clone)]
pub struct Made {
    /// Alertmanager's ID of the silence.
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
    loaded: &LoadedSet,
    to_start: &[(&crate::plan::Action, JobKind)],
    status: &mut crate::status::Status,
) -> std::collections::BTreeMap<String, String> {
    let mut reqs: Vec<(SilenceRequest, &'static str)> = Vec::new();
    for (a, k) in to_start {
        if *k != JobKind::Restart {
            continue;
        }
        let Some(r) = loaded
            .get(&a.manifest)
            .and_then(|m| request_for(m, &loc.alertmanager))
        else {
            continue;
        };
        let pin = crate::rollout::history::load(&loc.state_dir, &a.manifest)
            .ok()
            .and_then(|h| h.pin);
        let action = match &pin {
            // A silence kept from the failed revision's restart covers it.
            Some(p) if p.silence.is_some() => continue,
            Some(p) if p.cause == crate::rollout::history::PinCause::RolledBack => "rollback",
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
    use crate::manifest::{DEFAULT_SILENCE_FOR, parse_matcher};

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
            duration: DEFAULT_SILENCE_FOR,
        };
        let mut notes = Vec::new();
        let made = before(&crate::reload::http_client(), &req, "restart", &mut notes).await;
        assert!(made.is_none());
        assert_eq!(notes.len(), 1);
        assert_eq!(notes[0].1, crate::status::EventReason::SilenceFailed);
        assert!(notes[0].2.contains("goes ahead anyway"), "{}", notes[0].2);
        assert!(notes[0].2.contains("connection refused"), "{}", notes[0].2);
    }
}
