//! `ringvault verify RUN [--deep]`: checks that every blob of a committed backup is in the
//! store with its recorded size; `--deep` re-reads and re-hashes each one. Prints a per-node,
//! per-table report and exits 2 when anything is wrong.
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use super::Client;
use clap::Args;
use ringvault_proto::v1 as pb;
use serde_json::json;

use super::status;
use crate::output::{self, Format};

/// Options of `ringvault verify`.
#[derive(Debug, Args)]
pub struct VerifyOptions {
    /// The backup's run id.
    pub run_id: String,
    /// Download and re-hash every blob (default: check presence and size only).
    #[arg(long)]
    pub deep: bool,
    /// Read the backup from this store instead of the coordinator's.
    #[arg(long)]
    pub from_store: Option<String>,
    /// Deep: cap on bytes per second read from the store (e.g. 100M; default: the
    /// coordinator's --verify-bandwidth).
    #[arg(long, value_parser = crate::units::parse_bytes)]
    pub bandwidth: Option<u64>,
    /// Blobs checked at once (default 16).
    #[arg(long)]
    pub concurrency: Option<u32>,
    /// Restore the backup into scratch keyspaces on the cluster (never the live tables) and
    /// compare what reads back with what the backup recorded; --bandwidth caps the download.
    #[arg(long, conflicts_with = "deep")]
    pub restore_test: bool,
    /// Restore test: only these tables (keyspace.table, repeatable or comma-separated).
    #[arg(long, value_delimiter = ',', requires = "restore_test")]
    pub tables: Vec<String>,
    /// Restore test: partitions per table read back in full (default 10).
    #[arg(long, requires = "restore_test")]
    pub sample: Option<u32>,
}

/// Runs `ringvault verify`.
pub async fn run(mut client: Client, o: VerifyOptions, format: Format) -> anyhow::Result<ExitCode> {
    let req = pb::VerifyRequest {
        run_id: o.run_id,
        deep: o.deep,
        from_store_url: o.from_store.unwrap_or_default(),
        bandwidth_bytes_per_sec: o.bandwidth.unwrap_or(0),
        concurrency: o.concurrency.unwrap_or(0),
        restore_test: o.restore_test,
        tables: o.tables,
        sample_partitions: o.sample.unwrap_or(0),
    };
    if req.restore_test {
        return super::restore_test::verify(client, req, format).await;
    }
    let mut stream = client
        .verify_backup(req)
        .await
        .map_err(status)?
        .into_inner();
    let live = format == Format::Human && std::io::stderr().is_terminal();
    let mut report = None;
    let (mut tables, mut problems) = (Vec::new(), Vec::new());
    while let Some(ev) = stream.message().await.map_err(status)? {
        match ev.event {
            Some(pb::verify_event::Event::Progress(p)) if live => {
                eprint!(
                    "\r{} / {} blobs, {} / {}   ",
                    p.blobs_done,
                    p.blobs_total,
                    output::human_bytes(p.bytes_done),
                    output::human_bytes(p.bytes_total)
                );
                let _ = std::io::stderr().flush();
            }
            Some(pb::verify_event::Event::Tables(t)) => tables.extend(t.tables),
            Some(pb::verify_event::Event::Problems(p)) => problems.extend(p.problems),
            Some(pb::verify_event::Event::Report(mut r)) => {
                tables.append(&mut r.tables);
                problems.append(&mut r.problems);
                r.tables = std::mem::take(&mut tables);
                r.problems = std::mem::take(&mut problems);
                report = Some(r);
            }
            _ => {}
        }
    }
    if live {
        eprintln!();
    }
    let r =
        report.ok_or_else(|| anyhow::anyhow!("the coordinator ended verify without a report"))?;
    match format {
        Format::Json => output::print_json(&json!({
            "run_id": r.run_id, "deep": r.deep, "ok": r.ok, "files": r.files, "blobs": r.blobs,
            "bytes": r.bytes, "bytes_read": r.bytes_read, "elapsed_ms": r.elapsed_ms,
            "tables": r.tables.iter().map(|t| json!({
                "host_id": t.host_id, "address": t.address, "keyspace": t.keyspace, "table": t.table,
                "files": t.files, "bytes": t.bytes, "problems": t.problems,
            })).collect::<Vec<_>>(),
            "problems": r.problems.iter().map(|p| json!({
                "host_id": p.host_id, "address": p.address, "keyspace": p.keyspace, "table": p.table,
                "name": p.name, "hash": p.hash, "kind": p.kind, "detail": p.detail,
            })).collect::<Vec<_>>(),
        })),
        Format::Human => {
            println!(
                "{:<16} {:<40} {:>7} {:>11} {:>8}",
                "NODE", "TABLE", "FILES", "BYTES", "PROBLEMS"
            );
            for t in &r.tables {
                println!(
                    "{:<16} {:<40} {:>7} {:>11} {:>8}",
                    t.address,
                    format!("{}.{}", t.keyspace, t.table),
                    t.files,
                    output::human_bytes(t.bytes),
                    t.problems
                );
            }
            for p in &r.problems {
                println!(
                    "PROBLEM {} {} {}.{} {}: {}",
                    p.kind, p.address, p.keyspace, p.table, p.name, p.detail
                );
            }
            let secs = r.elapsed_ms as f64 / 1000.0;
            println!(
                "{} {}: {} files, {} distinct blobs, {}{} in {secs:.1}s{}",
                if r.deep { "deep verify" } else { "verify" },
                if r.ok { "OK" } else { "FAILED" },
                r.files,
                r.blobs,
                output::human_bytes(r.bytes),
                if r.deep {
                    format!(", {} re-hashed", output::human_bytes(r.bytes_read))
                } else {
                    String::new()
                },
                if r.ok {
                    String::new()
                } else {
                    format!(", {} problem(s)", r.problems.len())
                }
            );
        }
    }
    Ok(if r.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::exit::FAILED)
    })
}
