//! What a backup stores besides blobs: the per-node file lists, the topology and the run's
//! commit manifest. These JSON documents make the bucket alone enough to list and restore.
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::hash::ContentHash;
use crate::ids::{Identifier, RelativeName, RunId, SnapshotTag};

/// Format version written into every manifest.
pub const FORMAT_VERSION: u32 = 1;

/// A Cassandra host id (UUID), validated so it can be part of a key or a path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostId(String);

impl HostId {
    /// Parses a host id.
    pub fn parse(s: &str) -> Result<Self, crate::IdError> {
        uuid::Uuid::try_parse(s)
            .map(|u| Self(u.hyphenated().to_string()))
            .map_err(|_| crate::IdError::BadIdentifier {
                what: "host id",
                value: s.to_string(),
            })
    }
    /// The id text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl TryFrom<String> for HostId {
    type Error = crate::IdError;
    fn try_from(s: String) -> Result<Self, crate::IdError> {
        Self::parse(&s)
    }
}
impl From<HostId> for String {
    fn from(h: HostId) -> String {
        h.0
    }
}
impl fmt::Display for HostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One file of a node's snapshot, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub keyspace: Identifier,
    pub table: Identifier,
    /// 32 lowercase hex characters, as in the table's directory name.
    pub table_id: String,
    /// Relative to the table's snapshot directory.
    pub name: RelativeName,
    pub size: u64,
    pub hash: ContentHash,
    /// Index into the node's data directories.
    pub data_dir_index: u32,
    /// For an SSTable's `Statistics.db`: what the SSTable says about itself (partitions, rows,
    /// timestamps), read at backup time; absent in older backups and for other files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sstable: Option<crate::sstable_stats::SstableStats>,
}

impl FileEntry {
    /// Whether a restore brings this file back: snapshot bookkeeping (`manifest.json`,
    /// `schema.cql`) and legacy secondary-index folders are not SSTables of the table.
    pub fn is_restorable(&self) -> bool {
        let name = self.name.as_str();
        !name.contains('/') && name != "manifest.json" && name != "schema.cql"
    }
}

/// A node as the backup saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeDescription {
    pub host_id: HostId,
    pub address: String,
    pub datacenter: String,
    pub rack: String,
    pub tokens: Vec<String>,
    pub data_dirs: Vec<String>,
    pub cassandra_version: String,
}

/// `runs/<run>/nodes/<host-id>.json`: every file one node contributed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeManifest {
    pub format_version: u32,
    pub run_id: RunId,
    pub node: NodeDescription,
    pub snapshot_taken_unix_ms: i64,
    pub files: Vec<FileEntry>,
}

/// `runs/<run>/topology.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    pub cluster_name: String,
    pub partitioner: String,
    pub nodes: Vec<NodeDescription>,
}

/// Per-node totals in the run manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeTotals {
    pub host_id: HostId,
    pub address: String,
    pub files: u64,
    pub bytes: u64,
}

/// `runs/<run>/manifest.json`: written last; a run without it is not a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunManifest {
    pub format_version: u32,
    pub run_id: RunId,
    pub tag: SnapshotTag,
    pub cluster_name: String,
    pub keyspaces: Vec<String>,
    pub tables: Vec<String>,
    pub started_unix_ms: i64,
    pub committed_unix_ms: i64,
    pub hash_algorithm: String,
    pub nodes: Vec<NodeTotals>,
    pub total_files: u64,
    pub total_bytes: u64,
    pub distinct_blobs: u64,
    /// The schedule that made this backup ("" by hand): retention counts backups per schedule.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub schedule: String,
    /// The schedule's retention when the backup was made: purge applies it to the schedule's
    /// backups even after the schedule is removed (or from another coordinator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RecordedRetention>,
}

/// A retention rule as recorded with a scheduled backup (0: no limit of that kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedRetention {
    pub keep_last: u32,
    pub keep_days: u32,
}

/// `runs/<run>/lease.json`: the blobs a run is about to commit (including those it reuses
/// without uploading). A purge that sees a lease before `expires_unix_ms` keeps every blob it
/// names; the run deletes it once committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunLease {
    pub run_id: RunId,
    pub written_unix_ms: i64,
    pub expires_unix_ms: i64,
    pub blobs: Vec<ContentHash>,
}

/// `purges/<id>.json`: a purge deletes blobs only until `sweep_until_unix_ms`, and only blobs
/// no manifest or lease named when it last looked (after `written_unix_ms`). A backup about to
/// commit waits for such windows to close before it checks its blobs are there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeMarker {
    pub purge_id: String,
    pub written_unix_ms: i64,
    pub sweep_until_unix_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_naming_an_escaping_file_is_refused_on_read() {
        let json = serde_json::json!({
            "keyspace": "ks", "table": "t", "table_id": "0".repeat(32),
            "name": "../../etc/passwd", "size": 1,
            "hash": "a".repeat(64), "data_dir_index": 0
        });
        let err = serde_json::from_value::<FileEntry>(json).expect_err("must be refused");
        assert!(err.to_string().contains("escape"), "{err}");
    }
}

/// One row of `DESCRIBE SCHEMA WITH INTERNALS` (`runs/<run>/schema.json` holds them all).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaRow {
    pub keyspace: String,
    /// keyspace, type, table, index, view, function, aggregate
    pub kind: String,
    pub name: String,
    pub statement: String,
}

/// Manifests for other crates' unit tests (feature `test-support`): one node described the
/// same way everywhere, files named by (keyspace, table, name, size, hash). Panics on a bad
/// identifier, as a test fixture should.
#[cfg(any(test, feature = "test-support"))]
pub mod fixtures {
    use super::{FORMAT_VERSION, FileEntry, HostId, NodeDescription, NodeManifest};
    use crate::hash::ContentHash;
    use crate::ids::{Identifier, RelativeName, RunId};

    /// One file of a fixture manifest.
    pub struct FixtureFile<'a> {
        pub keyspace: &'a str,
        pub table: &'a str,
        pub name: &'a str,
        pub size: u64,
        pub hash: ContentHash,
    }

    impl<'a> FixtureFile<'a> {
        /// A file whose hash is that of its name (distinct names, distinct blobs).
        pub fn named(keyspace: &'a str, table: &'a str, name: &'a str, size: u64) -> Self {
            Self {
                keyspace,
                table,
                name,
                size,
                hash: ContentHash::of(name.as_bytes()),
            }
        }
    }

    /// The manifest of `host` (at 127.0.0.1, dc1/r1, one data directory) in `run`.
    pub fn node_manifest(run: &RunId, host: &HostId, files: Vec<FixtureFile<'_>>) -> NodeManifest {
        NodeManifest {
            format_version: FORMAT_VERSION,
            run_id: run.clone(),
            node: NodeDescription {
                host_id: host.clone(),
                address: "127.0.0.1".into(),
                datacenter: "dc1".into(),
                rack: "r1".into(),
                tokens: vec![],
                data_dirs: vec!["/data".into()],
                cassandra_version: "5.0".into(),
            },
            snapshot_taken_unix_ms: 0,
            files: files
                .into_iter()
                .map(|f| FileEntry {
                    keyspace: Identifier::parse("keyspace", f.keyspace).expect("keyspace"),
                    table: Identifier::parse("table", f.table).expect("table"),
                    table_id: "0".repeat(32),
                    name: RelativeName::parse(f.name).expect("file name"),
                    size: f.size,
                    hash: f.hash,
                    data_dir_index: 0,
                    sstable: None,
                })
                .collect(),
        }
    }
}
