"""Run ``botd run`` as a real subprocess (signal and kill -9 tests, benchmarks, chaos runs)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import trio

from botd.config import SECTIONS, Config, env_name

_READY = re.compile(r"webhook (\S+)")


def config_env(config: Config) -> dict[str, str]:
    """The environment that makes a subprocess load exactly ``config``."""
    env: dict[str, str] = {}
    for section in SECTIONS:
        values = getattr(config, section)
        for key in type(values).__dataclass_fields__:
            value = getattr(values, key)
            env[env_name(section, key)] = (
                ",".join(value) if isinstance(value, tuple) else str(value)
            )
    return env


@dataclass
class BotdProcess:
    process: trio.Process
    notify_dir: str = ""
    url: str = ""
    lines: list[str] = field(default_factory=list)
    notifications: list[str] = field(default_factory=list)
    _listen_scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    _changed: trio.Event = field(default_factory=trio.Event)

    async def wait_for_line(self, pattern: str, *, timeout: float = 30) -> re.Match[str]:
        regex = re.compile(pattern)
        with trio.fail_after(timeout):
            seen = 0
            while True:
                for line in self.lines[seen:]:
                    if m := regex.search(line):
                        return m
                seen = len(self.lines)
                if self.process.returncode is not None:
                    raise AssertionError(
                        f"botd exited ({self.process.returncode}) before {pattern!r}:\n"
                        + "\n".join(self.lines[-30:])
                    )
                await self._changed.wait()
                self._changed = trio.Event()

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def kill9(self) -> None:
        self.process.send_signal(signal.SIGKILL)

    async def wait_exit(self, timeout: float = 30) -> int:
        with trio.fail_after(timeout):
            code = await self.process.wait()
        shutil.rmtree(self.notify_dir, ignore_errors=True)
        return code


async def _pump(proc: BotdProcess) -> None:
    assert proc.process.stderr is not None
    buffer = b""
    async for chunk in proc.process.stderr:
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        for raw in complete:
            proc.lines.append(raw.decode(errors="replace"))
        proc._changed.set()
    if buffer:
        proc.lines.append(buffer.decode(errors="replace"))
    await proc.process.wait()
    proc._listen_scope.cancel()  # no more datagrams can come
    proc._changed.set()


async def start_botd(
    nursery: trio.Nursery,
    config: Config,
    *,
    extra_env: Mapping[str, str] | None = None,
    ready_timeout: float = 30,
    argv: Sequence[str] | None = None,
) -> BotdProcess:
    """Start ``python -m botd run`` (or ``argv``, a program that speaks the same sd_notify) with
    ``config`` in its environment; return once it is ready."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOTD_")}
    env.update(config_env(config))
    env.update(extra_env or {})
    notify_dir = tempfile.mkdtemp(prefix="botd-notify-")
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    await sock.bind(os.path.join(notify_dir, "notify.sock"))
    env["NOTIFY_SOCKET"] = os.path.join(notify_dir, "notify.sock")
    process = await trio.lowlevel.open_process(
        list(argv or [sys.executable, "-m", "botd", "--config", os.devnull, "run"]),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    proc = BotdProcess(process, notify_dir=notify_dir)
    nursery.start_soon(_pump, proc)
    nursery.start_soon(_listen, proc, sock)
    try:
        with trio.fail_after(ready_timeout):
            while not any(m.startswith("READY=1") or "\nREADY=1" in m for m in proc.notifications):
                if process.returncode is not None:
                    raise RuntimeError(
                        f"botd exited ({process.returncode}) before READY=1:\n"
                        + "\n".join(proc.lines[-30:])
                    )
                await proc._changed.wait()
                proc._changed = trio.Event()
    except trio.TooSlowError:
        raise RuntimeError(
            "botd did not send READY=1 in time:\n" + "\n".join(proc.lines[-30:])
        ) from None
    ready = next(m for m in proc.notifications if "READY=1" in m)
    match = _READY.search(ready)
    assert match, ready
    proc.url = match.group(1)
    return proc


async def _listen(proc: BotdProcess, sock: trio.socket.SocketType) -> None:
    """Collect the sd_notify datagrams botd sends (READY=1, STATUS=…, STOPPING=1, WATCHDOG=1)."""
    with sock, proc._listen_scope:
        while True:
            data = await sock.recv(4096)
            proc.notifications.append(data.decode(errors="replace"))
            proc._changed.set()
