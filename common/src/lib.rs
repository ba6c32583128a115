//! Domain types shared by every ringvault crate: identifiers and snapshot tags ([`ids`]), the
//! manifests written to the store ([`manifest`]), the one module that builds every remote key
//! ([`layout`]), content hashing ([`hash`]) and the object-store trait with its backends
//! ([`store`]), the bandwidth cap ([`throttle`]), and the Prometheus text renderer both
//! binaries serve ([`metrics`]).
pub mod config;
pub mod cql;
pub mod hash;
pub mod ids;
pub mod layout;
pub mod manifest;
pub mod metrics;
pub mod security;
pub mod service;
pub mod sstable_stats;
pub mod store;
pub mod test_restore;
pub mod throttle;

pub use ids::{IdError, Identifier, RelativeName, RunId, SnapshotTag};
