"""``GET /openapi.json``: valid OpenAPI 3.0, equal to docs/openapi.json, true to the app.

Validated against the official OpenAPI 3.0 JSON schema (the copy schemathesis ships), by
``openapi-spec-validator`` as well when it is installed, and by structural checks: every
``$ref`` resolves, and every status the webhook can answer is documented.

docs/openapi.json is regenerated with::

    python -c "import json; from botd.openapi import spec; \\
        json.dump(spec(), open('docs/openapi.json', 'w'), indent=2)"
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import pytest
from schemathesis.specs.openapi.definitions import OPENAPI_30_VALIDATOR

from botd import __version__
from botd.bridge import AsyncioBridge
from botd.config import RedisConfig
from botd.openapi import spec
from botd.state_store import open_state_store
from botd.webapp import WEBHOOK_PATH
from tests.conftest import REDIS_URL
from tests.test_webhook import (
    AppUnderTest,
    body_of,
    call,
    make_app,
    replay_app,
    signed_headers,
)

DOCS = Path(__file__).resolve().parent.parent / "docs" / "openapi.json"
TOKEN = "T" * 24
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "path token": {"path_token": TOKEN},
    "hmac": {"hmac_secret": "s"},
    "hmac with timestamp": {"hmac_secret": "s", "hmac_timestamp_header": "X-Ts"},
    "everything": {
        "path_token": TOKEN,
        "hmac_secret": "s",
        "hmac_header": "X-Sig",
        "hmac_timestamp_header": "X-Ts",
    },
}


async def served_spec(**webhook: Any) -> Any:
    under = make_app(**webhook)
    answer = await call(under, b"", path="/openapi.json", method="GET", headers={})
    assert answer.status == 200
    return answer.json


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


def _resolve(document: Any, ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node = document
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def assert_valid_openapi_3(document: Any) -> None:
    errors = [str(e) for e in OPENAPI_30_VALIDATOR.iter_errors(document)]
    assert errors == [], errors[:5]
    try:
        validator = importlib.import_module("openapi_spec_validator")
    except ImportError:
        pass
    else:
        validator.validate(document)
    assert document["openapi"].startswith("3.0.")
    for ref in _refs(document):
        assert _resolve(document, ref) is not None, ref


async def test_served_spec_equals_docs_openapi_json_for_the_default_config() -> None:
    served = await served_spec()
    assert served == json.loads(DOCS.read_text(encoding="utf-8")), (
        "docs/openapi.json is stale; regenerate it (see this module's docstring)"
    )
    assert served == spec()
    assert served["info"]["version"] == __version__


@pytest.mark.parametrize("variant", VARIANTS)
async def test_every_variant_is_valid_openapi_3(variant: str) -> None:
    assert_valid_openapi_3(await served_spec(**VARIANTS[variant]))


def test_docs_openapi_json_is_valid_openapi_3() -> None:
    assert_valid_openapi_3(json.loads(DOCS.read_text(encoding="utf-8")))


async def test_spec_follows_the_authentication_configured() -> None:
    everything = await served_spec(**VARIANTS["everything"])
    (path,) = [p for p in everything["paths"] if p.startswith(WEBHOOK_PATH)]
    assert path == f"{WEBHOOK_PATH}/{{token}}"
    params = {(p["in"], p["name"]) for p in everything["paths"][path]["post"]["parameters"]}
    assert params == {("path", "token"), ("header", "X-Sig"), ("header", "X-Ts")}
    default = await served_spec()
    assert default["paths"][WEBHOOK_PATH]["post"]["parameters"] == []
    hmac_only = await served_spec(hmac_secret="s")
    (param,) = hmac_only["paths"][WEBHOOK_PATH]["post"]["parameters"]
    assert (param["in"], param["name"]) == ("header", "X-Chat2Desk-Signature")


async def test_every_answer_the_webhook_gives_is_documented() -> None:
    documented = set(spec()["paths"][WEBHOOK_PATH]["post"]["responses"])
    answers: dict[str, tuple[AppUnderTest, bytes, dict[str, Any]]] = {
        "200": (make_app(), b'{"type": "system", "hook_type": "outbox"}', {}),
        "400": (make_app(), b"[]", {}),
        "401": (make_app(hmac_secret="s"), b"{}", {}),
        "404": (make_app(path_token=TOKEN), b"{}", {"path": f"{WEBHOOK_PATH}/x"}),
        "405": (make_app(), b"{}", {"method": "GET"}),
        "413": (make_app(max_body_bytes=256), b" " * 300, {}),
        "415": (make_app(), b"{}", {"headers": {"Content-Type": "text/plain"}}),
        "431": (make_app(max_header_bytes=1024), b"{}", {"headers": {"X-Pad": "p" * 2000}}),
        "503": (make_app(draining=True), b"{}", {}),
    }
    for code, (under, body, kwargs) in answers.items():
        path = kwargs.pop("path", WEBHOOK_PATH)
        answer = await call(under, body, path=path, **kwargs)
        assert str(answer.status) == code, (code, answer)
        assert code in documented, code
    assert set(answers) == documented


async def test_every_status_word_the_webhook_answers_is_in_the_answer_schema(
    bridge: AsyncioBridge, redis_prefix: str
) -> None:
    """queued, ignored (also a replay of a signed request, real Redis), error."""
    documented = spec()["components"]["schemas"]["Answer"]["properties"]["status"]["enum"]
    said = {(await call(make_app(), b'{"type": "system", "hook_type": "outbox"}')).json["status"]}
    said.add((await call(make_app(), b"[]")).json["status"])
    redis_config = RedisConfig(url=REDIS_URL, key_prefix=redis_prefix)
    async with open_state_store(bridge, redis_config, state_ttl_seconds=60) as store:
        under = replay_app(store)
        body = body_of()
        headers = signed_headers(body)
        for _ in range(2):
            said.add((await call(under, body, headers=headers)).json["status"])
    assert said == {"ignored", "error", "queued"}
    assert set(documented) == said
    assert "replay" in spec()["paths"][WEBHOOK_PATH]["post"]["responses"]["200"]["description"]
