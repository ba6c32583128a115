//! Proves the test bed runs a real Cassandra 5.0 cluster: every node is UN, rows written over
//! CQL (the scylla driver) are read back, and `nodetool snapshot -t T ks` through the test bed
//! produces the documented on-disk layout, which `nodetool clearsnapshot -t T` removes. The
//! keyspace guard every test relies on drops its keyspace even when a test panics.
use anyhow::Context;
use ringvault_integration_tests::guards::Keyspaces;
use ringvault_integration_tests::testbed::Testbed;
use ringvault_integration_tests::{bed, cluster};

#[tokio::test(flavor = "multi_thread")]
async fn every_node_is_up_normal_and_runs_cassandra_5() -> anyhow::Result<()> {
    let _bed = bed::shared().await;
    let tb = Testbed::load()?;
    let status = tb.nodetool(1, &["status"])?;
    let up: Vec<&str> = status.lines().filter(|l| l.starts_with("UN ")).collect();
    assert_eq!(up.len(), tb.nodes()?, "{status}");
    for n in 1..=tb.nodes()? {
        let version = tb.nodetool(n, &["version"])?;
        assert!(
            version.contains("ReleaseVersion: 5.0."),
            "node {n}: {version}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn nodetool_snapshot_produces_the_documented_layout_and_clearsnapshot_removes_it()
-> anyhow::Result<()> {
    let _bed = bed::shared().await;
    let tb = Testbed::load()?;
    let ks = cluster::unique_keyspace("tb");
    let _keyspaces = Keyspaces::new(&tb, &ks);
    let s = cluster::session(&tb).await?;
    cluster::create_keyspace(&s, &tb, &ks, &["employee"]).await?;
    cluster::write_rows(&s, &ks, "employee", 0, 100, 64).await?;
    let (count,): (i64,) = s
        .query_unpaged(format!("SELECT COUNT(*) FROM {ks}.employee"), ())
        .await?
        .into_rows_result()?
        .single_row()?;
    assert_eq!(count, 100);

    let tag = format!("T{}", &ks[3..]);
    for n in 1..=tb.nodes()? {
        let out = tb.nodetool(n, &["snapshot", "-t", &tag, &ks])?;
        assert!(
            out.contains(&format!("snapshot name [{tag}]")),
            "node {n}: {out}"
        );
        // <data_dir>/<ks>/<table>-<32 hex id>/snapshots/<tag>/
        let dirs = cluster::snapshot_dirs(&tb, n, &tag)?;
        assert_eq!(dirs.len(), 1, "node {n}: {dirs:?}");
        let table_dir = dirs[0]
            .parent()
            .and_then(|p| p.parent())
            .context("table dir")?;
        let name = table_dir
            .file_name()
            .context("name")?
            .to_string_lossy()
            .into_owned();
        let (table, id) = name.rsplit_once('-').context("table-id")?;
        assert_eq!(table, "employee");
        assert!(
            id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{name}"
        );
        let files: Vec<String> = std::fs::read_dir(&dirs[0])?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()?;
        for suffix in ["-Data.db", "-TOC.txt"] {
            assert!(
                files.iter().any(|f| f.ends_with(suffix)),
                "node {n}: no *{suffix} in {files:?}"
            );
        }
        for exact in ["manifest.json", "schema.cql"] {
            assert!(
                files.iter().any(|f| f == exact),
                "node {n}: no {exact} in {files:?}"
            );
        }
        let schema = std::fs::read_to_string(dirs[0].join("schema.cql"))?;
        assert!(
            schema.contains(&format!("CREATE TABLE IF NOT EXISTS {ks}.employee")),
            "{schema}"
        );
        let listed = tb.nodetool(n, &["listsnapshots"])?;
        assert!(
            listed
                .lines()
                .any(|l| l.split_whitespace().next() == Some(tag.as_str())),
            "{listed}"
        );

        tb.nodetool(n, &["clearsnapshot", "-t", &tag])?;
        assert!(
            cluster::snapshot_dirs(&tb, n, &tag)?.is_empty(),
            "node {n}: snapshot not cleared"
        );
    }
    s.query_unpaged(format!("DROP KEYSPACE {ks}"), ()).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_keyspace_guard_drops_its_keyspace_even_when_the_test_panics() -> anyhow::Result<()> {
    let _bed = bed::shared().await;
    let tb = Testbed::load()?;
    let ks = cluster::unique_keyspace("guard");
    let (tb2, ks2) = (tb.clone(), ks.clone());
    let failing_test = tokio::spawn(async move {
        let _keyspaces = Keyspaces::new(&tb2, &ks2);
        let s = cluster::session(&tb2).await.expect("session");
        cluster::create_keyspace(&s, &tb2, &ks2, &["t"])
            .await
            .expect("create");
        assert_eq!(keyspace_rows(&s, &ks2).await.expect("read"), 1);
        panic!("a test failing after creating {ks2}");
    })
    .await;
    let payload = match failing_test {
        Err(e) if e.is_panic() => e.into_panic(),
        other => anyhow::bail!("the failing test did not panic: {other:?}"),
    };
    let message = payload
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        message.starts_with("a test failing after creating"),
        "the test failed before its keyspace existed: {message}"
    );
    let s = cluster::session(&tb).await?;
    assert_eq!(
        keyspace_rows(&s, &ks).await?,
        0,
        "keyspace {ks} survived its failed test"
    );
    Ok(())
}

/// Rows of `system_schema.keyspaces` naming `ks` (1 while it exists).
async fn keyspace_rows(s: &scylla::client::session::Session, ks: &str) -> anyhow::Result<usize> {
    Ok(s.query_unpaged(
        "SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = ?",
        (ks,),
    )
    .await?
    .into_rows_result()?
    .rows_num())
}
