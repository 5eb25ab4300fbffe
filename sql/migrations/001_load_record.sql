-- The warehouse holds the target tables and the loader's insert-only record of what it
-- loaded; nothing else. Leases, checkpoints, shard status and the staged-file ledger are
-- in the control store (sql/control, or DynamoDB): see docs/operations.md.
--
-- Dialect parts: /*postgres:...*/ (PostgreSQL, plain and redshift-like), /*postgres-plain:*/
-- (plain PostgreSQL only), /*redshift-like:*/ (the local Redshift stand-in), /*redshift:*/.
-- Timestamps are UTC written by the loader (never DEFAULT SYSDATE: session time zone).

-- One row per load, committed with its rows.
CREATE TABLE loads (
    load_id         VARCHAR(64)   NOT NULL,
    target_table    VARCHAR(128)  NOT NULL,
    manifest_key    VARCHAR(1024) NOT NULL,
    file_count      INTEGER       NOT NULL,
    byte_count      BIGINT        NOT NULL,
    rows_copied     BIGINT        NOT NULL,  -- rows in the staged files
    rows_inserted   BIGINT        NOT NULL,  -- new rows after the dedup merge
    lease_token     BIGINT        NOT NULL,  -- the loader lease it ran under
    started_at      TIMESTAMP     NOT NULL,
    finished_at     TIMESTAMP     NOT NULL
) /*redshift: DISTSTYLE EVEN SORTKEY (finished_at)*/;

/*postgres: CREATE INDEX loads_finished ON loads (finished_at)*/;

-- One row per file loaded (Snowplow-manifest style), committed with the rows: the control
-- store's ledger is reconciled from it, so a loader killed between the warehouse commit and
-- the ledger update neither loads a file twice nor loses one. Insert-only; grows with the
-- number of files (one per batch), read only by range on loaded_at.
CREATE TABLE loaded_files (
    s3_key               VARCHAR(1024) NOT NULL,
    target_table         VARCHAR(128)  NOT NULL,
    load_id              VARCHAR(64)   NOT NULL,
    stream               VARCHAR(128)  NOT NULL,
    shard_id             VARCHAR(128)  NOT NULL,
    first_sequence       VARCHAR(128)  NOT NULL,
    first_sub_sequence   BIGINT        NOT NULL,
    last_sequence        VARCHAR(128)  NOT NULL,
    last_sub_sequence    BIGINT        NOT NULL,
    row_count            INTEGER       NOT NULL,
    byte_count           BIGINT        NOT NULL,
    staged_at            TIMESTAMP     NOT NULL,
    loaded_at            TIMESTAMP     NOT NULL
) /*redshift: DISTSTYLE EVEN SORTKEY (loaded_at)*/;

/*postgres-plain: CREATE INDEX loaded_files_key ON loaded_files (s3_key)*/;
/*redshift-like: CREATE INDEX loaded_files_loaded_at ON loaded_files USING brin (loaded_at)*/;

-- The fence: one row per target table, updated by every load with its loader lease token
-- (only a token >= the row's lands). Concurrent loaders conflict on this row, not on a lock
-- of the target table.
CREATE TABLE load_fence (
    target_table    VARCHAR(128)  NOT NULL,
    lease_token     BIGINT        NOT NULL,
    load_id         VARCHAR(64)   NOT NULL,
    updated_at      TIMESTAMP     NOT NULL,
    PRIMARY KEY (target_table)  -- enforced on PostgreSQL; informational on Redshift
) /*redshift: DISTSTYLE ALL*/;
