"""Mail on disk → raw messages: folders (Maildir included), mbox files and stdin.

Shared by `filterd classify`, `filterd learn` and the training pipeline (export/corpus.py), so that both
read a postmaster's mail the same way.
"""

from __future__ import annotations

import mailbox
import os
import sys
from collections.abc import Iterator
from pathlib import Path

MBOX_SNIFF = 1 << 16    # bytes of a file's head that tell an mbox from a message
MAX_READ = 64 * 1024 * 1024


def message_files(root: Path) -> list[Path]:
    """Files below root, sorted, dot files left out. Not in hidden folders: Maildir++
    subfolders (.Junk, .Sent) are mailboxes of their own. In a Maildir (a folder with cur/
    and new/) only what is in cur/ and new/: its tmp/ holds deliveries in progress, and the
    files at its top are the mail server's (dovecot-uidlist, dovecot.index, maildirfolder)."""
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        maildir = (here / "cur").is_dir() and (here / "new").is_dir()
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and not (maildir and d == "tmp")]
        if not maildir:
            files += [here / name for name in filenames if not name.startswith(".")]
    return sorted(files)


def looks_like_mbox(head: bytes) -> bool:
    """An mbox starts with a `From ` line and holds more than one of them (a single message
    with an envelope line, as in the SpamAssassin corpus, is read as one message)."""
    return head.startswith(b"From ") and b"\nFrom " in head[:MBOX_SNIFF]


def mbox_messages(path: Path) -> Iterator[bytes]:
    """Each message of an mbox as stored (not re-serialised), one at a time."""
    box = mailbox.mbox(path, create=False)
    try:
        for key in box.iterkeys():
            yield box.get_bytes(key)
    finally:
        box.close()


def iter_messages(paths: list[str], errors: list[str]) -> Iterator[tuple[str, bytes]]:
    """(path, raw bytes) for every message named by the command line, in a stable order.

    A path that cannot be read, or a folder with no message in it, is appended to `errors`
    and skipped.
    """
    for name in paths:
        if name == "-":
            yield "-", sys.stdin.buffer.read(MAX_READ)
            continue
        path = Path(name)
        files = message_files(path) if path.is_dir() else [path]
        if not files:
            errors.append(f"{path}: no messages in this folder (a Maildir's are in cur/ and new/)")
        for file in files:
            yield from read_file(file, errors)


def read_file(path: Path, errors: list[str]) -> Iterator[tuple[str, bytes]]:
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_READ)
        if looks_like_mbox(raw):
            items = [(f"{path}#{i}", message[:MAX_READ]) for i, message in enumerate(mbox_messages(path))]
        else:
            items = [(str(path), raw)]
    except OSError as exc:
        errors.append(f"{path}: {exc.strerror or exc}")
        return
    yield from items
