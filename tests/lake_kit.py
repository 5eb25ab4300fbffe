"""A lake on the real local stack for tests: settings for one test's schema and prefix (the
SQL catalog in the stack's PostgreSQL, data on moto S3), the lake table made, staged files
with their ledger entries, a lake loader, the table's rows."""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from shardline.lake import catalog as lake_catalog
from shardline.loaders.lake.loader import LakeLoader
from shardline.records.ledger import PENDING
from shardline.settings import Settings
from tests.contract.loader_kit import SHARD0, T0, stage_file


class Lake:
    def __init__(self, stack: Any, schema: str, prefix: str, s3: Any, store: Any):
        env = stack.env()
        self.s3, self.store, self.prefix = s3, store, prefix
        self.bucket = env["SHARDLINE_S3_BUCKET"]
        self.settings = Settings().replace(**{
            "s3.endpoint_url": env["SHARDLINE_S3_ENDPOINT_URL"], "s3.bucket": self.bucket,
            "s3.prefix": prefix, "control.dsn": env["SHARDLINE_CONTROL_DSN"],
            "control.schema": schema, "lake.tables": "page_views",
            "lake.catalog_uri": env["SHARDLINE_LAKE_CATALOG_URI"], "lake.namespace": schema,
            "loader.max_interval_s": "0", "loader.poll_s": "0.05",
            "loader.dedup_window_s": "3600"})
        lake_catalog.migrate(self.settings)
        self.n = 0

    def stage(self, rows: list, shard: str = SHARD0, staged_at: datetime | None = None,
              **extra: Any) -> Any:
        self.n += 1
        key = f"{self.prefix}/staged/page_views/s/{shard}/{self.n:04d}.csv.gz"
        return stage_file(self.s3, self.bucket, self.store, key, rows, shard=shard,
                          staged_at=staged_at or T0 + timedelta(seconds=self.n),
                          lake_state=PENDING, transform_version="v1", **extra)

    def loader(self) -> LakeLoader:
        return LakeLoader(self.settings, "page_views", s3=self.s3, store=self.store)

    def rows(self) -> list[dict[str, Any]]:
        table = lake_catalog.open_table(self.settings, "page_views")
        return sorted(table.scan().to_arrow().to_pylist(), key=lambda r: r["event_id"])
