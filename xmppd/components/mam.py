"""XEP-0313 message archive management for users, with XEP-0359 stanza ids,
as Prosody 0.12's mod_mam does it.

What is archived (Prosody's ``should_store``): chat and normal messages with
a body, a subject, an XEP-0334 ``<store/>`` hint, an XEP-0380 encrypted
payload, an XEP-0184 receipt, an XEP-0333 marker, an invitation (XEP-0249,
or a mediated XEP-0045 one) or an XEP-0353 call; an error only when it is
addressed to a full JID (the bounce of something the user sent); never a
headline, a groupchat message (the room keeps those), nor a message with
``<no-store/>`` or ``<no-permanent-store/>``. What is stored is the message
without the children in ``dont_archive_namespaces`` (chat states; a message
left with no child is not archived), in the ``mam`` archive store under the
user's bare JID, ``with`` the partner's bare JID, at whole seconds (the
stamps say seconds, and a client that pages by a result's stamp finds it).

Both ends are archived: a message a local client sends goes into the
sender's archive (``pre-message``, ``with`` the recipient), and one that
reaches a local user into the recipient's (``message/bare``,
``message/full``, ``with`` the sender) — once, whichever and however many
of the user's resources get it, by routing, carbons or offline storage. A
message to one's own account is archived once, as received (Prosody
archives it twice, once per direction). Whether to archive is the user's
preferences (``<prefs/>``, kept in the ``mam_prefs`` store): a rule per
bare JID (always, never), else the default (``always``, ``never`` or
``roster``: archive contacts on the roster), whose own default is
``default_archive_policy``. Nothing is archived for an account that does
not exist.

Stanza ids: a message archived for its recipient gets ``<stanza-id
xmlns='urn:xmpp:sid:0' by='user@domain' id='…'/>``, the archive item's id,
so it can only be delivered once that write is durable: the delivery waits
for it (and the sender's next stanza waits, RFC 6120 §10.1), then carries
on with the handlers after this one (carbons, delivery, offline storage).
A message archived for its sender carries the sender's stanza-id into the
``<sent/>`` carbon copies of the sender's other clients (Prosody's order:
archive, carbons, then the id is taken out before the message leaves).
Any ``<stanza-id/>`` that claims to be by the archive's owner is removed
from a message before anything else looks at it: from incoming messages
(by the recipient), and from what a client sends (by itself). The
``<origin-id/>`` a client puts in is kept. A message the server routes
again (a session closed before writing it) keeps the stanza-id it was
archived with and is not archived twice: the stanza-id was marked on the
element object (never on the wire) when the closing session handed the
message back, and must name the item archived from the same sender with the
same message id. A stanza-id by the owner in any other message — a forged
one, even naming an id the archive holds — is removed, and the message
archived and stamped as any other.

Queries (an iq set to one's own account): the form (an iq get) offers
``with``, ``start``, ``end``, ``before-id``, ``after-id`` and ``ids``
(``urn:xmpp:mam:2#extended``). ``with`` matches the partner's bare JID.
Pages hold at most ``max_archive_query_results`` (Prosody's 50; 20
without ``<max/>``, a larger one is cut down); ``<before/>`` (empty: the
last page) pages backwards; ``<flip-page/>`` sends a page newest first.
``<fin complete='true'>`` when the page reached the end of the result set
in its direction; ``<first/>`` is always the oldest item of the page,
``<last/>`` the newest, ``<count/>`` the size of the whole result set (the
``with``/``start``/``end``/``ids`` matches, whatever page): as Prosody's SQL
storage answers. The metadata query (``<metadata/>``) gives the first and
last item of the archive.

Bad input, where the XEP speaks: an unknown form field is
``feature-not-implemented``; a ``before``/``after`` id, ``before-id``,
``after-id`` or any of ``ids`` that names no item of the archive is
``item-not-found`` (Prosody ignores unknown fields and unknown ``ids``). A
malformed form (another FORM_TYPE, a bad JID, a bad timestamp) is
``bad-request`` with Prosody's text; so is a ``<max/>`` that is not a
non-negative integer (Prosody then takes 20). A range whose start is after
its end is no error: it matches nothing (XEP-0313 §4.1.1). Preferences
with a ``default`` other than always, never or roster, or an invalid JID,
are ``bad-request`` and change nothing (Prosody stores them as they come).

Retention: items older than ``archive_expires_after`` (Prosody's syntax and
default, one week) go once a day, on the component's clock. One user's
archive holds about ``max_archive_items`` items: beyond it the expired
ones go, then the oldest down to 99% (Prosody's quota handling), while
messages keep being archived. An account's archive and preferences go
with the account (the stores are purged with it).

Per-user state (does the account exist, its preferences, how many items it
has) is kept for at most ``cache_size`` users, behind
:class:`ArchiveAccounts`; the query machinery (:func:`parse_query`,
:func:`run_query`, :func:`result_message`, :func:`fin_element`) knows no
user and serves any archive store.
"""

from __future__ import annotations

import calendar
import collections
import datetime
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.words.xish import domish

from xmppd import config as configlib
from xmppd import jid as jidlib
from xmppd import ns
from xmppd.component import Component, Option, handles
from xmppd.components.offline import delay_stamp
from xmppd.config import integer, words
from xmppd.router.events import StanzaEvent
from xmppd.storage import ArchiveItem, IArchiveStore
from xmppd.xml.stream import StreamProblem, parse_element

__all__ = [
    "ArchiveAccounts", "MAMComponent", "MAMError", "Page", "Prefs", "Query",
    "archivable", "fin_element", "parse_datetime", "parse_query", "query_form",
    "result_message", "run_query",
]

#: A page without ``<max/>`` (Prosody's default_max_items).
DEFAULT_PAGE = 20
#: Seconds between two expiry runs (Prosody's module:daily), and before the first.
EXPIRY_PERIOD = 86400.0
FIRST_EXPIRY = 60.0
#: Archive ids are what the storage hands out: decimal, below 2**63.
_ID = re.compile(r"[0-9]{1,18}\Z")
_UNITS = {"": 1, "d": 86400, "w": 7 * 86400, "m": 31 * 86400, "y": 365.2425 * 86400}
_DURATION = re.compile(r"\s*([0-9]+)\s*([dwmy]?)\s*\Z")
_DATETIME = re.compile(r"([0-9]{4})-?([0-9]{2})-?([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})"
                       r"\.?[0-9]*([Z+\-]?.*)\Z")
_OFFSET = re.compile(r"([+\-])([0-9]{2}):?([0-9]*)")
_POLICIES = ("always", "never", "roster")


# -- options -----------------------------------------------------------------------

def duration(text: str) -> float | None:
    """Prosody's retention syntax: ``never`` (None), or a number of seconds,
    days (``d``), weeks (``w``), months (``m``, 31 days) or years (``y``)."""
    value = text.strip().lower()
    if value == "never":
        return None
    match = _DURATION.match(value)
    if match is None:
        raise configlib._BadValue(f"expected never, or a number with d, w, m or y, got {text!r}")
    return int(match.group(1)) * _UNITS[match.group(2)]


duration.__name__ = "duration"


def policy(text: str) -> str:
    """``always``, ``never`` or ``roster``; Prosody's true and false too."""
    value = text.strip().lower()
    value = {"true": "always", "false": "never"}.get(value, value)
    if value not in _POLICIES:
        raise configlib._BadValue(f"expected always, never or roster, got {text!r}")
    return value


policy.__name__ = "policy"


# -- XEP-0082 times ----------------------------------------------------------------

def parse_datetime(text: str) -> float | None:
    """An XEP-0082 DateTime as Prosody's util.datetime reads it (fractions
    of a second dropped, no zone meaning UTC); None when it is not one."""
    match = _DATETIME.match(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, zone = match.groups()
    offset = 0
    if zone not in ("", "Z"):
        found = _OFFSET.match(zone)
        if found is None:
            return None
        sign, hours, minutes = found.groups()
        offset = int(hours) * 3600 + (int(minutes) if len(minutes) == 2 else 0) * 60
        if sign == "-":
            offset = -offset
    try:
        # datetime checks the calendar (Prosody's os.time would read 30
        # February as 2 March); a leap second is let through as Prosody does
        when = datetime.datetime(int(year), int(month), int(day), int(hour), int(minute),
                                 min(int(second), 59))
    except (ValueError, OverflowError):
        return None
    stamp = calendar.timegm(when.timetuple()) + max(0, int(second) - 59)
    return float(stamp - offset)


# -- preferences -------------------------------------------------------------------

class MAMError(Exception):
    """A request the archive refuses: the stanza error to answer it with."""

    def __init__(self, condition: str, text: str | None = None, type: str = "modify"):
        super().__init__(condition, text)
        self.condition, self.text, self.type = condition, text, type

    def reply(self, event: StanzaEvent) -> domish.Element:
        return event.error(self.condition, self.type, self.text)


@dataclass(frozen=True)
class Prefs:
    """A user's archiving preferences: a rule per bare JID, else the default."""

    default: str
    always: frozenset[str] = frozenset()
    never: frozenset[str] = frozenset()

    def rule(self, who: str) -> str:
        """``always``, ``never`` or ``roster`` for messages with ``who`` (bare)."""
        if who in self.never:
            return "never"
        if who in self.always:
            return "always"
        return self.default

    def to_value(self) -> dict[str, Any]:
        return {"default": self.default, "always": sorted(self.always), "never": sorted(self.never)}

    @classmethod
    def from_value(cls, value: Any, default: str) -> Prefs:
        if not isinstance(value, dict):
            return cls(default)
        return cls(value.get("default") if value.get("default") in _POLICIES else default,
                   frozenset(value.get("always") or ()), frozenset(value.get("never") or ()))

    def element(self) -> domish.Element:
        """``<prefs default='…'><always><jid/>…</always><never>…</never></prefs>``."""
        prefs = domish.Element((ns.MAM, "prefs"))
        prefs["default"] = self.default
        for name, jids in (("always", self.always), ("never", self.never)):
            listed = prefs.addElement(name)
            for jid in sorted(jids):
                listed.addElement("jid", content=jid)
        return prefs

    @classmethod
    def from_element(cls, element: domish.Element, max_jids: int) -> Prefs:
        """Read a ``<prefs/>`` set, JIDs normalised to bare JIDs; a JID in both
        lists is never archived (as Prosody reads ``<never/>`` last).

        :raises MAMError: bad-request for a missing or unknown default or an
            invalid JID, policy-violation past ``max_jids``.
        """
        default = element.getAttribute("default")
        if default not in _POLICIES:
            raise MAMError("bad-request", "default must be always, never or roster")
        lists: dict[str, set[str]] = {"always": set(), "never": set()}
        for child in element.elements():
            if child.uri != ns.MAM or child.name not in lists:
                continue
            for item in child.elements(ns.MAM, "jid"):
                text = str(item).strip()
                parsed = jidlib.parse_or_none(text)
                if parsed is None:
                    raise MAMError("bad-request", f"Invalid JID: {text}")
                lists[child.name].add(parsed.userhost())
        if len(lists["always"]) + len(lists["never"]) > max_jids:
            raise MAMError("policy-violation", f"at most {max_jids} JIDs in the preferences")
        return cls(default, frozenset(lists["always"] - lists["never"]), frozenset(lists["never"]))


# -- what is archived --------------------------------------------------------------

def _has(stanza: domish.Element, uri: str | None, name: str | None = None) -> bool:
    return any((uri is None or child.uri == uri) and (name is None or child.name == name)
               for child in stanza.elements())


def archivable(stanza: domish.Element) -> bool:
    """Is this message worth archiving (Prosody's ``should_store``)? See the
    module docstring."""
    stype = stanza.getAttribute("type") or "normal"
    if stype in ("headline", "groupchat"):
        return False
    if stype == "error":
        to = jidlib.parse_or_none(stanza.getAttribute("to"))
        return to is not None and to.resource is not None
    body = subject = payload = False
    for child in stanza.elements():
        uri, name = child.uri, child.name
        if uri == ns.HINTS:
            if name in ("no-store", "no-permanent-store"):
                return False
            if name == "store":
                payload = True
        elif uri in (ns.CLIENT, ns.SERVER):
            body = body or name == "body"
            subject = subject or name == "subject"
        elif uri in (ns.RECEIPTS, ns.CHAT_MARKERS, ns.JINGLE_MESSAGE_0, ns.JINGLE_MESSAGE_1) \
                or (uri == ns.EME and name == "encryption") \
                or (uri == ns.CONFERENCE and name == "x") \
                or (uri == ns.MUC_USER and name == "x" and _has(child, None, "invite")):
            payload = True
    return body or subject or payload


def _client_copy(element: domish.Element, skip: frozenset[str] = frozenset()) -> domish.Element:
    """A deep copy in ``jabber:client`` (what a client reads, whichever stream
    it came over), without direct children in the namespaces ``skip``."""
    def client(uri: str | None) -> str | None:
        return ns.CLIENT if uri == ns.SERVER else uri

    copy = domish.Element((client(element.uri), element.name), client(element.defaultUri),
                          dict(element.attributes), dict(element.localPrefixes))
    for child in element.children:
        if isinstance(child, domish.Element):
            if child.uri not in skip:
                copy.addChild(_client_copy(child))
        else:
            copy.addChild(child)
    return copy


def stanza_ids(stanza: domish.Element, by: str) -> list[domish.Element]:
    """The ``<stanza-id/>`` children that claim to be by ``by``."""
    return [child for child in stanza.elements(ns.SID, "stanza-id")
            if child.getAttribute("by") == by]


def remove_children(stanza: domish.Element, doomed: Iterable[domish.Element]) -> None:
    doomed_ids = {id(child) for child in doomed}
    if doomed_ids:
        stanza.children = [c for c in stanza.children if id(c) not in doomed_ids]


#: The mark of a ``<stanza-id/>`` found in a message a closing session held
#: (see :meth:`MAMComponent.held`): an attribute of the element object, which
#: no sender can set and which is never serialised.
_HELD = "mam_held"


def _held(child: domish.Element) -> bool:
    """Whether ``child`` carries the mark. Read from the object's own
    attributes: ``getattr`` on a domish element finds a child element of
    that name, which a sender can write."""
    return vars(child).get(_HELD) is True


def _is_archived_as(item: ArchiveItem | None, stanza: domish.Element, sender: str) -> bool:
    """Whether ``item`` is ``stanza``, archived before: with its sender, with
    its message id."""
    if item is None or item.with_ != sender:
        return False
    try:
        stored = parse_element(item.value, max_size=len(item.value) + 1024)
    except (ValueError, StreamProblem):
        return False
    return stored.getAttribute("id") == stanza.getAttribute("id")


def stamp(stanza: domish.Element, by: str, item_id: str) -> None:
    """Add XEP-0359's ``<stanza-id/>`` for the archive ``by``."""
    sid = stanza.addElement((ns.SID, "stanza-id"))
    sid["by"], sid["id"] = by, item_id


# -- queries -----------------------------------------------------------------------

#: The fields of the query form (XEP-0313 §4.1; the starred ones are #extended).
QUERY_FIELDS = ("FORM_TYPE", "with", "start", "end", "before-id", "after-id", "ids")


@dataclass
class Query:
    """One archive query, read from its ``<query/>`` (:func:`parse_query`)."""

    queryid: str | None = None
    with_: str | None = None
    start: float | None = None
    end: float | None = None
    before: str | None = None  #: items before this id (exclusive)
    after: str | None = None  #: items after this id (exclusive)
    ids: list[str] | None = None
    max: int = DEFAULT_PAGE
    reverse: bool = False  #: RSM <before/>: the page at the end of the range
    flip: bool = False  #: <flip-page/>: send the page newest first

    @property
    def filtered(self) -> bool:
        """Does the result set differ from the whole archive?"""
        return not (self.with_ is None and self.start is None and self.end is None
                    and self.ids is None)


def _text(element: domish.Element) -> str:
    return "".join(str(c) for c in element.children if isinstance(c, str))


def _first_value(field_: domish.Element) -> str | None:
    for value in field_.elements(ns.DATA_FORMS, "value"):
        return _text(value)
    return None


def parse_query(payload: domish.Element, max_results: int) -> Query:
    """Read an XEP-0313 ``<query/>``: its form, its XEP-0059 ``<set/>``, its
    ``<flip-page/>``.

    :raises MAMError: for a malformed form or set (see the module docstring).
    """
    query = Query(queryid=payload.getAttribute("queryid"))
    form_before = form_after = None
    form = rsm = None
    for child in payload.elements():
        if (child.uri, child.name) == (ns.DATA_FORMS, "x") and form is None:
            form = child
            form_before, form_after = _read_form(child, query)
        elif (child.uri, child.name) == (ns.RSM, "set") and rsm is None:
            rsm = child
        elif (child.uri, child.name) == (ns.MAM, "flip-page"):
            query.flip = True
    query.ids = query.ids or None
    rsm_before: str | bool | None = None
    rsm_after: str | None = None
    max_text: str | None = None
    if rsm is not None:
        for child in rsm.elements():
            if child.uri != ns.RSM:
                continue
            if child.name == "max" and max_text is None:
                max_text = _text(child).strip()
            elif child.name == "before" and rsm_before is None:
                rsm_before = _text(child) or True
            elif child.name == "after" and rsm_after is None:
                rsm_after = _text(child)
    if max_text is not None:
        if not (max_text.isascii() and max_text.isdigit()):
            raise MAMError("bad-request", "max must be a non-negative integer")
        query.max = int(max_text)
    query.max = min(query.max, max_results)
    # Prosody's choice: an RSM <before/> (empty or not) pages backwards and
    # wins over the form's before-id; the form's ids only apply without it.
    query.reverse = rsm_before is not None
    query.before = (rsm_before if isinstance(rsm_before, str) else None) \
        if rsm_before is not None else form_before
    query.after = rsm_after if rsm_after is not None else form_after
    return query


def _read_form(form: domish.Element, query: Query) -> tuple[str | None, str | None]:
    fields: dict[str, domish.Element] = {}
    for field_ in form.elements(ns.DATA_FORMS, "field"):
        var = field_.getAttribute("var")
        if var is not None and var not in fields:
            fields[var] = field_
    form_type = _first_value(fields["FORM_TYPE"]) if "FORM_TYPE" in fields else None
    if form_type != ns.MAM:
        raise MAMError("bad-request", f"Unexpected FORM_TYPE, expected '{ns.MAM}'")
    unknown = sorted(set(fields) - set(QUERY_FIELDS))
    if unknown:
        # XEP-0313 §4.1.5 (Prosody ignores them)
        raise MAMError("feature-not-implemented", f"Unknown field: {unknown[0]}", "cancel")
    if "with" in fields:
        text = _first_value(fields["with"])
        if text is not None:
            parsed = jidlib.parse_or_none(text)
            if parsed is None:
                raise MAMError("bad-request", f"Invalid JID: {text}")
            query.with_ = parsed.userhost()
    for name in ("start", "end"):
        if name in fields:
            text = _first_value(fields[name])
            if text is not None:
                when = parse_datetime(text)
                if when is None:
                    raise MAMError("bad-request", "invalid timestamp")
                setattr(query, name, when)
    if "ids" in fields:
        query.ids = [_text(v) for v in fields["ids"].elements(ns.DATA_FORMS, "value")]
    before = _first_value(fields["before-id"]) if "before-id" in fields else None
    after = _first_value(fields["after-id"]) if "after-id" in fields else None
    return before, after


@dataclass
class Page:
    """What a query returns: the page's items (oldest first), whether it
    reached the end of the result set, and the size of that set."""

    items: list[ArchiveItem] = field(default_factory=list)
    complete: bool = True
    count: int | None = None


def _known(item_id: str) -> bool:
    return bool(_ID.match(item_id))


@defer.inlineCallbacks
def run_query(store: IArchiveStore, archive: str, query: Query, total: int | None = None):
    """Deferred firing with the :class:`Page` of ``archive`` (a bare JID)
    that ``query`` asks for. ``total``: the size of the unfiltered archive
    when the caller knows it (saves counting a big archive per page).

    :raises MAMError: item-not-found for an id that names no item.
    """
    for item_id in (query.before, query.after):
        if item_id is not None and (not _known(item_id) or (yield store.get(archive, item_id)) is None):
            raise MAMError("item-not-found", type="cancel")
    if query.ids is not None:
        wanted = set(query.ids)
        if not all(_known(i) for i in wanted) or (yield store.count(archive, ids=wanted)) != len(wanted):
            raise MAMError("item-not-found", type="cancel")
    if total is None or query.filtered:
        total = yield store.count(archive, with_=query.with_, start=query.start, end=query.end,
                                  ids=query.ids)
    if query.max == 0:
        return Page([], True, total)
    items = yield store.query(archive, with_=query.with_, start=query.start, end=query.end,
                              after=query.after, before=query.before, limit=query.max + 1,
                              reverse=query.reverse, ids=query.ids)
    complete = len(items) <= query.max
    if not complete:  # one more than a page: there is more beyond this page
        items = items[1:] if query.reverse else items[:-1]
    return Page(items, complete, total)


def result_message(item: ArchiveItem, stanza: domish.Element, queryid: str | None,
                   to: str | None, from_: str | None) -> domish.Element:
    """``<message><result><forwarded><delay/>the message</forwarded></result></message>``
    (XEP-0313 §5), addressed as Prosody does: to the querying client, from
    where the query was sent (nothing when the query had no ``to``)."""
    message = domish.Element((ns.CLIENT, "message"))
    if to is not None:
        message["to"] = to
    if from_ is not None:
        message["from"] = from_
    result = message.addElement((ns.MAM, "result"))
    if queryid is not None:
        result["queryid"] = queryid
    result["id"] = item.id
    forwarded = result.addElement((ns.FORWARD, "forwarded"))
    forwarded.addElement((ns.DELAY, "delay"))["stamp"] = delay_stamp(item.when)
    forwarded.addChild(stanza)
    return message


def fin_element(page: Page) -> domish.Element:
    """``<fin complete='true'><set><first/><last/><count/></set></fin>``."""
    fin = domish.Element((ns.MAM, "fin"))
    if page.complete:
        fin["complete"] = "true"
    rsm = fin.addElement((ns.RSM, "set"))
    if page.items:
        rsm.addElement("first", content=page.items[0].id)
        rsm.addElement("last", content=page.items[-1].id)
    if page.count is not None:
        rsm.addElement("count", content=str(page.count))
    return fin


def query_form() -> domish.Element:
    """The ``<query/>`` answering a form request, as Prosody words it."""
    query = domish.Element((ns.MAM, "query"))
    form = query.addElement((ns.DATA_FORMS, "x"))
    form["type"] = "form"
    for var, type_, datatype in (("FORM_TYPE", "hidden", None), ("with", "jid-single", None),
                                 ("start", "text-single", "xs:dateTime"),
                                 ("end", "text-single", "xs:dateTime"),
                                 ("before-id", "text-single", None),
                                 ("after-id", "text-single", None), ("ids", "list-multi", None)):
        field_ = form.addElement("field")
        field_["type"], field_["var"] = type_, var
        if datatype:
            field_.addElement((ns.DATA_VALIDATE, "validate"))["datatype"] = datatype
        if var == "FORM_TYPE":
            field_.addElement("value", content=ns.MAM)
    return query


# -- per-user state ----------------------------------------------------------------

class _Account:
    """What the archive keeps in memory of one account."""

    __slots__ = ("prefs", "count", "counting", "trimming")

    def __init__(self, prefs: Prefs):
        self.prefs = prefs
        #: items in the archive, once counted (None: not counted yet)
        self.count: int | None = None
        #: while a count is under way: items appended since it was asked
        self.counting: int | None = None
        self.trimming = False


class ArchiveAccounts:
    """Accounts whose preferences and archive size are in memory, at most
    ``size`` of them (least recently used go first).

    ``get`` reads what is missing (does the account exist, its preferences)
    and fires with None for an account that does not exist (nothing is ever
    archived for it, so made-up names cost no storage). Concurrent reads of
    one account share one read.
    """

    def __init__(self, size: int, exists: Callable[[str], defer.Deferred],
                 read_prefs: Callable[[str], defer.Deferred], default: Callable[[], str]):
        self.size = size
        self._exists = exists
        self._read_prefs = read_prefs
        self._default = default
        self._cache: collections.OrderedDict[str, _Account] = collections.OrderedDict()
        self._loading: dict[str, list[defer.Deferred]] = {}

    def peek(self, user: str) -> _Account | None:
        account = self._cache.get(user)
        if account is not None:
            self._cache.move_to_end(user)
        return account

    def get(self, user: str) -> defer.Deferred:
        account = self.peek(user)
        if account is not None:
            return defer.succeed(account)
        waiter: defer.Deferred = defer.Deferred()
        waiters = self._loading.get(user)
        if waiters is not None:
            waiters.append(waiter)
            return waiter
        self._loading[user] = [waiter]  # before reading: a memory store answers at once

        def read(found: bool):
            if not found:
                return None
            return self._read_prefs(user).addCallback(
                lambda value: _Account(Prefs.from_value(value, self._default())))
        self._exists(user).addCallback(read).addBoth(self._loaded, user)
        return waiter

    def _loaded(self, result: Any, user: str) -> None:
        waiters = self._loading.pop(user, [])
        if isinstance(result, _Account):
            result = self._cache.setdefault(user, result)
            self._trim()
        for waiter in waiters:
            waiter.callback(result) if not isinstance(result, Failure) else waiter.errback(result)

    def set_prefs(self, user: str, prefs: Prefs) -> None:
        account = self._cache.get(user)
        if account is not None:
            account.prefs = prefs

    def forget(self, user: str) -> None:
        self._cache.pop(user, None)

    def uncount(self) -> None:
        """Forget every archive size (items went behind our back: expiry)."""
        for account in self._cache.values():
            account.count = account.counting = None

    def _trim(self) -> None:
        while len(self._cache) > self.size:
            self._cache.popitem(last=False)

    def __len__(self) -> int:
        return len(self._cache)


# -- the component -----------------------------------------------------------------

class MAMComponent(Component):
    """XEP-0313 archives of local users (and XEP-0359 stanza ids)."""

    name = "mam"
    account_features = [ns.MAM, ns.MAM_EXTENDED, ns.SID]
    options = [
        Option("default_archive_policy", policy, "always",
               "what is archived for a user who set no preferences: always, never, or "
               "roster (messages with contacts on the roster); Prosody's option and default"),
        Option("archive_expires_after", duration, "1w",
               "how long archived messages are kept: seconds, or a number with d, w, m (31 "
               "days) or y; never: until the account goes. Expired messages go once a day "
               "(Prosody's option and default)"),
        Option("max_archive_query_results", integer(1), "50",
               "most messages one query page returns (a larger max is cut to it; 20 without "
               "max); Prosody's option and default"),
        Option("max_archive_items", integer(1), "100000",
               "most messages one user's archive keeps; beyond, the expired ones go, then the "
               "oldest down to 99% (Prosody's storage_archive_item_limit)"),
        Option("dont_archive_namespaces", words, ns.CHATSTATES,
               "payload namespaces left out of archived messages (a message left with nothing "
               "is not archived); Prosody's option and default"),
        Option("max_prefs_jids", integer(0), "1000",
               "most JIDs one user's preferences list (always and never together); more is "
               "refused with policy-violation"),
        Option("cache_size", integer(1), "10000",
               "accounts whose preferences and archive size are kept in memory"),
    ]
    stores = {"mam": "archive", "mam_prefs": "keyvalue"}

    def __init__(self, server: Any, config: dict[str, Any]):
        super().__init__(server, config)
        self.accounts = ArchiveAccounts(config["cache_size"], self._account_exists,
                                        lambda user: self.store["mam_prefs"].get(user),
                                        lambda: config["default_archive_policy"])
        self._skip = frozenset(config["dont_archive_namespaces"])
        #: events being carried on after their archiving (see _resume)
        self._resuming: set[int] = set()
        #: stanzas being routed again after their sender's archiving
        self._rerouting: set[int] = set()
        self._expiry: Any = None

    def startService(self) -> None:
        super().startService()
        if self.config["archive_expires_after"] is not None:
            self._expiry = self.clock.callLater(FIRST_EXPIRY, self._expire)

    def stopService(self) -> Any:
        if self._expiry is not None and self._expiry.active():
            self._expiry.cancel()
        self._expiry = None
        return super().stopService()

    def _account_exists(self, user: str) -> defer.Deferred:
        if self.router.resources(user):
            return defer.succeed(True)
        return self.server.accounts.exists(user)

    # -- archiving ---------------------------------------------------------------

    @handles("message/bare", priority=50)
    @handles("message/full", priority=50)
    def incoming(self, event: StanzaEvent) -> Any:
        """Archive a message for its local recipient, stamp it, deliver it.

        Priority 50: before carbons (10) and delivery (-100), which then run
        on the stamped message; ``inbound/*`` (the blocklist) has run already.
        """
        if id(event) in self._resuming:
            return False
        name, to, stanza = event.name, event.to, event.stanza
        user = to.userhost()
        if name == "message/full" and to.resource not in self.router.resources(user) \
                and (event.type or "normal") in ("normal", "chat"):
            return False  # the resource is gone: the router tries message/bare next
        claimed = stanza_ids(stanza, user)
        if claimed and event.origin is None and all(_held(c) for c in claimed):
            # A message routed again after a session closed on it (marked
            # by held) keeps the id it was archived with, if it is that one.
            d = self._ours(user, claimed, event)
            d.addCallback(self._incoming_checked, event, name, user, claimed)
            return self._resume_after(d, event, name)
        remove_children(stanza, claimed)
        return self._incoming_checked(False, event, name, user, claimed, direct=True)

    def _incoming_checked(self, ours: bool, event: StanzaEvent, name: str, user: str,
                          claimed: list[domish.Element], direct: bool = False) -> Any:
        stanza = event.stanza
        if ours:
            return None
        if not direct:
            remove_children(stanza, claimed)
        if event.from_ is None or not archivable(stanza):
            return False if direct else None
        stored = self._stored(stanza)
        if stored is None:
            return False if direct else None
        d = self._archive(user, event.from_.userhost(), stored)
        if d is None:
            return False if direct else None
        d.addCallback(lambda item_id: item_id and stamp(stanza, user, item_id))
        return self._resume_after(d, event, name) if direct else d

    def _ours(self, user: str, claimed: list[domish.Element],
              event: StanzaEvent) -> defer.Deferred:
        """Whether the one stanza-id ``claimed`` names the item this very
        message was archived as: from the same sender (``with``), with the
        same message id."""
        item_id = claimed[-1].getAttribute("id") or ""
        if len(claimed) != 1 or not _known(item_id) or event.from_ is None:
            return defer.succeed(False)
        return self.store["mam"].get(user, item_id).addCallback(
            _is_archived_as, event.stanza, event.from_.userhost())

    @handles("message/undelivered", priority=100)
    def held(self, event: StanzaEvent) -> bool:
        """A message a session closed on before writing it is about to be
        routed again (the messaging component, priority -100). Every
        message a user's session gets has passed :meth:`incoming`, so a
        stanza-id by the user it carries is the archive's own: it is marked
        (:data:`_HELD`, on the element, never in the XML), and only a
        marked one is kept when the message comes round — a stanza-id a
        sender wrote, whatever id it names, is not taken for the
        archive's."""
        to = event.to
        if to is not None:
            for child in stanza_ids(event.stanza, to.userhost()):
                setattr(child, _HELD, True)
        return False

    def _resume_after(self, d: defer.Deferred, event: StanzaEvent, name: str) -> defer.Deferred:
        d.addErrback(lambda failure: self.log.failure(
            "archiving a message for {to} failed; delivered without", failure,
            to=event.to.full()))
        d.addCallback(lambda _: self._resume(event, name))
        return d

    def _resume(self, event: StanzaEvent, name: str) -> None:
        """Carry on with ``event`` after it was archived: the handlers after
        this one, then what the router does with a message nobody took."""
        key = id(event)
        self._resuming.add(key)
        try:
            if self.router.fire(name, event):
                return
            stype = event.type or "normal"
            if name == "message/full":
                session = self.router.resources(event.to.userhost()).get(event.to.resource)
                if session is not None:
                    session.send(event.stanza)
                    return
                if stype in ("normal", "chat") and self.router.fire("message/bare", event):
                    return
            if stype not in ("error", "groupchat", "headline"):
                self.router.bounce(event.stanza, "service-unavailable", event.origin)
        finally:
            self._resuming.discard(key)

    @handles("pre-message", priority=1)
    def outgoing(self, event: StanzaEvent) -> Any:
        """Archive a message a local client sends, in the sender's archive.

        Priority 1: after the blocklist (100), before carbons (-10), which
        copy it with the sender's stanza-id; :meth:`strip_own` takes that
        out before the message leaves.
        """
        stanza = event.stanza
        if id(stanza) in self._rerouting:
            return False
        origin = event.origin
        user = origin.bare
        remove_children(stanza, stanza_ids(stanza, user))
        to = event.to
        if to is None or (to.user is not None and to.userhost() == user):
            return False  # to oneself: archived once, as received
        if not archivable(stanza):
            return False
        stored = self._stored(stanza)
        if stored is None:
            return False
        d = self._archive(user, to.userhost(), stored)
        if d is None:
            return False
        d.addCallback(lambda item_id: item_id and stamp(stanza, user, item_id))
        d.addErrback(lambda failure: self.log.failure(
            "archiving a message of {user} failed; sent without", failure, user=user))
        d.addCallback(lambda _: self._reroute(stanza, origin))
        return d

    def _reroute(self, stanza: domish.Element, origin: Any) -> None:
        key = id(stanza)
        self._rerouting.add(key)
        try:
            self.router.route(stanza, origin)
        finally:
            self._rerouting.discard(key)

    @handles("pre-message", priority=-20)
    def strip_own(self, event: StanzaEvent) -> bool:
        """No message leaves with a stanza-id by its sender (ours, after the
        carbons have it, or one the client made up)."""
        remove_children(event.stanza, stanza_ids(event.stanza, event.origin.bare))
        return False

    @handles("message/offline", priority=-200)
    def archived_instead(self, event: StanzaEvent) -> bool:
        """A message nobody stored offline but the archive holds is not
        bounced: the user will find it (Prosody's message/offline/handle)."""
        return bool(event.to is not None and stanza_ids(event.stanza, event.to.userhost()))

    def _stored(self, stanza: domish.Element) -> str | None:
        """The text archived for ``stanza``, or None if nothing is left of it."""
        copy = _client_copy(stanza, self._skip)
        if not any(True for _ in copy.elements()):
            return None
        return copy.toXml()

    def _archive(self, user: str, with_: str, text: str) -> defer.Deferred | None:
        """Deferred firing with the new item's id (None: the preferences say
        no), or None at once when that is known without waiting."""
        account = self.accounts.peek(user)
        if account is not None:
            rule = account.prefs.rule(with_)
            if rule == "never":
                return None
            if rule == "always":
                return self._append(account, user, with_, text)
        d = self.accounts.get(user)
        d.addCallback(self._decide, user, with_, text)
        return d

    @defer.inlineCallbacks
    def _decide(self, account: _Account | None, user: str, with_: str, text: str):
        if account is None:
            return None  # no such account
        rule = account.prefs.rule(with_)
        if rule == "roster":
            roster_component = self.server.components.get("roster")
            if roster_component is None:
                return None
            roster = yield roster_component.load(user)
            rule = "always" if roster.get(with_) is not None else "never"
        if rule != "always":
            return None
        item_id = yield self._append(account, user, with_, text)
        return item_id

    def _append(self, account: _Account, user: str, with_: str, text: str) -> defer.Deferred:
        store = self.store["mam"]
        if account.count is None and account.counting is None:
            account.counting = 0
            store.count(user).addCallbacks(self._counted, self._count_failed,
                                           callbackArgs=(account, user))
        if account.counting is not None:
            account.counting += 1
        else:
            account.count += 1
            if account.count > self.config["max_archive_items"] and not account.trimming:
                self._trim(account, user)
        d = store.append(user, text, with_=with_, when=float(math.floor(self.clock.seconds())))

        def failed(failure: Failure) -> Failure:
            if account.counting is not None:
                account.counting -= 1
            elif account.count is not None:
                account.count -= 1
            return failure
        return d.addErrback(failed)

    def _counted(self, count: int, account: _Account, user: str) -> None:
        account.count, account.counting = count + (account.counting or 0), None
        if account.count > self.config["max_archive_items"] and not account.trimming:
            self._trim(account, user)

    def _count_failed(self, failure: Failure) -> None:
        self.log.failure("counting an archive failed", failure)

    def _trim(self, account: _Account, user: str) -> None:
        """Over the quota: the expired items go, then the oldest, down to 99%."""
        account.trimming = True
        store, limit = self.store["mam"], self.config["max_archive_items"]

        @defer.inlineCallbacks
        def trim():
            expires = self.config["archive_expires_after"]
            if expires is not None:
                gone = yield store.expire(self.clock.seconds() - expires, user=user)
                if account.count is not None:
                    account.count -= gone
            if account.count is not None and account.count > limit:
                oldest = yield store.query(user, limit=account.count - int(limit * 0.99))
                gone = yield store.delete(user, [item.id for item in oldest])
                if account.count is not None:
                    account.count -= gone

        def done(result: Any) -> None:
            account.trimming = False
            if isinstance(result, Failure):
                self.log.failure("trimming the archive of {user} failed", result, user=user)
        trim().addBoth(done)

    # -- retention ---------------------------------------------------------------

    def _expire(self) -> None:
        self._expiry = self.clock.callLater(EXPIRY_PERIOD, self._expire)
        cutoff = self.clock.seconds() - self.config["archive_expires_after"]

        def expired(count: int) -> None:
            self.accounts.uncount()
            if count:
                self.log.info("deleted {count} expired archived messages", count=count)
        self.store["mam"].expire(cutoff).addCallbacks(expired, lambda failure: self.log.failure(
            "expiring archived messages failed", failure))

    @handles("account-deleted")
    def account_deleted(self, user: str) -> None:
        """The rows went with the account (purge_user); forget what is in memory."""
        self.accounts.forget(user)

    # -- queries -----------------------------------------------------------------

    @handles(f"iq-get/self/{ns.MAM}:query")
    def form(self, event: StanzaEvent) -> domish.Element:
        return event.reply(query_form())

    @handles(f"iq-set/self/{ns.MAM}:query")
    def query(self, event: StanzaEvent) -> Any:
        try:
            query = parse_query(event.payload, self.config["max_archive_query_results"])
        except MAMError as e:
            return e.reply(event)
        user = event.from_.userhost()
        account = self.accounts.peek(user)
        total = account.count if account is not None and account.counting is None else None
        d = run_query(self.store["mam"], user, query, total)
        d.addCallback(self._send_page, event, query)
        d.addErrback(lambda failure: failure.trap(MAMError) and failure.value.reply(event))
        return d

    @defer.inlineCallbacks
    def _send_page(self, page: Page, event: StanzaEvent, query: Query):
        session = event.origin
        to, from_ = event.stanza.getAttribute("from"), event.stanza.getAttribute("to")
        for item in (reversed(page.items) if query.flip else page.items):
            try:
                stanza = parse_element(item.value, max_size=len(item.value) + (1 << 20))
            except Exception:
                self.log.failure("skipping a damaged archived message {id} of {user}",
                                 id=item.id, user=event.from_.userhost())
                continue
            drained = session.drained()
            if not drained.called:
                yield drained  # a big page waits for a slow reader, not in its buffer
            session.send(result_message(item, stanza, query.queryid, to, from_))
        return event.reply(fin_element(page))

    @handles(f"iq-get/self/{ns.MAM}:metadata")
    @defer.inlineCallbacks
    def metadata(self, event: StanzaEvent):
        """``<metadata/>`` with the first and last item of the archive (none
        for an empty one), as Prosody."""
        store, user = self.store["mam"], event.from_.userhost()
        answer = domish.Element((ns.MAM, "metadata"))
        for name, reverse in (("start", False), ("end", True)):
            items = yield store.query(user, limit=1, reverse=reverse)
            if items:
                edge = answer.addElement(name)
                edge["id"], edge["timestamp"] = items[0].id, delay_stamp(items[0].when)
        return event.reply(answer)

    # -- preferences -------------------------------------------------------------

    @handles(f"iq-get/self/{ns.MAM}:prefs")
    def get_prefs(self, event: StanzaEvent) -> defer.Deferred:
        d = self.accounts.get(event.from_.userhost())
        return d.addCallback(lambda account: event.reply(
            (account.prefs if account is not None
             else Prefs(self.config["default_archive_policy"])).element()))

    @handles(f"iq-set/self/{ns.MAM}:prefs")
    def set_prefs(self, event: StanzaEvent) -> Any:
        try:
            prefs = Prefs.from_element(event.payload, self.config["max_prefs_jids"])
        except MAMError as e:
            return e.reply(event)
        user = event.from_.userhost()
        d = self.store["mam_prefs"].set(user, prefs.to_value())

        def stored(_: Any) -> domish.Element:
            self.accounts.set_prefs(user, prefs)
            return event.reply(prefs.element())
        return d.addCallback(stored)
