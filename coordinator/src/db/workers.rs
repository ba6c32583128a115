//! Registered workers: registration, heartbeats, identity binding, removal.
use rusqlite::{OptionalExtension, params};

use super::Db;

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

impl Db {
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
}
