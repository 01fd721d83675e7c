"""Room archives: XEP-0313 message archive management for multi-user chat,
as Prosody 0.12's mod_muc_mam does it.

What is archived: the groupchat messages the room keeps as history (a
body, a store hint, an encrypted payload, a chat marker — never with
no-store: :func:`~.history.historic`), in the archive store
``muc_archive`` under the room's bare JID, while the room's archiving is on
(``muc#roomconfig_enablearchiving``, by default ``log_by_default``; every
room with ``log_all_rooms``, and then the field is not offered). Each
archived message leaves the room with ``<stanza-id by='room' id='…'/>``,
the archive item's id (so it can only leave once the write is durable:
the room's output waits for it, in order, see :mod:`..gate`); a
``<stanza-id/>`` a client put in claiming to be the room's is removed from
every groupchat message, archived or not. What is stored is the message as
broadcast, without ``to``; in a non-anonymous room with
``<x xmlns='…muc#user'><item affiliation role jid/></x>`` added (the
sender's real bare JID, its affiliation and the *default* role of that
affiliation, as Prosody writes it), shown in results and history only
while the room is non-anonymous.

Queries (an iq set to the room's bare JID): the room's occupants and anyone
else may read, except outcasts and, in a members-only room, those without
an affiliation (``forbidden``). The form (an iq get) offers ``with``,
``start``, ``end``, ``before-id``, ``after-id`` and ``ids``. Prosody ignores
``with`` for rooms (its archive uses the field for the stanza type);
here it filters by the sender's occupant JID (``room@service/nick``), as
XEP-0313 §5.1.2 describes it for MUC archives. Pages are at most
``max_archive_query_results`` (Prosody's 50; 20 without ``<max/>``);
``<before/>`` pages backwards, ``<flip-page/>`` reverses the order in
which a page is sent; ``<fin complete='true'>`` when the page holds the
last (or, backwards, the first) matching message; ``<first/>`` is always
the oldest item of the page and ``<last/>`` the newest (as Prosody); a
``before``/``after`` id that names no matching message is
``item-not-found``. ``<count/>`` is given (``log_include_total``) when the
archive can tell it without reading the range: without ``start``/``end``
(Prosody counts those too).

History on join (Prosody's muc-get-history hook of mod_muc_mam): when the
in-memory history holds fewer messages than a joiner is to get, they come
from the archive instead (the newest ones, within the history limits:
``maxstanzas``, ``maxchars`` — counted as Prosody counts them on the
archive path —, ``seconds``, ``since``), with their XEP-0203 delay and
stanza-id. After a restart an archived room's history is its archive.

Retention: messages older than ``log_expires_after`` (Prosody's
``muc_log_expires_after``, default one week) are removed once a day, on
the service's clock; one room's archive holds at most
``max_archive_items`` messages (beyond: the expired ones go, then the
oldest, down to 99%, as Prosody's quota handling); a room that is
destroyed (or a temporary room that empties) loses its archive.

Status codes: 170 (archiving on) or 171 (off) in the configuration change
notice whenever the submitted form carries the field, as Prosody; Prosody
0.12 sends no 170 in self-presence, nor does this.
"""

from __future__ import annotations

import calendar
import re
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.words.xish import domish

from xmppd import config as configlib
from xmppd import jid as jidlib
from xmppd import ns
from xmppd.components.offline import delay_stamp
from xmppd.config import Option, boolean, integer
from xmppd.services.muc import forms
from xmppd.services.muc.features.history import historic
from xmppd.services.muc.hooks import ConfigField, Feature, MUCError, on
from xmppd.services.muc.store import ARCHIVE
from xmppd.xml.stream import parse_element

__all__ = ["MUCArchive", "OPTIONS", "duration"]

#: a page without <max/> (Prosody's default_max_items)
DEFAULT_PAGE = 20
#: seconds between two expiry runs (Prosody's module:daily), and before the first
EXPIRY_PERIOD = 86400
FIRST_EXPIRY = 60
_UNITS = {"": 1, "d": 86400, "w": 7 * 86400, "m": 31 * 86400, "y": 365.2425 * 86400}
_DURATION = re.compile(r"\s*([0-9]+)\s*([dwmyDWMY]?)")
_DATETIME = re.compile(r"^([0-9]{4})-?([0-9]{2})-?([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})"
                       r"\.?[0-9]*([Z+\-]?.*)$")
_OFFSET = re.compile(r"([+\-])([0-9]{2}):?([0-9]*)")


def duration(text: str) -> float | None:
    """Prosody's retention syntax: ``never`` (None), or a number of seconds,
    days (``d``), weeks (``w``), months (``m``, 31 days) or years (``y``):
    ``1w``, ``30d``, ``3600``."""
    value = text.strip().lower()
    if value == "never":
        return None
    match = _DURATION.match(value)
    if match is None or value[match.end():].strip():
        raise configlib._BadValue(f"expected never, or a number with d, w, m or y, got {text!r}")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


duration.__name__ = "duration"

OPTIONS = [
    Option("archive", boolean, "true",
           "rooms keep a message archive (XEP-0313 queries to the room JID, stanza-ids, "
           "history from the archive, XEP-0425 moderation; Prosody's mod_muc_mam and "
           "mod_muc_moderation loaded); false: none of it"),
    Option("log_by_default", boolean, "true",
           "a new room's muc#roomconfig_enablearchiving (Prosody's muc_log_by_default)"),
    Option("log_all_rooms", boolean, "false",
           "archive every room whatever its configuration (the enablearchiving field is then "
           "not offered; Prosody's muc_log_all_rooms)"),
    Option("log_expires_after", duration, "1w",
           "how long a room's archived messages are kept: seconds, or a number with d, w, m "
           "(31 days) or y; never: until the room is destroyed (Prosody's "
           "muc_log_expires_after); expired messages go once a day"),
    Option("log_include_total", boolean, "true",
           "archive query answers give the number of matching messages (RSM count) where the "
           "archive can tell it (Prosody's muc_log_include_total; never with "
           "log_expires_after = never, as Prosody)"),
    Option("max_archive_query_results", integer(1), "50",
           "most messages one archive query page returns (a larger max is cut to it; "
           "Prosody's max_archive_query_results)"),
    Option("max_archive_items", integer(1), "100000",
           "most messages one room's archive keeps; beyond, the expired ones go, then the "
           "oldest down to 99% (Prosody's storage_archive_item_limit)"),
]

ARCHIVING = ConfigField("archiving", "muc#roomconfig_enablearchiving", "boolean",
                        "Enable archiving?", lambda c: c["log_by_default"], order=0,
                        notice=None)


def parse_datetime(text: str) -> float | None:
    """An XEP-0082 DateTime as Prosody's util.datetime reads it (fractions
    dropped, no zone: UTC); None when it is not one."""
    match = _DATETIME.match(text)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    zone = match.group(7)
    offset = 0
    if zone not in ("", "Z"):
        parts = _OFFSET.match(zone)
        if parts is None:
            return None
        sign, hours, minutes = parts.groups()
        offset = int(hours) * 3600 + (int(minutes) if len(minutes) == 2 else 0) * 60
        if sign == "-":
            offset = -offset
    try:
        return float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)) - offset)
    except (ValueError, OverflowError):
        return None


def _text(element: domish.Element | None) -> str | None:
    return None if element is None else str(element)


def _first(parent: domish.Element, uri: str, name: str) -> domish.Element | None:
    return next(parent.elements(uri, name), None)


def query_form() -> domish.Element:
    """The form of an archive query, as Prosody's mod_muc_mam offers it
    (its storage has ids and full id ranges, so before-id, after-id and ids
    are there)."""
    x = forms.form(ns.MAM)
    forms.add_field(x, "with", "jid-single", None)
    forms.add_field(x, "start", "text-single", None, datatype="xs:dateTime")
    forms.add_field(x, "end", "text-single", None, datatype="xs:dateTime")
    forms.add_field(x, "before-id", "text-single", None)
    forms.add_field(x, "after-id", "text-single", None)
    forms.add_field(x, "ids", "list-multi", None)
    return x


class _Query:
    """A parsed archive query: its filters and its page."""

    __slots__ = ("qid", "with_", "start", "end", "before", "after", "ids", "limit",
                 "reverse", "flip")

    def __init__(self) -> None:
        self.qid: str | None = None
        self.with_: str | None = None
        self.start: float | None = None
        self.end: float | None = None
        self.before: str | None = None
        self.after: str | None = None
        self.ids: list[str] | None = None
        self.limit = DEFAULT_PAGE
        self.reverse = False
        self.flip = False

    def matches(self, item: Any) -> bool:
        """Whether ``item`` passes the filters (not the page bounds)."""
        return ((self.with_ is None or item.with_ == self.with_)
                and (self.start is None or item.when >= self.start)
                and (self.end is None or item.when <= self.end)
                and (self.ids is None or item.id in self.ids))


def _bad(text: str) -> MUCError:
    return MUCError("bad-request", "modify", text)


def parse_query(payload: domish.Element, page_cap: int) -> _Query:
    """Read a ``<query xmlns='urn:xmpp:mam:2'/>`` as Prosody does; a bad
    form is ``bad-request`` with Prosody's text."""
    q = _Query()
    q.qid = payload.getAttribute("queryid")
    x = forms.find_form(payload)
    before_id = after_id = None
    if x is not None:
        fields = {}
        for f in x.elements(ns.DATA_FORMS, "field"):
            var = f.getAttribute("var")
            if var and var not in fields:
                fields[var] = [str(v) for v in f.elements(ns.DATA_FORMS, "value")]
        form_type = (fields.get("FORM_TYPE") or [""])[0]
        if form_type != ns.MAM:
            raise _bad(f"Unexpected FORM_TYPE, expected '{ns.MAM}'")
        with_ = fields.get("with")
        if with_:
            parsed = jidlib.parse_or_none(with_[0])
            if parsed is None:
                raise _bad(f"Invalid JID: {with_[0]}")
            q.with_ = parsed.full()
        for name in ("start", "end"):
            values = fields.get(name)
            if values:
                when = parse_datetime(values[0])
                if when is None:
                    raise _bad("invalid timestamp")
                setattr(q, name, when)
        if fields.get("before-id"):
            before_id = fields["before-id"][0]
        if fields.get("after-id"):
            after_id = fields["after-id"][0]
        if fields.get("ids"):
            q.ids = list(fields["ids"])
    rsm = _first(payload, ns.RSM, "set")
    rsm_before: str | bool | None = None
    rsm_after: str | None = None
    limit: int | None = None
    if rsm is not None and any(True for _ in rsm.elements()):
        for child in rsm.elements():
            if child.name == "max":
                try:
                    limit = int(str(child).strip())
                except ValueError:
                    limit = None
            elif child.name == "before":
                rsm_before = str(child) or True
            elif child.name == "after":
                rsm_after = str(child)
    q.limit = max(0, min(DEFAULT_PAGE if limit is None else limit, page_cap))
    q.reverse = bool(rsm_before)
    before = rsm_before if rsm_before is not None else before_id
    q.before = before if isinstance(before, str) else None
    q.after = rsm_after if rsm_after is not None else after_id
    q.flip = q.reverse != (_first(payload, ns.MAM, "flip-page") is not None)
    return q


def _no_x(element: domish.Element) -> None:
    """Drop the muc#user ``<x/>`` (the sender's real JID) of a stored message."""
    element.children = [c for c in element.children
                        if not (isinstance(c, domish.Element) and c.name == "x"
                                and c.uri == ns.MUC_USER)]


class MUCArchive(Feature):
    name = "mam"

    def __init__(self, service: Any):
        super().__init__(service)
        config = service.config
        self.on = config["archive"]
        self.fields = (ARCHIVING,) if self.on and not config["log_all_rooms"] else ()
        self._expiry: Any = None
        if not self.on:
            self.close()
            return
        if ns.MAM not in service.features:
            service.features = [*service.features, ns.MAM]
        self.expires = config["log_expires_after"]
        self.include_total = config["log_include_total"] and self.expires is not None
        if self.expires is not None:
            self._expiry = service.clock.callLater(FIRST_EXPIRY, self._expire)

    @property
    def archive(self) -> Any:
        return self.service.store[ARCHIVE]

    def enabled(self, room: Any) -> bool:
        """Whether ``room``'s messages go to its archive (Prosody's archiving_enabled)."""
        if not self.on:
            return False
        if self.service.config["log_all_rooms"]:
            return True
        value = room.config.get("archiving")
        return self.service.config["log_by_default"] if value is None else bool(value)

    def disco_features(self, room: Any) -> list[str]:
        if not self.on:
            return []
        if self.enabled(room):
            return [ns.MAM, ns.MAM_EXTENDED, ns.SID]
        return [ns.SID]

    def close(self) -> None:
        if self._expiry is not None and self._expiry.active():
            self._expiry.cancel()
        self._expiry = None
        super().close()

    # -- the room's settings -----------------------------------------------------

    @on("archiving")
    def archiving(self, ev: Any) -> bool | None:
        return True if self.enabled(ev.room) else None

    @on("config-submitted")
    def codes(self, ev: Any) -> None:
        """170/171 whenever the form carries the field (Prosody's
        muc-config-submitted/muc#roomconfig_enablearchiving)."""
        if not self.fields:
            return None
        submitted = getattr(ev, "fields", None)
        present = (ARCHIVING.var in submitted) if submitted is not None else \
            ev.values.get("archiving") != ev.old.get("archiving")
        if present:
            ev.codes.add("170" if ev.values.get("archiving") else "171")
        return None

    # -- archiving -----------------------------------------------------------------

    @on("groupchat", 5)
    def archive_message(self, ev: Any) -> None:
        """After occupant-id (it is archived with the message), before the
        history keeps it (its copy carries the stanza-id)."""
        room, message = ev.room, ev.message
        message.children = [c for c in message.children if not self._forged(c, room.jid)]
        if not self.enabled(room) or not historic(message, room.jid):
            return None
        stored = domish.Element((ns.CLIENT, "message"))
        stored.attributes = {k: v for k, v in message.attributes.items() if k != "to"}
        stored.children = list(message.children)
        occupant = ev.occupant
        if room.config.get("whois") == "anyone" and occupant is not None:
            affiliation = room.affiliation(occupant.bare)
            item = stored.addElement((ns.MUC_USER, "x")).addElement("item")
            item["affiliation"] = affiliation
            item["role"] = room.default_role(affiliation)
            item["jid"] = occupant.bare
        when = float(int(self.service.clock.seconds()))
        written = self.service._write(room, self.archive.append(
            room.jid, stored.toXml(), with_=message.getAttribute("from"), when=when))

        def stamp(result: Any) -> None:
            if not isinstance(result, str):
                return  # not archived (logged by the write): no stanza-id, as Prosody
            sid = message.addElement((ns.SID, "stanza-id"))
            sid["by"], sid["id"] = room.jid, result
            self._counted(room)
        self.service.gates.then(room.jid, stamp, wait=written)
        return None

    @staticmethod
    def _forged(child: Any, room_jid: str) -> bool:
        if not isinstance(child, domish.Element) or child.name != "stanza-id" \
                or child.uri != ns.SID:
            return False
        by = jidlib.parse_or_none(child.getAttribute("by"))
        return by is not None and by.full() == room_jid

    # -- the quota -------------------------------------------------------------------

    def _counted(self, room: Any) -> None:
        """One more item in the room's archive: past ``max_archive_items``,
        trim (the count is learnt from the archive the first time)."""
        count = room.state.get("archive_count")
        if count is None:
            if not room.state.get("archive_counting"):
                room.state["archive_counting"] = True

                def known(total: int) -> None:
                    room.state["archive_count"] = total
                    room.state.pop("archive_counting", None)
                    self._check_quota(room)
                self.archive.count(room.jid).addCallbacks(known, self._log_failure)
            return
        room.state["archive_count"] = count + 1
        self._check_quota(room)

    def _check_quota(self, room: Any) -> None:
        limit = self.service.config["max_archive_items"]
        if room.state.get("archive_count", 0) < limit or room.state.get("archive_trimming"):
            return
        room.state["archive_trimming"] = True
        keep = max(1, int(limit * 0.99))
        jid = room.jid

        @defer.inlineCallbacks
        def trim():
            if self.expires is not None:
                yield self.archive.expire(self.service.clock.seconds() - self.expires, user=jid)
            total = yield self.archive.count(jid)
            if total > keep:
                oldest = yield self.archive.query(jid, limit=total - keep)
                yield self.archive.delete(jid, [item.id for item in oldest])
                total = keep
            return total

        def done(total: Any) -> None:
            room.state.pop("archive_trimming", None)
            room.state["archive_count"] = total if isinstance(total, int) else None
        d = trim()
        d.addErrback(self._log_failure)
        d.addBoth(done)

    def _log_failure(self, failure: Failure) -> None:
        self.service.log.failure("muc: archive maintenance failed", failure)

    # -- retention and destruction --------------------------------------------------

    def _expire(self) -> defer.Deferred:
        """Prosody's daily "Remove expired messages": every room at once."""
        self._expiry = self.service.clock.callLater(EXPIRY_PERIOD, self._expire)
        d = self.archive.expire(self.service.clock.seconds() - self.expires)

        def expired(count: int) -> int:
            if count:
                self.service.log.info("muc: {count} expired archived message(s) removed",
                                      count=count)
                for room in self.service.rooms.values():
                    room.state.pop("archive_count", None)
            return count
        return d.addCallbacks(expired, self._log_failure)

    @on("room-discarded")
    def discarded(self, ev: Any) -> None:
        """A destroyed room (or a temporary one that emptied) loses its
        archive, as Prosody's muc-room-destroyed handler deletes it."""
        room = ev.room
        room.state.pop("archive_count", None)
        self.service._write(room, self.archive.delete(room.jid))
        return None

    # -- history on join ---------------------------------------------------------------

    @on("get-history", 1)
    def history(self, ev: Any) -> defer.Deferred | None:
        """The joiner's history from the archive when the in-memory history
        holds fewer than it is to get (Prosody's muc-get-history hook)."""
        room = ev.room
        if not self.enabled(room):
            return None
        maxstanzas, maxchars = ev.maxstanzas, ev.maxchars
        if maxstanzas == 0 or maxchars == 0:
            return None
        length = ev.length
        if maxstanzas is None or maxstanzas > length:
            maxstanzas = length
        if ev.buffered >= maxstanzas:
            return None
        d = self.archive.query(room.jid, start=ev.since, limit=maxstanzas, reverse=True)
        return d.addCallback(self._history, room, ev.to, maxchars)

    def _history(self, items: list, room: Any, to: str, maxchars: int | None) -> list:
        anonymous = room.config.get("whois") != "anyone"
        out: list[domish.Element] = []
        for item in reversed(items):
            element = self._element(item)
            if element is None:
                continue
            if anonymous:
                _no_x(element)
            delay = element.addElement((ns.DELAY, "delay"))
            delay["from"], delay["stamp"] = room.jid, delay_stamp(item.when)
            sid = element.addElement((ns.SID, "stanza-id"))
            sid["by"], sid["id"] = room.jid, item.id
            if maxchars is not None:
                element["to"] = to
                chars = len(element.toXml().replace(" xmlns='jabber:client'", "", 1))
                del element.attributes["to"]
                if maxchars - chars < 0:
                    break
                maxchars -= chars
            out.append(element)
        out.reverse()
        return out

    @staticmethod
    def _element(item: Any) -> domish.Element | None:
        try:
            element = parse_element(item.value)
        except Exception:  # noqa: BLE001 - a damaged item is skipped
            return None
        element.attributes.pop("to", None)
        return element

    # -- queries ---------------------------------------------------------------------

    @on(f"iq/get/{ns.MAM}:query")
    def form(self, ev: Any) -> domish.Element:
        query = domish.Element((ns.MAM, "query"))
        query.addChild(query_form())
        return ev.event.reply(query)

    @on(f"iq/set/{ns.MAM}:query")
    def query(self, ev: Any) -> defer.Deferred:
        room, event = ev.room, ev.event
        requester = jidlib.parse(ev.real).userhost()
        affiliation = room.affiliation(requester)
        if affiliation == "outcast" or (room.config.get("members_only")
                                        and affiliation == "none"):
            raise MUCError("forbidden", "auth")
        q = parse_query(event.payload, self.service.config["max_archive_query_results"])
        return self._run(room, event, q)

    @defer.inlineCallbacks
    def _run(self, room: Any, event: Any, q: _Query):
        archive = self.archive
        for bound in (q.after, q.before):
            if bound is None:
                continue
            try:
                found = yield archive.get(room.jid, bound)
            except ValueError:
                found = None  # not an id this archive could have given
            if found is None or not q.matches(found):
                raise MUCError("item-not-found", "modify")
        try:
            items = yield archive.query(room.jid, with_=q.with_, start=q.start, end=q.end,
                                        after=q.after, before=q.before, limit=q.limit + 1,
                                        reverse=q.reverse, ids=q.ids)
        except ValueError:
            # an id in 'ids' this archive could not have given: it names nothing
            ids, q.ids = q.ids, [i for i in q.ids or () if self._well_formed(i)]
            if ids and not q.ids:
                items = []
            else:
                items = yield archive.query(room.jid, with_=q.with_, start=q.start, end=q.end,
                                            after=q.after, before=q.before,
                                            limit=q.limit + 1, reverse=q.reverse, ids=q.ids)
        total = None
        if self.include_total or q.limit == 0:
            total = yield self._total(room, q)
        walked = list(reversed(items)) if q.reverse else list(items)
        complete = len(walked) <= q.limit
        page = walked[:q.limit]
        to, frm = event.stanza.getAttribute("from"), event.stanza.getAttribute("to")
        anonymous = room.config.get("whois") != "anyone"
        results = []
        for item in page:
            element = self._element(item)
            if element is None:
                continue
            if anonymous:
                _no_x(element)
            message = domish.Element((ns.CLIENT, "message"))
            message["to"], message["from"] = to, frm
            result = message.addElement((ns.MAM, "result"))
            if q.qid is not None:
                result["queryid"] = q.qid
            result["id"] = item.id
            forwarded = result.addElement((ns.FORWARD, "forwarded"))
            forwarded.addElement((ns.DELAY, "delay"))["stamp"] = delay_stamp(item.when)
            forwarded.addChild(element)
            results.append(message)
        for message in (reversed(results) if q.flip else results):
            self.service.router.route(message)
        fin = domish.Element((ns.MAM, "fin"))
        if complete:
            fin["complete"] = "true"
        rsm = fin.addElement((ns.RSM, "set"))
        if page:
            first, last = page[0].id, page[-1].id
            if q.reverse:
                first, last = last, first
            rsm.addElement("first", content=first)
            rsm.addElement("last", content=last)
        if total is not None:
            rsm.addElement("count", content=str(total))
        return event.reply(fin)

    @staticmethod
    def _well_formed(item_id: str) -> bool:
        return item_id.isascii() and item_id.isdigit()

    @defer.inlineCallbacks
    def _total(self, room: Any, q: _Query):
        """How many messages match the filters (RSM count), where the archive
        tells without reading them: None for a time range."""
        if q.start is not None or q.end is not None:
            return None
        if q.ids is not None:
            ids = [i for i in q.ids if self._well_formed(i)]
            if not ids:
                return 0
            found = yield self.archive.query(room.jid, with_=q.with_, ids=ids)
            return len(found)
        count = yield self.archive.count(room.jid, with_=q.with_)
        return count
