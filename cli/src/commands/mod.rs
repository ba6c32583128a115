//! Command-line parsing and dispatch, one file per command.
mod backup;
mod backups;
mod purge;
mod restore;
mod runs;
mod schedule;
mod verify;
mod workers;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ringvault_proto::v1::coordinator_client::CoordinatorClient;
use tonic::transport::Channel;

use crate::output::Format;

/// Top-level options.
#[derive(Debug, Parser)]
#[command(
    name = "ringvault",
    version,
    about = "Cluster-wide backup for Apache Cassandra"
)]
pub struct Cli {
    /// The coordinator's gRPC URL.
    #[arg(
        long,
        global = true,
        env = "RINGVAULT_COORDINATOR",
        default_value = "http://127.0.0.1:7600"
    )]
    pub coordinator: String,
    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Format::Human)]
    pub output: Format,
    #[command(subcommand)]
    pub command: Command,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Back up the cluster (all keyspaces, one keyspace, or tables of one keyspace).
    Backup(backup::BackupOptions),
    /// Restore a backup: schema first, then data.
    Restore(restore::RestoreOptions),
    /// List committed backups (from the coordinator's store or any store).
    #[command(subcommand)]
    Backups(backups::BackupsCommand),
    /// List, show, watch or cancel runs.
    #[command(subcommand)]
    Runs(runs::RunsCommand),
    /// List the workers registered with the coordinator.
    #[command(subcommand)]
    Workers(workers::WorkersCommand),
    /// Check a backup: every blob present with its size; --deep re-hashes them.
    Verify(verify::VerifyOptions),
    /// Apply retention and delete what no kept backup needs.
    Purge(purge::PurgeOptions),
    /// Backup schedules run by the coordinator.
    #[command(subcommand)]
    Schedule(schedule::ScheduleCommand),
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let client = connect(&cli.coordinator).await?;
    match cli.command {
        Command::Backup(o) => backup::run(client, o, cli.output).await,
        Command::Restore(o) => restore::run(client, o, cli.output).await,
        Command::Backups(c) => backups::run(client, c, cli.output).await,
        Command::Runs(c) => runs::run(client, c, cli.output).await,
        Command::Workers(c) => workers::run(client, c, cli.output).await,
        Command::Verify(o) => verify::run(client, o, cli.output).await,
        Command::Purge(o) => purge::run(client, o, cli.output).await,
        Command::Schedule(c) => schedule::run(client, c, cli.output).await,
    }
}

async fn connect(url: &str) -> anyhow::Result<CoordinatorClient<Channel>> {
    let ep = tonic::transport::Endpoint::from_shared(url.to_string())
        .with_context(|| format!("invalid coordinator URL {url:?}"))?
        .connect_timeout(Duration::from_secs(5));
    let channel = ep
        .connect()
        .await
        .with_context(|| format!("cannot reach the coordinator at {url}"))?;
    Ok(CoordinatorClient::new(channel)
        .max_decoding_message_size(ringvault_common::service::MAX_GRPC_MESSAGE)
        .max_encoding_message_size(ringvault_common::service::MAX_GRPC_MESSAGE))
}

/// Limit flags shared by `backup` and `schedule add`; unset ones take the coordinator's.
#[derive(Debug, clap::Args)]
pub struct LimitArgs {
    /// Upload bandwidth cap per node (e.g. 50M; default: the coordinator's --upload-bandwidth).
    #[arg(long, value_parser = crate::units::parse_bytes)]
    pub bandwidth: Option<u64>,
    /// Parts in flight per node.
    #[arg(long)]
    pub concurrency: Option<u32>,
    /// Nodes that snapshot and upload at the same time.
    #[arg(long)]
    pub nodes_at_once: Option<u32>,
}

impl LimitArgs {
    /// As sent to the coordinator (0 = not set).
    pub fn to_proto(&self) -> ringvault_proto::v1::RunLimits {
        ringvault_proto::v1::RunLimits {
            upload_concurrency: self.concurrency.unwrap_or(0),
            upload_bandwidth: self.bandwidth.unwrap_or(0),
            nodes_at_once: self.nodes_at_once.unwrap_or(0),
        }
    }
}

/// Turns a gRPC status into an error carrying the server's message.
pub fn status(e: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", e.message())
}
