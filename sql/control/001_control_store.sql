-- The control store on PostgreSQL (RDS/Aurora in production, a database of its own on
-- the local cluster): not the warehouse, so real PostgreSQL features are fine here.
-- Written through shardline.controlstore.postgres; applied by `shardline migrate --control`.
-- Timestamps are UTC written by the application (TIMESTAMP without zone).

CREATE TABLE shard_leases (
    stream        VARCHAR(128) NOT NULL,
    shard_id      VARCHAR(128) NOT NULL,
    owner         VARCHAR(256),            -- NULL when released (or never taken)
    token         BIGINT       NOT NULL,   -- fencing token: +1 at every acquisition
    acquired_at   TIMESTAMP,
    renewed_at    TIMESTAMP,
    expires_at    TIMESTAMP,
    PRIMARY KEY (stream, shard_id)
);

CREATE TABLE checkpoint_history (
    id                  BIGSERIAL    PRIMARY KEY,
    stream              VARCHAR(128) NOT NULL,
    shard_id            VARCHAR(128) NOT NULL,
    sequence_number     VARCHAR(128) NOT NULL,
    sub_sequence_number BIGINT       NOT NULL,
    closes_sequence     BOOLEAN      NOT NULL,
    source              VARCHAR(16)  NOT NULL,  -- consumer | shard_end | replay
    reason              VARCHAR(1024),
    lease_token         BIGINT,
    created_at          TIMESTAMP    NOT NULL
);

CREATE INDEX checkpoint_history_stream ON checkpoint_history (stream, id);
CREATE INDEX checkpoint_history_shard ON checkpoint_history (stream, shard_id, id);

-- history_id: a write only lands with a larger id than the row holds, so per shard the
-- history order is enforced here, not assumed from the sequence.
CREATE TABLE checkpoints (
    stream              VARCHAR(128) NOT NULL,
    shard_id            VARCHAR(128) NOT NULL,
    sequence_number     VARCHAR(128) NOT NULL,
    sub_sequence_number BIGINT       NOT NULL,
    closes_sequence     BOOLEAN      NOT NULL,
    lease_token         BIGINT       NOT NULL,
    history_id          BIGINT       NOT NULL REFERENCES checkpoint_history (id),
    updated_at          TIMESTAMP    NOT NULL,
    PRIMARY KEY (stream, shard_id)
);

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
    state                 VARCHAR(32),
    updated_at            TIMESTAMP NOT NULL,
    PRIMARY KEY (stream, shard_id)
);

-- The staged-file ledger (the columns of shardline.records.ledger) plus quarantine.
CREATE TABLE staged_files (
    s3_key               VARCHAR(1024) PRIMARY KEY,
    target_table         VARCHAR(128)  NOT NULL,
    stream               VARCHAR(128)  NOT NULL,
    shard_id             VARCHAR(128)  NOT NULL,
    first_sequence       VARCHAR(128)  NOT NULL,
    first_sub_sequence   BIGINT        NOT NULL,
    last_sequence        VARCHAR(128)  NOT NULL,
    last_sub_sequence    BIGINT        NOT NULL,
    row_count            INTEGER       NOT NULL,
    byte_count           BIGINT        NOT NULL,
    dead_letter_key      VARCHAR(1024),
    dead_letter_count    INTEGER       NOT NULL,
    state                VARCHAR(16)   NOT NULL,   -- pending | loaded | quarantined
    staged_at            TIMESTAMP     NOT NULL,
    loaded_at            TIMESTAMP,
    load_id              VARCHAR(64),
    error                TEXT,                     -- why it was quarantined
    quarantined_at       TIMESTAMP
);

CREATE INDEX staged_files_by_state ON staged_files (target_table, state, staged_at, s3_key);

-- The fleet agents: host heartbeats and which host runs which shard.
CREATE TABLE hosts (
    host_id     VARCHAR(256) PRIMARY KEY,
    info        JSONB        NOT NULL DEFAULT '{}',
    renewed_at  TIMESTAMP    NOT NULL,
    expires_at  TIMESTAMP    NOT NULL
);

CREATE TABLE shard_assignments (
    stream      VARCHAR(128) NOT NULL,
    shard_id    VARCHAR(128) NOT NULL,
    host_id     VARCHAR(256) NOT NULL,
    updated_at  TIMESTAMP    NOT NULL,
    PRIMARY KEY (stream, shard_id)
);
