-- Per-table totals are recorded when a run ends (in run_table_totals), so showing a finished
-- run reads a handful of rows instead of aggregating every file row of it.
-- 1 once run_table_totals holds the run's totals (its file rows may still be there).
ALTER TABLE runs ADD COLUMN totals_recorded INTEGER NOT NULL DEFAULT 0;
