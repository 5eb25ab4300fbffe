"""Reconciliation, hour by hour: what was staged against what each target holds.

Per target table and UTC hour of ``arrival_time`` (the Kinesis ApproximateArrivalTimestamp,
a system column of every table), three sources:

- the ledger (control store): the valid rows staged, from each file's per-hour counts
  (``StagedFile.hour_counts``; dead letters are not rows and count nowhere);
- the warehouse: ``COUNT(*)`` per hour over a bounded ``arrival_time`` range, and the load
  record per hour (``load_hours``: staged, inserted, replaced, retired);
- the lake, a pluggable third source (``HourCounter``), absent when not configured.

The rule (``rule.judge``), for a *settled* hour (it ended ``reconcile.grace_s`` ago and no
file with rows in it is pending for any target):

    warehouse(h) = staged(h) - dropped(h) - replaced(h) - retired(h)
    lake(h)      = warehouse(h) + retired(h)

where staged is the ledger's loaded files (quarantined files are shown apart, already an
alert of their own), dropped = the load record's staged - inserted (the duplicates the merge
removed: producer retries, re-read batches), replaced = rows a reprocess load removed before
inserting its own, retired = rows retention deleted. Each term is written in the
transaction that made the change, so a correct pipeline always agrees, and a row lost or
doubled after its load (or a load that inserted what it did not record) is a difference.
"""
from __future__ import annotations

from shardline.reconcile.rule import HourVerdict, judge
from shardline.reconcile.sources import HourCounter

__all__ = ["HourCounter", "HourVerdict", "judge"]
