-- Bounded state: per-file rows of finished runs are rolled up to per-table totals after a
-- while, old runs and schedule events are pruned, and the metrics page reads counters kept
-- up to date when runs finish (never a scan of every file row).

-- Per-table totals of a run whose file rows were rolled up.
CREATE TABLE run_table_totals (
    run_id     TEXT NOT NULL,
    keyspace   TEXT NOT NULL,
    table_name TEXT NOT NULL,
    files      INTEGER NOT NULL,
    bytes      INTEGER NOT NULL,
    PRIMARY KEY (run_id, keyspace, table_name)
);
-- 1 once the run's file rows are replaced by run_table_totals.
ALTER TABLE runs ADD COLUMN files_rolled_up INTEGER NOT NULL DEFAULT 0;
-- 1 once the run's files are added to backup_file_counters (when it finished).
ALTER TABLE runs ADD COLUMN files_counted INTEGER NOT NULL DEFAULT 0;
CREATE INDEX runs_finished ON runs(finished_ms);

-- Uploaded and skipped files and bytes of every finished backup run, per cluster.
CREATE TABLE backup_file_counters (
    cluster_name   TEXT PRIMARY KEY,
    files_uploaded INTEGER NOT NULL DEFAULT 0,
    bytes_uploaded INTEGER NOT NULL DEFAULT 0,
    files_skipped  INTEGER NOT NULL DEFAULT 0,
    bytes_skipped  INTEGER NOT NULL DEFAULT 0
);
-- Runs removed by pruning, by kind and state: the run counts of the metrics page add them so
-- counters never go down.
CREATE TABLE pruned_run_counts (
    kind  TEXT NOT NULL,
    state TEXT NOT NULL,
    runs  INTEGER NOT NULL,
    PRIMARY KEY (kind, state)
);

-- Runs finished before this migration: counted once, here.
INSERT INTO backup_file_counters (cluster_name, files_uploaded, bytes_uploaded, files_skipped, bytes_skipped)
SELECT r.cluster_name,
       COALESCE(SUM(CASE WHEN f.uploaded != 0 THEN 1 ELSE 0 END), 0),
       COALESCE(SUM(CASE WHEN f.uploaded != 0 THEN f.size ELSE 0 END), 0),
       COALESCE(SUM(CASE WHEN f.uploaded != 0 THEN 0 ELSE 1 END), 0),
       COALESCE(SUM(CASE WHEN f.uploaded != 0 THEN 0 ELSE f.size END), 0)
FROM run_files f JOIN runs r ON r.id = f.run_id
WHERE r.kind = 'backup' AND r.state != 'RUNNING'
GROUP BY r.cluster_name;
UPDATE runs SET files_counted = 1 WHERE kind = 'backup' AND state != 'RUNNING';
CREATE INDEX schedule_events_at ON schedule_events(at_ms);
CREATE INDEX blobs_seen ON blobs(seen_ms);
