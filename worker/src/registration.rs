//! Registers the worker with the coordinator and keeps a heartbeat, reconnecting with capped
//! exponential backoff whenever the coordinator is unreachable or has forgotten the worker.
use std::sync::Arc;
use std::time::Duration;

use ringvault_common::security::ClientSecurity;
use ringvault_proto::v1 as pb;
use ringvault_proto::v1::registry_client::RegistryClient;

use crate::node::LocalNode;

/// Never returns: registers, heartbeats, and starts over on any failure.
pub async fn register_forever(
    coordinator: String,
    security: ClientSecurity,
    node: Arc<LocalNode>,
    advertise: String,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match session(&coordinator, &security, &node, &advertise).await {
            Ok(()) => backoff = Duration::from_millis(200),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), coordinator, retry_in = ?backoff, "registration with the coordinator failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// One registration followed by heartbeats until one fails or the coordinator forgets us.
async fn session(
    coordinator: &str,
    security: &ClientSecurity,
    node: &LocalNode,
    advertise: &str,
) -> anyhow::Result<()> {
    let channel = security
        .connect(coordinator, |ep| {
            ep.connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(30))
        })
        .await?;
    let mut client = RegistryClient::new(channel)
        .max_decoding_message_size(ringvault_common::service::MAX_GRPC_MESSAGE)
        .max_encoding_message_size(ringvault_common::service::MAX_GRPC_MESSAGE);
    let mut info = node.info().await?;
    info.worker_address = advertise.to_string();
    let (host_id, cluster_name) = (info.host_id.clone(), info.cluster_name.clone());
    let resp = client
        .register(pb::RegisterRequest { node: Some(info) })
        .await?
        .into_inner();
    tracing::info!(host_id, coordinator, "registered with the coordinator");
    let every = Duration::from_millis(resp.heartbeat_interval_ms.clamp(200, 60_000));
    loop {
        tokio::time::sleep(every).await;
        let r = client
            .heartbeat(pb::HeartbeatRequest {
                host_id: host_id.clone(),
                cluster_name: cluster_name.clone(),
            })
            .await?
            .into_inner();
        if !r.known {
            tracing::info!("coordinator does not know this worker any more; registering again");
            return Ok(());
        }
    }
}
