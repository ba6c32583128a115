//! Glue between the coordinator's state and its maintenance work: purge with the configured
//! and per-schedule retention (refused while a backup runs, and backups refused while it
//! sweeps), the [`Launcher`] that starts scheduled backups and applies retention after each
//! one that succeeds, and the database's housekeeping (roll-up, pruning, vacuum).
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use crate::error::CoordinatorError;
use futures::future::BoxFuture;
use ringvault_common::Identifier;

use crate::backup::{self, BackupRequest};
use crate::db::ScheduleRow;
use crate::purge::{self, PurgeOptions, PurgeReport, RetentionPolicy};
use crate::run::RunState;
use crate::schedule::Launcher;
use crate::{Coordinator, now_ms};

/// What an operator may override for one purge.
#[derive(Debug, Clone, Default)]
pub struct PurgeRequest {
    pub dry_run: bool,
    /// Replaces the configured policy for backups not started by a schedule.
    pub policy: Option<RetentionPolicy>,
    /// Replaces the configured grace period.
    pub grace: Option<Duration>,
    /// Allows a grace period below [`purge::MIN_GRACE`].
    pub force: bool,
}

/// Environment variable naming a file for the purge test hook: when set, every purge creates
/// `<file>.paused` after listing the blobs and waits until `<file>` no longer exists before it
/// re-checks and sweeps. Only the two-coordinator test sets it.
pub const PAUSE_ENV: &str = crate::test_hooks::PURGE_PAUSE_ENV;

fn pause_hook() -> Option<purge::PauseHook> {
    let file = crate::test_hooks::pause_file(PAUSE_ENV)?;
    Some(purge::PauseHook(Arc::new(move || {
        let file = file.clone();
        Box::pin(async move {
            crate::test_hooks::pause_at(&file, "purge between listing and sweep").await;
        })
    })))
}

/// Runs a purge now; refuses while any backup runs in this coordinator or another purge runs.
pub async fn run_purge(
    coord: &Arc<Coordinator>,
    req: PurgeRequest,
) -> Result<PurgeReport, CoordinatorError> {
    let grace = req
        .grace
        .unwrap_or(Duration::from_secs(coord.opts.purge_grace_secs));
    if grace < purge::MIN_GRACE && !req.force {
        return Err(CoordinatorError::invalid(format!(
            "a grace period of {}s is below the minimum of {}s: it would delete uploads other \
             coordinators have in flight; pass --force to do it anyway (nothing was deleted)",
            grace.as_secs(),
            purge::MIN_GRACE.as_secs()
        )));
    }
    let _exclusive = coord.runs.purge_guard()?;
    let schedules = coord
        .db
        .call(|db| db.schedules())
        .await
        .map_err(CoordinatorError::Internal)?;
    let running = coord
        .db
        .call(|db| {
            let runs = db.runs(u32::MAX, Some(RunState::Running))?;
            let blobs = db.running_blobs()?;
            Ok((runs, blobs))
        })
        .await
        .map_err(CoordinatorError::Internal)?;
    let opts = PurgeOptions {
        dry_run: req.dry_run,
        default_policy: req.policy.unwrap_or(RetentionPolicy {
            keep_last: coord.opts.keep_last,
            keep_days: coord.opts.keep_days,
        }),
        schedule_policies: schedules
            .iter()
            .map(|s| {
                (
                    s.id.clone(),
                    RetentionPolicy {
                        keep_last: s.keep_last,
                        keep_days: s.keep_days,
                    },
                )
            })
            .collect::<HashMap<_, _>>(),
        grace,
        running_blobs: running.1.into_iter().collect(),
        running_runs: running.0.into_iter().map(|r| r.id).collect::<BTreeSet<_>>(),
        now_ms: now_ms(),
        pause: pause_hook(),
    };
    let report = purge::purge(&coord.store, &opts)
        .await
        .map_err(|e| CoordinatorError::Internal(e.context("purge")))?;
    tracing::info!(
        dry_run = report.dry_run,
        runs = report.runs_deleted.len(),
        blobs = report.blobs_deleted,
        bytes = report.bytes_deleted,
        leftovers = report.leftovers_deleted,
        "purge"
    );
    Ok(report)
}

/// How long a scheduled start keeps retrying a refusal that should clear by itself.
const START_PATIENCE: Duration = Duration::from_secs(60);

/// Starts scheduled backups.
pub struct ScheduledBackups {
    pub coord: Arc<Coordinator>,
}

impl ScheduledBackups {
    async fn start(&self, s: &ScheduleRow) -> Result<String, String> {
        let parse = |kind: &'static str, v: &[String]| {
            v.iter()
                .map(|x| Identifier::parse(kind, x))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())
        };
        let req = BackupRequest {
            tag: None,
            keyspaces: parse("keyspace", &s.keyspaces)?,
            tables: parse("table", &s.tables)?,
            cluster_name: (!s.cluster_name.is_empty()).then(|| s.cluster_name.clone()),
            limits: s.limits,
            schedule_id: Some(s.id.clone()),
            datacenters: Vec::new(),
        };
        // Workers re-register within seconds of a coordinator restart, and a purge ends: a
        // refusal for an unavailable worker or a running purge is retried for a while before
        // the window is recorded as skipped.
        let deadline = tokio::time::Instant::now() + START_PATIENCE;
        let run = loop {
            match backup::start(&self.coord, req.clone()).await {
                Ok((run, _)) => break run,
                Err(e @ (CoordinatorError::Unavailable { .. } | CoordinatorError::Busy(_)))
                    if tokio::time::Instant::now() < deadline =>
                {
                    tracing::debug!(schedule = s.id, why = %e, "scheduled backup waits");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                Err(e) => return Err(e.to_string()),
            }
        };
        let coord = Arc::clone(&self.coord);
        let (run_id, schedule) = (run.to_string(), s.id.clone());
        tokio::spawn(async move { retention_after(coord, run_id, schedule).await });
        Ok(run.to_string())
    }
}

impl Launcher for ScheduledBackups {
    fn launch<'a>(&'a self, schedule: &'a ScheduleRow) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(self.start(schedule))
    }
}

/// Waits for a scheduled run to end; when it is done, applies retention (a purge with the
/// configured grace period). Failures are logged: the backup itself is not affected.
async fn retention_after(coord: Arc<Coordinator>, run_id: String, schedule: String) {
    let handle = coord.runs.get(&run_id);
    if let Some(h) = handle {
        let mut rx = h.view.subscribe();
        while rx.borrow_and_update().run.finished_ms == 0 {
            if rx.changed().await.is_err() {
                break;
            }
        }
    }
    // The run is recorded as ended just after its view; wait for the row.
    let mut state = RunState::Running;
    for _ in 0..50 {
        let id = run_id.clone();
        if let Ok(Some(r)) = coord.db.call(move |db| db.run(&id)).await
            && r.state.is_terminal()
        {
            state = r.state;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if state != RunState::Done {
        return;
    }
    // A schedule with a test restore runs it now, before retention (never both at once).
    crate::restore_test::after_scheduled_backup(&coord, &run_id, &schedule).await;
    // Other runs may still be finishing: retry for a while.
    for _ in 0..30 {
        match run_purge(&coord, PurgeRequest::default()).await {
            Ok(r) => {
                tracing::info!(
                    schedule,
                    run = run_id,
                    expired = r.runs_deleted.len(),
                    blobs = r.blobs_deleted,
                    "retention applied"
                );
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "retention postponed");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
    tracing::warn!(
        schedule,
        run = run_id,
        "retention not applied: other runs kept the store busy"
    );
}

/// How the database is kept bounded.
#[derive(Debug, Clone, Copy)]
pub struct HousekeepingConfig {
    /// File rows of runs finished longer ago than this are rolled up.
    pub rollup_after: Duration,
    /// Runs and events older than this are pruned (`None`: never).
    pub history: Option<Duration>,
}

impl From<&crate::CoordinatorOptions> for HousekeepingConfig {
    fn from(o: &crate::CoordinatorOptions) -> Self {
        const DAY: u64 = 86_400;
        Self {
            rollup_after: Duration::from_secs(u64::from(o.rollup_files_after_days) * DAY),
            history: (o.history_days > 0)
                .then(|| Duration::from_secs(u64::from(o.history_days) * DAY)),
        }
    }
}

/// One round of housekeeping: roll-up, pruning, then the freed pages returned to the
/// filesystem a few megabytes at a time (the write lock is released between steps).
pub fn housekeeping(
    db: &crate::db::Db,
    cfg: HousekeepingConfig,
    now_ms: i64,
) -> anyhow::Result<crate::db::Housekeeping> {
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let mut out = crate::db::Housekeeping::default();
    db.roll_up_files(now_ms.saturating_sub(ms(cfg.rollup_after)), &mut out)?;
    if let Some(h) = cfg.history {
        db.prune_history(now_ms.saturating_sub(ms(h)), &mut out)?;
    }
    while db.vacuum_step(1024)? {}
    db.checkpoint()?;
    Ok(out)
}

/// Runs [`housekeeping`] at start and then hourly; failures are logged and retried next time.
pub async fn housekeeping_forever(db: crate::db::Db, cfg: HousekeepingConfig) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        match db.call(move |db| housekeeping(db, cfg, now_ms())).await {
            Ok(h) => tracing::info!(
                rolled_up = h.runs_rolled_up,
                file_rows = h.file_rows_deleted,
                runs_pruned = h.runs_pruned,
                events_pruned = h.events_pruned,
                "database housekeeping"
            ),
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "database housekeeping failed"),
        }
    }
}
