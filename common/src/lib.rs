//! Domain types shared by every ringvault crate: identifiers and snapshot tags, the manifests
//! written to the store, the object-store trait with its backends, the one module that builds
//! every remote key, and content hashing.
