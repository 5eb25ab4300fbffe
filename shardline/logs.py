"""A logger per component, with the shard or job id in every line.

``log.format = text`` (the default) prints ``time level logger [stream=s shard=x] message``;
``json`` prints one JSON object per line (``JsonFormatter``: time, level, logger, message,
each context field on its own, the exception), for log shippers that index fields. The
standard library does it: python-json-logger would add a dependency for ~30 lines.
"""
from __future__ import annotations

import json
import logging
import os
import sys
from datetime import datetime, timezone
from typing import MutableMapping

FORMAT = "%(asctime)s %(levelname)-7s %(name)s [%(ctx)s] %(message)s"
FORMATS = ("text", "json")

# What every LogRecord carries; anything else on a record came in as ``extra``.
_RECORD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "ctx", "ctx_fields", "taskName"}
_JSON_KEYS = ("time", "level", "logger", "message", "exception", "stack")


class _CtxDefault(logging.Filter):
    """Lines from loggers without context still format."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "ctx"):
            record.ctx = f"pid={os.getpid()}"
        return True


class ContextLogger(logging.LoggerAdapter[logging.Logger]):
    """Prefixes every message with its context, e.g. ``[stream=s shard=shardId-0001]``;
    the JSON format gets the same context as fields (``ctx_fields``)."""

    def process(self, msg: object,
                kwargs: MutableMapping[str, object]) -> tuple[object, MutableMapping[str, object]]:
        ctx = self.extra or {}  # always given (get_logger, bind); None only in the base type
        extra = dict(kwargs.get("extra") or {})  # type: ignore[call-overload]
        extra["ctx"] = " ".join(f"{k}={v}" for k, v in ctx.items())
        extra["ctx_fields"] = dict(ctx)
        kwargs["extra"] = extra
        return msg, kwargs

    def bind(self, **ctx: object) -> ContextLogger:
        return ContextLogger(self.logger, {**(self.extra or {}), **ctx})


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, ms), ``level``, ``logger``, ``message``,
    the context fields (a ``ContextLogger``'s, then a call's ``extra``) each as a field of
    its own, ``pid`` when the context has none, and ``exception`` / ``stack`` as text. A
    context name equal to one of the fixed keys gets a ``ctx_`` prefix instead of
    overwriting it; values JSON cannot hold are written as ``str()``."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = dict(getattr(record, "ctx_fields", None) or {})
        fields.update({k: v for k, v in vars(record).items() if k not in _RECORD_ATTRS})
        fields.setdefault("pid", record.process)
        for key, value in fields.items():
            doc[f"ctx_{key}" if key in _JSON_KEYS else key] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exception"] = record.exc_text
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


def get_logger(component: str, **ctx: object) -> ContextLogger:
    """``get_logger("consumer", stream="s", shard="shardId-000")``."""
    return ContextLogger(logging.getLogger(f"shardline.{component}"), ctx or {"pid": os.getpid()})


def setup(level: str = "INFO", format: str = "text") -> None:
    """Called once by the CLI (``cli.load_settings``, so every command: consumer, worker,
    loader, agent, ...); libraries never configure logging themselves."""
    if format not in FORMATS:
        raise ValueError(f"log format {format!r} is not one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if format == "json" else logging.Formatter(FORMAT))
    handler.addFilter(_CtxDefault())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "gearman"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
