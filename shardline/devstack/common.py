"""Constants, the logger and the error type shared by every devstack module.

Kept in a leaf module (it imports nothing from the package) so that the other modules
can all depend on it without import cycles.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("shardline.devstack")

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
DEFAULT_DIR = REPO_ROOT / ".devstack"
KINESALITE_SCRIPT = REPO_ROOT / "scripts" / "kinesalite-server.js"

HOST = "127.0.0.1"
SERVICES = ("gearman", "kinesis", "s3", "postgres")
DATABASE = "shardline"
CONTROL_DATABASE = "shardline_control"  # the control store's database: not the warehouse
PG_USER = "postgres"
DEFAULT_BUCKET = "shardline-dev"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0
STATE_VERSION = 1
# A JSON object of state.json: the whole record, or one service's entry (pid, start_time,
# log). Read back from JSON, so its values are whatever the file holds.
Record = dict[str, Any]

# The warehouse modes: plain PostgreSQL, or PostgreSQL with what it can mimic of Redshift
# (SERIALIZABLE by default, commits delayed by the ``pgrelay`` service, see relay.py).
WAREHOUSE_MODES = ("postgres", "redshift-like")
RELAY = "pgrelay"
DEFAULT_COMMIT_LATENCY_MS = 300
# Redshift's two isolation levels -> PostgreSQL's default_transaction_isolation for the
# redshift-like warehouse: new clusters default to SNAPSHOT (PostgreSQL's REPEATABLE READ is
# snapshot isolation), older ones to SERIALIZABLE; the load path must be right under both.
ISOLATIONS = {"serializable": "serializable", "snapshot": "repeatable read"}
DEFAULT_ISOLATION = "serializable"

# Fake credentials: the emulators need some, real AWS must never see them.
DUMMY_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class DevstackError(RuntimeError):
    """A service could not be started, stopped or found."""


def address(port: int) -> str:
    """`127.0.0.1:port`: where a service of the stack listens."""
    return f"{HOST}:{port}"


def http_url(port: int) -> str:
    """Endpoint URL of an HTTP service of the stack (kinesalite, moto)."""
    return f"http://{address(port)}"
