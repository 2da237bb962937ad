"""`filterd classify [--model DIR] PATH…`: one JSON line per message with path, score and action.

PATH is a message file, a folder (walked recursively; in a Maildir only cur/ and new/ are
read; dot files, hidden folders such as Maildir++ subfolders, and Maildir tmp/ are
skipped: see filterd/mailfiles.py), an mbox file, or `-` for one message on
stdin. Messages are scored in batches; the action is what the manifest's thresholds give,
in the daemon's words (verdict.Action): "rejected" at or above reject, "tagged" at or above
tag, else "ham". With --explain each line
also carries "explanation": the logit, the recurrent part's share, and the top n-gram
features with their signed contributions.

A file that is not a mail message (filterd/sniff.py: empty, binary, no header field at the
start) is not scored: its line says `"action": "not_mail"` and `"reason"`, with no score.
Exit status: 0 when every path was read (not_mail lines included), 1 when a path could not
be read, held no message (an empty folder), or the model could not be loaded.

Without --model: $FILTERD_MODEL, else the model beside the package in a checkout (or an
editable install), else the one a normal `pip install` put in
`<prefix>/share/filterd/model_artifacts` (pyproject.toml ships it as data files).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from importlib import metadata
from pathlib import Path

from filterd.errors import ModelError
from filterd.mailfiles import iter_messages
from filterd.pipeline import explain
from filterd.pipeline.scorer import Scorer
from filterd.sniff import not_mail
from filterd.verdict import Policy

CHECKOUT_MODEL = Path(__file__).resolve().parent.parent / "model_artifacts"
INSTALLED_MANIFEST = "share/filterd/model_artifacts/manifest.json"   # as pyproject.toml ships it
BATCH = 256


def _flush(scorer: Scorer, pending: list[tuple[str, bytes]], why: bool = False) -> None:
    reasons = [not_mail(raw) for _, raw in pending]
    mail = [raw for (_, raw), reason in zip(pending, reasons) if reason is None]
    scores = iter(scorer.infer([scorer.prepare(raw) for raw in mail]))
    policy = Policy.resolve("manifest", "manifest", scorer.thresholds)
    out = sys.stdout
    for (path, raw), reason in zip(pending, reasons):
        line: dict[str, object] = {"path": path, "action": "not_mail", "reason": reason}
        if reason is None:
            score = next(scores)
            line = {"path": path, "score": round(score, 6), "action": policy.action(score)}
            if why:   # --explain: the features behind the score (filterd/pipeline/explain.py)
                line["explanation"] = explain.explain(scorer, raw).as_dict()
        out.write(json.dumps(line) + "\n")
    out.flush()
    pending.clear()


def installed_model() -> Path | None:
    """The model folder a non-editable install of filterd carries, if there is one."""
    try:
        files = metadata.distribution("filterd").files or []
    except metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.as_posix().endswith(INSTALLED_MANIFEST):
            return Path(str(file.locate())).parent
    return None


def default_model() -> Path:
    """$FILTERD_MODEL, the checkout's model_artifacts/, or the installed one (in that order)."""
    if os.environ.get("FILTERD_MODEL"):
        return Path(os.environ["FILTERD_MODEL"])
    if (CHECKOUT_MODEL / "manifest.json").exists():
        return CHECKOUT_MODEL
    installed = installed_model()
    if installed is None:
        raise ModelError("no model found: pass --model DIR or set FILTERD_MODEL")
    return installed


def run(args: argparse.Namespace) -> int:
    try:
        scorer = Scorer.load(args.model or default_model(), "auto")
    except ModelError as exc:
        print(f"filterd classify: {exc}", file=sys.stderr)
        return 1
    pending: list[tuple[str, bytes]] = []
    errors: list[str] = []
    for item in iter_messages(args.paths, errors):
        pending.append(item)
        if len(pending) >= BATCH:
            _flush(scorer, pending, args.explain)
    if pending:
        _flush(scorer, pending, args.explain)
    for error in errors:
        print(f"filterd classify: {error}", file=sys.stderr)
    return 1 if errors else 0
