"""The configuration: frozen dataclasses holding every default, and load_config() that validates YAML.

Defaults live only here; an empty file yields them. Each field carries a checker in its
metadata; load_config() walks the YAML mapping, rejects unknown keys and runs the checkers,
so every ConfigError names the key path it is about (e.g. `policy.reject_at: ...`).
Relative paths (model.path) are relative to the working directory of the process.
Loading the model a config names is filterd/service/model.py; `check-config` is in cli.py.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from filterd.errors import ConfigError
from filterd.hostport import split_hostport

Check = Callable[[Any, str], Any]


def _opt(default: Any, check: Check) -> Any:
    return field(default=default, metadata={"check": check})


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


# --- checkers: each takes (value, key path) and returns the value to store ----------------


def _integer(lo: int, hi: int | None = None) -> Check:
    def check(value: Any, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {_kind(value)} {value!r}")
        if value < lo or (hi is not None and value > hi):
            bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
            raise ConfigError(f"{key}: {value} is out of range (must be {bound})")
        return value
    return check


def _number(lo: float, hi: float | None = None, *, lo_open: bool = False) -> Check:
    def check(value: Any, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {_kind(value)} {value!r}")
        if value < lo or (lo_open and value == lo) or (hi is not None and value > hi):
            low = f"> {lo}" if lo_open else f">= {lo}"
            bound = f"{low} and <= {hi}" if hi is not None else low
            raise ConfigError(f"{key}: {value} is out of range (must be {bound})")
        return float(value)
    return check


def _string(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key}: expected a non-empty string, got {_kind(value)} {value!r}")
    return value


def _hostname(value: Any, key: str) -> str:
    name = _string(value, key)
    if any(c.isspace() for c in name) or len(name) > 253:
        raise ConfigError(f"{key}: {name!r} is not a host name")
    return name


def _nullable(check: Check) -> Check:
    return lambda value, key: None if value is None else check(value, key)


def _choice(*choices: str) -> Check:
    def check(value: Any, key: str) -> str:
        if not isinstance(value, str) or value.lower() not in choices:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(choices)}")
        return value.lower()
    return check


def _strings(value: Any, key: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"{key}: expected a list, got {_kind(value)} {value!r}")
    return tuple(_string(item, f"{key}[{i}]") for i, item in enumerate(value))


def _hostport(min_port: int) -> Check:
    def check(value: Any, key: str) -> str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected \"host:port\", got {_kind(value)} {value!r}")
        try:
            _host, port = split_hostport(value.strip())
        except ValueError as exc:
            raise ConfigError(f"{key}: {exc}") from None
        if port < min_port:
            raise ConfigError(f"{key}: port {port} is out of range (must be {min_port}-65535)")
        return value.strip()
    return check


def _networks(value: Any, key: str) -> tuple[str, ...]:
    out = []
    for i, item in enumerate(_strings(value, key)):
        try:
            out.append(str(ipaddress.ip_network(item.strip(), strict=False)))
        except ValueError as exc:
            raise ConfigError(f"{key}[{i}]: {item!r} is not a network ({exc})") from None
    return tuple(out)


def _workers(value: Any, key: str) -> int | str:
    if value == "auto":
        return value
    if isinstance(value, str):
        raise ConfigError(f"{key}: expected an integer or \"auto\", got {value!r}")
    return _integer(1, 256)(value, key)


def _boolean(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {_kind(value)} {value!r}")
    return value


def _listener(value: Any, key: str) -> str:
    """"host:port" or "unix:/absolute/path" (a milter socket, as Postfix's smtpd_milters names it)."""
    if isinstance(value, str) and value.startswith("unix:"):
        path = value[5:]
        if not path.startswith("/") or len(path.encode()) > 100 or "\0" in path:
            raise ConfigError(f"{key}: {value!r}: a UNIX socket needs an absolute path "
                              "of at most 100 bytes, e.g. unix:/run/filterd/milter.sock")
        return value
    return _hostport(0)(value, key)


def _section(cls: type) -> Check:
    """A nested section that may be null (off): built and checked like any other."""
    return lambda value, key: None if value is None else build(cls, value, key)


def _threshold(value: Any, key: str) -> float | str | None:
    if value is None or value == "manifest":
        return value
    if isinstance(value, str):
        raise ConfigError(f"{key}: expected a score, \"manifest\" or null, got {value!r}")
    return _number(0.0, 1.0)(value, key)



def build(cls: type, data: Any, path: str = "") -> Any:
    """Make the dataclass `cls` from a YAML mapping, checking every key (None = defaults)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'top level'}: expected a mapping, got {_kind(data)}")
    known = {f.name: f for f in fields(cls)}
    kwargs = {}
    for name, value in data.items():
        key = f"{path}.{name}" if path else str(name)
        if name not in known:
            raise ConfigError(f"{key}: unknown key (known here: {', '.join(known)})")
        factory = known[name].default_factory
        if is_dataclass(factory):  # a nested section, e.g. timeouts
            kwargs[name] = build(factory, value, key)
        else:
            kwargs[name] = known[name].metadata["check"](value, key)
    return cls(**kwargs)


# --- the configuration --------------------------------------------------------------------


@dataclass(frozen=True)
class Timeouts:
    idle: float = _opt(300.0, _number(0, lo_open=True))
    scoring: float = _opt(30.0, _number(0, lo_open=True))
    next_hop_connect: float = _opt(10.0, _number(0, lo_open=True))
    next_hop: float = _opt(60.0, _number(0, lo_open=True))
    shutdown: float = _opt(30.0, _number(0))


@dataclass(frozen=True)
class ModelConfig:
    path: str = _opt("model_artifacts", _string)
    device: str = _opt("auto", _choice("auto", "cpu", "cuda"))
    threads: int = _opt(1, _integer(1, 256))


@dataclass(frozen=True)
class ScoringConfig:
    max_batch: int = _opt(32, _integer(1, 4096))
    max_wait_ms: float = _opt(2.0, _number(0, 1000))
    max_bytes: int = _opt(10485760, _integer(1))
    max_tokens: int = _opt(4096, _integer(16, 1_000_000))
    on_error: str = _opt("tempfail", _choice("tempfail", "accept"))
    run_on: str = _opt("auto", _choice("auto", "loop", "thread"))   # where batches run (batcher.py)


@dataclass(frozen=True)
class PolicyConfig:
    tag_at: float | str | None = _opt("manifest", _threshold)
    reject_at: float | str | None = _opt(None, _threshold)
    subject_prefix: str | None = _opt(None, _nullable(_string))
    report: bool = _opt(False, _boolean)      # X-Spam-Report: the features behind the score


@dataclass(frozen=True)
class MilterConfig:
    listen: str = _opt("127.0.0.1:10027", _listener)   # host:port or unix:/path


@dataclass(frozen=True)
class SpamdConfig:
    listen: str = _opt("127.0.0.1:10783", _hostport(0))
    # TELL (spamc -L spam|ham|forget) teaches the learning engine; off like spamd's --allow-tell.
    allow_tell: bool = _opt(False, _boolean)


@dataclass(frozen=True)
class RelayConfig:
    # Idle connections kept per worker. Each holds one of the next hop's smtpd processes:
    # workers x pool_size, plus one per delivery in progress, must fit its maxproc (README).
    pool_size: int = _opt(4, _integer(1, 1024))
    # Seconds an unused connection is kept before QUIT, as Postfix's own client does
    # (smtp_connection_cache_time_limit = 2s); below Postfix's smtpd_timeout (300 s).
    idle_timeout: float = _opt(2.0, _number(0, 300, lo_open=True))


@dataclass(frozen=True)
class LogConfig:
    level: str = _opt("info", _choice("debug", "info", "warning", "error"))


@dataclass(frozen=True)
class RetrainConfig:
    ham: tuple[str, ...] = _opt((), _strings)
    spam: tuple[str, ...] = _opt((), _strings)
    model_dir: str = _opt("/var/lib/filterd/model", _string)
    work_dir: str = _opt("/var/lib/filterd/retrain", _string)
    holdout: float = _opt(0.2, _number(0, 0.9, lo_open=True))


def _store(value: Any, key: str) -> str:
    """An absolute directory, or a redis:// (rediss://, unix://) URL."""
    text = _string(value, key).strip()
    if text.split("://", 1)[0] in ("redis", "rediss", "unix") and "://" in text:
        return text
    if not text.startswith("/"):
        raise ConfigError(f"{key}: {text!r}: expected an absolute directory or a redis:// URL")
    return text


@dataclass(frozen=True)
class LearningConfig:
    """Lessons from spamd TELL and `filterd learn` (filterd/learning/)."""

    store: str = _opt("/var/lib/filterd/learning", _store)
    per_user: bool = _opt(False, _boolean)            # a user's lessons apply to their scans only
    max_lessons: int = _opt(20000, _integer(1, 10_000_000))   # beyond it the oldest is forgotten
    max_users: int = _opt(1000, _integer(1, 1_000_000))       # users' deltas held in memory (LRU)


_LOOPBACK = ("127.0.0.0/8", "::1/128")


@dataclass(frozen=True)
class Config:
    listen: str = _opt("127.0.0.1:10025", _hostport(0))
    next_hop: str = _opt("127.0.0.1:10026", _hostport(1))
    metrics: str | None = _opt("127.0.0.1:9125", _nullable(_hostport(0)))
    hostname: str | None = _opt(None, _nullable(_hostname))
    workers: int | str = _opt(1, _workers)
    event_loop: str = _opt("auto", _choice("auto", "uvloop", "asyncio"))
    allowed_networks: tuple[str, ...] = _opt(_LOOPBACK, _networks)
    xforward_networks: tuple[str, ...] = _opt(_LOOPBACK, _networks)
    max_message_size: int = _opt(52428800, _integer(1024))
    max_recipients: int = _opt(1000, _integer(1, 100_000))
    max_connections: int = _opt(256, _integer(1, 100_000))
    timeouts: Timeouts = field(default_factory=Timeouts)
    model: ModelConfig = field(default_factory=ModelConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    relay: RelayConfig = field(default_factory=RelayConfig)
    log: LogConfig = field(default_factory=LogConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    learning: LearningConfig | None = _opt(LearningConfig(), _section(LearningConfig))  # null = off
    milter: MilterConfig | None = _opt(None, _section(MilterConfig))   # null = off
    spamd: SpamdConfig | None = _opt(None, _section(SpamdConfig))      # null = off

    def worker_count(self) -> int:
        """`workers` resolved: "auto" is the number of CPUs this process may run on."""
        if self.workers == "auto":
            return max(1, len(os.sched_getaffinity(0)))
        return int(self.workers)


def _cross_checks(config: Config) -> None:
    tag, reject = config.policy.tag_at, config.policy.reject_at
    if isinstance(tag, float) and isinstance(reject, float) and reject < tag:
        raise ConfigError(f"policy.reject_at: {reject} is below policy.tag_at ({tag})")
    if config.event_loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        raise ConfigError("event_loop: uvloop is not installed (pip install 'filterd[fast]')")
    if (config.learning is not None and "://" in config.learning.store
            and importlib.util.find_spec("redis") is None):
        raise ConfigError("learning.store: a Redis store needs the redis client "
                          "(pip install 'filterd[redis]')")


def _no_duplicate_keys(node: yaml.Node | None, path: str = "") -> None:
    """A key given twice in one mapping is an error naming its key path. YAML says keys are
    unique (1.2 section 3.2.1.1), but PyYAML keeps the last one and drops the first block."""
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _no_duplicate_keys(item, f"{path}[{i}]")
    if not isinstance(node, yaml.MappingNode):
        return
    seen: dict[str, int] = {}
    for key_node, value_node in node.value:
        key = f"{path}.{key_node.value}" if path else str(key_node.value)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise ConfigError(f"{key}: given twice (lines {seen[key]} and {line}); "
                              "the first would be ignored")
        seen[key] = line
        _no_duplicate_keys(value_node, key)


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config file; ConfigError names the offending key path."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc   # not the path again
        raise ConfigError(f"{path}: cannot read: {why}") from None
    try:
        _no_duplicate_keys(yaml.compose(text, Loader=yaml.SafeLoader))
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    config = build(Config, data)
    _cross_checks(config)
    return config


def describe(path: str | Path, exc: ConfigError) -> str:
    """"FILE: key: why" for the log or the terminal, without naming the file twice."""
    text = str(exc)
    return text if text.startswith(f"{path}:") else f"{path}: {text}"
