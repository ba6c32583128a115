//! The worker's snapshot rules: when a snapshot may be taken (data directories confirmed, the
//! selection exists, every data directory above the free-space floor, the tag not taken unless
//! the same run re-issues it), what it records (the tables it covered, in
//! `<state>/snapshots/<tag>.tables`, so a later upload can tell a table whose snapshot went
//! missing from one created after it), and what an upload requires of it (the snapshot exists,
//! and has a directory for every table it covered). The gRPC edge only parses the request.
use std::path::{Path, PathBuf};
use std::time::Duration;

use ringvault_common::{Identifier, SnapshotTag};

use crate::cql::TableInfo;
use crate::error::{Result, WorkerError};
use crate::metrics::Op;
use crate::node::{LocalNode, Resolved, free_bytes};
use crate::nodetool::{NodetoolError, SnapshotScope};

/// How a snapshot is taken, beyond its tag and selection.
#[derive(Debug, Clone, Default)]
pub struct SnapshotOptions {
    /// Every data directory must have at least this many bytes free.
    pub min_free_bytes: u64,
    /// The same run re-issues its snapshot (after a restart): an existing one is cleared.
    pub replace_existing: bool,
    /// Cassandra expires the snapshot after this long.
    pub ttl: Option<Duration>,
}

impl LocalNode {
    /// Takes snapshot `tag` of `selection`, by the rules in the module doc.
    pub async fn take_snapshot(
        &self,
        tag: &SnapshotTag,
        selection: &ringvault_proto::v1::Selection,
        opts: &SnapshotOptions,
    ) -> Result<()> {
        self.require_data_dirs().await?;
        let resolved = self.resolve(selection).await?;
        for d in &self.data_dirs {
            check_free_floor(d, free_bytes(d)?, opts.min_free_bytes)?;
        }
        let scope = scope_of(&resolved)?;
        // Checked on disk (no nodetool JVM start): a tag in any data directory is taken,
        // unless the same run re-issues its own snapshot after a restart.
        if !self.snapshot_dirs(tag).await?.is_empty() {
            if !opts.replace_existing {
                return Err(WorkerError::Conflict(format!(
                    "snapshot {tag} already exists"
                )));
            }
            tracing::warn!(%tag, "re-issued snapshot: clearing the earlier attempt first");
            self.nodetool
                .clear_snapshot(tag)
                .await
                .map_err(WorkerError::internal)?;
        }
        // The tables as they are before the snapshot: a table created meanwhile is not
        // expected in it.
        self.record_snapshot_tables(tag, &resolved).await?;
        self.nodetool
            .snapshot(tag, &scope, opts.ttl)
            .await
            .map_err(|e| {
                self.metrics.error(Op::Snapshot);
                snapshot_failed(e)
            })?;
        self.metrics.snapshot_taken();
        tracing::info!(%tag, "snapshot taken");
        Ok(())
    }

    /// Clears snapshot `tag` (and its table record); whether it existed.
    pub async fn clear_snapshot(&self, tag: &SnapshotTag) -> Result<bool> {
        let existed = !self.snapshot_dirs(tag).await?.is_empty();
        self.nodetool.clear_snapshot(tag).await.map_err(|e| {
            self.metrics.error(Op::ClearSnapshot);
            WorkerError::internal(e)
        })?;
        if existed {
            self.metrics.snapshot_cleared();
        }
        match tokio::fs::remove_file(self.snapshot_record(tag)).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(%tag, error = %e, "removing the snapshot's table record"),
        }
        tracing::info!(%tag, existed, "snapshot cleared");
        Ok(existed)
    }

    /// The snapshot directories of `tag` in every data directory.
    pub async fn snapshot_dirs(&self, tag: &SnapshotTag) -> Result<Vec<PathBuf>> {
        let (dirs, tag) = (self.data_dirs.clone(), tag.clone());
        Ok(
            tokio::task::spawn_blocking(move || crate::snapshot_files::snapshot_dirs(&dirs, &tag))
                .await??,
        )
    }

    /// What an upload of `tag` requires: a snapshot that is gone (cleared, or expired by its
    /// TTL) must never upload as empty, and neither may one selected table's part of it.
    pub async fn require_snapshot_for_upload(
        &self,
        tag: &SnapshotTag,
        sel: &Resolved,
    ) -> Result<()> {
        if self.snapshot_dirs(tag).await?.is_empty() {
            return Err(WorkerError::refused(format!(
                "snapshot {tag} does not exist on this node (cleared, or expired by its TTL)"
            )));
        }
        self.require_table_snapshots(tag, sel).await
    }

    /// The files of snapshot `tag` an upload of `sel` sends (checked by
    /// [`LocalNode::require_snapshot_for_upload`] first).
    pub async fn snapshot_files(
        &self,
        tag: &SnapshotTag,
        sel: Resolved,
    ) -> Result<Vec<crate::snapshot_files::SnapshotFile>> {
        let (data_dirs, tag) = (self.data_dirs.clone(), tag.clone());
        Ok(tokio::task::spawn_blocking(move || {
            crate::snapshot_files::list(&data_dirs, &tag, &|k, t| sel.keeps(k, t))
        })
        .await??)
    }

    fn snapshot_record(&self, tag: &SnapshotTag) -> PathBuf {
        self.state_dir
            .join("snapshots")
            .join(format!("{}.tables", tag.as_str()))
    }

    /// Records the tables a snapshot covered (the selection at snapshot time), so an upload
    /// can tell a table whose snapshot went missing from one created after the snapshot.
    async fn record_snapshot_tables(&self, tag: &SnapshotTag, sel: &Resolved) -> Result<()> {
        let lines = record_lines(self.cql().await?.tables().await?, sel);
        let path = self.snapshot_record(tag);
        let write = async {
            if let Some(dir) = path.parent() {
                tokio::fs::create_dir_all(dir).await?;
            }
            tokio::fs::write(&path, lines).await
        };
        write
            .await
            .map_err(|e| WorkerError::internal(format!("writing {}: {e}", path.display())))
    }

    /// Every selected table the snapshot covered (as recorded when it was taken; without a
    /// record, every selected table of the live schema) must have its snapshot directory for
    /// `tag` in one of the data directories; otherwise the node fails naming each table.
    pub async fn require_table_snapshots(&self, tag: &SnapshotTag, sel: &Resolved) -> Result<()> {
        let tables = match tokio::fs::read_to_string(self.snapshot_record(tag)).await {
            Ok(text) => parse_record(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.cql().await?.tables().await?
            }
            Err(e) => {
                return Err(WorkerError::internal(format!(
                    "reading snapshot record: {e}"
                )));
            }
        };
        let tables: Vec<_> = tables
            .into_iter()
            .filter(|t| sel.keeps(&t.keyspace, &t.table))
            .collect();
        let (dirs, tag) = (self.data_dirs.clone(), tag.clone());
        let missing = tokio::task::spawn_blocking(move || {
            crate::snapshot_files::tables_without_snapshot(&dirs, &tag, &tables)
        })
        .await??;
        if missing.is_empty() {
            Ok(())
        } else {
            Err(missing_tables(&missing))
        }
    }
}

/// Refuses a data directory with less than `floor` bytes free.
fn check_free_floor(dir: &Path, free: u64, floor: u64) -> Result<()> {
    if free < floor {
        return Err(WorkerError::refused(format!(
            "data directory {} has {free} bytes free, below the floor of {floor} bytes",
            dir.display(),
        )));
    }
    Ok(())
}

/// What nodetool snapshots for a selection: its tables when tables were selected, otherwise
/// its keyspaces (refused when there are none).
fn scope_of(resolved: &Resolved) -> Result<SnapshotScope> {
    let scope = match &resolved.tables {
        Some(tables) => SnapshotScope::Tables(
            Identifier::parse(
                "keyspace",
                resolved
                    .keyspaces
                    .iter()
                    .next()
                    .map(String::as_str)
                    .unwrap_or_default(),
            )
            .map_err(WorkerError::invalid)?,
            tables
                .iter()
                .map(|t| Identifier::parse("table", t))
                .collect::<std::result::Result<_, _>>()
                .map_err(WorkerError::invalid)?,
        ),
        None => SnapshotScope::Keyspaces(
            resolved
                .keyspaces
                .iter()
                .map(|k| Identifier::parse("keyspace", k))
                .collect::<std::result::Result<_, _>>()
                .map_err(WorkerError::invalid)?,
        ),
    };
    if let SnapshotScope::Keyspaces(k) = &scope
        && k.is_empty()
    {
        return Err(WorkerError::refused("no keyspace to back up"));
    }
    Ok(scope)
}

/// A failed `nodetool snapshot`: a tag taken meanwhile is a conflict, anything else internal.
fn snapshot_failed(e: NodetoolError) -> WorkerError {
    let msg = e.to_string();
    if msg.contains("already exists") {
        WorkerError::Conflict(msg)
    } else {
        WorkerError::internal(msg)
    }
}

/// The record of the selected tables: `keyspace \t table \t id` lines.
fn record_lines(tables: Vec<TableInfo>, sel: &Resolved) -> String {
    tables
        .into_iter()
        .filter(|t| sel.keeps(&t.keyspace, &t.table))
        .map(|t| format!("{}\t{}\t{}\n", t.keyspace, t.table, t.id))
        .collect()
}

/// Reads [`record_lines`] back (lines with fewer than three fields are skipped).
fn parse_record(text: &str) -> Vec<TableInfo> {
    text.lines()
        .filter_map(|l| {
            let mut p = l.split('\t');
            Some(TableInfo {
                keyspace: p.next()?.to_string(),
                table: p.next()?.to_string(),
                id: p.next()?.to_string(),
            })
        })
        .collect()
}

/// The refusal naming every covered table whose snapshot directory is gone.
fn missing_tables(missing: &[TableInfo]) -> WorkerError {
    WorkerError::refused(format!(
        "the snapshot has no directory for table {} on this node (removed, or expired); the upload would leave it out",
        missing
            .iter()
            .map(|t| format!("{}.{}", t.keyspace, t.table))
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn table(ks: &str, t: &str) -> TableInfo {
        TableInfo {
            keyspace: ks.into(),
            table: t.into(),
            id: format!("{ks}-{t}-id"),
        }
    }

    fn resolved(keyspaces: &[&str], tables: Option<&[&str]>) -> Resolved {
        Resolved {
            keyspaces: keyspaces.iter().map(|s| s.to_string()).collect(),
            tables: tables.map(|t| t.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn a_selection_of_tables_snapshots_those_tables_of_its_keyspace() {
        let SnapshotScope::Tables(ks, tables) =
            scope_of(&resolved(&["shop"], Some(&["orders", "carts"]))).unwrap()
        else {
            panic!("expected a table scope");
        };
        assert_eq!(ks.as_str(), "shop");
        let names: Vec<_> = tables.iter().map(|t| t.as_str()).collect();
        assert_eq!(names, ["carts", "orders"]);
    }

    #[test]
    fn a_selection_of_keyspaces_snapshots_them_whole_and_none_is_refused() {
        let SnapshotScope::Keyspaces(ks) = scope_of(&resolved(&["a", "b"], None)).unwrap() else {
            panic!("expected a keyspace scope");
        };
        assert_eq!(ks.len(), 2);
        let e = scope_of(&resolved(&[], None)).unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition);
        assert_eq!(e.to_string(), "no keyspace to back up");
    }

    #[test]
    fn a_bad_name_in_a_selection_is_invalid() {
        let e = scope_of(&resolved(&["bad name"], None)).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
    }

    #[test]
    fn a_data_directory_below_the_floor_is_refused_naming_it() {
        assert!(check_free_floor(Path::new("/d1"), 100, 100).is_ok());
        let e = check_free_floor(Path::new("/d1"), 99, 100).unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition);
        assert_eq!(
            e.to_string(),
            "data directory /d1 has 99 bytes free, below the floor of 100 bytes"
        );
    }

    #[test]
    fn a_tag_taken_meanwhile_is_a_conflict_other_failures_internal() {
        let failed = |output: &str| NodetoolError::Failed {
            args: "snapshot -t t".into(),
            code: Some(2),
            output: output.into(),
        };
        let e = snapshot_failed(failed("Snapshot t already exists."));
        assert_eq!(e.code(), Code::AlreadyExists);
        let e = snapshot_failed(failed("JMX connection refused"));
        assert_eq!(e.code(), Code::Internal);
    }

    #[test]
    fn the_record_keeps_the_selected_tables_and_reads_back() {
        let sel = resolved(&["shop"], Some(&["orders"]));
        let text = record_lines(
            vec![
                table("shop", "orders"),
                table("shop", "carts"),
                table("other", "orders"),
            ],
            &sel,
        );
        assert_eq!(text, "shop\torders\tshop-orders-id\n");
        let back = parse_record(&format!("{text}truncated\tline\n"));
        assert_eq!(back.len(), 1);
        assert_eq!(
            (
                back[0].keyspace.as_str(),
                back[0].table.as_str(),
                back[0].id.as_str()
            ),
            ("shop", "orders", "shop-orders-id")
        );
    }

    #[test]
    fn missing_tables_are_all_named() {
        let e = missing_tables(&[table("a", "x"), table("b", "y")]);
        assert_eq!(e.code(), Code::FailedPrecondition);
        assert!(e.to_string().contains("table a.x, b.y on this node"), "{e}");
    }
}
