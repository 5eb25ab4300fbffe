"""The deploy kit, created for real in moto's CloudFormation, then the pipeline on exactly
what the stack made, each component with only its own role's policy.

A moto server of this module's own (``shardline.devstack.moto_server``: moto with DynamoDB
requests serialised, as the devstack runs it) creates the stack from deploy/shardline.yaml.
The pipeline then uses the stack's S3 bucket and DynamoDB control tables, named by the
stack's outputs, on that moto, and the devstack's gearmand and PostgreSQL warehouse.

Kinesis: the stack's stream exists in moto's Kinesis, but the pipeline reads kinesalite, the
project's Kinesis stand-in (moto's Kinesis hands out per-shard sequence numbers "1", "2"...
that are not unique across shards, and has no iterator expiry: /work/shared/local-stack-
facts.md). So the test creates the same stream in kinesalite: the name from the stack's
``StreamName`` output and the shard count the stack's stream resource has in moto.

IAM: once the stack is made, moto's access check goes on (``/moto-api/reset-auth``), and
the test makes one IAM user per component carrying that component's role policy as the stack
created it, read back from moto's IAM, so each component runs with nothing else. The server
is ``tests/moto_iam.py``: moto checks the action of every S3 and DynamoDB request and the
resource of S3 requests (bucket and key); that module adds the resource of DynamoDB
requests (table, index), checks a transaction item by item, and names S3 actions as IAM
does (``s3:ListBucket`` for a listing), as AWS does. kinesalite checks no credentials at
all, so the components reach it through ``tests/kinesis_iam.py``, a proxy that checks each
Kinesis request's action and stream against the caller's policy with moto's evaluator.
Both log what they let through, so the test also fails on a right that no request needed.

Not checked: condition keys. moto evaluates none of a request's (``s3:prefix``), so a
``ListBucket`` limited to the prefix would always be refused; ``moto_view`` drops the
condition (ListBucket on the whole bucket) and changes nothing else. Nor the trust
policies (the users stand in for whoever assumes the roles) or the Redshift COPY role (the
local warehouse is PostgreSQL, whose loader reads the staged files itself).
"""
from __future__ import annotations

import ast
import copy
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import boto3
import pytest

from shardline.controlstore.dynamodb_schema import TABLES, table_specs
from shardline.devstack.fleet import SHARDLINE, shardline, wait_for
from tests.kinesis_iam import KinesisIamProxy
from tests.pipeline import FAST, dead_letters, wait_active

pytestmark = [pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "shardline.yaml"
COMPONENTS = ("consumer", "stage-worker", "loader", "lake-loader", "agent", "operator")


def _iam_policies():
    spec = importlib.util.spec_from_file_location("deploy_iam_policies",
                                                  ROOT / "deploy" / "iam_policies.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


iam_policies = _iam_policies()


def _listed(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def moto_view(policy: dict) -> dict:
    """The policy as moto can check it: without conditions (the module docstring says why)."""
    out = copy.deepcopy(policy)
    for st in out["Statement"]:
        st.pop("Condition", None)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Deployed:
    """The stack in moto: its outputs, the components' keys, an admin for the test's checks."""

    url: str
    outputs: dict[str, str]
    keys: dict[str, tuple[str, str]] = field(default_factory=dict)
    policies: dict[str, list[str]] = field(default_factory=dict)  # access key -> its policy
    iam_log: Path | None = None

    def client(self, service: str, who: str = "admin") -> Any:
        key, secret = self.keys[who]
        return boto3.client(service, endpoint_url=self.url, region_name=self.outputs["Region"],
                            aws_access_key_id=key, aws_secret_access_key=secret)

    def add_user(self, name: str, policy: dict) -> None:
        """An IAM user with only ``policy`` (as given: no moto view); its keys as ``name``."""
        iam = self.client("iam")
        user = f"{self.outputs['StreamName']}-{name}"  # IAM users are per account
        iam.create_user(UserName=user)
        iam.put_user_policy(UserName=user, PolicyName=name, PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=user)["AccessKey"]
        self.keys[name] = (key["AccessKeyId"], key["SecretAccessKey"])
        self.policies[key["AccessKeyId"]] = [json.dumps(policy)]

    def role_policy(self, component: str) -> dict:
        """The component's policy as the stack created it (moto's IAM)."""
        iam = self.client("iam")
        role = self.outputs[f"{_camel(component)}RoleArn"].rsplit("/", 1)[1]
        doc = iam.get_role_policy(RoleName=role,
                                  PolicyName=f"shardline-{component}")["PolicyDocument"]
        if isinstance(doc, str):  # moto keeps a CloudFormation-made policy as Python's repr
            doc = ast.literal_eval(doc)
        return doc

    def settings_env(self) -> dict[str, str]:
        """The settings the outputs fill (deploy/README.md's table), for moto's endpoints."""
        o = self.outputs
        return {"SHARDLINE_AWS_REGION": o["Region"], "SHARDLINE_KINESIS_STREAM": o["StreamName"],
                "SHARDLINE_S3_ENDPOINT_URL": self.url, "SHARDLINE_S3_BUCKET": o["BucketName"],
                "SHARDLINE_S3_PREFIX": o["S3Prefix"], "SHARDLINE_CONTROL_BACKEND": "dynamodb",
                "SHARDLINE_CONTROL_DYNAMODB_ENDPOINT_URL": self.url,
                "SHARDLINE_CONTROL_TABLE_PREFIX": o["TablePrefix"]}


def unused_rights(policy: dict, used: set[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """(Sid, action, resource) of each right no request in ``used`` needed."""
    from moto.iam.access_control import IAMPolicyStatement

    return [(st.get("Sid", ""), action, resource)
            for st in policy["Statement"]
            for action in _listed(st["Action"]) for resource in _listed(st["Resource"])
            if not any(a == action and IAMPolicyStatement._match(resource, r)
                       for a, r in used)]


def _camel(component: str) -> str:
    return "".join(part.capitalize() for part in component.split("-"))


@dataclass
class Moto:
    url: str
    admin: tuple[str, str]  # the test's own key (every right), made before the check went on
    admin_policy: str
    iam_log: Path  # the requests its check let through (tests/moto_iam.py)


@pytest.fixture(scope="module")
def moto(tmp_path_factory) -> Iterator[Moto]:
    """A moto server of this module's own (its IAM check is on for the whole server), with
    an admin user for the test's own calls, then the check switched on."""
    port = _free_port()
    where = tmp_path_factory.mktemp("moto")
    log = open(where / "moto.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "tests.moto_iam", "-p", str(port)],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "MOTO_IAM_LOG": str(where / "allowed.jsonl")})
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=2).close()
            return True
        except OSError:
            assert proc.poll() is None, f"moto exited {proc.returncode}"
            return False

    try:
        wait_for(up, 30, "moto server", every=0.1)
        iam = boto3.client("iam", endpoint_url=url, region_name="us-east-1",
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        iam.create_user(UserName="admin")
        admin = json.dumps({"Version": "2012-10-17",
                            "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})
        iam.put_user_policy(UserName="admin", PolicyName="admin", PolicyDocument=admin)
        key = iam.create_access_key(UserName="admin")["AccessKey"]
        # the body is the count of requests still let through unchecked (text/plain: a form
        # content type would make moto read an empty body)
        req = urllib.request.Request(f"{url}/moto-api/reset-auth", data=b"0", method="POST",
                                     headers={"Content-Type": "text/plain"})
        urllib.request.urlopen(req, timeout=10).close()
        yield Moto(url, (key["AccessKeyId"], key["SecretAccessKey"]), admin,
                   where / "allowed.jsonl")
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


@pytest.fixture
def deployed(moto) -> Deployed:
    """deploy/shardline.yaml created in moto, and a user per component with its role's
    policy. A stack per test: its control tables hold checkpoints and the ledger, which must
    not carry over from one test's pipeline to the next."""
    t = time.monotonic()
    d = Deployed(moto.url, {"Region": "us-east-1"}, keys={"admin": moto.admin},
                 policies={moto.admin[0]: [moto.admin_policy]}, iam_log=moto.iam_log)
    cf = d.client("cloudformation")
    name = f"shardline-{uuid.uuid4().hex[:8]}"
    cf.create_stack(StackName=name, TemplateBody=TEMPLATE.read_text(),
                    Capabilities=["CAPABILITY_IAM"],
                    Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in {
                        "StreamName": f"{name}-events", "ShardCount": "2",
                        "BucketName": f"{name}-bucket", "S3Prefix": "events/v1",
                        "TablePrefix": f"{name}_"}.items()])
    stack, = cf.describe_stacks(StackName=name)["Stacks"]
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
    d.outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    for component in COMPONENTS:
        d.add_user(component, moto_view(d.role_policy(component)))
    print(f"stack created and users made in {time.monotonic() - t:.1f}s")
    return d


def test_moto_enforces_the_policies(deployed):
    """The check is on: a key moto does not know is refused, and so is a right the
    component's policy lacks (the stage worker may not read what it staged)."""
    from botocore.exceptions import ClientError

    o = deployed.outputs
    stranger = boto3.client("s3", endpoint_url=deployed.url, region_name=o["Region"],
                            aws_access_key_id="AKIASTRANGER", aws_secret_access_key="x")
    with pytest.raises(ClientError, match="InvalidAccessKeyId"):
        stranger.list_objects_v2(Bucket=o["BucketName"])
    worker = deployed.client("s3", "stage-worker")
    key = f"{o['S3Prefix']}/staged/probe.csv.gz"
    worker.put_object(Bucket=o["BucketName"], Key=key, Body=b"")
    with pytest.raises(ClientError, match="AccessDenied"):
        worker.get_object(Bucket=o["BucketName"], Key=key)
    with pytest.raises(ClientError, match="AccessDenied"):  # outside its prefixes
        worker.put_object(Bucket=o["BucketName"], Key=f"{o['S3Prefix']}/manifests/x", Body=b"")
    # listing is s3:ListBucket on AWS (moto's own name for it would be s3:ListObjectsV2)
    deployed.client("s3", "operator").list_objects_v2(Bucket=o["BucketName"],
                                                      Prefix=f"{o['S3Prefix']}/dead-letter/")
    with pytest.raises(ClientError, match="AccessDenied"):
        worker.list_objects_v2(Bucket=o["BucketName"], Prefix=f"{o['S3Prefix']}/staged/")
    with pytest.raises(ClientError, match="AccessDenied"):
        deployed.client("dynamodb", "stage-worker").scan(TableName=f"{o['TablePrefix']}hosts")
    # DynamoDB rights are per table and index (tests/moto_iam.py): the loader may query the
    # ledger's pending index, not its staged one; the consumer may write its status, not
    # the ledger, and a transaction is refused when one of its items is
    loader = deployed.client("dynamodb", "loader")
    query = {"TableName": f"{o['TablePrefix']}files", "KeyConditionExpression": "#t = :t",
             "ExpressionAttributeValues": {":t": {"S": "page_views"}}}
    loader.query(IndexName="pending", ExpressionAttributeNames={"#t": "pending_table"}, **query)
    with pytest.raises(ClientError, match="AccessDenied"):
        loader.query(IndexName="staged", ExpressionAttributeNames={"#t": "target_table"},
                     **query)
    consumer = deployed.client("dynamodb", "consumer")
    status = {"stream": {"S": "s"}, "shard_id": {"S": "x"}}
    consumer.put_item(TableName=f"{o['TablePrefix']}history",
                      Item={"shard_key": {"S": "s/x"}, "id": {"N": "1"}})
    with pytest.raises(ClientError, match="AccessDenied"):
        consumer.put_item(TableName=f"{o['TablePrefix']}files", Item={"s3_key": {"S": "k"}})
    put_history = {"Put": {"TableName": f"{o['TablePrefix']}history",
                           "Item": {"shard_key": {"S": "s/x"}, "id": {"N": "2"}}}}
    consumer.transact_write_items(TransactItems=[put_history])
    with pytest.raises(ClientError, match="AccessDenied"):  # no DeleteItem on its status
        consumer.transact_write_items(TransactItems=[put_history, {"Delete": {
            "TableName": f"{o['TablePrefix']}status", "Key": status}}])


def test_stack_made_what_the_settings_name(deployed):
    """The outputs name the resources; the control tables are exactly the store's; each
    role's policy is deploy/iam/'s file with the stack's values filled in."""
    o = deployed.outputs
    ddb = deployed.client("dynamodb")
    specs = table_specs({t: f"{o['TablePrefix']}{t}" for t in TABLES})
    for spec in specs:
        table = ddb.describe_table(TableName=spec["TableName"])["Table"]
        assert table["KeySchema"] == spec["KeySchema"], spec["TableName"]
        assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
        assert sorted(g["IndexName"] for g in table.get("GlobalSecondaryIndexes", [])) == \
            sorted(g["IndexName"] for g in spec.get("GlobalSecondaryIndexes", []))
    summary = deployed.client("kinesis").describe_stream_summary(
        StreamName=o["StreamName"])["StreamDescriptionSummary"]
    assert (summary["StreamARN"], summary["OpenShardCount"]) == (o["StreamArn"], 2)
    deployed.client("s3").head_bucket(Bucket=o["BucketName"])

    account = o["ConsumerRoleArn"].split(":")[4]
    values = {"AWS::Partition": "aws", "AWS::Region": o["Region"], "AWS::AccountId": account,
              "StreamName": o["StreamName"], "BucketName": o["BucketName"],
              "S3Prefix": o["S3Prefix"], "TablePrefix": o["TablePrefix"],
              "LakeDatabase": o["LakeDatabase"]}
    for component in COMPONENTS:
        from_file = json.loads((ROOT / "deploy" / "iam" / f"shardline-{component}.json")
                               .read_text())
        assert deployed.role_policy(component) == iam_policies.resolve(from_file, values), \
            component


# -- the pipeline on the stack ------------------------------------------------------------


@dataclass
class Pipeline:
    """Consumers, a stage worker and the loader as processes, each with its own keys."""

    deployed: Deployed
    base_env: dict[str, str]
    log_dir: Path
    proxy: KinesisIamProxy
    procs: list[tuple[str, subprocess.Popen, Path]] = field(default_factory=list)

    def env(self, who: str) -> dict[str, str]:
        key, secret = self.deployed.keys[who]
        env = {**self.base_env, "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret}
        env.pop("AWS_SESSION_TOKEN", None)
        return env

    def start(self, name: str, who: str, *args: str) -> None:
        log = self.log_dir / f"{name}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen([SHARDLINE, *args], env=self.env(who), stdout=out,
                                    stderr=subprocess.STDOUT)
        self.procs.append((name, proc, log))

    def start_all(self, shards: list[str], who: dict[str, str] | None = None) -> None:
        who = {c: c for c in ("consumer", "stage-worker", "loader")} | (who or {})
        for shard in shards:
            self.start(f"consumer-{shard}", who["consumer"], "consumer", "--shard", shard)
        self.start("stage-worker", who["stage-worker"], "worker", "--functions", "stage")
        self.start("loader", who["loader"], "loader")

    def used(self, who: str) -> set[tuple[str, str]]:
        """(action, resource) of every request of ``who`` that the checks let through."""
        key = self.deployed.keys[who][0]
        lines = self.deployed.iam_log.read_text().splitlines()
        return ({(a, r) for k, a, r in map(json.loads, lines) if k == key}
                | {(a, r) for k, a, r in self.proxy.allowed if k == key})

    def logs(self, tail: int = 2000) -> str:
        return "\n".join(f"--- {n} (exit {p.poll()})\n{path.read_text(errors='replace')[-tail:]}"
                         for n, p, path in self.procs)

    def stop(self) -> None:
        for _, proc, _ in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc, _ in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@pytest.fixture
def pipeline(deployed, stack_env, kinesis, tmp_path) -> Iterator[Pipeline]:
    """The stack's stream made in kinesalite (see the module docstring), the warehouse
    migrated; the processes are stopped afterwards."""
    o = deployed.outputs
    shards = deployed.client("kinesis").describe_stream_summary(
        StreamName=o["StreamName"])["StreamDescriptionSummary"]["OpenShardCount"]
    kinesis.create_stream(StreamName=o["StreamName"], ShardCount=shards)
    wait_active(kinesis, o["StreamName"])
    account = o["ConsumerRoleArn"].split(":")[4]
    with KinesisIamProxy(stack_env["SHARDLINE_KINESIS_ENDPOINT_URL"],
                         deployed.policies.get, account) as proxy:
        base = {**stack_env, **FAST, **deployed.settings_env(),
                "SHARDLINE_KINESIS_ENDPOINT_URL": proxy.url}
        p = Pipeline(deployed, base, tmp_path, proxy)
        shardline("migrate", env=p.env("operator"))  # the warehouse (PostgreSQL: no IAM)
        yield p
        p.stop()


def _produce(p: Pipeline, count: int, seed: int) -> dict:
    summary, ids = p.log_dir / "produced.json", p.log_dir / "ids.txt"
    # producers are the front ends' (not a role of this stack); kinesalite checks no key
    shardline("produce", "--stream", p.deployed.outputs["StreamName"], "--count", str(count),
              "--rate", "0", "--bad-fraction", "0.03", "--seed", str(seed), "--summary-json",
              str(summary), "--ids-file", str(ids), "--quiet", env=p.env("admin"))
    produced = json.loads(summary.read_text())
    produced["ids"] = set(ids.read_text().split())
    return produced


def _shards(kinesis: Any, stream: str) -> list[str]:
    return sorted(s["ShardId"] for s in kinesis.list_shards(StreamName=stream)["Shards"])


def _rows(pg_conn) -> set[str]:
    with pg_conn.cursor() as cur:
        cur.execute("SELECT event_id FROM page_views")
        return {r[0] for r in cur.fetchall()}


def test_pipeline_runs_on_the_stack_each_component_with_its_own_policy(
        deployed, pipeline, kinesis, pg_conn):
    o = deployed.outputs
    # the operator sets up: the control store is the stack's, nothing to create or add
    out = shardline("migrate", "--control", env=pipeline.env("operator"))
    assert "AccessDenied" not in out.stdout + out.stderr
    produced = _produce(pipeline, 3000, seed=5)
    t = time.monotonic()
    pipeline.start_all(_shards(kinesis, o["StreamName"]))
    try:
        wait_for(lambda: _rows(pg_conn) >= produced["ids"], 180, "every valid event loaded")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{pipeline.logs()}") from None
    print(f"{len(produced['ids'])} events loaded in {time.monotonic() - t:.1f}s")
    assert _rows(pg_conn) == produced["ids"]
    prefix = o["S3Prefix"]
    wait_for(lambda: len(dead_letters(deployed.client("s3"), o["BucketName"], prefix))
             == produced["bad"], 30, "every malformed record dead-lettered")
    # the archive is where the lifecycle rule expects it
    archived = deployed.client("s3").list_objects_v2(Bucket=o["BucketName"],
                                                     Prefix=f"{prefix}/archive/")
    assert archived.get("KeyCount", 0) > 0

    # the operator's commands, with the operator's policy
    stream = o["StreamName"]
    status = shardline("status", "--stream", stream, env=pipeline.env("operator"), check=False)
    assert status.returncode == 0, status.stdout + status.stderr
    shard = _shards(kinesis, stream)[0]
    history = shardline("replay", "--list", "--stream", stream, "--shard", shard,
                        env=pipeline.env("operator"))
    assert "consumer" in history.stdout
    # (before redrive adds dead letters) status of every stream the store knows; the
    # stream's whole history
    every = shardline("status", "--all-streams", env=pipeline.env("operator"), check=False)
    assert every.returncode == 0, every.stdout + every.stderr
    shardline("replay", "--list", "--stream", stream, env=pipeline.env("operator"))
    # redrive lists and reads the dead letters and records its run; the stage worker
    # stages them again (the same transform rejects them again); a second run reads the
    # first one's record and sends nothing again
    for _ in range(2):
        redrive = shardline("redrive", "--stream", stream, env=pipeline.env("operator"),
                            check=False)
        assert redrive.returncode == 0, redrive.stdout + redrive.stderr
    runs = deployed.client("s3").list_objects_v2(Bucket=o["BucketName"],
                                                 Prefix=f"{prefix}/redrive/{stream}/")
    assert runs.get("KeyCount", 0) >= 1
    # reprocess from the raw archive: reads it, stages it again under a generation of its
    # own (the workers), records its run; the loader replaces the ranges
    reprocess = shardline("reprocess", "--stream", stream, "--all-shards", "--from-archive",
                          "--reason", "deploy test", "--yes", env=pipeline.env("operator"),
                          check=False)
    assert reprocess.returncode == 0, reprocess.stdout + reprocess.stderr

    # replay moves a stopped consumer's checkpoint: to the start, back to a history entry,
    # to a sequence number, to the first record at a time (found by reading the stream)
    pipeline.stop()
    listed = shardline("replay", "--list", "--full", "--stream", stream, "--shard", shard,
                       env=pipeline.env("operator")).stdout.splitlines()
    # ID, TIME (date and time), SHARD, SEQUENCE, SUB, MODE, SOURCE, ...: a consumer's entry
    entry_id, seq = next((p[0], p[4]) for p in map(str.split, listed[1:])
                         if p[7] == "consumer" and p[6] in ("at", "after"))
    an_hour_ago = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))
    for where in (["--trim-horizon"], ["--to-checkpoint", entry_id], ["--at-sequence", seq],
                  ["--at-timestamp", an_hour_ago]):
        shardline("replay", "--stream", stream, "--shard", shard, *where, "--reason",
                  "deploy test", "--yes", env=pipeline.env("operator"))
    assert "AccessDenied" not in pipeline.logs(tail=10**9)

    # every right of these policies was used (least privilege, the other way round), but
    # for what this run does not do, each named with why
    not_run = {
        "loader": {("s3:PutObject", "/combined/*")},  # the Redshift dialect's COPY parts
        # the lake (lake.tables) is off in this run: migrate's Glue part, lake compact
        "operator": {*((f"glue:{a}", r) for a in ("GetDatabase", "CreateDatabase", "GetTable",
                                                   "CreateTable", "UpdateTable")
                       for r in (":catalog", ":database/shardline",
                                 ":table/shardline/*")),
                     ("s3:GetObject", "/lake/*"), ("s3:PutObject", "/lake/*")},
    }
    for who in ("consumer", "stage-worker", "loader", "operator"):
        unused = [(sid, a, r) for sid, a, r in unused_rights(deployed.role_policy(who),
                                                              pipeline.used(who))
                  if not any(a == na and r.endswith(nr) for na, nr in not_run.get(who, ()))]
        assert unused == [], f"{who}: rights no request needed: {unused}"


def weaken(policy: dict, sid: str, right: str) -> dict:
    """``policy`` without one right of statement ``sid``: an action (``service:Name``) or a
    resource (matched by its ending); a statement left with nothing goes."""
    out = copy.deepcopy(policy)
    st, = [s for s in out["Statement"] if s.get("Sid") == sid]
    field_, match = (("Action", right.__eq__)
                     if right.split(":")[0] in ("s3", "dynamodb", "kinesis")
                     else ("Resource", lambda r: r.endswith(right)))
    kept = [v for v in _listed(st[field_]) if not match(v)]
    assert len(kept) == len(_listed(st[field_])) - 1, f"{right} is not a right of {sid}"
    if kept:
        st[field_] = kept
    else:
        out["Statement"].remove(st)
    return out


@pytest.mark.parametrize("component, sid, right, operation", [
    # S3, checked per key: a batch with a malformed record cannot write its dead letters
    pytest.param("stage-worker", "WriteBatches", "/dead-letter/*", "PutObject",
                 id="stage-worker-without-dead-letter-put"),
    # DynamoDB, checked per index: the loader cannot find the pending files
    pytest.param("loader", "LedgerIndexes", "/index/pending", "Query",
                 id="loader-without-the-pending-index"),
    # DynamoDB, checked per transaction item: a checkpoint adds a history entry
    pytest.param("consumer", "History", "dynamodb:PutItem", "TransactWriteItems",
                 id="consumer-without-history-put"),
    # Kinesis, checked by tests/kinesis_iam.py
    pytest.param("consumer", "ReadStream", "kinesis:GetRecords", "GetRecords",
                 id="consumer-without-get-records"),
])
def test_a_right_taken_away_fails_its_component(deployed, pipeline, kinesis, component, sid,
                                                right, operation):
    """The policies are what the code needs, no less: one right fewer, and the component
    that uses it is refused (the same pipeline with the full policies ran clean above)."""
    deployed.add_user(f"{component}-weak", moto_view(weaken(deployed.role_policy(component),
                                                            sid, right)))
    _produce(pipeline, 1000, seed=7)
    # a refused pipeline has nothing worth draining at the end: stop it without waiting
    pipeline.base_env["SHARDLINE_CONSUMER_SHUTDOWN_TIMEOUT_S"] = "1"
    pipeline.start_all(_shards(kinesis, deployed.outputs["StreamName"]),
                       who={component: f"{component}-weak"})
    # botocore: "An error occurred (AccessDenied) when calling the PutObject operation"; for
    # DynamoDB moto answers in XML, so the line reads "(403) when calling the Query
    # operation: <?xml ...<Code>AccessDenied</Code>..."
    denied = "AccessDenied"

    def refused() -> bool:
        return any(denied in text and f"calling the {operation} operation" in text
                   for name, _, path in pipeline.procs if name.startswith(component)
                   for text in [path.read_text(errors="replace")])

    try:
        wait_for(refused, 90, f"{component} refused {operation}")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{pipeline.logs()}") from None
    others = [n for n, _, p in pipeline.procs
              if not n.startswith(component) and denied in p.read_text(errors="replace")]
    assert not others, f"refused in {others} too: the rights taken away were {component}'s"


def _agent(deployed: Deployed, env: dict[str, str], include: Path, monkeypatch) -> Any:
    """``shardline agent``'s Agent, in this process, over clients made with ``env``'s keys
    (boto3 takes them from the environment when a client is made) and a fake supervisord:
    what matters here is what it asks of AWS."""
    from shardline import kinesis as kinesis_mod
    from shardline.controlstore import open_store
    from shardline.fleet.agent import Agent, IncludeFile
    from shardline.ops.supervisor_render import render_consumers
    from shardline.settings import load
    from tests.fake_supervisor import FakeSupervisor

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, env[name])
    # boto3's default session keeps the credentials it found first: a new one reads these
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    settings = load(None, env={k: v for k, v in env.items() if k.startswith("SHARDLINE_")})
    stream = settings.kinesis.stream
    client = kinesis_mod.kinesis_client(settings, botocore_retries=3)
    return Agent(stream=stream, host_id="host-1", store=open_store(settings),
                 leases=open_store(settings),
                 list_shards=lambda: kinesis_mod.list_shards(client, stream),
                 supervisor=FakeSupervisor(include),
                 include=IncludeFile(include, lambda shards: render_consumers(
                     stream=stream, shards=shards, include=str(include),
                     shardline_cmd=["/bin/true"], settings=settings, host_id="host-1")),
                 poll_s=1.0, heartbeat_ttl_s=2.0)


def test_agent_assigns_the_shards_with_its_own_policy(deployed, pipeline, kinesis, tmp_path,
                                                      monkeypatch):
    """The agent (heartbeat, live hosts, shard list, checkpoints, assignments) with the
    agent's policy; without its Scan of the hosts table it is refused."""
    from botocore.exceptions import ClientError

    stream = deployed.outputs["StreamName"]
    agent = _agent(deployed, pipeline.env("agent"), tmp_path / "consumers.conf", monkeypatch)
    for now in (100.0, 103.0, 104.0):  # the first poll waits a heartbeat TTL to lead
        agent.step(now)
    assert agent.store.assignments(stream) == {s: "host-1" for s in _shards(kinesis, stream)}
    assert [h.host_id for h in agent.store.live_hosts()] == ["host-1"]
    not_run = {("dynamodb:DeleteItem", "_hosts"),  # leaving when supervisord is gone too
               ("dynamodb:DeleteItem", "_assignments"),  # a shard past SHARD_END
               # `shardline agent`'s start-up check (shardline.preflight, as every other
               # component's here); this test drives the agent's step() itself
               ("dynamodb:DescribeTable", "_*"),
               # more shards waiting to start than agent.LEASE_GETS_MAX: the stream's leases
               # in one query (here only a few wait, each read by GetItem)
               ("dynamodb:Query", "_leases")}
    unused = [(sid, a, r) for sid, a, r in unused_rights(deployed.role_policy("agent"),
                                                          pipeline.used("agent"))
              if not any(a == na and r.endswith(nr) for na, nr in not_run)]
    assert unused == [], f"agent: rights no request needed: {unused}"

    deployed.add_user("agent-weak", moto_view(weaken(deployed.role_policy("agent"), "Hosts",
                                                     "dynamodb:Scan")))
    weak = _agent(deployed, pipeline.env("agent-weak"), tmp_path / "weak.conf", monkeypatch)
    with pytest.raises(ClientError, match="AccessDenied"):
        weak.step(100.0)
