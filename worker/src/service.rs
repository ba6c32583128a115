//! The worker's gRPC service: validates requests, converts proto ↔ domain types, and hands off
//! to [`LocalNode`], which owns the node's nodetool, CQL session, data directories and cache.
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ringvault_common::{Identifier, RunId, SnapshotTag};
use ringvault_proto::v1 as pb;
use tokio::sync::{OnceCell, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::WorkerOptions;
use crate::cql::{Cql, EXCLUDED_KEYSPACES};
use crate::hash_cache::HashCache;
use crate::metrics::{Op, WorkerMetrics};
use crate::nodetool::{Nodetool, SnapshotScope};
use crate::upload::{UploadEvent, Uploader};

/// Everything the worker knows and can do about its node.
pub struct LocalNode {
    nodetool: Nodetool,
    sstableloader: PathBuf,
    staging: PathBuf,
    cql_addr: String,
    cql: OnceCell<Cql>,
    pub data_dirs: Vec<PathBuf>,
    cache: HashCache,
    concurrency: usize,
    /// Leave the page cache as a read found it (`--gentle-reads`).
    gentle_reads: bool,
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
    state_dir: PathBuf,
    /// How the worker gets into the node (CQL login and TLS, JMX login, sstableloader's).
    access: crate::access::Access,
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
                let n = Nodetool::new(opts.nodetool.clone()).with_jmx(access.jmx.clone());
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
    pub async fn check_data_dirs(&self) -> Result<(), DataDirsError> {
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

    /// [`LocalNode::check_data_dirs`] as a gRPC refusal.
    pub async fn require_data_dirs(&self) -> Result<(), Status> {
        self.check_data_dirs().await.map_err(|e| match e {
            DataDirsError::Mismatch(m) => Status::failed_precondition(m.to_string()),
            DataDirsError::Unknown(e) => Status::unavailable(format!("{e:#}")),
        })
    }

    /// Opens a store named by a request, refused before any request leaves the machine unless
    /// it is inside this worker's `--allow-store` list.
    pub async fn open_store(
        &self,
        url: &str,
    ) -> Result<Arc<dyn ringvault_common::store::Store>, Status> {
        self.check_store(url)?;
        ringvault_common::store::open(url)
            .await
            .map_err(|e| Status::invalid_argument(e.to_string()))
    }

    /// PERMISSION_DENIED unless `url` is inside `--allow-store`; handlers call it first, before
    /// anything else happens.
    pub fn check_store(&self, url: &str) -> Result<(), Status> {
        self.allow_store.check(url).map_err(|e| {
            tracing::warn!(error = %e, "refused a store outside the allowlist");
            Status::permission_denied(e.to_string())
        })
    }

    /// The parts in flight a request asks for (0: this worker's own setting), refused over
    /// `--max-concurrency`.
    pub fn concurrency_for(&self, asked: u32) -> Result<usize, Status> {
        match asked {
            0 => Ok(self.concurrency),
            n if n > self.max_concurrency => Err(Status::invalid_argument(format!(
                "concurrency {n} exceeds this worker's --max-concurrency {}",
                self.max_concurrency
            ))),
            n => Ok(n as usize),
        }
    }

    /// Refuses a download of `bytes` that would leave less than the staging reserve free.
    pub fn check_staging_space(&self, bytes: u64) -> Result<(), Status> {
        let mut probe = self.staging.as_path();
        while !probe.exists() {
            match probe.parent() {
                Some(p) => probe = p,
                None => break,
            }
        }
        let free = free_bytes(probe).map_err(internal)?;
        if free < bytes.saturating_add(self.staging_reserve_bytes) {
            return Err(Status::resource_exhausted(format!(
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
    ) -> Result<(), crate::access::AccessError> {
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

    /// The snapshot directories of `tag` in every data directory.
    pub async fn snapshot_dirs(&self, tag: &SnapshotTag) -> Result<Vec<PathBuf>, Status> {
        let (dirs, tag) = (self.data_dirs.clone(), tag.clone());
        tokio::task::spawn_blocking(move || crate::snapshot_files::snapshot_dirs(&dirs, &tag))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(internal)
    }

    fn snapshot_record(&self, tag: &SnapshotTag) -> PathBuf {
        self.state_dir
            .join("snapshots")
            .join(format!("{}.tables", tag.as_str()))
    }

    /// Records the tables a snapshot covered (the selection at snapshot time), so an upload
    /// can tell a table whose snapshot went missing from one created after the snapshot.
    async fn record_snapshot_tables(
        &self,
        tag: &SnapshotTag,
        sel: &Resolved,
    ) -> Result<(), Status> {
        let cql = self.cql().await.map_err(internal)?;
        let lines: String = cql
            .tables()
            .await
            .map_err(internal)?
            .into_iter()
            .filter(|t| sel.keeps(&t.keyspace, &t.table))
            .map(|t| format!("{}\t{}\t{}\n", t.keyspace, t.table, t.id))
            .collect();
        let path = self.snapshot_record(tag);
        let write = async {
            if let Some(dir) = path.parent() {
                tokio::fs::create_dir_all(dir).await?;
            }
            tokio::fs::write(&path, lines).await
        };
        write
            .await
            .map_err(|e| Status::internal(format!("writing {}: {e}", path.display())))
    }

    /// Every selected table the snapshot covered (as recorded when it was taken; without a
    /// record, every selected table of the live schema) must have its snapshot directory for
    /// `tag` in one of the data directories; otherwise the node fails naming each table.
    pub async fn require_table_snapshots(
        &self,
        tag: &SnapshotTag,
        sel: &Resolved,
    ) -> Result<(), Status> {
        let tables: Vec<crate::cql::TableInfo> =
            match tokio::fs::read_to_string(self.snapshot_record(tag)).await {
                Ok(text) => text
                    .lines()
                    .filter_map(|l| {
                        let mut p = l.split('\t');
                        Some(crate::cql::TableInfo {
                            keyspace: p.next()?.to_string(),
                            table: p.next()?.to_string(),
                            id: p.next()?.to_string(),
                        })
                    })
                    .collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let cql = self.cql().await.map_err(internal)?;
                    cql.tables().await.map_err(internal)?
                }
                Err(e) => return Err(Status::internal(format!("reading snapshot record: {e}"))),
            };
        let tables: Vec<_> = tables
            .into_iter()
            .filter(|t| sel.keeps(&t.keyspace, &t.table))
            .collect();
        let (dirs, tag) = (self.data_dirs.clone(), tag.clone());
        let missing = tokio::task::spawn_blocking(move || {
            crate::snapshot_files::tables_without_snapshot(&dirs, &tag, &tables)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(internal)?;
        if !missing.is_empty() {
            return Err(Status::failed_precondition(format!(
                "the snapshot has no directory for table {} on this node (removed, or expired); the upload would leave it out",
                missing
                    .iter()
                    .map(|t| format!("{}.{}", t.keyspace, t.table))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(())
    }

    /// Checks a selection against the live schema.
    pub async fn resolve(&self, sel: &pb::Selection) -> Result<Resolved, Status> {
        let cql = self.cql().await.map_err(internal)?;
        let tables = cql.tables().await.map_err(internal)?;
        for k in &sel.keyspaces {
            Identifier::parse("keyspace", k)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
        }
        for t in &sel.tables {
            Identifier::parse("table", t).map_err(|e| Status::invalid_argument(e.to_string()))?;
        }
        let existing: BTreeSet<String> = tables.iter().map(|t| t.keyspace.clone()).collect();
        let keyspaces: BTreeSet<String> = if sel.keyspaces.is_empty() {
            if !sel.tables.is_empty() {
                return Err(Status::invalid_argument("tables need exactly one keyspace"));
            }
            existing
                .iter()
                .filter(|k| !EXCLUDED_KEYSPACES.contains(&k.as_str()))
                .cloned()
                .collect()
        } else {
            for k in &sel.keyspaces {
                if EXCLUDED_KEYSPACES.contains(&k.as_str()) {
                    return Err(Status::invalid_argument(format!(
                        "keyspace {k} holds no data of its own and is never backed up"
                    )));
                }
                if !existing.contains(k) {
                    return Err(Status::not_found(format!("keyspace {k} does not exist")));
                }
            }
            sel.keyspaces.iter().cloned().collect()
        };
        let tables_sel = if sel.tables.is_empty() {
            None
        } else {
            if keyspaces.len() != 1 {
                return Err(Status::invalid_argument("tables need exactly one keyspace"));
            }
            let ks = keyspaces.iter().next().cloned().unwrap_or_default();
            for t in &sel.tables {
                if !tables.iter().any(|x| x.keyspace == ks && &x.table == t) {
                    return Err(Status::not_found(format!("table {ks}.{t} does not exist")));
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

fn free_bytes(dir: &std::path::Path) -> anyhow::Result<u64> {
    let st =
        nix::sys::statvfs::statvfs(dir).with_context(|| format!("statvfs {}", dir.display()))?;
    Ok(st.blocks_available() as u64 * st.fragment_size() as u64)
}

fn internal(e: anyhow::Error) -> Status {
    Status::internal(format!("{e:#}"))
}

fn parse_tag(tag: &str) -> Result<SnapshotTag, Status> {
    SnapshotTag::parse(tag).map_err(|e| Status::invalid_argument(e.to_string()))
}

/// The tonic `Worker` service.
pub struct WorkerService {
    node: Arc<LocalNode>,
}

impl WorkerService {
    /// Serves `node`.
    pub fn new(node: Arc<LocalNode>) -> Self {
        Self { node }
    }
}

type EventStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::UploadEvent, Status>> + Send>>;

#[tonic::async_trait]
impl pb::worker_server::Worker for WorkerService {
    async fn get_node_info(
        &self,
        _: Request<pb::GetNodeInfoRequest>,
    ) -> Result<Response<pb::NodeInfo>, Status> {
        self.node.require_data_dirs().await?;
        self.node.info().await.map(Response::new).map_err(internal)
    }

    async fn get_ring(
        &self,
        _: Request<pb::GetRingRequest>,
    ) -> Result<Response<pb::GetRingResponse>, Status> {
        let cql = self.node.cql().await.map_err(internal)?;
        let nodes = crate::topology::ring(cql).await.map_err(internal)?;
        Ok(Response::new(pb::GetRingResponse {
            nodes: nodes
                .into_iter()
                .map(|n| pb::RingNode {
                    host_id: n.host_id,
                    address: n.address,
                    datacenter: n.datacenter,
                    rack: n.rack,
                })
                .collect(),
        }))
    }

    async fn list_tables(
        &self,
        _: Request<pb::ListTablesRequest>,
    ) -> Result<Response<pb::ListTablesResponse>, Status> {
        let cql = self.node.cql().await.map_err(internal)?;
        let tables = cql.tables().await.map_err(internal)?;
        Ok(Response::new(pb::ListTablesResponse {
            tables: tables
                .into_iter()
                .map(|t| pb::TableRef {
                    keyspace: t.keyspace,
                    table: t.table,
                    table_id: t.id,
                })
                .collect(),
        }))
    }

    async fn check_storage(
        &self,
        req: Request<pb::CheckStorageRequest>,
    ) -> Result<Response<pb::CheckStorageResponse>, Status> {
        let url = req.into_inner().store_url;
        let store = self.node.open_store(&url).await?;
        store.check().await.map_err(|e| {
            Status::failed_precondition(format!("store {} is not usable: {e}", store.describe()))
        })?;
        Ok(Response::new(pb::CheckStorageResponse {}))
    }

    async fn snapshot(
        &self,
        req: Request<pb::SnapshotRequest>,
    ) -> Result<Response<pb::SnapshotResponse>, Status> {
        let req = req.into_inner();
        let tag = parse_tag(&req.tag)?;
        self.node.require_data_dirs().await?;
        let resolved = self
            .node
            .resolve(&req.selection.unwrap_or_default())
            .await?;
        for d in &self.node.data_dirs {
            let free = free_bytes(d).map_err(internal)?;
            if free < req.min_free_bytes {
                return Err(Status::failed_precondition(format!(
                    "data directory {} has {free} bytes free, below the floor of {} bytes",
                    d.display(),
                    req.min_free_bytes
                )));
            }
        }
        let scope = match &resolved.tables {
            Some(tables) => SnapshotScope::Tables(
                Identifier::parse(
                    "keyspace",
                    resolved
                        .keyspaces
                        .iter()
                        .next()
                        .map(String::as_str)
                        .unwrap_or_default(),
                )
                .map_err(|e| Status::invalid_argument(e.to_string()))?,
                tables
                    .iter()
                    .map(|t| Identifier::parse("table", t))
                    .collect::<Result<_, _>>()
                    .map_err(|e| Status::invalid_argument(e.to_string()))?,
            ),
            None => SnapshotScope::Keyspaces(
                resolved
                    .keyspaces
                    .iter()
                    .map(|k| Identifier::parse("keyspace", k))
                    .collect::<Result<_, _>>()
                    .map_err(|e| Status::invalid_argument(e.to_string()))?,
            ),
        };
        if let SnapshotScope::Keyspaces(k) = &scope
            && k.is_empty()
        {
            return Err(Status::failed_precondition("no keyspace to back up"));
        }
        // Checked on disk (no nodetool JVM start): a tag in any data directory is taken,
        // unless the same run re-issues its own snapshot after a restart.
        if !self.node.snapshot_dirs(&tag).await?.is_empty() {
            if !req.replace_existing {
                return Err(Status::already_exists(format!(
                    "snapshot {tag} already exists"
                )));
            }
            tracing::warn!(%tag, "re-issued snapshot: clearing the earlier attempt first");
            self.node
                .nodetool
                .clear_snapshot(&tag)
                .await
                .map_err(|e| Status::internal(e.to_string()))?;
        }
        // The tables as they are before the snapshot: a table created meanwhile is not
        // expected in it.
        self.node.record_snapshot_tables(&tag, &resolved).await?;
        let ttl = (req.ttl_seconds > 0).then(|| Duration::from_secs(req.ttl_seconds));
        self.node
            .nodetool
            .snapshot(&tag, &scope, ttl)
            .await
            .map_err(|e| {
                self.node.metrics.error(Op::Snapshot);
                let msg = e.to_string();
                if msg.contains("already exists") {
                    Status::already_exists(msg)
                } else {
                    Status::internal(msg)
                }
            })?;
        self.node.metrics.snapshot_taken();
        tracing::info!(%tag, "snapshot taken");
        Ok(Response::new(pb::SnapshotResponse {
            taken_at_unix_ms: now_ms(),
        }))
    }

    async fn find_snapshot(
        &self,
        req: Request<pb::FindSnapshotRequest>,
    ) -> Result<Response<pb::FindSnapshotResponse>, Status> {
        let tag = parse_tag(&req.into_inner().tag)?;
        let data_dirs = self.node.data_dirs.clone();
        let dirs = tokio::task::spawn_blocking(move || {
            crate::snapshot_files::snapshot_dirs(&data_dirs, &tag)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(internal)?;
        Ok(Response::new(pb::FindSnapshotResponse {
            dirs: dirs.iter().map(|d| d.display().to_string()).collect(),
        }))
    }

    async fn clear_snapshot(
        &self,
        req: Request<pb::ClearSnapshotRequest>,
    ) -> Result<Response<pb::ClearSnapshotResponse>, Status> {
        let tag = parse_tag(&req.into_inner().tag)?;
        let existed = !self.node.snapshot_dirs(&tag).await?.is_empty();
        self.node.nodetool.clear_snapshot(&tag).await.map_err(|e| {
            self.node.metrics.error(Op::ClearSnapshot);
            Status::internal(e.to_string())
        })?;
        if existed {
            self.node.metrics.snapshot_cleared();
        }
        match tokio::fs::remove_file(self.node.snapshot_record(&tag)).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(%tag, error = %e, "removing the snapshot's table record"),
        }
        tracing::info!(%tag, existed, "snapshot cleared");
        Ok(Response::new(pb::ClearSnapshotResponse { existed }))
    }

    async fn describe_schema(
        &self,
        _: Request<pb::DescribeSchemaRequest>,
    ) -> Result<Response<pb::DescribeSchemaResponse>, Status> {
        let cql = self.node.cql().await.map_err(internal)?;
        let rows = cql.describe_schema().await.map_err(internal)?;
        Ok(Response::new(pb::DescribeSchemaResponse {
            schema_cql: crate::cql::schema_script(&rows),
            rows: rows
                .into_iter()
                .map(|r| pb::SchemaRow {
                    keyspace: r.keyspace,
                    kind: r.kind,
                    name: r.name,
                    statement: r.statement,
                })
                .collect(),
        }))
    }

    async fn apply_schema(
        &self,
        req: Request<pb::ApplySchemaRequest>,
    ) -> Result<Response<pb::ApplySchemaResponse>, Status> {
        let req = req.into_inner();
        let objects = crate::schema::check(&req.objects).inspect_err(|e| {
            tracing::warn!(code = ?e.code(), error = %e.message(), "schema request refused");
        })?;
        let cql = self.node.cql().await.map_err(internal)?;
        // Functions, aggregates and views need the node to allow them: refuse before anything
        // runs, naming the first object that needs a disabled setting.
        let mut checked = BTreeSet::new();
        for o in &objects {
            let Some(setting) = crate::schema::needed_setting(o.kind) else {
                continue;
            };
            if !checked.insert(setting) {
                continue;
            }
            if cql.setting(setting).await.map_err(internal)?.as_deref() == Some("false") {
                return Err(Status::failed_precondition(format!(
                    "{} needs {setting}: true in cassandra.yaml on this cluster; nothing was created",
                    o.label()
                )));
            }
        }
        if req.dry_run {
            return Ok(Response::new(pb::ApplySchemaResponse { applied: 0 }));
        }
        let applied = cql
            .apply_schema(&objects)
            .await
            .map_err(|e| Status::failed_precondition(format!("{e:#}")))?;
        tracing::info!(objects = objects.len(), applied, "schema applied");
        Ok(Response::new(pb::ApplySchemaResponse { applied }))
    }

    type DownloadStream =
        Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::DownloadEvent, Status>> + Send>>;

    async fn download(
        &self,
        req: Request<tonic::Streaming<pb::DownloadRequest>>,
    ) -> Result<Response<Self::DownloadStream>, Status> {
        let (req, files) = receive_download(req.into_inner()).await?;
        self.node.check_store(&req.store_url)?;
        let concurrency = self.node.concurrency_for(req.concurrency)?;
        let run = RunId::parse(&req.backup_run_id)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let attempt = RunId::parse(&req.attempt_id)
            .map_err(|e| Status::invalid_argument(format!("attempt_id: {e}")))?;
        let files = files
            .into_iter()
            .map(staged_file)
            .collect::<Result<Vec<_>, _>>()?;
        // Two entries for one path would be fetched into one file: refused before anything
        // is written.
        crate::restore::refuse_duplicates(&files).map_err(Status::invalid_argument)?;
        self.node
            .check_staging_space(files.iter().map(|f| f.size).sum())?;
        let store = self.node.open_store(&req.store_url).await?;
        let (ev_tx, mut ev_rx) = mpsc::channel(256);
        let (out_tx, out_rx) = mpsc::channel::<Result<pb::DownloadEvent, Status>>(256);
        let job = tokio::spawn(crate::restore::download(
            store,
            self.node.staging.clone(),
            run,
            attempt,
            files,
            concurrency,
            crate::throttle::Throttle::new(req.bandwidth_bytes_per_sec),
            ev_tx,
        ));
        let metrics = Arc::clone(&self.node.metrics);
        tokio::spawn(async move {
            use crate::restore::DownloadEvent as E;
            use pb::download_event::Event;
            while let Some(ev) = ev_rx.recv().await {
                metrics.download_event(&ev);
                let event = match ev {
                    E::Plan {
                        files,
                        bytes,
                        present,
                    } => Event::Plan(pb::DownloadPlan {
                        total_files: files,
                        total_bytes: bytes,
                        present_files: present,
                    }),
                    E::Progress { bytes } => Event::Progress(pb::DownloadProgress { bytes }),
                    E::FileDone {
                        file,
                        already_staged,
                    } => Event::File(pb::DownloadFileDone {
                        file: Some(pb::RestoreFile {
                            source_host_id: file.source_host.to_string(),
                            keyspace: file.keyspace.to_string(),
                            table: file.table.to_string(),
                            name: file.name.to_string(),
                            size: file.size,
                            hash: file.hash.to_string(),
                        }),
                        already_staged,
                    }),
                };
                if out_tx
                    .send(Ok(pb::DownloadEvent { event: Some(event) }))
                    .await
                    .is_err()
                {
                    job.abort();
                    return;
                }
            }
            let end = match job.await {
                Ok(Ok(())) => return,
                Ok(Err(e)) => Status::failed_precondition(format!("{e:#}")),
                Err(e) => Status::internal(format!("download task: {e}")),
            };
            metrics.error(Op::Download);
            tracing::error!(error = %end.message(), "download failed");
            let _ = out_tx.send(Err(end)).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out_rx))))
    }

    async fn import(
        &self,
        req: Request<pb::ImportRequest>,
    ) -> Result<Response<pb::ImportResponse>, Status> {
        let (run, attempt, host, ks, table) = staged_table(req.into_inner().table)?;
        let dir = crate::restore::attempt_table_dir(
            &self.node.staging,
            &run,
            &attempt,
            &host,
            &ks,
            &table,
        );
        if !dir.is_dir() {
            return Err(Status::failed_precondition(format!(
                "nothing staged for {ks}.{table} in {}",
                dir.display()
            )));
        }
        let output = self
            .node
            .nodetool
            .import(&ks, &table, &dir)
            .await
            .map_err(|e| {
                self.node.metrics.error(Op::Import);
                Status::internal(e.to_string())
            })?;
        tracing::info!(%ks, %table, "imported");
        Ok(Response::new(pb::ImportResponse { output }))
    }

    async fn load(
        &self,
        req: Request<pb::LoadRequest>,
    ) -> Result<Response<pb::LoadResponse>, Status> {
        let req = req.into_inner();
        let (run, attempt, host, ks, table) = staged_table(req.table)?;
        if req.hosts.is_empty()
            || req
                .hosts
                .iter()
                .any(|h| h.parse::<std::net::IpAddr>().is_err())
        {
            return Err(Status::invalid_argument("hosts must be IP addresses"));
        }
        let dir = crate::restore::attempt_table_dir(
            &self.node.staging,
            &run,
            &attempt,
            &host,
            &ks,
            &table,
        );
        if !dir.is_dir() {
            return Err(Status::failed_precondition(format!(
                "nothing staged for {ks}.{table} in {}",
                dir.display()
            )));
        }
        // A test restore loads into its scratch keyspace: the verified files are linked under
        // `<scratch>/<table>/`, the path sstableloader takes the keyspace from.
        let dir = if req.target_keyspace.is_empty() {
            dir
        } else {
            crate::scratch::check_scratch(&req.target_keyspace)
                .map_err(Status::invalid_argument)?;
            let to = crate::scratch::retarget_dir(
                &self.node.staging,
                &run,
                &attempt,
                &host,
                &req.target_keyspace,
                &table,
            );
            crate::scratch::link_all(&dir, &to)
                .await
                .map_err(internal)?;
            to
        };
        // Credentials reach sstableloader through its auth provider's environment and a
        // config file, never its argv.
        let (mut args, env) = self.node.access.loader_args();
        args.extend([
            "-d".to_string(),
            req.hosts.join(","),
            "--no-progress".to_string(),
            dir.display().to_string(),
        ]);
        let output = crate::nodetool::run_tool_env(&self.node.sstableloader, &args, &env)
            .await
            .map_err(|e| {
                self.node.metrics.error(Op::Load);
                Status::internal(e.to_string())
            })?;
        tracing::info!(%ks, %table, "loaded with sstableloader");
        Ok(Response::new(pb::LoadResponse { output }))
    }

    async fn check_access(
        &self,
        req: Request<pb::CheckAccessRequest>,
    ) -> Result<Response<pb::CheckAccessResponse>, Status> {
        let writes = req.into_inner().writes;
        self.node
            .check_access(&writes)
            .await
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        Ok(Response::new(pb::CheckAccessResponse {}))
    }

    async fn clean_staging(
        &self,
        req: Request<pb::CleanStagingRequest>,
    ) -> Result<Response<pb::CleanStagingResponse>, Status> {
        let run = RunId::parse(&req.into_inner().backup_run_id)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let dir = self.node.staging.join(run.as_str());
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Status::internal(format!("removing {}: {e}", dir.display()))),
        }
        Ok(Response::new(pb::CleanStagingResponse {}))
    }

    async fn drop_scratch_keyspace(
        &self,
        req: Request<pb::DropScratchKeyspaceRequest>,
    ) -> Result<Response<pb::DropScratchKeyspaceResponse>, Status> {
        let ks = req.into_inner().keyspace;
        crate::scratch::check_scratch(&ks).map_err(Status::invalid_argument)?;
        let cql = self.node.cql().await.map_err(internal)?;
        let existed = cql.drop_scratch_keyspace(&ks).await.map_err(internal)?;
        tracing::info!(keyspace = %ks, existed, "scratch keyspace dropped");
        Ok(Response::new(pb::DropScratchKeyspaceResponse { existed }))
    }

    async fn count_scratch_table(
        &self,
        req: Request<pb::CountScratchTableRequest>,
    ) -> Result<Response<pb::CountScratchTableResponse>, Status> {
        let req = req.into_inner();
        crate::scratch::check_scratch(&req.keyspace).map_err(Status::invalid_argument)?;
        Identifier::parse("table", &req.table)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let cql = self.node.cql().await.map_err(internal)?;
        let c = cql
            .count_scratch_table(&req.keyspace, &req.table, req.sample)
            .await
            .map_err(|e| Status::failed_precondition(format!("{e:#}")))?;
        Ok(Response::new(pb::CountScratchTableResponse {
            partitions: c.partitions,
            rows: c.rows,
            sampled_partitions: c.sampled_partitions,
            sampled_rows: c.sampled_rows,
        }))
    }

    type UploadStream = EventStream;

    async fn upload(
        &self,
        req: Request<pb::UploadRequest>,
    ) -> Result<Response<Self::UploadStream>, Status> {
        let req = req.into_inner();
        self.node.check_store(&req.store_url)?;
        let concurrency = self.node.concurrency_for(req.concurrency)?;
        let tag = parse_tag(&req.tag)?;
        let run_id =
            RunId::parse(&req.run_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let resolved = self
            .node
            .resolve(&req.selection.unwrap_or_default())
            .await?;
        self.node.require_data_dirs().await?;
        // A snapshot that is gone (cleared, or expired by its TTL) must never upload as empty,
        // and neither may one selected table's part of it.
        if self.node.snapshot_dirs(&tag).await?.is_empty() {
            return Err(Status::failed_precondition(format!(
                "snapshot {tag} does not exist on this node (cleared, or expired by its TTL)"
            )));
        }
        self.node.require_table_snapshots(&tag, &resolved).await?;
        let store = self.node.open_store(&req.store_url).await?;
        let data_dirs = self.node.data_dirs.clone();
        let files = tokio::task::spawn_blocking(move || {
            crate::snapshot_files::list(&data_dirs, &tag, &|k, t| resolved.keeps(k, t))
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(internal)?;
        let uploader = Arc::new(Uploader {
            run_id,
            store,
            cache: self.node.cache.clone(),
            concurrency,
            throttle: crate::throttle::Throttle::new(req.bandwidth_bytes_per_sec),
            gentle: self.node.gentle_reads,
        });
        let (ev_tx, mut ev_rx) = mpsc::channel::<UploadEvent>(256);
        let (out_tx, out_rx) = mpsc::channel::<Result<pb::UploadEvent, Status>>(256);
        let metrics = Arc::clone(&self.node.metrics);
        let in_progress = metrics.upload_started();
        let job = tokio::spawn(uploader.run(files, ev_tx));
        tokio::spawn(async move {
            let _in_progress = in_progress;
            while let Some(ev) = ev_rx.recv().await {
                metrics.upload_event(&ev);
                if out_tx.send(Ok(to_proto(ev))).await.is_err() {
                    job.abort();
                    return;
                }
            }
            let end = match job.await {
                Ok(Ok(())) => return,
                Ok(Err(e)) => Status::internal(format!("{e:#}")),
                Err(e) => Status::internal(format!("upload task: {e}")),
            };
            metrics.error(Op::Upload);
            tracing::error!(error = %end.message(), "upload failed");
            let _ = out_tx.send(Err(end)).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out_rx))))
    }
}

/// (backup run, attempt, source host, keyspace, table) of a staged table, validated.
type StagedKey = (
    RunId,
    RunId,
    ringvault_common::manifest::HostId,
    Identifier,
    Identifier,
);

fn staged_table(t: Option<pb::StagedTable>) -> Result<StagedKey, Status> {
    let t = t.ok_or_else(|| Status::invalid_argument("table is required"))?;
    Ok((
        RunId::parse(&t.backup_run_id).map_err(|e| Status::invalid_argument(e.to_string()))?,
        RunId::parse(&t.attempt_id)
            .map_err(|e| Status::invalid_argument(format!("attempt_id: {e}")))?,
        ringvault_common::manifest::HostId::parse(&t.source_host_id)
            .map_err(|e| Status::invalid_argument(e.to_string()))?,
        Identifier::parse("keyspace", &t.keyspace)
            .map_err(|e| Status::invalid_argument(e.to_string()))?,
        Identifier::parse("table", &t.table)
            .map_err(|e| Status::invalid_argument(e.to_string()))?,
    ))
}

/// Most files one Download may list.
const MAX_DOWNLOAD_FILES: usize = 10_000_000;

/// Reads a Download's chunks: the header from the first message (later ones may repeat it or
/// leave it empty), the files from all.
async fn receive_download(
    mut stream: tonic::Streaming<pb::DownloadRequest>,
) -> Result<(pb::DownloadRequest, Vec<pb::RestoreFile>), Status> {
    let mut head = stream
        .message()
        .await?
        .ok_or_else(|| Status::invalid_argument("empty Download request stream"))?;
    let mut files = std::mem::take(&mut head.files);
    while let Some(mut chunk) = stream.message().await? {
        let same = |a: &str, b: &str| a.is_empty() || a == b;
        if !same(&chunk.backup_run_id, &head.backup_run_id)
            || !same(&chunk.store_url, &head.store_url)
            || !same(&chunk.attempt_id, &head.attempt_id)
        {
            return Err(Status::invalid_argument(
                "a later Download chunk names another run, store or attempt",
            ));
        }
        files.append(&mut chunk.files);
        if files.len() > MAX_DOWNLOAD_FILES {
            return Err(Status::invalid_argument(format!(
                "more than {MAX_DOWNLOAD_FILES} files in one Download"
            )));
        }
    }
    Ok((head, files))
}

fn staged_file(f: pb::RestoreFile) -> Result<crate::restore::StagedFile, Status> {
    let bad =
        |e: &dyn std::fmt::Display| Status::invalid_argument(format!("file {:?}: {e}", f.name));
    Ok(crate::restore::StagedFile {
        source_host: ringvault_common::manifest::HostId::parse(&f.source_host_id)
            .map_err(|e| bad(&e))?,
        keyspace: Identifier::parse("keyspace", &f.keyspace).map_err(|e| bad(&e))?,
        table: Identifier::parse("table", &f.table).map_err(|e| bad(&e))?,
        name: ringvault_common::RelativeName::parse(&f.name).map_err(|e| bad(&e))?,
        size: f.size,
        hash: ringvault_common::hash::ContentHash::parse(&f.hash).map_err(|e| bad(&e))?,
    })
}

fn to_proto(ev: UploadEvent) -> pb::UploadEvent {
    use pb::upload_event::Event;
    let event = match ev {
        UploadEvent::Plan { files, bytes } => Event::Plan(pb::UploadPlan {
            total_files: files,
            total_bytes: bytes,
        }),
        UploadEvent::Progress { bytes } => {
            Event::Progress(pb::UploadProgress { bytes_read: bytes })
        }
        UploadEvent::FileDone {
            entry,
            mtime_ns,
            uploaded,
            hash_cached,
        } => Event::File(pb::FileDone {
            file: Some(pb::FileEntry {
                keyspace: entry.keyspace.to_string(),
                table: entry.table.to_string(),
                table_id: entry.table_id,
                name: entry.name.to_string(),
                size: entry.size,
                hash: entry.hash.to_string(),
                mtime_unix_ms: (mtime_ns / 1_000_000) as i64,
                data_dir_index: entry.data_dir_index,
                sstable: entry.sstable.map(|s| pb::SstableStats {
                    partitions: s.partitions,
                    rows: s.rows,
                    min_timestamp: s.min_timestamp,
                    max_timestamp: s.max_timestamp,
                    has_tombstones: s.has_tombstones,
                }),
            }),
            uploaded,
            hash_cached,
        }),
    };
    pb::UploadEvent { event: Some(event) }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
