"""Whole conversations, as a customer would have them, in each language."""

from __future__ import annotations

import pytest

from botd.dialog import OrderCancel, OrderDraft, Step, render

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
        "Thank you! Order #42 has been placed.",
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
    assert last.order.locale == locale  # for the messages about the order, later
    assert last.order.started_at == transitions[0].state.started_at > 0
    assert render(last.replies[0], locale, order_id="42").startswith(confirmation)
    assert last.state.step is Step.IDLE


def test_kyrgyz_without_its_letters_is_answered_in_kyrgyz() -> None:
    chat = Chat(client_id="77")
    transitions = [chat.say(t) for t in ["salam, suu kerek", "Chui 100", "0555123456", "eki"]]
    assert all(t.state.locale == "ky" for t in transitions)
    done = chat.say("ooba")
    assert done.order == OrderDraft("77:m1", "77", "+996555123456", "Chui 100", 2)


def test_a_bumpy_conversation() -> None:
    chat = Chat()
    assert keys(chat.say(None, media=("photo",))) == ("greeting", "ask_address")
    assert keys(chat.say("ул")) == ("address_not_understood", "ask_address")
    assert keys(chat.say(None, location=(42.8746, 74.5698))) == ("ask_phone",)
    assert keys(chat.say("0555 1234 5678")) == ("phone_invalid", "ask_phone")
    assert keys(chat.say(None, contact_phone="+996 700 000 001")) == ("ask_quantity",)
    assert keys(chat.say("сто")) == ("quantity_not_a_number", "ask_quantity")
    assert keys(chat.say("100")) == ("quantity_out_of_range", "ask_quantity")
    assert keys(chat.say("english")) == ("locale_switched", "ask_quantity")
    assert keys(chat.say("12 pcs")) == ("ask_confirmation",)
    assert keys(chat.say("not ok")) == ("what_to_change",)
    assert keys(chat.say("phone")) == ("edit_field", "ask_phone")
    assert keys(chat.say("0555 123 456")) == ("ask_confirmation",)
    assert keys(chat.say("help")) == ("help_confirmation", "ask_confirmation")
    done = chat.say("👍")
    assert done.order == OrderDraft(
        "client-1:m1", "client-1", "+996555123456", "📍 42.87460, 74.56980", 12
    )
    assert keys(done) == ("order_created",)
    assert chat.state is not None and chat.state.locale == "en"


def test_a_whole_order_in_one_message() -> None:
    chat = Chat()
    first = chat.say("Здравствуйте! Нужно 2 бутылки на Токтогула 10, кв 5, тел 0555 123 456")
    assert keys(first) == ("greeting", "ask_confirmation")
    done = chat.say("да")
    assert done.order == OrderDraft(
        "client-1:m1", "client-1", "+996555123456", "Токтогула 10, кв 5", 2
    )


def test_values_asked_back_are_recorded_only_after_a_yes() -> None:
    chat = Chat()
    chat.say("Здравствуйте")
    assert keys(chat.say("Бишкек")) == ("ask_address_detail",)
    assert keys(chat.say("Токтогула 10")) == ("ask_phone",)
    assert keys(chat.say("пару")) == ("confirm_quantity",)
    assert chat.state is not None and chat.state.quantity is None
    assert keys(chat.say("0555 123 456")) == ("confirm_quantity",)  # still not recorded
    assert chat.state.quantity is None and chat.state.phone == "+996555123456"
    assert keys(chat.say("да")) == ("ask_confirmation",)
    done = chat.say("да")
    assert done.order == OrderDraft(
        "client-1:m1", "client-1", "+996555123456", "Бишкек, Токтогула 10", 2
    )


def test_no_then_cancel_then_a_new_order() -> None:
    chat = Chat()
    chat.fill("привет", "Бишкек, Чуй 100", "0555 123 456", "3")
    assert keys(chat.say("нет")) == ("what_to_change",)
    assert chat.state is not None and chat.state.quantity == 3  # a bare no keeps everything
    assert keys(chat.say("отмена")) == ("order_cancelled",)
    assert keys(chat.say("хочу заказать")) == ("greeting", "ask_address")
    assert chat.state is not None and chat.state.address is None


def test_no_with_a_value_changes_it_and_asks_again() -> None:
    chat = Chat()
    chat.fill("привет", "Бишкек, Чуй 100", "0555 123 456", "3")
    assert keys(chat.say("нет, 4 штуки")) == ("value_updated", "ask_confirmation")
    done = chat.say("да")
    assert done.order is not None and done.order.quantity == 4


def test_the_order_can_be_cancelled_right_after_but_not_later() -> None:
    chat = Chat()
    chat.fill("Чуй 100, 0555123456, 3 шт")
    placed = chat.say("да")
    assert placed.order is not None
    assert keys(chat.say("спасибо")) == ("you_are_welcome",)
    cancelled = chat.say("отмените заказ", after=60)
    assert cancelled.cancel == OrderCancel(placed.order.idempotency_key, "client-1")
    assert keys(cancelled) == ("placed_order_cancelled",)
    assert render(cancelled.replies[0], "ru", order_id="42") == "Заказ №42 отменён."

    late = Chat(client_id="2")
    late.fill("Чуй 100, 0555123456, 3 шт", "да")
    too_late = late.say("отмена", after=late.settings.cancel_window_seconds + 1)
    assert too_late.cancel is None
    assert keys(too_late) == ("order_cancel_too_late",)


@pytest.mark.parametrize("back", ["/bot", "бот", "Бот"])
def test_handoff_and_back(back: str) -> None:
    chat = Chat()
    chat.fill("привет", "Бишкек, Чуй 100")
    handing = chat.say("позовите оператора")
    assert keys(handing) == ("handoff_started",) and handing.handoff_started
    assert chat.say("у меня вопрос про доставку").replies == ()
    assert chat.say("3").replies == ()
    assert chat.say("отмена").replies == ()
    assert keys(chat.say(back)) == ("bot_resumed", "ask_address")


def test_a_person_asked_for_in_a_sentence() -> None:
    chat = Chat()
    chat.fill("привет", "Бишкек, Чуй 100")
    assert keys(chat.say("можно живого человека?")) == ("handoff_started",)
    assert chat.state is not None and chat.state.step is Step.HANDOFF


def test_handoff_ends_with_the_ttl() -> None:
    chat = Chat()
    chat.say("оператор")
    ttl = chat.settings.handoff_seconds
    assert chat.say("ещё вопрос", after=ttl / 2).replies == ()
    assert chat.say("алло", after=ttl / 2).replies == ()  # exactly one TTL: still a human's
    again = chat.say("алло?", after=1)
    assert keys(again)[0] == "dialog_expired" and keys(again)[-1] == "ask_address"
    assert again.state.step is Step.WAITING_ADDRESS


def test_a_day_later_the_dialog_starts_over() -> None:
    chat = Chat()
    chat.fill("привет", "Бишкек, Чуй 100", "0555 123 456")
    transition = chat.say("3", after=chat.settings.state_ttl_seconds + 1)
    assert keys(transition) == ("dialog_expired", "ask_address")
    assert transition.state.phone is None
