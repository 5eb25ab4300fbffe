-- Upgrade of a warehouse created by the release before the control store (sql/migrations
-- 001_control_tables, 002_staging_ledger, 003_page_views): run by shardline/upgrade.py in
-- ONE warehouse transaction, after the control state was read and carried into the
-- control store. Afterwards the schema is what a fresh `shardline migrate` creates.
-- Dialect parts as in sql/migrations (see shardline/migrate.py).

-- The old loads table has no lease_token and DISTSTYLE ALL: rebuilt, rows kept.
ALTER TABLE loads RENAME TO loads_legacy;

-- @load_record (sql/migrations/001_load_record.sql is applied here, unchanged)

INSERT INTO loads (load_id, target_table, manifest_key, file_count, byte_count, rows_copied,
                   rows_inserted, lease_token, started_at, finished_at)
SELECT load_id, target_table, manifest_key, file_count, byte_count, rows_copied,
       rows_inserted, 0, started_at, finished_at
FROM loads_legacy;

DROP TABLE loads_legacy;

-- The load record of every file the old loader loaded, so the loader's guard and its
-- reconcile know them too (a stage job retried after the upgrade, or a replay, can never
-- load one of them again).
INSERT INTO loaded_files (s3_key, target_table, load_id, stream, shard_id, first_sequence,
                          first_sub_sequence, last_sequence, last_sub_sequence, row_count,
                          byte_count, staged_at, loaded_at)
SELECT s3_key, target_table, load_id, stream, shard_id, first_sequence, first_sub_sequence,
       last_sequence, last_sub_sequence, row_count, byte_count, staged_at,
       COALESCE(loaded_at, staged_at)
FROM staged_files
WHERE state = 'loaded' AND load_id IS NOT NULL AND row_count > 0;

-- The control tables leave the warehouse (their rows are in the control store now).
DROP TABLE shard_watermarks;
DROP TABLE shard_status;
DROP TABLE checkpoints;
DROP TABLE checkpoint_history;
DROP TABLE shard_leases;
DROP TABLE staged_files;

-- page_views keeps its rows. The old release made it the plain-PostgreSQL way; the
-- redshift-like mode has no index on the dedup key and a BRIN index on the sort key.
/*redshift-like: ALTER TABLE page_views DROP CONSTRAINT page_views_pkey*/;
/*redshift-like: DROP INDEX page_views_position*/;
/*redshift-like: CREATE INDEX page_views_occurred_at ON page_views USING brin (occurred_at)*/;
