-- A staged file's good rows per UTC hour of arrival (shardline.records.ledger StagedFile
-- hour_counts, "epoch_hour:rows,..."): what reconciliation compares each target's rows of an
-- hour with. NULL for files staged before it existed (reconciliation then knows only the
-- file's arrival range and leaves the hours it spans unjudged).
ALTER TABLE staged_files ADD COLUMN hour_counts TEXT;
