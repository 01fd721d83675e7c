"""xmppd.config.load: defaults, and one-line errors naming file, [section] and option."""

import os
import textwrap

import pytest

from xmppd.config import ConfigError, load

THIRD_PARTY = f"{__name__}:ThirdParty"


class ThirdParty:
    """Stands in for a component class; the loader only resolves it and reads ``options``."""

    options = []


@pytest.fixture
def ini(tmp_path, monkeypatch):
    """Write an INI file (data_dir defaults to a fresh temp directory) and return its path."""
    monkeypatch.chdir(tmp_path)  # the default data_dir is relative: keep it out of the repo
    data_dir = tmp_path / "data"

    def write(text: str, with_data_dir: bool = True) -> str:
        text = textwrap.dedent(text)
        if with_data_dir:
            if "[server]" in text:
                text = text.replace("[server]", f"[server]\ndata_dir = {data_dir}", 1)
            else:
                text = f"[server]\ndata_dir = {data_dir}\n" + text
        path = tmp_path / "xmppd.ini"
        path.write_text(text)
        return str(path)
    return write


def config_error(path: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(path)
    message = str(info.value)
    assert "\n" not in message, message
    assert path in message, message
    return message


def test_defaults(ini):
    config = load(ini(""))
    server, c2s = config.server, config.c2s
    assert config.domains == ["localhost"]
    assert server["storage"] == "sqlite:xmppd.sqlite3"
    assert server["components"] == ["disco", "ping", "version", "time", "roster", "presence",
                                    "messaging", "offline", "carbons", "mam", "blocking", "private",
                                    "last", "vcard", "vcard_update", "extdisco", "register",
                                    "pubsub", "caps", "pep", "bookmarks", "vcard4", "muc",
                                    "upload", "csi", "push"]
    assert server["max_stanza_size"] == 262144
    assert server["scram_iterations"] == 10000
    assert server["certificate"] == "" and server["private_key"] == ""
    assert (c2s["port"], c2s["direct_tls_port"]) == (5222, 5223)
    assert c2s["require_encryption"] is True and c2s["allow_plain"] is True
    assert set(config.components) == set(server["components"])


def test_component_option_defaults(ini):
    config = load(ini(""))
    assert config.component("version") == {"show_os": False}
    register = config.component("register")
    assert register["allow_registration"] is False
    assert (register["rate_limit"], register["rate_period"], register["min_password_length"]) == (3, 600, 6)


def test_default_data_dir_is_relative_to_working_directory(ini, tmp_path):
    config = load(ini("", with_data_dir=False))
    assert config.server["data_dir"] == str(tmp_path / "data")


def test_values_are_parsed(ini):
    config = load(ini("""
        [server]
        domains = example.org, Example.NET
        components = disco ping version
        max_stanza_size = 65536
        [c2s]
        require_encryption = no
        port = 0
        [component:version]
        show_os = yes
    """))
    assert config.domains == ["example.org", "example.net"]
    assert config.server["max_stanza_size"] == 65536
    assert config.c2s["require_encryption"] is False and config.c2s["port"] == 0
    assert config.component("version")["show_os"] is True
    assert list(config.components) == ["disco", "ping", "version"]


def test_unknown_section(ini):
    message = config_error(ini("[bogus]\nx = 1\n"))
    assert "[bogus]" in message and "unknown section" in message


def test_unknown_option(ini):
    message = config_error(ini("[server]\ndomian = example.org\n"))
    assert "[server] domian" in message and "unknown option" in message


def test_unknown_option_in_component_section(ini):
    message = config_error(ini("[component:version]\nshow_oss = true\n"))
    assert "[component:version] show_oss" in message and "unknown option" in message


def test_bad_integer(ini):
    message = config_error(ini("[server]\nmax_stanza_size = lots\n"))
    assert "[server] max_stanza_size" in message and "integer" in message


def test_integer_below_minimum(ini):
    message = config_error(ini("[server]\nmax_stanza_size = 10\n"))
    assert "[server] max_stanza_size" in message and "at least 1024" in message


def test_port_above_maximum(ini):
    message = config_error(ini("[c2s]\nport = 70000\n"))
    assert "[c2s] port" in message


def test_bad_boolean(ini):
    message = config_error(ini("[c2s]\nrequire_encryption = maybe\n"))
    assert "[c2s] require_encryption" in message and "maybe" in message


def test_bad_boolean_in_component_section(ini):
    message = config_error(ini("[component:register]\nallow_registration = sure\n"))
    assert "[component:register] allow_registration" in message


@pytest.mark.parametrize("value", ["user@example.org", "example.org/res", "exa mple!.org",
                                   "-bad.example", "bad..example"])
def test_bad_domain(ini, value):
    message = config_error(ini(f"[server]\ndomains = {value}\n"))
    assert "[server] domains" in message


def test_bad_choice(ini):
    message = config_error(ini("[server]\nsqlite_synchronous = extra\n"))
    assert "[server] sqlite_synchronous" in message


def test_bad_storage_url(ini):
    message = config_error(ini("[server]\nstorage = postgres://db\n"))
    assert "[server] storage" in message


def test_component_section_for_a_component_not_enabled(ini):
    message = config_error(ini("""
        [server]
        components = disco ping
        [component:time]
    """))
    assert "[component:time]" in message and "[server] components" in message


def test_unknown_component_name(ini):
    message = config_error(ini("[server]\ncomponents = disco nosuchthing\n"))
    assert "[server] components" in message and "nosuchthing" in message


def test_third_party_component_by_dotted_path(ini):
    config = load(ini(f"""
        [server]
        components = disco gizmo
        [component:gizmo]
        class = {THIRD_PARTY}
    """))
    assert config.components["gizmo"] is ThirdParty
    assert config.component("gizmo") == {}


@pytest.mark.parametrize("dotted", ["no_such_module_xyz:Thing", f"{__name__}:NoSuchClass"])
def test_third_party_class_that_does_not_import(ini, dotted):
    message = config_error(ini(f"""
        [server]
        components = disco gizmo
        [component:gizmo]
        class = {dotted}
    """))
    assert "[component:gizmo] class" in message and dotted in message


def test_syntax_error_is_one_line_with_file_name(ini):
    message = config_error(ini("[server\ndomains = x\n"))
    assert message


def test_missing_file_is_a_config_error(tmp_path):
    path = str(tmp_path / "nope.ini")
    message = config_error(path)
    assert "cannot read" in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to any directory, so "
                    "data_dir can't be made unwritable by permissions")
def test_data_dir_not_writable(ini, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        message = config_error(ini(f"[server]\ndata_dir = {locked}\n", with_data_dir=False))
    finally:
        locked.chmod(0o700)
    assert "[server] data_dir" in message and "not writable" in message


def test_data_dir_that_cannot_be_created(ini, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    message = config_error(ini(f"[server]\ndata_dir = {blocker}/sub\n", with_data_dir=False))
    assert "[server] data_dir" in message and "cannot create" in message


def test_missing_configured_certificate(ini, tmp_path):
    missing = tmp_path / "missing.pem"
    message = config_error(ini(f"[server]\ncertificate = {missing}\n"))
    assert "[server] certificate" in message and str(missing) in message


def test_certificate_file_without_a_certificate(ini, tmp_path):
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN NOTHING-----\n")
    message = config_error(ini(f"[server]\ncertificate = {junk}\nprivate_key = {junk}\n"))
    assert "[server]" in message and ("certificate" in message or "private_key" in message)


def test_overrides_apply_on_top_of_the_file(ini):
    config = load(ini(""), overrides={"c2s": {"port": "0"}, "server": {"components": "disco"}})
    assert config.c2s["port"] == 0 and list(config.components) == ["disco"]


def test_twistd_tunes_the_garbage_collector_of_its_own_process_only():
    """`twistd xmppd` freezes start-up objects and collects less often; importing
    or embedding the service changes nothing (checked in a fresh interpreter)."""
    import subprocess
    import sys
    code = ("import gc; before = gc.get_threshold(); import xmppd.service as s; "
            "assert gc.get_threshold() == before; s.tune_garbage_collector(); "
            "assert gc.get_threshold() == s.GC_THRESHOLD, gc.get_threshold(); "
            "assert gc.get_freeze_count() > 0; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


def test_an_output_buffer_smaller_than_two_stanzas_is_refused(ini):
    message = config_error(ini("[server]\nmax_stanza_size = 65536\n[c2s]\nmax_output_buffer = 100000\n"))
    assert "[c2s] max_output_buffer" in message and "max_stanza_size" in message
    load(ini("[server]\nmax_stanza_size = 65536\n[c2s]\nmax_output_buffer = 131072\n"))
