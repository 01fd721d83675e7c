"""XEP-0004 data forms of XEP-0060: node configuration, publish-options,
node meta-data — between ``<x xmlns='jabber:x:data'/>`` and the core's
configuration dicts (field names without the ``pubsub#`` prefix, values typed:
``bool``, ``int`` or ``"max"``, ``str``, ``list[str]``).

Which fields exist, and their types, labels and options, follow the
node_config form of Prosody's ``mod_pubsub`` (0.12, with ``itemreply`` and
``roster_groups_allowed`` from 13), plus ``pubsub#notify_config`` and
``pubsub#node_type`` (``leaf`` only) that XEP-0060 registers and this core
supports. What a submitted form may hold, where XEP-0060 and Prosody part:

- *An unknown field* in a configuration (create-and-configure, or configure):
  ``not-acceptable`` (modify), the field named in the text — XEP-0060 §8.2.5.2:
  a configuration the service cannot process. (Prosody silently ignores
  unknown fields, so a client believes a setting took that did not.)
- *An unknown field in publish-options*: XEP-0060 §7.1.5 says the publication
  MUST be rejected; an option the node cannot have is a precondition that is
  not met: ``conflict`` + ``precondition-not-met``, the field named in the text.
- *A value of the wrong type* — a boolean that is not ``1``/``0``/``true``/
  ``false``, a ``max_items`` that is not an integer or ``max`` or is outside
  1…the ceiling, a list-single value that is not one of its options, several
  values in a single-valued field: ``bad-request`` (modify) with
  ``<field>: <why>`` as text, exactly as Prosody words its form errors
  (``persist_items: Invalid boolean representation:maybe``,
  ``max_items: not a number``).
- *A well-formed value this service does not allow* (an access model it does
  not offer: the pubsub service offers ``open`` and ``whitelist`` as Prosody's
  mod_pubsub does): ``not-acceptable`` (modify), as Prosody's
  ``check_node_config`` answers.
- *A FORM_TYPE of another form*: ``bad-request``. No FORM_TYPE at all is
  accepted (Prosody does not look at it; XEP-0060's own configure examples
  carry one).
- ``pubsub#node_type`` = ``collection``: ``feature-not-implemented`` +
  ``unsupported feature='collections'`` (only leaf nodes exist here).
- Subscription options (``pubsub#subscribe_options``) are not supported at
  all: :data:`SUBSCRIPTION_OPTIONS_UNSUPPORTED` is XEP-0060 §6.3.4.2's error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from twisted.words.xish import domish

from xmppd import ns
from xmppd.services.pubsub.core import (ACCESS_MODELS, ITEMREPLY, NOTIFICATION_TYPES,
                                        PUBLISH_MODELS, SEND_LAST_PUBLISHED_ITEM,
                                        PubSubError)

PREFIX = "pubsub#"


@dataclass(frozen=True)
class Field:
    """One node_config field: its core name, XEP-0004 type, label, options."""

    name: str
    type: str
    label: str = ""
    options: tuple = ()

    @property
    def var(self) -> str:
        return PREFIX + self.name


#: The node_config form, in the order it is shown (Prosody's order, ours after).
NODE_CONFIG_FIELDS: tuple[Field, ...] = (
    Field("title", "text-single", "Title"),
    Field("description", "text-single", "Description"),
    Field("type", "text-single",
          "The type of node data, usually specified by the namespace of the payload (if any)"),
    Field("max_items", "text-single", "Max # of items to persist"),
    Field("persist_items", "boolean", "Persist items to storage"),
    Field("access_model", "list-single", "Specify the subscriber model", ACCESS_MODELS),
    Field("roster_groups_allowed", "list-multi", "Roster groups allowed to subscribe"),
    Field("publish_model", "list-single", "Specify the publisher model", PUBLISH_MODELS),
    Field("send_last_published_item", "list-single",
          "When to send the last published item", SEND_LAST_PUBLISHED_ITEM),
    Field("deliver_notifications", "boolean", "Whether to deliver event notifications"),
    Field("deliver_payloads", "boolean", "Whether to deliver payloads with event notifications"),
    Field("notification_type", "list-single", "Specify the delivery style for notifications",
          NOTIFICATION_TYPES),
    Field("notify_config", "boolean",
          "Whether to notify subscribers when the node configuration changes"),
    Field("notify_delete", "boolean", "Whether to notify subscribers when the node is deleted"),
    Field("notify_retract", "boolean",
          "Whether to notify subscribers when items are removed from the node"),
    Field("itemreply", "list-single", "Specify whose JID to include as the publisher of items",
          ITEMREPLY),
)
FIELDS_BY_VAR: dict[str, Field] = {f.var: f for f in NODE_CONFIG_FIELDS}
#: accepted in a submitted form, not part of a node's configuration
NODE_TYPE_VAR = PREFIX + "node_type"

#: Option labels where Prosody gives them (the others are labelled by value).
_OPTION_LABELS = {
    ("notification_type", "normal"): "Messages of type normal",
    ("notification_type", "headline"): "Messages of type headline",
    ("itemreply", "owner"): "Include the node owner's JID",
    ("itemreply", "publisher"): "Include the item publisher's JID",
    ("itemreply", "none"): "Don't include any JID with items",
}

#: The meta-data fields of a node's disco#info (Prosody's five, all text-single).
META_DATA_FIELDS = ("title", "description", "type", "access_model", "publish_model")

_BOOLEANS = {"1": True, "true": True, "0": False, "false": False}

#: XEP-0060 §6.3.4.2: what an ``<options/>`` request (or a subscribe with
#: options) gets from a service without subscription options.
SUBSCRIPTION_OPTIONS_UNSUPPORTED = PubSubError(
    "feature-not-implemented", "unsupported", feature="subscription-options")


def _bad(field: str, why: str) -> PubSubError:
    return PubSubError("bad-request", text=f"{field}: {why}")


def read_form(x: domish.Element) -> tuple[str | None, dict[str, list[str]]]:
    """A submitted form as (FORM_TYPE or None, {var: [values]}), in order.

    ``bad-request`` for what is not a form, a field without ``var`` or one
    given twice."""
    if x is None or x.uri != ns.DATA_FORMS or x.name != "x":
        raise PubSubError("bad-request", text="Missing dataform")
    form_type = None
    fields: dict[str, list[str]] = {}
    for field in x.elements(ns.DATA_FORMS, "field"):
        var = field.getAttribute("var")
        if not var:
            raise PubSubError("bad-request", text="A field without var")
        if var in fields or (var == "FORM_TYPE" and form_type is not None):
            raise PubSubError("bad-request", text=f"{var}: given twice")
        values = [str(v) for v in field.elements(ns.DATA_FORMS, "value")]
        if var == "FORM_TYPE":
            form_type = values[0].strip() if values else ""
            continue
        fields[var] = values
    return form_type, fields


def _one(name: str, values: list[str]) -> str | None:
    if len(values) > 1:
        raise _bad(name, "only one value allowed")
    return values[0] if values else None


def _convert(field: Field, values: list[str], max_items: int) -> Any:
    name = field.name
    if field.type == "boolean":
        raw = _one(name, values)
        value = _BOOLEANS.get((raw or "").strip())
        if value is None:
            raise _bad(name, f"Invalid boolean representation:{raw or ''}")
        return value
    if field.type == "list-multi":
        return [v.strip() for v in values if v.strip()]
    raw = _one(name, values)
    if name == "max_items":
        text = (raw or "").strip()
        if text == "max":
            return "max"
        try:
            number = int(text)
        except ValueError:
            raise _bad(name, "not a number") from None
        if number < 1 or number > max_items:
            raise _bad(name, f"out of bounds (1 to {max_items}, or max)")
        return number
    if field.type == "list-single":
        value = (raw or "").strip()
        if value not in field.options:
            raise _bad(name, f"{value!r} is not one of {', '.join(field.options)}")
        return value
    return raw or ""


def parse_config(x: domish.Element, *, max_items: int,
                 access_models: Sequence[str] = ACCESS_MODELS,
                 publish_options: bool = False) -> dict[str, Any]:
    """The configuration a submitted node_config (or, with ``publish_options``,
    publish-options) form asks for: only the fields it carries.

    ``max_items``: the ceiling of ``pubsub#max_items``; ``access_models``: the
    models this service offers. Raises :class:`PubSubError` as the module
    docstring lists."""
    if x is not None and x.getAttribute("type") == "cancel":
        return {}
    form_type, fields = read_form(x)
    allowed_types = ((ns.PUBSUB_PUBLISH_OPTIONS, ns.PUBSUB_NODE_CONFIG) if publish_options
                     else (ns.PUBSUB_NODE_CONFIG,))
    if form_type is not None and form_type not in allowed_types:
        raise PubSubError("bad-request", text=f"FORM_TYPE {form_type!r} is not {allowed_types[0]}")
    config: dict[str, Any] = {}
    for var, values in fields.items():
        if var == NODE_TYPE_VAR:
            kind = (_one("node_type", values) or "leaf").strip()
            if kind == "collection":
                raise PubSubError("feature-not-implemented", "unsupported", feature="collections")
            if kind != "leaf":
                raise _bad("node_type", f"{kind!r} is not one of leaf, collection")
            continue
        field = FIELDS_BY_VAR.get(var)
        if field is None:
            if publish_options:
                raise PubSubError("conflict", "precondition-not-met", text=f"Unknown field: {var}")
            raise PubSubError("not-acceptable", text=f"Unknown field: {var}")
        config[field.name] = _convert(field, values, max_items)
    model = config.get("access_model")
    if model is not None and model not in access_models:
        raise PubSubError("not-acceptable",
                          text=f"access_model {model!r} is not offered here "
                               f"(only {', '.join(access_models)})")
    return config


def _value_texts(field: Field, value: Any) -> list[str]:
    if value is None:
        return []
    if field.type == "boolean":
        return ["1" if value else "0"]
    if field.type == "list-multi":
        return [str(v) for v in value]
    text = str(value)
    return [text] if text else []


def config_form(config: dict[str, Any], *, max_items: int,
                access_models: Sequence[str] = ACCESS_MODELS,
                form_type: str = "form") -> domish.Element:
    """The node_config form of ``config`` (XEP-0060 §8.2.1 / §8.3): every
    field with its label, the options of list fields, and XEP-0122
    validation of ``max_items`` (1…ceiling, or ``max``), as Prosody shows it.
    Only the access models this service offers are listed."""
    x = domish.Element((ns.DATA_FORMS, "x"))
    x["type"] = form_type
    hidden = x.addElement("field")
    hidden["var"], hidden["type"] = "FORM_TYPE", "hidden"
    hidden.addElement("value", content=ns.PUBSUB_NODE_CONFIG)
    for field in NODE_CONFIG_FIELDS:
        element = x.addElement("field")
        element["var"], element["type"] = field.var, field.type
        if field.label:
            element["label"] = field.label
        if field.name == "max_items" and form_type == "form":
            validate = element.addElement((ns.DATA_VALIDATE, "validate"))
            validate["datatype"] = "pubsub:integer-or-max"
            bounds = validate.addElement("range")
            bounds["min"], bounds["max"] = "1", str(max_items)
        if form_type == "form":
            options = field.options
            if field.name == "access_model":
                options = tuple(o for o in options if o in access_models)
            for option in options:
                choice = element.addElement("option")
                choice["label"] = _OPTION_LABELS.get((field.name, option), option)
                choice.addElement("value", content=option)
        for text in _value_texts(field, config.get(field.name)):
            element.addElement("value", content=text)
    return x


def metadata_form(config: dict[str, Any]) -> domish.Element:
    """The XEP-0128 ``pubsub#meta-data`` form of a node's disco#info
    (XEP-0060 §5.4): Prosody's five fields, empty ones without a value."""
    x = domish.Element((ns.DATA_FORMS, "x"))
    x["type"] = "result"
    hidden = x.addElement("field")
    hidden["var"], hidden["type"] = "FORM_TYPE", "hidden"
    hidden.addElement("value", content=ns.PUBSUB_META_DATA)
    for name in META_DATA_FIELDS:
        element = x.addElement("field")
        element["var"], element["type"] = PREFIX + name, "text-single"
        value = config.get(name)
        if value not in (None, ""):
            element.addElement("value", content=str(value))
    return x


def known_fields() -> Iterable[str]:
    """The core configuration keys the forms carry."""
    return (f.name for f in NODE_CONFIG_FIELDS)
