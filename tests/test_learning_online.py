"""The learner with the shipped model and a real directory store, in process: the delta's
promises (exact forget, the same bits in every process, compaction changes nothing, at most
max_lessons) that the end-to-end tests (test_learning_store.py) can only see through points.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from filterd.learning import online
from filterd.learning.dirstore import DirStore
from filterd.learning import learner as learning
from filterd.learning.learner import Learner
from filterd.pipeline.scorer import Scorer
from tests.fixtures.lifecycle import require_model, shipped_model
from tests.fixtures.postfix import corpus_messages

pytestmark = [pytest.mark.corpus]


@pytest.fixture(scope="module")
def mail(corpus_dir: Path) -> list[bytes]:
    return corpus_messages(corpus_dir, "spam", 6) + corpus_messages(corpus_dir, "easy_ham", 6)


def scorer() -> Scorer:
    require_model()
    return Scorer.load(shipped_model(), device="cpu")


def test_forget_restores_the_shipped_weights_to_the_bit(tmp_path: Path, mail: list[bytes]) -> None:
    s = scorer()
    shipped = s.wide_weights.copy()
    learner = Learner(DirStore(tmp_path), s)
    for i, raw in enumerate(mail):
        assert learner.learn(raw, "ham" if i % 2 else "spam")
    assert not np.array_equal(s.wide_weights, shipped)
    assert not learner.learn(mail[1], "ham")           # same class again: nothing
    assert learner.learn(mail[1], "spam")              # the other class replaces it
    for raw in mail:
        assert learner.forget(raw)
    assert not learner.forget(mail[0])
    assert s.wide_weights.tobytes() == shipped.tobytes()


def test_every_process_and_a_compacted_journal_give_the_same_bits(
        tmp_path: Path, mail: list[bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = scorer(), scorer()
    writer, reader = Learner(DirStore(tmp_path), first), Learner(DirStore(tmp_path), second)
    for raw in mail[:8]:
        writer.learn(raw, "ham")
    writer.learn(mail[0], "spam")
    writer.forget(mail[3])
    reader.poll()
    assert first.wide_weights.tobytes() == second.wide_weights.tobytes()
    monkeypatch.setattr(learning, "COMPACT_SLACK", 0)
    before = (tmp_path / "journal").stat().st_ino
    for raw in mail[4:6]:                     # churn: records pile up, the live lessons do not
        writer.forget(raw)
        writer.learn(raw, "spam")
    assert (tmp_path / "journal").stat().st_ino != before           # it was rewritten
    assert len((tmp_path / "journal").read_bytes().splitlines()) == len(writer.lessons)
    assert sorted(p.name for p in (tmp_path / "messages").iterdir()) == \
        sorted(key for _user, key in writer.lessons)
    reader.poll()
    fresh = scorer()
    Learner(DirStore(tmp_path), fresh).poll()
    assert first.wide_weights.tobytes() == second.wide_weights.tobytes() == fresh.wide_weights.tobytes()


def test_at_most_max_lessons_the_oldest_forgotten(tmp_path: Path, mail: list[bytes]) -> None:
    learner = Learner(DirStore(tmp_path), scorer(), max_lessons=3)
    for raw in mail[:5]:
        learner.learn(raw, "ham")
    assert [key for _user, key in learner.lessons] == [online.message_key(r) for r in mail[2:5]]


def test_the_step_is_passive_aggressive_in_svm_units() -> None:
    assert online.step(10.0, 2.0, "spam", 5.0) == 0.0              # right side, past the margin
    assert online.step(0.0, 2.0, "spam", 5.0) == pytest.approx(2.5)     # loss 1, |x|^2 2
    assert online.step(20.0, 2.0, "ham", 5.0) == pytest.approx(-10.0)   # capped at C = 2
    assert online.message_key(b"a\r\nb") == online.message_key(b"a\nb")


def test_a_failed_compaction_does_not_fail_the_lesson(tmp_path: Path, mail: list[bytes],
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    learner = Learner(DirStore(tmp_path), scorer())
    monkeypatch.setattr(learning, "COMPACT_SLACK", 0)

    def full(live: list) -> None:      # the disk filled up between the lesson and the rewrite
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(learner.store, "compact", full)
    learner.learn(mail[0], "ham")
    assert learner.forget(mail[0])                     # 2 records > 2 x 0 live: compacts, fails
    assert learner.learn(mail[0], "spam")              # and the store goes on
    assert "compaction failed" in caplog.text
