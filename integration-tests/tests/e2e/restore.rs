//! Restores on the real test bed, checked by an independent client: rows are read back with the
//! scylla driver at consistency ALL and compared in full with what was there at backup time.

use anyhow::Context;
use ringvault_integration_tests::deployment::Deployment;
use ringvault_integration_tests::guards::Keyspaces;
use ringvault_integration_tests::runs::{self, file_store_dir, file_store_url, output_text};
use ringvault_integration_tests::{bed, cluster};
use scylla::client::session::Session;
use serde_json::Value;

/// A keyspace with two tables of varied column types, flushed, and a committed backup of it.
struct Fixture {
    d: Deployment,
    s: Session,
    ks: String,
    run: String,
    employee: Vec<String>,
    department: Vec<String>,
    /// Dropped last: the keyspace goes however the test ends.
    _keyspaces: Keyspaces,
}

async fn fixture(prefix: &str) -> anyhow::Result<Fixture> {
    let d = Deployment::start(&file_store_url(prefix)?)?;
    let tb = d.testbed.clone();
    let ks = cluster::unique_keyspace(prefix);
    let keyspaces = Keyspaces::new(&tb, &ks);
    let s = cluster::session(&tb).await?;
    cluster::create_keyspace(&s, &tb, &ks, &["employee", "department"]).await?;
    cluster::write_rows(&s, &ks, "employee", 0, 1200, 200).await?;
    cluster::write_rows(&s, &ks, "department", 0, 300, 40).await?;
    cluster::flush(&tb, &ks)?;
    let v = d.cli_json(&["backup", "--wait", "-k", &ks])?;
    anyhow::ensure!(v["state"] == "DONE", "backup failed: {v}");
    let run = v["id"].as_str().context("id")?.to_string();
    let employee = cluster::all_rows(&s, &ks, "employee").await?;
    let department = cluster::all_rows(&s, &ks, "department").await?;
    anyhow::ensure!(employee.len() == 1200 && department.len() == 300);
    Ok(Fixture {
        d,
        s,
        ks,
        run,
        employee,
        department,
        _keyspaces: keyspaces,
    })
}

fn restore(d: &Deployment, args: &[&str]) -> anyhow::Result<Value> {
    let mut all = vec!["restore", "--wait"];
    all.extend_from_slice(args);
    let out = d.cli(&[&all[..], &["--output", "json"]].concat())?;
    let v: Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "restore {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    Ok(v)
}

fn refused(d: &Deployment, args: &[&str]) -> anyhow::Result<String> {
    let mut all = vec!["restore"];
    all.extend_from_slice(args);
    let out = d.cli(&all)?;
    anyhow::ensure!(!out.status.success(), "restore {args:?} was accepted");
    Ok(output_text(&out))
}

#[tokio::test(flavor = "multi_thread")]
async fn truncated_table_comes_back_identical_with_nodetool_import() -> anyhow::Result<()> {
    let _bed = bed::exclusive().await;
    let f = fixture("rtrunc").await?;
    f.s.query_unpaged(format!("TRUNCATE {}.employee", f.ks), ())
        .await?;
    assert!(cluster::all_rows(&f.s, &f.ks, "employee").await?.is_empty());
    let v = restore(&f.d, &[&f.run, "-k", &f.ks, "-t", "employee"])?;
    assert_eq!(v["state"], "DONE", "{v}");
    assert_eq!(v["source_run_id"], f.run.as_str());
    assert_eq!(
        cluster::all_rows(&f.s, &f.ks, "employee").await?,
        f.employee
    );
    assert_eq!(
        cluster::all_rows(&f.s, &f.ks, "department").await?,
        f.department,
        "another table changed"
    );
    // Staging is removed after a successful restore.
    for n in 1..=f.d.testbed.nodes()? {
        let data = std::path::PathBuf::from(f.d.testbed.var(&format!("RV_NODE{n}_DATA_DIR"))?);
        let staged = data
            .parent()
            .context("parent")?
            .join("ringvault-staging")
            .join(&f.run);
        assert!(!staged.exists(), "staging left at {}", staged.display());
    }
    f.s.query_unpaged(format!("DROP KEYSPACE {}", f.ks), ())
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn dropped_keyspace_is_recreated_with_its_schema_and_rows() -> anyhow::Result<()> {
    let _bed = bed::exclusive().await;
    let f = fixture("rdrop").await?;
    f.s.query_unpaged(format!("DROP KEYSPACE {}", f.ks), ())
        .await?;
    f.s.await_schema_agreement().await?;
    let v = restore(&f.d, &[&f.run, "-k", &f.ks])?;
    assert_eq!(v["state"], "DONE", "{v}");
    f.s.refresh_metadata().await?;
    assert_eq!(
        cluster::all_rows(&f.s, &f.ks, "employee").await?,
        f.employee
    );
    assert_eq!(
        cluster::all_rows(&f.s, &f.ks, "department").await?,
        f.department
    );
    // The UDT and the replication settings came back too.
    let (rf,): (std::collections::HashMap<String, String>,) =
        f.s.query_unpaged(
            "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = ?",
            (&f.ks,),
        )
        .await?
        .into_rows_result()?
        .single_row()?;
    assert_eq!(rf.get("replication_factor").map(String::as_str), Some("3"));
    let types =
        f.s.query_unpaged(
            "SELECT type_name FROM system_schema.types WHERE keyspace_name = ?",
            (&f.ks,),
        )
        .await?
        .into_rows_result()?
        .rows_num();
    assert_eq!(types, 1);
    f.s.query_unpaged(format!("DROP KEYSPACE {}", f.ks), ())
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn sstableloader_mode_restores_the_same_rows() -> anyhow::Result<()> {
    let _bed = bed::exclusive().await;
    let f = fixture("rload").await?;
    f.s.query_unpaged(format!("TRUNCATE {}.department", f.ks), ())
        .await?;
    let v = restore(
        &f.d,
        &[&f.run, "-k", &f.ks, "-t", "department", "--mode", "loader"],
    )?;
    assert_eq!(v["state"], "DONE", "{v}");
    assert_eq!(v["stage"], "done");
    assert_eq!(
        cluster::all_rows(&f.s, &f.ks, "department").await?,
        f.department
    );
    f.s.query_unpaged(format!("DROP KEYSPACE {}", f.ks), ())
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_blob_is_refused_before_any_import_naming_the_file() -> anyhow::Result<()> {
    let _bed = bed::exclusive().await;
    let f = fixture("rcorrupt").await?;
    // Flip one byte of the blob of one Data.db file.
    let dir = file_store_dir(&f.d.store_url);
    let node_manifests = dir.join("runs").join(&f.run).join("nodes");
    let first = std::fs::read_dir(&node_manifests)?
        .next()
        .context("no node manifest")??
        .path();
    let m: Value = serde_json::from_slice(&std::fs::read(&first)?)?;
    let victim = m["files"]
        .as_array()
        .context("files")?
        .iter()
        .find(|x| {
            x["table"] == "employee" && x["name"].as_str().is_some_and(|n| n.ends_with("-Data.db"))
        })
        .context("no Data.db")?
        .clone();
    let hash = victim["hash"].as_str().context("hash")?;
    let blob = dir.join("blobs").join(&hash[..2]).join(hash);
    let mut bytes = std::fs::read(&blob)?;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&blob, &bytes)?;

    f.s.query_unpaged(format!("TRUNCATE {}.employee", f.ks), ())
        .await?;
    let v = restore(&f.d, &[&f.run, "-k", &f.ks, "-t", "employee"])?;
    assert_eq!(v["state"], "FAILED", "{v}");
    let err = v["error"].as_str().unwrap_or_default();
    let name = victim["name"].as_str().unwrap_or_default();
    assert!(
        err.contains(name) && err.contains("does not match"),
        "error does not name {name}: {err}"
    );
    assert_eq!(v["stage"], "download", "it got past the download stage");
    assert!(
        cluster::all_rows(&f.s, &f.ks, "employee").await?.is_empty(),
        "the live table changed"
    );
    f.s.query_unpaged(format!("DROP KEYSPACE {}", f.ks), ())
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_restore_requests_are_refused_and_change_nothing() -> anyhow::Result<()> {
    let _bed = bed::exclusive().await;
    let mut f = fixture("rbad").await?;
    let unknown = "01a213ec-0000-7000-8000-000000000000";
    assert!(refused(&f.d, &[unknown])?.contains("not found"));
    assert!(refused(&f.d, &["../etc"])?.contains("run id"));
    assert!(
        refused(&f.d, &[&f.run, "-k", "not_backed_up"])?
            .contains("keyspace not_backed_up is not in backup")
    );
    assert!(refused(&f.d, &[&f.run, "-k", &f.ks, "-t", "nope"])?.contains("is not in backup"));

    // A run without manifest.json was never committed.
    let dir = file_store_dir(&f.d.store_url);
    let uncommitted = "01a213ec-1111-7000-8000-000000000000";
    let src = dir.join("runs").join(&f.run);
    let dst = dir.join("runs").join(uncommitted);
    std::fs::create_dir_all(dst.join("nodes"))?;
    std::fs::copy(src.join("topology.json"), dst.join("topology.json"))?;
    assert!(refused(&f.d, &[uncommitted])?.contains("never committed"));

    // A manifest naming a file outside the staging directory is refused before any download.
    let escaping = "01a213ec-2222-7000-8000-000000000000";
    let dst = dir.join("runs").join(escaping);
    std::fs::create_dir_all(dst.join("nodes"))?;
    for name in ["topology.json", "schema.json"] {
        std::fs::copy(src.join(name), dst.join(name))?;
    }
    let manifest = std::fs::read_to_string(src.join("manifest.json"))?.replace(&f.run, escaping);
    std::fs::write(dst.join("manifest.json"), manifest)?;
    for e in std::fs::read_dir(src.join("nodes"))? {
        let e = e?;
        let text = std::fs::read_to_string(e.path())?.replace(&f.run, escaping);
        let text = text.replacen("\"name\":\"", "\"name\":\"../../", 1);
        std::fs::write(dst.join("nodes").join(e.file_name()), text)?;
    }
    let text = refused(&f.d, &[escaping])?;
    assert!(text.contains("escape"), "{text}");

    // A target node down.
    f.d.kill_worker(2)?;
    runs::wait_worker_down(&f.d, &f.d.testbed.var("RV_NODE2_ADDRESS")?)?;
    let text = refused(&f.d, &[&f.run, "-k", &f.ks])?;
    assert!(
        text.contains(&f.d.testbed.var("RV_NODE2_ADDRESS")?),
        "{text}"
    );
    f.d.start_worker(2)?;

    // None of these created a run, and the data is as it was.
    let runs = f.d.cli_json(&["runs", "list"])?;
    assert_eq!(
        runs.as_array()
            .map(|r| r.iter().filter(|x| x["kind"] == "restore").count()),
        Some(0),
        "{runs}"
    );
    assert_eq!(
        cluster::all_rows(&f.s, &f.ks, "employee").await?,
        f.employee
    );
    f.s.query_unpaged(format!("DROP KEYSPACE {}", f.ks), ())
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_coordinator_with_an_empty_database_lists_and_restores_from_the_bucket_alone()
-> anyhow::Result<()> {
    let _bed = bed::exclusive().await;
    let mut f = fixture("rbucket").await?;
    let url = f.d.store_url.clone();
    // Another coordinator, its own empty database and an unrelated default store.
    let fresh = Deployment::start_allowing(&file_store_url("other")?, &[], &[&url])?;
    let listed = fresh.cli_json(&["backups", "list", "--from-store", &url])?;
    assert!(
        listed
            .as_array()
            .is_some_and(|a| a.iter().any(|b| b["id"] == f.run.as_str())),
        "{listed}"
    );
    // The first coordinator and its workers are gone; their store stays until `f.d` drops.
    f.d.stop();
    f.s.query_unpaged(format!("TRUNCATE {}.employee", f.ks), ())
        .await?;
    let v = restore(
        &fresh,
        &[&f.run, "--from-store", &url, "-k", &f.ks, "-t", "employee"],
    )?;
    assert_eq!(v["state"], "DONE", "{v}");
    assert_eq!(
        cluster::all_rows(&f.s, &f.ks, "employee").await?,
        f.employee
    );
    f.s.query_unpaged(format!("DROP KEYSPACE {}", f.ks), ())
        .await?;
    Ok(())
}
