//! `ringvault-coordinator`: see the crate docs in `lib.rs`.
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let opts = ringvault_coordinator::CoordinatorOptions::parse();
    ringvault_coordinator::init_tracing();
    ringvault_coordinator::run(opts).await
}
