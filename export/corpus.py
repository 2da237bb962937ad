"""Corpus readers (tarballs, folders, Maildir, mbox, .eml) → Sample, the stable split, fetch-corpus.

Labels come from the path: in the SpamAssassin tarballs and folders extracted from them,
a folder whose name contains "spam" holds spam and one containing "ham" holds ham. With
`--ham PATH --spam PATH` the label is given per path. The split is a pure function of
each message's bytes and the seed, so it is stable across runs, orderings and machines,
and duplicates always fall on the same side.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tarfile
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from filterd.mailfiles import MBOX_SNIFF, looks_like_mbox, mbox_messages, message_files
from filterd.pipeline.artifact import sha256_file
from filterd.sniff import not_mail

TARBALLS = ("20030228_easy_ham.tar.bz2", "20030228_easy_ham_2.tar.bz2",
            "20030228_hard_ham.tar.bz2", "20030228_spam.tar.bz2", "20050311_spam_2.tar.bz2")
URL = "https://spamassassin.apache.org/old/publiccorpus/"
MAX_MESSAGE = 32 * 1024 * 1024      # larger files are skipped as malformed
_SKIP = {"cmds", ".DS_Store"}       # the published tarballs carry a `cmds` file per folder


class MailError(Exception):
    """Mail named on the command line that is not there: one line for the user."""


class Sample(NamedTuple):
    raw: bytes
    label: int          # 1 = spam, 0 = ham
    source: str         # where it came from, e.g. "20030228_spam.tar.bz2:spam/00001.7848..."


@dataclass
class ReadStats:
    """What a reader saw: messages per source and the malformed ones it skipped."""

    messages: dict[str, int] = field(default_factory=dict)
    malformed: dict[str, int] = field(default_factory=dict)

    def count(self, source: str, ok: bool) -> None:
        table = self.messages if ok else self.malformed
        table[source] = table.get(source, 0) + 1


def is_malformed(raw: bytes) -> bool:
    """Huge, or not a mail message at all (filterd/sniff.py: empty, binary, no header field
    at the start, as the daemon decides): nothing we can learn from or score."""
    return len(raw) > MAX_MESSAGE or not_mail(raw) is not None


def label_from_path(name: str) -> int | None:
    lowered = name.lower()
    for part in reversed(Path(lowered).parts):
        if "spam" in part:
            return 1
        if "ham" in part:
            return 0
    return None


def iter_corpus(path: str | Path, stats: ReadStats | None = None) -> Iterator[Sample]:
    """Labelled samples from tarballs, or a folder of tarballs / extracted folders."""
    stats = stats if stats is not None else ReadStats()
    path = Path(path)
    if not path.exists():
        raise MailError(f"{path}: no such file or folder")
    if path.is_file():
        yield from _iter_tarball(path, None, stats)
        return
    tarballs = sorted(p for p in path.iterdir() if ".tar" in p.name)
    for tarball in tarballs:
        yield from _iter_tarball(tarball, None, stats)
    if not tarballs:
        for sub in sorted(p for p in path.iterdir() if p.is_dir()):
            label = label_from_path(sub.name)
            if label is not None:
                yield from iter_path(sub, label, stats)


def _iter_tarball(path: Path, label: int | None, stats: ReadStats) -> Iterator[Sample]:
    with tarfile.open(path) as tar:
        for member in tar:
            name = member.name
            if not member.isfile() or Path(name).name in _SKIP:
                continue
            this = label if label is not None else label_from_path(str(Path(name).parent))
            if this is None:
                continue
            f = tar.extractfile(member)
            raw = f.read(MAX_MESSAGE + 1) if f is not None else b""
            yield from _emit(raw, this, f"{path.name}:{name}", path.name, stats)


def _emit(raw: bytes, label: int, source: str, group: str, stats: ReadStats) -> Iterator[Sample]:
    ok = not is_malformed(raw)
    stats.count(group, ok)
    if ok:
        yield Sample(raw, label, source)


def iter_path(path: str | Path, label: int, stats: ReadStats | None = None) -> Iterator[Sample]:
    """All messages under a path with one label: tarball, mbox, Maildir, folder of files/.eml."""
    stats = stats if stats is not None else ReadStats()
    path = Path(path)
    if path.is_file() and ".tar" in path.name:
        yield from _iter_tarball(path, label, stats)
    elif path.is_file() and _is_mbox(path):
        for i, raw in enumerate(mbox_messages(path)):
            yield from _emit(raw, label, f"{path}#{i}", str(path), stats)
    elif path.is_file():
        yield from _emit(path.read_bytes()[: MAX_MESSAGE + 1], label, str(path), str(path), stats)
    elif path.is_dir():
        for file in message_files(path):
            if file.name in _SKIP:
                continue
            if _is_mbox(file):
                yield from iter_path(file, label, stats)
                continue
            raw = file.read_bytes()[: MAX_MESSAGE + 1]
            yield from _emit(raw, label, str(file), str(path), stats)
    else:
        raise MailError(f"{path}: no such file or folder")


def _is_mbox(path: Path) -> bool:
    with path.open("rb") as f:
        return looks_like_mbox(f.read(MBOX_SNIFF))


def add_mail_arguments(p: argparse.ArgumentParser) -> None:
    """--corpus / --ham / --spam, as train and evaluate take them."""
    p.add_argument("--corpus", type=Path, help="tarballs or folders labelled by folder name")
    p.add_argument("--ham", type=Path, nargs="*", default=[], help="ham: Maildir, mbox or folder paths")
    p.add_argument("--spam", type=Path, nargs="*", default=[], help="spam: Maildir, mbox or folder paths")


def check_mail_arguments(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.corpus is None and not (args.ham and args.spam):
        p.error("give --corpus, or both --ham and --spam")


def read_mail(args: argparse.Namespace, stats: ReadStats,
              corpus_part: Callable[[list[Sample]], list[Sample]] = list) -> list[Sample]:
    """The samples those arguments name: `corpus_part` of the corpus, then --ham and --spam
    whole. MailError when a path is missing or holds no mail message."""
    samples: list[Sample] = []
    if args.corpus is not None:
        corpus = _some(iter_corpus(args.corpus, stats), args.corpus,
                       "no labelled mail (tarballs, or folders whose names say ham or spam)")
        samples += corpus_part(corpus)
    for label, paths in ((0, args.ham), (1, args.spam)):
        for path in paths:
            samples += _some(iter_path(path, label, stats), path,
                             "no mail messages (of a Maildir, only cur/ and new/ are read)")
    return samples


def _some(samples: Iterator[Sample], path: Path, why: str) -> list[Sample]:
    got = list(samples)
    if not got:
        raise MailError(f"{path}: {why}")
    return got


READ_ERRORS = (MailError, OSError, tarfile.TarError)   # what reading the named mail may raise


def split_of(raw: bytes, seed: int, val_frac: float, test_frac: float) -> str:
    """"train", "val" or "test", from a hash of the message and the seed."""
    digest = hashlib.sha256(seed.to_bytes(8, "little") + raw).digest()
    u = int.from_bytes(digest[:8], "little") / 2.0**64
    if u < test_frac:
        return "test"
    return "val" if u < test_frac + val_frac else "train"


# SHA-256 of the published tarballs. Apache publishes none; these are the values pinned by
# another open-source project's corpus downloader (package "rolltop", training/corpus.go).
# They could not be checked here (no internet, and the corpus used here holds reduced copies):
# a mismatch stops the download and keeps the file as NAME.part for you to inspect.
SHA256 = {
    "20030228_easy_ham.tar.bz2": "2b7b65904bcfcc31d2b5f51946f2d261370b257402cbbd62930b46ab83367438",
    "20030228_easy_ham_2.tar.bz2": "b4bd3dc5ae5b40f38e99a0e41ad7d16b428b56e818e3a6ffa07330d62004dd38",
    "20030228_hard_ham.tar.bz2": "ce2ce67880643dbde65ea7f85bffbfe4417349c4bd80b6b0de56262ae6b0a9c9",
    "20030228_spam.tar.bz2": "c08debc32413804949a866be45ef78195cec2cbafd1da744ed76cdb860589743",
    "20050311_spam_2.tar.bz2": "44280a0e28bf7645b2279e8e42659271ad82c6f40bf8d364dbda7f1df344a765",
}


def fetch(dest: Path, base_url: str = URL) -> int:
    """Download the five published tarballs into dest, checking each SHA-256."""
    dest.mkdir(parents=True, exist_ok=True)
    status = 0
    for name in TARBALLS:
        target = dest / name
        if target.exists():
            digest = sha256_file(target)
        else:
            part = dest / (name + ".part")
            print(f"fetching {base_url}{name}", file=sys.stderr)
            with urllib.request.urlopen(base_url + name, timeout=60) as response:
                part.write_bytes(response.read(256 * 1024 * 1024))
            digest = sha256_file(part)
            if digest != SHA256[name]:
                print(f"{name}: sha256 {digest} is not the expected {SHA256[name]}; "
                      f"kept as {part}", file=sys.stderr)
                status = 1
                continue
            part.rename(target)
        ok = "OK" if digest == SHA256[name] else "MISMATCH"
        status = status if ok == "OK" else 1
        print(f"{digest}  {name}  {ok}")
    return status


def main(argv: list[str]) -> int:
    """`python -m export fetch-corpus --dest DIR`."""
    parser = argparse.ArgumentParser(prog="python -m export fetch-corpus")
    parser.add_argument("--dest", required=True, type=Path)
    parser.add_argument("--url", default=URL, help="a mirror of the publiccorpus folder")
    args = parser.parse_args(argv)
    try:
        return fetch(args.dest, args.url)
    except OSError as exc:
        print(f"fetch-corpus: {exc}", file=sys.stderr)
        return 1
