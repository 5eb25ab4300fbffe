"""deploy/iam/*.json from deploy/shardline.yaml: the template is the one source of the IAM
policies, these files are its policies for people who make the roles by hand.

    .venv/bin/python deploy/iam_policies.py           # rewrite deploy/iam/
    .venv/bin/python deploy/iam_policies.py --check   # exit 1 if deploy/iam/ is stale

Each role's policy becomes ``iam/<PolicyName>.json`` and its trust policy
``iam/<PolicyName>.trust.json``. Intrinsic functions become ``${...}`` placeholders, the
same ones the template's ``Fn::Sub`` strings use: ``${BucketName}``, ``${S3Prefix}``,
``${StreamName}``, ``${TablePrefix}``, ``${ComponentPrincipalService}``, ``${AWS::Partition}``,
``${AWS::Region}``, ``${AWS::AccountId}`` (``resolve()`` fills them in; deploy/README.md).
A ``GetAtt X.Arn`` becomes X's ARN built from its name, so the files name the same
resources the stack's roles do (tests/integration/test_deploy_stack.py compares them with
the roles the stack made).

Needs cfn-lint (the dev extra) for its CloudFormation YAML reader (``!Sub`` and friends).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "shardline.yaml"
IAM_DIR = HERE / "iam"

# ARNs of the resource types the policies name, from the resource's name property.
_ARNS = {
    "AWS::Kinesis::Stream": ("Name", "arn:${AWS::Partition}:kinesis:${AWS::Region}:"
                                     "${AWS::AccountId}:stream/%s"),
    "AWS::DynamoDB::Table": ("TableName", "arn:${AWS::Partition}:dynamodb:${AWS::Region}:"
                                          "${AWS::AccountId}:table/%s"),
    "AWS::S3::Bucket": ("BucketName", "arn:${AWS::Partition}:s3:::%s"),
}


def load_template(path: Path = TEMPLATE) -> dict:
    from cfnlint.decode import cfn_yaml  # the dev extra; reads !Sub, !GetAtt, !Ref

    return cfn_yaml.load(str(path))


def _arn(template: dict, logical_id: str) -> str:
    resource = template["Resources"][logical_id]
    prop, pattern = _ARNS[resource["Type"]]
    return pattern % render(template, resource["Properties"][prop])


def render(template: dict, value: Any) -> Any:
    """``value`` with every intrinsic function replaced by its ``${...}`` string."""
    if isinstance(value, list):
        return [render(template, v) for v in value]
    if not isinstance(value, dict):
        return str(value) if isinstance(value, str) else value
    if set(value) == {"Ref"}:
        name = value["Ref"]
        if name in template.get("Parameters", {}) or name.startswith("AWS::"):
            return "${%s}" % name
        raise ValueError(f"Ref {name}: only parameters are rendered (use GetAtt .Arn)")
    if set(value) == {"Fn::GetAtt"}:
        logical_id, attribute = value["Fn::GetAtt"]
        if attribute != "Arn":
            raise ValueError(f"GetAtt {logical_id}.{attribute}: only .Arn is rendered")
        return _arn(template, logical_id)
    if set(value) == {"Fn::Sub"}:
        text = value["Fn::Sub"]
        if not isinstance(text, str):
            raise ValueError("Fn::Sub with a variable map is not rendered")
        return re.sub(r"\$\{([A-Za-z0-9]+)\.Arn\}", lambda m: _arn(template, m.group(1)), text)
    return {k: render(template, v) for k, v in value.items()}


def policies(template: dict) -> dict[str, dict]:
    """File name -> document: every role's policies and its trust policy."""
    out = {}
    for resource in template["Resources"].values():
        if resource["Type"] != "AWS::IAM::Role":
            continue
        props = resource["Properties"]
        names = []
        for policy in props.get("Policies", []):
            names.append(policy["PolicyName"])
            out[f"{policy['PolicyName']}.json"] = render(template, policy["PolicyDocument"])
        if len(names) != 1:
            raise ValueError("each role has exactly one inline policy, named for its component")
        out[f"{names[0]}.trust.json"] = render(template, props["AssumeRolePolicyDocument"])
    return out


def dumps(document: dict) -> str:
    return json.dumps(document, indent=2) + "\n"


def resolve(document: Any, values: dict[str, str]) -> Any:
    """A rendered document with its ``${Name}`` placeholders filled in from ``values``."""
    text = json.dumps(document)

    def one(m: re.Match) -> str:
        if m.group(1) not in values:
            raise KeyError(f"no value for ${{{m.group(1)}}}")
        return values[m.group(1)]

    return json.loads(re.sub(r"\$\{([A-Za-z0-9:]+)\}", one, text))


def stale(template_path: Path = TEMPLATE, iam_dir: Path = IAM_DIR) -> list[str]:
    """Files of ``iam_dir`` that differ from the template's policies, or are missing or extra."""
    want = {name: dumps(doc) for name, doc in policies(load_template(template_path)).items()}
    have = {p.name: p.read_text() for p in iam_dir.glob("*.json")} if iam_dir.exists() else {}
    return sorted(n for n in want.keys() | have.keys() if want.get(n) != have.get(n))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="only check that deploy/iam/ matches the template (exit 1 if not)")
    args = parser.parse_args(argv)
    if args.check:
        bad = stale()
        if bad:
            print(f"deploy/iam/ differs from deploy/shardline.yaml: {', '.join(bad)}; run "
                  f"python deploy/iam_policies.py", file=sys.stderr)
            return 1
        return 0
    IAM_DIR.mkdir(exist_ok=True)
    want = policies(load_template())
    for old in IAM_DIR.glob("*.json"):
        if old.name not in want:
            old.unlink()
    for name, doc in sorted(want.items()):
        (IAM_DIR / name).write_text(dumps(doc))
    print(f"wrote {len(want)} files to {IAM_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
