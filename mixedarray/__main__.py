"""Command line: ``python -m mixedarray demo`` and ``python -m mixedarray estimate``."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mixedarray", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="show what the library does on every installed array library"
    )
    demo.add_argument("--seed", type=int, default=0, help="seed of the example scores")
    from mixedarray import _estimate

    estimate = commands.add_parser(
        "estimate",
        help="Monte Carlo entropy, KL, cross-entropy and face statistics, on any backend",
        description=_estimate.__doc__,
    )
    _estimate.add_arguments(estimate)
    args = parser.parse_args(argv)
    if args.command == "demo":
        from mixedarray._demo import run

        run(seed=args.seed)
        return 0
    try:
        return _estimate.main(args)
    except ValueError as error:
        parser.exit(2, f"python -m mixedarray estimate: error: {error}\n")


if __name__ == "__main__":
    sys.exit(main())
