//! The `Registry` gRPC service: workers register (identity, topology, data directories,
//! address) and heartbeat. Thin: validate, convert, store.
use std::sync::Arc;

use ringvault_common::manifest::HostId;
use ringvault_common::security::authz::principal;
use ringvault_common::security::{Identity, Principal};
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
        let who = principal(&req)?;
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
        let identity = match &who {
            Principal::InsecureLoopback => None,
            Principal::Known(id @ Identity::Worker { cluster, .. }) => {
                if *cluster != row.cluster_name {
                    tracing::warn!(identity = %id, host_id = %row.host_id, cluster = %row.cluster_name, "refused: registration for another cluster");
                    return Err(Status::permission_denied(format!(
                        "{id} may not register a node of cluster {:?}",
                        row.cluster_name
                    )));
                }
                Some(id.to_uri())
            }
            Principal::Known(other) => {
                return Err(Status::permission_denied(format!(
                    "{other} is not a worker"
                )));
            }
        };
        let (host, worker) = (row.host_id.clone(), row.worker_address.clone());
        let uri = identity.clone();
        let outcome = self
            .coord
            .db
            .call(move |db| db.register_worker(&row, uri.as_deref()))
            .await
            .map_err(internal)?;
        if let Err(bound) = outcome {
            tracing::warn!(host_id = %host, identity = %who, bound_to = %bound, "refused: host id bound to another identity");
            return Err(Status::permission_denied(format!(
                "host id {host} is registered by another worker identity ({bound}); remove it first with `ringvault workers remove {host}`"
            )));
        }
        tracing::info!(host_id = %host, worker = %worker, identity = %who, "worker registered");
        Ok(Response::new(pb::RegisterResponse {
            heartbeat_interval_ms: self.coord.opts.heartbeat_interval_ms,
        }))
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let identity = match principal(&req)? {
            Principal::InsecureLoopback => None,
            Principal::Known(id) => Some(id.to_uri()),
        };
        let host_id = req.into_inner().host_id;
        let known = self
            .coord
            .db
            .call(move |db| db.touch_worker_as(&host_id, identity.as_deref(), now_ms()))
            .await
            .map_err(internal)?;
        Ok(Response::new(pb::HeartbeatResponse { known }))
    }
}
