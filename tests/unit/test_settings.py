"""Settings: file < env < flags, unknown keys and bad values stop with a message naming the key."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shardline import settings as s
from shardline.errors import ConfigError
from shardline.exitcodes import ExitCode


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "shardline.ini"
    path.write_text(text)
    return path


def test_defaults_when_nothing_is_given(tmp_path):
    cfg = s.load(None, env={}, overrides={})
    assert cfg.consumer.iterator_max_age_s == 60
    assert cfg.consumer.initial_position == "TRIM_HORIZON"
    assert cfg.gearman.servers == ["127.0.0.1:4730"]


def test_precedence_file_then_env_then_flags(tmp_path):
    path = write(tmp_path, "[consumer]\nbatch_max_records = 100\nidle_sleep_s = 2\n"
                           "[gearman]\nservers = a:1, b:2\n")
    cfg = s.load(path, env={"SHARDLINE_CONSUMER_BATCH_MAX_RECORDS": "200"},
                 overrides={"consumer.idle_sleep_s": "0.5"})
    assert cfg.consumer.batch_max_records == 200      # env beats file
    assert cfg.consumer.idle_sleep_s == 0.5           # flag beats file
    assert cfg.gearman.servers == ["a:1", "b:2"]      # file beats default


@pytest.mark.parametrize("text, needle", [
    ("[consumer]\nbatch_max_recods = 5\n", "consumer.batch_max_recods"),
    ("[consumr]\nbatch_max_records = 5\n", "[consumr]"),
    ("[gearman]\nservers = 127.0.0.1:99999\n", "gearman.servers"),
    ("[kinesis]\nendpoint_url = http://127.0.0.1:0x50\n", "kinesis.endpoint_url"),
    ("[consumer]\nget_records_limit = 20000\n", "consumer.get_records_limit"),
    ("[consumer]\nbatch_max_records = many\n", "consumer.batch_max_records"),
    ("[consumer]\ninitial_position = EARLIEST\n", "consumer.initial_position"),
    ("[worker]\ntransform = not a path\n", "worker.transform"),
])
def test_bad_file_names_the_key(tmp_path, text, needle):
    with pytest.raises(ConfigError) as err:
        s.load(write(tmp_path, text), env={})
    assert needle in str(err.value)


def test_unknown_env_var_is_an_error():
    with pytest.raises(ConfigError, match="SHARDLINE_CONSUMER_BATCH_SIZE"):
        s.load(None, env={"SHARDLINE_CONSUMER_BATCH_SIZE": "3"})
    with pytest.raises(ConfigError, match="SHARDLINE_NOPE"):
        s.load(None, env={"SHARDLINE_NOPE": "3"})


def test_secrets_are_refused_and_not_echoed():
    with pytest.raises(ConfigError) as err:
        s.load(None, env={"SHARDLINE_WAREHOUSE_DSN": "host=h user=u password=hunter2"})
    assert "hunter2" not in str(err.value) and "password" in str(err.value)
    with pytest.raises(ConfigError) as err:
        s.load(None, env={"SHARDLINE_WAREHOUSE_DSN": "postgresql://u:hunter2@h/db"})
    assert "hunter2" not in str(err.value)
    with pytest.raises(ConfigError) as err:
        s.load(None, env={"SHARDLINE_S3_ENDPOINT_URL": "http://key:hunter2@127.0.0.1:9000"})
    assert "hunter2" not in str(err.value)


def test_cross_field_rules():
    with pytest.raises(ConfigError, match="lease_renew_s"):
        s.load(None, env={"SHARDLINE_CONSUMER_LEASE_TTL_S": "10",
                          "SHARDLINE_CONSUMER_LEASE_RENEW_S": "8"})
    with pytest.raises(ConfigError, match="initial_timestamp"):
        s.load(None, env={"SHARDLINE_CONSUMER_INITIAL_POSITION": "AT_TIMESTAMP"})


def test_replace_validates_and_copies():
    base = s.load(None, env={})
    changed = base.replace(**{"consumer.batch_max_records": "7"})
    assert changed.consumer.batch_max_records == 7
    assert base.consumer.batch_max_records == 500
    with pytest.raises(ConfigError):
        base.replace(**{"consumer.batch_max_records": "0"})


def test_require_names_the_env_var():
    with pytest.raises(ConfigError, match="SHARDLINE_S3_BUCKET"):
        s.load(None, env={}).require("s3.bucket")


def test_missing_explicit_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        s.load(tmp_path / "nope.ini", env={})


@pytest.mark.parametrize("text, key", [("[consumer]\nbatch_max_recods = 5\n", "batch_max_recods"),
                                       ("[gearman]\nservers = h:70000\n", "gearman.servers")])
def test_cli_exits_with_config_code_and_names_the_key(tmp_path, text, key):
    path = write(tmp_path, text)
    proc = subprocess.run([sys.executable, "-m", "shardline.cli", "settings", "--check",
                           "--config", str(path)], capture_output=True, text=True)
    assert proc.returncode == ExitCode.CONFIG
    assert key in proc.stderr


def test_describe_lists_every_key_with_its_env_var():
    rows = {key: env for key, env, _, _ in s.describe()}
    assert rows["consumer.iterator_max_age_s"] == "SHARDLINE_CONSUMER_ITERATOR_MAX_AGE_S"
    assert len(rows) > 40


# Names from settings reach SQL text (S3 URLs in COPY, schema and table names), S3 keys
# and Gearman packets: anything but a plain name is refused at start, value not echoed.
@pytest.mark.parametrize("key,value", [
    ("warehouse.schema", 'public"; DROP TABLE page_views; --'),
    ("warehouse.schema", "Public"),
    ("worker.target_table", "page_views; DELETE FROM leases"),
    ("worker.target_table", "a" * 64),
    ("s3.bucket", "my_bucket"),
    ("s3.bucket", "bucket' IAM_ROLE 'x"),
    ("s3.bucket", "ab"),
    ("s3.bucket", "192.168.1.1"),
    ("s3.prefix", "/leading"),
    ("s3.prefix", "trailing/"),
    ("s3.prefix", "a/../b"),
    ("s3.prefix", "it's"),
    ("s3.prefix", "a//b"),
    ("kinesis.stream", "page views"),
    ("kinesis.stream", "x" * 129),
    ("gearman.stage_function", "stage job"),
    ("gearman.stage_function", "stage\x00"),
    ("warehouse.iam_role", "arn:aws:iam::1234:role/x' CREDENTIALS 'y"),
])
def test_names_that_reach_sql_keys_or_packets_are_validated(key, value):
    with pytest.raises(ConfigError) as info:
        s.load(None, env={}, overrides={key: value})
    assert str(info.value).startswith(key)
    assert value not in str(info.value)


@pytest.mark.parametrize("key,value", [
    ("s3.bucket", "shardline-dev"), ("s3.bucket", "logs.example.com"),
    ("s3.prefix", "prod/events"), ("s3.prefix", "t/loader-x-1a2b3c4d"), ("s3.prefix", "dt=2026"),
    ("kinesis.stream", "page-views_v2.prod"), ("gearman.stage_function", "shardline_stage"),
    ("warehouse.iam_role", "arn:aws:iam::123456789012:role/service-role/RedshiftCopy"),
    ("warehouse.iam_role", "arn:aws-cn:iam::123456789012:role/copy"),
    ("warehouse.iam_role", "arn:aws:iam::123456789012:role/a,arn:aws:iam::210987654321:role/b"),
])
def test_plain_names_are_accepted(key, value):
    cfg = s.load(None, env={}, overrides={key: value})
    section, name = key.split(".")
    assert getattr(getattr(cfg, section), name) == value


def test_settings_doc_is_current():
    # Regenerate with `shardline settings --markdown > docs/settings.md`.
    doc = (Path(__file__).resolve().parents[2] / "docs" / "settings.md").read_text()
    assert doc == s.markdown()


def test_settings_markdown_has_one_row_per_setting():
    rows = [line for line in s.markdown().splitlines() if line.startswith("| `")]
    assert rows == [f"| `{k}` | `{e}` | `{d}` | {h} |" for k, e, d, h in s.describe()]
    assert len(rows) == len(s.describe()) > 50
