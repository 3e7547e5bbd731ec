"""The shop moved an order: the customer hears about it once, in their language, and their
dialog — if one is in progress — goes on where it was."""

from __future__ import annotations

import dataclasses

import pytest

from botd.dialog import (
    DialogState,
    Field,
    OrderStatusChanged,
    Pending,
    Reply,
    Step,
    TimerKind,
    Transition,
    handle,
    render,
    status_step,
)
from botd.dialog.step import ask
from botd.dialog.texts import SUPPORTED_LOCALES

from .support import SETTINGS

NOW = 1_700_000_000.0
ADDRESS = "Бишкек, ул. Токтогула 10, кв. 5"
PHONE = "+996555123456"
TOLD = {"delivering": "order_delivering", "cancelled": "order_cancelled_by_shop"}
WAITING = (
    Step.WAITING_ADDRESS,
    Step.WAITING_PHONE,
    Step.WAITING_QUANTITY,
    Step.WAITING_CONFIRMATION,
)


def event(status: str = "delivering", locale: str | None = None) -> OrderStatusChanged:
    return OrderStatusChanged(
        message_id="order-6f1c",
        client_id="client-1",
        order_id=4217,
        status=status,
        locale=locale,
        at=NOW,
    )


def state_at(step: Step, locale: str = "ky", updated_at: float = NOW - 60) -> DialogState:
    """A consistent state at ``step``, last touched by the customer a minute ago."""
    later = step in (Step.WAITING_PHONE, Step.WAITING_QUANTITY, Step.WAITING_CONFIRMATION)
    return DialogState(
        step=step,
        dialog_id="" if step in (Step.IDLE, Step.HANDOFF) else "client-1:m1",
        locale=locale,
        started_at=NOW - 600,
        updated_at=updated_at,
        address=ADDRESS if later else None,
        phone=PHONE if step in (Step.WAITING_QUANTITY, Step.WAITING_CONFIRMATION) else None,
        quantity=3 if step is Step.WAITING_CONFIRMATION else None,
        locale_sure=True,
        last_order_key="client-1:m0",
        last_order_at=NOW - 3600,
    )


def told(transition: Transition | None) -> Transition:
    assert transition is not None
    return transition


@pytest.mark.parametrize(("status", "key"), sorted(TOLD.items()))
def test_delivering_and_cancelled_are_told_with_the_orders_number(status: str, key: str) -> None:
    transition = told(handle(state_at(Step.IDLE), event(status), NOW, SETTINGS))
    assert transition.replies == (Reply(key, (("order_id", "4217"),)),)


@pytest.mark.parametrize("status", ["placed", "confirmed", "delivered", "", "DELIVERING"])
@pytest.mark.parametrize("step", [None, Step.IDLE, Step.WAITING_PHONE, Step.HANDOFF])
def test_any_other_status_needs_nothing(status: str, step: Step | None) -> None:
    state = None if step is None else state_at(step)
    assert handle(state, event(status), NOW, SETTINGS) is None


@pytest.mark.parametrize("locale", SUPPORTED_LOCALES)
@pytest.mark.parametrize("key", sorted(TOLD.values()))
def test_each_text_renders_the_number_in_each_language(key: str, locale: str) -> None:
    text = render(Reply(key, (("order_id", "4217"),)), locale)
    assert "4217" in text and "{" not in text
    # each language has its own words (not a fallback to another locale's text)
    every = [render(Reply(key, (("order_id", "4217"),)), other) for other in SUPPORTED_LOCALES]
    assert every.count(text) == 1, every


def test_the_two_texts_differ() -> None:
    for locale in SUPPORTED_LOCALES:
        delivering = render(Reply("order_delivering", (("order_id", "1"),)), locale)
        cancelled = render(Reply("order_cancelled_by_shop", (("order_id", "1"),)), locale)
        assert delivering != cancelled


@pytest.mark.parametrize("status", sorted(TOLD))
def test_a_human_operators_conversation_is_not_interrupted(status: str) -> None:
    handoff = state_at(Step.HANDOFF)
    transition = told(handle(handoff, event(status), NOW, SETTINGS))
    assert transition == Transition(handoff, ())


def test_a_handoff_that_ran_out_no_longer_silences_the_news() -> None:
    """After ``handoff_seconds`` without the operator the bot is back (a customer's message
    would restart the dialog), so the shop's news is told; the state is left for that message."""
    handoff = state_at(Step.HANDOFF, updated_at=NOW - SETTINGS.handoff_seconds - 1)
    transition = told(handle(handoff, event(), NOW, SETTINGS))
    assert transition.state == handoff
    assert [r.key for r in transition.replies] == ["order_delivering"]
    assert transition.timer is None


@pytest.mark.parametrize("locale", SUPPORTED_LOCALES)
def test_without_a_state_the_customer_is_idle_in_the_language_they_ordered_in(
    locale: str,
) -> None:
    transition = told(handle(None, event("cancelled", locale), NOW, SETTINGS))
    assert transition.state.step is Step.IDLE
    assert transition.state.locale == locale
    assert (transition.state.dialog_id, transition.state.updated_at) == ("", NOW)
    assert transition.timer is None
    assert transition.replies == (Reply("order_cancelled_by_shop", (("order_id", "4217"),)),)
    assert transition.order is None and transition.cancel is None


@pytest.mark.parametrize("hint", [None, "", "de", "fr-FR"])
def test_an_unknown_language_falls_back_to_the_default(hint: str | None) -> None:
    settings = dataclasses.replace(SETTINGS, default_locale="en")
    transition = told(handle(None, event(locale=hint), NOW, settings))
    assert transition.state.locale == "en"


def test_a_regional_language_tag_is_understood() -> None:
    transition = told(handle(None, event(locale="ky-KG"), NOW, SETTINGS))
    assert transition.state.locale == "ky"


def test_idle_keeps_the_state_and_says_one_thing() -> None:
    idle = state_at(Step.IDLE, locale="en")
    transition = told(handle(idle, event(locale="ru"), NOW, SETTINGS))
    # the dialog's language wins over the one of the order: it is the customer's latest
    assert transition == Transition(idle, (Reply("order_delivering", (("order_id", "4217"),)),))


@pytest.mark.parametrize("step", WAITING)
def test_mid_dialog_the_question_is_asked_again_and_the_dialogs_age_is_kept(step: Step) -> None:
    state = state_at(step)
    transition = told(handle(state, event("delivering", "ru"), NOW, SETTINGS))
    assert transition.state == state  # same locale (ky), same updated_at: the TTL still counts
    assert transition.replies == (
        Reply("order_delivering", (("order_id", "4217"),)),
        ask(state),
    )
    # the commit makes the reminder pending for the old version stale: a new one is asked for
    assert transition.timer is TimerKind.REMINDER
    assert transition.order is None and transition.cancel is None
    assert not transition.handoff_started


def test_mid_dialog_a_pending_confirmation_is_asked_again_as_it_was() -> None:
    state = dataclasses.replace(
        state_at(Step.WAITING_ADDRESS), pending=Pending(Field.ADDRESS, "Токтогула 10")
    )
    transition = told(handle(state, event("cancelled"), NOW, SETTINGS))
    assert transition.replies[1] == Reply("confirm_address", (("address", "Токтогула 10"),))


def test_a_dialog_past_its_ttl_is_not_asked_again() -> None:
    """The customer's next message will start over ("dialog_expired"): re-asking its question
    now would be a question nobody will take the answer to."""
    stale = state_at(Step.WAITING_PHONE, updated_at=NOW - SETTINGS.state_ttl_seconds - 1)
    transition = told(handle(stale, event(), NOW, SETTINGS))
    assert transition.state == stale
    assert [r.key for r in transition.replies] == ["order_delivering"]
    assert transition.timer is None


def test_a_broken_state_is_not_asked_again() -> None:
    broken = dataclasses.replace(state_at(Step.WAITING_CONFIRMATION), quantity=None)
    transition = told(handle(broken, event(), NOW, SETTINGS))
    assert [r.key for r in transition.replies] == ["order_delivering"]
    assert transition.timer is None


def test_status_step_is_what_handle_does() -> None:
    state = state_at(Step.WAITING_QUANTITY)
    assert status_step(state, event(), NOW, SETTINGS) == handle(state, event(), NOW, SETTINGS)


def test_the_same_event_gives_the_same_transition() -> None:
    """A redelivery must reproduce the first delivery's replies exactly."""
    for state in (None, state_at(Step.IDLE), state_at(Step.WAITING_PHONE)):
        assert handle(state, event(), NOW, SETTINGS) == handle(state, event(), NOW, SETTINGS)
