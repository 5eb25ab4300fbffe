"""A logger per component, with the shard or job id in every line."""
from __future__ import annotations

import logging
import os
import sys
from typing import Any, MutableMapping

FORMAT = "%(asctime)s %(levelname)-7s %(name)s [%(ctx)s] %(message)s"


class _CtxDefault(logging.Filter):
    """Lines from loggers without context still format."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "ctx"):
            record.ctx = f"pid={os.getpid()}"
        return True


class ContextLogger(logging.LoggerAdapter):
    """Prefixes every message with its context, e.g. ``[stream=s shard=shardId-0001]``."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        extra = dict(kwargs.get("extra") or {})
        extra["ctx"] = " ".join(f"{k}={v}" for k, v in self.extra.items())
        kwargs["extra"] = extra
        return msg, kwargs

    def bind(self, **ctx: Any) -> "ContextLogger":
        return ContextLogger(self.logger, {**self.extra, **ctx})


def get_logger(component: str, **ctx: Any) -> ContextLogger:
    """``get_logger("consumer", stream="s", shard="shardId-000")``."""
    return ContextLogger(logging.getLogger(f"shardline.{component}"), ctx or {"pid": os.getpid()})


def setup(level: str = "INFO") -> None:
    """Called once by the CLI; libraries never configure logging themselves."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(_CtxDefault())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "gearman"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
