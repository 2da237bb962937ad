"""`filterd check-config` and load_config(): one broken config per class of mistake.

Each broken config must make check-config exit non-zero with a message naming the key
path; the shipped config.yaml and an empty file are valid. check-config runs as a real
subprocess, as systemd's ExecStartPre does.
"""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from filterd.config import Config, load_config
from filterd.hostport import format_address, split_hostport
from filterd.errors import ConfigError
from tests.fixtures.lifecycle import REPO, copy_model, corrupt_model, shipped_model

# (class of mistake, YAML, the key path the message must name)
BROKEN = [
    ("unknown key", "listen: 127.0.0.1:10025\nlisten_port: 25\n", "listen_port"),
    ("unknown nested key", "timeouts:\n  idel: 30\n", "timeouts.idel"),
    ("wrong type", "max_recipients: many\n", "max_recipients"),
    ("wrong type nested", "scoring:\n  max_batch: 8.5\n", "scoring.max_batch"),
    ("wrong type section", "policy: 0.5\n", "policy"),
    ("out of range", "timeouts:\n  shutdown: -1\n", "timeouts.shutdown"),
    ("out of range idle limit", "relay:\n  idle_timeout: 0\n", "relay.idle_timeout"),
    ("out of range threshold", "policy:\n  reject_at: 1.5\n", "policy.reject_at"),
    ("bad choice", "model:\n  device: tpu\n", "model.device"),
    ("bad event loop", "event_loop: trio\n", "event_loop"),
    ("bad host:port", "next_hop: mail.example.org\n", "next_hop"),
    ("bad port", "listen: 127.0.0.1:70000\n", "listen"),
    ("bad IPv6 host:port", "metrics: '::1:9125'\n", "metrics"),
    ("bad host name", "hostname: 'mail server'\n", "hostname"),
    ("bad network", "allowed_networks: [127.0.0.0/8, 10.0.0.0/40]\n", "allowed_networks[1]"),
    ("inconsistent thresholds", "policy:\n  tag_at: 0.9\n  reject_at: 0.5\n", "policy.reject_at"),
    ("duplicate section", "policy:\n  tag_at: 0.5\nworkers: 1\npolicy:\n  reject_at: 0.9\n", "policy"),
    ("duplicate nested key", "timeouts:\n  idle: 10\n  idle: 20\n", "timeouts.idle"),
]


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "filterd", "check-config", "-c", str(path)],
                          check=False, cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.fixture
def model() -> Path:
    path = shipped_model()
    if not (path / "manifest.json").exists():
        pytest.fail(f"no model at {path}")
    return path


@pytest.mark.parametrize(("mistake", "text", "key"), BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_config_is_refused_naming_the_key(tmp_path: Path, mistake: str, text: str,
                                                 key: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{key}:"), caught.value
    result = check_config(path)
    assert result.returncode == 2
    assert f"{key}:" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_model_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"model": {"path": str(tmp_path / "no-such-model")}}))
    result = check_config(path)
    assert result.returncode == 2
    assert "model.path:" in result.stderr and "no-such-model" in result.stderr
    assert "Traceback" not in result.stderr


def test_corrupt_model_hash_is_refused(tmp_path: Path, model: Path) -> None:
    broken = corrupt_model(model, tmp_path / "model")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"model": {"path": str(broken), "device": "cpu"}}))
    result = check_config(path)
    assert result.returncode == 2
    assert "model.path:" in result.stderr and "sha256" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("policy", "said"), [
    ({"tag_at": "manifest", "reject_at": 0.5}, "policy.reject_at: 0.5 is below policy.tag_at (manifest ({tag}))"),
    ({"tag_at": 0.99, "reject_at": "manifest"}, "policy.reject_at: manifest ({reject}) is below policy.tag_at (0.99)"),
])
def test_reject_below_tag_once_manifest_is_resolved(tmp_path: Path, model: Path,
                                                    policy: dict[str, Any], said: str) -> None:
    """config.py can only compare two numbers; against the model, `manifest` is one too."""
    from filterd.pipeline.artifact import read_manifest
    from filterd.verdict import format_score

    thresholds = read_manifest(model)["thresholds"]
    assert thresholds["tag"] > 0.5 and thresholds["reject"] < 0.99   # what the cases rely on
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"model": {"path": str(model), "device": "cpu"}, "policy": policy}))
    result = check_config(path)
    assert result.returncode == 2, result
    expected = said.format(tag=format_score(thresholds["tag"]), reject=format_score(thresholds["reject"]))
    assert result.stderr == f"filterd: {path}: {expected} with this model\n"
    path.write_text(yaml.safe_dump({"model": {"path": str(model), "device": "cpu"},
                                    "policy": {"tag_at": "manifest", "reject_at": "manifest"}}))
    assert check_config(path).returncode == 0


def test_shipped_config_is_valid_and_is_the_defaults(model: Path) -> None:
    # Only `workers` differs on purpose: the shipped config uses every core.
    assert load_config(REPO / "config.yaml") == Config(workers="auto")
    result = check_config(REPO / "config.yaml")
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


def test_empty_file_gives_the_defaults(tmp_path: Path, model: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_config(path) == Config()
    result = check_config(path)   # cwd is the repository: model_artifacts is found there
    assert result.returncode == 0, result.stderr


def test_valid_values_are_read(tmp_path: Path, model: Path) -> None:
    other = copy_model(model, tmp_path / "model")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "listen": "[::1]:2525", "workers": "auto", "metrics": None,
        "allowed_networks": ["192.0.2.1/24"], "timeouts": {"shutdown": 5},
        "policy": {"tag_at": 0.5, "reject_at": "manifest", "subject_prefix": "[SPAM] "},
        "model": {"path": str(other), "device": "cpu", "threads": 2},
    }))
    config = load_config(path)
    assert config.listen == "[::1]:2525" and config.metrics is None
    assert config.worker_count() >= 1
    assert config.allowed_networks == ("192.0.2.0/24",)
    assert config.timeouts.shutdown == 5.0 and config.timeouts.idle == 300.0
    assert config.policy.tag_at == 0.5 and config.policy.reject_at == "manifest"
    assert check_config(path).returncode == 0


def test_unreadable_and_non_yaml_files(tmp_path: Path) -> None:
    result = check_config(tmp_path / "absent.yaml")
    assert result.returncode == 2 and "cannot read" in result.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("listen: [unclosed\n")
    result = check_config(bad)
    assert result.returncode == 2 and "not valid YAML" in result.stderr


def test_serve_refuses_a_broken_config_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("scoring:\n  max_wait: 5\n")
    result = subprocess.run([sys.executable, "-m", "filterd", "serve", "-c", str(path)],
                            check=False, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2          # the unit's RestartPreventExitStatus=2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and " ERROR " in lines[0] and "scoring.max_wait:" in lines[0]


@given(st.ip_addresses(), st.integers(0, 65535))
def test_split_hostport_round_trips(address: Any, port: int) -> None:
    text = f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"
    assert split_hostport(text) == (str(address), port)
    assert split_hostport(format_address((str(address), port))) == (str(address), port)


@given(st.text(max_size=30))
def test_split_hostport_rejects_or_parses(text: str) -> None:
    try:
        host, port = split_hostport(text)
    except ValueError:
        return
    assert host and host in text
    assert ":" not in host or text.startswith(f"[{host}]:")   # IPv6 only in brackets
    assert 0 <= port <= 65535 and int(text.rpartition(":")[2]) == port


@pytest.mark.parametrize("section, value, message", [
    ("milter", {"listen": "unix:relative.sock"}, "milter.listen: 'unix:relative.sock': a UNIX socket"),
    ("milter", {"listen": "nowhere"}, "milter.listen: 'nowhere' is not host:port"),
    ("milter", {"port": 1}, "milter.port: unknown key"),
    ("spamd", {"listen": "unix:/x"}, "spamd.listen: 'unix:/x' is not host:port"),
    ("spamd", "yes", "spamd: expected a mapping"),
    ("spamd", {"allow_tell": "yes"}, "spamd.allow_tell: expected true or false"),
    ("policy", {"report": "yes"}, "policy.report: expected true or false"),
])
def test_front_end_sections_are_checked(section: str, value: Any, message: str) -> None:
    from filterd.config import build

    with pytest.raises(ConfigError) as caught:
        build(Config, {section: value})
    assert str(caught.value).startswith(message), caught.value


def test_front_ends_are_off_unless_configured() -> None:
    from filterd.config import build

    assert Config().milter is None and Config().spamd is None
    config = build(Config, {"milter": {}, "spamd": {"listen": "[::1]:10783"}})
    assert config.milter is not None and config.milter.listen == "127.0.0.1:10027"
    assert config.spamd is not None and config.spamd.listen == "[::1]:10783"
    assert config.spamd.allow_tell is False   # TELL off unless asked for, as spamd's --allow-tell


def test_reload_keeps_restart_keys_and_applies_the_rest() -> None:
    from filterd.config import build
    from filterd.service.reload import RESTART_KEYS, pin_restart_keys

    old = Config()
    new = build(Config, {
        "listen": "127.0.0.1:1", "workers": 2, "event_loop": "asyncio", "metrics": None, "next_hop": "127.0.0.1:2",
        "relay": {"pool_size": 3}, "timeouts": {"next_hop_connect": 1, "next_hop": 2, "idle": 7},
        "max_recipients": 5, "milter": {"listen": "unix:/run/filterd/milter.sock"},
        "spamd": {}, "learning": {"store": "redis://127.0.0.1:6379/0"},
    })
    pinned, notes = pin_restart_keys(old, new)

    def get(config: Any, key: str) -> Any:
        return functools.reduce(getattr, key.split("."), config)

    assert [get(pinned, key) for key in RESTART_KEYS] == [get(old, key) for key in RESTART_KEYS]
    assert (pinned.timeouts.idle, pinned.max_recipients) == (7.0, 5)
    assert [note.split(" ")[0] for note in notes] == list(RESTART_KEYS)
