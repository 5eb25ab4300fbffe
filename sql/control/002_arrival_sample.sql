-- Kinesis arrival times of a staged file's records as a few quantiles (shardline.records.ledger
-- arrival_sample): the loader observes the end-to-end latency histogram from them at its
-- commit (docs/metrics.md). NULL for files staged before this column existed.
ALTER TABLE staged_files ADD COLUMN arrival_sample VARCHAR(256);
