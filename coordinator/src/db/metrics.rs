//! Read-only aggregates for `GET /metrics` (see `crate::metrics`), computed at scrape time so
//! they survive restarts.
use crate::run::{RunKind, RunState};

use super::Db;

/// How many runs of one kind are in one state.
#[derive(Debug, Clone, PartialEq)]
pub struct RunStateCount {
    pub kind: RunKind,
    pub state: RunState,
    pub runs: u64,
}

/// Files of every backup run of one cluster, split into uploaded and skipped (already stored).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterFileTotals {
    pub cluster: String,
    pub files_uploaded: u64,
    pub bytes_uploaded: u64,
    pub files_skipped: u64,
    pub bytes_skipped: u64,
}

impl Db {
    /// Number of runs by kind and state.
    pub fn run_state_counts(&self) -> anyhow::Result<Vec<RunStateCount>> {
        self.with_read(|c| {
            let mut st = c.prepare(
                "SELECT kind, state, SUM(n) FROM (
                    SELECT kind, state, COUNT(*) AS n FROM runs GROUP BY kind, state
                    UNION ALL SELECT kind, state, runs AS n FROM pruned_run_counts
                 ) GROUP BY kind, state ORDER BY kind, state",
            )?;
            let rows = st.query_map([], |r| {
                Ok(RunStateCount {
                    kind: r.get(0)?,
                    state: r.get(1)?,
                    runs: r.get::<_, i64>(2)? as u64,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Uploaded and skipped files and bytes over every backup run, per cluster: the counters
    /// of finished runs plus the file rows of runs still running (never a scan of every row:
    /// `CROSS JOIN` makes SQLite walk the few uncounted runs and their rows by primary key).
    pub fn backup_file_totals(&self) -> anyhow::Result<Vec<ClusterFileTotals>> {
        self.with_read(|c| {
            let mut st = c.prepare(
                "SELECT cluster_name, SUM(fu), SUM(bu), SUM(fs), SUM(bs) FROM (
                    SELECT cluster_name, files_uploaded AS fu, bytes_uploaded AS bu,
                           files_skipped AS fs, bytes_skipped AS bs
                    FROM backup_file_counters
                    UNION ALL
                    SELECT r.cluster_name,
                        COALESCE(SUM(CASE WHEN f.uploaded != 0 THEN 1 ELSE 0 END), 0),
                        COALESCE(SUM(CASE WHEN f.uploaded != 0 THEN f.size ELSE 0 END), 0),
                        COALESCE(SUM(CASE WHEN f.uploaded != 0 THEN 0 ELSE 1 END), 0),
                        COALESCE(SUM(CASE WHEN f.uploaded != 0 THEN 0 ELSE f.size END), 0)
                    FROM runs r CROSS JOIN run_files f ON f.run_id = r.id
                    WHERE r.kind = 'backup' AND r.files_counted = 0
                    GROUP BY r.cluster_name
                 ) GROUP BY cluster_name ORDER BY cluster_name",
            )?;
            let rows = st.query_map([], |r| {
                Ok(ClusterFileTotals {
                    cluster: r.get(0)?,
                    files_uploaded: r.get::<_, i64>(1)? as u64,
                    bytes_uploaded: r.get::<_, i64>(2)? as u64,
                    files_skipped: r.get::<_, i64>(3)? as u64,
                    bytes_skipped: r.get::<_, i64>(4)? as u64,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Per cluster, when its newest successful backup finished (ms since the epoch).
    pub fn last_successful_backups(&self) -> anyhow::Result<Vec<(String, i64)>> {
        self.with_read(|c| {
            let mut st = c.prepare(
                "SELECT cluster_name, MAX(finished_ms) FROM runs
                 WHERE kind = 'backup' AND state = 'DONE'
                 GROUP BY cluster_name ORDER BY cluster_name",
            )?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// (cluster, last seen ms) of every registered worker.
    pub fn worker_last_seen(&self) -> anyhow::Result<Vec<(String, i64)>> {
        self.with_read(|c| {
            let mut st = c.prepare(
                "SELECT cluster_name, last_seen_ms FROM workers ORDER BY cluster_name, host_id",
            )?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }
}
