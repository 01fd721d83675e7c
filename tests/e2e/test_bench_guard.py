"""The CI regression guard of the benchmark (bench/): short runs of the 1:1
message scenarios, of the soak (logins, logouts and messages for 30 s), of
the presence fanout, of vCard gets, of PEP notifications to contacts
with XEP-0115 caps, of groupchat messages to a room's occupants and of
1:1 messages over WebSocket (RFC 7395) and over BOSH (XEP-0206) against
xmppd alone, and of 1:1 messages between two xmppd over s2s (the xmppd
pair of ``s2s-messages``), over real sockets, through the same load
generator and server launcher as ``bench/run.py``.

It fails only on lost or duplicated stanzas, never on timing: speed is
compared with Prosody by the benchmark itself, on a quiet machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import sys
from pathlib import Path

import pytest

from xmppd.components import BUILTIN

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import s2s_scenarios  # noqa: E402 - registers s2s-messages
import scenarios  # noqa: E402
import servers  # noqa: E402


@contextlib.contextmanager
def xmppd_for(scenario, tmp_path):
    """The benchmark's own xmppd launcher, with the scenario's accounts (and
    rosters and extra components, at the quick sizes)."""
    server = servers.Xmppd(tmp_path, servers.make_certificate(tmp_path), scenario.tls)
    scenario.start(server, quick=True)
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("name", ["messages-plain", "messages-tls"])
def test_short_message_run_loses_and_duplicates_nothing(tmp_path, name):
    scenario = scenarios.SCENARIOS[name]
    with xmppd_for(scenario, tmp_path) as server:
        result = asyncio.run(scenario.run(scenarios.Context(server, quick=True, tls=scenario.tls)))
        alive = server.process.poll() is None
    assert alive, server.log_tail()
    assert result["sent"] > 1000, result  # it really ran (not a speed target)
    assert result["lost"] == 0, result
    assert result["dup"] == 0, result


def test_short_soak_accounts_for_every_message(tmp_path):
    """Clients log in, message each other and log out gracefully, over and over:
    every message arrives once, directly or from offline storage at the
    recipient's next login, and the server answers every closing tag."""
    scenario = scenarios.SCENARIOS["soak"]
    with xmppd_for(scenario, tmp_path) as server:
        result = asyncio.run(scenario.run(scenarios.Context(server, quick=True, tls=scenario.tls)))
        alive = server.process.poll() is None
    assert alive, server.log_tail()
    assert result["sent"] > 1000, result  # it really ran (not a speed target)
    assert result["lost"] == 0, result
    assert result["dup"] == 0, result
    assert result["misrouted"] == 0, result
    assert result["close timeouts"] == 0, result


def _needs_components(scenario):
    """Skip a scenario whose extras need components this tree does not have."""
    wanted = {c for extra in scenario.extras for c in servers.EXTRAS[extra][0]}
    missing = sorted(wanted - set(BUILTIN))
    if missing:
        pytest.skip(f"no {', '.join(missing)} component in this tree")
    for name in sorted(wanted):  # named, but its module not (yet) in this tree
        if importlib.util.find_spec(BUILTIN[name].split(":")[0]) is None:
            pytest.skip(f"the {name} component's module is not in this tree")


def test_short_presence_fanout_reaches_every_contact_once_with_the_avatar_hash(tmp_path):
    """Users with mutual rosters (written into storage by the launcher) change
    presence over and over: each change reaches each contact exactly once,
    nobody else, and carries the XEP-0153 avatar hash of the sender's photo."""
    scenario = scenarios.SCENARIOS["presence-fanout"]
    _needs_components(scenario)
    with xmppd_for(scenario, tmp_path) as server:
        result = asyncio.run(scenario.run(scenarios.Context(server, quick=True, tls=scenario.tls)))
        alive = server.process.poll() is None
    assert alive, server.log_tail()
    assert result["sent"] > 300, result  # it really ran (not a speed target)
    assert result["lost"] == 0, result
    assert result["dup"] == 0, result
    assert result["misrouted"] == 0, result
    assert result["without hash"] == 0, result


def test_the_fanout_accounting_reports_a_contact_that_never_hears(tmp_path):
    """The fanout guard can fail: when one roster lacks a contact (u1 is not
    on u0's roster, though u0 is on u1's), u0's presence never reaches u1 and
    the run reports it lost. Without extras, so it needs no vCard component."""
    scenario = scenarios.SCENARIOS["presence-fanout"]
    rosters = scenario.rosters(True)
    rosters[0] = [c for c in rosters[0] if c != 1]
    server = servers.Xmppd(tmp_path, servers.make_certificate(tmp_path), scenario.tls)
    server.start(scenario.users, rosters)
    try:
        result = asyncio.run(scenario.run(scenarios.Context(server, quick=True, tls=scenario.tls,
                                                            drain=1.0)))
    finally:
        server.stop()
    assert result["lost"] == 1, result  # u0's first change, then u0 waits for it forever


def test_short_vcard_run_answers_every_get_with_the_asked_users_vcard(tmp_path):
    scenario = scenarios.SCENARIOS["vcard-get"]
    _needs_components(scenario)
    with xmppd_for(scenario, tmp_path) as server:
        result = asyncio.run(scenario.run(scenarios.Context(server, quick=True, tls=scenario.tls)))
        alive = server.process.poll() is None
    assert alive, server.log_tail()
    assert result["sent"] > 200, result  # it really ran (not a speed target)
    assert result["wrong"] == 0, result
    assert result["lost"] == 0, result
    assert result["dup"] == 0, result


def test_short_pep_fanout_notifies_every_caps_contact_once(tmp_path):
    """Contacts advertise XEP-0115 caps with ``geoloc+notify`` (the server
    verifies the hash by asking one client, which answers), then publishers
    publish over and over: each item's notification reaches each contact
    exactly once, nobody else, and every publish is a result."""
    scenario = scenarios.SCENARIOS["pep-fanout"]
    _needs_components(scenario)
    with xmppd_for(scenario, tmp_path) as server:
        result = asyncio.run(scenario.run(scenarios.Context(server, quick=True, tls=scenario.tls)))
        alive = server.process.poll() is None
    assert alive, server.log_tail()
    assert result["scout queries"] == 1, result  # one tracked query for the hash, answered
    assert result["sent"] > 100, result  # it really ran (not a speed target)
    assert result["lost"] == 0, result
    assert result["dup"] == 0, result
    assert result["misrouted"] == 0, result


def test_the_pep_accounting_reports_contacts_whose_caps_do_not_verify(tmp_path, monkeypatch):
    """The PEP guard can fail: when the clients claim a ``ver`` their
    disco#info answer does not hash to, xmppd believes none of them, nobody
    becomes a recipient, and each publisher's first item is reported lost
    for every contact."""
    scenario = scenarios.SCENARIOS["pep-fanout"]
    _needs_components(scenario)
    monkeypatch.setattr(scenarios, "caps_ver", lambda: "bm90IHRoZSBoYXNoIG9mIGl0IGF0IGFsbA==")
    with xmppd_for(scenario, tmp_path) as server:
        result = asyncio.run(scenario.run(scenarios.Context(server, quick=True, tls=scenario.tls,
                                                            drain=1.0)))
    publishers, contacts = scenarios._pep_size(True)
    assert result["caps queries"] >= 1, result  # contacts were asked, and answered
    assert result["lost"] == publishers * contacts, result


def test_short_muc_fanout_reaches_every_occupant_once_in_order(tmp_path):
    """One room, every user an occupant, one of them sending groupchat
    messages over and over: each message reaches each occupant (the
    sender's reflection included) exactly once and in order, and the room
    refuses none (the bench lifts xmppd's per-occupant rate limit)."""
    scenario = scenarios.SCENARIOS["muc-fanout"]
    _needs_components(scenario)
    with xmppd_for(scenario, tmp_path) as server:
        result = asyncio.run(scenario.run(scenarios.Context(server, quick=True, tls=scenario.tls)))
        alive = server.process.poll() is None
    assert alive, server.log_tail()
    assert result["sent"] > 50, result  # it really ran (not a speed target)
    assert result["not joined"] == 0, result
    assert result["refused"] == 0, result
    assert result["lost"] == 0, result
    assert result["dup"] == 0, result
    assert result["reordered"] == 0, result


def test_the_muc_accounting_reports_messages_the_room_refuses(tmp_path, monkeypatch):
    """The MUC guard can fail: with xmppd's default per-occupant rate limit
    (10 messages a second, burst 20) the sender soon gets
    ``<policy-violation/>`` errors, and those messages are reported lost."""
    scenario = scenarios.SCENARIOS["muc-fanout"]
    _needs_components(scenario)
    monkeypatch.setattr(servers, "XMPPD_MUC", {"domain": servers.MUC_DOMAIN})
    with xmppd_for(scenario, tmp_path) as server:
        result = asyncio.run(scenario.run(scenarios.Context(server, quick=True, tls=scenario.tls,
                                                            drain=1.0)))
    assert result["refused"] > 0, result
    assert result["lost"] >= result["refused"], result


def test_short_websocket_message_run_loses_and_duplicates_nothing(tmp_path):
    """The 1:1 message run with every client logged in over XMPP-over-WebSocket
    (RFC 7395: the load generator's wsproto transport, ``<open/>``, SCRAM-SHA-1,
    bind) at xmppd's ``[http]`` port: every message arrives exactly once."""
    scenario = scenarios.SCENARIOS["ws-messages"]
    with xmppd_for(scenario, tmp_path) as server:
        assert server.http_port, "the websocket extra gives xmppd an HTTP port"
        result = asyncio.run(scenario.run(scenarios.Context(server, quick=True, tls=scenario.tls)))
        alive = server.process.poll() is None
        log = server.log_tail()
    assert alive, log
    assert result["sent"] > 1000, result  # it really ran (not a speed target)
    assert result["lost"] == 0, result
    assert result["dup"] == 0, result


def test_the_websocket_client_really_logs_in_over_websocket(tmp_path):
    """The guard above measures WebSocket, not TCP: the generator's WebSocket
    login binds a session at xmppd's HTTP port and closes it with RFC 7395's
    ``<close/>``, and pointed at a port that speaks no WebSocket (xmppd's
    c2s port) it fails instead of falling back to TCP."""
    scenario = scenarios.SCENARIOS["ws-messages"]
    with xmppd_for(scenario, tmp_path) as server:
        ctx = scenarios.Context(server, quick=True, tls=scenario.tls)

        async def login_both():
            conn = await ctx.login(0, websocket=True)
            assert conn.jid == f"{scenarios.user_name(0)}@{servers.DOMAIN}/bench"
            assert isinstance(conn, scenarios.loadgen.WebSocketConnection)
            assert await conn.close_gracefully(), "xmppd answers <close/> with its own"
            server.http_port = server.port  # the c2s port speaks no HTTP
            with pytest.raises(Exception):
                await asyncio.wait_for(ctx.login(1, websocket=True), 10)
        asyncio.run(login_both())


def test_short_bosh_message_run_loses_and_duplicates_nothing(tmp_path):
    """The 1:1 message run with every client logged in over BOSH (XEP-0206:
    the load generator's HTTP client, session creation, SCRAM-SHA-1, restart,
    bind) at xmppd's ``[http]`` port: every message arrives exactly once."""
    scenario = scenarios.SCENARIOS["bosh-messages"]
    with xmppd_for(scenario, tmp_path) as server:
        assert server.http_port, "the bosh extra gives xmppd an HTTP port"
        result = asyncio.run(scenario.run(scenarios.Context(server, quick=True, tls=scenario.tls)))
        alive = server.process.poll() is None
        log = server.log_tail()
    assert alive, log
    assert result["sent"] > 500, result  # it really ran (not a speed target)
    assert result["lost"] == 0, result
    assert result["dup"] == 0, result


def test_the_bosh_client_really_logs_in_over_bosh(tmp_path):
    """The guard above measures BOSH, not TCP: the generator's BOSH login
    binds a session at xmppd's HTTP port and ends it with type='terminate',
    and pointed at a port that speaks no HTTP (xmppd's c2s port) it fails."""
    scenario = scenarios.SCENARIOS["bosh-messages"]
    with xmppd_for(scenario, tmp_path) as server:
        ctx = scenarios.Context(server, quick=True, tls=scenario.tls)

        async def login_both():
            conn = await ctx.login(0, bosh=True)
            assert conn.jid == f"{scenarios.user_name(0)}@{servers.DOMAIN}/bench"
            assert isinstance(conn, scenarios.boshgen.BoshConnection) and conn.sid
            assert await conn.close_gracefully(), "xmppd answers the terminate"
            server.http_port = server.port  # the c2s port speaks no HTTP
            with pytest.raises(Exception):
                await asyncio.wait_for(ctx.login(1, bosh=True), 10)
        asyncio.run(login_both())
        assert "bound u0@localhost/bench (SCRAM-SHA-1, BOSH" in server.log_tail()


def test_the_benchmark_reports_a_lost_stanza(tmp_path):
    """The guard can fail: a server that drops messages is caught."""
    scenario = scenarios.SCENARIOS["messages-plain"]
    with xmppd_for(scenario, tmp_path) as server:
        async def run():
            ctx = scenarios.Context(server, quick=True, tls=False)
            task = asyncio.ensure_future(scenario.run(ctx))
            await asyncio.sleep(1.0)
            # A second login with a receiver's resource replaces the generator's
            # session (a conflict) and then vanishes: what is in flight to that
            # receiver goes to offline storage, never to the generator.
            receiver = scenarios.user_name(50)  # quick runs: 50 pairs, receivers u50..u99
            intruder = await ctx.login(50, resource="bench")
            assert intruder.jid == f"{receiver}@{servers.DOMAIN}/bench"
            intruder.transport.abort()
            return await task
        result = asyncio.run(run())
    assert result["lost"] > 0, result


def _s2s_run(tmp_path, drain=None, route_to=None):
    """The ``s2s-messages`` run at quick sizes between two xmppd (the
    bench's pair: own loopback addresses, test CA, SASL EXTERNAL,
    ``[s2s:routes]``); ``route_to`` sends A's route for B's domain to
    another address."""
    scenario = scenarios.SCENARIOS["s2s-messages"]
    pair = scenario.make_server("xmppd", tmp_path, None)
    if route_to is not None:
        pair.a.s2s.peers = {s2s_scenarios.B_DOMAIN: route_to(scenario.world)}
    try:
        scenario.start(pair, quick=True)
        result = asyncio.run(scenario.run(scenarios.Context(pair, quick=True, tls=scenario.tls,
                                                            drain=drain)))
        return result, pair.alive(), pair.log_tail()
    finally:
        pair.stop()
        scenario.close()


def test_short_s2s_run_between_two_xmppd_loses_and_duplicates_nothing(tmp_path):
    """Senders on one xmppd, receivers on another, every message over the
    one s2s link between them (STARTTLS, SASL EXTERNAL, both ends say so):
    each arrives exactly once, at its own receiver."""
    result, alive, log = _s2s_run(tmp_path)
    assert alive, log
    assert result["sent"] == result["expected"] > 1000, result  # it really ran
    assert result["links"] == 1, result  # one link, a -> b, EXTERNAL (or the run raises)
    assert result["lost"] == 0, result
    assert result["dup"] == 0, result
    assert result["misrouted"] == 0, result
    assert result["bounced"] == 0, result


def test_the_s2s_accounting_reports_messages_that_never_cross(tmp_path):
    """The s2s guard can fail: with A's route to B's domain pointing where
    nothing listens, the link is never made, the messages bounce back to
    their senders and the run reports them lost."""
    result, alive, log = _s2s_run(tmp_path, drain=0.5,
                                  route_to=lambda world: f"{world.prefix}.9")
    assert alive, log
    assert result["links"] == 0, result
    assert result["bounced"] > 0, result
    assert result["lost"] == result["sent"] > 0, result
