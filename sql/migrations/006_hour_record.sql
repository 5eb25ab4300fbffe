-- The per-hour part of the load record, for reconciliation (docs/reconciliation.md).
--
-- Insert-only, written in the same transaction as the rows it describes: per target table
-- and UTC hour of arrival_time (the Kinesis ApproximateArrivalTimestamp), how many rows a
-- writer of the warehouse staged, inserted or removed there.
--   staged    rows of the load's files (the ledger's per-hour counts)
--   inserted  rows the load's merge inserted (staged minus the duplicates it dropped)
--   replaced  stored rows a reprocess load removed before inserting the new ones
--   retired   rows warehouse retention deleted (the lake holds them)
-- So for every hour: rows in the table = sum(inserted) - sum(replaced) - sum(retired), and
-- the duplicates dropped = sum(staged) - sum(inserted). A few rows per load (a batch spans
-- one or two hours), read by range on hour (the sort key).

CREATE TABLE load_hours (
    load_id         VARCHAR(64)   NOT NULL,  -- a load's, or a retention batch's id
    target_table    VARCHAR(128)  NOT NULL,
    hour            TIMESTAMP     NOT NULL,  -- UTC hour of arrival_time
    kind            VARCHAR(16)   NOT NULL,  -- staged | inserted | replaced | retired
    row_count       BIGINT        NOT NULL,
    recorded_at     TIMESTAMP     NOT NULL
) /*redshift: DISTSTYLE EVEN SORTKEY (hour)*/;

/*postgres: CREATE INDEX load_hours_hour ON load_hours (target_table, hour)*/;
