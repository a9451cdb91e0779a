"""``ibkr-tasks db ...``: ledger database commands.

``ibkr-tasks db upgrade [URL]`` brings the ledger schema to the newest revision (creating it in an
empty database). URL defaults to ``IBKR_LEDGER_URL``, then ``sqlite:///ibkr_ledger.db``.
``ibkr-tasks db current [URL]`` prints the revision the database is at.
"""

from __future__ import annotations

import argparse
import sys

from ibkr_tasks.errors import IBKRError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ibkr-tasks db", description="Ledger database commands.")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("upgrade", help="create or upgrade the ledger schema to the newest revision")
    up.add_argument(
        "url", nargs="?", help="database URL (default: IBKR_LEDGER_URL or sqlite:///ibkr_ledger.db)"
    )
    up.add_argument("--revision", default="head", help="target revision (default: head)")
    cur = sub.add_parser("current", help="print the schema revision of the database")
    cur.add_argument(
        "url", nargs="?", help="database URL (default: IBKR_LEDGER_URL or sqlite:///ibkr_ledger.db)"
    )
    return parser


def main(argv: list[str]) -> int:
    """Run ``ibkr-tasks db`` with ``argv`` (without the leading ``db``); return the exit status."""
    from ibkr_tasks.ledger import engine as engine_mod

    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help and on usage errors
        return int(exc.code or 0)
    try:
        url = engine_mod.resolve_url(args.url)
    except IBKRError as exc:  # not a URL, or a database the ledger does not support
        print(f"ibkr-tasks db: {exc}", file=sys.stderr)
        return 1
    shown = url.render_as_string(hide_password=True)
    engine = engine_mod.create_ledger_engine(url)
    try:
        if args.command == "upgrade":
            before = engine_mod.current_revision(engine)
            engine_mod.upgrade(engine, args.revision)
            after = engine_mod.current_revision(engine)
            if before == after:
                print(f"{shown}: already at revision {after}")
            else:
                print(f"{shown}: upgraded from {before or 'an empty database'} to revision {after}")
        else:
            current = engine_mod.current_revision(engine)
            head = engine_mod.head_revision()
            state = "up to date" if current == head else f"newest is {head}: run `ibkr-tasks db upgrade`"
            print(f"{shown}: revision {current or '(none)'} ({state})")
        return 0
    except IBKRError as exc:
        print(f"ibkr-tasks db: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a connection or SQL error: say which database, without its password
        print(
            f"ibkr-tasks db: {args.command} of {shown} failed: {type(exc).__name__}: {exc}", file=sys.stderr
        )
        return 1
    finally:
        engine.dispose()
