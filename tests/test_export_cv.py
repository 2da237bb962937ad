"""`python -m export cv`: the recipe judged shuffled and forward in time, with bogofilter beside it.

The pure parts (the forward splits, the grid, the combination with a fixed GRU share) are
checked directly; the command runs once, tiny, on the corpus, with the real bogofilter.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.prereq import missing, require_module

require_module("torch")
require_module("sklearn")

from export import cv, recipe, validate  # noqa: E402
from export.corpus import Sample  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def _sample(folder: str, label: int, date: str, body: str = "hi") -> Sample:
    raw = f"Date: {date}\nSubject: {body}\n\n{body}\n".encode()
    return Sample(raw, label, f"20030228_{folder}.tar.bz2:{folder}/{body}")


def test_forward_split_by_folders_and_by_date() -> None:
    samples = [_sample("easy_ham", 0, "Mon, 2 Sep 2002 10:00:00 +0000", "a"),
               _sample("spam", 1, "Tue, 3 Sep 2002 10:00:00 +0000", "b"),
               _sample("easy_ham_2", 0, "Mon, 1 Jul 2002 10:00:00 +0000", "c"),
               _sample("hard_ham", 0, "Wed, 4 Sep 2002 10:00:00 +0000", "d"),
               _sample("spam_2", 1, "Thu, 5 Sep 2002 10:00:00 +0000", "e")]
    old, new = validate.forward_split(samples, "folders", 0.3)     # type: ignore[misc]
    assert old.tolist() == [0, 1] and new.tolist() == [2, 3, 4]
    old, new = validate.forward_split(samples, "date", 0.4)        # type: ignore[misc]
    assert old.tolist() == [0, 1, 2] and new.tolist() == [3, 4]    # the two newest by Date
    assert validate.forward_split(samples[:3], "folders", 0.3) is None   # no newer spam
    assert validate.date_of(b"Subject: x\n\nDate: Mon, 2 Sep 2002 10:00:00 +0000\n") == 0.0
    with pytest.raises(ValueError):
        validate.forward_split(samples, "random", 0.3)


def test_grid_expands_every_combination() -> None:
    got = cv.designs(["epochs=2"], ["rnn_share=0,1", "wide_c=1,10"])
    assert got == [["epochs=2", "rnn_share=0", "wide_c=1"], ["epochs=2", "rnn_share=0", "wide_c=10"],
                   ["epochs=2", "rnn_share=1", "wide_c=1"], ["epochs=2", "rnn_share=1", "wide_c=10"]]
    with pytest.raises(ValueError):
        cv.designs([], ["rnn_share"])


def test_combination_gives_the_gru_its_share() -> None:
    rng = np.random.default_rng(3)
    labels = np.repeat([0, 1], 200)
    wide = (labels * 2 - 1) * 3.0 + rng.normal(0, 1.0, 400)
    rnn = (labels * 2 - 1) * 20.0 + rng.normal(0, 15.0, 400)
    comb = recipe.fit_combination(wide, rnn, labels, 10.0, rnn_share=2.0)
    # each logit divided by its spread, the GRU's counted twice: a_rnn / a_wide = 2 sd(wide) / sd(rnn)
    assert comb.a_rnn / comb.a_wide == pytest.approx(2.0 * np.std(wide) / np.std(rnn))
    free = recipe.fit_combination(wide, rnn, labels, 10.0, rnn_share=0.0)
    assert free.a_wide > 0 and free.a_rnn != pytest.approx(comb.a_rnn)


@pytest.mark.torch
@pytest.mark.corpus
@pytest.mark.slow
def test_cv_prints_shuffled_and_forward_figures_with_bogofilter(corpus_dir: Path, tmp_path: Path) -> None:
    if shutil.which("bogofilter") is None:
        missing("bogofilter is not installed (Debian: apt-get install bogofilter)")
    out = tmp_path / "cv.json"
    proc = subprocess.run([sys.executable, "-m", "export", "cv", "--corpus", str(corpus_dir),
                           "--set", "max_messages=240", "--set", "epochs=1", "--set", "average=1",
                           "--set", "folds=2", "--set", "max_tokens=32", "--set", "hidden=8",
                           "--set", "embed=8", "--set", "threads=1", "--grid", "rnn_share=0,1",
                           "--json", str(out)], check=False, capture_output=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    results = json.loads(out.read_text())
    assert len(results) == 2
    said = proc.stdout.decode()
    for name, row in results.items():
        assert name in said
        assert set(row) == {"shuffled", "forward.folders"}
        for part in ("whole", "rnn", "wide"):
            assert 0.0 <= row["shuffled"][part]["auc"]["min"] <= row["shuffled"][part]["auc"]["max"] <= 1.0
        fwd = row["forward.folders"]
        assert 0.5 < fwd["bogofilter"]["auc"] <= 1.0       # the reference row, really run
        assert fwd["whole"]["at_tag"]["threshold"] == fwd["thresholds"]["tag"]
    rows = list(results.values())
    # the combination-only setting reuses the same halves: the parts are the same numbers
    assert rows[0]["forward.folders"]["rnn"]["auc"] == rows[1]["forward.folders"]["rnn"]["auc"]
    assert "bogofilter" in said and "at its own tag threshold" in said
