"""Per-user lessons (`learning.per_user`): a user's lessons apply to that user's scans on top
of the site-wide ones, never to anyone else's, and at most max_users deltas are held.

End to end: spamc -u and `filterd learn -u` against two real workers: the user's CHECKs
(spamd User:) move, everyone else's and the site-wide ones do not. In process, with the
real model, store, Learning and Batcher: scan() of a Record with a user gets their lessons
and forgetting takes them back.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from filterd.batcher import Batcher
from filterd.config import Config, build
from filterd.learning.dirstore import DirStore
from filterd.learning.learner import Learner
from filterd.learning.teacher import Learning
from filterd.pipeline.scorer import Scorer
from filterd.scan import Record, State, scan
from tests.fixtures.frontends import require_spamc
from tests.fixtures.learning import learn, points_everywhere, spamc_learn, spamd_port
from tests.fixtures.lifecycle import require_model, shipped_model
from tests.fixtures.postfix import corpus_messages
from tests.fixtures.smtp import wait_until

pytestmark = [pytest.mark.corpus]

LEARNED = b"Message successfully un/learned\n"


@pytest.fixture(scope="module")
def spam(corpus_dir: Path) -> list[bytes]:
    return corpus_messages(corpus_dir, "spam", 4)


def scorer() -> Scorer:
    require_model()
    return Scorer.load(shipped_model(), device="cpu")


@pytest.mark.slow
def test_a_users_lessons_apply_to_their_scans_only(daemon_factory: Any, tmp_path: Path,
                                                         spam: list[bytes]) -> None:
    require_spamc()
    daemon = daemon_factory(workers=2, spamd={"listen": "127.0.0.1:0", "allow_tell": True},
                            learning={"store": str(tmp_path / "store"), "per_user": True})
    port = spamd_port(daemon)
    message = spam[0]
    before = points_everywhere(port, message)
    assert spamc_learn(port, message, "ham", "-u", "alice").out == LEARNED
    assert spamc_learn(port, message, "ham", "-u", "alice").out == b"Message was already un/learned\n"
    assert spamc_learn(port, message, "ham", "-u", "bob").out == LEARNED      # bob's own lesson
    (tmp_path / "m.eml").write_bytes(message)
    got = learn(daemon.config_path, "--ham", "-u", "carol", str(tmp_path / "m.eml"))
    assert "1 message(s) learned as ham" in got.out, got
    # alice's scans (spamd User:) get her lesson in every worker; nobody else's do
    wait_until(lambda: max(points_everywhere(port, message, 8, "alice")) < 5.0, 2.0, "alice's lesson")
    assert points_everywhere(port, message, 8, "dave") == before
    assert points_everywhere(port, message) == before  # the site-wide weights did not move
    journal = (tmp_path / "store" / "journal").read_bytes()
    assert [journal.count(f'"user":"{u}"'.encode()) for u in ("alice", "bob", "carol")] == [1, 1, 1]
    assert daemon.problems() == []


def test_scan_applies_the_users_lessons_on_top_of_the_sites(tmp_path: Path, spam: list[bytes]) -> None:
    config = build(Config, {"learning": {"store": str(tmp_path / "store"), "per_user": True},
                            "scoring": {"max_wait_ms": 0}})

    async def main() -> tuple[float, float, float, float]:
        model = scorer()
        learning = Learning(config.learning)
        await learning.start(model)
        batcher = Batcher(model, max_wait_ms=0)
        batcher.adjust = learning.adjustment
        state = State.build(config, batcher)

        async def score(user: str | None) -> float:
            scanned = await scan(state, spam[1], Record("test", "t1", "local", user=user))
            assert scanned.verdict is not None and scanned.verdict.score is not None
            return scanned.verdict.score

        site = await score(None)
        assert await learning.learn(spam[1], "ham", "alice")
        alice, bob = await score("alice"), await score("bob")
        await learning.forget(spam[1], "alice")
        after = await score("alice")
        await learning.stop()
        return site, alice, bob, after

    loop = asyncio.new_event_loop()    # not asyncio.run: it leaves the main thread no loop at all
    try:
        site, alice, bob, after = loop.run_until_complete(main())
    finally:
        loop.close()
    assert site > 0.9 and alice < 0.5 and bob == site and after == site


def test_at_most_max_users_deltas_held_and_rebuilt_when_needed(tmp_path: Path, spam: list[bytes]) -> None:
    learner = Learner(DirStore(tmp_path), scorer(), per_user=True, max_users=2)
    prepared = learner.scorer.prepare(spam[2])
    for user in ("u1", "u2", "u3"):
        assert learner.learn(spam[2], "ham", user)
    assert list(learner.users.held) == ["u2", "u3"]       # u1 left first
    assert learner.users.adjustment("u1", prepared.feat_ids, prepared.feat_w) == 0.0   # asked for
    learner.poll()                                        # built again
    assert "u1" in learner.users.held and len(learner.users.held) == 2
    first = learner.users.adjustment("u1", prepared.feat_ids, prepared.feat_w)
    assert first < 0 and first == learner.users.adjustment("u3", prepared.feat_ids, prepared.feat_w)
    assert learner.scorer.wide_weights.tobytes() == scorer().wide_weights.tobytes()   # site alone
