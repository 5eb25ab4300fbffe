"""The producer's options: one validated object, from keyword arguments or the settings.

The options are the ``[producer]`` settings (``SHARDLINE_PRODUCER_<KEY>``), declared once,
with their defaults, help and bounds, as ``shardline.settings.ProducerSettings``;
``ProducerConfig`` is that section plus the stream, so an option added or re-bounded
there is one here too. ``shardline.settings`` needs nothing beyond the standard library,
so a front end imports it without the pipeline's dependencies.
``ProducerConfig.from_settings`` reads the section and keyword arguments override it. A
bad value raises ``ConfigError`` naming the key (the CLI turns it into exit 78).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from shardline.errors import ConfigError
from shardline.settings import ProducerSettings, Settings

OPTIONS = tuple(f.name for f in dataclasses.fields(ProducerSettings))


# Not frozen: a frozen dataclass cannot extend the settings' (mutable) section; nothing
# assigns to a config after ``validate()``.
@dataclass(kw_only=True)
class ProducerConfig(ProducerSettings):
    """See docs/producer.md for what each option does and its trade-offs."""

    stream: str

    @property
    def policy(self) -> str:
        return self.on_full or ("spill" if self.spool_dir else "drop")

    def validate(self) -> "ProducerConfig":
        """The settings' bounds of every option (the same check as ``settings.load``),
        then what only holds between options."""
        if not self.stream:
            raise ConfigError("kinesis.stream is required for the producer (stream=...)")
        for f in dataclasses.fields(ProducerSettings):
            value, meta, key = getattr(self, f.name), f.metadata, f"producer.{f.name}"
            if meta["choices"] and value not in meta["choices"]:
                raise ConfigError(f"{key}: {value!r} is not one of "
                                  f"{', '.join(c for c in meta['choices'] if c)}")
            if meta["min"] is not None and value < meta["min"]:
                raise ConfigError(f"{key}: {value!r} is below the minimum {meta['min']}")
            if meta["max"] is not None and value > meta["max"]:
                raise ConfigError(f"{key}: {value!r} is above the maximum {meta['max']}")
            if meta["check"] and (problem := meta["check"](value)):
                raise ConfigError(f"{key} {problem}")
        if self.policy == "spill" and not self.spool_dir:
            raise ConfigError(f"producer.on_full: {self.on_full!r} needs producer.spool_dir")
        return self

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> "ProducerConfig":
        """Options from ``settings.producer``, then ``overrides`` (None: keep the setting)."""
        unknown = set(overrides) - set(OPTIONS) - {"stream"}
        if unknown:
            raise ConfigError(f"unknown producer option(s): {', '.join(sorted(unknown))}; "
                              f"known: {', '.join(sorted(OPTIONS + ('stream',)))}")
        values: dict[str, Any] = {"stream": settings.kinesis.stream}
        values.update({name: getattr(settings.producer, name) for name in OPTIONS})
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values).validate()
