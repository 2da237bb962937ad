"""The reference row: Debian's bogofilter trained and scored on the same split as filterd.

bogofilter (a Bayesian filter: Robinson-Fisher combining over word tokens tagged with the
header they came from) is what a postmaster compares us with. It is run as a program, in
a private word-list directory: every training message registered once (`-s` / `-n`), then
every test message scored (`-T`, the spamicity in 0..1). The binary comes from the Debian
package `bogofilter`; without it there is no reference row and `export cv` says so.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

BINARY = "bogofilter"


def available() -> bool:
    return shutil.which(BINARY) is not None


def train_and_score(train: Sequence[bytes], labels: Sequence[int],
                    test: Sequence[bytes]) -> np.ndarray:
    """bogofilter's spamicity of each test message, trained on `train` (1 = spam)."""
    with tempfile.TemporaryDirectory(prefix="filterd-bogo-") as tmp:
        root = Path(tmp)
        wordlist = root / "db"
        wordlist.mkdir()
        for label, flag in ((1, "-s"), (0, "-n")):
            files = _write(root / f"train{label}", [m for m, y in zip(train, labels) if y == label])
            if files:
                _run([BINARY, "-d", str(wordlist), flag, "-B", *files])
        files = _write(root / "test", test)
        out = _run([BINARY, "-d", str(wordlist), "-T", "-B", *files])
        scores = {}
        for line in out.splitlines():     # "PATH X 0.123456": file, verdict letter, spamicity
            fields = line.split()
            if len(fields) >= 3:
                scores[fields[0]] = float(fields[2])
        return np.array([scores[f] for f in files])


def _write(folder: Path, messages: Sequence[bytes]) -> list[str]:
    folder.mkdir()
    paths = []
    for i, raw in enumerate(messages):
        path = folder / f"{i:06d}"
        path.write_bytes(raw)
        paths.append(str(path))
    return paths


def _run(argv: list[str]) -> str:
    # bogofilter's exit status is the verdict (0 spam, 1 ham, 2 unsure) when scoring, 3 on error
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode == 3:
        raise RuntimeError(f"bogofilter failed: {done.stderr.strip()}")
    return done.stdout
