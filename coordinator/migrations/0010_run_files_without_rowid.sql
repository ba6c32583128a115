-- File rows keyed by their primary key alone (WITHOUT ROWID): one B-tree instead of a table
-- plus an index that repeats the key, so each file event writes about half the pages, and
-- the write rate holds up as finished runs' rows accumulate before their roll-up. The copy
-- goes in key order (appends to the new B-tree, pages filled); it holds both tables at once
-- for a moment, and the old one's pages go back through the incremental vacuum.
CREATE TABLE run_files_by_key (
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
    sstable_json   TEXT,
    PRIMARY KEY (run_id, host_id, data_dir_index, keyspace, table_id, name)
) WITHOUT ROWID;
INSERT INTO run_files_by_key
SELECT run_id, host_id, keyspace, table_name, table_id, name, data_dir_index, size, hash, uploaded, sstable_json
FROM run_files
ORDER BY run_id, host_id, data_dir_index, keyspace, table_id, name;
DROP TABLE run_files;
ALTER TABLE run_files_by_key RENAME TO run_files;
