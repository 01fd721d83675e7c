"""XEP-0004 forms of XEP-0060 (node_config, publish-options, meta-data) to
and from the core's configuration dicts: types converted, every refusal with
its error, and a form the service renders parses back to the same config."""

from __future__ import annotations

import pytest

from xmppd import ns
from xmppd.services.pubsub import forms
from xmppd.services.pubsub.core import CONFIG_KEYS, DEFAULT_CONFIG, PubSubError
from xmppd.testing import parse


def submitted(*fields: tuple[str, list[str]], form_type: str | None = ns.PUBSUB_NODE_CONFIG,
              type_: str = "submit"):
    hidden = (f"<field var='FORM_TYPE' type='hidden'><value>{form_type}</value></field>"
              if form_type else "")
    body = "".join(f"<field var='{var}'>" + "".join(f"<value>{v}</value>" for v in values)
                   + "</field>" for var, values in fields)
    return parse(f"<x xmlns='jabber:x:data' type='{type_}'>{hidden}{body}</x>")


def parse_config(x, **kw):
    kw.setdefault("max_items", 256)
    return forms.parse_config(x, **kw)


def test_the_form_covers_every_configuration_key_of_the_core():
    assert set(forms.known_fields()) == set(CONFIG_KEYS)


def test_values_are_converted_to_their_types():
    config = parse_config(submitted(
        ("pubsub#title", ["News"]), ("pubsub#persist_items", ["true"]),
        ("pubsub#deliver_payloads", ["0"]), ("pubsub#max_items", ["12"]),
        ("pubsub#access_model", ["whitelist"]),
        ("pubsub#roster_groups_allowed", ["Friends", "Family"]),
        ("pubsub#node_type", ["leaf"])))
    assert config == {"title": "News", "persist_items": True, "deliver_payloads": False,
                      "max_items": 12, "access_model": "whitelist",
                      "roster_groups_allowed": ["Friends", "Family"]}
    assert parse_config(submitted(("pubsub#max_items", ["max"]))) == {"max_items": "max"}
    assert parse_config(submitted(("pubsub#title", []))) == {"title": ""}


def test_a_form_without_form_type_and_a_cancelled_form_are_accepted():
    assert parse_config(submitted(("pubsub#title", ["x"]), form_type=None)) == {"title": "x"}
    assert parse_config(submitted(("pubsub#title", ["x"]), type_="cancel")) == {}


@pytest.mark.parametrize("fields, condition, text", [
    ((("pubsub#bogus", ["1"]),), ("not-acceptable", None), "Unknown field: pubsub#bogus"),
    ((("pubsub#persist_items", ["maybe"]),), ("bad-request", None),
     "persist_items: Invalid boolean representation:maybe"),
    ((("pubsub#persist_items", []),), ("bad-request", None),
     "persist_items: Invalid boolean representation:"),
    ((("pubsub#max_items", ["ten"]),), ("bad-request", None), "max_items: not a number"),
    ((("pubsub#max_items", ["257"]),), ("bad-request", None),
     "max_items: out of bounds (1 to 256, or max)"),
    ((("pubsub#title", ["a", "b"]),), ("bad-request", None), "title: only one value allowed"),
    ((("pubsub#publish_model", ["all"]),), ("bad-request", None), None),
    ((("pubsub#access_model", ["roster"]),), ("not-acceptable", None), None),
    ((("pubsub#node_type", ["collection"]),), ("feature-not-implemented", "unsupported"), None),
    ((("pubsub#node_type", ["tree"]),), ("bad-request", None), None),
    ((("pubsub#title", ["x"]), ("pubsub#title", ["y"])), ("bad-request", None),
     "pubsub#title: given twice"),
])
def test_a_bad_configuration_is_refused_with_its_error(fields, condition, text):
    with pytest.raises(PubSubError) as refused:
        parse_config(submitted(*fields), access_models=("open", "whitelist"))
    assert (refused.value.condition, refused.value.pubsub_condition) == condition
    if text is not None:
        assert refused.value.text == text


def test_a_form_of_another_type_or_no_form_is_a_bad_request():
    with pytest.raises(PubSubError) as wrong:
        parse_config(submitted(("pubsub#title", ["x"]), form_type="urn:other"))
    assert wrong.value.condition == "bad-request"
    with pytest.raises(PubSubError) as missing:
        parse_config(None)
    assert (missing.value.condition, missing.value.text) == ("bad-request", "Missing dataform")
    with pytest.raises(PubSubError):
        parse_config(parse("<x xmlns='jabber:x:data'><field><value>1</value></field></x>"))


def test_publish_options_take_either_form_type_and_an_unknown_field_is_an_unmet_precondition():
    options = submitted(("pubsub#access_model", ["open"]), form_type=ns.PUBSUB_PUBLISH_OPTIONS)
    assert parse_config(options, publish_options=True) == {"access_model": "open"}
    as_config = submitted(("pubsub#max_items", ["3"]))
    assert parse_config(as_config, publish_options=True) == {"max_items": 3}
    with pytest.raises(PubSubError) as unknown:
        parse_config(submitted(("pubsub#whatever", ["1"]), form_type=ns.PUBSUB_PUBLISH_OPTIONS),
                     publish_options=True)
    assert (unknown.value.condition, unknown.value.pubsub_condition) == (
        "conflict", "precondition-not-met")
    with pytest.raises(PubSubError) as wrong:  # publish-options are no node configuration
        parse_config(submitted(("pubsub#title", ["x"]), form_type=ns.PUBSUB_PUBLISH_OPTIONS))
    assert wrong.value.condition == "bad-request"


def test_a_rendered_configuration_parses_back_to_itself():
    config = dict(DEFAULT_CONFIG, title="News", max_items="max", access_model="whitelist",
                  roster_groups_allowed=["A", "B"], notify_config=True)
    x = forms.config_form(config, max_items=50)
    x["type"] = "submit"
    assert parse_config(parse(x.toXml()), max_items=50) == config


def test_the_configuration_form_shows_options_validation_and_only_offered_models():
    x = forms.config_form(DEFAULT_CONFIG, max_items=99, access_models=("open", "whitelist"))
    assert x["type"] == "form"
    fields = {f["var"]: f for f in x.elements(ns.DATA_FORMS, "field")}
    assert [str(v) for v in fields["FORM_TYPE"].elements(ns.DATA_FORMS, "value")] == [
        ns.PUBSUB_NODE_CONFIG]
    access = fields["pubsub#access_model"]
    assert [str(next(o.elements(ns.DATA_FORMS, "value")))
            for o in access.elements(ns.DATA_FORMS, "option")] == ["open", "whitelist"]
    validate = next(fields["pubsub#max_items"].elements(ns.DATA_VALIDATE, "validate"))
    assert validate["datatype"] == "pubsub:integer-or-max"
    bounds = next(validate.elements(ns.DATA_VALIDATE, "range"))
    assert (bounds["min"], bounds["max"]) == ("1", "99")
    assert [str(v) for v in fields["pubsub#persist_items"].elements(ns.DATA_FORMS, "value")] \
        == ["1"]
    assert list(fields["pubsub#title"].elements(ns.DATA_FORMS, "value")) == []


def test_the_meta_data_form_has_prosodys_five_fields():
    x = forms.metadata_form(dict(DEFAULT_CONFIG, title="News", type="urn:ex"))
    assert x["type"] == "result"
    fields = [(f["var"], f["type"], [str(v) for v in f.elements(ns.DATA_FORMS, "value")])
              for f in x.elements(ns.DATA_FORMS, "field")]
    assert fields == [
        ("FORM_TYPE", "hidden", [ns.PUBSUB_META_DATA]),
        ("pubsub#title", "text-single", ["News"]),
        ("pubsub#description", "text-single", []),
        ("pubsub#type", "text-single", ["urn:ex"]),
        ("pubsub#access_model", "text-single", ["open"]),
        ("pubsub#publish_model", "text-single", ["publishers"]),
    ]


def test_subscription_options_are_unsupported_as_xep_0060_names_it():
    error = forms.SUBSCRIPTION_OPTIONS_UNSUPPORTED
    assert (error.condition, error.pubsub_condition, error.feature) == (
        "feature-not-implemented", "unsupported", "subscription-options")
