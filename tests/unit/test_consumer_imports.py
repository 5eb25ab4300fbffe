"""A consumer runs once per shard, so what its start loads is paid once per shard: its modules
and its Kinesis client must not load what only other processes use (the stage worker, the
loader, the agent, boto3's session and resource layer), protobuf before a KPL aggregate
arrives, or psycopg2 before the PostgreSQL control store is opened."""
from __future__ import annotations

import json
import subprocess
import sys

# Module families a consumer's start must not import (prefix match on sys.modules).
NEVER = ("boto3", "google.protobuf", "psycopg2", "shardline.workers", "shardline.loaders",
         "shardline.fleet", "shardline.ops", "shardline.transforms", "shardline.tables_file",
         "gearman.worker", "supervisor")


def loaded_after(code: str) -> set[str]:
    """sys.modules of a fresh interpreter after ``code``."""
    script = "\n".join([
        "import json, os, sys",
        "os.environ.update(AWS_ACCESS_KEY_ID='test', AWS_SECRET_ACCESS_KEY='test')",
        code,
        "print(json.dumps(sorted(sys.modules)))",
    ])
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=True)
    return set(json.loads(done.stdout.splitlines()[-1]))


def families(loaded: set[str]) -> set[str]:
    return {m for m in loaded for never in NEVER if m == never or m.startswith(never + ".")}


def test_a_consumers_start_imports_nothing_it_never_uses():
    loaded = loaded_after("\n".join([
        "import shardline.cli, shardline.consumers.main",
        "from shardline import settings",
        "from shardline.kinesis import kinesis_client",
        "s = settings.load(None, env={'SHARDLINE_AWS_REGION': 'us-east-1',",
        "    'SHARDLINE_KINESIS_ENDPOINT_URL': 'http://127.0.0.1:1'})",
        "kinesis_client(s, raw_timestamps=True)",
    ]))
    assert "shardline.consumers.main" in loaded and "botocore.client" in loaded
    assert families(loaded) == set()


def test_the_check_sees_a_forbidden_import():
    # The same check over a start that does import the stage worker: it must complain.
    loaded = loaded_after("import shardline.consumers.main, shardline.workers.main")
    assert "shardline.workers.main" in families(loaded)


def test_the_kinesis_client_still_resolves_aws_endpoints():
    # endpoints.json is trimmed to Kinesis: the endpoints a real client resolves must not move.
    code = "\n".join([
        "from shardline import settings",
        "from shardline.kinesis import kinesis_client",
        "out = {}",
        "for region in ('us-east-1', 'eu-west-1', 'cn-north-1', 'us-gov-west-1'):",
        "    c = kinesis_client(settings.load(None, env={'SHARDLINE_AWS_REGION': region}))",
        "    out[region] = [c.meta.endpoint_url, c.meta.partition]",
        "print(json.dumps(out))",
    ])
    script = "\n".join([
        "import json, os",
        "os.environ.update(AWS_ACCESS_KEY_ID='test', AWS_SECRET_ACCESS_KEY='test')",
        code,
    ])
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=True)
    assert json.loads(done.stdout) == {
        "us-east-1": ["https://kinesis.us-east-1.amazonaws.com", "aws"],
        "eu-west-1": ["https://kinesis.eu-west-1.amazonaws.com", "aws"],
        "cn-north-1": ["https://kinesis.cn-north-1.amazonaws.com.cn", "aws-cn"],
        "us-gov-west-1": ["https://kinesis.us-gov-west-1.amazonaws.com", "aws-us-gov"],
    }
