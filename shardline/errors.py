"""Error hierarchy: the class tells the caller what to do, never the message text.

``retriable`` says whether trying the same call again later can succeed
(throttling, a server restart, a network blip). Everything else needs a human,
a different input, or a restart of the process by supervisord.
"""
from __future__ import annotations


class ShardlineError(Exception):
    """Base class. Messages never carry secrets (DSN passwords, keys)."""

    retriable: bool = False


class ConfigError(ShardlineError):
    """A setting is unknown or invalid: fix the config; retrying won't help."""


class SchemaMismatch(ConfigError):
    """The database records migrations under names this release does not have (another
    layout, or another release's schema): nothing is applied on top of it."""


class NotMigrated(ShardlineError):
    """A store the command needs is not at this release's schema (never migrated, behind, or
    migrated by a newer release): the message names the store and the command that fixes it."""


class AccessDenied(ShardlineError):
    """AWS refused an action (IAM): retrying cannot help until the policy allows it."""


class NoMigrations(ShardlineError):
    """The installed package has no migrations: a broken install, not a database state."""


class RetriableError(ShardlineError):
    """Transient: back off and try again."""

    retriable = True


class ThrottledError(RetriableError):
    """The service asked us to slow down (ProvisionedThroughputExceeded, SlowDown)."""


class ServiceUnavailable(RetriableError):
    """A server could not be reached or answered 5xx."""


class Unreachable(ServiceUnavailable):
    """A service the settings name did not answer at all at start: the message names the
    address and the settings to check (a wrong endpoint, region or server list)."""


class IteratorExpired(RetriableError):
    """A shard iterator passed its 5-minute life: get a new one after the last record read."""


class FatalError(ShardlineError):
    """Not retriable in this process: stop and let supervisord decide."""


class LeaseError(FatalError):
    """The shard lease is not ours."""


class LeaseHeld(LeaseError):
    """Another live consumer owns the shard (``expires_in_s``: its lease's time left)."""

    def __init__(self, message: str, expires_in_s: float | None = None):
        super().__init__(message)
        self.expires_in_s = expires_in_s


class LeaseLost(LeaseError):
    """Our lease was taken or expired: stop reading, never checkpoint."""


class BatchFailed(FatalError):
    """A batch kept failing after bounded retries: the checkpoint must not pass it."""


class LoadFailed(ShardlineError):
    """A warehouse load failed; its transaction was rolled back, the files stay pending.
    ``step`` names the plan step that failed where the loader acts on it (``copy``: log the
    dialect's error details; ``count``: alert, then narrow it down to its file)."""

    retriable = True
    step: str | None = None


class BadRecord(ShardlineError):
    """One record is malformed: it goes to the dead-letter object with this reason."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason
