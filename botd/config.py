"""One typed, frozen configuration (docs/design.md §6, §8).

Loaded from ``config.toml`` (a missing file means built-in defaults), then overridden by the
environment as ``BOTD_<SECTION>_<KEY>``. Unknown sections or keys and unusable values stop botd at
start-up with a :class:`ConfigError` naming each key, the bad value and the fix. Every field's
default and help text live here, next to the field; ``config.toml`` and the README table are
checked against this module by the tests.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import phonenumbers

from botd.errors import ConfigError

ENV_PREFIX = "BOTD_"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _f(
    default: Any,
    help: str,
    *,
    secret: bool = False,
    check: Callable[[Any], str | None] | None = None,
    joins_list: bool = False,
) -> Any:
    """A config field. ``joins_list``: a string field that also takes a TOML array of strings,
    joined with commas (the environment's form), so that one string type serves both."""
    metadata = {"help": help, "secret": secret, "check": check, "joins_list": joins_list}
    return field(default=default, metadata=metadata)


def _range(lo: float, hi: float) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        return None if lo <= v <= hi else f"must be between {lo} and {hi}"

    return check


def _one_of(*choices: str) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        return None if v in choices else f"must be one of {', '.join(repr(c) for c in choices)}"

    return check


def _url(*schemes: str) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        parts = urlsplit(v)
        local = parts.scheme == "unix" and parts.path
        if parts.scheme not in schemes or not (parts.hostname or local):
            return f"must be a URL starting with {' or '.join(s + '://' for s in schemes)}"
        return None

    return check


def split_urls(value: str) -> tuple[str, ...]:
    """The URLs of a comma-separated list (one URL is a list of one); blanks around them and
    empty elements are dropped. A comma inside a URL must be percent-encoded (%2C)."""
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _urls(*schemes: str) -> Callable[[Any], str | None]:
    """Check each URL of a comma-separated list like :func:`_url`; at least one."""
    one = _url(*schemes)

    def check(v: Any) -> str | None:
        urls = split_urls(v)
        if not urls:
            return f"must be a URL starting with {' or '.join(s + '://' for s in schemes)}"
        for n, url in enumerate(urls, 1):
            if reason := one(url):
                return reason if len(urls) == 1 else f"URL {n} of {len(urls)} {reason}"
        return None

    return check


_PG_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^\[\]:/,]+)(?::(\d{1,5}))?")


def _pg_dsn(v: Any) -> str | None:
    """A libpq URI with one host or several (``postgresql://u@h1:5441,h2:5442/botd``: a
    primary and its stand-by, tried in turn). ``urlsplit`` cannot read the port of a multi-host
    netloc, so each ``host[:port]`` is checked here; a socket directory may come as ``?host=``."""
    problem = (
        "must be a URL starting with postgresql:// or postgres:// "
        "(several hosts: postgresql://user@host1:port1,host2:port2/db)"
    )
    parts = urlsplit(v)
    if parts.scheme not in ("postgresql", "postgres"):
        return problem
    hosts = parts.netloc.rpartition("@")[2]
    if not hosts:
        return None if "host=" in parts.query else problem
    for host in hosts.split(","):
        m = _PG_HOST.fullmatch(host)
        if m is None or (m[2] is not None and not 0 < int(m[2]) < 65536):
            return problem
    return None


def _prefix(v: Any) -> str | None:
    ok = v and all(c.isalnum() or c in "-_.:" for c in v)
    return None if ok else "must be non-empty letters, digits, '-', '_', '.' or ':'"


def _path_token(v: Any) -> str | None:
    if v == "":
        return None
    ok = len(v) >= 16 and all(c.isalnum() or c in "-_" for c in v)
    if ok:
        return None
    return (
        "must be empty (off) or at least 16 characters, each a letter, digit, '-' or '_' "
        "(make one: python3 -c 'import secrets; print(secrets.token_urlsafe(24))')"
    )


def _tag_id(v: Any) -> str | None:
    if v == "" or (v.isascii() and v.isdigit()):
        return None
    return (
        "must be empty (off) or a Chat2Desk tag id, digits only "
        "(GET /v1/tags lists the account's tags with their ids)"
    )


def _region(v: Any) -> str | None:
    return (
        None
        if v in phonenumbers.SUPPORTED_REGIONS
        else "must be an ISO 3166 region code such as KG"
    )


def _regions(v: Any) -> str | None:
    bad = [r for r in v if r not in phonenumbers.SUPPORTED_REGIONS]
    return (
        f"unknown region code(s) {', '.join(bad)}; use ISO 3166 codes such as KG, KZ"
        if bad
        else None
    )


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    host: str = _f("127.0.0.1", "Address the webhook server listens on.")
    port: int = _f(
        8080, "TCP port of the webhook server (0 picks a free one).", check=_range(0, 65535)
    )
    max_body_bytes: int = _f(
        65536,
        "Largest webhook body accepted; larger gets 413.",
        check=_range(256, 16 * 1024 * 1024),
    )
    hmac_secret: str = _f(
        "",
        "Shared secret for the HMAC-SHA256 body signature; empty turns the check off. "
        "botd run needs this or path_token (or allow_unauthenticated = true).",
        secret=True,
    )
    hmac_header: str = _f(
        "X-Chat2Desk-Signature", "Header carrying the hex HMAC-SHA256 of the raw body."
    )
    path_token: str = _f(
        "",
        "Secret path segment (>= 16 random characters): the webhook is then "
        "/webhook/chat2desk/<token>; empty turns it off.",
        secret=True,
        check=_path_token,
    )
    hmac_timestamp_header: str = _f(
        "",
        "Header with the signing time (unix seconds); when set, the signature covers "
        "'<timestamp>.<body>', old or future timestamps are refused, and a signature already "
        "queued is answered 'ignored' (a replay). Empty turns it off.",
    )
    hmac_tolerance_seconds: int = _f(
        300, "Largest accepted clock difference for the signed timestamp.", check=_range(1, 86400)
    )
    allow_unauthenticated: bool = _f(
        False,
        "Let botd run serve the webhook with neither hmac_secret nor path_token (anyone who "
        "can reach it can order for any customer); only for a loopback-only test set-up.",
    )
    publish_timeout_seconds: float = _f(
        5.0,
        "How long a webhook waits for the broker's confirm before answering 503.",
        check=_range(0.1, 60),
    )
    keep_alive_timeout_seconds: float = _f(
        75.0, "Idle keep-alive connections are closed after this long.", check=_range(1, 3600)
    )
    read_timeout_seconds: float = _f(
        30.0,
        "A client that sends nothing for this long is disconnected (slow-loris guard).",
        check=_range(1, 600),
    )
    response_timeout_seconds: float = _f(
        60.0,
        "Longest time one webhook request may take in total (it answers 503 on a slow broker "
        "after publish_timeout_seconds, well before this).",
        check=_range(1, 600),
    )
    max_header_bytes: int = _f(
        16384,
        "Largest request head (request line + headers) accepted.",
        check=_range(1024, 1024 * 1024),
    )


@dataclass(frozen=True, slots=True)
class Chat2DeskConfig:
    base_url: str = _f(
        "https://api.chat2desk.com/v1",
        "Chat2Desk API base URL (replies go to {base_url}/messages).",
        check=_url("http", "https"),
    )
    token: str = _f(
        "",
        "Chat2Desk API token; set it through BOTD_CHAT2DESK_TOKEN, not in the file.",
        secret=True,
    )
    timeout_seconds: float = _f(10.0, "Timeout of one API call.", check=_range(0.1, 120))
    requests_per_minute: int = _f(
        300, "Chat2Desk API calls allowed per minute (token bucket).", check=_range(1, 100000)
    )
    burst: int = _f(
        5,
        "Calls that may go out back to back before the per-minute rate applies.",
        check=_range(1, 10000),
    )
    attempts: int = _f(
        3,
        "Attempts of one send (1 s / 2 s / 4 s apart) before it goes to the outbox.",
        check=_range(1, 10),
    )
    auth_retry_seconds: float = _f(
        30.0,
        "While Chat2Desk refuses the token (401/403), sending is paused and retried this often; "
        "the replies wait in the outbox meanwhile.",
        check=_range(1, 3600),
    )


@dataclass(frozen=True, slots=True)
class RabbitmqConfig:
    url: str = _f(
        "amqp://guest:guest@127.0.0.1:5672/%2F",
        "AMQP URL of RabbitMQ; for a cluster, one URL per node, comma-separated (or a TOML "
        "array): botd connects to the first that answers and, when that connection is lost, "
        "fails over to the next.",
        secret=False,
        check=_urls("amqp", "amqps"),
        joins_list=True,
    )
    queue_prefix: str = _f("botd", "Prefix of every queue botd declares.", check=_prefix)
    shards: int = _f(
        8,
        "Number of shard queues; a customer's messages always go to the same shard.",
        check=_range(1, 256),
    )
    prefetch: int = _f(
        100,
        "Unacknowledged messages the broker may push to one shard consumer.",
        check=_range(1, 10000),
    )
    delivery_limit: int = _f(
        5, "Deliveries of one message before it is dead-lettered as poison.", check=_range(1, 1000)
    )
    reconnect_max_seconds: float = _f(
        10.0, "Longest wait between reconnection attempts.", check=_range(0.1, 300)
    )
    publish_timeout_seconds: float = _f(
        10.0,
        "How long botd's own publishes (outbox, dialog timers) wait for the broker's confirm.",
        check=_range(0.1, 300),
    )
    quorum_initial_group_size: int = _f(
        0,
        "Replicas of each quorum queue botd creates (x-quorum-initial-group-size); 0 leaves it "
        "to the broker (quorum_cluster_size: 3 in RabbitMQ 3.10, at most the cluster's nodes). "
        "RabbitMQ refuses to redeclare an existing queue with another value "
        "(PRECONDITION_FAILED stops botd at start-up): set it before the queues exist.",
        check=_range(0, 99),
    )
    instances: int = _f(
        1,
        "How many botd processes share the shards (active-active): each consumes its home "
        "shards (shard % instances == instance) and stands by for the others.",
        check=_range(1, 256),
    )
    instance: int = _f(
        0,
        "This process's number, 0 … instances - 1 (-1: from a hash of the host name).",
        check=_range(-1, 255),
    )

    @property
    def urls(self) -> tuple[str, ...]:
        """The node URLs of ``url``, in the order botd tries them."""
        return split_urls(self.url)


def parse_host_port(value: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for an IPv6 address) as (host, port); ValueError naming
    what is wrong, so a typo in a Sentinel list stops botd at start-up, not at the fail-over."""
    host, sep, port = value.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or any(c.isspace() or c in "/[]" for c in host):
        raise ValueError(f"{value!r} is not host:port")
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(f"{value!r} has no port number 1-65535")
    return host, int(port)


def _host_ports(v: Any) -> str | None:
    bad = []
    for item in v:
        try:
            parse_host_port(item)
        except ValueError as exc:
            bad.append(str(exc))
    if bad:
        return f"{'; '.join(bad)}: give host:port entries, e.g. 10.0.0.1:26379"
    return None


def _service_name(v: Any) -> str | None:
    ok = v and all(c.isalnum() or c in "-_.:" for c in v)
    return None if ok else "must be the name the sentinels monitor (letters, digits, '-_.:')"


@dataclass(frozen=True, slots=True)
class RedisConfig:
    url: str = _f(
        "redis://127.0.0.1:6379/0",
        "Redis URL. With sentinels set, only its database number, user and password (and "
        "rediss:// for TLS) are used: the address comes from the sentinels.",
        check=_url("redis", "rediss", "unix"),
    )
    sentinels: tuple[str, ...] = _f(
        (),
        "Redis Sentinel addresses (host:port); when set, botd asks them for the current "
        "primary of service_name and follows it through a fail-over. Empty = connect to url.",
        check=_host_ports,
    )
    service_name: str = _f(
        "botd", "The service (master) name the sentinels monitor.", check=_service_name
    )
    key_prefix: str = _f("botd:", "Prefix of every Redis key botd writes.", check=_prefix)
    dedupe_ttl_seconds: int = _f(
        172800,
        "How long a processed message_id is remembered (≥ 24 h).",
        check=_range(86400, 30 * 86400),
    )


@dataclass(frozen=True, slots=True)
class PostgresConfig:
    dsn: str = _f(
        "postgresql://postgres@127.0.0.1:5432/botd",
        "PostgreSQL connection string.",
        check=_pg_dsn,
    )
    pool_min_size: int = _f(1, "Connections kept open.", check=_range(1, 100))
    pool_max_size: int = _f(4, "Most connections opened.", check=_range(1, 100))


@dataclass(frozen=True, slots=True)
class DialogConfig:
    default_region: str = _f(
        "KG",
        "Region for phone numbers written without a country code (ISO 3166, e.g. KG).",
        check=_region,
    )
    allowed_regions: tuple[str, ...] = _f(
        (), "Countries whose phone numbers are accepted; empty accepts any.", check=_regions
    )
    state_ttl_seconds: int = _f(
        86400, "How long an unfinished dialog is kept.", check=_range(60, 30 * 86400)
    )
    reminder_after_seconds: int = _f(
        1800,
        "A customer silent this long in the middle of a dialog gets one reminder; the dialog "
        "closes politely after state_ttl_seconds.",
        check=_range(1, 30 * 86400),
    )
    handoff_seconds: int = _f(
        86400,
        "After a human operator writes to a customer, the bot stays silent this long "
        "(or until the operator sends /bot).",
        check=_range(60, 30 * 86400),
    )
    default_locale: str = _f(
        "ru",
        "Language of replies when the customer's cannot be told.",
        check=_one_of("ru", "ky", "en"),
    )
    cancel_window_seconds: int = _f(
        900,
        "A placed order can be cancelled from the chat this long after it was placed "
        "(0 turns chat cancels off).",
        check=_range(0, 7 * 86400),
    )
    order_notes: bool = _f(
        True,
        "Put an internal note (a Chat2Desk comment the customer does not see) with the order's "
        "number and details into the customer's dialog when an order is placed or cancelled.",
    )
    notify_status_changes: bool = _f(
        True,
        "Tell the customer in a short message when the shop sets their order to 'delivering' "
        "or cancels it (botd orders set-status).",
    )
    order_tag: str = _f(
        "",
        "Chat2Desk tag id (a number, see GET /v1/tags) put on the customer's request when an "
        "order is placed, with the order note (needs order_notes); empty = off.",
        check=_tag_id,
    )


@dataclass(frozen=True, slots=True)
class ShopWebhookConfig:
    url: str = _f(
        "",
        "The shop's own system: every order event (order.placed, order.cancelled, "
        "order.status_changed) is POSTed here as signed JSON. Empty turns it off.",
        check=lambda v: None if v == "" else _url("http", "https")(v),
    )
    secret: str = _f(
        "",
        "Secret of the X-Botd-Signature header (HMAC-SHA256 of '<t>.<body>'); required with url.",
        secret=True,
    )
    timeout_seconds: float = _f(
        10.0, "How long one POST to the shop may take.", check=_range(0.5, 120)
    )
    max_attempts: int = _f(
        12,
        "Attempts of one event before it moves to the DLQ (botd dlq replay sends it again).",
        check=_range(1, 1000),
    )
    max_backoff_seconds: float = _f(
        300.0, "Longest wait between attempts (1 s, doubling).", check=_range(1, 86400)
    )


@dataclass(frozen=True, slots=True)
class OutboxConfig:
    max_attempts: int = _f(
        50, "Outbox attempts of a reply before it moves to the DLQ.", check=_range(1, 1000)
    )
    max_backoff_seconds: int = _f(
        300, "Longest wait between outbox attempts.", check=_range(1, 86400)
    )


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    shutdown_timeout_seconds: float = _f(
        10.0, "On SIGTERM, how long in-flight messages may take to finish.", check=_range(0, 600)
    )
    ready_wait_seconds: float = _f(
        10.0,
        "At start, how long READY=1 waits for RabbitMQ, PostgreSQL and the consumers before "
        "botd reports ready anyway, degraded (the webhook answers from the first second). Keep "
        "it below systemd's TimeoutStartSec.",
        check=_range(0, 600),
    )


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = _f("INFO", "Log level.", check=_one_of(*LOG_LEVELS))
    format: str = _f(
        "text",
        "'text' for people, 'json' for machines (one JSON object per line).",
        check=_one_of("text", "json"),
    )


@dataclass(frozen=True, slots=True)
class Config:
    webhook: WebhookConfig = field(default_factory=WebhookConfig)
    chat2desk: Chat2DeskConfig = field(default_factory=Chat2DeskConfig)
    rabbitmq: RabbitmqConfig = field(default_factory=RabbitmqConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    postgres: PostgresConfig = field(default_factory=PostgresConfig)
    dialog: DialogConfig = field(default_factory=DialogConfig)
    shop_webhook: ShopWebhookConfig = field(default_factory=ShopWebhookConfig)
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    log: LogConfig = field(default_factory=LogConfig)


SECTIONS: dict[str, type[Any]] = typing.get_type_hints(Config)
_HINTS: dict[str, dict[str, Any]] = {
    name: typing.get_type_hints(cls) for name, cls in SECTIONS.items()
}


def env_name(section: str, key: str) -> str:
    return f"{ENV_PREFIX}{section}_{key}".upper()


def _coerce(value: Any, hint: Any, *, from_env: bool) -> Any:
    """Convert a TOML or environment value to the field's type, or raise ValueError."""
    if hint is bool:
        if isinstance(value, bool):
            return value
        if (
            from_env
            and isinstance(value, str)
            and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off")
        ):
            return value.lower() in ("1", "true", "yes", "on")
        raise ValueError("must be true or false")
    if hint is int:
        if isinstance(value, bool):
            raise ValueError("must be a whole number")
        if isinstance(value, int):
            return value
        if from_env and isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ValueError("must be a whole number")
    if hint is float:
        if isinstance(value, bool):
            raise ValueError("must be a number")
        if isinstance(value, int | float):
            return float(value)
        if from_env and isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise ValueError("must be a number")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ValueError("must be a string")
    if typing.get_origin(hint) is tuple:
        if from_env and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ValueError("must be a list of strings (in the environment: comma-separated)")
    raise TypeError(f"unsupported config type {hint!r}")  # pragma: no cover - programming error


def redact_url(value: str) -> str:
    """Hide the password of a URL or DSN (``scheme://user:***@host``)."""
    parts = urlsplit(value)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return parts._replace(netloc=netloc).geturl()
    return value


_USERINFO_PASSWORD = re.compile(r"(?<=:)[^:@/\s]+(?=@)")
_KEYWORD_PASSWORD = re.compile(r"(?i)(\bpassword\s*=\s*)('[^']*'|[^\s&;]+)")


def _shown(value: Any, secret: bool) -> str:
    if secret and value:
        return "'***'"
    if isinstance(value, str):
        # URLs and DSNs, also malformed ones ("amqp//u:pw@h") and libpq keyword DSNs
        # ("host=h password=pw") or query parameters ("?password=pw"), lose their passwords.
        value = redact_url(value) if "://" in value else value
        value = _KEYWORD_PASSWORD.sub(r"\1***", _USERINFO_PASSWORD.sub("***", value))
    return repr(value)


def load_config(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Config:
    """Read the TOML file (if it exists) and the environment; raise ConfigError on any problem."""
    env = os.environ if env is None else env
    problems: list[str] = []
    raw: dict[str, Any] = {}
    if path is not None and Path(path).exists():
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError([f"{path}: not valid TOML ({exc}); fix the file's syntax"]) from exc
        except OSError as exc:
            raise ConfigError(
                [f"{path}: cannot be read ({exc.strerror}); give a readable file"]
            ) from exc
    elif path is not None and env.get("BOTD_CONFIG") == str(path):
        raise ConfigError([f"BOTD_CONFIG={path}: no such file; fix the path or unset BOTD_CONFIG"])

    for section in raw:
        if section not in SECTIONS:
            problems.append(f"[{section}]: unknown section; known: {', '.join(SECTIONS)}")
        elif not isinstance(raw[section], dict):
            problems.append(f"[{section}]: must be a table")
    known_env = {env_name(s, k) for s, hints in _HINTS.items() for k in hints}
    for name in env:
        if (
            name.startswith(ENV_PREFIX)
            and name not in known_env
            and name not in ("BOTD_CONFIG", "BOTD_CLUSTER_DIR")  # scripts/cluster's data dir
            and not name.startswith("BOTD_TEST_")
        ):
            problems.append(
                f"{name}: unknown environment variable; "
                "known ones are BOTD_<SECTION>_<KEY>, e.g. BOTD_WEBHOOK_PORT"
            )

    sections: dict[str, Any] = {}
    for section, cls in SECTIONS.items():
        table = raw.get(section, {}) if isinstance(raw.get(section, {}), dict) else {}
        for key in table:
            if key not in _HINTS[section]:
                problems.append(
                    f"[{section}] {key}: unknown key; known: {', '.join(_HINTS[section])}"
                )
        values: dict[str, Any] = {}
        for fld in dataclasses.fields(cls):
            hint = _HINTS[section][fld.name]
            ename = env_name(section, fld.name)
            secret = fld.metadata["secret"]
            if ename in env:
                origin, value, from_env = f"{ename}", env[ename], True
            elif fld.name in table:
                origin, value, from_env = f"[{section}] {fld.name}", table[fld.name], False
            else:
                continue
            if (
                fld.metadata["joins_list"]
                and isinstance(value, list)
                and all(isinstance(v, str) for v in value)
            ):
                value = ",".join(value)
            try:
                value = _coerce(value, hint, from_env=from_env)
            except ValueError as exc:
                problems.append(
                    f"{origin} = {_shown(value, secret)}: {exc}; default is {fld.default!r}"
                )
                continue
            check = fld.metadata["check"]
            reason = check(value) if check else None
            if reason:
                problems.append(
                    f"{origin} = {_shown(value, secret)}: {reason}; default is {fld.default!r}"
                )
                continue
            values[fld.name] = value
        sections[section] = cls(**values)
    mq = sections["rabbitmq"]
    if mq.instance >= mq.instances:
        problems.append(
            f"[rabbitmq] instance = {mq.instance}: must be below instances ({mq.instances}); "
            "number the processes 0 … instances - 1, or use -1 (host name hash)"
        )
    pg = sections["postgres"]
    if pg.pool_min_size > pg.pool_max_size:
        problems.append(
            f"[postgres] pool_min_size = {pg.pool_min_size}: must not exceed pool_max_size "
            f"({pg.pool_max_size}); lower it or raise pool_max_size"
        )
    rd = sections["redis"]
    if rd.sentinels and urlsplit(rd.url).scheme == "unix":
        problems.append(
            f"[redis] url = {_shown(rd.url, False)}: a unix socket cannot be reached through "
            "sentinels; use redis://[user:password@]host/db (the host is ignored) or empty "
            "sentinels"
        )
    shop = sections["shop_webhook"]
    if shop.url and not shop.secret:
        problems.append(
            "[shop_webhook] secret is empty while url is set: the shop could not tell botd's "
            "events from forged ones; set BOTD_SHOP_WEBHOOK_SECRET (make one: python3 -c "
            "'import secrets; print(secrets.token_urlsafe(32))')"
        )
    if problems:
        raise ConfigError(problems)
    return Config(**sections)


def describe(config: Config) -> list[tuple[str, str, str, str, str]]:
    """Rows (section, key, effective value, default, help) with secrets masked."""
    rows = []
    for section, cls in SECTIONS.items():
        current = getattr(config, section)
        for fld in dataclasses.fields(cls):
            secret = fld.metadata["secret"]
            rows.append(
                (
                    section,
                    fld.name,
                    _shown(getattr(current, fld.name), secret),
                    repr(fld.default),
                    fld.metadata["help"],
                )
            )
    return rows


def field_docs() -> list[tuple[str, str, Any, str, str]]:
    """(section, key, default, env var, help) for every key: the source of the README table."""
    return [
        (section, fld.name, fld.default, env_name(section, fld.name), fld.metadata["help"])
        for section, cls in SECTIONS.items()
        for fld in dataclasses.fields(cls)
    ]


def is_secret(section: str, key: str) -> bool:
    return bool({f.name: f for f in dataclasses.fields(SECTIONS[section])}[key].metadata["secret"])


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def render_toml() -> str:
    """The documented ``config.toml``: every key, its default and help (tests keep it in sync)."""
    lines = [
        "# botd configuration. Every key is shown with its default value.",
        "# Each key can be overridden by the environment as BOTD_<SECTION>_<KEY>,",
        "# e.g. BOTD_WEBHOOK_PORT=8081.",
        "# Secrets (the Chat2Desk token, the HMAC secret, the path token) belong in the",
        "# environment,",
        "# e.g. the systemd EnvironmentFile, not in this file.",
        "# Regenerate with: python -m botd.config > config.toml",
    ]
    for section, cls in SECTIONS.items():
        lines += ["", f"[{section}]"]
        for fld in dataclasses.fields(cls):
            lines.append(f"# {fld.metadata['help']} (env {env_name(section, fld.name)})")
            lines.append(f"{fld.name} = {_toml_value(fld.default)}")
    return "\n".join(lines) + "\n"


def render_markdown_table() -> str:
    """The README's table of every config key (tests keep it in sync)."""
    rows = ["| key | default | environment | meaning |", "|---|---|---|---|"]
    for section, key, default, env, help in field_docs():
        rows.append(f"| `{section}.{key}` | `{_toml_value(default)}` | `{env}` | {help} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":  # pragma: no cover
    import sys

    sys.stdout.write(render_markdown_table() if "--markdown" in sys.argv else render_toml())
