"""xmppd's HTTP service: one Twisted Web site in the server's process.

:class:`~xmppd.http.site.HTTPService` (``server.http``) listens on the
``[http]`` ports and serves what components mount on it with
:meth:`~xmppd.http.site.HTTPService.add_route`: WebSocket and BOSH
(:mod:`xmppd.http.websocket`), XEP-0363 uploads, the Converse.js page
(:mod:`xmppd.http.conversejs`). It knows none of them; it serves XEP-0156
host-meta itself, from the routes that declare a link relation.
"""

from xmppd.http.site import HTTPService

__all__ = ["HTTPService"]
