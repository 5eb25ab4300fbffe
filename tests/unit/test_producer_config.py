"""The producer's options and the ``[producer]`` settings are one definition: same names,
defaults and bounds, so a value the settings refuse is refused as a keyword argument too."""
from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from shardline import settings as settings_mod
from shardline.errors import ConfigError
from shardline.producer.config import ProducerConfig
from shardline.settings import ProducerSettings

SECTION = {f.name: f for f in dataclasses.fields(ProducerSettings)}


def _settings_accept(name: str, value: Any) -> bool:
    try:
        settings_mod.load(None, env={}, overrides={f"producer.{name}": str(value),
                                                   "producer.spool_dir": "/tmp/spool"})
    except ConfigError:
        return False
    return True


def _config_accepts(name: str, value: Any) -> bool:
    options = {"spool_dir": "/tmp/spool", name: value}
    try:
        ProducerConfig(stream="s", **options).validate()
    except ConfigError:
        return False
    return True


def _edges(f: dataclasses.Field) -> list[Any]:
    """Each bound, and a value just past it."""
    meta, integer = f.metadata, f.type in ("int", int)
    step = 1 if integer else None
    values: list[Any] = []
    if meta["min"] is not None:
        low = meta["min"]
        values += [low, low - (step or (low / 2 if low > 0 else 1))]
    if meta["max"] is not None:
        high = meta["max"]
        values += [high, high + (step or high / 2)]
    if meta["choices"]:
        values += [*meta["choices"], "nope"]
    return values


def test_every_setting_is_an_option_with_the_same_default_and_metadata():
    options = {f.name: f for f in dataclasses.fields(ProducerConfig)}
    assert set(options) == set(SECTION) | {"stream"}
    for name, f in SECTION.items():
        assert options[name].default == f.default, name
        assert options[name].metadata == f.metadata, name
    defaults = ProducerConfig(stream="s")
    assert all(getattr(defaults, n) == getattr(ProducerSettings(), n) for n in SECTION)


@pytest.mark.parametrize("name", [n for n, f in SECTION.items() if _edges(f)])
def test_options_and_settings_accept_and_refuse_the_same_values(name):
    for value in _edges(SECTION[name]):
        assert _config_accepts(name, value) == _settings_accept(name, value), (name, value)


def test_the_bounds_that_had_drifted_are_the_settings_ones():
    # Once a keyword argument took a linger of 0.05 ms or 1-byte spool segments that
    # the settings file refused.
    assert not _config_accepts("linger_ms", 0.05)
    assert _config_accepts("linger_ms", 0.1)
    assert not _config_accepts("segment_bytes", 4095)
    assert _config_accepts("segment_bytes", 4096)


def test_from_settings_reads_the_section_and_keywords_override_it():
    loaded = settings_mod.load(None, env={"SHARDLINE_KINESIS_STREAM": "views",
                                          "SHARDLINE_PRODUCER_LANES": "3",
                                          "SHARDLINE_PRODUCER_LINGER_MS": "7"})
    config = ProducerConfig.from_settings(loaded, linger_ms=9, spool_dir=None)
    assert (config.stream, config.lanes, config.linger_ms, config.spool_dir) == \
        ("views", 3, 9, "")
    with pytest.raises(ConfigError, match="unknown producer option"):
        ProducerConfig.from_settings(loaded, lingr_ms=9)
    with pytest.raises(ConfigError, match="producer.on_full"):
        ProducerConfig.from_settings(loaded, on_full="spill")  # a spill needs a spool
    with pytest.raises(ConfigError, match="kinesis.stream"):
        ProducerConfig(stream="").validate()
