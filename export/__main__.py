"""`python -m export train | cv | evaluate | retrain | fetch-corpus`: each sub-command lives in its own module."""

from __future__ import annotations

import sys

COMMANDS = {
    "train": "export.train",
    "evaluate": "export.evaluate",
    "cv": "export.cv",
    "retrain": "export.retrain",
    "fetch-corpus": "export.corpus",
}


USAGE = f"""usage: python -m export {{{'|'.join(COMMANDS)}}} [options]

The filterd training pipeline (needs the train extra: pip install 'filterd[train]').

  train         read a corpus, train, calibrate, export to ONNX and check it
  cv            cross-validate the recipe and its variants (the figures in docs/model.md)
  evaluate      score a model on labelled mail or its test split (JSON metrics)
  retrain       one retraining cycle on your own mail (config `retrain:`)
  fetch-corpus  download the SpamAssassin public corpus (checked against pinned SHA-256 values)

`python -m export COMMAND --help` describes a command's options."""


def main(argv: list[str]) -> int:
    if argv in (["-h"], ["--help"]):
        print(USAGE)
        return 0
    if not argv or argv[0] not in COMMANDS:
        print(USAGE, file=sys.stderr)
        return 2
    import importlib

    from export import extra

    try:
        module = importlib.import_module(COMMANDS[argv[0]])
    except ModuleNotFoundError as exc:
        if not extra.is_extra(exc):
            raise
        print(f"python -m export {argv[0]}: {extra.HINT} (no module named {exc.name!r})", file=sys.stderr)
        return 1
    from export.corpus import MailError

    try:
        return int(module.main(argv[1:]))
    except MailError as exc:   # mail named on the command line that is not there (cv, say)
        print(f"python -m export {argv[0]}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
