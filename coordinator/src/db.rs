//! The one module that talks to SQLite: versioned migrations, and typed reads and writes of
//! workers, runs, per-node tasks, files and known blobs. One writing connection in WAL mode
//! behind a mutex, plus a read-only connection for the metrics page's aggregates (a WAL reader
//! never waits for the writer, and heartbeats never wait behind a scrape); callers run these
//! blocking calls on the blocking pool ([`Db::call`]). State stays bounded: file rows of
//! finished runs are rolled up to per-table totals ([`Db::roll_up_files`]), old runs and
//! events are pruned ([`Db::prune_history`]) and the freed pages returned to the filesystem
//! in small steps ([`Db::vacuum_step`]).
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use rusqlite::{OptionalExtension, params};

/// Migrations in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_init.sql"),
    include_str!("../migrations/0002_restore.sql"),
    include_str!("../migrations/0003_operations.sql"),
    include_str!("../migrations/0004_identity.sql"),
    include_str!("../migrations/0005_run_datacenters.sql"),
    include_str!("../migrations/0006_bounded.sql"),
    include_str!("../migrations/0007_restore_tests.sql"),
];

/// Handle to the coordinator's database.
#[derive(Clone)]
pub struct Db {
    conn: Arc<Mutex<rusqlite::Connection>>,
    /// Read-only, for aggregates that may take a while (metrics).
    read: Arc<Mutex<rusqlite::Connection>>,
}

/// A registered worker.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerRow {
    pub host_id: String,
    pub cluster_name: String,
    pub address: String,
    pub worker_address: String,
    pub datacenter: String,
    pub rack: String,
    pub tokens: Vec<String>,
    pub data_dirs: Vec<String>,
    pub cassandra_version: String,
    pub last_seen_ms: i64,
}

/// A run as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    pub id: String,
    pub kind: String,
    pub tag: String,
    pub cluster_name: String,
    pub state: String,
    pub stage: String,
    pub keyspaces: Vec<String>,
    pub tables: Vec<String>,
    pub store_url: String,
    pub created_ms: i64,
    pub finished_ms: i64,
    pub error: String,
    /// For restores: the backup run restored.
    pub source_run_id: String,
    /// The run's limits as resolved when it started.
    pub limits: crate::limits::RunLimits,
    /// The schedule that started the run ("" when started by hand).
    pub schedule_id: String,
}

/// One node's part of a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunNodeRow {
    pub host_id: String,
    pub address: String,
    pub worker_address: String,
    pub state: String,
    pub snapshot: String,
    pub files_total: u64,
    pub files_done: u64,
    pub bytes_total: u64,
    pub bytes_done: u64,
    pub files_uploaded: u64,
    pub bytes_uploaded: u64,
    pub error: String,
    /// Times the node's work was re-issued after its worker restarted or its stream broke.
    pub retries: u32,
}

/// A file row of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunFileRow {
    pub host_id: String,
    pub keyspace: String,
    pub table: String,
    pub table_id: String,
    pub name: String,
    pub data_dir_index: u32,
    pub size: u64,
    pub hash: String,
    pub uploaded: bool,
}

/// Files and bytes of one table in a run.
#[derive(Debug, Clone, PartialEq)]
pub struct TableTotals {
    pub keyspace: String,
    pub table: String,
    pub files: u64,
    pub bytes: u64,
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
        let conn = rusqlite::Connection::open(path)
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
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let conn = Arc::new(Mutex::new(conn));
        let migrating = Self {
            conn: Arc::clone(&conn),
            read: Arc::clone(&conn),
        };
        migrating.migrate()?;
        let read = rusqlite::Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| format!("opening {} for reading", path.display()))?;
        read.busy_timeout(std::time::Duration::from_secs(10))?;
        Ok(Self {
            conn,
            read: Arc::new(Mutex::new(read)),
        })
    }

    /// Runs `f` on the read-only connection.
    fn with_read<T>(
        &self,
        f: impl FnOnce(&mut rusqlite::Connection) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let mut conn = self
            .read
            .lock()
            .map_err(|_| anyhow::anyhow!("database lock poisoned"))?;
        f(&mut conn)
    }

    fn migrate(&self) -> anyhow::Result<()> {
        self.with(|c| {
            let version: usize =
                c.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))? as usize;
            if version > MIGRATIONS.len() {
                anyhow::bail!(
                    "database schema version {version} is newer than this coordinator knows ({})",
                    MIGRATIONS.len()
                );
            }
            for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
                let tx = c.unchecked_transaction()?;
                tx.execute_batch(sql)
                    .with_context(|| format!("migration {}", i + 1))?;
                tx.pragma_update(None, "user_version", (i + 1) as i64)?;
                tx.commit()?;
            }
            Ok(())
        })
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

    /// Runs `f` on the read-write connection: for modules that keep tables of their own
    /// (`restore_test`).
    pub fn with_conn<T>(
        &self,
        f: impl FnOnce(&mut rusqlite::Connection) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        self.with(f)
    }

    /// Runs `f` on the read-only connection (metrics).
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

    // ------------------------------------------------------------------ workers

    /// Inserts or refreshes a worker.
    pub fn upsert_worker(&self, w: &WorkerRow) -> anyhow::Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO workers (host_id, cluster_name, address, worker_address, datacenter, rack, tokens_json, data_dirs_json, cassandra_version, registered_ms, last_seen_ms)
                 VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?10)
                 ON CONFLICT(host_id) DO UPDATE SET cluster_name=?2, address=?3, worker_address=?4, datacenter=?5, rack=?6,
                   tokens_json=?7, data_dirs_json=?8, cassandra_version=?9, last_seen_ms=?10",
                params![
                    w.host_id, w.cluster_name, w.address, w.worker_address, w.datacenter, w.rack,
                    serde_json::to_string(&w.tokens)?, serde_json::to_string(&w.data_dirs)?, w.cassandra_version, w.last_seen_ms
                ],
            )?;
            Ok(())
        })
    }

    /// Records a heartbeat; false when the worker is unknown.
    /// Registers a worker under `identity` (its certificate's URI; `None` over insecure
    /// loopback). A host id already bound to another identity is left unchanged and the bound
    /// identity returned as the error.
    pub fn register_worker(
        &self,
        w: &WorkerRow,
        identity: Option<&str>,
    ) -> anyhow::Result<Result<(), String>> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            let bound: Option<Option<String>> = tx
                .query_row(
                    "SELECT identity FROM workers WHERE host_id=?1",
                    params![w.host_id],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(Some(b)) = &bound
                && Some(b.as_str()) != identity
            {
                return Ok(Err(b.clone()));
            }
            tx.execute(
                "INSERT INTO workers (host_id, cluster_name, address, worker_address, datacenter, rack, tokens_json, data_dirs_json, cassandra_version, registered_ms, last_seen_ms, identity)
                 VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?10,?11)
                 ON CONFLICT(host_id) DO UPDATE SET cluster_name=?2, address=?3, worker_address=?4, datacenter=?5, rack=?6,
                   tokens_json=?7, data_dirs_json=?8, cassandra_version=?9, last_seen_ms=?10, identity=?11",
                params![
                    w.host_id, w.cluster_name, w.address, w.worker_address, w.datacenter, w.rack,
                    serde_json::to_string(&w.tokens)?, serde_json::to_string(&w.data_dirs)?, w.cassandra_version, w.last_seen_ms,
                    identity
                ],
            )?;
            tx.commit()?;
            Ok(Ok(()))
        })
    }

    /// Records a heartbeat of `host_id` from `identity`; false when no worker with that host id
    /// is bound to that identity (the worker then registers again).
    pub fn touch_worker_as(
        &self,
        host_id: &str,
        identity: Option<&str>,
        now_ms: i64,
    ) -> anyhow::Result<bool> {
        self.with(|c| {
            Ok(c.execute(
                "UPDATE workers SET last_seen_ms=?2 WHERE host_id=?1 AND identity IS ?3",
                params![host_id, now_ms, identity],
            )? == 1)
        })
    }

    /// Forgets a worker and its identity binding; false when there was none.
    pub fn remove_worker(&self, host_id: &str) -> anyhow::Result<bool> {
        self.with(|c| Ok(c.execute("DELETE FROM workers WHERE host_id=?1", params![host_id])? == 1))
    }

    /// The identity a host id is bound to (`None`: unknown host or insecure registration).
    pub fn worker_identity(&self, host_id: &str) -> anyhow::Result<Option<String>> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT identity FROM workers WHERE host_id=?1",
                params![host_id],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()?
            .flatten())
        })
    }

    pub fn touch_worker(&self, host_id: &str, now_ms: i64) -> anyhow::Result<bool> {
        self.with(|c| {
            Ok(c.execute(
                "UPDATE workers SET last_seen_ms=?2 WHERE host_id=?1",
                params![host_id, now_ms],
            )? == 1)
        })
    }

    /// Every worker ever registered.
    pub fn workers(&self) -> anyhow::Result<Vec<WorkerRow>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT host_id, cluster_name, address, worker_address, datacenter, rack, tokens_json, data_dirs_json, cassandra_version, last_seen_ms FROM workers ORDER BY address",
            )?;
            let rows = st.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?, r.get::<_, String>(5)?, r.get::<_, String>(6)?, r.get::<_, String>(7)?,
                    r.get::<_, String>(8)?, r.get::<_, i64>(9)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let r = row?;
                out.push(WorkerRow {
                    host_id: r.0, cluster_name: r.1, address: r.2, worker_address: r.3, datacenter: r.4, rack: r.5,
                    tokens: serde_json::from_str(&r.6)?, data_dirs: serde_json::from_str(&r.7)?, cassandra_version: r.8, last_seen_ms: r.9,
                });
            }
            Ok(out)
        })
    }

    // ------------------------------------------------------------------ runs

    /// Records a new run.
    pub fn insert_run(&self, r: &RunRow) -> anyhow::Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO runs (id, kind, tag, cluster_name, state, stage, keyspaces, tables, store_url, created_ms, source_run_id, limits_json, schedule_id) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13)",
                params![r.id, r.kind, r.tag, r.cluster_name, r.state, r.stage, serde_json::to_string(&r.keyspaces)?, serde_json::to_string(&r.tables)?, r.store_url, r.created_ms, r.source_run_id, serde_json::to_string(&r.limits)?, r.schedule_id],
            )?;
            Ok(())
        })
    }

    /// Moves a run to a stage.
    pub fn set_stage(&self, run_id: &str, stage: &str) -> anyhow::Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE runs SET stage=?2 WHERE id=?1",
                params![run_id, stage],
            )?;
            Ok(())
        })
    }

    /// Records a running run's outcome ahead of its cleanup ("" = succeeded).
    pub fn set_error(&self, run_id: &str, error: &str) -> anyhow::Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE runs SET error=?2 WHERE id=?1",
                params![run_id, error],
            )?;
            Ok(())
        })
    }

    /// Sets a run's cluster name once it is known.
    pub fn set_cluster(&self, run_id: &str, cluster: &str) -> anyhow::Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE runs SET cluster_name=?2 WHERE id=?1",
                params![run_id, cluster],
            )?;
            Ok(())
        })
    }

    /// Ends a run.
    pub fn finish_run(
        &self,
        run_id: &str,
        state: &str,
        error: &str,
        now_ms: i64,
    ) -> anyhow::Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "UPDATE runs SET state=?2, error=?3, finished_ms=?4 WHERE id=?1",
                params![run_id, state, error, now_ms],
            )?;
            // The metrics counters take the run's files once, when it ends.
            if state != "RUNNING" {
                count_files(&tx, run_id)?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn run_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(RunRow, String, String, String)> {
        Ok((
            RunRow {
                id: r.get(0)?,
                kind: r.get(1)?,
                tag: r.get(2)?,
                cluster_name: r.get(3)?,
                state: r.get(4)?,
                stage: r.get(5)?,
                keyspaces: Vec::new(),
                tables: Vec::new(),
                store_url: r.get(8)?,
                created_ms: r.get(9)?,
                finished_ms: r.get(10)?,
                error: r.get(11)?,
                source_run_id: r.get(12)?,
                limits: Default::default(),
                schedule_id: r.get(14)?,
            },
            r.get(6)?,
            r.get(7)?,
            r.get(13)?,
        ))
    }

    fn decode_run(
        mut r: RunRow,
        keyspaces: &str,
        tables: &str,
        limits: &str,
    ) -> anyhow::Result<RunRow> {
        r.keyspaces = serde_json::from_str(keyspaces)?;
        r.tables = serde_json::from_str(tables)?;
        r.limits = serde_json::from_str(limits)?;
        Ok(r)
    }

    const RUN_COLS: &'static str = "id, kind, tag, cluster_name, state, stage, keyspaces, tables, store_url, created_ms, finished_ms, error, source_run_id, limits_json, schedule_id";

    /// One run.
    pub fn run(&self, run_id: &str) -> anyhow::Result<Option<RunRow>> {
        self.with(|c| {
            let row = c
                .query_row(
                    &format!("SELECT {} FROM runs WHERE id=?1", Self::RUN_COLS),
                    params![run_id],
                    Self::run_from_row,
                )
                .optional()?;
            row.map(|(r, k, t, l)| Self::decode_run(r, &k, &t, &l))
                .transpose()
        })
    }

    /// Newest runs first; `only_state` filters.
    pub fn runs(&self, limit: u32, only_state: Option<&str>) -> anyhow::Result<Vec<RunRow>> {
        self.with(|c| {
            let sql = format!(
                "SELECT {} FROM runs WHERE (?1 IS NULL OR state=?1) ORDER BY created_ms DESC, id DESC LIMIT ?2",
                Self::RUN_COLS
            );
            let mut st = c.prepare(&sql)?;
            let rows = st.query_map(params![only_state, limit], Self::run_from_row)?;
            let mut out = Vec::new();
            for row in rows {
                let (r, k, t, l) = row?;
                out.push(Self::decode_run(r, &k, &t, &l)?);
            }
            Ok(out)
        })
    }

    // ------------------------------------------------------------------ run nodes

    /// Writes (inserting or replacing) one node's progress row.
    pub fn put_run_node(&self, run_id: &str, n: &RunNodeRow) -> anyhow::Result<()> {
        self.put_run_nodes(run_id, std::slice::from_ref(n))
    }

    /// Writes several progress rows in one transaction.
    pub fn put_run_nodes(&self, run_id: &str, rows: &[RunNodeRow]) -> anyhow::Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            {
                let mut st = tx.prepare_cached(
                    "INSERT OR REPLACE INTO run_nodes (run_id, host_id, address, worker_address, state, snapshot, files_total, files_done, bytes_total, bytes_done, files_uploaded, bytes_uploaded, error, retries)
                     VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14)",
                )?;
                for n in rows {
                    st.execute(params![
                        run_id, n.host_id, n.address, n.worker_address, n.state, n.snapshot, n.files_total as i64, n.files_done as i64,
                        n.bytes_total as i64, n.bytes_done as i64, n.files_uploaded as i64, n.bytes_uploaded as i64, n.error, n.retries
                    ])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// The nodes of a run.
    pub fn run_nodes(&self, run_id: &str) -> anyhow::Result<Vec<RunNodeRow>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT host_id, address, worker_address, state, snapshot, files_total, files_done, bytes_total, bytes_done, files_uploaded, bytes_uploaded, error, retries
                 FROM run_nodes WHERE run_id=?1 ORDER BY address",
            )?;
            let rows = st.query_map(params![run_id], |r| {
                Ok(RunNodeRow {
                    host_id: r.get(0)?, address: r.get(1)?, worker_address: r.get(2)?, state: r.get(3)?, snapshot: r.get(4)?,
                    files_total: r.get::<_, i64>(5)? as u64, files_done: r.get::<_, i64>(6)? as u64, bytes_total: r.get::<_, i64>(7)? as u64,
                    bytes_done: r.get::<_, i64>(8)? as u64, files_uploaded: r.get::<_, i64>(9)? as u64, bytes_uploaded: r.get::<_, i64>(10)? as u64,
                    error: r.get(11)?, retries: r.get(12)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    // ------------------------------------------------------------------ files and blobs

    /// Appends a batch of file rows in one transaction.
    pub fn insert_files(&self, run_id: &str, files: &[RunFileRow]) -> anyhow::Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            {
                let mut st = tx.prepare_cached(
                    "INSERT INTO run_files (run_id, host_id, keyspace, table_name, table_id, name, data_dir_index, size, hash, uploaded)
                     VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)
                     ON CONFLICT (run_id, host_id, data_dir_index, keyspace, table_id, name) DO UPDATE SET
                       size = excluded.size, hash = excluded.hash, table_name = excluded.table_name,
                       uploaded = MAX(run_files.uploaded, excluded.uploaded)",
                )?;
                for f in files {
                    st.execute(params![run_id, f.host_id, f.keyspace, f.table, f.table_id, f.name, f.data_dir_index, f.size as i64, f.hash, f.uploaded])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// Per-table totals of a run's files.
    pub fn table_totals(&self, run_id: &str) -> anyhow::Result<Vec<TableTotals>> {
        self.with(|c| {
            let rolled: bool = c
                .query_row(
                    "SELECT files_rolled_up FROM runs WHERE id=?1",
                    params![run_id],
                    |r| r.get(0),
                )
                .optional()?
                .unwrap_or(false);
            let mut st = c.prepare(if rolled {
                "SELECT keyspace, table_name, files, bytes FROM run_table_totals WHERE run_id=?1 ORDER BY keyspace, table_name"
            } else {
                "SELECT keyspace, table_name, COUNT(*), COALESCE(SUM(size),0) FROM run_files WHERE run_id=?1 GROUP BY keyspace, table_name ORDER BY keyspace, table_name"
            })?;
            let rows = st.query_map(params![run_id], |r| {
                Ok(TableTotals { keyspace: r.get(0)?, table: r.get(1)?, files: r.get::<_, i64>(2)? as u64, bytes: r.get::<_, i64>(3)? as u64 })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Records blobs a committed run refers to.
    pub fn record_blobs(
        &self,
        run_id: &str,
        blobs: &[(String, u64)],
        now_ms: i64,
    ) -> anyhow::Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            {
                let mut st = tx.prepare_cached("INSERT OR IGNORE INTO blobs (hash, size, first_run_id, seen_ms) VALUES (?1,?2,?3,?4)")?;
                for (h, s) in blobs {
                    st.execute(params![h, *s as i64, run_id, now_ms])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }
}

/// A backup schedule as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleRow {
    pub id: String,
    pub cron: String,
    pub cluster_name: String,
    pub keyspaces: Vec<String>,
    pub tables: Vec<String>,
    pub keep_last: u32,
    pub keep_days: u32,
    pub limits: crate::limits::RunLimits,
    /// run-once | skip
    pub missed: String,
    pub paused: bool,
    pub next_due_ms: i64,
    pub created_ms: i64,
}

/// What the scheduler did at one due time.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleEventRow {
    pub schedule_id: String,
    pub due_ms: i64,
    pub at_ms: i64,
    /// started | skipped | missed
    pub outcome: String,
    pub run_id: String,
    pub detail: String,
}

impl Db {
    // ------------------------------------------------------------------ schedules

    /// Adds a schedule; refuses an id in use.
    pub fn insert_schedule(&self, s: &ScheduleRow) -> anyhow::Result<()> {
        self.with(|c| {
            let n = c.execute(
                "INSERT OR IGNORE INTO schedules (id, cron, cluster_name, keyspaces, tables, keep_last, keep_days, limits_json, missed, paused, next_due_ms, created_ms)
                 VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12)",
                params![s.id, s.cron, s.cluster_name, serde_json::to_string(&s.keyspaces)?, serde_json::to_string(&s.tables)?, s.keep_last, s.keep_days,
                        serde_json::to_string(&s.limits)?, s.missed, s.paused, s.next_due_ms, s.created_ms],
            )?;
            anyhow::ensure!(n == 1, "schedule {} already exists", s.id);
            Ok(())
        })
    }

    /// Every schedule, by id.
    pub fn schedules(&self) -> anyhow::Result<Vec<ScheduleRow>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT id, cron, cluster_name, keyspaces, tables, keep_last, keep_days, limits_json, missed, paused, next_due_ms, created_ms FROM schedules ORDER BY id",
            )?;
            let rows = st.query_map([], |r| {
                Ok((
                    ScheduleRow {
                        id: r.get(0)?, cron: r.get(1)?, cluster_name: r.get(2)?, keyspaces: Vec::new(), tables: Vec::new(),
                        keep_last: r.get(5)?, keep_days: r.get(6)?, limits: Default::default(), missed: r.get(8)?,
                        paused: r.get(9)?, next_due_ms: r.get(10)?, created_ms: r.get(11)?,
                    },
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(7)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (mut s, k, t, l) = row?;
                s.keyspaces = serde_json::from_str(&k)?;
                s.tables = serde_json::from_str(&t)?;
                s.limits = serde_json::from_str(&l)?;
                out.push(s);
            }
            Ok(out)
        })
    }

    /// Removes a schedule (its events stay as history); false if there was none.
    pub fn delete_schedule(&self, id: &str) -> anyhow::Result<bool> {
        self.with(|c| Ok(c.execute("DELETE FROM schedules WHERE id=?1", params![id])? == 1))
    }

    /// Pauses or resumes a schedule, with its next due time; false if there is none.
    pub fn set_schedule_paused(
        &self,
        id: &str,
        paused: bool,
        next_due_ms: i64,
    ) -> anyhow::Result<bool> {
        self.with(|c| {
            Ok(c.execute(
                "UPDATE schedules SET paused=?2, next_due_ms=?3 WHERE id=?1",
                params![id, paused, next_due_ms],
            )? == 1)
        })
    }

    /// Records what happened at a due time and moves the schedule to its next one, atomically.
    pub fn schedule_fired(&self, e: &ScheduleEventRow, next_due_ms: i64) -> anyhow::Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO schedule_events (schedule_id, due_ms, at_ms, outcome, run_id, detail) VALUES (?1,?2,?3,?4,?5,?6)",
                params![e.schedule_id, e.due_ms, e.at_ms, e.outcome, e.run_id, e.detail],
            )?;
            tx.execute(
                "UPDATE schedules SET next_due_ms=?2 WHERE id=?1",
                params![e.schedule_id, next_due_ms],
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    /// Appends an event without moving the schedule.
    pub fn add_schedule_event(&self, e: &ScheduleEventRow) -> anyhow::Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO schedule_events (schedule_id, due_ms, at_ms, outcome, run_id, detail) VALUES (?1,?2,?3,?4,?5,?6)",
                params![e.schedule_id, e.due_ms, e.at_ms, e.outcome, e.run_id, e.detail],
            )?;
            Ok(())
        })
    }

    /// The newest events of a schedule, newest first.
    pub fn schedule_events(&self, id: &str, limit: u32) -> anyhow::Result<Vec<ScheduleEventRow>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT schedule_id, due_ms, at_ms, outcome, run_id, detail FROM schedule_events WHERE schedule_id=?1 ORDER BY at_ms DESC, rowid DESC LIMIT ?2",
            )?;
            let rows = st.query_map(params![id, limit], |r| {
                Ok(ScheduleEventRow { schedule_id: r.get(0)?, due_ms: r.get(1)?, at_ms: r.get(2)?, outcome: r.get(3)?, run_id: r.get(4)?, detail: r.get(5)? })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Blob hashes recorded by runs still running.
    pub fn running_blobs(&self) -> anyhow::Result<Vec<String>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT DISTINCT f.hash FROM run_files f JOIN runs r ON r.id = f.run_id WHERE r.state = 'RUNNING'",
            )?;
            let rows = st.query_map([], |r| r.get::<_, String>(0))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }
}

// ---------------------------------------------------------------------- metrics
// Read-only aggregates for `GET /metrics` (see `crate::metrics`), computed at scrape time so they
// survive restarts.

/// How many runs of one kind are in one state.
#[derive(Debug, Clone, PartialEq)]
pub struct RunStateCount {
    pub kind: String,
    pub state: String,
    pub runs: u64,
}

/// Files of every backup run of one cluster, split into uploaded and skipped (already stored).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterFileTotals {
    pub cluster: String,
    pub files_uploaded: u64,
    pub bytes_uploaded: u64,
    pub files_skipped: u64,
    pub bytes_skipped: u64,
}

impl Db {
    /// Number of runs by kind and state.
    pub fn run_state_counts(&self) -> anyhow::Result<Vec<RunStateCount>> {
        self.with_read(|c| {
            let mut st = c.prepare(
                "SELECT kind, state, SUM(n) FROM (
                    SELECT kind, state, COUNT(*) AS n FROM runs GROUP BY kind, state
                    UNION ALL SELECT kind, state, runs AS n FROM pruned_run_counts
                 ) GROUP BY kind, state ORDER BY kind, state",
            )?;
            let rows = st.query_map([], |r| {
                Ok(RunStateCount {
                    kind: r.get(0)?,
                    state: r.get(1)?,
                    runs: r.get::<_, i64>(2)? as u64,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Uploaded and skipped files and bytes over every backup run, per cluster: the counters
    /// of finished runs plus the file rows of runs still running (never a scan of every row:
    /// `CROSS JOIN` makes SQLite walk the few uncounted runs and their rows by primary key).
    pub fn backup_file_totals(&self) -> anyhow::Result<Vec<ClusterFileTotals>> {
        self.with_read(|c| {
            let mut st = c.prepare(
                "SELECT cluster_name, SUM(fu), SUM(bu), SUM(fs), SUM(bs) FROM (
                    SELECT cluster_name, files_uploaded AS fu, bytes_uploaded AS bu,
                           files_skipped AS fs, bytes_skipped AS bs
                    FROM backup_file_counters
                    UNION ALL
                    SELECT r.cluster_name,
                        COALESCE(SUM(CASE WHEN f.uploaded != 0 THEN 1 ELSE 0 END), 0),
                        COALESCE(SUM(CASE WHEN f.uploaded != 0 THEN f.size ELSE 0 END), 0),
                        COALESCE(SUM(CASE WHEN f.uploaded != 0 THEN 0 ELSE 1 END), 0),
                        COALESCE(SUM(CASE WHEN f.uploaded != 0 THEN 0 ELSE f.size END), 0)
                    FROM runs r CROSS JOIN run_files f ON f.run_id = r.id
                    WHERE r.kind = 'backup' AND r.files_counted = 0
                    GROUP BY r.cluster_name
                 ) GROUP BY cluster_name ORDER BY cluster_name",
            )?;
            let rows = st.query_map([], |r| {
                Ok(ClusterFileTotals {
                    cluster: r.get(0)?,
                    files_uploaded: r.get::<_, i64>(1)? as u64,
                    bytes_uploaded: r.get::<_, i64>(2)? as u64,
                    files_skipped: r.get::<_, i64>(3)? as u64,
                    bytes_skipped: r.get::<_, i64>(4)? as u64,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Per cluster, when its newest successful backup finished (ms since the epoch).
    pub fn last_successful_backups(&self) -> anyhow::Result<Vec<(String, i64)>> {
        self.with_read(|c| {
            let mut st = c.prepare(
                "SELECT cluster_name, MAX(finished_ms) FROM runs
                 WHERE kind = 'backup' AND state = 'DONE'
                 GROUP BY cluster_name ORDER BY cluster_name",
            )?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// (cluster, last seen ms) of every registered worker.
    pub fn worker_last_seen(&self) -> anyhow::Result<Vec<(String, i64)>> {
        self.with_read(|c| {
            let mut st = c.prepare(
                "SELECT cluster_name, last_seen_ms FROM workers ORDER BY cluster_name, host_id",
            )?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }
}

// ---------------------------------------------------------------------- bounded state

/// Adds a finished backup run's files to the metrics counters, once.
fn count_files(c: &rusqlite::Connection, run_id: &str) -> rusqlite::Result<()> {
    let n = c.execute(
        "UPDATE runs SET files_counted = 1 WHERE id=?1 AND kind='backup' AND files_counted=0",
        params![run_id],
    )?;
    if n == 1 {
        c.execute(
            "INSERT INTO backup_file_counters (cluster_name, files_uploaded, bytes_uploaded, files_skipped, bytes_skipped)
             SELECT r.cluster_name,
                    COALESCE(SUM(CASE WHEN f.uploaded != 0 THEN 1 ELSE 0 END), 0),
                    COALESCE(SUM(CASE WHEN f.uploaded != 0 THEN f.size ELSE 0 END), 0),
                    COALESCE(SUM(CASE WHEN f.uploaded != 0 THEN 0 ELSE 1 END), 0),
                    COALESCE(SUM(CASE WHEN f.uploaded != 0 THEN 0 ELSE f.size END), 0)
             FROM runs r CROSS JOIN run_files f ON f.run_id = r.id WHERE r.id=?1 GROUP BY r.cluster_name
             ON CONFLICT(cluster_name) DO UPDATE SET
               files_uploaded = files_uploaded + excluded.files_uploaded,
               bytes_uploaded = bytes_uploaded + excluded.bytes_uploaded,
               files_skipped = files_skipped + excluded.files_skipped,
               bytes_skipped = bytes_skipped + excluded.bytes_skipped",
            params![run_id],
        )?;
    }
    Ok(())
}

/// File rows deleted per transaction: the write lock is never held for long.
const CHUNK: i64 = 20_000;

/// What one round of housekeeping did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Housekeeping {
    pub runs_rolled_up: u64,
    pub file_rows_deleted: u64,
    pub runs_pruned: u64,
    pub events_pruned: u64,
}

impl Db {
    /// Replaces the file rows of runs that finished before `cutoff_ms` with per-table totals,
    /// in transactions of at most [`CHUNK`] rows (heartbeats get the lock in between).
    pub fn roll_up_files(&self, cutoff_ms: i64, out: &mut Housekeeping) -> anyhow::Result<()> {
        let runs: Vec<String> = self.with(|c| {
            let mut st = c.prepare(
                "SELECT id FROM runs WHERE state != 'RUNNING' AND finished_ms > 0 AND finished_ms < ?1 AND files_rolled_up = 0",
            )?;
            let rows = st.query_map(params![cutoff_ms], |r| r.get::<_, String>(0))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })?;
        for run in runs {
            self.with(|c| {
                let tx = c.transaction()?;
                count_files(&tx, &run)?;
                tx.execute(
                    "INSERT OR REPLACE INTO run_table_totals (run_id, keyspace, table_name, files, bytes)
                     SELECT run_id, keyspace, table_name, COUNT(*), COALESCE(SUM(size),0) FROM run_files
                     WHERE run_id=?1 GROUP BY keyspace, table_name",
                    params![run],
                )?;
                tx.execute("UPDATE runs SET files_rolled_up = 1 WHERE id=?1", params![run])?;
                tx.commit()?;
                Ok(())
            })?;
            out.runs_rolled_up += 1;
            out.file_rows_deleted += self.delete_files_of(&run)?;
        }
        Ok(())
    }

    fn delete_files_of(&self, run: &str) -> anyhow::Result<u64> {
        let mut total = 0;
        loop {
            let n = self.with(|c| {
                Ok(c.execute(
                    "DELETE FROM run_files WHERE rowid IN (SELECT rowid FROM run_files WHERE run_id=?1 LIMIT ?2)",
                    params![run, CHUNK],
                )?)
            })?;
            total += n as u64;
            if (n as i64) < CHUNK {
                return Ok(total);
            }
        }
    }

    /// Removes runs that finished before `cutoff_ms` (with their nodes, files and totals; the
    /// newest successful backup of each cluster always stays) and schedule events and known
    /// blobs older than it. Pruned runs still count in the metrics ([`Db::run_state_counts`]).
    pub fn prune_history(&self, cutoff_ms: i64, out: &mut Housekeeping) -> anyhow::Result<()> {
        let runs: Vec<String> = self.with(|c| {
            let mut st = c.prepare(
                "SELECT id FROM runs r WHERE state != 'RUNNING' AND finished_ms > 0 AND finished_ms < ?1
                 AND NOT (kind = 'backup' AND state = 'DONE' AND finished_ms = (
                     SELECT MAX(finished_ms) FROM runs x
                     WHERE x.kind = 'backup' AND x.state = 'DONE' AND x.cluster_name = r.cluster_name))",
            )?;
            let rows = st.query_map(params![cutoff_ms], |r| r.get::<_, String>(0))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })?;
        for run in runs {
            out.file_rows_deleted += self.delete_files_of(&run)?;
            self.with(|c| {
                let tx = c.transaction()?;
                count_files(&tx, &run)?;
                tx.execute(
                    "INSERT INTO pruned_run_counts (kind, state, runs)
                     SELECT kind, state, 1 FROM runs WHERE id=?1
                     ON CONFLICT(kind, state) DO UPDATE SET runs = runs + 1",
                    params![run],
                )?;
                tx.execute("DELETE FROM run_table_totals WHERE run_id=?1", params![run])?;
                tx.execute("DELETE FROM run_nodes WHERE run_id=?1", params![run])?;
                tx.execute("DELETE FROM runs WHERE id=?1", params![run])?;
                tx.commit()?;
                Ok(())
            })?;
            out.runs_pruned += 1;
        }
        out.events_pruned += self.with(|c| {
            Ok(c.execute(
                "DELETE FROM schedule_events WHERE at_ms < ?1",
                params![cutoff_ms],
            )? as u64)
        })?;
        self.with(|c| {
            c.execute("DELETE FROM blobs WHERE seen_ms < ?1", params![cutoff_ms])?;
            Ok(())
        })
    }

    /// Returns up to `pages` free pages to the filesystem; false when none are left.
    pub fn vacuum_step(&self, pages: u32) -> anyhow::Result<bool> {
        self.with(|c| {
            let free: i64 = c.pragma_query_value(None, "freelist_count", |r| r.get(0))?;
            if free == 0 {
                return Ok(false);
            }
            c.execute_batch(&format!("PRAGMA incremental_vacuum({pages})"))?;
            Ok(true)
        })
    }

    /// Checkpoints the WAL into the database file and truncates it.
    pub fn checkpoint(&self) -> anyhow::Result<()> {
        self.with(|c| {
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_once_and_round_trips_runs_nodes_and_files() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("c.db");
        let db = Db::open(&path)?;
        drop(db);
        let db = Db::open(&path)?; // second open: no migration re-run
        let run = RunRow {
            id: "r1".into(),
            kind: "backup".into(),
            tag: "t".into(),
            cluster_name: "c".into(),
            state: "RUNNING".into(),
            stage: "plan".into(),
            keyspaces: vec!["ks".into()],
            tables: vec![],
            store_url: "file:///x".into(),
            created_ms: 1,
            finished_ms: 0,
            error: String::new(),
            source_run_id: String::new(),
            limits: crate::limits::RunLimits {
                nodes_at_once: 2,
                ..Default::default()
            },
            schedule_id: "nightly".into(),
        };
        db.insert_run(&run)?;
        assert_eq!(db.run("r1")?, Some(run.clone()));
        assert_eq!(db.runs(10, Some("RUNNING"))?.len(), 1);
        db.finish_run("r1", "FAILED", "boom", 5)?;
        assert_eq!(db.runs(10, Some("RUNNING"))?.len(), 0);
        let node = RunNodeRow {
            host_id: "h".into(),
            state: "UPLOADING".into(),
            files_done: 3,
            ..Default::default()
        };
        db.put_run_node("r1", &node)?;
        assert_eq!(db.run_nodes("r1")?, vec![node]);
        let f = RunFileRow {
            host_id: "h".into(),
            keyspace: "ks".into(),
            table: "t".into(),
            table_id: "0".repeat(32),
            name: "a".into(),
            data_dir_index: 0,
            size: 7,
            hash: "h".into(),
            uploaded: true,
        };
        db.insert_files(
            "r1",
            &[
                f.clone(),
                RunFileRow {
                    name: "b".into(),
                    ..f
                },
            ],
        )?;
        assert_eq!(
            db.table_totals("r1")?,
            vec![TableTotals {
                keyspace: "ks".into(),
                table: "t".into(),
                files: 2,
                bytes: 14
            }]
        );
        Ok(())
    }
}

#[cfg(test)]
mod metrics_tests {
    use super::*;

    fn run(id: &str, kind: &str, cluster: &str) -> RunRow {
        RunRow {
            id: id.into(),
            kind: kind.into(),
            tag: "t".into(),
            cluster_name: cluster.into(),
            state: "RUNNING".into(),
            stage: "plan".into(),
            keyspaces: vec![],
            tables: vec![],
            store_url: "file:///x".into(),
            created_ms: 1,
            finished_ms: 0,
            error: String::new(),
            source_run_id: String::new(),
            limits: Default::default(),
            schedule_id: String::new(),
        }
    }

    fn file(name: &str, size: u64, uploaded: bool) -> RunFileRow {
        RunFileRow {
            host_id: "h".into(),
            keyspace: "ks".into(),
            table: "t".into(),
            table_id: "0".repeat(32),
            name: name.into(),
            data_dir_index: 0,
            size,
            hash: name.into(),
            uploaded,
        }
    }

    #[test]
    fn aggregates_runs_files_and_workers() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = Db::open(&dir.path().join("c.db"))?;
        assert!(db.run_state_counts()?.is_empty());
        assert!(db.backup_file_totals()?.is_empty());
        assert!(db.last_successful_backups()?.is_empty());
        for (id, kind, cluster) in [
            ("b1", "backup", "c1"),
            ("b2", "backup", "c1"),
            ("b3", "backup", "c2"),
            ("r1", "restore", "c1"),
        ] {
            db.insert_run(&run(id, kind, cluster))?;
        }
        // Files are recorded while runs run; finished runs' files move to the counters.
        db.insert_files("b1", &[file("a", 10, true), file("b", 20, true)])?;
        db.insert_files("b2", &[file("a", 10, false), file("b", 20, false)])?;
        db.insert_files("b3", &[file("c", 5, true)])?;
        db.insert_files("r1", &[file("a", 10, true)])?;
        db.finish_run("b1", "DONE", "", 5_000)?;
        db.finish_run("b2", "DONE", "", 9_500)?;
        db.finish_run("b3", "FAILED", "boom", 7_000)?;
        assert_eq!(
            db.run_state_counts()?,
            vec![
                RunStateCount {
                    kind: "backup".into(),
                    state: "DONE".into(),
                    runs: 2
                },
                RunStateCount {
                    kind: "backup".into(),
                    state: "FAILED".into(),
                    runs: 1
                },
                RunStateCount {
                    kind: "restore".into(),
                    state: "RUNNING".into(),
                    runs: 1
                },
            ]
        );
        assert_eq!(
            db.backup_file_totals()?,
            vec![
                ClusterFileTotals {
                    cluster: "c1".into(),
                    files_uploaded: 2,
                    bytes_uploaded: 30,
                    files_skipped: 2,
                    bytes_skipped: 30
                },
                ClusterFileTotals {
                    cluster: "c2".into(),
                    files_uploaded: 1,
                    bytes_uploaded: 5,
                    ..Default::default()
                },
            ]
        );
        assert_eq!(db.last_successful_backups()?, vec![("c1".into(), 9_500)]);
        db.upsert_worker(&WorkerRow {
            host_id: "h1".into(),
            cluster_name: "c1".into(),
            address: "127.0.0.1".into(),
            worker_address: "http://127.0.0.1:7601".into(),
            datacenter: "dc".into(),
            rack: "r".into(),
            tokens: vec![],
            data_dirs: vec![],
            cassandra_version: "5.0".into(),
            last_seen_ms: 42,
        })?;
        assert_eq!(db.worker_last_seen()?, vec![("c1".into(), 42)]);
        Ok(())
    }

    #[test]
    fn rolled_up_and_pruned_runs_keep_their_totals_and_counts() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = Db::open(&dir.path().join("c.db"))?;
        for id in ["old", "new", "live"] {
            db.insert_run(&run(id, "backup", "c1"))?;
        }
        db.insert_files("old", &[file("a", 10, true), file("b", 20, false)])?;
        db.insert_files("new", &[file("a", 10, false)])?;
        db.insert_files("live", &[file("c", 5, true)])?;
        db.finish_run("old", "DONE", "", 1_000)?;
        db.finish_run("new", "DONE", "", 9_000)?;
        let before = db.backup_file_totals()?;
        assert_eq!(
            before,
            vec![ClusterFileTotals {
                cluster: "c1".into(),
                files_uploaded: 2,
                bytes_uploaded: 15,
                files_skipped: 2,
                bytes_skipped: 30
            }]
        );
        let mut h = Housekeeping::default();
        db.roll_up_files(5_000, &mut h)?;
        assert_eq!((h.runs_rolled_up, h.file_rows_deleted), (1, 2));
        assert_eq!(db.table_totals("old")?[0].files, 2);
        assert_eq!(db.table_totals("old")?[0].bytes, 30);
        assert_eq!(db.backup_file_totals()?, before);
        // "old" goes, "new" is the newest successful backup of c1 and stays.
        db.prune_history(10_000, &mut h)?;
        assert_eq!(h.runs_pruned, 1);
        assert!(db.run("old")?.is_none());
        assert!(db.run("new")?.is_some());
        assert_eq!(db.backup_file_totals()?, before);
        assert_eq!(
            db.run_state_counts()?,
            vec![
                RunStateCount {
                    kind: "backup".into(),
                    state: "DONE".into(),
                    runs: 2
                },
                RunStateCount {
                    kind: "backup".into(),
                    state: "RUNNING".into(),
                    runs: 1
                },
            ]
        );
        while db.vacuum_step(16)? {}
        Ok(())
    }
}

/// The datacenters a backup was limited to (`--dc`).
impl Db {
    /// Records the datacenters of a run.
    pub fn set_run_datacenters(&self, run_id: &str, dcs: &[String]) -> anyhow::Result<()> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            tx.execute(
                "DELETE FROM run_datacenters WHERE run_id=?1",
                params![run_id],
            )?;
            for dc in dcs {
                tx.execute(
                    "INSERT INTO run_datacenters (run_id, datacenter) VALUES (?1, ?2)",
                    params![run_id, dc],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// The datacenters a run was limited to (empty: the whole ring).
    pub fn run_datacenters(&self, run_id: &str) -> anyhow::Result<Vec<String>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT datacenter FROM run_datacenters WHERE run_id=?1 ORDER BY datacenter",
            )?;
            let rows = st
                .query_map(params![run_id], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }
}

#[cfg(test)]
mod datacenter_tests {
    use super::*;

    #[test]
    fn a_runs_datacenters_round_trip() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = Db::open(&dir.path().join("c.db"))?;
        db.insert_run(&RunRow {
            id: "r1".into(),
            kind: "backup".into(),
            tag: "t".into(),
            cluster_name: "c".into(),
            state: "RUNNING".into(),
            stage: "plan".into(),
            keyspaces: vec![],
            tables: vec![],
            store_url: "file:///x".into(),
            created_ms: 1,
            finished_ms: 0,
            error: String::new(),
            source_run_id: String::new(),
            limits: Default::default(),
            schedule_id: String::new(),
        })?;
        assert!(db.run_datacenters("r1")?.is_empty());
        db.set_run_datacenters("r1", &["dc2".into(), "dc1".into()])?;
        assert_eq!(db.run_datacenters("r1")?, vec!["dc1", "dc2"]);
        Ok(())
    }
}
