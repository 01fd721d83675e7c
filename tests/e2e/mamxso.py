"""XEP-0313 payloads as aioxmpp XSOs, declared once for every test module.

aioxmpp 0.13 has no MAM client, so the test modules that drive MAM through
it (the user archive, the room archive) share these: the query (a form, a
result set, flip-page), the ``<fin/>`` and a ``<result/>`` with its XEP-0297
forwarded message, reachable as ``message.xep0313_result``. aioxmpp allows
one class per payload tag in a process: declaring them in two modules makes
the second import fail ("ambiguous Child").
"""

from __future__ import annotations

import aioxmpp
import aioxmpp.forms
import aioxmpp.misc
import aioxmpp.rsm.xso as rsm_xso
import aioxmpp.xso as xso

MAM = "urn:xmpp:mam:2"


class FlipPage(xso.XSO):
    TAG = (MAM, "flip-page")


@aioxmpp.IQ.as_payload_class
class Query(xso.XSO):
    """``<query xmlns='urn:xmpp:mam:2' queryid='…'>`` with a form and a set."""

    TAG = (MAM, "query")
    queryid = xso.Attr("queryid", default=None)
    form = xso.Child([aioxmpp.forms.Data])
    rsm = xso.Child([rsm_xso.ResultSetMetadata])
    flip = xso.Child([FlipPage])


@aioxmpp.IQ.as_payload_class
class Fin(xso.XSO):
    TAG = (MAM, "fin")
    complete = xso.Attr("complete", type_=xso.Bool(), default=False)
    rsm = xso.Child([rsm_xso.ResultSetMetadata])


class Result(xso.XSO):
    TAG = (MAM, "result")
    queryid = xso.Attr("queryid", default=None)
    id_ = xso.Attr("id")
    forwarded = xso.Child([aioxmpp.misc.Forwarded])


aioxmpp.Message.xep0313_result = xso.Child([Result])
