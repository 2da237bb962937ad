"""Learning from corrections: what a front-end (spamd TELL) or `filterd learn` hands over.

A front-end only sees the `Teacher` protocol below; the online learner, its store (a
directory or Redis) and how lessons reach every worker live in this package.
"""

from __future__ import annotations

from typing import Literal, Protocol

Label = Literal["spam", "ham"]


class LearningError(Exception):
    """A lesson could not be recorded (store unreachable, disk full): answer a temporary
    error so the client may retry; scanning is not affected."""


class Teacher(Protocol):
    """What a front-end calls to teach or unteach one message (raw RFC 822 bytes).

    `user` is the front-end's user name (spamd `User:`), or None for site-wide lessons.
    Both return True when the store changed, False when the message was already learned
    as that class (learn) or was not learned at all (forget): spamd then leaves out its
    `DidSet:`/`DidRemove:` header. Both raise LearningError when the lesson could not be
    made durable; they return only once it is (journal fsync'd).
    """

    async def learn(self, raw: bytes, label: Label, user: str | None = None) -> bool: ...

    async def forget(self, raw: bytes, user: str | None = None) -> bool: ...
