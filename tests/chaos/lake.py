"""The lake in the campaign: page_views also goes to an Iceberg table (``lake.tables``), the
plan kills its lake loader, and the verdict reads the lake back.

The kill point between the two stores (Iceberg commit done, ledger not yet told) is hit
with the lake loader's test-only hook (``CHAOS_KILL_AFTER_LAKE_COMMIT``, a file path in
the fleet's environment): every other lake loader kill of the plan "arms" it by creating
the file, and the next lake loader to commit removes it and SIGKILLs itself right after
its commit, before its ledger update. Watching from outside (the SQL catalog's row moves
at the commit) won the race against the DynamoDB ledger update only now and then on this
busy machine. A sprung kill point is a kill in that window by construction; the campaign
also notes whether some file of the table's newest commit (its manifest) was still
lake-pending when it looked (often not: the restarted loader may have reconciled it first),
and the verdict requires the next loader's "took over files a killed loader had committed".
"""
from __future__ import annotations

import collections
import logging
from pathlib import Path
from typing import Any

from shardline import clients, settings as settings_mod
from shardline.lake.catalog import open_table
from shardline.lake.config import MANIFEST_PROPERTY
from shardline.loaders.lake import commits

log = logging.getLogger("chaos")
TABLE = "page_views"
KIND = "lake-loader"


class LakeWatch:
    """The campaign's view of the lake: its kill point, the ledger, the table."""

    def __init__(self, env: dict[str, str], store: Any, trigger: Path):
        self.settings = settings_mod.load(None, env=env)
        self.store = store
        self.trigger = trigger  # CHAOS_KILL_AFTER_LAKE_COMMIT
        self.armed = False

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

    def arm(self) -> None:
        self.trigger.touch()
        self.armed = True

    def sprung(self) -> bool:
        """The armed kill point was taken (a lake loader killed itself after a commit)."""
        if self.armed and not self.trigger.exists():
            self.armed = False
            return True
        return False

    def disarm(self) -> None:
        self.trigger.unlink(missing_ok=True)
        self.armed = False

    def landed(self) -> bool:
        """The newest commit's files are still lake-pending (the kill beat the ledger);
        False also when that cannot be read now (an outage)."""
        try:
            return self.newest_commit_still_pending()
        except Exception as exc:  # noqa: BLE001 - evidence only, never fatal to the run
            log.info("could not check the lake commit-point kill: %s", exc)
            return False


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
