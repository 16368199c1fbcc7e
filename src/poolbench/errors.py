"""Error types of poolbench.

Library code raises these; only ``cli.py`` turns them into a message and an exit
code. Every message names the cause and the fix in one line, and never carries
a password (messages are built from masked targets only).
"""

from __future__ import annotations


class PoolbenchError(Exception):
    """Base of every error poolbench reports to a user; ``exit_code`` is the CLI's.

    ``results``: what was measured before the error (partial run or sweep results, already
    written), or None."""

    exit_code = 1
    results: object = None


class ConfigError(PoolbenchError):
    """A flag, environment variable or ``.env`` value is invalid (usage error)."""

    exit_code = 2


class ConnectError(PoolbenchError):
    """The database could not be reached or refused us (refused, auth, missing db)."""

    exit_code = 3


class SchemaConflict(PoolbenchError):
    """The target table exists with a shape other than the seed's; nothing was touched."""

    exit_code = 4


class PermissionProblem(PoolbenchError):
    """The role lacks a privilege the run needs (e.g. CREATE on the schema)."""

    exit_code = 4


class CapacityError(PoolbenchError):
    """The run would need more connections than the server allows."""

    exit_code = 2


class StrategyUnavailable(PoolbenchError):
    """A strategy's driver is not installed (or the strategy name is unknown)."""

    exit_code = 2


class ServerError(PoolbenchError):
    """The embedded PostgreSQL could not be started or stopped."""

    exit_code = 5


class WorkerProcessError(PoolbenchError):
    """A ``--processes`` worker process failed with an unexpected error (text masked)."""

    exit_code = 1


class DataIntegrityError(PoolbenchError):
    """The end-of-run check found rows of ours left or rows of others changed."""

    exit_code = 6


class CloneBlocked(PoolbenchError):
    """``--clone``: PostgreSQL would not copy the database while other sessions use it;
    nothing was created."""

    exit_code = 2


class CloneLeftBehind(PoolbenchError):
    """``--clone``: the run's copy of the database could not be dropped (the message names
    it and the ``poolbench cleanup`` that drops it)."""

    exit_code = 6


class Interrupted(PoolbenchError):
    """The run was stopped by a signal; rows were swept and partial results written.

    ``results`` holds the partial :class:`~poolbench.results.RunResults`.
    """

    exit_code = 130

    def __init__(self, message: str, results: object = None) -> None:
        super().__init__(message)
        self.results = results


class SamplerFailed(PoolbenchError):
    """The activity sampler's process could not start or connect, died, or stopped
    answering. Never a run's failure: the run reports the sampler "not measured" and why."""
