//! The ringvault worker: a gRPC server beside one Cassandra node. It registers with the
//! coordinator and heartbeats; on command it takes and clears snapshots (through [`nodetool`]),
//! reads the schema (through [`cql`]), creates checked schema objects ([`schema`]), and walks,
//! hashes and uploads snapshot files ([`snapshot_files`], [`upload`]) with hashes of unchanged
//! files reused from [`hash_cache`];
//! [`metrics`] counts what it did for Prometheus.
pub mod access;
pub mod buffers;
pub mod convert;
pub mod cql;
pub mod error;
pub mod hash_cache;
pub mod jmx;
pub mod metrics;
pub mod node;
pub mod nodetool;
pub mod page_cache;
pub mod priority;
pub mod registration;
pub mod restore;
pub mod schema;
pub mod scratch;
pub mod service;
pub mod snapshot;
pub mod snapshot_files;
pub mod staged;
#[cfg(test)]
mod test_store;
pub mod topology;
pub use ringvault_common::throttle;
pub mod upload;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use ringvault_common::security::{self, ClientSecurity, ServerSecurity};

/// Prefix of the environment variable of a flag that names none itself (`--config FILE`
/// and the file's keys: `ringvault_common::config`).
pub const ENV_PREFIX: &str = "RINGVAULT_WORKER_";

/// Command-line options of `ringvault-worker`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "ringvault-worker",
    version,
    about = "ringvault worker: snapshots, hashes and uploads one Cassandra node's SSTables"
)]
pub struct WorkerOptions {
    /// Address the gRPC server listens on.
    #[arg(
        long,
        default_value = "127.0.0.1:7601",
        env = "RINGVAULT_WORKER_LISTEN"
    )]
    pub listen: SocketAddr,
    /// URL the coordinator uses to reach this worker (default: http://<listen>).
    #[arg(long, env = "RINGVAULT_WORKER_ADVERTISE")]
    pub advertise: Option<String>,
    /// The coordinator's gRPC URL.
    #[arg(
        long,
        env = "RINGVAULT_COORDINATOR",
        default_value = "http://127.0.0.1:7600"
    )]
    pub coordinator: String,
    /// CQL address of the local Cassandra node.
    #[arg(long, default_value = "127.0.0.1:9042", env = "RINGVAULT_CQL")]
    pub cql: String,
    /// nodetool command for the local node (a program path; arguments are appended).
    #[arg(long, default_value = "nodetool", env = "RINGVAULT_NODETOOL")]
    pub nodetool: PathBuf,
    /// The node's JMX address. Given, the worker keeps one JMX session open (a small Java helper)
    /// for snapshot and clearsnapshot instead of starting a nodetool JVM for each, about 1.5 s
    /// less per call; it uses nodetool whenever the session cannot be had, and refuses to run
    /// when JMX reaches another node than --cql. Same login and TLS options as nodetool.
    #[arg(long, value_name = "HOST:PORT", env = "RINGVAULT_JMX")]
    pub jmx: Option<crate::jmx::JmxTarget>,
    /// Start nodetool's JVM from a class-data-sharing archive in the state directory (about a
    /// third off each call's start-up; a damaged archive is deleted and the call run without).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, env = "RINGVAULT_NODETOOL_CLASS_ARCHIVE")]
    pub nodetool_class_archive: bool,
    /// Cassandra data directories (repeat for JBOD), as in data_file_directories.
    #[arg(long = "data-dir", required = true)]
    pub data_dirs: Vec<PathBuf>,
    /// sstableloader command (a program path), for restores onto another topology.
    #[arg(long, default_value = "sstableloader", env = "RINGVAULT_SSTABLELOADER")]
    pub sstableloader: PathBuf,
    /// Where restores stage downloaded files; must be on the data directory's filesystem so
    /// `nodetool import` moves rather than copies (default: <first data dir>/../ringvault-staging).
    #[arg(long, env = "RINGVAULT_STAGING_DIR")]
    pub staging_dir: Option<PathBuf>,
    /// Where the worker keeps its hash cache.
    #[arg(
        long,
        default_value = "/var/lib/ringvault-worker",
        env = "RINGVAULT_WORKER_STATE"
    )]
    pub state_dir: PathBuf,
    /// Parts (of at most the store's part size) read or in flight at once: bounds memory and
    /// upload parallelism.
    #[arg(long, default_value_t = 8)]
    pub concurrency: u32,
    /// Check that the store URL is usable (reachable, bucket exists, credentials accepted),
    /// print the result and exit.
    #[arg(long, value_name = "STORE_URL")]
    pub check_storage: Option<String>,
    /// Serve Prometheus metrics (`GET /metrics`) on this address (default: no metrics server).
    #[arg(long, value_name = "ADDR", env = "RINGVAULT_WORKER_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Store URLs this worker may upload to or download from (exact URLs or prefixes; repeat).
    /// A request naming any other store, endpoint or directory is refused before any request
    /// leaves the machine, so a caller can never aim the worker's credentials elsewhere.
    #[arg(
        long = "allow-store",
        value_name = "URL",
        env = "RINGVAULT_ALLOW_STORE",
        value_delimiter = ','
    )]
    pub allow_store: Vec<String>,
    /// PEM bundle of CAs the store clients (S3, Azure, GCS) trust besides the system roots: an
    /// https:// store endpoint behind a private CA (a missing or unreadable file stops the
    /// worker with its path named).
    #[arg(long, value_name = "PEM", env = "RINGVAULT_STORE_CA_FILE")]
    pub store_ca_file: Option<PathBuf>,
    /// Largest parts-in-flight a request may ask for (Upload, Download); more is refused.
    #[arg(long, default_value_t = 64)]
    pub max_concurrency: u32,
    /// RPCs served at once; more wait.
    #[arg(long, default_value_t = 64)]
    pub max_concurrent_rpcs: usize,
    /// Free bytes a restore leaves on the staging filesystem: a Download that would go below
    /// it is refused (restores never take the last free bytes of a data disk).
    #[arg(long, default_value_t = 1 << 30)]
    pub staging_reserve_bytes: u64,
    #[command(flatten)]
    pub tls: ringvault_common::security::TlsArgs,
    /// Cassandra access: CQL login and TLS, JMX login, sstableloader's settings.
    #[command(flatten)]
    pub access: access::AccessArgs,
    /// CPU and I/O priority, page-cache footprint.
    #[command(flatten)]
    pub priority: priority::PriorityOptions,
}

/// Part buffers (8 MiB) are allocated on many blocking threads; glibc would keep freed ones
/// cached per thread arena and raise its mmap threshold past them, so a long upload's RSS
/// grows with the thread count. Serving every allocation of 1 MiB or more with mmap returns
/// each buffer to the kernel when it is dropped: RSS stays bounded by the parts in flight.
pub fn bound_allocator_caching() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; called once before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// Runs the worker until killed.
pub async fn run(opts: WorkerOptions) -> anyhow::Result<()> {
    if let Some(ca) = &opts.store_ca_file {
        ringvault_common::store::trust_store_ca(ca)?;
    }
    if let Some(url) = &opts.check_storage {
        let store = ringvault_common::store::open(url).await?;
        store
            .check()
            .await
            .with_context(|| format!("store {} failed its check", store.describe()))?;
        println!("store {} is usable", store.describe());
        return Ok(());
    }
    let security = ServerSecurity::from_args(&opts.tls, opts.listen)?;
    let client = ClientSecurity {
        tls: opts.tls.load()?,
    };
    if opts.allow_store.is_empty() {
        anyhow::bail!(
            "no --allow-store given: name the store URLs (or prefixes) this worker may use"
        );
    }
    std::fs::create_dir_all(&opts.state_dir)
        .with_context(|| format!("creating state directory {}", opts.state_dir.display()))?;
    let cache = hash_cache::HashCache::open(&opts.state_dir.join("hash-cache.sqlite"))?;
    let node = Arc::new(node::LocalNode::new(&opts, cache).await?);
    // A --data-dir set that differs from the node's data_file_directories would leave a disk
    // out of every backup: refuse to start. A node not reachable yet is checked on first use.
    match node.check_data_dirs().await {
        Ok(()) => {}
        Err(node::DataDirsError::Mismatch(e)) => return Err(e.into()),
        // Wrong credentials or a CA that does not match the node's certificate do not fix
        // themselves: stop with what failed rather than retry forever.
        Err(node::DataDirsError::Unknown(e))
            if e.downcast_ref::<access::AccessError>()
                .is_some_and(access::AccessError::is_permanent) =>
        {
            return Err(e.context("the worker cannot log in to its Cassandra node"));
        }
        Err(node::DataDirsError::Unknown(e)) => {
            tracing::warn!(error = %format!("{e:#}"), "could not read the node's data_file_directories yet; checked before serving any request")
        }
    }
    if let Some(addr) = opts.metrics_listen {
        metrics::spawn(addr, Arc::clone(&node.metrics)).await?;
    }
    let scheme = match security {
        ServerSecurity::Tls(_) => "https",
        ServerSecurity::InsecureLoopback => "http",
    };
    let advertise = opts
        .advertise
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{}", opts.listen));
    tokio::spawn(registration::register_forever(
        opts.coordinator.clone(),
        client,
        Arc::clone(&node),
        advertise,
    ));
    let (health_reporter, routes) =
        ringvault_proto::reflection::standard_routes(ringvault_proto::reflection::WORKER)?;
    health_reporter
        .set_serving::<ringvault_proto::v1::worker_server::WorkerServer<service::WorkerService>>()
        .await;
    tracing::info!(listen = %opts.listen, "worker serving");
    let incoming = security::serve::incoming(opts.listen, security).await?;
    tonic::transport::Server::builder()
        .concurrency_limit_per_connection(opts.max_concurrent_rpcs.max(1))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            opts.max_concurrent_rpcs.max(1),
        ))
        .layer(security::AuthLayer::new(
            Arc::new(security::authz::WorkerPolicy),
            None,
        ))
        .add_routes(routes)
        .add_service(
            ringvault_proto::v1::worker_server::WorkerServer::new(service::WorkerService::new(
                node,
            ))
            .max_decoding_message_size(ringvault_common::service::MAX_GRPC_MESSAGE)
            .max_encoding_message_size(ringvault_common::service::MAX_GRPC_MESSAGE),
        )
        .serve_with_incoming_shutdown(incoming, ringvault_common::service::shutdown_signal())
        .await
        .context("gRPC server")?;
    Ok(())
}
