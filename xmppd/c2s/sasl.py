"""Server side SASL lives in :mod:`xmppd.streams.sasl` (every framing uses it:
TCP, WebSocket, BOSH); this name is kept for code that imported it from here."""

from xmppd.streams.sasl import PlainMechanism, ScramMechanism, Step, b64decode, failure

__all__ = ["PlainMechanism", "ScramMechanism", "Step", "b64decode", "failure"]
