"""The producer library stands alone: importing all of it loads nothing of shardline beyond
small core modules that need only the standard library (and boto3, the library's own)."""
from __future__ import annotations

import json
import subprocess
import sys

LIBRARY = ("producer", "background", "config", "kpl", "metrics", "middleware", "page_view",
           "put", "put_records", "spool")
CORE = {"shardline", "shardline.errors", "shardline.settings", "shardline.logs",
        "shardline.kinesis", "shardline.tables", "shardline.tables_file",
        "shardline.records", "shardline.records.tables", "shardline.csvformat"}
PIPELINE_MODULES = ("psycopg2", "gearman", "supervisor", "tenacity", "aws_kinesis_agg")


def test_the_library_imports_only_itself_and_small_core_modules():
    # A fresh interpreter, with the pipeline's packages made unimportable.
    code = "\n".join([
        "import json, sys",
        *(f"sys.modules[{m!r}] = None" for m in PIPELINE_MODULES),
        *(f"import shardline.producer.{name}" for name in LIBRARY),
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('shardline'))))",
    ])
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    loaded = set(json.loads(done.stdout))
    outside = {m for m in loaded if not m.startswith("shardline.producer")} - CORE
    assert outside == set()
    assert {f"shardline.producer.{name}" for name in LIBRARY} <= loaded
