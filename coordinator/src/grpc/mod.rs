//! The gRPC edge of the coordinator, kept thin: each service validates a request, converts
//! proto to domain types ([`convert`]), hands off to domain code, and maps a
//! [`crate::error::CoordinatorError`] to a status. [`coordinator`] serves the CLI;
//! [`registry`] serves the workers.
pub mod convert;
pub mod coordinator;
pub mod registry;

pub use coordinator::CoordinatorService;
pub use registry::RegistryService;
