"""The room subject (XEP-0045 §8.1): a groupchat message with a
``<subject/>`` and no body changes it (with a body it is an ordinary
message); participants may change it when the room allows
(``muc#roomconfig_changesubject``), moderators always. Every joining
session gets the subject after the history — an empty ``<subject/>`` when
there is none, as the XEP requires and Prosody sends."""

from __future__ import annotations

from twisted.words.xish import domish

from xmppd import ns
from xmppd.components.offline import delay_stamp
from xmppd.router.fanout import Fanout
from xmppd.services.muc.hooks import ConfigField, Feature, MUCError, on


def _has(message: domish.Element, name: str) -> bool:
    return any(child.name == name for child in message.elements())


class Subject(Feature):
    name = "subject"
    fields = (
        ConfigField("change_subject", "muc#roomconfig_changesubject", "boolean",
                    "Allow anyone to set the room's subject", lambda c: False, order=79,
                    desc="Choose whether anyone, or only moderators, may set the room's subject",
                    omit_false=True),
    )

    @on("pre-groupchat", 10)
    def change(self, ev):
        stanza = ev.stanza
        if not _has(stanza, "subject") or _has(stanza, "body") or _has(stanza, "thread"):
            return None
        room, occupant = ev.room, ev.occupant
        if occupant.role != "moderator" and not (
                room.config.get("change_subject") and occupant.role == "participant"):
            raise MUCError("forbidden", "auth", "You are not allowed to change the subject")
        subject = next(c for c in stanza.elements() if c.name == "subject")
        text = str(subject)
        room.data["subject"] = text or None
        room.data["subject_from"] = occupant.nick
        room.data["subject_stamp"] = self.service.clock.seconds()
        self.service.save(room)
        room.broadcast(self._message(room))
        return True

    @staticmethod
    def _message(room) -> domish.Element:
        message = domish.Element((ns.CLIENT, "message"))
        message["type"] = "groupchat"
        nick = room.data.get("subject_from")
        message["from"] = room.full(nick) if nick else room.jid
        message.addElement("subject", content=room.data.get("subject") or "")
        return message

    @on("disco-info")
    def info(self, ev):
        ev.info["muc#roomconfig_changesubject"] = (
            "boolean", None, True if ev.room.config.get("change_subject") else None)

    @on("joined", 10)
    def send(self, ev):
        """After the history, with the delay of when it was set (as Prosody)."""
        room = ev.room
        message = self._message(room)
        stamp = room.data.get("subject_stamp")
        if stamp:
            delay = message.addElement((ns.DELAY, "delay"))
            delay["from"], delay["stamp"] = room.jid, delay_stamp(stamp)
        self.service.deliver(Fanout(message), ev.real)
        return None
