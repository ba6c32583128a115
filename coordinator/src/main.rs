//! `ringvault-coordinator`: see the crate docs in `lib.rs`.
fn main() -> anyhow::Result<()> {
    // Flags, RINGVAULT_* variables, then `--config FILE` (TOML), then defaults.
    let opts: ringvault_coordinator::CoordinatorOptions =
        ringvault_common::config::parse_or_exit(ringvault_coordinator::ENV_PREFIX);
    ringvault_coordinator::runtime::build()?.block_on(async {
        ringvault_common::service::init_tracing();
        tokio::spawn(ringvault_coordinator::runtime::return_freed_memory());
        ringvault_coordinator::run(opts).await
    })
}
