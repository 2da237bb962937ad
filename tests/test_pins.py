"""The library internals filterd relies on are still there.

filterd/frontends/smtp/smtpd.py subclasses aiosmtpd's SMTP where aiosmtpd has no hook
(private methods, its stream reader's buffer, and a smtp_DATA rebuilt on aiosmtpd's own
steps); relay.py writes a message straight onto aiosmtplib's protocol object. So
pyproject.toml pins both exactly, and this test names what a new version must still have:
when it fails, read the new version's code before moving the pin."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import re
import tomllib
from importlib import metadata

import aiosmtplib
import aiosmtplib.protocol
import pytest
from aiosmtpd import smtp as aiosmtpd_smtp

from tests.fixtures.smtp import REPO

PINNED = ("aiosmtpd", "aiosmtplib")

# aiosmtpd's SMTP methods smtpd.py overrides or calls beyond the documented hooks.
SMTP_METHODS = ("_create_session", "_handle_client", "_timeout_cb", "_getaddr", "connection_lost",
                "_call_handler_hook", "_set_post_data_state", "check_helo_needed",
                "check_auth_needed", "push", "smtp_MAIL", "smtp_RCPT", "smtp_DATA")
# smtpd.smtp_DATA is aiosmtpd 1.4.6's smtp_DATA with the text read by data.read_data: if
# aiosmtpd's changes, ours must follow it (the checks, replies and their order).
SMTP_DATA_SHA256 = "3a33f30d3fd6d02f39c7d78a08288bffea9170525b62e2161568041ae7e018df"


def dependencies() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    out = {}
    for spec in project["dependencies"]:
        name = re.split(r"[<>=!~ \[;]", spec, maxsplit=1)[0]
        out[name.lower()] = spec
    return out


@pytest.mark.parametrize("name", PINNED)
def test_pinned_exactly_and_installed_as_pinned(name: str) -> None:
    spec = dependencies()[name]
    match = re.fullmatch(rf"{name}==([\w.]+)", spec.replace(" ", ""))
    assert match, f"pyproject.toml: {spec!r} must be an exact pin ({name}==X.Y.Z)"
    assert metadata.version(name) == match.group(1)


def test_aiosmtpd_internals_smtpd_uses() -> None:
    smtp = aiosmtpd_smtp.SMTP
    missing = [name for name in SMTP_METHODS if not callable(getattr(smtp, name, None))]
    assert not missing, f"aiosmtpd's SMTP lacks {missing}"
    assigned = set(re.findall(r"self\.(_reader|_writer)\s*[:=]", inspect.getsource(smtp)))
    assert assigned == {"_reader", "_writer"}, "aiosmtpd's SMTP no longer keeps _reader/_writer"
    source = inspect.getsource(smtp.smtp_DATA)
    assert hashlib.sha256(source.encode()).hexdigest() == SMTP_DATA_SHA256, (
        "aiosmtpd's smtp_DATA changed: compare it with FilterSMTP.smtp_DATA (smtpd.py)")


def test_the_stream_reader_buffer_smtpd_peeks_into() -> None:
    # FilterSMTP._next_command_waiting reads aiosmtpd's StreamReader's _buffer (RFC 2920).
    async def buffered() -> bytes:
        reader = asyncio.StreamReader()     # inside a loop, as aiosmtpd makes it
        reader.feed_data(b"NOOP\r\n")
        return bytes(reader._buffer)

    assert asyncio.run(buffered()) == b"NOOP\r\n"


def test_aiosmtplib_internals_relay_uses() -> None:
    assert "self.protocol" in inspect.getsource(aiosmtplib.SMTP), "aiosmtplib.SMTP.protocol"
    proto = aiosmtplib.protocol.SMTPProtocol
    for name in ("write", "read_response", "_drain_helper"):
        assert callable(getattr(proto, name, None)), f"SMTPProtocol.{name}"
    assert "timeout" in inspect.signature(proto.read_response).parameters
