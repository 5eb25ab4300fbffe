-- The target table: one row per valid page-view event, exactly once.
--
-- Dedup key: event_id. Producers retry PutRecords, and Kinesis then holds the
-- same event under two sequence numbers; the loader's merge keeps the first
-- (lowest shard, sequence, sub-sequence) and skips any event_id already here.
--
-- Redshift layout:
--   DISTKEY (event_id): the merge joins staging to target on event_id, so both
--     sides are co-located (staging tables are created with the same DISTKEY)
--     and the join needs no redistribution; uuids also spread rows evenly.
--   SORTKEY (occurred_at): page-view queries filter on time ranges, and events
--     arrive roughly in time order, so new blocks append in order and zone maps
--     prune well without a VACUUM SORT after every load.
-- VARCHAR lengths are in bytes on Redshift (characters on PostgreSQL); the
-- stage worker checks UTF-8 byte lengths, so a row valid here is valid on both.

CREATE TABLE page_views (
    event_id             CHAR(36)       NOT NULL,
    occurred_at          TIMESTAMP      NOT NULL,  -- UTC
    url                  VARCHAR(2048)  NOT NULL,
    url_host             VARCHAR(255)   NOT NULL,
    url_path             VARCHAR(2048)  NOT NULL,
    url_query            VARCHAR(2048),
    referrer             VARCHAR(2048),
    referrer_host        VARCHAR(255),
    user_agent           VARCHAR(1024)  NOT NULL,
    device_class         VARCHAR(16)    NOT NULL,  -- desktop | mobile | tablet | bot | other
    ip_prefix            VARCHAR(64)    NOT NULL,  -- IPv4 /24 or IPv6 /48 network, never the full address
    user_id              VARCHAR(128),
    session_id           VARCHAR(128)   NOT NULL,
    shard_id             VARCHAR(128)   NOT NULL,
    sequence_number      VARCHAR(128)   NOT NULL,
    sub_sequence_number  BIGINT         NOT NULL,
    arrival_time         TIMESTAMP      NOT NULL,  -- ApproximateArrivalTimestamp, UTC
    staged_at            TIMESTAMP      NOT NULL,  -- when the stage worker wrote the row
    /*postgres: loaded_at TIMESTAMP NOT NULL DEFAULT (clock_timestamp() AT TIME ZONE 'utc'),*/
    /*redshift: loaded_at TIMESTAMP NOT NULL DEFAULT SYSDATE,*/
    PRIMARY KEY (event_id)  -- enforced on PostgreSQL; informational on Redshift
) /*redshift: DISTSTYLE KEY DISTKEY (event_id) COMPOUND SORTKEY (occurred_at)*/;

/*postgres: CREATE UNIQUE INDEX page_views_position ON page_views (shard_id, sequence_number, sub_sequence_number)*/;
