"""The admin command: ``python -m webapp2_sessions COMMAND``.

``show`` and ``destroy`` one session, ``revoke`` every session of an owner,
``stats`` of the memcached nodes (and the database), ``purge`` expired
sessions from the database (for cron). Each
command is one function in ``COMMANDS`` that adds its parser and names its
runner; a runner returns what to print, as JSON data and as text. What the
commands do to the servers is in ``admin.py``, what they print in ``reports.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from . import admin, owners, reports, revocation
from .errors import ConfigurationError, SessionError

#: Where memcached listens unless told otherwise (its own default port).
DEFAULT_SERVERS = "127.0.0.1:11211"
#: Seconds to wait for a server: a one-off command can afford to be patient.
DEFAULT_TIMEOUT = 5.0

_EPILOG = "Exit status: 0 done; 1 no such session, or a server did not answer; 2 bad input."


class NotDone(Exception):
    """The command ran but could not do all that was asked (exit status 1).

    ``output``: what it found all the same, printed before the error.
    """

    def __init__(self, message: str, output: reports.Report | None = None) -> None:
        super().__init__(message)
        self.output = output


# --------------------------------------------------------------------------- options


def _server_list(text: str) -> list[str]:
    """``--servers``: comma-separated, each checked later as the setting is."""
    return [part.strip() for part in text.split(",")]


_memcached = argparse.ArgumentParser(add_help=False)
_memcached.add_argument(
    "--servers",
    type=_server_list,
    default=DEFAULT_SERVERS,
    metavar="HOST:PORT[,...]",
    help="memcached servers, comma-separated ([v6]:port for IPv6), spelt exactly as in "
    "the application's memcache_servers setting: a session's node is chosen by these "
    "names (default %(default)s)",
)
_memcached.add_argument(
    "--key-prefix", default="", help="the application's key_prefix setting (default none)"
)
_memcached.add_argument(
    "--timeout",
    type=float,
    default=DEFAULT_TIMEOUT,
    metavar="SECONDS",
    help="how long to wait for a server (default %(default)g)",
)
_database = argparse.ArgumentParser(add_help=False)
_database.add_argument(
    "--database", metavar="URL", help="SQLAlchemy URL of the durable tier's database, if any"
)
_output = argparse.ArgumentParser(add_help=False)
_output.add_argument("--json", action="store_true", help="print JSON for scripts")
_session = argparse.ArgumentParser(add_help=False)
_session.add_argument(
    "session_id",
    metavar="SESSION_ID",
    help="the id (32 hex digits; a cookie's part before any '.')",
)


def _add(commands: Any, name: str, *parents: argparse.ArgumentParser, **kw: Any) -> Any:
    kw.setdefault("description", kw.get("help"))
    return commands.add_parser(name, parents=[*parents, _output], epilog=_EPILOG, **kw)


def _target(args: argparse.Namespace) -> admin.Target:
    return admin.Target.open(
        args.servers,
        args.key_prefix,
        args.timeout,
        database=args.database,
        absolute_timeout=getattr(args, "absolute_timeout", None),
    )


# --------------------------------------------------------------------------- show


def add_show(commands: Any) -> None:
    parser = _add(
        commands,
        "show",
        _session,
        _memcached,
        _database,
        help="a session's variables, when it was created and how long it has left",
        description="Print a session's variables, one per line, its creation time and the "
        "time it has left (idle and absolute timeouts, whichever ends first). Nothing is "
        "renewed. With --database, the database is read when memcached has nothing.",
    )
    parser.add_argument(
        "--absolute-timeout",
        type=int,
        metavar="SECONDS",
        help="the application's absolute_timeout setting, to say when that ends",
    )
    parser.set_defaults(run=run_show)


def run_show(args: argparse.Namespace) -> reports.Report:
    target = _target(args)
    try:
        found = admin.look_up(target, args.session_id)
    finally:
        target.close()
    if found is None or found.ended:
        raise NotDone(_not_live(args.session_id, found, target))
    return reports.session_report(found)


def _not_live(sid: str, found: admin.Found | None, target: admin.Target) -> str:
    if found is not None:
        return f"session {sid} has ended: {found.ended}"
    where = "memcached " + target.store.node_for(sid)
    if target.tier is not None:
        where += " or " + target.tier.database.describe()
    return f"no session {sid} on {where} (never issued, ended or expired)"


# --------------------------------------------------------------------------- destroy


def add_destroy(commands: Any) -> None:
    parser = _add(
        commands,
        "destroy",
        _session,
        _memcached,
        _database,
        help="end a session as a logout does",
        description="End a session exactly as a logout does: its database rows first "
        "(with --database), then its memcached record is marked ended and every key it "
        "ever listed deleted. Its cookie opens nothing afterwards.",
    )
    parser.set_defaults(run=run_destroy)


def run_destroy(args: argparse.Namespace) -> reports.Report:
    target = _target(args)
    try:
        found = admin.look_up(target, args.session_id, details=False)
        if found is not None:
            admin.destroy(target, found)
    finally:
        target.close()
    if found is None or found.ended:
        message = _not_live(args.session_id, found, target)
        raise NotDone(message + ("; what was left of it is deleted" if found else ""))
    data = {
        "session_id": found.session_id,
        "destroyed": True,
        "server": target.store.node_for(found.session_id),
        "database": target.tier.database.describe() if target.tier is not None else None,
    }
    return data, f"session {found.session_id} destroyed"


# --------------------------------------------------------------------------- revoke


def add_revoke(commands: Any) -> None:
    parser = _add(
        commands,
        "revoke",
        _memcached,
        _database,
        help="end every session of an owner, as a logout does (sign out everywhere)",
        description="End every session tied to OWNER by set_session_owner(), each exactly "
        "as a logout does, and print how many were ended. With --database the database "
        "lists them; on memcached alone, the owner's index does.",
    )
    parser.add_argument(
        "--owner", required=True, help="the owner, as the application passed it (a user id)"
    )
    parser.set_defaults(run=run_revoke)


def run_revoke(args: argparse.Namespace) -> reports.Report:
    try:
        digest = owners.owner_hash(args.owner)
    except ValueError as exc:
        raise ConfigurationError("owner", str(exc).removeprefix("owner ")) from None
    target = _target(args)
    try:
        ended = revocation.revoke(target.config, target.store, target.tier, digest, strict=True)
    finally:
        target.close()
    return {"owner_sha256": digest, "ended": ended}, f"{ended} session(s) ended"


# --------------------------------------------------------------------------- stats


def add_stats(commands: Any) -> None:
    parser = _add(
        commands,
        "stats",
        _memcached,
        _database,
        help="memcached's figures per node, and the database's counts",
        description="memcached's own figures for each node, from its stats command: "
        + ", ".join(admin.NODE_FIGURES)
        + ". Sessions cannot be counted on memcached alone: its keys cannot be listed, "
        "and curr_items counts session records, their variables and anything else on "
        "the node alike (a session is one item plus one per variable). With --database, "
        "the database's counts of sessions and variables are shown too.",
    )
    parser.set_defaults(run=run_stats)


def run_stats(args: argparse.Namespace) -> reports.Report:
    target = _target(args)  # validates --servers and --database
    try:
        nodes = admin.node_stats(args.servers, args.timeout)
        counts = target.tier.database.counts(time.time()) if target.tier is not None else None
        database = target.tier.database.describe() if target.tier is not None else None
    finally:
        target.close()
    data, text = reports.stats_report(nodes, database, counts)
    failed = [n.server for n in nodes if n.error is not None]
    if failed:
        raise NotDone(f"{', '.join(failed)} did not answer", (data, text))
    return data, text


# --------------------------------------------------------------------------- purge


def add_purge(commands: Any) -> None:
    parser = _add(
        commands,
        "purge",
        help="delete expired sessions from the database (run it from cron)",
        description="Delete the sessions whose idle or absolute timeout has passed.",
    )
    parser.add_argument("--database", required=True, metavar="URL", help="SQLAlchemy URL")
    parser.add_argument("--limit", type=_positive, default=None, help="at most this many")
    parser.add_argument(
        "--idle-timeout",
        type=_positive,
        default=None,
        metavar="SECONDS",
        help="the app's idle_timeout (or ttl) if not the default: a session that is only "
        "read renews its row at most once per half of it, so rows are purged half a "
        "window after their expiry",
    )
    parser.set_defaults(run=run_purge)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, not {text!r}")
    return int(text)


def run_purge(args: argparse.Namespace) -> reports.Report:
    from .config import SessionConfig

    config = SessionConfig.from_mapping({"database": args.database})
    window = config.record_ttl if args.idle_timeout is None else args.idle_timeout
    tier = admin.open_tier(config)
    from .sql import RENEWAL_SHARE  # SQLAlchemy is there: open_tier needs it

    try:
        purged = tier.database.purge(time.time(), limit=args.limit, trail=window * RENEWAL_SHARE)
    finally:
        tier.database.close()
    return {"purged": purged}, f"{purged} expired session(s) purged"


# --------------------------------------------------------------------------- main

#: Every command, as the function that adds its parser.
COMMANDS: tuple[Callable[[Any], None], ...] = (
    add_show,
    add_destroy,
    add_revoke,
    add_stats,
    add_purge,
)

#: Settings named as the command line spells them, for error messages.
_OPTIONS = {
    "memcache_servers": "--servers",
    "key_prefix": "--key-prefix",
    "timeout": "--timeout",
    "connect_timeout": "--timeout",
    "database": "--database",
    "absolute_timeout": "--absolute-timeout",
    "owner": "--owner",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m webapp2_sessions",
        description="Look after webapp2_sessions' sessions.",
        epilog=_EPILOG,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the admin command; returns the exit status (``--help`` included)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or argparse's own usage error
        return exc.code if isinstance(exc.code, int) else 2
    try:
        data, text = args.run(args)
    except ConfigurationError as exc:
        message = str(exc).removeprefix(f"webapp2_sessions setting {exc.key!r}: ")
        print(f"error: {_OPTIONS.get(exc.key, exc.key)}: {message}", file=sys.stderr)
        return 2
    except (NotDone, SessionError) as exc:
        if isinstance(exc, NotDone) and exc.output is not None:
            _print(args, *exc.output)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    _print(args, data, text)
    return 0


def _print(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    print(json.dumps(data) if args.json else text)
