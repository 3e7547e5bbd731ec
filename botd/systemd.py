"""The systemd notify protocol (sd_notify): READY=1, STATUS=…, STOPPING=1, WATCHDOG=1.

A datagram to the AF_UNIX socket named by ``NOTIFY_SOCKET`` (an abstract socket when it starts
with ``@``). Without ``NOTIFY_SOCKET`` (not under systemd) every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("botd.systemd")


def notify(message: str) -> bool:
    """Send ``message`` to systemd; return False when not under systemd or on failure."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
        return True
    except OSError as exc:
        log.warning("sd_notify to %s failed: %s", address, exc)
        return False


def watchdog_interval() -> float | None:
    """Half of ``WATCHDOG_USEC`` in seconds when systemd asked for pings for this process."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 1e6 / 2
    except ValueError:
        return None
