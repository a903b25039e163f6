"""The admin command: ``python -m webapp2_sessions SUBCOMMAND``.

``purge`` deletes expired sessions from the durable tier's database (for cron).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

from .errors import SessionError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m webapp2_sessions", description="Look after webapp2_sessions' sessions."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    purge = commands.add_parser(
        "purge",
        help="delete expired sessions from the database (run it from cron)",
        description="Delete the sessions whose idle or absolute timeout has passed.",
    )
    purge.add_argument("--database", required=True, help="SQLAlchemy URL of the database")
    purge.add_argument("--limit", type=int, default=None, help="at most this many sessions")
    purge.add_argument("--json", action="store_true", help="print JSON for scripts")
    args = parser.parse_args(argv)
    try:
        if args.command == "purge":
            return _purge(args.database, args.limit, args.json)
    except SessionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 2  # pragma: no cover - argparse rejects other commands


def _purge(url: str, limit: int | None, as_json: bool) -> int:
    from .config import SessionConfig
    from .sql import Database

    SessionConfig.from_mapping({"database": url})  # a clear error for a bad URL
    database = Database(url)
    try:
        purged = database.purge(time.time(), limit=limit)
    finally:
        database.close()
    print(json.dumps({"purged": purged}) if as_json else f"{purged} expired session(s) purged")
    return 0
