"""Imports run one way (docs/internals.md, "Modules"): service -> frontends -> scan, verdict,
batcher, learning -> pipeline -> leaves. Read from the source with ast, every import
counted, the ones inside functions and under TYPE_CHECKING too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "filterd"

# Rooms from the bottom up; a module may import its own room and the ones below it.
LEAVES = {"filterd", "filterd.errors", "filterd.hostport", "filterd.metrics", "filterd.replies",
          "filterd.sniff", "filterd.config", "filterd.mailfiles"}
ROOMS = [
    ("leaves", lambda m: m in LEAVES),
    ("pipeline", lambda m: m.startswith("filterd.pipeline")),
    ("scan", lambda m: m in ("filterd.scan", "filterd.verdict", "filterd.batcher")
     or m.startswith("filterd.learning")),
    ("frontends", lambda m: m.startswith("filterd.frontends")),
    ("service", lambda m: m.startswith("filterd.service")
     or m in ("filterd.cli", "filterd.__main__", "filterd.classify", "filterd.learn")),
]
# Clients of another server never import a server module: the next hop's client (relay,
# pool) is not the SMTP server (smtpd, handler, gate).
CLIENTS = {"filterd.frontends.smtp.relay", "filterd.frontends.smtp.pool"}
SERVERS = {"filterd.frontends.smtp.smtpd", "filterd.frontends.smtp.handler",
           "filterd.frontends.smtp.gate"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str) -> set[str]:
    """The filterd modules `name` imports (`from filterd import verdict` is filterd.verdict)."""
    tree = ast.parse(MODULES[name].read_text(), str(MODULES[name]))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES)
    return {m for m in found if m in MODULES and m != name}


def room(name: str) -> int:
    for index, (_, member) in enumerate(ROOMS):
        if member(name):
            return index
    raise AssertionError(f"{name} is in no room: add it to ROOMS (and docs/internals.md)")


def test_every_module_has_a_room() -> None:
    for name in MODULES:
        room(name)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_run_one_way(name: str) -> None:
    upward = [f"{m} ({ROOMS[room(m)][0]})" for m in sorted(imports(name)) if room(m) > room(name)]
    assert not upward, f"{name} ({ROOMS[room(name)][0]}) imports a room above it: {upward}"


def test_front_ends_do_not_import_each_other() -> None:
    def frontend(m: str) -> str:
        rest = m.removeprefix("filterd.frontends.")
        return "smtp" if rest.startswith("smtp") else rest.removesuffix("_edits").removesuffix("_protocol")

    shared = {"filterd.frontends", "filterd.frontends.listener", "filterd.frontends.tracking"}
    for name in MODULES:
        if not name.startswith("filterd.frontends.") or name in shared:
            continue
        others = [m for m in imports(name) if m.startswith("filterd.frontends.")
                  and m not in shared and frontend(m) != frontend(name)]
        assert not others, f"{name} imports another front-end: {others}"


def test_clients_do_not_import_servers() -> None:
    for name in CLIENTS:
        assert not imports(name) & SERVERS, f"{name} imports {imports(name) & SERVERS}"


def test_the_service_knows_no_protocol() -> None:
    """service/ composes front-ends through the Frontend shape (filterd.frontends) alone."""
    for name in MODULES:
        if name.startswith("filterd.service"):
            inside = sorted(m for m in imports(name) if m.startswith("filterd.frontends."))
            assert not inside, f"{name} imports {inside}"


def test_the_check_sees_an_upward_import() -> None:
    """The walk itself: the daemon imports the front-ends, so a reversed check would fail."""
    assert "filterd.frontends" in imports("filterd.service.daemon")
    assert room("filterd.service.daemon") > room("filterd.frontends")
