//! What can go wrong in the worker's domain code, as a closed set of kinds. Domain code
//! (snapshot, schema, scratch, access, staging) returns [`WorkerError`] (or anyhow, which
//! becomes [`WorkerError::Internal`]); the gRPC edge turns it into a status code in exactly one
//! place ([`WorkerError::into_status`]). The codes are the ones the coordinator's
//! `CoordinatorError::from_worker` maps back, so each class survives the hop to the coordinator
//! and on to the CLI.
use tonic::{Code, Status};

/// An error of the worker's domain, by kind.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The request is malformed: a bad name, tag, id, path or value.
    #[error("{0}")]
    Invalid(String),
    /// The request is well formed but refused in the node's current state (with the reason).
    #[error("{0}")]
    Refused(String),
    /// Refused because a disk would fill: the staging reserve would be used up.
    #[error("{0}")]
    NoSpace(String),
    /// What the request names does not exist (keyspace, table).
    #[error("{0}")]
    NotFound(String),
    /// What the request would create exists already (a snapshot tag).
    #[error("{0}")]
    Conflict(String),
    /// Something the worker needs is down or did not answer: nodetool/JMX, CQL, the store.
    #[error("{what}: {reason}")]
    Unavailable {
        /// What could not be reached.
        what: String,
        /// What happened.
        reason: String,
    },
    /// The request may not do this (a store outside the allowlist, a forbidden statement).
    #[error("{0}")]
    PermissionDenied(String),
    /// A bug or a local failure (I/O, nodetool output): not the caller's doing.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Result of the worker's domain code.
pub type Result<T, E = WorkerError> = std::result::Result<T, E>;

impl WorkerError {
    /// [`Self::Invalid`].
    pub fn invalid(msg: impl std::fmt::Display) -> Self {
        Self::Invalid(msg.to_string())
    }

    /// [`Self::Refused`].
    pub fn refused(msg: impl std::fmt::Display) -> Self {
        Self::Refused(msg.to_string())
    }

    /// [`Self::Internal`] from a message.
    pub fn internal(msg: impl std::fmt::Display) -> Self {
        Self::Internal(anyhow::anyhow!("{msg}"))
    }

    /// The gRPC code of this kind: the only place kinds meet codes. Each is one the
    /// coordinator's `from_worker` maps back to the same class.
    pub fn code(&self) -> Code {
        match self {
            Self::Invalid(_) => Code::InvalidArgument,
            Self::Refused(_) => Code::FailedPrecondition,
            Self::NoSpace(_) => Code::ResourceExhausted,
            Self::NotFound(_) => Code::NotFound,
            Self::Conflict(_) => Code::AlreadyExists,
            Self::Unavailable { .. } => Code::Unavailable,
            Self::PermissionDenied(_) => Code::PermissionDenied,
            Self::Internal(_) => Code::Internal,
        }
    }

    /// As sent to the coordinator. Internal errors carry their whole context chain.
    pub fn into_status(self) -> Status {
        let code = self.code();
        let msg = match &self {
            Self::Internal(e) => format!("{e:#}"),
            other => other.to_string(),
        };
        Status::new(code, msg)
    }
}

impl From<WorkerError> for Status {
    fn from(e: WorkerError) -> Self {
        e.into_status()
    }
}

impl From<tokio::task::JoinError> for WorkerError {
    fn from(e: tokio::task::JoinError) -> Self {
        Self::internal(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_survive_and_internal_keeps_its_context() {
        let s = WorkerError::Unavailable {
            what: "nodetool".into(),
            reason: "JMX refused".into(),
        }
        .into_status();
        assert_eq!(s.message(), "nodetool: JMX refused");
        let s: Status = WorkerError::from(anyhow::anyhow!("disk").context("statvfs /d")).into();
        assert_eq!(s.code(), Code::Internal);
        assert_eq!(s.message(), "statvfs /d: disk");
        assert_eq!(
            WorkerError::Conflict("snapshot t already exists".into())
                .into_status()
                .message(),
            "snapshot t already exists"
        );
    }
}
