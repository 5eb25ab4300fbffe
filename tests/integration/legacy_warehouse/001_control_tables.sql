-- Control tables: shard leases, checkpoints (with history), consumer status.
-- They live in the warehouse so that a load can mark its staged files loaded
-- in the same transaction as the merge (see 002). Writes are small and rare
-- (a checkpoint every few seconds per shard), which Redshift handles.
--
-- Portable SQL: /*postgres:...*/ and /*redshift:...*/ hold the dialect-only parts;
-- `shardline migrate` keeps the one for the target dialect and drops the other.
-- Timestamps are UTC, written by the application (TIMESTAMP without zone).
-- Sequence numbers are decimal strings of up to 128 digits: VARCHAR, and
-- compared by (length, text) since they exceed NUMERIC(38).

CREATE TABLE shard_leases (
    stream        VARCHAR(128) NOT NULL,
    shard_id      VARCHAR(128) NOT NULL,
    owner         VARCHAR(256),            -- host:pid:uuid of the live consumer, NULL when released
    token         BIGINT       NOT NULL,   -- fencing token: +1 at every acquisition
    acquired_at   TIMESTAMP,
    renewed_at    TIMESTAMP,
    expires_at    TIMESTAMP,
    PRIMARY KEY (stream, shard_id)
) /*redshift: DISTSTYLE ALL*/;

CREATE TABLE checkpoints (
    stream              VARCHAR(128) NOT NULL,
    shard_id            VARCHAR(128) NOT NULL,
    sequence_number     VARCHAR(128) NOT NULL,  -- or 'SHARD_END' once a closed shard is drained
    sub_sequence_number BIGINT       NOT NULL,
    closes_sequence     BOOLEAN      NOT NULL,  -- true: resume AFTER it; false: AT it, skipping sub-records <= sub
    lease_token         BIGINT       NOT NULL,
    history_id          BIGINT,
    updated_at          TIMESTAMP    NOT NULL,
    PRIMARY KEY (stream, shard_id)
) /*redshift: DISTSTYLE ALL*/;

-- Every checkpoint move, for replay: what, who, why.
CREATE TABLE checkpoint_history (
    id                  /*postgres:BIGSERIAL*//*redshift:BIGINT IDENTITY(1,1)*/ NOT NULL,
    stream              VARCHAR(128) NOT NULL,
    shard_id            VARCHAR(128) NOT NULL,
    sequence_number     VARCHAR(128) NOT NULL,
    sub_sequence_number BIGINT       NOT NULL,
    closes_sequence     BOOLEAN      NOT NULL,
    source              VARCHAR(16)  NOT NULL,  -- consumer | shard_end | replay
    reason              VARCHAR(1024),
    lease_token         BIGINT,
    created_at          TIMESTAMP    NOT NULL,
    PRIMARY KEY (id)
) /*redshift: DISTSTYLE ALL SORTKEY (stream, shard_id, created_at)*/;

/*postgres: CREATE INDEX checkpoint_history_shard ON checkpoint_history (stream, shard_id, id)*/;

-- What each consumer reports every few seconds, for `shardline status`.
CREATE TABLE shard_status (
    stream                VARCHAR(128) NOT NULL,
    shard_id              VARCHAR(128) NOT NULL,
    owner                 VARCHAR(256),
    last_read_sequence    VARCHAR(128),
    checkpoint_sequence   VARCHAR(128),
    millis_behind_latest  BIGINT,
    iterator_age_ms       BIGINT,
    inflight_batches      INTEGER,
    inflight_bytes        BIGINT,
    records_per_s         DOUBLE PRECISION,
    state                 VARCHAR(32),           -- reading | waiting_parents | backpressure | stopping | shard_end
    updated_at            TIMESTAMP NOT NULL,
    PRIMARY KEY (stream, shard_id)
) /*redshift: DISTSTYLE ALL*/;
