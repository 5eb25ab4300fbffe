-- No declared key the data does not guarantee.
--
-- The dedup key is unique only within the loader's dedup window (loader.dedup_window_s): an
-- event id that comes back with an occurred_at outside it is stored again, on every warehouse
-- (docs/operations.md, "An event id outside the dedup window"). Redshift's planner trusts a
-- declared PRIMARY KEY ("a SELECT DISTINCT query might return duplicate rows if the primary
-- key is not unique"), so it is dropped there; PostgreSQL enforced its keys, so one such
-- record failed every load of its table: its unique key and position index become plain
-- indexes (the merge's join and a reprocess load's delete still find rows by them).
-- The load_fence table's key is informational too (each table has its own fence table now).

/*redshift: ALTER TABLE page_views DROP CONSTRAINT page_views_pkey*/;
/*redshift: ALTER TABLE load_fence DROP CONSTRAINT load_fence_pkey*/;
/*postgres-plain: ALTER TABLE page_views DROP CONSTRAINT IF EXISTS page_views_pkey*/;
/*postgres-plain: CREATE INDEX page_views_event_id ON page_views (event_id)*/;
/*postgres-plain: DROP INDEX IF EXISTS page_views_position*/;
/*postgres-plain: CREATE INDEX page_views_position ON page_views (shard_id, sequence_number, sub_sequence_number)*/;
