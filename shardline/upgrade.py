"""Upgrading a warehouse of the release before the control store (part of ``shardline migrate``).

That release kept leases, checkpoints with their history, shard status and the staged-file
ledger *inside the warehouse* (its migrations ``001_control_tables``, ``002_staging_ledger``,
``003_page_views``, recorded in ``schema_migrations`` under the version numbers the current
migrations use for other files). ``legacy_layout`` recognises it by those names, and
``upgrade`` brings it to the current schema while keeping what the pipeline needs to go on
where it stopped:

1. one warehouse transaction, which first LOCKs the old control tables (nothing of the old
   release writes them while they are read) and refuses while a consumer's lease is live
   (``LeaseHeld``: stop the fleet first);
2. leases (tokens kept, released), every checkpoint history entry (ids kept), checkpoints,
   and every staged file (pending ones stay pending) go into the control store, insert-only,
   so a run that fails later and is run again changes nothing there twice;
3. in the same transaction, ``sql/upgrade/from_control_in_warehouse.sql``: the current load
   record (``001_load_record``) around the old ``loads`` rows, ``loaded_files`` filled from
   the old ledger's loaded files, the control tables dropped, ``page_views`` kept (for the
   redshift-like target: its unique keys dropped, the BRIN index added);
4. ``schema_migrations`` then lists the current migrations the upgraded layout equals, and
   ``migrate`` applies whatever came after them. Commit.

Why automatic and not a separate command: a warehouse in the old layout cannot be used by
this release at all (its loader has no load record, its consumers read the control store),
so "migrate" has exactly one correct thing to do; the lease check and the lock make it safe
to run by mistake while the old fleet runs (it refuses, or waits for the old writers).
"""
from __future__ import annotations

import re
from datetime import datetime, timezone
from importlib import resources
from typing import TYPE_CHECKING, Any, Iterator, TypeVar

from shardline import migrate
from shardline.controlstore import ControlStore
from shardline.controlstore.base import LegacyCheckpoint
from shardline.errors import LeaseHeld
from shardline.logs import get_logger
from shardline.records.control import Checkpoint, HistoryEntry, Lease
from shardline.records.ledger import StagedFile

if TYPE_CHECKING:  # psycopg2 is untyped (types-psycopg2 is not a dependency)
    from psycopg2.extensions import connection

T = TypeVar("T")

UPGRADE_SQL = resources.files("shardline.sql") / "upgrade" / "from_control_in_warehouse.sql"
LEGACY_NAMES = ("001_control_tables", "002_staging_ledger", "003_page_views")
# What the upgraded layout equals: the current migrations it is recorded as.
UPGRADED_TO = ("001_load_record", "002_page_views")
LEGACY_TABLES = ("shard_leases", "checkpoints", "checkpoint_history", "shard_status",
                 "staged_files", "shard_watermarks", "loads")
# The old warehouse ledger's columns (that release's, fixed: later fields stay None).
LEGACY_FILE_COLUMNS = ("s3_key", "target_table", "stream", "shard_id", "first_sequence",
                       "first_sub_sequence", "last_sequence", "last_sub_sequence", "row_count",
                       "byte_count", "dead_letter_key", "dead_letter_count", "state",
                       "staged_at", "loaded_at", "load_id")
_MARK = re.compile(r"^-- @load_record.*$", re.MULTILINE)
CHUNK = 2000  # rows per fetch and per control-store import call

log = get_logger("migrate", step="upgrade")


def legacy_layout(conn: connection) -> bool:
    """True when the connection's schema was made by the release before the control store."""
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM information_schema.tables WHERE table_schema = "
                    "current_schema() AND table_name = 'schema_migrations'")
        if cur.fetchone() is None:
            conn.rollback()
            return False
        cur.execute("SELECT name FROM schema_migrations")
        names = {row[0] for row in cur.fetchall()}
    conn.rollback()
    return LEGACY_NAMES[0] in names


def statements(target: str) -> list[str]:
    """The upgrade's statements for one warehouse target, the current load record inside."""
    before, after = _MARK.split(UPGRADE_SQL.read_text(encoding="utf-8"))
    record = next(path for _, name, path in migrate.migrations() if name == UPGRADED_TO[0])
    return [*migrate.render(before, target),
            *migrate.render(record.read_text(encoding="utf-8"), target),
            *migrate.render(after, target)]


def _rows(conn: connection, sql: str) -> Iterator[tuple[Any, ...]]:
    """The rows of ``sql`` through a server-side cursor, CHUNK at a time (a history can be
    long); read one query at a time (Redshift allows one open cursor per session)."""
    with conn.cursor(name="shardline_upgrade") as cur:
        cur.itersize = CHUNK
        cur.execute(sql)
        yield from cur


def _chunks(rows: Iterator[T]) -> Iterator[list[T]]:
    chunk: list[T] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def upgrade(conn: connection, target: str, store: ControlStore) -> dict[str, int]:
    """Upgrade the old layout (see the module doc); returns what was carried over."""
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    conn.autocommit = False
    carried = {"leases": 0, "history": 0, "checkpoints": 0, "files": 0, "pending": 0}
    try:
        with conn.cursor() as cur:
            cur.execute(f"LOCK {', '.join(LEGACY_TABLES)}")
        leases = [Lease(*row) for row in _rows(
            conn, "SELECT stream, shard_id, owner, token, renewed_at, expires_at "
                  "FROM shard_leases ORDER BY stream, shard_id")]
        live = [lease for lease in leases if lease.live(now)]
        if live:
            raise LeaseHeld(f"{len(live)} shard(s) still held by a consumer of the release "
                            f"being upgraded (e.g. {live[0].shard_id} of {live[0].stream} by "
                            f"{live[0].owner}, lease until {live[0].expires_at:%H:%M:%S} UTC); "
                            f"stop the whole fleet (consumers, stage workers, loader) first")
        last_entry: dict[tuple[str, str], HistoryEntry] = {}
        top = 0
        store.import_shard_state(leases, [], [])
        carried["leases"] = len(leases)
        for chunk in _chunks(HistoryEntry(*row) for row in _rows(
                conn, "SELECT id, stream, shard_id, sequence_number, sub_sequence_number, "
                      "closes_sequence, source, reason, lease_token, created_at "
                      "FROM checkpoint_history ORDER BY id")):
            store.import_shard_state([], chunk, [])
            for e in chunk:
                last_entry[(e.stream, e.shard_id)] = e
                top = max(top, e.id)
            carried["history"] += len(chunk)
        checkpoints, made_up = [], []
        for stream, shard, seq, sub, closes, token, updated in _rows(
                conn, "SELECT stream, shard_id, sequence_number, sub_sequence_number, "
                      "closes_sequence, lease_token, updated_at FROM checkpoints"):
            entry = last_entry.get((stream, shard))
            if entry is None or (entry.sequence_number, entry.sub_sequence_number) != (seq, sub):
                # the old release never linked a checkpoint to its entry; where the newest
                # entry is not this checkpoint, one says where it came from
                top += 1
                entry = HistoryEntry(top, stream, shard, seq, sub, closes, "consumer",
                                     "carried over from the warehouse by shardline migrate",
                                     token, updated)
                made_up.append(entry)
            checkpoints.append(LegacyCheckpoint(stream, shard,
                                                Checkpoint(seq, sub, closes, updated),
                                                token, entry.id))
        store.import_shard_state([], made_up, checkpoints)
        carried["checkpoints"] = len(checkpoints)
        for row in _rows(conn, f"SELECT {', '.join(LEGACY_FILE_COLUMNS)} FROM staged_files"):
            staged = StagedFile(**dict(zip(LEGACY_FILE_COLUMNS, row, strict=True)))
            store.record_file(staged)  # insert-only: a second run leaves it
            carried["files"] += 1
            carried["pending"] += staged.state == "pending"
        with conn.cursor() as cur:
            for statement in statements(target):
                cur.execute(statement)
            cur.execute("DELETE FROM schema_migrations")
            for name in UPGRADED_TO:
                cur.execute("INSERT INTO schema_migrations (version, name, applied_at) "
                            "VALUES (%s, %s, %s)", (int(name[:3]), name, now))
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    log.warning("upgraded a warehouse of the release before the control store: %d leases, "
                "%d history entries, %d checkpoints, %d staged files (%d pending) carried "
                "into the control store; the control tables left the warehouse",
                carried["leases"], carried["history"], carried["checkpoints"],
                carried["files"], carried["pending"])
    return carried
