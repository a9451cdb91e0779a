"""``python -m ibkr_tasks.sim`` / ``ibkr-tasks sim``: serve the simulator on loopback over plain http."""

from __future__ import annotations

import argparse
import gc
import sys

from ibkr_tasks.sim.scenario import Scenario


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ibkr-tasks sim",
        description="Run the Client Portal Gateway simulator (API under /v1/api, control under /sim).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--scenario", help="YAML scenario file (keys of ibkr_tasks.sim.Scenario)")
    parser.add_argument(
        "--demo", action="store_true", help="start from Scenario.demo() instead of the defaults"
    )
    parser.add_argument("--seed", type=int, help="overrides the scenario's seed")
    parser.add_argument("--accounts", type=int, help="overrides the scenario's number of accounts")
    parser.add_argument("--log-level", default="warning")
    return parser


def scenario_from_args(args: argparse.Namespace) -> Scenario:
    """The scenario the command line describes (file or demo, then --seed/--accounts overrides)."""
    if args.scenario:
        scenario = Scenario.from_yaml(args.scenario)
    elif args.demo:
        scenario = Scenario.demo()
    else:
        scenario = Scenario()
    updates = {}
    if args.seed is not None:
        updates["seed"] = args.seed
    if args.accounts is not None:
        updates["accounts"] = args.accounts
    return Scenario.model_validate({**scenario.model_dump(), **updates}) if updates else scenario


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, build the app and serve it with uvicorn until interrupted. Returns an exit code."""
    args = build_parser().parse_args(argv)
    try:
        scenario = scenario_from_args(args)
    except (OSError, ValueError) as exc:
        print(f"ibkr-tasks sim: bad scenario: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    from ibkr_tasks.sim.asgi import create_app

    app = create_app(scenario, served=True)
    # The simulated brokerage is built once and lives as long as the server: keep it out of the
    # collector's scans, so a full collection never lands in the middle of a request.
    gc.collect()
    gc.freeze()
    accounts = ", ".join(app.sim.book.accounts)
    print(
        f"IBKR gateway simulator on http://{args.host}:{args.port}/v1/api (seed {scenario.seed}; accounts {accounts})\n"
        f"  try: curl -X POST http://{args.host}:{args.port}/v1/api/iserver/auth/status",
        flush=True,
    )
    # A listening socket and protocol that pass on the kernel's receive time of each request: the
    # limits are checked against when a request arrived, however busy this process was then.
    from ibkr_tasks.sim.arrival import ArrivalH11Protocol, listening_socket

    config = uvicorn.Config(
        app, host=args.host, port=args.port, log_level=args.log_level, lifespan="on", http=ArrivalH11Protocol
    )
    uvicorn.Server(config).run(sockets=[listening_socket(args.host, args.port)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
