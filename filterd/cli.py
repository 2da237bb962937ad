"""Command line: `filterd serve | check-config | classify | learn`; exit codes 0 ok, 1 runtime error, 2 usage/config.

`serve` is dispatched here to the one serving shape the config asks for: a single Daemon
(service/daemon.py), a Supervisor of N workers (service/supervisor.py), or, when the
supervisor starts us with --worker, one of those workers (service/worker.py).
"""

from __future__ import annotations

import argparse
import logging
import sys

from filterd import __version__
from filterd.config import Config, describe, load_config
from filterd.errors import ConfigError
from filterd.service import eventloop
from filterd.service import log as logsetup

log = logging.getLogger(__name__)
CONFIG_HELP = "the YAML config file (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="filterd", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"filterd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the SMTP filter in the foreground")
    serve.add_argument("-c", "--config", default="config.yaml", help=CONFIG_HELP)
    # Set by the supervisor for its worker processes (workers > 1); not for people.
    for name in ("--worker", "--listen-fd", "--channel-fd", "--milter-fd", "--spamd-fd"):
        serve.add_argument(name, type=int, default=None, help=argparse.SUPPRESS)
    check = sub.add_parser("check-config", help="validate a config file and its model")
    check.add_argument("-c", "--config", default="config.yaml", help=CONFIG_HELP)
    classify = sub.add_parser("classify", help="score message files, folders or - (stdin)")
    classify.add_argument("--model", default=None,
                          help="model artifact folder (default: $FILTERD_MODEL, else the "
                               "model installed with filterd)")
    classify.add_argument("--explain", action="store_true",
                          help="add the features behind each score (JSON)")
    classify.add_argument("paths", nargs="+", help="message files, folders, mbox files or -")
    from filterd import learn   # its parser beside its command (filterd/learn.py)

    learn.add_parser(sub, CONFIG_HELP)
    return parser


def serve(args: argparse.Namespace) -> int:
    """`filterd serve -c FILE`: 0 after a graceful stop, 1 on a runtime error, 2 on a bad config."""
    logsetup.setup("info", tag=f"worker {args.worker}" if args.worker is not None else "")
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        log.error("%s", describe(args.config, exc))
        return 2
    logsetup.set_level(config.log.level)
    return _serve(args, config)


def _serve(args: argparse.Namespace, config: Config) -> int:
    if args.worker is not None or config.worker_count() == 1:   # the processes that hold mail
        from filterd.service.malloc import return_big_buffers

        return_big_buffers()
    if args.worker is not None:
        from filterd.service.worker import run_worker

        frontend_fds = {name: fd for name, fd in (("milter", args.milter_fd), ("spamd", args.spamd_fd))
                        if fd is not None}
        return run_worker(args.config, config, args.listen_fd, args.channel_fd, frontend_fds)
    if config.worker_count() > 1:
        from filterd.service.supervisor import Supervisor

        return eventloop.run(Supervisor(args.config, config).amain(), config.event_loop)
    from filterd.service.daemon import Daemon

    return eventloop.run(Daemon(args.config, config).amain(), config.event_loop)


def check_config(args: argparse.Namespace) -> int:
    """`filterd check-config -c FILE`: the checks `serve` runs at start, plus loading the model
    (manifest, every SHA-256, one warm-up inference); 0 when both are good, else 2."""
    from filterd.service.model import load_scorer

    try:
        config = load_config(args.config)
        scorer = load_scorer(config)
    except ConfigError as exc:
        print(f"filterd: {describe(args.config, exc)}", file=sys.stderr)
        return 2
    print(f"{args.config}: OK (model {scorer.version} on {scorer.provider}, "
          f"{config.worker_count()} worker(s), listening on {config.listen})")
    if config.learning is not None:
        from filterd.learning.teacher import status

        print(status(config.learning, scorer))
    return 0


def classify(args: argparse.Namespace) -> int:
    from filterd import classify as command

    return command.run(args)


def learn(args: argparse.Namespace) -> int:
    from filterd import learn as command

    return command.run(args)


COMMANDS = {"serve": serve, "check-config": check_config, "classify": classify, "learn": learn}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(COMMANDS[args.command](args))


if __name__ == "__main__":
    sys.exit(main())
