"""The Processor over the in-memory adapters: exactly once in effect, without any service."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
import pytest
import trio
import trio.testing

from botd import dialog
from botd.consumer import Executed, Outcome, Processor, to_event
from botd.dialog import Reply, TimerKind
from botd.dialog.texts import REPLY_PARAMS
from botd.errors import DeliveryLost
from botd.inbound import MessageKind, QueuedMessage
from botd.memory import (
    FIRST_SENT_ID,
    MemoryOrderStore,
    MemoryOutbox,
    MemorySender,
    MemoryStateStore,
    MemoryTimers,
)
from botd.ports import OWN_ECHO_WINDOW_SECONDS, CancelOutcome, CommitResult, Loaded
from tests.helpers import HAPPY_PATH

CLIENT = "555000111"
SETTINGS = dialog.DialogSettings()
START = 1_748_930_400.0


class World:
    """A Processor wired to the memory adapters, on a clock the test moves."""

    def __init__(self, store: Any = None) -> None:
        self.now = START
        self.memory = MemoryStateStore()
        self.orders = MemoryOrderStore()
        self.sender = MemorySender()
        self.outbox = MemoryOutbox(self.memory)
        self.timers = MemoryTimers(lambda: self.now, reminder_after=1800, expire_after=84600)
        self.executed: list[Executed] = []
        self.processor = Processor(
            store=self.memory if store is None else store(self.memory),
            orders=self.orders,
            sender=self.sender,
            outbox=self.outbox,
            settings=SETTINGS,
            clock=lambda: self.now,
            timers=self.timers,
            observer=self.executed.append,
        )
        self.ids = 0

    def message(
        self,
        text: str | None,
        *,
        kind: str = "customer",
        version: int = 0,
        message_id: str | None = None,
    ) -> QueuedMessage:
        self.ids += 1
        self.now += 1
        return QueuedMessage(
            message_id=message_id or str(self.ids),
            client_id=CLIENT,
            text=text,
            received_at=self.now,
            kind=MessageKind(kind),
            version=version,
        )

    async def say(self, text: str | None) -> Outcome:
        return await self.processor.process(self.message(text))

    def step(self) -> dialog.Step:
        state = dialog.load_state(self.memory.state_of(CLIENT))
        return dialog.Step.IDLE if state is None else state.step


def test_outcomes_keep_their_labels() -> None:
    assert [str(o) for o in Outcome] == [
        "processed",
        "duplicate",
        "resent",
        "own_echo",
        "stale_timer",
    ]


def test_queued_messages_become_dialog_events() -> None:
    def queued(kind: str, version: int = 0) -> QueuedMessage:
        return QueuedMessage(
            message_id="9",
            client_id=CLIENT,
            text="hi",
            received_at=START,
            kind=MessageKind(kind),
            version=version,
        )

    assert to_event(queued("customer")) == dialog.Turn("9", CLIENT, "hi", START)
    assert to_event(queued("operator")) == dialog.OperatorMessage("9", CLIENT, "hi", START)
    timer = to_event(queued("expire", version=3))
    assert timer == dialog.TimerFired("9", CLIENT, TimerKind.EXPIRE, START)


async def test_happy_path_places_one_order_and_sets_reminders() -> None:
    world = World()
    outcomes = [await world.say(text) for text in HAPPY_PATH]
    assert outcomes == [Outcome.PROCESSED] * len(HAPPY_PATH)
    (row,) = world.orders.rows
    assert (row.id, row.phone, row.address, row.quantity, row.status) == (
        1,
        "+996555123456",
        HAPPY_PATH[1],
        3,
        "placed",
    )
    last = world.executed[-1]
    assert last.order_id == 1
    assert last.transition.order is not None
    # Replies are rendered with the order's number and sent in order, each once.
    assert last.replies == tuple(
        dialog.render(r, last.transition.state.locale, order_id="1")
        for r in last.transition.replies
    )
    assert [t for _, t in world.sender.sent] == [r for e in world.executed for r in e.replies]
    assert world.step() is dialog.Step.IDLE
    # Each waiting step asked for a reminder at the version its commit created; the end did not.
    assert [(t.event.kind, t.event.version) for t in world.timers.scheduled] == [
        ("reminder", v) for v in range(1, len(HAPPY_PATH))
    ]
    assert world.processor.stats.processed == len(HAPPY_PATH)
    assert world.processor.stats.orders == 1


async def test_a_duplicate_does_nothing_and_unsent_replies_are_resent() -> None:
    world = World()
    first = world.message("Здравствуйте")
    assert await world.processor.process(first) is Outcome.PROCESSED
    sent = list(world.sender.sent)
    assert await world.processor.process(first) is Outcome.DUPLICATE
    assert world.sender.sent == sent
    assert world.memory.version_of(CLIENT) == 1
    # Committed, but the process died while sending: the redelivery re-sends the same replies.
    second = world.message(HAPPY_PATH[1])
    world.sender.failures.append(RuntimeError("crash while sending"))
    with pytest.raises(RuntimeError):
        await world.processor.process(second)
    marker = (await world.memory.load(CLIENT, second.message_id)).marker
    assert marker is not None and not marker.sent and marker.replies
    assert await world.processor.process(second) is Outcome.RESENT
    assert world.sender.sent[len(sent) :] == [(CLIENT, t) for t in marker.replies]
    assert await world.processor.process(second) is Outcome.DUPLICATE
    assert world.memory.version_of(CLIENT) == 2
    assert world.processor.stats.duplicates == 2
    assert world.processor.stats.replies_resent == 1


class RacingStore:
    """Lets message "2" load, commit and finish between message "1"'s load and its commit."""

    def __init__(self, inner: MemoryStateStore) -> None:
        self.inner = inner
        self.seq = trio.testing.Sequencer()
        self.loads: dict[str, int] = {}
        self.held_back = False

    async def load(self, client_id: str, message_id: str, **kwargs: Any) -> Loaded:
        loaded = await self.inner.load(client_id, message_id, **kwargs)
        self.loads[message_id] = self.loads.get(message_id, 0) + 1
        if message_id == "1" and self.loads["1"] == 1:
            async with self.seq(0):  # "1" has loaded version 0
                pass
        if message_id == "2":
            async with self.seq(1):  # "2" goes on only once "1" has loaded
                pass
        return loaded

    async def commit(self, client_id: str, message_id: str, **kwargs: Any) -> CommitResult:
        if message_id == "1" and not self.held_back:
            self.held_back = True
            async with self.seq(3):  # "1" commits only after "2" committed
                pass
        result = await self.inner.commit(client_id, message_id, **kwargs)
        if message_id == "2":
            async with self.seq(2):
                pass
        return result

    def __getattr__(self, name: str) -> Any:  # the rest of the store, unchanged
        return getattr(self.inner, name)


async def test_a_concurrent_change_is_detected_and_the_step_runs_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = World(store=RacingStore)
    one, two = world.message("Здравствуйте"), world.message("Здравствуйте")
    outcomes: dict[str, Outcome] = {}

    async def process(msg: QueuedMessage) -> None:
        outcomes[msg.message_id] = await world.processor.process(msg)

    with caplog.at_level(logging.INFO, logger="botd.consumer"):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(process, one)
            nursery.start_soon(process, two)
    assert outcomes == {"1": Outcome.PROCESSED, "2": Outcome.PROCESSED}
    assert world.memory.commits == [
        CommitResult.COMMITTED,  # "2"
        CommitResult.CONFLICT,  # "1", against the version it loaded first
        CommitResult.COMMITTED,  # "1", run again on "2"'s state
    ]
    assert any("changed concurrently" in r.getMessage() for r in caplog.records)
    done_two, done_one = world.executed
    assert (done_two.message, done_one.message) == (two, one)
    # "1"'s committed step is the step from the state "2" left, not from the one it first saw.
    assert done_one.transition == dialog.handle(
        done_two.transition.state, to_event(one), world.now, SETTINGS
    )
    assert world.memory.version_of(CLIENT) == 2
    assert [t for _, t in world.sender.sent] == [*done_two.replies, *done_one.replies]


async def test_timers_fire_only_for_the_state_they_were_set_for() -> None:
    world = World()
    await world.say("Здравствуйте")
    assert world.step() in dialog.WAITING_STEPS
    (reminder,) = world.timers.scheduled
    await world.say(HAPPY_PATH[1])  # the customer wrote since: that reminder is stale
    assert await world.processor.process(reminder.event) is Outcome.STALE_TIMER
    latest = world.timers.scheduled[-1].event
    world.now = world.timers.scheduled[-1].due
    assert await world.processor.process(latest) is Outcome.PROCESSED
    assert world.executed[-1].transition.timer is TimerKind.EXPIRE
    expire = world.timers.scheduled[-1].event
    assert (expire.kind, expire.version) == ("expire", latest.version + 1)
    assert await world.processor.process(expire) is Outcome.PROCESSED
    assert world.step() is dialog.Step.IDLE
    # No dialog in progress: a timer has nothing to do.
    late = world.message(None, kind="reminder", version=world.memory.version_of(CLIENT))
    assert await world.processor.process(late) is Outcome.STALE_TIMER
    assert world.processor.stats.stale_timers == 2


async def test_the_echo_of_an_own_reply_is_not_an_operator() -> None:
    world = World()
    await world.say("Здравствуйте")
    own_id = str(FIRST_SENT_ID)  # the id the first reply got
    echo = world.message("Здравствуйте!", message_id=own_id, kind="operator")
    assert await world.processor.process(echo) is Outcome.OWN_ECHO
    assert world.step() in dialog.WAITING_STEPS


def _reply_with_order_id() -> Reply:
    """A reply whose text needs the order's number (other parameters filled in), so rendering
    it without ``order_id`` fails."""
    key = min(k for k, names in REPLY_PARAMS.items() if "order_id" in names)
    return Reply(key, tuple((name, "7") for name in sorted(REPLY_PARAMS[key] - {"order_id"})))


def _plain_reply() -> Reply:
    return Reply(min(k for k, names in REPLY_PARAMS.items() if not names))


def _scripted(monkeypatch: pytest.MonkeyPatch, transition: dialog.Transition) -> None:
    """Make the dialog answer every event with ``transition`` (its state kept)."""
    monkeypatch.setattr(dialog, "handle", lambda state, event, now, settings: transition)


def _state(step: dialog.Step = dialog.Step.IDLE) -> dialog.DialogState:
    return dialog.DialogState(
        step=step, dialog_id="", locale="ru", started_at=START, updated_at=START
    )


@pytest.mark.parametrize(
    ("status", "outcome", "refused"),
    [
        ("placed", CancelOutcome.CANCELLED, False),
        ("cancelled", CancelOutcome.ALREADY_CANCELLED, False),
        ("delivering", CancelOutcome.TOO_LATE, True),
    ],
)
async def test_a_cancel_answers_by_what_the_order_store_found(
    monkeypatch: pytest.MonkeyPatch, status: str, outcome: CancelOutcome, refused: bool
) -> None:
    world = World()
    for text in HAPPY_PATH:
        await world.say(text)
    (row,) = world.orders.rows
    if status != "placed":
        world.orders.set_status(row.id, status)
    placed = world.executed[-1].transition.order
    assert placed is not None
    transition = dialog.Transition(
        _state(),
        (_reply_with_order_id(),),
        cancel=dialog.OrderCancel(placed.idempotency_key, CLIENT),
        refused_replies=(_plain_reply(), _reply_with_order_id()),
    )
    _scripted(monkeypatch, transition)
    assert await world.say("отмените") is Outcome.PROCESSED
    done = world.executed[-1]
    assert done.cancel is not None and done.cancel.outcome is outcome
    assert done.order_id == row.id
    chosen = transition.refused_replies if refused else transition.replies
    assert done.replies == tuple(dialog.render(r, "ru", order_id=str(row.id)) for r in chosen)
    assert world.orders.rows[0].status == ("cancelled" if status != "delivering" else status)


async def test_a_cancel_of_an_unknown_order_renders_without_a_number(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = World()
    _scripted(
        monkeypatch,
        dialog.Transition(
            _state(),
            (_reply_with_order_id(),),
            cancel=dialog.OrderCancel("no-such-key", CLIENT),
            refused_replies=(_plain_reply(),),
        ),
    )
    assert await world.say("отмените") is Outcome.PROCESSED
    done = world.executed[-1]
    assert done.cancel is not None and done.cancel.outcome is CancelOutcome.NOT_FOUND
    assert done.order_id is None
    assert done.replies == (dialog.render(_plain_reply(), "ru"),)


async def test_a_handoff_is_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    world = World()
    _scripted(
        monkeypatch,
        dialog.Transition(_state(dialog.Step.HANDOFF), (), handoff_started=True),
    )
    with caplog.at_level(logging.INFO, logger="botd.consumer"):
        assert await world.say("оператор") is Outcome.PROCESSED
    assert any("operator took over" in r.getMessage() for r in caplog.records)
    assert world.step() is dialog.Step.HANDOFF
    assert world.sender.sent == []


# ---- own echoes whatever happened to the id; resends only what had not gone out -------------


async def test_an_echo_whose_id_was_never_learnt_is_still_botds_own() -> None:
    world = World()
    await world.say("Здравствуйте")
    step = world.step()
    # The send timed out (or the process died after it): Chat2Desk's id for it is unknown.
    for _, text in world.sender.sent:
        echo = world.message(text, message_id=f"9{world.ids}", kind="operator")
        assert await world.processor.process(echo) is Outcome.OWN_ECHO
    assert world.step() is step  # no hand-off: the bot is not silenced by its own words
    operator = world.message("Добрый день, я оператор Айгуль", kind="operator")
    assert await world.processor.process(operator) is Outcome.PROCESSED
    assert world.step() is dialog.Step.HANDOFF


async def test_an_echo_carrying_botds_external_id_is_own() -> None:
    world = World()
    await world.say("Здравствуйте")
    echo = msgspec.structs.replace(
        world.message("edited by chat2desk", kind="operator"), external_id="botd-1-0"
    )
    assert await world.processor.process(echo) is Outcome.OWN_ECHO
    assert world.step() is not dialog.Step.HANDOFF


async def test_the_same_words_long_after_botd_said_them_are_an_operators() -> None:
    world = World()
    await world.say("Здравствуйте")
    text = world.sender.sent[0][1]
    world.now += OWN_ECHO_WINDOW_SECONDS + 1
    echo = world.message(text, message_id="99999", kind="operator")
    assert await world.processor.process(echo) is Outcome.PROCESSED
    assert world.step() is dialog.Step.HANDOFF


async def test_an_echo_overtaking_the_sends_answer_is_own() -> None:
    """Chat2Desk posts the echo before it answers the send: botd recorded the text at commit."""
    world = World()
    outcomes: list[Outcome] = []
    inner_send = world.sender.send

    async def send_with_early_echo(client_id: str, text: str, **kw: Any) -> str:
        echo = world.message(text, message_id=f"8{world.ids}", kind="operator")
        outcomes.append(await world.processor.process(echo))  # before the send "answers"
        return await inner_send(client_id, text, **kw)

    world.sender.send = send_with_early_echo  # type: ignore[method-assign]
    await world.say("Здравствуйте")
    assert outcomes == [Outcome.OWN_ECHO, Outcome.OWN_ECHO]
    assert world.step() is dialog.Step.WAITING_ADDRESS


async def test_a_resend_sends_only_the_replies_that_had_not_gone_out() -> None:
    world = World()
    first = world.message("Здравствуйте")
    inner_send = world.sender.send
    sends = 0

    async def die_on_the_second(client_id: str, text: str, **kw: Any) -> str:
        nonlocal sends
        sends += 1
        if sends == 2:
            raise RuntimeError("killed after the first reply went out")
        return await inner_send(client_id, text, **kw)

    world.sender.send = die_on_the_second  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        await world.processor.process(first)
    world.sender.send = inner_send  # type: ignore[method-assign]
    assert await world.processor.process(first) is Outcome.RESENT
    marker = (await world.memory.load(CLIENT, first.message_id)).marker
    assert marker is not None and marker.sent and len(marker.replies) == 2
    assert [t for _, t in world.sender.sent] == list(marker.replies)  # each once, in order


async def test_no_send_once_the_delivery_is_no_longer_ours() -> None:
    world = World()
    ours = True
    inner_send = world.sender.send

    async def lose_after_first(client_id: str, text: str, **kw: Any) -> str:
        nonlocal ours
        mid = await inner_send(client_id, text, **kw)
        ours = False  # the broker connection dropped while this reply was out
        return mid

    world.sender.send = lose_after_first  # type: ignore[method-assign]
    msg = world.message("Здравствуйте")
    with pytest.raises(DeliveryLost):
        await world.processor.process(msg, fence=lambda: ours)
    assert len(world.sender.sent) == 1  # the second reply is left to the redelivery
    world.sender.send = inner_send  # type: ignore[method-assign]
    assert await world.processor.process(msg) is Outcome.RESENT  # the redelivery elsewhere
    marker = (await world.memory.load(CLIENT, msg.message_id)).marker
    assert marker is not None and [t for _, t in world.sender.sent] == list(marker.replies)
