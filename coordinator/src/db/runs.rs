//! Runs, their nodes' progress, their files and the blobs they recorded, and the datacenters
//! a run was limited to.
use crate::run::{NodeState, RunKind, RunStage, RunState, SnapshotMark};
use rusqlite::{OptionalExtension, params};

use super::Db;

/// A run as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    pub id: String,
    pub kind: RunKind,
    pub tag: String,
    pub cluster_name: String,
    pub state: RunState,
    pub stage: RunStage,
    pub keyspaces: Vec<String>,
    pub tables: Vec<String>,
    pub store_url: String,
    pub created_ms: i64,
    pub finished_ms: i64,
    pub error: String,
    /// For restores: the backup run restored.
    pub source_run_id: String,
    /// The run's limits as resolved when it started.
    pub limits: crate::limits::RunLimits,
    /// The schedule that started the run ("" when started by hand).
    pub schedule_id: String,
}

/// One node's part of a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunNodeRow {
    pub host_id: String,
    pub address: String,
    pub worker_address: String,
    pub state: NodeState,
    pub snapshot: SnapshotMark,
    pub files_total: u64,
    pub files_done: u64,
    pub bytes_total: u64,
    pub bytes_done: u64,
    pub files_uploaded: u64,
    pub bytes_uploaded: u64,
    pub error: String,
    /// Times the node's work was re-issued after its worker restarted or its stream broke.
    pub retries: u32,
}

/// A file row of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunFileRow {
    /// Shared by every row of one node.
    pub host_id: std::sync::Arc<str>,
    pub keyspace: String,
    pub table: String,
    pub table_id: String,
    pub name: String,
    pub data_dir_index: u32,
    pub size: u64,
    pub hash: String,
    pub uploaded: bool,
    /// A Statistics.db: its SSTable's numbers, for the node manifest.
    pub sstable: Option<ringvault_common::sstable_stats::SstableStats>,
}

/// Files and bytes of one table in a run.
#[derive(Debug, Clone, PartialEq)]
pub struct TableTotals {
    pub keyspace: String,
    pub table: String,
    pub files: u64,
    pub bytes: u64,
}

impl Db {
    // ------------------------------------------------------------------ runs

    /// Records a new run.
    pub fn insert_run(&self, r: &RunRow) -> anyhow::Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO runs (id, kind, tag, cluster_name, state, stage, keyspaces, tables, store_url, created_ms, source_run_id, limits_json, schedule_id) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13)",
                params![r.id, r.kind, r.tag, r.cluster_name, r.state, r.stage, serde_json::to_string(&r.keyspaces)?, serde_json::to_string(&r.tables)?, r.store_url, r.created_ms, r.source_run_id, serde_json::to_string(&r.limits)?, r.schedule_id],
            )?;
            Ok(())
        })
    }

    /// Moves a run to a stage.
    pub fn set_stage(&self, run_id: &str, stage: RunStage) -> anyhow::Result<()> {
        self.execute(
            "UPDATE runs SET stage=?2 WHERE id=?1",
            params![run_id, stage],
        )?;
        Ok(())
    }

    /// Records a running run's outcome ahead of its cleanup ("" = succeeded).
    pub fn set_error(&self, run_id: &str, error: &str) -> anyhow::Result<()> {
        self.execute(
            "UPDATE runs SET error=?2 WHERE id=?1",
            params![run_id, error],
        )?;
        Ok(())
    }

    /// Sets a run's cluster name once it is known.
    pub fn set_cluster(&self, run_id: &str, cluster: &str) -> anyhow::Result<()> {
        self.execute(
            "UPDATE runs SET cluster_name=?2 WHERE id=?1",
            params![run_id, cluster],
        )?;
        Ok(())
    }

    /// Ends a run.
    pub fn finish_run(
        &self,
        run_id: &str,
        state: RunState,
        error: &str,
        now_ms: i64,
    ) -> anyhow::Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "UPDATE runs SET state=?2, error=?3, finished_ms=?4 WHERE id=?1",
                params![run_id, state, error, now_ms],
            )?;
            // The metrics counters take the run's files once, when it ends, and its per-table
            // totals are recorded for `runs show`.
            if state.is_terminal() {
                super::housekeeping::count_files(&tx, run_id)?;
                super::housekeeping::record_table_totals(&tx, run_id)?;
                tx.execute(
                    "UPDATE runs SET totals_recorded = 1 WHERE id=?1",
                    params![run_id],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn run_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(RunRow, String, String, String)> {
        let kind: RunKind = r.get(1)?;
        let stage: String = r.get(5)?;
        Ok((
            RunRow {
                id: r.get(0)?,
                kind,
                tag: r.get(2)?,
                cluster_name: r.get(3)?,
                state: r.get(4)?,
                stage: RunStage::parse(kind, &stage).ok_or_else(|| {
                    rusqlite::Error::FromSqlConversionFailure(
                        5,
                        rusqlite::types::Type::Text,
                        format!("unknown {kind} stage {stage:?}").into(),
                    )
                })?,
                keyspaces: Vec::new(),
                tables: Vec::new(),
                store_url: r.get(8)?,
                created_ms: r.get(9)?,
                finished_ms: r.get(10)?,
                error: r.get(11)?,
                source_run_id: r.get(12)?,
                limits: Default::default(),
                schedule_id: r.get(14)?,
            },
            r.get(6)?,
            r.get(7)?,
            r.get(13)?,
        ))
    }

    fn decode_run(
        mut r: RunRow,
        keyspaces: &str,
        tables: &str,
        limits: &str,
    ) -> anyhow::Result<RunRow> {
        r.keyspaces = serde_json::from_str(keyspaces)?;
        r.tables = serde_json::from_str(tables)?;
        r.limits = serde_json::from_str(limits)?;
        Ok(r)
    }

    const RUN_COLS: &'static str = "id, kind, tag, cluster_name, state, stage, keyspaces, tables, store_url, created_ms, finished_ms, error, source_run_id, limits_json, schedule_id";

    /// One run.
    pub fn run(&self, run_id: &str) -> anyhow::Result<Option<RunRow>> {
        self.with(|c| {
            let row = c
                .query_row(
                    &format!("SELECT {} FROM runs WHERE id=?1", Self::RUN_COLS),
                    params![run_id],
                    Self::run_from_row,
                )
                .optional()?;
            row.map(|(r, k, t, l)| Self::decode_run(r, &k, &t, &l))
                .transpose()
        })
    }

    /// Newest runs first; `only_state` filters.
    pub fn runs(&self, limit: u32, only_state: Option<RunState>) -> anyhow::Result<Vec<RunRow>> {
        self.with(|c| {
            let sql = format!(
                "SELECT {} FROM runs WHERE (?1 IS NULL OR state=?1) ORDER BY created_ms DESC, id DESC LIMIT ?2",
                Self::RUN_COLS
            );
            let mut st = c.prepare(&sql)?;
            let rows = st.query_map(params![only_state, limit], Self::run_from_row)?;
            let mut out = Vec::new();
            for row in rows {
                let (r, k, t, l) = row?;
                out.push(Self::decode_run(r, &k, &t, &l)?);
            }
            Ok(out)
        })
    }

    // ------------------------------------------------------------------ run nodes

    /// Writes (inserting or replacing) one node's progress row.
    pub fn put_run_node(&self, run_id: &str, n: &RunNodeRow) -> anyhow::Result<()> {
        self.put_run_nodes(run_id, std::slice::from_ref(n))
    }

    /// Writes several progress rows in one transaction.
    pub fn put_run_nodes(&self, run_id: &str, rows: &[RunNodeRow]) -> anyhow::Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            {
                let mut st = tx.prepare_cached(
                    "INSERT OR REPLACE INTO run_nodes (run_id, host_id, address, worker_address, state, snapshot, files_total, files_done, bytes_total, bytes_done, files_uploaded, bytes_uploaded, error, retries)
                     VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14)",
                )?;
                for n in rows {
                    st.execute(params![
                        run_id, n.host_id, n.address, n.worker_address, n.state, n.snapshot, n.files_total as i64, n.files_done as i64,
                        n.bytes_total as i64, n.bytes_done as i64, n.files_uploaded as i64, n.bytes_uploaded as i64, n.error, n.retries
                    ])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// The nodes of a run.
    pub fn run_nodes(&self, run_id: &str) -> anyhow::Result<Vec<RunNodeRow>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT host_id, address, worker_address, state, snapshot, files_total, files_done, bytes_total, bytes_done, files_uploaded, bytes_uploaded, error, retries
                 FROM run_nodes WHERE run_id=?1 ORDER BY address",
            )?;
            let rows = st.query_map(params![run_id], |r| {
                Ok(RunNodeRow {
                    host_id: r.get(0)?, address: r.get(1)?, worker_address: r.get(2)?, state: r.get(3)?, snapshot: r.get(4)?,
                    files_total: r.get::<_, i64>(5)? as u64, files_done: r.get::<_, i64>(6)? as u64, bytes_total: r.get::<_, i64>(7)? as u64,
                    bytes_done: r.get::<_, i64>(8)? as u64, files_uploaded: r.get::<_, i64>(9)? as u64, bytes_uploaded: r.get::<_, i64>(10)? as u64,
                    error: r.get(11)?, retries: r.get(12)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    // ------------------------------------------------------------------ files and blobs

    /// Appends a batch of file rows in one transaction.
    pub fn insert_files(&self, run_id: &str, files: &[RunFileRow]) -> anyhow::Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            {
                let mut st = tx.prepare_cached(
                    "INSERT INTO run_files (run_id, host_id, keyspace, table_name, table_id, name, data_dir_index, size, hash, uploaded, sstable_json)
                     VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)
                     ON CONFLICT (run_id, host_id, data_dir_index, keyspace, table_id, name) DO UPDATE SET
                       size = excluded.size, hash = excluded.hash, table_name = excluded.table_name,
                       uploaded = MAX(run_files.uploaded, excluded.uploaded), sstable_json = excluded.sstable_json",
                )?;
                for f in files {
                    let stats = f.sstable.as_ref().map(serde_json::to_string).transpose()?;
                    st.execute(params![run_id, f.host_id, f.keyspace, f.table, f.table_id, f.name, f.data_dir_index, f.size as i64, f.hash, f.uploaded, stats])?;
                }
            }
            // Rows arriving after the run ended make its recorded totals stale.
            tx.execute(
                "UPDATE runs SET totals_recorded = 0 WHERE id=?1 AND totals_recorded = 1",
                params![run_id],
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    /// The distinct blobs (hash, size) a run's file rows refer to, by hash; fails if one hash
    /// was recorded with two sizes. Read on a read-only connection: the sort of every row of
    /// the run stays within its small cache, and writers do not wait for it. The rows it
    /// reads are committed before (the upload's last flush).
    pub fn run_blobs(&self, run_id: &str) -> anyhow::Result<Vec<(String, u64)>> {
        self.with_read(|c| {
            let mut st = c.prepare(
                "SELECT hash, MIN(size), MAX(size) FROM run_files WHERE run_id=?1 GROUP BY hash ORDER BY hash",
            )?;
            let mut rows = st.query(params![run_id])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let (hash, min, max): (String, i64, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
                if min != max {
                    anyhow::bail!("blob {hash} recorded with two sizes ({min} and {max})");
                }
                out.push((hash, min as u64));
            }
            Ok(out)
        })
    }

    /// One node's file rows of a run, in key order (data directory, keyspace, table id, name:
    /// a table's files together within a data directory): the primary key's own order, so no
    /// sort of the node's rows. Read on a read-only connection of its own, so a commit reads
    /// several nodes' rows at once while the writer goes on; the rows are committed before
    /// (the upload's last flush).
    pub fn node_files(&self, run_id: &str, host_id: &str) -> anyhow::Result<Vec<RunFileRow>> {
        self.with_read(|c| {
            let mut st = c.prepare(
                "SELECT host_id, keyspace, table_name, table_id, name, data_dir_index, size, hash, uploaded, sstable_json
                 FROM run_files WHERE run_id=?1 AND host_id=?2
                 ORDER BY run_id, host_id, data_dir_index, keyspace, table_id, name",
            )?;
            let mut rows = st.query(params![run_id, host_id])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let stats: Option<String> = r.get(9)?;
                out.push(RunFileRow {
                    host_id: r.get::<_, String>(0)?.into(), keyspace: r.get(1)?, table: r.get(2)?, table_id: r.get(3)?, name: r.get(4)?,
                    data_dir_index: r.get(5)?, size: r.get::<_, i64>(6)? as u64, hash: r.get(7)?, uploaded: r.get(8)?,
                    sstable: stats.as_deref().map(serde_json::from_str).transpose()?,
                });
            }
            Ok(out)
        })
    }

    /// Per-table totals of a run's files.
    pub fn table_totals(&self, run_id: &str) -> anyhow::Result<Vec<TableTotals>> {
        self.with(|c| {
            let rolled: bool = c
                .query_row(
                    "SELECT files_rolled_up OR totals_recorded FROM runs WHERE id=?1",
                    params![run_id],
                    |r| r.get(0),
                )
                .optional()?
                .unwrap_or(false);
            let mut st = c.prepare(if rolled {
                "SELECT keyspace, table_name, files, bytes FROM run_table_totals WHERE run_id=?1 ORDER BY keyspace, table_name"
            } else {
                "SELECT keyspace, table_name, COUNT(*), COALESCE(SUM(size),0) FROM run_files WHERE run_id=?1 GROUP BY keyspace, table_name ORDER BY keyspace, table_name"
            })?;
            let rows = st.query_map(params![run_id], |r| {
                Ok(TableTotals { keyspace: r.get(0)?, table: r.get(1)?, files: r.get::<_, i64>(2)? as u64, bytes: r.get::<_, i64>(3)? as u64 })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// How many blobs the known-blob index holds (an estimate of the store's size).
    pub fn known_blob_count(&self) -> anyhow::Result<u64> {
        self.with(|c| {
            Ok(c.query_row("SELECT COUNT(*) FROM blobs", [], |r| r.get::<_, i64>(0))? as u64)
        })
    }

    /// Records blobs a committed run refers to.
    pub fn record_blobs(
        &self,
        run_id: &str,
        blobs: &[(String, u64)],
        now_ms: i64,
    ) -> anyhow::Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            {
                let mut st = tx.prepare_cached("INSERT OR IGNORE INTO blobs (hash, size, first_run_id, seen_ms) VALUES (?1,?2,?3,?4)")?;
                for (h, s) in blobs {
                    st.execute(params![h, *s as i64, run_id, now_ms])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }
}

/// The datacenters a backup was limited to (`--dc`).
impl Db {
    /// Records the datacenters of a run.
    pub fn set_run_datacenters(&self, run_id: &str, dcs: &[String]) -> anyhow::Result<()> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            tx.execute(
                "DELETE FROM run_datacenters WHERE run_id=?1",
                params![run_id],
            )?;
            for dc in dcs {
                tx.execute(
                    "INSERT INTO run_datacenters (run_id, datacenter) VALUES (?1, ?2)",
                    params![run_id, dc],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// The datacenters a run was limited to (empty: the whole ring).
    pub fn run_datacenters(&self, run_id: &str) -> anyhow::Result<Vec<String>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT datacenter FROM run_datacenters WHERE run_id=?1 ORDER BY datacenter",
            )?;
            let rows = st
                .query_map(params![run_id], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }
}

#[cfg(test)]
impl RunRow {
    /// A running run in its first stage, with nothing selected: the fixture of the db tests.
    pub(crate) fn for_test(id: &str, kind: RunKind, cluster: &str) -> Self {
        use crate::run::{BackupStage, RestoreStage, TestRestoreStage};
        Self {
            id: id.into(),
            kind,
            tag: "t".into(),
            cluster_name: cluster.into(),
            state: RunState::Running,
            stage: match kind {
                RunKind::Backup => RunStage::Backup(BackupStage::Plan),
                RunKind::Restore => RunStage::Restore(RestoreStage::Plan),
                RunKind::RestoreTest => RunStage::RestoreTest(TestRestoreStage::Plan),
            },
            keyspaces: vec![],
            tables: vec![],
            store_url: "file:///x".into(),
            created_ms: 1,
            finished_ms: 0,
            error: String::new(),
            source_run_id: String::new(),
            limits: Default::default(),
            schedule_id: String::new(),
        }
    }
}

#[cfg(test)]
mod datacenter_tests {
    use crate::db::*;
    use crate::run::*;

    #[test]
    fn a_runs_datacenters_round_trip() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = Db::open(&dir.path().join("c.db"))?;
        db.insert_run(&RunRow::for_test("r1", RunKind::Backup, "c"))?;
        assert!(db.run_datacenters("r1")?.is_empty());
        db.set_run_datacenters("r1", &["dc2".into(), "dc1".into()])?;
        assert_eq!(db.run_datacenters("r1")?, vec!["dc1", "dc2"]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::db::*;
    use crate::run::*;

    #[test]
    fn migrates_once_and_round_trips_runs_nodes_and_files() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("c.db");
        let db = Db::open(&path)?;
        drop(db);
        let db = Db::open(&path)?; // second open: no migration re-run
        let run = RunRow {
            keyspaces: vec!["ks".into()],
            limits: crate::limits::RunLimits {
                nodes_at_once: 2,
                ..Default::default()
            },
            schedule_id: "nightly".into(),
            ..RunRow::for_test("r1", RunKind::Backup, "c")
        };
        db.insert_run(&run)?;
        assert_eq!(db.run("r1")?, Some(run.clone()));
        assert_eq!(db.runs(10, Some(RunState::Running))?.len(), 1);
        db.finish_run("r1", RunState::Failed, "boom", 5)?;
        assert_eq!(db.runs(10, Some(RunState::Running))?.len(), 0);
        let node = RunNodeRow {
            host_id: "h".into(),
            state: NodeState::Uploading,
            files_done: 3,
            ..Default::default()
        };
        db.put_run_node("r1", &node)?;
        assert_eq!(db.run_nodes("r1")?, vec![node]);
        let f = RunFileRow {
            host_id: "h".into(),
            keyspace: "ks".into(),
            table: "t".into(),
            table_id: "0".repeat(32),
            name: "a".into(),
            data_dir_index: 0,
            size: 7,
            hash: "h".into(),
            uploaded: true,
            sstable: None,
        };
        db.insert_files(
            "r1",
            &[
                f.clone(),
                RunFileRow {
                    name: "b".into(),
                    ..f
                },
            ],
        )?;
        assert_eq!(
            db.table_totals("r1")?,
            vec![TableTotals {
                keyspace: "ks".into(),
                table: "t".into(),
                files: 2,
                bytes: 14
            }]
        );
        Ok(())
    }
}
