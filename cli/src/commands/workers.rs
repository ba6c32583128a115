//! `ringvault workers list`.
use std::process::ExitCode;

use super::Client;
use clap::Subcommand;
use ringvault_proto::v1 as pb;
use serde_json::json;

use super::status;
use crate::output::{self, Format};

/// Worker commands.
#[derive(Debug, Subcommand)]
pub enum WorkersCommand {
    /// Registered workers with their node, DC, rack and liveness.
    List,
    /// Forget a worker and the identity its host id is bound to (admin), e.g. a node rebuilt
    /// with a new worker certificate.
    Remove {
        /// The node's host id.
        host_id: String,
    },
}

/// Runs a `workers` subcommand.
pub async fn run(
    mut client: Client,
    cmd: WorkersCommand,
    format: Format,
) -> anyhow::Result<ExitCode> {
    if let WorkersCommand::Remove { host_id } = cmd {
        client
            .remove_worker(pb::RemoveWorkerRequest {
                host_id: host_id.clone(),
            })
            .await
            .map_err(status)?;
        match format {
            Format::Json => output::print_json(&json!({ "removed": host_id })),
            Format::Human => println!("worker {host_id} removed"),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let workers = client
        .list_workers(pb::ListWorkersRequest {})
        .await
        .map_err(status)?
        .into_inner()
        .workers;
    match format {
        Format::Json => output::print_json(&serde_json::Value::Array(
            workers
                .iter()
                .map(|w| {
                    let n = w.node.clone().unwrap_or_default();
                    json!({
                        "host_id": n.host_id, "address": n.address, "cluster_name": n.cluster_name,
                        "datacenter": n.datacenter, "rack": n.rack, "tokens": n.tokens, "data_dirs": n.data_dirs,
                        "cassandra_version": n.cassandra_version, "worker_address": n.worker_address,
                        "alive": w.alive, "last_seen_unix_ms": w.last_seen_unix_ms,
                    })
                })
                .collect(),
        )),
        Format::Human => {
            println!("{:<16} {:<38} {:<14} {:<8} {:<10} STATUS", "ADDRESS", "HOST ID", "DC", "RACK", "VERSION");
            for w in &workers {
                let n = w.node.clone().unwrap_or_default();
                println!(
                    "{:<16} {:<38} {:<14} {:<8} {:<10} {}",
                    n.address, n.host_id, n.datacenter, n.rack, n.cassandra_version, if w.alive { "up" } else { "DOWN" }
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
