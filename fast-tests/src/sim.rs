//! A worker simulator for coordinator-scale benchmarks (`rv-sim-workers`, `scripts/bench-scale`):
//! one process serving N real `Worker` gRPC endpoints on loopback ports, each registering and
//! heartbeating with the real coordinator like a real worker, each holding a synthetic snapshot
//! of F files. File sizes follow an SSTable component mix (Data.db large; Index, Summary,
//! Filter, Statistics, CompressionInfo, Digest, TOC small); contents are generated from a seed
//! when a file is uploaded and never kept on disk or in memory (only each file's hash is
//! remembered once computed). Uploads write real content-addressed blobs into the store the
//! coordinator names (HEAD first, as the real worker does). It answers every RPC the coordinator
//! uses for backup, verify, restore planning and purge; restore data RPCs (Download, Import,
//! Load) are refused as unimplemented.
use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use ringvault_common::hash::ContentHash;
use ringvault_common::layout;
use ringvault_proto::v1 as pb;
use ringvault_proto::v1::registry_client::RegistryClient;
use ringvault_proto::v1::worker_server::{Worker, WorkerServer};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status};

/// The SSTable components of one generation (big format) and how large each is relative to
/// its Data.db; each SSTable contributes one file per component.
const COMPONENTS: &[&str] = &[
    "Data.db",
    "Index.db",
    "Summary.db",
    "Filter.db",
    "Statistics.db",
    "CompressionInfo.db",
    "Digest.crc32",
    "TOC.txt",
];

/// Whether nodes share their files' contents (one set of F blobs in the store, every node
/// after the first finds its blobs present) or each node has its own (N × F blobs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Content {
    Shared,
    Distinct,
}

/// What every simulated node holds.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub cluster: String,
    pub keyspace: String,
    pub tables: usize,
    pub files_per_node: usize,
    /// Largest Data.db in bytes (sizes are log-uniform between `data_min` and this).
    pub data_max: u64,
    pub data_min: u64,
    pub content: Content,
    pub seed: u64,
}

/// One file of a simulated snapshot: where it is and how to regenerate its bytes.
#[derive(Debug, Clone)]
struct SimFile {
    table: usize,
    name: String,
    size: u64,
    /// Seed of the generated content (equal seeds: equal bytes).
    content_seed: u64,
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The bytes of a file: a deterministic pseudo-random stream (incompressible, like compressed
/// SSTable chunks).
fn generate(seed: u64, size: u64) -> Bytes {
    let mut out = Vec::with_capacity(size as usize);
    let mut s = seed;
    while (out.len() as u64) < size {
        s = splitmix(s);
        out.extend_from_slice(&s.to_le_bytes());
    }
    out.truncate(size as usize);
    Bytes::from(out)
}

/// The size of component `c` of an SSTable whose Data.db draws `r` (0..1).
fn component_size(cfg: &SimConfig, c: &str, r: f64) -> u64 {
    let (lo, hi) = (cfg.data_min.max(1) as f64, cfg.data_max.max(1) as f64);
    let data = (lo * (hi / lo).powf(r)).round() as u64;
    match c {
        "Data.db" => data,
        "Index.db" => (data / 12).max(16),
        "Summary.db" => (data / 400).clamp(56, 64 * 1024),
        "Filter.db" => (data / 90).max(16),
        "Statistics.db" => 4_700 + data % 5_000,
        "CompressionInfo.db" => (data / 2_000).max(43),
        "Digest.crc32" => 10,
        _ => 92,
    }
}

/// The snapshot of node `node` (0-based).
fn files_of(cfg: &SimConfig, node: usize) -> Vec<SimFile> {
    let mut out = Vec::with_capacity(cfg.files_per_node);
    let mut i = 0usize;
    while out.len() < cfg.files_per_node {
        let generation = i + 1;
        let table = i % cfg.tables.max(1);
        let r = (splitmix(cfg.seed ^ (i as u64) << 1) >> 11) as f64 / (1u64 << 53) as f64;
        for (ci, c) in COMPONENTS.iter().enumerate() {
            if out.len() == cfg.files_per_node {
                break;
            }
            let file_key = (i as u64) << 4 | ci as u64;
            let content_seed = match cfg.content {
                Content::Shared => splitmix(cfg.seed ^ file_key),
                Content::Distinct => splitmix(cfg.seed ^ file_key ^ ((node as u64 + 1) << 40)),
            };
            out.push(SimFile {
                table,
                name: format!("nb-{generation}-big-{c}"),
                size: component_size(cfg, c, r),
                content_seed,
            });
        }
        i += 1;
    }
    out
}

fn table_name(t: usize) -> String {
    format!("t{t:03}")
}

fn table_id(ks: &str, t: usize) -> String {
    ContentHash::of(format!("{ks}.{}", table_name(t)).as_bytes()).as_str()[..32].to_string()
}

/// 32 hex digits as a UUID (8-4-4-4-12), as CQL's `WITH ID =` takes them.
fn hyphenated(id: &str) -> String {
    format!(
        "{}-{}-{}-{}-{}",
        &id[..8],
        &id[8..12],
        &id[12..16],
        &id[16..20],
        &id[20..32]
    )
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Counters of the whole simulator.
#[derive(Debug, Default)]
pub struct SimStats {
    pub file_events: std::sync::atomic::AtomicU64,
    pub blobs_put: std::sync::atomic::AtomicU64,
    pub bytes_put: std::sync::atomic::AtomicU64,
}

/// Per (store URL, content seed): set once that blob is in that store, to whether this
/// simulated node put it.
type StoredBlobs = std::collections::HashMap<(String, u64), Arc<tokio::sync::OnceCell<bool>>>;

struct Shared {
    cfg: SimConfig,
    ring: Vec<pb::RingNode>,
    tables: Vec<pb::TableRef>,
    schema: pb::DescribeSchemaResponse,
    /// Content hashes by content seed (shared mode: one set for every node).
    /// One cell per seed: nodes reaching the same content at once hash it once.
    hashes: Mutex<std::collections::HashMap<u64, Arc<OnceLock<ContentHash>>>>,
    /// Per store and content seed, whether its blob was put by this node (set once it is in
    /// that store).
    stored: Mutex<StoredBlobs>,
    stats: SimStats,
}

/// One simulated node.
#[derive(Clone)]
pub struct SimWorker {
    shared: Arc<Shared>,
    index: usize,
    info: pb::NodeInfo,
    files: Arc<OnceLock<Vec<SimFile>>>,
    snapshots: Arc<Mutex<BTreeSet<String>>>,
}

/// The running simulator.
pub struct Simulator {
    workers: Vec<SimWorker>,
    shared: Arc<Shared>,
}

fn node_address(i: usize) -> String {
    let n = i + 1;
    format!("127.1.{}.{}", n / 250, n % 250 + 1)
}

impl Simulator {
    /// Starts `nodes` workers serving on free loopback ports, each registering with the
    /// coordinator at `coordinator` (plain text on loopback).
    pub async fn start(cfg: SimConfig, nodes: usize, coordinator: &str) -> anyhow::Result<Self> {
        anyhow::ensure!(nodes > 0, "at least one worker");
        anyhow::ensure!(cfg.tables > 0, "at least one table");
        anyhow::ensure!(
            cfg.data_min <= cfg.data_max,
            "--data-min must not exceed --data-max"
        );
        let host_ids: Vec<String> = (0..nodes)
            .map(|i| {
                let h = splitmix(cfg.seed ^ 0xA5A5 ^ i as u64);
                let l = splitmix(h);
                uuid::Uuid::from_u64_pair(h, l).hyphenated().to_string()
            })
            .collect();
        let ring: Vec<pb::RingNode> = (0..nodes)
            .map(|i| pb::RingNode {
                host_id: host_ids[i].clone(),
                address: node_address(i),
                datacenter: "dc1".into(),
                rack: "rack1".into(),
            })
            .collect();
        let ks = cfg.keyspace.clone();
        let tables: Vec<pb::TableRef> = (0..cfg.tables)
            .map(|t| pb::TableRef {
                keyspace: ks.clone(),
                table: table_name(t),
                table_id: table_id(&ks, t),
            })
            .collect();
        let mut rows = vec![pb::SchemaRow {
            keyspace: ks.clone(),
            kind: "keyspace".into(),
            name: ks.clone(),
            statement: format!(
                "CREATE KEYSPACE {ks} WITH replication = {{'class': 'NetworkTopologyStrategy', 'dc1': '3'}}  AND durable_writes = true;"
            ),
        }];
        for t in &tables {
            rows.push(pb::SchemaRow {
                keyspace: ks.clone(),
                kind: "table".into(),
                name: t.table.clone(),
                statement: format!(
                    "CREATE TABLE {ks}.{} (id int PRIMARY KEY, v blob) WITH ID = {};",
                    t.table,
                    hyphenated(&t.table_id)
                ),
            });
        }
        let schema_cql = rows
            .iter()
            .map(|r| r.statement.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        let shared = Arc::new(Shared {
            cfg,
            ring,
            tables,
            schema: pb::DescribeSchemaResponse { schema_cql, rows },
            hashes: Mutex::default(),
            stored: Mutex::default(),
            stats: SimStats::default(),
        });
        let step = (u64::MAX / nodes as u64) as i128;
        let mut workers = Vec::with_capacity(nodes);
        for (i, host_id) in host_ids.into_iter().enumerate() {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let port = listener.local_addr()?.port();
            let token = (i64::MIN as i128 + step * i as i128) as i64;
            let info = pb::NodeInfo {
                cluster_name: shared.cfg.cluster.clone(),
                host_id,
                address: node_address(i),
                datacenter: "dc1".into(),
                rack: "rack1".into(),
                tokens: vec![token.to_string()],
                data_dirs: vec![format!("/sim/node{}/data", i + 1)],
                cassandra_version: "5.0.8".into(),
                worker_address: format!("http://127.0.0.1:{port}"),
                free_bytes: vec![1 << 50],
                partitioner: "org.apache.cassandra.dht.Murmur3Partitioner".into(),
                instance_id: uuid::Uuid::new_v4().to_string(),
            };
            let w = SimWorker {
                shared: Arc::clone(&shared),
                index: i,
                info,
                files: Arc::default(),
                snapshots: Arc::default(),
            };
            let service = WorkerServer::new(w.clone())
                .max_decoding_message_size(ringvault_common::service::MAX_GRPC_MESSAGE)
                .max_encoding_message_size(ringvault_common::service::MAX_GRPC_MESSAGE);
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(service)
                    .serve_with_incoming(TcpListenerStream::new(listener)),
            );
            tokio::spawn(register_forever(w.clone(), coordinator.to_string()));
            workers.push(w);
        }
        Ok(Self { workers, shared })
    }

    /// The simulated nodes.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Whether there is no node (never, once started).
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// Counters so far.
    pub fn stats(&self) -> &SimStats {
        &self.shared.stats
    }
}

/// Registers with the coordinator and heartbeats, starting over on any failure, like the real
/// worker's registration loop.
async fn register_forever(w: SimWorker, coordinator: String) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let session = async {
            let channel = tonic::transport::Endpoint::from_shared(coordinator.clone())?
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(30))
                .connect()
                .await?;
            let mut client = RegistryClient::new(channel)
                .max_decoding_message_size(ringvault_common::service::MAX_GRPC_MESSAGE)
                .max_encoding_message_size(ringvault_common::service::MAX_GRPC_MESSAGE);
            let resp = client
                .register(pb::RegisterRequest {
                    node: Some(w.info.clone()),
                })
                .await?
                .into_inner();
            let every = Duration::from_millis(resp.heartbeat_interval_ms.clamp(200, 60_000));
            loop {
                tokio::time::sleep(every).await;
                let known = client
                    .heartbeat(pb::HeartbeatRequest {
                        host_id: w.info.host_id.clone(),
                        cluster_name: w.info.cluster_name.clone(),
                    })
                    .await?
                    .into_inner()
                    .known;
                if !known {
                    return anyhow::Ok(());
                }
            }
        };
        match session.await {
            Ok(()) => backoff = Duration::from_millis(200),
            Err(_) => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

impl SimWorker {
    fn files(&self) -> &[SimFile] {
        self.files
            .get_or_init(|| files_of(&self.shared.cfg, self.index))
    }

    fn hash_of(&self, f: &SimFile) -> (ContentHash, Option<Bytes>) {
        let cell = Arc::clone(lock(&self.shared.hashes).entry(f.content_seed).or_default());
        let mut generated = None;
        let h = cell.get_or_init(|| {
            let bytes = generate(f.content_seed, f.size);
            let h = ContentHash::of(&bytes);
            generated = Some(bytes);
            h
        });
        (h.clone(), generated)
    }

    /// The cell set once the blob of this content is in the store.
    fn stored_cell(&self, store_url: &str, seed: u64) -> Arc<tokio::sync::OnceCell<bool>> {
        Arc::clone(
            lock(&self.shared.stored)
                .entry((store_url.to_string(), seed))
                .or_default(),
        )
    }

    fn has_snapshot(&self, tag: &str) -> bool {
        lock(&self.snapshots).contains(tag)
    }
}

type EventStream<T> = Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send>>;

/// Forwards a simulated upload's events, coalescing those queued together as a real worker
/// does ([`ringvault_proto::coalesce`]); an error ends its batch and is passed on.
fn coalescing(
    mut rx: mpsc::Receiver<Result<pb::UploadEvent, Status>>,
) -> EventStream<pb::UploadEvent> {
    use ringvault_proto::coalesce;
    let (tx, out) = mpsc::channel(256);
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let (mut batch, mut failed) = (Vec::new(), None);
            for item in coalesce::queued(first, || rx.try_recv().ok()) {
                match item {
                    Ok(e) => batch.push(e),
                    Err(status) => {
                        failed = Some(status);
                        break;
                    }
                }
            }
            for m in coalesce::upload_events(batch) {
                if tx.send(Ok(m)).await.is_err() {
                    return;
                }
            }
            if let Some(status) = failed {
                let _ = tx.send(Err(status)).await;
                return;
            }
        }
    });
    Box::pin(ReceiverStream::new(out))
}

fn unimplemented<T>(what: &str) -> Result<T, Status> {
    Err(Status::unimplemented(format!(
        "the worker simulator does not {what}"
    )))
}

#[tonic::async_trait]
impl Worker for SimWorker {
    async fn get_node_info(
        &self,
        _: Request<pb::GetNodeInfoRequest>,
    ) -> Result<Response<pb::NodeInfo>, Status> {
        Ok(Response::new(self.info.clone()))
    }

    async fn get_ring(
        &self,
        _: Request<pb::GetRingRequest>,
    ) -> Result<Response<pb::GetRingResponse>, Status> {
        Ok(Response::new(pb::GetRingResponse {
            nodes: self.shared.ring.clone(),
        }))
    }

    async fn list_tables(
        &self,
        _: Request<pb::ListTablesRequest>,
    ) -> Result<Response<pb::ListTablesResponse>, Status> {
        Ok(Response::new(pb::ListTablesResponse {
            tables: self.shared.tables.clone(),
        }))
    }

    async fn check_storage(
        &self,
        req: Request<pb::CheckStorageRequest>,
    ) -> Result<Response<pb::CheckStorageResponse>, Status> {
        let url = req.into_inner().store_url;
        let store = ringvault_common::store::open(&url)
            .await
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        store
            .check()
            .await
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        Ok(Response::new(pb::CheckStorageResponse {}))
    }

    async fn snapshot(
        &self,
        req: Request<pb::SnapshotRequest>,
    ) -> Result<Response<pb::SnapshotResponse>, Status> {
        let r = req.into_inner();
        let mut snaps = lock(&self.snapshots);
        if snaps.contains(&r.tag) && !r.replace_existing {
            return Err(Status::already_exists(format!(
                "snapshot {} already exists",
                r.tag
            )));
        }
        snaps.insert(r.tag);
        Ok(Response::new(pb::SnapshotResponse {
            taken_at_unix_ms: ringvault_coordinator::now_ms(),
        }))
    }

    async fn find_snapshot(
        &self,
        req: Request<pb::FindSnapshotRequest>,
    ) -> Result<Response<pb::FindSnapshotResponse>, Status> {
        let tag = req.into_inner().tag;
        let dirs = if self.has_snapshot(&tag) {
            self.shared
                .tables
                .iter()
                .map(|t| {
                    format!(
                        "{}/{}/{}-{}/snapshots/{tag}",
                        self.info.data_dirs[0], t.keyspace, t.table, t.table_id
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(Response::new(pb::FindSnapshotResponse { dirs }))
    }

    async fn clear_snapshot(
        &self,
        req: Request<pb::ClearSnapshotRequest>,
    ) -> Result<Response<pb::ClearSnapshotResponse>, Status> {
        let tag = req.into_inner().tag;
        let existed = lock(&self.snapshots).remove(&tag);
        Ok(Response::new(pb::ClearSnapshotResponse { existed }))
    }

    async fn describe_schema(
        &self,
        _: Request<pb::DescribeSchemaRequest>,
    ) -> Result<Response<pb::DescribeSchemaResponse>, Status> {
        Ok(Response::new(self.shared.schema.clone()))
    }

    type UploadStream = EventStream<pb::UploadEvent>;

    async fn upload(
        &self,
        req: Request<pb::UploadRequest>,
    ) -> Result<Response<Self::UploadStream>, Status> {
        let r = req.into_inner();
        if !self.has_snapshot(&r.tag) {
            return Err(Status::failed_precondition(format!(
                "no snapshot {} on this node",
                r.tag
            )));
        }
        let store = ringvault_common::store::open(&r.store_url)
            .await
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        let (tx, rx) = mpsc::channel(256);
        let me = self.clone();
        tokio::spawn(async move {
            let files = me.files();
            let plan = pb::UploadPlan {
                total_files: files.len() as u64,
                total_bytes: files.iter().map(|f| f.size).sum(),
            };
            let event = |e| Ok(pb::UploadEvent { event: Some(e) });
            if tx
                .send(event(pb::upload_event::Event::Plan(plan)))
                .await
                .is_err()
            {
                return;
            }
            let ks = &me.shared.cfg.keyspace;
            for f in files {
                let (hash, generated) = me.hash_of(f);
                let hash_cached = generated.is_none();
                let key = layout::blob(&hash);
                // One simulated node stores a shared blob while the others reaching it wait;
                // once it is stored, the others do not ask the store again when the
                // coordinator trusts seen blobs (as a real worker's hash cache does for its own).
                let stored = me.stored_cell(&r.store_url, f.content_seed);
                let trusted = r.trust_seen_blobs && stored.initialized();
                let mut put_here = false;
                if !trusted {
                    let ensure = async {
                        let present = store
                            .head(&key)
                            .await
                            .map_err(|e| Status::unavailable(e.to_string()))?
                            .is_some_and(|m| m.size == f.size);
                        if !present {
                            let bytes =
                                generated.unwrap_or_else(|| generate(f.content_seed, f.size));
                            store
                                .put(&key, bytes)
                                .await
                                .map_err(|e| Status::unavailable(e.to_string()))?;
                            let st = &me.shared.stats;
                            st.blobs_put
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            st.bytes_put
                                .fetch_add(f.size, std::sync::atomic::Ordering::Relaxed);
                        }
                        Ok::<bool, Status>(!present)
                    };
                    let result = if stored.initialized() {
                        // Stored by another node before, but not trusted: ask, like a worker.
                        ensure.await
                    } else {
                        let mut ran = false;
                        stored
                            .get_or_try_init(|| {
                                ran = true;
                                ensure
                            })
                            .await
                            .map(|put| ran && *put)
                    };
                    match result {
                        Ok(p) => put_here = p,
                        Err(status) => {
                            let _ = tx.send(Err(status)).await;
                            return;
                        }
                    }
                }
                let present = !put_here;
                me.shared
                    .stats
                    .file_events
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let t = &me.shared.tables[f.table];
                let done = pb::FileDone {
                    file: Some(pb::FileEntry {
                        keyspace: ks.clone(),
                        table: t.table.clone(),
                        table_id: t.table_id.clone(),
                        name: f.name.clone(),
                        size: f.size,
                        hash: hash.to_string(),
                        mtime_unix_ms: 1_700_000_000_000,
                        data_dir_index: 0,
                        sstable: None,
                    }),
                    uploaded: !present,
                    hash_cached,
                };
                if tx
                    .send(event(pb::upload_event::Event::Progress(
                        pb::UploadProgress { bytes_read: f.size },
                    )))
                    .await
                    .is_err()
                    || tx
                        .send(event(pb::upload_event::Event::File(done)))
                        .await
                        .is_err()
                {
                    return;
                }
            }
        });
        Ok(Response::new(coalescing(rx)))
    }

    async fn apply_schema(
        &self,
        req: Request<pb::ApplySchemaRequest>,
    ) -> Result<Response<pb::ApplySchemaResponse>, Status> {
        // Restore planning checks the schema with a dry run; the simulator has no CQL to run.
        if req.into_inner().dry_run {
            Ok(Response::new(pb::ApplySchemaResponse { applied: 0 }))
        } else {
            unimplemented("apply schema (only its dry run)")
        }
    }

    type DownloadStream = EventStream<pb::DownloadEvent>;

    async fn download(
        &self,
        _: Request<tonic::Streaming<pb::DownloadRequest>>,
    ) -> Result<Response<Self::DownloadStream>, Status> {
        unimplemented("download")
    }

    async fn import(
        &self,
        _: Request<pb::ImportRequest>,
    ) -> Result<Response<pb::ImportResponse>, Status> {
        unimplemented("import")
    }

    async fn load(
        &self,
        _: Request<pb::LoadRequest>,
    ) -> Result<Response<pb::LoadResponse>, Status> {
        unimplemented("load")
    }

    async fn clean_staging(
        &self,
        _: Request<pb::CleanStagingRequest>,
    ) -> Result<Response<pb::CleanStagingResponse>, Status> {
        Ok(Response::new(pb::CleanStagingResponse {}))
    }

    async fn check_access(
        &self,
        _: Request<pb::CheckAccessRequest>,
    ) -> Result<Response<pb::CheckAccessResponse>, Status> {
        // A simulated node has no logins to check.
        Ok(Response::new(pb::CheckAccessResponse::default()))
    }

    async fn drop_scratch_keyspace(
        &self,
        _: Request<pb::DropScratchKeyspaceRequest>,
    ) -> Result<Response<pb::DropScratchKeyspaceResponse>, Status> {
        unimplemented("drop scratch keyspace")
    }

    async fn count_scratch_table(
        &self,
        _: Request<pb::CountScratchTableRequest>,
    ) -> Result<Response<pb::CountScratchTableResponse>, Status> {
        unimplemented("count scratch table")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(content: Content) -> SimConfig {
        SimConfig {
            cluster: "c".into(),
            keyspace: "ks".into(),
            tables: 3,
            files_per_node: 20,
            data_max: 1 << 20,
            data_min: 1 << 16,
            content,
            seed: 7,
        }
    }

    #[test]
    fn snapshots_follow_the_component_mix_and_are_deterministic() {
        let a = files_of(&cfg(Content::Distinct), 0);
        assert_eq!(a.len(), 20);
        assert!(a[0].name.ends_with("-Data.db") && a[7].name.ends_with("-TOC.txt"));
        assert!(a[0].size >= 1 << 16 && a[0].size <= 1 << 20);
        assert!(a[1..8].iter().all(|f| f.size < a[0].size));
        let names: BTreeSet<(usize, &str)> = a.iter().map(|f| (f.table, f.name.as_str())).collect();
        assert_eq!(names.len(), 20, "names unique per table");
        let again = files_of(&cfg(Content::Distinct), 0);
        assert_eq!(
            generate(a[3].content_seed, a[3].size),
            generate(again[3].content_seed, again[3].size)
        );
        let other = files_of(&cfg(Content::Distinct), 1);
        assert_ne!(a[0].content_seed, other[0].content_seed);
        let shared = files_of(&cfg(Content::Shared), 1);
        assert_eq!(
            shared[0].content_seed,
            files_of(&cfg(Content::Shared), 0)[0].content_seed
        );
        assert_eq!(generate(1, 13).len(), 13);
    }
}
