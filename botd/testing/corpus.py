"""Score the conversation corpus (``tests/conversations/``): how often the bot gets it right.

Every ``*.jsonl`` under a directory is one conversation (format and definitions in
``tests/conversations/README.md``); its *set* is its first directory below the corpus root
(``dev``, ``heldout``). Each runs through the same script runner as ``botd chat --script``, in
this process, in a fresh in-memory bot, and is scored:

- **right**: the orders left are exactly the expected ones, in order, and the dialog ends at the
  expected step (and the bot's last reply is in the expected language, if one is given);
- **wrong orders**: recorded orders that match no expected one (each expected order can account
  for one recorded order) — far worse than a conversation left unfinished.

``python -m botd.testing.corpus tests/conversations [--show-failures SET]`` prints n, right %
and wrong orders per set × class and set × language, and with ``--show-failures`` the failing
conversations of that set with their transcripts. Exit 1 when any conversation left a wrong
order, 2 when the corpus cannot be read, else 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import trio

from botd.config import Config
from botd.memory import OrderRow
from botd.script import (
    Bot,
    BotSettings,
    Input,
    Say,
    ScriptError,
    ScriptRun,
    bot_settings,
    parse_script,
    run_script,
)

__all__ = [
    "Conversation",
    "CorpusError",
    "ExpectedOrder",
    "Score",
    "Tally",
    "load_conversation",
    "load_corpus",
    "main",
    "matches",
    "print_transcript",
    "report",
    "run_corpus",
    "score",
    "tally",
    "wrong_orders",
]

STEPS = (
    "idle",
    "waiting_address",
    "waiting_phone",
    "waiting_quantity",
    "waiting_confirmation",
    "handoff",
)
STATUSES = ("placed", "cancelled")


class CorpusError(ValueError):
    """A conversation file that cannot be scored (names the file and the line)."""


@dataclass(frozen=True, slots=True)
class ExpectedOrder:
    phone: str
    quantity: int
    status: str
    address_has: tuple[str, ...] = ()
    address_not: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Conversation:
    path: Path
    set: str  # first directory below the corpus root ("" for a file at the root)
    id: str
    lang: str
    classes: tuple[str, ...]
    orders: tuple[ExpectedOrder, ...]
    step: str
    locale: str | None
    inputs: tuple[Input, ...]


@dataclass(frozen=True, slots=True)
class Score:
    conversation: Conversation
    right: bool
    wrong_orders: int
    problems: tuple[str, ...]  # why it is not right (empty when right)
    run: ScriptRun | None  # None when the bot failed with an exception
    orders: tuple[OrderRow, ...]  # the orders it left (also when it failed)


def matches(row: OrderRow, expected: ExpectedOrder) -> bool:
    address = row.address.casefold()
    return (
        row.phone == expected.phone
        and row.quantity == expected.quantity
        and row.status == expected.status
        and all(part.casefold() in address for part in expected.address_has)
        and not any(part.casefold() in address for part in expected.address_not)
    )


def wrong_orders(rows: Sequence[OrderRow], expected: Sequence[ExpectedOrder]) -> int:
    """Recorded orders left over by the largest one-to-one matching with the expected ones."""
    owner: dict[int, int] = {}  # expected index -> row index

    def assign(r: int, seen: set[int]) -> bool:
        for e, want in enumerate(expected):
            if e in seen or not matches(rows[r], want):
                continue
            seen.add(e)
            if e not in owner or assign(owner[e], seen):
                owner[e] = r
                return True
        return False

    matched = sum(assign(r, set()) for r in range(len(rows)))
    return len(rows) - matched


# -- loading -------------------------------------------------------------------------------


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CorpusError(f"{where}: must be a list of strings")
    return tuple(value)


def _expected_order(value: Any, where: str) -> ExpectedOrder:
    if not isinstance(value, dict):
        raise CorpusError(f"{where}: must be an object")
    phone, quantity, status = value.get("phone"), value.get("quantity"), value.get("status")
    if not isinstance(phone, str):
        raise CorpusError(f"{where}.phone: must be a string (E.164)")
    if not isinstance(quantity, int) or isinstance(quantity, bool):
        raise CorpusError(f"{where}.quantity: must be an integer")
    if status not in STATUSES:
        raise CorpusError(f"{where}.status: must be one of {STATUSES}")
    unknown = set(value) - {"phone", "quantity", "status", "address_has", "address_not"}
    if unknown:
        raise CorpusError(f"{where}: unknown key(s) {sorted(unknown)}")
    return ExpectedOrder(
        phone,
        quantity,
        status,
        _strings(value.get("address_has", []), f"{where}.address_has"),
        _strings(value.get("address_not", []), f"{where}.address_not"),
    )


def load_conversation(path: Path, root: Path) -> Conversation:
    where = str(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    first = next(((n, line) for n, line in enumerate(lines, start=1) if line.strip()), None)
    try:
        meta = json.loads(first[1])["meta"] if first is not None else None
    except (ValueError, KeyError, TypeError):
        meta = None
    if not isinstance(meta, dict):
        raise CorpusError(f'{where}: line 1 must be {{"meta": {{…}}}}')
    expect = meta.get("expect")
    if not isinstance(expect, dict):
        raise CorpusError(f"{where}: meta.expect: must be an object")
    orders = expect.get("orders")
    if not isinstance(orders, list):
        raise CorpusError(f"{where}: meta.expect.orders: must be a list ([] for none)")
    step = expect.get("step")
    if step not in STEPS:
        raise CorpusError(f"{where}: meta.expect.step: must be one of {STEPS}")
    locale = expect.get("locale")
    if locale is not None and not isinstance(locale, str):
        raise CorpusError(f"{where}: meta.expect.locale: must be a string")
    try:
        inputs = tuple(parse_script(lines))
    except ScriptError as exc:
        raise CorpusError(f"{where}: {exc}") from None
    relative = path.relative_to(root)
    return Conversation(
        path=path,
        set=relative.parts[0] if len(relative.parts) > 1 else "",
        id=str(meta.get("id") or path.stem),
        lang=str(meta.get("lang") or "?"),
        classes=_strings(meta.get("classes", []), f"{where}: meta.classes"),
        orders=tuple(
            _expected_order(o, f"{where}: meta.expect.orders[{i}]") for i, o in enumerate(orders)
        ),
        step=step,
        locale=locale,
        inputs=inputs,
    )


def load_corpus(root: Path) -> list[Conversation]:
    """Every ``*.jsonl`` below ``root`` (recursively), in path order."""
    return [load_conversation(path, root) for path in sorted(root.rglob("*.jsonl"))]


# -- scoring -------------------------------------------------------------------------------


def _describe(row: OrderRow) -> str:
    return json.dumps(row.public(), ensure_ascii=False)


def score(conversation: Conversation, run: ScriptRun | None, rows: Sequence[OrderRow]) -> Score:
    """Score one conversation from its run (None: it failed) and the orders it left."""
    problems: list[str] = []
    expected = conversation.orders
    in_order = len(rows) == len(expected) and all(map(matches, rows, expected))
    if not in_order:
        got = ", ".join(map(_describe, rows)) or "none"
        want = ", ".join(json.dumps(_public(e), ensure_ascii=False) for e in expected) or "none"
        problems.append(f"orders: got {got}; expected {want}")
    if run is not None:
        if str(run.step) != conversation.step:
            problems.append(f"step: ended at {run.step}, expected {conversation.step}")
        if conversation.locale is not None and run.locale != conversation.locale:
            problems.append(f"locale: last reply in {run.locale}, expected {conversation.locale}")
    return Score(
        conversation=conversation,
        right=run is not None and not problems,
        wrong_orders=wrong_orders(rows, expected),
        problems=tuple(problems),
        run=run,
        orders=tuple(rows),
    )


def _public(expected: ExpectedOrder) -> dict[str, Any]:
    out: dict[str, Any] = {
        "phone": expected.phone,
        "quantity": expected.quantity,
        "status": expected.status,
    }
    if expected.address_has:
        out["address_has"] = list(expected.address_has)
    if expected.address_not:
        out["address_not"] = list(expected.address_not)
    return out


async def run_conversation(conversation: Conversation, settings: BotSettings) -> Score:
    """Run one conversation in a fresh bot and score it (an exception fails it, with reason)."""
    bot = Bot(settings)
    try:
        run = await run_script(conversation.inputs, bot=bot)
    except Exception as exc:
        failed = score(conversation, None, bot.orders.rows)
        reason = f"the bot failed: {type(exc).__name__}: {exc}"
        return dataclasses.replace(failed, problems=(reason, *failed.problems))
    return score(conversation, run, run.orders)


async def run_corpus(
    conversations: Iterable[Conversation], settings: BotSettings | None = None
) -> list[Score]:
    settings = settings or bot_settings(Config())
    return [await run_conversation(c, settings) for c in conversations]


# -- reporting -----------------------------------------------------------------------------


@dataclass(slots=True)
class Tally:
    n: int = 0
    right: int = 0
    wrong_orders: int = 0
    offenders: list[Score] = field(default_factory=list)  # conversations with wrong orders

    @property
    def rate(self) -> float:
        """Share of right conversations (0.0 when there are none)."""
        return self.right / self.n if self.n else 0.0

    def add(self, s: Score) -> None:
        self.n += 1
        self.right += s.right
        self.wrong_orders += s.wrong_orders
        if s.wrong_orders:
            self.offenders.append(s)


def tally(scores: Iterable[Score], by: str = "set") -> dict[tuple[str, str], Tally]:
    """Tallies keyed (set, group) with group a class (``by="class"``), a language
    (``by="lang"``), or "all" (``by="set"``)."""
    out: dict[tuple[str, str], Tally] = {}
    for s in scores:
        c = s.conversation
        groups = {"class": c.classes or ("(none)",), "lang": (c.lang,), "set": ("all",)}[by]
        for group in groups:
            out.setdefault((c.set, group), Tally()).add(s)
    return dict(sorted(out.items()))


def _table(title: str, rows: dict[tuple[str, str], Tally], out: TextIO) -> None:
    print(f"{'set':<9} {title:<20} {'n':>4} {'right %':>8} {'wrong orders':>13}", file=out)
    for (set_name, group), t in rows.items():
        rate = f"{100 * t.rate:.1f}%"
        print(f"{set_name or '-':<9} {group:<20} {t.n:>4} {rate:>8} {t.wrong_orders:>13}", file=out)
    print(file=out)


def print_transcript(s: Score, out: TextIO) -> None:
    """One conversation: why it failed, then each input and what the bot did."""
    c = s.conversation
    print(f"--- {c.path}  [{c.id}; {c.lang}; {', '.join(c.classes)}]", file=out)
    for problem in s.problems:
        print(f"    ! {problem}", file=out)
    if s.wrong_orders:
        print(f"    ! {s.wrong_orders} wrong order(s)", file=out)
    transcript = s.run.transcript if s.run is not None else ()
    for item, events in transcript:
        label = "customer" if isinstance(item, Say) else "wait"
        print(f"  {label}> {json.dumps(item.source, ensure_ascii=False)}", file=out)
        for event in events:
            print(f"      bot: {json.dumps(event, ensure_ascii=False)}", file=out)
    print(file=out)


def report(scores: Sequence[Score], out: TextIO, *, show_failures: str | None = None) -> None:
    if not scores:
        print("no conversations", file=out)
        return
    _table("total", tally(scores, "set"), out)
    _table("class", tally(scores, "class"), out)
    _table("language", tally(scores, "lang"), out)
    if show_failures is not None:
        failing = [s for s in scores if s.conversation.set == show_failures and not s.right]
        print(f"{len(failing)} failing conversation(s) in {show_failures!r}:\n", file=out)
        for s in failing:
            print_transcript(s, out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m botd.testing.corpus", description="Score the conversation corpus."
    )
    parser.add_argument("root", type=Path, help="corpus directory, e.g. tests/conversations")
    parser.add_argument(
        "--show-failures", metavar="SET", help="print the failing conversations of SET (e.g. dev)"
    )
    args = parser.parse_args(argv)
    try:
        conversations = load_corpus(args.root)
    except (CorpusError, OSError, UnicodeDecodeError) as exc:
        print(f"corpus: {exc}", file=sys.stderr)
        return 2
    scores = trio.run(run_corpus, conversations)
    try:
        report(scores, sys.stdout, show_failures=args.show_failures)
        sys.stdout.flush()
    except BrokenPipeError:  # the reader (e.g. `| head`) has seen enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 1 if any(s.wrong_orders for s in scores) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
