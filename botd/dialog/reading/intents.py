"""Intents that apply anywhere: cancel, restart, a person, help, language, yes/no, greetings,
thanks, "later", an order request, a correction and the fields it names.

Phrases are found as consecutive canonical words, longest first; single words are classified
one by one. What a message's clauses say adds up in one :class:`_Acc`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import lexicon as lx
from ..model import Field
from .tokens import _Clause
from .vocab import (
    _APOLOGIES,
    _POST_NEGATORS,
    BOT_WORDS,
    CANCEL_PHRASES,
    CORRECTION,
    FIELD_WORDS,
    GREETINGS,
    HANDOFF_REQUEST,
    HANDOFF_WORDS,
    HEDGES,
    HELP_PHRASES,
    LATER_PHRASES,
    LOCALE_PHRASES,
    NO,
    QUESTION_WORDS,
    REQUEST,
    RESTART_PHRASES,
    THANKS,
    YES,
    YES_PHRASES,
    Topic,
    _fold_all,
    fold,
)

# Cancel phrases that mean cancel wherever they stand; the others only as (almost) the whole
# clause ("не надо" cancels; "звонить не надо" does not).
_STRONG_CANCEL = tuple(
    p
    for p in CANCEL_PHRASES
    if any(
        w.startswith(("отмен", "cancel", "передума", "отказ", "жокко", "otmen", "отбой", "купил"))
        or w in ("bought",)
        for w in p
    )
)
_CANCEL_CONTEXT = frozenset(
    {fold(w) for w in ("уже", "мне", "нам", "пожалуйста", "извините", "все", "всё", "я", "а",
                       "ой", "спасибо", "заказ", "заказа", "воду", "воды", "вода", "тогда",
                       "эми", "азыр", "sorry", "please", "thanks", "the", "order", "it", "my",
                       "then", "ok", "ну", "короче", "lets", "let's", "сураныч", "кечиресиз",
                       "буйрутманы", "буйрутма", "заказды", "суу", "anymore", "water",
                       "рахмат", "эле", "давайте", "нет", "no", "жок", "его", "этот", "мой",
                       "последний", "пожалуста", "плиз", "pls", "please", "болуп", "калды",
                       "болду", "калды", "эми", "уже", "anymore", "more", "any", "i", "we",
                       "всё", "все", "тогда", "пока")}
)  # fmt: skip
_STRONG_YES = _fold_all(
    {"подтверждаю", "подтверждаем", "оформляйте", "оформляй", "оформите", "confirm", "confirmed",
     "proceed", "верно", "правильно", "туура", "correct", "макулмун", "ооба"}
)  # fmt: skip
_YES_NEGATORS = _fold_all({"не", "ne", "not", "dont", "don't", "isn't", "isnt", "ни", "no"})


# -- phrases ---------------------------------------------------------------------------------


_PhraseIndex = dict[str, tuple[tuple[str, ...], ...]]
_INDEXES: dict[int, _PhraseIndex] = {}


def _index_of(phrases: tuple[tuple[str, ...], ...]) -> _PhraseIndex:
    """The phrases by their first word, longest first (built once per phrase table)."""
    index = _INDEXES.get(id(phrases))
    if index is None:
        grouped: dict[str, list[tuple[str, ...]]] = {}
        for phrase in phrases:
            grouped.setdefault(phrase[0], []).append(phrase)
        index = {w: tuple(sorted(ps, key=len, reverse=True)) for w, ps in grouped.items()}
        _INDEXES[id(phrases)] = index
    return index


def _find_phrase(words: tuple[str, ...], phrases: tuple[tuple[str, ...], ...]) -> tuple[str, ...]:
    """The longest phrase found as consecutive words, or ()."""
    index = _INDEXES.get(id(phrases)) or _index_of(phrases)  # called ~20 times a message
    best: tuple[str, ...] = ()
    for i, word in enumerate(words):
        for phrase in index.get(word, ()):
            if len(phrase) <= len(best):
                break
            if words[i : i + len(phrase)] == phrase:
                best = phrase
                break
    return best


def _cancel_stem(words: tuple[str, ...]) -> tuple[str, ...]:
    """ "отмените-ка", "cancelled", "жокко чыгарыңызчы": cancel words by their stems."""
    for i, w in enumerate(words):
        if w.startswith(("отмен", "cancel", "otmen")) and not w.startswith("отменн"):
            return (w,)
        if (
            w in ("жокко", "jokko")
            and i + 1 < len(words)
            and words[i + 1].startswith(("чыгар", "chygar", "chigar"))
        ):
            return words[i : i + 2]
    return ()


def _only(words: tuple[str, ...], allowed: frozenset[str]) -> bool:
    return bool(words) and all(w in allowed for w in words)


# -- intents of a clause ---------------------------------------------------------------------


@dataclass(slots=True)
class _Acc:
    """What the clauses of one message add up to (mutable while reading)."""

    cancel: bool = False
    restart: bool = False
    handoff: bool = False
    help: bool = False
    bot: bool = False
    locale_switch: str | None = None
    question: Topic | None = None
    greeting: bool = False
    thanks: bool = False
    later: bool = False
    request: bool = False
    yes: bool = False
    no: bool = False
    hedge: bool = False
    correction: bool = False
    apology: bool = False
    fields: set[Field] = field(default_factory=set)
    other_words: int = 0


def _read_intents(clause: _Clause, words: tuple[str, ...], acc: _Acc) -> bool:
    """Note the clause's intents; True when the clause is nothing but intents."""
    if not words:
        return False
    plain = tuple(w for w in words)
    consumed: set[int] = set()
    _phrase_intents(plain, acc, consumed)
    _person_or_bot(clause, plain, acc, consumed)
    _word_intents(plain, acc, consumed)
    return len(consumed) == len(plain)


def _mark(plain: tuple[str, ...], phrase: tuple[str, ...], consumed: set[int]) -> None:
    """Count the words of the first occurrence of ``phrase`` as accounted for."""
    n = len(phrase)
    for i in range(len(plain) - n + 1):
        if plain[i : i + n] == phrase:
            consumed.update(range(i, i + n))
            return


def _phrase_intents(plain: tuple[str, ...], acc: _Acc, consumed: set[int]) -> None:
    """Language switch, yes or cancel, restart, help, "later": the intents said in phrases."""
    for locale, phrases in LOCALE_PHRASES.items():
        found = _find_phrase(plain, phrases)
        if found and len(plain) <= len(found) + 3:
            acc.locale_switch = locale
            _mark(plain, found, consumed)
    yes_phrase = _find_phrase(plain, YES_PHRASES)
    if yes_phrase:
        acc.yes = True
        _mark(plain, yes_phrase, consumed)
    else:
        _cancel_intent(plain, acc, consumed)
    restart = _find_phrase(plain, RESTART_PHRASES)
    if restart and len(plain) <= len(restart) + 3:
        acc.restart = True
        _mark(plain, restart, consumed)
    help_phrase = _find_phrase(plain, HELP_PHRASES)
    if help_phrase and len(plain) <= len(help_phrase) + 3:
        acc.help = True
        _mark(plain, help_phrase, consumed)
    later = _find_phrase(plain, LATER_PHRASES)
    if later:
        acc.later = True
        _mark(plain, later, consumed)


def _cancel_intent(plain: tuple[str, ...], acc: _Acc, consumed: set[int]) -> None:
    """A strong cancel phrase anywhere; a weak one only with polite words around it."""
    strong = _find_phrase(plain, _STRONG_CANCEL) or _cancel_stem(plain)
    weak = _find_phrase(plain, CANCEL_PHRASES)
    if strong:
        acc.cancel = True
        _mark(plain, strong, consumed)
    elif weak:
        rest = [w for i, w in enumerate(plain) if w not in weak]
        if all(w in _CANCEL_CONTEXT or w in THANKS for w in rest) or len(plain) <= 2:
            acc.cancel = True
            _mark(plain, weak, consumed)


def _person_or_bot(clause: _Clause, plain: tuple[str, ...], acc: _Acc, consumed: set[int]) -> None:
    """A person asked for ("оператор", "позовите человека"); the bot asked back ("бот")."""
    numbers_before = {
        i for i, t in enumerate(t for t in clause.toks if not t.used) if t.number is not None
    }
    for i, w in enumerate(plain):
        if w in HANDOFF_WORDS and (i - 1) not in numbers_before:
            others = [x for j, x in enumerate(plain) if j != i]
            if len(plain) <= 3 or any(x in HANDOFF_REQUEST for x in others):
                acc.handoff = True
                consumed.add(i)
                consumed.update(j for j, x in enumerate(plain) if x in HANDOFF_REQUEST)
        if w in BOT_WORDS and len(plain) <= 3:
            acc.bot = True
            consumed.add(i)


def _word_intents(plain: tuple[str, ...], acc: _Acc, consumed: set[int]) -> None:
    """Yes, no, greetings, thanks, corrections, field names: the intents of single words."""
    for i, w in enumerate(plain):
        if i in consumed:
            continue
        if w in YES and (
            (i > 0 and plain[i - 1] in QUESTION_WORDS)
            or (i + 1 < len(plain) and plain[i + 1] in QUESTION_WORDS)
        ):
            consumed.add(i)  # "канча болот?": "how much will it be", not "all right"
            continue
        if w in YES and (
            (i > 0 and plain[i - 1] in _YES_NEGATORS)
            or (i + 1 < len(plain) and plain[i + 1] in _POST_NEGATORS)
        ):
            acc.no = True  # "туура эмес", "не верно", "not correct": a no, never a yes
            acc.correction = True
            consumed.update({i - 1, i, i + 1} & set(range(len(plain))))
            continue
        if _note_word(w, acc):
            consumed.add(i)


def _note_word(w: str, acc: _Acc) -> bool:
    """Note what one word says; False when it is none of the intent or field words."""
    if w in _APOLOGIES:
        acc.apology = True
    elif w in _POST_NEGATORS:
        acc.correction = True
    elif w in GREETINGS:
        acc.greeting = True
    elif w in THANKS:
        acc.thanks = True
    elif w in YES:
        acc.yes = True
    elif w in NO:
        acc.no = True
    elif w in HEDGES:
        acc.hedge = True
    elif w in CORRECTION:
        acc.correction = True
    elif w in REQUEST:
        if w in ("хочу", "заказать", "заказ", "керек", "order", "want", "need", "нужна",
                 "нужно", "нужен", "надо", "воды", "суу", "water", "привезите"):  # fmt: skip
            acc.request = True
    else:
        for name, vocab in FIELD_WORDS.items():
            if w in vocab:
                acc.fields.add(name)
                return True
        return False
    return True


def _read_signs(text: str, acc: _Acc) -> None:
    """Emoji and bare signs: 👍 or "+" is a yes, 👎 or "-" a no, a bare "?" asks for help."""
    stripped = text.strip()
    if any(e in text for e in lx.YES_EMOJI) or (stripped and set(stripped) <= {"+", "!", " "}):
        acc.yes = True
    if any(e in text for e in lx.NO_EMOJI) or (stripped and set(stripped) <= {"-", " "}):
        acc.no = True
    if stripped and set(stripped) <= {"?", "¿", " "}:
        acc.help = True  # a bare "?": what do you want from me


def _yes_strength(words: tuple[str, ...]) -> tuple[bool, bool]:
    """(starts with a yes, an explicit confirmation: "подтверждаю", "go ahead", "всё верно")."""
    first = words[0] if words else ""
    starts = first in YES or bool(_find_phrase(words[:3], YES_PHRASES))
    strong = bool(_find_phrase(words, YES_PHRASES)) or any(w in _STRONG_YES for w in words)
    return starts, strong
