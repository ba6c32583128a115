//! Adding, finding, pausing and removing schedules: the validation of a schedule's id, cron
//! expression and missed-window policy, and the rows they become. Knows nothing about what a
//! schedule starts.
use super::cron::Cron;
use super::next_due;
use crate::db::{Db, ScheduleRow};
use crate::error::CoordinatorError;
use crate::limits::RunLimits;

/// A schedule as asked for, before validation.
#[derive(Debug, Clone, Default)]
pub struct NewSchedule {
    pub id: String,
    pub cron: String,
    pub cluster_name: String,
    pub keyspaces: Vec<String>,
    pub tables: Vec<String>,
    pub keep_last: u32,
    pub keep_days: u32,
    pub limits: RunLimits,
    /// `run-once` (or empty) or `skip`.
    pub missed: String,
}

/// A schedule id: 1–48 of `a-z 0-9 _ -`, starting with a letter or digit.
pub fn schedule_id(id: &str) -> Result<String, CoordinatorError> {
    let ok = !id.is_empty()
        && id.len() <= 48
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        && id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(id.to_string())
    } else {
        Err(CoordinatorError::invalid(format!(
            "schedule id {id:?} must be 1-48 characters of a-z, 0-9, _ and -, starting with a letter or digit"
        )))
    }
}

/// Validates `new` and records it; refuses an id in use.
pub async fn add(db: &Db, new: NewSchedule, now_ms: i64) -> Result<ScheduleRow, CoordinatorError> {
    let id = schedule_id(&new.id)?;
    let cron = Cron::parse(&new.cron).map_err(|e| CoordinatorError::invalid(e.to_string()))?;
    if cron.next_after(chrono::Utc::now()).is_none() {
        return Err(CoordinatorError::invalid(format!(
            "cron expression {:?} never fires",
            new.cron
        )));
    }
    let missed = match new.missed.as_str() {
        "" | "run-once" => "run-once",
        "skip" => "skip",
        other => {
            return Err(CoordinatorError::invalid(format!(
                "missed policy {other:?} must be run-once or skip"
            )));
        }
    };
    let row = ScheduleRow {
        id,
        cron: cron.as_str().to_string(),
        cluster_name: new.cluster_name,
        keyspaces: new.keyspaces,
        tables: new.tables,
        keep_last: new.keep_last,
        keep_days: new.keep_days,
        limits: new.limits,
        missed: missed.into(),
        paused: false,
        next_due_ms: next_due(&cron, now_ms),
        created_ms: now_ms,
    };
    let stored = row.clone();
    if !db.call(move |db| db.insert_schedule(&stored)).await? {
        return Err(CoordinatorError::conflict(format!(
            "schedule {} already exists",
            row.id
        )));
    }
    tracing::info!(schedule = row.id, cron = row.cron, "schedule added");
    Ok(row)
}

/// The schedule `id`.
pub async fn find(db: &Db, id: &str) -> Result<ScheduleRow, CoordinatorError> {
    let id = schedule_id(id)?;
    let all = db.call(|db| db.schedules()).await?;
    all.into_iter()
        .find(|s| s.id == id)
        .ok_or_else(|| CoordinatorError::not_found(format!("schedule {id} not found")))
}

/// Pauses or resumes `id`. Resuming starts from the next window: the paused time is not
/// "missed".
pub async fn set_paused(
    db: &Db,
    id: &str,
    paused: bool,
    now_ms: i64,
) -> Result<ScheduleRow, CoordinatorError> {
    let mut s = find(db, id).await?;
    let cron = Cron::parse(&s.cron).map_err(|e| CoordinatorError::Internal(e.into()))?;
    let next = next_due(&cron, now_ms);
    let id = s.id.clone();
    db.call(move |db| db.set_schedule_paused(&id, paused, next))
        .await?;
    s.paused = paused;
    s.next_due_ms = next;
    Ok(s)
}

/// Removes `id`; the backups it made keep their recorded retention.
pub async fn remove(db: &Db, id: &str) -> Result<ScheduleRow, CoordinatorError> {
    let s = find(db, id).await?;
    let sid = s.id.clone();
    db.call(move |db| db.delete_schedule(&sid)).await?;
    tracing::info!(schedule = s.id, "schedule removed");
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(id: &str, cron: &str, missed: &str) -> NewSchedule {
        NewSchedule {
            id: id.into(),
            cron: cron.into(),
            missed: missed.into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn bad_schedules_are_refused_and_change_nothing() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = Db::open(&dir.path().join("c.db"))?;
        for (n, code) in [
            (new("Bad Id", "0 2 * * *", ""), tonic::Code::InvalidArgument),
            (new("ok", "not cron", ""), tonic::Code::InvalidArgument),
            (
                new("ok", "0 2 * * *", "sometimes"),
                tonic::Code::InvalidArgument,
            ),
        ] {
            let e = add(&db, n, 0).await.expect_err("accepted");
            assert_eq!(e.code(), code, "{e}");
        }
        assert!(db.call(|db| db.schedules()).await?.is_empty());
        add(&db, new("nightly", "0 2 * * *", ""), 0).await?;
        let e = add(&db, new("nightly", "0 3 * * *", ""), 0)
            .await
            .expect_err("duplicate accepted");
        assert_eq!(e.code(), tonic::Code::Aborted);
        assert_eq!(find(&db, "nightly").await?.cron, "0 2 * * *");
        let e = find(&db, "weekly").await.expect_err("found");
        assert_eq!(e.code(), tonic::Code::NotFound);
        Ok(())
    }
}
