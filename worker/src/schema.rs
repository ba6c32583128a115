//! The worker's one schema-changing RPC, `ApplySchema`: the coordinator names each object it
//! wants created (kind, keyspace, name, table, column, id) with the statement that creates it.
//! Every object is checked with the shared CQL parser ([`ringvault_common::cql`]) before any
//! statement runs: exactly one `CREATE … IF NOT EXISTS` of exactly that object (or a dropped or
//! re-added column's `ALTER TABLE`), outside Cassandra's own keyspaces. Anything else — a `DROP`,
//! a `CREATE ROLE`, a second statement hidden after a `;`, a table under another name — is
//! refused and nothing runs. This is what stops a caller from using the worker as a CQL shell.
use ringvault_common::cql::{self, CqlError, ObjectKind, ObjectRequest};
use ringvault_proto::v1 as pb;

use crate::error::{Result, WorkerError};
use crate::node::LocalNode;

/// Most objects one request may carry (a schema with tens of thousands of tables fits).
pub const MAX_OBJECTS: usize = 200_000;
/// Longest statement accepted, in bytes.
pub const MAX_STATEMENT_BYTES: usize = 1 << 20;

/// One checked object, ready to run.
#[derive(Debug, Clone)]
pub struct CheckedObject {
    pub kind: ObjectKind,
    pub keyspace: String,
    pub name: String,
    pub column: String,
    pub statement: String,
}

impl CheckedObject {
    /// `kind ks.name` (with the column for column objects), for messages.
    pub fn label(&self) -> String {
        if self.column.is_empty() {
            format!("{} {}.{}", self.kind, self.keyspace, self.name)
        } else {
            format!(
                "{} {}.{}.{}",
                self.kind, self.keyspace, self.name, self.column
            )
        }
    }
}

fn kind_of(k: i32) -> Option<ObjectKind> {
    use pb::SchemaObjectKind as K;
    Some(match K::try_from(k).ok()? {
        K::Unspecified => return None,
        K::Keyspace => ObjectKind::Keyspace,
        K::Type => ObjectKind::Type,
        K::Table => ObjectKind::Table,
        K::Index => ObjectKind::Index,
        K::View => ObjectKind::View,
        K::Function => ObjectKind::Function,
        K::Aggregate => ObjectKind::Aggregate,
        K::DroppedColumn => ObjectKind::DroppedColumn,
        K::ReaddedColumn => ObjectKind::ReaddedColumn,
    })
}

/// Checks every object of a request; the first refusal fails the whole request.
pub fn check(objects: &[pb::SchemaObject]) -> Result<Vec<CheckedObject>> {
    if objects.len() > MAX_OBJECTS {
        return Err(WorkerError::invalid(format!(
            "{} schema objects in one request; at most {MAX_OBJECTS}",
            objects.len()
        )));
    }
    objects
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let kind = kind_of(o.kind).ok_or_else(|| {
                WorkerError::invalid(format!(
                    "schema object {i} ({}.{}): unknown kind {}",
                    o.keyspace, o.name, o.kind
                ))
            })?;
            let label = format!("{kind} {}.{}", o.keyspace, o.name);
            if o.statement.len() > MAX_STATEMENT_BYTES {
                return Err(WorkerError::invalid(format!(
                    "{label}: statement of {} bytes; at most {MAX_STATEMENT_BYTES}",
                    o.statement.len()
                )));
            }
            cql::validate_object(&ObjectRequest {
                kind,
                keyspace: &o.keyspace,
                name: &o.name,
                table: &o.table,
                column: &o.column,
                table_id: &o.table_id,
                statement: &o.statement,
            })
            .map_err(|e| refusal(&label, &e))?;
            Ok(CheckedObject {
                kind,
                keyspace: o.keyspace.clone(),
                name: o.name.clone(),
                column: o.column.clone(),
                statement: o.statement.clone(),
            })
        })
        .collect()
}

/// The error a refused statement gets: permission denied for what it would do, otherwise
/// invalid.
pub fn refusal(label: &str, e: &CqlError) -> WorkerError {
    let msg = format!("schema object {label} refused: {e}");
    if e.is_forbidden() {
        WorkerError::PermissionDenied(msg)
    } else {
        WorkerError::Invalid(msg)
    }
}

impl LocalNode {
    /// Checks the objects of an `ApplySchema` request and (unless `dry_run`) creates them;
    /// how many statements ran. Functions, aggregates and views need the node to allow them:
    /// refused before anything runs, naming the first object that needs a disabled setting.
    pub async fn apply_schema(&self, objects: &[pb::SchemaObject], dry_run: bool) -> Result<u32> {
        let objects = check(objects).inspect_err(|e| {
            tracing::warn!(code = ?e.code(), error = %e, "schema request refused");
        })?;
        let cql = self.cql().await?;
        let mut checked = std::collections::BTreeSet::new();
        for o in &objects {
            let Some(setting) = needed_setting(o.kind) else {
                continue;
            };
            if !checked.insert(setting) {
                continue;
            }
            if cql.setting(setting).await?.as_deref() == Some("false") {
                return Err(WorkerError::refused(format!(
                    "{} needs {setting}: true in cassandra.yaml on this cluster; nothing was created",
                    o.label()
                )));
            }
        }
        if dry_run {
            return Ok(0);
        }
        let applied = cql
            .apply_schema(&objects)
            .await
            .map_err(|e| WorkerError::refused(format!("{e:#}")))?;
        tracing::info!(objects = objects.len(), applied, "schema applied");
        Ok(applied)
    }
}

/// The cassandra.yaml setting an object needs switched on, if any.
pub fn needed_setting(kind: ObjectKind) -> Option<&'static str> {
    match kind {
        ObjectKind::Function | ObjectKind::Aggregate => Some("user_defined_functions_enabled"),
        ObjectKind::View => Some("materialized_views_enabled"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(kind: pb::SchemaObjectKind, ks: &str, name: &str, st: &str) -> pb::SchemaObject {
        pb::SchemaObject {
            kind: kind as i32,
            keyspace: ks.into(),
            name: name.into(),
            table: String::new(),
            column: String::new(),
            table_id: String::new(),
            statement: st.into(),
        }
    }

    #[test]
    fn a_request_is_refused_whole_with_the_right_code() {
        use pb::SchemaObjectKind as K;
        let good = obj(
            K::Keyspace,
            "ks",
            "ks",
            "CREATE KEYSPACE IF NOT EXISTS ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
        );
        assert_eq!(check(std::slice::from_ref(&good)).unwrap().len(), 1);
        let drop = obj(K::Keyspace, "ks", "ks", "DROP KEYSPACE ks");
        let e = check(&[good.clone(), drop]).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.to_string().contains("DROP KEYSPACE"), "{}", e.to_string());
        let role = obj(
            K::Keyspace,
            "ks",
            "ks",
            "CREATE ROLE r WITH SUPERUSER = true",
        );
        let e = check(&[role]).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.to_string().contains("CREATE ROLE"));
        let renamed = obj(
            K::Table,
            "ks",
            "t",
            "CREATE TABLE IF NOT EXISTS ks.other (a int PRIMARY KEY)",
        );
        let e = check(&[renamed]).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.to_string().contains("CREATE TABLE"), "{}", e.to_string());
        let two = obj(
            K::Table,
            "ks",
            "t",
            "CREATE TABLE IF NOT EXISTS ks.t (a int PRIMARY KEY); DROP KEYSPACE ks",
        );
        assert_eq!(
            check(&[two]).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        let mut unknown = good.clone();
        unknown.kind = 42;
        assert_eq!(
            check(&[unknown]).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }
}
