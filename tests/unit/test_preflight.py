"""The start-up checks' parts (shardline.preflight, shardline.aws_access): their one-line
messages and exit codes without a stack; tests/integration/test_first_run.py runs them for
real."""
from __future__ import annotations

import socket

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from shardline import cli, preflight
from shardline.aws_access import aws_errors
from shardline.controlstore import MemoryStore
from shardline.errors import (AccessDenied, ConfigError, NotMigrated, ServiceUnavailable,
                              Unreachable)
from shardline.exitcodes import ExitCode
from shardline.migrate import SchemaState
from shardline.preflight import Problem, not_migrated, patiently, schema_problems
from shardline.settings import Settings

W, C = "the warehouse (postgres database w, schema s)", "the control store (x)"


def test_two_fresh_stores_are_one_line_and_one_fix():
    assert str(not_migrated([Problem(W, "is not migrated"), Problem(C, "is not migrated")])) \
        == f"{W} and {C} are not migrated: run shardline migrate"
    assert str(not_migrated([Problem(W, "lacks migration 004_x"), Problem(C, "is not migrated")])
               ) == f"{W} lacks migration 004_x; {C} is not migrated: run shardline migrate"
    mixed = not_migrated([Problem(W, "has migration 9_y, ...", "run the release"),
                          Problem(C, "is not migrated")])
    assert str(mixed) == f"{W} has migration 9_y, ...: run the release; {C} is not migrated: " \
                         f"run shardline migrate"


def test_a_schema_state_as_problems():
    assert schema_problems(C, SchemaState(fresh=False)) == []
    assert schema_problems(C, SchemaState(fresh=True, missing=("001_a", "002_b"))) == [
        Problem(C, "is not migrated")]
    assert schema_problems(C, SchemaState(fresh=False, missing=("002_b",))) == [
        Problem(C, "lacks migration 002_b")]
    assert schema_problems(C, SchemaState(fresh=False, missing=("table t_hosts", "index t.i"))
                           ) == [Problem(C, "lacks table t_hosts, index t.i")]
    (newer,) = schema_problems(C, SchemaState(fresh=False, missing=("002_b",),
                                              unknown=("009_z",)))
    assert newer.state == "has migration 009_z, which this release does not know"
    assert newer.fix == "run the shardline release that made it"
    assert MemoryStore().schema_state().current  # creates nothing: always current


def test_each_mistake_has_its_named_exit_code():
    assert cli.exit_for(NotMigrated("x")) == (ExitCode.NOT_MIGRATED, "")
    assert cli.exit_for(AccessDenied("x")) == (ExitCode.DENIED, "access denied: ")
    assert cli.exit_for(Unreachable("x")) == (ExitCode.UNAVAILABLE, "")
    assert cli.exit_for(ServiceUnavailable("x")) == (ExitCode.UNAVAILABLE,
                                                     "ServiceUnavailable: ")
    assert cli.exit_for(ConfigError("x")) == (ExitCode.CONFIG, "configuration error: ")


def _client_error(code: str, status: int, message: str = "") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "ListShards")


def test_aws_errors_name_the_action_or_the_endpoint():
    where = ("kinesis:ListShards", "stream 's'", "Kinesis", "http://k", "kinesis.endpoint_url")
    with pytest.raises(AccessDenied) as denied, aws_errors(*where):
        raise _client_error("AccessDeniedException", 400, "User: u is not authorized\nmore")
    assert str(denied.value) == ("kinesis:ListShards on stream 's' (AccessDeniedException: User: "
                                 "u is not authorized): allow it in the IAM policy of this "
                                 "host's role")
    with pytest.raises(AccessDenied, match=r"\(403\)"), aws_errors(*where):
        raise _client_error("403", 403)
    with pytest.raises(Unreachable) as unreachable, aws_errors(*where):
        raise EndpointConnectionError(endpoint_url="http://k")
    assert str(unreachable.value) == ("Kinesis at http://k is unreachable "
                                      "(EndpointConnectionError): check kinesis.endpoint_url "
                                      "(empty for AWS) and aws.region")
    with pytest.raises(ClientError), aws_errors(*where):  # not a first-run mistake: unchanged
        raise _client_error("LimitExceededException", 400)


def test_gearmand_that_never_answers_is_one_line():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = Settings().replace(**{"gearman.servers": f"127.0.0.1:{port}"})
    with pytest.raises(Unreachable) as info:
        preflight.require_gearman(settings, wait_s=0)
    assert str(info.value) == (f"gearmand is unreachable at 127.0.0.1:{port} (connection "
                               f"refused): check gearman.servers and that gearmand runs")


def test_patiently_asks_again_while_the_answer_is_retriable(monkeypatch):
    monkeypatch.setattr(preflight.time, "sleep", lambda s: None)
    answers = [Unreachable("down"), ServiceUnavailable("restarting"), "ok"]

    def check() -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert patiently(check, patience_s=60) == "ok"
    with pytest.raises(Unreachable):
        patiently(lambda: (_ for _ in ()).throw(Unreachable("still down")), patience_s=0)
    with pytest.raises(ConfigError):  # never retried: a person must act
        patiently(lambda: (_ for _ in ()).throw(ConfigError("no")), patience_s=60)
