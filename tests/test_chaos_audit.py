"""The chaos run's audit (bench/chaos.py) on synthetic deliveries: no services needed."""

from __future__ import annotations

import json

from bench.chaos import (
    ChaosReport,
    audit_replies,
    dialog_step,
    handoffs_logged,
)
from botd import dialog
from tests.faults.support import match_blocks, match_replies

GREETING = ("Здравствуйте!", "Укажите адрес доставки")
ADDRESS = ("Укажите телефон",)
ORDERED = ("Заказ №{order_id} принят",)


def ids(texts: list[str], prefix: str = "botd-1") -> list[tuple[str, str | None]]:
    return [(t, f"{prefix}-{i}") for i, t in enumerate(texts)]


def test_replies_as_modelled_are_clean() -> None:
    delivered = [*ids(list(GREETING)), ("Укажите телефон", "botd-2-0"), ("Заказ №17 принят", "x")]
    audit = audit_replies(delivered, [GREETING, ADDRESS, ORDERED])
    assert audit.complete and not audit.unanswered and audit.violation is None
    assert audit.duplicates == () and audit.resent_blocks == 0


def test_an_external_id_delivered_twice_is_one_duplicate_not_two() -> None:
    # a re-sent block with the same external ids: counted by id, not again by the model matching
    delivered = ids(list(GREETING)) * 2
    audit = audit_replies(delivered, [GREETING])
    assert audit.complete and audit.resent_blocks == 1
    assert audit.duplicates == GREETING


def test_a_repeated_reply_without_external_id_is_a_duplicate() -> None:
    delivered: list[tuple[str, str | None]] = [(t, None) for t in [*GREETING, *GREETING]]
    assert audit_replies(delivered, [GREETING]).duplicates == GREETING


def test_a_repeated_reply_under_a_new_external_id_is_a_duplicate() -> None:
    delivered = [*ids(list(GREETING), "botd-1"), *ids(list(GREETING), "botd-9")]
    assert audit_replies(delivered, [GREETING]).duplicates == GREETING


def test_a_block_cut_short_then_sent_whole_counts_the_repeated_part() -> None:
    delivered: list[tuple[str, str | None]] = [(GREETING[0], None), *ids(list(GREETING))]
    audit = audit_replies(delivered, [GREETING])
    assert audit.complete and audit.duplicates == (GREETING[0],)


def test_a_reply_the_model_expects_twice_is_no_duplicate() -> None:
    delivered: list[tuple[str, str | None]] = [(t, None) for t in [*ADDRESS, *ADDRESS]]
    audit = audit_replies(delivered, [ADDRESS, ADDRESS])
    assert audit.complete and audit.duplicates == ()


def test_a_last_message_without_any_reply_is_unanswered() -> None:
    audit = audit_replies(ids(list(GREETING)), [GREETING, ADDRESS])
    assert not audit.complete and audit.unanswered and audit.violation is None


def test_a_partly_answered_last_message_is_missing_replies_but_not_unanswered() -> None:
    audit = audit_replies(ids([*ADDRESS, GREETING[0]]), [ADDRESS, GREETING])
    assert not audit.complete and not audit.unanswered


def test_a_reply_out_of_turn_is_a_violation() -> None:
    audit = audit_replies(ids([*ADDRESS, *GREETING]), [GREETING, ADDRESS])
    assert audit.violation is not None and not audit.complete and not audit.unanswered


def test_match_blocks_still_answers_complete_and_resent() -> None:
    texts = [GREETING[0], *GREETING, *GREETING, *ADDRESS]
    assert match_blocks(texts, [GREETING, ADDRESS]) == (True, 1)
    assert match_replies(texts, [GREETING, ADDRESS]).extra == (0, 3, 4)
    assert match_blocks([*GREETING, GREETING[0]], [GREETING]) == (False, 0)
    assert match_replies([*GREETING, GREETING[0]], [GREETING]).extra == (2,)


def test_dialog_step_reads_the_stored_state() -> None:
    turn = dialog.Turn(message_id="1", client_id="5", text="Здравствуйте, хочу заказать воду", at=0)
    started = dialog.handle(None, turn, 0, dialog.DialogSettings())
    assert started is not None
    raw = json.dumps(dialog.dump_state(started.state)).encode()
    assert dialog_step(raw) == str(started.state.step) != str(dialog.Step.HANDOFF)
    operator = dialog.OperatorMessage(message_id="2", client_id="5", text="Добрый день", at=1)
    handed = dialog.handle(started.state, operator, 1, dialog.DialogSettings())
    assert handed is not None
    assert dialog_step(json.dumps(dialog.dump_state(handed.state))) == str(dialog.Step.HANDOFF)
    assert dialog_step(None) is None and dialog_step(b"") is None and dialog_step(b"{") is None


def test_handoffs_are_read_from_botd_log_lines() -> None:
    lines = [
        "INFO botd.consumer a human operator took over client 900014; the bot stays silent",
        "INFO botd.consumer order 5 placed for client 900001",
    ]
    assert handoffs_logged(lines) == {"900014"}


def test_every_new_counter_fails_the_report() -> None:
    clean = ChaosReport(orders_expected=1, orders_found=1)
    assert clean.ok
    for name in ("duplicate_replies", "customers_unanswered", "handoffs"):
        report = ChaosReport(orders_expected=1, orders_found=1)
        setattr(report, name, 1)
        assert not report.ok
        assert any(line.split()[-1] == "1" for line in report.lines() if name[:8] in line)
