"""botd's own small exception hierarchy.

Adapters translate every client-library error (aiormq, redis, psycopg, httpx) into one of these,
so callers classify failures by meaning, never by library:

- :class:`TransientError` — try again later (connection lost, timeout, 5xx, 429);
- :class:`PermanentError` — trying again will not help (4xx, constraint the code cannot satisfy);
- :class:`InvalidInput` — a request from outside is malformed; answer it, change nothing;
- :class:`ConfigError` — the configuration cannot be used; botd refuses to start.
"""

from __future__ import annotations


class BotdError(Exception):
    """Base of every error botd raises on purpose."""


class TransientError(BotdError):
    """The operation failed for a reason that may go away; retrying later is right."""


class PermanentError(BotdError):
    """The operation failed and retrying the same thing will fail again."""


class InvalidInput(BotdError):
    """Input from outside (a webhook body, a CLI argument) is not acceptable."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ConfigError(BotdError):
    """One or more configuration values are unusable; each problem names the key and the fix."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class SchemaError(BotdError):
    """The PostgreSQL schema is missing or newer than this botd understands."""
