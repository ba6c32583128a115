//! The one owner of "what is running here": the runs in progress in this process (one per
//! cluster) and the purge lock (backup and restore starts and verifies hold it shared; a purge
//! holds it exclusively and only when no run is in progress). Every rule about which
//! operations may overlap lives in this file.
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::handle::RunHandle;
use crate::error::CoordinatorError;

/// Runs in progress and the purge lock.
#[derive(Default)]
pub struct RunRegistry {
    active: Mutex<HashMap<String, Arc<RunHandle>>>,
    purge_lock: RwLock<()>,
}

/// Held while a run starts (plans and records itself): no purge sweeps meanwhile.
pub type StartGuard<'a> = RwLockReadGuard<'a, ()>;
/// Held by a purge: no run starts and no verify reads meanwhile.
pub type PurgeGuard<'a> = RwLockWriteGuard<'a, ()>;

impl RunRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn active(&self) -> Result<MutexGuard<'_, HashMap<String, Arc<RunHandle>>>, CoordinatorError> {
        self.active
            .lock()
            .map_err(|_| CoordinatorError::Internal(anyhow::anyhow!("active runs lock poisoned")))
    }

    /// The run `id`, if it is in progress here.
    pub fn get(&self, id: &str) -> Option<Arc<RunHandle>> {
        self.active().ok().and_then(|a| a.get(id).cloned())
    }

    /// Ids of the runs in progress here.
    pub fn running_ids(&self) -> Result<Vec<String>, CoordinatorError> {
        let mut ids: Vec<String> = self.active()?.keys().cloned().collect();
        ids.sort();
        Ok(ids)
    }

    /// Makes `handle` the cluster's run, or refuses: one run per cluster at a time. Checked
    /// and claimed under one lock, so two starts on one cluster cannot both pass.
    pub fn claim(&self, handle: Arc<RunHandle>) -> Result<(), CoordinatorError> {
        let mut active = self.active()?;
        if let Some(other) = active
            .values()
            .find(|h| h.cluster_name == handle.cluster_name)
        {
            return Err(CoordinatorError::conflict(format!(
                "run {} is already running on cluster {}; one run per cluster at a time",
                other.id, handle.cluster_name
            )));
        }
        active.insert(handle.id.clone(), handle);
        Ok(())
    }

    /// Makes a run recorded by an earlier process active again (a resumed run).
    pub fn adopt(&self, handle: Arc<RunHandle>) -> Result<(), CoordinatorError> {
        self.active()?.insert(handle.id.clone(), handle);
        Ok(())
    }

    /// The run `id` is no longer in progress here.
    pub fn release(&self, id: &str) {
        if let Ok(mut a) = self.active() {
            a.remove(id);
        }
    }

    /// Entered by a backup or restore start: refused while a purge sweeps the store.
    pub fn start_guard(&self, what: &str) -> Result<StartGuard<'_>, CoordinatorError> {
        self.purge_lock.try_read().map_err(|_| {
            CoordinatorError::Busy(format!(
                "a purge is sweeping the store; start the {what} when it ends"
            ))
        })
    }

    /// Held for a whole verify: waits for a purge to end, then keeps the next one out.
    pub async fn read_guard(&self) -> StartGuard<'_> {
        self.purge_lock.read().await
    }

    /// Entered by a purge: refused while another purge or a start holds the lock, and while
    /// any run is in progress here (the purge would race it).
    pub fn purge_guard(&self) -> Result<PurgeGuard<'_>, CoordinatorError> {
        let guard = self.purge_lock.try_write().map_err(|_| {
            CoordinatorError::refused(
                "a purge or a backup start is in progress; try again when it ends",
            )
        })?;
        let busy = self.running_ids()?;
        if !busy.is_empty() {
            return Err(CoordinatorError::refused(format!(
                "run(s) {} in progress; purge would race them (nothing was deleted)",
                busy.join(", ")
            )));
        }
        Ok(guard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::view::tests::view;

    fn handle(id: &str, cluster: &str) -> Arc<RunHandle> {
        Arc::new(RunHandle::new(view(id, cluster)))
    }

    #[test]
    fn one_run_per_cluster() {
        let r = RunRegistry::new();
        r.claim(handle("a", "c1")).expect("first run");
        let e = r.claim(handle("b", "c1")).expect_err("second run on c1");
        assert_eq!(e.code(), tonic::Code::Aborted);
        assert!(e.to_string().contains("run a is already running"), "{e}");
        r.claim(handle("c", "c2")).expect("another cluster");
        r.release("a");
        r.claim(handle("b", "c1")).expect("after the first ended");
    }

    #[test]
    fn purge_waits_for_runs_and_starts_wait_for_purge() {
        let r = RunRegistry::new();
        r.claim(handle("a", "c1")).expect("run");
        let e = r.purge_guard().expect_err("purge during a run");
        assert!(e.to_string().contains("run(s) a in progress"), "{e}");
        r.release("a");
        let purge = r.purge_guard().expect("purge when idle");
        let e = r.start_guard("backup").expect_err("start during a purge");
        assert_eq!(e.code(), tonic::Code::Unavailable);
        drop(purge);
        let start = r.start_guard("backup").expect("start after the purge");
        assert!(r.purge_guard().is_err(), "purge during a start");
        drop(start);
    }
}
