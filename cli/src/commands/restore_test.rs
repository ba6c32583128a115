//! Test restores in the CLI: `ringvault verify RUN --restore-test` (starts one and prints its
//! per-table report), and how the last test restore shows in `backups list`, `schedule list`
//! and `runs show`.
use std::process::ExitCode;

use ringvault_proto::v1 as pb;
use serde_json::{Value, json};

use super::{Client, status};
use crate::output::{self, Format};

/// The last test restore as JSON (`null` when there is none).
pub fn summary_json(s: Option<&pb::RestoreTestSummary>) -> Value {
    match s {
        None => Value::Null,
        Some(s) => json!({
            "test_run_id": s.test_run_id, "state": s.state, "finished_unix_ms": s.finished_unix_ms,
            "error": s.error, "tables": s.tables, "tables_ok": s.tables_ok,
            "backup_run_id": s.backup_run_id,
        }),
    }
}

/// The last test restore in one short phrase: `PASSED 2026-12-02 04:50:00Z`, or `-`.
pub fn summary_text(s: Option<&pb::RestoreTestSummary>) -> String {
    match s {
        None => "-".into(),
        Some(s) if s.state == "RUNNING" => "RUNNING".into(),
        Some(s) => format!("{} {}", s.state, output::utc(s.finished_unix_ms)),
    }
}

/// A report as JSON.
pub fn report_json(r: &pb::RestoreTestReport) -> Value {
    json!({
        "test_run_id": r.test_run_id, "backup_run_id": r.backup_run_id, "state": r.state,
        "error": r.error, "started_unix_ms": r.started_unix_ms, "finished_unix_ms": r.finished_unix_ms,
        "scratch_keyspaces": r.scratch_keyspaces, "scratch_dropped": r.scratch_dropped,
        "schedule_id": r.schedule_id,
        "tables": r.tables.iter().map(|t| json!({
            "keyspace": t.keyspace, "table": t.table, "scratch_keyspace": t.scratch_keyspace,
            "loaded": t.loaded, "sstables": t.sstables, "comparison": t.comparison,
            "expected_partitions_min": t.expected_partitions_min,
            "expected_partitions_max": t.expected_partitions_max,
            "found_partitions": t.found_partitions,
            "expected_rows_min": if t.has_expected_rows { json!(t.expected_rows_min) } else { Value::Null },
            "expected_rows_max": if t.has_expected_rows { json!(t.expected_rows_max) } else { Value::Null },
            "found_rows": t.found_rows, "sampled_partitions": t.sampled_partitions,
            "sampled_rows": t.sampled_rows, "elapsed_ms": t.elapsed_ms, "ok": t.ok, "detail": t.detail,
        })).collect::<Vec<_>>(),
    })
}

fn range(lo: u64, hi: u64) -> String {
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}..{hi}")
    }
}

/// A report for humans.
pub fn print_report(r: &pb::RestoreTestReport) {
    println!(
        "{:<36} {:<6} {:>4} {:<8} {:>15} {:>9} {:>15} {:>9} {:>7} {:>8}  DETAIL",
        "TABLE",
        "LOADED",
        "SST",
        "COMPARE",
        "PARTITIONS EXP",
        "FOUND",
        "ROWS EXP",
        "FOUND",
        "SAMPLED",
        "TIME"
    );
    for t in &r.tables {
        let rows = if t.has_expected_rows {
            range(t.expected_rows_min, t.expected_rows_max)
        } else {
            "-".into()
        };
        println!(
            "{:<36} {:<6} {:>4} {:<8} {:>15} {:>9} {:>15} {:>9} {:>7} {:>7.1}s  {}",
            format!("{}.{}", t.keyspace, t.table),
            if t.loaded { "yes" } else { "no" },
            t.sstables,
            t.comparison,
            range(t.expected_partitions_min, t.expected_partitions_max),
            t.found_partitions,
            rows,
            t.found_rows,
            t.sampled_partitions,
            t.elapsed_ms as f64 / 1000.0,
            if t.ok { "ok" } else { t.detail.as_str() }
        );
    }
    println!(
        "test restore {} of backup {}: {}{}; scratch keyspaces {} {}",
        r.test_run_id,
        r.backup_run_id,
        r.state,
        if r.error.is_empty() {
            String::new()
        } else {
            format!(" ({})", r.error)
        },
        r.scratch_keyspaces.join(","),
        if r.scratch_dropped {
            "dropped"
        } else {
            "NOT confirmed dropped"
        }
    );
}

/// Runs `verify RUN --restore-test`: exit 0 when it passed, 2 when it failed.
pub async fn verify(
    mut client: Client,
    req: pb::VerifyRequest,
    format: Format,
) -> anyhow::Result<ExitCode> {
    let mut stream = client
        .verify_backup(req)
        .await
        .map_err(status)?
        .into_inner();
    let mut last = None;
    while let Some(ev) = stream.message().await.map_err(status)? {
        if let Some(pb::verify_event::Event::RestoreTest(r)) = ev.event {
            if r.state == "RUNNING" && format == Format::Human {
                eprintln!("test restore {} started", r.test_run_id);
            }
            last = Some(r);
        }
    }
    let r = last.ok_or_else(|| anyhow::anyhow!("the coordinator ended without a report"))?;
    match format {
        Format::Json => output::print_json(&report_json(&r)),
        Format::Human => print_report(&r),
    }
    Ok(if r.state == "PASSED" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
