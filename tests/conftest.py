"""Shared pytest set-up: the corpus location and the fixture plugins of each area."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fixtures.prereq import missing

REPO = Path(__file__).resolve().parent.parent

pytest_plugins = [
    "tests.fixtures.smtp",
    "tests.fixtures.daemon",
    "tests.fixtures.postfix",
    "tests.fixtures.frontends",
]


def corpus_path() -> Path:
    """The one corpus setting: FILTERD_CORPUS, default ../shared/corpus beside the repo."""
    return Path(os.environ.get("FILTERD_CORPUS", REPO.parent / "shared" / "corpus")).resolve()


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    path = corpus_path()
    if not any(path.glob("*.tar.bz2")) and not path.is_dir():
        missing(f"corpus not found at {path}; set FILTERD_CORPUS")
    return path


@pytest.fixture(scope="session")
def ham(corpus_dir: Path) -> list[bytes]:
    """Two real ham messages from the corpus (for tests that send mail through an MTA)."""
    from tests.fixtures.postfix import corpus_messages   # here: pytest rewrites its asserts first

    return corpus_messages(corpus_dir, "ham", 2)


@pytest.fixture(scope="session")
def spam(corpus_dir: Path) -> list[bytes]:
    """Three real spam messages from the corpus."""
    from tests.fixtures.postfix import corpus_messages

    return corpus_messages(corpus_dir, "spam", 3)


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The model that ships in the repository."""
    return REPO / "model_artifacts"
