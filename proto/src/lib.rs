//! The ringvault wire protocol (package `ringvault.v1`): generated tonic clients and servers for
//! the `Coordinator` (CLI-facing), `Registry` (worker-facing) and `Worker` (coordinator-facing)
//! services. Domain code converts these types at the edge and never passes them further in.

/// Generated code for package `ringvault.v1`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("ringvault.v1");
}

/// Upload events queued together, sent as few messages as keep their meaning.
pub mod coalesce {
    use super::v1::{FilesDone, UploadEvent, UploadProgress, upload_event::Event};

    /// The most events one coalesced message stands for: a `FilesDone` of this many files is
    /// about 15 KiB. The receiver keeps a decoding buffer of the largest message per stream,
    /// so at 1,000 workers 256 events (60 KiB) cost the coordinator 60 MiB more than 64, and
    /// 64 files a message (128 messages before batching) already make the per-message cost
    /// small.
    pub const MAX_EVENTS: usize = 64;

    /// `first` and what `next` has ready after it, up to [`MAX_EVENTS`] in all: the events
    /// that queued up while the previous message was on its way (`next` is a channel's
    /// `try_recv`, so this never waits).
    pub fn queued<T>(first: T, mut next: impl FnMut() -> Option<T>) -> Vec<T> {
        let mut batch = vec![first];
        while batch.len() < MAX_EVENTS {
            match next() {
                Some(e) => batch.push(e),
                None => break,
            }
        }
        batch
    }

    /// Folds `events`, in order, into: each plan where it was, and between plans one
    /// `FilesDone` with every file and the bytes read (or one `UploadProgress` when no file
    /// finished). Counts and sums are unchanged; only the number of messages shrinks.
    pub fn upload_events(events: Vec<UploadEvent>) -> Vec<UploadEvent> {
        let mut out = Vec::new();
        let mut pending = FilesDone::default();
        let flush = |pending: &mut FilesDone, out: &mut Vec<UploadEvent>| {
            let p = std::mem::take(pending);
            let event = if !p.files.is_empty() {
                Event::Files(p)
            } else if p.bytes_read > 0 {
                Event::Progress(UploadProgress {
                    bytes_read: p.bytes_read,
                })
            } else {
                return;
            };
            out.push(UploadEvent { event: Some(event) });
        };
        for e in events {
            match e.event {
                Some(Event::File(f)) => pending.files.push(f),
                Some(Event::Progress(p)) => pending.bytes_read += p.bytes_read,
                Some(Event::Files(f)) => {
                    pending.files.extend(f.files);
                    pending.bytes_read += f.bytes_read;
                }
                Some(Event::Plan(p)) => {
                    flush(&mut pending, &mut out);
                    out.push(UploadEvent {
                        event: Some(Event::Plan(p)),
                    });
                }
                None => {}
            }
        }
        flush(&mut pending, &mut out);
        out
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::v1::{FileDone, FileEntry, UploadPlan};

        fn file(name: &str) -> UploadEvent {
            UploadEvent {
                event: Some(Event::File(FileDone {
                    file: Some(FileEntry {
                        name: name.into(),
                        ..Default::default()
                    }),
                    uploaded: true,
                    hash_cached: false,
                })),
            }
        }

        fn progress(bytes_read: u64) -> UploadEvent {
            UploadEvent {
                event: Some(Event::Progress(UploadProgress { bytes_read })),
            }
        }

        #[test]
        fn keeps_the_plan_first_and_folds_files_and_progress_after_it() {
            let plan = UploadEvent {
                event: Some(Event::Plan(UploadPlan {
                    total_files: 2,
                    total_bytes: 30,
                })),
            };
            let out = upload_events(vec![
                plan.clone(),
                progress(10),
                file("a"),
                progress(20),
                file("b"),
            ]);
            assert_eq!(out.len(), 2);
            assert_eq!(out[0], plan);
            let Some(Event::Files(f)) = &out[1].event else {
                panic!("expected one FilesDone, got {:?}", out[1]);
            };
            let names: Vec<&str> = f
                .files
                .iter()
                .filter_map(|d| d.file.as_ref().map(|e| e.name.as_str()))
                .collect();
            assert_eq!(names, ["a", "b"]);
            assert_eq!(f.bytes_read, 30);
        }

        #[test]
        fn queued_takes_what_is_ready_up_to_the_cap() {
            let mut ready = 1..;
            let batch = queued(0, || ready.next());
            assert_eq!(batch.len(), MAX_EVENTS);
            assert_eq!(batch[..3], [0, 1, 2]);
            let mut three = vec![3, 2, 1];
            assert_eq!(queued(0, || three.pop()), [0, 1, 2, 3]);
        }

        #[test]
        fn progress_alone_stays_progress_and_nothing_yields_nothing() {
            assert_eq!(
                upload_events(vec![progress(5), progress(7)]),
                vec![progress(12)]
            );
            assert!(upload_events(vec![]).is_empty());
        }
    }
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
