//! The ringvault coordinator: the long-running gRPC service that is the source of truth for
//! runs. Workers register with its [`registry`]; the CLI calls its [`service`]; each backup is
//! driven through persisted stages by [`backup`]; all state lives in SQLite behind [`db`];
//! [`metrics`] serves it to Prometheus.
pub mod backup;
pub mod catalog;
pub mod db;
pub mod error;
pub mod grpc;
pub mod limits;
pub mod maintenance;
pub mod metrics;
pub mod purge;
pub mod restore;
pub mod restore_test;
pub mod run;
pub mod runtime;
pub mod schedule;
pub mod test_hooks;
pub mod verify;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use ringvault_common::security::{self, ClientSecurity, ServerSecurity};
use ringvault_common::store::Store;

/// Prefix of the environment variable of a flag that names none itself (`--config FILE`
/// and the file's keys: `ringvault_common::config`).
pub const ENV_PREFIX: &str = "RINGVAULT_";

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
    /// Let workers report a blob they found in the store within the last week without asking
    /// the store again (a repeat backup then makes no request per unchanged file); the commit
    /// checks every blob of the run either way and re-runs the upload, every blob asked for,
    /// if one is gone. `false`: every worker asks about every blob on every backup (for a
    /// bucket where something besides ringvault deletes objects, such as a lifecycle rule).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, env = "RINGVAULT_TRUST_SEEN_BLOBS")]
    pub trust_seen_blobs: bool,
    /// PEM bundle of CAs the store clients (S3, Azure, GCS) trust besides the system roots: an
    /// https:// store endpoint behind a private CA (a missing or unreadable file stops the
    /// coordinator with its path named).
    #[arg(long, value_name = "PEM", env = "RINGVAULT_STORE_CA_FILE")]
    pub store_ca_file: Option<PathBuf>,
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
    /// Nodes that snapshot and upload at the same time (0: all; a run may ask for fewer).
    #[arg(long, default_value_t = 0)]
    pub nodes_at_once: u32,
    /// How long a run waits for a worker that died mid-run to come back before failing
    /// (seconds); a worker back in time gets its work re-issued.
    #[arg(long, default_value_t = 300)]
    pub worker_restart_grace_secs: u64,
    /// Retention: keep the newest N backups of each cluster not started by a schedule
    /// (0: no count limit). Schedules carry their own.
    #[arg(long, default_value_t = 0)]
    pub keep_last: u32,
    /// Retention: keep backups younger than D days (0: no age limit).
    #[arg(long, default_value_t = 0)]
    pub keep_days: u32,
    /// Purge deletes an unreferenced blob or leftover only when it is older than this
    /// (seconds): protects what backups still running (here or elsewhere) just uploaded. At
    /// least 3600.
    #[arg(long, default_value_t = 6 * 3600)]
    pub purge_grace_secs: u64,
    /// Per-file rows of runs finished longer ago than this are rolled up to per-table totals
    /// (days; the store's manifests stay the source of truth for every file).
    #[arg(long, default_value_t = 30)]
    pub rollup_files_after_days: u32,
    /// Runs and schedule events older than this are removed from the database (days; 0: kept
    /// forever). The newest successful backup of each cluster always stays.
    #[arg(long, default_value_t = 400)]
    pub history_days: u32,
    /// Bytes per second `verify --deep` reads from the store (0: unlimited).
    #[arg(long, default_value_t = 0)]
    pub verify_bandwidth: u64,
    /// Heartbeat interval asked of workers (milliseconds).
    #[arg(long, default_value_t = 2000)]
    pub heartbeat_interval_ms: u64,
    /// A worker silent for longer than this is down (milliseconds).
    #[arg(long, default_value_t = 10_000)]
    pub worker_timeout_ms: u64,
    /// Serve Prometheus metrics (`GET /metrics`) on this address (default: no metrics server).
    #[arg(long, value_name = "ADDR", env = "RINGVAULT_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Stores `--from-store` may name (exact URLs or prefixes; repeat). The coordinator's own
    /// --store is always allowed; anything else is refused.
    #[arg(
        long = "allow-from-store",
        value_name = "URL",
        env = "RINGVAULT_ALLOW_FROM_STORE",
        value_delimiter = ','
    )]
    pub allow_from_store: Vec<String>,
    /// Bearer tokens for CLI users without certificates: lines `NAME ROLE sha256:HEX` (see
    /// `ringvault certs --token`); re-read when it changes.
    #[arg(long, value_name = "FILE", env = "RINGVAULT_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,
    #[command(flatten)]
    pub tls: ringvault_common::security::TlsArgs,
}

/// Shared state of the coordinator.
pub struct Coordinator {
    pub opts: CoordinatorOptions,
    pub db: db::Db,
    pub store: Arc<dyn Store>,
    /// Runs in progress in this process and the purge lock.
    pub runs: run::RunRegistry,
    /// Stores `--from-store` may name.
    pub from_store_allowlist: ringvault_common::security::StoreAllowlist,
}

impl Coordinator {
    /// The limits configured for runs that set none.
    pub fn default_limits(&self) -> limits::RunLimits {
        limits::RunLimits {
            upload_concurrency: self.opts.upload_concurrency,
            upload_bandwidth: self.opts.upload_bandwidth,
            nodes_at_once: self.opts.nodes_at_once,
        }
    }

    /// How long a run waits for a restarted worker.
    pub fn worker_grace(&self) -> Duration {
        Duration::from_secs(self.opts.worker_restart_grace_secs)
    }

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
    anyhow::ensure!(
        opts.purge_grace_secs >= purge::MIN_GRACE.as_secs(),
        "--purge-grace-secs {} is below the minimum of {}: purges would delete uploads other \
         coordinators have in flight (a single purge may pass --force)",
        opts.purge_grace_secs,
        purge::MIN_GRACE.as_secs()
    );
    if let Some(ca) = &opts.store_ca_file {
        ringvault_common::store::trust_store_ca(ca)?;
    }
    let security = ServerSecurity::from_args(&opts.tls, opts.listen)?;
    backup::set_worker_security(ClientSecurity {
        tls: opts.tls.load()?,
    });
    let tokens = match &opts.tokens_file {
        Some(p) => Some(Arc::new(security::tokens::TokenFile::open(p)?)),
        None => None,
    };
    let from_store_allowlist =
        security::StoreAllowlist::new(&opts.allow_from_store)?.with(&opts.store)?;
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
        runs: run::RunRegistry::new(),
        from_store_allowlist,
    });
    // Test restores first: their runs are failed with their own reason, and their scratch
    // keyspaces dropped once the workers are back.
    restore_test::recover(&coord).await?;
    backup::recover_unfinished(&coord).await?;
    tokio::spawn(schedule::run_forever(
        coord.db.clone(),
        Arc::new(maintenance::ScheduledBackups {
            coord: Arc::clone(&coord),
        }),
        Duration::from_secs(1),
    ));
    tokio::spawn(maintenance::housekeeping_forever(
        coord.db.clone(),
        maintenance::HousekeepingConfig::from(&opts),
    ));
    if let Some(addr) = opts.metrics_listen {
        metrics::spawn(addr, Arc::clone(&coord)).await?;
    }
    let (health_reporter, routes) =
        ringvault_proto::reflection::standard_routes(ringvault_proto::reflection::COORDINATOR)?;
    health_reporter
        .set_serving::<ringvault_proto::v1::coordinator_server::CoordinatorServer<grpc::CoordinatorService>>()
        .await;
    tracing::info!(listen = %opts.listen, "coordinator serving");
    let incoming = security::serve::incoming(opts.listen, security).await?;
    tonic::transport::Server::builder()
        .tcp_keepalive(Some(Duration::from_secs(30)))
        .layer(security::AuthLayer::new(
            Arc::new(security::authz::CoordinatorPolicy),
            tokens,
        ))
        .add_routes(routes)
        .add_service(
            ringvault_proto::v1::registry_server::RegistryServer::new(grpc::RegistryService::new(
                Arc::clone(&coord),
            ))
            .max_decoding_message_size(ringvault_common::service::MAX_GRPC_MESSAGE)
            .max_encoding_message_size(ringvault_common::service::MAX_GRPC_MESSAGE),
        )
        .add_service(
            ringvault_proto::v1::coordinator_server::CoordinatorServer::new(
                grpc::CoordinatorService::new(coord),
            )
            .max_decoding_message_size(ringvault_common::service::MAX_GRPC_MESSAGE)
            .max_encoding_message_size(ringvault_common::service::MAX_GRPC_MESSAGE),
        )
        .serve_with_incoming_shutdown(incoming, ringvault_common::service::shutdown_signal())
        .await
        .context("gRPC server")?;
    Ok(())
}
