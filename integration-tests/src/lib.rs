//! Helpers for the integration tests: read the test bed's env file (written by
//! `scripts/testbed up`) to reach the real Cassandra nodes and object-store servers it started
//! ([`testbed`], [`cluster`]), run private ringvault deployments (a coordinator and one worker
//! per node) against them ([`deployment`]), follow runs and read stores ([`runs`]), share the
//! bed between the tests of one process ([`bed`]), and clean up however a test ends
//! ([`guards`]).
pub mod bed;
pub mod cluster;
pub mod deployment;
pub mod guards;
pub mod runs;
pub mod testbed;
