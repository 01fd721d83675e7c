"""Where a remote domain's server listens (RFC 6120 §3.2, XEP-0368).

In order: an ``[s2s:routes]`` override (tests, private networks; ``host:port``,
with `` tls`` after it for direct TLS); else the
DNS SRV records ``_xmpps-server._tcp`` (direct TLS) and ``_xmpp-server._tcp``
(STARTTLS) of the domain, merged by priority and weight as XEP-0368 says;
else, when the domain has no SRV records, the domain itself on port 5269
(its A/AAAA records, resolved when connecting). A SRV record whose target is
``.`` means the service is decidedly not available there (RFC 2782).

Lookups go through ``twisted.names`` with short time-outs: a dead resolver
must cost a link a few seconds, not a minute.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

log = Logger()

#: The port of a domain without SRV records.
DEFAULT_PORT = 5269
#: Seconds each DNS try waits (twisted.names' default adds up to a minute).
DNS_TIMEOUT = (2, 4)


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    #: TLS from the first byte (XEP-0368), else STARTTLS
    direct_tls: bool = False


class Resolver:
    """Turns a domain into the targets to try, in order."""

    def __init__(self, routes: dict[str, tuple[str, int, bool]], dns: Any = None):
        self.routes = routes
        self._dns = dns

    def _client(self) -> Any:
        if self._dns is None:
            from twisted.names import client

            self._dns = client.createResolver()
        return self._dns

    @defer.inlineCallbacks
    def targets(self, domain: str):
        """Fires with a non-empty list of :class:`Target`."""
        if domain in self.routes:
            host, port, direct_tls = self.routes[domain]
            return [Target(host, port, direct_tls)]
        dns = self._client()
        found = []
        #: RFC 2782: a single "." target says the service is decidedly not
        #: there; said of _xmpp-server, there is no A-record fallback either
        starttls_refused = False
        for service, direct in (("_xmpps-server._tcp.", True), ("_xmpp-server._tcp.", False)):
            try:
                answers, _, _ = yield dns.lookupService(service + domain, timeout=DNS_TIMEOUT)
            except Exception as e:  # NXDOMAIN, time-out, refused: no records
                log.debug("no {service} for {domain}: {e}", service=service, domain=domain, e=e)
                continue
            records = [r.payload for r in answers
                       if hasattr(getattr(r, "payload", None), "target")]
            hosts = [str(p.target).rstrip(".") for p in records]
            if records and all(h == "" for h in hosts):
                starttls_refused = starttls_refused or not direct
                continue
            found.extend((p.priority, p.weight, h, p.port, direct)
                         for p, h in zip(records, hosts) if h)
        ordered = _order(found)
        if not ordered:
            return [] if starttls_refused else [Target(domain, DEFAULT_PORT)]
        return [Target(host, port, direct) for _, _, host, port, direct in ordered]


def _order(records) -> list[tuple]:
    """RFC 2782: by priority ascending; within one, a weighted random order."""
    by_priority: dict[int, list[tuple]] = {}
    for r in records:
        by_priority.setdefault(r[0], []).append(r)
    result = []
    for priority in sorted(by_priority):
        group = by_priority[priority]
        while group:
            total = sum(r[1] for r in group)
            pick = random.uniform(0, total) if total else 0
            for i, r in enumerate(group):
                pick -= r[1]
                if pick <= 0 or i == len(group) - 1:
                    result.append(group.pop(i))
                    break
    return result
