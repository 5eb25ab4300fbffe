"""supervisor-config --agent: the agent program and the [include] of the agent's file, and
the include file itself, read back through supervisord's own parser."""
from __future__ import annotations

from pathlib import Path

import pytest

from shardline.errors import ConfigError
from shardline.ops import supervisor_render as sr
from shardline.settings import Settings

CMD = ["/opt/shardline/bin/shardline"]


def main_config(tmp_path: Path, **kw) -> str:
    kw.setdefault("settings", Settings())
    return sr.render(stream="clicks", shards=sr.Selection((), (), "-"), out_dir=str(tmp_path),
                     shardline_cmd=CMD, agent_include=str(tmp_path / sr.agent_include_name("")),
                     **kw)


def include(tmp_path: Path, shards, **kw) -> str:
    kw.setdefault("settings", Settings())
    return sr.render_consumers(stream="clicks", shards=shards,
                               include=str(tmp_path / sr.agent_include_name("")),
                               shardline_cmd=CMD, host_id="h1", **kw)


def supervisord_view(tmp_path: Path, main: str, inc: str | None) -> dict:
    """What supervisord makes of the files (its option loader follows [include])."""
    from supervisor.options import ServerOptions

    (tmp_path / "logs").mkdir(exist_ok=True)
    conf = tmp_path / "shardline.conf"
    conf.write_text(main)
    if inc is not None:
        (tmp_path / sr.agent_include_name("")).write_text(inc)
    opts = ServerOptions()
    opts.configfile = str(conf)
    opts.process_config(do_usage=False)
    return {p.name: p for g in opts.process_group_configs for p in g.process_configs}


def test_agent_mode_has_the_agent_and_no_consumer_program(tmp_path):
    text = main_config(tmp_path, environment={"SHARDLINE_LOG_LEVEL": "DEBUG"})
    programs = supervisord_view(tmp_path, text, None)
    assert sorted(programs) == ["agent", "loader", "stage-worker_00", "stage-worker_01"]
    agent = programs["agent"]
    assert agent.command == (f"{CMD[0]} agent --stream clicks --include "
                             f"{tmp_path / 'agent-consumers.conf'}")
    from supervisor.datatypes import RestartUnconditionally

    assert agent.priority == 1000 and agent.autorestart is RestartUnconditionally
    assert agent.environment == {"SHARDLINE_LOG_LEVEL": "DEBUG",
                                 "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    assert f"files={tmp_path / 'agent-consumers.conf'}" in text
    assert "started and stopped on this host by `shardline agent`" in text


def test_include_file_programs_never_autostart(tmp_path):
    main = main_config(tmp_path)
    inc = include(tmp_path, ["shardId-000000000001", "shardId-000000000000"],
                  environment={"SHARDLINE_LOG_LEVEL": "DEBUG"}, config_path="/etc/s.ini")
    programs = supervisord_view(tmp_path, main, inc)
    consumers = sorted(n for n in programs if n.startswith("consumer-"))
    assert consumers == ["consumer-shardId-000000000000", "consumer-shardId-000000000001"]
    c = programs["consumer-shardId-000000000001"]
    assert c.autostart is False
    assert c.command == (f"{CMD[0]} consumer --stream clicks --shard shardId-000000000001 "
                         f"--config /etc/s.ini")
    assert c.stopwaitsecs == 30 and c.exitcodes == [0]
    # the same multiprocess directory as the main config's programs: one target per host
    assert c.environment == {"SHARDLINE_LOG_LEVEL": "DEBUG",
                             "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    assert c.stdout_logfile == str(tmp_path / "logs" / "consumer-shardId-000000000001.out.log")


def test_include_file_is_deterministic_and_empty_without_shards(tmp_path):
    a = include(tmp_path, ["shardId-2", "shardId-1"])
    assert a == include(tmp_path, ["shardId-1", "shardId-2", "shardId-1"])
    assert "[program:" not in include(tmp_path, [])
    assert sorted(n for n in supervisord_view(tmp_path, main_config(tmp_path), include(
        tmp_path, [])) if n.startswith("consumer-")) == []


def test_prefix_names_the_agent_and_its_include(tmp_path):
    text = sr.render(stream="clicks", shards=sr.Selection((), (), "-"), out_dir=str(tmp_path),
                     shardline_cmd=CMD, settings=Settings(), prefix="web",
                     agent_include=str(tmp_path / sr.agent_include_name("web")))
    assert "[program:web-agent]" in text
    assert "--program-prefix web" in text and "web-agent-consumers.conf" in text
    assert "[program:web-consumer-shardId-1]" in include(tmp_path, ["shardId-1"], prefix="web")


def test_bad_shard_id_in_include_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="program name"):
        include(tmp_path, ["shard id with spaces"])
