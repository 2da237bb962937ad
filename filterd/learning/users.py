"""Per-user lessons (`learning.per_user`): a user's own delta, on top of the site-wide one.

A lesson taught with a user (spamd `User:`, `spamc -u`, `filterd learn -u`) moves only that
user's weights, which apply to that user's scans as an extra term of the logit:
sum(delta_user[b] * w_b) over the message's n-grams b. Most users teach nothing, and a
user's delta is built from their lessons only when one of their messages is scanned: at
most `max_users` deltas are held (least recently used leave first, to be built again when
needed), so memory stays bounded however many users teach.

Threads: the learning thread builds and changes deltas (`held`); the event loop reads the
published arrays (`published`, replaced whole, never changed in place) and asks for a
delta it lacks (`wanted`), which the learning thread builds at its next poll; until then
that user's scans get the site-wide weights only.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

import numpy as np

from filterd.learning.online import CLIP, ONE


class UserDelta:
    """One user's integer sums over the buckets their lessons touched (sorted ids)."""

    def __init__(self) -> None:
        self.ids = np.zeros(0, np.int64)
        self.sums = np.zeros(0, np.int64)

    def add(self, ids: np.ndarray, amounts: np.ndarray, sign: int = 1) -> None:
        merged, where = np.unique(np.concatenate((self.ids, ids)), return_inverse=True)
        sums = np.zeros(merged.size, np.int64)
        np.add.at(sums, where, np.concatenate((self.sums, amounts if sign > 0 else -amounts)))
        keep = sums != 0
        self.ids, self.sums = merged[keep], sums[keep]

    def weights(self) -> tuple[np.ndarray, np.ndarray]:
        return self.ids, np.clip(self.sums / ONE, -CLIP, CLIP)


class Users:
    def __init__(self, max_users: int) -> None:
        self.max_users = max_users
        self.keys: dict[str, set[str]] = {}             # user -> keys of their lessons
        self.held: OrderedDict[str, UserDelta] = OrderedDict()
        self.published: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.wanted: set[str] = set()

    def note(self, user: str, key: str, present: bool) -> None:
        """Keep the index of who taught what (a lesson added or removed)."""
        if present:
            self.keys.setdefault(user, set()).add(key)
        elif user in self.keys:
            self.keys[user].discard(key)
            if not self.keys[user]:
                del self.keys[user]

    def clear(self) -> None:
        self.keys.clear()
        self.held.clear()
        self.published.clear()

    def holds(self, user: str) -> bool:
        return user in self.held

    def move(self, user: str, ids: np.ndarray, amounts: np.ndarray, sign: int) -> None:
        """A lesson of a user whose delta is held: change it and publish it again."""
        self.held[user].add(ids, amounts, sign)
        self.published[user] = self.held[user].weights()

    def build(self, user: str, lessons: Iterable[tuple[np.ndarray, np.ndarray]]) -> None:
        """Hold `user`'s delta made of `lessons` (ids, amounts), making room if need be."""
        delta = UserDelta()
        for ids, amounts in lessons:
            delta.add(ids, amounts)
        self.held[user] = delta
        self.held.move_to_end(user)
        self.published[user] = delta.weights()
        while len(self.held) > self.max_users:
            gone, _ = self.held.popitem(last=False)
            self.published.pop(gone, None)

    def take_wanted(self) -> list[str]:
        wanted, self.wanted = self.wanted, set()
        return [user for user in wanted if user in self.keys and user not in self.held]

    def adjustment(self, user: str | None, feat_ids: np.ndarray, feat_w: np.ndarray) -> float:
        """The user's term of the logit for one message (event loop; 0.0 if none is held)."""
        if user is None or user not in self.keys:
            return 0.0
        weights = self.published.get(user)
        if weights is None:
            self.wanted.add(user)
            return 0.0
        ids, values = weights
        if ids.size == 0:
            return 0.0
        at = np.minimum(np.searchsorted(ids, feat_ids), ids.size - 1)
        hit = ids[at] == feat_ids
        return float(np.dot(values[at[hit]], feat_w[hit]))
