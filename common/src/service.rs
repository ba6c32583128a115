//! Process plumbing shared by the long-running binaries (coordinator, worker): logging to
//! stderr filtered by `RUST_LOG`, and the signal that ends a gRPC server gracefully.

/// The largest gRPC message any ringvault client or server encodes or decodes (tonic's default
/// is 4 MiB). Lists that grow with a node (file lists, reports) travel in chunks or streams
/// well below it; the limit is a ceiling, never the plan.
pub const MAX_GRPC_MESSAGE: usize = 64 << 20;

/// Logs to stderr, filtered by RUST_LOG (default info).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
