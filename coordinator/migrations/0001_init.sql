-- ringvault coordinator schema, version 1.
CREATE TABLE workers (
    host_id           TEXT PRIMARY KEY,
    cluster_name      TEXT NOT NULL,
    address           TEXT NOT NULL,
    worker_address    TEXT NOT NULL,
    datacenter        TEXT NOT NULL,
    rack              TEXT NOT NULL,
    tokens_json       TEXT NOT NULL,
    data_dirs_json    TEXT NOT NULL,
    cassandra_version TEXT NOT NULL,
    registered_ms     INTEGER NOT NULL,
    last_seen_ms      INTEGER NOT NULL
);

CREATE TABLE runs (
    id           TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,
    tag          TEXT NOT NULL,
    cluster_name TEXT NOT NULL,
    state        TEXT NOT NULL,
    stage        TEXT NOT NULL,
    keyspaces    TEXT NOT NULL,  -- JSON array
    tables       TEXT NOT NULL,  -- JSON array
    store_url    TEXT NOT NULL,
    created_ms   INTEGER NOT NULL,
    finished_ms  INTEGER NOT NULL DEFAULT 0,
    error        TEXT NOT NULL DEFAULT ''
);
CREATE INDEX runs_state ON runs(state);

CREATE TABLE run_nodes (
    run_id         TEXT NOT NULL REFERENCES runs(id),
    host_id        TEXT NOT NULL,
    address        TEXT NOT NULL,
    worker_address TEXT NOT NULL,
    state          TEXT NOT NULL,
    snapshot       TEXT NOT NULL DEFAULT 'none', -- none | taken | cleared
    files_total    INTEGER NOT NULL DEFAULT 0,
    files_done     INTEGER NOT NULL DEFAULT 0,
    bytes_total    INTEGER NOT NULL DEFAULT 0,
    bytes_done     INTEGER NOT NULL DEFAULT 0,
    files_uploaded INTEGER NOT NULL DEFAULT 0,
    bytes_uploaded INTEGER NOT NULL DEFAULT 0,
    error          TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (run_id, host_id)
);

CREATE TABLE run_files (
    run_id         TEXT NOT NULL,
    host_id        TEXT NOT NULL,
    keyspace       TEXT NOT NULL,
    table_name     TEXT NOT NULL,
    table_id       TEXT NOT NULL,
    name           TEXT NOT NULL,
    data_dir_index INTEGER NOT NULL,
    size           INTEGER NOT NULL,
    hash           TEXT NOT NULL,
    uploaded       INTEGER NOT NULL,
    PRIMARY KEY (run_id, host_id, data_dir_index, keyspace, table_id, name)
);

CREATE TABLE blobs (
    hash         TEXT PRIMARY KEY,
    size         INTEGER NOT NULL,
    first_run_id TEXT NOT NULL,
    seen_ms      INTEGER NOT NULL
);
