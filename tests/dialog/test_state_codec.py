"""The stored form of the dialog state: round trip, old schemas, garbage."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from botd.dialog import (
    STATE_SCHEMA_VERSION,
    DialogState,
    Field,
    Pending,
    Step,
    dump_state,
    load_state,
)

STATES = [
    DialogState(Step.IDLE, "", "ru", 1.0, 2.0),
    DialogState(Step.WAITING_ADDRESS, "c:m1", "ky", 1.0, 2.0),
    DialogState(Step.WAITING_PHONE, "c:m1", "en", 1.0, 2.5, address="ул. Ленина 1"),
    DialogState(Step.WAITING_QUANTITY, "c:m1", "ru", 1, 2, "📍 1.0, 2.0", "+996555123456"),
    DialogState(Step.WAITING_CONFIRMATION, "c:m1", "ru", 1.0, 2.0, "Чуй 100", "+77011234567", 50),
    DialogState(Step.WAITING_PHONE, "c:m1", "ru", 1.0, 2.0, "Чуй 100", "+77011234567", 5, True),
    DialogState(Step.HANDOFF, "", "en", 1.0, 2.0),
    # schema 3: a doubtful value asked back, an address in pieces, "what to change?", the
    # language told, the last order (kept while idle and in a new dialog)
    DialogState(
        Step.WAITING_ADDRESS, "c:m1", "ru", 1.0, 2.0, pending=Pending(Field.ADDRESS, "Токтогула")
    ),
    DialogState(
        Step.WAITING_QUANTITY, "c:m1", "ky", 1.0, 2.0, pending=Pending(Field.QUANTITY, "2")
    ),
    DialogState(
        Step.WAITING_ADDRESS, "c:m1", "ru", 1.0, 2.0, address_part="Бишкек", locale_sure=True
    ),
    DialogState(
        Step.WAITING_CONFIRMATION, "c:m1", "en", 1.0, 2.0, "Чуй 100", "+996555123456", 3,
        asked_what_to_change=True,
    ),
    DialogState(
        Step.IDLE, "", "ky", 1.0, 2.0, locale_sure=True, last_order_key="c:m1", last_order_at=2.0
    ),
    DialogState(
        Step.WAITING_ADDRESS, "c:m9", "ru", 5.0, 5.0, last_order_key="c:m1", last_order_at=2
    ),
    DialogState(Step.HANDOFF, "", "en", 1.0, 2.0, last_order_key="c:m1", last_order_at=1.5),
]  # fmt: skip


@pytest.mark.parametrize("state", STATES)
def test_round_trip_through_json(state: DialogState) -> None:
    dumped = dump_state(state)
    assert dumped["schema"] == STATE_SCHEMA_VERSION
    assert load_state(json.loads(json.dumps(dumped))) == state


def test_version_1_is_migrated() -> None:
    v1 = {
        "schema": 1,
        "step": "waiting_quantity",
        "dialog_id": "c:m1",
        "locale": "ru",
        "started_at": 1.0,
        "updated_at": 2.0,
        "address": "Чуй 100",
        "phone": "+996555123456",
        "quantity": None,
    }
    assert load_state(v1) == DialogState(
        Step.WAITING_QUANTITY, "c:m1", "ru", 1.0, 2.0, "Чуй 100", "+996555123456"
    )


@pytest.mark.parametrize("old_step", ["initial", "completed"])
def test_version_1_end_steps_are_idle(old_step: str) -> None:
    v1 = {"schema": 1, "step": old_step, "dialog_id": "", "locale": "ky"}
    v1 |= {"started_at": 1, "updated_at": 2, "address": None, "phone": None, "quantity": None}
    assert load_state(v1) == DialogState(Step.IDLE, "", "ky", 1.0, 2.0)


def test_version_2_is_read_with_the_new_fields_empty() -> None:
    v2 = {
        "schema": 2,
        "step": "waiting_phone",
        "dialog_id": "c:m1",
        "locale": "en",
        "started_at": 1.0,
        "updated_at": 2.0,
        "address": "Чуй 100",
        "phone": "+996555123456",
        "quantity": 3,
        "editing": True,
    }
    assert load_state(v2) == DialogState(
        Step.WAITING_PHONE, "c:m1", "en", 1.0, 2.0, "Чуй 100", "+996555123456", 3, True
    )


def test_every_field_is_stored() -> None:
    """A field added to DialogState but forgotten in dump_state would be lost silently."""
    names = set(DialogState.__dataclass_fields__)
    for state in STATES:
        assert names | {"schema"} == set(dump_state(state))


def test_version_1_knew_no_handoff() -> None:
    dumped = dump_state(DialogState(Step.HANDOFF, "", "en", 1.0, 2.0))
    assert load_state({**dumped, "schema": 1}) is None


def _valid() -> dict[str, object]:
    return dump_state(STATES[4])


@pytest.mark.parametrize(
    "change",
    [
        {"schema": 4},
        {"schema": 0},
        {"schema": "2"},
        {"schema": True},
        {"schema": None},
        {"step": "waiting_payment"},
        {"step": "WAITING_ADDRESS"},
        {"step": 3},
        {"locale": "de"},
        {"locale": None},
        {"dialog_id": 5},
        {"dialog_id": "x" * 10_000},
        {"started_at": "yesterday"},
        {"updated_at": math.nan},
        {"updated_at": math.inf},
        {"updated_at": True},
        {"updated_at": 10**400},
        {"quantity": 0},
        {"quantity": 51},
        {"quantity": 3.0},
        {"quantity": True},
        {"quantity": None},  # the summary needs it
        {"phone": "0555123456"},
        {"phone": "+996 555"},
        {"phone": 996555123456},
        {"address": ["Чуй"]},
        {"address": "x" * 201},
        {"editing": "no"},
        {"dialog_id": ""},  # a dialog in progress always has an id
        {"pending": "Чуй 100"},
        {"pending": {"field": "phone", "value": "+996555123456"}},  # never asked back
        {"pending": {"field": "quantity", "value": "two"}},
        {"pending": {"field": "address"}},
        {"pending": {"field": "address", "value": "x" * 201}},
        {"pending": {"field": "address", "value": "Чуй"}},  # asked back only at the address
        {"address_part": 5},
        {"address_part": "x" * 201},
        {"asked_what_to_change": "yes"},
        {"asked_what_to_change": 1},
        {"locale_sure": 1},
        {"last_order_key": 7},
        {"last_order_at": "now"},
        {"last_order_at": math.nan},
        {"last_order_at": True},
    ],
)
def test_corrupt_fields_give_none(change: dict[str, object]) -> None:
    assert load_state({**_valid(), **change}) is None


@pytest.mark.parametrize("missing", ["schema", "step", "locale", "dialog_id", "updated_at"])
def test_missing_fields_give_none(missing: str) -> None:
    data = _valid()
    del data[missing]
    assert load_state(data) is None


@pytest.mark.parametrize("garbage", [None, 0, "state", b"{}", [], [1, 2], {}, {"schema": 2}])
def test_garbage_gives_none(garbage: object) -> None:
    assert load_state(garbage) is None


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=20,
)
FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "schema": st.sampled_from([1, 2, 3]) | JSON,
        "step": st.sampled_from([s.value for s in Step] + ["initial"]) | JSON,
        "dialog_id": st.text(max_size=10) | JSON,
        "locale": st.sampled_from(["ru", "ky", "en"]) | JSON,
        "started_at": st.floats() | JSON,
        "updated_at": st.floats() | JSON,
        "address": st.text(max_size=30) | JSON,
        "phone": st.sampled_from(["+996555123456"]) | JSON,
        "quantity": st.integers(-5, 60) | JSON,
        "editing": st.booleans() | JSON,
        "pending": st.fixed_dictionaries(
            {
                "field": st.sampled_from(["address", "quantity", "phone"]),
                "value": st.text(max_size=8),
            }
        )
        | JSON,
        "address_part": st.text(max_size=10) | JSON,
        "asked_what_to_change": st.booleans() | JSON,
        "locale_sure": st.booleans() | JSON,
        "last_order_key": st.text(max_size=10) | JSON,
        "last_order_at": st.floats() | JSON,
    },
)


@settings(max_examples=300, derandomize=True)
@given(st.one_of(JSON, FIELDS))
def test_load_never_raises_and_what_it_loads_round_trips(data: object) -> None:
    state = load_state(data)
    if state is not None:
        assert load_state(dump_state(state)) == state
        json.dumps(dump_state(state), allow_nan=False)
