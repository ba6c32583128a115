//! One lock for the whole end-to-end binary. Every topic module shares one process now, and
//! `cargo test` runs two tests at a time: a test that needs the test bed to itself (a
//! deployment on the Cassandra nodes, snapshots checked node-wide, process environment
//! changed) takes [`exclusive`]; a test that only uses what others cannot disturb (its own
//! store prefix, a read-only look at the nodes) takes [`shared`] and may run beside other
//! shared ones, never beside an exclusive one. Poison-free: a failed test releases it.
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

static BED: RwLock<()> = RwLock::const_new(());

/// Held for the whole test: no other test runs meanwhile.
pub async fn exclusive() -> RwLockWriteGuard<'static, ()> {
    BED.write().await
}

/// Held for the whole test: only other shared tests run meanwhile.
pub async fn shared() -> RwLockReadGuard<'static, ()> {
    BED.read().await
}

/// [`shared`] for a test that is not async (never call it inside a runtime).
pub fn shared_blocking() -> RwLockReadGuard<'static, ()> {
    BED.blocking_read()
}
