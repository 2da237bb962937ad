"""A model artifact on disk: manifest.json and the SHA-256 of every file it lists.

Kept apart from scorer.py so that reading or hashing an artifact (fetch-corpus, install,
check-config) does not import onnxruntime.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from filterd.errors import ModelError
from filterd.pipeline import text
from filterd.pipeline.features import SCHEMES

FORMAT = 1                      # manifest "format" this code reads
REQUIRED = ("model.onnx", "vocab.json", "idf.npy", "wide.npy")


def fsync_dir(folder: Path) -> None:
    """Make the names in `folder` durable (after a rename or a new file in it): the model
    installer and the learning store both need it."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(path: Path) -> dict:
    """manifest.json of an artifact, after checking the format and every file's SHA-256."""
    try:
        manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {path / 'manifest.json'}: {exc}") from exc
    if manifest.get("format") != FORMAT:
        raise ModelError(f"{path}: manifest format {manifest.get('format')!r}, expected {FORMAT}")
    files = manifest.get("files", {})
    for name in REQUIRED:
        if name not in files:
            raise ModelError(f"{path}: manifest lists no {name}")
    for name, expected in files.items():
        try:
            actual = sha256_file(path / name)
        except OSError as exc:
            raise ModelError(f"{path}: cannot read {name}: {exc}") from exc
        if actual != expected:
            raise ModelError(f"{path / name}: sha256 {actual} does not match the manifest")
    if manifest.get("text", {}).get("features", "alnum") not in SCHEMES:
        raise ModelError(f"{path}: unknown feature scheme {manifest['text']['features']!r}")
    if manifest.get("text", {}).get("pipeline_version") != text.PIPELINE_VERSION:
        raise ModelError(f"{path}: trained with text pipeline "
                         f"{manifest.get('text', {}).get('pipeline_version')!r}, "
                         f"this filterd has {text.PIPELINE_VERSION}")
    return manifest
