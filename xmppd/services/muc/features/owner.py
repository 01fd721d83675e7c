"""The owners' protocol (XEP-0045 §10, ``muc#owner``): the configuration
form, its submission (an empty submission accepts the defaults: an instant
room), cancelling the configuration of a new room (which destroys it),
and destroying a room with a reason and an alternate venue.

The form is made of every feature's fields; a submitted value of the wrong
type is ``bad-request`` and changes nothing. After a change occupants get
a status 104 message (and 172/173 … the features add), as Prosody sends."""

from twisted.words.xish import domish

from xmppd import jid as jidlib
from xmppd import ns
from xmppd.services.muc import forms
from xmppd.services.muc.hooks import Feature, MUCError, on


#: the form's headings, and the field order each comes before (Prosody's)
SECTIONS = ((100, "Room information"), (90, "Access to the room"),
            (80, "Permissions in the room"), (70, "Other options"))


class OwnerProtocol(Feature):
    name = "owner"

    def _owner(self, room, real):
        if room.affiliation(jidlib.parse(real).userhost()) != "owner":
            raise MUCError("forbidden", "auth", "Only owners can configure rooms")

    @on(f"iq/get/{ns.MUC_OWNER}:query")
    def form(self, ev):
        room = ev.room
        self._owner(room, ev.real)
        x = forms.form(ns.MUC_ROOMCONFIG, title=f"Configuration for {room.jid}",
                       instructions="Complete and submit this form to configure the room.")
        headings = list(SECTIONS)
        for spec in sorted(self.service.config_fields(), key=lambda f: -f.order):
            while headings and headings[0][0] > spec.order:
                forms.add_field(x, None, "fixed", None, headings.pop(0)[1])
            value = forms.field_value(spec, room.config.get(spec.key))
            if value is False and spec.omit_false:
                value = None
            options = spec.options
            if spec.integer and spec.type == "list-single":
                options = forms.number_options(spec, value, self.service.config)
            forms.add_field(x, spec.var, spec.type, spec.label, value, options,
                            desc=spec.desc, datatype=spec.datatype)
        self.service.hooks.fire("config-form", room=room, form=x, actor=ev.real)
        query = domish.Element((ns.MUC_OWNER, "query"))
        query.addChild(x)
        return ev.event.reply(query)

    @on(f"iq/set/{ns.MUC_OWNER}:query")
    def submit(self, ev):
        room, event = ev.room, ev.event
        self._owner(room, ev.real)
        destroy = next(event.payload.elements(ns.MUC_OWNER, "destroy"), None)
        if destroy is not None:
            return self._destroy(room, event, destroy)
        x = forms.find_form(event.payload)
        if x is None:
            raise MUCError("bad-request", "modify")
        if x.getAttribute("type") == "cancel":
            if self.service.hooks.fire("room-locked", room=room):
                room.destroy()
                return self.service.after_writes(room, event.reply())
            return event.reply()
        if x.getAttribute("type") != "submit":
            raise MUCError("bad-request", "modify")
        fields = forms.read(x)
        kind = forms.form_type(fields)
        if kind not in (None, ns.MUC_ROOMCONFIG):
            raise MUCError("bad-request", "modify", "Form is not of type room configuration")
        values = dict(room.config)
        limits = self.service.config
        specs = {spec.var: spec for spec in self.service.config_fields()}
        for var, given in fields.items():
            spec = specs.get(var)
            if spec is not None:
                values[spec.key] = forms.parse_field(spec, given, limits)
            elif var == "muc#roomconfig_passwordprotectedroom":
                values["password_protected"] = forms.boolean(given, var)
        old = dict(room.config)
        codes = set()
        self.service.hooks.fire("config-submitted", room=room, values=values, old=old,
                                codes=codes, actor=ev.real, fields=fields)
        changed = {k for k in set(values) | set(old) if values.get(k) != old.get(k)}
        codes.update(spec.notice for spec in specs.values()
                     if spec.key in changed and spec.notice)
        room.config.clear()
        room.config.update(values)
        self.service.hooks.fire("config-changed", room=room, old=old, changed=changed,
                                codes=codes)
        self.service.save(room)
        if not codes or room.destroyed:
            return self.service.after_writes(room, event.reply())
        return self.service.reply_then(room, event.reply(),
                                       lambda: room.status_message(sorted(codes)))

    def _destroy(self, room, event, destroy):
        alternate = destroy.getAttribute("jid")
        if alternate is not None and jidlib.parse_or_none(alternate) is None:
            raise MUCError("jid-malformed", "modify")
        reason = next((str(c) for c in destroy.elements() if c.name == "reason"), None)
        password = next((str(c) for c in destroy.elements() if c.name == "password"), None)
        room.destroy(reason, alternate, password)
        return self.service.after_writes(room, event.reply())
