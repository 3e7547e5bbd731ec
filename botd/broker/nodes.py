"""Which RabbitMQ node to connect to next (``rabbitmq.url`` lists one URL per node).

Pure: no I/O. The connection keeper (:meth:`botd.broker.connection.Connection.serve`) asks
:attr:`Nodes.current` before each attempt and reports the outcome. The order is the configured
one, starting after the node that failed last: a node that just dropped botd's connection (killed,
partitioned, shutting down) is the least likely to take it back, while the next one usually can,
at once. Only when every node has failed in a row is it worth backing off.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit


def node_label(url: str) -> str:
    """``host:port`` of an AMQP URL, for logs (no user, password or vhost)."""
    parts = urlsplit(url)
    port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
    host = parts.hostname or "?"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Nodes:
    """The node URLs in the order they are tried, and where the next attempt goes."""

    def __init__(self, urls: Sequence[str]) -> None:
        if not urls:
            raise ValueError("no RabbitMQ URL")
        self.urls = tuple(urls)
        self._index = 0
        self._failed_in_a_row = 0

    @property
    def current(self) -> str:
        """The URL the next attempt goes to."""
        return self.urls[self._index]

    @property
    def label(self) -> str:
        """The current node for logs: ``host:port``, and its place when there are several."""
        label = node_label(self.current)
        if len(self.urls) > 1:
            label += f" (node {self._index + 1} of {len(self.urls)})"
        return label

    def connected(self) -> None:
        """The current node took the connection: the failure streak ends."""
        self._failed_in_a_row = 0

    def failed(self) -> bool:
        """The current node failed (refused, timed out, or dropped the connection): move on to
        the next one. True when every node has now failed in a row: the caller backs off before
        starting the next round (a lone node backs off after each failure)."""
        self._index = (self._index + 1) % len(self.urls)
        self._failed_in_a_row += 1
        if self._failed_in_a_row >= len(self.urls):
            self._failed_in_a_row = 0
            return True
        return False
