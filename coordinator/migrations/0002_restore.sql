-- Restores are runs too; they name the backup they restore.
ALTER TABLE runs ADD COLUMN source_run_id TEXT NOT NULL DEFAULT '';
