"""Run ``botd run`` as a real subprocess (for signal and kill -9 tests)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field

import trio

from botd.config import SECTIONS, Config, env_name

_READY = re.compile(r"botd ready on (\S+)")


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
    url: str = ""
    lines: list[str] = field(default_factory=list)
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
            return await self.process.wait()


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
    proc._changed.set()


async def start_botd(
    nursery: trio.Nursery,
    config: Config,
    *,
    extra_env: Mapping[str, str] | None = None,
    ready_timeout: float = 30,
) -> BotdProcess:
    """Start ``python -m botd run`` with ``config`` in its environment; return once it is ready."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOTD_")}
    env.update(config_env(config))
    env.update(extra_env or {})
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "botd", "--config", os.devnull, "run"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    proc = BotdProcess(process)
    nursery.start_soon(_pump, proc)
    match = await proc.wait_for_line(_READY.pattern, timeout=ready_timeout)
    proc.url = match.group(1)
    return proc
