"""The federation sections of the INI file: [s2s:routes] lines and
[external:<domain>] sections, and their one-line mistakes."""

from __future__ import annotations

import pytest

from xmppd import config as configlib


def load(tmp_path, **sections):
    base = {"server": {"data_dir": str(tmp_path), "components": "disco"}}
    base.update(sections)
    return configlib.from_dict(base)


def test_routes_take_host_port_ipv6_and_direct_tls(tmp_path):
    routes = load(tmp_path, **{"s2s:routes": {
        "Example.ORG": "127.0.0.2:5270", "b.example": "[::1]", "c.example": "10.0.0.1:5270 tls",
    }}).s2s_routes
    assert routes == {"example.org": ("127.0.0.2", 5270, False),
                      "b.example": ("::1", 5269, False),
                      "c.example": ("10.0.0.1", 5270, True)}


@pytest.mark.parametrize("line, message", [
    ("127.0.0.2:notaport", "the port is not a number"),
    ("127.0.0.2:70000", "no such port"),
    ("127.0.0.2:5270 starttls", "only 'tls'"),
    (":5269", "names no host"),
])
def test_a_bad_route_is_one_line_naming_it(tmp_path, line, message):
    with pytest.raises(configlib.ConfigError) as caught:
        load(tmp_path, **{"s2s:routes": {"example.org": line}})
    assert "[s2s:routes] example.org" in str(caught.value) and message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_an_external_component_needs_a_secret_and_a_domain_of_its_own(tmp_path):
    ok = load(tmp_path, **{"external:gw.localhost": {"secret": "s3"}})
    assert ok.externals == {"gw.localhost": {"secret": "s3"}}
    with pytest.raises(configlib.ConfigError, match="needs a secret"):
        load(tmp_path, **{"external:gw.localhost": {}})
    with pytest.raises(configlib.ConfigError, match="not a user domain"):
        load(tmp_path, **{"external:localhost": {"secret": "x"}})


def test_a_ca_file_that_cannot_be_read_or_holds_no_certificate_is_one_line(tmp_path):
    with pytest.raises(configlib.ConfigError, match=r"\[s2s\] ca_file: cannot read"):
        load(tmp_path, s2s={"ca_file": str(tmp_path / "missing.pem")})
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(configlib.ConfigError, match="holds no PEM certificate"):
        load(tmp_path, s2s={"ca_file": str(junk)})
