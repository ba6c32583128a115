//! The one module that talks to SQLite: versioned migrations, and typed reads and writes of
//! workers ([`workers`]), runs, per-node tasks, files and known blobs ([`runs`]), schedules
//! ([`schedules`]), the metrics page's aggregates ([`metrics`]) and bounded-state housekeeping
//! ([`housekeeping`]), one file per table family. One writing connection in WAL mode
//! behind a mutex, plus a small pool of read-only connections ([`Readers`]) for long reads: the
//! metrics page's aggregates, a run's distinct blobs, a node's file rows for its manifest (a WAL
//! reader never waits for the writer, heartbeats never wait behind a scrape, and one long read
//! never holds up another); callers run these blocking calls on the blocking pool
//! ([`Db::call`]). State stays bounded: file rows of
//! finished runs are rolled up to per-table totals ([`Db::roll_up_files`]), old runs and
//! events are pruned ([`Db::prune_history`]) and the freed pages returned to the filesystem
//! in small steps ([`Db::vacuum_step`]).
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;

mod housekeeping;
mod metrics;
mod runs;
mod schedules;
mod workers;

pub use housekeeping::Housekeeping;
pub use metrics::{ClusterFileTotals, RunStateCount};
pub use runs::{RunFileRow, RunNodeRow, RunRow, TableTotals};
pub use schedules::{ScheduleEventRow, ScheduleRow};
pub use workers::WorkerRow;

/// SQLite's page cache of the writing connection, KiB. SQLite lets a sort use as much memory
/// as the page cache holds, so whole-run aggregates run on a read-only connection instead.
const PAGE_CACHE_KIB: i64 = 64 * 1024;

/// Each read-only connection's page cache, KiB: also what its sorts hold in memory before they
/// spill to temporary files (a `GROUP BY` over a run's 5 million file rows sorts them all).
const READ_CACHE_KIB: i64 = 8 * 1024;

/// Read-only connections kept open between reads (their page caches given back); more are
/// opened while more reads run at once (a commit reads up to 16 nodes' rows together, a
/// scrape or a restore test one more) and closed when they finish.
const IDLE_READERS: usize = 4;

/// Read-only connections open at once, at most: a commit's manifest reads (up to 16 nodes'
/// rows together), a scrape and a restore test besides. A read past the cap waits (on the
/// blocking pool, where reads run) until another finishes, so connections and their page
/// caches stay bounded whatever the callers do.
const MAX_READERS: usize = 20;

/// Migrations in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/0001_init.sql"),
    include_str!("../../migrations/0002_restore.sql"),
    include_str!("../../migrations/0003_operations.sql"),
    include_str!("../../migrations/0004_identity.sql"),
    include_str!("../../migrations/0005_run_datacenters.sql"),
    include_str!("../../migrations/0006_bounded.sql"),
    include_str!("../../migrations/0007_restore_tests.sql"),
    include_str!("../../migrations/0008_run_file_stats.sql"),
    include_str!("../../migrations/0009_run_totals_at_finish.sql"),
    include_str!("../../migrations/0010_run_files_without_rowid.sql"),
];

/// Handle to the coordinator's database.
#[derive(Clone)]
pub struct Db {
    conn: Arc<Mutex<rusqlite::Connection>>,
    /// Read-only, for reads that may take a while (metrics, a run's distinct blobs, a node's
    /// file rows).
    readers: Arc<Readers>,
}

/// Read-only connections to the database, each used by one read at a time: a read takes an
/// idle one or opens another, so reads never wait for the writer, nor for each other while
/// fewer than [`MAX_READERS`] run.
struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<rusqlite::Connection>>,
    /// Reads running now, at most [`MAX_READERS`].
    running: Mutex<usize>,
    /// Signalled when a read finishes.
    finished: std::sync::Condvar,
}

/// One running read's place under [`MAX_READERS`], given back on drop.
struct ReadSlot<'a>(&'a Readers);

impl Drop for ReadSlot<'_> {
    fn drop(&mut self) {
        if let Ok(mut n) = self.0.running.lock() {
            *n = n.saturating_sub(1);
        }
        self.0.finished.notify_one();
    }
}

impl Readers {
    fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            idle: Mutex::new(Vec::new()),
            running: Mutex::new(0),
            finished: std::sync::Condvar::new(),
        }
    }

    /// Waits until fewer than [`MAX_READERS`] reads run, and counts this one.
    fn slot(&self) -> anyhow::Result<ReadSlot<'_>> {
        let poisoned = || anyhow::anyhow!("database lock poisoned");
        let mut n = self.running.lock().map_err(|_| poisoned())?;
        while *n >= MAX_READERS {
            n = self.finished.wait(n).map_err(|_| poisoned())?;
        }
        *n += 1;
        Ok(ReadSlot(self))
    }

    fn open(&self) -> anyhow::Result<rusqlite::Connection> {
        let c = rusqlite::Connection::open_with_flags(
            &self.path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| format!("opening {} for reading", self.path.display()))?;
        c.busy_timeout(std::time::Duration::from_secs(10))?;
        c.pragma_update(None, "cache_size", -READ_CACHE_KIB)?;
        Ok(c)
    }

    fn idle(&self) -> anyhow::Result<std::sync::MutexGuard<'_, Vec<rusqlite::Connection>>> {
        self.idle
            .lock()
            .map_err(|_| anyhow::anyhow!("database lock poisoned"))
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut rusqlite::Connection) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let _slot = self.slot()?;
        let idle = self.idle()?.pop();
        let mut conn = match idle {
            Some(c) => c,
            None => self.open()?,
        };
        let out = f(&mut conn);
        // A connection left inside a transaction (a failed read) is closed, not reused: it
        // would read an old snapshot. One kept gives its page cache back first.
        if conn.is_autocommit()
            && let Ok(mut idle) = self.idle.lock()
            && idle.len() < IDLE_READERS
            && conn.execute_batch("PRAGMA shrink_memory").is_ok()
        {
            idle.push(conn);
        }
        out
    }
}

impl Db {
    /// Opens (creating and migrating) the database at `path`.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        // Owner-only from the first byte: run requests and store URLs are nobody else's business.
        ringvault_common::security::create_owner_only(path)
            .with_context(|| format!("creating {} (owner only)", path.display()))?;
        let mut conn = rusqlite::Connection::open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        // Pages freed by pruning go back to the filesystem ([`Db::vacuum_step`]): a database
        // made before this setting is rebuilt once, here, before anything else uses it.
        let auto_vacuum: i64 = conn.pragma_query_value(None, "auto_vacuum", |r| r.get(0))?;
        if auto_vacuum != 2 {
            conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
            conn.execute_batch("VACUUM")
                .context("enabling incremental vacuum")?;
        }
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // SQLite's default page cache is 2 MiB: with millions of file rows every insert
        // re-read the B-tree path through the kernel (`pread`). Bounded, and counted in the
        // coordinator's memory budget.
        conn.pragma_update(None, "cache_size", -PAGE_CACHE_KIB)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        migrate(&mut conn)?;
        let readers = Readers::new(path);
        // One opened now: a database no reader can open fails here, not in the middle of a run.
        let first = readers.open()?;
        readers.idle()?.push(first);
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            readers: Arc::new(readers),
        })
    }

    /// Runs `f` on a read-only connection of its own.
    fn with_read<T>(
        &self,
        f: impl FnOnce(&mut rusqlite::Connection) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        self.readers.with(f)
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut rusqlite::Connection) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| anyhow::anyhow!("database lock poisoned"))?;
        f(&mut conn)
    }

    /// Runs one statement; how many rows it changed.
    fn execute(&self, sql: &str, params: impl rusqlite::Params) -> anyhow::Result<usize> {
        self.with(|c| Ok(c.execute(sql, params)?))
    }

    /// Runs `f` on the read-write connection: for modules that keep tables of their own
    /// (`restore_test`).
    pub fn with_conn<T>(
        &self,
        f: impl FnOnce(&mut rusqlite::Connection) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        self.with(f)
    }

    /// Runs `f` on a read-only connection of its own (metrics, restore tests).
    pub fn with_read_conn<T>(
        &self,
        f: impl FnOnce(&mut rusqlite::Connection) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        self.with_read(f)
    }

    /// Runs `f` on the blocking pool.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Db) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let db = self.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .context("database task")?
    }
}

/// Runs the migrations `conn`'s `PRAGMA user_version` says are still to run, each in its own
/// transaction; refuses a database newer than this coordinator.
fn migrate(c: &mut rusqlite::Connection) -> anyhow::Result<()> {
    let version: usize =
        c.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))? as usize;
    if version > MIGRATIONS.len() {
        anyhow::bail!(
            "database schema version {version} is newer than this coordinator knows ({})",
            MIGRATIONS.len()
        );
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = c.transaction()?;
        tx.execute_batch(sql)
            .with_context(|| format!("migration {}", i + 1))?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Two long reads at once, and a write meanwhile: none waits for another (with one shared
    /// read connection the second read waited for the first), and the first read, still
    /// inside its statement, goes on seeing the database as it was when it began (WAL).
    #[test]
    fn reads_do_not_wait_for_each_other_or_block_the_writer() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = Db::open(&dir.path().join("c.db"))?;
        for id in ["r1", "r2"] {
            db.insert_run(&RunRow::for_test(id, crate::run::RunKind::Backup, "c"))?;
        }
        let (inside, entered) = mpsc::channel();
        let (release, wait) = mpsc::channel::<()>();
        let first = {
            let db = db.clone();
            std::thread::spawn(move || {
                db.with_read(|c| {
                    let mut st = c.prepare("SELECT id FROM runs ORDER BY id")?;
                    let mut rows = st.query([])?;
                    let mut ids = vec![rows.next()?.context("a row")?.get::<_, String>(0)?];
                    // Held open, mid-statement, until the second read and the write are done.
                    inside.send(()).ok();
                    wait.recv_timeout(Duration::from_secs(10)).ok();
                    while let Some(r) = rows.next()? {
                        ids.push(r.get(0)?);
                    }
                    Ok(ids)
                })
            })
        };
        entered.recv_timeout(Duration::from_secs(10))?;
        let second = {
            let db = db.clone();
            std::thread::spawn(move || {
                db.with_read(|c| {
                    Ok(c.query_row("SELECT COUNT(*) FROM runs", [], |r| r.get::<_, i64>(0))?)
                })
            })
        };
        let (done, finished) = mpsc::channel();
        std::thread::spawn(move || done.send(second.join()).ok());
        let got = finished
            .recv_timeout(Duration::from_secs(5))
            .context("the second read waited for the first")?
            .map_err(|_| anyhow::anyhow!("second read panicked"))??;
        assert_eq!(got, 2);
        // The writer commits while the first read is inside its statement.
        db.insert_run(&RunRow::for_test("r3", crate::run::RunKind::Backup, "c"))?;
        release.send(()).ok();
        let ids = first
            .join()
            .map_err(|_| anyhow::anyhow!("first read panicked"))??;
        assert_eq!(ids, ["r1", "r2"], "a read sees one snapshot");
        let count = db.with_read(|c| {
            Ok(c.query_row("SELECT COUNT(*) FROM runs", [], |r| r.get::<_, i64>(0))?)
        })?;
        assert_eq!(count, 3, "a later read sees the write");
        Ok(())
    }

    /// Reads past [`MAX_READERS`] wait for one to finish instead of opening yet another
    /// connection, and go on as soon as one does.
    #[test]
    fn reads_past_the_cap_wait_for_one_to_finish() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = Db::open(&dir.path().join("c.db"))?;
        let (started_tx, started) = mpsc::channel();
        let mut releases = Vec::new();
        let mut holders = Vec::new();
        for _ in 0..MAX_READERS {
            let (release_tx, release) = mpsc::channel::<()>();
            releases.push(release_tx);
            let (db, started_tx) = (db.clone(), started_tx.clone());
            holders.push(std::thread::spawn(move || {
                db.with_read(|_| {
                    started_tx.send(()).ok();
                    release.recv().ok();
                    Ok(())
                })
            }));
        }
        for _ in 0..MAX_READERS {
            started
                .recv_timeout(Duration::from_secs(10))
                .context("a read under the cap did not start")?;
        }
        let (ran_tx, ran) = mpsc::channel();
        let extra = {
            let db = db.clone();
            std::thread::spawn(move || {
                db.with_read(|_| {
                    ran_tx.send(()).ok();
                    Ok(())
                })
            })
        };
        assert!(
            ran.recv_timeout(Duration::from_millis(300)).is_err(),
            "a read past the cap ran while {MAX_READERS} others held their connections"
        );
        releases.pop().map(|r| r.send(()));
        ran.recv_timeout(Duration::from_secs(10))
            .context("the waiting read did not run after one finished")?;
        extra
            .join()
            .map_err(|_| anyhow::anyhow!("extra read panicked"))??;
        for r in releases {
            r.send(()).ok();
        }
        for h in holders {
            h.join().map_err(|_| anyhow::anyhow!("read panicked"))??;
        }
        Ok(())
    }

    /// A read that fails inside a transaction leaves its connection out of the pool: reused, it
    /// would keep reading the old snapshot and miss every later write.
    #[test]
    fn a_reader_left_in_a_transaction_is_not_reused() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = Db::open(&dir.path().join("c.db"))?;
        db.insert_run(&RunRow::for_test("r1", crate::run::RunKind::Backup, "c"))?;
        let failed: anyhow::Result<()> = db.with_read(|c| {
            c.execute_batch("BEGIN; SELECT COUNT(*) FROM runs;")?;
            anyhow::bail!("a read that fails inside its transaction")
        });
        assert!(failed.is_err());
        db.insert_run(&RunRow::for_test("r2", crate::run::RunKind::Backup, "c"))?;
        for _ in 0..IDLE_READERS + 1 {
            let n = db.with_read(|c| {
                Ok(c.query_row("SELECT COUNT(*) FROM runs", [], |r| r.get::<_, i64>(0))?)
            })?;
            assert_eq!(n, 2, "a reader still in the failed read's snapshot");
        }
        assert_eq!(
            db.readers.idle()?.len(),
            1,
            "a finished read's connection is kept"
        );
        Ok(())
    }

    /// Migration 10 rebuilds `run_files` keyed by its primary key alone and keeps every row,
    /// every column in its place.
    #[test]
    fn file_rows_survive_the_move_to_a_table_without_rowid() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("c.db");
        type Row = (
            String,
            String,
            String,
            String,
            String,
            String,
            i64,
            i64,
            String,
            i64,
            Option<String>,
        );
        let rows: Vec<Row> = (0..3)
            .map(|n| {
                (
                    format!("run{n}"),
                    format!("host{n}"),
                    format!("ks{n}"),
                    format!("table{n}"),
                    format!("tid{n}"),
                    format!("nb-{n}-big-Data.db"),
                    n,
                    100 + n,
                    format!("hash{n}"),
                    n % 2,
                    (n == 1).then(|| format!("{{\"n\":{n}}}")),
                )
            })
            .collect();
        const COLS: &str = "run_id, host_id, keyspace, table_name, table_id, name, data_dir_index, size, hash, uploaded, sstable_json";
        {
            let mut c = rusqlite::Connection::open(&path)?;
            for (i, sql) in MIGRATIONS.iter().enumerate().take(9) {
                c.execute_batch(sql)?;
                c.pragma_update(None, "user_version", (i + 1) as i64)?;
            }
            let tx = c.transaction()?;
            for r in &rows {
                tx.execute(
                    &format!(
                        "INSERT INTO run_files ({COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)"
                    ),
                    rusqlite::params![r.0, r.1, r.2, r.3, r.4, r.5, r.6, r.7, r.8, r.9, r.10],
                )?;
            }
            tx.commit()?;
        }
        let db = Db::open(&path)?;
        let after: Vec<Row> = db.with_read(|c| {
            let mut st = c.prepare(&format!("SELECT {COLS} FROM run_files ORDER BY run_id"))?;
            let got = st.query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                    r.get(9)?,
                    r.get(10)?,
                ))
            })?;
            Ok(got.collect::<Result<Vec<_>, _>>()?)
        })?;
        assert_eq!(after, rows);
        let without_rowid =
            db.with_read(|c| Ok(c.prepare("SELECT rowid FROM run_files").is_err()))?;
        assert!(without_rowid, "run_files still has a rowid");
        Ok(())
    }
}
