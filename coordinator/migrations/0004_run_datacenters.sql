-- The datacenters a backup was limited to with --dc (none recorded: the whole ring).
CREATE TABLE run_datacenters (
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    datacenter TEXT NOT NULL,
    PRIMARY KEY (run_id, datacenter)
);
