"""The Chat2Desk webhook payload: validation, filtering, normalisation (docs/design.md §6)."""

from __future__ import annotations

import json
import re
import unicodedata
import zlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from botd.errors import InvalidInput
from botd.inbound import (
    MAX_TEXT_CHARS,
    Ignored,
    QueuedMessage,
    decode_queued,
    encode_queued,
    normalise_text,
    parse_webhook,
    shard_of,
)
from tests.helpers import inbox_payload

NOW = 1_764_064_800.5

# The fixture from chat2desk-api.md ("Fake-server fixtures"), verbatim.
FIXTURE = """
{
  "message_id": 106773169,
  "type": "from_client",
  "text": "Hi, I'd like to order water",
  "transport": "telegram",
  "client_id": 17340089,
  "operator_id": null,
  "dialog_id": null,
  "channel_id": 17,
  "photo": null,
  "coordinates": null,
  "audio": null,
  "pdf": null,
  "client": {
    "id": 17340089,
    "phone": "[tg] 807892",
    "client_phone": null,
    "name": "Peter",
    "assigned_name": null,
    "external_id": null
  },
  "hook_type": "inbox",
  "request_id": 8725057,
  "attachments": [],
  "is_new_request": true,
  "is_new_client": false,
  "extra_data": {},
  "event_time": "2019-07-28T23:01:40Z"
}
"""


def parse(payload: Any) -> QueuedMessage | Ignored:
    return parse_webhook(json.dumps(payload).encode(), received_at=NOW)


def queued(payload: Any) -> QueuedMessage:
    result = parse(payload)
    assert isinstance(result, QueuedMessage), result
    return result


def invalid(payload: Any) -> str:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    with pytest.raises(InvalidInput) as info:
        parse_webhook(body, received_at=NOW)
    assert info.value.reason == str(info.value)
    return info.value.reason


# ---- the documented payload ----------------------------------------------------------------


def test_documented_fixture_is_queued() -> None:
    msg = parse_webhook(FIXTURE.encode(), received_at=NOW)
    assert msg == QueuedMessage(
        message_id="106773169",
        client_id="17340089",
        text="Hi, I'd like to order water",
        received_at=NOW,
        media=(),
        location=None,
        contact_phone=None,
        transport="telegram",
        channel_id=17,
    )


def test_helper_payload_is_queued() -> None:
    msg = queued(inbox_payload(17340089, "  Здравствуйте,   хочу воду ", message_id=5))
    assert (msg.message_id, msg.client_id) == ("5", "17340089")
    assert msg.text == "Здравствуйте, хочу воду"
    assert (msg.transport, msg.channel_id, msg.media, msg.location) == ("telegram", 17, (), None)


@pytest.mark.parametrize("client_id", ["17340089", " 17340089 ", 17340089, "017340089"])
def test_client_id_as_number_or_digit_string(client_id: int | str) -> None:
    assert queued(inbox_payload(client_id, "hi")).client_id == "17340089"


def test_message_id_as_string() -> None:
    assert queued(inbox_payload(1, "hi", message_id=None) | {"message_id": "42"}).message_id == "42"


def test_message_id_missing_is_invalid() -> None:
    body = inbox_payload(17340089, "hi")
    del body["message_id"]
    assert "message_id" in invalid(body)
    assert "message_id" in invalid(body | {"message_id": None})


@pytest.mark.parametrize(
    "bad",
    [True, False, 1.5, 17340089.0, -5, 0, "abc", "", "-17", "1e5", "１２", [17], {"id": 17}, 2**63],
)
def test_client_id_wrong_types_are_invalid(bad: Any) -> None:
    reason = invalid(inbox_payload(17340089, "hi") | {"client_id": bad})
    assert reason.startswith("client_id")


def test_client_id_missing_is_invalid() -> None:
    body = inbox_payload(17340089, "hi")
    del body["client_id"]
    assert "client_id" in invalid(body)


@pytest.mark.parametrize("bad", [True, 1.5, -1, "x", [1]])
def test_message_id_wrong_types_are_invalid(bad: Any) -> None:
    assert invalid(inbox_payload(1, "hi") | {"message_id": bad}).startswith("message_id")


@pytest.mark.parametrize(
    ("field", "bad"), [("text", 5), ("text", ["a"]), ("transport", 1), ("hook_type", 3)]
)
def test_wrongly_typed_optional_strings_are_invalid(field: str, bad: Any) -> None:
    assert invalid(inbox_payload(1, "hi") | {field: bad}).startswith(field)


@pytest.mark.parametrize("bad", [True, -1, 1.5, "x", {"id": 1}])
def test_channel_id_wrong_types_are_invalid(bad: Any) -> None:
    assert invalid(inbox_payload(1, "hi") | {"channel_id": bad}).startswith("channel_id")


def test_type_must_be_a_string() -> None:
    body = inbox_payload(1, "hi")
    del body["type"]
    assert "type" in invalid(body)
    assert "type" in invalid(inbox_payload(1, "hi") | {"type": 7})


# ---- media, location, empty values ---------------------------------------------------------


def test_photo_without_text_is_media() -> None:
    msg = queued(inbox_payload(17340089, None, photo="https://cdn.example/img.jpg"))
    assert msg.text is None
    assert msg.media == ("photo",)


def test_attachments_and_several_media() -> None:
    msg = queued(
        inbox_payload(
            1, "look", audio="https://a/b.ogg", pdf="https://a/b.pdf", attachments=[{"x": 1}]
        )
    )
    assert msg.text == "look"
    assert msg.media == ("audio", "pdf", "attachment")


@pytest.mark.parametrize("extra_data", [[], {}, {"k": "v"}, None])
def test_extra_data_shapes_are_fine(extra_data: Any) -> None:
    assert queued(inbox_payload(1, "hi", extra_data=extra_data)).text == "hi"


def test_empty_strings_instead_of_nulls() -> None:
    body = inbox_payload(
        17340089,
        "",
        photo="",
        coordinates="",
        audio="",
        pdf="",
        channel_id="",
        transport="",
        operator_id="",
        dialog_id="",
    )
    msg = queued(body)
    assert msg.text is None
    assert msg.media == ()
    assert msg.location is None
    assert msg.channel_id is None
    assert msg.transport is None


@pytest.mark.parametrize(
    ("coordinates", "expected"),
    [
        ({"lat": 42.87, "lon": 74.59}, (42.87, 74.59)),
        ({"latitude": "42.87", "longitude": "74.59"}, (42.87, 74.59)),
        ({"lat": 42.87, "lng": 74.59}, (42.87, 74.59)),
        ([42.87, 74.59], (42.87, 74.59)),
        ("42.87,74.59", (42.87, 74.59)),
        (" 42.87 , 74.59 ", (42.87, 74.59)),
        ("-33.5,-70.25", (-33.5, -70.25)),
    ],
)
def test_coordinates_shapes_give_a_location(
    coordinates: Any, expected: tuple[float, float]
) -> None:
    msg = queued(inbox_payload(1, None, coordinates=coordinates))
    assert msg.location == expected
    assert msg.media == ("location",)


@pytest.mark.parametrize(
    "coordinates",
    [
        {"lat": 91, "lon": 0},
        {"lat": 0, "lon": 181},
        [1, 2, 3],
        "north",
        "1,2,3",
        "nan,nan",
        "inf,1",
        {"lat": "x", "lon": 1},
        {"lat": None, "lon": None},
        [{"a": 1}, 2],
        7,
    ],
)
def test_unreadable_coordinates_give_no_location(coordinates: Any) -> None:
    msg = queued(inbox_payload(1, None, coordinates=coordinates))
    assert msg.location is None
    assert "location" in msg.media


def test_contact_phone() -> None:
    assert (
        queued(inbox_payload(1, None, contact={"phone": "+996555123456"})).contact_phone
        == "+996555123456"
    )
    assert (
        queued(inbox_payload(1, None, contact={"phone": 996555123456})).contact_phone
        == "996555123456"
    )
    assert queued(inbox_payload(1, None, contact={"phone": True})).contact_phone is None
    assert queued(inbox_payload(1, None, contact="x")).contact_phone is None
    assert (
        len(queued(inbox_payload(1, None, contact={"phone": "9" * 500})).contact_phone or "") == 64
    )


# ---- ignored events ------------------------------------------------------------------------


def test_outbox_to_client_is_queued_as_an_operator_event() -> None:
    # A message sent to the customer from Chat2Desk: an operator (hand-off) or botd's own echo,
    # which the consumer tells apart by the message ids botd got back when it sent.
    result = parse(
        inbox_payload(17340089, "Order #5", hook_type="outbox", type="to_client", operator_id=41164)
    )
    assert isinstance(result, QueuedMessage)
    assert result.kind == "operator"
    assert result.client_id == "17340089"
    assert result.text == "Order #5"


@pytest.mark.parametrize("msg_type", ["autoreply", "system", "comment"])
def test_other_outbox_events_are_ignored(msg_type: str) -> None:
    result = parse(inbox_payload(17340089, "x", hook_type="outbox", type=msg_type))
    assert isinstance(result, Ignored)
    assert "outbox" in result.reason


@pytest.mark.parametrize("msg_type", ["system", "to_client", "comment", "autoreply"])
def test_non_customer_types_are_ignored(msg_type: str) -> None:
    result = parse(inbox_payload(17340089, "x", type=msg_type))
    assert isinstance(result, Ignored)
    assert msg_type in result.reason


def test_ignored_events_need_no_ids() -> None:
    result = parse({"type": "system", "text": "dialog closed"})
    assert isinstance(result, Ignored)


def test_ignored_reason_is_bounded() -> None:
    result = parse(inbox_payload(1, "x", type="x" * 10_000))
    assert isinstance(result, Ignored)
    assert len(result.reason) < 200


def test_missing_hook_type_with_from_client_is_queued() -> None:
    body = inbox_payload(1, "hi")
    del body["hook_type"]
    assert queued(body).text == "hi"


# ---- malformed bodies ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"[]", "JSON object"),
        (b'[{"type": "from_client"}]', "JSON object"),
        (b"null", "JSON object"),
        (b'"text"', "JSON object"),
        (b"42", "JSON object"),
        (b"", "not valid JSON"),
        (b"{", "not valid JSON"),
        (b'{"a": 1,}', "not valid JSON"),
        (b"\xff\xfe{}", "not valid JSON"),
        (b"\xef\xbb\xbf", "not valid JSON"),
        (b'{"type": "from_client", "text": "\\ud800"}', "not valid JSON"),
    ],
)
def test_malformed_bodies_are_invalid(body: bytes, expected: str) -> None:
    assert expected in invalid(body)


def test_invalid_utf8_inside_a_string_is_invalid() -> None:
    body = b'{"type": "from_client", "message_id": 1, "client_id": 1, "text": "\xff\xfe"}'
    invalid(body)


def test_very_long_digit_string_id_is_invalid() -> None:
    assert invalid(inbox_payload(1, "hi") | {"message_id": "1" * 5000}).startswith("message_id")


def test_huge_integer_coordinate_gives_no_location() -> None:
    body = (
        b'{"type": "from_client", "message_id": 1, "client_id": 1, "coordinates": [1'
        + b"0" * 400
        + b", 2]}"
    )
    result = parse_webhook(body, received_at=NOW)
    assert isinstance(result, QueuedMessage)
    assert result.location is None


# ---- text normalisation --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("hello", "hello"),
        ("  hello \t\n world  ", "hello world"),
        ("e\u0301", "\u00e9"),  # NFC
        ("a\u0000b\u0007c\u001bd", "abcd"),  # control characters removed
        ("zero\u200bwidth\u200e", "zerowidth"),  # format characters removed
        ("👨\u200d👩\u200d👧", "👨\u200d👩\u200d👧"),  # ZWJ kept for emoji sequences
        ("line1\r\nline2", "line1 line2"),
        ("a\u00a0\u2003b", "a b"),  # unicode spaces folded
        ("\u202e evil", "evil"),
        ("", None),
        ("   \n\t ", None),
        ("\u0000\u200b", None),
        ("ул. Токтогула 125", "ул. Токтогула 125"),
    ],
)
def test_normalise_text(raw: str, expected: str | None) -> None:
    assert normalise_text(raw) == expected


def _normalise_char_by_char(text: str) -> str | None:
    """The definition, one character at a time (normalise_text skips the loop for printable
    text, where it would keep every character)."""
    kept = []
    for ch in unicodedata.normalize("NFC", text):
        cat = unicodedata.category(ch)
        if ch in "\n\r\t":
            kept.append(" ")
        elif not (cat in ("Cc", "Cs", "Co") or (cat == "Cf" and ch != "\u200d")):
            kept.append(ch)
    out = re.sub(r"\s+", " ", "".join(kept)).strip()[:MAX_TEXT_CHARS].strip()
    return out or None


@settings(max_examples=400, deadline=None)
@given(
    st.text(
        alphabet=st.one_of(
            st.characters(),  # anything, controls and surrogates included
            st.sampled_from("ё Ёң ү ө\u00a0\u200d\u200b\u202e\t\n\r\u0301e😀"),
        ),
        max_size=60,
    )
)
def test_normalise_text_is_the_char_by_char_definition(text: str) -> None:
    assert normalise_text(text) == _normalise_char_by_char(text)


def test_normalise_text_caps_length() -> None:
    out = normalise_text("я" * (MAX_TEXT_CHARS * 3))
    assert out == "я" * MAX_TEXT_CHARS
    spaced = normalise_text("a" * (MAX_TEXT_CHARS - 1) + "   b" * 10)
    assert spaced is not None
    assert len(spaced) <= MAX_TEXT_CHARS
    assert spaced == spaced.strip()


def test_parse_normalises_text() -> None:
    msg = queued(inbox_payload(1, "  Да\u200b,\n\nподтверждаю  " + "x" * (MAX_TEXT_CHARS * 2)))
    assert msg.text is not None
    assert msg.text.startswith("Да, подтверждаю x")
    assert len(msg.text) == MAX_TEXT_CHARS
    assert queued(inbox_payload(1, "\u200b \n")).text is None


# ---- shards and the queued form ------------------------------------------------------------


def test_shard_of_is_stable_and_in_range() -> None:
    # fixed values: the mapping must not change between processes or releases
    assert [shard_of(c, 8) for c in ("17340089", "1", "42", "999999999")] == [1, 7, 0, 4]
    assert shard_of("17340089", 256) == 209
    assert shard_of("17340089", 1) == 0
    for shards in (1, 2, 3, 8):
        assert {shard_of(str(c), shards) for c in range(1000)} == set(range(shards))
    spread = {shard_of(str(17340089 + c), 256) for c in range(5000)}
    assert spread <= set(range(256))
    assert len(spread) > 240  # customers spread over the shards
    assert shard_of("17340089", 8) == zlib.crc32(b"17340089") % 8


def test_encode_decode_round_trip() -> None:
    msg = QueuedMessage(
        message_id="106773169",
        client_id="17340089",
        text="ул. Токтогула 125 🚰",
        received_at=NOW,
        media=("photo", "location"),
        location=(42.87, 74.59),
        contact_phone="+996555123456",
        transport="whatsapp",
        channel_id=17,
    )
    raw = encode_queued(msg)
    assert isinstance(raw, bytes)
    assert json.loads(raw)["v"] == 1
    assert decode_queued(raw) == msg
    minimal = QueuedMessage(message_id="1", client_id="2", text=None, received_at=0.0)
    assert decode_queued(encode_queued(minimal)) == minimal


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{}",
        b"[]",
        b'{"message_id": 1, "client_id": "2", "text": null, "received_at": 0}',
        b"\xff",
    ],
)
def test_decode_of_a_non_queued_message_is_invalid(raw: bytes) -> None:
    with pytest.raises(InvalidInput) as info:
        decode_queued(raw)
    assert "malformed" in info.value.reason


# ---- property: any JSON is either accepted or rejected as InvalidInput ---------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
FIELDS = (
    "message_id",
    "client_id",
    "type",
    "hook_type",
    "text",
    "transport",
    "channel_id",
    "coordinates",
    "photo",
    "attachments",
    "contact",
    "extra_data",
)
field_values = st.one_of(
    json_values,
    st.sampled_from(["from_client", "inbox", "outbox", "17340089", " 42 ", "", "1,2", "-0"]),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.fixed_dictionaries(
        {}, optional={"lat": json_values, "lon": json_values, "phone": json_values}
    ),
)
payloads = st.one_of(
    json_values,
    st.dictionaries(st.sampled_from(FIELDS), field_values, max_size=len(FIELDS)),
    st.builds(
        lambda base, changes: {**base, **changes},
        st.builds(lambda cid: inbox_payload(cid, "hi", message_id=1), st.integers(1, 2**40)),
        st.dictionaries(st.sampled_from(FIELDS), field_values, max_size=4),
    ),
)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(payloads)
def test_any_json_is_accepted_ignored_or_invalid(payload: Any) -> None:
    body = json.dumps(payload).encode()
    try:
        result = parse_webhook(body, received_at=NOW)
    except InvalidInput as exc:
        assert exc.reason
        return
    assert isinstance(result, QueuedMessage | Ignored)
    if isinstance(result, QueuedMessage):
        assert result.message_id.isdigit() and result.client_id.isdigit()
        assert int(result.message_id) > 0 and int(result.client_id) > 0
        assert result.text is None or (0 < len(result.text) <= MAX_TEXT_CHARS)
        assert result.text is None or normalise_text(result.text) == result.text
        assert decode_queued(encode_queued(result)) == result
