//! An in-process fake of `ringvault-worker`: it serves the real `Worker` gRPC service on a
//! loopback port, registers through the coordinator's real Registry RPC and heartbeats, and
//! answers with scripted behaviour instead of a Cassandra node. Snapshots are a set of tags;
//! the node's "files" are byte strings held in memory. Upload writes them into the store the way
//! the real worker does (content-addressed blobs under `layout::blob`, a HEAD first so a blob
//! already stored is not sent again) with common's store, layout and hash code.
//!
//! A [`FakeWorker::restart`] is a real process restart as the coordinator sees it: every open
//! connection is cut at the socket and the worker comes back with a new instance id.
use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use ringvault_common::hash::ContentHash;
use ringvault_common::layout;
use ringvault_proto::v1 as pb;
use ringvault_proto::v1::registry_client::RegistryClient;
use ringvault_proto::v1::worker_server::{Worker, WorkerServer};
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// One file of a fake node's snapshot.
#[derive(Debug, Clone)]
pub struct FakeFile {
    pub keyspace: String,
    pub table: String,
    /// 32 lowercase hex digits.
    pub table_id: String,
    pub name: String,
    pub content: Bytes,
}

impl FakeFile {
    /// A file of `ks.table` (table id derived from the names) holding `content`.
    pub fn new(ks: &str, table: &str, name: &str, content: impl Into<Bytes>) -> Self {
        let id = blake_hex(format!("{ks}.{table}").as_bytes());
        Self {
            keyspace: ks.into(),
            table: table.into(),
            table_id: id[..32].to_string(),
            name: name.into(),
            content: content.into(),
        }
    }

    /// The content hash the store keys its blob by.
    pub fn hash(&self) -> ContentHash {
        ContentHash::of(&self.content)
    }
}

fn blake_hex(data: &[u8]) -> String {
    ContentHash::of(data).to_string()
}

/// Scripted behaviour of one fake worker.
#[derive(Debug, Clone, Default)]
pub struct Script {
    /// Upload: after this many files, the worker answers with its own error (code, message).
    pub fail_upload_after: Option<(usize, tonic::Code, String)>,
    /// Upload: after this many files, the worker restarts (once): connections cut, new
    /// instance id; the re-issued upload then runs to the end.
    pub restart_upload_after: Option<usize>,
    /// Upload: after the plan, wait until [`FakeWorker::release_uploads`] (or the caller goes).
    pub hold_upload: bool,
}

/// The ring every fake node of one cluster reports (`GetRing`).
#[derive(Clone)]
pub struct FakeCluster {
    pub name: String,
    ring: Arc<Mutex<Vec<pb::RingNode>>>,
}

impl FakeCluster {
    /// A cluster with no node yet.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            ring: Arc::default(),
        }
    }
}

/// A call the fake received, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Snapshot { tag: String, replace: bool },
    Upload { tag: String },
    Clear { tag: String },
}

struct Inner {
    info: Mutex<pb::NodeInfo>,
    cluster: FakeCluster,
    files: Vec<FakeFile>,
    script: Mutex<Script>,
    snapshots: Mutex<BTreeSet<String>>,
    calls: Mutex<Vec<Call>>,
    /// Hashes of the blobs this node put into the store, in order.
    puts: Mutex<Vec<ContentHash>>,
    /// Duplicates of every accepted socket: shutting one down cuts tonic's connection.
    conns: Mutex<Vec<std::net::TcpStream>>,
    release: Notify,
    /// Uploads that reached their hold so far.
    holding: tokio::sync::watch::Sender<u32>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A running fake worker.
#[derive(Clone)]
pub struct FakeWorker {
    inner: Arc<Inner>,
}

impl FakeWorker {
    /// Starts node number `n` (1-based; address `127.0.0.n`) of `cluster` holding `files`, serving on a
    /// free loopback port and registering with the coordinator at `coordinator`.
    pub async fn start(
        cluster: &FakeCluster,
        n: u8,
        coordinator: &str,
        files: Vec<FakeFile>,
        script: Script,
    ) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let host_id = uuid::Uuid::new_v4().hyphenated().to_string();
        let address = format!("127.0.0.{n}");
        let token = (i64::MIN + (i64::MAX / 4) * i64::from(n)).to_string();
        let info = pb::NodeInfo {
            cluster_name: cluster.name.clone(),
            host_id: host_id.clone(),
            address: address.clone(),
            datacenter: "dc1".into(),
            rack: "rack1".into(),
            tokens: vec![token],
            data_dirs: vec![format!("/fake/node{n}/data")],
            cassandra_version: "5.0.8".into(),
            worker_address: format!("http://127.0.0.1:{port}"),
            free_bytes: vec![1 << 40],
            partitioner: "org.apache.cassandra.dht.Murmur3Partitioner".into(),
            instance_id: uuid::Uuid::new_v4().to_string(),
        };
        lock(&cluster.ring).push(pb::RingNode {
            host_id,
            address,
            datacenter: "dc1".into(),
            rack: "rack1".into(),
        });
        let inner = Arc::new(Inner {
            info: Mutex::new(info),
            cluster: cluster.clone(),
            files,
            script: Mutex::new(script),
            snapshots: Mutex::default(),
            calls: Mutex::default(),
            puts: Mutex::default(),
            conns: Mutex::default(),
            release: Notify::new(),
            holding: tokio::sync::watch::Sender::new(0),
        });
        let (tx, rx) = mpsc::channel::<std::io::Result<tokio::net::TcpStream>>(16);
        let accepting = Arc::clone(&inner);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let conn = tcp.into_std().and_then(|std| {
                    let dup = std.try_clone()?;
                    lock(&accepting.conns).push(dup);
                    tokio::net::TcpStream::from_std(std)
                });
                if tx.send(conn).await.is_err() {
                    return;
                }
            }
        });
        let me = Self { inner };
        let service = WorkerServer::new(me.clone())
            .max_decoding_message_size(ringvault_common::service::MAX_GRPC_MESSAGE)
            .max_encoding_message_size(ringvault_common::service::MAX_GRPC_MESSAGE);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(ReceiverStream::new(rx)),
        );
        tokio::spawn(register_forever(me.clone(), coordinator.to_string()));
        Ok(me)
    }

    /// What the node reports (`GetNodeInfo`).
    pub fn info(&self) -> pb::NodeInfo {
        lock(&self.inner.info).clone()
    }

    /// The node's host id.
    pub fn host_id(&self) -> String {
        self.info().host_id
    }

    /// "node ADDRESS (HOST ID)", as the coordinator names a node in its messages.
    pub fn label(&self) -> String {
        let i = self.info();
        format!("node {} ({})", i.address, i.host_id)
    }

    /// The files this node backs up.
    pub fn files(&self) -> &[FakeFile] {
        &self.inner.files
    }

    /// Snapshot tags present on the node now.
    pub fn snapshots(&self) -> BTreeSet<String> {
        lock(&self.inner.snapshots).clone()
    }

    /// Every call received so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.inner.calls).clone()
    }

    /// Hashes of the blobs this node put into the store (not those it found there), in order.
    pub fn puts(&self) -> Vec<ContentHash> {
        lock(&self.inner.puts).clone()
    }

    /// Replaces the script (for calls from now on).
    pub fn set_script(&self, s: Script) {
        *lock(&self.inner.script) = s;
    }

    /// Waits until an upload holds after its plan ([`Script::hold_upload`]).
    pub async fn wait_holding(&self) {
        let mut rx = self.inner.holding.subscribe();
        let _ = rx.wait_for(|n| *n > 0).await;
    }

    /// Lets every held upload go on.
    pub fn release_uploads(&self) {
        lock(&self.inner.script).hold_upload = false;
        self.inner.release.notify_waiters();
    }

    /// Restarts the worker as the coordinator sees it: every connection to it is cut at the
    /// socket and it answers from now on with a new instance id. Snapshots (on disk for a
    /// real node) stay.
    pub fn restart(&self) {
        lock(&self.inner.info).instance_id = uuid::Uuid::new_v4().to_string();
        for c in lock(&self.inner.conns).drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    fn record(&self, c: Call) {
        lock(&self.inner.calls).push(c);
    }

    fn tables(&self) -> Vec<pb::TableRef> {
        let set: BTreeSet<(String, String, String)> = self
            .inner
            .files
            .iter()
            .map(|f| (f.keyspace.clone(), f.table.clone(), f.table_id.clone()))
            .collect();
        set.into_iter()
            .map(|(keyspace, table, table_id)| pb::TableRef {
                keyspace,
                table,
                table_id,
            })
            .collect()
    }
}

/// Registers with the coordinator and heartbeats, starting over on any failure, like the real
/// worker's registration loop.
async fn register_forever(w: FakeWorker, coordinator: String) {
    loop {
        let session = async {
            let mut client = RegistryClient::connect(coordinator.clone()).await?;
            let info = w.info();
            let resp = client
                .register(pb::RegisterRequest {
                    node: Some(info.clone()),
                })
                .await?
                .into_inner();
            let every = Duration::from_millis(resp.heartbeat_interval_ms.clamp(50, 60_000));
            loop {
                tokio::time::sleep(every).await;
                let known = client
                    .heartbeat(pb::HeartbeatRequest {
                        host_id: info.host_id.clone(),
                        cluster_name: info.cluster_name.clone(),
                    })
                    .await?
                    .into_inner()
                    .known;
                if !known {
                    return anyhow::Ok(());
                }
            }
        };
        if session.await.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

type EventStream<T> = Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send>>;

fn unimplemented<T>(what: &str) -> Result<T, Status> {
    Err(Status::unimplemented(format!(
        "the fake worker does not {what}"
    )))
}

#[tonic::async_trait]
impl Worker for FakeWorker {
    async fn get_node_info(
        &self,
        _: Request<pb::GetNodeInfoRequest>,
    ) -> Result<Response<pb::NodeInfo>, Status> {
        Ok(Response::new(self.info()))
    }

    async fn get_ring(
        &self,
        _: Request<pb::GetRingRequest>,
    ) -> Result<Response<pb::GetRingResponse>, Status> {
        Ok(Response::new(pb::GetRingResponse {
            nodes: lock(&self.inner.cluster.ring).clone(),
        }))
    }

    async fn list_tables(
        &self,
        _: Request<pb::ListTablesRequest>,
    ) -> Result<Response<pb::ListTablesResponse>, Status> {
        Ok(Response::new(pb::ListTablesResponse {
            tables: self.tables(),
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
        self.record(Call::Snapshot {
            tag: r.tag.clone(),
            replace: r.replace_existing,
        });
        let mut snaps = lock(&self.inner.snapshots);
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
        let dirs = if self.snapshots().contains(&tag) {
            self.tables()
                .iter()
                .map(|t| {
                    format!(
                        "{}/{}/{}-{}/snapshots/{tag}",
                        self.info().data_dirs[0],
                        t.keyspace,
                        t.table,
                        t.table_id
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
        self.record(Call::Clear { tag: tag.clone() });
        let existed = lock(&self.inner.snapshots).remove(&tag);
        Ok(Response::new(pb::ClearSnapshotResponse { existed }))
    }

    async fn describe_schema(
        &self,
        _: Request<pb::DescribeSchemaRequest>,
    ) -> Result<Response<pb::DescribeSchemaResponse>, Status> {
        let mut rows = Vec::new();
        let keyspaces: BTreeSet<String> = self.tables().into_iter().map(|t| t.keyspace).collect();
        for ks in keyspaces {
            rows.push(pb::SchemaRow {
                keyspace: ks.clone(),
                kind: "keyspace".into(),
                name: ks.clone(),
                statement: format!(
                    "CREATE KEYSPACE {ks} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 3}};"
                ),
            });
        }
        for t in self.tables() {
            rows.push(pb::SchemaRow {
                keyspace: t.keyspace.clone(),
                kind: "table".into(),
                name: t.table.clone(),
                statement: format!(
                    "CREATE TABLE {}.{} (id int PRIMARY KEY) WITH ID = {};",
                    t.keyspace, t.table, t.table_id
                ),
            });
        }
        let schema_cql = rows
            .iter()
            .map(|r| r.statement.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        Ok(Response::new(pb::DescribeSchemaResponse {
            schema_cql,
            rows,
        }))
    }

    type UploadStream = EventStream<pb::UploadEvent>;

    async fn upload(
        &self,
        req: Request<pb::UploadRequest>,
    ) -> Result<Response<Self::UploadStream>, Status> {
        let r = req.into_inner();
        self.record(Call::Upload { tag: r.tag.clone() });
        if !self.snapshots().contains(&r.tag) {
            return Err(Status::failed_precondition(format!(
                "no snapshot {} on this node",
                r.tag
            )));
        }
        let store = ringvault_common::store::open(&r.store_url)
            .await
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        let (tx, rx) = mpsc::channel(16);
        let me = self.clone();
        tokio::spawn(async move {
            let script = {
                let mut s = lock(&me.inner.script);
                let now = s.clone();
                // A restart happens once: the re-issued upload runs to the end.
                s.restart_upload_after = None;
                now
            };
            let files = me.inner.files.clone();
            let plan = pb::UploadPlan {
                total_files: files.len() as u64,
                total_bytes: files.iter().map(|f| f.content.len() as u64).sum(),
            };
            let event = |e| Ok(pb::UploadEvent { event: Some(e) });
            if tx
                .send(event(pb::upload_event::Event::Plan(plan)))
                .await
                .is_err()
            {
                return;
            }
            if script.hold_upload {
                let released = me.inner.release.notified();
                me.inner.holding.send_modify(|n| *n += 1);
                tokio::select! {
                    _ = released => {}
                    _ = tx.closed() => return,
                }
            }
            for (i, f) in files.iter().enumerate() {
                if script.restart_upload_after == Some(i) {
                    me.restart();
                    return;
                }
                if let Some((after, code, msg)) = &script.fail_upload_after
                    && *after == i
                {
                    let _ = tx.send(Err(Status::new(*code, msg.clone()))).await;
                    return;
                }
                let hash = f.hash();
                let key = layout::blob(&hash);
                let size = f.content.len() as u64;
                let present = match store.head(&key).await {
                    Ok(m) => m.is_some_and(|m| m.size == size),
                    Err(e) => {
                        let _ = tx.send(Err(Status::unavailable(e.to_string()))).await;
                        return;
                    }
                };
                if !present {
                    if let Err(e) = store.put(&key, f.content.clone()).await {
                        let _ = tx.send(Err(Status::unavailable(e.to_string()))).await;
                        return;
                    }
                    lock(&me.inner.puts).push(hash.clone());
                }
                let progress = pb::UploadProgress { bytes_read: size };
                let done = pb::FileDone {
                    file: Some(pb::FileEntry {
                        keyspace: f.keyspace.clone(),
                        table: f.table.clone(),
                        table_id: f.table_id.clone(),
                        name: f.name.clone(),
                        size,
                        hash: hash.to_string(),
                        mtime_unix_ms: 1_700_000_000_000,
                        data_dir_index: 0,
                        sstable: None,
                    }),
                    uploaded: !present,
                    hash_cached: false,
                };
                if tx
                    .send(event(pb::upload_event::Event::Progress(progress)))
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
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn apply_schema(
        &self,
        _: Request<pb::ApplySchemaRequest>,
    ) -> Result<Response<pb::ApplySchemaResponse>, Status> {
        unimplemented("apply schema")
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
        unimplemented("clean staging")
    }

    async fn check_access(
        &self,
        _: Request<pb::CheckAccessRequest>,
    ) -> Result<Response<pb::CheckAccessResponse>, Status> {
        // A fake node has no logins to check: access is always granted.
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
