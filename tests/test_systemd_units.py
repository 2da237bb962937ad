"""The systemd units: `systemd-analyze verify` is clean and the sandbox scores <= 2.0.

systemd-analyze runs offline (no running systemd needed). `verify` insists that
every Exec*= binary exists, so each test builds a throw-away root holding the
units, systemd's own unit directory (for the targets we order against) and a
stub executable at every Exec*= path, then points `--root` at it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.prereq import missing

REPO = Path(__file__).resolve().parent.parent
UNITS = REPO / "systemd"
SYSTEM_UNITS = Path("/usr/lib/systemd/system")
MAX_EXPOSURE = 2.0



@pytest.fixture(autouse=True)
def _systemd_analyze() -> None:
    if shutil.which("systemd-analyze") is None or not SYSTEM_UNITS.is_dir():
        missing("systemd-analyze not installed (apt-get install systemd)")


def exec_paths(unit: Path) -> list[str]:
    """The binaries of every Exec*= line, without systemd's prefixes (-@:+!)."""
    paths = []
    for line in unit.read_text().splitlines():
        match = re.match(r"Exec\w+=\s*[-@:+!]*(\S+)", line)
        if match:
            paths.append(match.group(1))
    return paths


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A fake filesystem root with our units installed in /etc/systemd/system."""
    root = tmp_path / "root"
    shutil.copytree(SYSTEM_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    etc = root / "etc/systemd/system"
    etc.mkdir(parents=True)
    for unit in sorted(UNITS.glob("filterd*.*")):
        shutil.copy(unit, etc / unit.name)
        for binary in exec_paths(unit):
            stub = root / binary.lstrip("/")
            stub.parent.mkdir(parents=True, exist_ok=True)
            stub.write_text("#!/bin/sh\n")
            stub.chmod(0o755)
    return root


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", *args], capture_output=True, text=True, timeout=120, check=False
    )


def exposure(output: str) -> float:
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", output)
    assert match, output
    return float(match.group(1))


def setting(text: str, pattern: str) -> re.Match[str] | None:
    """The first line of a unit file that matches `pattern` as a whole."""
    return re.search(rf"^{pattern}$", text, re.MULTILINE)


def test_units_are_in_the_repo() -> None:
    names = {path.name for path in UNITS.iterdir()}
    assert {
        "filterd.service",
        "filterd-retrain.service",
        "filterd-retrain.timer",
        "cuda.conf",
    } <= names


def test_verify_is_clean(root: Path) -> None:
    units = ["filterd.service", "filterd-retrain.service", "filterd-retrain.timer"]
    result = analyze("verify", f"--root={root}", *units)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "" and result.stdout == ""


def test_verify_notices_a_missing_binary(root: Path) -> None:
    """The stubs matter: without the daemon binary, verify fails (so the test above can fail)."""
    (root / "opt/filterd/venv/bin/filterd").unlink()
    result = analyze("verify", f"--root={root}", "filterd.service")
    assert result.returncode != 0
    assert "/opt/filterd/venv/bin/filterd" in result.stderr


@pytest.mark.parametrize("unit", ["filterd.service", "filterd-retrain.service"])
def test_exposure_is_low(unit: str) -> None:
    result = analyze("security", "--offline=yes", str(UNITS / unit))
    assert exposure(result.stdout) <= MAX_EXPOSURE, result.stdout


def test_cuda_drop_in_opens_the_gpu_and_stays_hardened(root: Path) -> None:
    drop_in = root / "etc/systemd/system/filterd.service.d"
    drop_in.mkdir()
    shutil.copy(UNITS / "cuda.conf", drop_in / "cuda.conf")
    result = analyze("security", "--offline=yes", f"--root={root}", "filterd.service")
    assert exposure(result.stdout) <= MAX_EXPOSURE, result.stdout
    device_acl = next(line for line in result.stdout.splitlines() if "DeviceAllow=" in line)
    for group in ("char-nvidia-frontend:rw", "char-nvidia-uvm:rw"):
        assert group in device_acl
    # PrivateDevices=yes would hide /dev/nvidia* whatever DeviceAllow= says.
    assert re.search(r"✗ PrivateDevices=", result.stdout)
    assert analyze("verify", f"--root={root}", "filterd.service").returncode == 0


def test_daemon_unit_contract() -> None:
    """The settings docs/service.md promises, read straight from the file."""
    text = (UNITS / "filterd.service").read_text()
    for line in [
        "Type=notify",
        "ExecStart=/opt/filterd/venv/bin/filterd serve -c /etc/filterd/config.yaml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "KillMode=mixed",
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "StateDirectory=filterd",
    ]:
        assert setting(text, re.escape(line)), line
    limit = setting(text, r"LimitNOFILE=(\d+)")
    assert limit and int(limit.group(1)) >= 4096


def test_timer_runs_retrain_weekly_with_catch_up() -> None:
    text = (UNITS / "filterd-retrain.timer").read_text()
    assert setting(text, "OnCalendar=weekly")
    assert setting(text, "Persistent=true")
    assert setting(text, r"RandomizedDelaySec=\S+")
    service = (UNITS / "filterd-retrain.service").read_text()
    assert setting(service, r"ExecStart=\S+/python -m export retrain -c /etc/filterd/config\.yaml")
    assert setting(service, "IOSchedulingClass=idle")
