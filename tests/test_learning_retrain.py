"""Lessons folded into retraining: `export retrain` reads the taught messages beside its
folders (the taught class wins), and a newly installed model starts from a zero delta.
"""

from __future__ import annotations

import ast
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.learning import learn, points, spamd_port
from tests.fixtures.lifecycle import copy_model, shipped_model
from tests.fixtures.postfix import corpus_messages
from tests.fixtures.smtp import REPO, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.corpus]


def maildir(path: Path, messages: list[bytes]) -> Path:
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True)
    for i, raw in enumerate(messages):
        (path / "cur" / f"{i}:2,S").write_bytes(raw)
    return path


def test_retrain_reads_the_taught_messages_and_the_taught_class_wins(corpus_dir: Path,
                                                                    tmp_path: Path) -> None:
    ham = corpus_messages(corpus_dir, "easy_ham", 12)
    spam = corpus_messages(corpus_dir, "spam", 4)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"path": str(shipped_model()), "device": "cpu"},
        "learning": {"store": str(tmp_path / "store")},
        "retrain": {"ham": [str(maildir(tmp_path / "ham", ham[:10]))],
                    "spam": [str(maildir(tmp_path / "spam", spam[:3]))],
                    "model_dir": str(tmp_path / "model"), "work_dir": str(tmp_path / "work")}}))
    (tmp_path / "wrong.eml").write_bytes(ham[0])       # in the ham folder, taught as spam
    (tmp_path / "new.eml").write_bytes(ham[11])        # in no folder, taught as ham
    (tmp_path / "gone.eml").write_bytes(spam[3])       # taught, then forgotten
    assert learn(config, "--spam", str(tmp_path / "wrong.eml"), str(tmp_path / "gone.eml")).returncode == 0
    assert learn(config, "--ham", str(tmp_path / "new.eml")).returncode == 0
    assert learn(config, "--forget", str(tmp_path / "gone.eml")).returncode == 0
    # Too little mail to train (the cycle stops before training): what it read is in its log.
    done = subprocess.run([sys.executable, "-m", "export", "retrain", "-c", str(config)], cwd=REPO,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 1 and "too little labelled mail" in done.stderr, done.stderr
    assert "2 taught message(s) from the learning store" in done.stderr
    counts = ast.literal_eval(re.search(r"read \d+ messages \((\{.*?\})\)", done.stderr).group(1))
    assert counts["train_ham"] + counts["holdout_ham"] == 10 - 1 + 1
    assert counts["train_spam"] + counts["holdout_spam"] == 3 + 1


def test_a_newly_installed_model_starts_from_a_zero_delta(daemon_factory: Any, tmp_path: Path,
                                                         corpus_dir: Path) -> None:
    message = corpus_messages(corpus_dir, "spam", 1)[0]
    model = copy_model(shipped_model(), tmp_path / "model", version="before-retrain")
    daemon = daemon_factory(workers=2, spamd={"listen": "127.0.0.1:0"}, model={"path": str(model)},
                            learning={"store": str(tmp_path / "store")})
    port = spamd_port(daemon)
    shipped = points(port, message)
    (tmp_path / "m.eml").write_bytes(message)
    assert learn(daemon.config_path, "--ham", str(tmp_path / "m.eml")).returncode == 0
    wait_until(lambda: points(port, message) < 5.0, 1.0, "the lesson")
    shutil.rmtree(model)                                          # what export retrain installs
    copy_model(shipped_model(), model, version="after-retrain")
    daemon.signal(signal.SIGHUP)
    wait_until(lambda: "reloaded: model after-retrain" in daemon.log(), 60, "the reload")
    assert {points(port, message) for _ in range(16)} == {shipped}
    again = learn(daemon.config_path, "--ham", str(tmp_path / "m.eml"))
    assert "1 already learned" in again.out, again           # it is in the model now
