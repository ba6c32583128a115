//! The `Registry` gRPC service: workers register (identity, topology, data directories,
//! address) and heartbeat. Thin: validate, convert, store.
use std::sync::Arc;

use ringvault_common::manifest::HostId;
use ringvault_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::db::WorkerRow;
use crate::{Coordinator, now_ms};

/// Serves worker registration.
pub struct RegistryService {
    coord: Arc<Coordinator>,
}

impl RegistryService {
    /// A registry backed by the coordinator's database.
    pub fn new(coord: Arc<Coordinator>) -> Self {
        Self { coord }
    }
}

fn internal(e: anyhow::Error) -> Status {
    Status::internal(format!("{e:#}"))
}

#[tonic::async_trait]
impl pb::registry_server::Registry for RegistryService {
    async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let node = req
            .into_inner()
            .node
            .ok_or_else(|| Status::invalid_argument("node is required"))?;
        let host_id =
            HostId::parse(&node.host_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if node.worker_address.is_empty() || node.cluster_name.is_empty() {
            return Err(Status::invalid_argument(
                "worker_address and cluster_name are required",
            ));
        }
        let row = WorkerRow {
            host_id: host_id.to_string(),
            cluster_name: node.cluster_name,
            address: node.address,
            worker_address: node.worker_address,
            datacenter: node.datacenter,
            rack: node.rack,
            tokens: node.tokens,
            data_dirs: node.data_dirs,
            cassandra_version: node.cassandra_version,
            last_seen_ms: now_ms(),
        };
        tracing::info!(host_id = %row.host_id, address = %row.address, worker = %row.worker_address, "worker registered");
        self.coord
            .db
            .call(move |db| db.upsert_worker(&row))
            .await
            .map_err(internal)?;
        Ok(Response::new(pb::RegisterResponse {
            heartbeat_interval_ms: self.coord.opts.heartbeat_interval_ms,
        }))
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let host_id = req.into_inner().host_id;
        let known = self
            .coord
            .db
            .call(move |db| db.touch_worker(&host_id, now_ms()))
            .await
            .map_err(internal)?;
        Ok(Response::new(pb::HeartbeatResponse { known }))
    }
}
