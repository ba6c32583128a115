//! `ringvault health [URL]`: the standard gRPC health check (`grpc.health.v1`) against the
//! coordinator or a worker. Exists for container health checks and probes, which need a
//! client inside the image: it needs only the CA (health is open to any TLS client) and exits
//! 0 when the service is SERVING.
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::output::{self, Format};

/// Options of `ringvault health`.
#[derive(Debug, clap::Args)]
pub struct HealthOptions {
    /// The server to check (default: --coordinator); a worker's URL checks that worker.
    pub url: Option<String>,
    /// The service to ask about (default: the server as a whole).
    #[arg(long, default_value = "")]
    pub service: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 5)]
    pub timeout_secs: u64,
}

/// Asks the server and prints its status.
pub async fn run(
    o: HealthOptions,
    coordinator: &str,
    tls: &ringvault_common::security::TlsArgs,
    format: Format,
) -> anyhow::Result<ExitCode> {
    let url = o.url.as_deref().unwrap_or(coordinator);
    let timeout = Duration::from_secs(o.timeout_secs.max(1));
    let security = ringvault_common::security::ClientSecurity { tls: tls.load()? };
    let channel = security
        .connect(url, |ep| ep.connect_timeout(timeout).timeout(timeout))
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: o.service.clone(),
        })
        .await
        .map_err(super::status)
        .with_context(|| format!("health check of {url}"))?
        .into_inner()
        .status();
    let serving = status == ServingStatus::Serving;
    match format {
        Format::Json => output::print_json(&json!({
            "url": url, "service": o.service, "status": status.as_str_name(), "serving": serving,
        })),
        Format::Human => println!("{url}: {}", status.as_str_name()),
    }
    Ok(if serving {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
