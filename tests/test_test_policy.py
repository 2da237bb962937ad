"""The test policy itself (tests/fixtures/prereq.py): a missing prerequisite fails on CI
and is skipped with its reason elsewhere. Runs a tiny test file in a pytest subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.smtp import REPO

NEEDS_ABSENT_MODULE = '''
from tests.fixtures.prereq import missing, require_module

def test_module():
    require_module("no_such_module_for_filterd_tests")

def test_tool():
    missing("the frobnicator is not installed")
'''


@pytest.mark.parametrize(("ci", "outcome"), [("true", "2 failed"), ("", "2 skipped")])
def test_missing_prerequisite_fails_on_ci_and_skips_locally(tmp_path: Path, ci: str,
                                                             outcome: str) -> None:
    (tmp_path / "test_needs.py").write_text(NEEDS_ABSENT_MODULE)
    env = {**os.environ, "CI": ci, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                             "--rootdir", str(tmp_path), str(tmp_path)],
                            check=False, capture_output=True, text=True, cwd=tmp_path, env=env,
                            timeout=120)
    assert outcome in result.stdout, result.stdout
    assert "no_such_module_for_filterd_tests is not importable" in result.stdout
    assert "the frobnicator is not installed" in result.stdout
