//! Security of every gRPC hop (CLI → coordinator, coordinator → worker, worker → registry):
//! mutual TLS from PEM files that rotate without a restart ([`tls`]), servers that hand each
//! call the identity of its peer ([`serve`]), clients that refuse plain text off loopback
//! ([`connect`]), the identities and roles certificates and tokens carry ([`identity`],
//! [`tokens`]), the authorization layer and the per-server policies ([`authz`]), the store
//! allowlists that keep a caller from aiming a component's credentials elsewhere ([`allow`]),
//! and the certificate maker behind `ringvault certs` ([`certs`]).
pub mod allow;
pub mod authz;
pub mod certs;
pub mod connect;
pub mod identity;
pub mod serve;
pub mod tls;
pub mod tokens;

use std::path::PathBuf;

pub use allow::StoreAllowlist;
pub use authz::{AuthLayer, Principal};
pub use connect::ClientSecurity;
pub use identity::{Identity, Role};
pub use serve::{PeerInfo, ServerSecurity};
pub use tls::{ReloadingTls, TlsArgs};

/// What can go wrong setting up or applying security.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("{0}")]
    Config(String),
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("{url}: {reason}")]
    Url { url: String, reason: String },
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("store {url} refused: {reason}")]
    StoreNotAllowed { url: String, reason: String },
    #[error("internal lock poisoned")]
    Poisoned,
}

/// The ringvault identity a verified leaf certificate (DER) names in its URI SANs: exactly one
/// `urn:ringvault:` URI must be present.
pub fn identity_of_certificate(der: &[u8]) -> Result<Identity, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("unparsable certificate: {e}"))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("bad subjectAltName: {e}"))?
        .ok_or("the certificate has no subjectAltName")?;
    let uris: Vec<&str> = san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) if u.starts_with("urn:ringvault:") => {
                Some(*u)
            }
            _ => None,
        })
        .collect();
    match uris.as_slice() {
        [one] => Identity::from_uri(one).map_err(|e| e.to_string()),
        [] => Err("no urn:ringvault: URI in subjectAltName".into()),
        _ => Err("more than one urn:ringvault: URI in subjectAltName".into()),
    }
}

/// Creates `path` if missing and makes it readable by its owner only (0600), before a database
/// is opened on it (SQLite gives its -wal and -shm files the database file's mode).
pub fn create_owner_only(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

/// Environment variables a child process (nodetool, sstableloader) must not inherit: cloud
/// credentials and ringvault's own settings.
pub fn is_secret_env(name: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "AWS_",
        "AZURE_",
        "GOOGLE_",
        "GCS_",
        "GCLOUD_",
        "CLOUDSDK_",
        "RINGVAULT_",
        "STORAGE_EMULATOR_HOST",
    ];
    let upper = name.to_ascii_uppercase();
    PREFIXES.iter().any(|p| upper.starts_with(p))
}

/// Removes [`is_secret_env`] variables from a command's environment.
pub fn scrub_child_env(cmd: &mut tokio::process::Command) {
    for (k, _) in std::env::vars_os() {
        if let Some(name) = k.to_str()
            && is_secret_env(name)
        {
            cmd.env_remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_name_their_identity() {
        let ca = certs::CertAuthority::generate("test").unwrap();
        let id = Identity::Worker {
            cluster: "Test Cluster".into(),
            name: "n1".into(),
        };
        let (pem, _key) = ca.issue(&id, &["127.0.0.1".into()]).unwrap();
        let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        assert_eq!(identity_of_certificate(der.as_ref()).unwrap(), id);
    }

    #[test]
    fn cloud_credentials_are_secret_env() {
        for s in [
            "AWS_SECRET_ACCESS_KEY",
            "AZURE_STORAGE_KEY",
            "GOOGLE_APPLICATION_CREDENTIALS",
        ] {
            assert!(is_secret_env(s));
        }
        assert!(!is_secret_env("JAVA_HOME") && !is_secret_env("PATH"));
    }
    use rustls::pki_types::pem::PemObject;
}
