"""The words the bot says: a message table per locale, loaded from ``messages.toml``.

:data:`REPLY_PARAMS` is the contract between the dialog and the table: every :class:`Reply` key
the dialog can produce, with the parameters its text uses. :func:`validate_messages` checks the
table against it (the daemon calls it at start-up), so a missing translation or a misspelled
placeholder stops botd before the first customer sees a ``KeyError``.
"""

from __future__ import annotations

import functools
import string
import tomllib
from collections.abc import Mapping
from importlib import resources

from .model import Reply

__all__ = [
    "DEFAULT_LOCALE",
    "REPLY_PARAMS",
    "MessageTableError",
    "load_messages",
    "render",
    "validate_messages",
]

DEFAULT_LOCALE = "ru"
SUPPORTED_LOCALES = ("ru", "ky", "en")

_NONE: frozenset[str] = frozenset()
_QUANTITY = frozenset({"min", "max"})
_SUMMARY = frozenset({"address", "phone", "quantity"})

REPLY_PARAMS: Mapping[str, frozenset[str]] = {
    # Openings (each followed by the first question).
    "greeting": _NONE,
    "greeting_again": _NONE,
    "dialog_expired": _NONE,
    "restarted": _NONE,
    "bot_resumed": _NONE,
    # The questions.
    "ask_address": _NONE,
    "ask_address_detail": frozenset({"part"}),
    "ask_phone": _NONE,
    "ask_quantity": _QUANTITY,
    "ask_confirmation": _SUMMARY,
    "confirm_address": frozenset({"address"}),
    "confirm_quantity": frozenset({"quantity"}),
    # Why an answer was not taken (each followed by the question again).
    "address_asked_again": _NONE,
    "address_not_understood": _NONE,
    "address_expected": _NONE,
    "address_too_long": frozenset({"max_chars"}),
    "phone_invalid": _NONE,
    "phone_expected": _NONE,
    "phone_which": _NONE,
    "phone_region_not_allowed": frozenset({"countries"}),
    "quantity_not_a_number": _NONE,
    "quantity_not_whole": _NONE,
    "quantity_out_of_range": _QUANTITY,
    "quantity_which": _NONE,
    "pending_unclear": _NONE,
    "confirm_unclear": _NONE,
    "text_expected": _NONE,
    # Changing the order from the summary.
    "what_to_change": _NONE,
    "edit_field": _NONE,
    "value_updated": _NONE,
    # Help for the current question (followed by the question).
    "help_address": _NONE,
    "help_phone": _NONE,
    "help_quantity": _NONE,
    "help_confirmation": _NONE,
    "locale_switched": _NONE,
    # Endings.
    # order_id is given by the consumer to render(); minutes: the cancel window
    "order_created": frozenset({"order_id", "minutes"}),
    "order_created_final": frozenset({"order_id"}),  # no cancel window
    "order_cancelled": _NONE,
    "placed_order_cancelled": frozenset({"order_id"}),  # likewise
    "order_cancel_too_late": _NONE,
    "nothing_to_cancel": _NONE,
    "handoff_started": _NONE,
    # The shop moved the order (botd orders set-status); order_id is the reply's own parameter.
    "order_delivering": frozenset({"order_id"}),
    "order_cancelled_by_shop": frozenset({"order_id"}),
    # Small talk.
    "you_are_welcome": _NONE,
    "you_are_welcome_short": _NONE,
    "ok_later": _NONE,
    # Timers: one reminder to a silent customer, then a polite close.
    "reminder": _NONE,
    "dialog_closed": _NONE,
    # The shop's answers to common questions (edit them in messages.toml).
    "answer_price": _NONE,
    "answer_delivery": _NONE,
    "answer_hours": _NONE,
    "answer_area": _NONE,
    "answer_payment": _NONE,
    "answer_bottle": _NONE,
    "answer_other": _NONE,
}


@functools.cache
def load_messages() -> Mapping[str, Mapping[str, str]]:
    """The message table shipped with botd: ``{locale: {key: template}}``."""
    text = resources.files("botd.dialog").joinpath("messages.toml").read_text(encoding="utf-8")
    raw = tomllib.loads(text)
    table: dict[str, dict[str, str]] = {}
    for locale, messages in raw.items():
        if not isinstance(messages, dict):
            raise ValueError(f"messages.toml: [{locale}] must be a table")
        table[locale] = {key: str(value) for key, value in messages.items()}
    return table


def render(reply: Reply, locale: str, **extra: str) -> str:
    """The text of ``reply`` in ``locale`` (unknown locales fall back to Russian).

    ``extra`` supplies parameters only the consumer knows, e.g. ``order_id``. A parameter the
    text needs but nobody supplied raises ``KeyError`` (a bug, caught by the tests).
    """
    table = load_messages()
    messages = table.get(locale) or table[DEFAULT_LOCALE]
    values = dict(reply.params)
    values.update(extra)
    return messages[reply.key].format_map(values)


class MessageTableError(ValueError):
    """The message table cannot be used; ``problems`` names each locale, key and placeholder."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("message table is inconsistent: " + "; ".join(problems))
        self.problems = problems


def validate_messages(messages: Mapping[str, Mapping[str, str]] | None = None) -> None:
    """Raise :class:`MessageTableError` naming every missing/unknown key and placeholder mismatch.

    Checks ``messages`` (default: the shipped table) for every supported locale against
    :data:`REPLY_PARAMS`, so placeholders also agree between locales.
    """
    table = load_messages() if messages is None else messages
    problems: list[str] = []
    for locale in SUPPORTED_LOCALES:
        if locale not in table:
            problems.append(f"locale {locale!r} is missing")
            continue
        entries = table[locale]
        for key in sorted(REPLY_PARAMS.keys() - entries.keys()):
            problems.append(f"[{locale}] key {key!r} is missing")
        for key in sorted(entries.keys() - REPLY_PARAMS.keys()):
            problems.append(f"[{locale}] key {key!r} is unknown")
        for key in sorted(entries.keys() & REPLY_PARAMS.keys()):
            problem = _placeholder_problem(entries[key], REPLY_PARAMS[key])
            if problem:
                problems.append(f"[{locale}] {key}: {problem}")
    for locale in sorted(table.keys() - set(SUPPORTED_LOCALES)):
        problems.append(f"locale {locale!r} is not supported")
    if problems:
        raise MessageTableError(problems)


def _placeholder_problem(template: str, expected: frozenset[str]) -> str | None:
    try:
        fields = [
            (name, spec, conversion)
            for _, name, spec, conversion in string.Formatter().parse(template)
            if name is not None
        ]
    except ValueError as error:
        return f"malformed template ({error})"
    names = {name for name, _, _ in fields}
    if any(not name.isidentifier() or spec or conversion for name, spec, conversion in fields):
        return "placeholders must be plain names like {name}"
    if names != expected:
        return f"placeholders {sorted(names)} differ from the expected {sorted(expected)}"
    return None
