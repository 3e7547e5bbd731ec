"""Random customers typing random things: the dialog's invariants hold whatever they do.

The machine drives ``handle`` with customer turns, operator messages, timers and time passing,
and checks after every event what must always be true: an order only after a clear yes to the
summary it showed, a cancel only of the order just placed, silence only while a person has
the conversation, the question always last, nothing doubtful recorded without a yes, an expired
dialog forgotten, every reply renderable, every state sound and storable, all deterministic.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from botd.dialog import (
    WAITING_STEPS,
    DialogSettings,
    DialogState,
    Field,
    OperatorMessage,
    Reply,
    Step,
    TimerFired,
    TimerKind,
    Transition,
    Turn,
    dump_state,
    handle,
    load_state,
    render,
    step,
)
from botd.dialog import lexicon as lx
from botd.dialog.step import ask, is_consistent
from botd.dialog.texts import REPLY_PARAMS, SUPPORTED_LOCALES
from botd.dialog.understand import read

TTL = 3600
HANDOFF_TTL = 2 * TTL
WINDOW = 900
CLIENT = "customer-7"

# Clear yeses: at the summary (nothing asked back, not just asked what to change) each one
# must place the order.
CLEAR_YES = [
    "да", "Да", "ооба", "Ооба.", "yes", "ok", "👍", "+", "Да, всё верно", "всё верно",
    "оформляйте", "макулмун", "sounds good", "da", "дааа",
]  # fmt: skip
VALID = {
    Step.WAITING_ADDRESS: [
        "Бишкек, Чуй 100", "Toktogul st. 10, flat 5", "Ош, Ленина 1", "ул. Ленина 5, кв. 12",
        "12 мкр, дом 5, кв 3",
    ],
    Step.WAITING_PHONE: ["0555 123 456", "+996 700 000 001", "+7 701 123 45 67", "(0555) 12-34-56"],
    Step.WAITING_QUANTITY: ["1", "50", "3 шт", "три", "two bottles", "он эки", "бешти"],
    Step.WAITING_CONFIRMATION: CLEAR_YES,
}  # fmt: skip
# Hard or wrong answers; none of them may ever place an order.
TRICKY = [
    "", "   ", "ул", "x" * 201, "12345", "0", "51", "2.5", "-1", "abc", "not ok", "не да",
    "nothing", "yesterday", "okey-dokey", "да нет", "{order_id}", "{0}", "👍👎", "5 человек",
    "3 или 4", "пару", "Токтогула", "Бишкек", "ул. Ленина", "0555 123 456 или 0700 123 456",
    "звонить не надо", "да, но адрес другой", "yes but change the phone", "кв 12", "?",
]  # fmt: skip
# Every command phrase the lexicon knows, and slash commands; none may place an order.
COMMANDS = sorted(
    {
        *lx.CANCEL_PHRASES,
        *lx.RESTART_PHRASES,
        *lx.HELP_PHRASES,
        *lx.HANDOFF_WORDS,
        *lx.BOT_WORDS,
        *(phrase for phrases in lx.LOCALE_SWITCH.values() for phrase in phrases),
        "позовите оператора", "можно живого человека?", "/cancel", "/start", "/help", "/bot",
        "/operator", "/ru", "/ky", "/en", "/start@shop_bot", "/unknown",
    }
)  # fmt: skip
EDITS = sorted(
    {
        *(word for words in lx.FIELD_WORDS.values() for word in words),
        "нет, адрес другой", "неправильный адрес", "изменить количество", "адрес не тот",
        "нет, 4 штуки", "no, 2 bottles", "жок, үч болсун", "адрес Чуй 100",
        "телефон 0700 123 456", "поменяйте количество на 5", "не 3, а 4",
    }
)  # fmt: skip
NO = ["нет", "не", "неа", "жок", "no", "nope", "No.", "не надо", "туура эмес", "👎"]
SMALL_TALK = [
    "здравствуйте", "Салам", "hello", "спасибо", "рахмат", "thanks", "сколько стоит?",
    "когда привезете?", "адрес скину позже", "хочу воды", "суу керек",
]  # fmt: skip
OPERATOR = ["Здравствуйте, я оператор", "Уточните адрес", "/bot", "", "ок"]
# Everything at once: one message takes a dialog straight to the summary.
WHOLE = [
    "Чуй 100, 0555 123 456, 3 шт", "Здравствуйте! Токтогула 10, кв 5, тел 0700123456, 2 бутылки",
    "Toktogul st. 10, flat 5, +996 555 123 456, two bottles",
]  # fmt: skip
CANCEL = ["отмена", "отмените заказ", "/cancel", "передумал", "cancel", "жокко чыгаруу"]
# Doubtful values: asked back (or asked to be completed), never recorded as they are.
DOUBTFUL = ["Бишкек", "Токмок", "ул. Ленина", "Токтогула", "Аламединский рынок", "пару", "парочку"]

# Turns of these kinds must never place an order.
NEVER_ORDERS = {
    "tricky", "command", "edit", "no", "small_talk", "media", "location", "contact", "whole",
    "cancel",
}  # fmt: skip


class Customer(RuleBasedStateMachine):
    """One customer; every rule is one event (or time passing), checked as it happens."""

    def __init__(self) -> None:
        super().__init__()
        self.settings = self._settings(())
        self.state: DialogState | None = None
        self.now = 1_700_000_000.0
        self.count = 0
        self.summary: dict[str, str] | None = None  # what the last summary showed
        self.orders = 0

    @staticmethod
    def _settings(region: tuple[str, ...]) -> DialogSettings:
        return DialogSettings(
            allowed_regions=region,
            state_ttl_seconds=TTL,
            handoff_seconds=HANDOFF_TTL,
            cancel_window_seconds=WINDOW,
        )

    @initialize(region=st.sampled_from([(), ("KG",), ("KG", "KZ")]))
    def configure(self, region: tuple[str, ...]) -> None:
        self.settings = self._settings(region)

    # -- what the customer (and the world) does ------------------------------------------------

    @rule(pick=st.integers(0, 1000))
    def answer_correctly(self, pick: int) -> None:
        state = self.state
        if state is not None and state.pending is not None:
            self.feed("да", kind="answer")
            return
        current = state.step if state is not None else Step.IDLE
        answers = VALID.get(current, ["Здравствуйте"])
        self.feed(answers[pick % len(answers)], kind="answer")

    @rule(text=st.sampled_from(WHOLE))
    def order_in_one_message(self, text: str) -> None:
        self.feed(text, kind="whole")

    @rule(text=st.sampled_from(CANCEL))
    def cancel(self, text: str) -> None:
        self.feed(text, kind="cancel")

    @rule(text=st.sampled_from(CANCEL))
    def cancel_too_late(self, text: str) -> None:
        self.now += WINDOW + 1
        self.feed(text, kind="cancel")

    # -- rules that only make sense in some states, so the interesting paths are walked often

    def _at(self, *steps: Step) -> bool:
        return self.state is not None and self.state.step in steps

    @precondition(lambda self: self._at(Step.WAITING_CONFIRMATION))
    @rule(text=st.sampled_from(NO + EDITS))
    def answer_the_summary_with_a_no_or_a_change(self, text: str) -> None:
        self.feed(text, kind="no" if text in NO else "edit")

    @precondition(lambda self: self._at(Step.WAITING_ADDRESS, Step.WAITING_QUANTITY))
    @rule(text=st.sampled_from(DOUBTFUL))
    def give_a_doubtful_value(self, text: str) -> None:
        self.feed(text, kind="tricky")

    @precondition(
        lambda self: (
            self._at(Step.IDLE, *WAITING_STEPS)
            and self.state is not None
            and self.state.last_order_key is not None
        )
    )
    @rule(text=st.sampled_from(CANCEL))
    def cancel_after_ordering(self, text: str) -> None:
        self.feed(text, kind="cancel")

    @rule(text=st.sampled_from(TRICKY))
    def answer_trickily(self, text: str) -> None:
        self.feed(text, kind="tricky")

    @rule(text=st.text(max_size=30))
    def type_anything(self, text: str) -> None:
        self.feed(text, kind="anything")

    @rule(text=st.sampled_from(COMMANDS))
    def command(self, text: str) -> None:
        self.feed(text, kind="command")

    @rule(text=st.sampled_from(EDITS))
    def edit(self, text: str) -> None:
        self.feed(text, kind="edit")

    @rule(text=st.sampled_from(NO))
    def say_no(self, text: str) -> None:
        self.feed(text, kind="no")

    @rule(text=st.sampled_from(SMALL_TALK))
    def small_talk(self, text: str) -> None:
        self.feed(text, kind="small_talk")

    @rule(media=st.sampled_from([("photo",), ("audio",), ("pdf", "photo")]))
    def send_media(self, media: tuple[str, ...]) -> None:
        self.feed(None, kind="media", media=media)

    @rule(location=st.tuples(st.floats(-100, 100), st.floats(-200, 200)))
    def share_location(self, location: tuple[float, float]) -> None:
        self.feed(None, kind="location", location=location)

    @rule(phone=st.sampled_from(["+996 555 123 456", "12", "+7 701 123 45 67", ""]))
    def share_contact(self, phone: str) -> None:
        self.feed(None, kind="contact", contact_phone=phone)

    @rule(
        seconds=st.sampled_from(
            [1, 60, WINDOW, WINDOW + 1, TTL - 1, TTL, TTL + 1, HANDOFF_TTL, HANDOFF_TTL + 1]
        )
    )
    def wait(self, seconds: int) -> None:
        self.now += seconds

    @rule(text=st.sampled_from(OPERATOR))
    def operator_writes(self, text: str) -> None:
        self.count += 1
        self.now += 1
        before = self.state
        event = OperatorMessage(f"o{self.count}", CLIENT, text or None, self.now)
        transition = handle(before, event, self.now, self.settings)
        assert transition is not None
        assert transition == handle(before, event, self.now, self.settings), "not deterministic"
        after = transition.state
        assert transition.replies == () and transition.order is None  # never answers an operator
        if text == "/bot":
            assert after.step is Step.IDLE and not transition.handoff_started
        else:
            took_over = before is None or before.step is not Step.HANDOFF
            assert after.step is Step.HANDOFF
            assert transition.handoff_started == took_over
        if before is not None:
            assert (after.last_order_key, after.last_order_at) == (
                before.last_order_key,
                before.last_order_at,
            )
        self.check_state(after)
        self.state = after

    @rule(kind=st.sampled_from(list(TimerKind)))
    def timer_fires(self, kind: TimerKind) -> None:
        self.count += 1
        before = self.state
        event = TimerFired(f"t{self.count}", CLIENT, kind, self.now)
        transition = handle(before, event, self.now, self.settings)
        assert transition == handle(before, event, self.now, self.settings), "not deterministic"
        if before is None or before.step not in WAITING_STEPS:
            assert transition is None
            return
        assert transition is not None and transition.order is None
        if kind is TimerKind.REMINDER:
            assert transition.state == before  # a nudge changes nothing
            assert transition.replies == (Reply("reminder"), ask(before))
            assert transition.timer is TimerKind.EXPIRE
        else:
            assert transition.state.step is Step.IDLE
            assert transition.replies == (Reply("dialog_closed"),)
            assert transition.timer is None
        self.check_replies(transition)
        self.check_state(transition.state)
        self.state = transition.state

    # -- the checks ----------------------------------------------------------------------------

    def feed(self, text: str | None, *, kind: str, **extra: object) -> None:
        self.count += 1
        self.now += 1
        turn = Turn(f"m{self.count}", CLIENT, text, self.now, **extra)  # type: ignore[arg-type]
        before = self.state
        transition = handle(before, turn, self.now, self.settings)
        assert transition is not None  # a customer always gets a decision
        assert transition == handle(before, turn, self.now, self.settings), "not deterministic"
        self.check(before, turn, kind, transition)
        self.state = transition.state

    def alive(self, before: DialogState | None) -> bool:
        """A dialog the customer's message continues (not idle, not expired, not broken)."""
        if before is None or before.step is Step.IDLE or not is_consistent(before):
            return False
        ttl = HANDOFF_TTL if before.step is Step.HANDOFF else TTL
        return self.now - before.updated_at <= ttl

    def check(
        self, before: DialogState | None, turn: Turn, kind: str, transition: Transition
    ) -> None:
        after = transition.state
        alive = self.alive(before)
        handing_off = alive and before is not None and before.step is Step.HANDOFF
        reading = read(turn.text)
        # Silence only while a person has the conversation, and it changes nothing.
        if not transition.replies:
            assert handing_off and after == before
        elif handing_off:
            assert transition.replies[0] == Reply("bot_resumed")  # only "бот"/"/bot" answers
        # A reminder is asked for exactly while a question waits for the customer.
        assert (transition.timer is TimerKind.REMINDER) == (after.step in WAITING_STEPS)
        # A dialog older than its TTL is never continued: it is as if it had been closed.
        if before is not None and before.step is not Step.IDLE and not alive:
            forgotten = DialogState(
                Step.IDLE,
                "",
                before.locale,
                before.updated_at,
                before.updated_at,
                locale_sure=before.locale_sure,
                last_order_key=before.last_order_key,
                last_order_at=before.last_order_at,
            )
            fresh = step(forgotten, turn, self.now, self.settings)
            assert after == fresh.state and transition.order is None
            assert after.dialog_id in ("", f"{CLIENT}:{turn.message_id}")
            if turn.text is None and turn.location is None and not turn.contact_phone:
                assert (after.address, after.phone, after.quantity) == (None, None, None)
        # An order only right after a clear yes to the summary, with what it showed.
        at_summary = (
            alive
            and before is not None
            and before.step is Step.WAITING_CONFIRMATION
            and before.pending is None
        )
        if transition.order is not None:
            assert before is not None and at_summary
            # after "what should I change?" only an emphatic yes ("всё верно") places it
            assert not before.asked_what_to_change or reading.strong_yes
            assert kind not in NEVER_ORDERS
            assert turn.text is not None and reading.yes and not reading.no
            assert not reading.has_value and not reading.cancel and not reading.handoff
            order = transition.order
            assert order.idempotency_key == before.dialog_id
            assert order.client_id == CLIENT
            shown = {
                "address": order.address,
                "phone": order.phone,
                "quantity": str(order.quantity),
            }
            assert shown == self.summary
            assert (order.address, order.phone, order.quantity) == (
                before.address,
                before.phone,
                before.quantity,
            )
            assert after.step is Step.IDLE
            assert (after.last_order_key, after.last_order_at) == (before.dialog_id, self.now)
            assert transition.replies[-1].key == "order_created"
            self.orders += 1
        elif kind == "answer" and at_summary and before is not None:
            assert before.asked_what_to_change, f"a clear yes {turn.text!r} placed no order"
            assert not reading.strong_yes
            assert transition.replies == (ask(after),)  # the summary again, to confirm
        # A cancel only of the order just placed, within the window, with both outcomes said.
        if transition.cancel is not None:
            assert before is not None and before.last_order_key is not None
            assert before.last_order_at is not None
            assert transition.cancel.idempotency_key == before.last_order_key
            assert transition.cancel.client_id == CLIENT
            assert self.now - before.last_order_at <= WINDOW
            assert transition.replies == (Reply("placed_order_cancelled"),)
            assert transition.refused_replies == (Reply("order_cancel_too_late"),)
            assert after.step is Step.IDLE and transition.order is None
        else:
            assert transition.refused_replies == ()
            assert Reply("placed_order_cancelled") not in transition.replies
        idle = before is None or before.step is Step.IDLE or not alive
        if kind == "cancel" and idle and transition.handoff_started is False:
            placed_at = before.last_order_at if before is not None else None
            if placed_at is None:
                assert transition.replies == (Reply("nothing_to_cancel"),)
            elif self.now - placed_at <= WINDOW:
                assert transition.cancel is not None  # the order just placed is cancelled
            else:
                assert transition.replies == (Reply("order_cancel_too_late"),)
        if kind == "cancel" and alive and not handing_off:
            assert after.step is Step.IDLE and transition.order is None
        # A hand-off is announced exactly when it starts.
        if transition.handoff_started:
            assert after.step is Step.HANDOFF and transition.replies == (Reply("handoff_started"),)
        elif after.step is Step.HANDOFF:
            assert handing_off
        # A doubtful value is recorded only after a yes, or when the customer writes it out.
        same_dialog = alive and before is not None and after.dialog_id == before.dialog_id
        if same_dialog and before is not None and before.pending is not None:
            pending = before.pending
            if pending.field is Field.QUANTITY and after.quantity != before.quantity:
                recorded = after.quantity == int(pending.value)
                assert not recorded or reading.yes or reading.quantity == after.quantity
            if pending.field is Field.ADDRESS and after.address != before.address:
                recorded = after.address == pending.value
                assert not recorded or reading.yes or pending.value in (turn.text or "")
        # A message with nothing in it changes no value.
        nothing = turn.text is None and turn.location is None and not turn.contact_phone
        if same_dialog and before is not None and nothing:
            assert (after.address, after.phone, after.quantity) == (
                before.address,
                before.phone,
                before.quantity,
            )
        self.check_replies(transition)
        # While waiting for an answer, the last reply is the question ("what should I change?"
        # is itself the question after a bare no at the summary).
        if after.step in WAITING_STEPS:
            last = transition.replies[-1]
            assert last == ask(after) or (
                after.asked_what_to_change and last == Reply("what_to_change")
            ), (last, ask(after))
        if transition.replies:
            assert after.updated_at == self.now  # the customer's message counts as activity
        self.check_state(after)

    def check_replies(self, transition: Transition) -> None:
        """Every reply is a known key with exactly its parameters, and renders everywhere."""
        for reply in (*transition.replies, *transition.refused_replies):
            assert reply.key in REPLY_PARAMS, reply.key
            assert {name for name, _ in reply.params} == REPLY_PARAMS[reply.key] - {"order_id"}
            for locale in SUPPORTED_LOCALES:
                assert render(reply, locale, order_id="1")
        if transition.replies and transition.replies[-1].key == "ask_confirmation":
            self.summary = dict(transition.replies[-1].params)

    def check_state(self, after: DialogState) -> None:
        """The new state is sound, fresh enough and survives storage."""
        assert is_consistent(after)
        assert after.locale in SUPPORTED_LOCALES
        assert after.updated_at <= self.now
        assert load_state(dump_state(after)) == after

    @invariant()
    def state_is_storable(self) -> None:
        if self.state is not None:
            assert load_state(dump_state(self.state)) == self.state


Customer.TestCase.settings = settings(
    max_examples=200, stateful_step_count=40, derandomize=True, deadline=None
)
test_random_customers = Customer.TestCase


def test_the_machine_can_place_orders() -> None:
    """The happy path through the machine's own rules really ends in an order."""
    machine = Customer()
    for _ in range(4):
        machine.answer_correctly(0)
    assert machine.state is not None and machine.state.step is Step.WAITING_CONFIRMATION
    machine.answer_correctly(0)
    assert machine.orders == 1
    machine.teardown()


def test_the_machine_notices_an_order_without_a_yes() -> None:
    """The order check can fail: an order placed by a 'no' is caught."""
    machine = Customer()
    for _ in range(4):
        machine.answer_correctly(0)
    before = machine.state
    assert before is not None
    turn = Turn("m99", CLIENT, "нет", machine.now)
    placing = handle(before, Turn("m98", CLIENT, "да", machine.now), machine.now, machine.settings)
    assert placing is not None and placing.order is not None
    try:
        machine.check(before, turn, "no", placing)
    except AssertionError:
        pass
    else:  # pragma: no cover - the machine would be blind
        raise AssertionError("an order after 'нет' went unnoticed")
