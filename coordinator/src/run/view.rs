//! What is known of a run, live or recorded: its row, its nodes' rows, per-table totals and
//! datacenters. Domain code reads and updates this; the gRPC edge converts it to `pb::Run`.
use crate::db::{RunNodeRow, RunRow, TableTotals};

/// A run as the CLI sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunView {
    pub run: RunRow,
    pub nodes: Vec<RunNodeRow>,
    /// Files and bytes per table (recorded runs; empty while live).
    pub tables: Vec<TableTotals>,
    /// Datacenters the run was limited to (empty: all).
    pub datacenters: Vec<String>,
}

impl RunView {
    /// A view of a run from its rows.
    pub fn new(run: RunRow, nodes: Vec<RunNodeRow>) -> Self {
        Self {
            run,
            nodes,
            tables: Vec::new(),
            datacenters: Vec::new(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::run::{BackupStage, RunKind, RunStage, RunState};

    /// A running backup view of cluster `cluster`.
    pub(crate) fn view(id: &str, cluster: &str) -> RunView {
        RunView::new(
            RunRow {
                id: id.into(),
                kind: RunKind::Backup,
                tag: "t".into(),
                cluster_name: cluster.into(),
                state: RunState::Running,
                stage: RunStage::Backup(BackupStage::Snapshot),
                keyspaces: Vec::new(),
                tables: Vec::new(),
                store_url: String::new(),
                created_ms: 0,
                finished_ms: 0,
                error: String::new(),
                source_run_id: String::new(),
                limits: Default::default(),
                schedule_id: String::new(),
            },
            Vec::new(),
        )
    }
}
