"""XEP-0030 service discovery: what this server and its accounts are and do.

Three kinds of entity answer here, each collected from the enabled components
rather than written down in one place:

- *The server* (disco#info of a user domain): every enabled component's
  ``identities`` and ``features`` (hosted services describe their own domains,
  not the server), and a XEP-0128 extended-information form of XEP-0157
  contact addresses from ``[component:disco]``. Its disco#items lists the
  hosted services (``jid`` = the service's domain, ``name`` = its ``title``)
  and the domains with a route of their own (XEP-0114 external components).
- *The server's entity capabilities* (XEP-0115): the same disco#info hashed
  once at start (the component list is fixed while the server runs) and
  offered in the stream features as ``<c hash='sha-1' node=… ver=…/>``, so a
  client that has seen this ``ver`` before need not ask again. disco#info
  with ``node='<CAPS_NODE>#<ver>'`` answers the same information, that node
  echoed; any other node is ``item-not-found``.
- *An account* (disco#info of a user's bare JID, answered by the server on
  the user's behalf, XEP-0030 §3.1): identity ``account/registered``
  (``account/admin`` for an admin of ``[server] admins``) and the
  ``account_features`` of every enabled component. disco#items of an account
  is empty until PEP adds nodes.

Behaviour matched to Prosody 0.12 (``mod_disco``, ``mod_server_contact_info``)
where the XEPs leave a choice:

- *Who may discover an account*: the user and the contacts with a ``from`` or
  ``both`` subscription in the user's roster — those allowed to see the
  user's presence (Prosody's ``is_contact_subscribed``); without a roster
  component only the user. Anyone else, and anyone asking about an account
  that does not exist, gets ``service-unavailable`` (cancel), the answer
  Prosody gives by leaving the iq unhandled, so the reply tells a stranger
  nothing, not even whether the account exists. A node of an account is
  ``item-not-found`` after the same check.
- *The account's own features* include ``disco#info`` and ``disco#items``
  (which XEP-0030 §3.1 expects every responding entity to list; Prosody omits
  them); the rest are what Prosody's modules add for an account — none of the
  components built in today (Prosody's come from mod_pep, mod_vcard4,
  mod_vcard_legacy, mod_bookmarks and mod_mam).
- *Identities*: one per category and type, the first declared winning, as
  Prosody does — two identities alike would make the caps hash ill-formed.
- *Contact addresses* (XEP-0157): options ``<kind>_addresses`` for the seven
  kinds the ``http://jabber.org/network/serverinfo`` form registers; each a
  list of URIs (``xmpp:``, ``mailto:``, ``https:`` …). With no
  ``admin_addresses`` given, every ``[server] admins`` JID becomes an
  ``xmpp:`` admin address, as in Prosody. No addresses at all: no form (as
  Prosody without mod_server_contact_info); otherwise the form carries only
  the kinds that have addresses. (Prosody also writes the empty ones as empty
  fields, which XEP-0115 implementations hash differently — slixmpp adds a
  ``<`` for a field without values — so a client would fail to verify the
  server's caps.)
- *Caps node*: Prosody's is its home page; ours is :data:`CAPS_NODE`. Like
  Prosody, the ``<c/>`` element is offered before and after authentication.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any, Iterable, Sequence

from twisted.internet import defer
from twisted.words.xish import domish

from xmppd import config as configlib
from xmppd import ns
from xmppd.component import Component, Option, handles
from xmppd.router.events import StanzaEvent, disco_info

#: XEP-0115 ``node``: the URI naming the software whose capabilities ``ver`` hashes.
CAPS_NODE = "https://github.com/xmppd/xmppd"

#: XEP-0157 address kinds, in the order of the registered form (and Prosody's).
CONTACT_KINDS = ("abuse", "admin", "feedback", "sales", "security", "status", "support")

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$")

Identity = tuple[str, str, str]
#: A XEP-0128 form as (FORM_TYPE, [(var, [values])]).
Form = tuple[str, list[tuple[str, list[str]]]]


def uris(text: str) -> list[str]:
    """An option type: URIs separated by spaces and/or commas."""
    found = configlib.words(text)
    for uri in found:
        if not _URI.match(uri):
            raise configlib._BadValue(
                f"{uri!r} is not a URI (write it as xmpp:…, mailto:… or https://…)")
    return found


def caps_ver(identities: Iterable[tuple[str, str, str, str]], features: Iterable[str],
             forms: Iterable[Form]) -> str:
    """The XEP-0115 §5.1 verification string (sha-1, base64) of a disco#info.

    ``identities`` are (category, type, xml:lang, name) with '' for absent
    parts; ``forms`` are XEP-0128 forms whose FORM_TYPE is the first item.
    """
    text = "".join(f"{c}/{t}/{lang}/{name}<" for c, t, lang, name in sorted(identities))
    text += "".join(f"{feature}<" for feature in sorted(features))
    for form_type, fields in sorted(forms, key=lambda form: form[0]):
        text += f"{form_type}<"
        for var, values in sorted(fields, key=lambda field: field[0]):
            text += f"{var}<" + "".join(f"{value}<" for value in sorted(values))
    return base64.b64encode(hashlib.sha1(text.encode("utf-8")).digest()).decode("ascii")


def form_element(form: Form) -> domish.Element:
    """A XEP-0128 ``<x type='result'/>`` data form."""
    form_type, fields = form
    x = domish.Element((ns.DATA_FORMS, "x"))
    x["type"] = "result"
    hidden = x.addElement("field")
    hidden["var"], hidden["type"] = "FORM_TYPE", "hidden"
    hidden.addElement("value", content=form_type)
    for var, values in fields:
        field = x.addElement("field")
        field["var"], field["type"] = var, "list-multi"
        for value in values:
            field.addElement("value", content=value)
    return x


def info_query(identities: Sequence[Identity], features: Iterable[str],
               forms: Iterable[Form] = (), node: str | None = None) -> domish.Element:
    """A disco#info ``<query/>`` of these identities, features and forms."""
    return disco_info(identities, features, node, [form_element(form) for form in forms])


class DiscoComponent(Component):
    """Service discovery of the server, its hosted services and its accounts."""

    name = "disco"
    features = [ns.DISCO_INFO, ns.DISCO_ITEMS]
    identities = [("server", "im", "xmppd")]
    account_features = [ns.DISCO_INFO, ns.DISCO_ITEMS]
    options = [
        Option(f"{kind}_addresses", uris, "",
               f"XEP-0157 {kind} contact addresses of this service, as URIs"
               + (" (empty: xmpp: URIs of the [server] admins)" if kind == "admin" else ""))
        for kind in CONTACT_KINDS
    ]

    def startService(self) -> None:
        super().startService()
        # The component list is fixed while the server runs: describe it once.
        seen: set[tuple[str, str]] = set()
        self.server_identities: list[Identity] = []
        for category, type_, name in self.server.disco_identities():
            if (category, type_) not in seen:
                seen.add((category, type_))
                self.server_identities.append((category, type_, name))
        self.server_features: list[str] = list(self.server.disco_features())
        self.server_forms: list[Form] = []
        contacts = self.contact_addresses()
        if contacts:
            self.server_forms.append((ns.SERVERINFO, contacts))
        #: the XEP-0115 verification string of the server's disco#info
        self.ver = caps_ver(((c, t, "", n or "") for c, t, n in self.server_identities),
                            self.server_features, self.server_forms)
        self.caps_node = f"{CAPS_NODE}#{self.ver}"
        self.account_feature_list: list[str] = list(self.server.account_features())

    def contact_addresses(self) -> list[tuple[str, list[str]]]:
        """The XEP-0157 fields that have addresses, as (var, URIs)."""
        fields = []
        for kind in CONTACT_KINDS:
            addresses = list(self.config[f"{kind}_addresses"])
            if kind == "admin" and not addresses:
                addresses = [f"xmpp:{admin}" for admin in sorted(self.server.admins)]
            if addresses:
                fields.append((f"{kind}-addresses", addresses))
        return fields

    def stream_features(self, session: Any) -> list[domish.Element]:
        """XEP-0115 §6.3: the server's own capabilities, before and after login."""
        c = domish.Element((ns.CAPS, "c"))
        c["hash"], c["node"], c["ver"] = "sha-1", CAPS_NODE, self.ver
        return [c]

    # -- the server ------------------------------------------------------------------

    @handles(f"iq-get/host/{ns.DISCO_INFO}:query")
    def info(self, event: StanzaEvent):
        node = event.payload.getAttribute("node")
        if node and node != self.caps_node:
            return event.error("item-not-found", text="Node does not exist")
        return event.reply(info_query(self.server_identities, self.server_features,
                                      self.server_forms, node))

    @handles(f"iq-get/host/{ns.DISCO_ITEMS}:query")
    def items(self, event: StanzaEvent):
        if event.payload.getAttribute("node"):
            return event.error("item-not-found", text="Node does not exist")
        query = domish.Element((ns.DISCO_ITEMS, "query"))
        # (``server.services`` is Twisted's list of child services: the hosted
        # ones are ``server.hosted``, domain → service.) A stopped service
        # serves its domain no more, so it is not listed.
        services = self.server.hosted
        listed = {d for d, service in services.items() if service.running}
        # Domains routed elsewhere by an exact route: XEP-0114 external
        # components (listed while away too, as Prosody lists its components).
        listed.update(self.server.router.routes.domains())
        for domain in sorted(listed):
            item = query.addElement("item")
            item["jid"] = domain
            title = services[domain].title if domain in services else None
            if title:
                item["name"] = title
        return event.reply(query)

    # -- accounts --------------------------------------------------------------------

    @handles(f"iq-get/self/{ns.DISCO_INFO}:query")
    @handles(f"iq-get/bare/{ns.DISCO_INFO}:query")
    def account_info(self, event: StanzaEvent):
        """XEP-0030 §3.1 of a user's bare JID: the user's own, or a contact's."""
        return self._if_allowed(event, self._account_info)

    @handles(f"iq-get/self/{ns.DISCO_ITEMS}:query")
    @handles(f"iq-get/bare/{ns.DISCO_ITEMS}:query")
    def account_items(self, event: StanzaEvent):
        return self._if_allowed(event, self._account_items)

    def _account_info(self, event: StanzaEvent, user: str) -> domish.Element:
        kind = "admin" if self.server.is_admin(user) else "registered"
        return self._account_reply(event, user, info_query(
            [("account", kind, ""), *self._account_identities()], self.account_feature_list))

    def _account_items(self, event: StanzaEvent, user: str) -> Any:
        query = domish.Element((ns.DISCO_ITEMS, "query"))
        waits = self._account_item_lists(event.from_.full(), user)
        if not waits:
            return self._account_reply(event, user, query)

        def listed(results):
            for ok, items in results:
                for item in (items if ok else ()):
                    query.addChild(item)
            return self._account_reply(event, user, query)
        return defer.DeferredList(waits, consumeErrors=True).addCallback(listed)

    # -- hook (issue 12, PEP): what other components add to an account's disco ----
    # A component may declare ``account_identities`` ((category, type, name)
    # tuples: PEP's ``pubsub/pep``) and define ``account_disco_items(requester:
    # str, owner: str) -> Deferred[list[<item/> elements]]`` (PEP: the nodes the
    # requester may see). Called only after the access check above.

    def _account_identities(self) -> list[Identity]:
        return [identity for component in self.server.components.values()
                for identity in getattr(component, "account_identities", ())]

    def _account_item_lists(self, requester: str, user: str) -> list[defer.Deferred]:
        return [defer.maybeDeferred(component.account_disco_items, requester, user)
                for component in self.server.components.values()
                if callable(getattr(component, "account_disco_items", None))]

    # A disco#info or #items query with a ``node`` on an account goes to the
    # components defining ``account_disco_node(event, owner) -> reply element,
    # Deferred of one, or None`` (not my node; PEP: its nodes' identity,
    # meta-data and items); the first answer wins, none: item-not-found.
    def _account_node(self, event: StanzaEvent, user: str) -> Any:
        askers = [component.account_disco_node for component in self.server.components.values()
                  if callable(getattr(component, "account_disco_node", None))]

        def ask(index: int) -> Any:
            if index == len(askers):
                return event.error("item-not-found", text="Node does not exist")
            answered = askers[index](event, user)
            if isinstance(answered, defer.Deferred):
                return answered.addCallback(lambda found: found if found is not None
                                            else ask(index + 1))
            return answered if answered is not None else ask(index + 1)
        return ask(0)
    # -- end of the hook ---------------------------------------------------------

    @staticmethod
    def _account_reply(event: StanzaEvent, user: str, query: domish.Element) -> domish.Element:
        reply = event.reply(query)
        reply["from"] = user  # also when the client left 'to' out (§3.1 asks the bare JID)
        return reply

    def _if_allowed(self, event: StanzaEvent, answer) -> Any:
        user = event.to.userhost() if event.to is not None else None
        requester = event.from_
        if user is None or requester is None:
            return event.error("service-unavailable")

        def decided(allowed: bool):
            if not allowed:
                return event.error("service-unavailable")
            if event.payload.getAttribute("node"):
                return self._account_node(event, user)  # (issue 12 hook, below)
            return answer(event, user)

        if requester.userhost() == user:
            return decided(True)
        return self.may_discover(user, requester.userhost()).addCallback(decided)

    @defer.inlineCallbacks
    def may_discover(self, user: str, requester: str):
        """Deferred[bool]: may ``requester`` (a bare JID) discover ``user``'s
        account? Only if the account exists and the requester may see the
        user's presence (a ``from``/``both`` subscription)."""
        rosters = self.server.components.get("roster")
        if rosters is None:
            return False
        # Existence first: a roster read for a made-up JID would take a
        # place in the roster cache.
        exists = yield self.server.accounts.exists(user)
        if not exists:
            return False
        roster = yield rosters.load(user)
        return roster.is_subscribed_from(requester)
