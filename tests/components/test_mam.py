"""XEP-0313 user archives and XEP-0359 stanza ids: what is archived, where,
once; preferences; queries and paging; bad input; retention and quotas."""

from __future__ import annotations

import pytest
from twisted.internet import task

from xmppd.components.mam import Prefs, archivable, parse_datetime
from xmppd.testing import Harness, error_condition, only, parse, result_of

MAM = "urn:xmpp:mam:2"
SID = "urn:xmpp:sid:0"
RSM = "http://jabber.org/protocol/rsm"
FORWARD = "urn:xmpp:forward:0"
CARBONS = "urn:xmpp:carbons:2"
DATA = "jabber:x:data"
ALICE, BOB, CAROL = "alice@localhost", "bob@localhost", "carol@localhost"
NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def harness(*extra, **options):
    clock = task.Clock()
    clock.advance(NOW)
    h = Harness(["disco", "roster", "presence", "messaging", "offline", "carbons", "mam", *extra],
                options={"component:mam": options} if options else None, clock=clock)
    h.clock = clock
    return h


def send(sender, to, body="hello", mid="m1", mtype="chat", extra=""):
    type_attr = f" type='{mtype}'" if mtype is not None else ""
    body_xml = f"<body>{body}</body>" if body is not None else ""
    sender.feed(f"<message to='{to}' id='{mid}'{type_attr}>{body_xml}{extra}</message>")


def archive(h, user):
    return result_of(h.server.storage.archive("mam").query(user))


def bodies(h, user):
    return [parse(item.value).body and str(parse(item.value).body) for item in archive(h, user)]


def children(element, uri=None, name=None):
    return [c for c in element.elements()
            if (uri is None or c.uri == uri) and (name is None or c.name == name)]


def sids(stanza, by=None):
    return [(s["by"], s["id"]) for s in stanza.elements(SID, "stanza-id")
            if by is None or s["by"] == by]


def form(**fields):
    values = "".join(
        f"<field var='{var}'>{''.join(f'<value>{v}</value>' for v in (val if isinstance(val, list) else [val]))}</field>"
        for var, val in fields.items())
    return (f"<x xmlns='{DATA}' type='submit'><field var='FORM_TYPE' type='hidden'>"
            f"<value>{MAM}</value></field>{values}</x>")


def rsm(max=None, before=None, after=None):
    parts = ""
    if max is not None:
        parts += f"<max>{max}</max>"
    if after is not None:
        parts += f"<after>{after}</after>"
    if before is not None:
        parts += "<before/>" if before is True else f"<before>{before}</before>"
    return f"<set xmlns='{RSM}'>{parts}</set>"


def query(session, inner="", qid="q", extra_attrs="", iq_id="iq1"):
    """Send a MAM query; return (results, the iq answer)."""
    session.feed(f"<iq type='set' id='{iq_id}'{extra_attrs}><query xmlns='{MAM}' queryid='{qid}'>"
                 f"{inner}</query></iq>")
    got = session.take()
    assert got and got[-1].name == "iq", [g.toXml() for g in got]
    return got[:-1], got[-1]


def page(session, inner="", **kw):
    """The ids of a result page, and its fin's (complete, first, last, count)."""
    results, answer = query(session, inner, **kw)
    assert answer["type"] == "result", answer.toXml()
    fin = answer.fin
    assert fin.uri == MAM
    rset = fin.set
    text = {c.name: str(c) for c in rset.elements()}
    ids = [r.result["id"] for r in results]
    return ids, (fin.getAttribute("complete") == "true", text.get("first"), text.get("last"),
                 int(text["count"]) if "count" in text else None)


def fill(h, n, sender=None, to=BOB, step=60):
    """n chat messages from alice to bob, a minute apart; bob's archive ids."""
    sender = sender or h.login("alice@localhost/phone")
    h.add_user(to.split("/")[0])
    for i in range(n):
        send(sender, to, body=f"m{i}", mid=f"m{i}")
        h.clock.advance(step)
    return [item.id for item in archive(h, to.split("/")[0])]


# -- what is archived, where, once ---------------------------------------------------

def test_a_chat_between_users_is_archived_for_both_with_the_partner():
    h = harness()
    alice, bob = h.login("alice@localhost/phone"), h.login("bob@localhost/pc")
    send(alice, BOB, "hi")
    got = only(bob)
    [(by, item_id)] = sids(got)
    assert by == BOB
    [bobs] = archive(h, BOB)
    [alices] = archive(h, ALICE)
    assert bobs.id == item_id and bobs.with_ == ALICE and alices.with_ == BOB
    assert bobs.when == NOW and alices.when == NOW
    stored = parse(bobs.value)
    assert str(stored.body) == "hi" and stored["from"] == "alice@localhost/phone"
    assert sids(stored) == []  # stored as it came, the id is the item's own
    assert alice.take() == []


def test_the_recipient_never_sees_the_senders_stanza_id():
    h = harness()
    alice, bob = h.login("alice@localhost/phone"), h.login("bob@localhost/pc")
    send(alice, BOB)
    assert [by for by, _ in sids(only(bob))] == [BOB]


def test_origin_id_is_kept_in_delivery_and_archive():
    h = harness()
    alice, bob = h.login("alice@localhost/phone"), h.login("bob@localhost/pc")
    send(alice, BOB, extra=f"<origin-id xmlns='{SID}' id='o-1'/>")
    got = only(bob)
    assert [o["id"] for o in got.elements(SID, "origin-id")] == ["o-1"]
    assert [o["id"] for o in parse(archive(h, ALICE)[0].value).elements(SID, "origin-id")] == ["o-1"]


def test_forged_stanza_ids_of_the_archive_owner_are_removed_others_kept():
    h = harness()
    alice, bob = h.login("alice@localhost/phone"), h.login("bob@localhost/pc")
    send(alice, BOB, extra=f"<stanza-id xmlns='{SID}' by='{BOB}' id='forged'/>"
                           f"<stanza-id xmlns='{SID}' by='{ALICE}' id='self-made'/>"
                           f"<stanza-id xmlns='{SID}' by='room@conference.localhost' id='r'/>")
    got = only(bob)
    real = archive(h, BOB)[0].id
    assert sorted(sids(got)) == sorted([(BOB, real), ("room@conference.localhost", "r")])
    assert sids(parse(archive(h, BOB)[0].value)) == [("room@conference.localhost", "r")]
    # The sender's archive keeps what the sender sent, but for ids claiming
    # to be by the sender (as Prosody: each archive guards its own 'by').
    assert sids(parse(archive(h, ALICE)[0].value)) == [(BOB, "forged"),
                                                      ("room@conference.localhost", "r")]


def test_a_forged_id_is_removed_even_from_a_message_that_is_not_archived():
    h = harness()
    alice, bob = h.login("alice@localhost/phone"), h.login("bob@localhost/pc")
    send(alice, BOB, body=None, mtype="headline",
         extra=f"<stanza-id xmlns='{SID}' by='{BOB}' id='forged'/><x xmlns='urn:example'/>")
    assert sids(only(bob)) == []
    assert archive(h, BOB) == []


def test_sent_carbons_carry_the_senders_stanza_id_received_ones_the_recipients():
    h = harness()
    alice = h.login("alice@localhost/phone")
    alice_pc = h.login("alice@localhost/pc")
    bob, bob_tablet = h.login("bob@localhost/pc"), h.login("bob@localhost/tablet", priority=-1)
    bob_tablet.priority = -1
    for s in (alice_pc, bob_tablet):
        s.feed(f"<iq type='set' id='c'><enable xmlns='{CARBONS}'/></iq>")
        s.take()
    send(alice, "bob@localhost/pc")
    sent = only(alice_pc).sent.forwarded.message
    assert sids(sent) == [(ALICE, archive(h, ALICE)[0].id)]
    received = only(bob_tablet).received.forwarded.message
    assert sids(received) == [(BOB, archive(h, BOB)[0].id)]
    assert sids(only(bob)) == [(BOB, archive(h, BOB)[0].id)]


def test_a_message_to_several_resources_and_carbons_is_archived_once():
    h = harness()
    alice = h.login("alice@localhost/phone")
    sessions = [h.login(f"bob@localhost/r{i}") for i in range(3)]
    sessions[2].feed(f"<iq type='set' id='c'><enable xmlns='{CARBONS}'/></iq>")
    sessions[2].take()
    send(alice, BOB)
    ids = {sids(only(s))[0] for s in sessions[:2]}
    assert len(archive(h, BOB)) == 1 and ids == {(BOB, archive(h, BOB)[0].id)}


def test_an_offline_message_is_archived_once_and_delivered_with_its_stanza_id():
    h = harness()
    h.add_user(BOB)
    alice = h.login("alice@localhost/phone")
    send(alice, BOB, "while you were out")
    assert alice.take() == []  # stored, not bounced
    [item] = archive(h, BOB)
    offline = result_of(h.server.storage.archive("offline").query(BOB))
    assert sids(parse(offline[0].value)) == [(BOB, item.id)]
    bob = h.login("bob@localhost/pc", available=False)
    bob.available = True
    h.router.fire("presence/initial", bob)
    [message] = [m for m in bob.take() if m.name == "message"]
    assert sids(message) == [(BOB, item.id)]
    assert len(archive(h, BOB)) == 1


def test_a_message_to_a_gone_resource_is_archived_once():
    h = harness()
    alice, bob = h.login("alice@localhost/phone"), h.login("bob@localhost/pc")
    send(alice, "bob@localhost/gone")
    [item] = archive(h, BOB)
    assert sids(only(bob)) == [(BOB, item.id)]


def test_a_message_routed_again_keeps_its_id_and_is_not_archived_twice():
    h = harness()
    alice, bob = h.login("alice@localhost/phone"), h.login("bob@localhost/pc")
    send(alice, "bob@localhost/pc")
    delivered = only(bob)
    bob.logout()
    other = h.login("bob@localhost/tablet")
    h.router.undelivered("message", delivered, bob)  # as a closing session does
    again = only(other)
    assert sids(again) == sids(delivered) and len(archive(h, BOB)) == 1


def test_a_message_routed_again_from_the_bytes_of_a_closing_session_keeps_its_id():
    """XEP-0198 and CSI queues hand back what they held as text: the
    re-parsed message is still known for what it is."""
    h = harness()
    alice, bob = h.login("alice@localhost/phone"), h.login("bob@localhost/pc")
    send(alice, "bob@localhost/pc")
    delivered = only(bob)
    bob.logout()
    other = h.login("bob@localhost/tablet")
    h.router.undelivered("message", delivered.toXml().encode("utf-8"), bob)
    again = only(other)
    assert sids(again) == sids(delivered) and len(archive(h, BOB)) == 1


def test_a_server_made_message_naming_an_id_of_ours_is_stripped_and_archived():
    """Knowing an id of the victim's archive is not enough to pass a forged
    stanza-id off as the archive's: only a message a closing session of
    the user held is taken as archived already."""
    h = harness()
    alice, bob = h.login("alice@localhost/phone"), h.login("bob@localhost/pc")
    send(alice, BOB, "genuine")
    [known] = archive(h, BOB)
    only(bob)
    h.router.route(parse(f"<message from='room@conference.localhost/mallory' to='{BOB}/pc' "
                         f"type='chat' id='m1'><body>forged</body>"
                         f"<stanza-id xmlns='{SID}' by='{BOB}' id='{known.id}'/></message>"))
    items = archive(h, BOB)
    assert len(items) == 2 and items[1].with_ == "room@conference.localhost"
    assert sids(only(bob)) == [(BOB, items[1].id)]


def test_a_routed_again_message_whose_id_names_another_conversation_is_archived_anew():
    """The marker of a message routed again is not enough either: its
    stanza-id must name the item archived from the same sender with the same
    message id (a queue can only hold what the archive stamped)."""
    h = harness()
    alice, bob = h.login("alice@localhost/phone"), h.login("bob@localhost/pc")
    send(alice, BOB, "genuine", mid="a1")
    [known] = archive(h, BOB)
    only(bob)
    bob.logout()
    other = h.login("bob@localhost/tablet")
    odd = parse(f"<message from='carol@localhost/x' to='{BOB}/pc' type='chat' id='c1'>"
                f"<body>odd</body><stanza-id xmlns='{SID}' by='{BOB}' id='{known.id}'/></message>")
    h.router.undelivered("message", odd, bob)
    items = archive(h, BOB)
    assert len(items) == 2 and items[1].with_ == CAROL
    assert sids(only(other)) == [(BOB, items[1].id)]


def test_a_stanza_id_with_a_child_named_like_the_mark_is_not_taken_for_the_archives():
    """The mark lives on the element object: a child element of the same
    name (what domish's attribute lookup would find) does not make it."""
    from xmppd.components.mam import _HELD
    h = harness()
    alice, bob = h.login("alice@localhost/phone"), h.login("bob@localhost/pc")
    send(alice, BOB, "genuine", mid="a1")
    [known] = archive(h, BOB)
    only(bob)
    h.router.route(parse(f"<message from='alice@localhost/phone' to='{BOB}/pc' type='chat' "
                         f"id='a1'><body>again?</body><stanza-id xmlns='{SID}' by='{BOB}' "
                         f"id='{known.id}'><{_HELD}/></stanza-id></message>"))
    items = archive(h, BOB)
    assert len(items) == 2
    assert sids(only(bob)) == [(BOB, items[1].id)]


def test_a_server_made_message_with_an_unknown_id_of_ours_is_stripped_and_archived():
    h = harness()
    bob = h.login("bob@localhost/pc")
    h.router.route(parse(f"<message from='news@example.org' to='{BOB}' type='chat'><body>x</body>"
                         f"<stanza-id xmlns='{SID}' by='{BOB}' id='424242'/></message>"))
    [item] = archive(h, BOB)
    assert sids(only(bob)) == [(BOB, item.id)]


def test_a_message_to_oneself_is_archived_once():
    h = harness()
    alice, other = h.login("alice@localhost/phone"), h.login("alice@localhost/pc")
    send(alice, ALICE, "note to self")
    [item] = archive(h, ALICE)
    assert item.with_ == ALICE
    assert sids(only(other)) == [(ALICE, item.id)]


def test_nothing_is_archived_for_an_account_that_does_not_exist():
    h = harness()
    alice = h.login("alice@localhost/phone")
    send(alice, "nobody@localhost")
    assert error_condition(only(alice)) == "service-unavailable"
    assert archive(h, "nobody@localhost") == []
    assert len(archive(h, ALICE)) == 1  # the sender's side is the sender's business


@pytest.mark.parametrize("xml, kept", [
    ("<message type='chat'><body>b</body></message>", True),
    ("<message><body>b</body></message>", True),
    ("<message type='headline'><body>b</body></message>", False),
    ("<message type='groupchat'><body>b</body></message>", False),
    ("<message type='chat'><body>b</body><no-store xmlns='urn:xmpp:hints'/></message>", False),
    ("<message type='chat'><body>b</body><no-permanent-store xmlns='urn:xmpp:hints'/></message>",
     False),
    ("<message type='chat'><store xmlns='urn:xmpp:hints'/></message>", True),
    ("<message type='chat'><active xmlns='http://jabber.org/protocol/chatstates'/></message>", False),
    ("<message type='chat'><subject>s</subject></message>", True),
    ("<message type='chat'><received xmlns='urn:xmpp:receipts' id='x'/></message>", True),
    ("<message type='chat'><displayed xmlns='urn:xmpp:chat-markers:0' id='x'/></message>", True),
    ("<message><encryption xmlns='urn:xmpp:eme:0' namespace='x'/></message>", True),
    ("<message><x xmlns='jabber:x:conference' jid='r@c'/></message>", True),
    ("<message><x xmlns='http://jabber.org/protocol/muc#user'><invite/></x></message>", True),
    ("<message><x xmlns='http://jabber.org/protocol/muc#user'/></message>", False),
    ("<message><propose xmlns='urn:xmpp:jingle-message:0' id='c'/></message>", True),
    ("<message type='error' to='a@b/r'><error type='cancel'/></message>", True),
    ("<message type='error' to='a@b'><error type='cancel'/></message>", False),
    ("<message type='chat'><x xmlns='urn:example'/></message>", False),
])
def test_which_messages_are_worth_archiving(xml, kept):
    assert archivable(parse(xml)) is kept


def test_chat_states_are_left_out_of_what_is_archived():
    h = harness()
    alice, bob = h.login("alice@localhost/phone"), h.login("bob@localhost/pc")
    send(alice, BOB, extra="<active xmlns='http://jabber.org/protocol/chatstates'/>")
    assert children(only(bob), "http://jabber.org/protocol/chatstates")  # delivered whole
    stored = parse(archive(h, BOB)[0].value)
    assert not children(stored, "http://jabber.org/protocol/chatstates")


def test_a_message_left_empty_by_the_stripped_namespaces_is_not_archived():
    h = harness(dont_archive_namespaces="urn:xmpp:receipts")
    alice, bob = h.login("alice@localhost/phone"), h.login("bob@localhost/pc")
    send(alice, BOB, body=None, extra="<received xmlns='urn:xmpp:receipts' id='x'/>")
    assert sids(only(bob)) == []
    assert archive(h, BOB) == []


def test_a_groupchat_message_stays_out_of_the_user_archive():
    h = harness()
    bob = h.login("bob@localhost/pc")
    h.router.route(parse("<message from='room@conference.example/nick' to='bob@localhost/pc' "
                         "type='groupchat'><body>hi all</body></message>"))
    assert sids(only(bob)) == []
    assert archive(h, BOB) == []


def test_a_message_from_a_server_component_keeps_its_from_in_the_archive():
    h = harness()
    h.add_user(BOB)
    h.router.route(parse("<message from='room@conference.example/nick' to='bob@localhost/x' "
                         "type='chat'><body>pm</body></message>"))
    [item] = archive(h, BOB)
    assert item.with_ == "room@conference.example"


# -- preferences -----------------------------------------------------------------------

def prefs(session, default=None, always=(), never=(), iq_type="set", raw=None):
    if raw is None:
        lists = "".join(f"<{name}>{''.join(f'<jid>{j}</jid>' for j in jids)}</{name}>"
                        for name, jids in (("always", always), ("never", never)))
        default_attr = f" default='{default}'" if default else ""
        raw = f"<prefs xmlns='{MAM}'{default_attr}>{lists}</prefs>"
    session.feed(f"<iq type='{iq_type}' id='p'>{raw}</iq>")
    return only(session)


def read_prefs(reply):
    p = reply.prefs
    return (p.getAttribute("default"),
            [str(j) for j in p.always.elements(MAM, "jid")],
            [str(j) for j in p.never.elements(MAM, "jid")])


def test_default_preferences_are_the_configured_policy():
    h = harness()
    alice = h.login("alice@localhost/phone")
    reply = prefs(alice, iq_type="get", raw=f"<prefs xmlns='{MAM}'/>")
    assert reply["type"] == "result" and read_prefs(reply) == ("always", [], [])
    h2 = harness(default_archive_policy="roster")
    assert read_prefs(prefs(h2.login("alice@localhost/phone"), iq_type="get",
                            raw=f"<prefs xmlns='{MAM}'/>")) == ("roster", [], [])


def test_preferences_are_stored_with_bare_jids_and_answered_back():
    h = harness()
    alice = h.login("alice@localhost/phone")
    reply = prefs(alice, "roster", always=["Bob@LocalHost/pc", "x@example.org"],
                  never=["spam@example.org", "x@example.org"])
    assert reply["type"] == "result"
    assert read_prefs(reply) == ("roster", [BOB], ["spam@example.org", "x@example.org"])
    assert read_prefs(prefs(alice, iq_type="get", raw=f"<prefs xmlns='{MAM}'/>")) == \
        ("roster", [BOB], ["spam@example.org", "x@example.org"])


def test_never_stops_archiving_for_that_contact_only():
    h = harness()
    alice, bob = h.login("alice@localhost/phone"), h.login("bob@localhost/pc")
    carol = h.login("carol@localhost/pc")
    prefs(bob, "always", never=[ALICE])
    send(alice, BOB, "not kept")
    send(carol, BOB, "kept")
    assert sids(bob.take()[0]) == []
    assert bodies(h, BOB) == ["kept"]
    assert bodies(h, ALICE) == ["not kept"]  # alice's own archive is hers


def test_default_never_archives_nothing_but_the_always_list():
    h = harness()
    alice, bob = h.login("alice@localhost/phone"), h.login("bob@localhost/pc")
    carol = h.login("carol@localhost/pc")
    prefs(bob, "never", always=[CAROL])
    send(alice, BOB, "a")
    send(carol, BOB, "c")
    send(bob, ALICE, "to alice")
    send(bob, CAROL, "to carol")
    assert bodies(h, BOB) == ["c", "to carol"]


def test_roster_policy_archives_contacts_on_the_roster_only():
    h = harness()
    alice, bob = h.login("alice@localhost/phone"), h.login("bob@localhost/pc")
    carol = h.login("carol@localhost/pc")
    bob.feed(f"<iq type='set' id='r'><query xmlns='jabber:iq:roster'><item jid='{ALICE}'/></query></iq>")
    bob.take()
    prefs(bob, "roster")
    send(alice, BOB, "friend")
    send(carol, BOB, "stranger")
    assert bodies(h, BOB) == ["friend"]


def test_preferences_survive_a_restart_of_the_component():
    h = harness()
    alice, bob = h.login("alice@localhost/phone"), h.login("bob@localhost/pc")
    prefs(bob, "never")
    mam = h.component("mam")
    mam.stopService()
    mam.accounts.forget(BOB)
    mam.startService()
    send(alice, BOB)
    assert archive(h, BOB) == []


@pytest.mark.parametrize("raw, condition", [
    (f"<prefs xmlns='{MAM}' default='sometimes'/>", "bad-request"),
    (f"<prefs xmlns='{MAM}'><always/></prefs>", "bad-request"),
    (f"<prefs xmlns='{MAM}' default='always'><always><jid>a@@b</jid></always></prefs>",
     "bad-request"),
    (f"<prefs xmlns='{MAM}' default='always'><never><jid></jid></never></prefs>", "bad-request"),
])
def test_bad_preferences_are_refused_and_change_nothing(raw, condition):
    h = harness()
    alice = h.login("alice@localhost/phone")
    prefs(alice, "roster", never=["x@example.org"])
    reply = prefs(alice, raw=raw)
    assert reply["type"] == "error" and error_condition(reply) == condition
    assert read_prefs(prefs(alice, iq_type="get", raw=f"<prefs xmlns='{MAM}'/>")) == \
        ("roster", [], ["x@example.org"])


def test_preferences_listing_too_many_jids_are_refused():
    h = harness(max_prefs_jids="2")
    alice = h.login("alice@localhost/phone")
    reply = prefs(alice, "always", always=["a@x", "b@x"], never=["c@x"])
    assert error_condition(reply) == "policy-violation"
    assert prefs(alice, "always", always=["a@x"], never=["c@x"])["type"] == "result"


def test_never_wins_over_always_for_the_same_jid():
    p = Prefs.from_element(parse(f"<prefs xmlns='{MAM}' default='always'><always><jid>a@x</jid>"
                                 f"</always><never><jid>a@x/r</jid></never></prefs>"), 10)
    assert p.rule("a@x") == "never" and p.always == frozenset()


def test_another_users_archive_and_preferences_are_not_reachable():
    h = harness()
    alice, bob = h.login("alice@localhost/phone"), h.login("bob@localhost/pc")
    send(alice, BOB)
    _, answer = query(bob, extra_attrs=f" to='{ALICE}'")
    assert error_condition(answer) == "service-unavailable"
    bob.feed(f"<iq type='get' id='p' to='{ALICE}'><prefs xmlns='{MAM}'/></iq>")
    assert error_condition(only(bob)) == "service-unavailable"


# -- queries ---------------------------------------------------------------------------

def test_the_query_form_offers_the_extended_fields():
    h = harness()
    alice = h.login("alice@localhost/phone")
    alice.feed(f"<iq type='get' id='f'><query xmlns='{MAM}'/></iq>")
    reply = only(alice)
    x = reply.query.x
    fields = [(f["var"], f["type"]) for f in x.elements(DATA, "field")]
    assert x["type"] == "form"
    assert fields == [("FORM_TYPE", "hidden"), ("with", "jid-single"), ("start", "text-single"),
                      ("end", "text-single"), ("before-id", "text-single"),
                      ("after-id", "text-single"), ("ids", "list-multi")]


def test_results_come_to_the_asking_client_before_the_answer():
    h = harness()
    alice, bob = h.login("alice@localhost/phone"), h.login("bob@localhost/pc")
    send(alice, BOB, "one")
    bob.take()
    results, answer = query(bob, qid="my-query")
    [result] = results
    assert result["to"] == "bob@localhost/pc" and not result.hasAttribute("from")
    r = result.result
    assert (r.uri, r["queryid"], r["id"]) == (MAM, "my-query", archive(h, BOB)[0].id)
    fwd = r.forwarded
    assert fwd.uri == FORWARD and fwd.delay["stamp"] == "2023-11-14T22:13:20Z"
    assert str(fwd.message.body) == "one" and fwd.message.uri == "jabber:client"
    assert answer["id"] == "iq1" and answer["type"] == "result"


def test_paging_forwards_covers_everything_once():
    h = harness()
    ids = fill(h, 25)
    bob = h.login("bob@localhost/pc")
    got, after = [], None
    while True:
        page_ids, (complete, first, last, count) = page(bob, rsm(max=10, after=after))
        got += page_ids
        assert count == 25 and (first, last) == (page_ids[0], page_ids[-1])
        after = last
        if complete:
            break
    assert got == ids


def test_paging_backwards_from_the_last_page_covers_everything_once():
    h = harness()
    ids = fill(h, 25)
    bob = h.login("bob@localhost/pc")
    ids_seen, (complete, first, last, count) = page(bob, rsm(max=10, before=True))
    assert ids_seen == ids[-10:] and not complete and (first, last) == (ids[-10], ids[-1])
    got = ids_seen
    while not complete:
        ids_seen, (complete, first, last, count) = page(bob, rsm(max=10, before=first))
        got = ids_seen + got
    assert got == ids and len(ids_seen) == 5


def test_a_complete_page_says_so_and_an_empty_archive_counts_zero():
    h = harness()
    bob = h.login("bob@localhost/pc")
    assert page(bob) == ([], (True, None, None, 0))
    ids = fill(h, 3)
    bob.take()
    assert page(bob) == (ids, (True, ids[0], ids[-1], 3))
    assert page(bob, rsm(max=3)) == (ids, (True, ids[0], ids[-1], 3))
    assert page(bob, rsm(max=2)) == (ids[:2], (False, ids[0], ids[1], 3))


def test_flip_page_sends_the_page_newest_first_with_the_same_first_and_last():
    h = harness()
    ids = fill(h, 5)
    bob = h.login("bob@localhost/pc")
    got, fin = page(bob, rsm(max=3, before=True) + "<flip-page/>")
    assert got == [ids[4], ids[3], ids[2]] and fin[1:3] == (ids[2], ids[4])
    got, fin = page(bob, rsm(max=3) + "<flip-page/>")
    assert got == [ids[2], ids[1], ids[0]] and fin[1:3] == (ids[0], ids[2])


def test_without_max_a_page_holds_20_and_a_huge_max_is_cut_to_50():
    h = harness()
    ids = fill(h, 60, step=1)
    bob = h.login("bob@localhost/pc")
    assert len(page(bob)[0]) == 20
    got, (complete, *_rest) = page(bob, rsm(max=10**9))
    assert got == ids[:50] and not complete


def test_max_zero_gives_the_count_alone():
    h = harness()
    fill(h, 4)
    bob = h.login("bob@localhost/pc")
    assert page(bob, rsm(max=0)) == ([], (True, None, None, 4))


def test_filter_by_partner_bare_jid_also_given_as_a_full_jid():
    h = harness()
    alice, carol = h.login("alice@localhost/phone"), h.login("carol@localhost/pc")
    bob = h.login("bob@localhost/pc")
    send(alice, BOB, "a1")
    send(carol, BOB, "c1")
    send(bob, ALICE, "b->a")
    bob.take()
    ids = [i.id for i in archive(h, BOB)]
    assert page(bob, form(**{"with": ALICE}))[0] == [ids[0], ids[2]]
    assert page(bob, form(**{"with": "alice@localhost/phone"}))[0] == [ids[0], ids[2]]
    assert page(bob, form(**{"with": CAROL}))[1][3] == 1


def test_start_and_end_bound_the_time_inclusively():
    h = harness()
    ids = fill(h, 5)  # at NOW, NOW+60, …
    bob = h.login("bob@localhost/pc")
    got, fin = page(bob, form(start="2023-11-14T22:14:20Z", end="2023-11-14T22:16:20Z"))
    assert got == ids[1:4] and fin[3] == 3
    assert page(bob, form(start="2023-11-14T22:16:20.999Z"))[0] == ids[3:]  # fractions dropped
    assert page(bob, form(end="2023-11-14T23:14:20+01:00"))[0] == ids[:2]  # zones honoured


def test_a_reversed_range_matches_nothing():
    h = harness()
    fill(h, 3)
    bob = h.login("bob@localhost/pc")
    assert page(bob, form(start="2023-11-15T00:00:00Z", end="2023-11-14T00:00:00Z")) == \
        ([], (True, None, None, 0))


def test_before_id_and_after_id_fields_bound_the_range():
    h = harness()
    ids = fill(h, 6)
    bob = h.login("bob@localhost/pc")
    assert page(bob, form(**{"after-id": ids[1], "before-id": ids[4]}))[0] == ids[2:4]
    assert page(bob, form(**{"after-id": ids[1]}) + rsm(max=2, before=True))[0] == ids[4:6]


def test_ids_fetch_those_items_in_archive_order():
    h = harness()
    ids = fill(h, 6)
    bob = h.login("bob@localhost/pc")
    got, fin = page(bob, form(ids=[ids[4], ids[1]]))
    assert got == [ids[1], ids[4]] and fin == (True, ids[1], ids[4], 2)


@pytest.mark.parametrize("inner_of", [
    lambda ids: form(ids=[ids[0], "999999"]),
    lambda ids: form(ids=["not-an-id"]),
    lambda ids: form(**{"after-id": "999999"}),
    lambda ids: form(**{"before-id": "99999999999999999999999"}),
    lambda ids: rsm(after="999999"),
    lambda ids: rsm(before="nope"),
    lambda ids: rsm(after=""),
])
def test_an_id_that_names_no_item_is_item_not_found(inner_of):
    h = harness()
    ids = fill(h, 2)
    bob = h.login("bob@localhost/pc")
    results, answer = query(bob, inner_of(ids))
    assert results == [] and error_condition(answer) == "item-not-found"


def test_an_id_of_another_users_archive_is_item_not_found():
    h = harness()
    fill(h, 2)
    alices = archive(h, ALICE)[0].id
    bob = h.login("bob@localhost/pc")
    assert error_condition(query(bob, rsm(after=alices))[1]) == "item-not-found"


@pytest.mark.parametrize("inner, condition, text", [
    (f"<x xmlns='{DATA}' type='submit'><field var='FORM_TYPE'><value>urn:xmpp:mam:1</value>"
     f"</field></x>", "bad-request", f"Unexpected FORM_TYPE, expected '{MAM}'"),
    (f"<x xmlns='{DATA}' type='submit'/>", "bad-request", f"Unexpected FORM_TYPE, expected '{MAM}'"),
    (form(**{"with": "a@@b"}), "bad-request", "Invalid JID: a@@b"),
    (form(start="yesterday"), "bad-request", "invalid timestamp"),
    (form(end=""), "bad-request", "invalid timestamp"),
    (form(start="2023-02-30T00:00:00Z"), "bad-request", "invalid timestamp"),
    (form(**{"{urn:example}full-text": "x"}), "feature-not-implemented", None),
    (rsm(max="ten"), "bad-request", None),
    (rsm(max="-1"), "bad-request", None),
])
def test_malformed_queries_are_refused_with_the_reason(inner, condition, text):
    h = harness()
    fill(h, 2)
    bob = h.login("bob@localhost/pc")
    results, answer = query(bob, inner)
    assert results == [] and answer["type"] == "error"
    assert error_condition(answer) == condition
    if text is not None:
        assert str(answer.error.text) == text


def test_metadata_gives_the_first_and_last_item():
    h = harness()
    bob = h.login("bob@localhost/pc")
    bob.feed(f"<iq type='get' id='m'><metadata xmlns='{MAM}'/></iq>")
    assert children(only(bob).metadata) == []
    ids = fill(h, 3)
    bob.take()
    bob.feed(f"<iq type='get' id='m'><metadata xmlns='{MAM}'/></iq>")
    meta = only(bob).metadata
    assert (meta.start["id"], meta.start["timestamp"]) == (ids[0], "2023-11-14T22:13:20Z")
    assert (meta.end["id"], meta.end["timestamp"]) == (ids[2], "2023-11-14T22:15:20Z")


def test_the_account_advertises_mam_extended_and_stanza_ids():
    h = harness()
    alice = h.login("alice@localhost/phone")
    alice.feed(f"<iq type='get' id='d' to='{ALICE}'><query "
               f"xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    features = {f["var"] for f in children(only(alice).query, None, "feature")}
    assert {MAM, MAM + "#extended", SID} <= features
    alice.feed("<iq type='get' id='d' to='localhost'>"
               "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    assert MAM not in {f["var"] for f in children(only(alice).query, None, "feature")}


# -- retention, quota, deletion, memory ---------------------------------------------------

def test_messages_older_than_the_retention_go_once_a_day():
    h = harness(archive_expires_after="2d")
    fill(h, 1)
    h.clock.advance(86400)
    fill(h, 1)
    assert len(archive(h, BOB)) == 2
    h.clock.advance(86400 + 100)  # the first is now older than two days
    assert len(archive(h, BOB)) == 1  # the daily run came round
    h.clock.advance(3 * 86400)
    assert archive(h, BOB) == []


def test_never_expiring_keeps_everything():
    h = harness(archive_expires_after="never")
    fill(h, 2)
    h.clock.advance(400 * 86400)
    assert len(archive(h, BOB)) == 2


def test_a_full_archive_sheds_its_oldest_down_to_99_percent():
    h = harness(max_archive_items="100")
    alice = h.login("alice@localhost/phone")
    ids = fill(h, 100, alice, step=1)
    assert len(ids) == 100  # at the limit, not past it
    send(alice, BOB, "one more")
    kept = [i.id for i in archive(h, BOB)]
    assert kept[:-1] == ids[2:] and len(kept) == 99  # 101 > 100: the oldest go, down to 99
    bob = h.login("bob@localhost/pc")
    assert page(bob, rsm(max=0))[1][3] == 99


def test_deleting_the_account_deletes_its_archive_and_preferences():
    h = harness()
    alice, bob = h.login("alice@localhost/phone"), h.login("bob@localhost/pc")
    prefs(bob, "roster")
    send(alice, BOB)
    result_of(h.server.delete_account(BOB))
    assert archive(h, BOB) == []
    assert result_of(h.server.storage.keyvalue("mam_prefs").get(BOB)) is None
    assert h.component("mam").accounts.peek(BOB) is None
    assert len(archive(h, ALICE)) == 1


def test_per_user_state_is_bounded():
    h = harness(cache_size="2")
    alice = h.login("alice@localhost/phone")
    for user in ("b", "c", "d", "e"):
        h.add_user(f"{user}@localhost")
        send(alice, f"{user}@localhost")
    assert len(h.component("mam").accounts) == 2
    assert len(archive(h, "b@localhost")) == 1


def test_parse_datetime_reads_what_prosody_reads():
    assert parse_datetime("2023-11-14T22:13:20Z") == NOW
    assert parse_datetime("2023-11-14T22:13:20.123456Z") == NOW
    assert parse_datetime("2023-11-14T22:13:20") == NOW
    assert parse_datetime("20231114T22:13:20Z") == NOW
    assert parse_datetime("2023-11-14T23:13:20+01:00") == NOW
    assert parse_datetime("2023-11-14") is None
    assert parse_datetime("2023-11-14T22:13:20+1") is None
