//! Human and JSON rendering of runs, and the live progress display (per node: files and bytes
//! done/total, throughput, ETA).
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::Instant;

use ringvault_proto::v1 as pb;
use serde_json::{Value, json};

/// Output format of every command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Human,
    Json,
}

/// Pretty-prints a JSON value.
pub fn print_json(v: &Value) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("error: rendering JSON: {e}"),
    }
}

/// A run as JSON.
pub fn run_json(r: &pb::Run) -> Value {
    json!({
        "id": r.id, "kind": r.kind, "tag": r.tag, "cluster_name": r.cluster_name, "state": r.state,
        "stage": r.stage, "keyspaces": r.keyspaces, "tables": r.tables, "store_url": r.store_url,
        "source_run_id": r.source_run_id, "created_unix_ms": r.created_unix_ms, "finished_unix_ms": r.finished_unix_ms, "error": r.error,
        "files_total": r.nodes.iter().map(|n| n.files_total).sum::<u64>(),
        "bytes_total": r.nodes.iter().map(|n| n.bytes_total).sum::<u64>(),
        "bytes_uploaded": r.nodes.iter().map(|n| n.bytes_uploaded).sum::<u64>(),
        "nodes": r.nodes.iter().map(|n| json!({
            "host_id": n.host_id, "address": n.address, "state": n.state, "snapshot": n.snapshot,
            "files_total": n.files_total, "files_done": n.files_done, "files_uploaded": n.files_uploaded,
            "bytes_total": n.bytes_total, "bytes_done": n.bytes_done, "bytes_uploaded": n.bytes_uploaded,
            "error": n.error, "retries": n.retries,
        })).collect::<Vec<_>>(),
        "schedule_id": r.schedule_id,
        "datacenters": r.datacenters,
        "limits": r.limits.map(|l| json!({
            "upload_concurrency": l.upload_concurrency, "upload_bandwidth": l.upload_bandwidth,
            "nodes_at_once": l.nodes_at_once,
        })),
        "tables_summary": r.table_summaries.iter().map(|t| json!({
            "keyspace": t.keyspace, "table": t.table, "files": t.files, "bytes": t.bytes,
        })).collect::<Vec<_>>(),
        "last_restore_test": crate::commands::restore_test::summary_json(r.last_restore_test.as_ref()),
        "restore_test": r.restore_test.as_ref().map(crate::commands::restore_test::report_json),
    })
}

/// Bytes for humans.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

/// A UTC time for humans ("-" when unset).
pub fn utc(ms: i64) -> String {
    if ms <= 0 {
        return "-".into();
    }
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_else(|| "-".into())
}

/// `runs list` table.
pub fn print_run_table(runs: &[pb::Run]) {
    println!(
        "{:<38} {:<10} {:<9} {:<8} {:<21} {:>7} {:>11}  TAG",
        "ID", "STATE", "STAGE", "NODES", "STARTED", "FILES", "BYTES"
    );
    for r in runs {
        let files: u64 = r.nodes.iter().map(|n| n.files_total).sum();
        let bytes: u64 = r.nodes.iter().map(|n| n.bytes_total).sum();
        println!(
            "{:<38} {:<10} {:<9} {:<8} {:<21} {:>7} {:>11}  {}",
            r.id,
            r.state,
            r.stage,
            r.nodes.len(),
            utc(r.created_unix_ms),
            files,
            human_bytes(bytes),
            r.tag
        );
    }
}

/// `runs show`.
pub fn print_run(r: &pb::Run) {
    println!("run       {}", r.id);
    println!("state     {} (stage {})", r.state, r.stage);
    println!("tag       {}", r.tag);
    println!("cluster   {}", r.cluster_name);
    println!("selection {}", selection(r));
    println!("store     {}", r.store_url);
    println!("started   {}", utc(r.created_unix_ms));
    println!("finished  {}", utc(r.finished_unix_ms));
    if !r.error.is_empty() {
        println!("error     {}", r.error);
    }
    if r.kind == "backup" {
        println!(
            "last test restore {}",
            crate::commands::restore_test::summary_text(r.last_restore_test.as_ref())
        );
    }
    if let Some(t) = &r.restore_test {
        println!();
        crate::commands::restore_test::print_report(t);
    }
    println!(
        "\n{:<16} {:<15} {:<9} {:>13} {:>23} {:>11}  ERROR",
        "NODE", "STATE", "SNAPSHOT", "FILES", "BYTES", "UPLOADED"
    );
    for n in &r.nodes {
        println!(
            "{:<16} {:<15} {:<9} {:>13} {:>23} {:>11}  {}",
            n.address,
            n.state,
            n.snapshot,
            format!("{}/{}", n.files_done, n.files_total),
            format!(
                "{}/{}",
                human_bytes(n.bytes_done),
                human_bytes(n.bytes_total)
            ),
            human_bytes(n.bytes_uploaded),
            n.error
        );
    }
    if !r.table_summaries.is_empty() {
        println!("\n{:<40} {:>7} {:>11}", "TABLE", "FILES", "BYTES");
        for t in &r.table_summaries {
            println!(
                "{:<40} {:>7} {:>11}",
                format!("{}.{}", t.keyspace, t.table),
                t.files,
                human_bytes(t.bytes)
            );
        }
    }
}

fn selection(r: &pb::Run) -> String {
    match (r.keyspaces.is_empty(), r.tables.is_empty()) {
        (true, _) => "all keyspaces".into(),
        (false, true) => format!("keyspaces {}", r.keyspaces.join(", ")),
        (false, false) => format!(
            "tables {}",
            r.tables
                .iter()
                .map(|t| format!("{}.{t}", r.keyspaces.join("")))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Final summary after `--wait` or `runs watch`.
pub fn print_summary(r: &pb::Run) {
    let files: u64 = r.nodes.iter().map(|n| n.files_total).sum();
    let bytes: u64 = r.nodes.iter().map(|n| n.bytes_total).sum();
    let up_files: u64 = r.nodes.iter().map(|n| n.files_uploaded).sum();
    let up_bytes: u64 = r.nodes.iter().map(|n| n.bytes_uploaded).sum();
    let secs = ((r.finished_unix_ms - r.created_unix_ms).max(1)) as f64 / 1000.0;
    let (verb, rest) = if r.kind == "restore" {
        ("downloaded", "the rest was already staged and verified")
    } else {
        ("uploaded", "the rest was already in the store")
    };
    println!(
        "run {} {} in {secs:.1}s: {} nodes, {files} files, {}; {verb} {up_files} files, {} ({rest})",
        r.id,
        r.state,
        r.nodes.len(),
        human_bytes(bytes),
        human_bytes(up_bytes)
    );
    if !r.error.is_empty() {
        println!("error: {}", r.error);
    }
}

/// Redraws per-node progress: files and bytes done/total, throughput, ETA.
pub struct ProgressPrinter {
    tty: bool,
    drawn: usize,
    first_seen: HashMap<String, (Instant, u64)>,
    last_plain: Option<Instant>,
}

impl ProgressPrinter {
    /// A printer for stdout.
    pub fn new() -> Self {
        Self {
            tty: std::io::stdout().is_terminal(),
            drawn: 0,
            first_seen: HashMap::new(),
            last_plain: None,
        }
    }

    /// Shows a new state of the run.
    pub fn update(&mut self, r: &pb::Run) {
        if !self.tty {
            // Plain logs: one block every 2 seconds at most.
            if self
                .last_plain
                .is_some_and(|t| t.elapsed().as_secs_f64() < 2.0)
                && r.state == "RUNNING"
            {
                return;
            }
            self.last_plain = Some(Instant::now());
        }
        let mut lines = vec![format!("[{}] stage {}", r.state, r.stage)];
        for n in &r.nodes {
            let (t0, b0) = *self
                .first_seen
                .entry(n.host_id.clone())
                .or_insert((Instant::now(), n.bytes_done));
            let secs = t0.elapsed().as_secs_f64();
            let rate = if secs > 0.5 {
                (n.bytes_done.saturating_sub(b0)) as f64 / secs
            } else {
                0.0
            };
            let eta = if rate > 0.0 && n.bytes_total > n.bytes_done {
                format!("{:.0}s", (n.bytes_total - n.bytes_done) as f64 / rate)
            } else {
                "-".into()
            };
            lines.push(format!(
                "  {:<15} {:<14} files {:>6}/{:<6} bytes {:>10}/{:<10} {:>10}/s  ETA {}",
                n.address,
                n.state,
                n.files_done,
                n.files_total,
                human_bytes(n.bytes_done),
                human_bytes(n.bytes_total),
                human_bytes(rate as u64),
                eta
            ));
        }
        let mut out = std::io::stdout().lock();
        if self.tty && self.drawn > 0 {
            let _ = write!(out, "\x1b[{}A\x1b[J", self.drawn);
        }
        for l in &lines {
            let _ = writeln!(out, "{l}");
        }
        let _ = out.flush();
        self.drawn = lines.len();
    }

    /// Stops redrawing.
    pub fn finish(&mut self) {
        self.drawn = 0;
    }
}
