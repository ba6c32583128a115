//! Parsing of store URLs.
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
                        "endpoint" => endpoint = Some(v.into_owned()),
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
            other => Err(bad(&format!("unsupported scheme {other:?} (file, s3)"))),
        }
    }
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
                && u.query_pairs()
                    .any(|(k, _)| k != "endpoint" && k != "region")
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
    fn refuses_bad_urls_with_reasons() {
        for (u, why) in [
            ("ftp://x/y", "unsupported scheme"),
            ("s3:///p", "missing bucket"),
            ("s3://b/../x", "'..'"),
            ("s3://key:secret@b/p", "credentials"),
            ("s3://b/p?foo=1", "unknown parameter"),
            ("not a url", "relative URL"),
        ] {
            let err = StoreUrl::parse(u).expect_err(u).to_string();
            assert!(err.contains(why), "{u}: {err}");
            assert!(!err.contains("secret"), "{err}");
        }
    }
}
