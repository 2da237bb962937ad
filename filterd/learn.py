"""`filterd learn --spam|--ham|--forget [-u USER] PATH…`: teach filterd, as sa-learn teaches SpamAssassin.

PATH is what `filterd classify` reads: a message file, a folder (Maildir included), an mbox
file, or `-` for one message on stdin. Each message becomes a lesson in the store that
config key `learning.store` names, made the way a spamd TELL makes it (learning/learner.py,
with the model `model.path` names): durable when this command moves on to the next one.
A running filterd, however many workers and hosts, follows that store and applies each
lesson within a second, so this command never talks to the daemon itself; it works the
same whether one runs or not. Run it as the user filterd runs as (the store's owner);
run as root, it gives what it creates to the store directory's owner.

At the end one line sums up: how many were learned, already learned (or, with --forget,
not learned), and unreadable. Exit status 0, 1 when a message could not be read or a
lesson could not be stored, 2 on a config error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from filterd.config import describe, load_config
from filterd.errors import ConfigError
from filterd.learning import LearningError
from filterd.mailfiles import iter_messages, message_files


def add_parser(sub: argparse._SubParsersAction, config_help: str) -> None:
    learn = sub.add_parser("learn", help="teach filterd spam or ham (or forget) from files, "
                                         "folders, mbox files or -")
    learn.add_argument("-c", "--config", default="config.yaml", help=config_help)
    which = learn.add_mutually_exclusive_group(required=True)
    which.add_argument("--spam", dest="op", action="store_const", const="spam")
    which.add_argument("--ham", dest="op", action="store_const", const="ham")
    which.add_argument("--forget", dest="op", action="store_const", const="forget")
    learn.add_argument("-u", "--user", default=None,
                       help="the lessons are this user's (with learning.per_user)")
    learn.add_argument("paths", nargs="+", help="message files, folders, mbox files or -")


def _count(paths: list[str]) -> int:
    """Files to read (the progress bar's total): folders walked as iter_messages walks them."""
    return sum(len(message_files(Path(p))) if Path(p).is_dir() else 1 for p in paths)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm   # imported here: `filterd serve` never needs these

    from filterd.learning.learner import Learner
    from filterd.learning.teacher import open_store
    from filterd.service.model import load_scorer

    try:
        config = load_config(args.config)
        scorer = load_scorer(config)
    except ConfigError as exc:
        print(f"filterd learn: {describe(args.config, exc)}", file=sys.stderr)
        return 2
    if config.learning is None:
        print(f"filterd learn: {args.config}: learning: null turns learning off", file=sys.stderr)
        return 2
    learner = Learner(open_store(config.learning.store), scorer, per_user=config.learning.per_user,
                      max_lessons=config.learning.max_lessons, max_users=config.learning.max_users)
    errors: list[str] = []
    changed = same = 0
    bar = tqdm(total=_count(args.paths), unit="file", disable=None, file=sys.stderr,
               desc=f"learning {args.op}")
    last = None
    for path, raw in iter_messages(args.paths, errors):
        try:
            done = learner.forget(raw, args.user) if args.op == "forget" else \
                learner.learn(raw, args.op, args.user)
        except LearningError as exc:
            bar.close()
            print(f"filterd learn: {path}: {exc}", file=sys.stderr)
            return 1
        changed, same = changed + done, same + (not done)
        if path.partition("#")[0] != last:
            bar.update(1)
            last = path.partition("#")[0]
    bar.close()
    for error in errors:
        print(f"filterd learn: {error}", file=sys.stderr)
    verb = "forgotten" if args.op == "forget" else f"learned as {args.op}"
    other = "were not learned" if args.op == "forget" else "already learned"
    print(f"{changed} message(s) {verb}, {same} {other}, {len(errors)} unreadable "
          f"(store {learner.store.describe()})")
    return 1 if errors else 0
