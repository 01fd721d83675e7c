"""``xmppd webclient install|status``: Converse.js from npm into the data directory.

npm is replaced by a small script on ``PATH`` that "packs" a tarball the test
made, so these tests need no network and can hand the installer tarballs npm
would never make (path tricks, links, missing files). The real registry is
used by the browser test (tests/e2e/test_conversejs_browser.py).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from xmppd import webclient

ROOT = str(Path(__file__).resolve().parents[2])

FAKE_NPM = f"""#!{sys.executable}
import json, os, shutil, sys
args = sys.argv[1:]
log = os.environ.get("FAKE_NPM_LOG")
if log:
    with open(log, "a") as f:
        f.write(" ".join(args) + "\\n")
if os.environ.get("FAKE_NPM_FAIL"):
    sys.stderr.write("npm error code ETARGET\\nnpm error notarget No matching version found for "
                     + args[1] + ".\\nnpm error A complete log of this run can be found in: /x\\n")
    sys.exit(1)
assert args[0] == "pack", args
destination = args[args.index("--pack-destination") + 1]
version = os.environ["FAKE_NPM_VERSION"]
filename = "converse.js-" + version + ".tgz"
shutil.copy(os.environ["FAKE_NPM_TARBALL"], os.path.join(destination, filename))
print(json.dumps([{{"id": "converse.js@" + version, "name": os.environ.get("FAKE_NPM_NAME", "converse.js"),
                    "version": version, "filename": filename, "integrity": "sha512-fake"}}]))
"""


def make_tarball(path: Path, files: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    """An npm-style tarball: every name under ``package/``."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return path


RELEASE = {
    "package/package.json": b'{"name": "converse.js"}',
    "package/src/index.js": b"// not taken: only dist/ is",
    "package/dist/converse.min.js": b"window.converse = {};",
    "package/dist/converse.min.css": b"body {}",
    "package/dist/chunkjs/locales/de-LC_MESSAGES-converse-po.js": b"// de",
    "package/dist/curve25519_compiled.wasm": b"\0asm",
}


@pytest.fixture
def npm(tmp_path, monkeypatch):
    """The fake npm, first on PATH; ``npm(version, files)`` sets what it packs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "npm"
    script.write_text(FAKE_NPM)
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_NPM_LOG", str(tmp_path / "npm.log"))
    count = iter(range(1000))

    def serve(version: str = "14.0.0", files: dict[str, bytes] = RELEASE,
              links: dict[str, str] | None = None) -> Path:
        tarball = make_tarball(tmp_path / f"release-{next(count)}.tgz", files, links)
        monkeypatch.setenv("FAKE_NPM_TARBALL", str(tarball))
        monkeypatch.setenv("FAKE_NPM_VERSION", version)
        return tarball

    serve.calls = lambda: (tmp_path / "npm.log").read_text().splitlines() \
        if (tmp_path / "npm.log").exists() else []
    return serve


def test_install_unpacks_only_dist_and_records_the_version(tmp_path, npm):
    npm("14.0.0")
    now, changed = webclient.install(tmp_path / "data", "14.0.0")
    assert changed and now.version == "14.0.0" and now.integrity == "sha512-fake"
    link = tmp_path / "data" / "webclient" / "converse.js"
    assert link.is_symlink()
    assert (link / "converse.min.js").read_bytes() == b"window.converse = {};"
    assert (link / "chunkjs" / "locales" / "de-LC_MESSAGES-converse-po.js").exists()
    assert not (link / "package.json").exists() and not (link / "src").exists()
    record = json.loads((link / webclient.RECORD).read_text())
    assert record["version"] == "14.0.0" and record["files"] == 4
    assert webclient.installed(tmp_path / "data") == now
    assert npm.calls() == ["pack converse.js@14.0.0 --json --ignore-scripts --pack-destination "
                           + npm.calls()[0].split("--pack-destination ")[1]]


def test_nothing_installed_is_none(tmp_path):
    assert webclient.installed(tmp_path / "data") is None


def test_installing_the_installed_version_again_fetches_nothing(tmp_path, npm):
    npm("14.0.0")
    webclient.install(tmp_path / "data", "14.0.0")
    _, changed = webclient.install(tmp_path / "data", "14.0.0")
    assert not changed and len(npm.calls()) == 1
    _, changed = webclient.install(tmp_path / "data", "14.0.0", force=True)
    assert changed and len(npm.calls()) == 2


def test_a_tag_resolving_to_the_installed_version_changes_nothing(tmp_path, npm):
    npm("14.0.0")
    first, _ = webclient.install(tmp_path / "data", "14.0.0")
    now, changed = webclient.install(tmp_path / "data", "latest")
    assert not changed and now.directory == first.directory


def test_an_upgrade_replaces_the_release_and_removes_the_old_one(tmp_path, npm):
    npm("14.0.0")
    old, _ = webclient.install(tmp_path / "data", "14.0.0")
    npm("14.0.1", {**RELEASE, "package/dist/converse.min.js": b"// 14.0.1"})
    new, changed = webclient.install(tmp_path / "data", "14.0.1")
    assert changed and new.version == "14.0.1" and new.directory != old.directory
    assert not old.directory.exists()
    base = tmp_path / "data" / "webclient"
    assert sorted(p.name for p in base.iterdir()) == sorted(["converse.js", new.directory.name])
    assert (base / "converse.js" / "converse.min.js").read_bytes() == b"// 14.0.1"


def test_a_failed_install_leaves_the_installed_release_alone(tmp_path, npm):
    npm("14.0.0")
    old, _ = webclient.install(tmp_path / "data", "14.0.0")
    npm("15.0.0", {"package/dist/converse.min.js": b"x"})  # no converse.min.css
    with pytest.raises(webclient.InstallError, match="no dist/converse.min.css"):
        webclient.install(tmp_path / "data", "15.0.0")
    assert webclient.installed(tmp_path / "data") == old
    base = tmp_path / "data" / "webclient"
    assert sorted(p.name for p in base.iterdir()) == sorted(["converse.js", old.directory.name])


def test_leftovers_of_an_interrupted_install_are_removed_by_the_next(tmp_path, npm):
    base = tmp_path / "data" / "webclient"
    (base / ".tmp-0123").mkdir(parents=True)
    (base / ".tmp-0123" / "converse.min.js").write_text("half")
    (base / "converse.js-13.0.0-dead").mkdir()
    (base / "notes.txt").write_text("the operator's")
    npm("14.0.0")
    now, _ = webclient.install(tmp_path / "data", "14.0.0")
    assert sorted(p.name for p in base.iterdir()) == sorted(
        ["converse.js", now.directory.name, "notes.txt"])


def test_a_hand_made_directory_in_the_way_is_replaced(tmp_path, npm):
    base = tmp_path / "data" / "webclient" / "converse.js"
    base.mkdir(parents=True)
    (base / "converse.min.js").write_text("by hand")
    npm("14.0.0")
    now, _ = webclient.install(tmp_path / "data", "14.0.0")
    assert base.is_symlink() and (base / "converse.min.js").read_text() == "window.converse = {};"


@pytest.mark.parametrize("name", ["package/dist/../../escape.js", "/etc/escape.js",
                                  "../escape.js", "package/dist/a\\..\\..\\b.js"])
def test_a_member_leaving_the_package_fails_the_install_and_writes_nothing_outside(
        tmp_path, npm, name):
    npm("14.0.0", {**RELEASE, name: b"evil"})
    with pytest.raises(webclient.InstallError):
        webclient.install(tmp_path / "data", "14.0.0")
    assert webclient.installed(tmp_path / "data") is None
    assert not list(tmp_path.rglob("escape.js")) and not list(tmp_path.rglob("*b.js"))
    assert [p.name for p in (tmp_path / "data" / "webclient").iterdir()] == []


def test_links_in_the_package_are_not_taken(tmp_path, npm):
    npm("14.0.0", RELEASE, links={"package/dist/passwd": "/etc/passwd",
                                  "package/dist/up": "../../.."})
    now, _ = webclient.install(tmp_path / "data", "14.0.0")
    assert not os.path.lexists(now.directory / "passwd") and not os.path.lexists(now.directory / "up")


def test_a_package_past_the_file_bound_is_refused(tmp_path, npm, monkeypatch):
    monkeypatch.setattr(webclient, "MAX_FILES", 3)
    npm("14.0.0")
    with pytest.raises(webclient.InstallError, match="larger than 3 files"):
        webclient.install(tmp_path / "data", "14.0.0")
    assert webclient.installed(tmp_path / "data") is None


def test_npm_fetching_another_package_is_refused(tmp_path, npm, monkeypatch):
    npm("14.0.0")
    monkeypatch.setenv("FAKE_NPM_NAME", "not-converse")
    with pytest.raises(webclient.InstallError, match="fetched 'not-converse'"):
        webclient.install(tmp_path / "data", "14.0.0")


@pytest.mark.parametrize("spec", ["", "14.0.0; rm -rf /", "--registry=x", "$(id)"])
def test_a_version_that_is_not_one_never_reaches_npm(tmp_path, npm, spec):
    npm("14.0.0")
    with pytest.raises(webclient.InstallError, match="is not a version"):
        webclient.install(tmp_path / "data", spec)
    assert npm.calls() == []


def test_without_npm_the_error_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(webclient.InstallError, match="npm is needed"):
        webclient.install(tmp_path / "data", "14.0.0")


# -- the admin command, as the operator runs it -------------------------------------

def xmppd(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    config = tmp_path / "xmppd.ini"
    config.write_text(f"[server]\ndomains = localhost\ndata_dir = {tmp_path / 'data'}\ncomponents =\n")
    env = {k: v for k, v in os.environ.items() if k != "XMPPD_CONFIG"}
    env["PYTHONPATH"] = ROOT
    return subprocess.run([sys.executable, "-m", "xmppd", "-c", str(config), *args],
                          capture_output=True, text=True, env=env, timeout=60)


def test_the_command_installs_and_status_reports_it(tmp_path, npm):
    npm("14.0.0")
    before = xmppd(tmp_path, "webclient", "status")
    assert before.returncode == 1 and before.stdout == ""
    assert before.stderr.startswith("xmppd: Converse.js is not installed")
    assert "run: xmppd webclient install" in before.stderr
    done = xmppd(tmp_path, "webclient", "install")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("installed Converse.js 14.0.0 in ")
    status = xmppd(tmp_path, "webclient", "status")
    assert status.returncode == 0 and status.stdout.startswith("Converse.js 14.0.0 is installed in ")
    again = xmppd(tmp_path, "webclient", "install", "--version", "14.0.0")
    assert again.returncode == 0 and "installed already" in again.stdout


def test_the_command_reports_npm_failures_in_one_line(tmp_path, npm, monkeypatch):
    npm("14.0.0")
    monkeypatch.setenv("FAKE_NPM_FAIL", "1")
    done = xmppd(tmp_path, "webclient", "install", "--version", "99.0.0")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        "xmppd: npm pack converse.js@99.0.0 failed: code ETARGET notarget No matching "
        "version found for converse.js@99.0.0."]


def test_the_command_needs_an_action(tmp_path):
    done = xmppd(tmp_path, "webclient")
    assert done.returncode == 2 and done.stderr.startswith("xmppd: the following arguments are required")
