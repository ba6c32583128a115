//! Measures the coordinator's SQLite state at scale (not run in CI): fills a fresh database with
//! N per-file rows over finished backup runs, then, while a thread records a worker heartbeat
//! every 100 ms (as the registry does), times the metrics page's reads and the housekeeping
//! (roll-up of old runs' file rows, pruning, incremental vacuum), and prints the database size
//! before and after and the slowest heartbeat.
//!
//! ```sh
//! cargo build --release -p ringvault-integration-tests --bin rv-db-bench
//! target/release/rv-db-bench --rows 10000000 [--dir /var/tmp]
//! ```
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ringvault_coordinator::db::{Db, RunFileRow, RunRow, WorkerRow};
use ringvault_coordinator::maintenance::{HousekeepingConfig, housekeeping};
use ringvault_coordinator::run::{BackupStage, RunKind, RunStage, RunState};

const DAY_MS: i64 = 86_400_000;
const FILES_PER_RUN: u64 = 10_000;

fn size_of(path: &std::path::Path) -> u64 {
    let mut total = 0;
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_os_string();
        p.push(suffix);
        total += std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
    }
    total
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

/// Times the reads `/metrics` makes.
fn scrape(db: &Db) -> Result<Duration> {
    let t = Instant::now();
    let runs = db.run_state_counts()?;
    let files = db.backup_file_totals()?;
    let last = db.last_successful_backups()?;
    let workers = db.worker_last_seen()?;
    let took = t.elapsed();
    anyhow::ensure!(
        !runs.is_empty() && !files.is_empty() && !last.is_empty() && !workers.is_empty()
    );
    Ok(took)
}

fn main() -> Result<()> {
    let mut rows = 10_000_000u64;
    let mut base = std::env::temp_dir();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().context("missing value");
        match a.as_str() {
            "--rows" => rows = val()?.parse()?,
            "--dir" => base = val()?.into(),
            other => bail!("unknown argument {other:?}; usage: rv-db-bench [--rows N] [--dir D]"),
        }
    }
    let dir = tempfile::Builder::new()
        .prefix("rv-db-bench-")
        .tempdir_in(&base)?;
    let path = dir.path().join("coordinator.db");
    let db = Db::open(&path)?;
    let now = chrono::Utc::now().timestamp_millis();
    db.upsert_worker(&WorkerRow {
        host_id: "h1".into(),
        cluster_name: "c1".into(),
        address: "127.0.0.1".into(),
        worker_address: "http://127.0.0.1:7601".into(),
        datacenter: "dc".into(),
        rack: "r".into(),
        tokens: vec![],
        data_dirs: vec![],
        cassandra_version: "5.0".into(),
        last_seen_ms: now,
    })?;
    let runs = rows.div_ceil(FILES_PER_RUN);
    let t = Instant::now();
    for i in 0..runs {
        let id = format!("run-{i:06}");
        // Runs one a day back from today: most are old enough to roll up and prune.
        let finished = now - (runs - i) as i64 * DAY_MS;
        db.insert_run(&RunRow {
            id: id.clone(),
            kind: RunKind::Backup,
            tag: id.clone(),
            cluster_name: "c1".into(),
            state: RunState::Running,
            stage: RunStage::Backup(BackupStage::Upload),
            keyspaces: vec![],
            tables: vec![],
            store_url: "file:///x".into(),
            created_ms: finished - 3_600_000,
            finished_ms: 0,
            error: String::new(),
            source_run_id: String::new(),
            limits: Default::default(),
            schedule_id: String::new(),
        })?;
        let n = FILES_PER_RUN.min(rows - i * FILES_PER_RUN);
        let files: Vec<RunFileRow> = (0..n)
            .map(|f| RunFileRow {
                host_id: format!("host-{}", f % 3).into(),
                keyspace: "ks".into(),
                table: format!("t{}", f % 20),
                table_id: "0".repeat(32),
                name: format!("nb-{f}-big-Data.db"),
                data_dir_index: 0,
                size: 1 << 20,
                hash: format!("{:064x}", i * FILES_PER_RUN + f),
                uploaded: f % 2 == 0,
                sstable: None,
            })
            .collect();
        db.insert_files(&id, &files)?;
        db.finish_run(&id, RunState::Done, "", finished)?;
    }
    println!(
        "filled            : {rows} file rows over {runs} finished runs in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    db.checkpoint()?;
    let before = size_of(&path);
    println!("database size     : {:.1} MiB", mib(before));

    // Heartbeats every 100 ms on the writing connection, as the registry records them.
    let stop = Arc::new(AtomicBool::new(false));
    let worst_us = Arc::new(AtomicU64::new(0));
    let hb = {
        let (db, stop, worst) = (db.clone(), Arc::clone(&stop), Arc::clone(&worst_us));
        std::thread::spawn(move || -> Result<()> {
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                db.touch_worker("h1", chrono::Utc::now().timestamp_millis())?;
                worst.fetch_max(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(())
        })
    };
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        slowest = slowest.max(scrape(&db)?);
    }
    println!(
        "metrics reads     : slowest of 5 scrapes {:.1} ms",
        slowest.as_secs_f64() * 1000.0
    );
    let t = Instant::now();
    let cfg = HousekeepingConfig {
        rollup_after: Duration::from_secs(30 * 86_400),
        history: Some(Duration::from_secs(400 * 86_400)),
    };
    let h = housekeeping(&db, cfg, now)?;
    println!(
        "housekeeping      : {} runs rolled up, {} file rows deleted, {} runs pruned in {:.1} s",
        h.runs_rolled_up,
        h.file_rows_deleted,
        h.runs_pruned,
        t.elapsed().as_secs_f64()
    );
    let after_scrape = scrape(&db)?;
    stop.store(true, Ordering::Relaxed);
    hb.join()
        .map_err(|_| anyhow::anyhow!("heartbeat thread panicked"))??;
    let after = size_of(&path);
    println!(
        "database size     : {:.1} MiB after housekeeping ({:.1}% of before)",
        mib(after),
        after as f64 * 100.0 / before as f64
    );
    println!(
        "metrics reads     : {:.1} ms after housekeeping",
        after_scrape.as_secs_f64() * 1000.0
    );
    println!(
        "slowest heartbeat : {:.1} ms (workers count as down after 10,000 ms)",
        worst_us.load(Ordering::Relaxed) as f64 / 1000.0
    );
    Ok(())
}
