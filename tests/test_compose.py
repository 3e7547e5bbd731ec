"""The compose files' botd services carry a configuration botd accepts (every BOTD_* variable
known, every value valid), with the placeholders of the .env filled in."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from botd.config import load_config

ROOT = Path(__file__).resolve().parent.parent
PLACEHOLDER = re.compile(r"\$\{(\w+)(?::?-([^}]*))?(?::?\?[^}]*)?\}")
FILLED = {"BOTD_WEBHOOK_PATH_TOKEN": "a" * 24, "BOTD_CHAT2DESK_TOKEN": "token"}


def botd_environments(path: Path) -> dict[str, dict[str, str]]:
    compose: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    found = {}
    for name, service in compose["services"].items():
        command = service.get("command") or []
        if command[:1] == ["botd"]:
            env = {
                k: PLACEHOLDER.sub(lambda m: FILLED.get(m[1], m[2] or ""), str(v))
                for k, v in (service.get("environment") or {}).items()
            }
            found[name] = env
    return found


@pytest.mark.parametrize("file", ["docker-compose.yml", "docker-compose.cluster.yml"])
def test_every_botd_service_has_a_valid_configuration(file: str) -> None:
    services = botd_environments(ROOT / file)
    assert services, f"no botd service in {file}"
    for name, env in services.items():
        config = load_config(None, env=env)
        assert config.webhook.host == "0.0.0.0", name


def test_the_cluster_file_runs_two_processes_over_three_rabbitmq_nodes() -> None:
    services = botd_environments(ROOT / "docker-compose.cluster.yml")
    configs = {name: load_config(None, env=env) for name, env in services.items()}
    instances = sorted(c.rabbitmq.instance for n, c in configs.items() if n.startswith("botd-"))
    assert instances == [0, 1]
    config = configs["botd-0"]
    assert config.rabbitmq.instances == 2
    assert len(config.redis.sentinels) == 3
    assert "target_session_attrs=read-write" in config.postgres.dsn
    assert config.rabbitmq.url.count("amqp://") == 3
