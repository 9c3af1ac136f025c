//! The operator's own Prometheus metrics, served on `--metrics-addr`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::status::Status;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectLabels {
    pub kind: String,
    pub ready: String,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    reconciles: Counter,
    reconcile_errors: Family<ErrorLabels, Counter>,
    reconcile_duration: Histogram,
    managed: Family<ObjectLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("unitlet");
        let reconciles = Counter::default();
        registry.register("reconciles", "Reconcile passes run", reconciles.clone());
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconcile errors by kind (manifests, systemd, apply, connect, io)",
            reconcile_errors.clone(),
        );
        let reconcile_duration = Histogram::new([
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ]);
        registry.register(
            "reconcile_duration_seconds",
            "Duration of reconcile passes",
            reconcile_duration.clone(),
        );
        let managed = Family::<ObjectLabels, Gauge>::default();
        registry.register(
            "managed_units",
            "Managed objects by kind and readiness",
            managed.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            reconciles,
            reconcile_errors,
            reconcile_duration,
            managed,
        }
    }

    pub fn observe_pass(&self, d: Duration) {
        self.reconciles.inc();
        self.reconcile_duration.observe(d.as_secs_f64());
    }

    pub fn reconcile_error(&self, kind: &str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels { kind: kind.into() })
            .inc();
    }

    pub fn set_objects(&self, status: &Status) {
        for kind in ["Service", "Backup"] {
            for ready in ["true", "false"] {
                let n = status
                    .objects
                    .values()
                    .filter(|o| o.kind == kind && o.is_ready() == (ready == "true"))
                    .count();
                self.managed
                    .get_or_create(&ObjectLabels {
                        kind: kind.into(),
                        ready: ready.into(),
                    })
                    .set(n as i64);
            }
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let reg = self.registry.lock().expect("metrics lock");
        prometheus_client::encoding::text::encode(&mut out, &reg)
            .expect("encoding to a String cannot fail");
        out
    }
}

/// Serve `/metrics` on `addr` in the background.
///
/// # Errors
/// When the address cannot be bound.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let m = metrics.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    m.encode(),
                )
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(())
}
