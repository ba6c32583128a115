//! `rv-sim-workers`: N simulated ringvault workers in one process, for coordinator-scale
//! benchmarks (`scripts/bench-scale`). Each serves the real `Worker` gRPC service on its own
//! loopback port, registers and heartbeats with the coordinator (plain text on loopback: the
//! coordinator must run with `--insecure-loopback`), and uploads a synthetic snapshot into the
//! store the coordinator names. See `ringvault_fast_tests::sim`.
use clap::Parser;
use ringvault_fast_tests::sim::{Content, SimConfig, Simulator};
use std::sync::atomic::Ordering;

/// Serves N simulated workers until interrupted.
#[derive(Debug, Parser)]
#[command(name = "rv-sim-workers")]
struct Opts {
    /// The coordinator's Registry address, e.g. http://127.0.0.1:7600 (plain text, loopback).
    #[arg(long)]
    coordinator: String,
    /// Simulated workers (nodes).
    #[arg(long, default_value_t = 10)]
    workers: usize,
    /// Files in each node's snapshot (8 SSTable components per generation).
    #[arg(long, default_value_t = 100)]
    files: usize,
    /// Tables of the keyspace the files are spread over.
    #[arg(long, default_value_t = 10)]
    tables: usize,
    #[arg(long, default_value = "bench")]
    keyspace: String,
    #[arg(long, default_value = "sim_cluster")]
    cluster: String,
    /// Smallest Data.db in bytes (sizes are log-uniform up to --data-max).
    #[arg(long, default_value_t = 64 * 1024)]
    data_min: u64,
    /// Largest Data.db in bytes.
    #[arg(long, default_value_t = 1024 * 1024)]
    data_max: u64,
    /// shared: every node's files have the same contents (F blobs in the store in all);
    /// distinct: each node's are its own (N x F blobs).
    #[arg(long, value_enum, default_value_t = Content::Shared)]
    content: Content,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let o = Opts::parse();
    let cfg = SimConfig {
        cluster: o.cluster.clone(),
        keyspace: o.keyspace.clone(),
        tables: o.tables,
        files_per_node: o.files,
        data_max: o.data_max,
        data_min: o.data_min,
        content: o.content,
        seed: o.seed,
    };
    let sim = Simulator::start(cfg, o.workers, &o.coordinator).await?;
    println!(
        "rv-sim-workers: {} workers x {} files serving on 127.0.0.1 (transport=plaintext-loopback, content={:?}, sink=the store the coordinator names; blobs are really written)",
        sim.len(),
        o.files,
        o.content
    );
    tokio::signal::ctrl_c().await?;
    let st = sim.stats();
    println!(
        "rv-sim-workers: stopping; file_events={} blobs_put={} bytes_put={}",
        st.file_events.load(Ordering::Relaxed),
        st.blobs_put.load(Ordering::Relaxed),
        st.bytes_put.load(Ordering::Relaxed)
    );
    Ok(())
}
