-- Test restores (`verify --restore-test`): one row per test, written when it starts and
-- updated as it goes, so a coordinator restarted mid-test drops the scratch keyspaces and
-- records the test as failed with the reason.
CREATE TABLE restore_tests (
    id                TEXT PRIMARY KEY,  -- the test restore's run id
    backup_run_id     TEXT NOT NULL,
    cluster_name      TEXT NOT NULL,
    schedule_id       TEXT NOT NULL DEFAULT '',
    state             TEXT NOT NULL,     -- RUNNING, PASSED, FAILED
    stage             TEXT NOT NULL,
    scratch_keyspaces TEXT NOT NULL,     -- JSON array of keyspace names
    scratch_dropped   INTEGER NOT NULL DEFAULT 0,
    started_ms        INTEGER NOT NULL,
    finished_ms       INTEGER NOT NULL DEFAULT 0,
    error             TEXT NOT NULL DEFAULT '',
    report            TEXT NOT NULL DEFAULT '[]'  -- JSON: the per-table report
);
CREATE INDEX restore_tests_backup ON restore_tests(backup_run_id, started_ms);
CREATE INDEX restore_tests_schedule ON restore_tests(schedule_id, started_ms);
CREATE INDEX restore_tests_finished ON restore_tests(finished_ms);

-- Schedules that run a test restore after each successful backup.
CREATE TABLE schedule_restore_tests (
    schedule_id TEXT PRIMARY KEY
);
