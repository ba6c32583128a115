//! Helpers for the integration tests: read the test bed's env file (written by
//! `scripts/testbed up`) to reach the real Cassandra nodes and object-store servers it started
//! ([`testbed`]), and run private ringvault deployments (a coordinator and one worker per node)
//! against them ([`deployment`]).
pub mod cluster;
pub mod deployment;
pub mod runs;
pub mod testbed;
