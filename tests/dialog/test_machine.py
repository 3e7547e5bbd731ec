"""Random customers typing random things: the dialog's invariants hold whatever they do."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from botd.dialog import (
    DialogSettings,
    DialogState,
    Step,
    Transition,
    Turn,
    dump_state,
    load_state,
    render,
    step,
)
from botd.dialog.phrases import (
    COMMAND_PHRASES,
    EDIT_PHRASES,
    NO_WORDS,
    YES_WORDS,
    Answer,
    classify_answer,
    match_command,
    match_edit,
)
from botd.dialog.step import ask, is_consistent
from botd.dialog.texts import REPLY_PARAMS, SUPPORTED_LOCALES

TTL = 3600
CLIENT = "customer-7"
VALID = {
    Step.WAITING_ADDRESS: ["Бишкек, Чуй 100", "Toktogul st. 10, flat 5", "Ош, Ленина 1", "x" * 200],
    Step.WAITING_PHONE: ["0555 123 456", "+996 700 000 001", "+7 701 123 45 67", "(0555) 12-34-56"],
    Step.WAITING_QUANTITY: ["1", "50", "3 шт", "три", "two bottles", "он эки"],
    Step.WAITING_CONFIRMATION: [*sorted(YES_WORDS), "👍", "Да, всё верно"],
}
INVALID = [
    "", "   ", "ул", "x" * 201, "12345", "0", "51", "2.5", "-1", "abc", "not ok", "не да",
    "nothing", "yesterday", "okey-dokey", "да нет", "{order_id}", "{0}", "👍👎", "5 человек",
]  # fmt: skip
COMMANDS = [phrase for phrases in COMMAND_PHRASES.values() for phrase in phrases] + [
    "/cancel", "/start", "/help", "/bot", "?", "/start@shop_bot", "/unknown",
]  # fmt: skip
EDITS = [phrase for phrases in EDIT_PHRASES.values() for phrase in phrases]
NO = [*sorted(NO_WORDS), "👎"]


class Customer(RuleBasedStateMachine):
    """One customer; every rule is one message (or time passing), checked by ``feed``."""

    def __init__(self) -> None:
        super().__init__()
        self.settings = DialogSettings(state_ttl_seconds=TTL)
        self.state: DialogState | None = None
        self.now = 1_700_000_000.0
        self.count = 0
        self.summary: dict[str, str] | None = None  # what the last summary showed
        self.orders = 0

    @initialize(region=st.sampled_from([(), ("KG",), ("KG", "KZ")]))
    def configure(self, region: tuple[str, ...]) -> None:
        self.settings = DialogSettings(allowed_regions=region, state_ttl_seconds=TTL)

    # -- what the customer does ----------------------------------------------------------------

    @rule(pick=st.integers(0, 1000))
    def answer_correctly(self, pick: int) -> None:
        current = self.state.step if self.state is not None else Step.IDLE
        answers = VALID.get(current, ["Здравствуйте"])
        self.feed(answers[pick % len(answers)])

    @rule(text=st.sampled_from(INVALID))
    def answer_wrongly(self, text: str) -> None:
        self.feed(text)

    @rule(text=st.text(max_size=30))
    def type_anything(self, text: str) -> None:
        self.feed(text)

    @rule(text=st.sampled_from(COMMANDS))
    def command(self, text: str) -> None:
        self.feed(text)

    @rule(text=st.sampled_from(EDITS))
    def edit(self, text: str) -> None:
        self.feed(text)

    @rule(text=st.sampled_from(NO))
    def say_no(self, text: str) -> None:
        self.feed(text)

    @rule(media=st.sampled_from([("photo",), ("audio",), ("pdf", "photo")]))
    def send_media(self, media: tuple[str, ...]) -> None:
        self.feed(None, media=media)

    @rule(location=st.tuples(st.floats(-100, 100), st.floats(-200, 200)))
    def share_location(self, location: tuple[float, float]) -> None:
        self.feed(None, location=location)

    @rule(phone=st.sampled_from(["+996 555 123 456", "12", "+7 701 123 45 67", ""]))
    def share_contact(self, phone: str) -> None:
        self.feed(None, contact_phone=phone)

    @rule(seconds=st.sampled_from([1, 60, TTL - 1, TTL, TTL + 1, 3 * TTL]))
    def wait(self, seconds: int) -> None:
        self.now += seconds

    # -- the checks ----------------------------------------------------------------------------

    def feed(self, text: str | None, **extra: object) -> None:
        self.count += 1
        self.now += 1
        turn = Turn(f"m{self.count}", CLIENT, text, self.now, **extra)  # type: ignore[arg-type]
        before = self.state
        transition = step(before, turn, self.now, self.settings)
        assert transition == step(before, turn, self.now, self.settings), "not deterministic"
        self.check(before, turn, transition)
        self.state = transition.state

    def check(self, before: DialogState | None, turn: Turn, transition: Transition) -> None:
        after = transition.state
        alive = (
            before is not None
            and before.step is not Step.IDLE
            and self.now - before.updated_at <= TTL
            and is_consistent(before)
        )
        # Silence only while a human has the conversation, and it changes nothing.
        if not transition.replies:
            assert alive and before is not None and before.step is Step.HANDOFF
            assert after == before
        # A dialog older than the TTL is never continued.
        if before is not None and not alive:
            assert after.address is None and transition.order is None
            assert after.dialog_id in ("", f"{CLIENT}:{turn.message_id}")
        # An order only right after an explicit yes to the summary, with what it showed.
        explicit_yes = (
            alive
            and before is not None
            and before.step is Step.WAITING_CONFIRMATION
            and turn.text is not None
            and match_command(turn.text) is None
            and match_edit(turn.text) is None
            and classify_answer(turn.text) is Answer.YES
        )
        assert (transition.order is not None) == explicit_yes
        if transition.order is not None:
            assert before is not None
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
            self.orders += 1
        # Every reply is a known key with exactly its parameters, and renders everywhere.
        for reply in transition.replies:
            assert {name for name, _ in reply.params} == REPLY_PARAMS[reply.key] - {"order_id"}
            for locale in SUPPORTED_LOCALES:
                assert render(reply, locale, order_id="1")
        # While waiting for an answer, the last reply is the question.
        if after.step not in (Step.IDLE, Step.HANDOFF):
            assert transition.replies[-1] == ask(after)
        if transition.replies and transition.replies[-1].key == "ask_confirmation":
            self.summary = dict(transition.replies[-1].params)
        # The new state is sound, fresh and survives storage.
        assert is_consistent(after)
        assert after.locale in SUPPORTED_LOCALES
        assert after.updated_at <= self.now and self.now - after.updated_at <= TTL
        assert load_state(dump_state(after)) == after

    @invariant()
    def state_is_storable(self) -> None:
        if self.state is not None:
            assert load_state(dump_state(self.state)) == self.state


Customer.TestCase.settings = settings(
    max_examples=120, stateful_step_count=40, derandomize=True, deadline=None
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
