//! Stage `schema` of a restore: works out, from the backup's `DESCRIBE SCHEMA WITH INTERNALS`
//! rows and the target's, which schema objects must be created (table ids kept), in dependency
//! order — keyspaces, types (a type before the types that use it), functions, aggregates,
//! tables with their dropped columns, indexes; materialized views go in a second list, created
//! after the data is in so Cassandra builds them from the restored rows. Statements are split
//! and parsed with the shared CQL tokenizer ([`ringvault_common::cql`]), never by text
//! matching; an object it cannot place refuses the restore before anything changes, as does a
//! live table, type or view whose definition differs from the backup's (the difference shown).
use std::collections::{BTreeMap, BTreeSet};

use ringvault_common::cql::{self, Canonical, ObjectKind, TokenKind};
use ringvault_common::manifest::SchemaRow;
use ringvault_proto::v1 as pb;

/// What to restore.
#[derive(Debug, Clone)]
pub struct Scope {
    pub keyspaces: BTreeSet<String>,
    /// Set when only some tables of one keyspace are restored.
    pub tables: Option<BTreeSet<String>>,
    /// Materialized views (keyspace, view): their SSTables are never imported; Cassandra
    /// rebuilds a view from its base table.
    pub views: BTreeSet<(String, String)>,
}

impl Scope {
    /// Whether `ks.table` is restored (never a view's own data).
    pub fn keeps(&self, ks: &str, table: &str) -> bool {
        self.keyspaces.contains(ks)
            && self.tables.as_ref().is_none_or(|t| t.contains(table))
            && !self.views.contains(&(ks.to_string(), table.to_string()))
    }
}

/// The materialized views of a backup's schema, as (keyspace, view) in their stored spelling.
pub fn views(backup: &[SchemaRow]) -> BTreeSet<(String, String)> {
    backup
        .iter()
        .filter(|r| ObjectKind::parse(&r.kind) == Some(ObjectKind::View))
        .map(|r| match parse_row(r) {
            Ok(p) => (p.objects[0].keyspace.clone(), p.objects[0].name.clone()),
            Err(_) => (r.keyspace.clone(), r.name.clone()),
        })
        .collect()
}

/// The objects to create: `before_data` in the schema stage, `views` once the data is in.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SchemaPlan {
    pub before_data: Vec<pb::SchemaObject>,
    pub views: Vec<pb::SchemaObject>,
}

impl SchemaPlan {
    /// Every object, in the order they are created.
    pub fn all(&self) -> Vec<pb::SchemaObject> {
        [self.before_data.clone(), self.views.clone()].concat()
    }
}

fn proto_kind(k: ObjectKind) -> pb::SchemaObjectKind {
    use pb::SchemaObjectKind as K;
    match k {
        ObjectKind::Keyspace => K::Keyspace,
        ObjectKind::Type => K::Type,
        ObjectKind::Table => K::Table,
        ObjectKind::Index => K::Index,
        ObjectKind::View => K::View,
        ObjectKind::Function => K::Function,
        ObjectKind::Aggregate => K::Aggregate,
        ObjectKind::DroppedColumn => K::DroppedColumn,
        ObjectKind::ReaddedColumn => K::ReaddedColumn,
    }
}

/// A backup row parsed into the objects its statements create.
struct Parsed<'a> {
    row: &'a SchemaRow,
    kind: ObjectKind,
    objects: Vec<pb::SchemaObject>,
}

fn label(r: &SchemaRow) -> String {
    format!("{} {}.{}", r.kind, r.keyspace, r.name)
}

/// Splits and parses one `DESCRIBE` row: its first statement must create an object of the
/// row's kind in the row's keyspace; a table may be followed by its dropped and re-added
/// columns, nothing else.
fn parse_row(r: &SchemaRow) -> Result<Parsed<'_>, String> {
    let kind = ObjectKind::parse(&r.kind)
        .filter(|k| !matches!(k, ObjectKind::DroppedColumn | ObjectKind::ReaddedColumn))
        .ok_or_else(|| {
            format!(
                "{}: ringvault cannot recreate schema objects of kind {:?}",
                label(r),
                r.kind
            )
        })?;
    let statements =
        cql::split_statements(&r.statement).map_err(|e| format!("{}: {e}", label(r)))?;
    if statements.is_empty() {
        return Err(format!(
            "{}: the backup holds no statement that creates it: {:?}",
            label(r),
            r.statement.trim()
        ));
    }
    let mut objects = Vec::new();
    for (i, text) in statements.iter().enumerate() {
        let st = cql::parse_schema_statement(text).map_err(|e| format!("{}: {e}", label(r)))?;
        let fits = if i == 0 {
            st.kind == kind
        } else {
            kind == ObjectKind::Table
                && matches!(
                    st.kind,
                    ObjectKind::DroppedColumn | ObjectKind::ReaddedColumn
                )
                && objects
                    .first()
                    .is_some_and(|t: &pb::SchemaObject| t.name == st.name)
        };
        if !fits || !cql::names_match(&r.keyspace, &st.keyspace) {
            return Err(format!(
                "{}: statement {} creates {} {}.{} instead",
                label(r),
                i + 1,
                st.kind,
                st.keyspace,
                st.name
            ));
        }
        objects.push(pb::SchemaObject {
            kind: proto_kind(st.kind) as i32,
            keyspace: st.keyspace.clone(),
            name: st.name.clone(),
            table: st.on_table.clone().unwrap_or_default(),
            column: st.column.clone().unwrap_or_default(),
            table_id: st.id.clone().unwrap_or_default(),
            statement: st.with_if_not_exists(text),
        });
    }
    Ok(Parsed {
        row: r,
        kind,
        objects,
    })
}

/// Orders the types of one keyspace so that a type comes after every type it uses (stable:
/// otherwise the backup's order). A cycle cannot be created in CQL; if the text suggests one,
/// the remaining types keep the backup's order.
fn order_types<'a>(types: Vec<Parsed<'a>>) -> Vec<Parsed<'a>> {
    let names: BTreeSet<(String, String)> = types
        .iter()
        .filter_map(|p| p.objects.first())
        .map(|o| (o.keyspace.clone(), o.name.clone()))
        .collect();
    let deps: Vec<BTreeSet<(String, String)>> = types
        .iter()
        .map(|p| {
            let Some(o) = p.objects.first() else {
                return BTreeSet::new();
            };
            let tokens = cql::tokenize(&o.statement).unwrap_or_default();
            let body = tokens
                .iter()
                .position(|t| t.kind == TokenKind::Symbol('('))
                .unwrap_or(tokens.len());
            tokens[body..]
                .iter()
                .filter_map(|t| t.ident())
                .map(|n| (o.keyspace.clone(), n))
                .filter(|k| names.contains(k) && !(k.0 == o.keyspace && k.1 == o.name))
                .collect()
        })
        .collect();
    let mut placed: BTreeSet<(String, String)> = BTreeSet::new();
    let mut pending: Vec<Option<Parsed<'a>>> = types.into_iter().map(Some).collect();
    let mut out = Vec::new();
    loop {
        let next = pending.iter().enumerate().find_map(|(i, p)| {
            p.as_ref()
                .filter(|_| deps[i].iter().all(|d| placed.contains(d)))
                .map(|_| i)
        });
        let i = match next.or_else(|| pending.iter().position(Option::is_some)) {
            Some(i) => i,
            None => break,
        };
        if let Some(p) = pending[i].take() {
            if let Some(o) = p.objects.first() {
                placed.insert((o.keyspace.clone(), o.name.clone()));
            }
            out.push(p);
        }
    }
    out
}

/// The objects that create what the scope needs and the target lacks, in dependency order.
/// Errors name every object the backup holds but ringvault cannot recreate, and every live
/// table, type or view whose definition differs from the backup's (unless `force`).
pub fn plan(
    backup: &[SchemaRow],
    target: &[SchemaRow],
    scope: &Scope,
    force: bool,
) -> Result<SchemaPlan, String> {
    let live: BTreeMap<(&str, &str, &str), &SchemaRow> = target
        .iter()
        .map(|r| ((r.kind.as_str(), r.keyspace.as_str(), r.name.as_str()), r))
        .collect();
    let mut problems = Vec::new();
    let mut conflicts = Vec::new();
    let mut by_kind: BTreeMap<ObjectKind, Vec<Parsed<'_>>> = BTreeMap::new();
    for r in backup
        .iter()
        .filter(|r| scope.keyspaces.contains(&r.keyspace))
    {
        let p = match parse_row(r) {
            Ok(p) => p,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        let first = &p.objects[0];
        let wanted = match p.kind {
            ObjectKind::Table => scope.keeps(&r.keyspace, &first.name),
            ObjectKind::Index | ObjectKind::View => scope.keeps(&r.keyspace, &first.table),
            _ => true,
        };
        if !wanted {
            continue;
        }
        match live.get(&(r.kind.as_str(), r.keyspace.as_str(), r.name.as_str())) {
            None => by_kind.entry(p.kind).or_default().push(p),
            Some(l)
                if matches!(
                    p.kind,
                    ObjectKind::Table | ObjectKind::Type | ObjectKind::View
                ) =>
            {
                let (b, t) = match (Canonical::of(&r.statement), Canonical::of(&l.statement)) {
                    (Ok(b), Ok(t)) => (b, t),
                    (Err(e), _) | (_, Err(e)) => {
                        problems.push(format!("{}: {e}", label(r)));
                        continue;
                    }
                };
                if b != t && !force {
                    conflicts.push(format!(
                        "{} {}.{} exists with another definition:\n{}",
                        r.kind,
                        r.keyspace,
                        r.name,
                        difference(&b.render(), &t.render())
                    ));
                }
            }
            Some(_) => {}
        }
    }
    if !problems.is_empty() {
        return Err(format!(
            "the backup's schema cannot be recreated; nothing was changed:\n{}",
            problems.join("\n")
        ));
    }
    if !conflicts.is_empty() {
        return Err(format!(
            "{}\n(use --force-schema to restore into the live definition anyway)",
            conflicts.join("\n")
        ));
    }
    let mut out = SchemaPlan::default();
    for kind in [
        ObjectKind::Keyspace,
        ObjectKind::Type,
        ObjectKind::Function,
        ObjectKind::Aggregate,
        ObjectKind::Table,
        ObjectKind::Index,
        ObjectKind::View,
    ] {
        let mut rows = by_kind.remove(&kind).unwrap_or_default();
        if kind == ObjectKind::Type {
            rows = order_types(rows);
        }
        let dest = if kind == ObjectKind::View {
            &mut out.views
        } else {
            &mut out.before_data
        };
        for p in rows {
            tracing::debug!(object = %label(p.row), "to create");
            dest.extend(p.objects);
        }
    }
    Ok(out)
}

fn clauses(s: &str) -> Vec<String> {
    s.replace(" AND ", "\n AND ")
        .replace(") WITH ", ")\n WITH ")
        .replace(", ", ",\n ")
        .lines()
        .map(|l| l.trim().to_string())
        .collect()
}

/// A readable difference between two definitions (one line each).
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
                "CREATE TABLE ks.t (\n    id bigint PRIMARY KEY,\n    v text\n) WITH ID = 0190d0c4-7f5e-7000-8000-000000000001\n    AND comment = 'a;\nb';\nALTER TABLE ks.t DROP old USING TIMESTAMP 5;",
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

    fn ks_scope() -> Scope {
        Scope {
            keyspaces: ["ks".to_string()].into(),
            tables: None,
            views: BTreeSet::new(),
        }
    }

    fn statements(p: &SchemaPlan) -> Vec<String> {
        p.all().into_iter().map(|o| o.statement).collect()
    }

    #[test]
    fn creates_everything_missing_in_order_keeping_ids_and_dropped_columns() {
        let p = plan(&backup(), &[], &ks_scope(), false).expect("plan");
        let st = statements(&p);
        assert!(st[0].starts_with("CREATE KEYSPACE IF NOT EXISTS ks"));
        assert!(st[1].starts_with("CREATE TYPE IF NOT EXISTS ks.address"));
        let t = &p.before_data[2];
        assert_eq!(
            (t.kind, t.name.as_str(), t.table_id.as_str()),
            (
                pb::SchemaObjectKind::Table as i32,
                "t",
                "0190d0c47f5e70008000000000000001"
            )
        );
        // The comment's `;` and newline stay inside the table's statement.
        assert!(
            t.statement.contains("comment = 'a;\nb';"),
            "{}",
            t.statement
        );
        let d = &p.before_data[3];
        assert_eq!(
            (
                d.kind,
                d.name.as_str(),
                d.column.as_str(),
                d.statement.as_str()
            ),
            (
                pb::SchemaObjectKind::DroppedColumn as i32,
                "t",
                "old",
                "ALTER TABLE ks.t DROP old USING TIMESTAMP 5;"
            )
        );
        assert_eq!(
            st.last().map(String::as_str),
            Some("CREATE INDEX IF NOT EXISTS t_v ON ks.t (v);")
        );
        assert!(!st.iter().any(|s| s.contains("other.x")));
        // Every object passes the worker's check.
        for o in p.all() {
            let kind = ObjectKind::parse(
                match pb::SchemaObjectKind::try_from(o.kind).expect("kind") {
                    pb::SchemaObjectKind::Keyspace => "keyspace",
                    pb::SchemaObjectKind::Type => "type",
                    pb::SchemaObjectKind::Table => "table",
                    pb::SchemaObjectKind::Index => "index",
                    pb::SchemaObjectKind::DroppedColumn => "dropped_column",
                    other => panic!("{other:?}"),
                },
            )
            .expect("kind");
            cql::validate_object(&cql::ObjectRequest {
                kind,
                keyspace: &o.keyspace,
                name: &o.name,
                table: &o.table,
                column: &o.column,
                table_id: &o.table_id,
                statement: &o.statement,
            })
            .expect("valid");
        }
    }

    #[test]
    fn dependency_order_types_functions_aggregates_tables_indexes_then_views() {
        let rows = vec![
            row(
                "materialized_view",
                "ks",
                "by_v",
                "CREATE MATERIALIZED VIEW ks.by_v AS\n    SELECT * FROM ks.t\n    WHERE v IS NOT NULL AND id IS NOT NULL\n    PRIMARY KEY (v, id)\n WITH comment = '';",
            ),
            row(
                "aggregate",
                "ks",
                "total",
                "CREATE AGGREGATE ks.total(int)\n    SFUNC acc\n    STYPE int\n    INITCOND 0;",
            ),
            row(
                "table",
                "ks",
                "t",
                "CREATE TABLE ks.t (id int PRIMARY KEY, v text, home frozen<outer_t>) WITH ID = 0190d0c4-7f5e-7000-8000-000000000001;",
            ),
            row("index", "ks", "t_v", "CREATE INDEX t_v ON ks.t (v);"),
            row(
                "function",
                "ks",
                "acc",
                "CREATE FUNCTION ks.acc(s int, v int)\n    CALLED ON NULL INPUT\n    RETURNS int\n    LANGUAGE java\n    AS $$return s + v; // ; $$;",
            ),
            row(
                "type",
                "ks",
                "outer_t",
                "CREATE TYPE ks.outer_t (inner frozen<inner_t>, n int);",
            ),
            row("type", "ks", "inner_t", "CREATE TYPE ks.inner_t (x int);"),
            row(
                "keyspace",
                "ks",
                "ks",
                "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': '1'};",
            ),
        ];
        let p = plan(&rows, &[], &ks_scope(), false).expect("plan");
        let names: Vec<String> = p.before_data.iter().map(|o| o.name.clone()).collect();
        assert_eq!(
            names,
            ["ks", "inner_t", "outer_t", "acc", "total", "t", "t_v"]
        );
        assert_eq!(p.views.len(), 1);
        assert_eq!(
            (p.views[0].name.as_str(), p.views[0].table.as_str()),
            ("by_v", "t")
        );
        assert!(
            p.views[0]
                .statement
                .starts_with("CREATE MATERIALIZED VIEW IF NOT EXISTS ks.by_v AS")
        );
        assert!(
            p.before_data[3]
                .statement
                .contains("$$return s + v; // ; $$;")
        );
        // A view's own SSTables are never imported; its base table's are.
        let scope = Scope {
            views: views(&rows),
            ..ks_scope()
        };
        assert!(!scope.keeps("ks", "by_v") && scope.keeps("ks", "t"));
    }

    #[test]
    fn objects_it_cannot_recreate_refuse_the_restore_naming_them() {
        let mut rows = backup();
        rows.push(row(
            "trigger",
            "ks",
            "tr",
            "CREATE TRIGGER tr ON ks.t USING 'x';",
        ));
        rows.push(row("table", "ks", "legacy", "/* Warning: Table ks.legacy omitted because it has constructs not compatible with CQL */"));
        rows.push(row(
            "table",
            "ks",
            "w",
            "CREATE TABLE ks.w (a int PRIMARY KEY);\nDROP KEYSPACE ks;",
        ));
        rows.push(row("index", "ks", "bad", "CREATE INDEX bad ON ks.t (v"));
        let err = plan(&rows, &[], &ks_scope(), false).expect_err("refused");
        for name in [
            "trigger ks.tr",
            "table ks.legacy",
            "table ks.w",
            "index ks.bad",
        ] {
            assert!(err.contains(name), "{name} not named: {err}");
        }
    }

    #[test]
    fn a_table_restore_creates_only_that_table_and_its_indexes() {
        let scope = Scope {
            keyspaces: ["ks".to_string()].into(),
            tables: Some(["u".to_string()].into()),
            views: BTreeSet::new(),
        };
        let target = vec![backup()[0].clone(), backup()[1].clone()];
        let st = statements(&plan(&backup(), &target, &scope, false).expect("plan"));
        assert_eq!(st.len(), 1, "{st:?}");
        assert!(st[0].starts_with("CREATE TABLE IF NOT EXISTS ks.u"));
    }

    #[test]
    fn a_live_table_with_another_definition_is_refused_with_the_difference_unless_forced() {
        let scope = Scope {
            keyspaces: ["ks".to_string()].into(),
            tables: Some(["t".to_string()].into()),
            views: BTreeSet::new(),
        };
        let mut target = backup();
        // Same columns, another id and formatting: not a conflict.
        target[2].statement = "CREATE TABLE ks.t (id bigint PRIMARY KEY, v text) WITH ID = 11111111-7f5e-7000-8000-000000000001 AND comment = 'a;\nb';".into();
        assert_eq!(
            plan(&backup(), &target, &scope, false),
            Ok(SchemaPlan::default())
        );
        target[2].statement =
            "CREATE TABLE ks.t (id bigint PRIMARY KEY, v int) WITH comment = 'a;\nb';".into();
        let err = plan(&backup(), &target, &scope, false).expect_err("conflict");
        assert!(
            err.contains("ks.t") && err.contains("backup: v text") && err.contains("live:   v int"),
            "{err}"
        );
        assert!(plan(&backup(), &target, &scope, true).is_ok());
    }

    #[test]
    fn non_ascii_names_and_comments_compare_without_panicking() {
        let st = "CREATE TABLE ks.t (id int PRIMARY KEY, \"größe_名前\" text) WITH ID = 0190d0c4-7f5e-7000-8000-000000000001 AND comment = 'ünï; ✓';";
        let rows = vec![row("table", "ks", "t", st)];
        let mut live = rows.clone();
        assert_eq!(
            plan(&rows, &live, &ks_scope(), false),
            Ok(SchemaPlan::default())
        );
        live[0].statement = st.replace("größe_名前", "größe_名");
        let err = plan(&rows, &live, &ks_scope(), false).expect_err("conflict");
        assert!(err.contains("größe_名前"), "{err}");
    }
}
