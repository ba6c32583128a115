//! `ringvault schedule add|list|remove|pause|resume`: backup schedules run by the coordinator
//! (cron, UTC), each with its selection, retention, limits and missed-window policy.
use std::process::ExitCode;

use super::Client;
use clap::{Args, Subcommand};
use ringvault_proto::v1 as pb;
use serde_json::json;

use super::status;
use crate::output::{self, Format};

/// Schedule commands.
#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Add a schedule.
    Add(AddOptions),
    /// List schedules with their next due time and recent events.
    List,
    /// Remove a schedule (its backups stay).
    Remove { id: String },
    /// Stop starting backups until resumed.
    Pause { id: String },
    /// Start backups again from the next window (paused windows are not "missed").
    Resume { id: String },
}

/// Options of `ringvault schedule add`.
#[derive(Debug, Args)]
pub struct AddOptions {
    /// Schedule id (a-z, 0-9, _ and -).
    pub id: String,
    /// Cron expression, five fields, UTC (e.g. "0 2 * * *"), or @daily/@hourly/...
    #[arg(long)]
    pub cron: String,
    /// Keyspace to back up (repeatable; default all).
    #[arg(short = 'k', long = "keyspace")]
    pub keyspaces: Vec<String>,
    /// Table of the keyspace (repeatable; needs exactly one -k).
    #[arg(short = 't', long = "table")]
    pub tables: Vec<String>,
    /// Cluster name, when workers of several clusters are registered.
    #[arg(long)]
    pub cluster: Option<String>,
    /// Retention: keep the newest N backups of this schedule.
    #[arg(long)]
    pub keep_last: Option<u32>,
    /// Retention: keep this schedule's backups younger than D days.
    #[arg(long)]
    pub keep_days: Option<u32>,
    /// Windows missed while the coordinator was down: run-once (default) or skip.
    #[arg(long, default_value = "run-once")]
    pub missed: String,
    /// Run a test restore (verify --restore-test) after each successful backup.
    #[arg(long)]
    pub restore_test: bool,
    #[command(flatten)]
    pub limits: super::LimitArgs,
}

/// Runs a `schedule` subcommand.
pub async fn run(
    mut client: Client,
    cmd: ScheduleCommand,
    format: Format,
) -> anyhow::Result<ExitCode> {
    let one = |id: String| pb::ScheduleRef { id };
    let schedules = match cmd {
        ScheduleCommand::Add(o) => {
            if !o.tables.is_empty() && o.keyspaces.len() != 1 {
                return Err(super::bad_input(
                    "-t/--table needs exactly one -k/--keyspace",
                ));
            }
            vec![
                client
                    .add_schedule(pb::AddScheduleRequest {
                        id: o.id,
                        cron: o.cron,
                        keyspaces: o.keyspaces,
                        tables: o.tables,
                        cluster_name: o.cluster.unwrap_or_default(),
                        retention: Some(pb::RetentionPolicy {
                            keep_last: o.keep_last.unwrap_or(0),
                            keep_days: o.keep_days.unwrap_or(0),
                        }),
                        limits: Some(o.limits.to_proto()),
                        missed: o.missed,
                        restore_test: o.restore_test,
                    })
                    .await
                    .map_err(status)?
                    .into_inner(),
            ]
        }
        ScheduleCommand::List => {
            client
                .list_schedules(pb::ListSchedulesRequest {})
                .await
                .map_err(status)?
                .into_inner()
                .schedules
        }
        ScheduleCommand::Remove { id } => vec![
            client
                .remove_schedule(one(id))
                .await
                .map_err(status)?
                .into_inner(),
        ],
        ScheduleCommand::Pause { id } => vec![
            client
                .pause_schedule(one(id))
                .await
                .map_err(status)?
                .into_inner(),
        ],
        ScheduleCommand::Resume { id } => vec![
            client
                .resume_schedule(one(id))
                .await
                .map_err(status)?
                .into_inner(),
        ],
    };
    match format {
        Format::Json => output::print_json(&serde_json::Value::Array(
            schedules.iter().map(schedule_json).collect(),
        )),
        Format::Human => {
            for s in &schedules {
                let r = s.retention.unwrap_or_default();
                let next = if s.paused {
                    "paused".to_string()
                } else {
                    output::utc(s.next_due_unix_ms)
                };
                let sel = if s.keyspaces.is_empty() {
                    "all keyspaces".to_string()
                } else {
                    s.keyspaces.join(",")
                };
                println!(
                    "{}  cron {:?}  {sel}  keep-last {} keep-days {}  missed {}  next {next}",
                    s.id, s.cron, r.keep_last, r.keep_days, s.missed
                );
                if s.restore_test || s.last_restore_test.is_some() {
                    println!(
                        "    test restore after each backup: {}; last: {}",
                        if s.restore_test { "on" } else { "off" },
                        super::restore_test::summary_text(s.last_restore_test.as_ref())
                    );
                }
                for e in &s.recent {
                    println!(
                        "    {} due {}: {} {} {}",
                        output::utc(e.at_unix_ms),
                        output::utc(e.due_unix_ms),
                        e.outcome,
                        e.run_id,
                        e.detail
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn schedule_json(s: &pb::Schedule) -> serde_json::Value {
    let r = s.retention.unwrap_or_default();
    let l = s.limits.unwrap_or_default();
    json!({
        "id": s.id, "cron": s.cron, "keyspaces": s.keyspaces, "tables": s.tables,
        "cluster_name": s.cluster_name, "keep_last": r.keep_last, "keep_days": r.keep_days,
        "upload_concurrency": l.upload_concurrency, "upload_bandwidth": l.upload_bandwidth,
        "nodes_at_once": l.nodes_at_once, "missed": s.missed, "paused": s.paused,
        "next_due_unix_ms": s.next_due_unix_ms,
        "restore_test": s.restore_test,
        "last_restore_test": super::restore_test::summary_json(s.last_restore_test.as_ref()),
        "recent": s.recent.iter().map(|e| json!({
            "due_unix_ms": e.due_unix_ms, "at_unix_ms": e.at_unix_ms, "outcome": e.outcome,
            "run_id": e.run_id, "detail": e.detail,
        })).collect::<Vec<_>>(),
    })
}
