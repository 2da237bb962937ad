"""The learning store in Redis (`learning.store: redis://host:6379/0`), for several hosts.

The same records as the directory store (records.py), in the same order for everyone:

    filterd:learning:journal       a list, one encoded record per item (RPUSH)
    filterd:learning:generation    bumped by each compaction: readers start over
    filterd:learning:message:<key> each taught message (SET NX)
    filterd:learning:lock          redis-py's Lock (expires, so a dead holder frees it)

Every process polls (LRANGE from where it was, with the generation, in one transaction),
so a lesson taught on one host moves every other host's weights within a second. How
durable an acknowledged lesson is is Redis's to say: run it with `appendonly yes` and
`appendfsync always` for "on disk before DidSet".

While Redis is unreachable, every call raises Unavailable: a process keeps scanning with
what it holds, and lessons are answered with a temporary failure until Redis is back.
Needs the `redis` extra (pip install 'filterd[redis]').
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from filterd.learning.records import Record, Unavailable, decode

PREFIX = "filterd:learning:"
LOCK_S = 30.0           # a lock holder that died frees it after this
SOCKET_S = 2.0          # a Redis that does not answer is down


class RedisStore:
    def __init__(self, url: str) -> None:
        try:
            import redis
        except ImportError as exc:
            raise Unavailable(f"{url}: the redis client is not installed "
                              "(pip install 'filterd[redis]')") from exc
        self._errors = redis.RedisError
        self.url = url
        self.client: Any = redis.Redis.from_url(url, socket_timeout=SOCKET_S,
                                           socket_connect_timeout=SOCKET_S)
        self._generation: bytes | None = b"new"    # never equal to Redis's: the first read resets
        self._offset = 0
        self.records = 0

    def describe(self) -> str:
        return self.url

    @contextlib.contextmanager
    def _talking(self) -> Iterator[None]:
        """Redis's own errors as Unavailable (an OSError, as the directory store's)."""
        try:
            yield
        except self._errors as exc:
            raise Unavailable(f"{self.url}: {exc}") from None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        with self._talking():
            lock = self.client.lock(PREFIX + "lock", timeout=LOCK_S, blocking_timeout=LOCK_S)
            if not lock.acquire():
                raise Unavailable(f"{self.url}: the learning lock is held too long")
        try:
            yield
        finally:
            with contextlib.suppress(self._errors):
                lock.release()

    def signature(self) -> Any:
        with contextlib.suppress(self._errors):
            return self.client.get(PREFIX + "generation"), self.client.llen(PREFIX + "journal")
        return None

    def rewind(self) -> None:
        """Read the journal from the start, as a new one, at the next read_new."""
        self._generation, self._offset, self.records = b"rewound", 0, 0

    def read_new(self) -> tuple[list[Record], bool]:
        with self._talking():
            generation, length, items = self._read(self._offset)
            reset = generation != self._generation or length < self._offset   # compacted, flushed
            if reset and self._offset:
                generation, length, items = self._read(0)
        if reset:
            self._generation, self._offset, self.records = generation, 0, 0
        records = [decode(item) for item in items]
        self._offset += len(items)
        self.records += len(items)
        return records, reset

    def _read(self, start: int) -> tuple[bytes | None, int, list[bytes]]:
        pipe = self.client.pipeline(transaction=True)
        pipe.get(PREFIX + "generation")
        pipe.llen(PREFIX + "journal")
        pipe.lrange(PREFIX + "journal", start, -1)
        generation, length, items = pipe.execute()
        return generation, int(length), items

    def append(self, records: list[Record]) -> None:
        with self._talking():
            length = self.client.rpush(PREFIX + "journal", *(r.encode() for r in records))
        self._offset = self.records = int(length)

    def has_message(self, key: str) -> bool:
        with self._talking():
            return bool(self.client.exists(PREFIX + "message:" + key))

    def put_message(self, key: str, raw: bytes) -> None:
        with self._talking():
            self.client.set(PREFIX + "message:" + key, raw, nx=True)

    def get_message(self, key: str) -> bytes:
        with self._talking():
            raw = self.client.get(PREFIX + "message:" + key)
        if raw is None:
            raise FileNotFoundError(f"{self.url}: no message {key}")
        return bytes(raw)

    def compact(self, live: list[Record]) -> None:
        keep = {PREFIX.encode() + b"message:" + r.key.encode() for r in live}
        with self._talking():
            pipe = self.client.pipeline(transaction=True)
            pipe.delete(PREFIX + "journal")
            if live:
                pipe.rpush(PREFIX + "journal", *(r.encode() for r in live))
            pipe.incr(PREFIX + "generation")
            results = pipe.execute()
            for name in self.client.scan_iter(match=PREFIX + "message:*", count=1000):
                if name not in keep:
                    self.client.delete(name)
        self._generation = str(results[-1]).encode()
        self._offset = self.records = len(live)
