"""Dovecot's spam-reporting recipe (README, contrib/dovecot/) with a real Dovecot and a real
IMAP client: copying a message into Junk teaches filterd spam, moving it out teaches ham,
and filterd's score for that message moves accordingly (two workers, spamd TELL).
"""

from __future__ import annotations

import imaplib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.dovecot import PASSWORD, RECIPE, Dovecot, require_dovecot
from tests.fixtures.frontends import require_spamc
from tests.fixtures.learning import points_everywhere, spamd_port
from tests.fixtures.postfix import corpus_messages
from tests.fixtures.smtp import REPO, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.corpus]


@pytest.fixture
def served(daemon_factory: Any, tmp_path: Path) -> Iterator[tuple[Any, int, Dovecot]]:
    require_dovecot()
    require_spamc()
    daemon = daemon_factory(workers=2, spamd={"listen": "127.0.0.1:0", "allow_tell": True},
                            learning={"store": str(tmp_path / "store")})
    port = spamd_port(daemon)
    dovecot = Dovecot(port).start()
    yield daemon, port, dovecot
    dovecot.stop()


def uids(imap: imaplib.IMAP4, mailbox: str) -> list[bytes]:
    assert imap.select(mailbox)[0] == "OK"
    kind, data = imap.uid("SEARCH", "ALL")
    assert kind == "OK", data
    return data[0].split()


def test_moving_into_and_out_of_junk_teaches_filterd(served: tuple[Any, int, Dovecot],
                                                     corpus_dir: Path) -> None:
    daemon, port, dovecot = served
    message = corpus_messages(corpus_dir, "easy_ham", 1)[0]
    before = points_everywhere(port, message)
    assert len(before) == 1 and max(before) < 5.0, before
    imap = imaplib.IMAP4("127.0.0.1", dovecot.port)
    imap.login("alice", PASSWORD)
    assert imap.append("INBOX", None, None, message)[0] == "OK"

    [uid] = uids(imap, "INBOX")
    assert imap.uid("COPY", uid, "Junk")[0] == "OK"            # the user says: spam
    wait_until(lambda: min(points_everywhere(port, message, 8)) > max(before), 5.0,
               "filterd to learn spam", interval=0.1)
    as_spam = points_everywhere(port, message)
    assert len(as_spam) == 1, as_spam

    [junk] = uids(imap, "Junk")
    assert imap.uid("MOVE", junk, "INBOX")[0] == "OK"          # no: it is ham
    wait_until(lambda: max(points_everywhere(port, message, 8)) < min(as_spam), 5.0,
               "filterd to learn ham", interval=0.1)
    imap.logout()
    assert "TELL" not in "".join(daemon.problems()), daemon.problems()
    assert " Error: " not in dovecot.log(), dovecot.log()


def test_the_readme_quotes_the_recipe_files_as_they_are() -> None:
    readme = (REPO / "README.md").read_text()
    for name in ("90-filterd-imapsieve.conf", "report-spam.sieve", "learn-spam.sh"):
        assert (RECIPE / name).read_text().strip() in readme, name
