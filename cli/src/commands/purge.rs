//! `ringvault purge [--dry-run]`: applies retention and deletes what no kept backup needs
//! (mark and sweep over the store), then prints what was (or would be) reclaimed.
use std::process::ExitCode;

use super::Client;
use clap::Args;
use ringvault_proto::v1 as pb;
use serde_json::json;

use super::status;
use crate::output::{self, Format};

/// Options of `ringvault purge`.
#[derive(Debug, Args)]
pub struct PurgeOptions {
    /// Report what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Keep the newest N backups not started by a schedule (overrides the coordinator's
    /// --keep-last for this purge).
    #[arg(long)]
    pub keep_last: Option<u32>,
    /// Keep backups younger than D days (overrides --keep-days for this purge).
    #[arg(long)]
    pub keep_days: Option<u32>,
    /// Delete unreferenced blobs and leftovers only when older than this many seconds
    /// (default: the coordinator's --purge-grace-secs).
    /// At least 3600 unless --force.
    #[arg(long)]
    pub grace_secs: Option<u64>,
    /// Allow a grace period below one hour. Blobs other coordinators are uploading right now
    /// are protected only by their age: a short grace deletes them.
    #[arg(long)]
    pub force: bool,
}

/// Runs `ringvault purge`.
pub async fn run(mut client: Client, o: PurgeOptions, format: Format) -> anyhow::Result<ExitCode> {
    let r = client
        .purge(pb::PurgeRequest {
            dry_run: o.dry_run,
            keep_last: o.keep_last,
            keep_days: o.keep_days,
            grace_secs: o.grace_secs,
            force: o.force,
        })
        .await
        .map_err(status)?
        .into_inner();
    match format {
        Format::Json => output::print_json(&json!({
            "dry_run": r.dry_run, "backups_kept": r.backups_kept,
            "runs_deleted": r.runs_deleted.iter().map(|x| json!({
                "run_id": x.run_id, "tag": x.tag, "cluster_name": x.cluster_name, "group": x.group,
                "committed_unix_ms": x.committed_unix_ms, "reason": x.reason,
            })).collect::<Vec<_>>(),
            "blobs_total": r.blobs_total, "blobs_referenced": r.blobs_referenced,
            "blobs_deleted": r.blobs_deleted, "bytes_deleted": r.bytes_deleted,
            "blobs_too_young": r.blobs_too_young, "objects_deleted": r.objects_deleted,
            "delete_requests": r.delete_requests, "leftovers_deleted": r.leftovers_deleted,
            "elapsed_ms": r.elapsed_ms, "blobs_age_unknown": r.blobs_age_unknown,
            "blobs_protected_late": r.blobs_protected_late, "foreign_kept": r.foreign_kept,
        })),
        Format::Human => {
            let verb = if r.dry_run { "would delete" } else { "deleted" };
            for x in &r.runs_deleted {
                println!(
                    "backup {} ({}, {}): {verb}, {}",
                    x.run_id, x.tag, x.group, x.reason
                );
            }
            println!(
                "{} backup(s) kept, {} expired; blobs: {} stored, {} referenced, {} {verb} ({}), {} unreferenced but within the grace period; {} leftover object(s) {verb}; {} objects in {} request(s), {:.1}s{}",
                r.backups_kept,
                r.runs_deleted.len(),
                r.blobs_total,
                r.blobs_referenced,
                r.blobs_deleted,
                output::human_bytes(r.bytes_deleted),
                r.blobs_too_young,
                r.leftovers_deleted,
                r.objects_deleted,
                r.delete_requests,
                r.elapsed_ms as f64 / 1000.0,
                if r.dry_run {
                    " (dry run: nothing deleted)"
                } else {
                    ""
                }
            );
            if r.blobs_age_unknown + r.blobs_protected_late + r.foreign_kept > 0 {
                println!(
                    "kept: {} unreferenced object(s) of unknown age, {} blob(s) a backup committed or leased during the purge, {} object(s) ringvault did not write",
                    r.blobs_age_unknown, r.blobs_protected_late, r.foreign_kept
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
