//! The worker's memory of files it has hashed: (keyspace, table id, name, size, mtime) → hash,
//! and for a `Statistics.db` the numbers parsed from it. Snapshot files are immutable hard
//! links of SSTables, so a file with the same identity, size and mtime has the same content; a
//! repeat backup then reads no SSTable component at all. It also remembers when each blob was
//! last found in (or put into) a store, keyed by a hash of the store URL (never the URL: it
//! may carry a token), so a repeat backup need not ask the store about every blob again (see
//! `trust_seen_blobs` in the proto for who checks instead).
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use ringvault_common::hash::ContentHash;
use ringvault_common::sstable_stats::SstableStats;
use rusqlite::OptionalExtension;

/// Identity of a file for the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileIdentity {
    pub keyspace: String,
    pub table_id: String,
    pub name: String,
    pub size: u64,
    pub mtime_ns: i128,
}

/// How the cache names a store: the BLAKE3 of its URL, so no token a URL may carry is stored.
pub fn store_key(url: &str) -> String {
    ContentHash::of(url.as_bytes()).as_str().to_string()
}

/// What the cache remembers of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedFile {
    pub hash: ContentHash,
    /// The SSTable numbers of a `Statistics.db` (`None`: another component, numbers that
    /// could not be parsed, or a row written before they were kept).
    pub sstable: Option<SstableStats>,
}

/// SQLite-backed hash cache, shared by upload tasks.
#[derive(Clone)]
pub struct HashCache {
    conn: Arc<Mutex<rusqlite::Connection>>,
}

impl HashCache {
    /// Opens or creates the cache database.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        ringvault_common::security::create_owner_only(path)
            .with_context(|| format!("creating {} (owner only)", path.display()))?;
        let conn = rusqlite::Connection::open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS file_hash (
                keyspace TEXT NOT NULL, table_id TEXT NOT NULL, name TEXT NOT NULL,
                size INTEGER NOT NULL, mtime_ns TEXT NOT NULL, hash TEXT NOT NULL,
                PRIMARY KEY (keyspace, table_id, name, size, mtime_ns))",
        )
        .context("creating the hash cache table")?;
        // Added later: the parsed numbers of a Statistics.db (JSON), so a repeat backup need
        // not read the file again. Caches made before have no such column.
        let has_sstable: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('file_hash') WHERE name = 'sstable'")?
            .exists([])?;
        if !has_sstable {
            conn.execute_batch("ALTER TABLE file_hash ADD COLUMN sstable TEXT")
                .context("adding the sstable column to the hash cache")?;
        }
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS blob_seen (
                store TEXT NOT NULL, hash TEXT NOT NULL, size INTEGER NOT NULL,
                seen_unix_ms INTEGER NOT NULL, PRIMARY KEY (store, hash))",
        )
        .context("creating the blob_seen table")?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>,
    ) -> anyhow::Result<T> {
        let conn = self
            .conn
            .lock()
            .map_err(|_| anyhow::anyhow!("hash cache lock poisoned"))?;
        f(&conn).context("hash cache")
    }

    /// What was recorded of an identical file, if anything. A row that does not parse counts
    /// as absent (the file is then read again).
    pub fn get(&self, id: &FileIdentity) -> anyhow::Result<Option<CachedFile>> {
        let row: Option<(String, Option<String>)> = self.with(|c| {
            // Prepared once per connection: a no-change backup asks once per file.
            c.prepare_cached(
                "SELECT hash, sstable FROM file_hash WHERE keyspace=?1 AND table_id=?2 AND name=?3 AND size=?4 AND mtime_ns=?5",
            )?
            .query_row(
                rusqlite::params![id.keyspace, id.table_id, id.name, id.size as i64, id.mtime_ns.to_string()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
        })?;
        Ok(row.and_then(|(h, s)| {
            Some(CachedFile {
                hash: ContentHash::parse(&h).ok()?,
                sstable: s.and_then(|s| serde_json::from_str(&s).ok()),
            })
        }))
    }

    /// Whether the blob `hash` of `size` bytes was found in or put into `store` (a
    /// [`store_key`]) at or after `since_unix_ms`.
    pub fn seen_since(
        &self,
        store: &str,
        hash: &ContentHash,
        size: u64,
        since_unix_ms: i64,
    ) -> anyhow::Result<bool> {
        self.with(|c| {
            c.prepare_cached(
                "SELECT 1 FROM blob_seen WHERE store=?1 AND hash=?2 AND size=?3 AND seen_unix_ms>=?4",
            )?
            .exists(rusqlite::params![store, hash.as_str(), size as i64, since_unix_ms])
        })
    }

    /// Records that the blob is in `store` now.
    pub fn mark_seen(
        &self,
        store: &str,
        hash: &ContentHash,
        size: u64,
        now_unix_ms: i64,
    ) -> anyhow::Result<()> {
        self.with(|c| {
            c.prepare_cached(
                "INSERT OR REPLACE INTO blob_seen (store, hash, size, seen_unix_ms) VALUES (?1,?2,?3,?4)",
            )?
            .execute(rusqlite::params![store, hash.as_str(), size as i64, now_unix_ms])
        })?;
        Ok(())
    }

    /// Records a file's hash and, for a `Statistics.db`, its numbers.
    pub fn put(
        &self,
        id: &FileIdentity,
        hash: &ContentHash,
        sstable: Option<&SstableStats>,
    ) -> anyhow::Result<()> {
        let sstable = sstable
            .map(serde_json::to_string)
            .transpose()
            .context("encoding SSTable numbers")?;
        self.with(|c| {
            c.prepare_cached(
                "INSERT OR REPLACE INTO file_hash (keyspace, table_id, name, size, mtime_ns, hash, sstable) VALUES (?1,?2,?3,?4,?5,?6,?7)",
            )?
            .execute(rusqlite::params![id.keyspace, id.table_id, id.name, id.size as i64, id.mtime_ns.to_string(), hash.as_str(), sstable],
            )
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hit_needs_the_same_size_and_mtime() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let cache = HashCache::open(&dir.path().join("c.sqlite"))?;
        let id = FileIdentity {
            keyspace: "ks".into(),
            table_id: "ab".into(),
            name: "nb-1-big-Data.db".into(),
            size: 10,
            mtime_ns: 5,
        };
        let h = ContentHash::of(b"x");
        assert_eq!(cache.get(&id)?, None);
        cache.put(&id, &h, None)?;
        assert_eq!(
            cache.get(&id)?,
            Some(CachedFile {
                hash: h,
                sstable: None
            })
        );
        assert_eq!(
            cache.get(&FileIdentity {
                size: 11,
                ..id.clone()
            })?,
            None
        );
        assert_eq!(cache.get(&FileIdentity { mtime_ns: 6, ..id })?, None);
        Ok(())
    }

    #[test]
    fn statistics_numbers_are_kept_and_an_older_cache_gains_their_column() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("c.sqlite");
        // A cache written before the numbers were kept: five key columns and the hash.
        let old = rusqlite::Connection::open(&path)?;
        old.execute_batch(
            "CREATE TABLE file_hash (
                keyspace TEXT NOT NULL, table_id TEXT NOT NULL, name TEXT NOT NULL,
                size INTEGER NOT NULL, mtime_ns TEXT NOT NULL, hash TEXT NOT NULL,
                PRIMARY KEY (keyspace, table_id, name, size, mtime_ns))",
        )?;
        let h = ContentHash::of(b"stats");
        old.execute(
            "INSERT INTO file_hash VALUES ('ks', 'ab', 'nb-1-big-Statistics.db', 10, '5', ?1)",
            [h.as_str()],
        )?;
        drop(old);
        let cache = HashCache::open(&path)?;
        let id = FileIdentity {
            keyspace: "ks".into(),
            table_id: "ab".into(),
            name: "nb-1-big-Statistics.db".into(),
            size: 10,
            mtime_ns: 5,
        };
        let hit = cache.get(&id)?.context("the old row is still a hit")?;
        assert_eq!((hit.hash.clone(), hit.sstable), (h.clone(), None));
        let stats = SstableStats {
            partitions: 3,
            rows: Some(7),
            min_timestamp: -1,
            max_timestamp: 9,
            has_tombstones: true,
        };
        cache.put(&id, &h, Some(&stats))?;
        drop(cache);
        let cache = HashCache::open(&path)?;
        assert_eq!(
            cache.get(&id)?,
            Some(CachedFile {
                hash: h,
                sstable: Some(stats)
            })
        );
        Ok(())
    }

    #[test]
    fn a_blob_counts_as_seen_only_in_its_store_with_its_size_and_since_the_time_asked()
    -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let cache = HashCache::open(&dir.path().join("c.sqlite"))?;
        let (a, b) = (
            store_key("s3://bucket/a?sas=secret"),
            store_key("s3://bucket/b"),
        );
        assert!(!a.contains("secret") && a != b);
        let h = ContentHash::of(b"blob");
        assert!(!cache.seen_since(&a, &h, 4, 0)?);
        cache.mark_seen(&a, &h, 4, 1_000)?;
        assert!(cache.seen_since(&a, &h, 4, 1_000)?);
        assert!(
            !cache.seen_since(&a, &h, 4, 1_001)?,
            "seen before the time asked"
        );
        assert!(!cache.seen_since(&a, &h, 5, 0)?, "another size");
        assert!(!cache.seen_since(&b, &h, 4, 0)?, "another store");
        cache.mark_seen(&a, &h, 4, 2_000)?;
        assert!(cache.seen_since(&a, &h, 4, 1_500)?, "seen again later");
        Ok(())
    }
}
