-- The CSV columns of a staged file, comma-separated, in order (shardline.records.ledger StagedFile
-- column_list): the loader's COPY names them, so files staged before a column was added to
-- the table (shardline migrate: ALTER TABLE ... ADD COLUMN) still load. NULL for files
-- staged before this column existed (page_views' columns of that release).
ALTER TABLE staged_files ADD COLUMN column_list TEXT;
