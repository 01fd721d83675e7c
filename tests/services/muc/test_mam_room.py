"""Room archives (xmppd/services/muc/features/mam.py): XEP-0313 queries to
the room JID, the room's stanza-id on every archived groupchat message,
per-room archiving in the configuration, history from the archive,
retention and the room's end — each behaviour as Prosody 0.12's
mod_muc_mam has it (the module's docstring says where and why xmppd
differs). In-memory storage: the archive answers at once."""

from __future__ import annotations

import os
import sys

from twisted.internet import task

sys.path.insert(0, os.path.dirname(__file__))

from muc_harness_helpers import (  # noqa: E402
    admin_set, bodies, codes, configure, create, iq_reply, join, leave, make_harness,
    messages, owner_set, room_jid, say, service, the_error, the_room)

from xmppd import ns  # noqa: E402
from xmppd.services.muc.features.mam import duration, parse_datetime  # noqa: E402

RJ = room_jid("arc")
EPOCH = 1_700_000_000
ENABLE = "muc#roomconfig_enablearchiving"


def setup(count=0, fields=None, step=0, **options):
    options.setdefault("message_burst", 1000)
    clock = task.Clock()
    clock.advance(EPOCH)
    h = make_harness(clock, **options)
    alice = h.login("alice@localhost/r")
    create(alice, "arc", "Alice", fields)
    for i in range(count):
        say(alice, "arc", f"m{i}", msg_id=f"id{i}")
        clock.advance(step)
    alice.take()
    return h, clock, alice


def archive(h):
    return service(h).store["muc_archive"]


def stored(h, room=RJ):
    return [i for i in archive(h)._data.get(room, [])]


def sid(stanza):
    found = [c for c in stanza.elements(ns.SID, "stanza-id")]
    return found


def mam(session, inner="", rsm="", qid="q1", iq_id="mam1", to=RJ, extra=""):
    """An archive query; returns (results, fin iq)."""
    session.feed(f"<iq type='set' id='{iq_id}' to='{to}'><query xmlns='{ns.MAM}' "
                 f"queryid='{qid}'>{inner}{rsm}{extra}</query></iq>")
    got = session.take()
    results = [m for m in got if m.name == "message"
               and next(m.elements(ns.MAM, "result"), None) is not None]
    fins = [s for s in got if s.name == "iq" and s.getAttribute("id") == iq_id]
    assert len(fins) == 1, [s.toXml() for s in got]
    return results, fins[0]


def form(**fields):
    body = "".join(
        f"<field var='{var.replace('_', '-')}'>" + "".join(
            f"<value>{v}</value>" for v in (value if isinstance(value, list) else [value]))
        + "</field>" for var, value in fields.items())
    return (f"<x xmlns='{ns.DATA_FORMS}' type='submit'><field var='FORM_TYPE' type='hidden'>"
            f"<value>{ns.MAM}</value></field>{body}</x>")


def rsm(max=None, before=None, after=None):
    parts = ""
    if max is not None:
        parts += f"<max>{max}</max>"
    if before is not None:
        parts += f"<before>{before}</before>" if before is not True else "<before/>"
    if after is not None:
        parts += f"<after>{after}</after>"
    return f"<set xmlns='{ns.RSM}'>{parts}</set>"


def forwarded_bodies(results):
    out = []
    for m in results:
        result = next(m.elements(ns.MAM, "result"))
        inner = next(next(result.elements(ns.FORWARD, "forwarded")).elements(ns.CLIENT, "message"))
        out.append(str(next(inner.elements(ns.CLIENT, "body"))))
    return out


def result_ids(results):
    return [next(m.elements(ns.MAM, "result"))["id"] for m in results]


def fin_of(iq):
    assert iq["type"] == "result", iq.toXml()
    fin = next(iq.elements(ns.MAM, "fin"))
    rs = next(fin.elements(ns.RSM, "set"))
    out = {c.name: str(c) for c in rs.elements()}
    return fin.getAttribute("complete"), out


# -- stanza-id ---------------------------------------------------------------------------

def test_an_archived_message_reaches_every_occupant_with_the_rooms_stanza_id():
    h, clock, alice = setup()
    bob = h.login("bob@localhost/r")
    join(bob, "arc", "Bob")
    alice.take()
    say(bob, "arc", "hello", msg_id="b1")
    got = {who: [m for m in messages(s.take()) if bodies([m])] for who, s in
           (("alice", alice), ("bob", bob))}
    ids = set()
    for who, (m,) in got.items():
        (stamp,) = sid(m)
        assert stamp["by"] == RJ
        ids.add(stamp["id"])
    (item,) = stored(h)
    assert ids == {str(item[0])}
    assert "stanza-id" not in item[3]       # stored without it, as Prosody


def test_a_forged_stanza_id_claiming_the_room_is_removed_and_others_kept():
    h, clock, alice = setup()
    alice.feed(f"<message type='groupchat' to='{RJ}' id='f1'><body>hi</body>"
               f"<stanza-id xmlns='{ns.SID}' by='{RJ}' id='forged'/>"
               f"<stanza-id xmlns='{ns.SID}' by='alice@example.org' id='theirs'/></message>")
    (m,) = messages(alice.take())
    stamps = {(s["by"], s["id"]) for s in sid(m)}
    assert ("alice@example.org", "theirs") in stamps and (RJ, "forged") not in stamps
    assert len([s for s in stamps if s[0] == RJ]) == 1


def test_a_forged_stanza_id_is_removed_even_where_archiving_is_off():
    h, clock, alice = setup(fields={ENABLE: False})
    alice.feed(f"<message type='groupchat' to='{RJ}' id='f1'><body>hi</body>"
               f"<stanza-id xmlns='{ns.SID}' by='{RJ.upper()}' id='forged'/></message>")
    (m,) = messages(alice.take())
    assert sid(m) == [] and stored(h) == []


def test_a_message_without_anything_worth_keeping_is_not_archived():
    h, clock, alice = setup()
    alice.feed(f"<message type='groupchat' to='{RJ}'>"
               "<active xmlns='http://jabber.org/protocol/chatstates'/></message>")
    alice.feed(f"<message type='groupchat' to='{RJ}'><body>shh</body>"
               f"<no-store xmlns='{ns.HINTS}'/></message>")
    got = messages(alice.take())
    assert len(got) == 2 and all(sid(m) == [] for m in got)
    assert stored(h) == []


def test_a_room_with_archiving_off_keeps_no_archive_and_stamps_nothing():
    h, clock, alice = setup(count=2, fields={ENABLE: False})
    assert stored(h) == []
    results, iq = mam(alice)
    assert results == [] and fin_of(iq) == ("true", {"count": "0"})


def test_archiving_off_by_default_with_log_by_default_false():
    h, clock, alice = setup(count=1, log_by_default=False)
    assert stored(h) == []
    configure(alice, "arc", {ENABLE: True})
    say(alice, "arc", "now")
    assert len(stored(h)) == 1


def test_log_all_rooms_archives_every_room_and_hides_the_field():
    h, clock, alice = setup(count=1, log_all_rooms=True, log_by_default=False)
    assert len(stored(h)) == 1
    reply = owner_set(alice, "arc", "", iq_id="get")  # not a form: bad-request
    alice.feed(f"<iq type='get' id='f' to='{RJ}'><query xmlns='{ns.MUC_OWNER}'/></iq>")
    x = next(iq_reply(alice, "f").firstChildElement().elements(ns.DATA_FORMS, "x"))
    assert ENABLE not in {f.getAttribute("var") for f in x.elements(ns.DATA_FORMS, "field")}
    assert reply["type"] == "error"


# -- configuration -----------------------------------------------------------------------

def test_the_configuration_form_offers_enablearchiving_on_by_default_last():
    h, clock, alice = setup()
    alice.feed(f"<iq type='get' id='f' to='{RJ}'><query xmlns='{ns.MUC_OWNER}'/></iq>")
    x = next(iq_reply(alice, "f").firstChildElement().elements(ns.DATA_FORMS, "x"))
    fields = [f for f in x.elements(ns.DATA_FORMS, "field") if f.getAttribute("var")]
    last = fields[-1]
    assert (last["var"], last["type"], last["label"]) == (ENABLE, "boolean", "Enable archiving?")
    assert [str(v) for v in last.elements(ns.DATA_FORMS, "value")] == ["1"]


def test_a_submitted_form_with_the_field_notifies_170_or_171_and_without_it_nothing():
    h, clock, alice = setup()
    bob = h.login("bob@localhost/r")
    join(bob, "arc", "Bob")
    configure(alice, "arc", {ENABLE: False})
    (notice,) = messages(bob.take())
    assert codes(notice) == {"171"}
    configure(alice, "arc", {ENABLE: True})
    (notice,) = messages(bob.take())
    assert codes(notice) == {"170"}
    # present but unchanged: Prosody says it again
    configure(alice, "arc", {ENABLE: True})
    (notice,) = messages(bob.take())
    assert codes(notice) == {"170"}
    configure(alice, "arc", {"muc#roomconfig_roomname": "Archive"})
    (notice,) = messages(bob.take())
    assert "170" not in codes(notice) and "104" in codes(notice)


def test_disco_info_lists_mam_and_stanza_ids_and_moderation():
    h, clock, alice = setup()

    def features():
        alice.feed(f"<iq type='get' id='d' to='{RJ}'><query xmlns='{ns.DISCO_INFO}'/></iq>")
        query = iq_reply(alice, "d").firstChildElement()
        return {f["var"] for f in query.elements(ns.DISCO_INFO, "feature")}
    assert {ns.MAM, ns.MAM_EXTENDED, ns.SID, ns.MODERATE, ns.MODERATE_0} <= features()
    configure(alice, "arc", {ENABLE: False})
    now = features()
    assert ns.SID in now and ns.MAM not in now and ns.MAM_EXTENDED not in now
    alice.feed(f"<iq type='get' id='s' to='conference.localhost'>"
               f"<query xmlns='{ns.DISCO_INFO}'/></iq>")
    query = iq_reply(alice, "s").firstChildElement()
    assert ns.MAM in {f["var"] for f in query.elements(ns.DISCO_INFO, "feature")}


def test_archive_false_turns_the_whole_feature_off():
    h, clock, alice = setup(count=1, archive=False)
    say(alice, "arc", "x")
    (m,) = messages(alice.take())
    assert sid(m) == [] and stored(h) == []
    alice.feed(f"<iq type='set' id='m' to='{RJ}'><query xmlns='{ns.MAM}'/></iq>")
    assert the_error(alice.take()) == "service-unavailable"
    alice.feed(f"<iq type='get' id='d' to='{RJ}'><query xmlns='{ns.DISCO_INFO}'/></iq>")
    query = iq_reply(alice, "d").firstChildElement()
    assert not {ns.MAM, ns.SID, ns.MODERATE} & {f["var"] for f in
                                                query.elements(ns.DISCO_INFO, "feature")}


# -- queries -----------------------------------------------------------------------------

def test_the_query_form_offers_prosodys_fields():
    h, clock, alice = setup()
    alice.feed(f"<iq type='get' id='f' to='{RJ}'><query xmlns='{ns.MAM}'/></iq>")
    x = next(iq_reply(alice, "f").firstChildElement().elements(ns.DATA_FORMS, "x"))
    fields = {f["var"]: f.getAttribute("type") for f in x.elements(ns.DATA_FORMS, "field")}
    assert fields == {"FORM_TYPE": "hidden", "with": "jid-single", "start": "text-single",
                      "end": "text-single", "before-id": "text-single",
                      "after-id": "text-single", "ids": "list-multi"}


def test_a_query_returns_every_message_forwarded_with_its_delay_then_fin():
    h, clock, alice = setup(count=3, step=10)
    results, iq = mam(alice)
    assert forwarded_bodies(results) == ["m0", "m1", "m2"]
    for m in results:
        assert (m["from"], m["to"]) == (RJ, "alice@localhost/r")
        result = next(m.elements(ns.MAM, "result"))
        assert result["queryid"] == "q1"
        forwarded = next(result.elements(ns.FORWARD, "forwarded"))
        assert next(forwarded.elements(ns.DELAY, "delay"))["stamp"].endswith("Z")
        inner = next(forwarded.elements(ns.CLIENT, "message"))
        assert inner["from"] == f"{RJ}/Alice" and inner.getAttribute("to") is None
    ids = result_ids(results)
    assert fin_of(iq) == ("true", {"first": ids[0], "last": ids[-1], "count": "3"})
    assert iq["from"] == RJ


def test_the_result_ids_are_the_stanza_ids_occupants_saw():
    h, clock, alice = setup()
    say(alice, "arc", "x")
    (m,) = messages(alice.take())
    results, _ = mam(alice)
    assert result_ids(results) == [sid(m)[0]["id"]]


def test_paging_forward_with_after_reaches_every_message_once():
    h, clock, alice = setup(count=7)
    seen, after, rounds = [], None, 0
    while True:
        results, iq = mam(alice, rsm=rsm(max=3, after=after))
        complete, page = fin_of(iq)
        seen += forwarded_bodies(results)
        rounds += 1
        if complete:
            break
        after = page["last"]
    assert seen == [f"m{i}" for i in range(7)] and rounds == 3


def test_paging_backward_with_before_reaches_every_message_once_in_order():
    h, clock, alice = setup(count=7)
    pages, before = [], True
    while True:
        results, iq = mam(alice, rsm=rsm(max=3, before=before))
        complete, page = fin_of(iq)
        pages.insert(0, forwarded_bodies(results))
        if complete:
            break
        before = page["first"]
    assert pages == [["m0"], ["m1", "m2", "m3"], ["m4", "m5", "m6"]]


def test_a_backward_page_keeps_first_the_oldest_and_flip_page_reverses_the_sending():
    h, clock, alice = setup(count=4)
    results, iq = mam(alice, rsm=rsm(max=2, before=True))
    assert forwarded_bodies(results) == ["m2", "m3"]
    complete, page = fin_of(iq)
    ids = result_ids(results)
    assert complete is None and (page["first"], page["last"]) == (ids[0], ids[1])
    flipped, iq = mam(alice, rsm=rsm(max=2, before=True), extra="<flip-page/>")
    assert forwarded_bodies(flipped) == ["m3", "m2"]
    assert fin_of(iq)[1]["first"] == ids[0]
    forward, _ = mam(alice, rsm=rsm(max=2), extra="<flip-page/>")
    assert forwarded_bodies(forward) == ["m1", "m0"]


def test_max_is_capped_at_max_archive_query_results_and_defaults_to_20():
    h, clock, alice = setup(count=60)
    results, iq = mam(alice, rsm=rsm(max=100000))
    assert len(results) == 50 and fin_of(iq)[0] is None
    results, _ = mam(alice)
    assert len(results) == 20
    results, iq = mam(alice, rsm=rsm(max=0))
    assert results == [] and fin_of(iq) == (None, {"count": "60"})


def test_with_filters_by_the_senders_occupant_jid():
    h, clock, alice = setup(count=2)
    bob = h.login("bob@localhost/r")
    join(bob, "arc", "Bob")
    say(bob, "arc", "from bob")
    results, iq = mam(alice, inner=form(**{"with": f"{RJ}/Bob"}))
    assert forwarded_bodies(results) == ["from bob"] and fin_of(iq)[1]["count"] == "1"


def test_start_and_end_bound_the_time_and_a_reversed_range_is_empty():
    h, clock, alice = setup(count=4, step=60)
    start = "2023-11-14T22:14:20Z"    # EPOCH + 60
    end = "2023-11-14T22:15:20Z"      # EPOCH + 120
    results, iq = mam(alice, inner=form(start=start, end=end))
    assert forwarded_bodies(results) == ["m1", "m2"]
    complete, page = fin_of(iq)
    assert complete == "true" and "count" not in page     # a range is not counted
    results, iq = mam(alice, inner=form(start=end, end=start))
    assert results == [] and fin_of(iq)[0] == "true"


def test_before_id_after_id_and_ids_filter_by_archive_id():
    h, clock, alice = setup(count=5)
    ids = result_ids(mam(alice)[0])
    results, _ = mam(alice, inner=form(after_id=ids[1], before_id=ids[4]))
    assert forwarded_bodies(results) == ["m2", "m3"]
    results, iq = mam(alice, inner=form(ids=[ids[4], ids[0], "99999"]))
    assert forwarded_bodies(results) == ["m0", "m4"] and fin_of(iq)[1]["count"] == "2"


def test_an_unknown_or_malformed_after_or_before_id_is_item_not_found():
    h, clock, alice = setup(count=2)
    for bad in (rsm(after="424242"), rsm(after="not-an-id"), rsm(before="424242"),
                form(after_id="nope")):
        alice.feed(f"<iq type='set' id='x' to='{RJ}'><query xmlns='{ns.MAM}'>"
                   f"{bad if bad.startswith('<x') else ''}"
                   f"{bad if bad.startswith('<set') else ''}</query></iq>")
        got = alice.take()
        assert the_error(got) == "item-not-found", bad
        assert [s for s in got if s.name == "message"] == []


def test_an_id_outside_the_filters_is_item_not_found_as_in_prosody():
    h, clock, alice = setup(count=2)
    bob = h.login("bob@localhost/r")
    join(bob, "arc", "Bob")
    say(bob, "arc", "b")
    first = result_ids(mam(alice)[0])[0]
    alice.feed(f"<iq type='set' id='x' to='{RJ}'><query xmlns='{ns.MAM}'>"
               f"{form(**{'with': f'{RJ}/Bob'})}{rsm(after=first)}</query></iq>")
    assert the_error(alice.take()) == "item-not-found"


def test_bad_forms_are_bad_request_with_prosodys_text():
    h, clock, alice = setup(count=1)
    cases = {
        f"<x xmlns='{ns.DATA_FORMS}' type='submit'><field var='FORM_TYPE'><value>urn:other"
        "</value></field></x>": "Unexpected FORM_TYPE",
        f"<x xmlns='{ns.DATA_FORMS}' type='submit'/>": "Unexpected FORM_TYPE",
        form(start="yesterday"): "invalid timestamp",
        form(**{"with": "a@b@c"}): "Invalid JID",
    }
    for bad, text in cases.items():
        alice.feed(f"<iq type='set' id='x' to='{RJ}'><query xmlns='{ns.MAM}'>{bad}</query></iq>")
        got = alice.take()
        assert the_error(got) == "bad-request", bad
        error = next(got[-1].elements(ns.CLIENT, "error"))
        assert error["type"] == "modify"
        assert text in str(next(error.elements(ns.STANZA_ERRORS, "text")))


def test_anyone_may_read_an_open_rooms_archive_but_not_an_outcast():
    h, clock, alice = setup(count=1)
    dave = h.login("dave@localhost/r")   # never joined
    results, iq = mam(dave)
    assert forwarded_bodies(results) == ["m0"]
    admin_set(alice, "arc", "<item jid='dave@localhost' affiliation='outcast'/>")
    dave.feed(f"<iq type='set' id='x' to='{RJ}'><query xmlns='{ns.MAM}'/></iq>")
    got = dave.take()
    assert the_error(got) == "forbidden" and [s for s in got if s.name == "message"] == []


def test_a_members_only_rooms_archive_is_for_members_only():
    h, clock, alice = setup(count=1, fields={"muc#roomconfig_membersonly": True})
    dave = h.login("dave@localhost/r")
    dave.feed(f"<iq type='set' id='x' to='{RJ}'><query xmlns='{ns.MAM}'/></iq>")
    assert the_error(dave.take()) == "forbidden"
    admin_set(alice, "arc", "<item jid='dave@localhost' affiliation='member'/>")
    results, _ = mam(dave)
    assert forwarded_bodies(results) == ["m0"]


def test_real_jids_are_in_results_only_while_the_room_is_non_anonymous():
    h, clock, alice = setup(fields={"muc#roomconfig_whois": "anyone"})
    say(alice, "arc", "open")
    alice.take()

    def item_of(results):
        inner = next(next(next(results[0].elements(ns.MAM, "result")).elements(
            ns.FORWARD, "forwarded")).elements(ns.CLIENT, "message"))
        x = next(inner.elements(ns.MUC_USER, "x"), None)
        return None if x is None else next(x.elements(ns.MUC_USER, "item")).attributes
    assert item_of(mam(alice)[0]) == {"affiliation": "owner", "role": "moderator",
                                       "jid": "alice@localhost"}
    configure(alice, "arc", {"muc#roomconfig_whois": "moderators"})
    assert item_of(mam(alice)[0]) is None


# -- history from the archive ----------------------------------------------------------

def forget_memory(h, room="arc"):
    """The in-memory history gone (what a restart does to an archived room)."""
    state = the_room(h, room).state
    state.pop("history", None)
    state.pop("history_bytes", None)


def replay(h, history=None, who="bob"):
    session = h.login(f"{who}@localhost/r")
    got = join(session, "arc", who.title(), history=history)
    return [m for m in messages(got) if bodies([m])], got


def test_a_joiner_gets_history_from_the_archive_with_delay_and_stanza_id_before_the_subject():
    h, clock, alice = setup(count=3)
    forget_memory(h)
    history, got = replay(h)
    assert bodies(history) == ["m0", "m1", "m2"]
    ids = result_ids(mam(alice)[0])
    for m, i in zip(history, ids):
        delay = next(m.elements(ns.DELAY, "delay"))
        assert delay["from"] == RJ and delay["stamp"] == "2023-11-14T22:13:20Z"
        assert [(s["by"], s["id"]) for s in sid(m)] == [(RJ, i)]
    subject_at = next(i for i, s in enumerate(got) if any(
        c.name == "subject" for c in s.elements()))
    assert got.index(history[-1]) < subject_at


def test_history_from_the_archive_keeps_the_limits():
    h, clock, alice = setup(count=5, step=60)
    forget_memory(h)
    assert bodies(replay(h, "<history maxstanzas='2'/>")[0]) == ["m3", "m4"]
    assert replay(h, "<history maxstanzas='0'/>", who="carol")[0] == []
    assert bodies(replay(h, "<history seconds='150'/>", who="dave")[0]) == ["m3", "m4"]
    assert bodies(replay(h, "<history since='2023-11-14T22:15:20Z'/>",
                         who="eve")[0]) == ["m2", "m3", "m4"]
    one = replay(h, "<history maxstanzas='1'/>", who="frank")[0][0]
    size = len(one.toXml().replace(" xmlns='jabber:client'", "", 1))
    chars = size * 2 + size // 2
    assert bodies(replay(h, f"<history maxchars='{chars}'/>", who="grace")[0]) == ["m3", "m4"]


def test_history_from_the_archive_is_never_longer_than_historylength():
    h, clock, alice = setup(count=6, fields={"muc#roomconfig_historylength": 4})
    forget_memory(h)
    assert bodies(replay(h, "<history maxstanzas='50'/>")[0]) == ["m2", "m3", "m4", "m5"]


def test_a_full_in_memory_history_is_used_as_it_is():
    h, clock, alice = setup(count=3)
    archive(h)._data[RJ] = archive(h)._data[RJ][:1]   # the archive lost the newest two
    assert bodies(replay(h, "<history maxstanzas='2'/>")[0]) == ["m1", "m2"]
    # more than the memory holds: from the archive
    assert bodies(replay(h, "<history maxstanzas='5'/>", who="carol")[0]) == ["m0"]


# -- retention, quota, the room's end ----------------------------------------------------

def test_duration_and_datetime_read_as_prosody_reads_them():
    assert duration("1w") == 7 * 86400 and duration("3600") == 3600
    assert duration("2 d") == 2 * 86400 and duration("never") is None
    assert parse_datetime("2023-11-14T22:13:20Z") == EPOCH
    assert parse_datetime("2023-11-14T22:13:20.123456Z") == EPOCH
    assert parse_datetime("2023-11-14T23:13:20+01:00") == EPOCH
    assert parse_datetime("20231114T22:13:20") == EPOCH
    assert parse_datetime("yesterday") is None


def test_messages_older_than_log_expires_after_go_at_the_daily_run():
    h, clock, alice = setup(count=2, log_expires_after="1d")
    clock.advance(60)      # the first run, a minute after start: nothing is a day old
    clock.advance(86400 - 90)
    say(alice, "arc", "fresh")
    alice.take()
    assert forwarded_bodies(mam(alice)[0]) == ["m0", "m1", "fresh"]
    clock.advance(90)      # the next run, a day later
    assert forwarded_bodies(mam(alice)[0]) == ["fresh"]


def test_log_expires_after_never_keeps_everything_and_counts_nothing():
    h, clock, alice = setup(count=2, log_expires_after="never")
    clock.advance(400 * 86400)
    results, iq = mam(alice)
    assert forwarded_bodies(results) == ["m0", "m1"] and "count" not in fin_of(iq)[1]


def test_an_archive_beyond_max_archive_items_loses_its_oldest():
    h, clock, alice = setup(count=0, max_archive_items=100, log_expires_after="never")
    for i in range(101):
        say(alice, "arc", f"n{i}")
    alice.take()
    kept = [item[3] for item in stored(h)]
    assert len(kept) == 99 and "n2<" in kept[0] and "n100<" in kept[-1]


def test_a_destroyed_room_loses_its_archive():
    h, clock, alice = setup(count=2, fields={"muc#roomconfig_persistentroom": True})
    assert len(stored(h)) == 2
    owner_set(alice, "arc", "<destroy/>")
    assert stored(h) == []


def test_a_temporary_room_that_empties_loses_its_archive():
    h, clock, alice = setup(count=2)
    leave(alice, "arc", "Alice")
    assert stored(h) == []
    create(alice, "arc", "Alice")
    assert mam(alice)[0] == []
