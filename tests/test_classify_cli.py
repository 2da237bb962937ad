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
    unscored = [line for line in lines if line["action"] == "not_mail"]
    assert [line["path"] for line in unscored] == [str(tmp_path / "plain" / name)
                                                   for name in ("expected.json", "no_headers.eml")]
    for line in lines:
        if line in unscored:
            continue
        assert 0.0 <= line["score"] <= 1.0
        t = scorer.thresholds
        expected = ("rejected" if line["score"] >= t.reject else
                    "tagged" if line["score"] >= t.tag else "ham")
        assert line["action"] == expected


def test_scores_match_the_scorer(model_dir: Path) -> None:
    files = sorted(f for f in DATA.glob("*.eml") if f.name != "no_headers.eml")   # not mail
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


def test_not_mail_gets_a_reason_not_a_score(tmp_path: Path, model_dir: Path) -> None:
    """Empty, binary (a program, a numpy file), JSON, and a Maildir's own files: answered
    `not_mail` with the reason and no score; a Maildir's top-level files are not read."""
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "program").write_bytes(Path("/bin/true").read_bytes()[:65536])
    (tmp_path / "data.json").write_bytes(b'{"subject": "not mail", "to": ["a@example.org"]}\n')
    maildir = mailbox.Maildir(tmp_path / "Maildir", create=True)
    maildir.add(b"Subject: the one message\n\nhello")
    (tmp_path / "Maildir" / "dovecot-uidlist").write_bytes(b"3 V1700000000 N2 G0123\n1 :17.M1.host\n")
    files = [tmp_path / "empty", tmp_path / "program", tmp_path / "data.json", model_dir / "idf.npy"]
    rc, lines, err = _classify("--model", str(model_dir), *map(str, files), str(tmp_path / "Maildir"))
    assert rc == 0, err
    assert [(line["path"], line["action"], line.get("reason"), "score" in line) for line in lines[:4]] == [
        (str(files[0]), "not_mail", "empty", False),
        (str(files[1]), "not_mail", "binary data", False),
        (str(files[2]), "not_mail", "no header fields at the start", False),
        (str(files[3]), "not_mail", "binary data", False)]
    assert len(lines) == 5 and "/Maildir/new/" in lines[4]["path"] and "score" in lines[4]


def test_empty_folder_says_so_and_fails(tmp_path: Path, model_dir: Path) -> None:
    (tmp_path / "nothing").mkdir()
    rc, lines, err = _classify("--model", str(model_dir), str(tmp_path / "nothing"))
    assert rc == 1 and lines == []
    said = "no messages in this folder (a Maildir's are in cur/ and new/)"
    assert err == f"filterd classify: {tmp_path / 'nothing'}: {said}\n"
