"""The producer's options: one validated object, from keyword arguments or the settings.

Every option is also a setting in ``[producer]`` (``SHARDLINE_PRODUCER_<KEY>``, see
``shardline/settings.py``); ``ProducerConfig.from_settings`` reads them and
keyword arguments override them. A bad value raises ``ConfigError`` naming the key
(the CLI turns it into exit 78).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from shardline.errors import ConfigError

ON_FULL = ("spill", "block", "drop")


@dataclass(frozen=True)
class ProducerConfig:
    """See docs/producer.md for what each option does and its trade-offs."""

    stream: str
    linger_ms: float = 50.0               # a batch waits at most this long for more records
    aggregate: bool = False               # KPL-aggregate user records per shard
    aggregate_max_records: int = 0        # user records per aggregate; 0 = as many as fit 1 MB
    max_buffer_bytes: int = 32 * 1024 * 1024  # records held in memory (buffer + in flight)
    on_full: str = ""                     # spill | block | drop; "" = spill with a spool, else drop
    block_timeout_ms: float = 20.0        # block/spill: longest wait of put() for room
    spool_dir: str = ""                   # "" = no spool (memory only)
    spool_after_ms: float = 500.0         # a record not acknowledged this long goes to the spool
    sync_interval_ms: float = 100.0       # fsync spool writes at most this late; 0 = every write
    max_spool_bytes: int = 1024 ** 3      # then new records are dropped (counted)
    segment_bytes: int = 16 * 1024 * 1024
    lanes: int = 2                        # sender threads, each owning a group of shards
    backoff_base_ms: float = 50.0
    backoff_max_ms: float = 2000.0
    close_timeout_s: float = 10.0         # close()/exit waits this long to send what is left
    shard_refresh_s: float = 300.0        # re-read the shard map this often (and on a new shard)

    @property
    def policy(self) -> str:
        return self.on_full or ("spill" if self.spool_dir else "drop")

    def validate(self) -> "ProducerConfig":
        def bad(key: str, why: str) -> ConfigError:
            return ConfigError(f"producer.{key}: {getattr(self, key)!r} {why}")

        if not self.stream:
            raise ConfigError("kinesis.stream is required for the producer (stream=...)")
        positive = ("linger_ms", "max_buffer_bytes", "spool_after_ms", "max_spool_bytes",
                    "segment_bytes", "lanes", "backoff_base_ms", "backoff_max_ms",
                    "shard_refresh_s")
        for key in positive:
            if getattr(self, key) <= 0:
                raise bad(key, "must be > 0")
        for key in ("block_timeout_ms", "sync_interval_ms", "close_timeout_s",
                    "aggregate_max_records"):
            if getattr(self, key) < 0:
                raise bad(key, "must be >= 0")
        if self.on_full and self.on_full not in ON_FULL:
            raise bad("on_full", f"is not one of {', '.join(ON_FULL)}")
        if self.policy == "spill" and not self.spool_dir:
            raise bad("on_full", "needs producer.spool_dir")
        if self.max_buffer_bytes < 1024 * 1024:
            raise bad("max_buffer_bytes", "must be at least 1 MiB (one record)")
        if self.lanes > 64:
            raise bad("lanes", "must be at most 64")
        return self

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> "ProducerConfig":
        """Options from ``settings.producer`` (if the section exists), then ``overrides``."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(overrides) - names
        if unknown:
            raise ConfigError(f"unknown producer option(s): {', '.join(sorted(unknown))}; "
                              f"known: {', '.join(sorted(names))}")
        values: dict[str, Any] = {"stream": settings.kinesis.stream}
        section = getattr(settings, "producer", None)
        if section is not None:
            for f in dataclasses.fields(section):
                if f.name in names:
                    values[f.name] = getattr(section, f.name)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values).validate()
