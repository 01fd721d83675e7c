"""The README's extension-author example works exactly as printed."""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.rst"


def literal_blocks(text: str) -> list[str]:
    """The reStructuredText literal blocks (after '::') of ``text``."""
    blocks = []
    for match in re.finditer(r"::\n\n((?:(?:    .*)?\n)+)", text):
        blocks.append(textwrap.dedent(match.group(1)).strip() + "\n")
    return blocks


def install_example(tmp_path, monkeypatch) -> list[str]:
    """Write the README's ``mypackage/hello.py`` where Python finds it; return the blocks."""
    blocks = literal_blocks(README.read_text(encoding="utf-8"))
    component = next(b for b in blocks if b.startswith("# mypackage/hello.py"))
    package = tmp_path / "mypackage"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "hello.py").write_text(component)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "mypackage", raising=False)
    monkeypatch.delitem(sys.modules, "mypackage.hello", raising=False)
    return blocks


def test_readme_component_example_and_its_harness_test_pass(tmp_path, monkeypatch):
    blocks = install_example(tmp_path, monkeypatch)
    test_code = next(b for b in blocks if "def test_hello_greets_the_sender" in b)
    namespace: dict = {}
    exec(compile(test_code, "README.rst", "exec"), namespace)
    namespace["test_hello_greets_the_sender"]()  # raises AssertionError if the README lies


def test_readme_embedded_bot_echoes_a_client():
    """The README's in-process wokkel bot (``bot.py``), attached to a server
    in memory, answers a client's chat message."""
    from twisted.internet import task

    from xmppd.testing import Harness

    blocks = literal_blocks(README.read_text(encoding="utf-8"))
    code = next(b for b in blocks if b.startswith("# bot.py"))
    clock = task.Clock()
    h = Harness(["presence", "messaging"], clock=clock)
    h.add_user("bot@localhost")
    namespace: dict = {"xmpp": h.server}
    exec(compile(code, "README.rst", "exec"), namespace)
    clock.advance(0)
    assert h.router.resources("bot@localhost")["echo"].available
    alice = h.login("alice@localhost/pc")
    alice.feed("<message to='bot@localhost' type='chat'><body>hi</body></message>")
    clock.advance(0)
    [reply] = alice.take()
    assert reply["from"] == "bot@localhost/echo" and str(reply.body) == "echo: hi"


def test_readme_ini_snippet_enables_the_component(tmp_path, monkeypatch):
    """The INI lines the README shows load, with the component's own option."""
    from xmppd import config

    blocks = install_example(tmp_path, monkeypatch)
    ini = next(b for b in blocks if "[component:hello]" in b)
    path = tmp_path / "xmppd.ini"
    path.write_text(ini.replace("[server]", f"[server]\ndata_dir = {tmp_path / 'data'}"))
    loaded = config.load(str(path))
    assert loaded.components["hello"].__name__ == "HelloComponent"
    assert loaded.component("hello")["greeting"] == "Hi"


def test_readme_service_example_echoes_after_a_tracked_ping(tmp_path, monkeypatch):
    """The README's hosted service: its domain, its disco, a tracked iq answered
    and one timed out on the harness's clock."""
    from twisted.internet import task

    from xmppd.testing import Harness

    blocks = literal_blocks(README.read_text(encoding="utf-8"))
    code = next(b for b in blocks if b.startswith("# mypackage/echo.py"))
    namespace: dict = {}
    exec(compile(code, "README.rst", "exec"), namespace)
    clock = task.Clock()
    h = Harness(["disco", namespace["EchoService"]], clock=clock)
    alice = h.login("alice@localhost/pc")
    alice.feed("<message to='echo.localhost' id='m1'><body>hi</body></message>")
    [ping] = alice.take()
    assert ping.name == "iq" and ping["from"] == "echo.localhost"
    alice.feed(f"<iq type='result' id='{ping['id']}' to='echo.localhost'/>")
    [echo] = alice.take()
    assert str(echo.body) == "hi (ping: result)" and echo["from"] == "echo.localhost"
    alice.feed("<message to='echo.localhost' id='m2'><body>still there?</body></message>")
    alice.take()  # the ping, left unanswered
    clock.advance(10)
    [echo] = alice.take()
    assert str(echo.body) == "still there? (ping: timeout)"
    alice.feed("<iq type='get' id='d' to='echo.localhost'>"
               "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    [info] = alice.take()
    identity = next(info.firstChildElement().elements())
    assert (identity["category"], identity["name"]) == ("component", "Echo")
