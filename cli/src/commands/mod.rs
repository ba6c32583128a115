//! Command-line parsing and dispatch, one file per command.
mod backup;
mod backups;
mod certs;
mod completions;
mod health;
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
    /// Check a coordinator's or worker's gRPC health (exit 0 when serving).
    Health(health::HealthOptions),
    /// Print a shell completion script (bash, zsh, fish): e.g.
    /// `ringvault completions bash > /etc/bash_completion.d/ringvault`.
    Completions(completions::CompletionsOptions),
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Certs(o) = cli.command {
        return certs::run(o, cli.output);
    }
    if let Command::Completions(o) = cli.command {
        return completions::run(o);
    }
    if let Command::Health(o) = cli.command {
        return health::run(o, &cli.coordinator, &cli.tls, cli.output).await;
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
        Command::Certs(_) | Command::Completions(_) | Command::Health(_) => {
            unreachable!("handled before connecting")
        }
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

/// A call the coordinator refused or failed, kept with its gRPC code so `main` can exit with
/// the code's class (see [`exit_code_for`]).
#[derive(Debug)]
pub struct CallError {
    pub code: tonic::Code,
    pub message: String,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.code {
            tonic::Code::Unauthenticated => write!(f, "unauthenticated: {}", self.message),
            tonic::Code::PermissionDenied => write!(f, "permission denied: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for CallError {}

/// Bad input caught by the CLI itself, before any call: exits like a refused request.
pub fn bad_input(msg: &str) -> anyhow::Error {
    status(tonic::Status::invalid_argument(msg))
}

/// Turns a gRPC status into an error carrying the server's message and code.
pub fn status(e: tonic::Status) -> anyhow::Error {
    anyhow::Error::new(CallError {
        code: e.code(),
        message: e.message().to_string(),
    })
}

/// Exit codes, one per class of outcome (documented in the README):
pub mod exit {
    /// Done as asked.
    pub const OK: u8 = 0;
    /// A local failure: a file that cannot be read, the CLI's own error.
    pub const LOCAL: u8 = 1;
    /// The command ran, but what it checked or ran failed (a failed run, a verify problem).
    pub const FAILED: u8 = 2;
    /// Bad input: a malformed request, or one refused in the current state.
    pub const INVALID: u8 = 3;
    /// What the request names does not exist.
    pub const NOT_FOUND: u8 = 4;
    /// Another operation holds what this one needs (a run on the cluster, a schedule id).
    pub const CONFLICT: u8 = 5;
    /// The coordinator, a node or the store could not be reached or was busy: retry later.
    pub const UNAVAILABLE: u8 = 6;
    /// Not authenticated, or not allowed.
    pub const DENIED: u8 = 7;
    /// The coordinator failed internally.
    pub const INTERNAL: u8 = 8;
}

/// The exit code for a failed gRPC call's code.
pub fn exit_code_for(code: tonic::Code) -> u8 {
    use tonic::Code as C;
    match code {
        C::Ok => exit::OK,
        C::InvalidArgument | C::FailedPrecondition | C::OutOfRange => exit::INVALID,
        C::NotFound => exit::NOT_FOUND,
        C::AlreadyExists | C::Aborted => exit::CONFLICT,
        C::Unavailable | C::DeadlineExceeded | C::ResourceExhausted | C::Cancelled => {
            exit::UNAVAILABLE
        }
        C::Unauthenticated | C::PermissionDenied => exit::DENIED,
        C::Internal | C::Unknown | C::DataLoss | C::Unimplemented => exit::INTERNAL,
    }
}

/// The exit code and message for an error that ended the command.
pub fn describe_failure(e: &anyhow::Error) -> (u8, String) {
    if let Some(call) = e.chain().find_map(|c| c.downcast_ref::<CallError>()) {
        let code = exit_code_for(call.code);
        return (code, format!("{e:#} [{}]", code_name(call.code)));
    }
    if e.chain()
        .any(|c| c.downcast_ref::<tonic::transport::Error>().is_some())
    {
        return (exit::UNAVAILABLE, format!("{e:#}"));
    }
    (exit::LOCAL, format!("{e:#}"))
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code as C;
    match code {
        C::InvalidArgument => "invalid-argument",
        C::FailedPrecondition => "refused",
        C::OutOfRange => "out-of-range",
        C::NotFound => "not-found",
        C::AlreadyExists => "already-exists",
        C::Aborted => "conflict",
        C::Unavailable => "unavailable",
        C::DeadlineExceeded => "deadline-exceeded",
        C::ResourceExhausted => "resource-exhausted",
        C::Cancelled => "cancelled",
        C::Unauthenticated => "unauthenticated",
        C::PermissionDenied => "permission-denied",
        C::Internal => "internal",
        C::Unknown => "unknown",
        C::DataLoss => "data-loss",
        C::Unimplemented => "unimplemented",
        C::Ok => "ok",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_class_of_failure_has_its_own_exit_code() {
        let cases = [
            (tonic::Code::InvalidArgument, exit::INVALID),
            (tonic::Code::FailedPrecondition, exit::INVALID),
            (tonic::Code::NotFound, exit::NOT_FOUND),
            (tonic::Code::Aborted, exit::CONFLICT),
            (tonic::Code::Unavailable, exit::UNAVAILABLE),
            (tonic::Code::PermissionDenied, exit::DENIED),
            (tonic::Code::Internal, exit::INTERNAL),
        ];
        for (code, want) in cases {
            let e = status(tonic::Status::new(code, "m")).context("calling");
            let (got, msg) = describe_failure(&e);
            assert_eq!(got, want, "{code:?}: {msg}");
            assert!(msg.starts_with("calling: "), "{msg}");
        }
        let (code, msg) = describe_failure(&status(tonic::Status::permission_denied("no")));
        assert_eq!(code, exit::DENIED);
        assert!(msg.contains("permission denied: no"), "{msg}");
        assert_eq!(describe_failure(&anyhow::anyhow!("disk")).0, exit::LOCAL);
        let distinct: std::collections::BTreeSet<u8> = [
            exit::OK,
            exit::LOCAL,
            exit::FAILED,
            exit::INVALID,
            exit::NOT_FOUND,
            exit::CONFLICT,
            exit::UNAVAILABLE,
            exit::DENIED,
            exit::INTERNAL,
        ]
        .into();
        assert_eq!(distinct.len(), 9);
    }
}
