//! Who is calling: the identities ringvault certificates carry and the roles of CLI users.
//!
//! An identity is written into a certificate as one URI subject alternative name:
//!
//! | identity | URI SAN |
//! |---|---|
//! | the coordinator | `urn:ringvault:coordinator` |
//! | a worker of cluster C, named N | `urn:ringvault:worker:<C>:<N>` |
//! | a CLI user N with role R | `urn:ringvault:user:<R>:<N>` |
//!
//! Cluster and user names are percent-encoded (a Cassandra cluster name may hold spaces).
//! Bearer tokens map to user identities the same way (see [`super::tokens`]).
use std::fmt;

use thiserror::Error;

const PREFIX: &str = "urn:ringvault:";

/// What a CLI user may do. Ordered: each role can do everything the ones before it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// list, show, watch, verify without --deep
    Viewer,
    /// + backup, cancel, verify --deep
    Operator,
    /// + restore, purge, schedules, --force-schema, --from-store, workers remove
    Admin,
}

impl Role {
    /// The role's name as written in certificates, token files and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Parses `viewer`, `operator` or `admin`.
    pub fn parse(s: &str) -> Result<Self, IdentityError> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(IdentityError::UnknownRole(other.to_string())),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A ringvault identity, as named by a certificate or a token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// The coordinator (the only caller a worker accepts).
    Coordinator,
    /// A worker allowed to register nodes of one cluster.
    Worker { cluster: String, name: String },
    /// A CLI user.
    User { name: String, role: Role },
}

/// Why an identity string or role was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error(
        "{0:?} is not a ringvault identity (urn:ringvault:coordinator, urn:ringvault:worker:CLUSTER:NAME or urn:ringvault:user:ROLE:NAME)"
    )]
    NotRingvault(String),
    #[error("unknown role {0:?}: viewer, operator or admin")]
    UnknownRole(String),
    #[error("a name in an identity must be 1-200 characters: {0:?}")]
    BadName(String),
}

impl Identity {
    /// The URI SAN naming this identity.
    pub fn to_uri(&self) -> String {
        match self {
            Identity::Coordinator => format!("{PREFIX}coordinator"),
            Identity::Worker { cluster, name } => {
                format!("{PREFIX}worker:{}:{}", encode(cluster), encode(name))
            }
            Identity::User { name, role } => format!("{PREFIX}user:{role}:{}", encode(name)),
        }
    }

    /// Parses a URI SAN written by [`Identity::to_uri`].
    pub fn from_uri(uri: &str) -> Result<Self, IdentityError> {
        let not = || IdentityError::NotRingvault(uri.to_string());
        let rest = uri.strip_prefix(PREFIX).ok_or_else(not)?;
        let parts: Vec<&str> = rest.split(':').collect();
        match parts.as_slice() {
            ["coordinator"] => Ok(Identity::Coordinator),
            ["worker", cluster, name] => Ok(Identity::Worker {
                cluster: decode(cluster)?,
                name: decode(name)?,
            }),
            ["user", role, name] => Ok(Identity::User {
                role: Role::parse(role)?,
                name: decode(name)?,
            }),
            _ => Err(not()),
        }
    }

    /// A CLI user's role; `None` for coordinator and worker identities.
    pub fn role(&self) -> Option<Role> {
        match self {
            Identity::User { role, .. } => Some(*role),
            _ => None,
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Coordinator => f.write_str("coordinator"),
            Identity::Worker { cluster, name } => write!(f, "worker {name} of cluster {cluster:?}"),
            Identity::User { name, role } => write!(f, "user {name} ({role})"),
        }
    }
}

/// Percent-encodes everything but unreserved URI characters (so `:` and spaces never appear).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn decode(s: &str) -> Result<String, IdentityError> {
    let bad = || IdentityError::BadName(s.to_string());
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or_else(bad)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let name = String::from_utf8(out).map_err(|_| bad())?;
    if name.is_empty() || name.len() > 200 {
        return Err(bad());
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_round_trip_through_their_uri() {
        for id in [
            Identity::Coordinator,
            Identity::Worker {
                cluster: "Test Cluster:1".into(),
                name: "node-1".into(),
            },
            Identity::User {
                name: "alice@example.com".into(),
                role: Role::Operator,
            },
        ] {
            let uri = id.to_uri();
            assert!(!uri[PREFIX.len()..].contains(' '), "{uri}");
            assert_eq!(Identity::from_uri(&uri).unwrap(), id);
        }
    }

    #[test]
    fn foreign_or_malformed_uris_are_refused() {
        for bad in [
            "https://example.com",
            "urn:ringvault:user:root:alice",
            "urn:ringvault:worker:c",
            "urn:ringvault:worker:c:n:extra",
            "urn:ringvault:user:admin:",
            "urn:ringvault:user:admin:%zz",
        ] {
            assert!(Identity::from_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn roles_are_ordered_by_power() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
    }
}
