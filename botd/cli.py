"""The ``botd`` command line (docs/design.md §8).

``botd run | migrate | check-config | dlq … | chat [--live | --script FILE] | orders …``, each
taking ``--config PATH`` (default ``./config.toml`` or ``$BOTD_CONFIG``). Exit codes: 0 ok, 2 bad
config or usage, 1 anything else.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

import trio

from botd import __version__, logs
from botd.config import Config, describe, load_config
from botd.errors import BotdError, ConfigError, SchemaError

log = logging.getLogger("botd.cli")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

# Commands that speak (or show the set-up of) the bot: they check the message table at start-up.
USES_MESSAGES = frozenset({"run", "chat", "check-config"})


def _default_config() -> str:
    return os.environ.get("BOTD_CONFIG", "config.toml")


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        default=argparse.SUPPRESS,
        metavar="PATH",
        help="config file (default ./config.toml or $BOTD_CONFIG; missing file = defaults)",
    )
    parser = argparse.ArgumentParser(
        prog="botd", description="Order-taking chat bot daemon for Chat2Desk.", parents=[common]
    )
    parser.add_argument("--version", action="version", version=f"botd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("run", parents=[common], help="run the daemon until SIGTERM/SIGINT")
    sub.add_parser("migrate", parents=[common], help="create or upgrade the PostgreSQL schema")
    sub.add_parser(
        "check-config", parents=[common], help="print the effective config (secrets masked)"
    )
    dlq = sub.add_parser("dlq", parents=[common], help="inspect and repair the dead-letter queue")
    dsub = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    dsub.add_parser("list", parents=[common], help="list dead-lettered messages")
    show = dsub.add_parser("show", parents=[common], help="print one message whole")
    show.add_argument("id")
    replay = dsub.add_parser(
        "replay", parents=[common], help="put messages back for processing/sending"
    )
    group = replay.add_mutually_exclusive_group(required=True)
    group.add_argument("id", nargs="?")
    group.add_argument("--all", action="store_true")
    purge = dsub.add_parser("purge", parents=[common], help="delete every dead-lettered message")
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    chat = sub.add_parser(
        "chat", parents=[common], help="talk to the bot in this terminal as a customer"
    )
    mode = chat.add_mutually_exclusive_group()
    mode.add_argument(
        "--live",
        action="store_true",
        help="go through the real services (webhook, RabbitMQ, Redis, PostgreSQL)",
    )
    mode.add_argument(
        "--script",
        metavar="FILE",
        help="run a conversation script (JSON lines; '-' for stdin), print its events as JSON",
    )
    orders = sub.add_parser(
        "orders", parents=[common], help="list, show, move and export the shop's orders"
    )
    osub = orders.add_subparsers(dest="orders_command", required=True, metavar="ACTION")
    olist = osub.add_parser("list", parents=[common], help="the newest orders (a table or JSON)")
    olist.add_argument("--status", help="only orders in this status")
    olist.add_argument("--since", metavar="DATE", help="created at or after (ISO; naive = UTC)")
    olist.add_argument("--limit", type=int, default=50, metavar="N", help="at most N (50)")
    olist.add_argument("--json", action="store_true", help="one JSON array of order objects")
    oshow = osub.add_parser("show", parents=[common], help="one order and its history")
    oshow.add_argument("id", type=int)
    oshow.add_argument("--json", action="store_true", help="a JSON object with a history list")
    oset = osub.add_parser(
        "set-status", parents=[common], help="move an order on (writes the event for the shop)"
    )
    oset.add_argument("id", type=int)
    oset.add_argument("status")
    oset.add_argument("--note", help="why, kept in the history and sent with the event")
    oset.add_argument("--by", metavar="NAME", help="who (recorded as shop:NAME; default $USER)")
    oexport = osub.add_parser(
        "export", parents=[common], help="stream matching orders, oldest first, as CSV or JSON"
    )
    oexport.add_argument("--since", metavar="DATE", required=True, help="created at or after")
    oexport.add_argument("--format", choices=("csv", "json"), required=True)
    oexport.add_argument("--status", help="only orders in this status")
    return parser


def _load(args: argparse.Namespace) -> Config:
    path = getattr(args, "config", None) or _default_config()
    if getattr(args, "config", None) and not os.path.exists(path):
        raise ConfigError(
            [f"--config {path}: no such file; fix the path or leave --config out for defaults"]
        )
    return load_config(path)


def _cmd_check_config(config: Config, args: argparse.Namespace) -> int:
    current = None
    for section, key, value, _default, _help in describe(config):
        if section != current:
            print(f"[{section}]")
            current = section
        print(f"{key} = {value}")
    return EXIT_OK


def _cmd_migrate(config: Config, args: argparse.Namespace) -> int:
    from botd.migrate import apply_migrations, latest_version

    applied = apply_migrations(config.postgres.dsn)
    if applied:
        for mig in applied:
            print(f"applied {mig.version:04d}_{mig.name}")
    print(f"schema is at version {latest_version()}")
    return EXIT_OK


def refusals_to_serve(config: Config) -> list[str]:
    """Why ``botd run`` must not start with ``config`` (empty: it may). Checked before anything
    is opened; ``botd chat``, ``check-config``, ``migrate`` and ``dlq`` serve no webhook."""
    problems = []
    if not config.chat2desk.token.strip():
        problems.append(
            "chat2desk.token is empty: every reply would be refused by Chat2Desk; set "
            "BOTD_CHAT2DESK_TOKEN=<your API token> (botd chat needs none)"
        )
    w = config.webhook
    if not (w.hmac_secret.strip() or w.path_token) and not w.allow_unauthenticated:
        problems.append(
            "the webhook has no authentication: neither webhook.path_token "
            "(BOTD_WEBHOOK_PATH_TOKEN) nor webhook.hmac_secret (BOTD_WEBHOOK_HMAC_SECRET) is set, "
            "so anyone who can reach it could order for any customer or silence the bot; set "
            "BOTD_WEBHOOK_PATH_TOKEN to >= 16 random characters (python3 -c 'import secrets; "
            "print(secrets.token_urlsafe(24))') and register the webhook as "
            "/webhook/chat2desk/<token>, or set BOTD_WEBHOOK_HMAC_SECRET; only on a machine "
            "nobody else can reach, set webhook.allow_unauthenticated = true "
            "(BOTD_WEBHOOK_ALLOW_UNAUTHENTICATED=true)"
        )
    if w.hmac_timestamp_header and not w.hmac_secret.strip():
        problems.append(
            f"webhook.hmac_timestamp_header = {w.hmac_timestamp_header!r} has no effect without "
            "webhook.hmac_secret: set BOTD_WEBHOOK_HMAC_SECRET or empty the timestamp header"
        )
    return problems


def _cmd_run(config: Config, args: argparse.Namespace) -> int:
    from botd import daemon
    from botd.bridge import run_as_guest

    problems = refusals_to_serve(config)
    if problems:
        raise ConfigError(problems)

    if os.environ.get("BOTD_TEST_THREADED_BRIDGE") == "1":
        trio.run(daemon.run, config)  # the asyncio loop in its own thread: the benchmarks' baseline
    else:
        run_as_guest(daemon.run, config)  # one thread (docs/design.md §5)
    return EXIT_OK


def _cmd_dlq(config: Config, args: argparse.Namespace) -> int:
    from botd.dlq_cli import main as dlq_main

    return dlq_main(config, args)


def _cmd_chat(config: Config, args: argparse.Namespace) -> int:
    from botd.chat_cli import main as chat_main

    return chat_main(config, live=args.live, script=args.script)


def _cmd_orders(config: Config, args: argparse.Namespace) -> int:
    from botd.orders_cli import main as orders_main

    return orders_main(config, args)


COMMANDS: dict[str, Callable[[Config, argparse.Namespace], int]] = {
    "run": _cmd_run,
    "migrate": _cmd_migrate,
    "check-config": _cmd_check_config,
    "dlq": _cmd_dlq,
    "chat": _cmd_chat,
    "orders": _cmd_orders,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return EXIT_OK if exc.code == 0 else EXIT_USAGE
    try:
        config = _load(args)
    except ConfigError as exc:
        print("botd: configuration is not usable:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return EXIT_USAGE
    if args.command in USES_MESSAGES:
        from botd.dialog.texts import MessageTableError, validate_messages

        try:
            validate_messages()
        except MessageTableError as exc:
            print(
                "botd: the message table (botd/dialog/messages.toml) is not usable:",
                file=sys.stderr,
            )
            for problem in exc.problems:
                print(f"  - {problem}", file=sys.stderr)
            return EXIT_USAGE
    logs.configure(config.log.level, config.log.format)
    try:
        return COMMANDS[args.command](config, args)
    except SchemaError as exc:
        log.error("%s", exc)
        return EXIT_FAILURE
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("configuration: %s", problem)
        return EXIT_USAGE
    except BotdError as exc:
        log.error("%s", exc)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_FAILURE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
