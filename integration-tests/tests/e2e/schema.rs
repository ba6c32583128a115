//! Schema on the real test bed: the worker's `ApplySchema` RPC refuses everything but the
//! schema object it names (called directly, as an attacker on the network would), a keyspace
//! with every kind of schema object and awkward text comes back identical after DROP KEYSPACE +
//! restore, and Cassandra's own keyspaces are refused for backup and restore.
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::Context;
use ringvault_integration_tests::deployment::Deployment;
use ringvault_integration_tests::guards::Keyspaces;
use ringvault_integration_tests::runs::file_store_url;
use ringvault_integration_tests::{bed, cluster};
use ringvault_proto::v1 as pb;
use scylla::client::session::Session;

async fn run(s: &Session, cql: &str) -> anyhow::Result<()> {
    s.query_unpaged(cql, ())
        .await
        .with_context(|| cql.to_string())?;
    Ok(())
}

/// `DESCRIBE KEYSPACE ks WITH INTERNALS`, one (kind, name, statement) per row.
async fn describe(s: &Session, ks: &str) -> anyhow::Result<Vec<(String, String, String)>> {
    use futures::TryStreamExt;
    let mut rows = s
        .query_iter(format!("DESCRIBE KEYSPACE {ks} WITH INTERNALS"), ())
        .await?
        .rows_stream::<(String, String, String, String)>()?;
    let mut out = Vec::new();
    while let Some((_, kind, name, st)) = rows.try_next().await? {
        out.push((kind, name, st));
    }
    Ok(out)
}

async fn roles(s: &Session) -> anyhow::Result<BTreeSet<String>> {
    use futures::TryStreamExt;
    let mut rows = s
        .query_iter("SELECT role FROM system_auth.roles", ())
        .await?
        .rows_stream::<(String,)>()?;
    let mut out = BTreeSet::new();
    while let Some((r,)) = rows.try_next().await? {
        out.insert(r);
    }
    Ok(out)
}

async fn tables(s: &Session, ks: &str) -> anyhow::Result<BTreeSet<String>> {
    use futures::TryStreamExt;
    let mut rows = s
        .query_iter(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = ?",
            (ks,),
        )
        .await?
        .rows_stream::<(String,)>()?;
    let mut out = BTreeSet::new();
    while let Some((t,)) = rows.try_next().await? {
        out.insert(t);
    }
    Ok(out)
}

async fn keyspace_exists(s: &Session, ks: &str) -> anyhow::Result<bool> {
    Ok(s.query_unpaged(
        "SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = ?",
        (ks,),
    )
    .await?
    .into_rows_result()?
    .rows_num()
        == 1)
}

fn object(kind: pb::SchemaObjectKind, ks: &str, name: &str, statement: &str) -> pb::SchemaObject {
    pb::SchemaObject {
        kind: kind as i32,
        keyspace: ks.into(),
        name: name.into(),
        statement: statement.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_schema_rpc_runs_only_the_object_it_names() -> anyhow::Result<()> {
    use pb::SchemaObjectKind as K;
    let _bed = bed::exclusive().await;
    let d = Deployment::start(&file_store_url("rpc")?)?;
    let tb = d.testbed.clone();
    let s = cluster::session(&tb).await?;
    let ks = cluster::unique_keyspace("srpc");
    let _keyspaces = Keyspaces::new(&tb, &ks);
    run(&s, &format!("CREATE KEYSPACE {ks} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 3}}")).await?;
    run(
        &s,
        &format!("CREATE TABLE {ks}.t (id int PRIMARY KEY, v text)"),
    )
    .await?;
    run(&s, &format!("INSERT INTO {ks}.t (id, v) VALUES (1, 'one')")).await?;
    s.await_schema_agreement().await?;
    let roles_before = roles(&s).await?;
    let tables_before = tables(&s, &ks).await?;

    let mut w = d.worker_client(1).await?;
    let good = object(
        K::Table,
        &ks,
        "fine",
        &format!("CREATE TABLE IF NOT EXISTS {ks}.fine (a int PRIMARY KEY)"),
    );
    let cases: Vec<(&str, pb::SchemaObject, tonic::Code, &str)> = vec![
        (
            "drop keyspace",
            object(K::Keyspace, &ks, &ks, &format!("DROP KEYSPACE {ks}")),
            tonic::Code::PermissionDenied,
            "DROP KEYSPACE",
        ),
        (
            "create role",
            object(K::Keyspace, &ks, &ks, "CREATE ROLE r WITH SUPERUSER = true"),
            tonic::Code::PermissionDenied,
            "CREATE ROLE",
        ),
        (
            "table under another name",
            object(
                K::Table,
                &ks,
                "t2",
                &format!("CREATE TABLE IF NOT EXISTS {ks}.other (a int PRIMARY KEY)"),
            ),
            tonic::Code::InvalidArgument,
            "CREATE TABLE",
        ),
        (
            "two statements",
            object(
                K::Table,
                &ks,
                "t3",
                &format!(
                    "CREATE TABLE IF NOT EXISTS {ks}.t3 (a int PRIMARY KEY); DROP KEYSPACE {ks}"
                ),
            ),
            tonic::Code::InvalidArgument,
            "2 statements",
        ),
        (
            "a create without IF NOT EXISTS",
            object(
                K::Table,
                &ks,
                "t4",
                &format!("CREATE TABLE {ks}.t4 (a int PRIMARY KEY)"),
            ),
            tonic::Code::InvalidArgument,
            "IF NOT EXISTS",
        ),
        (
            "a table in system_auth",
            object(
                K::Table,
                "system_auth",
                "x",
                "CREATE TABLE IF NOT EXISTS system_auth.x (a int PRIMARY KEY)",
            ),
            tonic::Code::PermissionDenied,
            "system_auth",
        ),
    ];
    for (what, bad, code, names) in cases {
        // The valid object goes first: a refused request must not run even that one.
        let err = w
            .apply_schema(pb::ApplySchemaRequest {
                objects: vec![good.clone(), bad],
                dry_run: false,
            })
            .await
            .expect_err(what);
        assert_eq!(err.code(), code, "{what}: {}", err.message());
        assert!(err.message().contains(names), "{what}: {}", err.message());
    }
    // The worker refuses a snapshot of a keyspace without data of its own.
    let err = w
        .snapshot(pb::SnapshotRequest {
            tag: "schema-test-system".into(),
            selection: Some(pb::Selection {
                keyspaces: vec!["system".into()],
                tables: vec![],
            }),
            ..Default::default()
        })
        .await
        .expect_err("snapshot of system");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    cluster::assert_no_snapshot(&tb, "schema-test-system")?;

    s.refresh_metadata().await?;
    assert!(keyspace_exists(&s, &ks).await?, "the keyspace was dropped");
    assert_eq!(tables(&s, &ks).await?, tables_before, "tables changed");
    assert_eq!(roles(&s).await?, roles_before, "roles changed");
    assert_eq!(cluster::all_rows(&s, &ks, "t").await?.len(), 1);

    // The named object alone is created.
    let r = w
        .apply_schema(pb::ApplySchemaRequest {
            objects: vec![good],
            dry_run: false,
        })
        .await?
        .into_inner();
    assert_eq!(r.applied, 1);
    assert!(tables(&s, &ks).await?.contains("fine"));
    run(&s, &format!("DROP KEYSPACE {ks}")).await?;
    Ok(())
}

/// Statements of the keyspace used by the round-trip test.
fn rich_schema(ks: &str) -> Vec<String> {
    vec![
        format!(
            "CREATE KEYSPACE {ks} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 3}}"
        ),
        format!("CREATE TYPE {ks}.point (x int, y int)"),
        format!("CREATE TYPE {ks}.place (label text, at frozen<point>)"),
        // A body holding `;`, a `//` and a `'`.
        format!(
            "CREATE FUNCTION {ks}.acc(s bigint, v int) CALLED ON NULL INPUT RETURNS bigint LANGUAGE java \
             AS $$ long r = (s == null ? 0L : s); // don't; stop\n return r + (v == null ? 0 : v); $$"
        ),
        format!("CREATE AGGREGATE {ks}.total(int) SFUNC acc STYPE bigint INITCOND 0"),
        format!(
            "CREATE TABLE {ks}.t (id int, seq int, name text, \"größe_名前\" text, home frozen<place>, \
             old int, again int, n int, PRIMARY KEY (id, seq)) \
             WITH comment = 'a;\nb' AND compaction = {{'class': 'SizeTieredCompactionStrategy', 'enabled': 'false'}}"
        ),
        format!("ALTER TABLE {ks}.t DROP old"),
        format!("ALTER TABLE {ks}.t DROP again"),
        format!("ALTER TABLE {ks}.t ADD again int"),
        format!("CREATE INDEX t_n ON {ks}.t (n)"),
        format!(
            "CREATE MATERIALIZED VIEW {ks}.by_name AS SELECT id, seq, name, n FROM {ks}.t \
             WHERE name IS NOT NULL AND id IS NOT NULL AND seq IS NOT NULL PRIMARY KEY (name, id, seq)"
        ),
    ]
}

async fn view_rows(s: &Session, ks: &str) -> anyhow::Result<Vec<String>> {
    cluster::all_rows(s, ks, "by_name").await
}

async fn aggregate(s: &Session, ks: &str) -> anyhow::Result<i64> {
    let (v,): (i64,) = s
        .query_unpaged(format!("SELECT {ks}.total(n) FROM {ks}.t"), ())
        .await?
        .into_rows_result()?
        .single_row()?;
    Ok(v)
}

#[tokio::test(flavor = "multi_thread")]
async fn udt_udf_uda_view_and_awkward_names_come_back_identical() -> anyhow::Result<()> {
    let _bed = bed::exclusive().await;
    let d = Deployment::start(&file_store_url("rich")?)?;
    let tb = d.testbed.clone();
    let s = cluster::session(&tb).await?;
    let ks = cluster::unique_keyspace("srich");
    let _keyspaces = Keyspaces::new(&tb, &ks);
    for st in rich_schema(&ks) {
        run(&s, &st).await?;
        s.await_schema_agreement().await?;
    }
    let insert = s
        .prepare(format!(
            "INSERT INTO {ks}.t (id, seq, name, \"größe_名前\", home, again, n) VALUES (?, ?, ?, ?, {{label: ?, at: {{x: ?, y: ?}}}}, ?, ?)"
        ))
        .await?;
    for i in 0..400i32 {
        s.execute_unpaged(
            &insert,
            (
                i / 4,
                i % 4,
                format!("name-{}", i % 37),
                format!("wert-{i}-ü"),
                format!("place;{i}"),
                i,
                -i,
                i * 2,
                i % 11,
            ),
        )
        .await?;
    }
    cluster::flush(&tb, &ks)?;
    let schema_before = describe(&s, &ks).await?;
    let rows_before = cluster::all_rows(&s, &ks, "t").await?;
    let view_before = view_rows(&s, &ks).await?;
    let total_before = aggregate(&s, &ks).await?;
    assert_eq!(rows_before.len(), 400);
    assert_eq!(view_before.len(), 400);

    let v = d.cli_json(&["backup", "--wait", "-k", &ks])?;
    anyhow::ensure!(v["state"] == "DONE", "backup failed: {v}");
    let backup = v["id"].as_str().context("id")?.to_string();

    run(&s, &format!("DROP KEYSPACE {ks}")).await?;
    s.await_schema_agreement().await?;
    let out = d.cli(&["restore", "--wait", &backup, "-k", &ks, "--output", "json"])?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "restore: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    assert_eq!(v["state"], "DONE", "{v}");
    s.refresh_metadata().await?;

    assert_eq!(describe(&s, &ks).await?, schema_before, "schema differs");
    assert_eq!(cluster::all_rows(&s, &ks, "t").await?, rows_before);
    assert_eq!(aggregate(&s, &ks).await?, total_before);
    // The view is rebuilt from the restored rows in the background: wait for its rows.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let now = view_rows(&s, &ks).await?;
        if now == view_before {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "view has {} of {} rows after 120 s",
            now.len(),
            view_before.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The secondary index answers.
    let hits = s
        .query_unpaged(format!("SELECT id FROM {ks}.t WHERE n = 3"), ())
        .await?
        .into_rows_result()?
        .rows_num();
    assert_eq!(hits, (0..400).filter(|i| i % 11 == 3).count());
    run(&s, &format!("DROP KEYSPACE {ks}")).await?;
    Ok(())
}

/// Every snapshot directory on every node, by (node, path).
fn all_snapshots(d: &Deployment) -> anyhow::Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for n in 1..=d.testbed.nodes()? {
        let data = std::path::PathBuf::from(d.testbed.var(&format!("RV_NODE{n}_DATA_DIR"))?);
        for ks in std::fs::read_dir(&data)? {
            let ks = ks?;
            if !ks.file_type()?.is_dir() {
                continue;
            }
            for t in std::fs::read_dir(ks.path())? {
                let snaps = t?.path().join("snapshots");
                if let Ok(rd) = std::fs::read_dir(&snaps) {
                    for e in rd {
                        out.insert(format!("{n}:{}", e?.path().display()));
                    }
                }
            }
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread")]
async fn system_keyspaces_are_refused_for_backup_and_restore() -> anyhow::Result<()> {
    let _bed = bed::exclusive().await;
    let d = Deployment::start(&file_store_url("sys")?)?;
    let tb = d.testbed.clone();
    let s = cluster::session(&tb).await?;
    let ks = cluster::unique_keyspace("ssys");
    let _keyspaces = Keyspaces::new(&tb, &ks);
    cluster::create_keyspace(&s, &tb, &ks, &["t"]).await?;
    cluster::write_rows(&s, &ks, "t", 0, 50, 16).await?;
    cluster::flush(&tb, &ks)?;
    let v = d.cli_json(&["backup", "--wait", "-k", &ks])?;
    anyhow::ensure!(v["state"] == "DONE", "backup failed: {v}");
    let backup = v["id"].as_str().context("id")?.to_string();
    let snapshots = all_snapshots(&d)?;
    let runs = d.cli_json(&["runs", "list"])?;

    for k in [
        "system",
        "system_schema",
        "system_views",
        "system_virtual_schema",
    ] {
        for args in [
            vec!["backup", "--wait", "-k", k],
            vec!["backup", "--wait", "-k", &ks, "-k", k],
            vec!["restore", "--wait", &backup, "-k", k],
        ] {
            let out = d.cli(&args)?;
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(!out.status.success(), "{args:?} was accepted: {text}");
            assert!(
                text.contains(&format!("keyspace {k} cannot be backed up or restored")),
                "{args:?}: {text}"
            );
        }
    }
    assert_eq!(d.cli_json(&["runs", "list"])?, runs, "a run was recorded");
    assert_eq!(all_snapshots(&d)?, snapshots, "a snapshot was taken");
    run(&s, &format!("DROP KEYSPACE {ks}")).await?;
    Ok(())
}
