//! The remote layout: the only place that builds object keys. Keys are relative to the store's
//! prefix (the store adds it).
//!
//! ```text
//! blobs/<h0h1>/<hash>                 file contents, content-addressed
//! runs/<run-id>/schema.cql            DESCRIBE SCHEMA WITH INTERNALS
//! runs/<run-id>/schema.json           the same, one row per statement, for restore
//! runs/<run-id>/topology.json         nodes: host id, address, DC, rack, tokens
//! runs/<run-id>/nodes/<host-id>.json  that node's files
//! runs/<run-id>/manifest.json         written last: the commit marker
//! tmp/<run-id>/<unique>               staging for large uploads until their hash is known
//! ```
use std::fmt;

use crate::hash::ContentHash;
use crate::ids::RunId;

/// A key inside a store, relative to the store's prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey(String);

impl ObjectKey {
    /// The key text (`/`-separated, no leading slash).
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// Wraps a key read back from a listing of this store. Refuses keys that would escape a
    /// local root (`..`, absolute, empty components).
    pub fn from_listing(s: &str) -> Option<Self> {
        let ok = !s.is_empty()
            && !s.starts_with('/')
            && s.split('/').all(|p| !p.is_empty() && p != "." && p != "..");
        ok.then(|| Self(s.to_string()))
    }
}
impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Key of a blob.
pub fn blob(hash: &ContentHash) -> ObjectKey {
    let h = hash.as_str();
    ObjectKey(format!("blobs/{}/{}", &h[..2], h))
}
/// Prefix under which every blob lives.
pub const BLOBS_PREFIX: &str = "blobs/";
/// Prefix under which every run folder lives.
pub const RUNS_PREFIX: &str = "runs/";

/// Folder of one run.
pub fn run_prefix(run: &RunId) -> String {
    format!("runs/{run}/")
}
/// The run's schema (`DESCRIBE SCHEMA WITH INTERNALS`).
pub fn run_schema(run: &RunId) -> ObjectKey {
    ObjectKey(format!("runs/{run}/schema.cql"))
}
/// The run's schema as rows (keyspace, kind, name, statement), for restore.
pub fn run_schema_rows(run: &RunId) -> ObjectKey {
    ObjectKey(format!("runs/{run}/schema.json"))
}
/// The run's topology.
pub fn run_topology(run: &RunId) -> ObjectKey {
    ObjectKey(format!("runs/{run}/topology.json"))
}
/// One node's manifest in the run. `host_id` is a UUID reported by Cassandra; it is validated
/// by the caller ([`crate::manifest::HostId`]).
pub fn node_manifest(run: &RunId, host_id: &crate::manifest::HostId) -> ObjectKey {
    ObjectKey(format!("runs/{run}/nodes/{host_id}.json"))
}
/// The run's commit manifest, written last.
pub fn run_manifest(run: &RunId) -> ObjectKey {
    ObjectKey(format!("runs/{run}/manifest.json"))
}
/// Prefix under which uploads are staged until their hash is known.
pub const TMP_PREFIX: &str = "tmp/";

/// A staging key for an upload whose hash is not known yet.
pub fn staging(run: &RunId, unique: &str) -> ObjectKey {
    let unique: String = unique
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    ObjectKey(format!("{TMP_PREFIX}{run}/{unique}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_design_layout() {
        let h = ContentHash::of(b"x");
        let k = blob(&h);
        assert_eq!(k.as_str(), format!("blobs/{}/{}", &h.as_str()[..2], h));
        let run = RunId::parse("0190d0c4-7f5e-7000-8000-000000000001").expect("valid id");
        assert_eq!(
            run_manifest(&run).as_str(),
            format!("runs/{run}/manifest.json")
        );
        assert_eq!(staging(&run, "a/../b").as_str(), format!("tmp/{run}/ab"));
        assert!(ObjectKey::from_listing("runs/../x").is_none());
        assert!(ObjectKey::from_listing("/abs").is_none());
    }
}
