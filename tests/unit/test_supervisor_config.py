"""supervisor-config: the generated text, checked as text and through supervisord's own parser."""
from __future__ import annotations

import configparser
import re
import shlex
from pathlib import Path

import pytest

from shardline.errors import ConfigError
from shardline.kinesis import ShardInfo
from shardline.ops import supervisor_config as sc
from shardline.ops.supervisor_render import TailProgram, render, select_shards
from shardline.settings import Settings

OPEN0 = ShardInfo("shardId-000000000000")
OPEN1 = ShardInfo("shardId-000000000001")
CLOSED1 = ShardInfo("shardId-000000000001", closed=True)
CHILD2 = ShardInfo("shardId-000000000002", parent="shardId-000000000001")
CHILD3 = ShardInfo("shardId-000000000003", parent="shardId-000000000001")


def _render(tmp_path: Path, shards, shard_end=frozenset(), **kw) -> str:
    kw.setdefault("settings", Settings())
    kw.setdefault("shardline_cmd", ["/opt/shardline/bin/shardline"])
    return render(stream="clicks", shards=select_shards(shards, set(shard_end)),
                     out_dir=str(tmp_path), **kw)


def _sections(text: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(inline_comment_prefixes=(";",))
    parser.read_string(text)
    return parser


def _supervisord_programs(tmp_path: Path, text: str) -> dict:
    """Parse with supervisord's own option loader: catches anything it would reject."""
    from supervisor.options import ServerOptions

    (tmp_path / "logs").mkdir(exist_ok=True)
    conf = tmp_path / "shardline.conf"
    conf.write_text(text)
    opts = ServerOptions()
    opts.configfile = str(conf)
    opts.process_config(do_usage=False)
    return {p.name: p for g in opts.process_group_configs for p in g.process_configs}


def test_one_consumer_program_per_shard(tmp_path):
    text = _render(tmp_path, [OPEN1, OPEN0])
    names = [s for s in _sections(text).sections() if s.startswith("program:")]
    assert names == ["program:consumer-shardId-000000000000",
                     "program:consumer-shardId-000000000001",
                     "program:stage-worker", "program:loader", "program:metrics"]
    cfg = _sections(text)
    assert cfg["program:consumer-shardId-000000000001"]["command"] == (
        "/opt/shardline/bin/shardline consumer --stream clicks --shard shardId-000000000001")


def test_closed_shard_at_shard_end_is_excluded(tmp_path):
    text = _render(tmp_path, [OPEN0, CLOSED1, CHILD2, CHILD3], shard_end={"shardId-000000000001"})
    programs = _sections(text).sections()
    assert "program:consumer-shardId-000000000001" not in programs
    for shard in ("0", "2", "3"):
        assert f"program:consumer-shardId-00000000000{shard}" in programs
    assert "at SHARD_END (no program): shardId-000000000001" in text


def test_closed_shard_not_yet_drained_keeps_its_consumer(tmp_path):
    text = _render(tmp_path, [OPEN0, CLOSED1, CHILD2, CHILD3])
    assert "program:consumer-shardId-000000000001" in _sections(text).sections()


def test_warehouse_unknown_keeps_every_listed_shard_and_says_so():
    sel = select_shards([OPEN0, CLOSED1, CHILD2], None, "connection refused")
    assert sel.shards == ("shardId-000000000000", "shardId-000000000001",
                          "shardId-000000000002")
    assert "warehouse not reachable (connection refused)" in sel.note
    assert "closed: shardId-000000000001" in sel.note


def test_output_is_deterministic(tmp_path):
    a = _render(tmp_path, [OPEN0, OPEN1], environment={"SHARDLINE_LOG_LEVEL": "DEBUG"})
    b = _render(tmp_path, [OPEN1, OPEN0], environment={"SHARDLINE_LOG_LEVEL": "DEBUG"})
    assert a == b
    assert not re.search(r"20\d\d-\d\d-\d\d", a)  # no timestamp in the file


def test_reshard_only_adds_sections(tmp_path):
    """Unchanged programs keep byte-identical sections, so `update` leaves them alone."""
    before = _sections(_render(tmp_path, [OPEN0, OPEN1]))
    after = _sections(_render(tmp_path, [OPEN0, CLOSED1, CHILD2, CHILD3]))
    for section in before.sections():
        assert dict(before[section]) == dict(after[section])
    assert set(after.sections()) - set(before.sections()) == {
        "program:consumer-shardId-000000000002",
        "program:consumer-shardId-000000000003"}
    assert not any(s.startswith("group:") for s in after.sections())


def test_stage_workers_numprocs_and_ids(tmp_path):
    text = _render(tmp_path, [OPEN0], workers=3)
    w = _sections(text)["program:stage-worker"]
    assert w["numprocs"] == "3"
    assert w["process_name"] == "%(program_name)s_%(process_num)02d"
    assert w["command"].endswith("worker --functions stage --id %(process_num)d")
    programs = _supervisord_programs(tmp_path, text)
    assert [programs[f"stage-worker_0{i}"].command.split()[-1] for i in range(3)] \
        == ["0", "1", "2"]


def test_consumer_restart_and_stop_rules(tmp_path):
    settings = Settings().replace(**{"consumer.shutdown_timeout_s": "25.5"})
    text = _render(tmp_path, [OPEN0], settings=settings)
    c = _sections(text)["program:consumer-shardId-000000000000"]
    assert c["autorestart"] == "unexpected"
    assert c["exitcodes"] == "0"
    assert c["stopsignal"] == "TERM"
    assert c["startsecs"] == "1"
    assert int(c["startretries"]) >= 50
    assert int(c["stopwaitsecs"]) > 25.5 and int(c["stopwaitsecs"]) == 36
    programs = _supervisord_programs(tmp_path, text)
    p = programs["consumer-shardId-000000000000"]
    assert p.exitcodes == [0] and p.stopwaitsecs == 36
    assert p.stdout_logfile.endswith("consumer-shardId-000000000000.out.log")
    assert p.stderr_logfile.endswith("consumer-shardId-000000000000.err.log")


def test_default_stopwaitsecs_above_default_shutdown_bound(tmp_path):
    text = _render(tmp_path, [OPEN0])
    c = _sections(text)["program:consumer-shardId-000000000000"]
    assert int(c["stopwaitsecs"]) >= Settings().consumer.shutdown_timeout_s + 10


def test_supervisord_sections_under_out_dir(tmp_path):
    text = _render(tmp_path, [OPEN0])
    cfg = _sections(text)
    out = str(tmp_path)
    assert cfg["supervisord"]["logfile"] == f"{out}/logs/supervisord.log"
    assert cfg["supervisord"]["pidfile"] == f"{out}/supervisord.pid"
    assert cfg["supervisord"]["childlogdir"] == f"{out}/logs"
    assert cfg["supervisord"]["nodaemon"] == "false"
    assert cfg["unix_http_server"]["file"] == f"{out}/supervisor.sock"
    assert cfg["supervisorctl"]["serverurl"] == f"unix://{out}/supervisor.sock"
    assert "supervisor.rpcinterface_factory" in cfg["rpcinterface:supervisor"]


def test_config_path_passed_to_every_program(tmp_path):
    text = _render(tmp_path, [OPEN0], config_path="/etc/shardline/shardline.ini")
    cfg = _sections(text)
    for section in cfg.sections():
        if section.startswith("program:"):
            assert "--config /etc/shardline/shardline.ini" in cfg[section]["command"]


def test_environment_only_shardline_settings(tmp_path):
    env, skipped = sc.parse_env(
        ["export SHARDLINE_LOG_LEVEL=DEBUG", "AWS_ACCESS_KEY_ID=AKIAXXXX",
         "AWS_SECRET_ACCESS_KEY='s3cr3t'", "PGPASSWORD=pw", "# comment", "",
         'SHARDLINE_GEARMAN_SERVERS="127.0.0.1:4730,127.0.0.1:4731"'], "test")
    assert env == {"SHARDLINE_LOG_LEVEL": "DEBUG",
                   "SHARDLINE_GEARMAN_SERVERS": "127.0.0.1:4730,127.0.0.1:4731"}
    assert len(skipped) == 3
    text = _render(tmp_path, [OPEN0], environment=env)
    assert "AKIA" not in text and "s3cr3t" not in text and "PGPASSWORD=" not in text
    programs = _supervisord_programs(tmp_path, text)
    assert programs["loader"].environment == {**env, "PROMETHEUS_MULTIPROC_DIR":
                                              str(tmp_path / "metrics")}


def test_without_settings_the_environment_is_the_metrics_directory_only(tmp_path):
    programs = _supervisord_programs(tmp_path, _render(tmp_path, [OPEN0]))
    for name in ("consumer-shardId-000000000000", "stage-worker_00", "loader", "metrics"):
        assert programs[name].environment == {
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}, name


def test_metrics_program_serves_the_host_at_the_configured_address(tmp_path):
    text = _render(tmp_path, [OPEN0], config_path="/etc/s.ini",
                   settings=Settings().replace(**{"agent.metrics_address": "0.0.0.0:9700"}))
    programs = _supervisord_programs(tmp_path, text)
    assert programs["metrics"].command == ("/opt/shardline/bin/shardline metrics --serve "
                                           "0.0.0.0:9700 --config /etc/s.ini")
    off = _render(tmp_path, [OPEN0], settings=Settings().replace(**{"agent.metrics_address": ""}))
    assert "[program:metrics]" not in off


def test_unknown_shardline_setting_is_an_error():
    with pytest.raises(ConfigError):
        sc.parse_env(["SHARDLINE_CONSUMER_BATCH_MAX_RECORS=10"], "test")


def test_percent_signs_are_escaped(tmp_path):
    text = _render(tmp_path, [OPEN0], shardline_cmd=["/opt/100%/shardline"])
    programs = _supervisord_programs(tmp_path, text)
    assert programs["loader"].command.startswith("/opt/100%/shardline loader")


def test_program_prefix(tmp_path):
    text = _render(tmp_path, [OPEN0])
    assert "[program:consumer-shardId-000000000000]" in text
    assert "[program:stage-worker]" in text and "[program:loader]" in text
    text = _render(tmp_path, [OPEN0], prefix="clicks")
    assert "[program:clicks-consumer-shardId-000000000000]" in text
    with pytest.raises(ConfigError):
        _render(tmp_path, [OPEN0], prefix="a:b")


def test_command_template(tmp_path):
    text = _render(tmp_path, [OPEN0], command_template="/usr/bin/env {shardline} {args}")
    assert "command=/usr/bin/env /opt/shardline/bin/shardline consumer" in text


def test_socket_path_too_long(tmp_path):
    with pytest.raises(ConfigError, match="too long"):
        render(stream="s", shards=select_shards([OPEN0], set()), out_dir="/" + "x" * 120,
                  shardline_cmd=["shardline"], settings=Settings())


def test_cli_usage_errors():
    assert sc.main(["--stream", "s"]) == 64  # neither --out nor --print
    assert sc.main(["--bogus"]) == 64


def test_settings_file_through_environment(tmp_path):
    env, skipped = sc.parse_env(["SHARDLINE_CONFIG=/etc/shardline/shardline.ini"], "test")
    assert env == {"SHARDLINE_CONFIG": "/etc/shardline/shardline.ini"} and not skipped


def test_command_line_settings_become_program_environment():
    assert sc.env_overrides({"SHARDLINE_CONSUMER_SHUTDOWN_TIMEOUT_S": "30",
                             "SHARDLINE_LOG_LEVEL": "DEBUG",
                             "SHARDLINE_CONFIG": "/etc/shardline.ini"}) == {
        "consumer.shutdown_timeout_s": "30", "log.level": "DEBUG"}
    assert sc.set_flags_env({"consumer.shutdown_timeout_s": "30", "kinesis.stream": "s",
                             "warehouse.schema": "prod"}) == {
        "SHARDLINE_CONSUMER_SHUTDOWN_TIMEOUT_S": "30", "SHARDLINE_WAREHOUSE_SCHEMA": "prod"}


# -- the tail program ---------------------------------------------------------------------
def test_tail_program_follows_the_globs_unexpanded(tmp_path):
    tail = TailProgram(("/var/log/nginx/access.log*", "/var/log/app 1/*.log"), "logs",
                       "access_log")
    text = _render(tmp_path, [OPEN0], tail=tail, prefix="web")
    section = _sections(text)["program:web-tail"]
    assert section["autorestart"] == "unexpected" and section["exitcodes"] == "0"
    assert section["stopsignal"] == "TERM" and int(section["stopwaitsecs"]) >= 30
    programs = _supervisord_programs(tmp_path, text)
    # supervisord splits the command with shlex and execs it without a shell: each glob
    # reaches the tailer as one literal argument, to be expanded (again and again) there
    argv = shlex.split(programs["web-tail"].command)
    assert argv == ["/opt/shardline/bin/shardline", "tail", "--stream", "logs", "--table",
                    "access_log", "/var/log/nginx/access.log*", "/var/log/app 1/*.log"]
    assert programs["web-tail"].environment["PROMETHEUS_MULTIPROC_DIR"] == \
        str(tmp_path / "metrics")
    assert "[program:tail]" not in _render(tmp_path, [OPEN0])


def test_tail_program_needs_a_state_directory_and_its_globs():
    args = sc.build_parser().parse_args(["--stream", "s", "--tail", "/var/log/*.log"])
    with pytest.raises(ConfigError, match="tail.state_dir"):
        sc.tail_program(args, Settings())
    with_spool = Settings().replace(**{"producer.spool_dir": "/var/spool/shardline"})
    tail = sc.tail_program(args, with_spool.replace(**{"kinesis.stream": "s"}))
    assert tail == TailProgram(("/var/log/*.log",), "s", "log_lines")
    other = sc.build_parser().parse_args(["--stream", "s", "--tail", "a.log", "--tail-stream",
                                          "logs"])
    assert sc.tail_program(other, with_spool).stream == "logs"
    lonely = sc.build_parser().parse_args(["--stream", "s", "--tail-stream", "logs"])
    with pytest.raises(ConfigError, match="--tail-stream needs --tail"):
        sc.tail_program(lonely, with_spool)
    assert sc.tail_program(sc.build_parser().parse_args(["--stream", "s"]), Settings()) is None


def test_relay_program_only_when_asked_and_its_stop_time_covers_drain_and_close(tmp_path):
    assert "[program:relay]" not in _render(tmp_path, [OPEN0])
    settings = Settings().replace(**{"relay.drain_s": "4", "producer.close_timeout_s": "8"})
    text = _render(tmp_path, [OPEN0], settings=settings, relay=True, prefix="web")
    r = _sections(text)["program:web-relay"]
    assert r["command"] == "/opt/shardline/bin/shardline relay --stream clicks"
    assert r["autorestart"] == "true" and r["stopsignal"] == "TERM"
    assert int(r["stopwaitsecs"]) == 4 + 8 + 15
    assert _supervisord_programs(tmp_path, text)["web-relay"].stopwaitsecs == 27
def test_one_lake_loader_program_per_lake_table(tmp_path):
    text = _render(tmp_path, [OPEN0], config_path="/etc/s.ini",
                   settings=Settings().replace(**{"lake.tables": "page_views"}))
    programs = _supervisord_programs(tmp_path, text)
    assert programs["lake-loader-page_views"].command == (
        "/opt/shardline/bin/shardline lake-loader --table page_views --config /etc/s.ini")
    assert programs["loader"].command.startswith("/opt/shardline/bin/shardline loader")
    assert "lake-loader" not in _render(tmp_path, [OPEN0])  # lake.tables empty: no lake
    with pytest.raises(ConfigError, match="clickz"):
        _render(tmp_path, [OPEN0], settings=Settings().replace(**{"lake.tables": "clickz"}))
