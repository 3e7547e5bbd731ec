"""Config: defaults (docs/design.md §8), TOML and environment overrides, actionable errors,
masking, CLI."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import pytest

from botd import cli, daemon
from botd.config import Config, describe, field_docs, load_config
from botd.dialog import texts
from botd.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(text: str | None, env: dict[str, str], tmp_path: Path) -> list[str]:
    path = None if text is None else write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env)
    assert info.value.problems, "a ConfigError must carry at least one problem"
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


# ---- defaults ------------------------------------------------------------------------------


def test_defaults_are_the_documented_ones() -> None:
    c = load_config(None, env={})
    assert (c.webhook.host, c.webhook.port, c.webhook.max_body_bytes) == ("127.0.0.1", 8080, 65536)
    assert (c.webhook.hmac_secret, c.webhook.path_token) == ("", "")
    assert c.chat2desk.base_url == "https://api.chat2desk.com/v1"
    assert c.chat2desk.token == ""
    assert c.chat2desk.timeout_seconds == 10
    assert c.chat2desk.requests_per_minute == 300
    assert c.chat2desk.attempts == 3
    assert c.rabbitmq.url == "amqp://guest:guest@127.0.0.1:5672/%2F"
    assert c.rabbitmq.queue_prefix == "botd"
    assert c.rabbitmq.shards == 8
    assert c.redis.url == "redis://127.0.0.1:6379/0"
    assert c.redis.key_prefix == "botd:"
    assert c.postgres.dsn == "postgresql://postgres@127.0.0.1:5432/botd"
    assert c.postgres.pool_min_size <= c.postgres.pool_max_size
    assert c.dialog.default_region == "KG"
    assert c.dialog.state_ttl_seconds == 86400
    assert c.dialog.cancel_window_seconds == 900
    assert c.outbox.max_attempts == 50
    assert c.outbox.max_backoff_seconds == 300
    assert c.log.level == "INFO"
    assert c.log.format == "text"
    assert c == Config()


def test_missing_file_means_defaults(tmp_path: Path) -> None:
    assert load_config(tmp_path / "nope.toml", env={}) == Config()


def test_config_is_frozen() -> None:
    c = load_config(None, env={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.webhook.port = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.webhook = c.webhook  # type: ignore[misc]


def test_repo_config_toml_documents_every_key_with_its_default() -> None:
    path = REPO_ROOT / "config.toml"
    assert load_config(path, env={}) == Config()
    text = path.read_text(encoding="utf-8")
    for section, key, _default, env_var, _help in field_docs():
        assert f"[{section}]" in text
        assert f"\n{key} = " in text, f"{section}.{key} is not documented in config.toml"
        assert env_var in text


# ---- overrides -----------------------------------------------------------------------------


def test_toml_file_overrides_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[webhook]
port = 9090
host = "0.0.0.0"
[chat2desk]
timeout_seconds = 3
requests_per_minute = 120
[rabbitmq]
queue_prefix = "shop-1"
shards = 4
[dialog]
allowed_regions = ["KG", "KZ"]
[log]
format = "json"
""",
    )
    c = load_config(path, env={})
    assert (c.webhook.port, c.webhook.host) == (9090, "0.0.0.0")
    assert c.chat2desk.timeout_seconds == 3.0
    assert isinstance(c.chat2desk.timeout_seconds, float)
    assert c.chat2desk.requests_per_minute == 120
    assert (c.rabbitmq.queue_prefix, c.rabbitmq.shards) == ("shop-1", 4)
    assert c.dialog.allowed_regions == ("KG", "KZ")
    assert c.log.format == "json"
    # untouched keys keep their defaults
    assert c.webhook.max_body_bytes == 65536
    assert c.redis == Config().redis


def test_environment_overrides_toml(tmp_path: Path) -> None:
    path = write(tmp_path, '[webhook]\nport = 9090\n[chat2desk]\ntoken = "from-file"\n')
    env = {
        "BOTD_WEBHOOK_PORT": " 8081 ",
        "BOTD_CHAT2DESK_TOKEN": "from-env",
        "BOTD_CHAT2DESK_TIMEOUT_SECONDS": "2.5",
        "BOTD_LOG_LEVEL": "DEBUG",
        "BOTD_CONFIG": str(path),
        "BOTD_TEST_ANYTHING": "ignored",
        "PATH": "/usr/bin",
    }
    c = load_config(path, env=env)
    assert c.webhook.port == 8081
    assert c.chat2desk.token == "from-env"
    assert c.chat2desk.timeout_seconds == 2.5
    assert c.log.level == "DEBUG"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("KG", ("KG",)),
        ("KG,KZ", ("KG", "KZ")),
        (" KG , KZ ,, UZ ", ("KG", "KZ", "UZ")),
        ("", ()),
    ],
)
def test_environment_list_parsing(raw: str, expected: tuple[str, ...]) -> None:
    c = load_config(None, env={"BOTD_DIALOG_ALLOWED_REGIONS": raw})
    assert c.dialog.allowed_regions == expected


@pytest.mark.parametrize("seconds", [0, 60, 7 * 86400])
def test_cancel_window_reaches_the_dialog_settings(seconds: int) -> None:
    """0 (chat cancels off) up to 7 days is accepted and passed on to the dialog."""
    c = load_config(None, env={"BOTD_DIALOG_CANCEL_WINDOW_SECONDS": str(seconds)})
    assert c.dialog.cancel_window_seconds == seconds
    assert daemon.settings_of(c).cancel_window_seconds == seconds


def test_missing_file_named_by_botd_config_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "gone.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path, env={"BOTD_CONFIG": str(path)})
    (problem,) = info.value.problems
    assert "BOTD_CONFIG" in problem
    assert str(path) in problem


# ---- problems name the key and the fix -----------------------------------------------------

BAD_VALUES = [
    # (toml, env, substrings every one of which the single problem must contain)
    ("[webhok]\nport = 1\n", {}, ["[webhok]", "unknown section", "webhook"]),
    ("[webhook]\nprot = 1\n", {}, ["prot", "unknown key", "port"]),
    (
        None,
        {"BOTD_WEBHOOK_PROT": "1"},
        ["BOTD_WEBHOOK_PROT", "unknown environment variable", "BOTD_WEBHOOK_PORT"],
    ),
    ('[webhook]\nport = "8080"\n', {}, ["[webhook] port", "whole number", "default is 8080"]),
    ("[webhook]\nport = 8080.5\n", {}, ["[webhook] port", "whole number", "default is 8080"]),
    ("[webhook]\nport = true\n", {}, ["[webhook] port", "whole number", "default is 8080"]),
    (
        None,
        {"BOTD_WEBHOOK_PORT": "eighty"},
        ["BOTD_WEBHOOK_PORT", "whole number", "default is 8080"],
    ),
    (
        '[chat2desk]\ntimeout_seconds = "fast"\n',
        {},
        ["timeout_seconds", "number", "default is 10.0"],
    ),
    (
        None,
        {"BOTD_CHAT2DESK_TIMEOUT_SECONDS": "nan"},
        ["BOTD_CHAT2DESK_TIMEOUT_SECONDS", "between", "default is 10.0"],
    ),
    ("[webhook]\nhost = 127\n", {}, ["[webhook] host", "string", "default is '127.0.0.1'"]),
    (
        '[dialog]\nallowed_regions = "KG"\n',
        {},
        ["allowed_regions", "list of strings", "comma-separated"],
    ),
    ('[dialog]\nallowed_regions = ["KG", 1]\n', {}, ["allowed_regions", "list of strings"]),
    ("[webhook]\nport = 70000\n", {}, ["[webhook] port", "between 0 and 65535", "default is 8080"]),
    ("[webhook]\nmax_body_bytes = 10\n", {}, ["max_body_bytes", "between", "default is 65536"]),
    (
        None,
        {"BOTD_RABBITMQ_SHARDS": "0"},
        ["BOTD_RABBITMQ_SHARDS", "between 1 and 256", "default is 8"],
    ),
    (
        "[chat2desk]\nrequests_per_minute = 0\n",
        {},
        ["requests_per_minute", "between", "default is 300"],
    ),
    ("[chat2desk]\nattempts = 11\n", {}, ["attempts", "between", "default is 3"]),
    ("[dialog]\nstate_ttl_seconds = 5\n", {}, ["state_ttl_seconds", "between", "default is 86400"]),
    ("[outbox]\nmax_attempts = 0\n", {}, ["max_attempts", "between", "default is 50"]),
    (
        "[outbox]\nmax_backoff_seconds = 0\n",
        {},
        ["max_backoff_seconds", "between", "default is 300"],
    ),
    (
        '[chat2desk]\nbase_url = "ftp://api.example.com"\n',
        {},
        ["base_url", "https://", "default is"],
    ),
    ('[chat2desk]\nbase_url = "api.chat2desk.com/v1"\n', {}, ["base_url", "http://"]),
    (None, {"BOTD_RABBITMQ_URL": "http://127.0.0.1:5672/"}, ["BOTD_RABBITMQ_URL", "amqp://"]),
    ('[redis]\nurl = "http://127.0.0.1:6379"\n', {}, ["[redis] url", "redis://"]),
    ('[postgres]\ndsn = "mysql://db/botd"\n', {}, ["[postgres] dsn", "postgresql://"]),
    ('[rabbitmq]\nqueue_prefix = ""\n', {}, ["queue_prefix", "non-empty", "default is 'botd'"]),
    ('[redis]\nkey_prefix = "my prefix"\n', {}, ["key_prefix", "default is 'botd:'"]),
    ('[log]\nlevel = "verbose"\n', {}, ["[log] level", "'INFO'", "default is 'INFO'"]),
    ('[log]\nformat = "xml"\n', {}, ["[log] format", "'json'", "default is 'text'"]),
    ('[dialog]\ndefault_locale = "de"\n', {}, ["default_locale", "'ru'"]),
    (
        "[dialog]\ncancel_window_seconds = -1\n",
        {},
        ["cancel_window_seconds", "between 0 and 604800", "default is 900"],
    ),
    (
        None,
        {"BOTD_DIALOG_CANCEL_WINDOW_SECONDS": "604801"},
        ["BOTD_DIALOG_CANCEL_WINDOW_SECONDS", "between 0 and 604800", "default is 900"],
    ),
    ("webhook = 3\n", {}, ["[webhook]", "table"]),
    (
        "[postgres]\npool_min_size = 5\npool_max_size = 2\n",
        {},
        ["pool_min_size", "pool_max_size", "lower it or raise"],
    ),
    ("[webhook\nport = 1\n", {}, ["not valid TOML", "line 1", "fix"]),
]


@pytest.mark.parametrize(("toml", "env", "expected"), BAD_VALUES)
def test_bad_value_is_named_with_its_fix(
    toml: str | None, env: dict[str, str], expected: list[str], tmp_path: Path
) -> None:
    problems = problems_of(toml, env, tmp_path)
    assert len(problems) == 1, problems
    for part in expected:
        assert part in problems[0], (part, problems[0])


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    toml = '[webhook]\nport = -1\n[log]\nlevel = "LOUD"\n[nope]\n'
    problems = problems_of(toml, {"BOTD_REDIS_KEY_PREFIX": "", "BOTD_BOGUS": "1"}, tmp_path)
    text = "\n".join(problems)
    assert len(problems) == 5, problems
    for key in ("[webhook] port", "[log] level", "[nope]", "BOTD_REDIS_KEY_PREFIX", "BOTD_BOGUS"):
        assert key in text


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b'[webhook]\nhost = "\xff\xfe"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert "not valid TOML" in info.value.problems[0]


def test_pool_size_problem_is_reported_with_the_others(tmp_path: Path) -> None:
    toml = '[webhook]\nport = "x"\n[postgres]\npool_min_size = 5\npool_max_size = 2\n'
    text = "\n".join(problems_of(toml, {}, tmp_path))
    assert "[webhook] port" in text
    assert "pool_min_size" in text


@pytest.mark.parametrize(
    "env",
    [
        {"BOTD_DIALOG_DEFAULT_REGION": "Kyrgyzstan"},
        {"BOTD_DIALOG_ALLOWED_REGIONS": "KG,Kazakhstan"},
    ],
)
def test_region_codes_are_validated(env: dict[str, str], tmp_path: Path) -> None:
    (problem,) = problems_of(None, env, tmp_path)
    assert "REGION" in problem


# ---- secrets -------------------------------------------------------------------------------


def test_describe_masks_secrets_and_shows_the_rest() -> None:
    env = {
        "BOTD_CHAT2DESK_TOKEN": "tok-4f9a2c-secret",
        "BOTD_WEBHOOK_HMAC_SECRET": "hmac-7d1e-secret",
        "BOTD_WEBHOOK_PATH_TOKEN": "path-token-1234567890",
        "BOTD_WEBHOOK_PORT": "8081",
    }
    rows = describe(load_config(None, env=env))
    shown = {(section, key): value for section, key, value, _default, _help in rows}
    assert shown["chat2desk", "token"] == "'***'"
    assert shown["webhook", "hmac_secret"] == "'***'"
    assert shown["webhook", "path_token"] == "'***'"
    assert shown["webhook", "port"] == "8081"
    text = repr(rows)
    for secret in env.values():
        if secret != "8081":
            assert secret not in text
    # every key is described, each with its default and a help text
    assert {(s, k) for s, k, *_ in rows} == {(s, k) for s, k, *_ in field_docs()}
    assert all(help_text for *_, help_text in rows)


def test_empty_secret_is_shown_as_empty() -> None:
    shown = {(s, k): v for s, k, v, _d, _h in describe(load_config(None, env={}))}
    assert shown["chat2desk", "token"] == "''"


@pytest.mark.parametrize(
    ("toml", "env", "secret"),
    [
        ("[webhook]\nhmac_secret = 918273645\n", {}, "918273645"),
        ('[webhook]\npath_token = "s3cr3t!!"\n', {}, "s3cr3t!!"),
        (None, {"BOTD_WEBHOOK_PATH_TOKEN": "short-s3cr3t"}, "short-s3cr3t"),
        ("[chat2desk]\ntoken = 5550123987\n", {}, "5550123987"),
    ],
)
def test_bad_secret_value_is_not_echoed(
    toml: str | None, env: dict[str, str], secret: str, tmp_path: Path
) -> None:
    (problem,) = problems_of(toml, env, tmp_path)
    assert secret not in problem
    assert "***" in problem


def test_url_passwords_are_masked() -> None:
    env = {
        "BOTD_RABBITMQ_URL": "amqp://botd:amqp-pw-93812@127.0.0.1:5672/%2F",
        "BOTD_POSTGRES_DSN": "postgresql://botd:pg-pw-41277@127.0.0.1:5432/botd",
        "BOTD_REDIS_URL": "redis://:redis-pw-11873@127.0.0.1:6379/0",
    }
    text = repr(describe(load_config(None, env=env)))
    for pw in ("amqp-pw-93812", "pg-pw-41277", "redis-pw-11873"):
        assert pw not in text


def test_bad_url_password_is_not_echoed(tmp_path: Path) -> None:
    (problem,) = problems_of(
        None, {"BOTD_RABBITMQ_URL": "http://botd:amqp-pw-93812@host/"}, tmp_path
    )
    assert "amqp-pw-93812" not in problem


def test_redis_unix_socket_url_is_accepted() -> None:
    c = load_config(None, env={"BOTD_REDIS_URL": "unix:///run/redis/redis.sock"})
    assert c.redis.url == "unix:///run/redis/redis.sock"


# ---- CLI -----------------------------------------------------------------------------------


def test_cli_check_config_prints_masked_config(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(cli_env, "[webhook]\nport = 9191\n")
    monkeypatch.setenv("BOTD_CHAT2DESK_TOKEN", "cli-token-5f3e91")
    assert cli.main(["check-config", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "cli-token-5f3e91" not in out
    assert "token = '***'" in out
    assert "port = 9191" in out
    for section in ("[webhook]", "[chat2desk]", "[rabbitmq]", "[redis]", "[postgres]", "[log]"):
        assert section in out


def test_cli_check_config_without_file_prints_defaults(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["check-config"]) == 0
    out = capsys.readouterr().out
    assert "port = 8080" in out
    assert "base_url = 'https://api.chat2desk.com/v1'" in out


def test_cli_check_config_bad_value_exits_2_naming_the_key(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(cli_env, '[webhook]\nport = "http"\n[rabbitmq]\nshards = 0\n')
    assert cli.main(["check-config", "--config", str(path)]) == 2
    captured = capsys.readouterr()
    assert "[webhook] port" in captured.err
    assert "[rabbitmq] shards" in captured.err
    assert "default is" in captured.err
    assert "[webhook]\n" not in captured.out


def test_cli_bad_environment_variable_exits_2(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BOTD_CHAT2DESK_REQUESTS_PER_MINUTE", "lots")
    assert cli.main(["check-config"]) == 2
    assert "BOTD_CHAT2DESK_REQUESTS_PER_MINUTE" in capsys.readouterr().err


def test_cli_missing_config_file_exits_2(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check-config", "--config", str(cli_env / "missing.toml")]) == 2
    err = capsys.readouterr().err
    assert "missing.toml" in err
    assert "no such file" in err


def test_cli_usage_error_exits_2(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["no-such-command"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_cli_config_that_is_a_directory_exits_2(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (cli_env / "dir.toml").mkdir()
    assert cli.main(["check-config", "--config", str(cli_env / "dir.toml")]) == 2


@pytest.mark.parametrize("command", [["run"], ["check-config"], ["chat", "--script", "-"]])
def test_cli_bad_message_table_exits_2_naming_the_key(
    cli_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
) -> None:
    """A message table the dialog cannot use stops every command that speaks, before it starts."""
    broken = {locale: dict(table) for locale, table in texts.load_messages().items()}
    del broken["ky"]["ask_phone"]
    broken["en"]["ask_address"] = "Your address, {name}?"
    monkeypatch.setattr(texts, "load_messages", lambda: broken)
    assert cli.main(command) == 2
    err = capsys.readouterr().err
    assert "message table" in err and "Traceback" not in err, err
    assert "[ky] key 'ask_phone' is missing" in err, err
    assert "[en] ask_address" in err, err


def test_message_table_error_is_a_value_error_with_the_problems() -> None:
    table = {locale: dict(t) for locale, t in texts.load_messages().items()}
    del table["ru"]["greeting"]
    with pytest.raises(texts.MessageTableError) as caught:
        texts.validate_messages(table)
    assert isinstance(caught.value, ValueError)
    assert caught.value.problems == ["[ru] key 'greeting' is missing"]


def test_run_refuses_an_empty_chat2desk_token_naming_the_key(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["run"]) == 2  # defaults: no token; botd would never start the daemon
    err = capsys.readouterr().err
    assert "chat2desk.token" in err and "BOTD_CHAT2DESK_TOKEN" in err


# ---- what botd run refuses to serve (the webhook's authentication) --------------------------

TOKEN_16 = "abcdefghij-_0123"  # the shortest path token accepted


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[Config]:
    """``botd run`` records the config it would serve with instead of starting the daemon."""
    configs: list[Config] = []

    async def run(config: Config) -> None:
        configs.append(config)

    monkeypatch.setattr(daemon, "run", run)
    return configs


@pytest.mark.parametrize(
    "env",
    [
        {"BOTD_WEBHOOK_PATH_TOKEN": TOKEN_16},
        {"BOTD_WEBHOOK_HMAC_SECRET": "hmac-secret-1"},
        {"BOTD_WEBHOOK_HMAC_SECRET": "hmac-secret-1", "BOTD_WEBHOOK_HMAC_TIMESTAMP_HEADER": "X-Ts"},
        {"BOTD_WEBHOOK_ALLOW_UNAUTHENTICATED": "true"},
    ],
)
def test_run_serves_a_webhook_with_authentication_or_explicitly_without(
    env: dict[str, str],
    cli_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    started: list[Config],
) -> None:
    monkeypatch.setenv("BOTD_CHAT2DESK_TOKEN", "tok-123")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["run"]) == 0
    assert len(started) == 1


@pytest.mark.parametrize(
    ("env", "words"),
    [
        (
            {},
            [
                "webhook.path_token",
                "BOTD_WEBHOOK_PATH_TOKEN",
                "webhook.hmac_secret",
                "BOTD_WEBHOOK_HMAC_SECRET",
                ">= 16 random characters",
                "webhook.allow_unauthenticated = true",
                "BOTD_WEBHOOK_ALLOW_UNAUTHENTICATED=true",
            ],
        ),
        ({"BOTD_WEBHOOK_ALLOW_UNAUTHENTICATED": "false"}, ["webhook.allow_unauthenticated"]),
        ({"BOTD_WEBHOOK_HMAC_SECRET": "   "}, ["webhook.hmac_secret"]),
        ({"BOTD_WEBHOOK_HOST": "0.0.0.0"}, ["webhook.path_token"]),
        (
            {"BOTD_WEBHOOK_PATH_TOKEN": TOKEN_16, "BOTD_WEBHOOK_HMAC_TIMESTAMP_HEADER": "X-Ts"},
            ["webhook.hmac_timestamp_header", "BOTD_WEBHOOK_HMAC_SECRET"],
        ),
        ({"BOTD_WEBHOOK_PATH_TOKEN": TOKEN_16[:-1]}, ["BOTD_WEBHOOK_PATH_TOKEN", "at least 16"]),
    ],
)
def test_run_refuses_a_webhook_without_authentication_naming_the_keys_and_the_fix(
    env: dict[str, str],
    words: list[str],
    cli_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    started: list[Config],
) -> None:
    monkeypatch.setenv("BOTD_CHAT2DESK_TOKEN", "tok-123")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["run"]) == 2
    assert started == [], "botd run started the daemon"
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for word in words:
        assert word in err, (word, err)
    assert TOKEN_16[:-1] not in err  # a refused token is not echoed either


def test_run_reports_every_refusal_at_once(
    cli_env: Path, capsys: pytest.CaptureFixture[str], started: list[Config]
) -> None:
    assert cli.main(["run"]) == 2  # the defaults: no Chat2Desk token, no authentication
    err = capsys.readouterr().err
    assert "BOTD_CHAT2DESK_TOKEN" in err and "BOTD_WEBHOOK_PATH_TOKEN" in err
    assert started == []


@pytest.mark.parametrize("command", [["check-config"], ["chat", "--script", "-"]])
def test_commands_that_serve_no_webhook_need_no_authentication(
    command: list[str],
    cli_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO('{"text": "Здравствуйте"}\n'))
    assert cli.main(command) == 0, capsys.readouterr().err
