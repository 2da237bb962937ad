"""The shipped model on short and unusual mail, written for this test (tests/data/short).

The corpus the model learns from has few short personal notes; real mail has many. A
three-line note from a colleague must pass, and the obvious spam beside it must be flagged,
with every spam above every ham. Run through `filterd classify`, as a postmaster would.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

DATA = Path(__file__).parent / "data" / "short"
REPO = Path(__file__).resolve().parent.parent


def _classify(model_dir: Path, paths: list[Path]) -> dict[str, dict]:
    proc = subprocess.run([sys.executable, "-m", "filterd", "classify", "--model", str(model_dir),
                           *map(str, paths)], check=True, capture_output=True, cwd=REPO, timeout=120)
    lines = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    return {Path(line["path"]).parent.name + "/" + Path(line["path"]).name: line for line in lines}


def test_short_ham_passes_and_short_spam_is_flagged(model_dir: Path) -> None:
    ham, spam = sorted((DATA / "ham").glob("*.eml")), sorted((DATA / "spam").glob("*.eml"))
    assert len(ham) >= 5 and len(spam) >= 5
    got = _classify(model_dir, ham + spam)
    for name, line in got.items():
        wanted = ("ham",) if name.startswith("ham/") else ("tagged", "rejected")
        assert line["action"] in wanted, (name, line)
    worst_ham = max(line["score"] for name, line in got.items() if name.startswith("ham/"))
    least_spam = min(line["score"] for name, line in got.items() if name.startswith("spam/"))
    assert worst_ham < least_spam, got
