//! What can go wrong in the coordinator's domain code, as a closed set of kinds. Domain code
//! (plan, backup, restore, purge, verify, schedules) returns [`CoordinatorError`]; the gRPC
//! edge turns it into a status code in exactly one place ([`CoordinatorError::into_status`]),
//! so callers and the CLI tell "not found" from "unavailable" by code, never by message text.
use tonic::{Code, Status};

/// An error of the coordinator's domain, by kind.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// The request is malformed: a bad name, id, flag combination or value.
    #[error("{0}")]
    Invalid(String),
    /// The request is well formed but refused in the current state (with the reason).
    #[error("{0}")]
    Refused(String),
    /// What the request names does not exist (run, backup, schedule, worker, keyspace).
    #[error("{0}")]
    NotFound(String),
    /// Another operation holds what this one needs (a run on the cluster, a schedule id).
    #[error("{0}")]
    Conflict(String),
    /// The caller may not do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// A node (or the store) could not be reached or did not answer; retrying later may work.
    #[error("{node}: {reason}")]
    Unavailable {
        /// The node as `address (host id)`, or what else was unreachable.
        node: String,
        /// What happened.
        reason: String,
    },
    /// The coordinator is busy with something that excludes this (a purge sweeping the
    /// store); retrying later works.
    #[error("{0}")]
    Busy(String),
    /// A bug or a local failure (database, I/O): not the caller's doing.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Result of the coordinator's domain code.
pub type Result<T, E = CoordinatorError> = std::result::Result<T, E>;

impl CoordinatorError {
    /// [`Self::Invalid`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::Invalid(msg.into())
    }

    /// [`Self::Refused`].
    pub fn refused(msg: impl Into<String>) -> Self {
        Self::Refused(msg.into())
    }

    /// [`Self::NotFound`].
    pub fn not_found(msg: impl Into<String>) -> Self {
        Self::NotFound(msg.into())
    }

    /// [`Self::Conflict`].
    pub fn conflict(msg: impl Into<String>) -> Self {
        Self::Conflict(msg.into())
    }

    /// [`Self::Unavailable`].
    pub fn unavailable(node: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Unavailable {
            node: node.into(),
            reason: reason.into(),
        }
    }

    /// An error a worker (`node`) answered with, kept in its class and named by the node.
    pub fn from_worker(node: impl Into<String>, status: &Status) -> Self {
        let node = node.into();
        let msg = format!("{node}: {}", status.message());
        match status.code() {
            Code::InvalidArgument | Code::OutOfRange => Self::Invalid(msg),
            Code::FailedPrecondition | Code::ResourceExhausted => Self::Refused(msg),
            Code::NotFound => Self::NotFound(msg),
            Code::AlreadyExists | Code::Aborted => Self::Conflict(msg),
            Code::PermissionDenied | Code::Unauthenticated => Self::PermissionDenied(msg),
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => Self::Unavailable {
                node,
                reason: status.message().to_string(),
            },
            _ => Self::Internal(anyhow::anyhow!(msg)),
        }
    }

    /// Prefixes the message with `context` (the kind stays).
    pub fn context(self, context: impl std::fmt::Display) -> Self {
        match self {
            Self::Invalid(m) => Self::Invalid(format!("{context}: {m}")),
            Self::Refused(m) => Self::Refused(format!("{context}: {m}")),
            Self::NotFound(m) => Self::NotFound(format!("{context}: {m}")),
            Self::Conflict(m) => Self::Conflict(format!("{context}: {m}")),
            Self::PermissionDenied(m) => Self::PermissionDenied(format!("{context}: {m}")),
            Self::Unavailable { node, reason } => Self::Unavailable {
                node: format!("{context}: {node}"),
                reason,
            },
            Self::Busy(m) => Self::Busy(format!("{context}: {m}")),
            Self::Internal(e) => Self::Internal(e.context(context.to_string())),
        }
    }

    /// The gRPC code of this kind: the only place kinds meet codes.
    pub fn code(&self) -> Code {
        match self {
            Self::Invalid(_) => Code::InvalidArgument,
            Self::Refused(_) => Code::FailedPrecondition,
            Self::NotFound(_) => Code::NotFound,
            Self::Conflict(_) => Code::Aborted,
            Self::PermissionDenied(_) => Code::PermissionDenied,
            Self::Unavailable { .. } | Self::Busy(_) => Code::Unavailable,
            Self::Internal(_) => Code::Internal,
        }
    }

    /// As sent to a gRPC caller. Internal errors carry their whole context chain.
    pub fn into_status(self) -> Status {
        let code = self.code();
        let msg = match &self {
            Self::Internal(e) => format!("{e:#}"),
            other => other.to_string(),
        };
        if code == Code::Internal {
            tracing::error!(error = %msg, "internal error");
        }
        Status::new(code, msg)
    }
}

impl From<ringvault_common::store::StoreError> for CoordinatorError {
    /// A store answer keeps its class: missing objects are not found, transient failures
    /// are the store being unavailable, the rest internal.
    fn from(e: ringvault_common::store::StoreError) -> Self {
        use ringvault_common::store::StoreError as S;
        match e {
            S::NotFound { .. } => Self::NotFound(e.to_string()),
            S::BadUrl { .. } => Self::Invalid(e.to_string()),
            S::Transient { .. } => Self::Unavailable {
                node: "the store".into(),
                reason: e.to_string(),
            },
            other => Self::Internal(other.into()),
        }
    }
}

impl From<CoordinatorError> for Status {
    fn from(e: CoordinatorError) -> Self {
        e.into_status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_own_code() {
        let kinds = [
            CoordinatorError::invalid("x"),
            CoordinatorError::refused("x"),
            CoordinatorError::not_found("x"),
            CoordinatorError::conflict("x"),
            CoordinatorError::PermissionDenied("x".into()),
            CoordinatorError::unavailable("n", "x"),
            CoordinatorError::Internal(anyhow::anyhow!("x")),
        ];
        let codes: std::collections::BTreeSet<i32> =
            kinds.iter().map(|k| k.code() as i32).collect();
        assert_eq!(codes.len(), kinds.len());
    }

    #[test]
    fn worker_errors_keep_their_class_and_name_the_node() {
        let e = CoordinatorError::from_worker(
            "127.0.0.2 (h2)",
            &Status::unavailable("connection refused"),
        );
        assert_eq!(e.code(), Code::Unavailable);
        assert_eq!(e.to_string(), "127.0.0.2 (h2): connection refused");
        let e = CoordinatorError::from_worker("n1", &Status::failed_precondition("no space"));
        assert_eq!(e.code(), Code::FailedPrecondition);
        assert!(e.to_string().contains("n1: no space"));
    }

    #[test]
    fn context_keeps_the_kind() {
        let e = CoordinatorError::not_found("run x").context("restore");
        assert_eq!(e.code(), Code::NotFound);
        assert_eq!(e.to_string(), "restore: run x");
        let s: Status = CoordinatorError::Internal(anyhow::anyhow!("disk").context("db")).into();
        assert_eq!(s.code(), Code::Internal);
        assert_eq!(s.message(), "db: disk");
    }
}
