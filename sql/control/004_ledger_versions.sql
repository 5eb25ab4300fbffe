-- The ledger records which transform made a file and whether a reprocess run staged it
-- (what shardline reprocess and status --versions read; see docs/iterating.md).
ALTER TABLE staged_files ADD COLUMN transform_version VARCHAR(64);
ALTER TABLE staged_files ADD COLUMN generation VARCHAR(64);      -- reprocess run, NULL: normal
ALTER TABLE staged_files ADD COLUMN arrival_min_ms BIGINT;       -- arrival range of its records
ALTER TABLE staged_files ADD COLUMN arrival_max_ms BIGINT;
