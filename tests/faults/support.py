"""Fault-test helpers: real ``botd run`` processes, a reply model, service restarts.

Services are stopped and started for real (RabbitMQ app, Redis, PostgreSQL); every helper that
stops one starts it again in a ``finally`` and waits until it answers, and an autouse fixture
checks after each test that all three are up (restarting any that is not), because other
engineers share them.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import redis
import trio

from botd import dialog
from botd.config import Config
from botd.daemon import settings_of
from botd.testing.fake_chat2desk import RecordedRequest
from botd.testing.process import BotdProcess, start_botd
from tests.conftest import REDIS_URL, delete_queues
from tests.helpers import inbox_payload, post_webhook

PG_VERSION = sorted(os.listdir("/etc/postgresql"))[0] if os.path.isdir("/etc/postgresql") else "15"
REDIS_START = [
    "redis-server",
    "--daemonize",
    "yes",
    "--bind",
    "127.0.0.1",
    "-::1",
    "--port",
    "6379",
    "--save",
    "",
    "--appendonly",
    "no",
    "--dir",
    "/var/lib/redis",
    "--logfile",
    "/var/log/redis/ci.log",
]


# ---- services ----------------------------------------------------------------------------------
def _run(*cmd: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=False)


def rabbit_up() -> bool:
    return _run("rabbitmqctl", "-q", "await_startup", "--timeout", "2", timeout=30).returncode == 0


def redis_up() -> bool:
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


def pg_up() -> bool:
    return _run("pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432", timeout=10).returncode == 0


def start_rabbit() -> None:
    _run("rabbitmqctl", "-q", "start_app")
    _run("rabbitmqctl", "-q", "await_startup", "--timeout", "120", timeout=150)


def start_redis() -> None:
    os.makedirs("/var/lib/redis", exist_ok=True)
    os.makedirs("/var/log/redis", exist_ok=True)
    _run(*REDIS_START)
    deadline = time.monotonic() + 30
    while not redis_up() and time.monotonic() < deadline:
        time.sleep(0.1)


def start_pg() -> None:
    _run("pg_ctlcluster", "--skip-systemctl-redirect", PG_VERSION, "main", "start")
    deadline = time.monotonic() + 60
    while not pg_up() and time.monotonic() < deadline:
        time.sleep(0.1)


def ensure_services() -> None:
    """Start whatever of the three services does not answer (never leave one stopped)."""
    if not pg_up():
        start_pg()
    if not redis_up():
        start_redis()
    if not rabbit_up():
        start_rabbit()


@dataclass(frozen=True)
class Service:
    name: str
    stop: Callable[[], object]
    start: Callable[[], None]
    up: Callable[[], bool]


SERVICES = {
    "rabbitmq": Service(
        "rabbitmq", lambda: _run("rabbitmqctl", "-q", "stop_app"), start_rabbit, rabbit_up
    ),
    "redis": Service(
        "redis",
        lambda: _run("redis-cli", "-h", "127.0.0.1", "-p", "6379", "shutdown", "nosave"),
        start_redis,
        redis_up,
    ),
    "postgres": Service(
        "postgres",
        lambda: _run(
            "pg_ctlcluster", "--skip-systemctl-redirect", PG_VERSION, "main", "stop", "-m", "fast"
        ),
        start_pg,
        pg_up,
    ),
}


@asynccontextmanager
async def service_down(name: str) -> AsyncIterator[None]:
    """Stop ``name`` for the body of the ``async with``; always start it again afterwards."""
    service = SERVICES[name]
    try:
        await trio.to_thread.run_sync(service.stop)
        yield
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(service.start)
            await trio.to_thread.run_sync(ensure_services)


# ---- configuration and processes -------------------------------------------------------------
@dataclass
class Botds:
    """``botd run`` processes of one test; whatever still runs is killed when the test ends."""

    nursery: trio.Nursery
    config: Config
    procs: list[BotdProcess] = field(default_factory=list)

    async def start(self, config: Config | None = None, **env: str) -> BotdProcess:
        proc = await start_botd(self.nursery, config or self.config, extra_env=env)
        self.procs.append(proc)
        return proc


@asynccontextmanager
async def botds(config: Config) -> AsyncIterator[Botds]:
    async with trio.open_nursery() as nursery:
        group = Botds(nursery, config)
        try:
            yield group
        finally:
            with trio.CancelScope(shield=True):
                for proc in group.procs:
                    if proc.process.returncode is None:
                        proc.kill9()
                    with trio.move_on_after(10):
                        await proc.process.wait()
                await delete_queues(config)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time consumed so far by process ``pid``."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def wait_status(
    http: httpx.AsyncClient, url: str, path: str, status: int, *, timeout: float = 60
) -> float:
    """Poll ``GET url+path`` (0.1 s steps) until it answers ``status``; return the time it took."""
    started = trio.current_time()
    with trio.fail_after(timeout):
        while True:
            try:
                if (await http.get(url + path, timeout=5)).status_code == status:
                    return trio.current_time() - started
            except httpx.HTTPError:
                pass
            await trio.sleep(0.1)


# ---- replies and the dialog model --------------------------------------------------------------
class Replies:
    """Delivered replies per customer as the fake records them (installed as ``on_record``)."""

    def __init__(self) -> None:
        self.texts: dict[str, list[str]] = defaultdict(list)
        self.times: dict[str, list[float]] = defaultdict(list)
        self._changed: dict[str, trio.Event] = defaultdict(trio.Event)
        self.any_changed = trio.Event()

    def __call__(self, record: RecordedRequest) -> None:
        if record.delivered and record.visible and record.client_id is not None:
            cid = record.client_id
            self.texts[cid].append(str(record.body.get("text")))
            self.times[cid].append(record.monotonic)
            self._changed[cid].set()
            self._changed[cid] = trio.Event()
            self.any_changed.set()
            self.any_changed = trio.Event()

    def count(self, cid: int | str) -> int:
        return len(self.texts[str(cid)])

    async def wait(self, cid: int | str, n: int, *, timeout: float = 20) -> list[str]:
        key = str(cid)
        with trio.fail_after(timeout):
            while len(self.texts[key]) < n:
                await self._changed[key].wait()
        return self.texts[key]


ORDER_ID = "{order_id}"


class DialogModel:
    """The pure dialog of one customer, to know each turn's exact replies in advance."""

    def __init__(self, config: Config, client_id: int | str) -> None:
        self._settings = settings_of(config)
        self._client = str(client_id)
        self.state: dialog.DialogState | None = None
        self.orders: list[dialog.OrderDraft] = []

    def turn(self, text: str, message_id: int | str = 0) -> tuple[str, ...]:
        """Replies of the next turn; ``{order_id}`` stands for the order's number."""
        now = time.time()
        turn = dialog.Turn(message_id=str(message_id), client_id=self._client, text=text, at=now)
        transition = dialog.handle(self.state, turn, now, self._settings)
        assert transition is not None  # None only for a timer event
        self.state = transition.state
        extra: dict[str, str] = {}
        if transition.order is not None:
            self.orders.append(transition.order)
            extra["order_id"] = ORDER_ID
        return tuple(dialog.render(r, transition.state.locale, **extra) for r in transition.replies)


def fill_order_ids(expected: Sequence[str], order_ids: Sequence[int]) -> list[str]:
    """Replace each ``{order_id}`` in turn with the ids actually given, in order."""
    ids = iter(order_ids)
    out = []
    for text in expected:
        if ORDER_ID in text:
            text = text.replace(ORDER_ID, str(next(ids, "?")))
        out.append(text)
    return out


def dialog_texts(n: int, variant: int = 0) -> tuple[str, ...]:
    """A happy-path dialog whose order values identify ``variant`` (address and quantity)."""
    return (
        "Здравствуйте, хочу заказать воду",
        f"ул. Токтогула {100 + variant % 900}, кв. {n}",
        f"0555 {variant % 1000:03d} {n % 1000:03d}",
        str(variant % 50 + 1),
        "да",
    )


async def say(
    http: httpx.AsyncClient, url: str, cid: int | str, text: str, *, message_id: int | None = None
) -> dict[str, Any]:
    """Post one customer message; assert it was queued (200 only after the broker's confirm)."""
    body = inbox_payload(cid, text, message_id=message_id)
    response = await post_webhook(http, url, body, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "queued"}, response.text
    return body


def orders_by_client(dsn: str) -> dict[str, list[dict[str, Any]]]:
    with psycopg.connect(dsn) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute("SELECT * FROM orders ORDER BY id")
        rows = cur.fetchall()
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        out[str(row["chat2desk_client_id"])].append(row)
    return out


# ---- customers driving dialogs (tolerant of at-least-once re-sent replies) ----------------------
def _same(text: str, expected: str) -> bool:
    if ORDER_ID not in expected:
        return text == expected
    head, tail = expected.split(ORDER_ID, 1)
    middle = text[len(head) : len(text) - len(tail)]
    return text.startswith(head) and text.endswith(tail) and middle.isdigit()


def _consume_block(
    texts: Sequence[str], i: int, block: Sequence[str], turn: int
) -> tuple[int, int | None]:
    """(start, end) of ``block`` matched at ``i``, skipping partial sends of it that a crash cut
    short and a redelivery repeated (``texts[i:start]``); end is None when the texts end inside
    it."""
    while True:
        k = 0
        while k < len(block) and i + k < len(texts) and _same(texts[i + k], block[k]):
            k += 1
        if k == len(block):
            return i, i + k
        if i + k >= len(texts):
            return i, None
        if k > 0 and _same(texts[i + k], block[0]):
            i += k  # the first k replies went out, then the whole block again
            continue
        raise AssertionError(
            f"reply {i + k} differs at turn {turn}: got {texts[i + k]!r}, want {block[k]!r}"
            f"\nall replies: {list(texts)!r}"
        )


@dataclass(frozen=True)
class ReplyMatch:
    """Delivered replies matched against a dialog model (:func:`match_replies`)."""

    complete: bool  # every turn got all its replies
    resent: int  # blocks delivered again, whole or cut short, right after themselves
    extra: tuple[int, ...]  # indices of the delivered texts that repeat a reply (re-sends)


def match_replies(texts: Sequence[str], blocks: Sequence[Sequence[str]]) -> ReplyMatch:
    """Match delivered ``texts`` against the expected reply ``blocks`` (one per turn, in order).

    A block may be re-sent, whole or cut short by a crash, right after itself (a redelivery
    re-sends replies: at-least-once); every such re-sent text is in ``extra``. Raises
    AssertionError at the first text that differs from the model: a reply out of turn order, a
    different answer or a reply of another turn.
    """
    i = resent = 0
    extra: list[int] = []
    for n, block in enumerate(blocks):
        if not block:
            continue
        nxt = blocks[n + 1] if n + 1 < len(blocks) else None
        start, end = _consume_block(texts, i, block, n)
        extra.extend(range(i, start))
        if end is None:
            return ReplyMatch(False, resent, tuple(extra))
        i = end
        while (
            i < len(texts) and _same(texts[i], block[0]) and not (nxt and _same(texts[i], nxt[0]))
        ):
            _, end = _consume_block(texts, i, block, n)
            extra.extend(range(i, len(texts) if end is None else end))
            if end is None:
                return ReplyMatch(False, resent, tuple(extra))
            resent += 1
            i = end
    if i < len(texts):
        raise AssertionError(f"unexpected replies after the last turn: {list(texts[i:])!r}")
    return ReplyMatch(True, resent, tuple(extra))


def match_blocks(texts: Sequence[str], blocks: Sequence[Sequence[str]]) -> tuple[bool, int]:
    """(complete, re-sent blocks) of :func:`match_replies`; raises AssertionError like it."""
    match = match_replies(texts, blocks)
    return match.complete, match.resent


async def post_until_queued(
    http: httpx.AsyncClient, url: str | Callable[[], str], body: dict[str, Any], *, timeout: float
) -> int:
    """Post like Chat2Desk does: retry on 503 or a refused connection until 200 queued.

    Returns the number of 503/refused answers seen. Retries are 0.1 s apart (polling the
    external broker's availability), bounded by ``timeout``.
    """
    refused = 0
    with trio.fail_after(timeout):
        while True:
            target = url() if callable(url) else url
            try:
                response = await post_webhook(http, target, body, timeout=10)
            except httpx.HTTPError:
                response = None
            if response is not None and response.status_code == 200:
                assert response.json() == {"status": "queued"}, response.text
                return refused
            assert response is None or response.status_code == 503, response.text
            refused += 1
            await trio.sleep(0.1)


@dataclass
class Customer:
    """One simulated customer: a model of its dialog and the reply blocks it must get."""

    cid: int
    model: DialogModel
    blocks: list[tuple[str, ...]] = field(default_factory=list)
    sent: int = 0  # messages answered 200 queued
    done_dialogs: int = 0


class Traffic:
    """Customers completing dialogs through botd, paced (each turn waits for its replies)."""

    def __init__(
        self,
        config: Config,
        replies: Replies,
        url: str | Callable[[], str],
        *,
        reply_timeout: float = 60,
    ) -> None:
        self.config = config
        self.replies = replies
        self.url = url
        self.reply_timeout = reply_timeout
        self.customers: dict[int, Customer] = {}
        self.refused = 0
        self.stop = False

    def customer(self, cid: int) -> Customer:
        if cid not in self.customers:
            self.customers[cid] = Customer(cid, DialogModel(self.config, cid))
        return self.customers[cid]

    async def wait_replies(self, c: Customer) -> None:
        key = str(c.cid)
        with trio.fail_after(self.reply_timeout):
            while not match_blocks(self.replies.texts[key], c.blocks)[0]:
                await self.replies.wait(key, len(self.replies.texts[key]) + 1, timeout=math.inf)

    async def turn(self, http: httpx.AsyncClient, c: Customer, text: str) -> None:
        body = inbox_payload(c.cid, text)
        c.blocks.append(c.model.turn(text, body["message_id"]))
        refused = await post_until_queued(http, self.url, body, timeout=self.reply_timeout)
        self.refused += refused
        c.sent += 1
        await self.wait_replies(c)

    async def dialogs(self, http: httpx.AsyncClient, cid: int, count: int | None) -> None:
        """Run ``count`` dialogs (or until ``stop``) for customer ``cid``."""
        c = self.customer(cid)
        n = 0
        while (count is None and not self.stop) or (count is not None and n < count):
            for text in dialog_texts(n, cid):
                await self.turn(http, c, text)
            c.done_dialogs += 1
            n += 1

    def audit(self) -> dict[str, int]:
        """Compare every customer's replies and orders with its model."""
        rows = orders_by_client(self.config.postgres.dsn)
        result = {"customers": 0, "messages": 0, "resent_blocks": 0, "orders_expected": 0}
        result |= {"orders_found": 0, "orders_wrong": 0, "orders_doubled": 0}
        for c in self.customers.values():
            complete, resent = match_blocks(self.replies.texts[str(c.cid)], c.blocks)
            assert complete, f"customer {c.cid}: replies missing"
            got = [
                (r["delivery_address"], r["client_phone"], r["quantity"])
                for r in rows.get(str(c.cid), [])
            ]
            want = [(d.address, d.phone, d.quantity) for d in c.model.orders]
            result["customers"] += 1
            result["messages"] += c.sent
            result["resent_blocks"] += resent
            result["orders_expected"] += len(want)
            result["orders_found"] += len(got)
            result["orders_doubled"] += max(0, len(got) - len(want))
            result["orders_wrong"] += sum(g != w for g, w in zip(got, want, strict=False))
            result["orders_wrong"] += max(0, len(want) - len(got))
        return result


# ---- log lines of several processes ---------------------------------------------------------
OUTCOME = re.compile(r"shard (\d+) message (\d+) client (\d+): (processed|duplicate|resent)")


def outcomes(procs: Sequence[BotdProcess]) -> list[tuple[int, str, str, str, int]]:
    """(shard, message_id, client_id, outcome, process index) of every handled delivery
    (DEBUG log lines, in the order each process logged them)."""
    found = []
    for n, proc in enumerate(procs):
        for line in proc.lines:
            if m := OUTCOME.search(line):
                found.append((int(m[1]), m[2], m[3], m[4], n))
    return found


async def wait_outcomes(procs: Sequence[BotdProcess], n: int, *, timeout: float = 30) -> None:
    """Wait until the processes together logged ``n`` handled deliveries."""

    async def changed(proc: BotdProcess, scope: trio.CancelScope) -> None:
        await proc._changed.wait()
        proc._changed = trio.Event()
        scope.cancel()

    with trio.fail_after(timeout):
        while len(outcomes(procs)) < n:
            async with trio.open_nursery() as nursery:
                for proc in procs:
                    nursery.start_soon(changed, proc, nursery.cancel_scope)
