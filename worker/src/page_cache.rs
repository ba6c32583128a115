//! Keeping a backup out of Cassandra's page cache. Reading every SSTable of a node would fill
//! the page cache with cold backup data and evict the pages Cassandra serves reads from. So each
//! range the worker reads is first checked with `mincore(2)`; after the read, the pages that
//! were not resident before are dropped again with `posix_fadvise(POSIX_FADV_DONTNEED)`. Pages
//! that were already cached (hot data, or a freshly flushed SSTable) stay cached. The worker's
//! page-cache footprint is thus bounded by the ranges being read at once.
//!
//! Files read gently are opened with readahead off ([`open`]): the kernel's readahead (up to
//! `read_ahead_kb`, 8 MiB on some hosts) fills pages beyond the range asynchronously, and pages
//! still under I/O when `DONTNEED` runs are skipped by it; the next range then finds them
//! resident and counts them as hot. Measured: a third of the cold data stayed cached that way.
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Opens a file to be read for a backup. When `gentle`, the kernel is told the access is random
/// (`POSIX_FADV_RANDOM`), so it reads exactly the ranges asked for and nothing ahead of them:
/// every page a read brings in is then one [`read_exact_at`] drops. (The reads are large, 1 to
/// 8 MiB, so they stay efficient without readahead.)
pub fn open(path: &Path, gentle: bool) -> io::Result<File> {
    let file = File::open(path)?;
    if gentle {
        // SAFETY: posix_fadvise only reads its integer arguments.
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
        if rc != 0 {
            tracing::debug!(error = %io::Error::from_raw_os_error(rc), "posix_fadvise(RANDOM) refused");
        }
    }
    Ok(file)
}

/// Page size the residency bitmaps count in.
pub(crate) fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 { n as u64 } else { 4096 }
}

/// Which pages of one range of a file were in the page cache before it was read.
#[derive(Debug)]
pub struct Residency {
    offset: u64,
    len: u64,
    page: u64,
    /// One byte per page, as `mincore` returns it (bit 0: resident).
    pages: Vec<u8>,
}

impl Residency {
    /// Looks at `[offset, offset + len)` of `file`; `offset` must be a multiple of the page
    /// size (part boundaries are). An empty range, or a file that cannot be mapped, yields a
    /// residency that counts every page as resident, so nothing is dropped by mistake.
    pub fn of(file: &File, offset: u64, len: u64) -> Self {
        let page = page_size();
        let mut r = Residency {
            offset,
            len,
            page,
            pages: Vec::new(),
        };
        if len == 0 || !offset.is_multiple_of(page) {
            return r;
        }
        let Ok(map_len) = usize::try_from(len) else {
            return r;
        };
        let Ok(map_off) = libc::off_t::try_from(offset) else {
            return r;
        };
        let n_pages = len.div_ceil(page) as usize;
        let mut vec = vec![0u8; n_pages];
        // SAFETY: a read-only shared mapping of a file we hold open, never dereferenced: only
        // passed to mincore and unmapped before returning.
        unsafe {
            let addr = libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                map_off,
            );
            if addr == libc::MAP_FAILED {
                return r;
            }
            let ok = libc::mincore(addr, map_len, vec.as_mut_ptr()) == 0;
            libc::munmap(addr, map_len);
            if ok {
                r.pages = vec;
            }
        }
        r
    }

    /// Pages of the range that were resident.
    pub fn resident_pages(&self) -> usize {
        if self.pages.is_empty() {
            return self.len.div_ceil(self.page) as usize;
        }
        self.pages.iter().filter(|b| *b & 1 == 1).count()
    }

    /// Drops from the page cache the pages of the range that were not resident when it was
    /// looked at; returns how many bytes were advised away.
    pub fn drop_new_pages(&self, file: &File) -> io::Result<u64> {
        let mut dropped = 0;
        let mut i = 0;
        while i < self.pages.len() {
            if self.pages[i] & 1 == 1 {
                i += 1;
                continue;
            }
            let start = i;
            while i < self.pages.len() && self.pages[i] & 1 == 0 {
                i += 1;
            }
            let from = self.offset + start as u64 * self.page;
            let to = (self.offset + i as u64 * self.page).min(self.offset + self.len);
            advise_dontneed(file, from, to - from)?;
            dropped += to - from;
        }
        Ok(dropped)
    }
}

/// Drops `[offset, offset + len)` of `file` from the page cache (advice).
pub(crate) fn advise_dontneed(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let off = libc::off_t::try_from(offset).map_err(io::Error::other)?;
    let len = libc::off_t::try_from(len).map_err(io::Error::other)?;
    // SAFETY: posix_fadvise only reads its integer arguments.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), off, len, libc::POSIX_FADV_DONTNEED) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// How far past a read the kernel's readahead may fill the cache should it not honour
/// [`open`]'s advice (its default window is 128 KiB; tuned devices go to a few MiB): looked at
/// and dropped with the read itself.
const READAHEAD_SLACK: u64 = 4 << 20;

/// Reads `buf.len()` bytes at `offset`, leaving the page cache as it found it (pages that
/// were resident stay; the ones this read and its readahead brought in are dropped) when
/// `gentle` is set.
pub fn read_exact_at(file: &File, buf: &mut [u8], offset: u64, gentle: bool) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    if !gentle {
        return file.read_exact_at(buf, offset);
    }
    let before = Residency::of(file, offset, buf.len() as u64 + READAHEAD_SLACK);
    file.read_exact_at(buf, offset)?;
    // Advice only: a refused fadvise leaves the pages to the kernel's own eviction.
    if let Err(e) = before.drop_new_pages(file) {
        tracing::debug!(error = %e, "posix_fadvise(DONTNEED) refused");
    }
    Ok(())
}

/// `[offset, offset + len)` of `file` mapped from the page cache, without a copy; the mapping
/// lives as long as the bytes. Meant for ranges known to be resident (a file's held pages,
/// [`crate::upload`]): on a file opened gently ([`open`]) a range that is not would be read in
/// a page at a time by the faults. `offset` must be a multiple of the page size.
///
/// Only for snapshot files: they are hard links Cassandra never writes again. A file truncated
/// under the mapping would fault (`SIGBUS`) when the bytes are read.
pub fn map(file: &File, offset: u64, len: usize) -> io::Result<bytes::Bytes> {
    if len == 0 {
        return Ok(bytes::Bytes::new());
    }
    // SAFETY: a read-only mapping of an immutable snapshot file (see above); the bytes are
    // read only through the returned `Bytes`, which owns the mapping.
    let map = unsafe {
        memmap2::MmapOptions::new()
            .offset(offset)
            .len(len)
            .populate()
            .map(file)?
    };
    Ok(bytes::Bytes::from_owner(map))
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;
    use std::io::Write;

    fn resident(file: &File, len: u64) -> usize {
        Residency::of(file, 0, len).resident_pages()
    }

    #[test]
    fn a_gentle_read_drops_only_the_pages_it_brought_in() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("Data.db");
        let len = 64 * page_size();
        let mut f = File::create(&path).expect("create");
        f.write_all(&vec![7u8; len as usize]).expect("write");
        f.sync_all().expect("sync");
        drop(f);
        let f = File::open(&path).expect("open");
        // Out of the cache entirely (the write left it resident).
        advise_dontneed(&f, 0, len).expect("fadvise");
        assert_eq!(
            resident(&f, len),
            0,
            "DONTNEED honoured (ext4, xfs; not tmpfs)"
        );
        // Make the first half hot, as Cassandra's reads would (without readahead, so that
        // exactly that half is cached).
        let hot = File::open(&path).expect("open");
        // SAFETY: posix_fadvise only reads its integer arguments.
        assert_eq!(
            unsafe { libc::posix_fadvise(hot.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) },
            0
        );
        let mut half = vec![0u8; (len / 2) as usize];
        read_exact_at(&hot, &mut half, 0, false).expect("hot read");
        assert_eq!(resident(&f, len), 32);
        // A gentle read of the whole file returns every byte and leaves exactly the hot half.
        let mut all = vec![0u8; len as usize];
        read_exact_at(&f, &mut all, 0, true).expect("gentle read");
        assert!(all.iter().all(|b| *b == 7));
        assert_eq!(resident(&f, len), 32, "only the hot half stays cached");
        assert_eq!(Residency::of(&f, 0, len / 2).resident_pages(), 32);
        // A plain read of the same leaves it all cached.
        read_exact_at(&f, &mut all, 0, false).expect("plain read");
        assert_eq!(resident(&f, len), 64);
    }

    /// What a backup writes to a store on the node's own machine (`file://`) is dropped from
    /// the page cache once synced: a whole object, and one uploaded in parts.
    #[tokio::test]
    async fn objects_written_to_a_local_store_leave_none_of_their_pages_cached()
    -> anyhow::Result<()> {
        use bytes::Bytes;
        use ringvault_common::layout::ObjectKey;
        let dir = tempfile::tempdir()?;
        let store = ringvault_common::store::open(&format!(
            "file://{}",
            dir.path().join("store").display()
        ))
        .await?;
        let part = store.part_size();
        let small = ObjectKey::from_listing("blobs/aa/small").context("key")?;
        store.put(&small, Bytes::from(vec![3u8; 4 << 20])).await?;
        let big = ObjectKey::from_listing("blobs/bb/big").context("key")?;
        let upload = store.start_multipart(&big).await?;
        upload.put_part(1, Bytes::from(vec![1u8; part])).await?;
        upload.put_part(2, Bytes::from(vec![2u8; part / 2])).await?;
        upload.complete().await?;
        for (key, len) in [(&small, 4u64 << 20), (&big, part as u64 * 3 / 2)] {
            let path = store.local_path(key).context("a local store")?;
            let f = File::open(&path)?;
            assert_eq!(f.metadata()?.len(), len);
            assert_eq!(resident(&f, len), 0, "{key}: written pages left cached");
        }
        Ok(())
    }

    #[test]
    fn gentle_sequential_chunks_of_a_large_file_leave_none_of_it_cached() {
        // Read as a streamed upload reads: 1 MiB after 1 MiB. Readahead would run ahead of each
        // chunk (8 MiB on this project's test machine) and outlive the chunk's DONTNEED.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("big-Data.db");
        let chunk = 1usize << 20;
        let len = 48 * chunk as u64;
        let mut f = File::create(&path).expect("create");
        for i in 0..48u8 {
            f.write_all(&vec![i; chunk]).expect("write");
        }
        f.sync_all().expect("sync");
        drop(f);
        let f = open(&path, true).expect("open");
        advise_dontneed(&f, 0, len).expect("fadvise");
        assert_eq!(resident(&f, len), 0, "DONTNEED honoured");
        let mut buf = vec![0u8; chunk];
        for i in 0..48u64 {
            read_exact_at(&f, &mut buf, i * chunk as u64, true).expect("gentle read");
            assert!(buf.iter().all(|b| *b == i as u8));
        }
        assert_eq!(resident(&f, len), 0, "pages left cached after gentle reads");
    }

    #[test]
    fn an_unaligned_or_empty_range_counts_as_resident_so_nothing_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x");
        std::fs::write(&path, b"abc").expect("write");
        let f = File::open(&path).expect("open");
        let r = Residency::of(&f, 1, 2);
        assert_eq!(r.drop_new_pages(&f).expect("drop"), 0);
        assert_eq!(Residency::of(&f, 0, 0).drop_new_pages(&f).expect("drop"), 0);
    }
}
