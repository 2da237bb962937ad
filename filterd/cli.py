"""Command line: `filterd serve | check-config | classify`; exit codes 0 ok, 1 runtime error, 2 usage/config."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="filterd", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the SMTP filter in the foreground")
    serve.add_argument("-c", "--config", default="config.yaml")
    # Set by the supervisor for its worker processes (workers > 1); not for people.
    for name in ("--worker", "--listen-fd", "--channel-fd"):
        serve.add_argument(name, type=int, default=None, help=argparse.SUPPRESS)
    check = sub.add_parser("check-config", help="validate a config file and its model")
    check.add_argument("-c", "--config", default="config.yaml")
    classify = sub.add_parser("classify", help="score message files, folders or - (stdin)")
    classify.add_argument("--model", default=None, help="model artifact folder")
    classify.add_argument("paths", nargs="+")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "classify":
        from filterd import classify as command
    elif args.command == "check-config":
        from filterd import config as command  # type: ignore[no-redef]
    else:
        from filterd.service import daemon as command  # type: ignore[no-redef]
    return int(command.run(args))


if __name__ == "__main__":
    sys.exit(main())
