"""The corpus scorer (botd.testing.corpus) on small fixture conversations (corpus_fixtures/)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from botd.dialog import Step
from botd.memory import OrderRow
from botd.testing import corpus
from botd.testing.corpus import CorpusError, ExpectedOrder, Score

FIXTURES = Path(__file__).resolve().parent / "corpus_fixtures"


def row(quantity: int = 3, status: str = "placed", address: str = "ул. Токтогула 125") -> OrderRow:
    return OrderRow(
        id=1,
        key="k",
        client_id="1",
        phone="+996555123456",
        address=address,
        quantity=quantity,
        status=status,
    )


def expected(quantity: int = 3, status: str = "placed", **kw: tuple[str, ...]) -> ExpectedOrder:
    return ExpectedOrder("+996555123456", quantity, status, **kw)


def test_an_order_matches_on_every_field_and_address_parts_ignore_case() -> None:
    assert corpus.matches(row(), expected(address_has=("ТОКТОГУЛА", "125")))
    assert not corpus.matches(row(), expected(address_has=("Токтогула", "12a")))
    assert not corpus.matches(row(), expected(address_not=("токтогула",)))
    assert not corpus.matches(row(quantity=2), expected())
    assert not corpus.matches(row(status="cancelled"), expected())
    assert not corpus.matches(
        OrderRow(1, "k", "1", "+996700000000", "ул. Токтогула 125", 3), expected()
    )


def test_wrong_orders_are_those_no_expected_order_accounts_for() -> None:
    assert corpus.wrong_orders([], []) == 0
    assert corpus.wrong_orders([row()], []) == 1  # an order where none was wanted
    assert corpus.wrong_orders([row(), row()], [expected()]) == 1  # the same order twice
    assert corpus.wrong_orders([row(status="placed")], [expected(status="cancelled")]) == 1
    # One-to-one and order-independent: the best matching counts.
    broad, narrow = expected(), expected(address_has=("125",))
    rows = [row(address="ул. Токтогула 125"), row(address="ул. Ленина 7")]
    assert corpus.wrong_orders(rows, [narrow, broad]) == 0
    assert corpus.wrong_orders(list(reversed(rows)), [narrow, broad]) == 0
    assert corpus.wrong_orders(rows, [narrow, narrow]) == 1


def by_id(scores: list[Score]) -> dict[str, Score]:
    return {s.conversation.id: s for s in scores}


async def test_the_fixture_conversations_score_as_designed() -> None:
    conversations = corpus.load_corpus(FIXTURES)
    assert [(c.set, c.path.name) for c in conversations] == [
        ("dev", "happy-right.jsonl"),
        ("dev", "unfinished.jsonl"),
        ("dev", "wrong-quantity.jsonl"),
        ("heldout", "locale-mismatch.jsonl"),
        ("heldout", "unwanted-order.jsonl"),  # found below heldout/sub/
    ]
    happy = conversations[0]
    assert (happy.lang, happy.classes, happy.step, happy.locale) == ("ru", ("happy",), "idle", "ru")
    assert happy.orders == (expected(address_has=("токтогула", "125"), address_not=("Ош",)),)
    scores = by_id(await corpus.run_corpus(conversations))
    summary = {i: (s.right, s.wrong_orders) for i, s in scores.items()}
    assert summary == {
        "f-ru-happy": (True, 0),
        "f-ru-unfinished": (True, 0),
        "f-ru-wrong-quantity": (False, 1),
        "f-en-locale": (False, 0),
        "f-ru-unwanted": (False, 1),
    }
    assert scores["f-ru-happy"].problems == ()
    assert any(p.startswith("locale:") for p in scores["f-en-locale"].problems)
    assert any(p.startswith("orders:") for p in scores["f-ru-wrong-quantity"].problems)
    run = scores["f-ru-unfinished"].run
    assert run is not None and run.step is Step.WAITING_PHONE

    sets = corpus.tally(scores.values(), "set")
    assert {k: (t.n, t.right, t.wrong_orders) for k, t in sets.items()} == {
        ("dev", "all"): (3, 2, 1),
        ("heldout", "all"): (2, 0, 1),
    }
    assert sets[("dev", "all")].rate == pytest.approx(2 / 3)
    classes = corpus.tally(scores.values(), "class")
    assert (classes[("dev", "happy")].n, classes[("dev", "happy")].right) == (2, 1)
    assert classes[("dev", "number_words")].wrong_orders == 1
    langs = corpus.tally(scores.values(), "lang")
    assert set(langs) == {("dev", "ru"), ("heldout", "en"), ("heldout", "ru")}
    assert corpus.Tally().rate == 0.0


async def test_a_failing_bot_fails_the_conversation_not_the_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from botd import dialog

    def broken(*args: object) -> None:
        raise RuntimeError("dialog bug")

    monkeypatch.setattr(dialog, "handle", broken)
    (score,) = await corpus.run_corpus([corpus.load_corpus(FIXTURES)[0]])
    assert not score.right and score.run is None
    assert score.problems[0] == "the bot failed: RuntimeError: dialog bug"


async def test_the_report_tables_and_failing_transcripts() -> None:
    scores = await corpus.run_corpus(corpus.load_corpus(FIXTURES))
    out = io.StringIO()
    corpus.report(scores, out, show_failures="dev")
    text = out.getvalue()
    assert "dev       all                     3    66.7%             1" in text
    assert "heldout   en                      1     0.0%             0" in text
    assert "1 failing conversation(s) in 'dev':" in text
    assert "wrong-quantity.jsonl" in text and "happy-right.jsonl" not in text
    assert '  customer> {"text": "0555 123 456"}' in text
    assert '"order": {"id": 1' in text
    empty = io.StringIO()
    corpus.report([], empty)
    assert empty.getvalue() == "no conversations\n"


def test_the_command_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert corpus.main([str(FIXTURES)]) == 1  # wrong orders → 1
    assert "wrong orders" in capsys.readouterr().out
    right = tmp_path / "dev"
    right.mkdir()
    (right / "a.jsonl").write_bytes((FIXTURES / "dev" / "happy-right.jsonl").read_bytes())
    assert corpus.main([str(tmp_path), "--show-failures", "dev"]) == 0
    assert "0 failing conversation(s) in 'dev'" in capsys.readouterr().out
    (right / "b.jsonl").write_text('{"text": "no meta"}\n', encoding="utf-8")
    assert corpus.main([str(tmp_path)]) == 2
    assert "b.jsonl: line 1 must be" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        (['{"text": "hi"}'], "line 1 must be"),
        (['{"meta": {"expect": {"orders": [], "step": "nowhere"}}}'], "meta.expect.step"),
        (['{"meta": {"expect": {"step": "idle"}}}'], "meta.expect.orders"),
        (
            ['{"meta": {"expect": {"orders": [{"phone": "+996", "quantity": "2", '
             '"status": "placed"}], "step": "idle"}}}'],
            "orders[0].quantity",
        ),
        (
            ['{"meta": {"expect": {"orders": [{"phone": "+996", "quantity": 2, '
             '"status": "new"}], "step": "idle"}}}'],
            "orders[0].status",
        ),
        (['{"meta": {"expect": {"orders": [], "step": "idle"}}}', '{"txt": 1}'], "line 2:"),
    ],
)  # fmt: skip
def test_a_bad_conversation_file_is_named(tmp_path: Path, lines: list[str], problem: str) -> None:
    (tmp_path / "dev").mkdir()
    path = tmp_path / "dev" / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(CorpusError) as caught:
        corpus.load_corpus(tmp_path)
    assert str(path) in str(caught.value) and problem in str(caught.value)
