//! The ringvault wire protocol (package `ringvault.v1`): generated tonic clients and servers for
//! the `Coordinator` (CLI-facing), `Registry` (worker-facing) and `Worker` (coordinator-facing)
//! services. Domain code converts these types at the edge and never passes them further in.

/// Generated code for package `ringvault.v1`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("ringvault.v1");
}
