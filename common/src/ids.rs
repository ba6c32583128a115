//! Validated identifiers: snapshot tags, run ids, keyspace/table names and the relative file
//! names found in manifests. Everything that reaches a command line or a filesystem path is
//! parsed into one of these first, so bad input is refused before it changes anything.
use std::fmt;

use serde::{Deserialize, Serialize};

/// Why an identifier was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("{what} must not be empty")]
    Empty { what: &'static str },
    #[error("{what} is {len} characters long; at most {max} are allowed")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error(
        "{what} {value:?} contains {bad:?}; only letters, digits, '.', '_' and '-' are allowed"
    )]
    BadChar {
        what: &'static str,
        value: String,
        bad: char,
    },
    #[error("{what} {value:?} must not contain '..'")]
    DotDot { what: &'static str, value: String },
    #[error("{what} {value:?} is not a plain identifier (letters, digits and '_', at most 48)")]
    BadIdentifier { what: &'static str, value: String },
    #[error("file name {value:?} would escape its directory ({reason})")]
    Escapes { value: String, reason: &'static str },
}

/// A `nodetool snapshot -t` tag: 1–200 characters of `[A-Za-z0-9._-]`, never `..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SnapshotTag(String);

impl SnapshotTag {
    /// Longest tag accepted.
    pub const MAX_LEN: usize = 200;

    /// Parses and validates a tag.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        check_token("snapshot tag", s, Self::MAX_LEN)?;
        Ok(Self(s.to_string()))
    }

    /// The tag text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn check_token(what: &'static str, s: &str, max: usize) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { what });
    }
    let len = s.chars().count();
    if len > max {
        return Err(IdError::TooLong { what, len, max });
    }
    if let Some(bad) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(IdError::BadChar {
            what,
            value: s.to_string(),
            bad,
        });
    }
    if s.contains("..") {
        return Err(IdError::DotDot {
            what,
            value: s.to_string(),
        });
    }
    Ok(())
}

impl TryFrom<String> for SnapshotTag {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}
impl From<SnapshotTag> for String {
    fn from(t: SnapshotTag) -> String {
        t.0
    }
}
impl fmt::Display for SnapshotTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A run id: a UUIDv7 in its hyphenated text form (sortable by creation time).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RunId(String);

impl RunId {
    /// A fresh, time-ordered id.
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7().hyphenated().to_string())
    }
    /// Parses a run id given by a user or read from a store.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        uuid::Uuid::try_parse(s)
            .map(|u| Self(u.hyphenated().to_string()))
            .map_err(|_| IdError::BadIdentifier {
                what: "run id",
                value: s.to_string(),
            })
    }
    /// The id text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl Default for RunId {
    fn default() -> Self {
        Self::new()
    }
}
impl TryFrom<String> for RunId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}
impl From<RunId> for String {
    fn from(t: RunId) -> String {
        t.0
    }
}
impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Cassandra keyspace or table name as ringvault accepts it: `[A-Za-z0-9_]{1,48}` (unquoted
/// CQL identifiers and every name Cassandra puts on disk).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Identifier(String);

impl Identifier {
    /// Parses a keyspace or table name; `what` names it in the error.
    pub fn parse(what: &'static str, s: &str) -> Result<Self, IdError> {
        if s.is_empty() {
            return Err(IdError::Empty { what });
        }
        if s.len() > 48 || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(IdError::BadIdentifier {
                what,
                value: s.to_string(),
            });
        }
        Ok(Self(s.to_string()))
    }
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl TryFrom<String> for Identifier {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse("name", &s)
    }
}
impl From<Identifier> for String {
    fn from(t: Identifier) -> String {
        t.0
    }
}
impl fmt::Display for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A file name relative to a table's snapshot directory, as recorded in a node manifest: one or
/// two plain components (`nb-1-big-Data.db`, `.idx/nb-1-big-Data.db`), never absolute, never `..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RelativeName(String);

impl RelativeName {
    /// Validates a relative name before it is joined to any local path.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let esc = |reason| IdError::Escapes {
            value: s.to_string(),
            reason,
        };
        if s.is_empty() {
            return Err(IdError::Empty { what: "file name" });
        }
        if s.starts_with('/') || s.starts_with('\\') || s.contains(':') {
            return Err(esc("absolute path"));
        }
        if s.contains('\\') || s.contains('\0') {
            return Err(esc("backslash or NUL"));
        }
        let parts: Vec<&str> = s.split('/').collect();
        if parts.len() > 2 {
            return Err(esc("more than one directory level"));
        }
        for p in parts {
            if p.is_empty() || p == "." || p == ".." {
                return Err(esc("empty, '.' or '..' component"));
            }
        }
        Ok(Self(s.to_string()))
    }
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl TryFrom<String> for RelativeName {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}
impl From<RelativeName> for String {
    fn from(t: RelativeName) -> String {
        t.0
    }
}
impl fmt::Display for RelativeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_accept_dates_and_refuse_paths_whitespace_and_long() {
        assert!(SnapshotTag::parse("2023.06.27").is_ok());
        assert!(SnapshotTag::parse("rv-20260101T000000Z").is_ok());
        assert!(matches!(
            SnapshotTag::parse("a/b"),
            Err(IdError::BadChar { bad: '/', .. })
        ));
        assert!(matches!(
            SnapshotTag::parse("a..b"),
            Err(IdError::DotDot { .. })
        ));
        assert!(matches!(
            SnapshotTag::parse("a b"),
            Err(IdError::BadChar { bad: ' ', .. })
        ));
        assert!(matches!(
            SnapshotTag::parse("a\tb"),
            Err(IdError::BadChar { .. })
        ));
        assert!(matches!(SnapshotTag::parse(""), Err(IdError::Empty { .. })));
        assert!(SnapshotTag::parse(&"x".repeat(200)).is_ok());
        assert!(matches!(
            SnapshotTag::parse(&"x".repeat(201)),
            Err(IdError::TooLong { len: 201, .. })
        ));
    }

    #[test]
    fn relative_names_refuse_escapes() {
        assert!(RelativeName::parse("nb-1-big-Data.db").is_ok());
        assert!(RelativeName::parse(".idx/nb-1-big-Data.db").is_ok());
        for bad in [
            "../x",
            "/etc/passwd",
            "a/../b",
            "a/b/c",
            "",
            "a//b",
            "..",
            "C:x",
            "a\\b",
        ] {
            assert!(RelativeName::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn identifiers_are_plain_cql_names() {
        assert!(Identifier::parse("keyspace", "organization").is_ok());
        assert!(Identifier::parse("keyspace", "Org_2").is_ok());
        assert!(Identifier::parse("keyspace", "a-b").is_err());
        assert!(Identifier::parse("keyspace", "../x").is_err());
        assert!(Identifier::parse("keyspace", &"k".repeat(49)).is_err());
    }

    #[test]
    fn run_ids_round_trip_and_refuse_garbage() {
        let id = RunId::new();
        assert_eq!(RunId::parse(id.as_str()).ok(), Some(id));
        assert!(RunId::parse("../../etc").is_err());
    }
}
