"""Every phrase list in every language, and the near misses that must not match."""

from __future__ import annotations

import pytest

from botd.dialog.phrases import (
    COMMAND_PHRASES,
    EDIT_PHRASES,
    NO_WORDS,
    YES_WORDS,
    Answer,
    Command,
    Field,
    classify_answer,
    command_locale,
    detect_locale,
    match_command,
    match_edit,
    normalize_locale,
    tokens,
)

# The lists, by language, so a word dropped from phrases.py fails here.
YES_BY_LANGUAGE = {
    "ru": ("да", "ага", "конечно", "подтверждаю", "угу", "верно", "хорошо", "ок", "окей"),
    "ky": ("ооба", "ооба.", "макул", "туура"),
    "en": ("yes", "y", "yeah", "yep", "ok", "okay", "sure", "confirm", "correct"),
    "typos": ("lf", "yse", "ys", "даа"),
}
NO_BY_LANGUAGE = {
    "ru": ("нет", "не", "неа"),
    "ky": ("жок",),
    "en": ("no", "n", "nope", "cancel", "nah"),
    "typos": ("ytn",),
}


@pytest.mark.parametrize("word", sorted(YES_WORDS))
def test_every_yes_word_is_yes(word: str) -> None:
    assert classify_answer(word) is Answer.YES
    assert classify_answer(word.upper() + "!") is Answer.YES
    assert classify_answer(f"  {word.capitalize()}, спасибо ") is Answer.YES


@pytest.mark.parametrize("word", sorted(NO_WORDS))
def test_every_no_word_is_no(word: str) -> None:
    assert classify_answer(word) is Answer.NO
    assert classify_answer(word.upper() + ".") is Answer.NO


@pytest.mark.parametrize("word", [word for words in YES_BY_LANGUAGE.values() for word in words])
def test_required_yes_words(word: str) -> None:
    assert classify_answer(word) is Answer.YES


@pytest.mark.parametrize("word", [word for words in NO_BY_LANGUAGE.values() for word in words])
def test_required_no_words(word: str) -> None:
    assert classify_answer(word) is Answer.NO


@pytest.mark.parametrize("emoji", ["👍", "👍🏻", "👌", "✅", "да 👍"])
def test_yes_emoji(emoji: str) -> None:
    assert classify_answer(emoji) is Answer.YES


@pytest.mark.parametrize("emoji", ["👎", "👎🏽", "❌"])
def test_no_emoji(emoji: str) -> None:
    assert classify_answer(emoji) is Answer.NO


@pytest.mark.parametrize(
    "text",
    [
        "not ok",
        "не да",
        "да нет",
        "nothing",
        "yesterday",
        "okey-dokey",
        "nobody",
        "yess",
        "окно",
        "данные",
        "нетрудно",
        "жокко",
        "yes no",
        "y not",
        "not sure",
        "don't confirm",
        "да, но адрес другой",
        "yes but change the phone",
        "не знаю",
        "I don't know",
        "👍👎",
        "да 👎",
        "",
        "   ",
        "?",
        "hmm",
        "может быть",
    ],
)
def test_near_misses_are_unclear(text: str) -> None:
    assert classify_answer(text) is Answer.UNCLEAR


def test_tokens_are_whole_case_folded_words() -> None:
    assert tokens("Да,НЕТ ok!  ооба.") == ("да", "нет", "ok", "ооба")
    assert tokens("okey-dokey 3шт") == ("okey", "dokey", "3шт")


# -- commands ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "phrase"),
    [(command, phrase) for command, phrases in COMMAND_PHRASES.items() for phrase in phrases],
)
def test_every_command_phrase_matches(command: Command, phrase: str) -> None:
    assert match_command(phrase) is command
    assert match_command(phrase.upper() + "!") is command
    assert match_command(f"{phrase}, пожалуйста") is command


@pytest.mark.parametrize(
    ("text", "command"),
    [
        ("/cancel", Command.CANCEL),
        ("/stop", Command.CANCEL),
        ("отмена", Command.CANCEL),
        ("отменить", Command.CANCEL),
        ("Отмена заказа", Command.CANCEL),
        ("cancel", Command.CANCEL),
        ("жокко чыгаруу", Command.CANCEL),
        ("токтот", Command.CANCEL),
        ("/start", Command.RESTART),
        ("/start@water_shop_bot", Command.RESTART),
        ("/start deep-link-payload", Command.RESTART),
        ("начать заново", Command.RESTART),
        ("restart", Command.RESTART),
        ("start over", Command.RESTART),
        ("кайра баштоо", Command.RESTART),
        ("/help", Command.HELP),
        ("?", Command.HELP),
        ("???", Command.HELP),
        ("помощь", Command.HELP),
        ("help", Command.HELP),
        ("жардам", Command.HELP),
        ("оператор", Command.HANDOFF),
        ("позовите оператора, пожалуйста", Command.HANDOFF),
        ("operator", Command.HANDOFF),
        ("I want to talk to a human", Command.HANDOFF),
        ("менеджер", Command.HANDOFF),
        ("manager", Command.HANDOFF),
        ("человек", Command.HANDOFF),
        ("живой человек", Command.HANDOFF),
        ("адам", Command.HANDOFF),
        ("/bot", Command.BOT),
        ("english", Command.LOCALE_EN),
        ("in English please", Command.LOCALE_EN),
        ("русский", Command.LOCALE_RU),
        ("на русском", Command.LOCALE_RU),
        ("по-русски", Command.LOCALE_RU),
        ("кыргызча", Command.LOCALE_KY),
        ("/ky", Command.LOCALE_KY),
    ],
)
def test_commands(text: str, command: Command) -> None:
    assert match_command(text) is command


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "да",
        "5 человек",  # a quantity, not a request for a human
        "не надо оператора",
        "ул. Операторская 5",
        "helpful",
        "отменный сервис",
        "startup street 5",
        "/unknown",
        "/",
        "пожалуйста",  # fillers alone are no command
        "Бишкек, ул. Токтогула 10",
        "why?",
        " ".join(["оператор"] * 9),  # long messages are never commands
    ],
)
def test_not_commands(text: str | None) -> None:
    assert match_command(text) is None


def test_command_locales() -> None:
    assert command_locale(Command.LOCALE_RU) == "ru"
    assert command_locale(Command.LOCALE_KY) == "ky"
    assert command_locale(Command.LOCALE_EN) == "en"
    assert command_locale(Command.HELP) is None


# -- edits ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "phrase"),
    [(field, phrase) for field, phrases in EDIT_PHRASES.items() for phrase in phrases],
)
def test_every_edit_phrase_matches(field: Field, phrase: str) -> None:
    assert match_edit(phrase) is field
    assert match_edit(f"изменить {phrase}") is field


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("адрес", Field.ADDRESS),
        ("address", Field.ADDRESS),
        ("дарек", Field.ADDRESS),
        ("Неправильный адрес", Field.ADDRESS),
        ("нет, адрес другой", Field.ADDRESS),
        ("change the address", Field.ADDRESS),
        ("телефон", Field.PHONE),
        ("phone", Field.PHONE),
        ("wrong phone number", Field.PHONE),
        ("количество", Field.QUANTITY),
        ("quantity", Field.QUANTITY),
        ("саны", Field.QUANTITY),
        ("кол-во", Field.QUANTITY),
    ],
)
def test_edits(text: str, field: Field) -> None:
    assert match_edit(text) is field


@pytest.mark.parametrize(
    "text", [None, "да", "нет", "адрес и телефон", "да, адрес верный", "адресат", "phones"]
)
def test_not_edits(text: str | None) -> None:
    assert match_edit(text) is None


# -- locales ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "locale"),
    [
        ("Здравствуйте", "ru"),
        ("Саламатсызбы, суу керек", "ru"),  # no Kyrgyz-only letter: cannot tell, Russian
        ("Салам, үйгө суу керек", "ky"),
        ("Мен буйрутма бергим келет, өтө шашылыш", "ky"),
        ("Hello", "en"),
        ("hi привет", "ru"),
        ("hello there, привет", "en"),
        ("/start", None),
        ("123", None),
        ("👍", None),
        (None, None),
    ],
)
def test_detect_locale(text: str | None, locale: str | None) -> None:
    assert detect_locale(text) == locale


@pytest.mark.parametrize(
    ("hint", "locale"),
    [("ru", "ru"), ("ru-RU", "ru"), ("en_US", "en"), ("KY", "ky"), ("de", None), ("", None)],
)
def test_normalize_locale(hint: str, locale: str | None) -> None:
    assert normalize_locale(hint) == locale
