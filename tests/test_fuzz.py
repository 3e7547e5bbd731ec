"""Fuzzing the webhook: Hypothesis straight at the app, schemathesis against the running daemon.

The invariant for every request: no 5xx, never a traceback, the answer is one of the documented
JSON shapes, and the publish recorder holds exactly the messages that were answered "queued".
Seeds are fixed (``derandomize=True``; schemathesis ``--seed``) so a run is reproducible.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import msgspec
import trio
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from botd.daemon import Running
from botd.inbound import MEDIA_FIELDS
from botd.testing.fake_chat2desk import FakeChat2Desk
from botd.webapp import WEBHOOK_PATH
from tests.helpers import inbox_payload
from tests.test_webhook import (
    JSON_HEADERS,
    Answer,
    AppUnderTest,
    assert_consumers_got_exactly,
    call,
    make_app,
)


def fuzz(examples: int) -> settings:
    """Fixed seed, no deadline, a bounded number of examples."""
    return settings(
        derandomize=True,
        deadline=None,
        max_examples=examples,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )


MAX_BODY = 8192  # a small limit so that "too large" is reached often
DOCUMENTED = {200, 400, 401, 404, 405, 413, 415, 431, 503}


async def check(under: AppUnderTest, body: bytes, **kwargs: Any) -> Answer:
    """Send one request and assert the invariants every answer must keep."""
    before = len(under.recorder.published)
    answer = await call(under, body, **kwargs)
    assert answer.status < 500, answer
    assert answer.status in DOCUMENTED, answer
    assert b"Traceback" not in answer.raw and b'File "' not in answer.raw, answer.raw[:300]
    assert isinstance(answer.json, dict), answer
    status = answer.json.get("status")
    if status == "queued":
        assert (answer.status, answer.json) == (200, {"status": "queued"})
        assert len(under.recorder.published) == before + 1, "answered queued, not published"
        msg = under.recorder.messages[-1]
        payload = msgspec.json.decode(body)  # what botd itself could decode
        assert msg.message_id == str(int(payload["message_id"]))
        assert msg.client_id == str(int(payload["client_id"]))
    else:
        assert len(under.recorder.published) == before, f"published, but answered {answer.json}"
        assert set(answer.json) == {"status", "reason"}, answer.json
        assert isinstance(answer.json["reason"], str) and answer.json["reason"]
        if status == "ignored":
            assert answer.status == 200
        else:
            assert status == "error" and answer.status != 200, answer
    event(f"answer {answer.status} {status}")
    return answer


# ---- strategies ----------------------------------------------------------------------------

ids = st.one_of(
    st.integers(min_value=1, max_value=2**63 - 1),
    st.integers(min_value=1, max_value=2**63 - 1).map(str),
)
texts = st.one_of(st.none(), st.just(""), st.text(max_size=200), st.text(max_size=3000))
media = st.dictionaries(
    st.sampled_from([*MEDIA_FIELDS, "coordinates", "attachments", "contact"]),
    st.one_of(st.none(), st.just(""), st.text(max_size=50), st.just({"lat": 1.5, "lon": 2.5})),
    max_size=3,
)


@st.composite
def valid_payloads(draw: st.DrawFn) -> dict[str, Any]:
    body = inbox_payload(draw(ids), draw(texts))
    body["message_id"] = draw(ids)
    body.update(draw(media))
    if draw(st.booleans()):
        body["channel_id"] = draw(st.one_of(st.none(), st.integers(1, 2**31)))
    return body


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63, max_value=10**60),  # beyond int64
    st.integers(min_value=-(10**60), max_value=-1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=50),
    st.text(st.characters(codec="utf-8"), max_size=20),  # any unicode, astral planes too
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
hostile_values = st.one_of(
    json_values,
    st.integers(min_value=1, max_value=12_000).map(lambda n: "x" * n),  # huge strings
    st.integers(min_value=1, max_value=3_000).map(lambda d: f"{DEEP}{d}"),  # deep nesting
    st.sampled_from(["", " ", "0", "-1", "1.0", "1e3", "١٢٣", "12\x00", "9" * 25, "\u202e123"]),
)


DEEP = "\x00deep:"  # a placeholder that as_bytes() turns into nesting json.dumps cannot write
_DEEP = re.compile(rb'"\\u0000deep:(\d+)"')


def _nested(match: re.Match[bytes]) -> bytes:
    depth = int(match.group(1))
    return b'[{"d":' * depth + b'"deep"' + b"}]" * depth


FIELDS = ["message_id", "client_id", "type", "text", "hook_type", "channel_id", "transport"]


@st.composite
def near_valid_payloads(draw: st.DrawFn) -> dict[str, Any]:
    body = draw(valid_payloads())
    how = draw(st.sampled_from(["replace", "delete", "extra"]))
    if how == "extra":
        key = draw(st.text(max_size=12))
        body[key] = draw(hostile_values)
        event("near-valid: extra key")
        return body
    key = draw(st.sampled_from([*FIELDS, "client", "coordinates", "attachments", "contact"]))
    if how == "delete":
        body.pop(key, None)
    else:
        body[key] = draw(hostile_values)
    event(f"near-valid: {how} {key}")
    return body


@st.composite
def hostile_bodies(draw: st.DrawFn) -> bytes:
    """Bytes that are not a well-formed inbox event: broken JSON, bad UTF-8, deep or huge."""
    kind = draw(
        st.sampled_from(
            ["any json", "binary", "bad utf-8", "truncated", "deep brackets", "big number"]
        )
    )
    event(f"hostile: {kind}")
    if kind == "any json":
        return json.dumps(draw(json_values)).encode()
    if kind == "binary":
        return draw(st.binary(max_size=500))
    valid = json.dumps(draw(valid_payloads()), ensure_ascii=False).encode("utf-8", "surrogatepass")
    if kind == "bad utf-8":
        bad = draw(
            st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80"])
        )
        # inside a string value: the JSON is well formed but for its UTF-8
        opening = b'"text": "' if b'"text": "' in valid else b'"transport": "'
        at = valid.index(opening) + len(opening)
        return valid[:at] + bad + valid[at:]
    if kind == "truncated":
        return valid[: draw(st.integers(0, max(0, len(valid) - 1)))]
    if kind == "deep brackets":
        depth = draw(st.integers(1, 20_000))
        opener = draw(st.sampled_from([b"[", b'{"a":']))
        return opener * depth
    number = draw(st.sampled_from([b"1e99999", b"-1e99999", b"9" * 400, b"0." + b"0" * 400 + b"1"]))
    return valid.replace(b'"message_id": ', b'"message_id": ' + number + b', "x": ', 1)


def as_bytes(payload: dict[str, Any]) -> bytes:
    """UTF-8 JSON; lone surrogates pass through as invalid UTF-8; placeholders become nesting."""
    raw = json.dumps(payload, ensure_ascii=False).encode("utf-8", "surrogatepass")
    return _DEEP.sub(_nested, raw)


# ---- Hypothesis at the app -----------------------------------------------------------------


@fuzz(200)
@given(payload=valid_payloads())
async def test_valid_events_are_queued(payload: dict[str, Any]) -> None:
    under = make_app(max_body_bytes=MAX_BODY)
    body = json.dumps(payload).encode()
    answer = await check(under, body)
    if len(body) <= MAX_BODY:
        assert answer.json == {"status": "queued"}, (answer, payload)
        (msg,) = under.recorder.messages
        assert msg.text is None or 0 < len(msg.text) <= 2000
    else:
        assert answer.status == 413


@fuzz(400)
@given(payload=near_valid_payloads())
async def test_near_valid_events_keep_the_invariants(payload: dict[str, Any]) -> None:
    under = make_app(max_body_bytes=MAX_BODY)
    await check(under, as_bytes(payload))


@fuzz(400)
@given(body=hostile_bodies())
async def test_hostile_bodies_keep_the_invariants(body: bytes) -> None:
    under = make_app(max_body_bytes=MAX_BODY)
    await check(under, body)


SECRET = "fuzz-secret"
TS_HEADER = "X-Ts"
header_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=80
)


@fuzz(200)
@given(
    signature=st.one_of(st.none(), header_text),
    timestamp=st.one_of(
        st.none(),
        header_text,
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.integers(-600, 600).map(lambda d: str(int(time.time()) + d)),
    ),
    sign_it=st.booleans(),
)
async def test_signature_headers_keep_the_invariants(
    signature: str | None, timestamp: str | None, sign_it: bool
) -> None:
    under = make_app(
        hmac_secret=SECRET, hmac_timestamp_header=TS_HEADER, hmac_tolerance_seconds=300
    )
    body = json.dumps(inbox_payload(99, "hi")).encode()
    headers = dict(JSON_HEADERS)
    if timestamp is not None:
        headers[TS_HEADER] = timestamp
    if sign_it and timestamp is not None:
        signed = timestamp.strip().encode() + b"." + body
        signature = hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
    if signature is not None:
        headers["X-Chat2Desk-Signature"] = signature
    answer = await check(under, body, headers=headers)
    event(f"signature: {answer.status}")
    assert answer.status in (200, 401)
    if answer.status == 200:
        assert timestamp is not None and abs(float(timestamp) - time.time()) <= 301


@fuzz(150)
@given(
    path=st.text(max_size=40).map(lambda s: f"{WEBHOOK_PATH}/{quote(s, safe='/')}"),
    method=st.sampled_from(["POST", "GET", "PUT", "DELETE", "PATCH"]),
)
async def test_paths_keep_the_invariants(path: str, method: str) -> None:
    under = make_app(path_token="T" * 20)
    answer = await check(
        under, json.dumps(inbox_payload(1, "hi")).encode(), path=path, method=method
    )
    event(f"path: {answer.status}")
    assert answer.status in (404, 405) or path == f"{WEBHOOK_PATH}/{'T' * 20}"


# ---- schemathesis against the running daemon -----------------------------------------------


def _interactions(report: Path) -> list[dict[str, Any]]:
    """Every request schemathesis made and the answer it got, from its NDJSON event log."""
    out = []
    for line in report.read_text().splitlines():
        finished = json.loads(line).get("ScenarioFinished") or {}
        out.extend((finished.get("recorder") or {}).get("interactions", {}).values())
    return out


def _body(interaction: dict[str, Any]) -> Any:
    content = (interaction.get("response") or {}).get("content")
    if isinstance(content, dict) and "$base64" in content:
        return json.loads(base64.b64decode(content["$base64"]) or b"null")
    return None


async def test_schemathesis_finds_no_server_error(
    running: Running, fake: FakeChat2Desk, tmp_path: Path
) -> None:
    handled_before = running.consumers.handled
    report = tmp_path / "events.ndjson"
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        f"{running.url}/openapi.json",
        "--checks=not_a_server_error",
        "--exclude-path=/ready",  # no input; its 503 only says a service is down
        "--seed=20261125",
        "--max-examples=25",
        "--workers=1",
        "--phases=examples,coverage,fuzzing",
        "--generation-database=none",
        "--request-timeout=10",
        "--report=ndjson",
        f"--report-ndjson-path={report}",
        "--no-color",
    ]
    with trio.fail_after(60):
        done = await trio.run_process(
            command, capture_stdout=True, capture_stderr=True, check=False, cwd=tmp_path
        )
    output = (done.stdout + done.stderr).decode(errors="replace")
    assert done.returncode == 0, output[-4000:]
    interactions = _interactions(report)
    statuses = Counter((i.get("response") or {}).get("status_code") for i in interactions)
    event_line = f"schemathesis: {len(interactions)} requests, answers {dict(statuses)}"
    print(event_line)
    assert len(interactions) >= 100, event_line
    assert all(code is not None and code < 500 for code in statuses), event_line
    webhook = [i for i in interactions if i["request"]["uri"].endswith(WEBHOOK_PATH)]
    queued = sum(
        1 for i in webhook if i["request"]["method"] == "POST" and _body(i) == {"status": "queued"}
    )
    assert queued > 0, event_line
    async with httpx.AsyncClient() as client:
        await assert_consumers_got_exactly(
            client, running, fake, handled_before=handled_before, queued=queued
        )
