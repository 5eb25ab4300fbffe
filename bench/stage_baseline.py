"""The stage path of another git revision, importable beside today's (for bench_stage.py).

``load(rev)`` writes that revision's codec, csvformat, transform, rows and clients modules
(``git show rev:path``) into a temp package ``_stage_base_<rev>`` with their imports of each
other rewritten to point inside it, so the old and new per-record paths run in one
process, interleaved, on the same input. Everything else they import (tables, errors,
layout, positions, settings, the ledger, the runner) is today's: those are not part of the
stage path being compared.
"""
from __future__ import annotations

import importlib
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
# module name in the package -> (path in the repo, its import name today)
MODULES = {"codec": ("shardline/codec.py", "shardline.codec"),
           "csvformat": ("shardline/csvformat.py", "shardline.csvformat"),
           "transform": ("workers/transform.py", "shardline.workers.transform"),
           # the transform API and the default transform, where the revision has them
           # (before, page_view and its helpers were in workers/transform.py)
           "transforms": ("shardline/transforms/__init__.py", "shardline.transforms"),
           "page_views": ("shardline/transforms/page_views.py", "shardline.transforms.page_views"),
           "rows": ("workers/rows.py", "shardline.workers.rows"),
           # the worker's Gearman connection (read size), for the worker-process runs
           "clients": ("shardline/clients.py", "shardline.clients")}
OPTIONAL = {"transforms", "page_views"}


def load(rev: str) -> SimpleNamespace:
    """-> namespace with codec, csvformat, transform, rows modules as of ``rev``."""
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", rev], check=True,
                         capture_output=True, text=True).stdout.strip()
    pkg = f"_stage_base_{sha}"
    base = Path(tempfile.mkdtemp(prefix="stage-baseline-"))
    (base / pkg).mkdir()
    (base / pkg / "__init__.py").write_text("")
    present = {}
    for name, (path, dotted) in MODULES.items():
        shown = subprocess.run(["git", "-C", str(ROOT), "show", f"{sha}:{path}"],
                               capture_output=True, text=True)
        if shown.returncode != 0 and name in OPTIONAL:
            continue
        shown.check_returncode()
        present[name] = (path, dotted)
        text = shown.stdout
        for other, (_p, other_dotted) in MODULES.items():
            text = text.replace(f"from {other_dotted} import", f"from {pkg}.{other} import")
        text = text.replace("from shardline import codec\n", f"from {pkg} import codec\n")
        (base / pkg / f"{name}.py").write_text(text)
    sys.path.insert(0, str(base))
    try:
        mods = {name: importlib.import_module(f"{pkg}.{name}") for name in present}
    finally:
        sys.path.remove(str(base))
    return SimpleNamespace(rev=sha, **mods)


def _adapt(ns: SimpleNamespace) -> None:
    """Give a revision from before the tables file, reprocess jobs and transform versions the
    names today's stage job calls (``RowBuilder.routed``, ``transform.load_table_transforms``,
    ``codec.decode_job``, ``transform.transform_version``), for its single table: the old
    per-record path runs unchanged under them."""
    from shardline.workers import rows as today_rows

    builder = ns.rows.RowBuilder
    if not hasattr(builder, "routed"):
        def routed(cls, tables, transforms):
            if len(tables.tables) != 1:
                raise SystemExit(f"revision {ns.rev} stages one table only")
            spec = tables.tables[0]
            return cls(spec, transforms[spec.name])

        def build_tables(self, batch, staged_at):
            out = self.build(batch, staged_at)
            staged = {self.spec.name: today_rows.StagedBatch(out.csv_text, out.rows)} \
                if out.rows else {}
            return today_rows.RoutedBatch(staged, out.dead_letters, self.spec.name)

        builder.routed = classmethod(routed)
        builder.build_tables = build_tables
    if not hasattr(ns.transform, "load_table_transforms"):
        def load_table_transforms(tables, settings=None):
            return {spec.name: ns.transform.load_transform(spec.transform)
                    for spec in tables.tables}

        ns.transform.load_table_transforms = load_table_transforms
    if not hasattr(ns.codec, "decode_job"):  # before reprocess jobs: plain batches only
        def decode_job(payload):
            return None, ns.codec.decode(bytes(payload))

        ns.codec.decode_job = decode_job
    if not hasattr(ns.transform, "transform_version"):  # before transform versions
        from shardline.workers import transform as today_transform

        ns.transform.transform_version = today_transform.transform_version


def install(ns: SimpleNamespace) -> None:
    """Make the loaded revision *the* stage path of this process (before anything imports it):
    ``shardline.codec`` & co. then resolve to the old modules, so a real ``shardline worker``
    started from here runs the old per-record code."""
    import shardline
    import shardline.workers  # noqa: F401  (loaded: install() sets attributes on it)

    _adapt(ns)
    for name, (_path, dotted) in MODULES.items():
        module = getattr(ns, name, None)
        if module is None:  # an optional module the revision does not have
            continue
        sys.modules[dotted] = module
        parent, _, attr = dotted.rpartition(".")
        setattr(sys.modules[parent], attr, module)


if __name__ == "__main__":
    # python bench/stage_baseline.py REV ARGS...: `shardline ARGS...` with REV's stage path
    sys.path.insert(0, str(ROOT))
    install(load(sys.argv[1]))
    from shardline.cli import main

    sys.exit(main(sys.argv[2:]))
