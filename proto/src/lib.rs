//! The ringvault wire protocol (package `ringvault.v1`): generated tonic clients and servers for
//! the `Coordinator` (CLI-facing), `Registry` (worker-facing) and `Worker` (coordinator-facing)
//! services. Domain code converts these types at the edge and never passes them further in.

/// Generated code for package `ringvault.v1`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("ringvault.v1");
}

/// The encoded `FileDescriptorSet` of package `ringvault.v1`, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/ringvault_v1_descriptor.bin"));

/// gRPC server reflection (`grpc.reflection.v1` and `v1alpha`, the one older grpcurl asks
/// for) describing `ringvault.v1` and `grpc.health.v1`. Both servers add it; the
/// authorization layer lets anyone who completes the TLS handshake call it (it reveals the
/// public schema only, no data).
pub mod reflection {
    use tonic_reflection::server::{v1, v1alpha};

    /// Why the reflection services could not be built (a descriptor set that does not decode:
    /// a build defect, reported rather than panicking).
    pub type Error = tonic_reflection::server::Error;

    /// The services the coordinator serves.
    pub const COORDINATOR: &[&str] = &[
        "ringvault.v1.Coordinator",
        "ringvault.v1.Registry",
        "grpc.health.v1.Health",
    ];
    /// The services a worker serves.
    pub const WORKER: &[&str] = &["ringvault.v1.Worker", "grpc.health.v1.Health"];

    fn builder(services: &[&str]) -> tonic_reflection::server::Builder<'static> {
        let mut b = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(super::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        for s in services {
            b = b.with_service_name(*s);
        }
        b
    }

    /// The `grpc.reflection.v1` service listing `services` ([`COORDINATOR`] or [`WORKER`]).
    pub fn v1(
        services: &[&str],
    ) -> Result<v1::ServerReflectionServer<impl v1::ServerReflection>, Error> {
        builder(services).build_v1()
    }

    /// What every ringvault gRPC server serves besides its own services: health (its reporter
    /// returned, to mark the server's own service serving) and both reflection versions
    /// listing `services`.
    pub fn standard_routes(
        services: &[&str],
    ) -> Result<(tonic_health::server::HealthReporter, tonic::service::Routes), Error> {
        let (reporter, health) = tonic_health::server::health_reporter();
        let routes = tonic::service::Routes::new(health)
            .add_service(v1(services)?)
            .add_service(v1alpha(services)?);
        Ok((reporter, routes))
    }

    /// The `grpc.reflection.v1alpha` service listing `services`.
    pub fn v1alpha(
        services: &[&str],
    ) -> Result<v1alpha::ServerReflectionServer<impl v1alpha::ServerReflection>, Error> {
        builder(services).build_v1alpha()
    }
}
