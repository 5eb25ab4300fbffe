"""The deploy kit (deploy/): cfn-lint is clean, deploy/iam/ is the template's policies, the
control tables are exactly the store's, the archive's lifecycle rule is the documented one.

The stack itself is created in moto and the pipeline run on it in
tests/integration/test_deploy_stack.py.
"""
from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shardline.controlstore.dynamodb_schema import TABLES, table_specs

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CFN_LINT = str(Path(sys.executable).parent / "cfn-lint")


def _iam_policies():
    spec = importlib.util.spec_from_file_location("deploy_iam_policies",
                                                  DEPLOY / "iam_policies.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


iam_policies = _iam_policies()


@pytest.fixture(scope="module")
def template() -> dict:
    return iam_policies.load_template()


def _lint(*paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run([CFN_LINT, *map(str, paths)], capture_output=True, text=True,
                          timeout=180)


def test_cfn_lint_is_clean_on_every_template():
    templates = sorted(DEPLOY.glob("*.yaml"))
    assert templates, "no template in deploy/"
    result = _lint(*templates)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cfn_lint_fails_a_broken_template(tmp_path):
    """The lint above can fail: an unknown property and a misspelt IAM action are reported."""
    broken = (DEPLOY / "shardline.yaml").read_text()
    broken = broken.replace("ShardCount: !Ref ShardCount", "ShardCount: !Ref ShardCount\n"
                            "      ShardCounts: 2", 1)
    broken = broken.replace("kinesis:GetRecords]", "kinesis:GetRecordz]", 1)
    path = tmp_path / "broken.yaml"
    path.write_text(broken)
    result = _lint(path)
    assert result.returncode != 0
    assert "ShardCounts" in result.stdout, result.stdout
    assert "getrecordz" in result.stdout.lower(), result.stdout  # W3037: a warning fails too


def test_iam_files_are_the_templates_policies():
    assert iam_policies.stale() == [], "run: python deploy/iam_policies.py"


def test_a_template_edit_makes_the_iam_files_stale(tmp_path):
    edited = tmp_path / "shardline.yaml"
    edited.write_text((DEPLOY / "shardline.yaml").read_text().replace(
        "Action: [dynamodb:PutItem, dynamodb:GetItem]", "Action: dynamodb:PutItem", 1))
    iam_copy = tmp_path / "iam"
    shutil.copytree(DEPLOY / "iam", iam_copy)
    assert iam_policies.stale(edited, iam_copy) == ["shardline-stage-worker.json"]
    (iam_copy / "old.json").write_text("{}")  # a file no role has any more is stale too
    assert "old.json" in iam_policies.stale(edited, iam_copy)


def test_one_role_per_component_and_the_copy_role(template):
    files = sorted(p.name for p in (DEPLOY / "iam").glob("*.json"))
    components = ("agent", "consumer", "lake-loader", "loader", "operator", "redshift-copy",
                  "stage-worker")
    assert files == sorted(f"shardline-{c}{ext}" for c in components
                           for ext in (".json", ".trust.json"))
    copy_trust = json.loads((DEPLOY / "iam" / "shardline-redshift-copy.trust.json").read_text())
    assert copy_trust["Statement"][0]["Principal"] == {"Service": "redshift.amazonaws.com"}


def test_no_wildcard_actions_and_s3_rights_stop_at_the_prefix():
    """Least privilege, in the shape the policies can be checked here: every action named,
    every S3 object right under ``${S3Prefix}/<kind>/``, no right on other buckets."""
    for path in (DEPLOY / "iam").glob("shardline-*[!t].json"):
        doc = json.loads(path.read_text())
        for st in doc["Statement"]:
            actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
            resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
            assert all("*" not in a for a in actions), (path.name, st["Sid"])
            assert st["Effect"] == "Allow"
            for action in actions:
                if action in ("s3:GetObject", "s3:PutObject"):
                    assert all(re.fullmatch(r"arn:\$\{AWS::Partition\}:s3:::\$\{BucketName\}/"
                                            r"\$\{S3Prefix\}/[a-z-]+/\*", r)
                               for r in resources), (path.name, st["Sid"])
                if action == "s3:ListBucket":
                    assert st["Condition"]["StringLike"]["s3:prefix"], (path.name, st["Sid"])
                if action.startswith("dynamodb:") and action != "dynamodb:ListTables":
                    assert all(":table/${TablePrefix}" in r for r in resources), (path.name,
                                                                                   st["Sid"])


def test_control_tables_are_the_stores(template):
    """Names, keys, indexes and billing exactly as ``table_specs`` (what ``migrate --control``
    would create), so the store finds its tables and nothing to add."""
    want = {spec["TableName"]: spec for spec in
            table_specs({name: "${TablePrefix}" + name for name in TABLES})}
    have = {}
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::DynamoDB::Table":
            props = iam_policies.render(template, resource["Properties"])
            have[props["TableName"]] = props

    def norm(spec: dict) -> dict:
        return {
            "BillingMode": spec["BillingMode"],
            "KeySchema": spec["KeySchema"],
            "AttributeDefinitions": sorted(spec["AttributeDefinitions"],
                                           key=lambda a: a["AttributeName"]),
            "GlobalSecondaryIndexes": sorted(spec.get("GlobalSecondaryIndexes", []),
                                             key=lambda g: g["IndexName"]),
        }

    assert sorted(have) == sorted(want)
    for name, spec in want.items():
        assert norm(have[name]) == norm(spec), name


def test_archive_lifecycle_rule_is_the_documented_one(template):
    """docs/iterating.md: {prefix}/archive/ to STANDARD_IA after 30 days, expired after 400."""
    bucket = iam_policies.render(template, template["Resources"]["Bucket"]["Properties"])
    rule, = [r for r in bucket["LifecycleConfiguration"]["Rules"]
             if r["Id"] == "shardline-archive"]
    params = template["Parameters"]
    assert rule["Status"] == "Enabled"
    assert rule["Prefix"] == "${S3Prefix}/archive/"
    assert rule["Transitions"] == [{"StorageClass": "STANDARD_IA",
                                    "TransitionInDays": "${ArchiveInfrequentAccessDays}"}]
    assert rule["ExpirationInDays"] == "${ArchiveExpirationDays}"
    assert (params["ArchiveInfrequentAccessDays"]["Default"],
            params["ArchiveExpirationDays"]["Default"]) == (30, 400)
    assert template["Resources"]["Bucket"]["DeletionPolicy"] == "Retain"


def test_outputs_fill_every_aws_setting(template):
    """Each setting that names an AWS resource has an output (deploy/README.md's table)."""
    described = {str(o.get("Description", "")).split(" ")[0]
                 for o in template["Outputs"].values()}
    for setting in ("aws.region", "kinesis.stream", "s3.bucket", "s3.prefix",
                    "control.table_prefix", "warehouse.iam_role"):
        assert setting in described, setting
