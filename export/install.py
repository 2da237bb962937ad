"""Atomic install of a model artifact folder: the live model_dir is never half-written.

Layout beside the live path (default /var/lib/filterd/model):

    model                 symlink -> model.versions/<version>   (what filterd reads)
    model.versions/
        <version>/        complete artifact folders, the live one and a few older ones
        .candidate-*/     being trained or judged; never pointed to

A candidate is trained straight into `model.versions/.candidate-*` (same filesystem, so
no copy), synced to disk, renamed to its version name, and then the symlink is swapped
with rename(2), which is atomic: a reader sees the old folder or the new one, whole.
A model_dir that is still a plain folder (copied in at install time) is swapped for the
symlink with renameat2(RENAME_EXCHANGE), also atomic, and moved into model.versions/.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filterd.pipeline.artifact import fsync_dir, read_manifest

log = logging.getLogger(__name__)

KEEP = 3  # versions kept besides the live one, for going back by hand
_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def versions_dir(model_dir: Path) -> Path:
    return model_dir.parent / f"{model_dir.name}.versions"


@contextmanager
def candidate_dir(model_dir: Path) -> Iterator[Path]:
    """A fresh path to train into; whatever is left there afterwards (not installed) goes."""
    root = versions_dir(model_dir)
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".candidate-*"):  # left by a run that crashed
        shutil.rmtree(stale, ignore_errors=True)
    for stale in model_dir.parent.glob(f".{model_dir.name}.link-*"):
        stale.unlink(missing_ok=True)
    path = root / f".candidate-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def install(candidate: Path, model_dir: Path) -> Path:
    """Make `candidate` the live model; returns where it now lives. Old versions are pruned."""
    sync_tree(candidate)
    manifest = read_manifest(candidate)  # refuse a folder that is not a complete artifact
    versions_dir(model_dir).mkdir(parents=True, exist_ok=True)
    target = unique(versions_dir(model_dir) / str(manifest["version"]))
    candidate.rename(target)
    fsync_dir(target.parent)
    swap_link(model_dir, Path(target.parent.name) / target.name)
    log.info("installed model %s as %s", target.name, model_dir)
    prune(model_dir)
    return target


def swap_link(model_dir: Path, relative_target: Path) -> None:
    """Point model_dir at relative_target (relative to its parent) in one atomic step."""
    tmp = model_dir.parent / f".{model_dir.name}.link-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(relative_target)
    if model_dir.is_dir() and not model_dir.is_symlink():
        adopt_folder(model_dir, tmp)
    else:
        os.replace(tmp, model_dir)
    fsync_dir(model_dir.parent)


def adopt_folder(model_dir: Path, link: Path) -> None:
    """First install over a plain folder: exchange it with the link, then file it as a version."""
    exchange(link, model_dir)  # now model_dir is the link and `link` the old folder
    try:
        version = str(read_manifest(link)["version"])
    except Exception:  # noqa: BLE001 - any unreadable manifest: keep the folder anyway
        version = "unknown"
    old = unique(versions_dir(model_dir) / f"{version}-initial")
    link.rename(old)
    log.info("moved the previous model folder to %s", old)


def exchange(a: Path, b: Path) -> None:
    """renameat2(a, b, RENAME_EXCHANGE): swap two names atomically (Linux 3.15+, glibc 2.28+)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    result = libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"cannot exchange {a} and {b}: {os.strerror(errno)}")


def prune(model_dir: Path) -> None:
    """Delete all but the KEEP newest versions that are not live."""
    live = model_dir.resolve()
    old = sorted(
        (
            p
            for p in versions_dir(model_dir).iterdir()
            if p.is_dir() and not p.name.startswith(".") and p.resolve() != live
        ),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for path in old[KEEP:]:
        shutil.rmtree(path, ignore_errors=True)
        log.info("removed old model %s", path.name)


def unique(path: Path) -> Path:
    n, candidate = 1, path
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}.{n}")
    return candidate


def sync_tree(folder: Path) -> None:
    """fsync every file and the folder, so a crash after the swap cannot leave empty files."""
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    fsync_dir(folder)
