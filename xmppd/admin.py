"""``xmppd``, the admin command (like prosodyctl): accounts, config check, certificates.

Every failure is one line on stderr starting with ``xmppd: `` and a non-zero
exit status: 2 for usage and configuration errors, 1 for everything found while
doing the work (an account that exists already, an unusable certificate, a
storage error), 130 when interrupted. Nothing prints a traceback, because the
operator reading it is not the developer who could use it.

Account commands open the same storage as the server and work while it runs:
the SQLite store is in WAL mode with a busy timeout, so a short write from here
simply waits for the server's transaction to finish.
"""

from __future__ import annotations

import argparse
import getpass
import os
import signal
import sys
from typing import Any, Callable, Sequence, TextIO

from twisted.internet import defer
from twisted.python.failure import Failure

from xmppd import config as configlib
from xmppd import control
from xmppd import jid as jidlib
from xmppd import tls
from xmppd import webclient
from xmppd.accounts import AccountError, Accounts, normalize

class Fail(Exception):
    """Stop the command: ``str()`` is the one line shown, ``code`` the exit status."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__


# -- passwords -------------------------------------------------------------------

def read_password(user: str, stdin: TextIO | None = None) -> str:
    """The new password: asked twice on a terminal, else the first line of stdin.

    Reading stdin lets scripts do ``echo secret | xmppd adduser ...``. Only the
    line ending is stripped: spaces may be part of a password.
    """
    stdin = stdin or sys.stdin
    if stdin is not None and stdin.isatty():
        # Twisted's SIGINT handler only stops the reactor, which a blocking
        # getpass never returns to; Ctrl-C must interrupt the prompt instead.
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            password = getpass.getpass(f"Password for {user}: ")
            if password and getpass.getpass("Again: ") != password:
                raise Fail("the passwords do not match")
        except KeyboardInterrupt:
            print(file=sys.stderr)
            raise Fail("interrupted", 130) from None
        except EOFError:
            print(file=sys.stderr)
            raise Fail("no password given") from None
        finally:
            signal.signal(signal.SIGINT, previous)
    else:
        password = stdin.readline().rstrip("\r\n") if stdin is not None else ""
    if not password:
        raise Fail("the password is empty")
    return password


# -- accounts --------------------------------------------------------------------

def _account_jid(text: str, config: configlib.Config) -> str:
    """The normalised bare JID, on one of the served domains (a usage error otherwise)."""
    try:
        user = normalize(text)
    except AccountError as e:
        raise Fail(str(e), 2) from None
    domain = user.partition("@")[2]
    if domain not in config.domains:
        raise Fail(f"{domain} is not a domain this server hosts "
                   f"(domains in {config.path}: {', '.join(config.domains)})", 2)
    return user


@defer.inlineCallbacks
def _account_command(config: configlib.Config, command: str, user: str):
    """Open the storage, do one account operation, close it; fires with the line to print."""
    from xmppd.storage import open_storage

    server = config.server
    storage = open_storage(server["storage"], base_dir=server["data_dir"],
                           synchronous=server["sqlite_synchronous"])
    yield storage.start()
    try:
        accounts = Accounts(storage, server["scram_iterations"])
        # Checked before asking for a password, so nobody types one in vain.
        exists = yield accounts.exists(user)
        if command == "adduser" and exists:
            raise Fail(f"{user} exists already")
        if command != "adduser" and not exists:
            raise Fail(f"{user} does not exist")
        if command == "deluser":
            yield accounts.delete(user)
            return f"deleted {user} and all its data"
        password = read_password(user)
        if command == "adduser":
            yield accounts.create(user, password)
            return f"created {user}"
        yield accounts.set_password(user, password)
        return f"changed the password of {user}"
    finally:
        yield storage.stop()


def run_on_reactor(work: Callable[[], Any]) -> Any:
    """Run ``work`` (which may return a Deferred) on the reactor; return its result.

    Not :func:`twisted.internet.task.react`, which calls ``sys.exit``: ``main()``
    returns its status to in-process callers. A reactor cannot be restarted, so
    this works once per process.
    """
    from twisted.internet import reactor

    outcome: list[Any] = []

    def done(result: Any) -> None:
        outcome.append(result)
        if reactor.running:
            reactor.stop()

    reactor.callWhenRunning(lambda: defer.maybeDeferred(work).addBoth(done))
    reactor.run()
    if not outcome:
        raise Fail("interrupted", 130)
    result = outcome[0]
    if isinstance(result, Failure):
        result.raiseException()
    return result


def cmd_account(args: argparse.Namespace, config: configlib.Config) -> str:
    user = _account_jid(args.jid, config)
    if config.server["storage"].partition(":")[0] == "memory":
        raise Fail(f"{config.path}: [server] storage is memory:, accounts would not be kept", 2)
    if args.command == "deluser":
        # A running server deletes it itself: it ends the account's sessions
        # and forgets what it holds of it in memory, not only in storage.
        try:
            answer = control.ask(control.socket_path(config.server["data_dir"]),
                                 f"deluser {user}")
        except control.ControlError as e:
            raise Fail(str(e)) from None
        if answer is not None:
            status, _, text = answer.partition(" ")
            if status != "ok":
                raise Fail(text or "the running server did not answer")
            return text
    return run_on_reactor(lambda: _account_command(config, args.command, user))


# -- certificates ----------------------------------------------------------------

def covers(names: Sequence[str], domain: str) -> bool:
    """Whether a certificate for ``names`` is valid for ``domain`` (RFC 6125 wildcards)."""
    domain = domain.lower().rstrip(".")
    for name in (n.lower().rstrip(".") for n in names):
        if name == domain or (name.startswith("*.") and "." in domain
                              and domain.partition(".")[2] == name[2:]):
            return True
    return False


def _load_certificate(filename: str):
    from cryptography import x509

    with open(filename, "rb") as f:
        return x509.load_pem_x509_certificate(f.read())


def certificate_problems(certificate: str, private_key: str, domains: Sequence[str]) -> tuple[list[str], str]:
    """Problems with a certificate for ``domains`` (one line each), and a summary if usable."""
    problem = tls.pem_problem(certificate, key=False) or tls.pem_problem(private_key or certificate)
    if problem:
        return [problem], ""
    try:
        tls.context_factory(certificate, private_key).getContext()
    except Exception as e:  # noqa: BLE001 - OpenSSL's errors say which part is wrong
        return [f"{certificate} cannot be used with {private_key or 'its key'}: {_one_line(e)}"], ""
    names = tls.certificate_domains(certificate)
    problems = [f"certificate {certificate} does not cover {domain} (it covers: {', '.join(names) or 'nothing'})"
                for domain in domains if not covers(names, domain)]
    cert = _load_certificate(certificate)
    kind = "self-signed " if cert.issuer == cert.subject else ""
    summary = (f"{kind}certificate {certificate} valid until {cert.not_valid_after_utc:%Y-%m-%d}, "
               f"covers {', '.join(names)}")
    return problems, summary


def cmd_check(args: argparse.Namespace, config: configlib.Config) -> str:
    """The config loaded already (that validated it); now the certificate, offline."""
    server = config.server
    print(f"ok: {config.path}: domains {', '.join(config.domains)}; "
          f"components {', '.join(config.components) or 'none'}; storage {server['storage']}")
    certificate = server["certificate"]
    if not certificate:
        certificate = tls.default_certificate_path(server["data_dir"])
        if not os.path.exists(certificate):
            return (f"ok: no certificate yet: a self-signed one for {', '.join(config.domains)} "
                    f"will be generated at {certificate} on first start")
    private_key = server["private_key"] if server["certificate"] else ""
    problems, summary = certificate_problems(certificate, private_key, config.domains)
    if problems:
        for problem in problems[:-1]:
            print(f"xmppd: {problem}", file=sys.stderr)
        raise Fail(problems[-1])
    return f"ok: {summary}"


def cmd_cert(args: argparse.Namespace, config_path: str) -> str:
    domains = []
    for text in args.domains:
        try:
            parsed = jidlib.parse(text)
        except jidlib.InvalidJID as e:
            raise Fail(f"{text!r} is not a valid domain: {e}", 2) from None
        if parsed.user is not None or parsed.resource is not None:
            raise Fail(f"{text!r} is a JID, not a domain", 2)
        domains.append(parsed.host)
    if args.days < 1:
        raise Fail(f"--days must be at least 1, got {args.days}", 2)
    out = args.out
    if not out:
        # Only now is the config needed: with --out, a broken config (say, one
        # naming the certificate about to be made) does not stand in the way.
        server = _load(config_path).server
        if server["certificate"]:
            raise Fail(f"{config_path}: [server] certificate is set ({server['certificate']}), "
                       "so the generated one would not be used; give --out FILE", 2)
        out = tls.default_certificate_path(server["data_dir"])
    if os.path.exists(out) and not args.force:
        raise Fail(f"{out} exists already; --force replaces it")
    try:
        tls.generate_self_signed(domains, out, days=args.days)
    except OSError as e:
        raise Fail(f"cannot write {out}: {e.strerror}") from None
    return (f"wrote a self-signed certificate for {', '.join(domains)} to {out} "
            f"(valid until {_load_certificate(out).not_valid_after_utc:%Y-%m-%d})")


# -- web client ------------------------------------------------------------------

def cmd_webclient(args: argparse.Namespace, config: configlib.Config) -> str:
    """``xmppd webclient install|status``: Converse.js in the data directory."""
    try:
        return webclient.command(args, config.server["data_dir"])
    except webclient.InstallError as e:
        raise Fail(str(e)) from None


# -- command line ----------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        """One line, like every other error, instead of argparse's usage dump."""
        self.exit(2, f"xmppd: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    # -c is accepted before or after the command; SUPPRESS keeps a subcommand's
    # absent -c from overwriting the one given before it.
    config_help = ("the INI file (default: $XMPPD_CONFIG, else ./etc/xmppd.ini "
                   "if it exists, else /etc/xmppd/xmppd.ini)")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", default=argparse.SUPPRESS, metavar="CONFIG", help=config_help)
    parser = _Parser(prog="xmppd", description="Administer an xmppd server.")
    parser.add_argument("-c", "--config", metavar="CONFIG", help=config_help)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)
    for name, text in (("adduser", "create an account (password from a prompt or stdin)"),
                       ("passwd", "change an account's password (prompt or stdin)"),
                       ("deluser", "remove an account and all its data")):
        sub.add_parser(name, parents=[common], help=text, description=text).add_argument(
            "jid", metavar="JID", help="user@domain, on one of the configured domains")
    text = "validate the config and the certificate, offline"
    sub.add_parser("check", parents=[common], help=text, description=text)
    text = "generate a self-signed certificate (default: the one made on first start)"
    cert = sub.add_parser("cert", parents=[common], help=text, description=text)
    cert.add_argument("domains", nargs="+", metavar="DOMAIN", help="the domains it covers")
    cert.add_argument("--out", metavar="FILE", help="where to write it (certificate and key, one PEM file)")
    cert.add_argument("--force", action="store_true", help="replace an existing file")
    cert.add_argument("--days", type=int, default=365, help="validity in days (default: 365)")
    webclient.add_commands(sub, common)
    return parser


def _load(path: str) -> configlib.Config:
    try:
        return configlib.load(path)
    except configlib.ConfigError as e:
        raise Fail(str(e), 2) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return the exit status (the console script exits with it)."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # --help, or a usage error already printed
        return e.code if isinstance(e.code, int) else 2
    config_path = args.config or configlib.default_path()
    try:
        if args.command == "cert":
            line = cmd_cert(args, config_path)
        elif args.command == "webclient":
            line = cmd_webclient(args, _load(config_path))
        else:
            config = _load(config_path)
            line = (cmd_check if args.command == "check" else cmd_account)(args, config)
    except Fail as e:
        print(f"xmppd: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print("\nxmppd: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - one line, never a traceback
        print(f"xmppd: {_one_line(e)}" if isinstance(e, (AccountError, OSError))
              else f"xmppd: {type(e).__name__}: {_one_line(e)}", file=sys.stderr)
        return 1
    print(line)
    return 0
