"""A missing or corrupt model at start: `filterd serve` says what is wrong and exits non-zero."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.fixtures.lifecycle import REPO, copy_model, flip_a_byte, require_model, shipped_model
from tests.fixtures.smtp import free_port


def serve(tmp_path: Path, model: Path) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "filterd.yaml"
    config.write_text(yaml.safe_dump({
        "listen": f"127.0.0.1:{free_port()}", "next_hop": f"127.0.0.1:{free_port()}",
        "metrics": None, "model": {"path": str(model), "device": "cpu"},
        "learning": {"store": str(tmp_path / "learning")},
    }))
    return subprocess.run(
        [sys.executable, "-m", "filterd", "serve", "-c", str(config)], cwd=REPO,
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, check=False,
    )


def copy_of_model(tmp_path: Path) -> Path:
    require_model()
    return copy_model(shipped_model(), tmp_path / "model")


def test_missing_model_directory(tmp_path: Path) -> None:
    result = serve(tmp_path, tmp_path / "no-such-model")
    assert result.returncode not in (0, None), result
    assert "no-such-model" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr, result.stderr[-2000:]


def truncate_onnx(model: Path) -> str:
    (model / "model.onnx").write_bytes(b"\x08\x07garbage")
    return "model.onnx"


def flip_a_byte_in_onnx(model: Path) -> str:
    flip_a_byte(model / "model.onnx")
    return "model.onnx"


def remove_vocab(model: Path) -> str:
    (model / "vocab.json").unlink()
    return "vocab.json"


def break_manifest(model: Path) -> str:
    text = (model / "manifest.json").read_text()
    (model / "manifest.json").write_text(text[: len(text) // 2])
    return "manifest"


def remove_onnx(model: Path) -> str:
    (model / "model.onnx").unlink()
    return "model.onnx"


@pytest.mark.parametrize("damage", [truncate_onnx, flip_a_byte_in_onnx, remove_onnx,
                                    remove_vocab, break_manifest], ids=lambda f: f.__name__)
def test_corrupt_model(tmp_path: Path, damage: Callable[[Path], str]) -> None:
    model = copy_of_model(tmp_path)
    culprit = damage(model)
    result = serve(tmp_path, model)
    output = result.stderr + result.stdout
    assert result.returncode not in (0, None), output[-2000:]
    assert culprit in output, output[-2000:]  # the error names what is wrong
    assert "Traceback" not in output, output[-2000:]  # a clear message, not a crash dump
