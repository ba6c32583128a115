//! A worker's error keeps its class across the hop: every `WorkerError` kind, sent as the
//! worker's gRPC edge sends it, is read back by the coordinator (`CoordinatorError::from_worker`)
//! as the same class, so the CLI's exit code tells the operator what happened on the node.
use ringvault_coordinator::error::CoordinatorError as C;
use ringvault_worker::error::WorkerError as W;

fn class(e: &C) -> &'static str {
    match e {
        C::Invalid(_) => "invalid",
        C::Refused(_) => "refused",
        C::NotFound(_) => "not-found",
        C::Conflict(_) => "conflict",
        C::PermissionDenied(_) => "permission-denied",
        C::Unavailable { .. } => "unavailable",
        C::Busy(_) => "busy",
        C::Internal(_) => "internal",
    }
}

#[test]
fn every_worker_error_kind_maps_back_to_its_class() {
    let cases = [
        (W::invalid("bad tag"), "invalid"),
        (W::refused("no keyspace to back up"), "refused"),
        (W::NoSpace("staging is full".into()), "refused"),
        (W::NotFound("keyspace k does not exist".into()), "not-found"),
        (W::Conflict("snapshot t already exists".into()), "conflict"),
        (
            W::Unavailable {
                what: "CQL 127.0.0.1:9042".into(),
                reason: "connection refused".into(),
            },
            "unavailable",
        ),
        (
            W::PermissionDenied("store not allowed".into()),
            "permission-denied",
        ),
        (W::internal("statvfs failed"), "internal"),
    ];
    for (e, want) in cases {
        let msg = e.to_string();
        let back = C::from_worker("10.0.0.1 (h1)", &e.into_status());
        assert_eq!(class(&back), want, "{msg}");
        assert!(back.to_string().contains(&msg), "{back} lost {msg}");
        assert!(back.to_string().contains("10.0.0.1 (h1)"), "{back}");
    }
}
