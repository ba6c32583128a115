//! What every kind of run (backup, restore) does the same way: record its start, publish and
//! persist node progress, and record its end, in SQLite and in the live view.
use std::sync::Arc;

use tonic::Status;

use crate::db::{RunNodeRow, RunRow};
use crate::progress::{RunHandle, RunState};
use crate::{Coordinator, now_ms};

impl Coordinator {
    /// Records a new run with its nodes and makes it active; refuses a second run on the
    /// same cluster.
    pub async fn record_start(
        &self,
        row: &RunRow,
        nodes: &[RunNodeRow],
    ) -> Result<Arc<RunHandle>, Status> {
        let handle = Arc::new(RunHandle::new(crate::backup::run_view(row, nodes, &[])));
        // Checked and claimed under one lock: two starts on one cluster cannot both pass.
        {
            let mut active = self
                .active
                .lock()
                .map_err(|_| Status::internal("active runs lock poisoned"))?;
            if let Some(other) = active.values().find(|h| h.cluster_name == row.cluster_name) {
                return Err(Status::failed_precondition(format!(
                    "run {} is already running on cluster {}; one run per cluster at a time",
                    other.id, row.cluster_name
                )));
            }
            active.insert(row.id.clone(), Arc::clone(&handle));
        }
        let (r, n) = (row.clone(), nodes.to_vec());
        let recorded = self
            .db
            .call(move |db| {
                db.insert_run(&r)?;
                db.put_run_nodes(&r.id, &n)
            })
            .await;
        if let Err(e) = recorded {
            if let Ok(mut active) = self.active.lock() {
                active.remove(&row.id);
            }
            return Err(Status::internal(format!("{e:#}")));
        }
        Ok(handle)
    }

    /// Makes a run recorded by an earlier process active again (a resumed run).
    pub fn adopt_run(&self, row: &RunRow, nodes: &[RunNodeRow]) -> anyhow::Result<Arc<RunHandle>> {
        let handle = Arc::new(RunHandle::new(crate::backup::run_view(row, nodes, &[])));
        self.active
            .lock()
            .map_err(|_| anyhow::anyhow!("active runs lock poisoned"))?
            .insert(row.id.clone(), Arc::clone(&handle));
        Ok(handle)
    }

    /// Writes the nodes' progress rows from the live view.
    pub async fn persist_nodes(&self, handle: &RunHandle) -> anyhow::Result<()> {
        let rows: Vec<RunNodeRow> = handle
            .snapshot()
            .nodes
            .iter()
            .map(crate::backup::node_row)
            .collect();
        let id = handle.id.clone();
        self.db.call(move |db| db.put_run_nodes(&id, &rows)).await
    }

    /// Ends a run: live view, node rows, run row, and no longer active.
    pub async fn finish_run(&self, handle: &RunHandle, state: RunState, error: &str) {
        if state == RunState::Done {
            tracing::info!(run = %handle.id, "run done");
        } else {
            tracing::error!(run = %handle.id, state = state.as_str(), error, "run ended");
        }
        let now = now_ms();
        handle.update(|r| {
            r.state = state.as_str().into();
            r.error = error.to_string();
            r.finished_unix_ms = now;
        });
        if let Err(e) = self.persist_nodes(handle).await {
            tracing::error!(error = %format!("{e:#}"), "persisting node progress");
        }
        let (id, st, err) = (handle.id.clone(), state.as_str(), error.to_string());
        if let Err(e) = self
            .db
            .call(move |db| db.finish_run(&id, st, &err, now))
            .await
        {
            tracing::error!(error = %format!("{e:#}"), "recording the end of the run");
        }
        if let Ok(mut active) = self.active.lock() {
            active.remove(&handle.id);
        }
    }
}
