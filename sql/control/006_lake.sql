-- The lake (docs/lake.md): each staged file's state in the Iceberg table, independent of the
-- warehouse's (shardline.records.ledger StagedFile lake_*). lake_state is 'pending' only for
-- files of the tables in lake.tables; NULL for every other file, so nothing piles up.
ALTER TABLE staged_files ADD COLUMN lake_state VARCHAR(16);
ALTER TABLE staged_files ADD COLUMN lake_load_id VARCHAR(64);
ALTER TABLE staged_files ADD COLUMN lake_loaded_at TIMESTAMP;
-- The lake loader's pending query: small, since loaded files leave it.
CREATE INDEX staged_files_lake_pending ON staged_files (target_table, staged_at, s3_key)
    WHERE lake_state = 'pending';
