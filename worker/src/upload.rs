//! Hashing and uploading a snapshot's files. Small files (up to one part) are read once into
//! one buffer, hashed, and put under their blob key unless the store has it already. On a
//! local-directory store a large file is read once: written part by part to a staging key,
//! hashed from the same buffers, then renamed to its blob key. On an object store, where a
//! rename is a server-side copy of every byte, it is read twice instead: once to hash it, then,
//! unless its blob is in the store, once more to stream it part by part straight to its blob
//! key (`upload_large`, `stage_and_rename`); its pages are held in the page cache between the
//! two reads ([`HeldPages`], up to [`HELD_PAGES_MAX`]), so only the first goes to disk. Reads
//! leave the page cache as they found it ([`page_cache`]). A file whose (keyspace, table id, name, size, mtime) was hashed before is
//! not read at all when its blob is in the store; with `trust_seen`, the store is not even
//! asked when this worker saw that blob there within [`SEEN_TRUSTED_FOR`] (the coordinator
//! checks every blob at commit). Memory is bounded by `concurrency` parts in flight plus as many idle read buffers, reused from one read to the next ([`crate::buffers`]).
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use ringvault_common::RunId;
use ringvault_common::hash::{ContentHash, ContentHasher, Crc32c};
use ringvault_common::layout;
use ringvault_common::manifest::FileEntry;
use ringvault_common::store::{BodySource, Store, StoreError, StoreResult};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::buffers::BufferPool;
use crate::hash_cache::{FileIdentity, HashCache};
use crate::page_cache;
use crate::snapshot_files::SnapshotFile;

/// What an upload reports as it goes.
#[derive(Debug, Clone)]
pub enum UploadEvent {
    /// Sent first: what there is to do.
    Plan { files: u64, bytes: u64 },
    /// Bytes of a large file sent so far (delta).
    Progress { bytes: u64 },
    /// One file is in the store.
    FileDone {
        entry: FileEntry,
        mtime_ns: i128,
        uploaded: bool,
        hash_cached: bool,
    },
}

/// Settings of one upload.
pub struct Uploader {
    pub run_id: RunId,
    pub store: Arc<dyn Store>,
    pub cache: HashCache,
    /// Parts read or in flight at once.
    pub concurrency: usize,
    /// Bandwidth cap shared by every upload of this run.
    pub throttle: crate::throttle::Throttle,
    /// Drop from the page cache what the reads brought in ([`page_cache`]).
    pub gentle: bool,
    /// The store as the hash cache names it ([`crate::hash_cache::store_key`]).
    pub store_key: String,
    /// Skip the HEAD of a cached file's blob seen in this store within [`SEEN_TRUSTED_FOR`].
    pub trust_seen: bool,
    /// With `gentle`, the bytes of page cache the files read twice (for a store whose rename
    /// copies) may keep from their hashing read to the end of their send, so the send reads
    /// memory rather than the disk ([`HELD_PAGES_MAX`] by default). A file that does not fit
    /// in what is left is read gently twice.
    pub held_pages_max: u64,
}

/// How long a blob this worker found in (or put into) a store is taken to be there still,
/// when the coordinator allows it (`trust_seen_blobs`). Only a purge removes blobs, the
/// coordinator's commit checks every blob of the run whatever the worker did, and re-issues
/// the upload with every blob checked if one is gone; this bound only limits how stale the
/// worker's memory gets.
pub const SEEN_TRUSTED_FOR: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Uploader {
    /// Uploads every file, reporting on `events`; fails on the first error.
    pub async fn run(
        self: Arc<Self>,
        files: Vec<SnapshotFile>,
        events: mpsc::Sender<UploadEvent>,
    ) -> anyhow::Result<()> {
        let total: u64 = files.iter().map(|f| f.size).sum();
        send(
            &events,
            UploadEvent::Plan {
                files: files.len() as u64,
                bytes: total,
            },
        )
        .await?;
        let shared = Shared {
            budget: Arc::new(Semaphore::new(self.concurrency.max(1))),
            // Reads and parts in flight hold at most `concurrency` buffers (one per permit),
            // and a streamed body a chunk or two more while the client sends the one before.
            buffers: BufferPool::new(self.concurrency.max(1).saturating_mul(2)),
            held: Arc::new(Semaphore::new(
                usize::try_from(self.held_pages_max / HELD_UNIT)
                    .unwrap_or(Semaphore::MAX_PERMITS)
                    .min(Semaphore::MAX_PERMITS),
            )),
            events,
        };
        futures::stream::iter(files)
            .map(|f| {
                let me = Arc::clone(&self);
                let shared = shared.clone();
                async move {
                    let path = f.path.display().to_string();
                    me.upload_one(f, &shared)
                        .await
                        .with_context(|| format!("uploading {path}"))
                }
            })
            .buffer_unordered(files_in_flight(self.concurrency))
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    async fn upload_one(&self, f: SnapshotFile, shared: &Shared) -> anyhow::Result<()> {
        let events = &shared.events;
        let identity = FileIdentity {
            keyspace: f.keyspace.to_string(),
            table_id: f.table_id.clone(),
            name: f.name.to_string(),
            size: f.size,
            mtime_ns: f.mtime_ns,
        };
        if let Some(hit) = self.cache.get(&identity)?
            && self.known_present(&hit.hash, f.size).await?
        {
            send(events, UploadEvent::Progress { bytes: f.size }).await?;
            let sstable = match hit.sstable {
                Some(s) => Some(s),
                // A Statistics.db recorded before its numbers were kept: read once, then kept.
                None => {
                    let s = sstable_stats(&f, self.gentle).await;
                    if s.is_some() {
                        self.cache.put(&identity, &hit.hash, s.as_ref())?;
                    }
                    s
                }
            };
            return done(events, &f, hit.hash, sstable, false, true).await;
        }
        let part = self.store.part_size();
        let (hash, uploaded) = if f.size as usize <= part {
            let r = self.upload_small(&f, shared).await?;
            send(events, UploadEvent::Progress { bytes: f.size }).await?;
            r
        } else {
            self.upload_large(&f, shared).await?
        };
        let sstable = sstable_stats(&f, self.gentle).await;
        self.cache.put(&identity, &hash, sstable.as_ref())?;
        done(events, &f, hash, sstable, uploaded, false).await
    }

    /// Whether the store has the blob: asked, unless `trust_seen` and this worker saw it there
    /// recently.
    async fn known_present(&self, hash: &ContentHash, size: u64) -> anyhow::Result<bool> {
        if self.trust_seen {
            let since = now_unix_ms() - SEEN_TRUSTED_FOR.as_millis() as i64;
            if self.cache.seen_since(&self.store_key, hash, size, since)? {
                return Ok(true);
            }
        }
        self.blob_present(hash, size).await
    }

    /// Asks the store whether it has the blob with this size (and remembers a yes).
    async fn blob_present(&self, hash: &ContentHash, size: u64) -> anyhow::Result<bool> {
        let present = self
            .store
            .head(&layout::blob(hash))
            .await?
            .is_some_and(|m| m.size == size);
        if present {
            self.seen(hash, size)?;
        }
        Ok(present)
    }

    fn seen(&self, hash: &ContentHash, size: u64) -> anyhow::Result<()> {
        self.cache
            .mark_seen(&self.store_key, hash, size, now_unix_ms())
    }

    async fn upload_small(
        &self,
        f: &SnapshotFile,
        shared: &Shared,
    ) -> anyhow::Result<(ContentHash, bool)> {
        let _permit = shared
            .budget
            .acquire()
            .await
            .context("upload budget closed")?;
        let path = f.path.clone();
        let size = f.size as usize;
        let gentle = self.gentle;
        let mut buf = shared.buffers.take(size);
        let (data, hash) =
            tokio::task::spawn_blocking(move || -> anyhow::Result<(Bytes, ContentHash)> {
                let file = page_cache::open(&path, gentle)
                    .with_context(|| format!("opening {}", path.display()))?;
                page_cache::read_exact_at(&file, &mut buf, 0, gentle)
                    .with_context(|| format!("reading {} ({size} bytes)", path.display()))?;
                check_not_grown(&file, size as u64, &path)?;
                let hash = ContentHash::of(&buf);
                Ok((buf.into_bytes(), hash))
            })
            .await
            .context("hashing task")??;
        if self.blob_present(&hash, f.size).await? {
            return Ok((hash, false));
        }
        self.throttle.take(data.len() as u64).await;
        self.store.put(&layout::blob(&hash), data).await?;
        self.seen(&hash, f.size)?;
        Ok((hash, true))
    }

    /// A large file. On a store whose rename copies nothing (a local directory) it takes one
    /// read: parts go to a staging key, hashed as they are read, and the staged object is then
    /// renamed to its blob key, or deleted if that blob is there already ([`Self::stage_and_rename`]).
    /// Elsewhere it takes two reads. The first hashes it (BLAKE3, and a CRC32C of the whole);
    /// unless the store has that blob already, the second streams it part by part straight to
    /// its blob key: no staging key, no server-side copy, and a known file sends no byte. The
    /// second read's CRC32C must equal the first's, or the upload is aborted before it
    /// completes: a blob only ever holds the bytes that were hashed.
    async fn upload_large(
        &self,
        f: &SnapshotFile,
        shared: &Shared,
    ) -> anyhow::Result<(ContentHash, bool)> {
        let file = Arc::new(
            page_cache::open(&f.path, self.gentle)
                .with_context(|| format!("opening {}", f.path.display()))?,
        );
        if self.store.renames_without_copy() {
            let src = Source {
                file,
                f,
                gentle: self.gentle,
                held: false,
            };
            return self.stage_and_rename(&src, shared).await;
        }
        let held = self.hold(&file, f.size, shared);
        let src = Source {
            file,
            f,
            gentle: self.gentle && held.is_none(),
            held: held.is_some(),
        };
        let result = self.hash_and_send(&src, shared).await;
        if let Some(held) = held {
            // Dropping the pages is a syscall over the whole file: off the async threads.
            let _ = tokio::task::spawn_blocking(move || drop(held)).await;
        }
        result
    }

    /// Holds a large file's pages in the page cache from its hashing read to the end of its
    /// send, so that the second read is a copy from memory rather than a second read from
    /// disk; then drops the ones that were not resident before ([`HeldPages`]). Only while
    /// the file fits in what is left of [`Uploader::held_pages_max`]: otherwise (or when reads
    /// are not gentle) `None`, and each read drops what it brought in as it goes.
    fn hold(&self, file: &Arc<File>, size: u64, shared: &Shared) -> Option<HeldPages> {
        if !self.gentle {
            return None;
        }
        let units = u32::try_from(size.div_ceil(HELD_UNIT)).ok()?;
        let permit = Arc::clone(&shared.held)
            .try_acquire_many_owned(units)
            .ok()?;
        Some(HeldPages {
            before: page_cache::Residency::of(file, 0, size),
            file: Arc::clone(file),
            _permit: permit,
        })
    }

    /// The two reads of a large file for a store whose rename copies: hash, then send unless
    /// the store has the blob.
    async fn hash_and_send(
        &self,
        src: &Source<'_>,
        shared: &Shared,
    ) -> anyhow::Result<(ContentHash, bool)> {
        let f = src.f;
        let (hash, crc) = self.hash_file(src, shared).await?;
        if self.blob_present(&hash, f.size).await? {
            send(&shared.events, UploadEvent::Progress { bytes: f.size }).await?;
            return Ok((hash, false));
        }
        let key = layout::blob(&hash);
        if f.size <= self.store.max_streamed_put().min(STREAMED_PUT_MAX) {
            self.send_streamed(src, &key, crc, shared).await?;
        } else {
            self.send_parts(src, &key, PartCheck::crc(crc), shared)
                .await?;
        }
        self.seen(&hash, f.size)?;
        Ok((hash, true))
    }

    /// One read of a large file: its parts go to `tmp/<run>/<uuid>` with the hash computed from
    /// the very bytes written, then the staged object becomes the blob (a rename), or is
    /// deleted when the blob is there already. A staged object left by a crash is swept by
    /// purge with the run's other staging keys.
    async fn stage_and_rename(
        &self,
        src: &Source<'_>,
        shared: &Shared,
    ) -> anyhow::Result<(ContentHash, bool)> {
        let f = src.f;
        let staging = layout::staging(&self.run_id, &uuid::Uuid::new_v4().to_string());
        let hash = self
            .send_parts(src, &staging, PartCheck::hash(), shared)
            .await?
            .context("the staged upload computed no hash")?;
        let placed: anyhow::Result<bool> = async {
            if self.blob_present(&hash, f.size).await? {
                return Ok(false);
            }
            self.store.rename(&staging, &layout::blob(&hash)).await?;
            self.seen(&hash, f.size)?;
            Ok(true)
        }
        .await;
        if !matches!(placed, Ok(true))
            && let Err(e) = self.store.delete_many(std::slice::from_ref(&staging)).await
        {
            // Not the run's failure: purge sweeps staging keys of finished runs.
            tracing::warn!(key = %staging, error = %e, "could not remove a staged copy");
        }
        Ok((hash, placed?))
    }

    /// The second read of a large file as one streamed request (stores that have one): read
    /// in [`STREAM_CHUNK`]s, its CRC32C checked before the last chunk leaves, and sent again
    /// from the start if the request is retried. Holds one upload permit while it streams.
    async fn send_streamed(
        &self,
        src: &Source<'_>,
        key: &ringvault_common::layout::ObjectKey,
        crc32c: u32,
        shared: &Shared,
    ) -> anyhow::Result<()> {
        let _permit = shared
            .budget
            .acquire()
            .await
            .context("upload budget closed")?;
        let f = src.f;
        let body = Arc::new(FileBody {
            file: Arc::clone(&src.file),
            buffers: shared.buffers.clone(),
            path: f.path.clone(),
            size: f.size,
            crc32c,
            gentle: src.gentle,
            mapped: src.held,
            throttle: self.throttle.clone(),
            events: shared.events.clone(),
            reported: AtomicU64::new(0),
        });
        let source: BodySource = Arc::new(move || {
            let body = Arc::clone(&body);
            Box::pin(futures::stream::try_unfold(
                (0u64, Crc32c::default()),
                move |(offset, crc)| {
                    let body = Arc::clone(&body);
                    async move { body.chunk(offset, crc).await }
                },
            ))
        });
        self.store.put_streamed(key, f.size, crc32c, source).await?;
        Ok(())
    }

    /// The first read of a large file: its content hash and CRC32C, its parts read up to
    /// [`READ_AHEAD`] at once ([`Self::read_parts`]) and hashed in order.
    async fn hash_file(
        &self,
        src: &Source<'_>,
        shared: &Shared,
    ) -> anyhow::Result<(ContentHash, u32)> {
        let mut sums = Box::new((ContentHasher::new(), Crc32c::default()));
        let mut parts = std::pin::pin!(self.read_parts(src, shared));
        while let Some((buf, permit)) = parts.try_next().await? {
            sums = tokio::task::spawn_blocking(move || {
                sums.0.update(&buf);
                sums.1.update(&buf);
                drop((buf, permit));
                sums
            })
            .await
            .context("hashing task")?;
        }
        check_not_grown(&src.file, src.f.size, &src.f.path)?;
        Ok((sums.0.finish(), sums.1.finish()))
    }

    /// The parts of a large file, in order, each in a buffer and holding the upload permit
    /// its read took: up to [`READ_AHEAD`] are read at once, the permits taken in part order
    /// (a read never waits for a later part's).
    fn read_parts<'a>(
        &'a self,
        src: &'a Source<'a>,
        shared: &'a Shared,
    ) -> impl futures::Stream<Item = anyhow::Result<(crate::buffers::Buffer, OwnedSemaphorePermit)>> + 'a
    {
        let (f, part) = (src.f, self.store.part_size() as u64);
        let offsets = (0..f.size.div_ceil(part)).map(move |i| i * part);
        futures::stream::iter(offsets)
            .then(move |offset| async move {
                let permit = Arc::clone(&shared.budget)
                    .acquire_owned()
                    .await
                    .context("upload budget closed")?;
                anyhow::Ok((offset, permit))
            })
            .map_ok(move |(offset, permit)| {
                let len = part.min(f.size - offset) as usize;
                let (file, gentle, path) = (Arc::clone(&src.file), src.gentle, f.path.clone());
                let mut buf = shared.buffers.take(len);
                async move {
                    let buf = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
                        page_cache::read_exact_at(&file, &mut buf, offset, gentle)
                            .with_context(|| format!("reading {} at {offset}", path.display()))?;
                        Ok(buf)
                    })
                    .await
                    .context("reading task")??;
                    anyhow::Ok((buf, permit))
                }
            })
            .try_buffered(READ_AHEAD)
    }

    /// Reads a large file part by part and sends the parts in parallel to `key`, checking or
    /// computing as it reads what `check` says; the upload completes only when the bytes sent
    /// pass that check. Returns the content hash when `check` computed one.
    async fn send_parts(
        &self,
        src: &Source<'_>,
        key: &ringvault_common::layout::ObjectKey,
        mut check: PartCheck,
        shared: &Shared,
    ) -> anyhow::Result<Option<ContentHash>> {
        let f = src.f;
        let upload: Arc<dyn ringvault_common::store::MultipartUpload> =
            Arc::from(self.store.start_multipart(key).await?);
        let mut tasks = tokio::task::JoinSet::new();
        let mut number = 1u32;
        let result: anyhow::Result<Option<ContentHash>> = async {
            let mut parts = std::pin::pin!(self.read_parts(src, shared));
            while let Some((buf, permit)) = parts.try_next().await? {
                let (data, c) = tokio::task::spawn_blocking(move || {
                    check.update(&buf);
                    (buf.into_bytes(), check)
                })
                .await
                .context("hashing task")?;
                check = c;
                self.throttle.take(data.len() as u64).await;
                let up = Arc::clone(&upload);
                let ev = shared.events.clone();
                tasks.spawn(async move {
                    let n = data.len() as u64;
                    let r = up.put_part(number, data).await;
                    drop(permit);
                    r?;
                    let _ = ev.send(UploadEvent::Progress { bytes: n }).await;
                    anyhow::Ok(())
                });
                // Surface a failed part early instead of reading the rest of the file.
                while let Some(r) = tasks.try_join_next() {
                    r.context("part task")??;
                }
                number += 1;
            }
            check_not_grown(&src.file, f.size, &f.path)?;
            let hash = check
                .finish()
                .map_err(|e| anyhow::anyhow!("{} {e}; not stored", f.path.display()))?;
            while let Some(r) = tasks.join_next().await {
                r.context("part task")??;
            }
            Ok(hash)
        }
        .await;
        match result {
            Ok(hash) => match upload.complete().await {
                Ok(()) => Ok(hash),
                Err(e) => {
                    let _ = upload.abort().await;
                    Err(e.into())
                }
            },
            Err(e) => {
                tasks.abort_all();
                while tasks.join_next().await.is_some() {}
                let _ = upload.abort().await;
                Err(e)
            }
        }
    }
}

/// What the read of a multipart upload checks or computes from the bytes it sends.
enum PartCheck {
    /// The CRC32C of the whole must equal the hashing read's.
    Crc { running: Box<Crc32c>, expected: u32 },
    /// The content hash of what was sent (the staged, one-read path).
    Hash(Box<ContentHasher>),
}

impl PartCheck {
    fn crc(expected: u32) -> Self {
        Self::Crc {
            running: Box::default(),
            expected,
        }
    }

    fn hash() -> Self {
        Self::Hash(Box::new(ContentHasher::new()))
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            Self::Crc { running, .. } => running.update(bytes),
            Self::Hash(h) => h.update(bytes),
        }
    }

    /// The hash computed, if any; an error when the CRC32C differs.
    fn finish(self) -> Result<Option<ContentHash>, &'static str> {
        match self {
            Self::Crc { running, expected } if running.finish() != expected => {
                Err("changed between hashing and upload (CRC32C differs)")
            }
            Self::Crc { .. } => Ok(None),
            Self::Hash(h) => Ok(Some(h.finish())),
        }
    }
}

/// What every file of one upload shares.
#[derive(Clone)]
struct Shared {
    /// Reads and parts in flight (`concurrency` permits).
    budget: Arc<Semaphore>,
    /// Pages held in the page cache between two reads of a file, in [`HELD_UNIT`]s
    /// ([`Uploader::held_pages_max`]).
    held: Arc<Semaphore>,
    buffers: BufferPool,
    events: mpsc::Sender<UploadEvent>,
}

/// A large file being read: its handle, what the snapshot says of it, whether each read
/// drops the pages it brought in, and whether the whole file's pages are held ([`HeldPages`]).
struct Source<'a> {
    file: Arc<File>,
    f: &'a SnapshotFile,
    gentle: bool,
    held: bool,
}

/// A file's pages kept in the page cache from its first read to the end of its second: what
/// was resident before the first, and a share of [`Uploader::held_pages_max`]. Dropping it
/// drops the pages that were not resident then, as each gentle read would have, once.
struct HeldPages {
    file: Arc<File>,
    before: page_cache::Residency,
    _permit: OwnedSemaphorePermit,
}

impl Drop for HeldPages {
    fn drop(&mut self) {
        // Advice only: a refused fadvise leaves the pages to the kernel's own eviction.
        if let Err(e) = self.before.drop_new_pages(&self.file) {
            tracing::debug!(error = %e, "posix_fadvise(DONTNEED) refused");
        }
    }
}

/// What [`Uploader::held_pages_max`] counts in.
const HELD_UNIT: u64 = 1 << 20;

/// The default of [`Uploader::held_pages_max`]: a node's page cache is gigabytes; a worker
/// may borrow this much of it for a few seconds at a time.
pub const HELD_PAGES_MAX: u64 = 256 << 20;

/// Parts of one large file read at once, ahead of the part being hashed: with one read at a
/// time a lone large file waited out each read's disk latency (gentle reads have no kernel
/// readahead), while the CPUs idled. Each read holds an upload permit, so reads and parts in
/// flight stay within the budget.
const READ_AHEAD: usize = 4;

/// Files worked on at once. More than the part budget: a file whose hash is cached costs one
/// store HEAD and no read, and on a remote store those HEADs are round trips worth
/// overlapping. Reads and parts stay bounded by the budget (`concurrency` permits).
fn files_in_flight(concurrency: usize) -> usize {
    concurrency.max(1).saturating_mul(4).max(32)
}

/// Files up to this size go up in one streamed request where the store has one; larger ones
/// in parallel parts, so that one huge SSTable still uses several connections.
const STREAMED_PUT_MAX: u64 = 1 << 30;
/// Read size of a streamed upload.
const STREAM_CHUNK: u64 = 1 << 20;

/// One large file as the body of a streamed upload ([`Uploader::send_streamed`]).
struct FileBody {
    file: Arc<File>,
    buffers: BufferPool,
    path: std::path::PathBuf,
    size: u64,
    /// CRC32C of the hashing read: the bytes sent must have it.
    crc32c: u32,
    gentle: bool,
    /// The file's pages are held in the page cache ([`HeldPages`]): chunks are mapped from
    /// it, not copied out of it.
    mapped: bool,
    throttle: crate::throttle::Throttle,
    events: mpsc::Sender<UploadEvent>,
    /// Bytes reported as progress so far (a retried request does not count twice).
    reported: AtomicU64,
}

impl FileBody {
    /// The chunk at `offset` and the state after it; `None` past the end.
    async fn chunk(&self, offset: u64, crc: Crc32c) -> StoreResult<Option<(Bytes, (u64, Crc32c))>> {
        if offset >= self.size {
            return Ok(None);
        }
        let len = STREAM_CHUNK.min(self.size - offset) as usize;
        let end = offset + len as u64;
        let (file, gentle, size, expected) =
            (Arc::clone(&self.file), self.gentle, self.size, self.crc32c);
        let path = self.path.clone();
        let buffer = (!self.mapped).then(|| self.buffers.take(len));
        let read = tokio::task::spawn_blocking(move || -> std::io::Result<(Bytes, Crc32c)> {
            let mut crc = crc;
            let buf = match buffer {
                Some(mut buf) => {
                    page_cache::read_exact_at(&file, &mut buf, offset, gentle)?;
                    buf.into_bytes()
                }
                None => page_cache::map(&file, offset, len)?,
            };
            crc.update(&buf);
            // Checked before the last chunk leaves: changed bytes never complete a request.
            if end == size {
                check_not_grown(&file, size, &path)?;
                if crc.finish() != expected {
                    return Err(std::io::Error::other(
                        "the file changed between hashing and upload (CRC32C differs); not stored",
                    ));
                }
            }
            Ok((buf, crc))
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r)
        .map_err(|source| StoreError::Io {
            op: "read",
            key: self.path.display().to_string(),
            source,
        })?;
        let (buf, crc) = read;
        self.throttle.take(len as u64).await;
        let before = self.reported.fetch_max(end, Ordering::Relaxed);
        if end > before {
            let _ = self
                .events
                .send(UploadEvent::Progress {
                    bytes: end - before,
                })
                .await;
        }
        Ok(Some((buf, (end, crc))))
    }
}

/// Fails when a file has more bytes than its recorded size (it grew while it was read).
fn check_not_grown(file: &File, size: u64, path: &std::path::Path) -> std::io::Result<()> {
    let mut extra = [0u8; 1];
    if file.read_at(&mut extra, size)? != 0 {
        return Err(std::io::Error::other(format!(
            "{} grew while it was read",
            path.display()
        )));
    }
    Ok(())
}

/// What a `Statistics.db` says about its SSTable (partitions, rows, timestamps), recorded in
/// the node manifest for test restores. Read with a size cap; a file that cannot be parsed is
/// logged and recorded without numbers (the backup itself does not depend on them).
async fn sstable_stats(
    f: &SnapshotFile,
    gentle: bool,
) -> Option<ringvault_common::sstable_stats::SstableStats> {
    use ringvault_common::sstable_stats as st;
    let name = f.name.as_str();
    if !st::is_statistics(name) || f.size > st::MAX_STATISTICS_BYTES {
        return None;
    }
    let version = st::version_of(name)?.to_string();
    let path = f.path.clone();
    let size = f.size;
    let r = tokio::task::spawn_blocking(move || -> anyhow::Result<st::SstableStats> {
        let file = page_cache::open(&path, gentle)
            .with_context(|| format!("opening {}", path.display()))?;
        let mut buf = vec![0u8; size as usize];
        page_cache::read_exact_at(&file, &mut buf, 0, gentle)
            .with_context(|| format!("reading {}", path.display()))?;
        Ok(st::parse(&buf, &version)?)
    })
    .await;
    match r {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::warn!(file = %f.path.display(), error = %format!("{e:#}"), "SSTable statistics not recorded");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "statistics task");
            None
        }
    }
}

async fn send(events: &mpsc::Sender<UploadEvent>, e: UploadEvent) -> anyhow::Result<()> {
    events
        .send(e)
        .await
        .map_err(|_| anyhow::anyhow!("the coordinator stopped listening"))
}

async fn done(
    events: &mpsc::Sender<UploadEvent>,
    f: &SnapshotFile,
    hash: ContentHash,
    sstable: Option<ringvault_common::sstable_stats::SstableStats>,
    uploaded: bool,
    hash_cached: bool,
) -> anyhow::Result<()> {
    let entry = FileEntry {
        keyspace: f.keyspace.clone(),
        table: f.table.clone(),
        table_id: f.table_id.clone(),
        name: f.name.clone(),
        size: f.size,
        hash,
        data_dir_index: f.data_dir_index,
        sstable,
    };
    send(
        events,
        UploadEvent::FileDone {
            entry,
            mtime_ns: f.mtime_ns,
            uploaded,
            hash_cached,
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_store::Recording;
    use ringvault_common::{Identifier, RelativeName};

    fn snapshot_file(path: &std::path::Path, name: &str) -> anyhow::Result<SnapshotFile> {
        let meta = std::fs::metadata(path)?;
        Ok(SnapshotFile {
            data_dir_index: 0,
            keyspace: Identifier::parse("keyspace", "ks")?,
            table: Identifier::parse("table", "t")?,
            table_id: "0123456789abcdef0123456789abcdef".into(),
            name: RelativeName::parse(name)?,
            path: path.to_path_buf(),
            size: meta.len(),
            mtime_ns: 0,
        })
    }

    async fn upload(
        store: &Arc<dyn Store>,
        state: &std::path::Path,
        files: Vec<SnapshotFile>,
    ) -> anyhow::Result<(u64, Vec<(ContentHash, bool)>)> {
        upload_holding(store, state, files, HELD_PAGES_MAX).await
    }

    /// [`upload`], with `held_pages_max` as given.
    async fn upload_holding(
        store: &Arc<dyn Store>,
        state: &std::path::Path,
        files: Vec<SnapshotFile>,
        held_pages_max: u64,
    ) -> anyhow::Result<(u64, Vec<(ContentHash, bool)>)> {
        let up = Arc::new(Uploader {
            run_id: RunId::new(),
            store: Arc::clone(store),
            cache: HashCache::open(state)?,
            concurrency: 4,
            throttle: crate::throttle::Throttle::new(0),
            gentle: true,
            store_key: crate::hash_cache::store_key("file:///test"),
            trust_seen: false,
            held_pages_max,
        });
        let (tx, mut rx) = mpsc::channel(64);
        let task = tokio::spawn(up.run(files, tx));
        let (mut progress, mut done) = (0, Vec::new());
        while let Some(e) = rx.recv().await {
            match e {
                UploadEvent::Progress { bytes } => progress += bytes,
                UploadEvent::FileDone {
                    entry, uploaded, ..
                } => done.push((entry.hash, uploaded)),
                UploadEvent::Plan { .. } => {}
            }
        }
        task.await??;
        Ok((progress, done))
    }

    /// What [`first_upload`] made: the file's bytes, the store and its recording, the blob.
    struct FirstUpload {
        data: Vec<u8>,
        recording: Arc<Recording>,
        store: Arc<dyn Store>,
        expected: ContentHash,
        blob: layout::ObjectKey,
    }

    /// Writes two and a half parts of non-repeating bytes to `dir/nb-1-big-Data.db`, uploads
    /// it to a file store under `dir` (opened as the worker opens it, wrapped in
    /// [`Recording`]) and checks what any store must show: the blob holds the bytes, every
    /// byte counted once, nothing left under `tmp/`.
    async fn first_upload(dir: &std::path::Path, free_rename: bool) -> anyhow::Result<FirstUpload> {
        let root = dir.join("store");
        std::fs::create_dir_all(&root)?;
        // With retries, as the worker opens it: the wrapper must say what it wraps.
        let inner = ringvault_common::store::open(&format!("file://{}", root.display())).await?;
        assert!(
            inner.renames_without_copy(),
            "a file store renames in place"
        );
        let data = distinct_bytes(inner.part_size() * 5 / 2, 0);
        let src = dir.join("nb-1-big-Data.db");
        std::fs::write(&src, &data)?;
        let recording = Arc::new(Recording::new(inner, free_rename, free_rename));
        let store: Arc<dyn Store> = recording.clone();
        let (progress, done) = upload(
            &store,
            &dir.join("state1"),
            vec![snapshot_file(&src, "nb-1-big-Data.db")?],
        )
        .await?;
        let expected = ContentHash::of(&data);
        let blob = layout::blob(&expected);
        assert_eq!(done, vec![(expected.clone(), true)]);
        assert_eq!(progress, data.len() as u64);
        let stored =
            ringvault_common::store::get_bytes(store.as_ref(), &blob, data.len() + 1).await?;
        assert!(stored == data, "the blob holds the file's bytes");
        assert!(
            store.list(layout::TMP_PREFIX).await?.is_empty(),
            "nothing is left under tmp/"
        );
        Ok(FirstUpload {
            data,
            recording,
            store,
            expected,
            blob,
        })
    }

    /// `len` bytes that do not repeat within a part, different for each `seed`.
    fn distinct_bytes(len: usize, seed: u64) -> Vec<u8> {
        (0..len)
            .map(|i| {
                (i as u64 ^ seed.rotate_left(40))
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    .rotate_left(17) as u8
            })
            .collect()
    }

    /// Uploads a copy of the first file under another name with an empty hash cache.
    async fn upload_copy(
        dir: &std::path::Path,
        store: &Arc<dyn Store>,
    ) -> anyhow::Result<(u64, Vec<(ContentHash, bool)>)> {
        let copy = dir.join("nb-2-big-Data.db");
        std::fs::copy(dir.join("nb-1-big-Data.db"), &copy)?;
        upload(
            store,
            &dir.join("state2"),
            vec![snapshot_file(&copy, "nb-2-big-Data.db")?],
        )
        .await
    }

    #[tokio::test]
    async fn on_a_local_store_a_large_file_is_staged_once_and_renamed_to_its_blob_key()
    -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let first = first_upload(dir.path(), true).await?;
        let calls = first.recording.calls();
        assert_eq!(calls.len(), 2, "{calls:?}");
        let staged = calls[0]
            .strip_prefix("multipart ")
            .filter(|k| k.starts_with(layout::TMP_PREFIX))
            .with_context(|| format!("first call {calls:?} is a staged upload"))?;
        assert_eq!(calls[1], format!("rename {staged} {}", first.blob));

        // The same bytes, unknown to the hash cache: staged, found, the staged copy deleted
        // and the blob not touched.
        let blob_path = dir.path().join("store").join(first.blob.as_str());
        let before = std::fs::metadata(&blob_path)?.modified()?;
        let (progress, done) = upload_copy(dir.path(), &first.store).await?;
        assert_eq!(done, vec![(first.expected, false)]);
        assert_eq!(progress, first.data.len() as u64, "each byte counted once");
        let calls = first.recording.calls();
        assert_eq!(calls.len(), 4, "{calls:?}");
        let staged = calls[2]
            .strip_prefix("multipart ")
            .with_context(|| format!("{calls:?}"))?;
        assert_eq!(calls[3], format!("delete {staged}"));
        assert!(first.store.list(layout::TMP_PREFIX).await?.is_empty());
        assert_eq!(
            std::fs::metadata(&blob_path)?.modified()?,
            before,
            "not rewritten"
        );
        Ok(())
    }

    #[tokio::test]
    async fn where_a_rename_copies_a_large_file_goes_straight_to_its_blob_key_and_a_known_one_sends_nothing()
    -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let first = first_upload(dir.path(), false).await?;
        assert_eq!(
            first.recording.calls(),
            vec![format!("multipart {}", first.blob)]
        );
        // The same bytes, unknown to the hash cache: hashed, found, not sent.
        let (_, done) = upload_copy(dir.path(), &first.store).await?;
        assert_eq!(done, vec![(first.expected, false)]);
        assert_eq!(first.recording.calls().len(), 1, "nothing more was sent");
        Ok(())
    }

    /// Where a large file is read twice (hash, then send), the send finds the whole file in
    /// the page cache (one read from disk, not two) and the upload leaves none of it cached;
    /// a file larger than what may be held is read gently twice. Both sends: in parts, and as
    /// one streamed put (whose chunks are mapped from the held pages).
    #[tokio::test]
    async fn a_file_read_twice_is_read_from_disk_once_and_left_out_of_the_page_cache()
    -> anyhow::Result<()> {
        for streamed in [false, true] {
            read_twice_from_disk_once(streamed)
                .await
                .with_context(|| format!("streamed put: {streamed}"))?;
        }
        Ok(())
    }

    async fn read_twice_from_disk_once(streamed: bool) -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let root = dir.path().join("store");
        std::fs::create_dir_all(&root)?;
        let inner = ringvault_common::store::open(&format!("file://{}", root.display())).await?;
        let part = inner.part_size();
        let mut recording = Recording::new(inner, false, false);
        if streamed {
            recording = recording.with_streamed_put();
        }
        let recording = Arc::new(recording);
        let store: Arc<dyn Store> = recording.clone();
        let mut expected_at_send = Vec::new();
        for (seed, held_max) in [(1u64, HELD_PAGES_MAX), (2, part as u64)] {
            let name = format!("nb-{seed}-big-Data.db");
            let path = dir.path().join(&name);
            let data = distinct_bytes(part * 5 / 2, seed);
            std::fs::write(&path, &data)?;
            let file = File::open(&path)?;
            file.sync_all()?;
            page_cache::advise_dontneed(&file, 0, data.len() as u64)?;
            let pages = page_cache::Residency::of(&file, 0, data.len() as u64);
            assert_eq!(pages.resident_pages(), 0, "the file starts cold");
            let all = data.len().div_ceil(page_cache::page_size() as usize);
            recording.watch_pages(&path);
            let (progress, done) = upload_holding(
                &store,
                &dir.path().join(format!("state{seed}")),
                vec![snapshot_file(&path, &name)?],
                held_max,
            )
            .await?;
            assert_eq!(done, vec![(ContentHash::of(&data), true)]);
            assert_eq!(progress, data.len() as u64);
            expected_at_send.push(if held_max == HELD_PAGES_MAX { all } else { 0 });
            assert_eq!(
                recording.resident_at_send(),
                expected_at_send,
                "pages cached when the send began (held up to {held_max} bytes)"
            );
            assert_eq!(
                page_cache::Residency::of(&file, 0, data.len() as u64).resident_pages(),
                0,
                "the upload left pages of {name} cached"
            );
            let stored = ringvault_common::store::get_bytes(
                store.as_ref(),
                &layout::blob(&ContentHash::of(&data)),
                data.len() + 1,
            )
            .await?;
            assert!(stored == data, "the blob holds the file's bytes");
        }
        let how = if streamed { "streamed" } else { "multipart" };
        let calls = recording.calls();
        assert!(
            calls.len() == 2 && calls.iter().all(|c| c.starts_with(how)),
            "{calls:?}"
        );
        Ok(())
    }

    #[test]
    fn a_part_check_refuses_other_bytes_and_hashes_what_it_saw() {
        let (a, b) = (
            b"the bytes hashed".as_slice(),
            b"the bytes changed".as_slice(),
        );
        let mut crc = Crc32c::default();
        crc.update(a);
        let mut same = PartCheck::crc(crc.finish());
        same.update(a);
        assert!(matches!(same.finish(), Ok(None)));
        let mut other = PartCheck::crc(crc.finish());
        other.update(b);
        assert!(
            other.finish().is_err(),
            "different bytes pass the CRC32C check"
        );
        let mut hash = PartCheck::hash();
        hash.update(&a[..5]);
        hash.update(&a[5..]);
        assert_eq!(hash.finish(), Ok(Some(ContentHash::of(a))));
    }
}
