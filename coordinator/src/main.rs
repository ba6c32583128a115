//! `ringvault-coordinator`: see the crate docs in `lib.rs`.
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let opts = ringvault_coordinator::CoordinatorOptions::parse();
    ringvault_common::service::init_tracing();
    ringvault_coordinator::run(opts).await
}
