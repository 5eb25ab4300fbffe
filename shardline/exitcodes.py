"""Named exit codes, so supervisord (and people) can tell a config error from a crash.

Values follow sysexits.h where one fits. The generated supervisord config lists
only ``OK`` as expected: every other code is a restart (``autorestart=unexpected``).
"""
from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0  # done: graceful stop, or the shard reached SHARD_END
    CRASH = 1  # an unexpected exception
    USAGE = 64  # bad command line
    UNAVAILABLE = 69  # a dependency stayed down after bounded retries
    BATCH_FAILED = 70  # a batch kept failing: checkpoint held before it
    LEASE_HELD = 75  # another live consumer owns the shard (try again later)
    LEASE_LOST = 76  # our lease was taken or expired mid-run
    NOT_INSTALLED = 72  # a file the package ships is missing (e.g. no migrations)
    DENIED = 77  # AWS refused an action (AccessDenied): the host's IAM policy lacks it
    NO_INPUT = 66  # `shardline tail`: a path to follow cannot be read (permissions, no such dir)
    CONFIG = 78  # invalid or unknown setting: fix the config
    # No sysexits code fits: a store lacks this release's schema (run `shardline migrate`)
    # or holds a newer one; restarting cannot help until a person acts.
    NOT_MIGRATED = 79
    FORCED_STOP = 130  # a second signal: stopped at once, no checkpoint
    ALERT = 3  # `shardline status`: a shard has no owner or lags too far
