"""Processing one customer message, and the shard consumers that feed it (docs/design.md §2-3).

For each delivery, :meth:`Processor.process`:
1. loads the dialog state and the dedupe marker of the message in one Redis round trip;
2. if the marker exists, the step was done already: re-sends its replies unless they went out;
3. otherwise turns it into a dialog event (customer turn, operator message, timer — a timer
   only while the state is still the version it was set for) and calls :func:`dialog.handle`;
   carries out the transition: schedules the timer it asks for, places or cancels its order in
   PostgreSQL (idempotent by the dialog's key); commits state + marker + replies in one atomic
   Redis step (compare-and-set on the state version; a conflict reloads and runs the step again);
4. sends the replies (rate-limited, retried; what still fails is parked in the outbox), marks
   them sent, and only then is the delivery acked.

A crash anywhere before the commit redoes the whole step (the order insert finds its own row);
a crash after it finds the marker and only re-sends replies. Transient failures (a service
restarting) are retried in place with capped backoff — the message stays unacked and in order;
anything else is nacked and counts towards the queue's delivery limit, after which the broker
dead-letters it (poison message).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial

import trio

from botd import dialog, home_shards, ports
from botd.broker import Broker, Delivery, QueueWorker, Subscription
from botd.dialog.step import is_consistent, is_expired
from botd.errors import (
    DeliveryLost,
    DeliveryUnknown,
    InvalidInput,
    PermanentError,
    TransientError,
)
from botd.faults import crash_point
from botd.inbound import MessageKind, QueuedMessage, decode_queued, text_digest
from botd.liveness import ShardLiveness, deliberately_waiting
from botd.logs import mask
from botd.ports import (
    OWN_ECHO_WINDOW_SECONDS,
    OWN_EXTERNAL_ID_PREFIX,
    CancelOutcome,
    CancelResult,
    CommitResult,
    Route,
    reply_ids,
)
from botd.send_guard import Fence, SendGuards

log = logging.getLogger("botd.consumer")

MAX_CONFLICT_RETRIES = 5


TRANSIENT_BACKOFF_MAX = 5.0


@dataclass(slots=True)
class ConsumerStatistics:
    processed: int = 0
    duplicates: int = 0
    replies_resent: int = 0
    orders: int = 0
    transient_retries: int = 0
    own_echoes: int = 0
    stale_timers: int = 0
    poison: int = 0
    in_flight: int = 0
    transitions: dict[str, int] = field(default_factory=dict)
    abandoned: dict[str, int] = field(default_factory=dict)  # by the step given up at
    processing_seconds_total: float = 0.0


class Outcome(StrEnum):
    """What processing one queued message came to (a label for logs and metrics)."""

    PROCESSED = "processed"  # the dialog stepped; replies sent or parked
    DUPLICATE = "duplicate"  # processed before and its replies went out: nothing to do
    RESENT = "resent"  # processed before but its replies had not gone out: sent them again
    OWN_ECHO = "own_echo"  # the ``outbox`` webhook of a reply botd itself sent
    STALE_TIMER = "stale_timer"  # a timer set for an older state, or with nothing to do


@dataclass(frozen=True, slots=True)
class Executed:
    """One committed transition and what carrying it out gave (for observers: tools, tests)."""

    message: QueuedMessage
    transition: dialog.Transition
    replies: tuple[str, ...]  # as rendered and committed
    order_id: int | None = None  # the order placed (or found again) for ``transition.order``
    cancel: CancelResult | None = None  # what ``transition.cancel`` found


TIMER_KINDS = frozenset({MessageKind.REMINDER, MessageKind.EXPIRE})


def to_turn(msg: QueuedMessage) -> dialog.Turn:
    return dialog.Turn(
        message_id=msg.message_id,
        client_id=msg.client_id,
        text=msg.text,
        at=msg.received_at,
        media=msg.media,
        location=msg.location,
        contact_phone=msg.contact_phone,
    )


def to_event(msg: QueuedMessage) -> dialog.Event:
    """The dialog event of a queued message: an operator's message, a timer, the shop's change of
    an order's status or a customer turn. Raises InvalidInput for an order status without its
    order or status: retrying cannot complete it, so it is dead-lettered like malformed JSON."""
    if msg.kind is MessageKind.OPERATOR:
        return dialog.OperatorMessage(
            message_id=msg.message_id, client_id=msg.client_id, text=msg.text, at=msg.received_at
        )
    if msg.kind in TIMER_KINDS:
        return dialog.TimerFired(
            message_id=msg.message_id,
            client_id=msg.client_id,
            kind=dialog.TimerKind(msg.kind),
            at=msg.received_at,
        )
    if msg.kind is MessageKind.ORDER_STATUS:
        if msg.order_id is None or not msg.order_status:
            raise InvalidInput(
                f"order_status message {msg.message_id}: order_id and order_status are required"
            )
        return dialog.OrderStatusChanged(
            message_id=msg.message_id,
            client_id=msg.client_id,
            order_id=msg.order_id,
            status=msg.order_status,
            locale=msg.locale,
            at=msg.received_at,
        )
    return to_turn(msg)


def abandoned_at(
    state: dialog.DialogState | None,
    event: dialog.Event,
    transition: dialog.Transition,
    now: float,
    settings: dialog.DialogSettings,
) -> str | None:
    """The step a customer gave the order up at, when ``transition`` ends that dialog unfinished:
    the expire timer closed it, or the customer came back after the dialog TTL (the dialog
    starts over, "dialog_expired"). None otherwise (an operator's takeover is no giving up)."""
    if state is None or state.step not in dialog.WAITING_STEPS:
        return None
    if isinstance(event, dialog.TimerFired):
        ended = event.kind is dialog.TimerKind.EXPIRE and transition.state.step is dialog.Step.IDLE
    else:  # the checks dialog.step makes before it forgets an expired dialog
        ended = (
            isinstance(event, dialog.Turn)
            and is_consistent(state)
            and is_expired(state, now, settings)
        )
    return str(state.step) if ended else None


class Processor:
    """Executes one dialog step for one queued message, exactly once in effect."""

    def __init__(
        self,
        *,
        store: ports.StateStore,
        orders: ports.OrderStore,
        sender: ports.Sender,
        outbox: ports.Outbox,
        settings: dialog.DialogSettings,
        clock: Callable[[], float] = time.time,
        timers: ports.Timers | None = None,
        observer: Callable[[Executed], None] | None = None,
        guards: SendGuards | None = None,
    ) -> None:
        self._guards = guards or SendGuards(store)
        self._timers = timers
        self._store = store
        self._orders = orders
        self._sender = sender
        self._outbox = outbox
        self._settings = settings
        self._clock = clock
        self._observer = observer
        self.stats = ConsumerStatistics()

    async def process(self, msg: QueuedMessage, *, fence: Fence | None = None) -> Outcome:
        """Process ``msg`` and say what it came to. Raises on failure; :class:`DeliveryLost`
        when ``fence()`` says the delivery is no longer ours before a send (nothing is sent:
        the broker's redelivery will)."""
        event = to_event(msg)
        ids = {"message_id": msg.message_id, "client_id": msg.client_id}
        echo_digest = None
        if isinstance(event, dialog.OperatorMessage) and msg.text:
            echo_digest = text_digest(msg.text)
        for _ in range(MAX_CONFLICT_RETRIES):
            loaded = await self._store.load(msg.client_id, msg.message_id, echo_digest=echo_digest)
            crash_point("after_dedupe_check")
            if isinstance(event, dialog.OperatorMessage) and self._own_echo(msg, loaded):
                self.stats.own_echoes += 1
                return Outcome.OWN_ECHO
            if loaded.marker is not None:
                if loaded.marker.sent:
                    self.stats.duplicates += 1
                    return Outcome.DUPLICATE
                await self._deliver(
                    msg, loaded.marker.replies, loaded.outbox_pending > 0, fence, resend=True
                )
                self.stats.replies_resent += 1
                return Outcome.RESENT
            state = dialog.load_state(loaded.state) if loaded.state is not None else None
            transition = None
            now = self._clock()
            # A timer is valid only for the state it was set for: the customer wrote since?
            if not isinstance(event, dialog.TimerFired) or loaded.version == msg.version:
                transition = dialog.handle(state, event, now, self._settings)
            if transition is None:  # a stale timer, or a timer or order status with nothing to do
                if isinstance(event, dialog.OrderStatusChanged):
                    log.info(
                        "order %s of client %s is now %s: nothing to tell the customer",
                        event.order_id,
                        msg.client_id,
                        event.status,
                        extra=ids,
                    )
                self.stats.stale_timers += 1
                return Outcome.STALE_TIMER
            if transition.handoff_started:
                log.info(
                    "a human operator took over client %s; the bot stays silent",
                    msg.client_id,
                    extra=ids,
                )
            timer = None
            if transition.timer is not None and self._timers is not None:
                # For the version the commit creates; the daemon's commit keeps it with that
                # state (the in-memory timers record it here: a failed commit leaves a stale one,
                # which does nothing, and a re-run schedules the same id, deduplicated).
                timer = await self._timers.schedule(
                    msg.client_id, transition.timer, loaded.version + 1
                )
            order_id: int | None = None
            if transition.order is not None:
                order_id = await self._place(msg, transition.order)
            replies_of = transition.replies
            cancelled: CancelResult | None = None
            if transition.cancel is not None:
                cancelled = await self._cancel(msg, transition.cancel)
                order_id = cancelled.order_id
                if cancelled.outcome not in (
                    CancelOutcome.CANCELLED,
                    CancelOutcome.ALREADY_CANCELLED,
                ):
                    replies_of = transition.refused_replies
            extra = {} if order_id is None else {"order_id": str(order_id)}
            locale = transition.state.locale
            replies = tuple(dialog.render(r, locale, **extra) for r in replies_of)
            result = await self._store.commit(
                msg.client_id,
                msg.message_id,
                expected_version=loaded.version,
                state=dialog.dump_state(transition.state),
                replies=replies,
                now=self._clock(),
                # the replies go out next: their first send finds the lease taken
                lease=self._guards.lease(msg.client_id) if replies else None,
                lease_seconds=self._guards.lease_seconds,
                timer=timer,
            )
            crash_point("after_state_commit")
            if result is CommitResult.CONFLICT:
                log.info(
                    "dialog of client %s changed concurrently; running the step again",
                    msg.client_id,
                    extra=ids,
                )
                continue
            if result is CommitResult.DUPLICATE:
                continue  # processed meanwhile: the next load finds its marker
            step_name = str(transition.state.step)
            self.stats.transitions[step_name] = self.stats.transitions.get(step_name, 0) + 1
            if (gave_up := abandoned_at(state, event, transition, now, self._settings)) is not None:
                self.stats.abandoned[gave_up] = self.stats.abandoned.get(gave_up, 0) + 1
            await self._deliver(msg, replies, loaded.outbox_pending > 0, fence)
            self.stats.processed += 1
            if self._observer is not None:
                self._observer(Executed(msg, transition, replies, order_id, cancelled))
            return Outcome.PROCESSED
        raise TransientError(f"dialog of client {msg.client_id} kept changing under us")

    async def _place(self, msg: QueuedMessage, draft: dialog.OrderDraft) -> int:
        order_id = await self._orders.place(draft)
        crash_point("after_order_insert")
        self.stats.orders += 1
        log.info(
            "order %s placed for client %s (phone %s, quantity %d)",
            order_id,
            msg.client_id,
            mask(draft.phone),
            draft.quantity,
            extra={"message_id": msg.message_id, "client_id": msg.client_id},
        )
        return order_id

    async def _cancel(self, msg: QueuedMessage, cancel: dialog.OrderCancel) -> CancelResult:
        result = await self._orders.cancel(cancel.idempotency_key)
        log.info(
            "cancel of order %s for client %s: %s",
            result.order_id,
            msg.client_id,
            result.outcome,
            extra={"message_id": msg.message_id, "client_id": msg.client_id},
        )
        return result

    def _own_echo(self, msg: QueuedMessage, loaded: ports.Loaded) -> bool:
        """Is this ``outbox`` event the echo of a reply botd sent? Its id was recorded when the
        send answered; or it carries botd's external id; or botd said the same text to this
        customer within ``OWN_ECHO_WINDOW_SECONDS`` (recorded before sending, so a lost answer,
        a kill after the send or a missing id cannot make botd's own reply look like an
        operator's and silence the bot)."""
        if loaded.own_echo or (msg.external_id or "").startswith(OWN_EXTERNAL_ID_PREFIX):
            return True
        said = loaded.echo_sent_at
        return said is not None and self._clock() - said <= OWN_ECHO_WINDOW_SECONDS

    async def _deliver(
        self,
        msg: QueuedMessage,
        texts: tuple[str, ...],
        behind_outbox: bool,
        fence: Fence | None,
        *,
        resend: bool = False,
    ) -> None:
        """Send replies in order; park the rest in the outbox at the first transient failure.

        Each reply carries its stable external id (``botd-{message_id}-{index}``). While earlier
        replies to this customer wait in the outbox (``behind_outbox``), these are parked behind
        them instead of overtaking. A ``resend`` (the step was committed before, its replies may
        have gone out before a crash or a lost channel) first asks Chat2Desk which of them it
        already has and sends only the others. Before every call to Chat2Desk the guard checks
        ``fence`` and takes the customer's send lease (:mod:`botd.send_guard`).
        """
        replies = reply_ids(msg.message_id, texts)
        route = None
        if msg.transport or msg.channel_id is not None:
            route = Route(msg.transport, msg.channel_id)
        lease = self._guards.lease(msg.client_id)
        guard = self._guards.guard(lease, fence, f"message {msg.message_id}")
        own_ids: list[str] = []
        unsure = False
        try:
            if resend and replies:
                await self._store.record_sending(msg.client_id, texts, self._clock())
                try:
                    found = await self._sender.find_sent(
                        msg.client_id,
                        tuple(r.external_id for r in replies if r.external_id),
                        guard=guard,
                    )
                except TransientError:
                    found, unsure = {}, True  # can't tell now: the outbox looks each one up
                own_ids.extend(found.values())
                replies = tuple(r for r in replies if r.external_id not in found)
            if (behind_outbox or unsure) and replies:
                reason = "earlier replies pending" if behind_outbox else "chat2desk lookup failed"
                await self._outbox.park(
                    msg.client_id,
                    msg.message_id,
                    replies,
                    reason=reason,
                    route=route,
                    unsure=unsure,
                )
                replies = ()
            for i, reply in enumerate(replies):
                try:
                    own_ids.append(
                        await self._sender.send(
                            msg.client_id,
                            reply.text,
                            external_id=reply.external_id,
                            route=route,
                            guard=guard,
                        )
                    )
                except PermanentError as exc:
                    await self._outbox.dead_letter(
                        msg.client_id, msg.message_id, reply.text, reason=str(exc), attempts=1
                    )
                except TransientError as exc:
                    await self._outbox.park(
                        msg.client_id,
                        msg.message_id,
                        replies[i:],
                        reason=str(exc),
                        route=route,
                        unsure=isinstance(exc, DeliveryUnknown),
                    )
                    break
            crash_point("after_send")
            await self._store.mark_sent(msg.message_id, tuple(own_ids), lease=lease)
        except BaseException:
            await self._guards.release(lease)
            raise


class ShardConsumers:
    """One consumer task per shard queue; each handles its messages one at a time, in order."""

    def __init__(
        self,
        broker: Broker,
        processor: Processor,
        *,
        prefetch: int,
        home: frozenset[int] | None = None,
    ) -> None:
        """``home``: the shards this process should be the active consumer of (all when None,
        one process); the others are subscribed ``home_shards.STANDBY_DELAY_SECONDS`` later, at
        a lower consumer priority (botd.home_shards)."""
        self._processor = processor
        self._progress = trio.Event()
        shards = range(broker.topology.shards)
        self.home = frozenset(shards) if home is None else home
        self._stopping = trio.Event()
        self.subscribed: set[int] = set()
        self.handled = 0  # deliveries finished (acked or nacked)
        self._liveness = ShardLiveness()
        self._workers = {
            shard: QueueWorker(
                broker,
                broker.topology.shard(shard),
                partial(self._handle, shard),
                prefetch=prefetch,
                name=f"shard {shard}",
                backoff_max_seconds=TRANSIENT_BACKOFF_MAX,
                on_subscribed=partial(self._mark_subscribed, shard),
                logger=log,
            )
            for shard in shards
        }
        for shard, worker in self._workers.items():
            priority = (
                home_shards.HOME_PRIORITY if shard in self.home else home_shards.STANDBY_PRIORITY
            )
            worker.subscribe_with(**{"x-priority": priority})

    def stuck_shards(self, seconds: float) -> tuple[int, ...]:
        """Shards with no progress on their current message for more than ``seconds`` while not
        waiting on purpose (a backoff, the rate limiter): hung, not merely slow (botd.liveness)."""
        return self._liveness.stuck(seconds)

    async def wait_handled(self, count: int) -> None:
        """Wait until at least ``count`` deliveries were finished (for tools and tests)."""
        while self.handled < count:
            await self._progress.wait()

    @property
    def stats(self) -> ConsumerStatistics:
        return self._processor.stats

    def stop_taking(self) -> None:
        """Stop taking new messages; those being processed finish (see the daemon's deadline)."""
        self._stopping.set()
        for worker in self._workers.values():
            worker.stop_taking()

    def release(self, shard: int) -> None:
        """Hand ``shard`` to the consumer waiting behind this one (its home process is back)."""
        self._workers[shard].release(delay_seconds=home_shards.RELEASE_SECONDS)

    @property
    def releases(self) -> int:
        return sum(worker.releases for worker in self._workers.values())

    async def serve_shard(
        self, shard: int, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        if shard in self.home:
            await self._workers[shard].serve(task_status=task_status)
            return
        # standby: the home process subscribes first when both start together
        task_status.started()
        with trio.move_on_after(home_shards.STANDBY_DELAY_SECONDS):
            await self._stopping.wait()
        await self._workers[shard].serve()

    def _mark_subscribed(self, shard: int, subscribed: bool) -> None:
        if subscribed:
            self.subscribed.add(shard)
        else:
            self.subscribed.discard(shard)

    async def _handle(self, shard: int, sub: Subscription, delivery: Delivery) -> None:
        try:
            with self._liveness.handling(shard):
                await self._process_delivery(shard, sub, delivery)
        finally:
            self.handled += 1
            self._progress.set()
            self._progress = trio.Event()

    async def _process_delivery(self, shard: int, sub: Subscription, delivery: Delivery) -> None:
        stats = self._processor.stats
        try:
            msg = decode_queued(delivery.body)
            to_event(msg)  # what its kind needs is there (an order status names its order)
        except InvalidInput as exc:
            stats.poison += 1
            log.error(
                "shard %d: dropping malformed message to the DLQ: %s",
                shard,
                exc,
                extra={"shard": shard},
            )
            await sub.nack(delivery, requeue=False)
            return
        ids = {"message_id": msg.message_id, "client_id": msg.client_id, "shard": shard}
        started = time.perf_counter()
        backoff = 0.1
        stats.in_flight += 1
        try:
            while True:
                try:
                    outcome = await self._processor.process(msg, fence=sub.is_open)
                    break
                except DeliveryLost as exc:
                    log.warning("shard %d message %s: %s", shard, msg.message_id, exc, extra=ids)
                    return  # neither acked nor nacked: the channel is gone, the broker requeued it
                except TransientError as exc:
                    if not sub.is_open():
                        log.warning(
                            "shard %d message %s: %s, and its channel is gone; left to the "
                            "redelivery",
                            shard,
                            msg.message_id,
                            exc,
                            extra=ids,
                        )
                        return
                    stats.transient_retries += 1
                    log.warning(
                        "shard %d message %s client %s: %s; retrying in %.1fs",
                        shard,
                        msg.message_id,
                        msg.client_id,
                        exc,
                        backoff,
                        extra=ids,
                    )
                    with deliberately_waiting():
                        await trio.sleep(backoff)
                    backoff = min(backoff * 2, TRANSIENT_BACKOFF_MAX)
                except Exception:
                    stats.poison += 1
                    log.exception(
                        "shard %d message %s client %s: processing failed; back to the queue "
                        "(dead-lettered after the delivery limit)",
                        shard,
                        msg.message_id,
                        msg.client_id,
                        extra=ids,
                    )
                    await sub.nack(delivery, requeue=True)
                    return
            crash_point("before_ack")
            await sub.ack(delivery)
        finally:
            stats.in_flight -= 1
            stats.processing_seconds_total += time.perf_counter() - started
        log.debug(
            "shard %d message %s client %s: %s",
            shard,
            msg.message_id,
            msg.client_id,
            outcome,
            extra={**ids, "outcome": outcome},
        )
