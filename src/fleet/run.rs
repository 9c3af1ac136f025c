//! The etcd source and the status publisher, started beside the operator
//! loop by `unitlet run --source etcd` and stopped with it.

use std::os::unix::fs::DirBuilderExt;
use std::time::Duration;

use super::FleetOptions;

/// The source and the status publisher, running beside the operator loop.
pub struct Running {
    stop: tokio::sync::watch::Sender<bool>,
    source: tokio::task::JoinHandle<()>,
    publish: tokio::task::JoinHandle<()>,
}

/// Start both tasks. They never fail: trouble is retried and reported in
/// `STATE_DIR/fleet/source.json` and the log.
pub fn start(opts: FleetOptions) -> Running {
    // Before the operator arms its directory watches: the materialised
    // directory's parent must exist to be watched, so the first snapshot
    // wakes the loop instead of waiting for the resync.
    let fleet_dir = opts.state_dir.join("fleet");
    if let Err(e) = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&fleet_dir)
    {
        tracing::error!("cannot create {}: {e}", fleet_dir.display());
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let source = tokio::spawn(super::source::run(super::source::SourceOptions {
        etcd: opts.etcd.clone(),
        host: opts.host.clone(),
        state_dir: opts.state_dir.clone(),
    }));
    let publish = tokio::spawn(super::publish::run(
        super::publish::PublishOptions {
            etcd: opts.etcd,
            host: opts.host,
            state_dir: opts.state_dir,
            ttl: opts.lease_ttl,
            labels: opts.labels,
        },
        stopped,
    ));
    Running {
        stop,
        source,
        publish,
    }
}

impl Running {
    /// Stop both; the publisher revokes the lease first (bounded), so this
    /// host's status and host keys go at once.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(3), self.publish).await;
        self.source.abort();
        let _ = self.source.await;
    }
}
