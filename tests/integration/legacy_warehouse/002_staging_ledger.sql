-- The staged-file ledger and the load history.
--
-- A stage worker writes one gzip'd CSV object per batch under a deterministic
-- key and records it here as 'pending' before its job reports success (a retry
-- finds the row and leaves it). The loader takes pending rows, COPYs them through
-- a manifest into a staging table, merges, and flips them to 'loaded' in the
-- same transaction: a crash leaves all of a load or none of it.

CREATE TABLE staged_files (
    s3_key               VARCHAR(1024) NOT NULL,
    target_table         VARCHAR(128)  NOT NULL,
    stream               VARCHAR(128)  NOT NULL,
    shard_id             VARCHAR(128)  NOT NULL,
    first_sequence       VARCHAR(128)  NOT NULL,
    first_sub_sequence   BIGINT        NOT NULL,
    last_sequence        VARCHAR(128)  NOT NULL,
    last_sub_sequence    BIGINT        NOT NULL,
    row_count            INTEGER       NOT NULL,
    byte_count           BIGINT        NOT NULL,  -- compressed object size
    dead_letter_key      VARCHAR(1024),            -- NULL when the batch had no bad record
    dead_letter_count    INTEGER       NOT NULL,
    state                VARCHAR(16)   NOT NULL,   -- pending | loaded
    staged_at            TIMESTAMP     NOT NULL,
    loaded_at            TIMESTAMP,
    load_id              VARCHAR(64),
    PRIMARY KEY (s3_key)
) /*redshift: DISTSTYLE ALL SORTKEY (state, target_table, staged_at)*/;

/*postgres: CREATE INDEX staged_files_pending ON staged_files (target_table, state, staged_at)*/;

CREATE TABLE loads (
    load_id         VARCHAR(64)   NOT NULL,
    target_table    VARCHAR(128)  NOT NULL,
    manifest_key    VARCHAR(1024) NOT NULL,
    file_count      INTEGER       NOT NULL,
    byte_count      BIGINT        NOT NULL,
    rows_copied     BIGINT        NOT NULL,  -- rows in the staged files
    rows_inserted   BIGINT        NOT NULL,  -- new rows after the dedup merge
    started_at      TIMESTAMP     NOT NULL,
    finished_at     TIMESTAMP     NOT NULL,
    PRIMARY KEY (load_id)
) /*redshift: DISTSTYLE ALL SORTKEY (finished_at)*/;

-- What is queryable: per shard, every staged batch up to this position is loaded.
-- Sits next to checkpoints (what is staged) so `shardline status` shows both.
CREATE TABLE shard_watermarks (
    stream               VARCHAR(128) NOT NULL,
    shard_id             VARCHAR(128) NOT NULL,
    target_table         VARCHAR(128) NOT NULL,
    loaded_sequence      VARCHAR(128) NOT NULL,
    loaded_sub_sequence  BIGINT       NOT NULL,
    load_id              VARCHAR(64)  NOT NULL,
    updated_at           TIMESTAMP    NOT NULL,
    PRIMARY KEY (stream, shard_id, target_table)
) /*redshift: DISTSTYLE ALL*/;
