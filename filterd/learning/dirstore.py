"""The learning store in a directory (the default: the unit's StateDirectory).

    DIR/journal            one record a line (records.py), appended and fsync'd per lesson
    DIR/messages/<key>     each taught message as it was taught, for replay and `export retrain`
    DIR/lock               flock'd by whoever appends or compacts (workers, `filterd learn`)

Readers (every worker) tail the journal: each poll stats it and reads what was appended
since; a journal with a new inode was compacted (or removed) and is read again from the
start. Writers hold the lock, catch up, append and fsync before they answer, so an
acknowledged lesson survives SIGKILL and power loss; a failed write (disk full) is cut
back off, so the journal never holds half a record. Compaction rewrites the journal with
the live lessons only (a new file, fsync'd, renamed over the old one) and deletes the
messages no lesson names any more. Nothing here is pickled.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from filterd.learning.records import Record, split_lines
from filterd.pipeline.artifact import fsync_dir


def _own(path: Path, root: Path) -> None:
    """Run as root (`filterd learn` by hand), give what we create to the owner of `root`
    (the store, or the folder it is made in), the user filterd runs as, who must be able
    to write it too."""
    if os.geteuid() == 0:
        st = os.stat(root)
        os.chown(path, st.st_uid, st.st_gid, follow_symlinks=False)


class DirStore:
    """A journal and the taught messages under `root` (created at the first lesson)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.journal = self.root / "journal"
        self.messages = self.root / "messages"
        self._inode: int | None = None    # the journal file we have read
        self._offset = 0                  # bytes of it we have read (complete lines only)
        self.records = 0                  # records in it (for compaction)

    def describe(self) -> str:
        return str(self.root)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive across processes: append and compact hold it. Creates the store."""
        if not self.root.is_dir():
            self.root.mkdir(mode=0o750, parents=True, exist_ok=True)
            _own(self.root, self.root.parent)   # e.g. the unit's StateDirectory's user
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o640)
        try:
            _own(self.root / "lock", self.root)
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)   # releases the lock

    def signature(self) -> tuple[int, int, int] | None:
        """What tells a changed journal (a refused store is looked at again only then)."""
        try:
            st = os.stat(self.journal)
        except OSError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    def rewind(self) -> None:
        """Read the journal from the start at the next read_new."""
        self._inode, self._offset, self.records = None, 0, 0

    def read_new(self) -> tuple[list[Record], bool]:
        """(records appended since the last call, whether to start over first: the journal
        was replaced or removed). CorruptState if a complete line is not ours."""
        try:
            fd = os.open(self.journal, os.O_RDONLY)
        except FileNotFoundError:
            reset, self._inode, self._offset, self.records = self._inode is not None, None, 0, 0
            return [], reset
        with os.fdopen(fd, "rb") as f:
            inode = os.fstat(f.fileno()).st_ino
            reset = inode != self._inode
            if reset:
                self._inode, self._offset, self.records = inode, 0, 0
            f.seek(self._offset)
            records, used = split_lines(f.read())
        self._offset += used
        self.records += len(records)
        return records, reset

    def append(self, records: list[Record]) -> None:
        """Durably add `records` (under the lock, caught up): fsync'd on return, or an
        OSError and the journal as it was (a torn line from a crash is cut off too)."""
        fd = os.open(self.journal, os.O_WRONLY | os.O_CREAT, 0o640)
        try:
            if self._inode is None:
                self._inode = os.fstat(fd).st_ino
                _own(self.journal, self.root)
            os.ftruncate(fd, self._offset)    # drop a line a crash left half-written
            data = b"".join(r.encode() for r in records)
            try:
                os.pwrite(fd, data, self._offset)
                os.fsync(fd)
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, self._offset)
                raise
        finally:
            os.close(fd)
        if self._offset == 0:
            fsync_dir(self.root)             # the journal's name is durable too
        self._offset += len(data)
        self.records += len(records)

    def has_message(self, key: str) -> bool:
        return (self.messages / key).exists()

    def put_message(self, key: str, raw: bytes) -> None:
        """Store a taught message durably (once: the same key is the same message)."""
        path = self.messages / key
        if path.exists():
            return
        if not self.messages.is_dir():
            self.messages.mkdir(mode=0o750, exist_ok=True)
            _own(self.messages, self.root)
            fsync_dir(self.root)
        tmp = self.messages / f".{key}.{os.getpid()}"
        try:
            with open(tmp, "wb") as f:
                f.write(raw)
                f.flush()
                os.fsync(f.fileno())
            _own(tmp, self.root)
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        fsync_dir(self.messages)

    def get_message(self, key: str) -> bytes:
        return (self.messages / key).read_bytes()

    def compact(self, live: list[Record]) -> None:
        """Rewrite the journal as `live` (under the lock) and drop unnamed messages."""
        tmp = self.root / "journal.new"
        try:
            with open(tmp, "wb") as f:
                f.write(b"".join(r.encode() for r in live))
                f.flush()
                os.fsync(f.fileno())
                inode, size = os.fstat(f.fileno()).st_ino, f.tell()
            _own(tmp, self.root)
            os.replace(tmp, self.journal)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)          # left only if something failed before the rename
        fsync_dir(self.root)
        self._inode, self._offset, self.records = inode, size, len(live)
        keep = {r.key for r in live}
        for path in self.messages.glob("*") if self.messages.is_dir() else ():
            if path.name not in keep:
                with contextlib.suppress(OSError):
                    path.unlink()
