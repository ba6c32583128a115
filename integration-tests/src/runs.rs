//! Following runs through the CLI, as an operator would: start, poll, wait for the end,
//! verify. Shared by the crash, purge and schedule tests.
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::Value;

use crate::deployment::Deployment;

/// A fresh `file://` store under the temp directory.
pub fn file_store_url(tag: &str) -> String {
    let dir =
        std::env::temp_dir().join(format!("rv-store-{tag}-{}", uuid::Uuid::new_v4().simple()));
    format!("file://{}", dir.display())
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
