"""Without the pipeline extra, a pipeline command stops at start with one line naming what
is missing; the library's own commands run."""
from __future__ import annotations

import importlib.metadata

import pytest

from shardline import cli, extras
from shardline.exitcodes import ExitCode


@pytest.fixture
def without_psycopg2(monkeypatch):
    real = importlib.metadata.distribution

    def distribution(name: str) -> importlib.metadata.Distribution:
        if name == "psycopg2-binary":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)


def test_the_pipeline_extra_is_read_from_the_installed_metadata():
    assert {"psycopg2-binary", "pygearman", "supervisor"} <= set(extras.extra_packages())
    assert extras.missing_packages() == []  # the dev install has the extra
    assert extras.missing_message("consumer") is None


def test_a_pipeline_command_stops_with_one_line(without_psycopg2, capsys):
    assert cli.main(["migrate", "--dry-run"]) == ExitCode.NOT_INSTALLED
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "shardline migrate:" in err and "psycopg2-binary" in err
    assert "pip install 'shardline[pipeline]'" in err


def test_the_library_commands_need_no_extra(without_psycopg2, capsys):
    assert extras.missing_message("produce") is None
    assert cli.main(["settings"]) == ExitCode.OK


def test_status_of_the_tailer_needs_no_extra(without_psycopg2):
    assert extras.missing_message("status", ["--tail"]) is None
    assert extras.missing_message("status", ["--tail=/var/lib/shardline/tail"]) is None
    assert extras.missing_message("status", ["--json"]) is not None   # the pipeline's status
    assert extras.missing_message("status", ["--tailx"]) is not None
def test_a_lake_command_without_the_lake_extra_names_it(monkeypatch, capsys):
    real = importlib.metadata.distribution

    def distribution(name: str) -> importlib.metadata.Distribution:
        if name == "pyiceberg":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    assert {"pyiceberg", "pyarrow"} <= set(extras.extra_packages(extras.LAKE))
    assert extras.missing_message("lake-loader") is None
    monkeypatch.setattr(importlib.metadata, "distribution", distribution)
    assert cli.main(["lake-loader", "--table", "page_views"]) == ExitCode.NOT_INSTALLED
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'shardline[lake]'" in err and "pyiceberg" in err
    assert extras.missing_message("loader") is None  # the warehouse loader needs no lake
