"""Chaos run: customers complete dialogs while botd processes are kill -9'd and services restart.

Two ``botd run`` processes (active + hot standby) serve simulated customers, each completing
dialogs turn by turn (posting like Chat2Desk: retry on 503 or a refused connection). Meanwhile a
chaos task, one action at a time, kill -9s a random botd process and starts a replacement,
restarts the RabbitMQ application or restarts PostgreSQL. (Redis is not restarted: it runs
without persistence here, so its restart loses dialogs in progress by design — proven
separately in tests/faults/test_service_restarts.py.)

A second schedule, with its own seeded random stream, troubles the fake Chat2Desk at the same
time: periods of slow-accepting sends (stored at once, answered just after botd's
``chat2desk.timeout_seconds``) and single sends stored but answered 502. The fake posts an
``outbox`` echo of every delivered message to a live botd's webhook, before or after the send's
answer (chosen per period), as Chat2Desk does for the bot's own messages.

At the end all faults are switched off and the customers finish the dialog they are in (bounded
by ``settle_seconds``). Once every echo is in, each customer sends one more message (a probe,
queued behind its echoes) that must be answered. Every customer is then audited against a model
of its dialog: replies exactly as modelled in turn order, none delivered twice (by external id,
or the same reply again where the model has it once), the last message answered, the dialog
not handed off to an operator (an echo of botd's own reply mistaken for one), and exactly one
order per confirmed dialog, with its values.

    scripts/chaos [--seconds 150] [--customers 16] [--seed N]
    scripts/chaos pytest          # runs `pytest -m slow tests` instead
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import httpx
import redis
import trio

from botd import dialog
from botd.config import Config
from botd.testing.fake_chat2desk import FakeChat2Desk, open_fake_chat2desk
from botd.webapp import WEBHOOK_PATH
from tests.faults.support import (
    Botds,
    Replies,
    Traffic,
    botds,
    dialog_texts,
    match_replies,
    orders_by_client,
    service_down,
)

SLOW_ACCEPT_MARGIN_SECONDS = 0.5  # slow accepts answer this long after botd's send timeout
ECHO_TIMEOUT_SECONDS = 3.0  # one echo POST to botd's webhook (the fake tries 4 times)
ECHO_SETTLE_SECONDS = 20.0  # at the end, for the last echoes to be posted or given up
PROBE_SECONDS = 30.0  # at the end, for the probe message to be answered
HANDOFF_LOG = re.compile(r"took over client (\d+)")


@dataclass
class ChaosReport:
    seed: int = 0
    dialogs_started: int = 0
    orders_expected: int = 0
    orders_found: int = 0
    lost: int = 0
    doubled: int = 0
    replies_missing: int = 0
    order_violations: int = 0
    duplicate_replies: int = 0
    customers_unanswered: int = 0
    handoffs: int = 0
    messages: int = 0
    resent_blocks: int = 0
    kills: int = 0
    restarts: dict[str, int] = field(default_factory=dict)
    slow_periods: int = 0
    slow_seconds: float = 0.0
    slow_answer_seconds: float = 0.0
    fails_queued: int = 0  # accept_then_fail 502s scheduled
    fails_hit: int = 0  # sends stored and answered 502
    echo_periods: int = 0
    echo_before_periods: int = 0  # periods whose echoes came before the send's answer
    echoes_posted: int = 0
    echo_failures: int = 0  # no live webhook took the echo (not botd's fault)
    last_echo_error: str | None = None
    settle_seconds: float = 0.0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        echo_error = f" (last: {self.last_echo_error})" if self.echo_failures else ""
        return [
            f"chaos run: {self.seconds:.0f}s (seed {self.seed}, settled in "
            f"{self.settle_seconds:.0f}s), {self.messages} customer messages, botd kill -9 "
            f"x{self.kills}, service restarts {self.restarts or '{}'}",
            f"chat2desk faults: slow accepts x{self.slow_periods} ({self.slow_seconds:.0f}s, "
            f"answered after {self.slow_answer_seconds:g}s), 502 after accept x{self.fails_hit} "
            f"({self.fails_queued} scheduled), echoes before the answer in "
            f"{self.echo_before_periods} of {self.echo_periods} periods",
            f"echoes: {self.echoes_posted} posted, {self.echo_failures} failed{echo_error} "
            "(a failed echo found no live webhook to take it: not botd's fault)",
            f"dialogs started        {self.dialogs_started}",
            f"orders expected        {self.orders_expected}",
            f"orders found           {self.orders_found}",
            f"lost                   {self.lost}",
            f"doubled                {self.doubled}",
            f"replies missing        {self.replies_missing}",
            f"order violations       {self.order_violations}",
            f"duplicate replies      {self.duplicate_replies}",
            f"customers unanswered   {self.customers_unanswered}",
            f"handoffs               {self.handoffs}",
            f"(re-sent reply blocks  {self.resent_blocks}: their replies count as duplicates)",
            *self.problems[:10],
        ]

    @property
    def ok(self) -> bool:
        zero = (
            self.lost,
            self.doubled,
            self.replies_missing,
            self.order_violations,
            self.duplicate_replies,
            self.customers_unanswered,
            self.handoffs,
        )
        return not any(zero) and self.orders_found == self.orders_expected


# ---- the audit of one customer (pure: tested in tests/test_chaos_audit.py) --------------------
@dataclass(frozen=True)
class RepliesAudit:
    """One customer's delivered replies against the model of its dialog."""

    complete: bool  # every message got all its replies
    resent_blocks: int
    duplicates: tuple[str, ...]  # the text of every extra delivery
    unanswered: bool  # the last message got no reply at all
    violation: str | None  # how the replies differ from the model (order, text, another turn's)


def audit_replies(
    delivered: Sequence[tuple[str, str | None]], blocks: Sequence[Sequence[str]]
) -> RepliesAudit:
    """Audit the ``(text, external_id)`` delivered to one customer, in delivery order, against
    the reply ``blocks`` its dialog model expected (one per message sent).

    A duplicate is each further delivery of an external id (what
    ``FakeChat2Desk.duplicate_deliveries()`` counts), plus each reply the model matching finds
    delivered again right after itself (a re-sent block, whole or cut short) whose external id
    is absent or was delivered only once — so nothing is counted twice. The customer is
    unanswered when its replies end exactly after the replies of all but its last message.
    """
    texts = [text for text, _ in delivered]
    ids = Counter(external for _, external in delivered if external is not None)
    duplicates: list[str] = []
    seen: set[str] = set()
    for text, external in delivered:
        if external in seen:
            duplicates.append(text)
        elif external is not None:
            seen.add(external)
    try:
        match = match_replies(texts, blocks)
    except AssertionError as exc:
        return RepliesAudit(False, 0, tuple(duplicates), False, str(exc))
    for i in match.extra:
        external = delivered[i][1]
        if external is None or ids[external] == 1:
            duplicates.append(texts[i])
    unanswered = False
    if not match.complete and blocks and blocks[-1]:
        try:
            unanswered = match_replies(texts, blocks[:-1]).complete
        except AssertionError:
            unanswered = False  # some of the last message's replies came
    return RepliesAudit(match.complete, match.resent, tuple(duplicates), unanswered, None)


def dialog_step(raw_state: bytes | str | None) -> str | None:
    """The step of a dialog state as stored in Redis (``dialog:{client}`` field ``s``)."""
    if not raw_state:
        return None
    try:
        data = json.loads(raw_state)
    except ValueError:
        return None
    state = dialog.load_state(data)
    return None if state is None else str(state.step)


def handoffs_logged(lines: Iterable[str]) -> set[str]:
    """Clients whose hand-off to an operator botd logged (INFO: "… took over client N …")."""
    return {m[1] for line in lines if (m := HANDOFF_LOG.search(line))}


def handoffs_stored(config: Config, client_ids: Iterable[int | str]) -> set[str]:
    """Clients whose dialog in Redis is in the ``handoff`` step."""
    client = redis.Redis.from_url(config.redis.url)
    try:
        return {
            str(cid)
            for cid in client_ids
            if dialog_step(client.hget(f"{config.redis.key_prefix}dialog:{cid}", "s"))
            == str(dialog.Step.HANDOFF)
        }
    finally:
        client.close()


async def run_chaos(
    config: Config,
    replies: Replies,
    fake: FakeChat2Desk,
    *,
    seconds: float,
    customers: int,
    seed: int = 1,
    services: tuple[str, ...] = ("rabbitmq", "postgres"),
    settle_seconds: float = 60.0,
    say: Callable[[str], None] = print,
) -> ChaosReport:
    """Run the chaos for ``seconds`` against ``fake`` (whose ``on_record`` is ``replies``), then
    settle, probe and audit (see the module's docstring)."""
    rng = random.Random(seed)
    chat2desk_rng = random.Random(f"chat2desk {seed}")  # own stream: kills and restarts unchanged
    report = ChaosReport(seed=seed)
    started_at = time.monotonic()

    def note(event: str) -> None:
        say(f"[{time.monotonic() - started_at:5.1f}s] {event}")

    async with botds(config) as group, httpx.AsyncClient() as http:
        await group.start()
        await group.start()
        killed: set[int] = set()  # pids kill -9'd, maybe not reaped yet (returncode still None)

        def url() -> str:
            live = [
                p
                for p in group.procs
                if p.process.returncode is None and p.process.pid not in killed
            ]
            return (live[-1] if live else group.procs[-1]).url

        echo_before = False

        def point_echoes() -> None:
            """Echo every delivery to a live botd's webhook (again after each kill and start)."""
            target = url() + WEBHOOK_PATH
            if config.webhook.path_token:
                target += f"/{config.webhook.path_token}"
            fake.echo_to(
                target,
                before_answer=echo_before,
                hmac_secret=config.webhook.hmac_secret,
                hmac_header=config.webhook.hmac_header,
                timeout_seconds=ECHO_TIMEOUT_SECONDS,
            )

        point_echoes()
        traffic = Traffic(config, replies, url, reply_timeout=120)
        started: dict[int, int] = {}
        finished: list[int] = []  # customers that stopped after a whole dialog

        async def customer(cid: int) -> None:
            c = traffic.customer(cid)
            n = 0
            try:
                while not traffic.stop:
                    started[cid] = started.get(cid, 0) + 1
                    for text in dialog_texts(n, cid):
                        await traffic.turn(http, c, text)
                    n += 1
                finished.append(cid)
            except AssertionError as exc:  # the model and the replies disagree: stop this one
                report.problems.append(f"customer {cid}: {exc}")
            except trio.TooSlowError:
                report.problems.append(f"customer {cid}: replies did not come in time")

        async def chaos(group: Botds) -> None:
            while time.monotonic() - started_at < seconds - 10:
                await trio.sleep(rng.uniform(3, 6))  # pace of faults (a schedule, not a sync)
                action = rng.choice(["kill", "kill", *services])
                if action == "kill":
                    live = [p for p in group.procs if p.process.returncode is None]
                    victim = rng.choice(live)
                    victim.kill9()
                    killed.add(victim.process.pid)
                    point_echoes()  # to the survivor
                    await victim.wait_exit()
                    report.kills += 1
                    note(f"kill -9 botd pid {victim.process.pid}")
                    await group.start()
                    point_echoes()
                else:
                    note(f"restarting {action}")
                    async with service_down(action):
                        await trio.sleep(rng.uniform(1, 3))
                    report.restarts[action] = report.restarts.get(action, 0) + 1

        async def chat2desk_chaos() -> None:
            """Periods with echoes before or after the send's answer, each ending in a fault."""
            nonlocal echo_before
            slow = config.chat2desk.timeout_seconds + SLOW_ACCEPT_MARGIN_SECONDS
            report.slow_answer_seconds = slow
            while time.monotonic() - started_at < seconds - 10:
                echo_before = chat2desk_rng.random() < 0.5
                point_echoes()
                report.echo_periods += 1
                report.echo_before_periods += int(echo_before)
                note(f"echoes {'before' if echo_before else 'after'} the send's answer")
                await trio.sleep(chat2desk_rng.uniform(2, 5))
                if chat2desk_rng.random() < 2 / 3:
                    period = chat2desk_rng.uniform(1.5, 4)
                    note(f"chat2desk accepts slowly for {period:.1f}s (answers after {slow:g}s)")
                    fake.set_accept_slowly(slow)
                    try:
                        await trio.sleep(period)
                    finally:
                        fake.set_accept_slowly(None)
                    report.slow_periods += 1
                    report.slow_seconds += period
                else:
                    n = chat2desk_rng.randint(1, 3)
                    note(f"chat2desk stores the next {n} sends but answers them 502")
                    fake.accept_then_fail_next(n)
                    report.fails_queued += n

        async with trio.open_nursery() as nursery:
            for i in range(customers):
                nursery.start_soon(customer, 900_001 + i * 13)
            async with trio.open_nursery() as faults:
                faults.start_soon(chat2desk_chaos)
                await chaos(group)
            with trio.move_on_after(max(0.0, seconds - (time.monotonic() - started_at))):
                await trio.sleep_forever()
            fake.clear_faults()  # slow accepts off, pending 502s dropped; echoes go on
            settle_from = time.monotonic()
            note(f"faults off; customers finish the dialog they are in (<= {settle_seconds:g}s)")
            traffic.stop = True
            nursery.cancel_scope.deadline = trio.current_time() + settle_seconds
        if nursery.cancel_scope.cancelled_caught:
            report.problems.append(
                f"settle: customers still waited for replies after {settle_seconds:g}s"
            )

        # Every delivery's echo posted (or given up) before the probes: each customer's probe
        # is queued behind its echoes, so it is answered only if none of them handed off.
        with trio.move_on_after(ECHO_SETTLE_SECONDS) as echo_wait:
            await fake.wait_for_echoes(fake.statistics().delivered)
        if echo_wait.cancelled_caught:
            report.problems.append(
                f"settle: echoes still in flight after {ECHO_SETTLE_SECONDS:g}s (the probes may "
                "overtake them)"
            )
        fake.echo_to(None)
        note(f"probing {len(finished)} customers")

        async def probe(cid: int) -> None:
            try:
                with trio.move_on_after(PROBE_SECONDS):
                    await traffic.turn(http, traffic.customer(cid), dialog_texts(0, cid)[0])
            except AssertionError as exc:
                report.problems.append(f"customer {cid} (probe): {exc}")

        async with trio.open_nursery() as probes:
            for cid in finished:
                probes.start_soon(probe, cid)
        report.settle_seconds = time.monotonic() - settle_from

    report.seconds = time.monotonic() - started_at
    report.echoes_posted, report.echo_failures = fake.echoes_posted, fake.echo_failures
    report.last_echo_error = fake.last_echo_error
    report.fails_hit = sum(1 for r in fake.requests if r.delivered and r.status == 502)
    handed_off = handoffs_stored(config, traffic.customers) | handoffs_logged(
        line for p in group.procs for line in p.lines
    )
    rows = orders_by_client(config.postgres.dsn)
    for c in traffic.customers.values():
        report.dialogs_started += started.get(c.cid, 0)
        report.messages += c.sent
        delivered = [
            (str(m["text"]), m["external_id"])
            for m in fake.stored_messages(c.cid)
            if m["type"] != "comment"  # the order's internal note (docs/orders.md) is no reply
        ]
        audit = audit_replies(delivered, c.blocks)
        report.resent_blocks += audit.resent_blocks
        if audit.violation is not None:
            report.order_violations += 1
            report.problems.append(f"customer {c.cid}: {audit.violation.splitlines()[0]}")
        elif not audit.complete:
            report.replies_missing += 1
        if audit.duplicates:
            report.duplicate_replies += len(audit.duplicates)
            report.problems.append(
                f"customer {c.cid}: {len(audit.duplicates)} replies delivered again, first "
                f"{audit.duplicates[0]!r}"
            )
        if audit.unanswered:
            report.customers_unanswered += 1
            queued = "answered 'queued'" if c.sent == len(c.blocks) else "never queued"
            report.problems.append(
                f"customer {c.cid}: no reply to its last message ({queued}) by the end"
            )
        if str(c.cid) in handed_off:
            report.handoffs += 1
            report.problems.append(
                f"customer {c.cid}: dialog handed off to an operator (botd took an echo of its "
                "own reply for an operator's message?)"
            )
        got = [
            (r["delivery_address"], r["client_phone"], r["quantity"])
            for r in rows.get(str(c.cid), [])
        ]
        want = [(d.address, d.phone, d.quantity) for d in c.model.orders]
        report.orders_expected += len(want)
        report.orders_found += len(got)
        report.lost += sum(1 for w in want if w not in got)
        report.doubled += sum(max(0, got.count(w) - 1) for w in set(got))
        report.order_violations += sum(1 for g, w in zip(got, want, strict=False) if g != w)
    return report


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=150)
    parser.add_argument("--customers", type=int, default=16)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    from bench.common import bench_config

    print(f"seed {args.seed}", flush=True)
    async with open_fake_chat2desk(token="test-token") as fake:
        replies = Replies()
        fake.on_record = replies
        async with bench_config(
            fake.base_url,
            BOTD_RABBITMQ_SHARDS="4",
            BOTD_RABBITMQ_RECONNECT_MAX_SECONDS="2",
            BOTD_CHAT2DESK_TIMEOUT_SECONDS="1",  # slow accepts then cost ~1.5 s each
            BOTD_LOG_LEVEL="INFO",  # hand-offs are logged at INFO (the audit reads them)
        ) as config:
            report = await run_chaos(
                config,
                replies,
                fake,
                seconds=args.seconds,
                customers=args.customers,
                seed=args.seed,
                say=lambda s: print(s, flush=True),
            )
    print("\n".join(report.lines()))
    raise SystemExit(0 if report.ok else 1)


if __name__ == "__main__":
    trio.run(main)
