//! Backup schedules and what the scheduler did at each due time.
use rusqlite::params;

use super::Db;

/// A backup schedule as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleRow {
    pub id: String,
    pub cron: String,
    pub cluster_name: String,
    pub keyspaces: Vec<String>,
    pub tables: Vec<String>,
    pub keep_last: u32,
    pub keep_days: u32,
    pub limits: crate::limits::RunLimits,
    /// run-once | skip
    pub missed: String,
    pub paused: bool,
    pub next_due_ms: i64,
    pub created_ms: i64,
}

/// What the scheduler did at one due time.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleEventRow {
    pub schedule_id: String,
    pub due_ms: i64,
    pub at_ms: i64,
    /// started | skipped | missed
    pub outcome: String,
    pub run_id: String,
    pub detail: String,
}

impl Db {
    // ------------------------------------------------------------------ schedules

    /// Adds a schedule; false (and nothing changed) when one with its id exists.
    pub fn insert_schedule(&self, s: &ScheduleRow) -> anyhow::Result<bool> {
        self.with(|c| {
            let n = c.execute(
                "INSERT OR IGNORE INTO schedules (id, cron, cluster_name, keyspaces, tables, keep_last, keep_days, limits_json, missed, paused, next_due_ms, created_ms)
                 VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12)",
                params![s.id, s.cron, s.cluster_name, serde_json::to_string(&s.keyspaces)?, serde_json::to_string(&s.tables)?, s.keep_last, s.keep_days,
                        serde_json::to_string(&s.limits)?, s.missed, s.paused, s.next_due_ms, s.created_ms],
            )?;
            Ok(n == 1)
        })
    }

    /// Every schedule, by id.
    pub fn schedules(&self) -> anyhow::Result<Vec<ScheduleRow>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT id, cron, cluster_name, keyspaces, tables, keep_last, keep_days, limits_json, missed, paused, next_due_ms, created_ms FROM schedules ORDER BY id",
            )?;
            let rows = st.query_map([], |r| {
                Ok((
                    ScheduleRow {
                        id: r.get(0)?, cron: r.get(1)?, cluster_name: r.get(2)?, keyspaces: Vec::new(), tables: Vec::new(),
                        keep_last: r.get(5)?, keep_days: r.get(6)?, limits: Default::default(), missed: r.get(8)?,
                        paused: r.get(9)?, next_due_ms: r.get(10)?, created_ms: r.get(11)?,
                    },
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(7)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (mut s, k, t, l) = row?;
                s.keyspaces = serde_json::from_str(&k)?;
                s.tables = serde_json::from_str(&t)?;
                s.limits = serde_json::from_str(&l)?;
                out.push(s);
            }
            Ok(out)
        })
    }

    /// Removes a schedule (its events stay as history); false if there was none.
    pub fn delete_schedule(&self, id: &str) -> anyhow::Result<bool> {
        self.with(|c| Ok(c.execute("DELETE FROM schedules WHERE id=?1", params![id])? == 1))
    }

    /// Pauses or resumes a schedule, with its next due time; false if there is none.
    pub fn set_schedule_paused(
        &self,
        id: &str,
        paused: bool,
        next_due_ms: i64,
    ) -> anyhow::Result<bool> {
        self.with(|c| {
            Ok(c.execute(
                "UPDATE schedules SET paused=?2, next_due_ms=?3 WHERE id=?1",
                params![id, paused, next_due_ms],
            )? == 1)
        })
    }

    /// Records what happened at a due time and moves the schedule to its next one, atomically.
    pub fn schedule_fired(&self, e: &ScheduleEventRow, next_due_ms: i64) -> anyhow::Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO schedule_events (schedule_id, due_ms, at_ms, outcome, run_id, detail) VALUES (?1,?2,?3,?4,?5,?6)",
                params![e.schedule_id, e.due_ms, e.at_ms, e.outcome, e.run_id, e.detail],
            )?;
            tx.execute(
                "UPDATE schedules SET next_due_ms=?2 WHERE id=?1",
                params![e.schedule_id, next_due_ms],
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    /// Appends an event without moving the schedule.
    pub fn add_schedule_event(&self, e: &ScheduleEventRow) -> anyhow::Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO schedule_events (schedule_id, due_ms, at_ms, outcome, run_id, detail) VALUES (?1,?2,?3,?4,?5,?6)",
                params![e.schedule_id, e.due_ms, e.at_ms, e.outcome, e.run_id, e.detail],
            )?;
            Ok(())
        })
    }

    /// The newest events of a schedule, newest first.
    pub fn schedule_events(&self, id: &str, limit: u32) -> anyhow::Result<Vec<ScheduleEventRow>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT schedule_id, due_ms, at_ms, outcome, run_id, detail FROM schedule_events WHERE schedule_id=?1 ORDER BY at_ms DESC, rowid DESC LIMIT ?2",
            )?;
            let rows = st.query_map(params![id, limit], |r| {
                Ok(ScheduleEventRow { schedule_id: r.get(0)?, due_ms: r.get(1)?, at_ms: r.get(2)?, outcome: r.get(3)?, run_id: r.get(4)?, detail: r.get(5)? })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Blob hashes recorded by runs still running.
    pub fn running_blobs(&self) -> anyhow::Result<Vec<String>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT DISTINCT f.hash FROM run_files f JOIN runs r ON r.id = f.run_id WHERE r.state = 'RUNNING'",
            )?;
            let rows = st.query_map([], |r| r.get::<_, String>(0))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }
}
