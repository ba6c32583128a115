//! `ringvault-worker`: runs beside one Cassandra node. See the crate docs in `lib.rs`.
fn main() -> anyhow::Result<()> {
    ringvault_worker::bound_allocator_caching();
    tokio::runtime::Runtime::new()?.block_on(async_main())
}

async fn async_main() -> anyhow::Result<()> {
    // Flags, RINGVAULT_* variables, then `--config FILE` (TOML), then defaults.
    let opts: ringvault_worker::WorkerOptions =
        ringvault_common::config::parse_or_exit(ringvault_worker::ENV_PREFIX);
    ringvault_common::service::init_tracing();
    ringvault_worker::run(opts).await
}
