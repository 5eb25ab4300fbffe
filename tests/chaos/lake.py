"""The lake in the campaign: page_views also goes to an Iceberg table (``lake.tables``), the
plan kills its lake loader, and the verdict reads the lake back.

The kill point between the two stores (Iceberg commit done, ledger not yet told) is aimed
for from outside, without any hook in the product: the campaign watches the SQL catalog's
row for the table (``iceberg_tables.metadata_location``: it changes at the commit) and
SIGKILLs the lake loader as soon as it moves. On the PostgreSQL control store the
lake-pending ledger rows are row-locked first, so ``mark_lake_loaded`` waits there and
the kill always lands in the window; on DynamoDB it lands when the poll wins the race.
Either way the kill is checked afterwards: it counts as landed only if some file the
new commit holds (its manifest) is still lake-pending in the ledger.
"""
from __future__ import annotations

import collections
import contextlib
import logging
import time
from pathlib import Path
from typing import Any, Callable

import psycopg2
import sqlalchemy

from shardline import clients, settings as settings_mod
from shardline.lake.catalog import open_table
from shardline.lake.config import MANIFEST_PROPERTY
from shardline.loaders.lake import commits

log = logging.getLogger("chaos")
TABLE = "page_views"
KIND = "lake-loader"


class LakeWatch:
    """The campaign's view of the lake: the catalog row, the ledger, the table."""

    def __init__(self, env: dict[str, str], store: Any, schema: str):
        self.settings = settings_mod.load(None, env=env)
        self.env, self.store, self.schema = env, store, schema
        self.engine = sqlalchemy.create_engine(self.settings.lake.catalog_uri,
                                               pool_pre_ping=True)

    def metadata_location(self) -> str | None:
        with self.engine.connect() as conn:
            row = conn.execute(sqlalchemy.text(
                "SELECT metadata_location FROM iceberg_tables WHERE catalog_name = :c "
                "AND table_name = :t"), {"c": self.settings.lake.catalog_name,
                                         "t": TABLE}).first()
        return None if row is None else str(row[0])

    def pending(self) -> int:
        return int(self.store.lake_pending_stats(TABLE).files)

    def newest_commit_still_pending(self) -> bool:
        """Some file the newest lake load holds is still lake-pending in the ledger."""
        table = open_table(self.settings, TABLE)
        snap = table.current_snapshot()
        if snap is None or snap.summary is None or not snap.summary[MANIFEST_PROPERTY]:
            return False
        keys = set(commits.read_manifest(clients.s3_client(self.settings),
                                         self.settings.s3.bucket,
                                         snap.summary[MANIFEST_PROPERTY]))
        pending = {e.s3_key for e in self.store.lake_pending_files(TABLE, 100_000)}
        return bool(keys & pending)

    def kill_after_commit(self, kill: Callable[[], bool], control: str) -> tuple[bool, bool]:
        """(killed, landed between the commit and the ledger update)."""
        holder = None
        try:
            if control == "postgres":
                c = self.settings.control
                holder = psycopg2.connect(c.dsn, password=self.env.get("PGPASSWORD"),
                                          options=f"-c search_path={c.schema} "
                                                  "-c statement_timeout=5000")
                with holder.cursor() as cur:
                    cur.execute("SELECT s3_key FROM staged_files WHERE target_table = %s "
                                "AND lake_state = 'pending' FOR UPDATE", (TABLE,))
            before = self.metadata_location()
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                if self.metadata_location() != before:
                    break
                time.sleep(0.005)
            else:
                return kill(), False  # no commit came: an ordinary kill
            if holder is not None:
                time.sleep(0.2)  # the lake loader is now waiting in mark_lake_loaded
            if not kill():
                return False, False
            if holder is not None:
                holder.rollback()
            return True, self.newest_commit_still_pending()
        except (psycopg2.Error, sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
            log.info("lake commit-point kill fell back to a plain one: %s", exc)
            return kill(), False
        finally:
            if holder is not None:
                with contextlib.suppress(psycopg2.Error):
                    holder.rollback()
                    holder.close()

    def close(self) -> None:
        self.engine.dispose()


def check_lake(v: Any, required: set[str], allowed: set[str], watch: LakeWatch,
               work: Path) -> None:
    """The lake's event_ids (pyiceberg's scan) against the events that must be there
    (``allowed``: may be, once: sent to the relay, not acknowledged), then the lake against
    the warehouse row for row (pyiceberg and DuckDB: tests/lake_check.py)."""
    from tests import lake_check

    v.lake = True
    table = open_table(watch.settings, TABLE)
    ids = table.scan(selected_fields=("event_id",)).to_arrow().column("event_id").to_pylist()
    rows = collections.Counter(ids)
    v.lake_rows = sum(rows.values())
    v.lake_missing = len(required - rows.keys())
    v.lake_duplicated = sum(n - 1 for n in rows.values() if n > 1)
    v.lake_unexpected = len(rows.keys() - required - allowed)
    if v.lake_missing or v.lake_duplicated or v.lake_unexpected:
        v.problems.append(f"lake: missing {v.lake_missing}, duplicated {v.lake_duplicated}, "
                          f"unexpected {v.lake_unexpected}")
    conn = clients.warehouse_connect(watch.settings)
    try:
        work.mkdir(parents=True, exist_ok=True)
        lake_check.assert_lake_equals_warehouse(watch.settings, conn, clients.s3_client(
            watch.settings), work)
        v.lake_equals_warehouse = True
    except AssertionError as exc:
        v.problems.append(f"lake differs from the warehouse: {str(exc)[:300]}")
    finally:
        conn.close()
