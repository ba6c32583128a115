//! The worker's persistent JMX session (`--jmx`) on the real test bed: with it, a backup's
//! snapshot and clearsnapshot start no nodetool JVM; with JMX unreachable the worker falls back
//! to nodetool and the backup still completes; with JMX aimed at another node the backup fails
//! naming the mismatch and no node keeps a snapshot.
use std::path::{Path, PathBuf};

use anyhow::Context;
use ringvault_integration_tests::deployment::{Deployment, free_port};
use ringvault_integration_tests::guards::Keyspaces;
use ringvault_integration_tests::runs::{file_store_url, output_text};
use ringvault_integration_tests::{bed, cluster};
use serde_json::Value;

/// A nodetool for node `n` that appends its arguments to `log`, then runs the real one.
fn recording_nodetool(d: &Deployment, n: usize, log: &Path) -> anyhow::Result<PathBuf> {
    let wrapper = d.dir.path().join(format!("nodetool-recording-{n}"));
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/bash\necho \"$*\" >> \"{log}\"\nexec \"{real}\" \"$@\"\n",
            log = log.display(),
            real = d.testbed.var(&format!("RV_NODE{n}_NODETOOL"))?,
        ),
    )?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))?;
    Ok(wrapper)
}

/// The words of every nodetool call recorded in `log` (none when the file does not exist).
fn recorded(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn jmx_addr(d: &Deployment, n: usize) -> anyhow::Result<String> {
    Ok(format!(
        "127.0.0.1:{}",
        d.testbed.var(&format!("RV_NODE{n}_JMX_PORT"))?
    ))
}

async fn small_keyspace(d: &Deployment, prefix: &str) -> anyhow::Result<(String, Keyspaces)> {
    let ks = cluster::unique_keyspace(prefix);
    let guard = Keyspaces::new(&d.testbed, &ks);
    let s = cluster::session(&d.testbed).await?;
    cluster::create_keyspace(&s, &d.testbed, &ks, &["t"]).await?;
    cluster::write_rows(&s, &ks, "t", 0, 200, 100).await?;
    Ok((ks, guard))
}

fn backup(d: &Deployment, ks: &str, tag: &str) -> anyhow::Result<Value> {
    let out = d.cli(&[
        "backup", "--wait", "-k", ks, "--tag", tag, "--output", "json",
    ])?;
    serde_json::from_slice(&out.stdout).with_context(|| output_text(&out))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_through_the_jmx_session_starts_no_nodetool_and_falls_back_when_jmx_is_unreachable()
-> anyhow::Result<()> {
    let _bed = bed::shared().await;
    let mut d = Deployment::start_some(&file_store_url("jmx-session")?, &[], &[])?;
    let nodes = d.testbed.nodes()?;
    let logs: Vec<PathBuf> = (1..=nodes)
        .map(|n| d.dir.path().join(format!("nodetool-calls-{n}.log")))
        .collect();
    for n in 1..=nodes {
        let wrapper = recording_nodetool(&d, n, &logs[n - 1])?;
        d.set_worker_nodetool(n, wrapper);
        let jmx = jmx_addr(&d, n)?;
        d.set_worker_extra_args(n, &["--jmx", &jmx]);
        d.start_worker(n)?;
    }
    d.wait_workers(nodes)?;
    let (ks, _guard) = small_keyspace(&d, "jmxsession").await?;

    let v = backup(&d, &ks, "jmx-session-1")?;
    assert_eq!(v["state"], "DONE", "{v}");
    for (n, log) in logs.iter().enumerate() {
        let calls = recorded(log);
        assert!(
            !calls
                .iter()
                .any(|c| c == "snapshot" || c == "clearsnapshot"),
            "node {}: the worker ran nodetool although its JMX session was up: {calls:?}",
            n + 1
        );
    }
    cluster::assert_no_snapshot(&d.testbed, "jmx-session-1")?;

    // JMX unreachable (nothing listens on the port): nodetool does the work, the backup is
    // the same.
    let closed = free_port("127.0.0.1")?;
    d.kill_worker(1)?;
    d.set_worker_extra_args(1, &["--jmx", &format!("127.0.0.1:{closed}")]);
    d.start_worker(1)?;
    d.wait_workers(nodes)?;
    let v = backup(&d, &ks, "jmx-session-2")?;
    assert_eq!(v["state"], "DONE", "{v}");
    let calls = recorded(&logs[0]);
    assert!(
        calls.iter().any(|c| c == "snapshot") && calls.iter().any(|c| c == "clearsnapshot"),
        "node 1 should have fallen back to nodetool: {calls:?}"
    );
    let log = std::fs::read_to_string(d.log("worker1"))?;
    assert!(
        log.contains("JMX session unavailable, using nodetool"),
        "no fallback warning in the worker's log"
    );
    cluster::assert_no_snapshot(&d.testbed, "jmx-session-2")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_jmx_address_of_another_node_fails_the_backup_naming_the_mismatch() -> anyhow::Result<()>
{
    let _bed = bed::shared().await;
    let mut d = Deployment::start_some(&file_store_url("jmx-wrong-node")?, &[], &[])?;
    let nodes = d.testbed.nodes()?;
    anyhow::ensure!(nodes >= 2, "needs two nodes");
    let other = jmx_addr(&d, 2)?;
    d.set_worker_extra_args(1, &["--jmx", &other]);
    for n in 1..=nodes {
        d.start_worker(n)?;
    }
    d.wait_workers(nodes)?;
    let (ks, _guard) = small_keyspace(&d, "jmxwrong").await?;
    let v = backup(&d, &ks, "jmx-wrong-node")?;
    assert_eq!(v["state"], "FAILED", "{v}");
    let err = v["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("--jmx must name this worker's node") && err.contains(&other),
        "the error does not name the JMX mismatch: {err}"
    );
    cluster::assert_no_snapshot(&d.testbed, "jmx-wrong-node")?;
    Ok(())
}
