//! `rv-rows`: an independent CQL client (the scylla driver) that reads every row of a table and
//! prints their count and a digest of their contents, so a restore can be compared with what
//! was loaded; `--drop` drops the keyspace instead. Used by the deployment test and demo.
//!
//! `rv-rows --nodes HOST:9042 --keyspace organization --table employee [--drop]`
use anyhow::Context;
use futures::TryStreamExt;
use scylla::client::session_builder::SessionBuilder;
use scylla::statement::Consistency;
use scylla::statement::unprepared::Statement;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (mut nodes, mut keyspace, mut table, mut drop) = (
        vec!["127.0.0.1:9042".to_string()],
        String::new(),
        String::new(),
        false,
    );
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--nodes" => nodes = val()?.split(',').map(str::to_string).collect(),
            "--keyspace" => keyspace = val()?,
            "--table" => table = val()?,
            "--drop" => drop = true,
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    ringvault_common::Identifier::parse("keyspace", &keyspace)?;
    let session = SessionBuilder::new()
        .known_nodes(&nodes)
        .build()
        .await
        .context("connecting")?;
    if drop {
        session
            .query_unpaged(format!("DROP KEYSPACE IF EXISTS {keyspace}"), ())
            .await?;
        session.await_schema_agreement().await?;
        println!("dropped keyspace {keyspace}");
        return Ok(());
    }
    ringvault_common::Identifier::parse("table", &table)?;
    let mut stmt = Statement::new(format!("SELECT * FROM {keyspace}.{table}"));
    stmt.set_consistency(Consistency::All);
    stmt.set_page_size(1000);
    let mut rows: Vec<String> = session
        .query_iter(stmt, ())
        .await?
        .rows_stream::<scylla::value::Row>()?
        .map_ok(|r| format!("{:?}", r.columns))
        .try_collect()
        .await?;
    rows.sort();
    let mut h = blake3::Hasher::new();
    for r in &rows {
        h.update(r.as_bytes());
        h.update(b"\n");
    }
    println!("rows={} digest={}", rows.len(), h.finalize().to_hex());
    Ok(())
}
