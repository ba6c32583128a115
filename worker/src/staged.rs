//! What the worker does with a restore's staged tables once they are downloaded (by
//! [`crate::restore`]): `nodetool import` into the live table on this node, `sstableloader`
//! onto the cluster (or, for a test restore, into its scratch keyspace), and removing a run's
//! staging directory. Each refuses a table with nothing staged before running any tool.
use std::path::PathBuf;

use ringvault_common::manifest::HostId;
use ringvault_common::{Identifier, RunId};

use crate::error::{Result, WorkerError};
use crate::metrics::Op;
use crate::node::LocalNode;

/// One staged table of one restore attempt, validated.
#[derive(Debug, Clone)]
pub struct StagedTable {
    pub run: RunId,
    pub attempt: RunId,
    pub host: HostId,
    pub keyspace: Identifier,
    pub table: Identifier,
}

impl LocalNode {
    /// The directory the attempt's verified files of `t` are in; refused when nothing is
    /// staged there.
    fn staged_dir(&self, t: &StagedTable) -> Result<PathBuf> {
        let dir = crate::restore::attempt_table_dir(
            &self.staging,
            &t.run,
            &t.attempt,
            &t.host,
            &t.keyspace,
            &t.table,
        );
        if !dir.is_dir() {
            return Err(WorkerError::refused(format!(
                "nothing staged for {}.{} in {}",
                t.keyspace,
                t.table,
                dir.display()
            )));
        }
        Ok(dir)
    }

    /// `nodetool import` of a staged table into the live table; what nodetool printed.
    pub async fn import_staged(&self, t: &StagedTable) -> Result<String> {
        let dir = self.staged_dir(t)?;
        let output = self
            .nodetool
            .import(&t.keyspace, &t.table, &dir)
            .await
            .map_err(|e| {
                self.metrics.error(Op::Import);
                WorkerError::internal(e)
            })?;
        tracing::info!(ks = %t.keyspace, table = %t.table, "imported");
        Ok(output)
    }

    /// `sstableloader` of a staged table onto `hosts` (IP addresses), into `target_keyspace`
    /// when one is given (a test restore's scratch keyspace); what sstableloader printed.
    pub async fn load_staged(
        &self,
        t: &StagedTable,
        hosts: &[String],
        target_keyspace: &str,
    ) -> Result<String> {
        if hosts.is_empty() || hosts.iter().any(|h| h.parse::<std::net::IpAddr>().is_err()) {
            return Err(WorkerError::invalid("hosts must be IP addresses"));
        }
        let dir = self.staged_dir(t)?;
        // A test restore loads into its scratch keyspace: the verified files are linked under
        // `<scratch>/<table>/`, the path sstableloader takes the keyspace from.
        let dir = if target_keyspace.is_empty() {
            dir
        } else {
            crate::scratch::check_scratch(target_keyspace).map_err(WorkerError::invalid)?;
            let to = crate::scratch::retarget_dir(
                &self.staging,
                &t.run,
                &t.attempt,
                &t.host,
                target_keyspace,
                &t.table,
            );
            crate::scratch::link_all(&dir, &to).await?;
            to
        };
        // Credentials reach sstableloader through its auth provider's environment and a
        // config file, never its argv.
        let (mut args, env) = self.access.loader_args();
        args.extend([
            "-d".to_string(),
            hosts.join(","),
            "--no-progress".to_string(),
            dir.display().to_string(),
        ]);
        let output = crate::nodetool::run_tool_env(&self.sstableloader, &args, &env)
            .await
            .map_err(|e| {
                self.metrics.error(Op::Load);
                WorkerError::internal(e)
            })?;
        tracing::info!(ks = %t.keyspace, table = %t.table, "loaded with sstableloader");
        Ok(output)
    }

    /// Removes everything staged for backup run `run` (nothing staged is fine).
    pub async fn clean_staging(&self, run: &RunId) -> Result<()> {
        let dir = self.staging.join(run.as_str());
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(WorkerError::internal(format!(
                "removing {}: {e}",
                dir.display()
            ))),
        }
    }
}
