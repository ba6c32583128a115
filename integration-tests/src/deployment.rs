//! A private ringvault deployment for one test: a coordinator (own port, own SQLite file, own
//! store URL) and one worker per test-bed node, all real processes built from this workspace.
//! Tests can kill (`SIGKILL`) and restart any of them. Every process also serves Prometheus
//! metrics on its own free port ([`Deployment::coordinator_metrics_url`],
//! [`Deployment::worker_metrics_url`]).
//!
//! Every hop runs mutual TLS, as in production: each deployment makes its own CA and
//! certificates ([`Deployment::certs`]): the coordinator's, one per worker, and one CLI user per
//! role (`admin`, `operator`, `viewer`; the CLI runs as `admin` unless told otherwise).
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

/// Ports [`free_port`] handed out in this process, per address. Once its probe listener is
/// closed the kernel may offer a port again: a worker once got the same port for gRPC and for
/// metrics, and its second listener failed.
static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<(String, u16)>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// A port free on `ip` right now, and never handed out before by this process.
pub fn free_port(ip: &str) -> anyhow::Result<u16> {
    for _ in 0..1000 {
        let l = TcpListener::bind((ip, 0)).with_context(|| format!("binding {ip}:0"))?;
        let port = l.local_addr()?.port();
        let mut handed = HANDED_OUT
            .lock()
            .map_err(|_| anyhow::anyhow!("port list lock poisoned"))?;
        if handed.insert((ip.to_string(), port)) {
            return Ok(port);
        }
    }
    anyhow::bail!("no port on {ip} that was not handed out already")
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
    /// Per worker: a nodetool program replacing the test bed's (e.g. a wrapper script).
    worker_nodetool: Vec<Option<PathBuf>>,
    /// Per worker: extra command-line arguments (e.g. another `--data-dir`).
    worker_extra_args: Vec<Vec<String>>,
    /// Per worker: `--data-dir`s replacing the test bed's.
    worker_data_dirs: Vec<Option<Vec<PathBuf>>>,
    /// Store URLs the workers (and the coordinator's --from-store) may use.
    pub allowed_stores: Vec<String>,
    /// Per worker: Cassandra access flags replacing the secured test bed's defaults
    /// ([`Deployment::cassandra_access_args`]).
    worker_access_args: Vec<Option<Vec<String>>>,
}

/// The cluster name of the test bed's nodes (what worker certificates are issued for).
pub const TESTBED_CLUSTER: &str = "ringvault_testbed";

/// Paths of one certificate and its key.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The certificate directory of a deployment.
#[derive(Debug, Clone)]
pub struct Certs {
    pub dir: PathBuf,
    pub ca: PathBuf,
}

impl Certs {
    /// Makes a CA and the certificates of a coordinator, `nodes` workers and one user per role
    /// in `dir`.
    pub fn make(dir: &Path, nodes: usize) -> anyhow::Result<Self> {
        use ringvault_common::security::certs::CertAuthority;
        use ringvault_common::security::{Identity, Role};
        let ca = CertAuthority::load_or_create(dir, "ringvault test CA")?;
        ca.write(
            dir,
            "coordinator",
            &Identity::Coordinator,
            &["127.0.0.1".into(), "localhost".into()],
        )?;
        for n in 1..=nodes {
            ca.write(
                dir,
                &format!("worker{n}"),
                &Identity::Worker {
                    cluster: TESTBED_CLUSTER.into(),
                    name: format!("node{n}"),
                },
                &[format!("127.0.0.{n}")],
            )?;
        }
        for role in [Role::Viewer, Role::Operator, Role::Admin] {
            ca.write(
                dir,
                role.as_str(),
                &Identity::User {
                    name: format!("test-{role}"),
                    role,
                },
                &[],
            )?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            ca: dir.join("ca.pem"),
        })
    }

    /// The files of certificate `name` (coordinator, worker1.., admin, operator, viewer).
    pub fn get(&self, name: &str) -> CertFiles {
        CertFiles {
            cert: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}.key")),
        }
    }

    /// The `--tls-*` flags that make a component present certificate `name`.
    pub fn flags(&self, name: &str) -> Vec<String> {
        let f = self.get(name);
        vec![
            "--tls-ca".into(),
            self.ca.display().to_string(),
            "--tls-cert".into(),
            f.cert.display().to_string(),
            "--tls-key".into(),
            f.key.display().to_string(),
        ]
    }
}

impl Deployment {
    /// Starts a coordinator with `store_url` and one worker per test-bed node; waits until every
    /// worker has registered.
    pub fn start(store_url: &str) -> anyhow::Result<Self> {
        Self::start_with(store_url, &[])
    }

    /// Like [`Deployment::start`] with extra coordinator flags.
    pub fn start_with(store_url: &str, coordinator_args: &[&str]) -> anyhow::Result<Self> {
        let nodes = Testbed::load()?.nodes()?;
        let all: Vec<usize> = (1..=nodes).collect();
        Self::start_full(store_url, coordinator_args, &all, &[])
    }

    /// Like [`Deployment::start_with`], with workers only beside the nodes `workers` (1-based);
    /// the others can be started later with [`Deployment::start_worker`].
    pub fn start_some(
        store_url: &str,
        coordinator_args: &[&str],
        workers: &[usize],
    ) -> anyhow::Result<Self> {
        Self::start_full(store_url, coordinator_args, workers, &[])
    }

    /// Like [`Deployment::start_with`], with more stores the workers (and `--from-store`) may
    /// use besides `store_url`.
    pub fn start_allowing(
        store_url: &str,
        coordinator_args: &[&str],
        more_stores: &[&str],
    ) -> anyhow::Result<Self> {
        let nodes = Testbed::load()?.nodes()?;
        let all: Vec<usize> = (1..=nodes).collect();
        Self::start_full(store_url, coordinator_args, &all, more_stores)
    }

    fn start_full(
        store_url: &str,
        coordinator_args: &[&str],
        workers: &[usize],
        more_stores: &[&str],
    ) -> anyhow::Result<Self> {
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
        Certs::make(&dir.path().join("certs"), nodes)?;
        let mut allowed_stores = vec![store_url.to_string()];
        allowed_stores.extend(more_stores.iter().map(|s| s.to_string()));
        let mut d = Self {
            testbed,
            dir,
            allowed_stores,
            store_url: store_url.to_string(),
            coordinator_url: format!("https://127.0.0.1:{coordinator_port}"),
            coordinator_port,
            coordinator: None,
            workers: (0..nodes).map(|_| None).collect(),
            worker_ports,
            extra_coordinator_args: coordinator_args.iter().map(|s| s.to_string()).collect(),
            coordinator_metrics_port,
            worker_metrics_ports,
            worker_nodetool: vec![None; nodes],
            worker_extra_args: vec![Vec::new(); nodes],
            worker_data_dirs: vec![None; nodes],
            worker_access_args: vec![None; nodes],
        };
        d.start_coordinator()?;
        for &n in workers {
            d.start_worker(n)?;
        }
        d.wait_workers(workers.len())?;
        Ok(d)
    }

    /// Makes worker `n` (1-based) use `program` as nodetool from its next start on.
    pub fn set_worker_nodetool(&mut self, n: usize, program: PathBuf) {
        self.worker_nodetool[n - 1] = Some(program);
    }

    /// `--data-dir`s of worker `n` (1-based) from its next start on (`None`: the test bed's).
    pub fn set_worker_data_dirs(&mut self, n: usize, dirs: Option<Vec<PathBuf>>) {
        self.worker_data_dirs[n - 1] = dirs;
    }

    /// Cassandra access flags of worker `n` (1-based) from its next start on (`None`: the test
    /// bed's, [`Deployment::cassandra_access_args`]).
    pub fn set_worker_access_args(&mut self, n: usize, args: Option<Vec<String>>) {
        self.worker_access_args[n - 1] = args;
    }

    /// The worker flags a secured test bed (`scripts/testbed up --secure`, `RV_SECURE=1` in its
    /// env file) needs for node `n`: CQL user, password file and CA, JMX user and password
    /// file, sstableloader's config. Empty on the default bed.
    pub fn cassandra_access_args(&self, n: usize) -> anyhow::Result<Vec<String>> {
        if self.testbed.var("RV_SECURE").ok().as_deref() != Some("1") {
            return Ok(Vec::new());
        }
        let v = |k: &str| self.testbed.var(k);
        Ok(vec![
            "--cql-username".into(),
            v("RV_CQL_USERNAME")?,
            "--cql-password-file".into(),
            v("RV_CQL_PASSWORD_FILE")?,
            "--cql-tls-ca".into(),
            v("RV_CQL_TLS_CA")?,
            "--jmx-username".into(),
            v("RV_JMX_USERNAME")?,
            "--jmx-password-file".into(),
            v("RV_JMX_PASSWORD_FILE")?,
            "--sstableloader-config".into(),
            v(&format!("RV_NODE{n}_LOADER_CONFIG"))?,
        ])
    }

    /// Extra arguments for worker `n` (1-based) from its next start on.
    pub fn set_worker_extra_args(&mut self, n: usize, args: &[&str]) {
        self.worker_extra_args[n - 1] = args.iter().map(|a| a.to_string()).collect();
    }

    /// Starts worker `n` (1-based) and returns its exit status and log if it exits (refuses
    /// to start) within `within`; `None` when it is still running then (it is killed).
    pub fn worker_start_refused(
        &mut self,
        n: usize,
        within: Duration,
    ) -> anyhow::Result<Option<String>> {
        let log = self.log(&format!("worker{n}-refused"));
        let _ = std::fs::remove_file(&log);
        let mut cmd = self.worker_command(n, &log)?;
        let mut child = cmd.spawn().context("starting ringvault-worker")?;
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                return Ok(Some(format!(
                    "{status}: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        Ok(None)
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

    /// This deployment's certificates.
    pub fn certs(&self) -> Certs {
        let dir = self.dir.path().join("certs");
        Certs {
            ca: dir.join("ca.pem"),
            dir,
        }
    }

    /// The coordinator's gRPC port.
    pub fn coordinator_port(&self) -> u16 {
        self.coordinator_port
    }

    /// Worker `n`'s (1-based) gRPC URL.
    pub fn worker_url(&self, n: usize) -> String {
        format!("https://127.0.0.{n}:{}", self.worker_ports[n - 1])
    }

    /// A gRPC client of worker `n` (1-based) presenting the coordinator's certificate (the only
    /// identity a worker serves).
    pub async fn worker_client(
        &self,
        n: usize,
    ) -> anyhow::Result<ringvault_proto::v1::worker_client::WorkerClient<tonic::transport::Channel>>
    {
        use ringvault_common::security::{ClientSecurity, ReloadingTls};
        let certs = self.certs();
        let own = certs.get("coordinator");
        let sec = ClientSecurity {
            tls: Some(std::sync::Arc::new(ReloadingTls::new(
                certs.ca.clone(),
                Some((own.cert, own.key)),
            ))),
        };
        let channel = sec.connect(&self.worker_url(n), |ep| ep).await?;
        Ok(
            ringvault_proto::v1::worker_client::WorkerClient::new(channel)
                .max_decoding_message_size(ringvault_common::service::MAX_GRPC_MESSAGE)
                .max_encoding_message_size(ringvault_common::service::MAX_GRPC_MESSAGE),
        )
    }

    /// Process id of worker `n` (1-based), while it runs.
    pub fn worker_pid(&self, n: usize) -> Option<u32> {
        self.workers[n - 1].as_ref().map(Child::id)
    }

    /// Process id of the coordinator, while it runs.
    pub fn coordinator_pid(&self) -> Option<u32> {
        self.coordinator.as_ref().map(Child::id)
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
            .args(self.certs().flags("coordinator"))
            .args(
                self.allowed_stores
                    .iter()
                    .flat_map(|s| ["--allow-from-store".to_string(), s.clone()]),
            )
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
        let listen = format!("127.0.0.{n}:{}", self.worker_ports[n - 1]);
        let mut attempt = 1;
        loop {
            let mut child = self
                .worker_command(n, &log)?
                .spawn()
                .context("starting ringvault-worker")?;
            match wait_listening(&listen, &mut child, &format!("worker {n}"), &log) {
                Ok(()) => {
                    self.workers[n - 1] = Some(child);
                    return Ok(());
                }
                // A restart can find its metrics port, free when the deployment started, taken
                // meanwhile by another connection's ephemeral port: it gets a new one.
                Err(e) if attempt < 3 && format!("{e:#}").contains("binding metrics listener") => {
                    self.worker_metrics_ports[n - 1] = free_port(&format!("127.0.0.{n}"))?;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn worker_command(&self, n: usize, log: &Path) -> anyhow::Result<Command> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
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
            .arg(match &self.worker_nodetool[n - 1] {
                Some(p) => p.display().to_string(),
                None => self.testbed.var(&format!("RV_NODE{n}_NODETOOL"))?,
            })
            // The JMX session, unless a test's own nodetool must see every call or the test
            // names its own --jmx.
            .args(
                if self.worker_nodetool[n - 1].is_some()
                    || self.worker_extra_args[n - 1].iter().any(|a| a == "--jmx")
                {
                    Vec::new()
                } else {
                    let port = self.testbed.var(&format!("RV_NODE{n}_JMX_PORT"))?;
                    vec!["--jmx".to_string(), format!("127.0.0.1:{port}")]
                },
            )
            .arg("--sstableloader")
            .arg(self.testbed.var(&format!("RV_NODE{n}_SSTABLELOADER"))?)
            .args(match &self.worker_data_dirs[n - 1] {
                Some(dirs) => dirs
                    .iter()
                    .flat_map(|d| ["--data-dir".to_string(), d.display().to_string()])
                    .collect(),
                None => vec![
                    "--data-dir".to_string(),
                    self.testbed.var(&format!("RV_NODE{n}_DATA_DIR"))?,
                ],
            })
            .arg("--state-dir")
            .arg(&state)
            .arg("--metrics-listen")
            .arg(format!("127.0.0.{n}:{}", self.worker_metrics_ports[n - 1]))
            .args(self.certs().flags(&format!("worker{n}")))
            .args(
                self.allowed_stores
                    .iter()
                    .flat_map(|s| ["--allow-store".to_string(), s.clone()]),
            )
            .args(&self.worker_extra_args[n - 1])
            .args(match &self.worker_access_args[n - 1] {
                Some(a) => a.clone(),
                None => self.cassandra_access_args(n)?,
            })
            .stdout(Stdio::null())
            .stderr(out);
        self.store_env(&mut cmd)?;
        Ok(cmd)
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

    /// Runs the CLI against this coordinator as the `admin` user.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<Output> {
        self.cli_as("admin", args)
    }

    /// Runs the CLI against this coordinator with certificate `who` (admin, operator, viewer,
    /// or any name under [`Deployment::certs`]).
    pub fn cli_as(&self, who: &str, args: &[&str]) -> anyhow::Result<Output> {
        Command::new(bin("ringvault")?)
            .arg("--coordinator")
            .arg(&self.coordinator_url)
            .args(self.certs().flags(who))
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

impl Deployment {
    /// SIGKILLs the coordinator and every worker; the store stays until the deployment is
    /// dropped (another deployment may still read it).
    pub fn stop(&mut self) {
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

impl Drop for Deployment {
    /// Stops the processes and removes a scratch file store ([`crate::runs::file_store_url`]),
    /// except after a panic (a failed `assert!`) or with `RV_KEEP_STORES=1`, for a look at
    /// what the runs wrote (a test that fails by returning an error drops its deployment as
    /// one that passed).
    fn drop(&mut self) {
        self.stop();
        let keep = std::env::var_os("RV_KEEP_STORES").is_some_and(|v| v == "1");
        if !keep
            && !std::thread::panicking()
            && let Some(dir) = crate::runs::scratch_store_dir(&self.store_url)
        {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_never_hands_out_a_port_twice() -> anyhow::Result<()> {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            assert!(
                seen.insert(free_port("127.0.0.1")?),
                "a port handed out twice"
            );
        }
        Ok(())
    }
}
