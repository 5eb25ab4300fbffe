-- Which transform made each row (status --versions, docs/iterating.md). The loader writes
-- the version the stage worker recorded for the file (staged_files.transform_version) into
-- every row it inserts, and into the load record, where `shardline status` reads the
-- versions per table without scanning the table. NULL: loaded before versions were kept.
--
-- Added columns go at the end of the table (ADD COLUMN), nullable: the rows already there
-- have none. Redshift adds one column per ALTER TABLE; ZSTD suits a low-cardinality text.

ALTER TABLE page_views ADD COLUMN transform_version VARCHAR(64) /*redshift: ENCODE ZSTD*/;

-- The load record: per file, the version of its rows and the reprocess run that staged
-- it (NULL: a normal batch).
ALTER TABLE loaded_files ADD COLUMN transform_version VARCHAR(64) /*redshift: ENCODE ZSTD*/;
ALTER TABLE loaded_files ADD COLUMN generation VARCHAR(64) /*redshift: ENCODE ZSTD*/;
