//! The worker's side of a test restore: loading staged SSTables into a scratch keyspace
//! (sstableloader takes keyspace and table from the directory path, so the verified files are
//! hard-linked under `<scratch keyspace>/<table>/`), counting what a scratch table holds and
//! reading a sample of its partitions in full, and dropping the scratch keyspace. Every call
//! refuses any keyspace that is not a scratch keyspace (`rv_test_…`): live tables are never
//! read, loaded into or dropped here.
use std::path::{Path, PathBuf};

use anyhow::Context;
use futures::TryStreamExt;
use ringvault_common::manifest::HostId;
use ringvault_common::test_restore::is_scratch_keyspace;
use ringvault_common::{Identifier, RunId};
use scylla::value::{CqlValue, Row};

use crate::cql::Cql;

/// Most partitions a CountScratchTable may read back in full.
pub const MAX_SAMPLE: u32 = 1000;

/// Refuses anything but a scratch keyspace name.
pub fn check_scratch(keyspace: &str) -> Result<(), String> {
    if is_scratch_keyspace(keyspace) {
        Ok(())
    } else {
        Err(format!(
            "{keyspace:?} is not a scratch keyspace (rv_test_…); test restores touch nothing else"
        ))
    }
}

/// Where one table's verified files are linked for loading into `target`.
pub fn retarget_dir(
    staging: &Path,
    run: &RunId,
    attempt: &RunId,
    host: &HostId,
    target: &str,
    table: &Identifier,
) -> PathBuf {
    staging
        .join(run.as_str())
        .join("retarget")
        .join(attempt.as_str())
        .join(host.as_str())
        .join(target)
        .join(table.as_str())
}

/// Hard-links every file of `from` (the attempt's verified files) into `to`, started afresh.
pub async fn link_all(from: &Path, to: &Path) -> anyhow::Result<usize> {
    match tokio::fs::remove_dir_all(to).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", to.display())),
    }
    tokio::fs::create_dir_all(to)
        .await
        .with_context(|| format!("creating {}", to.display()))?;
    let mut n = 0;
    let mut entries = tokio::fs::read_dir(from)
        .await
        .with_context(|| format!("listing {}", from.display()))?;
    while let Some(e) = entries
        .next_entry()
        .await
        .with_context(|| format!("listing {}", from.display()))?
    {
        if !e.file_type().await?.is_file() {
            continue;
        }
        tokio::fs::hard_link(e.path(), to.join(e.file_name()))
            .await
            .with_context(|| format!("linking {}", e.path().display()))?;
        n += 1;
    }
    Ok(n)
}

/// What a scratch table holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub partitions: u64,
    pub rows: u64,
    pub sampled_partitions: u64,
    pub sampled_rows: u64,
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A small deterministic generator for reservoir sampling (no cryptographic need).
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

impl Cql {
    /// Drops a scratch keyspace; whether it existed.
    pub async fn drop_scratch_keyspace(&self, keyspace: &str) -> anyhow::Result<bool> {
        check_scratch(keyspace).map_err(|e| anyhow::anyhow!(e))?;
        let existed = self.keyspaces().await?.contains(keyspace);
        self.session()
            .query_unpaged(format!("DROP KEYSPACE IF EXISTS {}", quote(keyspace)), ())
            .await
            .with_context(|| format!("dropping keyspace {keyspace}"))?;
        self.await_cluster_schema_agreement().await?;
        Ok(existed)
    }

    /// Counts the partitions (`SELECT DISTINCT` of the partition key) and rows of a scratch
    /// table, page by page, and reads up to `sample` partitions (a uniform sample) in full:
    /// every cell of them is decoded, and each must hold at least one row.
    pub async fn count_scratch_table(
        &self,
        keyspace: &str,
        table: &str,
        sample: u32,
    ) -> anyhow::Result<Counts> {
        check_scratch(keyspace).map_err(|e| anyhow::anyhow!(e))?;
        let sample = sample.min(MAX_SAMPLE) as usize;
        let mut key: Vec<(i32, String)> = Vec::new();
        let mut pager = self
            .session()
            .query_iter(
                "SELECT column_name, kind, position FROM system_schema.columns WHERE keyspace_name = ? AND table_name = ?",
                (keyspace, table),
            )
            .await
            .context("reading system_schema.columns")?
            .rows_stream::<(String, String, i32)>()
            .context("reading system_schema.columns")?;
        while let Some((name, kind, pos)) = pager.try_next().await? {
            if kind == "partition_key" {
                key.push((pos, name));
            }
        }
        key.sort();
        anyhow::ensure!(!key.is_empty(), "table {keyspace}.{table} does not exist");
        let cols: Vec<String> = key.iter().map(|(_, n)| quote(n)).collect();
        let from = format!("{}.{}", quote(keyspace), quote(table));
        let mut counts = Counts::default();
        let mut rng = XorShift(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1,
        );
        let mut picked: Vec<Vec<Option<CqlValue>>> = Vec::new();
        let mut pager = self
            .session()
            .query_iter(
                format!("SELECT DISTINCT {} FROM {from}", cols.join(", ")),
                (),
            )
            .await
            .with_context(|| format!("listing the partitions of {keyspace}.{table}"))?
            .rows_stream::<Row>()?;
        while let Some(row) = pager.try_next().await? {
            counts.partitions += 1;
            if picked.len() < sample {
                picked.push(row.columns);
            } else if sample > 0 {
                let j = (rng.next() % counts.partitions) as usize;
                if j < sample {
                    picked[j] = row.columns;
                }
            }
        }
        let mut pager = self
            .session()
            .query_iter(format!("SELECT {} FROM {from}", cols[0]), ())
            .await
            .with_context(|| format!("counting the rows of {keyspace}.{table}"))?
            .rows_stream::<Row>()?;
        while pager.try_next().await?.is_some() {
            counts.rows += 1;
        }
        let filter: Vec<String> = cols.iter().map(|c| format!("{c} = ?")).collect();
        let read_one = format!("SELECT * FROM {from} WHERE {}", filter.join(" AND "));
        for k in picked {
            let mut rows = self
                .session()
                .query_iter(read_one.as_str(), k.clone())
                .await
                .with_context(|| format!("reading a partition of {keyspace}.{table} back"))?
                .rows_stream::<Row>()?;
            let mut n = 0u64;
            while rows.try_next().await?.is_some() {
                n += 1;
            }
            anyhow::ensure!(
                n > 0,
                "partition {k:?} of {keyspace}.{table} is listed but reads back empty"
            );
            counts.sampled_partitions += 1;
            counts.sampled_rows += n;
        }
        Ok(counts)
    }
}
