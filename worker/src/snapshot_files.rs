//! Finds the files of one snapshot tag in every data directory:
//! `<data_dir>/<ks>/<table>-<32 hex id>/snapshots/<tag>/` and its one level of secondary-index
//! subfolders (`.<index>/`).
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use anyhow::Context;
use ringvault_common::{Identifier, RelativeName, SnapshotTag};

/// One file of the snapshot on this node.
#[derive(Debug, Clone)]
pub struct SnapshotFile {
    pub data_dir_index: u32,
    pub keyspace: Identifier,
    pub table: Identifier,
    pub table_id: String,
    pub name: RelativeName,
    pub path: PathBuf,
    pub size: u64,
    pub mtime_ns: i128,
}

/// Splits a table directory name `<table>-<32 hex>` into (table, id).
pub fn split_table_dir(name: &str) -> Option<(&str, &str)> {
    let (table, id) = name.rsplit_once('-')?;
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some((table, id))
}

/// Lists the snapshot's files; `keep(keyspace, table)` selects tables.
pub fn list(
    data_dirs: &[PathBuf],
    tag: &SnapshotTag,
    keep: &dyn Fn(&str, &str) -> bool,
) -> anyhow::Result<Vec<SnapshotFile>> {
    let mut out = Vec::new();
    for (i, data_dir) in data_dirs.iter().enumerate() {
        for ks_entry in read_dir(data_dir)? {
            let ks_name = ks_entry.file_name().to_string_lossy().into_owned();
            let Ok(keyspace) = Identifier::parse("keyspace", &ks_name) else {
                continue;
            };
            if !ks_entry.file_type()?.is_dir() {
                continue;
            }
            for t_entry in read_dir(&ks_entry.path())? {
                let dir_name = t_entry.file_name().to_string_lossy().into_owned();
                let Some((table, table_id)) = split_table_dir(&dir_name) else {
                    continue;
                };
                let Ok(table) = Identifier::parse("table", table) else {
                    continue;
                };
                if !keep(keyspace.as_str(), table.as_str()) {
                    continue;
                }
                let snap = t_entry.path().join("snapshots").join(tag.as_str());
                if !snap.is_dir() {
                    continue;
                }
                let ctx = (i as u32, &keyspace, &table, table_id.to_ascii_lowercase());
                collect(&snap, &snap, &ctx, &mut out)?;
            }
        }
    }
    out.sort_by(|a, b| {
        (a.data_dir_index, &a.keyspace, &a.table, &a.name).cmp(&(
            b.data_dir_index,
            &b.keyspace,
            &b.table,
            &b.name,
        ))
    });
    Ok(out)
}

/// Every `<data_dir>/<ks>/<table-id>/snapshots/<tag>` directory that exists.
pub fn snapshot_dirs(data_dirs: &[PathBuf], tag: &SnapshotTag) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for data_dir in data_dirs {
        for ks in read_dir(data_dir)? {
            for t in read_dir(&ks.path())? {
                let snap = t.path().join("snapshots").join(tag.as_str());
                if snap.is_dir() {
                    out.push(snap);
                }
            }
        }
    }
    Ok(out)
}

/// The tables (of `tables`, from the live schema) that have no `snapshots/<tag>` directory
/// under `<data_dir>/<ks>/<table>-<id>/` in any data directory.
pub fn tables_without_snapshot(
    data_dirs: &[PathBuf],
    tag: &SnapshotTag,
    tables: &[crate::cql::TableInfo],
) -> anyhow::Result<Vec<crate::cql::TableInfo>> {
    let mut out = Vec::new();
    for t in tables {
        let dir_name = format!("{}-{}", t.table, t.id);
        let found = data_dirs.iter().any(|d| {
            d.join(&t.keyspace)
                .join(&dir_name)
                .join("snapshots")
                .join(tag.as_str())
                .is_dir()
        });
        if !found {
            out.push(t.clone());
        }
    }
    Ok(out)
}

fn read_dir(dir: &Path) -> anyhow::Result<Vec<std::fs::DirEntry>> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("listing {}", dir.display())),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(Vec::new())
        }
        Err(e) => Err(e).with_context(|| format!("listing {}", dir.display())),
    }
}

fn collect(
    root: &Path,
    dir: &Path,
    ctx: &(u32, &Identifier, &Identifier, String),
    out: &mut Vec<SnapshotFile>,
) -> anyhow::Result<()> {
    for entry in read_dir(dir)? {
        let path = entry.path();
        let ft = entry
            .file_type()
            .with_context(|| format!("stat {}", path.display()))?;
        let rel = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        if ft.is_dir() {
            if dir == root {
                collect(root, &path, ctx, out)?;
            }
            continue;
        }
        if !ft.is_file() {
            continue;
        }
        let name = RelativeName::parse(&rel)
            .with_context(|| format!("unexpected file in snapshot: {}", path.display()))?;
        let meta = entry
            .metadata()
            .with_context(|| format!("stat {}", path.display()))?;
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        out.push(SnapshotFile {
            data_dir_index: ctx.0,
            keyspace: ctx.1.clone(),
            table: ctx.2.clone(),
            table_id: ctx.3.clone(),
            name,
            path,
            size: meta.len(),
            mtime_ns,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_files_and_index_subfolders_of_the_tag_only() -> anyhow::Result<()> {
        let d = tempfile::tempdir()?;
        let id = "0123456789abcdef0123456789abcdef";
        let snap = d.path().join(format!("ks/t1-{id}/snapshots/T"));
        std::fs::create_dir_all(snap.join(".idx"))?;
        std::fs::write(snap.join("nb-1-big-Data.db"), b"data")?;
        std::fs::write(snap.join(".idx/nb-1-big-Data.db"), b"i")?;
        std::fs::create_dir_all(d.path().join(format!("ks/t1-{id}/snapshots/OTHER")))?;
        std::fs::write(
            d.path().join(format!("ks/t1-{id}/snapshots/OTHER/x")),
            b"no",
        )?;
        std::fs::create_dir_all(d.path().join(format!("ks/t2-{id}/snapshots/T")))?;
        std::fs::write(d.path().join(format!("ks/t2-{id}/snapshots/T/y")), b"skip")?;
        let tag = SnapshotTag::parse("T")?;
        let files = list(&[d.path().to_path_buf()], &tag, &|_, t| t == "t1")?;
        let names: Vec<_> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, vec![".idx/nb-1-big-Data.db", "nb-1-big-Data.db"]);
        assert_eq!(files[1].size, 4);
        assert_eq!(files[1].table_id, id);
        Ok(())
    }
}
