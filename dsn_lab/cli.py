"""Command line: ``python -m dsn_lab {demo,train,evaluate,data} ...`` (``--help`` on each)."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dsn_lab",
        description="DSN (IJCAI 2021) zero-shot sketch-based image retrieval: demo, training, evaluation, data.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    from dsn_lab.data import cli as data_cli

    data_parser = sub.add_parser("data", help="fetch, import and inspect datasets")
    data_cli.add_arguments(data_parser)
    data_parser.set_defaults(handler=data_cli.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
