"""botd's own small exception hierarchy.

Adapters translate every client-library error (aiormq, redis, psycopg, httpx) into one of these,
so callers classify failures by meaning, never by library:

- :class:`TransientError` — try again later (connection lost, timeout, 5xx, 429); two kinds of
  it say more: :class:`DeliveryUnknown` (a send may have gone through: look before sending again)
  and :class:`AuthRejected` (the API refuses the token: pause, keep the work);
- :class:`PermanentError` — trying again will not help (4xx, constraint the code cannot satisfy);
- :class:`InvalidInput` — a request from outside is malformed; answer it, change nothing;
- :class:`ConfigError` — the configuration cannot be used; botd refuses to start.
"""

from __future__ import annotations


class BotdError(Exception):
    """Base of every error botd raises on purpose."""


class TransientError(BotdError):
    """The operation failed for a reason that may go away; retrying later is right."""


class DeliveryUnknown(TransientError):
    """A send failed in a way that says nothing about whether it was taken (a timeout after the
    request went out, a 5xx a proxy may give after the accept, a broken answer): look the message
    up by its external id before sending it again."""


class AuthRejected(TransientError):
    """The Chat2Desk API refuses the token (401/403, or an auth error body even with HTTP 200):
    sending is paused until it works again, and the replies wait in the outbox meanwhile."""


class PermanentError(BotdError):
    """The operation failed and retrying the same thing will fail again."""


class DeliveryLost(BotdError):
    """The broker channel that delivered a message is gone: do nothing more for it (the broker
    has requeued it, maybe to another process, whose redelivery does the work)."""


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
