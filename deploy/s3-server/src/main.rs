//! `rv-s3-server`: the S3-compatible server of the compose stack's default store and of the
//! store-CA tests. It is s3s-fs (the same server and storage code the test bed runs) with what
//! s3s-fs lacks for a deployment: TLS (ringvault sends S3 credentials only over https to
//! anything but loopback) and credentials read from the environment or from files, never from
//! the command line. Buckets named with `--bucket` exist once it listens.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Parser;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// An S3-compatible server over TLS, storing objects as files under a directory.
#[derive(Debug, Parser)]
#[command(name = "rv-s3-server", version)]
struct Opts {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:9000", env = "RV_S3_LISTEN")]
    listen: String,
    /// Directory holding the buckets (one subdirectory each).
    #[arg(long, env = "RV_S3_ROOT")]
    root: PathBuf,
    /// Buckets to create at start (repeat or comma-separate).
    #[arg(long = "bucket", env = "RV_S3_BUCKETS", value_delimiter = ',')]
    buckets: Vec<String>,
    /// Server certificate chain (PEM). Without --tls-cert/--tls-key the server speaks plain
    /// http and listens on loopback only.
    #[arg(long, env = "RV_S3_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "RV_S3_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// File holding the access key id (or set RV_S3_ACCESS_KEY).
    #[arg(long, env = "RV_S3_ACCESS_KEY_FILE")]
    access_key_file: Option<PathBuf>,
    /// File holding the secret access key (or set RV_S3_SECRET_KEY).
    #[arg(long, env = "RV_S3_SECRET_KEY_FILE")]
    secret_key_file: Option<PathBuf>,
}

/// A credential from `FILE` (trimmed) or else from the environment variable `var`.
fn secret(file: Option<&Path>, var: &str) -> anyhow::Result<String> {
    let value = match file {
        Some(f) => std::fs::read_to_string(f)
            .with_context(|| format!("reading {}", f.display()))?
            .trim()
            .to_string(),
        None => std::env::var(var).unwrap_or_default(),
    };
    if value.is_empty() {
        bail!(
            "no {var}: set it, or name a file with --{}-file",
            var_flag(var)
        );
    }
    Ok(value)
}

fn var_flag(var: &str) -> &'static str {
    if var.ends_with("ACCESS_KEY") {
        "access-key"
    } else {
        "secret-key"
    }
}

fn tls_acceptor(cert: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    let certs = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", cert.display()))?;
    if certs.is_empty() {
        bail!("no certificate in {}", cert.display());
    }
    let key =
        PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("server certificate and key")?;
    // HTTP/1.1 only: s3s answers a HEAD of a missing object with a body that HTTP/2 refuses
    // (PROTOCOL_ERROR), and the SDKs speak HTTP/1.1 to S3 anyway.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let opts = Opts::parse();
    let access = secret(opts.access_key_file.as_deref(), "RV_S3_ACCESS_KEY")?;
    let secret_key = secret(opts.secret_key_file.as_deref(), "RV_S3_SECRET_KEY")?;
    let tls = match (&opts.tls_cert, &opts.tls_key) {
        (Some(c), Some(k)) => Some(tls_acceptor(c, k)?),
        _ => None,
    };
    std::fs::create_dir_all(&opts.root)
        .with_context(|| format!("creating {}", opts.root.display()))?;
    for b in &opts.buckets {
        let valid = (3..=63).contains(&b.len())
            && b.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.');
        if !valid {
            bail!("bucket name {b:?}: 3-63 characters of a-z, 0-9, '-' and '.'");
        }
        std::fs::create_dir_all(opts.root.join(b))
            .with_context(|| format!("creating bucket {b}"))?;
    }
    let fs = s3s_fs::FileSystem::new(&opts.root).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let service = {
        let mut b = S3ServiceBuilder::new(fs);
        b.set_auth(SimpleAuth::from_single(access, secret_key));
        b.build()
    };
    let listener = TcpListener::bind(&opts.listen)
        .await
        .with_context(|| format!("listening on {}", opts.listen))?;
    let local = listener.local_addr()?;
    if tls.is_none() && !local.ip().is_loopback() {
        bail!(
            "without --tls-cert/--tls-key the server listens on loopback only (credentials would travel in clear)"
        );
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(buckets = ?opts.buckets, "S3 server listening on {scheme}://{local}");
    // Stop on SIGTERM/SIGINT (as a container's first process nothing else would).
    tokio::spawn(async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "no SIGTERM handler");
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("stopping");
        std::process::exit(0);
    });
    let http = ConnBuilder::new(TokioExecutor::new());
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        let (http, service, tls) = (http.clone(), service.clone(), tls.clone());
        tokio::spawn(async move {
            let served = match tls {
                Some(tls) => match tls.accept(socket).await {
                    Ok(s) => http.serve_connection(TokioIo::new(s), service).await,
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                },
                None => http.serve_connection(TokioIo::new(socket), service).await,
            };
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}
