"""The CI regression guard of the benchmark (bench/): short runs of the 1:1
message scenarios and of the soak (logins, logouts and messages for 30 s)
against xmppd alone, over real sockets, through the same load generator and
server launcher as ``bench/run.py``.

It fails only on lost or duplicated stanzas, never on timing: speed is
compared with Prosody by the benchmark itself, on a quiet machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import scenarios  # noqa: E402
import servers  # noqa: E402


@contextlib.contextmanager
def xmppd_for(scenario, tmp_path):
    """The benchmark's own xmppd launcher, with the scenario's accounts."""
    server = servers.Xmppd(tmp_path, servers.make_certificate(tmp_path), scenario.tls)
    server.start(scenario.users)
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
