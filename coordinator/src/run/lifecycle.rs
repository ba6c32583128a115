//! What every kind of run (backup, restore) does the same way: record its start, publish and
//! persist node progress, and record its end, in SQLite and in the live view.
use std::sync::Arc;

use super::{RunHandle, RunState, RunView};
use crate::db::{RunNodeRow, RunRow};
use crate::error::CoordinatorError;
use crate::{Coordinator, now_ms};

impl Coordinator {
    /// Records a new run with its nodes and makes it active; refuses a second run on the
    /// same cluster.
    pub async fn record_start(
        &self,
        row: &RunRow,
        nodes: &[RunNodeRow],
    ) -> Result<Arc<RunHandle>, CoordinatorError> {
        let handle = Arc::new(RunHandle::new(RunView::new(row.clone(), nodes.to_vec())));
        self.runs.claim(Arc::clone(&handle))?;
        let (r, n) = (row.clone(), nodes.to_vec());
        let recorded = self
            .db
            .call(move |db| {
                db.insert_run(&r)?;
                db.put_run_nodes(&r.id, &n)
            })
            .await;
        if let Err(e) = recorded {
            self.runs.release(&row.id);
            return Err(CoordinatorError::Internal(e));
        }
        Ok(handle)
    }

    /// Makes a run recorded by an earlier process active again (a resumed run).
    pub fn adopt_run(&self, row: &RunRow, nodes: &[RunNodeRow]) -> anyhow::Result<Arc<RunHandle>> {
        let handle = Arc::new(RunHandle::new(RunView::new(row.clone(), nodes.to_vec())));
        self.runs.adopt(Arc::clone(&handle))?;
        Ok(handle)
    }

    /// Writes the nodes' progress rows from the live view.
    pub async fn persist_nodes(&self, handle: &RunHandle) -> anyhow::Result<()> {
        let rows = handle.snapshot().nodes;
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
            r.run.state = state;
            r.run.error = error.to_string();
            r.run.finished_ms = now;
        });
        if let Err(e) = self.persist_nodes(handle).await {
            tracing::error!(error = %format!("{e:#}"), "persisting node progress");
        }
        let (id, err) = (handle.id.clone(), error.to_string());
        if let Err(e) = self
            .db
            .call(move |db| db.finish_run(&id, state, &err, now))
            .await
        {
            tracing::error!(error = %format!("{e:#}"), "recording the end of the run");
        }
        self.runs.release(&handle.id);
    }
}

impl Coordinator {
    /// The run `id` as the CLI sees it: live when in progress here, else as recorded.
    pub async fn run_view(&self, id: &str) -> Result<RunView, CoordinatorError> {
        let run_id = ringvault_common::RunId::parse(id)
            .map_err(|e| CoordinatorError::invalid(e.to_string()))?;
        if let Some(h) = self.runs.get(run_id.as_str()) {
            return Ok(h.snapshot());
        }
        let id = run_id.to_string();
        let found = self
            .db
            .call(move |db| {
                let Some(run) = db.run(&id)? else {
                    return Ok(None);
                };
                let mut view = RunView::new(run, db.run_nodes(&id)?);
                view.tables = db.table_totals(&id)?;
                view.datacenters = db.run_datacenters(&id)?;
                Ok(Some(view))
            })
            .await?;
        found.ok_or_else(|| CoordinatorError::not_found(format!("run {run_id} not found")))
    }

    /// The newest `limit` runs, live where in progress here (node rows, no table totals).
    pub async fn recent_runs(&self, limit: u32) -> Result<Vec<RunView>, CoordinatorError> {
        let rows = self.db.call(move |db| db.runs(limit, None)).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push(match self.runs.get(&r.id) {
                Some(h) => h.snapshot(),
                None => {
                    let id = r.id.clone();
                    let nodes = self.db.call(move |db| db.run_nodes(&id)).await?;
                    RunView::new(r, nodes)
                }
            });
        }
        Ok(out)
    }

    /// Cancels the run `id` if it is in progress here.
    pub async fn cancel_run(&self, id: &str) -> Result<RunView, CoordinatorError> {
        let view = self.run_view(id).await?;
        match self.runs.get(&view.run.id) {
            Some(h) => {
                h.cancel.cancel();
                Ok(h.snapshot())
            }
            None => Err(CoordinatorError::refused(format!(
                "run {} is not running (state {})",
                view.run.id, view.run.state
            ))),
        }
    }
}
