//! `ringvault certs`: makes (or reuses) a private CA in a directory and issues the certificates
//! every hop's mutual TLS needs: the coordinator's, one per worker (bound to a cluster), and CLI
//! users with a role; plain server certificates for services beside ringvault (the store's
//! server); optionally bearer tokens for users without certificates. Works offline.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use ringvault_common::security::certs::{CertAuthority, write_file};
use ringvault_common::security::{Identity, Role, tokens};
use serde_json::json;

use crate::output::{self, Format};

/// Options of `ringvault certs`.
#[derive(Debug, clap::Args)]
pub struct CertsOptions {
    /// Directory for the CA (ca.pem, ca.key: reused when present) and the certificates.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Issue the coordinator's certificate, valid for these host names or IP addresses.
    #[arg(long, value_name = "HOST,...", value_delimiter = ',')]
    pub coordinator: Vec<String>,
    /// Issue a worker certificate: NAME=HOST[,HOST...] (repeat); needs --cluster.
    #[arg(long, value_name = "NAME=HOSTS")]
    pub worker: Vec<String>,
    /// The Cassandra cluster name workers' certificates are bound to.
    #[arg(long)]
    pub cluster: Option<String>,
    /// Issue a CLI user certificate: NAME:ROLE (viewer, operator, admin; repeat).
    #[arg(long, value_name = "NAME:ROLE")]
    pub user: Vec<String>,
    /// Issue a plain TLS server certificate for a service beside ringvault (the store's S3
    /// server, an emulator): NAME=HOST[,HOST...] (repeat); writes server-NAME.pem/.key. It
    /// carries no ringvault identity, so it cannot authenticate to ringvault.
    #[arg(long, value_name = "NAME=HOSTS")]
    pub server: Vec<String>,
    /// Make a bearer token for a user without a certificate: NAME:ROLE (repeat). Writes
    /// NAME.token (0600) and appends its digest to `tokens` (the coordinator's --tokens-file).
    #[arg(long, value_name = "NAME:ROLE")]
    pub token: Vec<String>,
}

fn name_role(s: &str) -> anyhow::Result<(String, Role)> {
    let (name, role) = s
        .rsplit_once(':')
        .with_context(|| format!("{s:?}: expected NAME:ROLE"))?;
    anyhow::ensure!(
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b)),
        "user name {name:?}: letters, digits and - _ . @ only"
    );
    Ok((name.to_string(), Role::parse(role)?))
}

fn file_name(s: &str) -> anyhow::Result<&str> {
    anyhow::ensure!(
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            && !s.starts_with('.'),
        "name {s:?}: letters, digits and - _ . only (it becomes a file name)"
    );
    Ok(s)
}

/// Writes what was asked and lists the files.
pub fn run(o: CertsOptions, format: Format) -> anyhow::Result<ExitCode> {
    // Parse everything before writing anything.
    let users = o
        .user
        .iter()
        .map(|u| name_role(u))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let token_users = o
        .token
        .iter()
        .map(|u| name_role(u))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut workers = Vec::new();
    for w in &o.worker {
        let (name, hosts) = w
            .split_once('=')
            .with_context(|| format!("--worker {w:?}: expected NAME=HOST[,HOST...]"))?;
        let cluster = o
            .cluster
            .clone()
            .context("--worker needs --cluster (the Cassandra cluster name)")?;
        let hosts: Vec<String> = hosts.split(',').map(str::to_string).collect();
        anyhow::ensure!(
            hosts.iter().all(|h| !h.is_empty()),
            "--worker {w:?}: empty host"
        );
        workers.push((file_name(name)?.to_string(), cluster, hosts));
    }
    let mut servers = Vec::new();
    for w in &o.server {
        let (name, hosts) = w
            .split_once('=')
            .with_context(|| format!("--server {w:?}: expected NAME=HOST[,HOST...]"))?;
        let hosts: Vec<String> = hosts.split(',').map(str::to_string).collect();
        anyhow::ensure!(
            hosts.iter().all(|h| !h.is_empty()),
            "--server {w:?}: empty host"
        );
        servers.push((file_name(name)?.to_string(), hosts));
    }
    for (n, _) in users.iter().chain(&token_users) {
        file_name(n)?;
    }
    let ca = CertAuthority::load_or_create(&o.out, "ringvault CA")?;
    let mut written = vec![o.out.join("ca.pem")];
    if !o.coordinator.is_empty() {
        let (c, _) = ca.write(
            &o.out,
            "coordinator",
            &Identity::Coordinator,
            &o.coordinator,
        )?;
        written.push(c);
    }
    for (name, cluster, hosts) in workers {
        let (c, _) = ca.write(
            &o.out,
            &format!("worker-{name}"),
            &Identity::Worker {
                cluster,
                name: name.clone(),
            },
            &hosts,
        )?;
        written.push(c);
    }
    for (name, hosts) in servers {
        let (c, _) = ca.write_server(&o.out, &format!("server-{name}"), &hosts)?;
        written.push(c);
    }
    for (name, role) in users {
        let (c, _) = ca.write(
            &o.out,
            &format!("user-{name}"),
            &Identity::User {
                name: name.clone(),
                role,
            },
            &[],
        )?;
        written.push(c);
    }
    if !token_users.is_empty() {
        let tokens_path = o.out.join("tokens");
        let mut lines = std::fs::read_to_string(&tokens_path).unwrap_or_default();
        for (name, role) in token_users {
            let (token, line) = tokens::new_token(&name, role);
            let path = o.out.join(format!("{name}.token"));
            write_file(&path, format!("{token}\n").as_bytes(), 0o600)?;
            lines.push_str(&line);
            lines.push('\n');
            written.push(path);
        }
        write_file(&tokens_path, lines.as_bytes(), 0o600)?;
        written.push(tokens_path);
    }
    match format {
        Format::Json => output::print_json(&json!({
            "dir": o.out.display().to_string(),
            "files": written.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        })),
        Format::Human => {
            for p in &written {
                println!("{}", p.display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
