//! Helpers for the integration tests: read the test bed's env file (written by
//! `scripts/testbed up`) and reach the real Cassandra nodes and object-store servers it started.
pub mod testbed;
