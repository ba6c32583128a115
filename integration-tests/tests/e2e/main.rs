//! The end-to-end tier in one binary: every test runs against the real test bed (Cassandra 5.0
//! nodes, s3s-fs, Azurite, fake-gcs-server; `scripts/testbed up --nodes 3`), one module per
//! topic. One binary links the cloud SDKs once instead of once per topic. The helpers live in
//! the library (`ringvault_integration_tests`): deployments, runs followed through the CLI,
//! store URLs and credentials, the one bed lock ([`bed`]: a test that needs the bed to itself
//! holds it exclusively, others share it), and guards that drop a test's keyspaces and restore
//! the environment however the test ends.
//!
//! Run one topic with `cargo test -p ringvault-integration-tests --test e2e -- backup::`.
//!
//! [`bed`]: ringvault_integration_tests::bed
mod azure_batch_sas;
mod backup;
mod crash;
mod jmx_session;
mod metrics;
mod never_partial;
mod object_stores;
mod operations;
mod purge_ages;
mod purge_race;
mod restore;
mod restore_test;
mod schema;
mod security;
mod store_ca;
mod store_conformance;
mod testbed;
