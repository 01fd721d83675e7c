"""XEP-0115 entity capabilities of the clients connected here, and of the
remote resources whose presence reached an account here.

A client says what it can do in its available presence with
``<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node=… ver=…/>``,
where ``ver`` is a hash of its disco#info. Features of the server act on it:
PEP (XEP-0163) sends a contact's resource the events of a node only if the
resource's features include ``<node>+notify``. This component learns the
features behind each session's ``ver``, so that others ask
:meth:`CapsComponent.features_of` and hear the ``caps-known`` event.

How it learns them (XEP-0115 §5.4):

- A ``ver`` seen before (verified) is known at once: never one query per
  login. The features are kept by (hash function, ``ver``) in a cache of the
  ``cache_size`` most recently used hashes.
- An unknown one is asked of the client that sent it, with a *tracked*
  disco#info query (:meth:`xmppd.router.iq.IQTracker.request`) from the
  user's bare JID (as Prosody's mod_pep asks a user's own clients) to the
  session's full JID, ``node='<node>#<ver>'``. The
  answer counts only if it comes from that JID with that id, its identities,
  features and form types are each listed once, and hashing it gives the
  ``ver`` the client claimed; then it is cached for everyone.
- While a query for a ``ver`` is out, other sessions claiming the same
  ``ver`` wait for its answer rather than being asked too. If the answer is
  wrong, an error, or late (``timeout`` seconds), the next waiting session is
  asked: one client that answers wrongly cannot keep others' caps unknown.
- A session is asked one thing at a time; caps it claims while a query to it
  is out are looked at when that query ends.
- A ``<c/>`` whose hash function this server does not support, and the
  legacy format of XEP-0115 1.3 (no ``hash``; ``ver`` is an opaque version
  and ``ext`` names extensions), cannot be verified. As §5.4 says for the
  former, the answer is believed but kept only for that account: cached
  under the user's bare JID, so one user's answer never decides another's
  features. Prosody 0.12's mod_pep believes any answer and caches it for all
  (and ignores other hash functions altogether); verifying keeps a client
  from choosing what other users' clients are sent.
- Presence without ``<c/>`` keeps the caps the session had (the caps
  optimization of §8.4: a client need not repeat them); unavailable
  presence, and the session's end, forget them.

Remote resources (federation). A resource of another server is no session
here; PEP (Prosody's mod_pep does the same) notes those whose presence reached
an account as :class:`RemoteResource` objects and hands their ``<c/>`` to
:meth:`CapsComponent.claim` (and :meth:`CapsComponent.forget` when they go).
They are learned as above, sharing the one cache with the sessions here: a
``ver`` a local client verified is known for a remote one at once, and the
other way round. An unknown ``ver`` is asked of the remote full JID from the
*account's* bare JID (as Prosody's mod_pep asks), over s2s; the tracker
takes the answer only from that full JID. Each remote resource belongs to one
account: two accounts that hear the same remote resource hold one each (per
user state, and one account forgetting it leaves the other's), and share the
query for an unknown ``ver`` like two sessions do. Unverifiable caps of a
remote resource are believed for its own (remote) account only.

Whenever a session's (or remote resource's) features become known, or
change, the server-wide event ``caps-known`` is fired with the session or
the :class:`RemoteResource` (``@handles("caps-known")``,
every handler runs). For a ``ver`` known already this happens while the
presence that carried it is being handled, before the presence component
broadcasts it (as Prosody's mod_pep, whose hook runs before mod_presence's).

Bounds: ``cache_size`` verified hashes, and a tenth of that again for
answers believed for one account only (kept apart, so that no user can
evict the hashes everyone shares); an answer listing more than ``max_features``
features is not believed (nor cached); per session, its current caps and at
most one query; the tracker's own cap on queries waiting server-wide.
Remote resources are bounded by whoever claims caps for them (PEP: per
account, see :mod:`xmppd.components.pep`).
"""

from __future__ import annotations

import base64
import collections
import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Hashable, Iterable

from twisted.words.xish import domish

from xmppd import ns
from xmppd.component import Component, Option, handles
from xmppd.config import integer
from xmppd.router.events import StanzaEvent

if TYPE_CHECKING:
    from xmppd.router.router import Router

#: The event fired (``router.notify``) when a session's features become known.
CAPS_KNOWN = "caps-known"

#: Hash functions a ``ver`` can be verified with: the IANA names XEP-0115
#: uses and XEP-0300's, mapped to hashlib's.
HASHES = {
    "sha-1": "sha1", "sha-224": "sha224", "sha-256": "sha256", "sha-384": "sha384",
    "sha-512": "sha512", "sha3-256": "sha3_256", "sha3-512": "sha3_512",
    "blake2b-256": None, "blake2b-512": "blake2b",
}

#: Before the presence component (0) and PEP (10): the caps of a presence
#: are read before anyone acts on it.
PRIORITY = 20

Form = tuple[str, list[tuple[str, list[str]]]]


class IllFormed(ValueError):
    """A disco#info answer XEP-0115 §5.4 calls ill-formed."""


def verification_string(identities: Iterable[tuple[str, str, str, str]],
                        features: Iterable[str], forms: Iterable[Form]) -> str:
    """XEP-0115 §5.1's string S: identities (category, type, lang, name),
    features, and XEP-0128 forms (FORM_TYPE, [(var, [values])]), each sorted
    by octets (Python sorts str by code point, which is the same order as
    UTF-8 octets)."""
    parts = [f"{c}/{t}/{lang}/{name}<" for c, t, lang, name in sorted(identities)]
    parts += [f"{feature}<" for feature in sorted(features)]
    for form_type, fields in sorted(forms, key=lambda form: form[0]):
        parts.append(f"{form_type}<")
        for var, values in sorted(fields, key=lambda f: f[0]):
            parts.append(f"{var}<")
            parts += [f"{value}<" for value in sorted(values)]
    return "".join(parts)


def digest(algorithm: str, text: str) -> str:
    """The base64 hash of ``text`` with an XEP-0115 hash function (a key of
    :data:`HASHES`)."""
    data = text.encode("utf-8")
    if algorithm == "blake2b-256":
        raw = hashlib.blake2b(data, digest_size=32).digest()
    else:
        raw = hashlib.new(HASHES[algorithm], data).digest()
    return base64.b64encode(raw).decode("ascii")


def parse_info(query: domish.Element) -> tuple[list, list[str], list[Form]]:
    """Identities, features and forms of a disco#info ``<query/>``, checked as
    XEP-0115 §5.4 says: an identity, a feature or a FORM_TYPE twice makes the
    answer ill-formed (:class:`IllFormed`); a form without a hidden FORM_TYPE
    is left out."""
    identities, features, forms = [], [], []
    for child in query.elements():
        if child.name == "identity" and child.uri == ns.DISCO_INFO:
            identities.append((child.getAttribute("category") or "",
                               child.getAttribute("type") or "",
                               child.getAttribute((ns.XML, "lang")) or "",
                               child.getAttribute("name") or ""))
        elif child.name == "feature" and child.uri == ns.DISCO_INFO:
            features.append(child.getAttribute("var") or "")
        elif child.name == "x" and child.uri == ns.DATA_FORMS:
            form = _form(child)
            if form is not None:
                forms.append(form)
    if len(set(identities)) != len(identities):
        raise IllFormed("an identity is listed twice")
    if len(set(features)) != len(features):
        raise IllFormed("a feature is listed twice")
    if len({form_type for form_type, _ in forms}) != len(forms):
        raise IllFormed("two forms have the same FORM_TYPE")
    return identities, features, forms


def _form(x: domish.Element) -> Form | None:
    form_type = None
    fields = []
    for field_ in x.elements(ns.DATA_FORMS, "field"):
        var = field_.getAttribute("var") or ""
        values = [str(v) for v in field_.elements(ns.DATA_FORMS, "value")]
        if var == "FORM_TYPE":
            if field_.getAttribute("type") != "hidden" or not values:
                return None
            if len(set(values)) > 1:
                raise IllFormed("a FORM_TYPE has two values")
            form_type = values[0]
        else:
            fields.append((var, values))
    if form_type is None:
        return None
    return form_type, fields


class RemoteResource:
    """A resource of another server whose available presence reached a local
    account: what caps and PEP need of it, and nothing of a session (it has
    no stream, no presence state, no account here).

    ``jid`` is its full JID (parsed), ``full`` and ``bare`` its texts;
    ``account`` is the local account it reached, whose state holds it and
    whose bare JID asks it things (its caps); its features are what
    :meth:`CapsComponent.features_of` says of it, as for a session;
    :meth:`send` routes a stanza to it (over s2s)."""

    __slots__ = ("jid", "full", "bare", "account", "_router")

    def __init__(self, jid: Any, account: str, router: Router):
        self.jid = jid
        self.full: str = jid.full()
        self.bare: str = jid.userhost()
        self.account = account
        self._router = router

    def send(self, stanza: domish.Element) -> None:
        """Route ``stanza`` to this resource (its 'to' is set to it)."""
        stanza["to"] = self.full
        self._router.route(stanza)

    def __repr__(self) -> str:
        return f"<RemoteResource {self.full} of {self.account}>"


def _who(holder: Any) -> Hashable:
    """The key of a claim: a session's full JID text; a remote resource's
    (account, full JID), as two accounts each hold their own."""
    if isinstance(holder, RemoteResource):
        return (holder.account, holder.full)
    return holder.jid.full()


@dataclass
class _Caps:
    """What a session (or a remote resource) claimed and what is known of it."""

    session: Any
    key: tuple
    node: str  # what to ask: '<node>#<ver>'
    algorithm: str | None  # None: the answer cannot be verified
    ver: str
    to: str  # the full JID asked
    asker: str  # the bare JID that asks: the session's account, or the one a remote resource reached
    features: frozenset | None = None


@dataclass
class _Query:
    """A disco#info query out for one cache key."""

    asked: Hashable  # the claim asked (see _who)
    waiting: list[Hashable] = field(default_factory=list)  # claims waiting (asked first)
    tried: set[Hashable] = field(default_factory=set)


class CapsComponent(Component):
    """The XEP-0115 capabilities of every session, learned once per hash."""

    name = "caps"
    options = [
        Option("cache_size", integer(1), "1000",
               "caps hashes whose features are kept in memory (a few kilobytes each); "
               "the least recently used beyond that are asked again when next seen"),
        Option("timeout", integer(1), "30",
               "seconds a client has to answer the disco#info query verifying its caps; "
               "then the next session claiming the same hash is asked"),
        Option("max_features", integer(1), "1000",
               "most features a caps answer may list; a bigger one is not believed"),
    ]

    def __init__(self, server, config: dict[str, Any]):
        super().__init__(server, config)
        #: cache key → features, least recently used first: verified hashes
        self._cache: collections.OrderedDict[tuple, frozenset] = collections.OrderedDict()
        #: the same for answers believed for one account only (unverifiable
        #: caps), apart, so that one user cycling such caps evicts only them,
        #: never the verified hashes everyone shares
        self._unverified: collections.OrderedDict[tuple, frozenset] = collections.OrderedDict()
        #: claim (full JID, or (account, full JID) for a remote resource: see
        #: _who) → the caps it claims now
        self._sessions: dict[Hashable, _Caps] = {}
        #: cache key → the query out for it
        self._queries: dict[tuple, _Query] = {}
        #: claim → the key of the query out to it
        self._asking: dict[Hashable, tuple] = {}

    # -- the API -------------------------------------------------------------------

    def features_of(self, session: Any) -> frozenset | None:
        """The disco#info features of ``session``'s client (or of a
        :class:`RemoteResource`), or None while they are unknown (no caps in
        its presence, or not verified yet)."""
        caps = self._of(session)
        return caps.features if caps is not None else None

    def ver(self, session: Any) -> str | None:
        """The ``ver`` ``session`` claims in its current caps, if any."""
        caps = self._of(session)
        return caps.ver if caps is not None else None

    def claim(self, resource: RemoteResource, c: domish.Element) -> None:
        """``resource`` claims the caps ``c`` (its available presence's
        ``<c/>``): learn its features (``caps-known`` fires with it when
        they are known, at once for a known ``ver``)."""
        self._claimed(resource, c)

    def forget(self, resource: RemoteResource) -> None:
        """``resource`` is gone (unavailable, or no longer tracked)."""
        self._forget(resource)

    def _of(self, session: Any) -> _Caps | None:
        if getattr(session, "jid", None) is None:
            return None
        caps = self._sessions.get(_who(session))
        return caps if caps is not None and caps.session is session else None

    # -- presence ------------------------------------------------------------------

    @handles("presence/self", priority=PRIORITY)
    def own_presence(self, event: StanzaEvent) -> bool:
        """A session's own presence (no 'to'): note its caps; never consumes it."""
        session = event.origin
        if session is None or getattr(session, "jid", None) is None \
                or event.stanza.getAttribute("to") is not None:
            return False
        if event.type == "unavailable":
            self._forget(session)
        elif event.type is None:
            c = next(event.stanza.elements(ns.CAPS, "c"), None)
            if c is not None:
                self._claimed(session, c)
        return False

    @handles("resource-unbind")
    def unbound(self, session: Any) -> bool:
        self._forget(session)
        return False

    def _forget(self, session: Any) -> None:
        if self._of(session) is not None:
            del self._sessions[_who(session)]

    def _claimed(self, session: Any, c: domish.Element) -> None:
        node, ver = c.getAttribute("node"), c.getAttribute("ver")
        algorithm = c.getAttribute("hash")
        if not node or not ver:
            return  # not caps we can ask about: the old ones stay
        if algorithm is not None and algorithm not in HASHES:
            algorithm = None  # §5.4: unsupported, believed for this user only
        if algorithm is not None:
            key: tuple = (algorithm, ver)
        else:
            key = ("", session.bare, node, ver, c.getAttribute("ext") or "")
        who = _who(session)
        current = self._sessions.get(who)
        if current is not None and current.session is session and current.key == key:
            return  # the same caps again
        # Asked from the account the resource belongs to, or reached.
        asker = session.account if isinstance(session, RemoteResource) else session.bare
        caps = self._sessions[who] = _Caps(session, key, f"{node}#{ver}", algorithm, ver,
                                           session.jid.full(), asker)
        known = self._known(key)
        if known is not None:
            self._learned(caps, known)
        else:
            self._resolve(who)

    # -- learning the features -----------------------------------------------------

    def _resolve(self, who: Hashable) -> None:
        """Find the features of claim ``who``'s current caps: from the cache,
        from a query out already, or by asking it."""
        caps = self._sessions.get(who)
        if caps is None or caps.features is not None:
            return
        known = self._known(caps.key)
        if known is not None:
            self._learned(caps, known)
            return
        query = self._queries.get(caps.key)
        if query is not None:
            if who not in query.waiting and who not in query.tried:
                query.waiting.append(who)
            return
        if who in self._asking:
            return  # one query at a time: looked at again when it ends
        self._ask(caps.key, who, _Query(who, [who]))

    def _ask(self, key: tuple, who: Hashable, query: _Query) -> None:
        caps = self._sessions[who]
        query.asked = who
        query.tried.add(who)
        self._queries[key] = query
        self._asking[who] = key
        iq = domish.Element((ns.CLIENT, "iq"))
        # From the account's bare JID, as Prosody asks its own clients and
        # its users' remote contacts.
        iq["type"], iq["to"], iq["from"] = "get", caps.to, caps.asker
        iq.addElement((ns.DISCO_INFO, "query"))["node"] = caps.node
        d = self.router.iq.request(iq, timeout=self.config["timeout"])
        d.addCallbacks(self._answered, self._unanswered,
                       callbackArgs=(key, who), errbackArgs=(key, who))
        d.addErrback(lambda f: self.log.failure("caps of {jid}", f, jid=caps.to))

    def _answered(self, answer: domish.Element, key: tuple, who: Hashable) -> None:
        features = self._check(answer, key)
        if features is None:
            self._failed(key, who)
            return
        query = self._queries.pop(key, None)
        self._asking.pop(who, None)
        self._remember(key, features)
        for waiting in (query.waiting if query is not None else [who]):
            caps = self._sessions.get(waiting)
            if caps is not None and caps.key == key and caps.features is None:
                self._learned(caps, features)
        self._resolve(who)  # it may have claimed other caps meanwhile

    def _pool(self, key: tuple) -> tuple[collections.OrderedDict, int]:
        """The cache ``key`` belongs in, and its bound: unverifiable caps
        (key ``("", bare, …)``) get a tenth of ``cache_size`` of their own."""
        size = self.config["cache_size"]
        if key[0] == "":
            return self._unverified, max(1, size // 10)
        return self._cache, size

    def _known(self, key: tuple) -> frozenset | None:
        cache, _ = self._pool(key)
        features = cache.get(key)
        if features is not None:
            cache.move_to_end(key)
        return features

    def _remember(self, key: tuple, features: frozenset) -> None:
        cache, bound = self._pool(key)
        if len(cache) >= bound and key not in cache:
            cache.popitem(last=False)
        cache[key] = features
        cache.move_to_end(key)

    def _unanswered(self, failure: Any, key: tuple, who: Hashable) -> None:
        self.log.debug("no caps answer for {who}: {why}", who=who,
                       why=failure.getErrorMessage())
        self._failed(key, who)

    def _failed(self, key: tuple, who: Hashable) -> None:
        """The query for claim ``who`` told nothing (wrong, an error, late):
        ask the next session (or remote resource) that claims the same caps,
        if any."""
        self._asking.pop(who, None)
        query = self._queries.pop(key, None)
        if query is not None:
            for waiting in query.waiting:
                if waiting in query.tried or waiting in self._asking:
                    continue  # a busy one resolves again when its own query ends
                caps = self._sessions.get(waiting)
                if caps is None or caps.key != key or caps.features is not None:
                    continue
                self._ask(key, waiting, query)
                break
        caps = self._sessions.get(who)
        if caps is not None and caps.key != key:
            self._resolve(who)  # it claimed other caps meanwhile

    def _check(self, answer: domish.Element, key: tuple) -> frozenset | None:
        """The features of a disco#info answer, if it is one and (for a
        verifiable key) hashes to the ``ver`` claimed."""
        if answer.getAttribute("type") != "result":
            return None
        query = next(answer.elements(ns.DISCO_INFO, "query"), None)
        if query is None:
            return None
        try:
            identities, features, forms = parse_info(query)
        except IllFormed as e:
            self.log.info("caps answer from {jid} is ill-formed: {why}",
                          jid=answer.getAttribute("from"), why=e)
            return None
        if len(features) > self.config["max_features"]:
            return None
        algorithm = key[0]
        if algorithm:
            if digest(algorithm, verification_string(identities, features, forms)) != key[1]:
                self.log.info("caps answer from {jid} does not hash to {ver}",
                              jid=answer.getAttribute("from"), ver=key[1])
                return None
        return frozenset(features)

    def _learned(self, caps: _Caps, features: frozenset) -> None:
        caps.features = features
        self.router.notify(CAPS_KNOWN, caps.session)
