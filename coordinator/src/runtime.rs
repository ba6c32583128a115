//! The coordinator's process set-up: its tokio runtime and the allocator, tuned so that memory
//! stays bounded at 1,000 workers (`scripts/bench-scale`).
//!
//! - **Blocking threads.** SQLite calls, file-store I/O and name lookups run on tokio's
//!   blocking pool, which grows to 512 threads by default. When 1,000 nodes' tasks touch the
//!   database at once (a run's stage changing on every node), each waits on a thread of its
//!   own for the one SQLite connection: 515 threads were counted at 1,000 workers. The pool is
//!   capped at [`BLOCKING_THREADS`]; more work queues, which costs nothing, since the
//!   connection serialises it anyway.
//! - **Malloc arenas.** glibc gives threads that meet contention their own arena, up to eight
//!   per core, and keeps most of what is freed in a non-main arena. With file events arriving
//!   at 20,000–50,000 per second, their short-lived rows and messages spread over every arena:
//!   at 1,000 workers × 1,000 files, `MALLOC_ARENA_MAX=2` lowered the peak from 573 to 462 MiB
//!   with no loss of speed. The coordinator limits itself to [`MALLOC_ARENAS`] unless the
//!   operator set `MALLOC_ARENA_MAX`.
//! - **Freed memory returned.** glibc gives memory back to the system only from the top of a
//!   heap; what a run freed in the middle stays counted in the coordinator's RSS, and the next
//!   operation's peak lands on top of it. [`return_freed_memory`] hands it back every
//!   [`TRIM_INTERVAL`] (`malloc_trim`, a few milliseconds with two arenas).

/// Most threads of tokio's blocking pool.
pub const BLOCKING_THREADS: usize = 64;

/// Malloc arenas (glibc) when `MALLOC_ARENA_MAX` is not set.
pub const MALLOC_ARENAS: i32 = 2;

/// How often memory freed inside malloc's heaps is returned to the system.
pub const TRIM_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Returns the memory malloc holds free to the system every [`TRIM_INTERVAL`], forever; spawn
/// it once. Does nothing where the allocator is not glibc's.
pub async fn return_freed_memory() {
    let mut tick = tokio::time::interval(TRIM_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only releases free pages of malloc's own heaps; it takes the
        // arena locks itself and is safe to call from any thread at any time.
        let _ = tokio::task::spawn_blocking(|| unsafe { libc::malloc_trim(0) }).await;
    }
}

/// The multi-threaded runtime the coordinator runs on, after limiting malloc's arenas.
pub fn build() -> std::io::Result<tokio::runtime::Runtime> {
    limit_malloc_arenas();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
}

fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; it is called before the runtime starts
    // any thread.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
    }
}
