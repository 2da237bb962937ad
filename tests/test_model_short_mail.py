"""The shipped model on short and unusual mail, written for this test (tests/data/short).

The corpus the model learns from has few short personal notes; real mail has many. A
three-line note from a colleague must pass, the obvious spam beside it must be flagged, and
every spam must score above every ham. Run through `filterd classify`, as a postmaster would.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data" / "short"
REPO = Path(__file__).resolve().parent.parent


def _classify(model_dir: Path, kind: str) -> dict[str, dict]:
    paths = sorted((DATA / kind).glob("*.eml"))
    assert len(paths) >= 5
    proc = subprocess.run([sys.executable, "-m", "filterd", "classify", "--model", str(model_dir),
                           *map(str, paths)], check=True, capture_output=True, cwd=REPO, timeout=120)
    lines = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    return {Path(line["path"]).name: line for line in lines}


def test_short_spam_is_flagged_and_scores_above_every_short_ham(model_dir: Path) -> None:
    ham, spam = _classify(model_dir, "ham"), _classify(model_dir, "spam")
    assert all(line["action"] in ("tagged", "rejected") for line in spam.values()), spam
    assert max(h["score"] for h in ham.values()) < min(s["score"] for s in spam.values()), (ham, spam)


@pytest.mark.xfail(strict=True, reason="known defect (docs/model.md, short mail): the GRU reads a "
                   "short note between people it never saw as spam, and the note is tagged")
def test_every_short_personal_note_passes(model_dir: Path) -> None:
    ham = _classify(model_dir, "ham")
    assert all(line["action"] == "ham" for line in ham.values()), ham
