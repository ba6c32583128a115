//! Stage `plan`: pick the cluster's workers, refuse with a reason if any is down or unreachable,
//! check the selection against the live schema and the store against every node, before
//! anything is recorded or snapshotted.
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::CoordinatorError;
use futures::StreamExt;
use ringvault_common::SnapshotTag;
use ringvault_proto::v1 as pb;
use ringvault_proto::v1::worker_client::WorkerClient;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic::transport::Channel;

use super::{BackupRequest, connect_worker};
use crate::Coordinator;

/// A node taking part in a run.
#[derive(Clone)]
pub struct PlannedNode {
    pub info: pb::NodeInfo,
    /// Reconnects by itself when the worker comes back.
    pub client: WorkerClient<Channel>,
    /// The worker process last seen (`NodeInfo.instance_id`).
    instance: Arc<Mutex<String>>,
}

/// Whether to re-issue a call that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// The worker restarted or the connection broke: send the call again.
    Reissue,
    /// The worker itself answered with the error: report it.
    GiveUp,
}

impl PlannedNode {
    /// A node reached with `client`, as `info` describes it.
    pub fn new(info: pb::NodeInfo, client: WorkerClient<Channel>) -> Self {
        let instance = Arc::new(Mutex::new(info.instance_id.clone()));
        Self {
            info,
            client,
            instance,
        }
    }

    /// "address (host id)" for messages.
    pub fn label(&self) -> String {
        format!("node {} ({})", self.info.address, self.info.host_id)
    }

    /// After a call to this node failed: waits (up to `grace`) until the worker answers again
    /// as the same node, and says whether to re-issue the call. A worker that restarted
    /// (new instance id) or could not be reached lost the call: re-issue. A worker that is up
    /// and the same process answered with its own error: give up, unless the failure was the
    /// connection's (`Unavailable`). A worker not back in time, or back as another node, is an
    /// error naming it.
    pub async fn after_failure(
        &self,
        failed: &Status,
        grace: Duration,
        cancel: &CancellationToken,
    ) -> anyhow::Result<Retry> {
        let deadline = tokio::time::Instant::now() + grace;
        let mut reachable_at_first = true;
        loop {
            let answer = tokio::time::timeout(
                Duration::from_secs(10),
                self.client.clone().get_node_info(pb::GetNodeInfoRequest {}),
            )
            .await;
            match answer {
                Ok(Ok(info)) => {
                    let info = info.into_inner();
                    if info.host_id != self.info.host_id {
                        anyhow::bail!(
                            "{}: the worker came back as host {} (node replaced?)",
                            self.label(),
                            info.host_id
                        );
                    }
                    let mut known = self
                        .instance
                        .lock()
                        .map_err(|_| anyhow::anyhow!("instance lock poisoned"))?;
                    let restarted = *known != info.instance_id;
                    *known = info.instance_id;
                    return Ok(
                        if restarted
                            || !reachable_at_first
                            || failed.code() == tonic::Code::Unavailable
                        {
                            tracing::warn!(node = %self.label(), restarted, error = failed.message(), "re-issuing the node's work");
                            Retry::Reissue
                        } else {
                            Retry::GiveUp
                        },
                    );
                }
                Ok(Err(_)) | Err(_) => reachable_at_first = false,
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!(
                    "{}: worker unreachable for {}s after: {}",
                    self.label(),
                    grace.as_secs(),
                    failed.message()
                );
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = cancel.cancelled() => anyhow::bail!("cancelled by the operator"),
            }
        }
    }
}

/// The outcome of planning.
pub struct Plan {
    pub cluster_name: String,
    pub partitioner: String,
    pub nodes: Vec<PlannedNode>,
}

const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The live workers of a cluster (`None`: the only cluster registered), each reached and
/// asked for its node info; any worker down or unreachable is a refusal naming it.
pub async fn reach_cluster(
    coord: &Arc<Coordinator>,
    cluster_name: Option<&str>,
) -> Result<(String, Vec<PlannedNode>), CoordinatorError> {
    reach_cluster_in(coord, cluster_name, &[]).await
}

/// [`reach_cluster`] limited to the workers of `datacenters` (empty: all).
pub async fn reach_cluster_in(
    coord: &Arc<Coordinator>,
    cluster_name: Option<&str>,
    datacenters: &[String],
) -> Result<(String, Vec<PlannedNode>), CoordinatorError> {
    let workers = coord
        .db
        .call(|db| db.workers())
        .await
        .map_err(CoordinatorError::Internal)?;
    let clusters: std::collections::BTreeSet<&str> =
        workers.iter().map(|w| w.cluster_name.as_str()).collect();
    let cluster = match cluster_name {
        Some(c) if clusters.contains(c) => c.to_string(),
        Some(c) => {
            return Err(CoordinatorError::not_found(format!(
                "no worker has registered for cluster {c:?}"
            )));
        }
        None if clusters.len() == 1 => clusters
            .iter()
            .next()
            .map(|c| c.to_string())
            .unwrap_or_default(),
        None if clusters.is_empty() => {
            return Err(CoordinatorError::refused(
                "no worker has registered with this coordinator",
            ));
        }
        None => {
            return Err(CoordinatorError::invalid(format!(
                "several clusters are registered ({clusters:?}); name one with --cluster"
            )));
        }
    };
    let members: Vec<_> = workers
        .into_iter()
        .filter(|w| w.cluster_name == cluster)
        .filter(|w| datacenters.is_empty() || datacenters.contains(&w.datacenter))
        .collect();
    let down: Vec<String> = members
        .iter()
        .filter(|w| !coord.alive(w.last_seen_ms))
        .map(|w| {
            format!(
                "node {} ({}, worker {})",
                w.address, w.host_id, w.worker_address
            )
        })
        .collect();
    if !down.is_empty() {
        return Err(CoordinatorError::unavailable(
            down.join(", "),
            "the run did not start: worker down",
        ));
    }
    // Reach every worker now: a node that does not answer stops the run before it starts.
    let calls = members.iter().map(|w| async move {
        let label = format!("node {} ({}, worker {})", w.address, w.host_id, w.worker_address);
        let mut client = connect_worker(&w.worker_address)
            .await
            .map_err(|e| CoordinatorError::unavailable(&label, format!("the run did not start: unreachable: {e:#}")))?;
        let mut info = tokio::time::timeout(CALL_TIMEOUT, client.get_node_info(pb::GetNodeInfoRequest {}))
            .await
            .map_err(|_| CoordinatorError::unavailable(&label, format!("the run did not start: no answer within {CALL_TIMEOUT:?}")))?
            .map_err(|e| CoordinatorError::from_worker(&label, &e).context("the run did not start"))?
            .into_inner();
        info.worker_address = w.worker_address.clone();
        if info.host_id != w.host_id {
            return Err(CoordinatorError::refused(format!(
                "the run did not start: {label} now reports host id {} (node replaced? restart its worker)",
                info.host_id
            )));
        }
        Ok::<_, CoordinatorError>(PlannedNode::new(info, client))
    });
    let nodes = futures::future::try_join_all(calls).await?;
    let ids: std::collections::BTreeSet<&str> =
        nodes.iter().map(|n| n.info.host_id.as_str()).collect();
    if ids.len() != nodes.len() {
        return Err(CoordinatorError::refused(
            "the run did not start: two workers report the same host id",
        ));
    }
    Ok((cluster, nodes))
}

/// Ring views read at once by [`check_ring_coverage`]: each lists every node of the ring.
const RING_READS_AT_ONCE: usize = 32;

/// Every node of the ring (as every reached worker's node sees it) in the selected
/// datacenters must be one of `nodes`; otherwise the run is refused naming each node left
/// out. A datacenter named in `datacenters` must exist.
pub async fn check_ring_coverage(
    nodes: &[PlannedNode],
    datacenters: &[String],
) -> Result<(), CoordinatorError> {
    if nodes.is_empty() {
        return Err(CoordinatorError::refused(format!(
            "the run did not start: no live worker registered in datacenter {}",
            datacenters.join(", ")
        )));
    }
    let calls: Vec<_> = nodes
        .iter()
        .map(|n| async move {
            tokio::time::timeout(
            CALL_TIMEOUT,
            n.client.clone().get_ring(pb::GetRingRequest {}),
        )
        .await
        .map_err(|_| {
            CoordinatorError::unavailable(
                n.label(),
                format!(
                    "the run did not start: reading the ring did not answer within {CALL_TIMEOUT:?}"
                ),
            )
        })?
        .map(|r| r.into_inner().nodes)
        .map_err(|e| {
            CoordinatorError::from_worker(n.label(), &e)
                .context("the run did not start: reading the ring")
        })
        })
        .collect();
    // The union of every node's view: a node that only some peers know is still in the ring.
    // Each view is merged as it arrives and dropped: every node's view lists the whole ring,
    // so holding them all would take nodes² entries (about 270 MiB at 1,000 nodes).
    let mut ring: std::collections::BTreeMap<(String, String), pb::RingNode> =
        std::collections::BTreeMap::new();
    let mut views = futures::stream::iter(calls).buffer_unordered(RING_READS_AT_ONCE);
    while let Some(view) = views.next().await {
        for r in view? {
            let key = if r.host_id.is_empty() {
                (String::new(), r.address.clone())
            } else {
                (r.host_id.clone(), String::new())
            };
            ring.entry(key).or_insert(r);
        }
    }
    drop(views);
    let dcs: std::collections::BTreeSet<&str> =
        ring.values().map(|r| r.datacenter.as_str()).collect();
    for dc in datacenters {
        if !dcs.contains(dc.as_str()) {
            return Err(CoordinatorError::invalid(format!(
                "datacenter {dc:?} is not in the ring (datacenters: {})",
                dcs.iter().copied().collect::<Vec<_>>().join(", ")
            )));
        }
    }
    let covered: std::collections::BTreeSet<&str> =
        nodes.iter().map(|n| n.info.host_id.as_str()).collect();
    let uncovered: Vec<String> = ring
        .values()
        .filter(|r| datacenters.is_empty() || datacenters.contains(&r.datacenter))
        .filter(|r| r.host_id.is_empty() || !covered.contains(r.host_id.as_str()))
        .map(|r| {
            format!(
                "node {} (host id {}, DC {})",
                r.address,
                if r.host_id.is_empty() {
                    "unknown"
                } else {
                    &r.host_id
                },
                r.datacenter
            )
        })
        .collect();
    if !uncovered.is_empty() {
        return Err(CoordinatorError::refused(format!(
            "the run did not start: no live worker registered for {}; start a worker beside each node (or back up whole datacenters with --dc); nothing was snapshotted",
            uncovered.join(", ")
        )));
    }
    Ok(())
}

/// Plans a run; every refusal is a [`CoordinatorError`] with the reason.
pub async fn plan(
    coord: &Arc<Coordinator>,
    req: &BackupRequest,
    tag: &SnapshotTag,
) -> Result<Plan, CoordinatorError> {
    let (cluster, nodes) =
        reach_cluster_in(coord, req.cluster_name.as_deref(), &req.datacenters).await?;
    // Every node of the ring (of the selected datacenters) must have its worker here.
    check_ring_coverage(&nodes, &req.datacenters).await?;
    // Every worker can log in to its node (CQL, JMX) before anything is snapshotted.
    super::check_access(&nodes, &[], "run").await?;
    let first = nodes
        .first()
        .cloned()
        .ok_or_else(|| CoordinatorError::refused("no node to back up"))?;

    // The selection must exist.
    let tables = first
        .client
        .clone()
        .list_tables(pb::ListTablesRequest {})
        .await
        .map_err(|e| CoordinatorError::from_worker(first.label(), &e).context("listing tables"))?
        .into_inner()
        .tables;
    for ks in &req.keyspaces {
        if !tables.iter().any(|t| t.keyspace == ks.as_str()) {
            return Err(CoordinatorError::not_found(format!(
                "keyspace {ks} does not exist; nothing was snapshotted"
            )));
        }
    }
    if !req.tables.is_empty() {
        let ks = req
            .keyspaces
            .first()
            .map(|k| k.as_str())
            .unwrap_or_default();
        for t in &req.tables {
            if !tables
                .iter()
                .any(|x| x.keyspace == ks && x.table == t.as_str())
            {
                return Err(CoordinatorError::not_found(format!(
                    "table {ks}.{t} does not exist; nothing was snapshotted"
                )));
            }
        }
    }
    // The store must work from here and from every node.
    coord.store.check().await.map_err(|e| {
        CoordinatorError::refused(format!(
            "store {} is not usable: {e}",
            coord.store.describe()
        ))
    })?;
    let checks = nodes.iter().map(|n| async move {
        n.client
            .clone()
            .check_storage(pb::CheckStorageRequest {
                store_url: coord.opts.store.clone(),
            })
            .await
            .map_err(|e| CoordinatorError::refused(format!("{}: {}", n.label(), e.message())))
    });
    futures::future::try_join_all(checks).await?;
    // Free space floor.
    for n in &nodes {
        if let Some((dir, free)) = n
            .info
            .data_dirs
            .iter()
            .zip(&n.info.free_bytes)
            .find(|(_, f)| **f < coord.opts.min_free_bytes)
        {
            return Err(CoordinatorError::refused(format!(
                "{}: data directory {dir} has {free} bytes free, below the floor of {} bytes",
                n.label(),
                coord.opts.min_free_bytes
            )));
        }
    }
    // The tag must be new on every node.
    let finds = nodes.iter().map(|n| async move {
        let dirs = n
            .client
            .clone()
            .find_snapshot(pb::FindSnapshotRequest {
                tag: tag.to_string(),
            })
            .await
            .map_err(|e| CoordinatorError::from_worker(n.label(), &e))?
            .into_inner()
            .dirs;
        Ok::<_, CoordinatorError>((n.label(), dirs))
    });
    let clashes: Vec<String> = futures::future::try_join_all(finds)
        .await?
        .into_iter()
        .filter(|(_, dirs)| !dirs.is_empty())
        .map(|(label, dirs)| format!("{label} ({} directories, e.g. {})", dirs.len(), dirs[0]))
        .collect();
    if !clashes.is_empty() {
        return Err(CoordinatorError::conflict(format!(
            "snapshot tag {tag} already exists on {}",
            clashes.join(", ")
        )));
    }
    tracing::debug!(%tag, nodes = nodes.len(), "planned");
    let partitioner = first.info.partitioner.clone();
    Ok(Plan {
        cluster_name: cluster,
        partitioner,
        nodes,
    })
}
