//! Which stores a component may open on a caller's behalf. A worker holds cloud credentials, so
//! the store URL in an Upload/Download/CheckStorage request must fall inside the worker's own
//! allowlist before any request leaves the machine; the coordinator does the same for
//! `--from-store`. An entry allows exactly its scheme, bucket (or host) and query (`endpoint=`,
//! `region=`…), and its path or anything below it: a caller can narrow the prefix, never aim
//! the credentials at another endpoint, bucket or directory.
use url::Url;

use super::SecurityError;

/// Store URLs a component may use.
#[derive(Debug, Clone, Default)]
pub struct StoreAllowlist {
    entries: Vec<Url>,
}

impl StoreAllowlist {
    /// Parses the configured entries (exact URLs or prefixes).
    pub fn new<S: AsRef<str>>(entries: &[S]) -> Result<Self, SecurityError> {
        let entries = entries
            .iter()
            .map(|e| {
                let e = e.as_ref();
                Url::parse(e).map_err(|err| SecurityError::Url {
                    url: e.to_string(),
                    reason: format!("not a store URL: {err}"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { entries })
    }

    /// Adds one entry (e.g. the coordinator's own store).
    pub fn with(mut self, entry: &str) -> Result<Self, SecurityError> {
        self.entries.extend(Self::new(&[entry])?.entries);
        Ok(self)
    }

    /// Whether nothing is allowed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Ok when `url` is inside an entry; otherwise an error naming the URL (without its
    /// query, which may be long) and how to allow it.
    pub fn check(&self, url: &str) -> Result<(), SecurityError> {
        let refused = |why: &str| SecurityError::StoreNotAllowed {
            url: url.split('?').next().unwrap_or(url).to_string(),
            reason: why.to_string(),
        };
        let req = Url::parse(url).map_err(|_| refused("not a URL"))?;
        if self.entries.is_empty() {
            return Err(refused(
                "no store is allowed here (configure --allow-store)",
            ));
        }
        if self.entries.iter().any(|e| inside(&req, e)) {
            Ok(())
        } else {
            Err(refused(
                "outside the allowed stores (--allow-store); a request cannot name another store, endpoint or directory",
            ))
        }
    }
}

fn inside(req: &Url, allowed: &Url) -> bool {
    if req.scheme() != allowed.scheme()
        || req.host_str() != allowed.host_str()
        || req.port() != allowed.port()
        || !req.username().is_empty()
        || req.password().is_some()
        || req.fragment().is_some()
    {
        return false;
    }
    let mut rq: Vec<(String, String)> = req.query_pairs().into_owned().collect();
    let mut aq: Vec<(String, String)> = allowed.query_pairs().into_owned().collect();
    rq.sort();
    aq.sort();
    if rq != aq {
        return false;
    }
    let segs = |u: &Url| -> Option<Vec<String>> {
        let s: Vec<String> = u
            .path_segments()
            .map(|s| s.filter(|p| !p.is_empty()).map(str::to_string).collect())
            .unwrap_or_default();
        // A literal or encoded `..` never widens an entry.
        if s.iter()
            .any(|p| p == ".." || p == "." || p.to_ascii_lowercase().contains("%2e%2e"))
        {
            return None;
        }
        Some(s)
    };
    match (segs(req), segs(allowed)) {
        (Some(r), Some(a)) => r.len() >= a.len() && r[..a.len()] == a[..],
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_allow_their_own_prefix_only() {
        let a = StoreAllowlist::new(&[
            "s3://bucket/backups?endpoint=http://127.0.0.1:9900&region=us-east-1",
            "file:///var/backups",
        ])
        .unwrap();
        for ok in [
            "s3://bucket/backups?endpoint=http://127.0.0.1:9900&region=us-east-1",
            "s3://bucket/backups/prod?region=us-east-1&endpoint=http://127.0.0.1:9900",
            "file:///var/backups",
            "file:///var/backups/cluster1",
        ] {
            a.check(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "s3://bucket/backups?endpoint=http://evil:9900&region=us-east-1",
            "s3://bucket/backups?endpoint=http://127.0.0.1:9900",
            "s3://bucket/backups?endpoint=http://127.0.0.1:9900&region=us-east-1&x=1",
            "s3://bucket/backups-evil?endpoint=http://127.0.0.1:9900&region=us-east-1",
            "s3://other/backups?endpoint=http://127.0.0.1:9900&region=us-east-1",
            "gs://bucket/backups",
            "file:///var/backups/../../etc",
            "file:///var/backups/%2E%2E/etc",
            "file:///tmp/elsewhere",
            "file:///var",
        ] {
            assert!(a.check(bad).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn an_empty_allowlist_refuses_everything() {
        let err = StoreAllowlist::default().check("file:///x").unwrap_err();
        assert!(err.to_string().contains("--allow-store"), "{err}");
    }
}
