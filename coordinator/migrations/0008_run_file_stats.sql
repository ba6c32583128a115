-- A Statistics.db file's SSTable numbers, kept with its file row during a backup so the
-- commit writes each node manifest from the database (one node at a time) instead of holding
-- every file of the run in memory. JSON of common's SstableStats; NULL for other files.
ALTER TABLE run_files ADD COLUMN sstable_json TEXT;
