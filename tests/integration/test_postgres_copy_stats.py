"""The PostgreSQL dialect's COPY leaves the staging table analyzed.

Autovacuum never analyzes a temporary table, so without an ``ANALYZE`` the planner takes a
freshly filled staging table for a handful of rows, and the merge's dedup DELETE may join
it to the target row by row: a cost that grows with the table (seen as half the pipeline
benchmark's runs taking 1.7x as long, PostgreSQL busy for 10 s instead of 2).
"""
from __future__ import annotations

from tests.contract.loader_kit import page_view, stage_file
from tests.fakes import FakeS3
from shardline.tables import PAGE_VIEWS
from shardline.loaders.warehouse.plan import CopyManifest, Manifest
from shardline.loaders.warehouse.postgres_dialect import PostgresDialect

ROWS = 300


def test_the_staging_table_has_statistics_after_copy(pg_conn):
    s3 = FakeS3()
    entry = stage_file(s3, "bucket-x", None, "pfx/staged/a.csv.gz",
                       [page_view(i, i) for i in range(ROWS)])
    columns = tuple(PAGE_VIEWS.column_names)
    with pg_conn.cursor() as cur:
        cur.execute("CREATE TEMP TABLE stage_stats_probe ("
                    + ", ".join(f"{c} TEXT" for c in columns) + ")")
        try:
            PostgresDialect(s3).copy(cur, CopyManifest(
                "copy", "stage_stats_probe", columns,
                Manifest("bucket-x", "pfx/manifests/m.json", (entry,))))
            cur.execute("SELECT COUNT(*) FROM stage_stats_probe")
            assert cur.fetchone()[0] == ROWS
            # reltuples is -1 for a table never analyzed (PostgreSQL 14 and later)
            cur.execute("SELECT reltuples FROM pg_class WHERE oid = 'stage_stats_probe'::regclass")
            assert cur.fetchone()[0] == ROWS
        finally:
            cur.execute("DROP TABLE stage_stats_probe")
