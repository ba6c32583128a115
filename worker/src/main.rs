//! `ringvault-worker`: runs beside one Cassandra node. See the crate docs in `lib.rs`.
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let opts = ringvault_worker::WorkerOptions::parse();
    ringvault_worker::init_tracing();
    ringvault_worker::run(opts).await
}
