//! The rollout watch: a new revision watched beside the loop until it is
//! good (active, ready, for [`SETTLE`]) or has failed, then the silences
//! around it handled. It looks at the unit only through
//! [`UserManager::unit_progress`] and [`UserManager::failure_message`]
//! (plain values), so it runs against the in-memory manager in tests.

use std::time::Duration;

use tokio::time::Instant;

use super::history;
use super::policy::{RolloutWork, Verdict, Watched, judge};
use crate::manager::UserManager;

/// How long a new revision must stay active (and ready) to count: a
/// program that exits right after it starts is active for an instant.
pub const SETTLE: Duration = Duration::from_secs(2);

/// How often the unit is looked at.
const POLL: Duration = Duration::from_millis(250);

/// Watch, then handle silences: before a rollback that is coming, keep
/// the restart's silence for it; after a watched rollback, expire the one
/// made before it.
pub async fn run(w: &RolloutWork, sd: &impl UserManager, http: &reqwest::Client) -> Watched {
    let Some(result) = watch(w, sd, http).await else {
        return Watched {
            result: Err("the connection to the user manager was lost".into()),
            notes: Vec::new(),
            silence: None,
            lost: true,
        };
    };
    let mut notes = Vec::new();
    let silence = match &w.silence {
        Some(req) => silences(w, req, &result, http, &mut notes).await,
        None => None,
    };
    Watched {
        result: if w.expire.is_some() { Ok(()) } else { result },
        notes,
        silence,
        lost: false,
    }
}

/// What the watch's verdict means for the silences around it. Returns
/// the silence kept for the rollback that follows, if any.
async fn silences(
    w: &RolloutWork,
    req: &crate::alertmanager::SilenceRequest,
    result: &Result<(), String>,
    http: &reqwest::Client,
    notes: &mut Vec<crate::silence::Note>,
) -> Option<String> {
    let (n, unit) = (w.revision, &w.unit);
    let (id, why) = if let Some(id) = &w.expire {
        let why = match result {
            Ok(()) => format!("the rolled-back revision {n} of {unit} is Ready"),
            Err(e) => format!(
                "the rolled-back revision {n} of {unit} is not Ready either ({e}), which must not stay silent"
            ),
        };
        (id, why)
    } else if result.is_err()
        && w.auto
        && history::load(&w.state_dir, &w.name).is_ok_and(|h| h.would_roll_back(n))
    {
        // The silence of the restart covers the rollback too; without
        // one, the rollback's pass makes one before it restarts the
        // Service.
        return w.unsilence.clone();
    } else if let Some(id) = &w.unsilence {
        let why = match result {
            Ok(()) => format!("revision {n} of {unit} is Ready"),
            Err(e) => format!("revision {n} of {unit} failed ({e}), which must not stay silent"),
        };
        (id, why)
    } else {
        return None;
    };
    let made = Some(crate::silence::Made { id: id.clone() });
    crate::silence::after(http, req, made, &why, notes).await;
    None
}

/// Wait until the revision is good (active, ready, for [`SETTLE`]) or
/// has failed. Never longer than `timeout` (plus one probe). `None`
/// when the bus or the manager went away: nothing is judged then (the
/// operator watches again, from the live state, once reconnected).
/// `Some(Err(why))` when the revision failed.
pub async fn watch(
    w: &RolloutWork,
    sd: &impl UserManager,
    http: &reqwest::Client,
) -> Option<Result<(), String>> {
    let deadline = Instant::now() + w.timeout;
    let mut baseline: Option<u32> = None;
    let mut up_since: Option<Instant> = None;
    let mut last;
    loop {
        match sd.unit_progress(&w.unit).await {
            Ok(o) => {
                // A start or restart by job resets NRestarts: count
                // from the lowest value seen.
                let b = baseline.map_or(o.n_restarts, |b| b.min(o.n_restarts));
                baseline = Some(b);
                last = format!("{} ({})", o.active_state, o.sub_state);
                match judge(&o, b, w.max_restarts) {
                    Verdict::Failed(why) => {
                        return Some(Err(match sd.failure_message(&w.unit).await {
                            Some(d) => format!("{why}: {d}"),
                            None => why,
                        }));
                    }
                    Verdict::Waiting => up_since = None,
                    Verdict::Up => match ready(w, http).await {
                        Ok(()) => {
                            let since = *up_since.get_or_insert_with(Instant::now);
                            if since.elapsed() >= SETTLE {
                                return Some(Ok(()));
                            }
                        }
                        Err(e) => {
                            up_since = None;
                            last = format!("active but not ready: {e}");
                        }
                    },
                }
            }
            // The bus or the manager went away: no verdict.
            Err(e) if e.is_disconnect() => return None,
            Err(e) => last = crate::error_chain(&e),
        }
        if Instant::now() >= deadline {
            return Some(Err(format!(
                "not active{} within rollout.timeout {} (last: {last})",
                if w.readiness.is_some() {
                    " and ready"
                } else {
                    ""
                },
                humantime::format_duration(w.timeout)
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The revision's readiness URL answers (or it has none).
async fn ready(w: &RolloutWork, http: &reqwest::Client) -> Result<(), String> {
    match &w.readiness {
        None => Ok(()),
        Some(u) => crate::reload::probe(http, u).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::ServiceResult;
    use crate::manager::fake::FakeManager;

    /// The in-memory manager with `web.service` in its unit directory,
    /// started, and a watch of revision 2 of it.
    fn world(dir: &std::path::Path) -> (FakeManager, RolloutWork) {
        let units = dir.join("units");
        std::fs::create_dir_all(&units).expect("dir");
        let unit = "[Service]\nExecStart=/bin/web\nRestart=on-failure\n";
        std::fs::write(units.join("web.service"), unit).expect("unit");
        let sd = FakeManager::new(&units, &dir.join("config"));
        sd.start_by_hand("web.service");
        let w = RolloutWork {
            name: "web".into(),
            unit: "web.service".into(),
            revision: 2,
            timeout: Duration::from_secs(30),
            max_restarts: 2,
            readiness: None,
            auto: true,
            state_dir: dir.join("state"),
            silence: None,
            expire: None,
            unsilence: None,
        };
        (sd, w)
    }

    /// Issue 22: the watch looks at the unit through the `UserManager`
    /// trait only, so each of its verdicts is seen against the in-memory
    /// manager, on tokio's paused clock.
    #[tokio::test(start_paused = true)]
    async fn the_watch_judges_through_the_manager_trait() {
        let dir = tempfile::tempdir().expect("tempdir");
        let http = crate::reload::http_client();
        let (sd, w) = world(dir.path());
        // Active for SETTLE: good.
        let t = Instant::now();
        assert_eq!(watch(&w, &sd, &http).await, Some(Ok(())));
        assert!(t.elapsed() >= SETTLE);

        // Restarted by systemd more often than rollout.maxRestarts.
        let restarter = {
            let sd = sd.clone();
            tokio::spawn(async move {
                for _ in 0..3 {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    sd.restarted_by_systemd("web.service");
                }
            })
        };
        let got = watch(&w, &sd, &http).await;
        restarter.await.expect("restarter");
        let why = got.expect("a verdict").expect_err("a failure");
        assert!(why.contains("restarted it 3 times"), "{why}");

        // Failed: the verdict says why, as the manager tells it.
        let (sd, w) = world(&dir.path().join("failed"));
        let result = ServiceResult {
            result: "exit-code".into(),
            code: 1,
            status: 3,
            ..Default::default()
        };
        sd.crash("web.service", result);
        let why = watch(&w, &sd, &http).await.expect("a verdict");
        let why = why.expect_err("a failure");
        assert!(why.starts_with("it failed (failed): "), "{why}");
        assert!(why.contains("exited with status 3"), "{why}");

        // Never active: the deadline judges it.
        let (sd, mut w) = world(&dir.path().join("slow"));
        sd.hold_jobs(true);
        let mut js = sd.job_stream().await.expect("stream");
        sd.queue("web.service", crate::manager::JobKind::Restart)
            .await
            .expect("queued");
        w.timeout = Duration::from_secs(5);
        let why = watch(&w, &sd, &http).await.expect("a verdict");
        assert!(
            why.expect_err("late")
                .starts_with("not active within rollout.timeout 5s")
        );
        drop(js.wait(&sd, &[], Duration::ZERO).await);

        // The bus went away: no verdict at all.
        sd.lose_bus();
        assert_eq!(watch(&w, &sd, &http).await, None);
        let watched = run(&w, &sd, &http).await;
        assert!(watched.lost);
    }
}
