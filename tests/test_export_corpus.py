"""Corpus readers (tarball, folder, Maildir, mbox, .eml), malformed counting, the stable split."""

from __future__ import annotations

import io
import mailbox
import tarfile
from pathlib import Path

from export.corpus import ReadStats, iter_corpus, iter_path, label_from_path, split_of

MSG = b"From: a@example.com\nSubject: %s\n\nbody %s\n"


def _tarball(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:bz2") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_tarballs_labelled_by_folder_and_cmds_skipped(tmp_path: Path) -> None:
    _tarball(tmp_path / "x_easy_ham.tar.bz2", {"easy_ham/00001.aa": MSG % (b"h1", b"h1"),
                                               "easy_ham/cmds": b"mv 1 2\n",
                                               "easy_ham/00002.bb": b""})
    _tarball(tmp_path / "x_spam.tar.bz2", {"spam/00001.cc": MSG % (b"s1", b"s1")})
    stats = ReadStats()
    samples = list(iter_corpus(tmp_path, stats))
    assert sorted((s.label, s.source) for s in samples) == [
        (0, "x_easy_ham.tar.bz2:easy_ham/00001.aa"), (1, "x_spam.tar.bz2:spam/00001.cc")]
    assert stats.malformed == {"x_easy_ham.tar.bz2": 1}     # the empty file, counted


def test_maildir_mbox_and_eml_folders(tmp_path: Path) -> None:
    md = mailbox.Maildir(tmp_path / "Maildir", create=True)
    md.add(MSG % (b"m1", b"m1"))
    md.add(MSG % (b"m2", b"m2"))
    # The mail server's files at a Maildir's top are not mail, and are not read at all:
    # this one would pass for a message by a looser rule ("1 :name" looks like a field).
    (tmp_path / "Maildir" / "dovecot-uidlist").write_bytes(b"3 V1700000000 N3\n1 :17.M1.h\n")
    (tmp_path / "Maildir" / "maildirfolder").write_bytes(b"")
    mb = mailbox.mbox(tmp_path / "box.mbox")
    for i in range(3):
        mb.add(MSG % (b"x%d" % i, b"x"))
    mb.close()
    (tmp_path / "eml").mkdir()
    (tmp_path / "eml" / "one.eml").write_bytes(MSG % (b"e1", b"e1"))
    (tmp_path / "eml" / "junk.eml").write_bytes(b"\x00\x01 not a message")
    (tmp_path / "eml" / "data.json").write_bytes(b'{"a": 1}\n')
    stats = ReadStats()
    assert len(list(iter_path(tmp_path / "Maildir", 1, stats))) == 2
    assert stats.malformed == {}
    assert [s.label for s in iter_path(tmp_path / "box.mbox", 0, stats)] == [0, 0, 0]
    eml = list(iter_path(tmp_path / "eml", 0, stats))
    assert [Path(s.source).name for s in eml] == ["one.eml"]
    assert sum(stats.malformed.values()) == 2


def test_extracted_folders_are_labelled_by_name(tmp_path: Path) -> None:
    for folder, n in (("easy_ham", 2), ("spam_2", 1), ("other", 1)):
        (tmp_path / folder).mkdir()
        for i in range(n):
            (tmp_path / folder / f"{i:05d}").write_bytes(MSG % (folder.encode(), b"%d" % i))
    labels = sorted(s.label for s in iter_corpus(tmp_path))
    assert labels == [0, 0, 1]
    assert label_from_path("spam_2") == 1 and label_from_path("hard_ham") == 0
    assert label_from_path("other") is None


def test_split_is_stable_and_seeded() -> None:
    raws = [MSG % (b"%d" % i, b"x") for i in range(2000)]
    first = [split_of(r, 7, 0.15, 0.15) for r in raws]
    assert first == [split_of(r, 7, 0.15, 0.15) for r in raws]
    assert first != [split_of(r, 8, 0.15, 0.15) for r in raws]
    share = {k: first.count(k) / len(raws) for k in ("train", "val", "test")}
    assert 0.6 < share["train"] < 0.8 and 0.1 < share["val"] < 0.2 and 0.1 < share["test"] < 0.2


def test_fetch_corpus_refuses_a_tarball_with_the_wrong_hash(tmp_path: Path, capsys) -> None:
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from export import corpus

    served = tmp_path / "mirror"
    served.mkdir()
    for name in corpus.TARBALLS:
        (served / name).write_bytes(b"not the real tarball")
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        rc = corpus.main(["--dest", str(tmp_path / "dest"), "--url", url])
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert rc == 1
    for name in corpus.TARBALLS:
        assert not (tmp_path / "dest" / name).exists()
        assert (tmp_path / "dest" / (name + ".part")).exists()
    assert "is not the expected" in capsys.readouterr().err
