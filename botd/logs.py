"""Logging, configured once: one event per line, text for people or JSON for machines.

Personal data (phones, addresses, message texts) never goes into a log line unmasked: code
passes it through :func:`mask` first.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_STD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


def mask(value: str | None) -> str:
    """Keep the first 4 and last 2 characters of a phone, address or text; hide the rest."""
    if not value:
        return "-"
    if len(value) <= 6:
        return "*" * len(value)
    return f"{value[:4]}{'*' * (len(value) - 6)}{value[-2:]}"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STD_ATTRS and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = {
            k: v
            for k, v in record.__dict__.items()
            if k not in _STD_ATTRS and not k.startswith("_")
        }
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return line


class HiccupsAreWarnings(logging.Filter):
    """A service hiccup botd recovers from is a one-line warning, not an error with a traceback.

    aiormq logs a remote connection close as an ERROR, then a WARNING with a full traceback; botd
    reconnects by itself (and says so), and the health monitor reports a broker that stays down.
    So aiormq's errors become warnings, and below ERROR an exception is summarised on the line.
    """

    RECOVERED_BY_BOTD = ("aiormq",)

    def filter(self, record: logging.LogRecord) -> bool:
        if (
            record.levelno > logging.WARNING
            and record.name.split(".", 1)[0] in self.RECOVERED_BY_BOTD
        ):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        if record.exc_info and record.levelno < logging.ERROR:
            exc = record.exc_info[1]
            if exc is not None:
                record.msg = f"{record.getMessage()} ({type(exc).__name__}: {exc})"
                record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


def configure(level: str = "INFO", fmt: str = "text") -> None:
    """Route every logger to stderr in the chosen format (idempotent)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(HiccupsAreWarnings())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("aiormq", "httpx", "httpcore", "hypercorn.access", "psycopg.pool"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
