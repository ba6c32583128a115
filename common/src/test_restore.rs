//! Names and schema of a test restore's scratch keyspaces, shared by the coordinator (which
//! plans them) and the worker (which refuses to drop or scan anything else). A test restore
//! loads a backup's tables into `rv_test_<id>_<n>` (one per backed-up keyspace, so tables and
//! types of equal names in two keyspaces never collide), RF 1, the same table and type
//! definitions with new table ids.
use crate::cql::{self, CqlError, TokenKind};

/// Every scratch keyspace starts with this.
pub const SCRATCH_PREFIX: &str = "rv_test_";

/// The scratch keyspace of the `index`-th keyspace of test restore `test_id`.
pub fn scratch_keyspace(test_id: &crate::RunId, index: usize) -> String {
    let hex: String = test_id
        .as_str()
        .chars()
        .filter(char::is_ascii_hexdigit)
        .collect();
    let short = &hex[hex.len().saturating_sub(12)..];
    format!("{SCRATCH_PREFIX}{short}_{index}")
}

/// Whether `name` is a scratch keyspace name (`rv_test_` then lowercase letters, digits and
/// `_`, 48 characters at most): the only keyspaces a worker drops or scans for a test restore.
pub fn is_scratch_keyspace(name: &str) -> bool {
    name.len() <= 48
        && name.len() > SCRATCH_PREFIX.len()
        && name.starts_with(SCRATCH_PREFIX)
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The scratch keyspace's own statement: RF 1 on any topology.
pub fn create_scratch_keyspace(name: &str) -> String {
    format!(
        "CREATE KEYSPACE IF NOT EXISTS {name} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': '1'}} AND durable_writes = true"
    )
}

/// One statement of a backed-up table or type (or a dropped/re-added column) rewritten into
/// `to`: every `from.` qualifier becomes `to.` (tokens, never text inside literals or
/// comments), and the table's `ID = <uuid>` option is removed so the scratch table gets a new
/// id. The result is parsed again.
pub fn retarget(statement: &str, from: &str, to: &str) -> Result<String, CqlError> {
    let tokens = cql::tokenize(statement)?;
    // (start, end, replacement) edits, in order.
    let mut edits: Vec<(usize, usize, &str)> = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        let qualifier = t.ident().as_deref() == Some(from)
            && tokens.get(i + 1).is_some_and(|n| n.is_sym('.'))
            && (i == 0 || !tokens[i - 1].is_sym('.'));
        if qualifier {
            edits.push((t.start, t.end, to));
        }
    }
    let mut depth = 0i32;
    for (j, t) in tokens.iter().enumerate() {
        match t.kind {
            TokenKind::Symbol('(' | '{' | '[') => depth += 1,
            TokenKind::Symbol(')' | '}' | ']') => depth -= 1,
            _ if depth == 0
                && t.is_kw("id")
                && j > 0
                && tokens.get(j + 1).is_some_and(|x| x.is_sym('='))
                && tokens.get(j + 2).is_some_and(|x| x.kind == TokenKind::Uuid) =>
            {
                let prev = &tokens[j - 1];
                let value_end = tokens[j + 2].end;
                // From the end of the token before the option, so no blank is left behind.
                let before = if j >= 2 {
                    tokens[j - 2].end
                } else {
                    prev.start
                };
                if prev.is_kw("and") {
                    edits.push((before, value_end, ""));
                } else if prev.is_kw("with") {
                    match tokens.get(j + 3) {
                        Some(next) if next.is_kw("and") => {
                            let after = tokens.get(j + 4).map_or(next.end, |x| x.start);
                            edits.push((t.start, after, ""))
                        }
                        _ => edits.push((before, value_end, "")),
                    }
                }
            }
            _ => {}
        }
    }
    edits.sort_by_key(|e| e.0);
    let mut out = String::with_capacity(statement.len());
    let mut at = 0;
    for (s, e, r) in edits {
        if s < at {
            continue;
        }
        out.push_str(&statement[at..s]);
        out.push_str(r);
        at = e;
    }
    out.push_str(&statement[at..]);
    cql::parse_schema_statement(&out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let id = crate::RunId::parse("0190d0c4-7f5e-7000-8000-0123456789ab").expect("id");
        assert_eq!(scratch_keyspace(&id, 1), "rv_test_0123456789ab_1");
        assert!(is_scratch_keyspace("rv_test_0123456789ab_1"));
        for bad in [
            "rv_test_",
            "shop",
            "rv_test_X",
            "rv_test_a\"",
            "system",
            "rv_test_a;drop",
        ] {
            assert!(!is_scratch_keyspace(bad), "{bad}");
        }
    }

    #[test]
    fn retargets_qualifiers_and_drops_the_id() -> Result<(), CqlError> {
        let t = "CREATE TABLE IF NOT EXISTS shop.orders (\n    id int PRIMARY KEY,\n    a frozen<shop.addr>,\n    c text\n) WITH ID = 0190d0c4-7f5e-7000-8000-000000000001\n    AND comment = 'shop.orders stays';";
        let r = retarget(t, "shop", "rv_test_x_0")?;
        assert!(
            r.starts_with("CREATE TABLE IF NOT EXISTS rv_test_x_0.orders"),
            "{r}"
        );
        assert!(r.contains("frozen<rv_test_x_0.addr>"), "{r}");
        assert!(r.contains("'shop.orders stays'"), "{r}");
        assert!(!r.contains("ID ="), "{r}");
        let st = cql::parse_schema_statement(&r)?;
        assert_eq!((st.keyspace.as_str(), st.id), ("rv_test_x_0", None));
        let only = "CREATE TABLE shop.t (id int PRIMARY KEY) WITH ID = 0190d0c4-7f5e-7000-8000-000000000001;";
        assert_eq!(
            retarget(only, "shop", "k")?,
            "CREATE TABLE k.t (id int PRIMARY KEY);"
        );
        let first = "CREATE TABLE shop.t (id int PRIMARY KEY) WITH ID = 0190d0c4-7f5e-7000-8000-000000000001 AND comment = ''";
        assert_eq!(
            retarget(first, "shop", "k")?,
            "CREATE TABLE k.t (id int PRIMARY KEY) WITH comment = ''"
        );
        assert_eq!(
            retarget(
                "ALTER TABLE shop.t DROP old USING TIMESTAMP 5;",
                "shop",
                "k"
            )?,
            "ALTER TABLE k.t DROP old USING TIMESTAMP 5;"
        );
        Ok(())
    }
}
