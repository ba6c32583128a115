//! Following runs through the CLI, as an operator would (start, poll, wait for the end,
//! verify), and reading what they wrote straight from the store. Shared by the backup, crash,
//! purge and schedule tests.
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use ringvault_common::RunId;
use ringvault_common::layout;
use ringvault_common::manifest::{NodeManifest, RunManifest};
use ringvault_common::store::{self, Store};
use serde_json::Value;

use crate::deployment::Deployment;
use crate::testbed::Testbed;

/// What names a scratch store's directory under the temp directory.
const SCRATCH_STORE_PREFIX: &str = "rv-store-";

/// A fresh `file://` store under the temp directory; the [`Deployment`] started with it
/// removes it when dropped.
pub fn file_store_url(tag: &str) -> anyhow::Result<String> {
    let dir = std::env::temp_dir().join(format!(
        "{SCRATCH_STORE_PREFIX}{tag}-{}",
        uuid::Uuid::new_v4().simple()
    ));
    Ok(format!("file://{}", dir.display()))
}

/// The directory of `url` if [`file_store_url`] made it (directly under the temp directory,
/// named by it); `None` for any other store, which is never removed.
pub fn scratch_store_dir(url: &str) -> Option<std::path::PathBuf> {
    let dir = std::path::Path::new(url.strip_prefix("file://")?);
    let name = dir.file_name()?.to_str()?;
    (dir.parent() == Some(std::env::temp_dir().as_path()) && name.starts_with(SCRATCH_STORE_PREFIX))
        .then(|| dir.to_path_buf())
}

/// A fresh prefix in the test bed's S3 bucket.
pub fn s3_store_url(tb: &Testbed) -> anyhow::Result<String> {
    Ok(format!(
        "s3://{}/e2e-{}?endpoint={}&region={}",
        tb.var("RV_S3_BUCKET")?,
        uuid::Uuid::new_v4().simple(),
        tb.var("RV_S3_ENDPOINT")?,
        tb.var("RV_S3_REGION")?
    ))
}

/// The deployment's store, opened here to check what runs wrote.
pub async fn open_store(d: &Deployment) -> anyhow::Result<Arc<dyn Store>> {
    set_aws_env(&d.testbed)?;
    Ok(store::open(&d.store_url).await?)
}

/// The S3 backend reads credentials from the standard AWS environment: tests set them
/// process-wide once, identical for every test (see [`set_store_env`]).
pub fn set_aws_env(tb: &Testbed) -> anyhow::Result<()> {
    set_store_env(tb)
}

/// Puts the test bed's store credentials (S3 keys and region, the Azurite account key the
/// Azure backend signs its SAS with) in this process's environment, once, identical for every
/// test; deployments' processes inherit them.
pub fn set_store_env(tb: &Testbed) -> anyhow::Result<()> {
    static ONCE: std::sync::Once = std::sync::Once::new();
    let vars = [
        ("AWS_ACCESS_KEY_ID", tb.var("RV_S3_ACCESS_KEY")?),
        ("AWS_SECRET_ACCESS_KEY", tb.var("RV_S3_SECRET_KEY")?),
        ("AWS_REGION", tb.var("RV_S3_REGION")?),
        ("AZURE_STORAGE_KEY", tb.var("RV_AZ_KEY")?),
    ];
    // SAFETY: set once, before any store is opened by this test process, to the same values.
    ONCE.call_once(|| unsafe {
        for (k, v) in vars {
            std::env::set_var(k, v);
        }
    });
    Ok(())
}

/// A fresh prefix on the test bed's fake-gcs-server (anonymous: a plain-http emulator).
pub fn gs_store_url(tb: &Testbed) -> anyhow::Result<String> {
    Ok(format!(
        "gs://{}/e2e-{}?endpoint={}",
        tb.var("RV_GCS_BUCKET")?,
        uuid::Uuid::new_v4().simple(),
        tb.var("RV_GCS_ENDPOINT")?
    ))
}

/// A fresh prefix in the test bed's Azurite container.
pub fn az_store_url(tb: &Testbed) -> anyhow::Result<String> {
    Ok(format!(
        "az://{}/{}/e2e-{}?endpoint={}",
        tb.var("RV_AZ_ACCOUNT")?,
        tb.var("RV_AZ_CONTAINER")?,
        uuid::Uuid::new_v4().simple(),
        tb.var("RV_AZ_ENDPOINT")?
    ))
}

/// The directory of a `file://` store URL.
pub fn file_store_dir(url: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(url.trim_start_matches("file://"))
}

/// A JSON document from the store.
pub async fn read_json<T: serde::de::DeserializeOwned>(
    st: &dyn Store,
    key: &layout::ObjectKey,
) -> anyhow::Result<T> {
    let bytes = store::get_bytes(st, key, 64 << 20)
        .await
        .with_context(|| format!("reading {key}"))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {key}"))
}

/// Every node manifest of a committed run.
pub async fn node_manifests(st: &dyn Store, run: &RunId) -> anyhow::Result<Vec<NodeManifest>> {
    let m: RunManifest = read_json(st, &layout::run_manifest(run)).await?;
    let mut out = Vec::new();
    for n in &m.nodes {
        out.push(read_json(st, &layout::node_manifest(run, &n.host_id)).await?);
    }
    Ok(out)
}

/// `ringvault backup --wait ARGS`, which must end DONE.
pub fn backup_done(d: &Deployment, args: &[&str]) -> anyhow::Result<Value> {
    let mut all = vec!["backup", "--wait"];
    all.extend_from_slice(args);
    let v = d.cli_json(&all)?;
    anyhow::ensure!(
        v["state"] == "DONE",
        "backup {args:?} ended {}: {}",
        v["state"],
        v["error"]
    );
    Ok(v)
}

/// The run's current view (`runs show`), or None while the coordinator is unreachable.
pub fn show(d: &Deployment, run: &str) -> Option<Value> {
    d.cli_json(&["runs", "show", run]).ok()
}

/// Waits until the run is no longer RUNNING (the coordinator may restart meanwhile).
pub fn wait_for_end(d: &Deployment, run: &str, limit: Duration) -> anyhow::Result<Value> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = show(d, run)
            && v["state"] != "RUNNING"
        {
            return Ok(v);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "run {run} still RUNNING after {limit:?}: {:?}",
            show(d, run)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Polls the run until `pick` returns Some (its value is returned with the view).
pub fn wait_until<T>(
    d: &Deployment,
    run: &str,
    what: &str,
    pick: impl Fn(&Value) -> Option<T>,
) -> anyhow::Result<(T, Value)> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(v) = show(d, run) {
            if let Some(x) = pick(&v) {
                return Ok((x, v));
            }
            anyhow::ensure!(v["state"] == "RUNNING", "run ended before {what}: {v}");
        }
        anyhow::ensure!(Instant::now() < deadline, "run never reached {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// `ringvault verify RUN [--deep]` as JSON, with its exit code.
pub fn verify(d: &Deployment, run: &str, deep: bool) -> anyhow::Result<(i32, Value)> {
    let mut args = vec!["verify", run, "--output", "json"];
    if deep {
        args.push("--deep");
    }
    let out = d.cli(&args)?;
    let v: Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "verify output: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    Ok((out.status.code().unwrap_or(-1), v))
}

/// The test-bed node number (1-based) of a node address 127.0.0.N.
pub fn node_number(address: &str) -> Option<usize> {
    address.rsplit('.').next()?.parse().ok()
}

/// The `id` of a run's JSON view.
pub fn id_of(v: &Value) -> anyhow::Result<String> {
    Ok(v["id"].as_str().context("run id")?.to_string())
}

/// A finished command's stdout and stderr, for messages.
pub fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Calls `probe` every `every` until it gives a value; an error from `probe` ends the wait at
/// once; fails naming `what` after `limit`. The one deadline loop of the end-to-end tests.
pub fn poll<T>(
    what: &str,
    limit: Duration,
    every: Duration,
    mut probe: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe()? {
            return Ok(v);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "not observed within {limit:?}: {what}"
        );
        std::thread::sleep(every);
    }
}

/// Waits until the coordinator lists the worker of node `address` as down (its heartbeats
/// stopped for longer than the coordinator's worker timeout).
pub fn wait_worker_down(d: &Deployment, address: &str) -> anyhow::Result<()> {
    poll(
        &format!("the worker of node {address} listed as down"),
        Duration::from_secs(60),
        Duration::from_millis(100),
        || {
            let Ok(v) = d.cli_json(&["workers", "list"]) else {
                return Ok(None);
            };
            let down = v.as_array().is_some_and(|ws| {
                ws.iter()
                    .any(|w| w["address"] == address && w["alive"] == false)
            });
            Ok(down.then_some(()))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_scratch_stores_are_removable() -> anyhow::Result<()> {
        let url = file_store_url("t")?;
        let dir = scratch_store_dir(&url).context("a scratch store")?;
        assert_eq!(format!("file://{}", dir.display()), url);
        let tmp = std::env::temp_dir();
        for other in [
            format!("file://{}", tmp.display()),
            format!("file://{}/bench-store", tmp.display()),
            format!("file://{}/x/rv-store-t-1", tmp.display()),
            "file:///var/lib/rv-store-t-1".to_string(),
            format!("s3://b/rv-store-t-1?endpoint=http://{}", tmp.display()),
        ] {
            assert_eq!(scratch_store_dir(&other), None, "{other}");
        }
        Ok(())
    }
}
