"""A headless Chromium for browser tests: Debian's ``chromium``, driven by
``playwright-core`` from npm through a small Node script.

Why playwright-core and not selenium: it talks to the browser over the
DevTools protocol directly (no chromium-driver matching the browser's exact
version), waits for elements and network by itself, and it is one npm package
without a browser download of its own (that is the ``playwright`` package;
``playwright-core`` never fetches a browser). It is installed into a cache
outside the repository, once; Chromium is Debian's, at
:data:`CHROMIUM`.

Both installs run under one file lock, so parallel test runs neither install
twice nor see a half-installed package; apt is told to wait for the dpkg lock
of anyone else installing at the same time. Only where installing is
impossible (not root, no apt-get, no npm, no network) does :func:`ensure`
raise :class:`BrowserUnavailable`, which the tests turn into a skip that says
why.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

CHROMIUM = "/usr/bin/chromium"
#: the playwright-core release the driver script is written against
PLAYWRIGHT_CORE = "1.65.1"


class BrowserUnavailable(RuntimeError):
    """No Chromium or no playwright-core, and none can be installed here."""


def cache_dir() -> Path:
    """Where test tools live between runs: outside the repository."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = Path(base) / "xmppd-tests"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def _locked(name: str) -> Iterator[None]:
    with open(cache_dir() / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _run(command: list[str], timeout: float, **kwargs) -> None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kwargs)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BrowserUnavailable(f"{' '.join(command)}: {e}") from None
    if done.returncode != 0:
        raise BrowserUnavailable(f"{' '.join(command)} failed ({done.returncode}): "
                                 f"{(done.stderr or done.stdout).strip()[-600:]}")


def ensure_chromium() -> str:
    """The path of Debian's Chromium; ``apt-get install chromium`` if missing."""
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise BrowserUnavailable(f"{CHROMIUM} is missing and apt-get cannot run here "
                                 "(not root, or not a Debian system)")
    with _locked("chromium"):
        if not os.access(CHROMIUM, os.X_OK):
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            wait = ["-o", "DPkg::Lock::Timeout=300"]
            _run(["apt-get", *wait, "update", "-q"], 600, env=env)
            _run(["apt-get", *wait, "install", "-y", "-q", "--no-install-recommends",
                  "chromium"], 900, env=env)
    if not os.access(CHROMIUM, os.X_OK):
        raise BrowserUnavailable(f"apt-get installed chromium but {CHROMIUM} is missing")
    return CHROMIUM


def ensure_playwright_core() -> Path:
    """The ``node_modules`` directory holding playwright-core (npm, cached)."""
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise BrowserUnavailable("node and npm are needed to drive Chromium "
                                 "(Debian: apt-get install nodejs npm)")
    prefix = cache_dir() / f"playwright-core-{PLAYWRIGHT_CORE}"
    package = prefix / "node_modules" / "playwright-core" / "package.json"
    with _locked("playwright-core"):
        if not package.exists():
            prefix.mkdir(parents=True, exist_ok=True)
            # No browser download: playwright-core has none, and this says so twice.
            env = dict(os.environ, PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD="1")
            _run([npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund",
                  "--no-save", "--loglevel=error", f"playwright-core@{PLAYWRIGHT_CORE}"],
                 600, env=env)
        try:
            version = json.loads(package.read_text())["version"]
        except (OSError, ValueError, KeyError) as e:
            raise BrowserUnavailable(f"npm did not install playwright-core: {e}") from None
    if version != PLAYWRIGHT_CORE:
        raise BrowserUnavailable(f"{package} is version {version}, not {PLAYWRIGHT_CORE}")
    return prefix / "node_modules"


def ensure() -> tuple[str, Path]:
    """(Chromium's path, playwright-core's node_modules), installing what is missing."""
    return ensure_chromium(), ensure_playwright_core()
