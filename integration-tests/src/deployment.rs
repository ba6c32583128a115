//! A private ringvault deployment for one test: a coordinator (own port, own SQLite file, own
//! store URL) and one worker per test-bed node, all real processes built from this workspace.
//! Tests can kill (`SIGKILL`) and restart any of them. Every process also serves Prometheus
//! metrics on its own free port ([`Deployment::coordinator_metrics_url`],
//! [`Deployment::worker_metrics_url`]).
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::testbed::Testbed;

/// Directory holding the workspace's binaries (next to the test executable's `deps/`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// Path of a workspace binary; fails if it has not been built.
pub fn bin(name: &str) -> anyhow::Result<PathBuf> {
    let p = bin_dir().join(name);
    anyhow::ensure!(
        p.exists(),
        "{} not built (cargo build --workspace)",
        p.display()
    );
    Ok(p)
}

/// A port free on `ip` right now.
pub fn free_port(ip: &str) -> anyhow::Result<u16> {
    let l = TcpListener::bind((ip, 0)).with_context(|| format!("binding {ip}:0"))?;
    Ok(l.local_addr()?.port())
}

fn wait_listening(addr: &str, child: &mut Child, what: &str, log: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if std::net::TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("{what} exited ({status}) before listening: {}", tail(log));
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{what} did not listen on {addr}: {}",
            tail(log)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Last lines of a log file.
pub fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// A coordinator and its workers.
pub struct Deployment {
    pub testbed: Testbed,
    pub dir: tempfile::TempDir,
    pub store_url: String,
    pub coordinator_url: String,
    coordinator_port: u16,
    coordinator: Option<Child>,
    workers: Vec<Option<Child>>,
    worker_ports: Vec<u16>,
    extra_coordinator_args: Vec<String>,
    coordinator_metrics_port: u16,
    worker_metrics_ports: Vec<u16>,
}

impl Deployment {
    /// Starts a coordinator with `store_url` and one worker per test-bed node; waits until every
    /// worker has registered.
    pub fn start(store_url: &str) -> anyhow::Result<Self> {
        Self::start_with(store_url, &[])
    }

    /// Like [`Deployment::start`] with extra coordinator flags.
    pub fn start_with(store_url: &str, coordinator_args: &[&str]) -> anyhow::Result<Self> {
        let testbed = Testbed::load()?;
        let nodes = testbed.nodes()?;
        let dir = tempfile::Builder::new().prefix("rv-deploy-").tempdir()?;
        let coordinator_port = free_port("127.0.0.1")?;
        let coordinator_metrics_port = free_port("127.0.0.1")?;
        let mut worker_ports = Vec::new();
        let mut worker_metrics_ports = Vec::new();
        for n in 1..=nodes {
            worker_ports.push(free_port(&format!("127.0.0.{n}"))?);
            worker_metrics_ports.push(free_port(&format!("127.0.0.{n}"))?);
        }
        let mut d = Self {
            testbed,
            dir,
            store_url: store_url.to_string(),
            coordinator_url: format!("http://127.0.0.1:{coordinator_port}"),
            coordinator_port,
            coordinator: None,
            workers: (0..nodes).map(|_| None).collect(),
            worker_ports,
            extra_coordinator_args: coordinator_args.iter().map(|s| s.to_string()).collect(),
            coordinator_metrics_port,
            worker_metrics_ports,
        };
        d.start_coordinator()?;
        for n in 1..=nodes {
            d.start_worker(n)?;
        }
        d.wait_workers(nodes)?;
        Ok(d)
    }

    fn store_env(&self, cmd: &mut Command) -> anyhow::Result<()> {
        cmd.env("AWS_ACCESS_KEY_ID", self.testbed.var("RV_S3_ACCESS_KEY")?)
            .env(
                "AWS_SECRET_ACCESS_KEY",
                self.testbed.var("RV_S3_SECRET_KEY")?,
            )
            .env("AWS_REGION", self.testbed.var("RV_S3_REGION")?)
            // Azure: an account SAS signed from the account key (Azurite's published dev key).
            // GCS needs nothing: a plain-http emulator endpoint is used anonymously.
            .env("AZURE_STORAGE_KEY", self.testbed.var("RV_AZ_KEY")?)
            .env("RUST_LOG", "info");
        Ok(())
    }

    /// Log file of a component.
    pub fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    /// (Re)starts the coordinator on its port with its database.
    pub fn start_coordinator(&mut self) -> anyhow::Result<()> {
        let log = self.log("coordinator");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let mut cmd = Command::new(bin("ringvault-coordinator")?);
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{}", self.coordinator_port))
            .arg("--db")
            .arg(self.dir.path().join("coordinator.db"))
            .arg("--store")
            .arg(&self.store_url)
            .arg("--min-free-bytes")
            .arg("1048576")
            .arg("--heartbeat-interval-ms")
            .arg("500")
            .arg("--worker-timeout-ms")
            .arg("3000")
            .arg("--metrics-listen")
            .arg(format!("127.0.0.1:{}", self.coordinator_metrics_port))
            .args(&self.extra_coordinator_args)
            .stdout(Stdio::null())
            .stderr(out);
        self.store_env(&mut cmd)?;
        let mut child = cmd.spawn().context("starting ringvault-coordinator")?;
        wait_listening(
            &format!("127.0.0.1:{}", self.coordinator_port),
            &mut child,
            "coordinator",
            &log,
        )?;
        self.coordinator = Some(child);
        Ok(())
    }

    /// (Re)starts worker `n` (1-based).
    pub fn start_worker(&mut self, n: usize) -> anyhow::Result<()> {
        let log = self.log(&format!("worker{n}"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let state = self.dir.path().join(format!("worker{n}"));
        std::fs::create_dir_all(&state)?;
        let listen = format!("127.0.0.{n}:{}", self.worker_ports[n - 1]);
        let mut cmd = Command::new(bin("ringvault-worker")?);
        cmd.arg("--listen")
            .arg(&listen)
            .arg("--coordinator")
            .arg(&self.coordinator_url)
            .arg("--cql")
            .arg(self.testbed.var(&format!("RV_NODE{n}_CQL"))?)
            .arg("--nodetool")
            .arg(self.testbed.var(&format!("RV_NODE{n}_NODETOOL"))?)
            .arg("--sstableloader")
            .arg(self.testbed.var(&format!("RV_NODE{n}_SSTABLELOADER"))?)
            .arg("--data-dir")
            .arg(self.testbed.var(&format!("RV_NODE{n}_DATA_DIR"))?)
            .arg("--state-dir")
            .arg(&state)
            .arg("--metrics-listen")
            .arg(format!("127.0.0.{n}:{}", self.worker_metrics_ports[n - 1]))
            .stdout(Stdio::null())
            .stderr(out);
        self.store_env(&mut cmd)?;
        let mut child = cmd.spawn().context("starting ringvault-worker")?;
        wait_listening(&listen, &mut child, &format!("worker {n}"), &log)?;
        self.workers[n - 1] = Some(child);
        Ok(())
    }

    /// gRPC URL of worker `n` (1-based), for tests that call the Worker service directly.
    pub fn worker_url(&self, n: usize) -> String {
        format!("http://127.0.0.{n}:{}", self.worker_ports[n - 1])
    }

    /// URL of the coordinator's Prometheus metrics page.
    pub fn coordinator_metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.coordinator_metrics_port)
    }

    /// URL of worker `n`'s (1-based) Prometheus metrics page.
    pub fn worker_metrics_url(&self, n: usize) -> String {
        format!(
            "http://127.0.0.{n}:{}/metrics",
            self.worker_metrics_ports[n - 1]
        )
    }

    /// Waits until `count` workers are registered and alive.
    pub fn wait_workers(&self, count: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = self.cli(&["workers", "list", "--output", "json"])?;
            if out.status.success() {
                let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
                let alive = v
                    .as_array()
                    .map(|a| a.iter().filter(|w| w["alive"] == true).count())
                    .unwrap_or(0);
                if alive >= count {
                    return Ok(());
                }
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "workers did not register: {}",
                tail(&self.log("worker1"))
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGKILLs worker `n`.
    pub fn kill_worker(&mut self, n: usize) -> anyhow::Result<()> {
        if let Some(mut c) = self.workers[n - 1].take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// SIGKILLs the coordinator.
    pub fn kill_coordinator(&mut self) -> anyhow::Result<()> {
        if let Some(mut c) = self.coordinator.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// Runs the CLI against this coordinator.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<Output> {
        Command::new(bin("ringvault")?)
            .arg("--coordinator")
            .arg(&self.coordinator_url)
            .args(args)
            .output()
            .context("running ringvault")
    }

    /// Runs the CLI expecting success and JSON on stdout.
    pub fn cli_json(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--output", "json"]);
        let out = self.cli(&all)?;
        anyhow::ensure!(
            out.status.success(),
            "ringvault {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "parsing output of {args:?}: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        for c in self
            .workers
            .iter_mut()
            .chain(std::iter::once(&mut self.coordinator))
        {
            if let Some(mut c) = c.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
