"""etc/xmppd.ini is the documented example: it loads, it enables every built-in
component, and it shows every option each of them and the core declare."""

import configparser
import re
from pathlib import Path

import pytest

from xmppd import config as configlib
from xmppd.components import BUILTIN

EXAMPLE = Path(__file__).resolve().parents[2] / "etc" / "xmppd.ini"


def sections():
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(EXAMPLE, encoding="utf-8")
    return parser


def test_example_config_loads_and_validates(tmp_path):
    # data_dir is relative to where xmppd starts; keep the test's out of the tree.
    config = configlib.load(str(EXAMPLE), {"server": {"data_dir": str(tmp_path / "data")}})
    assert set(config.components) == set(BUILTIN)


def test_example_config_enables_what_the_default_enables():
    enabled = sections()["server"]["components"].split()
    default = next(o.default for o in configlib.CORE_OPTIONS["server"] if o.name == "components")
    assert enabled == default.split()


@pytest.mark.parametrize("section", sorted(configlib.CORE_OPTIONS))
def test_every_core_option_is_shown_with_its_default(section):
    shown = sections()[section]
    for option in configlib.CORE_OPTIONS[section]:
        assert option.name in shown, f"[{section}] {option.name} is not in {EXAMPLE.name}"
        if option.name not in ("components", "interfaces"):
            assert shown[option.name] == option.default, option.name


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_every_component_option_is_shown_with_its_default(name):
    cls = configlib.resolve_component(name)
    if not cls.options:
        return
    text = EXAMPLE.read_text(encoding="utf-8")
    assert re.search(rf"^\[component:{name}\]$", text, re.M), f"no [component:{name}] section"
    shown = sections()[f"component:{name}"]
    for option in cls.options:
        assert shown.get(option.name) == option.default, f"[component:{name}] {option.name}"
