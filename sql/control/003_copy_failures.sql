-- Failed COPYs per staged file, counted in the store (not in the loader process), so a
-- loader restarted after every failure still quarantines the file at
-- loader.quarantine_after (ControlStore.count_copy_failure).
ALTER TABLE staged_files ADD COLUMN copy_failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE staged_files ADD COLUMN last_copy_error TEXT;
