"""One nightly run in a process of its own, for the chaos run to kill: ``python -m bench.chaos.driver``.

It reads the IBKR_* and PREFECT_* environment like a worker's flow run would, imports the flow,
prints ``READY`` (so the caller times its kill from the flow's start, not from the interpreter's),
runs ``nightly_reconciliation`` once and prints one ``RESULT {json}`` line: the final state and each
account's status. Exit code 0 when the run Completed, 1 when it ended Failed, 2 when it raised.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import traceback


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ledger-url", required=True)
    parser.add_argument("--days", type=int, default=7)
    args = parser.parse_args(argv)

    from flows.nightly_reconciliation import nightly_reconciliation

    print("READY", flush=True)
    started = time.perf_counter()
    try:
        state = asyncio.run(
            nightly_reconciliation(days=args.days, ledger_url=args.ledger_url, return_state=True)
        )
    except BaseException as exc:  # the caller reports it; a kill -9 never gets here
        traceback.print_exc()
        result = {"state": "raised", "message": f"{type(exc).__name__}: {exc}", "accounts": []}
        print("RESULT " + json.dumps(result), flush=True)
        return 2
    data = state.result(raise_on_failure=False)
    accounts = data.get("accounts", []) if isinstance(data, dict) else []
    result = {
        "state": state.name,
        "message": state.message,
        "seconds": round(time.perf_counter() - started, 3),
        "accounts": [
            {"account_id": a["account_id"], "status": a["status"], "error": a.get("error")} for a in accounts
        ],
    }
    print("RESULT " + json.dumps(result), flush=True)
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    sys.exit(main())
