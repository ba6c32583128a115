//! The annotated example configuration (deploy/config/coordinator.toml) documents every flag
//! and is itself a valid configuration: a flag added without its line fails here, with the
//! lines to paste.
use std::path::PathBuf;

use ringvault_common::config;
use ringvault_coordinator::{CoordinatorOptions, ENV_PREFIX};

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/config/coordinator.toml")
}

#[test]
fn example_documents_every_flag() {
    let text = std::fs::read_to_string(example()).expect("deploy/config/coordinator.toml");
    let cmd = config::command::<CoordinatorOptions>(ENV_PREFIX);
    let missing: Vec<String> = config::missing_from_example(&cmd, &text)
        .iter()
        .map(config::annotated)
        .collect();
    assert!(
        missing.is_empty(),
        "deploy/config/coordinator.toml lacks these keys; add:\n\n{}",
        missing.join("\n")
    );
}

#[test]
fn example_is_a_valid_configuration() {
    let path = example();
    let opts: CoordinatorOptions = config::try_parse_from(
        ["ringvault-coordinator", "--config", path.to_str().unwrap()],
        ENV_PREFIX,
    )
    .expect("the example loads");
    assert_eq!(opts.listen.port(), 7600);
}
