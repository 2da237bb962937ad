"""What a new user meets first: --version, --help, defaults shown, and a real `pip install`.

Each runs the command line as a user would, in a subprocess. The install test builds a
wheel from a copy of this checkout and installs it (without dependencies) into a fresh
venv, then runs that venv's `filterd classify` from a folder that is not the checkout.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from filterd import __version__
from tests.fixtures.prereq import missing, require_module
from tests.fixtures.smtp import REPO


def run(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=False, capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout)


def test_version() -> None:
    result = run(sys.executable, "-m", "filterd", "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"filterd {__version__}"


@pytest.mark.parametrize("command", ["serve", "check-config"])
def test_config_option_has_help_and_shows_its_default(command: str) -> None:
    result = run(sys.executable, "-m", "filterd", command, "--help")
    assert result.returncode == 0, result.stderr
    assert "-c CONFIG, --config CONFIG" in result.stdout
    assert "the YAML config file (default: config.yaml)" in " ".join(result.stdout.split())


def test_export_help_exits_0_and_lists_the_commands() -> None:
    result = run(sys.executable, "-m", "export", "--help")
    assert result.returncode == 0, result.stderr
    for command in ("train", "cv", "evaluate", "retrain", "fetch-corpus"):
        assert f"\n  {command} " in result.stdout, command
    bare = run(sys.executable, "-m", "export")
    assert bare.returncode == 2 and bare.stderr.startswith("usage: python -m export")


def _checkout_copy(dest: Path) -> Path:
    """The files a wheel is built from, without build litter landing in the checkout."""
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    for name in ("filterd", "export", "model_artifacts"):   # the C extension built afresh
        shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    return dest


@pytest.mark.slow
def test_classify_without_model_after_a_normal_pip_install(tmp_path: Path) -> None:
    setuptools = require_module("setuptools", "pip install -e '.[test]'")
    if tuple(int(x) for x in setuptools.__version__.split(".")[:2]) < (70, 1):
        missing(f"setuptools {setuptools.__version__} cannot build a wheel offline; pip install -e '.[test]'")
    (tmp_path / "src").mkdir()
    src = _checkout_copy(tmp_path / "src")
    built = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                "-w", str(tmp_path / "dist"), str(src), timeout=300)
    assert built.returncode == 0, built.stderr
    wheel = next((tmp_path / "dist").glob("filterd-*.whl"))
    venv = tmp_path / "venv"
    made = run(sys.executable, "-m", "venv", "--without-pip", str(venv))
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    installed = run(sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                    "--no-deps", str(wheel), timeout=300)
    assert installed.returncode == 0, installed.stderr
    # The dependencies come from the test venv, appended after the new venv's own packages
    # (a plain path: its .pth files, such as the editable install's, are not run).
    site = Path(run(str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))")
                .stdout.strip())
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    message = elsewhere / "m.eml"
    message.write_bytes(b"Subject: hello\n\nAn ordinary message about a meeting.\n")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    where = run(str(python), "-c", "import filterd; print(filterd.__file__)", cwd=elsewhere, env=env)
    assert where.stdout.startswith(str(venv)), where   # the installed copy, not the checkout
    if shutil.which("gcc"):     # the wheel carries the n-gram extension (.ci/run installs gcc)
        native = run(str(python), "-c", "from filterd.pipeline import features; print(features.NATIVE)",
                     cwd=elsewhere, env=env)
        assert native.stdout.strip() == "True", native
    result = run(str(venv / "bin" / "filterd"), "classify", str(message), cwd=elsewhere, env=env)
    assert result.returncode == 0, result.stderr
    line = json.loads(result.stdout)
    assert line["path"] == str(message) and line["action"] in ("ham", "tagged", "rejected")
    assert 0.0 <= line["score"] <= 1.0
