//! `ringvault backups list [--from-store URL]`: committed backups, read from a store's
//! manifests (so it works with an empty coordinator database).
use std::process::ExitCode;

use super::Client;
use clap::Subcommand;
use ringvault_proto::v1 as pb;
use serde_json::json;

use super::status;
use crate::output::{self, Format};

/// Backup catalog commands.
#[derive(Debug, Subcommand)]
pub enum BackupsCommand {
    /// Committed backups, newest first.
    List {
        /// Read this store instead of the coordinator's.
        #[arg(long)]
        from_store: Option<String>,
    },
}

/// Runs a `backups` subcommand.
pub async fn run(
    mut client: Client,
    cmd: BackupsCommand,
    format: Format,
) -> anyhow::Result<ExitCode> {
    let BackupsCommand::List { from_store } = cmd;
    let backups = client
        .list_backups(pb::ListBackupsRequest {
            from_store_url: from_store.unwrap_or_default(),
        })
        .await
        .map_err(status)?
        .into_inner()
        .backups;
    match format {
        Format::Json => output::print_json(&serde_json::Value::Array(
            backups
                .iter()
                .map(|b| {
                    json!({
                        "id": b.run_id, "tag": b.tag, "cluster_name": b.cluster_name, "keyspaces": b.keyspaces,
                        "tables": b.tables, "committed_unix_ms": b.committed_unix_ms, "nodes": b.nodes,
                        "files": b.files, "bytes": b.bytes,
                        "last_restore_test": super::restore_test::summary_json(b.last_restore_test.as_ref()),
                    })
                })
                .collect(),
        )),
        Format::Human => {
            println!("{:<38} {:<24} {:>5} {:>7} {:>11}  {:<28} SELECTION", "ID", "TAG", "NODES", "FILES", "BYTES", "LAST TEST RESTORE");
            for b in &backups {
                let sel = if b.keyspaces.is_empty() { "all keyspaces".to_string() } else { b.keyspaces.join(",") };
                let test = super::restore_test::summary_text(b.last_restore_test.as_ref());
                println!("{:<38} {:<24} {:>5} {:>7} {:>11}  {test:<28} {sel}", b.run_id, b.tag, b.nodes, b.files, output::human_bytes(b.bytes));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
