//! Pause points for the end-to-end tests, each off unless its environment variable names a
//! file: the coordinator then creates `<file>.paused` when it reaches the point and waits while
//! `<file>` exists, so a test can act (kill a process, change the store) at a moment that is
//! otherwise too short to catch. Operators never set these.
use std::path::PathBuf;
use std::time::Duration;

/// The purge, between listing the blobs and sweeping them.
pub const PURGE_PAUSE_ENV: &str = "RINGVAULT_TEST_PURGE_PAUSE_FILE";
/// A test restore, once its data is loaded into the scratch keyspaces.
pub const RESTORE_TEST_PAUSE_ENV: &str = "RINGVAULT_TEST_RESTORE_TEST_PAUSE_FILE";
/// A backup, on entering its cleanup stage, before any snapshot is cleared.
pub const CLEANUP_PAUSE_ENV: &str = "RINGVAULT_TEST_CLEANUP_PAUSE_FILE";

/// The pause file `env` names, if set.
pub fn pause_file(env: &str) -> Option<PathBuf> {
    std::env::var_os(env).map(PathBuf::from)
}

/// Signals the pause (`<file>.paused`) and waits while `file` exists.
pub async fn pause_at(file: &std::path::Path, what: &str) {
    let mut flag = file.as_os_str().to_owned();
    flag.push(".paused");
    if let Err(e) = std::fs::write(&flag, b"paused") {
        tracing::warn!(error = %e, "test hook: cannot signal the pause");
    }
    tracing::warn!(file = %file.display(), "test hook: {what} paused");
    while file.exists() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// [`pause_at`] the file `env` names; nothing when it is not set.
pub async fn pause(env: &str, what: &str) {
    if let Some(file) = pause_file(env) {
        pause_at(&file, what).await;
    }
}
