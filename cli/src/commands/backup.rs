//! `ringvault backup`: starts a cluster-wide backup and, with `--wait`, follows it to the end.
use std::process::ExitCode;

use super::Client;
use clap::Args;
use ringvault_proto::v1 as pb;

use super::status;
use crate::output::Format;

/// Options of `ringvault backup`.
#[derive(Debug, Args)]
pub struct BackupOptions {
    /// Keyspace to back up (repeatable); default: every keyspace that matters for restore.
    #[arg(short = 'k', long = "keyspace")]
    pub keyspaces: Vec<String>,
    /// Table of the keyspace to back up (repeatable; needs exactly one -k).
    #[arg(short = 't', long = "table")]
    pub tables: Vec<String>,
    /// Snapshot tag (default: rv-<UTC time>-<run>).
    #[arg(long)]
    pub tag: Option<String>,
    /// Cluster name, when workers of several clusters are registered.
    #[arg(long)]
    pub cluster: Option<String>,
    /// Back up only the nodes of this datacenter (repeatable); default: every node of the
    /// ring. Recorded with the run; every node of a named datacenter must have a live worker.
    #[arg(long = "dc", value_name = "DATACENTER")]
    pub datacenters: Vec<String>,
    /// Follow the run with live progress until it ends.
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub limits: super::LimitArgs,
}

/// Runs `ringvault backup`.
pub async fn run(mut client: Client, o: BackupOptions, format: Format) -> anyhow::Result<ExitCode> {
    if !o.tables.is_empty() && o.keyspaces.len() != 1 {
        return Err(super::bad_input(
            "-t/--table needs exactly one -k/--keyspace",
        ));
    }
    let resp = client
        .start_backup(pb::StartBackupRequest {
            keyspaces: o.keyspaces,
            tables: o.tables,
            tag: o.tag.unwrap_or_default(),
            cluster_name: o.cluster.unwrap_or_default(),
            limits: Some(o.limits.to_proto()),
            datacenters: o.datacenters,
        })
        .await
        .map_err(status)?
        .into_inner();
    super::runs::started(&mut client, &resp.run_id, "backup", o.wait, format).await
}
