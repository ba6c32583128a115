//! CQL against the local node: who the node is (`system.local`), which tables exist
//! (`system_schema.tables`) and the full schema (`DESCRIBE SCHEMA WITH INTERNALS`).
use std::collections::BTreeSet;

use anyhow::Context;
use futures::TryStreamExt;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::policies::host_filter::AllowListHostFilter;

/// Keyspaces never backed up: node-local state (`system`), the schema itself (recreated from
/// `DESCRIBE SCHEMA`), and virtual keyspaces that have no SSTables.
pub const EXCLUDED_KEYSPACES: &[&str] = ringvault_common::cql::NON_DATA_KEYSPACES;

/// The local node as `system.local` describes it.
#[derive(Debug, Clone)]
pub struct LocalInfo {
    pub cluster_name: String,
    pub host_id: String,
    pub address: String,
    pub datacenter: String,
    pub rack: String,
    pub tokens: Vec<String>,
    pub release_version: String,
    pub partitioner: String,
}

/// A table with its id (32 hex characters, no dashes).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TableInfo {
    pub keyspace: String,
    pub table: String,
    pub id: String,
}

/// A CQL session to the local node.
pub struct Cql {
    session: Session,
}

/// How long a schema change may take to reach every peer.
pub const SCHEMA_AGREEMENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

impl Cql {
    /// Connects to `addr` (host:port), talking only to that node: the driver would otherwise
    /// discover the ring and send `system.local` queries to other nodes. Logs in and uses TLS
    /// as `access` says; a failure says whether the login, the TLS handshake or the connection
    /// failed (never the password).
    pub async fn connect(
        addr: &str,
        access: &crate::access::Access,
    ) -> Result<Self, crate::access::AccessError> {
        let only_local = AllowListHostFilter::new([addr]).map_err(|e| {
            crate::access::AccessError::CqlUnreachable {
                addr: addr.to_string(),
                detail: format!("resolving {addr}: {e}"),
            }
        })?;
        let mut builder = SessionBuilder::new()
            .known_node(addr)
            .host_filter(std::sync::Arc::new(only_local));
        if let Some(c) = &access.cql {
            builder = builder.user(c.username.as_str(), c.password.expose());
        }
        if let Some(tls) = &access.cql_tls {
            builder = builder.tls_context(Some(std::sync::Arc::clone(tls)));
        }
        let session = builder.build().await.map_err(|e| {
            let chain = ringvault_common::security::connect::error_chain(&e);
            crate::access::classify_cql_error(addr, access, &chain)
        })?;
        Ok(Self { session })
    }

    /// Whether `role` holds `permission` on `ks.table` (or on a parent: the keyspace, all
    /// keyspaces), through any role it is granted. The most specific resource that exists is
    /// asked about (a table a restore will create is checked on its keyspace). `None`: the
    /// cluster's authorizer keeps no permissions (AllowAllAuthorizer).
    pub async fn holds_permission(
        &self,
        role: &str,
        permission: &str,
        ks: &str,
        table: Option<&str>,
    ) -> anyhow::Result<Option<(bool, String)>> {
        let keyspaces = self.keyspaces().await?;
        let tables = self.tables().await?;
        let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
        let resource = match table {
            Some(t) if tables.iter().any(|x| x.keyspace == ks && x.table == t) => {
                format!("TABLE {}.{}", q(ks), q(t))
            }
            _ if keyspaces.contains(ks) => format!("KEYSPACE {}", q(ks)),
            _ => "ALL KEYSPACES".to_string(),
        };
        let stmt = format!(
            "LIST {permission} ON {resource} OF '{}'",
            role.replace('\'', "''")
        );
        match self.session.query_unpaged(stmt.as_str(), ()).await {
            // No permission at all comes back as a void result, not as zero rows.
            Ok(r) if !r.is_rows() => Ok(Some((false, resource))),
            Ok(r) => {
                let rows = r.into_rows_result().context("reading LIST PERMISSIONS")?;
                Ok(Some((rows.rows_num() > 0, resource)))
            }
            Err(e) => {
                let text = e.to_string();
                if text.contains("not supported by AllowAllAuthorizer")
                    || text.contains("AllowAllAuthorizer")
                {
                    Ok(None)
                } else {
                    Err(anyhow::anyhow!("{stmt}: {text}"))
                }
            }
        }
    }

    /// The driver session (to the local node only), for [`crate::topology`].
    pub(crate) fn session(&self) -> &Session {
        &self.session
    }

    /// Reads `system.local`.
    pub async fn local_info(&self) -> anyhow::Result<LocalInfo> {
        let res = self
            .session
            .query_unpaged(
                "SELECT cluster_name, host_id, broadcast_address, data_center, rack, tokens, release_version, partitioner FROM system.local",
                (),
            )
            .await
            .context("reading system.local")?
            .into_rows_result()
            .context("reading system.local")?;
        type Row = (
            Option<String>,
            Option<uuid::Uuid>,
            Option<std::net::IpAddr>,
            Option<String>,
            Option<String>,
            Option<Vec<String>>,
            Option<String>,
            Option<String>,
        );
        let row: Row = res.first_row().context("system.local has no row")?;
        let mut tokens = row.5.unwrap_or_default();
        tokens.sort();
        Ok(LocalInfo {
            cluster_name: row.0.unwrap_or_default(),
            host_id: row
                .1
                .map(|u| u.to_string())
                .context("system.local has no host_id")?,
            address: row.2.map(|a| a.to_string()).unwrap_or_default(),
            datacenter: row.3.unwrap_or_default(),
            rack: row.4.unwrap_or_default(),
            tokens,
            release_version: row.6.unwrap_or_default(),
            partitioner: row.7.unwrap_or_default(),
        })
    }

    /// Every row of an unbound `query`, page by page; errors say `what` was being read.
    async fn all_rows<R>(&self, query: &str, what: &str) -> anyhow::Result<Vec<R>>
    where
        R: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm>,
    {
        let mut pager = self
            .session
            .query_iter(query, ())
            .await
            .with_context(|| format!("reading {what}"))?
            .rows_stream::<R>()
            .with_context(|| format!("reading {what}"))?;
        let mut out = Vec::new();
        while let Some(row) = pager
            .try_next()
            .await
            .with_context(|| format!("reading {what}"))?
        {
            out.push(row);
        }
        Ok(out)
    }

    /// Every table of every keyspace (the excluded ones included; callers filter).
    pub async fn tables(&self) -> anyhow::Result<Vec<TableInfo>> {
        let rows: Vec<(String, String, uuid::Uuid)> = self
            .all_rows(
                "SELECT keyspace_name, table_name, id FROM system_schema.tables",
                "system_schema.tables",
            )
            .await?;
        let mut out: Vec<TableInfo> = rows
            .into_iter()
            .map(|(keyspace, table, id)| TableInfo {
                keyspace,
                table,
                id: id.simple().to_string(),
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Keyspace names.
    pub async fn keyspaces(&self) -> anyhow::Result<BTreeSet<String>> {
        let rows: Vec<(String,)> = self
            .all_rows(
                "SELECT keyspace_name FROM system_schema.keyspaces",
                "system_schema.keyspaces",
            )
            .await?;
        Ok(rows.into_iter().map(|(k,)| k).collect())
    }

    /// `DESCRIBE SCHEMA WITH INTERNALS`: one row per keyspace, type, table, index, view,
    /// function and aggregate. Retried once: a schema change during paging makes the server
    /// refuse the next page.
    pub async fn describe_schema(&self) -> anyhow::Result<Vec<SchemaRow>> {
        match self.describe_once().await {
            Ok(s) => Ok(s),
            Err(first) => {
                tracing::warn!(error = %first, "DESCRIBE SCHEMA failed, retrying once");
                self.describe_once().await
            }
        }
    }

    async fn describe_once(&self) -> anyhow::Result<Vec<SchemaRow>> {
        let mut pager = self
            .session
            .query_iter("DESCRIBE SCHEMA WITH INTERNALS", ())
            .await
            .context("DESCRIBE SCHEMA WITH INTERNALS")?
            .rows_stream::<(String, String, String, String)>()
            .context("DESCRIBE SCHEMA WITH INTERNALS")?;
        let mut out = Vec::new();
        while let Some((keyspace, kind, name, statement)) = pager
            .try_next()
            .await
            .context("DESCRIBE SCHEMA WITH INTERNALS")?
        {
            out.push(SchemaRow {
                keyspace,
                kind,
                name,
                statement,
            });
        }
        Ok(out)
    }

    /// A cassandra.yaml setting as the node reports it (`system_views.settings`); `None` when
    /// the node does not list it.
    pub async fn setting(&self, name: &str) -> anyhow::Result<Option<String>> {
        let res = self
            .session
            .query_unpaged(
                "SELECT value FROM system_views.settings WHERE name = ?",
                (name,),
            )
            .await
            .with_context(|| format!("reading setting {name}"))?
            .into_rows_result()
            .with_context(|| format!("reading setting {name}"))?;
        let row: Option<(Option<String>,)> = res
            .maybe_first_row()
            .with_context(|| format!("reading setting {name}"))?;
        Ok(row.and_then(|r| r.0))
    }

    /// Whether `ks.table` has `column` among its dropped (`dropped = true`) or live columns.
    async fn column_state(
        &self,
        ks: &str,
        table: &str,
        column: &str,
        dropped: bool,
    ) -> anyhow::Result<bool> {
        let q = if dropped {
            "SELECT column_name FROM system_schema.dropped_columns WHERE keyspace_name = ? AND table_name = ? AND column_name = ?"
        } else {
            "SELECT column_name FROM system_schema.columns WHERE keyspace_name = ? AND table_name = ? AND column_name = ?"
        };
        let res = self
            .session
            .query_unpaged(q, (ks, table, column))
            .await
            .with_context(|| format!("reading the columns of {ks}.{table}"))?
            .into_rows_result()
            .with_context(|| format!("reading the columns of {ks}.{table}"))?;
        Ok(res.rows_num() > 0)
    }

    /// Runs checked schema objects in order, then waits for the cluster to agree on the schema.
    /// CREATEs carry `IF NOT EXISTS`; a dropped column already recorded and a re-added column
    /// already present are skipped, so a repeated request changes nothing. Returns how many
    /// statements ran.
    pub async fn apply_schema(
        &self,
        objects: &[crate::schema::CheckedObject],
    ) -> anyhow::Result<u32> {
        use ringvault_common::cql::ObjectKind;
        let mut ran = 0u32;
        for o in objects {
            let skip = match o.kind {
                ObjectKind::DroppedColumn => {
                    self.column_state(&o.keyspace, &o.name, &o.column, true)
                        .await?
                }
                ObjectKind::ReaddedColumn => {
                    self.column_state(&o.keyspace, &o.name, &o.column, false)
                        .await?
                }
                _ => false,
            };
            if skip {
                continue;
            }
            self.session
                .query_unpaged(o.statement.as_str(), ())
                .await
                .with_context(|| format!("creating {}", o.label()))?;
            ran += 1;
        }
        self.await_cluster_schema_agreement().await?;
        Ok(ran)
    }

    /// Waits until every peer reports this node's schema version (at most
    /// [`SCHEMA_AGREEMENT_TIMEOUT`]). The session talks to the local node only, so the
    /// driver's own agreement check would look at that one node: this reads
    /// `system.local` and `system.peers` instead, as `nodetool describecluster` does.
    /// A peer that never agrees (down, or partitioned) is named in the error.
    pub async fn await_cluster_schema_agreement(&self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + SCHEMA_AGREEMENT_TIMEOUT;
        loop {
            let (local, peers) = self.schema_versions().await?;
            let behind: Vec<String> = peers
                .iter()
                .filter_map(|(peer, v)| v.filter(|v| *v != local).map(|v| format!("{peer} ({v})")))
                .collect();
            if behind.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!(
                    "no schema agreement within {} s: this node has schema version {local}, \
                     but {} still report another (down or unreachable?)",
                    SCHEMA_AGREEMENT_TIMEOUT.as_secs(),
                    behind.join(", ")
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    /// This node's schema version and each peer's (as gossip last told this node).
    async fn schema_versions(
        &self,
    ) -> anyhow::Result<(uuid::Uuid, Vec<(std::net::IpAddr, Option<uuid::Uuid>)>)> {
        let (local,) = self
            .session
            .query_unpaged(
                "SELECT schema_version FROM system.local WHERE key = 'local'",
                (),
            )
            .await
            .context("reading this node's schema version")?
            .into_rows_result()
            .context("reading this node's schema version")?
            .single_row::<(uuid::Uuid,)>()
            .context("reading this node's schema version")?;
        let peers = self
            .all_rows(
                "SELECT peer, schema_version FROM system.peers",
                "the peers' schema versions",
            )
            .await?;
        Ok((local, peers))
    }
}

/// One row of `DESCRIBE SCHEMA`.
#[derive(Debug, Clone)]
pub struct SchemaRow {
    pub keyspace: String,
    pub kind: String,
    pub name: String,
    pub statement: String,
}

/// The rows as one CQL script.
pub fn schema_script(rows: &[SchemaRow]) -> String {
    let mut out = String::new();
    for r in rows {
        out.push_str(&r.statement);
        if !r.statement.ends_with('\n') {
            out.push('\n');
        }
        out.push('\n');
    }
    out
}
