"""Embedding xmppd: :func:`makeService` returns the server as an ``IService``.

::

    from twisted.application import service
    from xmppd.service import makeService

    application = service.Application("my app")
    xmpp = makeService("etc/xmppd.ini")
    xmpp.setServiceParent(application)
    # later, from your own code:
    xmpp.router.route(message_element)
"""

from __future__ import annotations

from typing import Any

from xmppd import config as configlib
from xmppd.server import XMPPServer


def makeService(config: configlib.Config | str | dict[str, dict[str, Any]],
                listen: bool = True) -> XMPPServer:
    """The xmppd server as a Twisted service.

    ``config`` is a validated :class:`~xmppd.config.Config`, the path of an INI
    file, or a dict of sections (validated the same way as the file).

    :raises xmppd.config.ConfigError: if the configuration is not valid.
    """
    if isinstance(config, str):
        config = configlib.load(config)
    elif isinstance(config, dict):
        config = configlib.from_dict(config)
    return XMPPServer(config, listen=listen)


#: Allocations between two collections of the youngest generation (Python's
#: default is 700). Every stanza is a tree whose children point back at their
#: parent, so the collector runs every few stanzas and, each time, walks what
#: the young generation holds; measured on the login benchmark, the default
#: cost about a tenth of the throughput (bench/RESULTS.rst).
GC_THRESHOLD = (50_000, 20, 10)


def tune_garbage_collector() -> None:
    """Move everything alive at start-up (modules, configuration, the
    components) out of the collector's sight, and collect young objects less
    often. For a process that is an xmppd server: ``twistd xmppd`` calls it."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)

