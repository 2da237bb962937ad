"""`filterd classify`: files, folders, Maildir, mbox and stdin → one JSON line per message."""

from __future__ import annotations

import json
import mailbox
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from filterd.pipeline.scorer import Scorer

DATA = Path(__file__).parent / "data" / "mime"
REPO = Path(__file__).resolve().parent.parent


def _classify(*args: str, stdin: bytes = b"") -> tuple[int, list[dict], str]:
    proc = subprocess.run([sys.executable, "-m", "filterd", "classify", *args], input=stdin,
                          check=False, capture_output=True, cwd=REPO, timeout=120)
    lines = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    return proc.returncode, lines, proc.stderr.decode()


def test_folder_maildir_mbox_and_stdin(tmp_path: Path, model_dir: Path) -> None:
    shutil.copytree(DATA, tmp_path / "plain")
    md = mailbox.Maildir(tmp_path / "Maildir", create=True)
    md.add(b"Subject: in new\n\nhello")
    md.add(mailbox.MaildirMessage(b"Subject: in cur\n\nhello"))   # goes to new/ too
    (tmp_path / "Maildir" / "tmp" / "partial").write_bytes(b"Subject: half written")
    box = mailbox.mbox(tmp_path / "box.mbox")
    box.add(b"Subject: one\n\nfirst")
    box.add(b"Subject: two\n\nsecond")
    box.close()
    rc, lines, err = _classify("--model", str(model_dir), str(tmp_path / "plain"),
                               str(tmp_path / "Maildir"), str(tmp_path / "box.mbox"), "-",
                               stdin=b"Subject: from stdin\n\nhello")
    assert rc == 0, err
    paths = [line["path"] for line in lines]
    assert len(lines) == len(list(DATA.glob("*"))) + 2 + 2 + 1
    assert paths[-1] == "-" and not any("partial" in p for p in paths)
    assert sum(p.startswith(str(tmp_path / "box.mbox") + "#") for p in paths) == 2
    scorer = Scorer.load(model_dir, "cpu")
    for line in lines:
        assert 0.0 <= line["score"] <= 1.0
        t = scorer.thresholds
        expected = ("reject" if line["score"] >= t.reject else
                    "tag" if line["score"] >= t.tag else "pass")
        assert line["action"] == expected


def test_scores_match_the_scorer(model_dir: Path) -> None:
    files = sorted(DATA.glob("*.eml"))
    rc, lines, _ = _classify("--model", str(model_dir), *map(str, files))
    assert rc == 0
    direct = Scorer.load(model_dir, "cpu").score([f.read_bytes() for f in files])
    assert [line["path"] for line in lines] == [str(f) for f in files]
    assert [line["score"] for line in lines] == pytest.approx(direct, abs=1e-5)


def test_missing_path_and_bad_model(tmp_path: Path, model_dir: Path) -> None:
    rc, lines, err = _classify("--model", str(model_dir), str(tmp_path / "absent"),
                               str(DATA / "empty_body.eml"))
    assert rc == 1 and "absent" in err and len(lines) == 1
    rc, lines, err = _classify("--model", str(tmp_path), str(DATA / "empty_body.eml"))
    assert rc == 1 and "manifest.json" in err and lines == []
