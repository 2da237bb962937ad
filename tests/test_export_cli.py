"""`python -m export`'s bad input: one line on stderr and a non-zero exit, never a traceback.

Each command runs as a user would, in a subprocess: a corpus or mail folder that is not
there or holds no mail, a model with no test split, an `--out` that already holds a model,
a config that cannot be read or lists no folders, and a Python without torch (the train
extra is not installed: `sys.modules["torch"] = None` makes `import torch` fail as it does
in the README's `[fast]` install).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.fixtures.lifecycle import shipped_model
from tests.fixtures.smtp import REPO

NO_TORCH = ("import runpy, sys; sys.modules['torch'] = None; sys.argv[0] = 'export'; "
            "runpy.run_module('export', run_name='__main__')")
HINT = "training needs the train extra: pip install 'filterd[train]' (no module named 'torch')"


def export(*args: str, torch: bool = True) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "export"] if torch else [sys.executable, "-c", NO_TORCH]
    return subprocess.run([*command, *args], check=False, capture_output=True, text=True,
                          cwd=REPO, timeout=300)


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a failed command (and nothing on stdout)."""
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr and result.stdout == "", result
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_missing_corpus_and_folders(tmp_path: Path) -> None:
    assert one_line(export("train", "--corpus", "/nonexist", "--out", str(tmp_path / "m"))) == \
        "train: /nonexist: no such file or folder"
    assert one_line(export("evaluate", "--ham", "/nonexist", "--spam", "/nonexist")) == \
        "evaluate: /nonexist: no such file or folder"
    assert one_line(export("cv", "--corpus", "/nonexist")) == "python -m export cv: /nonexist: no such file or folder"
    (tmp_path / "empty").mkdir()
    assert one_line(export("evaluate", "--ham", str(tmp_path / "empty"), "--spam", str(tmp_path / "empty"))) == \
        f"evaluate: {tmp_path / 'empty'}: no mail messages (of a Maildir, only cur/ and new/ are read)"
    assert not (tmp_path / "m").exists()


def test_evaluate_a_model_without_test_split_says_what_it_can_do(corpus_dir: Path) -> None:
    line = one_line(export("evaluate", "--model", str(shipped_model()), "--corpus", str(corpus_dir)))
    assert line.startswith(f"evaluate: {shipped_model()} was trained on all its mail (test_frac 0 in split.json)")
    assert "--ham/--spam" in line and "--split all" in line


def test_evaluate_offers_only_splits_a_model_can_have(corpus_dir: Path) -> None:
    """Artifacts record val_frac 0 (thresholds come from out-of-fold scores): no --split val."""
    got = export("evaluate", "--model", str(shipped_model()), "--corpus", str(corpus_dir), "--split", "val")
    assert got.returncode == 2 and "invalid choice: 'val'" in got.stderr, got


def test_train_refuses_an_out_folder_that_holds_a_model(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "manifest.json").write_text("{}")
    line = one_line(export("train", "--corpus", "/nonexist", "--out", str(tmp_path / "model")))
    assert line == f"train: {tmp_path / 'model'} already exists: pass --force to overwrite the model in it"
    assert (tmp_path / "model" / "manifest.json").read_text() == "{}"
    forced = one_line(export("train", "--corpus", "/nonexist", "--out", str(tmp_path / "model"), "--force"))
    assert forced == "train: /nonexist: no such file or folder"    # went on to read the mail


@pytest.mark.parametrize("command", ["train", "cv"])
def test_training_without_torch_is_one_line(command: str, tmp_path: Path) -> None:
    result = export(command, "--corpus", str(tmp_path), "--out", str(tmp_path / "m"), torch=False)
    assert one_line(result) == f"python -m export {command}: {HINT}"


def test_retrain_without_torch_is_one_line_and_reads_nothing(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"retrain": {"ham": [str(tmp_path / "ham")], "spam": [str(tmp_path / "spam")],
                                                  "model_dir": str(tmp_path / "model"),
                                                  "work_dir": str(tmp_path / "work")},
                                      "learning": None}))
    assert one_line(export("retrain", "-c", str(config), torch=False)) == f"retrain: {HINT}"


def test_retrain_config_errors_name_the_file_once_and_no_folders_is_said(tmp_path: Path) -> None:
    absent = tmp_path / "absent.yaml"
    result = export("retrain", "-c", str(absent))
    assert result.returncode == 2 and result.stderr.count(str(absent)) == 1, result.stderr
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"retrain": {"model_dir": str(tmp_path / "model"),
                                                  "work_dir": str(tmp_path / "work")},
                                      "learning": None}))
    failed = export("retrain", "-c", str(config))
    assert failed.returncode == 1, failed
    errors = [line for line in failed.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and errors[0].endswith(
        f"retrain failed: no folders configured: list your ham and spam folders under "
        f"retrain.ham and retrain.spam in {config}"), failed.stderr


def test_evaluate_gives_the_same_figures_however_the_mail_is_named(corpus_dir: Path, tmp_path: Path) -> None:
    """The same messages as a labelled corpus folder (--corpus --split all) and as --ham and
    --spam give the same JSON, to the last digit."""
    import tarfile

    for tarball, kind in (("20030228_hard_ham.tar.bz2", "ham"), ("20050311_spam_2.tar.bz2", "spam")):
        (tmp_path / "corpus" / kind).mkdir(parents=True)
        with tarfile.open(corpus_dir / tarball) as tar:
            members = [m for m in tar if m.isfile() and not m.name.endswith("cmds")][:30]
            for member in members:
                (tmp_path / "corpus" / kind / Path(member.name).name).write_bytes(
                    tar.extractfile(member).read())  # type: ignore[union-attr]
    model = ["--model", str(shipped_model())]
    whole = export("evaluate", *model, "--corpus", str(tmp_path / "corpus"), "--split", "all")
    named = export("evaluate", *model, "--ham", str(tmp_path / "corpus" / "ham"),
                   "--spam", str(tmp_path / "corpus" / "spam"))
    assert whole.returncode == 0 and named.returncode == 0, (whole.stderr, named.stderr)
    figures = [{k: v for k, v in json.loads(r.stdout).items() if k != "malformed_skipped"}
               for r in (whole, named)]
    assert figures[0] == figures[1]
    assert (figures[0]["ham"], figures[0]["spam"]) == (30, 30)
