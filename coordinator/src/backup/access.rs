//! The access check every run makes on every node before it changes anything: each worker
//! confirms it can log in to its node (CQL, and JMX when it has JMX credentials) and, for a
//! restore, that its CQL role may MODIFY every table the restore writes (JMX imports and
//! sstableloader streaming bypass CQL permissions, so the worker enforces them itself). A refusal
//! names the node and what failed.
use std::time::Duration;

use ringvault_proto::v1 as pb;

use super::PlannedNode;
use crate::error::CoordinatorError;

/// A nodetool JVM start on a loaded machine is slow; a login check never takes longer.
const CHECK_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `CheckAccess` on every node at once; the first refusal stops the run. A refusal keeps
/// its class (a missing permission or a wrong password is refused, a silent node unavailable)
/// and names the node.
pub async fn check_access(
    nodes: &[PlannedNode],
    writes: &[pb::TableRef],
    what: &str,
) -> Result<(), CoordinatorError> {
    let calls = nodes.iter().map(|n| async move {
        let answer = tokio::time::timeout(
            CHECK_TIMEOUT,
            n.client.clone().check_access(pb::CheckAccessRequest {
                writes: writes.to_vec(),
            }),
        )
        .await
        .map_err(|_| {
            CoordinatorError::unavailable(
                n.label(),
                format!(
                    "the {what} did not start: the access check did not answer within {CHECK_TIMEOUT:?}"
                ),
            )
        })?;
        answer.map(|_| ()).map_err(|e| {
            CoordinatorError::from_worker(n.label(), &e)
                .context(format!("the {what} did not start"))
        })
    });
    futures::future::try_join_all(calls).await?;
    Ok(())
}
