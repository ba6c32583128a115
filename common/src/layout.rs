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
//! runs/<run-id>/lease.json            blobs a run is about to commit (purge keeps them)
//! tmp/<run-id>/<uuid>                 a large file on a store whose rename copies nothing, until renamed
//! tmp/<run-id>/<uuid>.rv-parts-<id>/… GCS multipart parts of a staging object
//! tmp/parts/<uuid>.rv-parts-<id>/…    GCS multipart parts of an upload to any other key
//! tmp/check-<uuid>                    the probe object of a store check
//! purges/<uuid>.json                  a purge's sweep window (backups wait for it)
//! ```
//!
//! Parsing lives here too ([`parse_tmp`]): purge deletes under `tmp/` only keys of the shapes
//! above, never anything else a shared bucket or directory may hold.
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
/// The shard folder a blob's key lies in (`blobs/<first 2 hex>/`): a listing of it holds the
/// blob if it is stored.
pub fn blob_shard(hash: &ContentHash) -> String {
    format!("{BLOBS_PREFIX}{}/", &hash.as_str()[..2])
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
/// What a key inside a run folder is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunObject {
    /// `manifest.json`: the commit marker.
    Manifest,
    /// `lease.json`.
    Lease,
    /// `schema.cql`.
    Schema,
    /// `schema.json`.
    SchemaRows,
    /// `topology.json`.
    Topology,
    /// `nodes/<host id>.json`.
    NodeManifest(crate::manifest::HostId),
    /// Anything else (not written by ringvault).
    Other,
}

/// The folder name under [`RUNS_PREFIX`] a key lies in, whether or not it is a run id
/// ringvault writes (purge must see foreign folders too).
pub fn run_folder(key: &ObjectKey) -> Option<&str> {
    key.as_str()
        .strip_prefix(RUNS_PREFIX)
        .and_then(|rest| rest.split('/').next())
}

/// Whether `key` names a commit manifest of any run folder, canonical or not
/// (`runs/<folder>/…/manifest.json`).
pub fn names_manifest(key: &ObjectKey) -> bool {
    run_folder(key).is_some() && key.as_str().ends_with("/manifest.json")
}

/// The run and object a key under [`RUNS_PREFIX`] is, for keys exactly as ringvault builds
/// them (the inverse of [`run_manifest`], [`node_manifest`] and the others).
pub fn parse_run_key(key: &ObjectKey) -> Option<(RunId, RunObject)> {
    let folder = run_folder(key)?;
    let run = RunId::parse(folder).ok().filter(|r| r.as_str() == folder)?;
    let rest = key
        .as_str()
        .get(RUNS_PREFIX.len() + folder.len()..)?
        .strip_prefix('/')?;
    let obj = match rest {
        "manifest.json" => RunObject::Manifest,
        "lease.json" => RunObject::Lease,
        "schema.cql" => RunObject::Schema,
        "schema.json" => RunObject::SchemaRows,
        "topology.json" => RunObject::Topology,
        other => match other
            .strip_prefix("nodes/")
            .and_then(|n| n.strip_suffix(".json"))
            .and_then(|h| crate::manifest::HostId::parse(h).ok())
        {
            Some(h) if node_manifest(&run, &h) == *key => RunObject::NodeManifest(h),
            _ => RunObject::Other,
        },
    };
    Some((run, obj))
}

/// The run whose commit manifest `key` is, if it is one.
pub fn parse_run_manifest(key: &ObjectKey) -> Option<RunId> {
    match parse_run_key(key)? {
        (run, RunObject::Manifest) => Some(run),
        _ => None,
    }
}

/// Prefix under which uploads are staged until their hash is known.
pub const TMP_PREFIX: &str = "tmp/";

/// The lease of a run about to commit: the blobs it names are kept by any purge that sees it.
pub fn run_lease(run: &RunId) -> ObjectKey {
    ObjectKey(format!("runs/{run}/lease.json"))
}

/// Prefix under which purges announce their sweep windows.
pub const PURGES_PREFIX: &str = "purges/";

/// The marker of one purge's sweep window.
pub fn purge_marker(id: &uuid::Uuid) -> ObjectKey {
    ObjectKey(format!("{PURGES_PREFIX}{}.json", id.hyphenated()))
}

/// The purge id a key under [`PURGES_PREFIX`] names, if it is a marker ringvault writes.
pub fn parse_purge_marker(key: &ObjectKey) -> Option<uuid::Uuid> {
    let id = key
        .as_str()
        .strip_prefix(PURGES_PREFIX)?
        .strip_suffix(".json")?;
    canonical_uuid(id)
}

/// What a key under [`TMP_PREFIX`] is, when ringvault wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TmpKey {
    /// Staging of run `0` (or a GCS part of it).
    Staging(RunId),
    /// The probe object of [`crate::store::Store::check`].
    Check,
    /// A part (or intermediate compose) of a GCS multipart upload ([`multipart_parts`]).
    Parts,
}

/// A hyphenated lowercase UUID, exactly as ringvault writes them.
fn canonical_uuid(s: &str) -> Option<uuid::Uuid> {
    let u = uuid::Uuid::try_parse(s).ok()?;
    (u.hyphenated().to_string() == s).then_some(u)
}

/// Recognises the keys ringvault writes under `tmp/`: `tmp/<run-id>/<uuid>`, its GCS parts
/// `tmp/<run-id>/<uuid>.rv-parts-<hex>/<part>`, GCS parts of uploads to any other key
/// `tmp/parts/<uuid>.rv-parts-<hex>/<part>`, and `tmp/check-<uuid>`. Anything else is not
/// ours (`None`).
pub fn parse_tmp(key: &ObjectKey) -> Option<TmpKey> {
    let rest = key.as_str().strip_prefix(TMP_PREFIX)?;
    if let Some(id) = rest.strip_prefix("check-") {
        return canonical_uuid(id).map(|_| TmpKey::Check);
    }
    let (first, rest) = rest.split_once('/')?;
    if first == "parts" {
        let (unique, parts) = rest.split_once(".rv-parts-")?;
        canonical_uuid(unique)?;
        return parts_ok(parts).then_some(TmpKey::Parts);
    }
    let run_id = RunId::parse(first).ok().filter(|r| r.as_str() == first)?;
    let (unique, parts) = match rest.split_once(".rv-parts-") {
        Some((u, p)) => (u, Some(p)),
        None => (rest, None),
    };
    canonical_uuid(unique)?;
    if let Some(p) = parts
        && !parts_ok(p)
    {
        return None;
    }
    Some(TmpKey::Staging(run_id))
}

/// `<hex>/<part>` after `.rv-parts-`: `000001` (a part) or `c01-000000` (an intermediate
/// compose).
fn parts_ok(p: &str) -> bool {
    let Some((id, part)) = p.split_once('/') else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    let part_ok = digits(part)
        || part
            .strip_prefix('c')
            .and_then(|x| x.split_once('-'))
            .is_some_and(|(a, b)| digits(a) && digits(b));
    !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit()) && part_ok
}

/// Where a GCS multipart upload to a key outside `tmp/` keeps its parts until they are
/// composed: `tmp/parts/<uuid>.rv-parts-<id>` (never next to a blob, where purge would not
/// know them). `id` is lowercase hex.
pub fn multipart_parts(upload: &uuid::Uuid, id: &str) -> ObjectKey {
    let id: String = id.chars().filter(char::is_ascii_hexdigit).collect();
    ObjectKey(format!(
        "{TMP_PREFIX}parts/{}.rv-parts-{id}",
        upload.hyphenated()
    ))
}

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
    fn run_keys_parse_back_to_what_built_them() {
        let run = RunId::new();
        let host = crate::manifest::HostId::parse("0b0e6a2c-3b35-4f3e-9a51-64b5a2c7e001")
            .expect("host id");
        assert_eq!(parse_run_manifest(&run_manifest(&run)), Some(run.clone()));
        assert_eq!(
            parse_run_key(&node_manifest(&run, &host)),
            Some((run.clone(), RunObject::NodeManifest(host)))
        );
        assert_eq!(
            parse_run_key(&run_lease(&run)),
            Some((run.clone(), RunObject::Lease))
        );
        assert_eq!(
            parse_run_key(&run_topology(&run)),
            Some((run.clone(), RunObject::Topology))
        );
        assert_eq!(parse_run_manifest(&run_lease(&run)), None);
        let foreign = ObjectKey("runs/not-a-run/x/manifest.json".into());
        assert_eq!(parse_run_key(&foreign), None);
        assert!(names_manifest(&foreign));
        assert_eq!(run_folder(&foreign), Some("not-a-run"));
        assert_eq!(run_folder(&ObjectKey("blobs/ab".into())), None);
    }

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

    #[test]
    fn only_the_tmp_keys_ringvault_writes_are_recognised() {
        let run = RunId::new();
        let u = uuid::Uuid::new_v4().hyphenated().to_string();
        let key = |s: String| ObjectKey::from_listing(&s).expect("valid key");
        let staged = staging(&run, &u);
        assert_eq!(parse_tmp(&staged), Some(TmpKey::Staging(run.clone())));
        let part = key(format!("{staged}.rv-parts-0123456789ab/000001"));
        assert_eq!(parse_tmp(&part), Some(TmpKey::Staging(run.clone())));
        let compose = key(format!("{staged}.rv-parts-0123456789ab/c01-000002"));
        assert_eq!(parse_tmp(&compose), Some(TmpKey::Staging(run.clone())));
        assert_eq!(
            parse_tmp(&key(format!("tmp/check-{u}"))),
            Some(TmpKey::Check)
        );
        let parts = multipart_parts(&uuid::Uuid::new_v4(), "0123456789ab");
        for p in ["000001", "c01-000002"] {
            assert_eq!(parse_tmp(&key(format!("{parts}/{p}"))), Some(TmpKey::Parts));
        }
        for foreign in [
            format!("tmp/parts/{u}"),
            format!("tmp/parts/{u}.rv-parts-0123/x"),
            "tmp/parts/not-a-uuid.rv-parts-0123/000001".to_string(),
            "tmp/foreign.txt".to_string(),
            format!("tmp/{run}/notes.txt"),
            format!("tmp/{run}/{u}/deeper"),
            format!("tmp/{run}/{u}.rv-parts-xyz/1"),
            format!("tmp/{}/{u}", run.as_str().to_uppercase()),
            format!("tmp/check-{u}.bak"),
            format!("tmp/not-a-run/{u}"),
            format!("runs/{run}/{u}"),
        ] {
            assert_eq!(parse_tmp(&key(foreign.clone())), None, "{foreign}");
        }
        let id = uuid::Uuid::new_v4();
        assert_eq!(parse_purge_marker(&purge_marker(&id)), Some(id));
        assert_eq!(parse_purge_marker(&key("purges/x.json".into())), None);
    }
}
