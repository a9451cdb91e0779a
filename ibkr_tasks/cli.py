"""The ``ibkr-tasks`` command: ``setup``, ``sim ...``, ``db upgrade [URL]``, ``flex import PATH...`` and
``limits show|create``."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    usage = (
        "usage: ibkr-tasks {setup,sim,db,flex,limits} ...\n"
        "  setup   prepare the Prefect server (block type, pacing limits, crashed-run automation)\n"
        "  sim     run the Client Portal Gateway simulator\n"
        "  db      ledger database commands (db upgrade [URL])\n"
        "  flex    IBKR statements (flex import PATH... [--ledger URL])\n"
        "  limits  IBKR pacing on Prefect global concurrency limits (limits show|create)"
    )
    if not args or args[0] in {"-h", "--help"}:
        print(usage)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "setup":
        from ibkr_tasks.setup import main as setup_main

        return setup_main(rest)
    if command == "sim":
        from ibkr_tasks.sim.__main__ import main as sim_main

        return sim_main(rest)
    if command == "db":
        from ibkr_tasks.ledger.cli import main as db_main

        return db_main(rest)
    if command == "flex":
        from ibkr_tasks.flex.cli import main as flex_main

        return flex_main(rest)
    if command == "limits":
        from ibkr_tasks.prefect_limits import main as limits_main

        return limits_main(rest)
    print(f"ibkr-tasks: unknown command {command!r}\n{usage}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
