"""Whole conversations, as a customer would have them, in each language."""

from __future__ import annotations

import pytest

from botd.dialog import OrderDraft, Step, render

from .support import Chat, keys

HAPPY_PATHS = {
    "ru": (
        ["Здравствуйте", "Бишкек, ул. Токтогула 10, кв. 5", "0555 123 456", "три бутылки", "Да"],
        "Спасибо! Заказ №42 оформлен.",
    ),
    "ky": (
        ["Саламатсызбы, суу керек үйгө", "Бишкек, Чүй 100, 5-батир", "+996 555 123 456", "эки",
         "ооба."],
        "Рахмат! №42 буйрутмаңыз кабыл алынды.",
    ),
    "en": (
        ["Hello", "Bishkek, Chui Avenue 100, flat 5", "996555123456", "2 bottles", "yes"],
        "Thank you! Order #42 is placed.",
    ),
}  # fmt: skip


@pytest.mark.parametrize("locale", sorted(HAPPY_PATHS))
def test_happy_path(locale: str) -> None:
    answers, confirmation = HAPPY_PATHS[locale]
    chat = Chat(client_id="77")
    transitions = [chat.say(answer) for answer in answers]
    assert [keys(t) for t in transitions] == [
        ("greeting", "ask_address"),
        ("ask_phone",),
        ("ask_quantity",),
        ("ask_confirmation",),
        ("order_created",),
    ]
    assert all(t.state.locale == locale for t in transitions)
    summary = render(transitions[3].replies[0], locale)
    assert answers[1] in summary and "+996555123456" in summary
    last = transitions[-1]
    assert last.order == OrderDraft(
        idempotency_key="77:m1",
        client_id="77",
        phone="+996555123456",
        address=answers[1],
        quantity=3 if locale == "ru" else 2,
    )
    assert render(last.replies[0], locale, order_id="42").startswith(confirmation)
    assert last.state.step is Step.IDLE


def test_a_bumpy_conversation() -> None:
    chat = Chat()
    assert keys(chat.say(None, media=("photo",))) == ("greeting", "ask_address")
    assert keys(chat.say("ул")) == ("address_too_short", "ask_address")
    assert keys(chat.say(None, location=(42.8746, 74.5698))) == ("ask_phone",)
    assert keys(chat.say("+7 701 123")) == ("phone_invalid", "ask_phone")
    assert keys(chat.say(None, contact_phone="+996 700 000 001")) == ("ask_quantity",)
    assert keys(chat.say("сто")) == ("quantity_not_a_number", "ask_quantity")
    assert keys(chat.say("100")) == ("quantity_out_of_range", "ask_quantity")
    assert keys(chat.say("english")) == ("locale_switched", "ask_quantity")
    assert keys(chat.say("12 pcs")) == ("ask_confirmation",)
    assert keys(chat.say("not ok")) == ("confirm_unclear", "ask_confirmation")
    assert keys(chat.say("phone")) == ("ask_phone",)
    assert keys(chat.say("0555 123 456")) == ("ask_confirmation",)
    assert keys(chat.say("?")) == ("help_confirmation", "ask_confirmation")
    done = chat.say("👍")
    assert done.order == OrderDraft(
        "client-1:m1", "client-1", "+996555123456", "📍 42.87460, 74.56980", 12
    )
    assert keys(done) == ("order_created",)
    assert chat.state is not None and chat.state.locale == "en"


def test_cancel_then_a_new_order() -> None:
    chat = Chat()
    chat.fill("привет", "Бишкек, Чуй 100", "0555 123 456", "3")
    assert keys(chat.say("нет")) == ("order_cancelled",)
    assert keys(chat.say("хочу заказать")) == ("greeting", "ask_address")
    assert chat.state is not None and chat.state.address is None


def test_handoff_and_back() -> None:
    chat = Chat()
    chat.fill("привет", "Бишкек, Чуй 100")
    assert keys(chat.say("позовите оператора")) == ("handoff_started",)
    assert chat.say("у меня вопрос про доставку").replies == ()
    assert chat.say("3").replies == ()
    assert keys(chat.say("/bot")) == ("bot_resumed", "ask_address")


def test_handoff_ends_with_the_ttl() -> None:
    chat = Chat()
    chat.say("оператор")
    ttl = chat.settings.state_ttl_seconds
    assert chat.say("ещё вопрос", after=ttl / 2).replies == ()
    assert chat.say("алло", after=ttl / 2).replies == ()  # exactly one TTL: still a human's
    assert keys(chat.say("алло?", after=1)) == ("dialog_expired", "ask_address")


def test_a_day_later_the_dialog_starts_over() -> None:
    chat = Chat()
    chat.fill("привет", "Бишкек, Чуй 100", "0555 123 456")
    transition = chat.say("3", after=chat.settings.state_ttl_seconds + 1)
    assert keys(transition) == ("dialog_expired", "ask_address")
    assert transition.state.phone is None
