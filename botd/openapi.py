"""The OpenAPI 3 description of botd's HTTP interface (served at ``GET /openapi.json``)."""

from __future__ import annotations

from typing import Any

from botd import __version__


def _answer(description: str, example: dict[str, str]) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/json": {
                "schema": {"$ref": "#/components/schemas/Answer"},
                "example": example,
            }
        },
    }


def spec(
    *,
    path_token: bool = False,
    hmac_header: str | None = None,
    hmac_timestamp_header: str | None = None,
) -> dict[str, Any]:
    """The spec for a deployment (path and headers depend on the authentication configured)."""
    webhook_path = "/webhook/chat2desk/{token}" if path_token else "/webhook/chat2desk"
    parameters: list[dict[str, Any]] = []
    if path_token:
        parameters.append(
            {"name": "token", "in": "path", "required": True, "schema": {"type": "string"}}
        )
    if hmac_header:
        parameters.append(
            {
                "name": hmac_header,
                "in": "header",
                "required": True,
                "description": "hex HMAC-SHA256 of the raw body"
                + (" prefixed with '<timestamp>.'" if hmac_timestamp_header else ""),
                "schema": {"type": "string"},
            }
        )
    if hmac_header and hmac_timestamp_header:
        parameters.append(
            {
                "name": hmac_timestamp_header,
                "in": "header",
                "required": True,
                "description": "signing time, unix seconds",
                "schema": {"type": "string"},
            }
        )
    id_schema = {
        "oneOf": [
            {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
            {"type": "string", "pattern": "^[1-9][0-9]{0,17}$"},
        ]
    }
    text_health = {"description": "liveness", "content": {"application/json": {}}}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "botd",
            "version": __version__,
            "description": "Chat2Desk order bot: the webhook Chat2Desk posts to, and health.",
        },
        "paths": {
            webhook_path: {
                "post": {
                    "summary": "A Chat2Desk webhook event",
                    "parameters": parameters,
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Inbox"}}
                        },
                    },
                    "responses": {
                        "200": _answer(
                            "queued (a customer message, durably queued), or ignored (not ours; "
                            "or, with a signed timestamp header only, a replay: this signature "
                            "was queued already, not queued again)",
                            {"status": "queued"},
                        ),
                        "400": _answer(
                            "malformed", {"status": "error", "reason": "client_id: required"}
                        ),
                        "401": _answer(
                            "bad signature", {"status": "error", "reason": "bad signature"}
                        ),
                        "404": _answer(
                            "wrong path token", {"status": "error", "reason": "not found"}
                        ),
                        "405": _answer(
                            "method not allowed",
                            {"status": "error", "reason": "method not allowed"},
                        ),
                        "413": _answer(
                            "body too large",
                            {"status": "error", "reason": "body larger than 65536 bytes"},
                        ),
                        "415": _answer(
                            "not JSON",
                            {"status": "error", "reason": "content type must be application/json"},
                        ),
                        "431": _answer(
                            "request head too large",
                            {"status": "error", "reason": "request head larger than 16384 bytes"},
                        ),
                        "503": _answer(
                            "broker unavailable or draining; retry",
                            {"status": "error", "reason": "retry later"},
                        ),
                    },
                }
            },
            "/health": {"get": {"summary": "liveness", "responses": {"200": text_health}}},
            "/ready": {
                "get": {
                    "summary": "readiness: RabbitMQ, Redis, PostgreSQL up and consumers running",
                    "responses": {
                        "200": {"description": "ready", "content": {"application/json": {}}},
                        "503": {"description": "not ready", "content": {"application/json": {}}},
                    },
                }
            },
            "/": {"get": {"summary": "name and version", "responses": {"200": text_health}}},
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {"200": {"description": "metrics", "content": {"text/plain": {}}}},
                }
            },
        },
        "components": {
            "schemas": {
                "Answer": {
                    "type": "object",
                    "required": ["status"],
                    "properties": {
                        "status": {
                            "type": "string",
                            "enum": ["queued", "ignored", "error"],
                        },
                        "reason": {"type": "string"},
                    },
                },
                "Inbox": {
                    "type": "object",
                    "required": ["message_id", "client_id", "type"],
                    "properties": {
                        "message_id": id_schema,
                        "client_id": id_schema,
                        "type": {"type": "string", "example": "from_client"},
                        "hook_type": {"type": "string", "nullable": True, "example": "inbox"},
                        "text": {"type": "string", "nullable": True},
                        "transport": {"type": "string", "nullable": True},
                        "channel_id": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": 2**63 - 1,
                            "nullable": True,
                        },
                        "photo": {"type": "string", "nullable": True},
                        "coordinates": {"nullable": True},
                        "attachments": {"type": "array", "items": {}},
                    },
                },
            }
        },
    }
