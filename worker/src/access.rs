//! How the worker gets into a secured Cassandra node: CQL credentials and client TLS for its
//! driver session, JMX credentials (and JMX over TLS) for `nodetool`, and the same credentials
//! and TLS settings for `sstableloader`. Secrets come from files or the environment only; they
//! never appear in a child's argv, in a log line or in an error message.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientConfig, WebPkiServerVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Environment variable holding the CQL password when no `--cql-password-file` is given (there
/// is no flag for the value itself: argv is visible to every local user).
pub const CQL_PASSWORD_ENV: &str = "RINGVAULT_CQL_PASSWORD";
/// What sstableloader's auth provider ([`LOADER_AUTH_PROVIDER`]) reads its user name from.
pub const LOADER_USERNAME_ENV: &str = "RINGVAULT_LOADER_USERNAME";
/// The file the auth provider reads the password from.
pub const LOADER_PASSWORD_FILE_ENV: &str = "RINGVAULT_LOADER_PASSWORD_FILE";
/// The password itself, when the worker got it from [`CQL_PASSWORD_ENV`] (child environment,
/// never argv).
pub const LOADER_PASSWORD_ENV: &str = "RINGVAULT_LOADER_PASSWORD";
/// The auth provider class shipped in `worker/java` (see the README).
pub const LOADER_AUTH_PROVIDER: &str = "ringvault.FileAuthProvider";

/// Command-line options for Cassandra access (flattened into the worker's options).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AccessArgs {
    /// CQL role the worker logs in as (PasswordAuthenticator). Unset: no CQL authentication.
    #[arg(long, env = "RINGVAULT_CQL_USERNAME")]
    pub cql_username: Option<String>,
    /// File whose first line is the CQL password (or set RINGVAULT_CQL_PASSWORD; the value is
    /// never taken as a flag).
    #[arg(long, env = "RINGVAULT_CQL_PASSWORD_FILE", requires = "cql_username")]
    pub cql_password_file: Option<PathBuf>,
    /// CA certificate(s), PEM, that signed the node's client_encryption_options certificate:
    /// turns on TLS for CQL.
    #[arg(long, env = "RINGVAULT_CQL_TLS_CA")]
    pub cql_tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) the worker presents to the node (with --cql-tls-key).
    #[arg(
        long,
        env = "RINGVAULT_CQL_TLS_CERT",
        requires = "cql_tls_key",
        requires = "cql_tls_ca"
    )]
    pub cql_tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --cql-tls-cert.
    #[arg(long, env = "RINGVAULT_CQL_TLS_KEY", requires = "cql_tls_cert")]
    pub cql_tls_key: Option<PathBuf>,
    /// Name the node's certificate must carry (DNS name or IP address); default: the host of
    /// --cql.
    #[arg(long, env = "RINGVAULT_CQL_TLS_SERVER_NAME", requires = "cql_tls_ca")]
    pub cql_tls_server_name: Option<String>,
    /// Accept any name in a node certificate signed by --cql-tls-ca (hostname verification is
    /// on by default; this turns it off).
    #[arg(
        long,
        env = "RINGVAULT_CQL_TLS_NO_VERIFY_HOSTNAME",
        requires = "cql_tls_ca"
    )]
    pub cql_tls_no_verify_hostname: bool,
    /// JMX user nodetool logs in as (`nodetool -u`).
    #[arg(long, env = "RINGVAULT_JMX_USERNAME", requires = "jmx_password_file")]
    pub jmx_username: Option<String>,
    /// JMX password file handed to nodetool as `-pwf` (jmxremote.password format: `USER
    /// PASSWORD` lines); the password never goes on nodetool's command line.
    #[arg(long, env = "RINGVAULT_JMX_PASSWORD_FILE", requires = "jmx_username")]
    pub jmx_password_file: Option<PathBuf>,
    /// Truststore (JKS, readable without a password) holding the CA of the node's JMX
    /// certificate: nodetool then talks JMX over TLS (`-Dssl.enable=true`).
    #[arg(long, env = "RINGVAULT_JMX_TLS_TRUSTSTORE")]
    pub jmx_tls_truststore: Option<PathBuf>,
    /// cassandra.yaml-style file handed to sstableloader as `-f`: its client_encryption_options
    /// (CQL TLS) and server_encryption_options (internode TLS for streaming); keystore
    /// passwords stay in that file.
    #[arg(long, env = "RINGVAULT_SSTABLELOADER_CONFIG")]
    pub sstableloader_config: Option<PathBuf>,
    /// AuthProvider class sstableloader loads (`-ap`) when --cql-username is set; it reads the
    /// credentials from its environment (see worker/java/ringvault/FileAuthProvider.java).
    #[arg(
        long,
        env = "RINGVAULT_SSTABLELOADER_AUTH_PROVIDER",
        default_value = LOADER_AUTH_PROVIDER
    )]
    pub sstableloader_auth_provider: String,
}

/// A secret string: never printed (Debug and Display show `***`).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// A configuration problem found before anything talks to the node.
#[derive(Debug, thiserror::Error)]
pub enum AccessConfigError {
    #[error(
        "--cql-username {user} has no password: give --cql-password-file or set {CQL_PASSWORD_ENV}"
    )]
    NoPassword { user: String },
    #[error("reading {what} {path}: {reason}")]
    File {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{0}")]
    Tls(String),
}

/// Where the CQL password came from (sstableloader's auth provider gets the same).
#[derive(Debug, Clone)]
pub enum PasswordSource {
    File(PathBuf),
    Env,
}

/// CQL login.
#[derive(Debug, Clone)]
pub struct CqlCredentials {
    pub username: String,
    pub password: Secret,
    pub source: PasswordSource,
}

/// Everything the worker needs to reach its node.
#[derive(Debug, Clone, Default)]
pub struct Access {
    pub cql: Option<CqlCredentials>,
    /// CQL client TLS (None: plain text).
    pub cql_tls: Option<Arc<ClientConfig>>,
    /// The CA file, for messages.
    pub cql_tls_ca: Option<PathBuf>,
    pub jmx: Option<JmxAccess>,
    pub loader_config: Option<PathBuf>,
    pub loader_auth_provider: String,
}

/// nodetool's JMX login and TLS.
#[derive(Debug, Clone)]
pub struct JmxAccess {
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub truststore: Option<PathBuf>,
}

impl JmxAccess {
    /// Arguments put before every nodetool subcommand (no secret: a user name and a path).
    pub fn args(&self) -> Vec<String> {
        match (&self.username, &self.password_file) {
            (Some(u), Some(f)) => vec![
                "-u".into(),
                u.clone(),
                "-pwf".into(),
                f.display().to_string(),
            ],
            _ => Vec::new(),
        }
    }

    /// Environment for nodetool's JVM: JMX over TLS with the truststore (no password in it).
    pub fn env(&self) -> Vec<(String, String)> {
        match &self.truststore {
            Some(t) => vec![(
                "JAVA_TOOL_OPTIONS".into(),
                format!(
                    "-Dssl.enable=true -Djavax.net.ssl.trustStore={}",
                    t.display()
                ),
            )],
            None => Vec::new(),
        }
    }
}

impl Access {
    /// Resolves the options: reads the password and the TLS files now, so a bad path or file
    /// stops the worker at start with its name. `cql_addr` is `--cql` (its host is the name the
    /// node's certificate is checked against unless `--cql-tls-server-name` says otherwise).
    pub fn from_args(args: &AccessArgs, cql_addr: &str) -> Result<Self, AccessConfigError> {
        let cql = match &args.cql_username {
            None => None,
            Some(user) => {
                let (password, source) = match &args.cql_password_file {
                    Some(path) => (read_password(path)?, PasswordSource::File(path.clone())),
                    None => match std::env::var(CQL_PASSWORD_ENV) {
                        Ok(v) if !v.is_empty() => (Secret(v), PasswordSource::Env),
                        _ => {
                            return Err(AccessConfigError::NoPassword { user: user.clone() });
                        }
                    },
                };
                Some(CqlCredentials {
                    username: user.clone(),
                    password,
                    source,
                })
            }
        };
        let cql_tls = match &args.cql_tls_ca {
            None => None,
            Some(ca) => {
                let own = match (&args.cql_tls_cert, &args.cql_tls_key) {
                    (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
                    _ => None,
                };
                let host = args
                    .cql_tls_server_name
                    .clone()
                    .or_else(|| default_server_name(cql_addr));
                Some(client_config(
                    ca,
                    own,
                    host.as_deref(),
                    !args.cql_tls_no_verify_hostname,
                )?)
            }
        };
        let jmx = if args.jmx_username.is_some() || args.jmx_tls_truststore.is_some() {
            if let Some(f) = &args.jmx_password_file {
                // Read once so a missing or unreadable file is named at start; nodetool reads it.
                std::fs::metadata(f).map_err(|e| AccessConfigError::File {
                    what: "JMX password file",
                    path: f.clone(),
                    reason: e.to_string(),
                })?;
            }
            Some(JmxAccess {
                username: args.jmx_username.clone(),
                password_file: args.jmx_password_file.clone(),
                truststore: args.jmx_tls_truststore.clone(),
            })
        } else {
            None
        };
        Ok(Self {
            cql,
            cql_tls,
            cql_tls_ca: args.cql_tls_ca.clone(),
            jmx,
            loader_config: args.sstableloader_config.clone(),
            loader_auth_provider: args.sstableloader_auth_provider.clone(),
        })
    }

    /// sstableloader's arguments for credentials and TLS (no secret: a path and a class
    /// name) and the environment its auth provider reads the credentials from.
    pub fn loader_args(&self) -> (Vec<String>, Vec<(String, String)>) {
        let mut args = Vec::new();
        let mut env = Vec::new();
        if let Some(f) = &self.loader_config {
            args.push("-f".to_string());
            args.push(f.display().to_string());
        }
        if let Some(c) = &self.cql {
            args.push("-ap".to_string());
            args.push(self.loader_auth_provider.clone());
            env.push((LOADER_USERNAME_ENV.to_string(), c.username.clone()));
            match &c.source {
                PasswordSource::File(p) => env.push((
                    LOADER_PASSWORD_FILE_ENV.to_string(),
                    p.display().to_string(),
                )),
                PasswordSource::Env => env.push((
                    LOADER_PASSWORD_ENV.to_string(),
                    c.password.expose().to_string(),
                )),
            }
        }
        (args, env)
    }
}

/// The host of `host:port` when it is a DNS name (an IP address is what the driver checks by
/// default).
fn default_server_name(addr: &str) -> Option<String> {
    let host = addr
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(addr)
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.is_empty() || host.parse::<std::net::IpAddr>().is_ok() {
        None
    } else {
        Some(host.to_string())
    }
}

fn read_password(path: &Path) -> Result<Secret, AccessConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| AccessConfigError::File {
        what: "CQL password file",
        path: path.to_path_buf(),
        reason: e.kind().to_string(),
    })?;
    let first = text
        .lines()
        .next()
        .unwrap_or_default()
        .trim_end_matches('\r');
    if first.is_empty() {
        return Err(AccessConfigError::File {
            what: "CQL password file",
            path: path.to_path_buf(),
            reason: "its first line is empty".into(),
        });
    }
    Ok(Secret(first.to_string()))
}

/// A rustls client configuration for CQL: trusts `ca`, presents `own` (cert, key) if given, and
/// checks the node's certificate for `server_name` (None: the address the driver connects to)
/// unless `verify_name` is false (the chain is always checked).
pub fn client_config(
    ca: &Path,
    own: Option<(&Path, &Path)>,
    server_name: Option<&str>,
    verify_name: bool,
) -> Result<Arc<ClientConfig>, AccessConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for c in load_certs(ca, "--cql-tls-ca")? {
        roots.add(c).map_err(|e| AccessConfigError::File {
            what: "--cql-tls-ca",
            path: ca.to_path_buf(),
            reason: format!("not a usable CA certificate: {e}"),
        })?;
    }
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
        .build()
        .map_err(|e| AccessConfigError::Tls(format!("CQL TLS verifier: {e}")))?;
    let name = match server_name {
        Some(n) => Some(
            ServerName::try_from(n.to_string())
                .map_err(|e| AccessConfigError::Tls(format!("--cql-tls-server-name {n:?}: {e}")))?,
        ),
        None => None,
    };
    let verifier = Arc::new(NodeVerifier {
        inner,
        name,
        verify_name,
    });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| AccessConfigError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let cfg = match own {
        Some((cert, key)) => {
            let certs = load_certs(cert, "--cql-tls-cert")?;
            let key_pem = std::fs::read(key).map_err(|e| AccessConfigError::File {
                what: "--cql-tls-key",
                path: key.to_path_buf(),
                reason: e.kind().to_string(),
            })?;
            let key_der =
                PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| AccessConfigError::File {
                    what: "--cql-tls-key",
                    path: key.to_path_buf(),
                    reason: "not a PEM private key".into(),
                })?;
            builder
                .with_client_auth_cert(certs, key_der)
                .map_err(|e| AccessConfigError::Tls(format!("CQL client certificate: {e}")))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(cfg))
}

fn load_certs(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, AccessConfigError> {
    let pem = std::fs::read(path).map_err(|e| AccessConfigError::File {
        what,
        path: path.to_path_buf(),
        reason: e.kind().to_string(),
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| AccessConfigError::File {
            what,
            path: path.to_path_buf(),
            reason: format!("not a PEM certificate: {e}"),
        })?;
    if certs.is_empty() {
        return Err(AccessConfigError::File {
            what,
            path: path.to_path_buf(),
            reason: "holds no PEM certificate".into(),
        });
    }
    Ok(certs)
}

/// WebPKI verification of the node's chain against the configured CA, for the configured name
/// (or the address connected to), with the name check optionally off.
#[derive(Debug)]
struct NodeVerifier {
    inner: Arc<WebPkiServerVerifier>,
    name: Option<ServerName<'static>>,
    verify_name: bool,
}

impl ServerCertVerifier for NodeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let name = self.name.as_ref().unwrap_or(server_name);
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.verify_name => Ok(ServerCertVerified::assertion()),
            r => r,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Why the worker could not get into its node; each names what failed and what to check.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// Wrong user or password, or the node wants credentials and none were given.
    #[error("CQL authentication failed at {addr}: {detail}")]
    CqlAuth { addr: String, detail: String },
    /// The TLS handshake failed (certificate not signed by the CA, wrong name, TLS off).
    #[error("CQL TLS to {addr} failed: {detail}")]
    CqlTls { addr: String, detail: String },
    /// The node did not answer (not up yet, wrong address).
    #[error("connecting to Cassandra over CQL at {addr}: {detail}")]
    CqlUnreachable { addr: String, detail: String },
    /// nodetool could not log in over JMX.
    #[error("JMX authentication failed: {detail}")]
    JmxAuth { detail: String },
    /// nodetool could not reach JMX or failed otherwise.
    #[error("JMX check (nodetool version) failed: {detail}")]
    Jmx { detail: String },
    /// The role lacks a permission the run needs.
    #[error(
        "CQL role {role} lacks {permission} on {resource}, needed to {why}; nothing was changed. Grant it with: GRANT {permission} ON {grant_on} TO {role}"
    )]
    Permission {
        role: String,
        permission: &'static str,
        resource: String,
        grant_on: String,
        why: String,
    },
}

impl AccessError {
    /// A permanent misconfiguration (the worker exits at start rather than retrying forever).
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::CqlAuth { .. } | Self::CqlTls { .. })
    }
}

/// Classifies a failed CQL connection from its error chain (`{:#}` text), naming the user, the
/// CA file and the address, never the password.
pub fn classify_cql_error(addr: &str, access: &Access, chain: &str) -> AccessError {
    let lower = chain.to_ascii_lowercase();
    let user = access.cql.as_ref().map(|c| c.username.as_str());
    if lower.contains("authenticat") || lower.contains("password") || lower.contains("credential") {
        let detail = match user {
            Some(u) => format!(
                "user {u:?} was refused (check --cql-username and the password in {}): {}",
                match &access.cql.as_ref().map(|c| &c.source) {
                    Some(PasswordSource::File(p)) => format!("--cql-password-file {}", p.display()),
                    _ => CQL_PASSWORD_ENV.to_string(),
                },
                short(chain)
            ),
            None => format!(
                "the node requires authentication: give --cql-username and --cql-password-file ({})",
                short(chain)
            ),
        };
        return AccessError::CqlAuth {
            addr: addr.to_string(),
            detail,
        };
    }
    let tls_words = [
        "certificate",
        "unknownissuer",
        "handshake",
        "tls",
        "corrupt message",
        "invalidcontenttype",
    ];
    if tls_words.iter().any(|w| lower.contains(w)) {
        let detail = match &access.cql_tls_ca {
            Some(ca) if lower.contains("unknownissuer") || lower.contains("issuer") => format!(
                "the node's certificate is not signed by the CA in --cql-tls-ca {} ({})",
                ca.display(),
                short(chain)
            ),
            Some(_)
                if lower.contains("notvalidforname") || lower.contains("not valid for name") =>
            {
                format!(
                    "the node's certificate does not name the address connected to (set --cql-tls-server-name, or --cql-tls-no-verify-hostname) ({})",
                    short(chain)
                )
            }
            Some(ca) => format!(
                "checked against --cql-tls-ca {}: {}",
                ca.display(),
                short(chain)
            ),
            None => format!(
                "the node may require TLS (client_encryption_options): give --cql-tls-ca ({})",
                short(chain)
            ),
        };
        return AccessError::CqlTls {
            addr: addr.to_string(),
            detail,
        };
    }
    AccessError::CqlUnreachable {
        addr: addr.to_string(),
        detail: short(chain),
    }
}

/// Classifies a failed `nodetool version`.
pub fn classify_jmx_error(jmx: Option<&JmxAccess>, output: &str) -> AccessError {
    let lower = output.to_ascii_lowercase();
    if lower.contains("authentication failed")
        || lower.contains("invalid username or password")
        || lower.contains("credentials required")
    {
        let detail = match jmx.and_then(|j| j.username.as_ref().zip(j.password_file.as_ref())) {
            Some((u, f)) => format!(
                "JMX user {u:?} was refused (check --jmx-username and the password for it in --jmx-password-file {}): {}",
                f.display(),
                short(output)
            ),
            None => format!(
                "the node's JMX requires authentication: give --jmx-username and --jmx-password-file ({})",
                short(output)
            ),
        };
        return AccessError::JmxAuth { detail };
    }
    AccessError::Jmx {
        detail: short(output),
    }
}

/// The first 400 characters of a message (driver errors repeat themselves per connection).
fn short(s: &str) -> String {
    let s = s.trim();
    match s.char_indices().nth(400) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> AccessArgs {
        AccessArgs {
            sstableloader_auth_provider: LOADER_AUTH_PROVIDER.into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_password_comes_from_its_file_and_never_prints() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "s3cret-value\n").unwrap();
        let a = AccessArgs {
            cql_username: Some("ringvault".into()),
            cql_password_file: Some(f.clone()),
            ..args()
        };
        let access = Access::from_args(&a, "127.0.0.1:9042").unwrap();
        let c = access.cql.as_ref().unwrap();
        assert_eq!(c.password.expose(), "s3cret-value");
        assert!(!format!("{access:?}").contains("s3cret-value"));
        let (argv, env) = access.loader_args();
        assert!(!argv.iter().any(|a| a.contains("s3cret")), "{argv:?}");
        assert_eq!(argv, vec!["-ap".to_string(), LOADER_AUTH_PROVIDER.into()]);
        assert!(
            env.iter()
                .any(|(k, v)| k == LOADER_PASSWORD_FILE_ENV && v == &f.display().to_string())
        );
    }

    #[test]
    fn a_user_without_a_password_is_refused_by_name() {
        let a = AccessArgs {
            cql_username: Some("ringvault".into()),
            ..args()
        };
        // RINGVAULT_CQL_PASSWORD is not set in the test environment.
        if std::env::var(CQL_PASSWORD_ENV).is_err() {
            let e = Access::from_args(&a, "127.0.0.1:9042").unwrap_err();
            assert!(e.to_string().contains("ringvault"), "{e}");
        }
        let a = AccessArgs {
            cql_username: Some("ringvault".into()),
            cql_password_file: Some("/nonexistent/rv-pw".into()),
            ..args()
        };
        let e = Access::from_args(&a, "127.0.0.1:9042").unwrap_err();
        assert!(e.to_string().contains("/nonexistent/rv-pw"), "{e}");
    }

    #[test]
    fn jmx_credentials_go_as_a_user_and_a_file() {
        let j = JmxAccess {
            username: Some("ringvault".into()),
            password_file: Some("/etc/jmx.pw".into()),
            truststore: None,
        };
        assert_eq!(j.args(), vec!["-u", "ringvault", "-pwf", "/etc/jmx.pw"]);
        assert!(j.env().is_empty());
    }

    #[test]
    fn errors_are_classified_by_what_failed() {
        let access = Access {
            cql: Some(CqlCredentials {
                username: "ringvault".into(),
                password: Secret("pw-value".into()),
                source: PasswordSource::Env,
            }),
            cql_tls_ca: Some("/ca.pem".into()),
            ..Default::default()
        };
        let e = classify_cql_error(
            "n:9042",
            &access,
            "Authentication failed: Provided username ringvault and/or password are incorrect",
        );
        assert!(matches!(e, AccessError::CqlAuth { .. }), "{e}");
        assert!(!e.to_string().contains("pw-value"));
        let e = classify_cql_error(
            "n:9042",
            &access,
            "io error: invalid peer certificate: UnknownIssuer",
        );
        assert!(e.to_string().contains("/ca.pem"), "{e}");
        assert!(e.is_permanent());
        let e = classify_cql_error("n:9042", &access, "Connection refused (os error 111)");
        assert!(!e.is_permanent());
        let e = classify_jmx_error(
            None,
            "nodetool: Failed to connect to '127.0.0.1:7199' - SecurityException: 'Authentication failed! Invalid username or password'.",
        );
        assert!(matches!(e, AccessError::JmxAuth { .. }), "{e}");
    }

    #[test]
    fn the_default_server_name_is_a_dns_host_only() {
        assert_eq!(default_server_name("127.0.0.1:9042"), None);
        assert_eq!(default_server_name("[::1]:9042"), None);
        assert_eq!(
            default_server_name("cass1.example:9042").as_deref(),
            Some("cass1.example")
        );
    }
}
