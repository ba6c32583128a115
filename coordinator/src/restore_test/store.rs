//! The test restores' own SQLite rows (`restore_tests`, `schedule_restore_tests`, migration
//! 0007): written when a test starts and at every stage, so a restarted coordinator knows
//! which scratch keyspaces to drop and which tests to record as failed.
use rusqlite::{OptionalExtension, params};

use crate::db::Db;

/// One test restore as stored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TestRow {
    pub id: String,
    pub backup_run_id: String,
    pub cluster_name: String,
    pub schedule_id: String,
    pub state: String,
    pub stage: String,
    pub scratch_keyspaces: Vec<String>,
    pub scratch_dropped: bool,
    pub started_ms: i64,
    pub finished_ms: i64,
    pub error: String,
    /// JSON array of [`super::TableReport`].
    pub report: String,
}

const COLUMNS: &str = "id, backup_run_id, cluster_name, schedule_id, state, stage, scratch_keyspaces, scratch_dropped, started_ms, finished_ms, error, report";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TestRow> {
    let ks: String = r.get(6)?;
    Ok(TestRow {
        id: r.get(0)?,
        backup_run_id: r.get(1)?,
        cluster_name: r.get(2)?,
        schedule_id: r.get(3)?,
        state: r.get(4)?,
        stage: r.get(5)?,
        scratch_keyspaces: serde_json::from_str(&ks).unwrap_or_default(),
        scratch_dropped: r.get::<_, i64>(7)? != 0,
        started_ms: r.get(8)?,
        finished_ms: r.get(9)?,
        error: r.get(10)?,
        report: r.get(11)?,
    })
}

/// Records a test that starts.
pub fn insert(db: &Db, t: &TestRow) -> anyhow::Result<()> {
    let ks = serde_json::to_string(&t.scratch_keyspaces)?;
    db.with_conn(|c| {
        c.execute(
            &format!("INSERT INTO restore_tests ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"),
            params![
                t.id,
                t.backup_run_id,
                t.cluster_name,
                t.schedule_id,
                t.state,
                t.stage,
                ks,
                t.scratch_dropped as i64,
                t.started_ms,
                t.finished_ms,
                t.error,
                t.report
            ],
        )?;
        Ok(())
    })
}

/// Records the stage a test entered.
pub fn set_stage(db: &Db, id: &str, stage: &str) -> anyhow::Result<()> {
    db.with_conn(|c| {
        c.execute(
            "UPDATE restore_tests SET stage=?2 WHERE id=?1",
            params![id, stage],
        )?;
        Ok(())
    })
}

/// Records how a test ended.
pub fn finish(
    db: &Db,
    id: &str,
    state: &str,
    error: &str,
    report: &str,
    dropped: bool,
    at_ms: i64,
) -> anyhow::Result<()> {
    db.with_conn(|c| {
        c.execute(
            "UPDATE restore_tests SET state=?2, error=?3, report=?4, scratch_dropped=?5, finished_ms=?6 WHERE id=?1",
            params![id, state, error, report, dropped as i64, at_ms],
        )?;
        Ok(())
    })
}

/// Records that the scratch keyspaces of a test are gone (after a restart).
pub fn mark_dropped(db: &Db, id: &str, note: &str) -> anyhow::Result<()> {
    db.with_conn(|c| {
        c.execute(
            "UPDATE restore_tests SET scratch_dropped=1, error=error || ?2 WHERE id=?1",
            params![id, note],
        )?;
        Ok(())
    })
}

/// Tests recorded as running (after a restart: interrupted).
pub fn running(db: &Db) -> anyhow::Result<Vec<TestRow>> {
    db.with_conn(|c| {
        let mut st = c.prepare(&format!(
            "SELECT {COLUMNS} FROM restore_tests WHERE state='RUNNING'"
        ))?;
        let rows = st.query_map([], row)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    })
}

/// Tests whose scratch keyspaces were not confirmed dropped.
pub fn undropped(db: &Db) -> anyhow::Result<Vec<TestRow>> {
    db.with_conn(|c| {
        let mut st = c.prepare(&format!(
            "SELECT {COLUMNS} FROM restore_tests WHERE scratch_dropped=0 AND state!='RUNNING'"
        ))?;
        let rows = st.query_map([], row)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    })
}

/// One test by id.
pub fn get(db: &Db, id: &str) -> anyhow::Result<Option<TestRow>> {
    db.with_conn(|c| {
        Ok(c.query_row(
            &format!("SELECT {COLUMNS} FROM restore_tests WHERE id=?1"),
            params![id],
            row,
        )
        .optional()?)
    })
}

/// The newest test of a backup run.
pub fn last_for_backup(db: &Db, backup: &str) -> anyhow::Result<Option<TestRow>> {
    db.with_conn(|c| {
        Ok(c.query_row(
            &format!("SELECT {COLUMNS} FROM restore_tests WHERE backup_run_id=?1 ORDER BY started_ms DESC, id DESC LIMIT 1"),
            params![backup],
            row,
        )
        .optional()?)
    })
}

/// The newest test started for a schedule.
pub fn last_for_schedule(db: &Db, schedule: &str) -> anyhow::Result<Option<TestRow>> {
    db.with_conn(|c| {
        Ok(c.query_row(
            &format!("SELECT {COLUMNS} FROM restore_tests WHERE schedule_id=?1 ORDER BY started_ms DESC, id DESC LIMIT 1"),
            params![schedule],
            row,
        )
        .optional()?)
    })
}

/// Per cluster: the newest finished test (finished time, passed), for `/metrics`.
pub fn last_finished_per_cluster(db: &Db) -> anyhow::Result<Vec<(String, i64, bool)>> {
    db.with_read_conn(|c| {
        let mut st = c.prepare(
            "SELECT cluster_name, finished_ms, state FROM restore_tests t
             WHERE finished_ms > 0 AND finished_ms = (
                 SELECT MAX(finished_ms) FROM restore_tests u WHERE u.cluster_name = t.cluster_name)
             ORDER BY cluster_name",
        )?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)? == "PASSED",
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    })
}

/// Turns the test restore after each backup of a schedule on or off.
pub fn set_schedule_option(db: &Db, schedule: &str, on: bool) -> anyhow::Result<()> {
    db.with_conn(|c| {
        if on {
            c.execute(
                "INSERT OR IGNORE INTO schedule_restore_tests (schedule_id) VALUES (?1)",
                params![schedule],
            )?;
        } else {
            c.execute(
                "DELETE FROM schedule_restore_tests WHERE schedule_id=?1",
                params![schedule],
            )?;
        }
        Ok(())
    })
}

/// Whether a schedule runs a test restore after each backup.
pub fn schedule_option(db: &Db, schedule: &str) -> anyhow::Result<bool> {
    db.with_conn(|c| {
        Ok(c.query_row(
            "SELECT 1 FROM schedule_restore_tests WHERE schedule_id=?1",
            params![schedule],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_and_the_newest_wins() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = Db::open(&dir.path().join("c.db"))?;
        let mut t = TestRow {
            id: "a".into(),
            backup_run_id: "b".into(),
            cluster_name: "c".into(),
            schedule_id: "nightly".into(),
            state: "RUNNING".into(),
            stage: "schema".into(),
            scratch_keyspaces: vec!["rv_test_1_0".into()],
            started_ms: 10,
            report: "[]".into(),
            ..Default::default()
        };
        insert(&db, &t)?;
        assert_eq!(running(&db)?, vec![t.clone()]);
        finish(&db, "a", "FAILED", "boom", "[]", false, 20)?;
        assert!(running(&db)?.is_empty());
        assert_eq!(undropped(&db)?.len(), 1);
        mark_dropped(&db, "a", "; dropped")?;
        assert!(undropped(&db)?.is_empty());
        t.id = "z".into();
        t.started_ms = 30;
        insert(&db, &t)?;
        finish(&db, "z", "PASSED", "", "[]", true, 40)?;
        assert_eq!(last_for_backup(&db, "b")?.map(|r| r.id), Some("z".into()));
        assert_eq!(
            get(&db, "a")?.map(|r| (r.state, r.error)),
            Some(("FAILED".into(), "boom; dropped".into()))
        );
        assert_eq!(
            last_finished_per_cluster(&db)?,
            vec![("c".to_string(), 40, true)]
        );
        assert!(!schedule_option(&db, "nightly")?);
        set_schedule_option(&db, "nightly", true)?;
        assert!(schedule_option(&db, "nightly")?);
        assert_eq!(
            last_for_schedule(&db, "nightly")?.map(|r| r.id),
            Some("z".into())
        );
        Ok(())
    }
}
