"""Client streams apart from their framing.

:mod:`xmppd.streams.negotiation` is what every client session does whatever
carries it (SASL, resource binding, stream features, stanza checks, in-order
processing, backpressure); a *framing* carries it: TCP
(:mod:`xmppd.c2s.session`), WebSocket (:mod:`xmppd.http.websocket`), BOSH.
"""
