"""Converse.js in the data directory: ``xmppd webclient install`` and ``status``.

Converse.js is never part of this repository: the operator fetches its npm
release with ``xmppd webclient install [--version X]``, and the server serves
what that left in ``<data_dir>/webclient/converse.js/`` (see
:mod:`xmppd.http.conversejs`). The release comes through the ``npm`` client
(``npm pack``), so the registry, proxy and certificate settings an operator
gave npm apply, and npm checks the tarball against the registry's integrity
hash before we see it.

An install never leaves a half-written tree where the server reads:

* only regular files and directories under the package's ``dist/`` are taken,
  each path checked to stay inside the release (no ``..``, no absolute names,
  no links), with a bound on the number of files and their bytes;
* they are unpacked into a hidden temporary directory, which is then renamed
  to ``converse.js-<version>-<random>``; ``converse.js`` is a symlink to it,
  replaced in one ``rename(2)``, so a running server sees the old release or
  the new one, never a mix or nothing; older releases are removed after.
* the release records what it is in ``.xmppd-install.json`` inside it (a
  dotfile, which the server never serves), so version and files cannot
  disagree.

The server needs no restart: it reads the record on each page load.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import secrets
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

#: the npm package
PACKAGE = "converse.js"
#: what ``install`` fetches without ``--version``: the release the browser test
#: runs against (``--version latest`` for the newest)
DEFAULT_VERSION = "14.0.0"
#: the name, under ``<data_dir>/webclient``, of the current release (a symlink)
LINK = "converse.js"
#: the record of the release, inside it
RECORD = ".xmppd-install.json"
#: files a release must have: the page loads them
REQUIRED = ("converse.min.js", "converse.min.css")
#: bounds on what one package may unpack (14.0.0's dist/ is 407 files, 24 MB)
MAX_FILES = 20_000
MAX_BYTES = 400 * 1024 * 1024
#: seconds npm may take to fetch the package
NPM_TIMEOUT = 300

_VERSION_SPEC = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+\-~^<>=| ]{0,99}$")


class InstallError(Exception):
    """The install could not be done; ``str()`` is the one line for the operator."""


@dataclass(frozen=True)
class Installed:
    """What ``xmppd webclient install`` left: a release of Converse.js."""

    #: the release's version, as npm reported it
    version: str
    #: the directory its ``dist/`` files are in (the resolved release)
    directory: Path
    #: npm's integrity hash of the tarball (``sha512-…``)
    integrity: str
    #: when it was installed (ISO 8601, UTC)
    installed_at: str
    #: how many files it holds
    files: int


def webclient_dir(data_dir: str | os.PathLike) -> Path:
    return Path(data_dir) / "webclient"


def installed(data_dir: str | os.PathLike) -> Installed | None:
    """The current release in ``data_dir``, or None when none is (fully) installed.

    The link is resolved once, and the record read from the directory it
    names, so both describe the same release even while an install swaps it.
    """
    link = webclient_dir(data_dir) / LINK
    try:
        directory = Path(os.path.realpath(link))
        with open(directory / RECORD, encoding="utf-8") as f:
            record = json.load(f)
        return Installed(version=str(record["version"]), directory=directory,
                         integrity=str(record.get("integrity", "")),
                         installed_at=str(record.get("installed_at", "")),
                         files=int(record.get("files", 0)))
    except (OSError, ValueError, KeyError, TypeError):
        return None


# -- fetching ----------------------------------------------------------------------

def _npm_error(stderr: str) -> str:
    """npm's own explanation, in one line (its ``npm error`` lines, without the log hints)."""
    lines = [line.partition("npm error")[2].strip() for line in stderr.splitlines()
             if line.startswith("npm error")]
    lines = [line for line in lines if line and not line.startswith(("A complete log", "Log files"))]
    text = " ".join(lines[:3]) if lines else " ".join(stderr.split()[-40:])
    return text or "no output"


def npm_pack(spec: str, directory: Path, npm: str | None = None) -> dict[str, Any]:
    """``npm pack PACKAGE@spec`` into ``directory``: npm's description of the tarball."""
    if not _VERSION_SPEC.match(spec):
        raise InstallError(f"{spec!r} is not a version (say 14.0.0, or latest)")
    npm = npm or shutil.which("npm")
    if npm is None:
        raise InstallError("npm is needed to fetch Converse.js from the npm registry "
                           "(Debian: apt-get install npm)")
    command = [npm, "pack", f"{PACKAGE}@{spec}", "--json", "--ignore-scripts",
               "--pack-destination", str(directory), "--loglevel=error"]
    try:
        done = subprocess.run(command, cwd=directory, capture_output=True, text=True,
                              timeout=NPM_TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise InstallError(f"npm pack {PACKAGE}@{spec} took longer than {NPM_TIMEOUT} s") from None
    except OSError as e:
        raise InstallError(f"cannot run {npm}: {e.strerror}") from None
    if done.returncode != 0:
        raise InstallError(f"npm pack {PACKAGE}@{spec} failed: {_npm_error(done.stderr)}")
    try:
        packed = json.loads(done.stdout)[0]
        name, version, filename = packed["name"], packed["version"], packed["filename"]
    except (ValueError, LookupError, TypeError):
        raise InstallError(f"npm pack {PACKAGE}@{spec} printed no description of the package") from None
    if name != PACKAGE:
        raise InstallError(f"npm pack {PACKAGE}@{spec} fetched {name!r}")
    tarball = directory / os.path.basename(filename)
    if not tarball.is_file():
        raise InstallError(f"npm pack {PACKAGE}@{spec} left no {tarball.name}")
    return {"version": str(version), "integrity": str(packed.get("integrity", "")),
            "tarball": tarball}


# -- unpacking ---------------------------------------------------------------------

def _dist_path(name: str) -> str | None:
    """The path inside ``dist/`` of a tar member, or None if it is not under it.

    npm tarballs put everything under ``package/``; a name that would leave
    the release once joined (``..``, absolute, backslashes, NUL) is refused
    rather than skipped: such a tarball is not one npm makes.
    """
    if "\\" in name or "\x00" in name:
        raise InstallError(f"the package has a file named {name!r}")
    if posixpath.isabs(name) or ".." in name.split("/"):
        raise InstallError(f"the package has a file outside it: {name!r}")
    normal = posixpath.normpath(name)
    first, _, rest = normal.partition("/")
    if first != "package" or not rest.startswith("dist/"):
        return None
    # normpath left no "", "." or ".." part
    return rest[len("dist/"):] or None


def unpack_dist(tarball: Path, target: Path) -> int:
    """Unpack the package's ``dist/`` into ``target`` (made here); return the file count."""
    files = 0
    total = 0
    target.mkdir(mode=0o755)
    try:
        archive = tarfile.open(tarball, "r:gz")
    except (OSError, tarfile.TarError) as e:
        raise InstallError(f"{tarball.name} is not a readable tarball: {e}") from None
    with archive:
        try:
            for member in archive:
                relative = _dist_path(member.name)
                if relative is None:
                    continue
                destination = target.joinpath(*relative.split("/"))
                if member.isdir():
                    destination.mkdir(mode=0o755, parents=True, exist_ok=True)
                    continue
                if not member.isfile():
                    continue  # links and devices: npm packs none in dist/, take none
                files += 1
                total += member.size
                if files > MAX_FILES or total > MAX_BYTES:
                    raise InstallError(f"the package's dist/ is larger than {MAX_FILES} files "
                                       f"or {MAX_BYTES // 2**20} MiB")
                destination.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
                source = archive.extractfile(member)
                assert source is not None
                with source, open(destination, "xb") as out:
                    shutil.copyfileobj(source, out)
                os.chmod(destination, 0o644)
        except (tarfile.TarError, EOFError, OSError) as e:
            if isinstance(e, FileExistsError):
                raise InstallError(f"the package holds {e.filename} twice") from None
            raise InstallError(f"cannot unpack {tarball.name}: {e}") from None
    missing = [name for name in REQUIRED if not (target / name).is_file()]
    if missing:
        raise InstallError(f"the package has no dist/{', dist/'.join(missing)}")
    return files


# -- installing --------------------------------------------------------------------

def _swap(base: Path, release: str) -> None:
    """Point ``base/LINK`` at ``release`` in one rename."""
    link = base / LINK
    if link.exists() and not link.is_symlink():
        # A directory someone made by hand: moved aside (removed afterwards).
        os.rename(link, base / f".old-{secrets.token_hex(4)}")
    temporary = base / f".link-{secrets.token_hex(4)}"
    os.symlink(release, temporary)
    try:
        os.replace(temporary, link)
    except OSError:
        os.unlink(temporary)
        raise


def _remove_others(base: Path, keep: str) -> None:
    """Remove every release but ``keep``, and what failed installs left."""
    for entry in base.iterdir():
        ours = (entry.name.startswith(f"{LINK}-") or entry.name.startswith((".tmp-", ".old-", ".link-")))
        if not ours or entry.name == keep or entry.name == LINK:
            continue
        if entry.is_symlink() or entry.is_file():
            entry.unlink(missing_ok=True)
        else:
            shutil.rmtree(entry, ignore_errors=True)


def install(data_dir: str | os.PathLike, spec: str = DEFAULT_VERSION, force: bool = False,
            npm: str | None = None) -> tuple[Installed, bool]:
    """Fetch Converse.js ``spec`` with npm and make it the current release.

    Returns what is installed and whether anything changed: an exact version
    that is installed already is kept unless ``force``.
    """
    current = installed(data_dir)
    if current is not None and current.version == spec and not force:
        return current, False
    base = webclient_dir(data_dir)
    base.mkdir(mode=0o755, parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="xmppd-webclient-") as download:
        packed = npm_pack(spec, Path(download), npm)
        version = packed["version"]
        if current is not None and current.version == version and not force:
            return current, False
        staging = base / f".tmp-{secrets.token_hex(6)}"
        try:
            files = unpack_dist(packed["tarball"], staging)
            record = {"package": PACKAGE, "version": version, "integrity": packed["integrity"],
                      "installed_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                      "files": files}
            with open(staging / RECORD, "w", encoding="utf-8") as f:
                json.dump(record, f, indent=1)
                f.write("\n")
            release = f"{LINK}-{version}-{secrets.token_hex(4)}"
            os.rename(staging, base / release)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    _swap(base, release)
    _remove_others(base, release)
    now = installed(data_dir)
    if now is None or now.version != version:
        raise InstallError(f"{base / LINK} does not show the release just installed")
    return now, True


# -- the admin command -------------------------------------------------------------

def add_commands(sub: Any, common: Any) -> None:
    """``xmppd webclient install|status`` on the admin command's parser."""
    text = "install Converse.js (from the npm registry) for the page at /conversejs"
    webclient = sub.add_parser("webclient", parents=[common], help=text, description=text)
    actions = webclient.add_subparsers(dest="action", metavar="ACTION", required=True,
                                       parser_class=type(webclient))
    text = "fetch a Converse.js release with npm into the data directory"
    install_parser = actions.add_parser("install", parents=[common], help=text, description=text)
    install_parser.add_argument("--version", default=DEFAULT_VERSION, metavar="X",
                                help=f"the npm version or tag (default: {DEFAULT_VERSION}, "
                                     "the one xmppd is tested with; 'latest' for the newest)")
    install_parser.add_argument("--force", action="store_true",
                                help="install again even if that version is installed")
    text = "show which Converse.js release is installed"
    actions.add_parser("status", parents=[common], help=text, description=text)


def command(args: Any, data_dir: str) -> str:
    """Run ``xmppd webclient ACTION``; return the line to print (InstallError on failure)."""
    where = webclient_dir(data_dir) / LINK
    if args.action == "status":
        current = installed(data_dir)
        if current is None:
            raise InstallError(f"Converse.js is not installed in {where}; "
                               "run: xmppd webclient install")
        return (f"Converse.js {current.version} is installed in {where} "
                f"({current.files} files, {current.installed_at})")
    now, changed = install(data_dir, args.version, force=args.force)
    if not changed:
        return f"Converse.js {now.version} is installed already in {where} (--force installs it again)"
    return f"installed Converse.js {now.version} in {where} ({now.files} files)"
