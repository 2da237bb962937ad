"""`python -m export train | evaluate | retrain | fetch-corpus`: each sub-command lives in its own module."""

from __future__ import annotations

import sys

COMMANDS = {
    "train": "export.train",
    "evaluate": "export.evaluate",
    "retrain": "export.retrain",
    "fetch-corpus": "export.corpus",
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m export {{{'|'.join(COMMANDS)}}} [options]", file=sys.stderr)
        return 2
    import importlib

    module = importlib.import_module(COMMANDS[argv[0]])
    return int(module.main(argv[1:]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
