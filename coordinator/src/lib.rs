//! The ringvault coordinator: the long-running gRPC service that is the source of truth for
//! runs. Workers register with its [`registry`]; the CLI calls its [`service`]; each backup is
//! driven through persisted stages by [`backup`]; all state lives in SQLite behind [`db`];
//! [`metrics`] serves it to Prometheus.
pub mod backup;
pub mod db;
pub mod metrics;
pub mod progress;
pub mod registry;
pub mod restore;
pub mod runs;
pub mod service;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use ringvault_common::store::Store;

/// Command-line options of `ringvault-coordinator`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "ringvault-coordinator",
    version,
    about = "ringvault coordinator: plans, runs and records cluster-wide Cassandra backups"
)]
pub struct CoordinatorOptions {
    /// Address the gRPC server listens on (CLI and workers).
    #[arg(long, default_value = "127.0.0.1:7600", env = "RINGVAULT_LISTEN")]
    pub listen: SocketAddr,
    /// SQLite database path.
    #[arg(
        long,
        default_value = "/var/lib/ringvault/coordinator.db",
        env = "RINGVAULT_DB"
    )]
    pub db: PathBuf,
    /// Store URL backups go to (file:///dir, s3://bucket/prefix?endpoint=..&region=..).
    /// Credentials come from the provider's standard environment, never from the URL.
    #[arg(long, env = "RINGVAULT_STORE")]
    pub store: String,
    /// Snapshot TTL on the nodes, the safety net if a worker dies (seconds).
    #[arg(long, default_value_t = 86_400)]
    pub snapshot_ttl_secs: u64,
    /// Refuse to snapshot a node whose data directory has fewer free bytes than this.
    #[arg(long, default_value_t = 1 << 30)]
    pub min_free_bytes: u64,
    /// Parts in flight per node during upload (0: the worker's own setting).
    #[arg(long, default_value_t = 0)]
    pub upload_concurrency: u32,
    /// Upload bandwidth cap per node, bytes per second (0: unlimited).
    #[arg(long, default_value_t = 0)]
    pub upload_bandwidth: u64,
    /// Heartbeat interval asked of workers (milliseconds).
    #[arg(long, default_value_t = 2000)]
    pub heartbeat_interval_ms: u64,
    /// A worker silent for longer than this is down (milliseconds).
    #[arg(long, default_value_t = 10_000)]
    pub worker_timeout_ms: u64,
    /// Serve Prometheus metrics (`GET /metrics`) on this address (default: no metrics server).
    #[arg(long, value_name = "ADDR", env = "RINGVAULT_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
}

/// Shared state of the coordinator.
pub struct Coordinator {
    pub opts: CoordinatorOptions,
    pub db: db::Db,
    pub store: Arc<dyn Store>,
    /// Runs in progress in this process, by run id.
    pub active: Mutex<HashMap<String, Arc<progress::RunHandle>>>,
}

impl Coordinator {
    /// Whether a worker last seen at `last_seen_ms` counts as up.
    pub fn alive(&self, last_seen_ms: i64) -> bool {
        now_ms() - last_seen_ms <= self.opts.worker_timeout_ms as i64
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Opens the database and store, settles unfinished runs, and serves until SIGTERM.
pub async fn run(opts: CoordinatorOptions) -> anyhow::Result<()> {
    let db = db::Db::open(&opts.db)?;
    let store = ringvault_common::store::open(&opts.store).await?;
    store
        .check()
        .await
        .with_context(|| format!("store {} failed its check", store.describe()))?;
    tracing::info!(store = %store.describe(), "store checked");
    let coord = Arc::new(Coordinator {
        opts: opts.clone(),
        db,
        store,
        active: Mutex::new(HashMap::new()),
    });
    backup::recover_unfinished(&coord).await?;
    if let Some(addr) = opts.metrics_listen {
        metrics::spawn(addr, Arc::clone(&coord)).await?;
    }
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<ringvault_proto::v1::coordinator_server::CoordinatorServer<service::CoordinatorService>>()
        .await;
    tracing::info!(listen = %opts.listen, "coordinator serving");
    tonic::transport::Server::builder()
        .tcp_keepalive(Some(Duration::from_secs(30)))
        .add_service(health_service)
        .add_service(ringvault_proto::v1::registry_server::RegistryServer::new(
            registry::RegistryService::new(Arc::clone(&coord)),
        ))
        .add_service(
            ringvault_proto::v1::coordinator_server::CoordinatorServer::new(
                service::CoordinatorService::new(coord),
            ),
        )
        .serve_with_shutdown(opts.listen, ringvault_common::service::shutdown_signal())
        .await
        .context("gRPC server")?;
    Ok(())
}
