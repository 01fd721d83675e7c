"""Accounts keep SCRAM keys, never the password, in SQLite as in memory."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from xmppd.testing import Harness, result_of

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_stored_record_holds_scram_keys_not_the_password():
    h = Harness([])
    result_of(h.server.accounts.create("alice@localhost", "correct horse"))
    record = result_of(h.server.storage.keyvalue("accounts").get("alice@localhost"))
    assert set(record) == {"SCRAM-SHA-1", "SCRAM-SHA-256"}
    assert "correct horse" not in repr(record)
    salt, stored, server, iterations = record["SCRAM-SHA-256"]
    assert iterations == 4096 and salt and stored and server
    assert result_of(h.server.accounts.verify_password("alice@localhost", "correct horse"))
    assert not result_of(h.server.accounts.verify_password("alice@localhost", "wrong"))


def test_sqlite_file_never_contains_the_password(tmp_path):
    config = tmp_path / "xmppd.ini"
    config.write_text(f"[server]\ndata_dir = {tmp_path / 'data'}\ncomponents =\n")
    password = "plaintext-canary-8431"
    result = subprocess.run([sys.executable, "-m", "xmppd", "-c", str(config), "adduser",
                             "alice@localhost"], input=password + "\n", text=True,
                            capture_output=True, env={"PYTHONPATH": str(REPO_ROOT)}, timeout=60)
    assert result.returncode == 0, result.stderr
    database = tmp_path / "data" / "xmppd.sqlite3"
    raw = b"".join(p.read_bytes() for p in database.parent.glob("xmppd.sqlite3*"))
    assert password.encode() not in raw
    with sqlite3.connect(database) as db:
        (value,) = db.execute("SELECT value FROM kv WHERE store='accounts' AND user=?",
                              ("alice@localhost",)).fetchone()
    assert "SCRAM-SHA-256" in value and password not in value
