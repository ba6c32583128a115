//! Backup schedules. The scheduler knows nothing about backups: at each due time it asks a
//! [`Launcher`] to start one and records what happened (`started`, `skipped` with the reason,
//! or `missed`). A due time that passed while the coordinator was down is never silent: the
//! schedule's `missed` policy either runs once now (`run-once`) or skips with a record
//! (`skip`), and the record says how many windows were missed.
pub mod cron;
pub mod manage;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

use self::cron::Cron;
use crate::db::{Db, ScheduleEventRow, ScheduleRow};

/// A due time older than this when first seen is a missed window, not a late tick.
pub const MISSED_AFTER_MS: i64 = 90_000;
/// A due time more than this before the coordinator started passed while it was down.
pub const DOWN_TOLERANCE_MS: i64 = 30_000;

/// Starts the work a schedule stands for.
pub trait Launcher: Send + Sync + 'static {
    /// Starts it; Ok(run id) or Err(why it did not start).
    fn launch<'a>(&'a self, schedule: &'a ScheduleRow) -> BoxFuture<'a, Result<String, String>>;
}

/// What to do with a schedule at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Not due yet (or paused).
    Wait,
    /// Due: start now. `missed` windows passed unseen before this one.
    Fire { missed: u32, next_due_ms: i64 },
    /// Windows were missed and the policy is to skip them.
    SkipMissed { missed: u32, next_due_ms: i64 },
}

/// Milliseconds of a time.
pub fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// The next due time after `now_ms` (i64::MAX when the expression never fires again).
pub fn next_due(cron: &Cron, now_ms: i64) -> i64 {
    cron.next_after(at(now_ms)).map(ms).unwrap_or(i64::MAX)
}

/// Decides what to do with `s` at `now_ms`, in a coordinator that started at `started_ms`. A
/// due time is missed when it passed while the coordinator was down (well before it started)
/// or long ago (the coordinator was stalled).
pub fn decide(s: &ScheduleRow, cron: &Cron, now_ms: i64, started_ms: i64) -> Decision {
    if s.paused || s.next_due_ms > now_ms {
        return Decision::Wait;
    }
    let next_due_ms = next_due(cron, now_ms);
    let while_down = s.next_due_ms < started_ms - DOWN_TOLERANCE_MS;
    if !while_down && now_ms - s.next_due_ms <= MISSED_AFTER_MS {
        return Decision::Fire {
            missed: 0,
            next_due_ms,
        };
    }
    // Every window from the recorded due time to now passed unseen.
    let missed = cron.count_between(at(s.next_due_ms), at(now_ms + 1), 100_000);
    if s.missed == "skip" {
        Decision::SkipMissed {
            missed,
            next_due_ms,
        }
    } else {
        Decision::Fire {
            missed,
            next_due_ms,
        }
    }
}

/// Checks every schedule every `tick` until the process ends.
pub async fn run_forever(db: Db, launcher: Arc<dyn Launcher>, tick: Duration) {
    let started_ms = crate::now_ms();
    loop {
        if let Err(e) = tick_once(&db, launcher.as_ref(), crate::now_ms(), started_ms).await {
            tracing::error!(error = %format!("{e:#}"), "scheduler");
        }
        tokio::time::sleep(tick).await;
    }
}

/// One pass over the schedules at `now_ms`.
pub async fn tick_once(
    db: &Db,
    launcher: &dyn Launcher,
    now_ms: i64,
    started_ms: i64,
) -> anyhow::Result<()> {
    let schedules = db.call(|db| db.schedules()).await?;
    for s in schedules {
        let cron = match Cron::parse(&s.cron) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(schedule = s.id, error = %e, "stored schedule has a bad cron expression");
                continue;
            }
        };
        let event = |outcome: &str, run_id: String, detail: String| ScheduleEventRow {
            schedule_id: s.id.clone(),
            due_ms: s.next_due_ms,
            at_ms: now_ms,
            outcome: outcome.to_string(),
            run_id,
            detail,
        };
        let missed_text = |missed: u32| {
            format!(
                "{missed} window(s) from {} to {} passed while the coordinator was not running",
                at(s.next_due_ms).format("%Y-%m-%dT%H:%M:%SZ"),
                at(now_ms).format("%Y-%m-%dT%H:%M:%SZ")
            )
        };
        match decide(&s, &cron, now_ms, started_ms) {
            Decision::Wait => {}
            Decision::SkipMissed {
                missed,
                next_due_ms,
            } => {
                let e = event(
                    "missed",
                    String::new(),
                    format!("{}; skipped (missed policy: skip)", missed_text(missed)),
                );
                tracing::warn!(schedule = s.id, detail = e.detail, "missed windows skipped");
                db.call(move |db| db.schedule_fired(&e, next_due_ms))
                    .await?;
            }
            Decision::Fire {
                missed,
                next_due_ms,
            } => {
                if missed > 0 {
                    let e = event(
                        "missed",
                        String::new(),
                        format!(
                            "{}; running once now (missed policy: run-once)",
                            missed_text(missed)
                        ),
                    );
                    tracing::warn!(
                        schedule = s.id,
                        detail = e.detail,
                        "missed windows: running once"
                    );
                    db.call(move |db| db.add_schedule_event(&e)).await?;
                }
                let e = match launcher.launch(&s).await {
                    Ok(run) => {
                        tracing::info!(schedule = s.id, run, "scheduled backup started");
                        event("started", run, String::new())
                    }
                    Err(why) => {
                        tracing::warn!(schedule = s.id, why, "scheduled backup skipped");
                        event("skipped", String::new(), why)
                    }
                };
                db.call(move |db| db.schedule_fired(&e, next_due_ms))
                    .await?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(cron: &str, due: DateTime<Utc>, missed: &str) -> ScheduleRow {
        ScheduleRow {
            id: "s".into(),
            cron: cron.into(),
            cluster_name: String::new(),
            keyspaces: vec![],
            tables: vec![],
            keep_last: 0,
            keep_days: 0,
            limits: Default::default(),
            missed: missed.into(),
            paused: false,
            next_due_ms: ms(due),
            created_ms: 0,
        }
    }

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    #[test]
    fn due_on_time_fires_and_moves_to_the_next_window() -> anyhow::Result<()> {
        let cron = Cron::parse("0 2 * * *")?;
        let s = schedule("0 2 * * *", t("2026-11-25T02:00:00Z"), "run-once");
        let up = ms(t("2026-11-20T00:00:00Z"));
        assert_eq!(
            decide(&s, &cron, ms(t("2026-11-25T01:59:59Z")), up),
            Decision::Wait
        );
        assert_eq!(
            decide(&s, &cron, ms(t("2026-11-25T02:00:01Z")), up),
            Decision::Fire {
                missed: 0,
                next_due_ms: ms(t("2026-11-26T02:00:00Z"))
            }
        );
        let paused = ScheduleRow { paused: true, ..s };
        assert_eq!(
            decide(&paused, &cron, ms(t("2026-11-27T00:00:00Z")), up),
            Decision::Wait
        );
        Ok(())
    }

    #[test]
    fn windows_missed_while_down_run_once_or_skip_by_policy() -> anyhow::Result<()> {
        let cron = Cron::parse("0 2 * * *")?;
        // Down from before the 25th 02:00 until the 27th 10:00: three windows missed.
        let now = ms(t("2026-11-27T10:00:00Z"));
        let up = now - 5_000;
        let run_once = schedule("0 2 * * *", t("2026-11-25T02:00:00Z"), "run-once");
        assert_eq!(
            decide(&run_once, &cron, now, up),
            Decision::Fire {
                missed: 3,
                next_due_ms: ms(t("2026-11-28T02:00:00Z"))
            }
        );
        let skip = schedule("0 2 * * *", t("2026-11-25T02:00:00Z"), "skip");
        assert_eq!(
            decide(&skip, &cron, now, up),
            Decision::SkipMissed {
                missed: 3,
                next_due_ms: ms(t("2026-11-28T02:00:00Z"))
            }
        );
        // Down across a single window 40 s before the restart: missed, though only 45 s late.
        let every = Cron::parse("* * * * *")?;
        let due = t("2026-11-27T10:00:00Z");
        let s = schedule("* * * * *", due, "skip");
        let restarted = ms(due) + 40_000;
        assert_eq!(
            decide(&s, &every, restarted + 5_000, restarted),
            Decision::SkipMissed {
                missed: 1,
                next_due_ms: ms(t("2026-11-27T10:01:00Z"))
            }
        );
        // A due time just before the start is a late tick, not a miss.
        assert_eq!(
            decide(&s, &every, ms(due) + 3_000, ms(due) + 1_000),
            Decision::Fire {
                missed: 0,
                next_due_ms: ms(t("2026-11-27T10:01:00Z"))
            }
        );
        Ok(())
    }
}
