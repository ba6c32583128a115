//! Command-line parsing and dispatch, one file per command.
mod backup;
mod backups;
mod certs;
mod purge;
mod restore;
pub(crate) mod restore_test;
mod runs;
mod schedule;
mod verify;
mod workers;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ringvault_proto::v1::coordinator_client::CoordinatorClient;
use tonic::service::interceptor::InterceptedService;
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
    /// File holding a bearer token (for users without a client certificate; sent over TLS only).
    #[arg(long, global = true, env = "RINGVAULT_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub tls: ringvault_common::security::TlsArgs,
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
    /// Make a private CA and certificates for the coordinator, workers and CLI users (offline).
    Certs(certs::CertsOptions),
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Certs(o) = cli.command {
        return certs::run(o, cli.output);
    }
    let client = connect(&cli).await?;
    match cli.command {
        Command::Backup(o) => backup::run(client, o, cli.output).await,
        Command::Restore(o) => restore::run(client, o, cli.output).await,
        Command::Backups(c) => backups::run(client, c, cli.output).await,
        Command::Runs(c) => runs::run(client, c, cli.output).await,
        Command::Workers(c) => workers::run(client, c, cli.output).await,
        Command::Verify(o) => verify::run(client, o, cli.output).await,
        Command::Purge(o) => purge::run(client, o, cli.output).await,
        Command::Schedule(c) => schedule::run(client, c, cli.output).await,
        Command::Certs(_) => unreachable!("handled before connecting"),
    }
}

/// The coordinator client every command uses: TLS channel plus the bearer token, if any.
pub type Client = CoordinatorClient<InterceptedService<Channel, BearerToken>>;

/// Adds `authorization: Bearer <token>` to every call when a token file was given.
#[derive(Clone)]
pub struct BearerToken(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

async fn connect(cli: &Cli) -> anyhow::Result<Client> {
    let url = &cli.coordinator;
    let token = match &cli.token_file {
        Some(path) => {
            anyhow::ensure!(
                url.starts_with("https://"),
                "a bearer token is sent over https:// only, not to {url}"
            );
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading token file {}", path.display()))?;
            let mut v: tonic::metadata::MetadataValue<tonic::metadata::Ascii> =
                format!("Bearer {}", text.trim()).parse().with_context(|| {
                    format!("token file {} holds no usable token", path.display())
                })?;
            v.set_sensitive(true);
            Some(v)
        }
        None => None,
    };
    let security = ringvault_common::security::ClientSecurity {
        tls: cli.tls.load()?,
    };
    let channel = security
        .connect(url, |ep| ep.connect_timeout(Duration::from_secs(5)))
        .await
        .with_context(|| format!("cannot reach the coordinator at {url}"))?;
    Ok(
        CoordinatorClient::with_interceptor(channel, BearerToken(token))
            .max_decoding_message_size(ringvault_common::service::MAX_GRPC_MESSAGE)
            .max_encoding_message_size(ringvault_common::service::MAX_GRPC_MESSAGE),
    )
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

/// Turns a gRPC status into an error carrying the server's message (prefixed by the code when
/// the call was refused for who made it).
pub fn status(e: tonic::Status) -> anyhow::Error {
    match e.code() {
        tonic::Code::Unauthenticated => anyhow::anyhow!("unauthenticated: {}", e.message()),
        tonic::Code::PermissionDenied => anyhow::anyhow!("permission denied: {}", e.message()),
        _ => anyhow::anyhow!("{}", e.message()),
    }
}
