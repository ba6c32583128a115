//! What the local Cassandra node says about the cluster and about itself, read over the
//! worker's CQL session (no JVM start, and the running node's own view, not a config file that
//! may differ from what it loaded): the ring (`system.local` + `system.peers_v2`), so the
//! coordinator can refuse a backup that would leave a node out, and the node's effective
//! `data_file_directories` (`system_views.settings`), so a worker never serves with a data
//! directory missing from its `--data-dir` set.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Context;
use futures::TryStreamExt;

use crate::cql::Cql;

/// One node of the ring.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RingNode {
    pub host_id: String,
    pub address: String,
    pub datacenter: String,
    pub rack: String,
}

/// Every node of the ring as the local node sees it, the local node included.
pub async fn ring(cql: &Cql) -> anyhow::Result<Vec<RingNode>> {
    let local = cql.local_info().await?;
    let mut out = vec![RingNode {
        host_id: local.host_id,
        address: local.address,
        datacenter: local.datacenter,
        rack: local.rack,
    }];
    let mut pager = cql
        .session()
        .query_iter(
            "SELECT peer, host_id, data_center, rack FROM system.peers_v2",
            (),
        )
        .await
        .context("reading system.peers_v2")?
        .rows_stream::<(
            std::net::IpAddr,
            Option<uuid::Uuid>,
            Option<String>,
            Option<String>,
        )>()
        .context("reading system.peers_v2")?;
    while let Some((peer, host_id, dc, rack)) =
        pager.try_next().await.context("reading system.peers_v2")?
    {
        out.push(RingNode {
            // A peer without a host id is still joining; it is named by address so the
            // coordinator refuses rather than leaving it out.
            host_id: host_id.map(|u| u.to_string()).unwrap_or_default(),
            address: peer.to_string(),
            datacenter: dc.unwrap_or_default(),
            rack: rack.unwrap_or_default(),
        });
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The node's effective `data_file_directories` (`system_views.settings`, Cassandra 4.0+).
pub async fn data_file_directories(cql: &Cql) -> anyhow::Result<Vec<PathBuf>> {
    let res = cql
        .session()
        .query_unpaged(
            "SELECT value FROM system_views.settings WHERE name = 'data_file_directories'",
            (),
        )
        .await
        .context("reading data_file_directories from system_views.settings")?
        .into_rows_result()
        .context("reading data_file_directories from system_views.settings")?;
    let (value,): (Option<String>,) = res
        .first_row()
        .context("system_views.settings has no data_file_directories")?;
    Ok(parse_dir_list(&value.unwrap_or_default()))
}

/// Parses the settings table's rendering of a directory list: `[/a, /b]` (or a bare path).
pub fn parse_dir_list(value: &str) -> Vec<PathBuf> {
    let v = value.trim();
    let v = v.strip_prefix('[').unwrap_or(v);
    let v = v.strip_suffix(']').unwrap_or(v);
    v.split(',')
        .map(|p| p.trim().trim_matches('"'))
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .collect()
}

/// A data-directory set that does not match the node's.
#[derive(Debug, thiserror::Error)]
#[error("{}", describe(.missing, .extra))]
pub struct DataDirMismatch {
    /// Directories of the node not given with --data-dir.
    pub missing: Vec<PathBuf>,
    /// Directories given with --data-dir that the node does not use.
    pub extra: Vec<PathBuf>,
}

fn describe(missing: &[PathBuf], extra: &[PathBuf]) -> String {
    let list = |v: &[PathBuf]| {
        v.iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!(
            "the node's data_file_directories include {} but --data-dir does not (it would never be backed up)",
            list(missing)
        ));
    }
    if !extra.is_empty() {
        parts.push(format!(
            "--data-dir {} is not one of the node's data_file_directories",
            list(extra)
        ));
    }
    format!(
        "data directories differ from the node's: {}",
        parts.join("; ")
    )
}

/// Compares the configured directories with the node's, both resolved (symlinks, `..`).
pub fn compare(configured: &[PathBuf], node: &[PathBuf]) -> Result<(), DataDirMismatch> {
    let norm = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let ours: BTreeSet<PathBuf> = configured.iter().map(|p| norm(p)).collect();
    let theirs: BTreeSet<PathBuf> = node.iter().map(|p| norm(p)).collect();
    let missing: Vec<PathBuf> = theirs.difference(&ours).cloned().collect();
    let extra: Vec<PathBuf> = ours.difference(&theirs).cloned().collect();
    if missing.is_empty() && extra.is_empty() {
        Ok(())
    } else {
        Err(DataDirMismatch { missing, extra })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_settings_rendering() {
        assert_eq!(
            parse_dir_list("[/var/lib/cassandra/data, /d2]"),
            vec![
                PathBuf::from("/var/lib/cassandra/data"),
                PathBuf::from("/d2")
            ]
        );
        assert_eq!(parse_dir_list("/one"), vec![PathBuf::from("/one")]);
        assert!(parse_dir_list("[]").is_empty());
    }

    #[test]
    fn names_the_missing_and_the_extra_directory() {
        let a = PathBuf::from("/nonexistent-rv/a");
        let b = PathBuf::from("/nonexistent-rv/b");
        assert!(compare(&[a.clone(), b.clone()], &[b.clone(), a.clone()]).is_ok());
        let e = compare(std::slice::from_ref(&a), &[a.clone(), b.clone()]).expect_err("accepted");
        assert_eq!(e.missing, vec![b.clone()]);
        assert!(e.to_string().contains("/nonexistent-rv/b"), "{e}");
        let e = compare(&[a.clone(), b.clone()], &[a]).expect_err("accepted");
        assert_eq!(e.extra, vec![b]);
    }
}
