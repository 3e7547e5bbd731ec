"""Questions and their topics: "сколько стоит?", "доставляете в Каракол?", "жеткиресизби".

A clause is a question by its "?", a question word at either end, or a Kyrgyz question particle;
its topic (price, delivery, hours, …) comes from the topic phrases of the lexicon. A question
that carries a request with values ("можно 3 бутылки на Токтогула 5?") is read for its values.
"""

from __future__ import annotations

from .intents import _Acc, _find_phrase, _only
from .tokens import _Clause, _Tok
from .vocab import (
    _SMALL_TALK,
    CORRECTION,
    GREETINGS,
    MARKERS,
    PLACES,
    QUESTION_WORDS,
    REQUEST,
    TOPIC_PHRASES,
    YES,
    Topic,
    _fold_all,
)

# Words that make a question a request with values: "можно 3 бутылки на Токтогула 5?"
_ASKING_FOR = _fold_all(
    {"можно", "хочу", "нужно", "нужна", "привезите", "привезти", "доставьте", "please", "pls",
     "can", "could", "мага", "керек", "бересизби", "алып", "жеткирип", "пожалуйста"}
)  # fmt: skip
_QUESTION_LEAD = _fold_all(
    {"а", "и", "ну", "скажите", "подскажите", "скажи", "подскажи", "извините", "кстати", "еще",
     "ещё", "так", "ok", "ок", "and", "also", "btw", "please", "тell", "айтыңызчы", "айтсаңыз",
     "айтып", "бериңизчи", "анан", "дагы", "a"}
)  # fmt: skip


_KY_QUESTION_ENDINGS = ("сызбы", "сизби", "суздарбы", "сыздарбы", "сиздерби", "сызбу", "биз",
                        "ызбы", "избы", "ызбу")  # fmt: skip


def _ky_question(tok: _Tok) -> bool:
    """ "жеткиресизби", "аласызбы": a Kyrgyz question by its particle, no "?" needed."""
    word = tok.word
    return (
        tok.number is None
        and len(word) >= 7
        and word.endswith(_KY_QUESTION_ENDINGS)
        and word not in YES
        and word not in GREETINGS
    )


def _has_value_words(clause: _Clause) -> bool:
    """Numbers, street words or places: a clause that may carry a value, not just ask."""
    return any(
        t.number is not None or t.word in MARKERS or t.word in PLACES
        for t in clause.toks
        if not t.used
    )


# The phrases of every topic in one table: whether a topic is named takes one search, not seven.
_ANY_TOPIC = tuple(
    sorted({p for phrases in TOPIC_PHRASES.values() for p in phrases}, key=len, reverse=True)
)


def _has_topic(words: tuple[str, ...]) -> bool:
    return bool(_find_phrase(words, _ANY_TOPIC))


def _question_clause(
    clause: _Clause, words: tuple[str, ...], acc: _Acc, *, asked: bool = False
) -> bool:
    """A question clause: note its topic; True when it is a question the bot should answer."""
    if acc.handoff or acc.cancel:
        return True
    topic: Topic | None = None
    for name, phrases in TOPIC_PHRASES.items():
        if _find_phrase(words, phrases):
            topic = name
            break
    if topic is None and not (asked or clause.question or (words and words[0] in QUESTION_WORDS)):
        return False
    if topic is None:
        if _only(words, _SMALL_TALK | REQUEST | CORRECTION):
            return False  # "здравствуйте?" "да?" — not a question to answer
        topic = Topic.OTHER
    if acc.question is None or acc.question is Topic.OTHER:
        acc.question = topic
    return True


def _is_asking(clause: _Clause, words: tuple[str, ...], acc: _Acc) -> bool:
    """A clause that asks something (a topic, or a question that requests nothing)."""
    lead = tuple(w for w in words if w not in _QUESTION_LEAD)
    if lead[:2] in (("как", "обычно"), ("как", "всегда"), ("как", "раньше")):
        lead = lead[2:]  # "как обычно 3 бутылки": as usual, not a question
    question_like = (
        clause.question
        or bool(lead and (lead[0] in QUESTION_WORDS or lead[-1] in QUESTION_WORDS))
        or any(_ky_question(t) for t in clause.toks)
    )
    topic = _has_topic(words)
    return (topic and (question_like or not _has_value_words(clause))) or (
        question_like and not any(w in _ASKING_FOR for w in words) and not acc.handoff
    )
