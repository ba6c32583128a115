//! The real coordinator in this process: `ringvault_coordinator::run` with options parsed as
//! the binary parses its command line (plain text on loopback, a temporary SQLite file, a
//! temporary `file://` store, short heartbeats), a CLI-side gRPC client to it, fake workers
//! registered with it, and waits on observed run states.
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use ringvault_common::store::Store;
use ringvault_proto::v1 as pb;
use ringvault_proto::v1::coordinator_client::CoordinatorClient;
use tonic::transport::Channel;

use crate::fake_worker::{FakeCluster, FakeFile, FakeWorker, Script};

/// How long any wait of a fast test may take before it fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// A coordinator running in this process.
pub struct Harness {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    pub store_url: String,
    /// The coordinator's store, opened here to check what runs wrote.
    pub store: Arc<dyn Store>,
    pub client: CoordinatorClient<Channel>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The coordinator's options from command-line words, exactly as the binary reads them.
fn parse_options(args: &[String]) -> anyhow::Result<ringvault_coordinator::CoordinatorOptions> {
    Ok(ringvault_coordinator::CoordinatorOptions::try_parse_from(
        std::iter::once("ringvault-coordinator".to_string()).chain(args.iter().cloned()),
    )?)
}

impl Harness {
    /// Starts a coordinator on a free loopback port; `extra` are more command-line flags.
    pub async fn start(extra: &[&str]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let store_url = format!("file://{}", dir.path().join("store").display());
        let mut last = None;
        // A free port is picked, released and handed to the coordinator: another process may
        // take it in between, so a failed bind is retried on another port.
        for _ in 0..5 {
            let port = {
                let l = std::net::TcpListener::bind("127.0.0.1:0")?;
                l.local_addr()?.port()
            };
            let url = format!("http://127.0.0.1:{port}");
            let mut args: Vec<String> = [
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--db",
                &dir.path().join("coordinator.db").display().to_string(),
                "--store",
                &store_url,
                "--insecure-loopback",
                "--heartbeat-interval-ms",
                "100",
                "--worker-timeout-ms",
                "3000",
                "--worker-restart-grace-secs",
                "10",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            args.extend(extra.iter().map(|s| s.to_string()));
            let opts = parse_options(&args)?;
            let server = tokio::spawn(ringvault_coordinator::run(opts));
            let deadline = tokio::time::Instant::now() + WAIT;
            let client = loop {
                if server.is_finished() {
                    break None;
                }
                if let Ok(mut c) = CoordinatorClient::connect(url.clone()).await
                    && c.list_workers(pb::ListWorkersRequest {}).await.is_ok()
                {
                    break Some(c);
                }
                anyhow::ensure!(
                    tokio::time::Instant::now() < deadline,
                    "the coordinator did not serve on {url} within {WAIT:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            match client {
                Some(client) => {
                    let store = ringvault_common::store::open(&store_url).await?;
                    return Ok(Self {
                        url,
                        store_url,
                        store,
                        client,
                        server,
                        _dir: dir,
                    });
                }
                None => last = Some(server.await),
            }
        }
        anyhow::bail!("the coordinator did not start: {last:?}")
    }

    /// Starts `scripts.len()` fake nodes of one cluster, node `n` holding `files(n)`, and waits
    /// until the coordinator lists every one of them alive.
    pub async fn cluster(
        &self,
        files: impl Fn(u8) -> Vec<FakeFile>,
        scripts: Vec<Script>,
    ) -> anyhow::Result<Vec<FakeWorker>> {
        let cluster = FakeCluster::new("fast_cluster");
        let mut out = Vec::new();
        for (i, s) in scripts.into_iter().enumerate() {
            let n = u8::try_from(i + 1)?;
            out.push(FakeWorker::start(&cluster, n, &self.url, files(n), s).await?);
        }
        let want = out.len();
        self.wait("every fake worker registered and alive", || async {
            let workers = self
                .client
                .clone()
                .list_workers(pb::ListWorkersRequest {})
                .await
                .ok()?
                .into_inner()
                .workers;
            (workers.iter().filter(|w| w.alive).count() == want).then_some(())
        })
        .await?;
        Ok(out)
    }

    /// `StartBackup` of `keyspaces`.
    pub async fn start_backup(
        &self,
        keyspaces: &[&str],
    ) -> Result<pb::StartBackupResponse, tonic::Status> {
        self.client
            .clone()
            .start_backup(pb::StartBackupRequest {
                keyspaces: keyspaces.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// The run's view (`GetRun`).
    pub async fn run(&self, id: &str) -> anyhow::Result<pb::Run> {
        Ok(self
            .client
            .clone()
            .get_run(pb::GetRunRequest { run_id: id.into() })
            .await
            .with_context(|| format!("GetRun {id}"))?
            .into_inner())
    }

    /// Polls `probe` (every 20 ms) until it gives a value; fails naming `what` after [`WAIT`].
    pub async fn wait<T, F, Fut>(&self, what: &str, probe: F) -> anyhow::Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(v) = probe().await {
                return Ok(v);
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "not observed within {WAIT:?}: {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the run has ended (no longer PENDING or RUNNING) and returns its view.
    pub async fn wait_end(&self, id: &str) -> anyhow::Result<pb::Run> {
        self.wait(&format!("run {id} ended"), || async {
            let r = self.run(id).await.ok()?;
            (r.state != "RUNNING" && r.state != "PENDING").then_some(r)
        })
        .await
    }
}
