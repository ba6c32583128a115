//! The worker's node: [`LocalNode`] owns the node's nodetool, CQL session, data directories,
//! staging directory and hash cache, and holds the checks every request goes through (data
//! directories, store allowlist, concurrency, staging space, selection against the live
//! schema). Snapshot rules are in [`crate::snapshot`]; the gRPC edge is [`crate::service`].
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ringvault_common::Identifier;
use ringvault_proto::v1 as pb;
use tokio::sync::OnceCell;

use crate::WorkerOptions;
use crate::cql::{Cql, EXCLUDED_KEYSPACES};
use crate::error::{Result, WorkerError};
use crate::hash_cache::HashCache;
use crate::metrics::WorkerMetrics;
use crate::nodetool::Nodetool;

/// Everything the worker knows and can do about its node.
pub struct LocalNode {
    pub(crate) nodetool: Nodetool,
    pub(crate) sstableloader: PathBuf,
    pub(crate) staging: PathBuf,
    cql_addr: String,
    cql: OnceCell<Cql>,
    pub data_dirs: Vec<PathBuf>,
    pub(crate) cache: HashCache,
    concurrency: usize,
    /// Leave the page cache as a read found it (`--gentle-reads`).
    pub(crate) gentle_reads: bool,
    /// The largest concurrency a request may ask for.
    max_concurrency: u32,
    /// Stores requests may name.
    allow_store: ringvault_common::security::StoreAllowlist,
    /// Free bytes a Download leaves on the staging filesystem.
    staging_reserve_bytes: u64,
    /// New for every process start, so the coordinator can tell a restarted worker.
    instance_id: String,
    /// What `/metrics` reports; counted here as requests end and stream events pass.
    pub metrics: Arc<WorkerMetrics>,
    /// Set once `data_dirs` matched the node's `data_file_directories`.
    data_dirs_checked: OnceCell<()>,
    /// Where the tables each snapshot covered are recorded (`snapshots/<tag>.tables`).
    pub(crate) state_dir: PathBuf,
    /// How the worker gets into the node (CQL login and TLS, JMX login, sstableloader's).
    pub(crate) access: crate::access::Access,
    /// When the JMX login last succeeded (a nodetool JVM start is not repeated for every run).
    jmx_checked: std::sync::Mutex<Option<std::time::Instant>>,
}

/// Why the data directories could not be confirmed.
#[derive(Debug, thiserror::Error)]
pub enum DataDirsError {
    /// The node uses another set: never serve.
    #[error(transparent)]
    Mismatch(#[from] crate::topology::DataDirMismatch),
    /// The node could not be asked.
    #[error("reading the node's data_file_directories: {0:#}")]
    Unknown(anyhow::Error),
}

/// A validated keyspace/table selection.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub keyspaces: BTreeSet<String>,
    /// Set when tables of one keyspace were selected.
    pub tables: Option<BTreeSet<String>>,
}

impl Resolved {
    /// Whether `ks.table` is selected.
    pub fn keeps(&self, ks: &str, table: &str) -> bool {
        self.keyspaces.contains(ks) && self.tables.as_ref().is_none_or(|t| t.contains(table))
    }
}

impl LocalNode {
    /// Sets up the node handle; the CQL session connects on first use.
    pub async fn new(opts: &WorkerOptions, cache: HashCache) -> anyhow::Result<Self> {
        for d in &opts.data_dirs {
            if !d.is_dir() {
                anyhow::bail!("data directory {} does not exist", d.display());
            }
        }
        let first = opts
            .data_dirs
            .first()
            .context("at least one --data-dir is required")?;
        let staging = opts.staging_dir.clone().unwrap_or_else(|| {
            first
                .parent()
                .map(|p| p.join("ringvault-staging"))
                .unwrap_or_else(|| first.join("..").join("ringvault-staging"))
        });
        let access = crate::access::Access::from_args(&opts.access, &opts.cql)?;
        Ok(Self {
            nodetool: {
                let session = opts
                    .jmx
                    .clone()
                    .map(|t| crate::jmx::JmxSession::new(t, access.jmx.clone(), &opts.state_dir));
                let n = Nodetool::new(opts.nodetool.clone())
                    .with_jmx(access.jmx.clone())
                    .with_session(session);
                if opts.nodetool_class_archive {
                    n.with_class_archive(&opts.state_dir)
                } else {
                    n
                }
            },
            sstableloader: opts.sstableloader.clone(),
            staging,
            cql_addr: opts.cql.clone(),
            cql: OnceCell::new(),
            data_dirs: opts.data_dirs.clone(),
            cache,
            concurrency: opts.concurrency.max(1) as usize,
            gentle_reads: opts.priority.gentle_reads,
            max_concurrency: opts.max_concurrency.max(1),
            allow_store: ringvault_common::security::StoreAllowlist::new(&opts.allow_store)?,
            staging_reserve_bytes: opts.staging_reserve_bytes,
            instance_id: uuid::Uuid::new_v4().to_string(),
            metrics: Arc::default(),
            data_dirs_checked: OnceCell::new(),
            state_dir: opts.state_dir.clone(),
            access,
            jmx_checked: std::sync::Mutex::new(None),
        })
    }

    /// Confirms (once) that `--data-dir` is exactly the node's `data_file_directories`.
    pub async fn check_data_dirs(&self) -> std::result::Result<(), DataDirsError> {
        self.data_dirs_checked
            .get_or_try_init(|| async {
                let cql = self.cql().await.map_err(DataDirsError::Unknown)?;
                let node = crate::topology::data_file_directories(cql)
                    .await
                    .map_err(DataDirsError::Unknown)?;
                crate::topology::compare(&self.data_dirs, &node)?;
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// [`LocalNode::check_data_dirs`] as a refusal (another set) or the node being
    /// unavailable (it could not be asked).
    pub async fn require_data_dirs(&self) -> Result<()> {
        self.check_data_dirs().await.map_err(|e| match e {
            DataDirsError::Mismatch(m) => WorkerError::refused(m),
            DataDirsError::Unknown(e) => WorkerError::Unavailable {
                what: format!("the Cassandra node at {}", self.cql_addr),
                reason: format!("{e:#}"),
            },
        })
    }

    /// Opens a store named by a request, refused before any request leaves the machine unless
    /// it is inside this worker's `--allow-store` list.
    pub async fn open_store(&self, url: &str) -> Result<Arc<dyn ringvault_common::store::Store>> {
        self.check_store(url)?;
        ringvault_common::store::open(url)
            .await
            .map_err(WorkerError::invalid)
    }

    /// PERMISSION_DENIED unless `url` is inside `--allow-store`; handlers call it first, before
    /// anything else happens.
    pub fn check_store(&self, url: &str) -> Result<()> {
        self.allow_store.check(url).map_err(|e| {
            tracing::warn!(error = %e, "refused a store outside the allowlist");
            WorkerError::PermissionDenied(e.to_string())
        })
    }

    /// The parts in flight a request asks for (0: this worker's own setting), refused over
    /// `--max-concurrency`.
    pub fn concurrency_for(&self, asked: u32) -> Result<usize> {
        match asked {
            0 => Ok(self.concurrency),
            n if n > self.max_concurrency => Err(WorkerError::invalid(format!(
                "concurrency {n} exceeds this worker's --max-concurrency {}",
                self.max_concurrency
            ))),
            n => Ok(n as usize),
        }
    }

    /// Refuses a download of `bytes` that would leave less than the staging reserve free.
    pub fn check_staging_space(&self, bytes: u64) -> Result<()> {
        let mut probe = self.staging.as_path();
        while !probe.exists() {
            match probe.parent() {
                Some(p) => probe = p,
                None => break,
            }
        }
        let free = free_bytes(probe)?;
        if free < bytes.saturating_add(self.staging_reserve_bytes) {
            return Err(WorkerError::NoSpace(format!(
                "staging {} needs {bytes} bytes and keeps {} in reserve, but only {free} are free",
                self.staging.display(),
                self.staging_reserve_bytes
            )));
        }
        Ok(())
    }

    /// The checks of [`pb::worker_server::Worker::check_access`]: the CQL session, the JMX
    /// login (when JMX credentials are configured; a success is trusted for five minutes), and
    /// MODIFY on every table in `writes` for the configured CQL role.
    pub async fn check_access(
        &self,
        writes: &[pb::TableRef],
    ) -> std::result::Result<(), crate::access::AccessError> {
        use crate::access::AccessError;
        let cql = match self.cql().await {
            Ok(c) => c,
            Err(e) => {
                return Err(match e.downcast::<AccessError>() {
                    Ok(a) => a,
                    Err(e) => AccessError::CqlUnreachable {
                        addr: self.cql_addr.clone(),
                        detail: format!("{e:#}"),
                    },
                });
            }
        };
        if let Some(jmx) = self.nodetool.jmx() {
            const TRUSTED_FOR: Duration = Duration::from_secs(300);
            let fresh = self
                .jmx_checked
                .lock()
                .ok()
                .and_then(|g| *g)
                .is_some_and(|t| t.elapsed() < TRUSTED_FOR);
            if !fresh {
                match self.nodetool.version().await {
                    Ok(_) => {
                        if let Ok(mut g) = self.jmx_checked.lock() {
                            *g = Some(std::time::Instant::now());
                        }
                    }
                    Err(e) => {
                        if let Ok(mut g) = self.jmx_checked.lock() {
                            *g = None;
                        }
                        return Err(crate::access::classify_jmx_error(Some(jmx), &e.to_string()));
                    }
                }
            }
        }
        let Some(creds) = &self.access.cql else {
            return Ok(());
        };
        let mut seen = BTreeSet::new();
        for w in writes {
            let table = (!w.table.is_empty()).then_some(w.table.as_str());
            if !seen.insert((w.keyspace.clone(), w.table.clone())) {
                continue;
            }
            let held = cql
                .holds_permission(&creds.username, "MODIFY", &w.keyspace, table)
                .await
                .map_err(|e| AccessError::CqlUnreachable {
                    addr: self.cql_addr.clone(),
                    detail: format!("checking permissions: {e:#}"),
                })?;
            match held {
                None => return Ok(()), // AllowAllAuthorizer: nothing to check
                Some((true, _)) => {}
                Some((false, resource)) => {
                    let target = match table {
                        Some(t) => format!("{}.{t}", w.keyspace),
                        None => format!("keyspace {}", w.keyspace),
                    };
                    return Err(AccessError::Permission {
                        role: creds.username.clone(),
                        permission: "MODIFY",
                        grant_on: resource.clone(),
                        resource,
                        why: format!(
                            "restore {target} (nodetool import and sstableloader bypass CQL permissions, so the worker refuses to write where its role may not)"
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// The CQL session, connected on first use.
    pub async fn cql(&self) -> anyhow::Result<&Cql> {
        self.cql
            .get_or_try_init(|| async {
                Cql::connect(&self.cql_addr, &self.access)
                    .await
                    .map_err(anyhow::Error::from)
            })
            .await
    }

    /// The node's identity, topology and free space; refused while the data directories
    /// differ from the node's.
    pub async fn info(&self) -> anyhow::Result<pb::NodeInfo> {
        self.check_data_dirs().await?;
        let local = self.cql().await?.local_info().await?;
        self.nodetool.expect_host(&local.host_id);
        let free_bytes = self
            .data_dirs
            .iter()
            .map(|d| free_bytes(d))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(pb::NodeInfo {
            cluster_name: local.cluster_name,
            host_id: local.host_id,
            address: local.address,
            datacenter: local.datacenter,
            rack: local.rack,
            tokens: local.tokens,
            data_dirs: self
                .data_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect(),
            cassandra_version: local.release_version,
            worker_address: String::new(),
            free_bytes,
            partitioner: local.partitioner,
            instance_id: self.instance_id.clone(),
        })
    }

    /// Checks a selection against the live schema.
    pub async fn resolve(&self, sel: &pb::Selection) -> Result<Resolved> {
        let cql = self.cql().await?;
        let tables = cql.tables().await?;
        for k in &sel.keyspaces {
            Identifier::parse("keyspace", k).map_err(WorkerError::invalid)?;
        }
        for t in &sel.tables {
            Identifier::parse("table", t).map_err(WorkerError::invalid)?;
        }
        let existing: BTreeSet<String> = tables.iter().map(|t| t.keyspace.clone()).collect();
        let keyspaces: BTreeSet<String> = if sel.keyspaces.is_empty() {
            if !sel.tables.is_empty() {
                return Err(WorkerError::invalid("tables need exactly one keyspace"));
            }
            existing
                .iter()
                .filter(|k| !EXCLUDED_KEYSPACES.contains(&k.as_str()))
                .cloned()
                .collect()
        } else {
            for k in &sel.keyspaces {
                if EXCLUDED_KEYSPACES.contains(&k.as_str()) {
                    return Err(WorkerError::invalid(format!(
                        "keyspace {k} holds no data of its own and is never backed up"
                    )));
                }
                if !existing.contains(k) {
                    return Err(WorkerError::NotFound(format!(
                        "keyspace {k} does not exist"
                    )));
                }
            }
            sel.keyspaces.iter().cloned().collect()
        };
        let tables_sel = if sel.tables.is_empty() {
            None
        } else {
            if keyspaces.len() != 1 {
                return Err(WorkerError::invalid("tables need exactly one keyspace"));
            }
            let ks = keyspaces.iter().next().cloned().unwrap_or_default();
            for t in &sel.tables {
                if !tables.iter().any(|x| x.keyspace == ks && &x.table == t) {
                    return Err(WorkerError::NotFound(format!(
                        "table {ks}.{t} does not exist"
                    )));
                }
            }
            Some(sel.tables.iter().cloned().collect())
        };
        Ok(Resolved {
            keyspaces,
            tables: tables_sel,
        })
    }
}

/// Free bytes on the filesystem of `dir`.
pub(crate) fn free_bytes(dir: &std::path::Path) -> anyhow::Result<u64> {
    let st =
        nix::sys::statvfs::statvfs(dir).with_context(|| format!("statvfs {}", dir.display()))?;
    Ok(st.blocks_available() as u64 * st.fragment_size() as u64)
}
