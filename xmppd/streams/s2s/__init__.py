"""Server-to-server federation (RFC 6120, XEP-0220 dialback, XEP-0178 SASL
EXTERNAL, XEP-0368 direct TLS): :mod:`.links` (the service and its links),
:mod:`.inbound` and :mod:`.outbound` (the two directions of a link),
:mod:`.dialback`, :mod:`.certs`, :mod:`.resolve`."""
