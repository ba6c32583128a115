//! The annotated example configuration (deploy/config/coordinator.toml) documents every flag
//! and is itself a valid configuration: a flag added without its line fails here, with the
//! lines to paste.
use ringvault_coordinator::{CoordinatorOptions, ENV_PREFIX};

#[test]
fn example_documents_every_flag_and_loads() {
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config/coordinator.toml");
    let opts: CoordinatorOptions =
        ringvault_common::config::check_example("ringvault-coordinator", ENV_PREFIX, &example)
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(opts.listen.port(), 7600);
}
