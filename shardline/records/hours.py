"""The warehouse's per-hour record (``load_hours``, sql/migrations/006_hour_record.sql).

Every writer of a target table's rows writes, in the same transaction, how many rows it
staged, inserted or removed per UTC hour of ``arrival_time``: the loader's merge (staged,
inserted; replaced for a reprocess load) and warehouse retention (retired). Reconciliation
(``shardline.reconcile``) reads the sums back; this module is the one list of the kinds.
"""
from __future__ import annotations

STAGED = "staged"  # rows of the load's files (the ledger's per-hour counts)
INSERTED = "inserted"  # rows the merge inserted: staged minus the duplicates it dropped
REPLACED = "replaced"  # stored rows a reprocess load removed before inserting the new ones
RETIRED = "retired"  # rows retention deleted once the lake held them
KINDS = (STAGED, INSERTED, REPLACED, RETIRED)

HOUR_RECORD_TABLE = "load_hours"
HOUR_RECORD_COLUMNS = ("load_id", "target_table", "hour", "kind", "row_count", "recorded_at")
# The SQL expression of a row's hour, the same on PostgreSQL and Redshift.
HOUR_OF_ARRIVAL = "DATE_TRUNC('hour', arrival_time)"
