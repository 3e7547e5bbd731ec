"""Conversation scripts run against the bot in memory: the engine of ``botd chat`` (without
``--live``) and of the corpus scorer (:mod:`botd.testing.corpus`).

A :class:`Bot` is one :class:`~botd.consumer.Processor` over the in-memory adapters
(:mod:`botd.memory`) on a virtual clock. Every customer input is built as the Chat2Desk webhook
body it would be and goes through the webhook's own validation and normalisation
(:func:`botd.inbound.parse_webhook`); timers fire when the clock passes their due time, in due
order, through the same processor — as the daemon's timer router delivers them.

The script format is that of ``tests/conversations/README.md`` (JSON lines; ``meta`` lines are
ignored). Each event prints as one JSON object: ``{"reply": text, "locale": …, "step": …}`` per
reply sent, ``{"order": {…}}`` when an order is placed, ``{"cancelled": {…}}`` when one is
cancelled, ``{"handoff": true}`` when the bot hands the customer to a person, and for a
``webhook`` line the webhook would not queue, ``{"ignored": reason}`` or ``{"rejected": reason}``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import trio

from botd import dialog
from botd.config import Config
from botd.consumer import Executed, Processor
from botd.errors import InvalidInput
from botd.inbound import MEDIA_FIELDS, Ignored, QueuedMessage, parse_webhook
from botd.memory import (
    MemoryOrderStore,
    MemoryOutbox,
    MemorySender,
    MemoryStateStore,
    MemoryTimers,
    OrderRow,
)
from botd.ports import CancelOutcome

__all__ = [
    "CLIENT_ID",
    "START_AT",
    "Bot",
    "BotSettings",
    "Say",
    "ScriptError",
    "ScriptRun",
    "Wait",
    "bot_settings",
    "inbox_body",
    "parse_script",
    "run_script",
]

START_AT = 1_748_930_400.0  # Tuesday 2025-06-03 06:00 UTC (noon in Bishkek): the virtual start
SECONDS_PER_LINE = 1.0  # the virtual clock moves this much before each customer/operator input
CLIENT_ID = "100000001"  # the scripted customer (``webhook`` lines may name others)
FIRST_MESSAGE_ID = 1_000_001
MEDIA_ALIASES = {"voice": "audio", "file": "document", "image": "photo"}
_INPUT_KEYS = ("text", "location", "contact", "media", "operator", "wait", "webhook")
_WITH_TEXT = ("location", "contact", "media")

Event = dict[str, Any]


@dataclass(frozen=True, slots=True)
class BotSettings:
    dialog: dialog.DialogSettings = field(default_factory=dialog.DialogSettings)
    reminder_after_seconds: int = 1800
    expire_after_seconds: int = 84600
    dedupe_ttl_seconds: int = 172800


def bot_settings(config: Config) -> BotSettings:
    """The settings the daemon would use (its ``[dialog]`` settings and timer delays)."""
    from botd.daemon import settings_of
    from botd.timers import Timers

    reminder, expire = Timers.delays(
        config.dialog.reminder_after_seconds, config.dialog.state_ttl_seconds
    )
    return BotSettings(settings_of(config), reminder, expire, config.redis.dedupe_ttl_seconds)


class ScriptError(ValueError):
    """A script line that is not a valid input; names the line."""

    def __init__(self, line_no: int, problem: str) -> None:
        super().__init__(f"line {line_no}: {problem}")
        self.line_no = line_no
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Say:
    """A webhook body to post (built from a ``text``/``location``/… line, or given whole)."""

    line_no: int
    source: dict[str, Any]  # the script line as written
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Wait:
    line_no: int
    source: dict[str, Any]
    seconds: float


Input = Say | Wait


def inbox_body(message_id: int, client_id: str, text: str | None) -> dict[str, Any]:
    """The Chat2Desk ``inbox`` webhook body of a customer's message."""
    return {
        "message_id": message_id,
        "type": "from_client",
        "hook_type": "inbox",
        "client_id": int(client_id),
        "transport": "telegram",
        "text": text,
    }


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _input(line_no: int, obj: dict[str, Any], message_id: int) -> Input:
    keys = [key for key in _INPUT_KEYS if key in obj]
    unknown = sorted(set(obj) - set(_INPUT_KEYS))
    if unknown:
        raise ScriptError(line_no, f"unknown key(s) {unknown}; expected one of {_INPUT_KEYS}")
    others = [key for key in keys if key != "text"]
    if not keys:
        raise ScriptError(line_no, f"expected one of {_INPUT_KEYS}")
    if len(others) > 1 or (others and "text" in keys and others[0] not in _WITH_TEXT):
        raise ScriptError(line_no, f"one input per line ('text' may go with {_WITH_TEXT})")
    kind = others[0] if others else "text"
    text = obj.get("text")
    if text is not None and not isinstance(text, str):
        raise ScriptError(line_no, "'text' must be a string")
    value = obj[kind]
    inbox = inbox_body(message_id, CLIENT_ID, text)
    if kind == "wait":
        if not _number(value) or value < 0:
            raise ScriptError(line_no, "'wait' must be a number of seconds ≥ 0")
        return Wait(line_no, obj, float(value))
    if kind == "webhook":
        if not isinstance(value, dict):
            raise ScriptError(line_no, "'webhook' must be a JSON object (a Chat2Desk body)")
        return Say(line_no, obj, value)
    if kind == "operator":
        if not isinstance(value, str):
            raise ScriptError(line_no, "'operator' must be a string")
        body = {
            "message_id": message_id,
            "type": "to_client",
            "hook_type": "outbox",
            "client_id": int(CLIENT_ID),
            "text": value,
        }
        return Say(line_no, obj, body)
    if kind == "location":
        if not (isinstance(value, list) and len(value) == 2 and all(map(_number, value))):
            raise ScriptError(line_no, "'location' must be [latitude, longitude]")
        return Say(line_no, obj, {**inbox, "coordinates": value})
    if kind == "contact":
        if not isinstance(value, str):
            raise ScriptError(line_no, "'contact' must be a phone number as a string")
        return Say(line_no, obj, {**inbox, "contact": {"phone": value}})
    if kind == "media":
        media = MEDIA_ALIASES.get(value, value) if isinstance(value, str) else None
        if media not in MEDIA_FIELDS:
            kinds = sorted({*MEDIA_FIELDS, *MEDIA_ALIASES})
            raise ScriptError(line_no, f"'media' must be one of {kinds}")
        return Say(line_no, obj, {**inbox, media: f"https://example.invalid/{media}"})
    if not isinstance(value, str):
        raise ScriptError(line_no, "'text' must be a string")
    return Say(line_no, obj, inbox)


def parse_script(lines: Iterable[str]) -> list[Input]:
    """The inputs of a script; raises :class:`ScriptError` at the first bad line."""
    inputs: list[Input] = []
    ids = itertools.count(FIRST_MESSAGE_ID)
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise ScriptError(line_no, f"not JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise ScriptError(line_no, "must be a JSON object")
        if "meta" in obj:
            continue
        inputs.append(_input(line_no, obj, next(ids)))
    return inputs


class Bot:
    """One bot in memory: a Processor over the memory adapters, on a clock it owns.

    Inputs and timers are handled one at a time (like one shard consumer), whatever task calls.
    """

    def __init__(self, settings: BotSettings | None = None, *, start: float = START_AT) -> None:
        self.settings = settings or BotSettings()
        self.now = start
        self.store = MemoryStateStore(
            clock=self.clock,
            state_ttl_seconds=self.settings.dialog.state_ttl_seconds,
            dedupe_ttl_seconds=self.settings.dedupe_ttl_seconds,
        )
        self.orders = MemoryOrderStore()
        self.sender = MemorySender()
        self.outbox = MemoryOutbox(self.store)
        self.timers = MemoryTimers(
            self.clock,
            reminder_after=self.settings.reminder_after_seconds,
            expire_after=self.settings.expire_after_seconds,
        )
        self._executed: list[Executed] = []
        self.processor = Processor(
            store=self.store,
            orders=self.orders,
            sender=self.sender,
            outbox=self.outbox,
            settings=self.settings.dialog,
            clock=self.clock,
            timers=self.timers,
            observer=self._executed.append,
        )
        self._lock = trio.Lock()

    def clock(self) -> float:
        return self.now

    def step_of(self, client_id: str = CLIENT_ID) -> dialog.Step:
        """Where the customer's dialog is now (IDLE when nothing is stored)."""
        state = dialog.load_state(self.store.state_of(client_id))
        return dialog.Step.IDLE if state is None else state.step

    async def post(self, body: dict[str, Any]) -> list[Event]:
        """Post a webhook body now; what happened, as events."""
        raw = json.dumps(body, ensure_ascii=False).encode()
        async with self._lock:
            try:
                parsed = parse_webhook(raw, received_at=self.now)
            except InvalidInput as exc:
                return [{"rejected": exc.reason}]
            if isinstance(parsed, Ignored):
                return [{"ignored": parsed.reason}]
            return await self._process(parsed)

    async def advance_to(self, until: float) -> list[Event]:
        """Move the clock to ``until``, firing every timer due by then at its due time."""
        events: list[Event] = []
        async with self._lock:
            while (timer := self.timers.pop_due(until)) is not None:
                self.now = max(self.now, timer.due)
                events += await self._process(timer.event)
            self.now = max(self.now, until)
        return events

    async def _process(self, msg: QueuedMessage) -> list[Event]:
        sent_before = len(self.sender.sent)
        known = {row.id for row in self.orders.rows}
        self._executed.clear()
        await self.processor.process(msg)
        done = self._executed[-1] if self._executed else None
        events: list[Event] = []
        if done is not None and done.order_id is not None:
            row = self.orders.by_id(done.order_id)
            if row is not None and done.transition.order is not None and row.id not in known:
                events.append({"order": row.public()})
            cancel = done.cancel
            if row is not None and cancel is not None and cancel.outcome is CancelOutcome.CANCELLED:
                events.append({"cancelled": row.public()})
        locale: str | None
        if done is not None:
            step, locale = str(done.transition.state.step), done.transition.state.locale
        else:  # replies re-sent from an earlier step: as the stored state has it
            state = dialog.load_state(self.store.state_of(msg.client_id))
            step = str(dialog.Step.IDLE if state is None else state.step)
            locale = None if state is None else state.locale
        for _client, text in self.sender.sent[sent_before:]:
            events.append({"reply": text, "locale": locale, "step": step})
        if done is not None and done.transition.handoff_started:
            events.append({"handoff": True})
        return events


@dataclass(frozen=True, slots=True)
class ScriptRun:
    """What running a script gave: its events (per input line), the orders, the end state."""

    transcript: tuple[tuple[Input, tuple[Event, ...]], ...]
    orders: tuple[OrderRow, ...]
    step: dialog.Step  # where the scripted customer's dialog ended
    locale: str | None  # the language of the bot's last reply (None: it never replied)

    @property
    def events(self) -> list[Event]:
        return [event for _, events in self.transcript for event in events]


async def run_script(
    inputs: Iterable[Input],
    settings: BotSettings | None = None,
    *,
    emit: Callable[[Event], None] | None = None,
    bot: Bot | None = None,
) -> ScriptRun:
    """Run ``inputs`` (:func:`parse_script`) in ``bot``, or in a fresh one with ``settings``."""
    bot = Bot(settings) if bot is None else bot
    transcript: list[tuple[Input, tuple[Event, ...]]] = []
    for item in inputs:
        if isinstance(item, Wait):
            events = await bot.advance_to(bot.now + item.seconds)
        else:
            events = await bot.advance_to(bot.now + SECONDS_PER_LINE)
            events += await bot.post(item.body)
        transcript.append((item, tuple(events)))
        if emit is not None:
            for event in events:
                emit(event)
    replies = [event for _, events in transcript for event in events if "reply" in event]
    return ScriptRun(
        transcript=tuple(transcript),
        orders=bot.orders.rows,
        step=bot.step_of(CLIENT_ID),
        locale=replies[-1]["locale"] if replies else None,
    )
