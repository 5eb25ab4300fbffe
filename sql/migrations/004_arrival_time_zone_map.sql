-- Zone maps on arrival_time in the redshift-like mode, for reprocess loads.
--
-- A reprocess load deletes the stored rows of its files' exact position ranges, bounded by
-- the records' arrival range: Kinesis sets arrival_time, so the bound holds whatever
-- transform made the stored row (an occurred_at that an old transform got wrong included).
-- Redshift keeps a zone map (min/max per block) on every column, and rows are appended in
-- arrival order, so that predicate prunes there with no index. PostgreSQL has no zone maps:
-- the redshift-like stand-in plays them with a BRIN index, as 002 does for the sort key.

/*redshift-like: CREATE INDEX page_views_arrival_time ON page_views USING brin (arrival_time)*/;
