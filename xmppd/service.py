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
