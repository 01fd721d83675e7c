"""Where a remote domain's server is: [s2s:routes], then XEP-0368 and RFC
6120 SRV records merged by priority, then the domain itself on 5269 — with a
DNS resolver of our own making (twisted.names records, no network)."""

from __future__ import annotations

from twisted.internet import defer
from twisted.names import dns, error

from xmppd.streams.s2s.resolve import Resolver, Target
from xmppd.testing import result_of


class FakeDNS:
    """``lookupService`` answered from a table (no entry: NXDOMAIN)."""

    def __init__(self, records: dict[str, list[tuple[int, int, int, str]]]):
        self.records = records
        self.asked: list[str] = []

    def lookupService(self, name, timeout=None):
        self.asked.append(name)
        if name not in self.records:
            return defer.fail(error.DNSNameError(name))
        answers = [dns.RRHeader(name, dns.SRV, payload=dns.Record_SRV(p, w, port, target))
                   for p, w, port, target in self.records[name]]
        return defer.succeed((answers, [], []))


def test_a_route_override_wins_and_asks_no_dns():
    fake = FakeDNS({})
    resolver = Resolver({"example.org": ("127.0.0.2", 5270, False),
                         "tls.example.org": ("127.0.0.3", 5271, True)}, fake)
    assert result_of(resolver.targets("example.org")) == [Target("127.0.0.2", 5270)]
    assert result_of(resolver.targets("tls.example.org")) == [Target("127.0.0.3", 5271, True)]
    assert fake.asked == []


def test_without_srv_records_the_domain_itself_on_5269():
    fake = FakeDNS({})
    targets = result_of(Resolver({}, fake).targets("example.org"))
    assert targets == [Target("example.org", 5269)]
    assert fake.asked == ["_xmpps-server._tcp.example.org", "_xmpp-server._tcp.example.org"]


def test_direct_tls_and_starttls_records_are_merged_by_priority():
    fake = FakeDNS({
        "_xmpps-server._tcp.example.org": [(5, 0, 5270, "tls.example.org")],
        "_xmpp-server._tcp.example.org": [(10, 0, 5269, "xmpp2.example.org"),
                                          (1, 0, 5269, "xmpp1.example.org")],
    })
    targets = result_of(Resolver({}, fake).targets("example.org"))
    assert targets == [Target("xmpp1.example.org", 5269),
                       Target("tls.example.org", 5270, direct_tls=True),
                       Target("xmpp2.example.org", 5269)]


def test_a_dot_target_means_no_service_at_all():
    # the root name ("." on the wire)
    fake = FakeDNS({"_xmpp-server._tcp.example.org": [(0, 0, 0, b"")]})
    assert result_of(Resolver({}, fake).targets("example.org")) == []
