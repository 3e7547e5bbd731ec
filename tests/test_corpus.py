"""The conversation corpus (tests/conversations): no wrong order, ever; and how often it is right.

Runs every conversation through the same in-memory runner as ``botd chat --script``. Raise
:data:`DEV_RIGHT_RATE_MIN` as the dialog improves (the held-out figures are reported, not
gated: the dialog is never tuned on them).
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

import trio

from botd.testing import corpus

DEV_RIGHT_RATE_MIN = 0.98  # share of dev conversations that must be right (measured: 100 %)

CORPUS = Path(__file__).resolve().parent / "conversations"


@functools.cache
def scores() -> tuple[corpus.Score, ...]:
    return tuple(trio.run(corpus.run_corpus, corpus.load_corpus(CORPUS)))


def test_no_conversation_leaves_a_wrong_order() -> None:
    results = scores()
    offenders = [s for s in results if s.wrong_orders]
    if offenders:
        out = io.StringIO()
        for s in offenders:
            corpus.print_transcript(s, out)
        print(out.getvalue())
    per_set = {set_name: t.wrong_orders for (set_name, _), t in corpus.tally(results).items()}
    assert all(n == 0 for n in per_set.values()), (
        f"wrong orders per set: {per_set}; conversations: "
        + ", ".join(str(s.conversation.path.relative_to(CORPUS)) for s in offenders)
    )


def test_the_dev_set_is_right_often_enough() -> None:
    results = scores()
    out = io.StringIO()
    corpus.report(results, out)
    print(out.getvalue())
    dev = corpus.tally(results).get(("dev", "all"), corpus.Tally())
    assert dev.rate >= DEV_RIGHT_RATE_MIN, (
        f"dev: {dev.right}/{dev.n} right ({dev.rate:.1%}) < {DEV_RIGHT_RATE_MIN:.1%}"
    )
