//! Making certificates: a private CA and, signed by it, certificates for the coordinator,
//! workers and CLI users, each naming its ringvault identity in a URI SAN. What
//! `ringvault certs` writes, and what the test bed and tests use. Keys are written 0600.
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use super::SecurityError;
use super::identity::Identity;

fn err(e: impl std::fmt::Display) -> SecurityError {
    SecurityError::Config(format!("making a certificate: {e}"))
}

/// A CA that signs certificates; loaded from or written to `<dir>/ca.pem` + `<dir>/ca.key`.
pub struct CertAuthority {
    cert_pem: String,
    key: KeyPair,
}

impl CertAuthority {
    /// Loads the CA in `dir` if there is one, or creates it.
    pub fn load_or_create(dir: &Path, common_name: &str) -> Result<Self, SecurityError> {
        let (cert, key) = (dir.join("ca.pem"), dir.join("ca.key"));
        if cert.exists() && key.exists() {
            let read = |p: &Path| {
                std::fs::read_to_string(p).map_err(|e| SecurityError::File {
                    path: p.to_path_buf(),
                    reason: e.to_string(),
                })
            };
            let key = KeyPair::from_pem(&read(&key)?).map_err(err)?;
            return Ok(Self {
                cert_pem: read(&cert)?,
                key,
            });
        }
        std::fs::create_dir_all(dir).map_err(|e| SecurityError::File {
            path: dir.to_path_buf(),
            reason: e.to_string(),
        })?;
        let ca = Self::generate(common_name)?;
        write_file(&cert, ca.cert_pem.as_bytes(), 0o644)?;
        write_file(&key, ca.key.serialize_pem().as_bytes(), 0o600)?;
        Ok(ca)
    }

    /// A new CA in memory.
    pub fn generate(common_name: &str) -> Result<Self, SecurityError> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        dn.push(DnType::OrganizationName, "ringvault");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2036, 1, 1);
        let key = KeyPair::generate().map_err(err)?;
        let cert = params.self_signed(&key).map_err(err)?;
        Ok(Self {
            cert_pem: cert.pem(),
            key,
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Signs a certificate for `identity`, valid as server for `hosts` (DNS names or IP
    /// addresses) and as client. Returns (certificate PEM, key PEM).
    pub fn issue(
        &self,
        identity: &Identity,
        hosts: &[String],
    ) -> Result<(String, String), SecurityError> {
        self.sign(Some(identity), hosts)
    }

    /// Signs a plain TLS server certificate for `hosts`, with no ringvault identity (so it can
    /// never authenticate to a ringvault service): for servers beside ringvault, such as the
    /// store's S3 server. Returns (certificate PEM, key PEM).
    pub fn issue_server(&self, hosts: &[String]) -> Result<(String, String), SecurityError> {
        self.sign(None, hosts)
    }

    fn sign(
        &self,
        identity: Option<&Identity>,
        hosts: &[String],
    ) -> Result<(String, String), SecurityError> {
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, &self.key).map_err(err)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        let mut dn = DistinguishedName::new();
        let cn = match identity {
            Some(i) => i.to_string(),
            None => hosts.first().cloned().unwrap_or_default(),
        };
        dn.push(DnType::CommonName, cn);
        dn.push(DnType::OrganizationName, "ringvault");
        params.distinguished_name = dn;
        if let Some(identity) = identity {
            params
                .subject_alt_names
                .push(SanType::URI(identity.to_uri().try_into().map_err(err)?));
        }
        for h in hosts {
            params.subject_alt_names.push(match h.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(h.clone().try_into().map_err(err)?),
            });
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = match identity {
            Some(_) => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            None => vec![ExtendedKeyUsagePurpose::ServerAuth],
        };
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2036, 1, 1);
        let key = KeyPair::generate().map_err(err)?;
        let cert = params.signed_by(&key, &issuer).map_err(err)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Issues a certificate and writes `<dir>/<name>.pem` and `<dir>/<name>.key` (0600).
    pub fn write(
        &self,
        dir: &Path,
        name: &str,
        identity: &Identity,
        hosts: &[String],
    ) -> Result<(PathBuf, PathBuf), SecurityError> {
        let (cert, key) = self.issue(identity, hosts)?;
        self.write_pair(dir, name, &cert, &key)
    }

    /// Issues a plain server certificate ([`Self::issue_server`]) and writes
    /// `<dir>/<name>.pem` and `<dir>/<name>.key` (0600).
    pub fn write_server(
        &self,
        dir: &Path,
        name: &str,
        hosts: &[String],
    ) -> Result<(PathBuf, PathBuf), SecurityError> {
        let (cert, key) = self.issue_server(hosts)?;
        self.write_pair(dir, name, &cert, &key)
    }

    fn write_pair(
        &self,
        dir: &Path,
        name: &str,
        cert: &str,
        key: &str,
    ) -> Result<(PathBuf, PathBuf), SecurityError> {
        let (cp, kp) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        write_file(&cp, cert.as_bytes(), 0o644)?;
        write_file(&kp, key.as_bytes(), 0o600)?;
        Ok((cp, kp))
    }
}

/// Writes a file through a temporary name and renames it into place (a reloading reader never
/// sees half a file), with `mode` permissions from the start.
pub fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), SecurityError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |e: std::io::Error| SecurityError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}
