//! Bounded state: per-file rows of finished runs rolled up, old runs and events pruned, freed
//! pages returned in small steps, and the metrics counters fed once per finished run.
use rusqlite::params;

use super::Db;

/// Adds a finished backup run's files to the metrics counters, once.
pub(super) fn count_files(c: &rusqlite::Connection, run_id: &str) -> rusqlite::Result<()> {
    let n = c.execute(
        "UPDATE runs SET files_counted = 1 WHERE id=?1 AND kind='backup' AND files_counted=0",
        params![run_id],
    )?;
    if n == 1 {
        c.execute(
            "INSERT INTO backup_file_counters (cluster_name, files_uploaded, bytes_uploaded, files_skipped, bytes_skipped)
             SELECT r.cluster_name,
                    COALESCE(SUM(CASE WHEN f.uploaded != 0 THEN 1 ELSE 0 END), 0),
                    COALESCE(SUM(CASE WHEN f.uploaded != 0 THEN f.size ELSE 0 END), 0),
                    COALESCE(SUM(CASE WHEN f.uploaded != 0 THEN 0 ELSE 1 END), 0),
                    COALESCE(SUM(CASE WHEN f.uploaded != 0 THEN 0 ELSE f.size END), 0)
             FROM runs r CROSS JOIN run_files f ON f.run_id = r.id WHERE r.id=?1 GROUP BY r.cluster_name
             ON CONFLICT(cluster_name) DO UPDATE SET
               files_uploaded = files_uploaded + excluded.files_uploaded,
               bytes_uploaded = bytes_uploaded + excluded.bytes_uploaded,
               files_skipped = files_skipped + excluded.files_skipped,
               bytes_skipped = bytes_skipped + excluded.bytes_skipped",
            params![run_id],
        )?;
    }
    Ok(())
}

/// Records a run's per-table totals from its file rows (again: a repeat replaces them).
pub(super) fn record_table_totals(c: &rusqlite::Connection, run_id: &str) -> rusqlite::Result<()> {
    c.execute(
        "INSERT OR REPLACE INTO run_table_totals (run_id, keyspace, table_name, files, bytes)
         SELECT run_id, keyspace, table_name, COUNT(*), COALESCE(SUM(size),0) FROM run_files
         WHERE run_id=?1 GROUP BY keyspace, table_name",
        params![run_id],
    )?;
    Ok(())
}

/// File rows deleted per transaction: the write lock is never held for long.
const CHUNK: i64 = 20_000;

/// What one round of housekeeping did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Housekeeping {
    pub runs_rolled_up: u64,
    pub file_rows_deleted: u64,
    pub runs_pruned: u64,
    pub events_pruned: u64,
}

impl Db {
    /// Replaces the file rows of runs that finished before `cutoff_ms` with per-table totals,
    /// in transactions of at most [`CHUNK`] rows (heartbeats get the lock in between).
    pub fn roll_up_files(&self, cutoff_ms: i64, out: &mut Housekeeping) -> anyhow::Result<()> {
        let runs: Vec<String> = self.with(|c| {
            let mut st = c.prepare(
                "SELECT id FROM runs WHERE state != 'RUNNING' AND finished_ms > 0 AND finished_ms < ?1 AND files_rolled_up = 0",
            )?;
            let rows = st.query_map(params![cutoff_ms], |r| r.get::<_, String>(0))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })?;
        for run in runs {
            self.with(|c| {
                let tx = c.transaction()?;
                count_files(&tx, &run)?;
                record_table_totals(&tx, &run)?;
                tx.execute(
                    "UPDATE runs SET files_rolled_up = 1 WHERE id=?1",
                    params![run],
                )?;
                tx.commit()?;
                Ok(())
            })?;
            out.runs_rolled_up += 1;
            out.file_rows_deleted += self.delete_files_of(&run, CHUNK)?;
        }
        Ok(())
    }

    /// Deletes a run's file rows, `chunk` per transaction; how many.
    fn delete_files_of(&self, run: &str, chunk: i64) -> anyhow::Result<u64> {
        let mut total = 0;
        loop {
            let n = self.with(|c| {
                Ok(c.execute(
                    "DELETE FROM run_files WHERE (run_id, host_id, data_dir_index, keyspace, table_id, name) IN
                       (SELECT run_id, host_id, data_dir_index, keyspace, table_id, name FROM run_files WHERE run_id=?1 LIMIT ?2)",
                    params![run, chunk],
                )?)
            })?;
            total += n as u64;
            if (n as i64) < chunk {
                return Ok(total);
            }
        }
    }

    /// Removes runs that finished before `cutoff_ms` (with their nodes, files and totals; the
    /// newest successful backup of each cluster always stays) and schedule events and known
    /// blobs older than it. Pruned runs still count in the metrics ([`Db::run_state_counts`]).
    pub fn prune_history(&self, cutoff_ms: i64, out: &mut Housekeeping) -> anyhow::Result<()> {
        let runs: Vec<String> = self.with(|c| {
            let mut st = c.prepare(
                "SELECT id FROM runs r WHERE state != 'RUNNING' AND finished_ms > 0 AND finished_ms < ?1
                 AND NOT (kind = 'backup' AND state = 'DONE' AND finished_ms = (
                     SELECT MAX(finished_ms) FROM runs x
                     WHERE x.kind = 'backup' AND x.state = 'DONE' AND x.cluster_name = r.cluster_name))",
            )?;
            let rows = st.query_map(params![cutoff_ms], |r| r.get::<_, String>(0))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })?;
        for run in runs {
            out.file_rows_deleted += self.delete_files_of(&run, CHUNK)?;
            self.with(|c| {
                let tx = c.transaction()?;
                count_files(&tx, &run)?;
                tx.execute(
                    "INSERT INTO pruned_run_counts (kind, state, runs)
                     SELECT kind, state, 1 FROM runs WHERE id=?1
                     ON CONFLICT(kind, state) DO UPDATE SET runs = runs + 1",
                    params![run],
                )?;
                tx.execute("DELETE FROM run_table_totals WHERE run_id=?1", params![run])?;
                tx.execute("DELETE FROM run_nodes WHERE run_id=?1", params![run])?;
                tx.execute("DELETE FROM runs WHERE id=?1", params![run])?;
                tx.commit()?;
                Ok(())
            })?;
            out.runs_pruned += 1;
        }
        out.events_pruned += self.with(|c| {
            Ok(c.execute(
                "DELETE FROM schedule_events WHERE at_ms < ?1",
                params![cutoff_ms],
            )? as u64)
        })?;
        self.with(|c| {
            c.execute("DELETE FROM blobs WHERE seen_ms < ?1", params![cutoff_ms])?;
            Ok(())
        })
    }

    /// Returns up to `pages` free pages to the filesystem; false when none are left.
    pub fn vacuum_step(&self, pages: u32) -> anyhow::Result<bool> {
        self.with(|c| {
            let free: i64 = c.pragma_query_value(None, "freelist_count", |r| r.get(0))?;
            if free == 0 {
                return Ok(false);
            }
            c.execute_batch(&format!("PRAGMA incremental_vacuum({pages})"))?;
            Ok(true)
        })
    }

    /// Checkpoints the WAL into the database file and truncates it.
    pub fn checkpoint(&self) -> anyhow::Result<()> {
        self.with(|c| {
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::db::*;
    use crate::run::*;

    fn run(id: &str, kind: &str, cluster: &str) -> RunRow {
        RunRow::for_test(id, RunKind::parse(kind).expect("kind"), cluster)
    }

    fn file(name: &str, size: u64, uploaded: bool) -> RunFileRow {
        RunFileRow {
            host_id: "h".into(),
            keyspace: "ks".into(),
            table: "t".into(),
            table_id: "0".repeat(32),
            name: name.into(),
            data_dir_index: 0,
            size,
            hash: name.into(),
            uploaded,
            sstable: None,
        }
    }

    #[test]
    fn aggregates_runs_files_and_workers() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = Db::open(&dir.path().join("c.db"))?;
        assert!(db.run_state_counts()?.is_empty());
        assert!(db.backup_file_totals()?.is_empty());
        assert!(db.last_successful_backups()?.is_empty());
        for (id, kind, cluster) in [
            ("b1", "backup", "c1"),
            ("b2", "backup", "c1"),
            ("b3", "backup", "c2"),
            ("r1", "restore", "c1"),
        ] {
            db.insert_run(&run(id, kind, cluster))?;
        }
        // Files are recorded while runs run; finished runs' files move to the counters.
        db.insert_files("b1", &[file("a", 10, true), file("b", 20, true)])?;
        db.insert_files("b2", &[file("a", 10, false), file("b", 20, false)])?;
        db.insert_files("b3", &[file("c", 5, true)])?;
        db.insert_files("r1", &[file("a", 10, true)])?;
        db.finish_run("b1", RunState::Done, "", 5_000)?;
        db.finish_run("b2", RunState::Done, "", 9_500)?;
        db.finish_run("b3", RunState::Failed, "boom", 7_000)?;
        assert_eq!(
            db.run_state_counts()?,
            vec![
                RunStateCount {
                    kind: RunKind::Backup,
                    state: RunState::Done,
                    runs: 2
                },
                RunStateCount {
                    kind: RunKind::Backup,
                    state: RunState::Failed,
                    runs: 1
                },
                RunStateCount {
                    kind: RunKind::Restore,
                    state: RunState::Running,
                    runs: 1
                },
            ]
        );
        assert_eq!(
            db.backup_file_totals()?,
            vec![
                ClusterFileTotals {
                    cluster: "c1".into(),
                    files_uploaded: 2,
                    bytes_uploaded: 30,
                    files_skipped: 2,
                    bytes_skipped: 30
                },
                ClusterFileTotals {
                    cluster: "c2".into(),
                    files_uploaded: 1,
                    bytes_uploaded: 5,
                    ..Default::default()
                },
            ]
        );
        assert_eq!(db.last_successful_backups()?, vec![("c1".into(), 9_500)]);
        db.upsert_worker(&WorkerRow {
            host_id: "h1".into(),
            cluster_name: "c1".into(),
            address: "127.0.0.1".into(),
            worker_address: "http://127.0.0.1:7601".into(),
            datacenter: "dc".into(),
            rack: "r".into(),
            tokens: vec![],
            data_dirs: vec![],
            cassandra_version: "5.0".into(),
            last_seen_ms: 42,
        })?;
        assert_eq!(db.worker_last_seen()?, vec![("c1".into(), 42)]);
        Ok(())
    }

    #[test]
    fn a_runs_file_rows_go_in_chunks_and_no_other_runs_do() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = Db::open(&dir.path().join("c.db"))?;
        for id in ["a", "b"] {
            db.insert_run(&run(id, "backup", "c1"))?;
            let files: Vec<_> = (0..7).map(|n| file(&format!("f{n}"), n, true)).collect();
            db.insert_files(id, &files)?;
        }
        assert_eq!(db.delete_files_of("a", 3)?, 7);
        assert!(db.node_files("a", "h")?.is_empty());
        assert_eq!(db.node_files("b", "h")?.len(), 7);
        Ok(())
    }

    #[test]
    fn a_run_records_its_table_totals_when_it_ends() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = Db::open(&dir.path().join("c.db"))?;
        db.insert_run(&run("b1", "backup", "c1"))?;
        db.insert_files("b1", &[file("a", 10, true), file("b", 20, false)])?;
        let recorded = |db: &Db| -> anyhow::Result<i64> {
            db.with(|c| {
                Ok(c.query_row(
                    "SELECT COUNT(*) FROM run_table_totals WHERE run_id='b1'",
                    [],
                    |r| r.get(0),
                )?)
            })
        };
        // While it runs the totals come from its file rows; nothing is recorded yet.
        assert_eq!(recorded(&db)?, 0);
        assert_eq!(db.table_totals("b1")?[0].files, 2);
        db.finish_run("b1", RunState::Done, "", 1_000)?;
        assert_eq!(recorded(&db)?, 1);
        let t = &db.table_totals("b1")?[0];
        assert_eq!((t.files, t.bytes), (2, 30));
        // A file row that arrives late is counted: the recorded totals no longer answer.
        db.insert_files("b1", &[file("c", 5, true)])?;
        let t = &db.table_totals("b1")?[0];
        assert_eq!((t.files, t.bytes), (3, 35));
        Ok(())
    }

    #[test]
    fn rolled_up_and_pruned_runs_keep_their_totals_and_counts() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = Db::open(&dir.path().join("c.db"))?;
        for id in ["old", "new", "live"] {
            db.insert_run(&run(id, "backup", "c1"))?;
        }
        db.insert_files("old", &[file("a", 10, true), file("b", 20, false)])?;
        db.insert_files("new", &[file("a", 10, false)])?;
        db.insert_files("live", &[file("c", 5, true)])?;
        db.finish_run("old", RunState::Done, "", 1_000)?;
        db.finish_run("new", RunState::Done, "", 9_000)?;
        let before = db.backup_file_totals()?;
        assert_eq!(
            before,
            vec![ClusterFileTotals {
                cluster: "c1".into(),
                files_uploaded: 2,
                bytes_uploaded: 15,
                files_skipped: 2,
                bytes_skipped: 30
            }]
        );
        let mut h = Housekeeping::default();
        db.roll_up_files(5_000, &mut h)?;
        assert_eq!((h.runs_rolled_up, h.file_rows_deleted), (1, 2));
        assert_eq!(db.table_totals("old")?[0].files, 2);
        assert_eq!(db.table_totals("old")?[0].bytes, 30);
        assert_eq!(db.backup_file_totals()?, before);
        // "old" goes, "new" is the newest successful backup of c1 and stays.
        db.prune_history(10_000, &mut h)?;
        assert_eq!(h.runs_pruned, 1);
        assert!(db.run("old")?.is_none());
        assert!(db.run("new")?.is_some());
        assert_eq!(db.backup_file_totals()?, before);
        assert_eq!(
            db.run_state_counts()?,
            vec![
                RunStateCount {
                    kind: RunKind::Backup,
                    state: RunState::Done,
                    runs: 2
                },
                RunStateCount {
                    kind: RunKind::Backup,
                    state: RunState::Running,
                    runs: 1
                },
            ]
        );
        while db.vacuum_step(16)? {}
        Ok(())
    }
}
