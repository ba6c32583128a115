//! Authorization at the gRPC edge: a tower layer in front of every service that turns the
//! connection's certificate (or a bearer token) into a [`Principal`], asks the server's
//! [`Policy`] whether that principal may call the RPC, and either refuses (logged with the
//! identity and the RPC, never a secret) or passes the request on with the principal in its
//! extensions for handlers that check request fields (e.g. `verify --deep`).
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tonic::Status;

use super::identity::{Identity, Role};
use super::serve::PeerInfo;
use super::tokens::TokenFile;

/// Who a request comes from, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A plain-text loopback connection to a server started with --insecure-loopback: no
    /// identity is known and every call is allowed.
    InsecureLoopback,
    /// A verified certificate or token.
    Known(Identity),
}

impl Principal {
    /// Whether this principal has at least `role` (the insecure loopback has every role).
    pub fn has_role(&self, role: Role) -> bool {
        match self {
            Principal::InsecureLoopback => true,
            Principal::Known(id) => id.role().is_some_and(|r| r >= role),
        }
    }

    /// PERMISSION_DENIED naming `what` when the principal lacks `role`; the refusal is logged.
    pub fn require(&self, role: Role, what: &str) -> Result<(), Status> {
        if self.has_role(role) {
            return Ok(());
        }
        tracing::warn!(identity = %self, needs = %role, what, "refused");
        Err(Status::permission_denied(format!(
            "{what} needs the {role} role; {self} does not have it"
        )))
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::InsecureLoopback => f.write_str("an unauthenticated loopback caller"),
            Principal::Known(id) => id.fmt(f),
        }
    }
}

/// The principal of a request that passed the authorization layer. A request that did not
/// (a handler called directly, in a unit test) counts as unauthenticated.
pub fn principal<T>(req: &tonic::Request<T>) -> Result<Principal, Status> {
    req.extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("no authenticated caller"))
}

/// Which principals may call which RPC of one server.
pub trait Policy: Send + Sync + 'static {
    /// `Ok` to let the call through; `Err` with PERMISSION_DENIED otherwise. `rpc` is the
    /// gRPC path (`/ringvault.v1.Worker/Upload`).
    fn allow(&self, rpc: &str, who: &Identity) -> Result<(), String>;
}

/// The layer: authenticates every request and applies the policy.
#[derive(Clone)]
pub struct AuthLayer {
    policy: Arc<dyn Policy>,
    tokens: Option<Arc<TokenFile>>,
}

impl AuthLayer {
    /// A layer applying `policy`; `tokens` lets callers without a certificate authenticate
    /// with `authorization: Bearer <token>` (over TLS only).
    pub fn new(policy: Arc<dyn Policy>, tokens: Option<Arc<TokenFile>>) -> Self {
        Self { policy, tokens }
    }

    fn authenticate(&self, req: &http::Request<impl Sized>) -> Result<Principal, Status> {
        let rpc = req.uri().path();
        let Some(peer) = req.extensions().get::<PeerInfo>() else {
            return Err(Status::unauthenticated(
                "connection carries no peer information",
            ));
        };
        if !peer.tls {
            return Ok(Principal::InsecureLoopback);
        }
        let identity = match &peer.identity {
            Some(Ok(id)) => id.clone(),
            Some(Err(why)) => {
                tracing::warn!(peer = %peer.remote, rpc, reason = %why, "refused: certificate names no ringvault identity");
                return Err(Status::permission_denied(format!(
                    "the client certificate names no ringvault identity: {why}"
                )));
            }
            None => {
                let bearer = req
                    .headers()
                    .get(http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "));
                match (bearer, &self.tokens) {
                    (Some(token), Some(file)) => match file.lookup(token) {
                        Some(id) => id,
                        None => {
                            tracing::warn!(peer = %peer.remote, rpc, "refused: unknown bearer token");
                            return Err(Status::unauthenticated("unknown bearer token"));
                        }
                    },
                    (Some(_), None) => {
                        tracing::warn!(peer = %peer.remote, rpc, "refused: bearer token where none are accepted");
                        return Err(Status::unauthenticated(
                            "this server accepts client certificates only",
                        ));
                    }
                    (None, _) => {
                        tracing::warn!(peer = %peer.remote, rpc, "refused: no client certificate or token");
                        return Err(Status::unauthenticated(
                            "a client certificate (or a bearer token) is required",
                        ));
                    }
                }
            }
        };
        self.policy.allow(rpc, &identity).map_err(|why| {
            tracing::warn!(peer = %peer.remote, identity = %identity, rpc, reason = %why, "refused");
            Status::permission_denied(format!("{identity} may not call {rpc}: {why}"))
        })?;
        Ok(Principal::Known(identity))
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service the layer wraps around a server's routes.
#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    layer: AuthLayer,
}

/// gRPC paths anyone may call: health checks and reflection carry no data.
fn is_open(rpc: &str) -> bool {
    rpc.starts_with("/grpc.health.v1.Health/") || rpc.starts_with("/grpc.reflection.")
}

impl<S, B> tower::Service<http::Request<B>> for Auth<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        if is_open(req.uri().path()) {
            return Box::pin(self.inner.call(req));
        }
        match self.layer.authenticate(&req) {
            Ok(p) => {
                req.extensions_mut().insert(p);
                Box::pin(self.inner.call(req))
            }
            Err(status) => Box::pin(async move { Ok(status.into_http()) }),
        }
    }
}

/// The worker's policy: only the coordinator may call it.
pub struct WorkerPolicy;

impl Policy for WorkerPolicy {
    fn allow(&self, _rpc: &str, who: &Identity) -> Result<(), String> {
        match who {
            Identity::Coordinator => Ok(()),
            _ => Err("a worker accepts calls from the coordinator only".into()),
        }
    }
}

/// The coordinator's policy: workers may use the registry only; users may call the
/// `Coordinator` service by role (fields that need more, such as `verify --deep`, are checked
/// by the handlers).
pub struct CoordinatorPolicy;

/// The least role each `Coordinator` RPC needs.
pub fn coordinator_rpc_role(method: &str) -> Option<Role> {
    Some(match method {
        "GetRun" | "ListRuns" | "WatchRun" | "ListWorkers" | "ListBackups" | "VerifyBackup"
        | "ListSchedules" => Role::Viewer,
        "StartBackup" | "CancelRun" => Role::Operator,
        "StartRestore" | "Purge" | "AddSchedule" | "RemoveSchedule" | "PauseSchedule"
        | "ResumeSchedule" | "RemoveWorker" => Role::Admin,
        _ => return None,
    })
}

impl Policy for CoordinatorPolicy {
    fn allow(&self, rpc: &str, who: &Identity) -> Result<(), String> {
        if rpc.starts_with("/ringvault.v1.Registry/") {
            return match who {
                Identity::Worker { .. } => Ok(()),
                _ => Err("only workers may register".into()),
            };
        }
        let Some(method) = rpc.strip_prefix("/ringvault.v1.Coordinator/") else {
            return Err("unknown service".into());
        };
        let need = coordinator_rpc_role(method).unwrap_or(Role::Admin);
        match who.role() {
            Some(r) if r >= need => Ok(()),
            Some(r) => Err(format!("needs the {need} role, has {r}")),
            None => Err("only CLI users may call the Coordinator service".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(role: Role) -> Identity {
        Identity::User {
            name: "u".into(),
            role,
        }
    }

    #[test]
    fn coordinator_policy_maps_rpcs_to_roles() {
        let p = CoordinatorPolicy;
        let c = |m: &str| format!("/ringvault.v1.Coordinator/{m}");
        assert!(p.allow(&c("ListRuns"), &user(Role::Viewer)).is_ok());
        assert!(p.allow(&c("StartBackup"), &user(Role::Viewer)).is_err());
        assert!(p.allow(&c("StartBackup"), &user(Role::Operator)).is_ok());
        assert!(p.allow(&c("StartRestore"), &user(Role::Operator)).is_err());
        assert!(p.allow(&c("Purge"), &user(Role::Operator)).is_err());
        assert!(p.allow(&c("Purge"), &user(Role::Admin)).is_ok());
        assert!(p.allow(&c("SomethingNew"), &user(Role::Operator)).is_err());
        let w = Identity::Worker {
            cluster: "c".into(),
            name: "n".into(),
        };
        assert!(p.allow(&c("ListRuns"), &w).is_err());
        assert!(p.allow("/ringvault.v1.Registry/Register", &w).is_ok());
        assert!(
            p.allow("/ringvault.v1.Registry/Register", &user(Role::Admin))
                .is_err()
        );
    }

    #[test]
    fn worker_policy_accepts_the_coordinator_only() {
        assert!(
            WorkerPolicy
                .allow("/ringvault.v1.Worker/Upload", &Identity::Coordinator)
                .is_ok()
        );
        assert!(
            WorkerPolicy
                .allow("/ringvault.v1.Worker/Upload", &user(Role::Admin))
                .is_err()
        );
    }
}
