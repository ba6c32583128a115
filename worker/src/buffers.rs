//! Read buffers reused from one read to the next. A fresh 1 to 8 MiB buffer per read costs
//! more than it looks: the allocator maps new pages for it, and the kernel faults in and zeroes
//! every page while `pread` fills it. Profiled during an S3 backup (`scripts/bench-backup
//! --perf`), that was a fifth of the worker's CPU (`clear_page_erms` under `pread`). A
//! [`BufferPool`] hands out buffers that go back to it when dropped, including after the store
//! client has sent them ([`Buffer::into_bytes`]); it keeps at most `max_free` idle buffers, so
//! the worker's memory stays bounded by the reads and parts in flight plus that many.
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;

/// Reusable read buffers of one upload.
#[derive(Clone)]
pub struct BufferPool {
    inner: Arc<Inner>,
}

struct Inner {
    /// Idle buffers, each fully initialised (`len() == capacity()`).
    free: Mutex<Vec<Vec<u8>>>,
    max_free: usize,
}

impl BufferPool {
    /// A pool that keeps up to `max_free` idle buffers.
    pub fn new(max_free: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                free: Mutex::new(Vec::new()),
                max_free,
            }),
        }
    }

    /// A buffer of `len` bytes: an idle one at least that large if there is one, else a new
    /// one. Its contents are whatever the last user left; callers overwrite all of it.
    pub fn take(&self, len: usize) -> Buffer {
        let reused = {
            let mut free = self
                .inner
                .free
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            // The smallest idle buffer that fits: large ones stay for large reads.
            let best = free
                .iter()
                .enumerate()
                .filter(|(_, b)| b.len() >= len)
                .min_by_key(|(_, b)| b.len())
                .map(|(i, _)| i);
            best.map(|i| free.swap_remove(i))
        };
        Buffer {
            data: reused.unwrap_or_else(|| vec![0u8; len]),
            len,
            pool: Arc::clone(&self.inner),
        }
    }

    /// The sizes of the idle buffers, smallest first.
    #[cfg(test)]
    fn idle_sizes(&self) -> Vec<usize> {
        let free = self
            .inner
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut sizes: Vec<usize> = free.iter().map(Vec::len).collect();
        sizes.sort_unstable();
        sizes
    }

    /// Idle buffers held now.
    #[cfg(test)]
    fn idle(&self) -> usize {
        self.inner
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// A buffer of a [`BufferPool`]: derefs to its `len` bytes and goes back to the pool on drop.
pub struct Buffer {
    data: Vec<u8>,
    len: usize,
    pool: Arc<Inner>,
}

impl Buffer {
    /// The buffer as `Bytes` for a store client; it returns to the pool once every clone of
    /// those bytes is dropped (the request sent, or its retries given up).
    pub fn into_bytes(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl std::ops::Deref for Buffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.data[..self.len]
    }
}

impl std::ops::DerefMut for Buffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.data[..self.len]
    }
}

impl AsRef<[u8]> for Buffer {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl Drop for Buffer {
    /// Back to the pool; when it is full, in place of its smallest idle buffer if that one is
    /// smaller (a burst of small files must not leave only small buffers for the large reads).
    fn drop(&mut self) {
        let data = std::mem::take(&mut self.data);
        let mut free = self
            .pool
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if free.len() < self.pool.max_free {
            free.push(data);
        } else if let Some(smallest) = free.iter_mut().min_by_key(|b| b.len())
            && smallest.len() < data.len()
        {
            *smallest = data;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_buffer_is_reused_without_a_new_allocation() {
        let pool = BufferPool::new(2);
        let mut a = pool.take(1024);
        a.fill(7);
        let first = a.as_ptr();
        drop(a);
        assert_eq!(pool.idle(), 1);
        // A smaller request gets the same memory, cut to its length.
        let b = pool.take(100);
        assert_eq!(b.as_ptr(), first);
        assert_eq!(b.len(), 100);
        assert_eq!(pool.idle(), 0);
        // A larger one than any idle buffer gets a new one.
        drop(b);
        let c = pool.take(4096);
        assert_ne!(c.as_ptr(), first);
        assert_eq!(c.len(), 4096);
        assert_eq!(pool.idle(), 1);
    }

    #[test]
    fn bytes_return_their_buffer_when_the_last_clone_drops() {
        let pool = BufferPool::new(4);
        let mut a = pool.take(8);
        a.copy_from_slice(b"ringvaul");
        let bytes = a.into_bytes();
        let clone = bytes.clone();
        assert_eq!(&bytes[..], b"ringvaul");
        drop(bytes);
        assert_eq!(pool.idle(), 0, "a clone still holds the buffer");
        drop(clone);
        assert_eq!(pool.idle(), 1);
    }

    #[test]
    fn keeps_at_most_max_free_idle_buffers() {
        let pool = BufferPool::new(2);
        let held: Vec<Buffer> = (0..5).map(|_| pool.take(16)).collect();
        drop(held);
        assert_eq!(pool.idle(), 2);
    }

    #[test]
    fn a_full_pool_keeps_the_larger_buffers() {
        let pool = BufferPool::new(2);
        let small: Vec<Buffer> = (0..2).map(|_| pool.take(16)).collect();
        let large = pool.take(1 << 20);
        drop(small);
        drop(large);
        // The large read after a burst of small ones finds the large buffer idle.
        assert_eq!(pool.idle_sizes(), [16, 1 << 20]);
    }
}
