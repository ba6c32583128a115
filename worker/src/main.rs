//! `ringvault-worker`: runs beside one Cassandra node. See the crate docs in `lib.rs`.
use clap::Parser;

fn main() -> anyhow::Result<()> {
    ringvault_worker::bound_allocator_caching();
    tokio::runtime::Runtime::new()?.block_on(async_main())
}

async fn async_main() -> anyhow::Result<()> {
    let opts = ringvault_worker::WorkerOptions::parse();
    ringvault_common::service::init_tracing();
    ringvault_worker::run(opts).await
}
