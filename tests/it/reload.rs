//! Issue 4 acceptance: config changes hot-reload a real Prometheus (from
//! Debian) run by unitlet as a Service; the operator's own metrics.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::support::{UserManager, stderr, stdout, wait_for, wait_seen};

const T: Duration = Duration::from_secs(30);

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn http_get(url: &str) -> Option<(u16, String)> {
    let out = std::process::Command::new("curl")
        .args(["-s", "-m", "5", "-o", "-", "-w", "\n%{http_code}", url])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n')?;
    Some((code.trim().parse().ok()?, body.to_string()))
}

pub struct Prom {
    pub port: u16,
    pub dir: PathBuf,
    pub config: PathBuf,
}

impl Prom {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn scrape_config(&self, extra_job: Option<&str>) -> String {
        let mut c = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: self\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            self.port
        );
        if let Some(j) = extra_job {
            c.push_str(&format!(
                "  - job_name: {j}\n    static_configs:\n      - targets: ['127.0.0.1:9']\n"
            ));
        }
        c
    }

    /// Save the config the way editors do: write a temporary, rename over.
    pub fn write_config(&self, content: &str) {
        let tmp = self.dir.join(".prometheus.yml.tmp");
        std::fs::write(&tmp, content).unwrap();
        std::fs::rename(&tmp, &self.config).unwrap();
    }

    /// One of Prometheus' own metrics (None when absent or unreachable).
    pub fn own_metric(&self, series: &str) -> Option<f64> {
        http_get(&self.url("/metrics")).and_then(|(_, b)| metric(&b, series))
    }

    pub fn config_text(&self) -> String {
        http_get(&self.url("/api/v1/status/config"))
            .map(|(_, b)| b)
            .unwrap_or_default()
    }
}

/// A Prometheus Service manifest; `spec_extra` adds fields.
pub fn prometheus(um: &UserManager, name: &str, spec_extra: &str) -> Prom {
    let port = free_port();
    let dir = um.runtime.join(format!("{name}-etc"));
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let p = Prom {
        port,
        dir: dir.clone(),
        config: dir.join("prometheus.yml"),
    };
    // `{reload}` in spec_extra stands for this Prometheus' reload URL.
    let spec_extra = spec_extra.replace("{reload}", &p.url("/-/reload"));
    p.write_config(&p.scrape_config(None));
    prometheus_manifest_for(um, name, &p, &spec_extra);
    p
}

/// (Re)write the manifest of the Prometheus `p` runs under `name`.
pub fn prometheus_manifest_for(um: &UserManager, name: &str, p: &Prom, spec_extra: &str) {
    let (port, dir) = (p.port, &p.dir);
    let manifest = format!(
        "apiVersion: unitlet/v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  command: [/usr/bin/prometheus, --config.file=prometheus.yml, --storage.tsdb.path=data, \"--web.listen-address=127.0.0.1:{port}\", --web.enable-lifecycle, --web.enable-admin-api]\n  workingDirectory: {dir}\n  configFiles: [{cfg}]\n  readiness: {{http: {{url: \"http://127.0.0.1:{port}/-/ready\"}}, timeout: 30s}}\n{spec_extra}",
        dir = dir.display(),
        cfg = p.config.display()
    );
    um.write_manifest(&format!("{name}.yaml"), &manifest);
}

fn metric(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn reload_spec(port_hint: &str) -> String {
    format!("  onConfigChange: reload\n  reload: {{http: {{url: \"{port_hint}\"}}}}\n")
}

#[test]
fn adding_a_scrape_job_reloads_prometheus_once() {
    let um = UserManager::start();
    let mport = free_port();
    let p = prometheus(&um, "prom", &reload_spec("{reload}"));
    let run = um.spawn_run(&["--metrics-addr", &format!("127.0.0.1:{mport}")]);
    um.wait_ready("prom", "True", T);
    let pid = um.prop("prom.service", "MainPID");
    p.write_config(&p.scrape_config(Some("litellm")));
    wait_for(T, "the new job in /api/v1/status/config", || {
        p.config_text().contains("litellm").then_some(())
    });
    let metrics_url = format!("http://127.0.0.1:{mport}/metrics");
    // The reload's outcome is folded in by the pass after it: wait for it.
    wait_seen(T, "unitlet_reloads_total 1", || {
        let v = http_get(&metrics_url)
            .and_then(|(_, body)| metric(&body, "unitlet_reloads_total{name=\"prom\"}"));
        v.filter(|v| *v >= 1.0).ok_or(v)
    });
    let (_, body) = http_get(&metrics_url).unwrap();
    assert_eq!(
        metric(&body, "unitlet_reloads_total{name=\"prom\"}"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        metric(&body, "unitlet_last_reload_successful{name=\"prom\"}"),
        Some(1.0)
    );
    assert!(
        metric(
            &body,
            "unitlet_last_reload_success_timestamp_seconds{name=\"prom\"}"
        )
        .unwrap()
            > 1.7e9
    );
    assert_eq!(
        um.prop("prom.service", "MainPID"),
        pid,
        "a reload must not restart"
    );
    // Exactly one: nothing more happens on later passes (a pass after
    // now, and every reload or probe it started, are over).
    run.settle(T);
    let (_, body) = http_get(&metrics_url).unwrap();
    assert_eq!(
        metric(&body, "unitlet_reloads_total{name=\"prom\"}"),
        Some(1.0)
    );
    let (_, pm) = http_get(&p.url("/metrics")).unwrap();
    assert_eq!(
        metric(&pm, "prometheus_config_last_reload_successful"),
        Some(1.0)
    );

    // The operator's /metrics is valid exposition format.
    let check = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("curl -s {metrics_url} | promtool check metrics"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "promtool check metrics: {}{}",
        stdout(&check),
        stderr(&check)
    );
}

#[test]
fn broken_config_with_validate_is_not_reloaded() {
    let um = UserManager::start();
    let p = prometheus(
        &um,
        "prom",
        "  onConfigChange: reload\n  reload: {http: {url: \"{reload}\"}}\n  validate: [/usr/bin/promtool, check, config, prometheus.yml]\n",
    );
    let run = um.spawn_run(&[]);
    um.wait_ready("prom", "True", T);
    let before = p
        .own_metric("prometheus_config_last_reload_success_timestamp_seconds")
        .expect("Prometheus exports its last reload time");
    p.write_config("scrape_configs:\n  - job_name: broken\n    scrape_interval: banana\n");
    let (_, reason, message) = um.wait_ready("prom", "False", T);
    assert_eq!(reason, "ConfigInvalid");
    assert!(
        message.contains("banana") || message.contains("FAILED"),
        "promtool's message expected: {message}"
    );
    assert!(
        p.config_text().contains("job_name: self"),
        "still serving the old config"
    );
    // Whatever the operator started after the failed validation is over.
    run.settle(T);
    let after = p
        .own_metric("prometheus_config_last_reload_success_timestamp_seconds")
        .expect("Prometheus exports its last reload time");
    assert_eq!(before, after, "no reload may happen");
    p.write_config(&p.scrape_config(Some("fixed")));
    um.wait_ready("prom", "True", T);
    wait_for(T, "fixed job live", || {
        p.config_text().contains("fixed").then_some(())
    });
}

#[test]
fn broken_config_without_validate_backs_off_then_recovers_on_revert() {
    let um = UserManager::start();
    let mport = free_port();
    let p = prometheus(
        &um,
        "prom",
        "  onConfigChange: reload\n  reload: {http: {url: \"{reload}\"}}\n",
    );
    let _run = um.spawn_run(&["--metrics-addr", &format!("127.0.0.1:{mport}")]);
    um.wait_ready("prom", "True", T);
    let good = std::fs::read_to_string(&p.config).unwrap();
    p.write_config("scrape_configs:\n  - job_name: broken\n    scrape_interval: banana\n");
    let (_, reason, message) = um.wait_reason("prom", "ReloadFailed", T);
    assert_eq!(reason, "ReloadFailed");
    assert!(message.contains("500"), "{message}");
    let metrics_url = format!("http://127.0.0.1:{mport}/metrics");
    let failed = || {
        http_get(&metrics_url)
            .and_then(|(_, b)| metric(&b, "unitlet_reloads_failed_total{name=\"prom\"}"))
            .unwrap_or(0.0)
    };
    // Each failed POST is counted when its outcome is folded in: time the
    // next two after the one reported (the whole curve is
    // `reload::tests::retry_backs_off`; every further one lengthens the wait
    // for the retry after the revert below). Retries wait 1 s, 2 s, 4 s, ...
    // plus up to 1 s of jitter; a tight loop would make hundreds.
    let mut last = failed();
    let mut at = Instant::now();
    let mut gaps = Vec::new();
    for i in 1..=2 {
        let n = wait_seen(T, &format!("failed reload {i} after the first"), || {
            let n = failed();
            if n > last {
                Ok(n)
            } else {
                Err(format!("unitlet_reloads_failed_total {n}"))
            }
        });
        assert_eq!(
            n,
            last + 1.0,
            "one failed POST at a time, gaps so far {gaps:?}"
        );
        gaps.push(at.elapsed());
        (last, at) = (n, Instant::now());
    }
    eprintln!("gaps between failed reload POSTs: {gaps:?}");
    for (gap, min) in gaps.iter().zip([0.9, 1.8]) {
        assert!(
            gap.as_secs_f64() >= min,
            "retries must back off (1 s, 2 s, 4 s, ...): gaps {gaps:?}"
        );
    }
    let (_, pm) = http_get(&p.url("/metrics")).unwrap();
    assert_eq!(
        metric(&pm, "prometheus_config_last_reload_successful"),
        Some(0.0)
    );
    // Revert to the content Prometheus still runs: reloaded anyway, so its
    // own last_reload_successful recovers.
    p.write_config(&good);
    wait_for(T, "Prometheus reports a successful reload", || {
        http_get(&p.url("/metrics"))
            .and_then(|(_, b)| metric(&b, "prometheus_config_last_reload_successful"))
            .filter(|v| *v == 1.0)
    });
    um.wait_ready("prom", "True", T);
}

#[test]
fn restart_and_signal_services_behave_as_declared() {
    let um = UserManager::start();
    let dir = um.runtime.join("svc");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("r.conf"), "one").unwrap();
    std::fs::write(dir.join("s.conf"), "one").unwrap();
    let script = dir.join("hup.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ntrap 'echo hup >> {}' HUP\nwhile true; do sleep 0.1; done\n",
            dir.join("hups").display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    um.write_manifest(
        "r.yaml",
        &format!("apiVersion: unitlet/v1\nkind: Service\nmetadata: {{name: r}}\nspec:\n  command: [/bin/sleep, \"100000\"]\n  configFiles: [{}]\n  onConfigChange: restart\n", dir.join("r.conf").display()),
    );
    um.write_manifest(
        "s.yaml",
        &format!(
            "apiVersion: unitlet/v1\nkind: Service\nmetadata: {{name: s}}\nspec:\n  command: [{}]\n  configFiles: [{}]\n  onConfigChange: reload\n  reload: {{signal: SIGHUP}}\n",
            script.display(),
            dir.join("s.conf").display()
        ),
    );
    let run = um.spawn_run(&[]);
    um.wait_ready("r", "True", T);
    um.wait_ready("s", "True", T);
    let rpid = um.prop("r.service", "MainPID");
    let spid = um.prop("s.service", "MainPID");
    std::fs::write(dir.join("r.conf"), "two").unwrap();
    std::fs::write(dir.join("s.conf"), "two").unwrap();
    wait_for(T, "r restarted", || {
        let p = um.prop("r.service", "MainPID");
        (p != rpid && p != "0").then_some(())
    });
    wait_for(T, "s got SIGHUP", || {
        std::fs::read_to_string(dir.join("hups"))
            .ok()
            .filter(|s| s.contains("hup"))
            .map(|_| ())
    });
    assert_eq!(
        um.prop("s.service", "MainPID"),
        spid,
        "a signal reload must not restart"
    );
    // Every pass and every reload they started are over.
    run.settle(T);
    assert_eq!(
        std::fs::read_to_string(dir.join("hups"))
            .unwrap()
            .lines()
            .count(),
        1,
        "exactly one SIGHUP"
    );
}

#[test]
fn unit_and_config_change_together_restart_once_without_a_reload() {
    let um = UserManager::start();
    let mport = free_port();
    let p = prometheus(
        &um,
        "prom",
        "  onConfigChange: reload\n  reload: {http: {url: \"{reload}\"}}\n",
    );
    let text = std::fs::read_to_string(um.manifests.join("prom.yaml")).unwrap();
    assert!(um.unitlet(&["apply"]).status.success());
    let pid = um.prop("prom.service", "MainPID");
    // One edit of both: the manifest (environment) and the config.
    p.write_config(&p.scrape_config(Some("both")));
    um.write_manifest(
        "prom.yaml",
        &text.replace(
            "  configFiles:",
            "  environment: {EDITED: \"1\"}\n  configFiles:",
        ),
    );
    // A resync every second keeps passes coming: progress to wait for.
    let run = um.spawn_run(&[
        "--metrics-addr",
        &format!("127.0.0.1:{mport}"),
        "--resync",
        "1s",
    ]);
    wait_for(T, "prom restarted and ready", || {
        let np = um.prop("prom.service", "MainPID");
        (np != pid && np != "0" && um.ready("prom").is_some_and(|r| r.0 == "True")).then_some(())
    });
    wait_for(T, "the new config live", || {
        p.config_text().contains("both").then_some(())
    });
    // Progress first: a pass after the restart was seen, and every reload
    // or probe it started, are over.
    run.settle(T);
    let murl = format!("http://127.0.0.1:{mport}/metrics");
    let (_, body) = http_get(&murl).unwrap();
    assert_eq!(
        metric(&body, "unitlet_reloads_total{name=\"prom\"}"),
        None,
        "no reload on top of the restart: {body}"
    );
}

/// Issue 21 item 4: a config reverted to the content Prometheus runs ends
/// `ConfigInvalid` in `run` as in `apply`, and neither puts it back.
#[test]
fn issue21_4_reverting_a_refused_config_clears_config_invalid_in_run_and_apply() {
    let um = UserManager::start();
    let p = prometheus(
        &um,
        "prom",
        "  onConfigChange: reload\n  reload: {http: {url: \"{reload}\"}}\n  validate: [/usr/bin/promtool, check, config, prometheus.yml]\n",
    );
    let run = um.spawn_run(&[]);
    um.wait_ready_where("prom", "True Running", T, |r| r.1 == "Running");
    let good = std::fs::read_to_string(&p.config).unwrap();
    p.write_config("scrape_configs:\n  - job_name: broken\n    scrape_interval: banana\n");
    um.wait_reason("prom", "ConfigInvalid", T);
    // Back to the content Prometheus runs: nothing to reload, nothing
    // refused any more.
    p.write_config(&good);
    um.wait_ready_where("prom", "True Running", T, |r| r.1 == "Running");
    run.settle(T);
    assert_eq!(um.ready("prom").map(|r| r.1), Some("Running".to_string()));
    let o = um.unitlet(&["apply"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    // The operator's next passes agree with apply.
    run.settle(T);
    run.next_pass(T);
    assert_eq!(um.ready("prom").map(|r| r.1), Some("Running".to_string()));
    // And a refused config is refused by both.
    p.write_config("scrape_configs:\n  - job_name: broken\n    scrape_interval: banana\n");
    um.wait_reason("prom", "ConfigInvalid", T);
    let o = um.unitlet(&["apply"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    run.settle(T);
    assert_eq!(
        um.ready("prom").map(|r| r.1),
        Some("ConfigInvalid".to_string())
    );
}

/// Issue 20, item 10: an adopted unit's own reload (`ExecReload=`, no
/// `reload` method) is reported as a reload and waited for `apply
/// --timeout`, not for a fixed 90 s as a "restart".
#[test]
fn item10_a_unit_reload_is_a_reload_waited_for_apply_timeout() {
    let um = UserManager::start();
    let dir = um.runtime.join("svc");
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("app.conf");
    std::fs::write(&conf, "one").unwrap();
    let unit = dir.join("app.service");
    std::fs::write(
        &unit,
        "[Unit]\nDescription=app\n[Service]\nExecStart=/bin/sleep 100000\nExecReload=/bin/sleep 600\n",
    )
    .unwrap();
    um.write_manifest(
        "app.yaml",
        &format!(
            "apiVersion: unitlet/v1\nkind: Service\nmetadata: {{name: app}}\nspec:\n  unitFile: {}\n  configFiles: [{}]\n  onConfigChange: reload\n",
            unit.display(),
            conf.display()
        ),
    );
    let o = um.unitlet(&["apply"]);
    assert!(o.status.success(), "{}", stderr(&o));
    um.wait_active("app.service", T);
    std::fs::write(&conf, "two").unwrap();
    let _ = um.unitlet(&["apply", "--timeout", "3s"]);
    let d = stdout(&um.unitlet(&["describe", "app"]));
    assert!(
        d.contains("reload of app.service did not finish within 3s"),
        "{d}"
    );
}

/// Issue 20 item 2: a Service whose config reload failed is deleted: its
/// `unitlet_last_reload*` and `unitlet_reloads*` series leave /metrics (the
/// shipped `unitlet_last_reload_successful == 0` alert would fire for ever).
#[test]
fn the_series_of_a_deleted_service_leave_metrics() {
    let um = UserManager::start();
    let mport = free_port();
    let p = prometheus(&um, "prom", &reload_spec("{reload}"));
    let _run = um.spawn_run(&["--metrics-addr", &format!("127.0.0.1:{mport}")]);
    um.wait_ready("prom", "True", T);
    p.write_config("scrape_configs:\n  - job_name: broken\n    scrape_interval: banana\n");
    um.wait_reason("prom", "ReloadFailed", T);
    let metrics_url = format!("http://127.0.0.1:{mport}/metrics");
    wait_seen(T, "the failed reload in /metrics", || {
        let body = http_get(&metrics_url).map(|(_, b)| b).unwrap_or_default();
        let ok = metric(&body, "unitlet_last_reload_successful{name=\"prom\"}");
        let failed = metric(&body, "unitlet_reloads_failed_total{name=\"prom\"}");
        (ok == Some(0.0) && failed.is_some_and(|n| n >= 1.0))
            .then_some(())
            .ok_or(format!("successful {ok:?}, failed {failed:?}"))
    });
    std::fs::remove_file(um.manifests.join("prom.yaml")).unwrap();
    let body = wait_seen(T, "prom's series gone from /metrics", || {
        let body = http_get(&metrics_url).map(|(_, b)| b).unwrap_or_default();
        let left: Vec<&str> = body
            .lines()
            .filter(|l| l.contains("name=\"prom\""))
            .collect();
        if left.is_empty() && body.contains("unitlet_reconciles_total") {
            Ok(body.clone())
        } else {
            Err(left.join("\n"))
        }
    });
    assert!(!body.contains("unitlet_last_reload"), "{body}");
    assert!(!body.contains("unitlet_reloads_total{"), "{body}");
}
