//! Parsing of store URLs: the one place that decides what a URL may say. Credentials never
//! belong in one (user info, a SAS query, a key parameter are refused), and [`redact`] makes any
//! URL safe to print.
use std::path::PathBuf;

use super::StoreError;

/// A parsed store URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// `file:///absolute/dir`
    File { root: PathBuf },
    /// `s3://bucket/prefix?endpoint=...&region=...`
    S3 {
        bucket: String,
        prefix: String,
        endpoint: Option<String>,
        region: Option<String>,
    },
    /// `gs://bucket/prefix?endpoint=...`
    Gcs {
        bucket: String,
        prefix: String,
        endpoint: Option<String>,
    },
    /// `az://account/container/prefix?endpoint=...`
    Azure {
        account: String,
        container: String,
        prefix: String,
        endpoint: Option<String>,
    },
}

impl StoreUrl {
    /// Parses and validates a store URL.
    pub fn parse(s: &str) -> Result<Self, StoreError> {
        let bad = |reason: &str| StoreError::BadUrl {
            url: redact(s),
            reason: reason.to_string(),
        };
        let path_part = s.split(['?', '#']).next().unwrap_or_default();
        if path_part
            .split('/')
            .any(|p| p == ".." || p == "%2e%2e" || p == "%2E%2E")
        {
            return Err(bad("'..' is not allowed in the path"));
        }
        let u = url::Url::parse(s).map_err(|e| bad(&e.to_string()))?;
        if !u.username().is_empty() || u.password().is_some() {
            return Err(bad(
                "credentials do not belong in the URL; use the provider's standard environment",
            ));
        }
        match u.scheme() {
            "file" => {
                if u.query().is_some() {
                    return Err(bad("file:// URLs take no query"));
                }
                let root = u
                    .to_file_path()
                    .map_err(|_| bad("not an absolute local path"))?;
                if root
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
                {
                    return Err(bad("'..' is not allowed in the path"));
                }
                Ok(Self::File { root })
            }
            "s3" => {
                let bucket = u.host_str().unwrap_or_default().to_string();
                if bucket.is_empty() {
                    return Err(bad("missing bucket (s3://bucket/prefix)"));
                }
                let prefix = clean_prefix(u.path())
                    .ok_or_else(|| bad("prefix must not contain '..' or empty segments"))?;
                let mut endpoint = None;
                let mut region = None;
                for (k, v) in u.query_pairs() {
                    match k.as_ref() {
                        "endpoint" => endpoint = Some(check_endpoint(&v).map_err(|r| bad(&r))?),
                        "region" => region = Some(v.into_owned()),
                        other => {
                            return Err(bad(&format!(
                                "unknown parameter {other:?} (endpoint, region)"
                            )));
                        }
                    }
                }
                Ok(Self::S3 {
                    bucket,
                    prefix,
                    endpoint,
                    region,
                })
            }
            "gs" => {
                let bucket = u.host_str().unwrap_or_default().to_string();
                if bucket.is_empty() {
                    return Err(bad("missing bucket (gs://bucket/prefix)"));
                }
                if !valid_gcs_bucket(&bucket) {
                    return Err(bad(
                        "bucket names are 3-63 characters of a-z, 0-9, '-', '_' and '.'",
                    ));
                }
                let prefix = clean_prefix(u.path())
                    .ok_or_else(|| bad("prefix must not contain '..' or empty segments"))?;
                let endpoint = endpoint_only(&u).map_err(|r| bad(&r))?;
                Ok(Self::Gcs {
                    bucket,
                    prefix,
                    endpoint,
                })
            }
            "az" => {
                let account = u.host_str().unwrap_or_default().to_string();
                if account.is_empty() {
                    return Err(bad("missing account (az://account/container/prefix)"));
                }
                if !(3..=24).contains(&account.len())
                    || !account
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                {
                    return Err(bad(
                        "storage account names are 3-24 characters of a-z and 0-9",
                    ));
                }
                let path = clean_prefix(u.path())
                    .ok_or_else(|| bad("path must not contain '..' or empty segments"))?;
                let (container, prefix) = match path.split_once('/') {
                    Some((c, rest)) if !c.is_empty() => (c.to_string(), rest.to_string()),
                    _ => return Err(bad("missing container (az://account/container/prefix)")),
                };
                if !valid_az_container(&container) {
                    return Err(bad(
                        "container names are 3-63 characters of a-z, 0-9 and single '-'",
                    ));
                }
                let endpoint = endpoint_only(&u).map_err(|r| bad(&r))?;
                Ok(Self::Azure {
                    account,
                    container,
                    prefix,
                    endpoint,
                })
            }
            other => Err(bad(&format!(
                "unsupported scheme {other:?} (file, s3, gs, az)"
            ))),
        }
    }
}

/// Validates an `endpoint=` value: http(s), no credentials in it, and plain http only to a
/// loopback address (an emulator), since the provider's credentials travel with every request.
fn check_endpoint(v: &str) -> Result<String, String> {
    let e = url::Url::parse(v).map_err(|e| format!("endpoint: {e}"))?;
    if !matches!(e.scheme(), "http" | "https") {
        return Err("endpoint must be an http:// or https:// URL".into());
    }
    if e.query().is_some() || !e.username().is_empty() || e.password().is_some() {
        return Err(
            "credentials do not belong in the endpoint; use the provider's standard environment"
                .into(),
        );
    }
    if e.scheme() == "http"
        && !crate::security::connect::is_loopback_host(e.host_str().unwrap_or_default())
    {
        return Err(
            "endpoint must be https:// (credentials are sent in clear over http://, allowed only to a loopback emulator)"
                .into(),
        );
    }
    Ok(v.trim_end_matches('/').to_string())
}

/// The `endpoint` parameter, the only one gs:// and az:// take. A SAS or key in the query is
/// refused: credentials come from the environment.
fn endpoint_only(u: &url::Url) -> Result<Option<String>, String> {
    let mut endpoint = None;
    for (k, v) in u.query_pairs() {
        match k.as_ref() {
            "endpoint" => endpoint = Some(check_endpoint(&v)?),
            "sig" | "sv" | "se" | "sp" | "key" | "sas" => {
                return Err("credentials do not belong in the URL; use the provider's \
                     standard environment"
                    .into());
            }
            other => return Err(format!("unknown parameter {other:?} (endpoint)")),
        }
    }
    Ok(endpoint)
}

fn valid_gcs_bucket(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'_' | b'.')
        })
}

fn valid_az_container(c: &str) -> bool {
    (3..=63).contains(&c.len())
        && c.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !c.starts_with('-')
        && !c.ends_with('-')
        && !c.contains("--")
}

/// `/a/b/` → `a/b/`; `/` → ``.
fn clean_prefix(path: &str) -> Option<String> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if parts.iter().any(|p| *p == ".." || *p == ".") {
        return None;
    }
    Some(if parts.is_empty() {
        String::new()
    } else {
        format!("{}/", parts.join("/"))
    })
}

/// Drops the query (which could carry a SAS) and user info from a URL for messages.
pub fn redact(s: &str) -> String {
    match url::Url::parse(s) {
        Ok(mut u) => {
            let _ = u.set_password(None);
            let _ = u.set_username("");
            if u.query().is_some()
                && u.query_pairs().any(|(k, v)| {
                    (k != "endpoint" && k != "region")
                        || v.contains("sig=")
                        || v.contains('?')
                        || v.contains('@')
                })
            {
                u.set_query(Some("<redacted>"));
            }
            u.to_string()
        }
        Err(_) => "<unparseable URL>".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_go_over_plain_http_only_to_loopback_emulators() {
        for ok in [
            "s3://bkt/p?endpoint=http://127.0.0.1:9900&region=us-east-1",
            "gs://bkt/p?endpoint=http://localhost:4443",
            "az://acct/cont/p?endpoint=https://acct.blob.example.com",
        ] {
            assert!(StoreUrl::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "s3://bkt/p?endpoint=http://10.0.0.5:9000&region=us-east-1",
            "gs://bkt/p?endpoint=http://storage.example.com",
            "az://acct/cont/p?endpoint=http://acct.blob.example.com",
        ] {
            let err = StoreUrl::parse(bad).err().map(|e| e.to_string());
            assert!(
                err.as_deref().is_some_and(|e| e.contains("https")),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn parses_file_and_s3_urls() {
        assert_eq!(
            StoreUrl::parse("file:///var/backups").ok(),
            Some(StoreUrl::File {
                root: "/var/backups".into()
            })
        );
        assert_eq!(
            StoreUrl::parse("s3://b/p/q?endpoint=http://127.0.0.1:9900&region=us-east-1").ok(),
            Some(StoreUrl::S3 {
                bucket: "b".into(),
                prefix: "p/q/".into(),
                endpoint: Some("http://127.0.0.1:9900".into()),
                region: Some("us-east-1".into())
            })
        );
    }

    #[test]
    fn parses_gs_and_az_urls() {
        assert_eq!(
            StoreUrl::parse("gs://my-bucket/backups/x?endpoint=http://127.0.0.1:4443/").ok(),
            Some(StoreUrl::Gcs {
                bucket: "my-bucket".into(),
                prefix: "backups/x/".into(),
                endpoint: Some("http://127.0.0.1:4443".into()),
            })
        );
        assert_eq!(
            StoreUrl::parse("gs://b1b").ok(),
            Some(StoreUrl::Gcs {
                bucket: "b1b".into(),
                prefix: String::new(),
                endpoint: None,
            })
        );
        assert_eq!(
            StoreUrl::parse(
                "az://devstoreaccount1/ringvault/backups?endpoint=http://127.0.0.1:10000/devstoreaccount1"
            )
            .ok(),
            Some(StoreUrl::Azure {
                account: "devstoreaccount1".into(),
                container: "ringvault".into(),
                prefix: "backups/".into(),
                endpoint: Some("http://127.0.0.1:10000/devstoreaccount1".into()),
            })
        );
        assert_eq!(
            StoreUrl::parse("az://acct/cont").ok(),
            Some(StoreUrl::Azure {
                account: "acct".into(),
                container: "cont".into(),
                prefix: String::new(),
                endpoint: None,
            })
        );
    }

    #[test]
    fn redact_hides_sas_parameters() {
        for u in [
            "az://acct/cont/p?sv=2025&sig=secret",
            "https://a.blob.core.windows.net/c?sv=2025-01-05&ss=b&sig=secret",
            "az://acct/cont/p?endpoint=http%3A%2F%2Fh%2F%3Fsig%3Dsecret",
        ] {
            let r = redact(u);
            assert!(!r.contains("secret"), "{u} -> {r}");
        }
        assert_eq!(
            redact("gs://bkt/p?endpoint=http://127.0.0.1:4443"),
            "gs://bkt/p?endpoint=http://127.0.0.1:4443"
        );
    }

    #[test]
    fn refuses_bad_urls_with_reasons() {
        for (u, why) in [
            ("ftp://x/y", "unsupported scheme"),
            ("s3:///p", "missing bucket"),
            ("s3://b/../x", "'..'"),
            ("s3://key:secret@b/p", "credentials"),
            ("s3://b/p?foo=1", "unknown parameter"),
            ("not a url", "relative URL"),
            ("gs:///p", "missing bucket"),
            ("gs://ab/p", "bucket names"),
            ("gs://bkt/p?region=x", "unknown parameter"),
            ("az://acct", "missing container"),
            ("az://acct/", "missing container"),
            ("az://a/cont/p", "storage account"),
            ("az://acct/c/p", "container names"),
            ("az://acct/cont/p?sig=secret&sv=2025", "credentials"),
            (
                "az://acct/cont/p?endpoint=http%3A%2F%2Fh%2F%3Fsig%3Dsecret",
                "credentials",
            ),
            ("az://acct/cont/../p", "'..'"),
        ] {
            let err = StoreUrl::parse(u).expect_err(u).to_string();
            assert!(err.contains(why), "{u}: {err}");
            assert!(!err.contains("secret"), "{err}");
        }
    }
}
