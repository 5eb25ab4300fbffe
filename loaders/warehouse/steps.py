"""The plan's SQL step (``Sql``) and what steps pass on (``Results``), below the plan and
its helpers (``plan``, ``hour_steps``) so both build steps without importing each other."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

# What the plan's steps fetched so far, by name (row counts, the COPY's sort-key range): the
# merge's parameters are computed from it; SQL parameters are whatever psycopg2 takes.
Results = dict[str, Any]
Params = tuple[Any, ...]


@dataclass(frozen=True)
class Sql:
    """One statement. ``params`` is a tuple, or a callable of the results so far.
    ``result`` names what to keep: the first column of the first row (``fetch="one"``),
    the first row (``"row"``), every row (``"all"``) or the row count (``"rowcount"``).
    A guard: ``expect_rowcount`` (that many rows touched) or ``expect_empty`` (no row
    returned), else ``Refused(refusal)``."""

    name: str
    text: str
    params: Any = None
    result: str | None = None
    fetch: str | None = None
    expect_rowcount: int | None = None
    expect_empty: bool = False
    refusal: str = ""
    # run only when this is true of the results so far (None: always)
    only_if: Callable[[Results], bool] | None = None
