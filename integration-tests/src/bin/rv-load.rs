//! `rv-load`: an independent CQL client (the scylla driver) that creates a keyspace and a table
//! and writes rows into the test bed, for the README demo, the benchmark and tests.
//!
//! `rv-load --nodes 127.0.0.1:9042 --keyspace organization --table employee --rows 10000
//!  [--rf 3] [--payload 200] [--concurrency 64] [--tables N]`
//!
//! `--tables N` writes `--rows` rows into each of N tables `<table>_0` … `<table>_<N-1>`
//! (benchmarks of nodes with many SSTables).
use std::sync::Arc;

use anyhow::Context;
use futures::StreamExt;
use scylla::client::session_builder::SessionBuilder;

struct Args {
    nodes: Vec<String>,
    keyspace: String,
    table: String,
    rows: u64,
    rf: u32,
    payload: usize,
    concurrency: usize,
    start: u64,
    tables: usize,
}

fn parse() -> anyhow::Result<Args> {
    let mut a = Args {
        nodes: vec!["127.0.0.1:9042".into()],
        keyspace: "organization".into(),
        table: "employee".into(),
        rows: 1000,
        rf: 1,
        payload: 100,
        concurrency: 64,
        start: 0,
        tables: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--nodes" => a.nodes = val()?.split(',').map(str::to_string).collect(),
            "--keyspace" => a.keyspace = val()?,
            "--table" => a.table = val()?,
            "--rows" => a.rows = val()?.parse()?,
            "--rf" => a.rf = val()?.parse()?,
            "--payload" => a.payload = val()?.parse()?,
            "--concurrency" => a.concurrency = val()?.parse()?,
            "--start" => a.start = val()?.parse()?,
            "--tables" => a.tables = val()?.parse()?,
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    for name in [&a.keyspace, &a.table] {
        ringvault_common::Identifier::parse("name", name)?;
    }
    Ok(a)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = parse()?;
    let session = SessionBuilder::new()
        .known_nodes(&a.nodes)
        .build()
        .await
        .context("connecting")?;
    session
        .query_unpaged(
            format!(
                "CREATE KEYSPACE IF NOT EXISTS {} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': {}}}",
                a.keyspace, a.rf
            ),
            (),
        )
        .await?;
    let tables: Vec<String> = if a.tables <= 1 {
        vec![a.table.clone()]
    } else {
        (0..a.tables).map(|k| format!("{}_{k}", a.table)).collect()
    };
    let mut inserts = Vec::new();
    for table in &tables {
        session
            .query_unpaged(
                format!(
                    "CREATE TABLE IF NOT EXISTS {}.{} (id bigint PRIMARY KEY, name text, dept int, salary double, hired timestamp, active boolean, tags set<text>, payload blob)",
                    a.keyspace, table
                ),
                (),
            )
            .await?;
    }
    session.await_schema_agreement().await?;
    for table in &tables {
        inserts.push(Arc::new(
            session
                .prepare(format!(
                    "INSERT INTO {}.{} (id, name, dept, salary, hired, active, tags, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    a.keyspace, table
                ))
                .await?,
        ));
    }
    let session = Arc::new(session);
    let t0 = std::time::Instant::now();
    let payload = a.payload;
    let work = inserts
        .iter()
        .flat_map(|ins| (a.start..a.start + a.rows).map(move |i| (Arc::clone(ins), i)));
    let results = futures::stream::iter(work)
        .map(|(insert, i)| {
            let session = Arc::clone(&session);
            async move {
                let mut blob = vec![0u8; payload];
                let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                for b in blob.iter_mut() {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    *b = x as u8;
                }
                let tags: Vec<String> = vec![format!("t{}", i % 7), format!("g{}", i % 3)];
                let hired = scylla::value::CqlTimestamp(1_600_000_000_000 + i as i64 * 1000);
                session
                    .execute_unpaged(
                        &insert,
                        (
                            i as i64,
                            format!("name-{i}"),
                            (i % 17) as i32,
                            i as f64 * 1.5,
                            hired,
                            i % 2 == 0,
                            tags,
                            blob,
                        ),
                    )
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(a.concurrency)
        .collect::<Vec<_>>()
        .await;
    let errors = results.iter().filter(|r| r.is_err()).count();
    if let Some(Err(e)) = results.into_iter().find(|r| r.is_err()) {
        anyhow::bail!("{errors} inserts failed, e.g. {e}");
    }
    let secs = t0.elapsed().as_secs_f64();
    let total = a.rows * tables.len() as u64;
    eprintln!(
        "wrote {total} rows of ~{} bytes into {} table(s) of {} in {secs:.1}s ({:.0} rows/s)",
        a.payload + 60,
        tables.len(),
        a.keyspace,
        total as f64 / secs
    );
    Ok(())
}
