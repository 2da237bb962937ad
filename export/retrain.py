"""`python -m export retrain -c config.yaml`: retrain on local mail, keep the better model, reload.

The cycle, run weekly by filterd-retrain.service:

1. read the `retrain.ham` and `retrain.spam` folders (Maildir, mbox, folders of files);
2. split off a held-out part by a hash of each message (the same messages every run);
3. train a candidate on the rest (`python -m export train`, in a child process);
4. score the held-out part with the candidate and with the live model, through the
   daemon's own Scorer (ONNX, hash-checked), and apply the install rule (`decide`);
5. install the candidate atomically (`install.py`) and make filterd reload.

Exit status: 0 when the cycle ran (candidate installed or kept out), 1 on a failure
(too little mail, training failed, another run holds the lock), 2 on a config error.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from export import extra, install, metrics
from export.corpus import ReadStats, Sample, iter_path, split_of
from filterd.config import Config, describe, load_config
from filterd.errors import ConfigError, FilterdError, ModelError
from filterd.learning.records import CorruptState
from filterd.service.log import setup as log_setup
from filterd.pipeline.artifact import read_manifest
from filterd.pipeline.scorer import Scorer, Thresholds
from filterd.verdict import policy_problem

log = logging.getLogger(__name__)

SPLIT_SEED = 4  # fixed forever: changing it would move messages between training and holdout
TAG_FPR = 0.005  # the tag threshold's target: at most 0.5 % of ham flagged (docs/internals.md)
MIN_PER_CLASS = 20  # held-out ham and spam each; fewer make the comparison a coin toss


@dataclass(frozen=True)
class Rule:
    """Install the candidate only if it is not worse than the live model on the holdout."""

    max_auc_drop: float = 0.005  # candidate AUC >= live AUC - this
    max_recall_drop: float = 0.01  # candidate recall at TAG_FPR >= live recall - this
    min_auc: float = 0.9  # and never below this, live model or not


@dataclass(frozen=True)
class Figures:
    """One model's result on the held-out mail."""

    auc: float
    recall: float  # spam recall at the threshold that flags TAG_FPR of held-out ham
    version: str


class RetrainError(FilterdError):
    """The cycle cannot go on (too little mail, training failed, busy)."""


def holdout_of(raw: bytes, holdout: float) -> bool:
    """True when this message is held out: a pure function of its bytes, stable across runs."""
    return split_of(raw, SPLIT_SEED, 0.0, holdout) == "test"


def read_mail(config: Config, stats: ReadStats) -> list[Sample]:
    samples: list[Sample] = []
    for label, paths in ((0, config.retrain.ham), (1, config.retrain.spam)):
        for path in paths:
            # A Maildir path means its own cur/ and new/ (iter_path skips tmp/ and the
            # Maildir++ subfolders, which are mailboxes of their own).
            samples += iter_path(Path(path), label, stats)
    return with_taught(samples, config)


def with_taught(samples: list[Sample], config: Config) -> list[Sample]:
    """`samples` and the messages taught through spamd TELL or `filterd learn` (the
    learning store): a message both in a folder and taught counts once, as taught."""
    if config.learning is None:
        return samples
    from filterd.learning.learner import taught
    from filterd.learning.online import message_key
    from filterd.learning.teacher import open_store

    lessons: dict[str, Sample] = {}
    try:
        for raw, label in taught(open_store(config.learning.store)):
            lessons[message_key(raw)] = Sample(raw, int(label == "spam"), "learning store")
    except (OSError, CorruptState) as exc:
        log.warning("learning store %s unreadable, training without its lessons: %s",
                    config.learning.store, exc)
        return samples
    log.info("%d taught message(s) from the learning store", len(lessons))
    return [s for s in samples if message_key(s.raw) not in lessons] + list(lessons.values())


def write_folders(samples: list[Sample], root: Path) -> None:
    """One file per message under root/ham and root/spam, which `export train` reads back."""
    for name in ("ham", "spam"):
        (root / name).mkdir(parents=True)
    for i, sample in enumerate(samples):
        (root / ("spam" if sample.label else "ham") / f"{i:07d}.eml").write_bytes(sample.raw)


def figures(model_dir: Path, holdout: list[Sample]) -> Figures:
    """AUC and recall at TAG_FPR on the holdout, scored exactly as the daemon scores."""
    scorer = Scorer.load(model_dir, device="cpu")
    scores = np.asarray(scorer.score([s.raw for s in holdout]))
    labels = np.asarray([s.label for s in holdout], dtype=bool)
    threshold = metrics.threshold_at_fpr(scores[~labels], TAG_FPR)
    point = metrics.at_threshold(labels, scores, threshold)
    return Figures(metrics.roc_auc(labels, scores), point["spam_recall"], scorer.version)


def unrunnable(candidate: Path, config: Config) -> str | None:
    """Why a postmaster could not run this model with this config, or None: thresholds that
    are not 0 < tag < reject <= 1 (equal ones come from too little ham: a reject_at of
    manifest would then reject all it tags), or a policy they contradict."""
    thresholds = read_manifest(candidate)["thresholds"]
    tag, reject = float(thresholds["tag"]), float(thresholds["reject"])
    if tag == reject:
        return (f"candidate's tag and reject thresholds are the same ({tag:.6f}): too little "
                "ham to tell 0.5 % from 0.1 % of it flagged (some 200 training ham at least)")
    if not 0.0 < tag < reject <= 1.0:
        return f"candidate's thresholds are not 0 < tag < reject <= 1: tag {tag}, reject {reject}"
    return policy_problem(config.policy.tag_at, config.policy.reject_at, Thresholds(tag, reject))


def decide(candidate: Figures, live: Figures | None, rule: Rule) -> tuple[bool, str]:
    """The install rule (docs/service.md). Returns (install?, the reason in one line)."""
    if not candidate.auc >= rule.min_auc:
        return False, f"candidate AUC {candidate.auc:.4f} is below the floor {rule.min_auc}"
    if live is None:
        return True, "no usable live model to compare with"
    if candidate.auc < live.auc - rule.max_auc_drop:
        return (
            False,
            f"candidate AUC {candidate.auc:.4f} < live {live.auc:.4f} - {rule.max_auc_drop}",
        )
    if candidate.recall < live.recall - rule.max_recall_drop:
        return False, (
            f"candidate recall {candidate.recall:.4f} < live {live.recall:.4f} - "
            f"{rule.max_recall_drop} at {TAG_FPR:.1%} ham flagged"
        )
    return True, (
        f"AUC {candidate.auc:.4f} vs {live.auc:.4f}, recall {candidate.recall:.4f} "
        f"vs {live.recall:.4f} at {TAG_FPR:.1%} ham flagged"
    )


def train(train_root: Path, out: Path, overrides: list[str]) -> None:
    """Run `python -m export train` in a child process; its output goes to our log."""
    command = [
        sys.executable,
        "-m",
        "export",
        "train",
        "--ham",
        str(train_root / "ham"),
        "--spam",
        str(train_root / "spam"),
        "--out",
        str(out),
    ]
    for pair in overrides:
        command += ["--set", pair]
    log.info("training: %s", shlex.join(command))
    # No progress bars: under systemd they would fill the journal.
    env = {**os.environ, "TQDM_DISABLE": "1"}
    if subprocess.run(command, stdin=subprocess.DEVNULL, env=env, check=False).returncode != 0:
        raise RetrainError("training failed (see its output above); the live model is unchanged")


def reload_filterd(command: str | None, proc: Path = Path("/proc")) -> None:
    """Make the running daemon load the new model; skip, saying so, when none is running."""
    if command:
        result = subprocess.run(shlex.split(command), capture_output=True, text=True, check=False)
        if result.returncode != 0:
            log.warning("reload command %r failed: %s", command, result.stderr.strip())
        return
    pid = main_pid("filterd.service", proc)
    if pid is None:
        log.warning(
            "filterd.service is not running here (or runs as another user); skipping reload "
            "(filterd loads the new model when it starts)"
        )
        return
    try:
        # What `systemctl reload` does too (ExecReload=kill -HUP), without needing root:
        # filterd-retrain.service runs as the same user as filterd.service.
        os.kill(pid, signal.SIGHUP)
        log.info("sent SIGHUP to filterd (pid %d) to load the new model", pid)
    except OSError as exc:
        log.warning("cannot signal filterd (pid %d): %s; run `systemctl reload filterd`", pid, exc)


def main_pid(unit: str, proc: Path = Path("/proc")) -> int | None:
    """The main process of a running systemd unit, or None.

    Found through /proc rather than `systemctl show`: an unprivileged DynamicUser= service
    often cannot use D-Bus (dbus-daemon rejects UIDs it cannot resolve without
    nss-systemd). The unit's processes are those whose cgroup path ends in the unit's
    name; the main one is the process whose parent is not among them.
    """
    members: dict[int, int] = {}  # pid -> parent pid
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cgroups = (entry / "cgroup").read_text().splitlines()
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile, or not ours to see (ProtectProc=invisible)
            continue
        if any(line.split(":", 2)[-1].endswith(f"/{unit}") for line in cgroups):
            members[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])  # "pid (comm) S ppid"
    roots = [pid for pid, parent in members.items() if parent not in members]
    return min(roots) if roots else None


@contextmanager
def locked(work_dir: Path) -> Iterator[None]:
    """One retrain at a time: a second run (timer and hand) fails at once instead of racing."""
    with open(work_dir / "lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RetrainError(f"another retrain holds {work_dir / 'lock'}") from None
        yield


def cycle(config: Config, args: argparse.Namespace) -> dict:
    """The whole cycle; returns the record saved as work_dir/last-run.json."""
    model_dir, work_dir = Path(config.retrain.model_dir), Path(config.retrain.work_dir)
    if Path(config.model.path).absolute() != model_dir.absolute():
        log.warning(
            "model.path (%s) is not retrain.model_dir (%s): filterd will not serve "
            "the retrained model",
            config.model.path,
            model_dir,
        )
    stats = ReadStats()
    samples = read_mail(config, stats)
    held = [s for s in samples if holdout_of(s.raw, config.retrain.holdout)]
    rest = [s for s in samples if not holdout_of(s.raw, config.retrain.holdout)]
    counts = {
        "train_ham": sum(s.label == 0 for s in rest),
        "train_spam": sum(s.label for s in rest),
        "holdout_ham": sum(s.label == 0 for s in held),
        "holdout_spam": sum(s.label for s in held),
    }
    log.info(
        "read %d messages (%s); malformed skipped: %s",
        len(samples),
        counts,
        stats.malformed or "none",
    )
    if min(counts.values()) < MIN_PER_CLASS and not (config.retrain.ham or config.retrain.spam):
        raise RetrainError(f"no folders configured: list your ham and spam folders under "
                           f"retrain.ham and retrain.spam in {args.config}")
    if min(counts.values()) < MIN_PER_CLASS:
        raise RetrainError(
            f"too little labelled mail: need {MIN_PER_CLASS} of each kind in "
            f"training and holdout, have {counts}"
        )
    run_dir = work_dir / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    try:
        write_folders(rest, run_dir / "train")
        with install.candidate_dir(model_dir) as candidate_path:
            train(run_dir / "train", candidate_path, args.overrides)
            candidate = figures(candidate_path, held)
            live = live_figures(model_dir, held)
            ok, reason = decide(candidate, live, args.rule)
            if ok and (unusable := unrunnable(candidate_path, config)):
                ok, reason = False, unusable   # better, but no postmaster could run it
            record = {
                "installed": ok,
                "reason": reason,
                "counts": counts,
                "candidate": asdict(candidate),
                "live": asdict(live) if live else None,
            }
            if ok:
                install.install(candidate_path, model_dir)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)  # copies of users' mail: never keep them
    return record


def live_figures(model_dir: Path, held: list[Sample]) -> Figures | None:
    if not model_dir.exists():
        log.info("no live model at %s yet: judging the candidate alone", model_dir)
        return None
    try:
        return figures(model_dir, held)
    except ModelError as exc:
        log.warning("live model unusable, judging the candidate alone: %s", exc)
        return None


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m export retrain",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-c", "--config", default="/etc/filterd/config.yaml")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="training setting passed to `export train`, e.g. --set epochs=4",
    )
    p.add_argument("--reload-command", help="run this instead of signalling filterd.service")
    p.add_argument("--no-reload", action="store_true", help="install but do not reload filterd")
    rule = Rule()
    p.add_argument("--max-auc-drop", type=float, default=rule.max_auc_drop)
    p.add_argument("--max-recall-drop", type=float, default=rule.max_recall_drop)
    p.add_argument("--min-auc", type=float, default=rule.min_auc)
    args = p.parse_args(argv)
    args.rule = Rule(args.max_auc_drop, args.max_recall_drop, args.min_auc)
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    log_setup("info")
    logging.getLogger("export").setLevel(logging.INFO)  # log.py sets up only "filterd"
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"retrain: {describe(args.config, exc)}", file=sys.stderr)
        return 2
    if (absent := extra.missing()) is not None:   # before any mail is read or copied
        print(f"retrain: {extra.HINT} (no module named {absent!r})", file=sys.stderr)
        return 1
    work_dir = Path(config.retrain.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        with locked(work_dir):
            record = cycle(config, args)
    except (RetrainError, ModelError, OSError) as exc:
        log.error("retrain failed: %s", exc)
        return 1
    record["seconds"] = round(time.monotonic() - started, 1)
    (work_dir / "last-run.json").write_text(json.dumps(record, indent=2) + "\n")
    verdict = "installed" if record["installed"] else "kept out"
    log.info("candidate %s %s: %s", record["candidate"]["version"], verdict, record["reason"])
    if record["installed"] and not args.no_reload:
        reload_filterd(args.reload_command)
    return 0
