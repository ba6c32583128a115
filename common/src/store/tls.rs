//! Certificate authorities the object-store clients trust besides the system roots: an
//! S3-compatible server or an emulator behind a private CA (the compose stack's, a company's).
//! A binary calls [`trust_store_ca`] once at start-up with the operator's `--store-ca-file`;
//! every S3, Azure and GCS client opened afterwards trusts the system roots plus those CAs.
//! A file that is missing or holds no valid certificate is refused with its path named, before
//! anything is opened.
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::{StoreError, StoreResult};

/// The parsed CA bundle: the PEM text (for SDKs that take PEM) and its certificates.
#[derive(Debug, Clone)]
pub struct StoreCa {
    path: PathBuf,
    pem: Vec<u8>,
    certs: Vec<CertificateDer<'static>>,
}

static STORE_CA: OnceLock<StoreCa> = OnceLock::new();

impl StoreCa {
    /// Reads and checks a PEM bundle: at least one certificate, each one parseable X.509.
    pub fn load(path: &Path) -> StoreResult<Self> {
        let bad = |reason: String| StoreError::BadCa {
            path: path.display().to_string(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let mut certs = Vec::new();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| bad(format!("unreadable PEM: {e}")))?;
            x509_parser::parse_x509_certificate(&cert)
                .map_err(|e| bad(format!("certificate {}: {e}", certs.len() + 1)))?;
            certs.push(cert);
        }
        if certs.is_empty() {
            return Err(bad(
                "no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into(),
            ));
        }
        // The HTTP clients parse the bundle again; refuse here what they would refuse later.
        reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(e.to_string()))?;
        Ok(Self {
            path: path.to_path_buf(),
            pem,
            certs,
        })
    }

    /// The file the bundle came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The bundle as PEM text.
    pub fn pem(&self) -> &[u8] {
        &self.pem
    }

    /// How many certificates the bundle holds.
    pub fn len(&self) -> usize {
        self.certs.len()
    }

    /// Whether the bundle is empty (never, once loaded).
    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }
}

/// Makes every store client opened from now on trust the CAs in `path` as well as the system
/// roots. Once per process: a second call with another file is refused.
pub fn trust_store_ca(path: &Path) -> StoreResult<&'static StoreCa> {
    let ca = StoreCa::load(path)?;
    let set = STORE_CA.get_or_init(|| ca.clone());
    if set.path != ca.path || set.pem != ca.pem {
        return Err(StoreError::BadCa {
            path: path.display().to_string(),
            reason: format!(
                "the store CA is already {} for this process",
                set.path.display()
            ),
        });
    }
    Ok(set)
}

/// The operator's store CA, when one was given.
pub(crate) fn store_ca() -> Option<&'static StoreCa> {
    STORE_CA.get()
}

/// A reqwest 0.12 client builder (our own calls: GCS JSON API, Azure Blob Batch) trusting the
/// store CA too.
pub(crate) fn with_store_ca_012(
    b: reqwest::ClientBuilder,
) -> reqwest::Result<reqwest::ClientBuilder> {
    let Some(ca) = store_ca() else { return Ok(b) };
    let mut b = b;
    for c in reqwest::Certificate::from_pem_bundle(&ca.pem)? {
        b = b.add_root_certificate(c);
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec!["store.test".into()]).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).expect("cert").pem()
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = StoreCa::load(Path::new("/nonexistent/store-ca.pem")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/nonexistent/store-ca.pem"), "{msg}");
        assert!(matches!(err, StoreError::BadCa { .. }));
    }

    #[test]
    fn a_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("ca.pem");
        std::fs::write(&f, "not a certificate\n").expect("write");
        let msg = StoreCa::load(&f).unwrap_err().to_string();
        assert!(
            msg.contains("ca.pem") && msg.contains("no PEM certificate"),
            "{msg}"
        );
        std::fs::write(
            &f,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let msg = StoreCa::load(&f).unwrap_err().to_string();
        assert!(
            msg.contains("ca.pem") && msg.contains("certificate 1"),
            "{msg}"
        );
    }

    #[test]
    fn an_untrusted_server_certificate_is_not_retried() {
        let failure = |message: &str| StoreError::Transient {
            op: "put",
            key: "k".into(),
            message: message.into(),
        };
        assert!(
            !failure(
                "dispatch failure: TLS handshake failed: invalid peer certificate: UnknownIssuer"
            )
            .is_transient()
        );
        assert!(failure("connection reset by peer").is_transient());
    }

    #[test]
    fn a_bundle_loads_every_certificate() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("bundle.pem");
        std::fs::write(&f, format!("{}{}", ca_pem(), ca_pem())).expect("write");
        let ca = StoreCa::load(&f).expect("bundle");
        assert_eq!(ca.len(), 2);
        assert_eq!(ca.path(), f.as_path());
    }
}
