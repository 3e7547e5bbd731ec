"""Prometheus metrics: live counters of the webhook, and component ``statistics()`` read at scrape.

Each daemon owns its own registry (two daemons in one test process do not collide).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from botd import __version__
from botd.dialog import WAITING_STEPS
from botd.histogram import HistogramSnapshot

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _histogram(name: str, documentation: str, h: HistogramSnapshot) -> HistogramMetricFamily:
    buckets = [(str(float(le)), n) for le, n in zip(h.bounds, h.cumulative, strict=True)]
    buckets.append(("+Inf", h.count))
    return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=h.total)


class _SnapshotCollector(Collector):
    """Turns the components' statistics into metric families at scrape time."""

    def __init__(self, source: Callable[[], dict[str, Any]]) -> None:
        self._source = source

    def collect(self) -> Iterable[Metric]:
        s = self._source()
        yield InfoMetricFamily("botd_build", "botd version", value={"version": __version__})
        if not s:
            return
        c = s["consumer"]
        processed = CounterMetricFamily(
            "botd_messages_processed", "Customer messages processed, by outcome", labels=["outcome"]
        )
        processed.add_metric(["processed"], c.processed)
        processed.add_metric(["duplicate"], c.duplicates)
        processed.add_metric(["resent"], c.replies_resent)
        processed.add_metric(["poison"], c.poison)
        yield processed
        yield CounterMetricFamily(
            "botd_duplicates_suppressed", "Messages already processed (dedupe)", value=c.duplicates
        )
        yield CounterMetricFamily("botd_orders_created", "Orders created", value=c.orders)
        yield CounterMetricFamily(
            "botd_processing_retries",
            "Transient failures retried while processing",
            value=c.transient_retries,
        )
        yield CounterMetricFamily(
            "botd_processing_seconds",
            "Total time spent processing messages",
            value=c.processing_seconds_total,
        )
        yield GaugeMetricFamily(
            "botd_messages_in_flight", "Messages being processed now", value=c.in_flight
        )
        transitions = CounterMetricFamily(
            "botd_dialog_transitions", "Dialog steps reached", labels=["step"]
        )
        for step, n in sorted(c.transitions.items()):
            transitions.add_metric([step], n)
        yield transitions
        abandoned = CounterMetricFamily(
            "botd_dialogs_abandoned",
            "Dialogs the customer gave up (closed by the expire timer, or found past the TTL), "
            "by the step they stopped at",
            labels=["step"],
        )
        for step, n in ({str(w): 0 for w in WAITING_STEPS} | c.abandoned).items():
            abandoned.add_metric([step], n)
        yield abandoned
        orders = s["orders"]
        yield CounterMetricFamily(
            "botd_orders_placed", "Orders placed by customers (each once)", value=orders.placed
        )
        yield CounterMetricFamily(
            "botd_orders_cancelled",
            "Orders cancelled by the customer from the chat",
            value=orders.cancelled,
        )
        yield _histogram(
            "botd_order_from_first_message_seconds",
            "Time from the customer's first message of the dialog to the order placed",
            orders.from_first_message,
        )
        snd = s["sender"]
        sends = CounterMetricFamily("botd_sends", "Chat2Desk sends, by result", labels=["result"])
        sends.add_metric(["ok"], snd.sent_ok)
        sends.add_metric(["retried"], snd.retried)
        sends.add_metric(["failed_transient"], snd.failed_transient)
        sends.add_metric(["failed_permanent"], snd.failed_permanent)
        sends.add_metric(["reconciled"], snd.reconciled)
        yield sends
        yield CounterMetricFamily(
            "botd_chat2desk_lookups",
            "GET /messages calls made to learn whether a send with an unknown outcome went out",
            value=snd.lookups,
        )
        yield GaugeMetricFamily(
            "botd_chat2desk_auth_failing",
            "1 while Chat2Desk refuses the token (sending paused, replies kept in the outbox)",
            value=int(snd.auth_failing),
        )
        yield CounterMetricFamily(
            "botd_chat2desk_rate_limited",
            "Rate-limit answers from Chat2Desk",
            value=snd.rate_limited,
        )
        lim = s["limiter"]
        yield CounterMetricFamily(
            "botd_limiter_wait_seconds",
            "Time senders waited for the rate limiter",
            value=lim.total_wait_seconds,
        )
        yield GaugeMetricFamily(
            "botd_limiter_waiting", "Senders waiting for the rate limiter", value=lim.waiting
        )
        ob = s["outbox"]
        outbox = CounterMetricFamily("botd_outbox_events", "Outbox events", labels=["event"])
        outbox.add_metric(["parked"], ob.parked)
        outbox.add_metric(["delivered"], ob.delivered)
        outbox.add_metric(["retried"], ob.retried)
        outbox.add_metric(["dead_lettered"], ob.dead_lettered)
        outbox.add_metric(["orphan_dropped"], ob.orphans_dropped)
        yield outbox
        yield GaugeMetricFamily(
            "botd_outbox_oldest_pending_seconds",
            "Age of the oldest reply still waiting in the outbox, across customers (0: none)",
            value=ob.oldest_pending_seconds,
        )
        yield from _order_event_metrics(s)
        yield from _gc_metrics(s)
        if (timers := s.get("timers")) is not None:
            moved = CounterMetricFamily(
                "botd_timers",
                "Dialog timers: set by a commit, moved to a shard queue when due",
                labels=["event"],
            )
            moved.add_metric(["scheduled"], timers["scheduled"])
            moved.add_metric(["moved"], timers["moved"])
            yield moved
        yield CounterMetricFamily(
            "botd_bridge_crossings",
            "Calls from Trio to the asyncio loop (across threads when the loop has its own)",
            value=s.get("bridge_crossings", 0),
        )
        depth = GaugeMetricFamily(
            "botd_queue_depth", "Messages waiting, by queue", labels=["queue"]
        )
        for queue, n in s.get("depths", {}).items():
            if n is not None:
                depth.add_metric([queue], float(n))
        yield depth
        up = GaugeMetricFamily(
            "botd_connection_up", "1 while the connection to a service is up", labels=["service"]
        )
        for service, ok in s["connections"].items():
            up.add_metric([service], 1.0 if ok else 0.0)
        yield up


def _order_event_metrics(s: dict[str, Any]) -> Iterable[Metric]:
    """The order events on their way to the notes and the shop's webhook (botd.order_events)."""
    relay = s.get("relay")
    if relay is None:
        return
    published = CounterMetricFamily(
        "botd_order_events_published",
        "Order events handed from PostgreSQL to their queues, by type",
        labels=["type"],
    )
    for kind, n in sorted(relay.published.items()):
        published.add_metric([kind], n)
    yield published
    yield CounterMetricFamily(
        "botd_order_events_relay_failures",
        "Relay rounds that failed (PostgreSQL or RabbitMQ unreachable); retried",
        value=relay.failures,
    )
    yield GaugeMetricFamily(
        "botd_order_events_oldest_unpublished_seconds",
        "Age of the oldest order event not yet handed on (0: none)",
        value=relay.oldest_unpublished_seconds,
    )
    deliveries = CounterMetricFamily(
        "botd_order_event_deliveries",
        "Order events at their destination (note: the Chat2Desk note; shop: the shop's "
        "webhook), by outcome",
        labels=["destination", "outcome"],
    )
    for name, d in sorted(s.get("destinations", {}).items()):
        deliveries.add_metric([name, "delivered"], d.delivered)
        deliveries.add_metric([name, "duplicate"], d.duplicates)
        deliveries.add_metric([name, "retried"], d.retried)
        deliveries.add_metric([name, "dead_lettered"], d.dead_lettered)
    yield deliveries


def _gc_metrics(s: dict[str, Any]) -> Iterable[Metric]:
    """The garbage collector's pauses, by generation (botd.gc_tuning)."""
    g = s.get("gc")
    if g is None:
        return
    pauses = HistogramMetricFamily(
        "botd_gc_pause_seconds",
        "Time the process stood still in a garbage collection, by generation",
        labels=["generation"],
    )
    for generation, h in sorted(g.pauses.items()):
        buckets = [(str(float(le)), n) for le, n in zip(h.bounds, h.cumulative, strict=True)]
        pauses.add_metric([generation], [*buckets, ("+Inf", h.count)], h.total)
    yield pauses
    longest = GaugeMetricFamily(
        "botd_gc_pause_max_seconds",
        "Longest garbage-collection pause since start-up, by generation",
        labels=["generation"],
    )
    for generation, seconds in sorted(g.longest.items()):
        longest.add_metric([generation], seconds)
    yield longest
    collections = CounterMetricFamily(
        "botd_gc_collections", "Garbage collections run, by generation", labels=["generation"]
    )
    for generation, n in sorted(g.collections.items()):
        collections.add_metric([generation], n)
    yield collections
    yield GaugeMetricFamily(
        "botd_gc_frozen_objects",
        "Objects frozen after start-up (never walked by a collection again)",
        value=g.frozen,
    )


class Metrics:
    """The daemon's metrics registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._requests = Counter(
            "botd_webhook_requests",
            "Webhook requests, by answer code",
            ["code"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "botd_webhook_request_duration_seconds",
            "Webhook answer latency",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._ignored = Counter(
            "botd_webhook_ignored",
            "Webhook events ignored on purpose, by what made them not ours",
            ["kind"],
            registry=self.registry,
        )
        self._source: Callable[[], dict[str, Any]] = dict
        self.registry.register(_SnapshotCollector(lambda: self._source()))

    def set_source(self, source: Callable[[], dict[str, Any]]) -> None:
        self._source = source

    def webhook_answered(self, code: int, seconds: float) -> None:
        self._requests.labels(str(code)).inc()
        if seconds:
            self._latency.observe(seconds)

    def ignored(self, kind: str) -> None:
        self._ignored.labels(kind).inc()

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
