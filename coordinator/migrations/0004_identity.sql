-- The ringvault identity (certificate URI) a worker's host id is bound to at its first
-- registration; NULL for workers registered over --insecure-loopback.
ALTER TABLE workers ADD COLUMN identity TEXT;
