-- Per-run limits (JSON: upload_concurrency, upload_bandwidth, nodes_at_once), the schedule
-- that started a run, and how often a node's work was re-issued after its worker restarted.
ALTER TABLE runs ADD COLUMN limits_json TEXT NOT NULL DEFAULT '{}';
ALTER TABLE runs ADD COLUMN schedule_id TEXT NOT NULL DEFAULT '';
ALTER TABLE run_nodes ADD COLUMN retries INTEGER NOT NULL DEFAULT 0;

CREATE TABLE schedules (
    id            TEXT PRIMARY KEY,
    cron          TEXT NOT NULL,
    cluster_name  TEXT NOT NULL DEFAULT '',
    keyspaces     TEXT NOT NULL,  -- JSON array
    tables        TEXT NOT NULL,  -- JSON array
    keep_last     INTEGER NOT NULL DEFAULT 0,
    keep_days     INTEGER NOT NULL DEFAULT 0,
    limits_json   TEXT NOT NULL DEFAULT '{}',
    missed        TEXT NOT NULL DEFAULT 'run-once', -- run-once | skip
    paused        INTEGER NOT NULL DEFAULT 0,
    next_due_ms   INTEGER NOT NULL,
    created_ms    INTEGER NOT NULL
);

-- What the scheduler did at each due time: started a run, skipped, or caught up a miss.
CREATE TABLE schedule_events (
    schedule_id TEXT NOT NULL,
    due_ms      INTEGER NOT NULL,
    at_ms       INTEGER NOT NULL,
    outcome     TEXT NOT NULL, -- started | skipped | missed
    run_id      TEXT NOT NULL DEFAULT '',
    detail      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX schedule_events_by_schedule ON schedule_events(schedule_id, at_ms);
