"""What a warehouse dialect is: the plan runner, plus what differs between warehouses: the
COPY step. (No table lock: loads are kept apart by the loader lease and the fence row.)"""
from __future__ import annotations

import abc
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable

from shardline.errors import LoadFailed
from shardline.loaders.warehouse.plan import CheckRows, CopyManifest, Manifest, Refused, Step
from shardline.records.ledger import StagedFile


@dataclass(frozen=True)
class CopyErrors:
    """What a dialect found out about a failed COPY after its rollback: lines to log, and the
    staged files the errors point at (empty: the dialect cannot tell)."""

    lines: tuple[str, ...] = ()
    files: tuple[StagedFile, ...] = ()


@dataclass
class PlanResult:
    rows_copied: int = 0
    rows_inserted: int = 0
    rows_replaced: int = 0  # stored rows a reprocess load deleted from its files' ranges
    timings: dict[str, float] = field(default_factory=dict)  # step name -> seconds


class Dialect(abc.ABC):
    """What differs between warehouses: the COPY step."""

    name: str = ""

    @abc.abstractmethod
    def copy(self, cur: Any, step: CopyManifest) -> None:
        """Run the COPY; raise ``LoadFailed`` with a readable reason."""

    def copy_error_details(self, cur: Any, manifest: Manifest, since: datetime) -> CopyErrors:
        """After a failed COPY of ``manifest`` (a load started at ``since``, UTC) and its
        rollback, in the same session: the error rows, and the files they point at."""
        return CopyErrors()

    def redact(self, text: str) -> str:
        return text

    def run(self, cur: Any, plan: Iterable[Step], results: dict[str, Any] | None = None
            ) -> PlanResult:
        """Execute the steps in the caller's transaction; ``results`` carries what earlier
        steps found (a load's copy transaction, to its merge)."""
        results = {} if results is None else results
        out = PlanResult()
        for step in plan:
            t0 = time.perf_counter()
            self._run_step(cur, step, results, out)
            out.timings[step.name] = time.perf_counter() - t0
        out.rows_copied = int(results.get("rows_copied", 0))
        out.rows_inserted = int(results.get("rows_inserted", 0))
        out.rows_replaced = sum(int(v) for k, v in results.items()
                                if k.startswith("rows_replaced_"))
        return out

    def _run_step(self, cur: Any, step: Step, results: dict[str, Any], out: PlanResult
                  ) -> None:
        if isinstance(step, CheckRows):
            copied = int(results.get("rows_copied", 0))
            if copied != step.expected:
                exc = LoadFailed(f"COPY staged {copied} rows, but the ledger counts "
                                 f"{step.expected} in these files: not loading them")
                exc.step = "count"  # the loader alerts, and narrows it down to its file
                raise exc
        elif isinstance(step, CopyManifest):
            try:
                self.copy(cur, step)
            except LoadFailed as exc:
                exc.step = "copy"  # the loader then logs the dialect's error details
                raise
        else:
            if step.only_if is not None and not step.only_if(results):
                return
            params = step.params(results) if callable(step.params) else step.params
            cur.execute(step.text, params)
            rows = None
            # a step that fetches names where the value goes (the plan's builders set both)
            name = step.result or ""
            if step.fetch == "one":
                results[name] = cur.fetchone()[0]
            elif step.fetch == "row":
                results[name] = cur.fetchone()
            elif step.fetch == "rowcount":
                results[name] = cur.rowcount
            elif step.fetch == "all" or step.expect_empty:
                rows = cur.fetchall()
                if step.result:
                    results[step.result] = rows
            if step.expect_rowcount is not None and cur.rowcount != step.expect_rowcount:
                raise Refused(step.refusal or f"{step.name}: expected {step.expect_rowcount} "
                              f"rows, touched {cur.rowcount}; load abandoned", step.name)
            if step.expect_empty and rows:
                raise Refused(f"{step.refusal}: {', '.join(str(r[0]) for r in rows[:3])}"
                              f"{' ...' if len(rows) > 3 else ''}", step.name)
