//! `ringvault-worker`: runs beside one Cassandra node. See the crate docs in `lib.rs`.
fn main() -> anyhow::Result<()> {
    ringvault_worker::bound_allocator_caching();
    // Flags, RINGVAULT_* variables, then `--config FILE` (TOML), then defaults.
    let opts: ringvault_worker::WorkerOptions =
        ringvault_common::config::parse_or_exit(ringvault_worker::ENV_PREFIX);
    // Before the runtime starts its threads, so that every thread inherits it.
    let priority = opts.priority.apply()?;
    tokio::runtime::Runtime::new()?.block_on(async move {
        ringvault_common::service::init_tracing();
        tracing::info!(%priority, "worker priority");
        ringvault_worker::run(opts).await
    })
}
