"""Crash at every step (docs/design.md §3.3, §3.4): ``kill -9`` inside processing, restart,
nothing changes.

For each crash point botd runs with ``BOTD_TEST_CRASH_AT`` and SIGKILLs itself while it handles a
chosen turn of a dialog ("да" for the order-related points); a fresh process (without the
variable) then gets the redelivery. The customer must see exactly the replies of the dialog model,
those of the crashed turn once — also when they had gone out before the crash and the marker was
not yet marked sent: the redelivery asks Chat2Desk which of them it already has (by their external
ids) and sends only the others —, the dialog continues where it was, and there is exactly one
order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import httpx
import pytest

from botd.config import Config
from tests.faults.support import (
    ORDER_ID,
    DialogModel,
    Replies,
    botds,
    dialog_texts,
    orders_by_client,
    say,
)

CONFIRM = 4  # index of "да" in the dialog

CASES = [
    ("after_dedupe_check", CONFIRM),
    ("after_order_insert", CONFIRM),
    ("after_state_commit", CONFIRM),
    ("after_send", CONFIRM),
    ("before_ack", CONFIRM),
    # mid-dialog: the dialog must continue at the right question after the restart
    ("after_dedupe_check", 1),
    ("after_state_commit", 2),
    ("after_send", 1),
]


@pytest.mark.parametrize(("point", "turn"), CASES)
async def test_crash_at_point_then_restart_keeps_exactly_one_order(
    point: str, turn: int, make_config: Callable[..., Config], replies: Replies
) -> None:
    config = make_config()
    cid = 810_000 + CASES.index((point, turn))
    texts = dialog_texts(1, cid)
    model = DialogModel(config, cid)
    # after_order_insert is reached only by the confirmation; the others once per message.
    nth = 1 if point == "after_order_insert" else turn + 1
    async with botds(config) as group, httpx.AsyncClient() as http:
        first = await group.start(BOTD_TEST_CRASH_AT=f"{point}:{nth}")
        expected: list[str] = []
        for text in texts[:turn]:
            expected += model.turn(text)
            await say(http, first.url, cid, text)
            await replies.wait(cid, len(expected))

        crashed = model.turn(texts[turn])
        # Answered 200, it must not be lost. The consumer can also take it and die before the
        # webhook's answer is flushed (docs/design.md §5): then it is queued all the same.
        with contextlib.suppress(httpx.TransportError):
            await say(http, first.url, cid, texts[turn])
        assert await first.wait_exit() == -9, "\n".join(first.lines[-20:])
        sent_before_crash = replies.count(cid) - len(expected)
        # Replies go out before the marker is marked sent: only after_send has sent them.
        assert sent_before_crash == (len(crashed) if point in ("after_send", "before_ack") else 0)

        second = await group.start()
        # after_send: the marker says "not sent", so the redelivery looks them up and finds them
        # all (nothing is sent twice); before_ack: the marker says "sent": a pure duplicate.
        expected += crashed
        await replies.wait(cid, len(expected))
        rest = [*texts[turn + 1 :], "Здравствуйте"]  # then one more turn after the order
        for text in rest:
            expected += model.turn(text)
            await say(http, second.url, cid, text)
            await replies.wait(cid, len(expected))
        assert not any("Traceback" in line for line in second.lines), "\n".join(second.lines)

    rows = orders_by_client(config.postgres.dsn)[str(cid)]
    assert len(rows) == 1, rows
    (draft,) = model.orders
    assert (rows[0]["delivery_address"], rows[0]["client_phone"], rows[0]["quantity"]) == (
        draft.address,
        draft.phone,
        draft.quantity,
    )
    order_id = str(rows[0]["id"])
    assert replies.texts[str(cid)] == [t.replace(ORDER_ID, order_id) for t in expected]
