//! Independent access to the test bed's Cassandra cluster for tests: CQL through the scylla
//! driver (not ringvault's code), nodetool through the test bed, and direct reads of the
//! nodes' data directories.
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use futures::StreamExt;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;

use crate::testbed::Testbed;

/// A CQL session to the whole test bed.
pub async fn session(tb: &Testbed) -> anyhow::Result<Session> {
    let nodes: Vec<String> = (1..=tb.nodes()?)
        .map(|n| tb.var(&format!("RV_NODE{n}_CQL")))
        .collect::<anyhow::Result<_>>()?;
    let mut builder = SessionBuilder::new().known_nodes(&nodes);
    // The secured bed (`scripts/testbed up --secure`): its superuser over client TLS.
    if tb.var("RV_SECURE").ok().as_deref() == Some("1") {
        let pw_file = tb.var("RV_CQL_ADMIN_PASSWORD_FILE")?;
        let pw = std::fs::read_to_string(&pw_file).with_context(|| format!("reading {pw_file}"))?;
        let ca = PathBuf::from(tb.var("RV_CQL_TLS_CA")?);
        let tls = ringvault_worker::access::client_config(&ca, None, None, true)?;
        builder = builder
            .user(
                tb.var("RV_CQL_ADMIN_USERNAME")?,
                pw.lines().next().unwrap_or_default(),
            )
            .tls_context(Some(tls));
    }
    builder.build().await.context("connecting over CQL")
}

/// Creates keyspace `ks` (SimpleStrategy, replication factor = node count) with tables of varied
/// column types, with autocompaction off so the SSTable set stays put between snapshots.
pub async fn create_keyspace(
    s: &Session,
    tb: &Testbed,
    ks: &str,
    tables: &[&str],
) -> anyhow::Result<()> {
    let rf = tb.nodes()?;
    s.query_unpaged(format!("CREATE KEYSPACE {ks} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': {rf}}}"), ())
        .await?;
    s.query_unpaged(
        format!("CREATE TYPE {ks}.address (street text, zip int)"),
        (),
    )
    .await?;
    for t in tables {
        s.query_unpaged(
            format!(
                "CREATE TABLE {ks}.{t} (id bigint, seq int, name text, salary double, hired timestamp, active boolean, \
                 tags set<text>, scores map<text, int>, home frozen<address>, uid uuid, payload blob, PRIMARY KEY (id, seq)) \
                 WITH compaction = {{'class': 'SizeTieredCompactionStrategy', 'enabled': 'false'}}"
            ),
            (),
        )
        .await?;
    }
    s.await_schema_agreement().await?;
    Ok(())
}

/// Writes `rows` rows (ids from `start`) into `ks.table`.
pub async fn write_rows(
    s: &Session,
    ks: &str,
    table: &str,
    start: i64,
    rows: i64,
    payload: usize,
) -> anyhow::Result<()> {
    let stmt = Arc::new(
        s.prepare(format!(
            "INSERT INTO {ks}.{table} (id, seq, name, salary, hired, active, tags, scores, home, uid, payload) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, {{street: ?, zip: ?}}, ?, ?)"
        ))
        .await?,
    );
    let results = futures::stream::iter(start..start + rows)
        .map(|i| {
            let stmt = Arc::clone(&stmt);
            async move {
                // Pseudo-random (xorshift) bytes: incompressible, so SSTable sizes follow `payload`.
                let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                let blob: Vec<u8> = (0..payload)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect();
                let tags: Vec<String> = vec![format!("t{}", i % 5)];
                let scores: std::collections::HashMap<String, i32> =
                    [(format!("k{}", i % 3), i as i32)].into_iter().collect();
                s.execute_unpaged(
                    &stmt,
                    (
                        i / 4,
                        (i % 4) as i32,
                        format!("name-{i}"),
                        i as f64 * 0.5,
                        scylla::value::CqlTimestamp(1_600_000_000_000 + i * 1000),
                        i % 2 == 0,
                        tags,
                        scores,
                        format!("street {i}"),
                        i as i32,
                        uuid::Uuid::from_u64_pair(i as u64, 7),
                        blob,
                    ),
                )
                .await
                .map(|_| ())
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    for r in results {
        r.context("insert")?;
    }
    Ok(())
}

/// `nodetool flush ks` on every node.
pub fn flush(tb: &Testbed, ks: &str) -> anyhow::Result<()> {
    for n in 1..=tb.nodes()? {
        tb.nodetool(n, &["flush", ks])?;
    }
    Ok(())
}

/// (table, file name, size) of every file in `<data>/<ks>/<table>-<id>/snapshots/<tag>/` on
/// node `n`, read straight from disk.
pub fn snapshot_listing(
    tb: &Testbed,
    n: usize,
    ks: &str,
    tag: &str,
) -> anyhow::Result<BTreeSet<(String, String, u64)>> {
    let data = PathBuf::from(tb.var(&format!("RV_NODE{n}_DATA_DIR"))?);
    let mut out = BTreeSet::new();
    let ks_dir = data.join(ks);
    for t in std::fs::read_dir(&ks_dir).with_context(|| format!("listing {}", ks_dir.display()))? {
        let t = t?;
        let dir_name = t.file_name().to_string_lossy().into_owned();
        let Some((table, _)) = dir_name.rsplit_once('-') else {
            continue;
        };
        let snap = t.path().join("snapshots").join(tag);
        if !snap.is_dir() {
            continue;
        }
        for f in walk(&snap)? {
            let rel = f.strip_prefix(&snap)?.to_string_lossy().into_owned();
            out.insert((table.to_string(), rel, std::fs::metadata(&f)?.len()));
        }
    }
    Ok(out)
}

fn walk(dir: &std::path::Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            out.extend(walk(&e.path())?);
        } else {
            out.push(e.path());
        }
    }
    Ok(out)
}

/// Every snapshot directory named `tag` on node `n`, in any keyspace.
pub fn snapshot_dirs(tb: &Testbed, n: usize, tag: &str) -> anyhow::Result<Vec<PathBuf>> {
    let data = PathBuf::from(tb.var(&format!("RV_NODE{n}_DATA_DIR"))?);
    let mut out = Vec::new();
    for ks in std::fs::read_dir(&data)? {
        let ks = ks?;
        if !ks.file_type()?.is_dir() {
            continue;
        }
        for t in std::fs::read_dir(ks.path())? {
            let p = t?.path().join("snapshots").join(tag);
            if p.exists() {
                out.push(p);
            }
        }
    }
    Ok(out)
}

/// Fails if any node still has a snapshot named `tag` (on disk or in `nodetool listsnapshots`).
pub fn assert_no_snapshot(tb: &Testbed, tag: &str) -> anyhow::Result<()> {
    for n in 1..=tb.nodes()? {
        let dirs = snapshot_dirs(tb, n, tag)?;
        anyhow::ensure!(
            dirs.is_empty(),
            "node {n} still has snapshot {tag}: {dirs:?}"
        );
        let listed = tb.nodetool(n, &["listsnapshots"])?;
        anyhow::ensure!(
            !listed
                .lines()
                .any(|l| l.split_whitespace().next() == Some(tag)),
            "node {n} lists snapshot {tag}:\n{listed}"
        );
    }
    Ok(())
}

/// A keyspace name unique to this test run.
pub fn unique_keyspace(prefix: &str) -> String {
    let n = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}_{}", &n[..8])
}

/// Every row of `ks.table`, read at consistency ALL, rendered and sorted: two reads compare
/// equal exactly when they hold the same rows with the same values.
pub async fn all_rows(s: &Session, ks: &str, table: &str) -> anyhow::Result<Vec<String>> {
    use futures::TryStreamExt;
    let mut st =
        scylla::statement::unprepared::Statement::new(format!("SELECT * FROM {ks}.{table}"));
    st.set_consistency(scylla::statement::Consistency::All);
    st.set_page_size(1000);
    let mut rows = s
        .query_iter(st, ())
        .await
        .with_context(|| format!("reading {ks}.{table}"))?
        .rows_stream::<scylla::value::Row>()?;
    let mut out = Vec::new();
    while let Some(r) = rows.try_next().await? {
        out.push(format!("{:?}", r.columns));
    }
    out.sort();
    Ok(out)
}
