"""XEP-0004 data forms for multi-user chat: building them, and reading a
submitted one into typed values (the owner's configuration, room
registration, voice requests)."""

from __future__ import annotations

from typing import Any, Iterable

from twisted.words.xish import domish

from xmppd import ns
from xmppd.services.muc.hooks import ConfigField, MUCError

XDATA_VALIDATE = "http://jabber.org/protocol/xdata-validate"
_TRUE = ("1", "true")
_FALSE = ("0", "false")


def form(form_type: str | None, type: str = "form", title: str | None = None,
         instructions: str | None = None) -> domish.Element:
    """An empty ``<x xmlns='jabber:x:data'/>`` with its hidden FORM_TYPE."""
    x = domish.Element((ns.DATA_FORMS, "x"))
    x["type"] = type
    if title:
        x.addElement("title", content=title)
    if instructions:
        x.addElement("instructions", content=instructions)
    if form_type:
        add_field(x, "FORM_TYPE", "hidden", None, form_type)
    return x


def add_field(x: domish.Element, var: str | None, type: str | None, label: str | None,
              value: Any = None, options: Iterable[tuple[str, str]] = (),
              required: bool = False, desc: str = "", datatype: str = "") -> domish.Element:
    """Append a field; ``value`` may be a bool, int, str or a list of them
    (None: no value)."""
    f = x.addElement("field")
    if var is not None:
        f["var"] = var
    if type:
        f["type"] = type
    if label:
        f["label"] = label
    if required:
        f.addElement("required")
    if desc:
        f.addElement("desc", content=desc)
    if datatype:
        f.addElement((XDATA_VALIDATE, "validate"))["datatype"] = datatype
    for value_, label_ in options:
        option = f.addElement("option")
        if label_:
            option["label"] = label_
        option.addElement("value", content=value_)
    values = value if isinstance(value, (list, tuple)) else ([] if value is None else [value])
    for v in values:
        if isinstance(v, bool):
            v = "1" if v else "0"
        f.addElement("value", content=str(v))
    return f


def find_form(parent: domish.Element) -> domish.Element | None:
    for child in parent.elements(ns.DATA_FORMS, "x"):
        return child
    return None


def read(x: domish.Element) -> dict[str, list[str]]:
    """A submitted form's fields: var → its values (as text)."""
    fields: dict[str, list[str]] = {}
    for f in x.elements(ns.DATA_FORMS, "field"):
        var = f.getAttribute("var")
        if var:
            fields[var] = [str(v) for v in f.elements(ns.DATA_FORMS, "value")]
    return fields


def form_type(fields: dict[str, list[str]]) -> str | None:
    values = fields.get("FORM_TYPE")
    return values[0] if values else None


def boolean(values: list[str], var: str) -> bool:
    """A boolean field's value; no value is false (XEP-0004 §3.3: a form may
    leave a false boolean without one, and Prosody's forms do)."""
    value = values[0].strip().lower() if values else "0"
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise MUCError("bad-request", text=f"Value for {var} is not a boolean")


def parse_field(spec: ConfigField, values: list[str], limits: dict[str, Any]) -> Any:
    """``values`` of a submitted field as the room keeps them; a value of
    the wrong type or out of range is ``bad-request`` naming the field."""
    if spec.type == "boolean":
        return boolean(values, spec.var)
    if spec.type in ("text-multi", "jid-multi", "list-multi"):
        return list(values)
    value = values[0] if values else ""
    if spec.integer:
        try:
            number = int(value.strip())
        except ValueError:
            raise MUCError("bad-request", text=f"Value for {spec.var} is not a number") \
                from None
        maximum = limits.get(spec.maximum) if isinstance(spec.maximum, str) else spec.maximum
        if number < spec.minimum or (maximum is not None and number > maximum):
            raise MUCError("not-acceptable",
                           text=f"Value for {spec.var} must be between {spec.minimum} "
                                f"and {maximum}")
        return number
    if spec.options and value not in {v for v, _ in spec.options}:
        raise MUCError("bad-request", text=f"Invalid value for {spec.var}")
    return value


def number_options(spec: ConfigField, value: Any, limits: dict[str, Any]) -> list[tuple[str, str]]:
    """The choices of a numeric list-single field (maxusers): round numbers
    up to the maximum, the maximum, and the current value."""
    maximum = limits.get(spec.maximum) if isinstance(spec.maximum, str) else spec.maximum
    maximum = maximum or 1000
    numbers = {n for n in (5, 10, 20, 30, 50, 100, 200, 300, 500, 1000, 2000, 5000)
               if spec.minimum <= n <= maximum}
    numbers.add(maximum)
    if value is not None:
        numbers.add(int(value))
    return [(str(n), "") for n in sorted(numbers)]


def field_value(spec: ConfigField, value: Any) -> Any:
    """A room's value as the form shows it."""
    if spec.integer and value is not None:
        return str(value)
    return value
