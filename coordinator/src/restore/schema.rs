//! Stage `schema` of a restore: works out, from the backup's `DESCRIBE SCHEMA WITH INTERNALS`
//! rows and the target's, which keyspaces, types, tables and indexes must be created (table ids
//! kept), and refuses when a table exists with another definition, showing the difference.
use std::collections::BTreeSet;

use ringvault_common::manifest::SchemaRow;

/// What to restore.
#[derive(Debug, Clone)]
pub struct Scope {
    pub keyspaces: BTreeSet<String>,
    /// Set when only some tables of one keyspace are restored.
    pub tables: Option<BTreeSet<String>>,
}

impl Scope {
    /// Whether `ks.table` is restored.
    pub fn keeps(&self, ks: &str, table: &str) -> bool {
        self.keyspaces.contains(ks) && self.tables.as_ref().is_none_or(|t| t.contains(table))
    }
}

/// Splits a DESCRIBE statement that may hold several (a table and its dropped columns).
pub fn split_statements(text: &str) -> Vec<String> {
    text.split(";\n")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            if s.ends_with(';') {
                s.to_string()
            } else {
                format!("{s};")
            }
        })
        .collect()
}

/// A table definition with its id and formatting removed, for comparison.
fn normalize(statement: &str) -> String {
    let first = split_statements(statement)
        .into_iter()
        .next()
        .unwrap_or_default();
    let mut s = first
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace("( ", "(")
        .replace(" )", ")");
    if let Some(i) = s.find("ID = ") {
        let end = (i + 5 + 36).min(s.len());
        let mut rest = s[end..].trim_start().to_string();
        if let Some(r) = rest.strip_prefix("AND ") {
            rest = r.to_string();
        }
        s = format!("{}{}", &s[..i], rest);
    }
    s
}

fn clauses(s: &str) -> Vec<String> {
    s.replace(" AND ", "\n AND ")
        .replace(", ", ",\n ")
        .lines()
        .map(|l| l.trim().to_string())
        .collect()
}

/// A readable difference between two table definitions.
fn difference(backup: &str, target: &str) -> String {
    let (b, t) = (clauses(backup), clauses(target));
    let only_b: Vec<String> = b
        .iter()
        .filter(|x| !t.contains(x))
        .map(|x| format!("  backup: {x}"))
        .collect();
    let only_t: Vec<String> = t
        .iter()
        .filter(|x| !b.contains(x))
        .map(|x| format!("  live:   {x}"))
        .collect();
    [only_b, only_t].concat().join("\n")
}

/// The table an index row is on (`CREATE ... INDEX name ON ks.table ...`).
fn index_table(statement: &str) -> Option<String> {
    let words: Vec<&str> = statement.split_whitespace().collect();
    let on = words.iter().position(|w| *w == "ON")?;
    let target = words.get(on + 1)?;
    let t = target.split('(').next()?.rsplit('.').next()?;
    Some(t.trim_matches('"').to_string())
}

/// Statements that create what the scope needs and the target lacks, in order: keyspaces,
/// types, tables (with their dropped columns), indexes. Errors list every table whose live
/// definition differs from the backup's, unless `force`.
pub fn plan(
    backup: &[SchemaRow],
    target: &[SchemaRow],
    scope: &Scope,
    force: bool,
) -> Result<Vec<String>, String> {
    let exists = |kind: &str, ks: &str, name: &str| {
        target
            .iter()
            .any(|r| r.kind == kind && r.keyspace == ks && r.name == name)
    };
    let live = |ks: &str, name: &str| {
        target
            .iter()
            .find(|r| r.kind == "table" && r.keyspace == ks && r.name == name)
    };
    let mut out = Vec::new();
    let mut conflicts = Vec::new();
    for kind in ["keyspace", "type", "table", "index"] {
        for r in backup
            .iter()
            .filter(|r| r.kind == kind && scope.keyspaces.contains(&r.keyspace))
        {
            match kind {
                "keyspace" if !exists("keyspace", &r.keyspace, &r.name) => {
                    out.extend(split_statements(&r.statement))
                }
                "type" if !exists("type", &r.keyspace, &r.name) => {
                    out.extend(split_statements(&r.statement))
                }
                "table" if scope.keeps(&r.keyspace, &r.name) => match live(&r.keyspace, &r.name) {
                    None => out.extend(split_statements(&r.statement)),
                    Some(l) => {
                        let (b, t) = (normalize(&r.statement), normalize(&l.statement));
                        if b != t && !force {
                            conflicts.push(format!(
                                "table {}.{} exists with another definition:\n{}",
                                r.keyspace,
                                r.name,
                                difference(&b, &t)
                            ));
                        }
                    }
                },
                "index" => {
                    let on = index_table(&r.statement).unwrap_or_default();
                    if scope.keeps(&r.keyspace, &on) && !exists("index", &r.keyspace, &r.name) {
                        out.extend(split_statements(&r.statement));
                    }
                }
                _ => {}
            }
        }
    }
    if conflicts.is_empty() {
        Ok(out)
    } else {
        Err(format!(
            "{}\n(use --force-schema to restore into the live definition anyway)",
            conflicts.join("\n")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(kind: &str, ks: &str, name: &str, st: &str) -> SchemaRow {
        SchemaRow {
            keyspace: ks.into(),
            kind: kind.into(),
            name: name.into(),
            statement: st.into(),
        }
    }

    fn backup() -> Vec<SchemaRow> {
        vec![
            row(
                "keyspace",
                "ks",
                "ks",
                "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': '3'} AND durable_writes = true;",
            ),
            row(
                "type",
                "ks",
                "address",
                "CREATE TYPE ks.address (street text, zip int);",
            ),
            row(
                "table",
                "ks",
                "t",
                "CREATE TABLE ks.t (\n    id bigint PRIMARY KEY,\n    v text\n) WITH ID = 0190d0c4-7f5e-7000-8000-000000000001\n    AND comment = '';\nALTER TABLE ks.t DROP old USING TIMESTAMP 5;",
            ),
            row(
                "table",
                "ks",
                "u",
                "CREATE TABLE ks.u (id int PRIMARY KEY) WITH ID = 0190d0c4-7f5e-7000-8000-000000000002\n    AND comment = '';",
            ),
            row("index", "ks", "t_v", "CREATE INDEX t_v ON ks.t (v);"),
            row(
                "table",
                "other",
                "x",
                "CREATE TABLE other.x (id int PRIMARY KEY);",
            ),
        ]
    }

    #[test]
    fn creates_everything_missing_in_order_keeping_ids_and_dropped_columns() {
        let scope = Scope {
            keyspaces: ["ks".to_string()].into(),
            tables: None,
        };
        let st = plan(&backup(), &[], &scope, false).expect("plan");
        assert!(st[0].starts_with("CREATE KEYSPACE ks"));
        assert!(st[1].starts_with("CREATE TYPE ks.address"));
        assert!(
            st.iter()
                .any(|s| s.contains("WITH ID = 0190d0c4-7f5e-7000-8000-000000000001"))
        );
        assert!(
            st.iter()
                .any(|s| s == "ALTER TABLE ks.t DROP old USING TIMESTAMP 5;")
        );
        assert_eq!(
            st.last().map(String::as_str),
            Some("CREATE INDEX t_v ON ks.t (v);")
        );
        assert!(!st.iter().any(|s| s.contains("other.x")));
    }

    #[test]
    fn a_table_restore_creates_only_that_table_and_its_indexes() {
        let scope = Scope {
            keyspaces: ["ks".to_string()].into(),
            tables: Some(["u".to_string()].into()),
        };
        let target = vec![backup()[0].clone(), backup()[1].clone()];
        let st = plan(&backup(), &target, &scope, false).expect("plan");
        assert_eq!(st.len(), 1, "{st:?}");
        assert!(st[0].starts_with("CREATE TABLE ks.u"));
    }

    #[test]
    fn a_live_table_with_another_definition_is_refused_with_the_difference_unless_forced() {
        let scope = Scope {
            keyspaces: ["ks".to_string()].into(),
            tables: Some(["t".to_string()].into()),
        };
        let mut target = backup();
        // Same columns, another id and formatting: not a conflict.
        target[2].statement = "CREATE TABLE ks.t (id bigint PRIMARY KEY, v text) WITH ID = 11111111-7f5e-7000-8000-000000000001 AND comment = '';".into();
        assert_eq!(plan(&backup(), &target, &scope, false), Ok(vec![]));
        target[2].statement =
            "CREATE TABLE ks.t (id bigint PRIMARY KEY, v int) WITH comment = '';".into();
        let err = plan(&backup(), &target, &scope, false).expect_err("conflict");
        assert!(
            err.contains("ks.t") && err.contains("backup: v text") && err.contains("live:   v int"),
            "{err}"
        );
        assert!(plan(&backup(), &target, &scope, true).is_ok());
    }
}
