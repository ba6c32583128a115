//! `file://` backend: a directory tree. Writes go to a temporary file that is synced and renamed
//! into place, so a reader never sees a half-written object; multipart parts are written at
//! their offsets in one file, so completing an upload copies nothing.
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use super::{ByteStream, MultipartUpload, ObjectMeta, Store, StoreError, StoreResult};
use crate::layout::ObjectKey;

const PART_SIZE: usize = 8 << 20;
const TMP_DIR: &str = ".ringvault-tmp";

/// A store in a local directory.
#[derive(Debug)]
pub struct FileStore {
    root: PathBuf,
}

fn io(op: &'static str, key: impl ToString) -> impl FnOnce(std::io::Error) -> StoreError {
    let key = key.to_string();
    move |source| {
        if source.kind() == std::io::ErrorKind::NotFound && op != "put" {
            StoreError::NotFound { key }
        } else {
            StoreError::Io { op, key, source }
        }
    }
}

/// Directories that are never a store root: a purge sweeps the root's `blobs/`, `runs/` and
/// `tmp/`, and a filesystem root or a system directory holds other people's files.
const REFUSED_ROOTS: &[&str] = &[
    "/", "/home", "/var", "/tmp", "/opt", "/srv", "/mnt", "/media", "/root", "/var/tmp", "/var/lib",
];
/// Trees never used as (or above) a store root, at any depth.
const REFUSED_TREES: &[&str] = &[
    "/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/sys",
    "/dev", "/boot", "/run",
];

/// Refuses a root that is a filesystem root or a system directory. Symbolic links are resolved
/// for the part of the path that exists.
fn check_root(root: &Path) -> StoreResult<()> {
    let refuse = |why: &str| StoreError::BadUrl {
        url: format!("file://{}", root.display()),
        reason: format!("{why}; use a directory of its own, e.g. file:///var/backups/ringvault"),
    };
    // The deepest existing ancestor, resolved; the rest of the path appended as given.
    let mut existing = root.to_path_buf();
    let mut tail = Vec::new();
    let resolved = loop {
        if let Ok(c) = std::fs::canonicalize(&existing) {
            break tail.iter().rev().fold(c, |p: PathBuf, t| p.join(t));
        }
        match (
            existing.file_name().map(|n| n.to_os_string()),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                tail.push(name);
                existing = parent.to_path_buf();
            }
            _ => break root.to_path_buf(),
        }
    };
    for candidate in [root, resolved.as_path()] {
        if !candidate.is_absolute() {
            return Err(refuse("the store root must be an absolute path"));
        }
        if REFUSED_ROOTS.iter().any(|r| candidate == Path::new(r)) {
            return Err(refuse(&format!(
                "{} is a filesystem root or a shared system directory",
                candidate.display()
            )));
        }
        if REFUSED_TREES.iter().any(|r| candidate.starts_with(r)) {
            return Err(refuse(&format!(
                "{} is inside a system directory",
                candidate.display()
            )));
        }
    }
    Ok(())
}

impl FileStore {
    /// Opens (creating if needed) a store rooted at `root`; a filesystem root or a system
    /// directory is refused.
    pub fn new(root: PathBuf) -> StoreResult<Self> {
        check_root(&root)?;
        std::fs::create_dir_all(root.join(TMP_DIR)).map_err(io("open", root.display()))?;
        Ok(Self { root })
    }

    fn path(&self, key: &ObjectKey) -> PathBuf {
        // ObjectKey values are built by `layout` or validated by `from_listing`: no `..`.
        self.root.join(key.as_str())
    }

    /// Removes the directories left empty by removing the object at `path`, from its own
    /// directory up, keeping the root and its top-level directories (`blobs`, `runs`, `tmp`):
    /// otherwise a store gathers an empty `tmp/<run>/` per backup and a `runs/<run>/` per
    /// purged one. Stops at the first directory that is not empty (or not removable). A
    /// directory a writer had just created to publish into may go too: [`publish`] creates it
    /// again.
    async fn prune_empty_dirs(&self, path: &Path) {
        let mut dir = path.parent();
        while let Some(d) = dir {
            match d.strip_prefix(&self.root) {
                Ok(rel) if rel.components().count() >= 2 => {}
                _ => break,
            }
            if tokio::fs::remove_dir(d).await.is_err() {
                break;
            }
            dir = d.parent();
        }
    }

    fn tmp_path(&self) -> PathBuf {
        self.root
            .join(TMP_DIR)
            .join(uuid::Uuid::new_v4().to_string())
    }
}

/// Drops a written object's pages from the page cache once it is synced (clean pages go at
/// once): a store on the node's own machine would otherwise keep every byte a backup wrote
/// cached, and evict the pages Cassandra serves reads from to make room. Advice only: refused,
/// the kernel evicts them in its own time.
fn drop_cached(file: &impl std::os::fd::AsFd) {
    use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
    if let Err(e) = posix_fadvise(file, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED) {
        tracing::debug!(error = %e, "posix_fadvise(DONTNEED) refused");
    }
}

/// Times [`publish`] creates its directory again when it was pruned before the rename.
const PUBLISH_ATTEMPTS: usize = 16;

async fn publish(tmp: &Path, dest: &Path, key: &ObjectKey) -> StoreResult<()> {
    let mut attempt = 1;
    loop {
        let placed = async {
            if let Some(parent) = dest.parent() {
                tokio::fs::create_dir_all(parent).await?;
            }
            tokio::fs::rename(tmp, dest).await
        };
        match placed.await {
            Ok(()) => return Ok(()),
            // The directory was pruned as empty when another object in it was removed
            // ([`FileStore::prune_empty_dirs`]): before the rename (not found), or while
            // another writer was creating it too (exists, yet is no directory): again.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::AlreadyExists
                ) && attempt < PUBLISH_ATTEMPTS
                    && tokio::fs::try_exists(tmp).await.unwrap_or(false) =>
            {
                attempt += 1;
            }
            Err(e) => return Err(io("put", key)(e)),
        }
    }
}

#[async_trait]
impl Store for FileStore {
    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }

    fn part_size(&self) -> usize {
        PART_SIZE
    }

    async fn put(&self, key: &ObjectKey, data: Bytes) -> StoreResult<()> {
        let tmp = self.tmp_path();
        let mut f = tokio::fs::File::create(&tmp)
            .await
            .map_err(io("put", key))?;
        f.write_all(&data).await.map_err(io("put", key))?;
        f.sync_all().await.map_err(io("put", key))?;
        drop_cached(&f);
        drop(f);
        publish(&tmp, &self.path(key), key).await
    }

    async fn get(&self, key: &ObjectKey) -> StoreResult<ByteStream> {
        let f = tokio::fs::File::open(self.path(key))
            .await
            .map_err(io("get", key))?;
        let k = key.to_string();
        let s = tokio_util::io::ReaderStream::with_capacity(f, 1 << 20).map(move |r| {
            r.map_err(|source| StoreError::Io {
                op: "get",
                key: k.clone(),
                source,
            })
        });
        Ok(Box::pin(s))
    }

    async fn head(&self, key: &ObjectKey) -> StoreResult<Option<ObjectMeta>> {
        match tokio::fs::metadata(self.path(key)).await {
            Ok(m) if m.is_file() => Ok(Some(ObjectMeta {
                key: key.clone(),
                size: m.len(),
                modified_ms: None,
            })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("head", key)(e)),
        }
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<ObjectMeta>> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        tokio::task::spawn_blocking(move || list_blocking(&root, &prefix))
            .await
            .map_err(|e| StoreError::Backend {
                op: "list",
                key: String::new(),
                message: e.to_string(),
            })?
    }

    async fn delete_many(&self, keys: &[ObjectKey]) -> StoreResult<()> {
        for key in keys {
            let path = self.path(key);
            match tokio::fs::remove_file(&path).await {
                Ok(()) => self.prune_empty_dirs(&path).await,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("delete", key)(e)),
            }
        }
        Ok(())
    }

    async fn start_multipart(&self, key: &ObjectKey) -> StoreResult<Box<dyn MultipartUpload>> {
        let tmp = self.tmp_path();
        let file = std::fs::File::create(&tmp).map_err(io("put", key))?;
        Ok(Box::new(FileMultipart {
            file: Arc::new(file),
            tmp,
            dest: self.path(key),
            key: key.clone(),
        }))
    }

    async fn rename(&self, from: &ObjectKey, to: &ObjectKey) -> StoreResult<()> {
        let from = self.path(from);
        publish(&from, &self.path(to), to).await?;
        self.prune_empty_dirs(&from).await;
        Ok(())
    }

    /// `rename(2)` within the store's directory tree: no byte is copied.
    fn renames_without_copy(&self) -> bool {
        true
    }

    fn local_path(&self, key: &ObjectKey) -> Option<PathBuf> {
        Some(self.path(key))
    }
}

fn list_blocking(root: &Path, prefix: &str) -> StoreResult<Vec<ObjectMeta>> {
    // Walk from the deepest directory the prefix names.
    let dir_part = match prefix.rfind('/') {
        Some(i) => &prefix[..i],
        None => "",
    };
    let start = root.join(dir_part);
    let mut out = Vec::new();
    let mut stack = vec![start];
    while let Some(dir) = stack.pop() {
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io("list", dir.display())(e)),
        };
        for entry in rd {
            let entry = entry.map_err(io("list", dir.display()))?;
            let path = entry.path();
            let ft = entry.file_type().map_err(io("list", path.display()))?;
            let rel = match path.strip_prefix(root) {
                Ok(r) => r.to_string_lossy().into_owned(),
                Err(_) => continue,
            };
            if rel.starts_with(TMP_DIR) {
                continue;
            }
            if ft.is_dir() {
                stack.push(path);
            } else if ft.is_file() && rel.starts_with(prefix) {
                let meta = entry.metadata().map_err(io("list", &rel))?;
                let modified_ms = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_millis() as i64);
                if let Some(key) = ObjectKey::from_listing(&rel) {
                    out.push(ObjectMeta {
                        key,
                        size: meta.len(),
                        modified_ms,
                    });
                }
            }
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

struct FileMultipart {
    file: Arc<std::fs::File>,
    tmp: PathBuf,
    dest: PathBuf,
    key: ObjectKey,
}

/// An upload dropped before it completed (its caller failed or was cancelled) leaves no
/// temporary file: `tmp` is this upload's own unique name, gone already once completed.
impl Drop for FileMultipart {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.tmp);
    }
}

#[async_trait]
impl MultipartUpload for FileMultipart {
    async fn put_part(&self, number: u32, data: Bytes) -> StoreResult<()> {
        let file = Arc::clone(&self.file);
        let key = self.key.clone();
        let offset = u64::from(number.saturating_sub(1)) * PART_SIZE as u64;
        tokio::task::spawn_blocking(move || file.write_all_at(&data, offset))
            .await
            .map_err(|e| StoreError::Backend {
                op: "put",
                key: key.to_string(),
                message: e.to_string(),
            })?
            .map_err(io("put", &self.key))
    }

    async fn complete(&self) -> StoreResult<()> {
        let file = Arc::clone(&self.file);
        tokio::task::spawn_blocking(move || {
            file.sync_all()?;
            drop_cached(&*file);
            Ok::<_, std::io::Error>(())
        })
        .await
        .map_err(|e| StoreError::Backend {
            op: "put",
            key: self.key.to_string(),
            message: e.to_string(),
        })?
        .map_err(io("put", &self.key))?;
        publish(&self.tmp, &self.dest, &self.key).await
    }

    async fn abort(&self) -> StoreResult<()> {
        let _ = tokio::fs::remove_file(&self.tmp).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upload dropped before it completes (its caller failed or was cancelled) leaves no
    /// temporary file behind; a completed one leaves only its object.
    #[tokio::test]
    async fn a_dropped_upload_leaves_no_temporary_file() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = FileStore::new(dir.path().join("store"))?;
        let tmp_files = || -> std::io::Result<usize> {
            Ok(std::fs::read_dir(dir.path().join("store").join(TMP_DIR))?.count())
        };
        let key = ObjectKey::from_listing("objects/big").ok_or("key")?;
        let upload = store.start_multipart(&key).await?;
        upload.put_part(1, Bytes::from_static(b"part one")).await?;
        assert_eq!(tmp_files()?, 1);
        drop(upload);
        assert_eq!(tmp_files()?, 0, "the dropped upload's file is gone");
        assert!(store.head(&key).await?.is_none());

        let upload = store.start_multipart(&key).await?;
        upload.put_part(1, Bytes::from_static(b"part one")).await?;
        upload.complete().await?;
        drop(upload);
        assert_eq!(tmp_files()?, 0);
        assert_eq!(store.head(&key).await?.map(|m| m.size), Some(8));
        Ok(())
    }

    /// Removing objects removes the directories they leave empty, never the root's top-level
    /// ones; writers publishing into a directory another removal empties still land.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn emptied_directories_go_and_writers_racing_their_removal_still_land()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let root = dir.path().join("store");
        let store = Arc::new(FileStore::new(root.clone())?);
        let key = |k: String| ObjectKey::from_listing(&k).ok_or(k);
        // A purged run's manifests: `runs/<run>/` goes, `runs/` and the other run stay.
        for k in [
            "runs/r1/nodes/h.json",
            "runs/r1/manifest.json",
            "runs/r2/manifest.json",
        ] {
            store
                .put(&key(k.into())?, Bytes::from_static(b"{}"))
                .await?;
        }
        store
            .delete_many(&[
                key("runs/r1/nodes/h.json".into())?,
                key("runs/r1/manifest.json".into())?,
            ])
            .await?;
        assert!(
            !root.join("runs/r1").exists(),
            "an emptied run directory left"
        );
        assert!(root.join("runs/r2/manifest.json").exists());
        // Uploads staged under one run's `tmp/<run>/` and renamed to their blobs, many at
        // once: each rename may remove `tmp/<run>/` while another publishes into it.
        for round in 0..20 {
            let tasks: Vec<_> = (0..32)
                .map(|i| {
                    let store = Arc::clone(&store);
                    tokio::spawn(async move {
                        let staged = key(format!("tmp/run{round}/{i}"))?;
                        let blob = key(format!("blobs/{round:02}/{i}"))?;
                        store
                            .put(&staged, Bytes::from(format!("{round}-{i}")))
                            .await?;
                        store.rename(&staged, &blob).await?;
                        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(blob)
                    })
                })
                .collect();
            for (i, t) in tasks.into_iter().enumerate() {
                let blob = t.await?.map_err(|e| e.to_string())?;
                assert_eq!(
                    std::fs::read(root.join(blob.as_str()))?,
                    format!("{round}-{i}").into_bytes()
                );
            }
            assert!(
                !root.join(format!("tmp/run{round}")).exists(),
                "an emptied tmp/<run>/ left"
            );
        }
        assert!(
            root.join("tmp").is_dir() && root.join("blobs").is_dir() && root.join("runs").is_dir()
        );
        Ok(())
    }

    #[test]
    fn a_filesystem_root_or_system_directory_is_refused_as_a_store() {
        for bad in [
            "/",
            "/etc",
            "/usr/local/backups",
            "/var",
            "/proc/1",
            "/tmp",
            "/dev/shm/x",
        ] {
            let err = FileStore::new(PathBuf::from(bad)).expect_err(bad);
            assert!(matches!(err, StoreError::BadUrl { .. }), "{bad}: {err}");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(FileStore::new(dir.path().join("store")).is_ok());
        // A link to a system directory is resolved and refused too.
        let link = dir.path().join("etc-link");
        std::os::unix::fs::symlink("/etc", &link).expect("symlink");
        assert!(FileStore::new(link.join("backups")).is_err());
    }
}
