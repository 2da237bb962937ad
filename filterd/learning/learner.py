"""The lessons one process holds and the delta they make: synchronous, one thread only.

Every process (each worker, `filterd learn` without a daemon) keeps the table of live
lessons and applies the store's records to its scorer's wide table (online.Delta), in the
order the store gives them. Teaching goes through the store's lock: catch up, decide (the
same class again is a no-op; the other class replaces the lesson), compute the step on the
caught-up weights, store the message and the record durably, then apply it here. Other
processes apply it at their next poll.

A store that cannot be read as ours (CorruptState, an unreadable message) is refused with
one log line: the delta goes back to zero, scanning goes on with the shipped weights, and
teaching answers LearningError until the store changes (an operator moved it away).
"""

from __future__ import annotations

import contextlib
import logging
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import numpy as np

from filterd.learning import Label, LearningError, online
from filterd.learning.records import CorruptState, Record, Unavailable
from filterd.learning.users import Users

log = logging.getLogger(__name__)

COMPACT_SLACK = 1000    # records beyond twice the live lessons before the journal is rewritten


class Learner:
    def __init__(self, store: Any, scorer: Any, *, per_user: bool = False,
                 max_lessons: int = 20000, max_users: int = 1000) -> None:
        self.store, self.per_user, self.max_lessons = store, per_user, max_lessons
        self.lessons: OrderedDict[tuple[str | None, str], Record] = OrderedDict()
        self.users = Users(max_users)   # per-user deltas (learning/users.py)
        self.broken: str | None = None
        self._broken_at: Any = None    # the store's signature when it was refused
        self.away: str | None = None   # why the store is unreachable (Redis down), if it is
        self._resync = False           # an outage cut a poll short: read it all again
        self.attach(scorer)

    # --- the scorer the lessons move -----------------------------------------------------

    def attach(self, scorer: Any) -> None:
        """Apply the lessons to `scorer` (at start, and on reload with the new model)."""
        self.scorer = scorer
        self.delta = online.Delta(scorer.wide_weights)
        combination = scorer.manifest.get("model", {}).get("combination", {})
        self.scale = float(combination.get("a_wide", 1.0))
        self.users.held.clear()              # built again, on this model, when needed
        self.users.published.clear()
        for record in self.lessons.values():
            self._move(record, 1)

    def _applies(self, record: Record) -> bool:
        """A step made on this model (site-wide, or a user's whose delta is held)."""
        return record.coef != 0.0 and record.model == self.scorer.version and (
            record.user is None or self.users.holds(record.user))

    def _step(self, record: Record) -> tuple[np.ndarray, np.ndarray]:
        """(buckets, integer amounts) of one lesson's step."""
        prepared = self.scorer.prepare(self.store.get_message(record.key))
        return prepared.feat_ids, online.fixed(record.coef, prepared.feat_w)

    def _move(self, record: Record, sign: int) -> None:
        """Add (1) or take back (-1) one lesson's step, if it applies here."""
        if not self._applies(record):
            return
        ids, amounts = self._step(record)
        if record.user is None:
            self.delta.add(ids, amounts, sign)
        else:
            self.users.move(record.user, ids, amounts, sign)

    def _build_user(self, user: str) -> None:
        """Hold `user`'s delta (the learning thread, when a scan or a lesson needs it)."""
        mine = [self.lessons[(user, key)] for key in self.users.keys.get(user, ())]
        self.users.build(user, (self._step(r) for r in mine
                                if r.coef != 0.0 and r.model == self.scorer.version))

    # --- following the store -------------------------------------------------------------

    def poll(self) -> None:
        """Apply what the store has that we have not; refuse a store that is not ours
        (and look at it again only once it has changed)."""
        if self.broken is not None:
            if self.store.signature() == self._broken_at:
                return
            self.store.rewind()
        if self._resync:               # an outage cut a poll short: read it all again
            self.store.rewind()
        read = False
        try:
            records, reset = self.store.read_new()
            read = True
            if reset:
                self._rebuild(records)
            for record in [] if reset else records:
                self._apply(record)
        except Unavailable as exc:
            if self.away is None:
                log.warning("learning store unreachable, scanning on with what this process "
                            "holds: %s", exc)
            self.away, self._resync = str(exc), self._resync or read
            return
        except (CorruptState, OSError) as exc:
            if self.broken is None:
                log.error("learning store %s refused, scanning on the shipped weights: %s",
                          self.store.describe(), exc)
            self.broken, self._broken_at = str(exc), self.store.signature()
            self.lessons.clear()
            self.delta.clear()
            self.users.clear()
            return
        if self.away is not None:
            log.info("learning store %s reachable again", self.store.describe())
        self.broken = self.away = None
        self._resync = False
        for user in self.users.take_wanted():
            self._build_user(user)

    def _rebuild(self, records: list[Record]) -> None:
        """The store read from the start (compacted, replaced, after an outage): the live
        lessons' delta computed aside and swapped in at once, so scans never see a
        half-replayed one (integer sums: the same bits as the history gave)."""
        lessons: OrderedDict[tuple[str | None, str], Record] = OrderedDict()
        for record in records:
            lessons.pop((record.user, record.key), None)
            if record.op == "learn":
                lessons[(record.user, record.key)] = record
        sums = np.zeros(self.delta.table.shape, np.int64)
        for record in lessons.values():
            if record.user is None and self._applies(record):
                np.add.at(sums, *self._step(record))
        self.delta.replace(sums)
        self.lessons = lessons
        self.users.clear()                   # users' deltas: built again when needed
        for user, key in lessons:
            if user is not None:
                self.users.note(user, key, True)

    def _apply(self, record: Record) -> None:
        lesson = (record.user, record.key)
        old = self.lessons.pop(lesson, None)
        if old is not None:
            self._move(old, -1)
        if record.user is not None:
            self.users.note(record.user, record.key, record.op == "learn")
        if record.op == "learn":
            self.lessons[lesson] = record
            self._move(record, 1)

    # --- teaching ------------------------------------------------------------------------

    def learn(self, raw: bytes, label: Label, user: str | None = None) -> bool:
        key, user = online.message_key(raw), user if self.per_user else None
        with self._writing():
            old = self.lessons.get((user, key))
            if old is not None and old.label == label:
                return False
            records = [Record("forget", key, user)] if old is not None else []
            for undo in records:
                self._apply(undo)
            try:
                record = self._lesson(raw, key, label, user)
                records += [Record("forget", k, u) for u, k in self._oldest(len(self.lessons) + 1)]
                self.store.put_message(key, raw)
                self.store.append([*records, record])
            except BaseException:
                if old is not None:   # the forget never happened
                    self._apply(old)
                raise
            for done in records[1 if old is not None else 0:] + [record]:
                self._apply(done)
            self._maybe_compact()
        return True

    def forget(self, raw: bytes, user: str | None = None) -> bool:
        key, user = online.message_key(raw), user if self.per_user else None
        with self._writing():
            if (user, key) not in self.lessons:
                return False
            record = Record("forget", key, user)
            self.store.append([record])
            self._apply(record)
            self._maybe_compact()
        return True

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """The store's lock, caught up; the store's OSError (disk full, no permission, Redis
        down) and a refused store as LearningError."""
        try:
            with self.store.locked():
                self.poll()
                if self.broken or self.away:
                    raise LearningError(f"learning store refused: {self.broken}" if self.broken
                                        else f"learning store unreachable: {self.away}")
                yield
        except OSError as exc:
            raise LearningError(f"learning store {self.store.describe()}: {exc}") from exc

    def _lesson(self, raw: bytes, key: str, label: Label, user: str | None) -> Record:
        """The record of a new lesson: its step on the weights as they are now."""
        stored = self.store.get_message(key) if self.store.has_message(key) else raw
        prepared = self.scorer.prepare(stored)
        logit = float(self.scorer.infer_logits([prepared])[0, 0])
        if user is not None:              # the user's own weights on top of the site's
            if not self.users.holds(user):
                self._build_user(user)
            logit += self.users.adjustment(user, prepared.feat_ids, prepared.feat_w)
        sqnorm = float(np.dot(prepared.feat_w, prepared.feat_w))
        coef = online.step(logit, sqnorm, label, self.scale)
        return Record("learn", key, user, label, coef, str(self.scorer.version))

    def _oldest(self, count: int) -> list[tuple[str | None, str]]:
        """The lessons that make room for `count` - max_lessons new ones, oldest first."""
        extra = count - self.max_lessons
        return list(self.lessons)[:extra] if extra > 0 else []

    def _maybe_compact(self) -> None:
        """Rewrite the journal once it is mostly history. The lesson is already made: a
        failed compaction (disk full) is said and tried again at the next lesson."""
        if self.store.records <= 2 * len(self.lessons) + COMPACT_SLACK:
            return
        try:
            self.store.compact(list(self.lessons.values()))
        except OSError as exc:
            log.warning("learning store %s: compaction failed, the journal stays as it is: %s",
                        self.store.describe(), exc)


def taught(store: Any) -> Iterator[tuple[bytes, Label]]:
    """The site-wide lessons the store holds now, whatever model they were made on, with
    their messages: what `export retrain` trains on beside the configured folders."""
    lessons: OrderedDict[tuple[str | None, str], Record] = OrderedDict()
    records, _reset = store.read_new()
    for record in records:
        lessons.pop((record.user, record.key), None)
        if record.op == "learn":
            lessons[(record.user, record.key)] = record
    for record in lessons.values():
        if record.user is None and record.label is not None:
            yield store.get_message(record.key), record.label
