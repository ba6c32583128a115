//! TLS material from PEM files, reloaded when the files change on disk so certificates rotate
//! without a restart: every new connection (accepted or opened) takes the configuration built
//! from the files as they are now. A half-written rotation (a file that does not parse) keeps
//! the last good configuration and logs why.
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::SecurityError;

/// The TLS flags every ringvault binary takes.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// PEM file of the CA that signs every ringvault certificate (peers are verified against it).
    #[arg(long, env = "RINGVAULT_TLS_CA", value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// PEM certificate (chain) of this component, naming its ringvault identity.
    #[arg(long, env = "RINGVAULT_TLS_CERT", value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "RINGVAULT_TLS_KEY", value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
    /// Serve and call plain text (no TLS, no identities: every caller may do everything). Only
    /// on loopback addresses; meant for a single-machine test bed.
    #[arg(long, env = "RINGVAULT_INSECURE_LOOPBACK")]
    pub insecure_loopback: bool,
}

impl TlsArgs {
    /// The reloading TLS material named by the flags: `None` when no TLS file is given.
    /// With a CA but no certificate, a client can still verify servers (token users).
    pub fn load(&self) -> Result<Option<Arc<ReloadingTls>>, SecurityError> {
        match (&self.tls_ca, &self.tls_cert, &self.tls_key) {
            (None, None, None) => Ok(None),
            (Some(ca), cert, key) => {
                let own = match (cert, key) {
                    (Some(c), Some(k)) => Some((c.clone(), k.clone())),
                    (None, None) => None,
                    _ => {
                        return Err(SecurityError::Config(
                            "--tls-cert and --tls-key go together".into(),
                        ));
                    }
                };
                let tls = ReloadingTls::new(ca.clone(), own);
                tls.current()?;
                Ok(Some(Arc::new(tls)))
            }
            (None, _, _) => Err(SecurityError::Config(
                "--tls-cert/--tls-key need --tls-ca (the CA that verifies the other side)".into(),
            )),
        }
    }
}

/// TLS configurations built from files, rebuilt when a file's modification time or size
/// changes.
pub struct ReloadingTls {
    ca: PathBuf,
    own: Option<(PathBuf, PathBuf)>,
    built: Mutex<Option<Built>>,
}

#[derive(Clone)]
struct Built {
    stamp: Vec<Option<(SystemTime, u64)>>,
    server: Option<Arc<ServerConfig>>,
    client: Arc<ClientConfig>,
}

const ALPN_H2: &[u8] = b"h2";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl ReloadingTls {
    /// TLS material from a CA file and optionally this component's certificate and key.
    pub fn new(ca: PathBuf, own: Option<(PathBuf, PathBuf)>) -> Self {
        Self {
            ca,
            own,
            built: Mutex::new(None),
        }
    }

    fn paths(&self) -> Vec<&Path> {
        let mut p = vec![self.ca.as_path()];
        if let Some((c, k)) = &self.own {
            p.push(c);
            p.push(k);
        }
        p
    }

    fn stamp(&self) -> Vec<Option<(SystemTime, u64)>> {
        self.paths()
            .into_iter()
            .map(|p| {
                std::fs::metadata(p)
                    .ok()
                    .and_then(|m| Some((m.modified().ok()?, m.len())))
            })
            .collect()
    }

    /// The server configuration as the files are now (needs this component's certificate).
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, SecurityError> {
        self.current()?.server.ok_or_else(|| {
            SecurityError::Config("serving TLS needs --tls-cert and --tls-key".into())
        })
    }

    /// The client configuration as the files are now.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, SecurityError> {
        Ok(self.current()?.client)
    }

    fn current(&self) -> Result<Built, SecurityError> {
        let stamp = self.stamp();
        let mut guard = self.built.lock().map_err(|_| SecurityError::Poisoned)?;
        if let Some(b) = guard.as_ref()
            && b.stamp == stamp
        {
            return Ok(b.clone());
        }
        match self.build(stamp) {
            Ok(b) => {
                if guard.is_some() {
                    tracing::info!(ca = %self.ca.display(), "TLS files changed on disk: new connections use them");
                }
                *guard = Some(b.clone());
                Ok(b)
            }
            Err(e) => match guard.as_ref() {
                Some(old) => {
                    tracing::warn!(error = %e, "TLS files changed but do not load; keeping the previous ones");
                    Ok(old.clone())
                }
                None => Err(e),
            },
        }
    }

    fn build(&self, stamp: Vec<Option<(SystemTime, u64)>>) -> Result<Built, SecurityError> {
        let roots = Arc::new(load_roots(&self.ca)?);
        let own = match &self.own {
            Some((c, k)) => Some((load_certs(c)?, load_key(k)?)),
            None => None,
        };
        let server = match &own {
            Some((certs, key)) => {
                // A client without a certificate may still connect (a CLI user with a bearer
                // token); the authorization layer refuses calls that carry neither.
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), provider())
                        .allow_unauthenticated()
                        .build()
                        .map_err(|e| SecurityError::Config(format!("client verifier: {e}")))?;
                let mut cfg = ServerConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| SecurityError::Config(e.to_string()))?
                    .with_client_cert_verifier(verifier)
                    .with_single_cert(certs.clone(), key.clone_key())
                    .map_err(|e| {
                        SecurityError::Config(format!("certificate and key do not match: {e}"))
                    })?;
                cfg.alpn_protocols = vec![ALPN_H2.to_vec()];
                Some(Arc::new(cfg))
            }
            None => None,
        };
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| SecurityError::Config(e.to_string()))?
            .with_root_certificates(Arc::clone(&roots));
        let mut client = match own {
            Some((certs, key)) => builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| SecurityError::Config(format!("client certificate: {e}")))?,
            None => builder.with_no_client_auth(),
        };
        client.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(Built {
            stamp,
            server,
            client: Arc::new(client),
        })
    }
}

fn read(path: &Path) -> Result<Vec<u8>, SecurityError> {
    std::fs::read(path).map_err(|e| SecurityError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, SecurityError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SecurityError::File {
            path: path.to_path_buf(),
            reason: format!("not a PEM certificate: {e}"),
        })?;
    if certs.is_empty() {
        return Err(SecurityError::File {
            path: path.to_path_buf(),
            reason: "holds no PEM certificate".into(),
        });
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, SecurityError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| SecurityError::File {
        path: path.to_path_buf(),
        reason: format!("not a PEM private key: {e}"),
    })
}

fn load_roots(path: &Path) -> Result<RootCertStore, SecurityError> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(path)? {
        roots.add(c).map_err(|e| SecurityError::File {
            path: path.to_path_buf(),
            reason: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}
