//! `ringvault restore RUN`: brings a backup back, schema first, then data; with `--wait`,
//! follows it with the same live progress as a backup.
use std::process::ExitCode;

use super::Client;
use clap::Args;
use ringvault_proto::v1 as pb;

use super::status;
use crate::output::Format;

/// Options of `ringvault restore`.
#[derive(Debug, Args)]
pub struct RestoreOptions {
    /// The backup run to restore.
    pub run: String,
    /// Keyspace to restore (repeatable); default: every keyspace of the backup except
    /// system_auth, system_distributed and system_traces.
    #[arg(short = 'k', long = "keyspace")]
    pub keyspaces: Vec<String>,
    /// Table of the keyspace to restore (repeatable; needs exactly one -k).
    #[arg(short = 't', long = "table")]
    pub tables: Vec<String>,
    /// Target cluster (when workers of several clusters are registered).
    #[arg(long)]
    pub to_cluster: Option<String>,
    /// import: nodetool import on each node (same topology); loader: sstableloader (any
    /// topology). Default: import when the topology matches, else loader.
    #[arg(long, value_parser = ["import", "loader"])]
    pub mode: Option<String>,
    /// Restore into live tables even when their definition differs from the backup's.
    #[arg(long)]
    pub force_schema: bool,
    /// Read the backup from this store instead of the coordinator's (the bucket alone is enough).
    #[arg(long)]
    pub from_store: Option<String>,
    /// Follow the restore with live progress until it ends.
    #[arg(long)]
    pub wait: bool,
    /// Only plan: run every check, print what the restore would do, change nothing.
    #[arg(long, conflicts_with = "wait")]
    pub dry_run: bool,
}

/// What restoring `system_auth` does, printed when `-k system_auth` is given.
pub const SYSTEM_AUTH_NOTICE: &str = "restoring system_auth: the backup's roles, password hashes, role memberships and permissions (system_auth.roles, role_members, role_permissions, resource_role_permissons_index, network_permissions, cidr_permissions) are written back into this cluster. Roles and grants dropped since the backup come back with the passwords they had then, unless a newer delete still shadows them; roles created or changed since keep their newer values. Nodes may serve cached credentials until roles_validity/permissions_validity expire.";

/// Runs `ringvault restore`.
pub async fn run(
    mut client: Client,
    o: RestoreOptions,
    format: Format,
) -> anyhow::Result<ExitCode> {
    if !o.tables.is_empty() && o.keyspaces.len() != 1 {
        return Err(super::bad_input(
            "-t/--table needs exactly one -k/--keyspace",
        ));
    }
    if o.keyspaces.iter().any(|k| k == "system_auth") {
        // Never part of a default restore; named explicitly, it is said what it brings back.
        eprintln!("{SYSTEM_AUTH_NOTICE}");
    }
    let resp = client
        .start_restore(pb::StartRestoreRequest {
            backup_run_id: o.run,
            keyspaces: o.keyspaces,
            tables: o.tables,
            mode: o.mode.unwrap_or_default(),
            force_schema: o.force_schema,
            from_store_url: o.from_store.unwrap_or_default(),
            cluster_name: o.to_cluster.unwrap_or_default(),
            dry_run: o.dry_run,
        })
        .await
        .map_err(status)?
        .into_inner();
    if let Some(p) = resp.restore_plan {
        match format {
            Format::Json => crate::output::print_json(&serde_json::json!({
                "dry_run": true, "mode": p.mode, "target_nodes": p.target_nodes,
                "files": p.files, "bytes": p.bytes, "schema_objects": p.schema_objects,
            })),
            Format::Human => println!(
                "restore plan (dry run, nothing changed): mode {}, {} target node(s), {} file(s), {} bytes, {} schema object(s) to create",
                p.mode, p.target_nodes, p.files, p.bytes, p.schema_objects
            ),
        }
        return Ok(ExitCode::SUCCESS);
    }
    super::runs::started(&mut client, &resp.run_id, "restore", o.wait, format).await
}
