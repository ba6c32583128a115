//! The fast test tier: the real coordinator ([`harness`], started in-process through
//! `ringvault_coordinator::run` on a loopback port with a temporary SQLite file and a `file://`
//! store) against in-process fake workers ([`fake_worker`]) that register through the real
//! Registry RPC, heartbeat, answer the `Worker` service with scripted behaviour and write real
//! blobs into the store with common's store, layout and hash code. It proves the backup stages,
//! retries, cleanup on failure and resume in seconds, without Cassandra or the test bed; the
//! end-to-end tier (`integration-tests`) proves the same against real nodes.
pub mod fake_worker;
pub mod harness;
pub mod sim;
