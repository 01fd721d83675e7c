"""The ``xmppd`` admin command, run as the operator runs it: in a subprocess.

A subprocess per command because the command runs the reactor, which cannot be
restarted within one process; and it is what the operator sees anyway (exit
status, one-line errors, no traceback). Stored passwords are checked through
:meth:`Accounts.verify_password`, also in a subprocess, so a test proves the
password was set rather than trusting the exit status.
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from xmppd import tls

ROOT = str(Path(__file__).resolve().parent.parent)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "XMPPD_CONFIG"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


def write_config(tmp_path: Path, extra: str = "", name: str = "xmppd.ini",
                 domains: str = "localhost example.org") -> Path:
    # No components: the admin command does not need them, and these tests
    # should not fail because a component elsewhere is broken.
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"[server]\ndomains = {domains}\ndata_dir = {tmp_path / 'data'}\n"
                    f"components =\nscram_iterations = 4096\n{extra}")
    return path


def xmppd(*args: str, stdin: str = "", cwd: Path | str = ROOT, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xmppd", *args], input=stdin, capture_output=True,
                          text=True, cwd=cwd, env=_env(**env), timeout=60)


def assert_fails(result: subprocess.CompletedProcess, code: int, *words: str) -> None:
    """Exit ``code``, nothing on stdout, one ``xmppd:`` line on stderr naming ``words``."""
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("xmppd: "), result.stderr
    for word in words:
        assert word in lines[0]


VERIFY = """
import sys
from twisted.internet import defer, task
from xmppd import config
from xmppd.accounts import Accounts
from xmppd.storage import open_storage

@defer.inlineCallbacks
def main(reactor, path, user, password):
    server = config.load(path).server
    storage = open_storage(server["storage"], base_dir=server["data_dir"])
    yield storage.start()
    accounts = Accounts(storage)
    print((yield accounts.exists(user)), (yield accounts.verify_password(user, password)))
    yield storage.stop()

task.react(main, sys.argv[1:])
"""


def stored(cfg: Path, user: str, password: str) -> tuple[bool, bool]:
    """(account exists, ``password`` is its password), read from the storage."""
    result = subprocess.run([sys.executable, "-c", VERIFY, str(cfg), user, password],
                            capture_output=True, text=True, env=_env(), timeout=60)
    assert result.returncode == 0, result.stderr
    exists, verified = result.stdout.split()
    return exists == "True", verified == "True"


# -- accounts ----------------------------------------------------------------------

def test_adduser_passwd_deluser(tmp_path):
    cfg = write_config(tmp_path)
    result = xmppd("-c", str(cfg), "adduser", "alice@localhost", stdin="secret one\n")
    assert (result.returncode, result.stdout, result.stderr) == (0, "created alice@localhost\n", "")
    assert stored(cfg, "alice@localhost", "secret one") == (True, True)
    assert stored(cfg, "alice@localhost", "secret") == (True, False)

    assert_fails(xmppd("-c", str(cfg), "adduser", "alice@localhost", stdin="other\n"), 1, "exists")
    assert stored(cfg, "alice@localhost", "secret one") == (True, True)

    # The JID is normalised; -c may also follow the command.
    result = xmppd("passwd", "Alice@LOCALHOST", "-c", str(cfg), stdin="new secret\n")
    assert result.returncode == 0 and "alice@localhost" in result.stdout, result.stderr
    assert stored(cfg, "alice@localhost", "new secret") == (True, True)
    assert stored(cfg, "alice@localhost", "secret one") == (True, False)

    result = xmppd("-c", str(cfg), "deluser", "alice@localhost")
    assert result.returncode == 0 and "deleted alice@localhost" in result.stdout, result.stderr
    assert stored(cfg, "alice@localhost", "new secret") == (False, False)


def test_missing_user(tmp_path):
    cfg = write_config(tmp_path)
    assert_fails(xmppd("-c", str(cfg), "deluser", "nobody@localhost"), 1, "nobody@localhost", "does not exist")
    assert_fails(xmppd("-c", str(cfg), "passwd", "nobody@localhost", stdin="pw\n"), 1, "does not exist")
    assert stored(cfg, "nobody@localhost", "pw") == (False, False)


@pytest.mark.parametrize("jid", ["alice", "alice@localhost/phone", "@localhost", "al ice@localhost"])
def test_bad_jid(tmp_path, jid):
    cfg = write_config(tmp_path)
    assert_fails(xmppd("-c", str(cfg), "adduser", jid, stdin="pw\n"), 2)


def test_domain_not_served(tmp_path):
    cfg = write_config(tmp_path)
    assert_fails(xmppd("-c", str(cfg), "adduser", "bob@elsewhere.org", stdin="pw\n"), 2,
                 "elsewhere.org", "localhost")
    assert stored(cfg, "bob@elsewhere.org", "pw") == (False, False)


def test_password_is_the_first_line_of_stdin(tmp_path):
    cfg = write_config(tmp_path)
    assert xmppd("-c", str(cfg), "adduser", "bob@example.org", stdin=" spaced pw \nignored\n").returncode == 0
    assert stored(cfg, "bob@example.org", " spaced pw ") == (True, True)


@pytest.mark.parametrize("stdin", ["", "\n", "\nsecond line\n"])
def test_empty_password(tmp_path, stdin):
    cfg = write_config(tmp_path)
    assert_fails(xmppd("-c", str(cfg), "adduser", "bob@localhost", stdin=stdin), 1, "empty")
    assert stored(cfg, "bob@localhost", "") == (False, False)


def test_memory_storage_is_refused(tmp_path):
    cfg = write_config(tmp_path, "storage = memory:\n")
    assert_fails(xmppd("-c", str(cfg), "adduser", "bob@localhost", stdin="pw\n"), 2, "memory:")


def _on_terminal(args: list[str], answers: list[str]) -> tuple[int, str]:
    """Run xmppd on a new pseudo-terminal, answering each prompt in turn."""
    pid, fd = pty.fork()
    if pid == 0:  # child: its controlling terminal is the pty, as getpass needs
        try:
            os.execve(sys.executable, [sys.executable, "-m", "xmppd", *args], _env())
        finally:
            os._exit(127)
    output = b""
    answered = 0  # where the output stood at the last answer: a prompt must come after it
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            if answers and output[answered:].rstrip().endswith(b":"):
                os.write(fd, answers.pop(0).encode() + b"\n")
                answered = len(output)
            if select.select([fd], [], [], 0.1)[0]:
                try:
                    chunk = os.read(fd, 1024)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), output.decode(errors="replace")


def test_password_prompt_on_a_terminal(tmp_path):
    cfg = write_config(tmp_path)
    code, output = _on_terminal(["-c", str(cfg), "adduser", "carol@localhost"], ["typed pw", "typed pw"])
    assert code == 0, output
    assert "Password for carol@localhost:" in output and "Again:" in output
    assert "typed pw" not in output  # not echoed
    assert "created carol@localhost" in output
    assert stored(cfg, "carol@localhost", "typed pw") == (True, True)


def test_password_mismatch_on_a_terminal(tmp_path):
    cfg = write_config(tmp_path)
    code, output = _on_terminal(["-c", str(cfg), "adduser", "carol@localhost"], ["one", "two"])
    assert code == 1, output
    assert "xmppd: the passwords do not match" in output and "Traceback" not in output
    assert stored(cfg, "carol@localhost", "one") == (False, False)


# -- config file discovery ------------------------------------------------------------

def test_config_from_environment_then_cwd(tmp_path):
    env_cfg = write_config(tmp_path / "env", domains="env.example")
    local_cfg = write_config(tmp_path / "cwd", name="etc/xmppd.ini", domains="local.example")
    result = xmppd("check", cwd=tmp_path / "cwd", XMPPD_CONFIG=str(env_cfg))
    assert result.returncode == 0 and "env.example" in result.stdout, result.stderr
    result = xmppd("check", cwd=tmp_path / "cwd")
    assert result.returncode == 0 and "local.example" in result.stdout, result.stderr
    assert local_cfg.exists()


def test_missing_config(tmp_path):
    assert_fails(xmppd("-c", str(tmp_path / "nope.ini"), "check"), 2, "nope.ini")


def test_usage_errors():
    assert xmppd().returncode == 2
    result = xmppd("frobnicate")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert xmppd("adduser").returncode == 2
    result = xmppd("--help")
    assert result.returncode == 0 and "adduser" in result.stdout


# -- check ------------------------------------------------------------------------

def test_check_good_config_without_certificate(tmp_path):
    cfg = write_config(tmp_path)
    result = xmppd("-c", str(cfg), "check")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    lines = result.stdout.splitlines()
    assert lines and all(line.startswith("ok: ") for line in lines)
    assert "generated" in result.stdout and tls.default_certificate_path(str(tmp_path / "data")) in result.stdout


def test_check_with_default_components(tmp_path):
    """The shipped defaults, including the built-in components, pass the check."""
    cfg = tmp_path / "default.ini"
    cfg.write_text(f"[server]\ndata_dir = {tmp_path / 'data'}\n")
    result = xmppd("-c", str(cfg), "check")
    assert result.returncode == 0, result.stderr


def test_check_unknown_option(tmp_path):
    cfg = write_config(tmp_path, "frobnicate = yes\n")
    assert_fails(xmppd("-c", str(cfg), "check"), 2, str(cfg), "[server]", "frobnicate")


def test_check_missing_configured_certificate(tmp_path):
    missing = tmp_path / "missing.pem"
    cfg = write_config(tmp_path, f"certificate = {missing}\n")
    assert_fails(xmppd("-c", str(cfg), "check"), 2, "certificate", str(missing))


def test_check_generated_certificate(tmp_path):
    cfg = write_config(tmp_path)
    auto = tls.default_certificate_path(str(tmp_path / "data"))
    tls.generate_self_signed(["localhost", "example.org"], auto)
    result = xmppd("-c", str(cfg), "check")
    assert result.returncode == 0, result.stderr
    assert f"ok: self-signed certificate {auto}" in result.stdout

    tls.generate_self_signed(["localhost"], auto)  # example.org since added to the config
    result = xmppd("-c", str(cfg), "check")
    assert_fails(result, 1, "example.org", "does not cover")


def test_check_configured_certificate(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    tls.generate_self_signed(["*.example.org", "localhost"], str(cert))
    cfg = write_config(tmp_path, f"certificate = {cert}\n", domains="localhost chat.example.org")
    result = xmppd("-c", str(cfg), "check")
    assert result.returncode == 0, result.stderr
    assert str(cert) in result.stdout

    # Two uncovered domains: a line for each, then exit 1.
    cfg = write_config(tmp_path, f"certificate = {cert}\n", domains="localhost example.org a.b.example.org")
    result = xmppd("-c", str(cfg), "check")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and all(line.startswith("xmppd: ") for line in lines)
    assert "example.org " in lines[0] and "a.b.example.org" in lines[1]

    # A private key that is not the certificate's.
    tls.generate_self_signed(["localhost"], str(key))
    cfg = write_config(tmp_path, f"certificate = {cert}\nprivate_key = {key}\n", domains="localhost")
    assert_fails(xmppd("-c", str(cfg), "check"), 1, str(cert))


def test_check_expired_certificate(tmp_path):
    cert = tmp_path / "old.pem"
    tls.generate_self_signed(["localhost"], str(cert), days=0)
    time.sleep(1)
    cfg = write_config(tmp_path, f"certificate = {cert}\n", domains="localhost")
    assert_fails(xmppd("-c", str(cfg), "check"), 1, "expired")


# -- cert -------------------------------------------------------------------------

def test_cert_default_path_and_refusal_to_overwrite(tmp_path):
    cfg = write_config(tmp_path)
    auto = tls.default_certificate_path(str(tmp_path / "data"))
    result = xmppd("-c", str(cfg), "cert", "localhost", "example.org")
    assert result.returncode == 0 and auto in result.stdout, result.stderr
    assert sorted(tls.certificate_domains(auto)) == ["example.org", "localhost"]
    assert tls.pem_problem(auto) is None and os.stat(auto).st_mode & 0o077 == 0
    assert xmppd("-c", str(cfg), "check").returncode == 0

    before = Path(auto).read_bytes()
    assert_fails(xmppd("-c", str(cfg), "cert", "other.example"), 1, auto, "exists")
    assert Path(auto).read_bytes() == before

    assert xmppd("-c", str(cfg), "cert", "other.example", "--force").returncode == 0
    assert tls.certificate_domains(auto) == ["other.example"]


def test_cert_out(tmp_path):
    out = tmp_path / "sub" / "server.pem"
    # With --out the config is not needed, so a missing one does not matter.
    result = xmppd("-c", str(tmp_path / "nope.ini"), "cert", "chat.example", "--out", str(out), "--days", "30")
    assert result.returncode == 0, result.stderr
    assert tls.certificate_domains(str(out)) == ["chat.example"]
    assert_fails(xmppd("cert", "chat.example", "--out", str(out)), 1, "exists")


def test_cert_refuses_when_a_certificate_is_configured(tmp_path):
    cert = tmp_path / "cert.pem"
    tls.generate_self_signed(["localhost"], str(cert))
    cfg = write_config(tmp_path, f"certificate = {cert}\n")
    assert_fails(xmppd("-c", str(cfg), "cert", "localhost"), 2, "--out")


@pytest.mark.parametrize("domain", [
    "alice@localhost", "localhost/res", "a..b",
])
def test_cert_bad_domain(tmp_path, domain):
    assert_fails(xmppd("cert", domain, "--out", str(tmp_path / "c.pem")), 2)
    assert not (tmp_path / "c.pem").exists()
