"""The language of a message's words: Kyrgyz, Russian or English.

Kyrgyz by its letters (ң ө ү), its words (also typed without those letters and in Latin) and its
verb endings; Russian by its words (also typed in Latin); English by its own. Words every
language borrows in order talk (addresses, "оператор", "ok") tell nothing.
"""

from __future__ import annotations

import re

from .tokens import _canonical
from .vocab import (
    _SMALL_TALK,
    _WORD_RE,
    ALL_FIELD_WORDS,
    CORRECTION,
    EN_WORDS,
    GREETINGS,
    HANDOFF_REQUEST,
    HANDOFF_WORDS,
    HEDGES,
    KY_WORDS,
    MARKERS,
    NO,
    ONES,
    PLACES,
    QUANTITY_FILLERS,
    QUESTION_WORDS,
    REQUEST,
    RU_LATIN,
    TEENS,
    TENS,
    THANKS,
    YES,
    _fold_all,
    fold,
)

_RU_WORDS = frozenset(
    w
    for w in (YES | NO | GREETINGS | THANKS | REQUEST | CORRECTION | QUESTION_WORDS
              | QUANTITY_FILLERS | HANDOFF_WORDS | HANDOFF_REQUEST | frozenset(ONES)
              | frozenset(TEENS) | frozenset(TENS) | ALL_FIELD_WORDS | HEDGES
              | _fold_all({"и", "в", "на", "с", "по", "я", "мне", "не", "это", "у", "вас",
                           "что", "мой", "моя", "пожалуйста", "спасибо", "улица", "дом",
                           "квартира", "заказ", "привезите", "адрес", "телефон", "номер",
                           "сколько", "стоит", "будет", "нужно", "можно", "есть", "уже",
                           "тоже", "только", "ещё", "еще", "если", "или", "за", "от", "до",
                           "к", "для", "вы", "мы", "нам", "наш", "ваш", "так", "вот"}))
    if re.fullmatch(r"[а-яё\-]+", w)
) - KY_WORDS - {"он", "бир", "эки", "уч", "торт", "беш", "алты", "жети", "адам"}  # fmt: skip
_EN_ONLY = EN_WORDS - RU_LATIN - KY_WORDS


# Words every language borrows in addresses and order talk: they tell no language.
_BORROWED = (MARKERS | ALL_FIELD_WORDS | PLACES | _fold_all({"ok", "ок", "оператор", "operator",
             "заказ", "менеджер", "салам", "salam", "адрес", "номер", "nomer", "adres"})) - (
    KY_WORDS - _fold_all({"үй", "уй", "батир", "кабат"})
) - (EN_WORDS - RU_LATIN)  # fmt: skip


# Verb and question endings only Kyrgyz has ("жеткиресиздерби", "бересизби", "алып келгиле").
_KY_ENDINGS = tuple(
    fold(e)
    for e in ("сызбы", "сизби", "суздарбы", "сыздарбы", "сиздерби", "ңыз", "ңиз", "ңуз", "ңүз",
              "ыныз", "иниз", "гыла", "гиле", "ыңызчы", "иңизчи", "сыздар", "сиздер", "дарбы",
              "дерби", "ыбызбы", "ибизби")
)  # fmt: skip


def _scores(text: str, words: tuple[str, ...] | None = None) -> dict[str, float]:
    if words is None:
        words = tuple(_canonical(t) for t in _WORD_RE.findall(text))
    lowercase = {fold(t) for t in _WORD_RE.findall(text) if t[:1].islower()}
    scores = {"ky": 3.0 * sum(1 for ch in text if ch in "ңөүҢӨҮ"), "ru": 0.0, "en": 0.0}
    for w in words:
        if w in _BORROWED:
            continue
        inflected = len(w) >= 6 and w.endswith(_KY_ENDINGS) and w in lowercase
        if w in KY_WORDS or (inflected and w not in _RU_WORDS):
            scores["ky"] += 1.5  # Kyrgyz speakers borrow Russian nouns, not Kyrgyz grammar
        elif w in RU_LATIN:
            scores["ru"] += 1
        elif w in _EN_ONLY or (w.isascii() and w in _SMALL_TALK):
            scores["en"] += 1
        elif w in _RU_WORDS:
            scores["ru"] += 0.5 if w in _RU_LOANS else 1.0
    return scores


# Russian words Kyrgyz speakers use every day in a Kyrgyz sentence: weak evidence of Russian.
_RU_LOANS = _fold_all(
    {"вода", "воды", "воду", "штук", "штуки", "штука", "бутылка", "бутылки", "бутылок", "заказ",
     "квартира", "квартиры", "дом", "давайте", "давай", "короче", "ладно", "хорошо", "можно"}
)  # fmt: skip


def _clear_margin(scores: dict[str, float]) -> bool:
    """One language leads clearly: the others have no words, or half as many."""
    ranked = sorted(scores.values(), reverse=True)
    return ranked[0] > 0 and (ranked[1] == 0 or ranked[0] >= 2 * ranked[1])


def detect_locale(text: str, words: tuple[str, ...] | None = None) -> str | None:
    """The language of the words: Kyrgyz by its letters or words (also without ң/ө/ү and in
    Latin), English and Russian (also Russian typed in Latin) by theirs; None when unclear."""
    if text.lstrip().startswith("/"):
        return None
    return _leader(_scores(text, words))


def _leader(scores: dict[str, float]) -> str | None:
    """The language with the best score, when it is the only one; None when none scored."""
    best = max(scores.values())
    if best == 0:
        return None
    winners = [name for name, score in scores.items() if score == best]
    return winners[0] if len(winners) == 1 else None


def _locale_of(text: str, words: tuple[str, ...]) -> tuple[str | None, bool]:
    """(:func:`detect_locale`, :func:`_clear_margin`) of the words, scored once."""
    scores = _scores(text, words)
    locale = None if text.lstrip().startswith("/") else _leader(scores)
    return locale, _clear_margin(scores)


def locale_strength(text: str | None, locale: str) -> tuple[float, float]:
    """(score of ``locale``, best score of the others) for the words of ``text``."""
    if not text:
        return 0, 0
    scores = _scores(text)
    mine = scores.pop(locale, 0)
    return mine, max(scores.values())
