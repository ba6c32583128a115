//! The worker's memory of files it has hashed: (keyspace, table id, name, size, mtime) → hash.
//! Snapshot files are immutable hard links of SSTables, so a file with the same identity,
//! size and mtime has the same content; a repeat backup then reads no SSTable at all.
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use ringvault_common::hash::ContentHash;
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

    /// The recorded hash of an identical file, if any.
    pub fn get(&self, id: &FileIdentity) -> anyhow::Result<Option<ContentHash>> {
        let hash: Option<String> = self.with(|c| {
            // Prepared once per connection: a no-change backup asks once per file.
            c.prepare_cached(
                "SELECT hash FROM file_hash WHERE keyspace=?1 AND table_id=?2 AND name=?3 AND size=?4 AND mtime_ns=?5",
            )?
            .query_row(
                rusqlite::params![id.keyspace, id.table_id, id.name, id.size as i64, id.mtime_ns.to_string()],
                |r| r.get(0),
            )
            .optional()
        })?;
        Ok(hash.and_then(|h| ContentHash::parse(&h).ok()))
    }

    /// Records a file's hash.
    pub fn put(&self, id: &FileIdentity, hash: &ContentHash) -> anyhow::Result<()> {
        self.with(|c| {
            c.prepare_cached(
                "INSERT OR REPLACE INTO file_hash (keyspace, table_id, name, size, mtime_ns, hash) VALUES (?1,?2,?3,?4,?5,?6)",
            )?
            .execute(rusqlite::params![id.keyspace, id.table_id, id.name, id.size as i64, id.mtime_ns.to_string(), hash.as_str()],
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
        cache.put(&id, &h)?;
        assert_eq!(cache.get(&id)?, Some(h));
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
}
