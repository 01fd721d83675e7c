"""One INI file, validated whole before anything starts.

The core declares its sections and options here (:data:`CORE_OPTIONS`); every
component declares its own in its class (``Component.options``), read from the
``[component:<name>]`` section. :func:`load` checks the file against all of them
and raises :class:`ConfigError` with one line naming the file, section and option,
so that neither ``twistd xmppd`` nor ``xmppd check`` ever starts half-configured
or answers a typo with a traceback.
"""

from __future__ import annotations

import configparser
import importlib
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from xmppd import jid as jidlib


class ConfigError(Exception):
    """A configuration problem; ``str()`` is the one line shown to the operator."""


class _BadValue(ValueError):
    """Raised by option types; the loader adds file/section/option context."""


# -- option types: each turns the INI text into a value or raises _BadValue -----

def boolean(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "yes", "true", "on"):
        return True
    if value in ("0", "no", "false", "off"):
        return False
    raise _BadValue(f"expected true or false, got {text!r}")


def integer(minimum: int | None = None, maximum: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise _BadValue(f"expected an integer, got {text!r}") from None
        if minimum is not None and value < minimum:
            raise _BadValue(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise _BadValue(f"must be at most {maximum}, got {value}")
        return value
    parse.__name__ = "integer"
    return parse


def string(text: str) -> str:
    return text.strip()


def words(text: str) -> list[str]:
    """A list separated by commas and/or whitespace."""
    return [w for w in text.replace(",", " ").split() if w]


def _parsed_jids(text: str, what: str) -> list:
    result = []
    for word in words(text):
        try:
            result.append(jidlib.parse(word))
        except jidlib.InvalidJID as e:
            raise _BadValue(f"{word!r} is not a valid {what}: {e}") from None
    return result


def domains(text: str) -> list[str]:
    result = []
    for parsed in _parsed_jids(text, "domain"):
        if parsed.user is not None or parsed.resource is not None:
            raise _BadValue(f"{parsed.full()!r} is a JID, not a domain")
        result.append(parsed.host)
    return result


def jids(text: str) -> list[str]:
    """A list of bare JIDs (normalised), separated by commas and/or whitespace."""
    result = []
    for parsed in _parsed_jids(text, "JID"):
        if parsed.resource is not None:
            raise _BadValue(f"{parsed.full()!r} has a resource; give a bare JID")
        result.append(parsed.userhost())
    return result


def path(text: str) -> str:
    text = text.strip()
    return os.path.abspath(os.path.expanduser(text)) if text else ""


def host_port(text: str, default_port: int) -> tuple[str, int]:
    """``host``, ``host:port`` or ``[v6]:port`` → (host, port)."""
    text = text.strip()
    host, port = text, default_port
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise _BadValue(f"{text!r} is not host:port")
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    if not host:
        raise _BadValue(f"{text!r} names no host")
    try:
        port = int(port)
    except ValueError:
        raise _BadValue(f"{text!r}: the port is not a number") from None
    if not 0 < port < 65536:
        raise _BadValue(f"{text!r}: no such port")
    return host, port


def choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in allowed:
            raise _BadValue(f"expected one of {', '.join(allowed)}, got {text!r}")
        return value
    parse.__name__ = "choice"
    return parse


def http_url(text: str) -> str:
    """An absolute ``http://`` or ``https://`` URL without query or fragment
    (or empty); a trailing slash is dropped."""
    from urllib.parse import urlsplit

    text = text.strip()
    if not text:
        return ""
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as e:
        raise _BadValue(f"{text!r} is not a URL: {e}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _BadValue(f"expected an http:// or https:// URL, got {text!r}")
    if parts.query or parts.fragment:
        raise _BadValue(f"{text!r} has a query or fragment; give the URL's base")
    return text.rstrip("/")


def origins(text: str) -> list[str]:
    """Web origins (``scheme://host[:port]``) or ``*``, separated by commas
    and/or whitespace."""
    from urllib.parse import urlsplit

    result = []
    for word in words(text):
        if word != "*":
            try:
                parts = urlsplit(word)
                parts.port  # noqa: B018
            except ValueError:
                parts = None
            if parts is None or not parts.scheme or not parts.hostname \
                    or parts.path or parts.query or parts.fragment:
                raise _BadValue(f"{word!r} is not an origin (scheme://host[:port]) nor *")
        result.append(word)
    return result


@dataclass(frozen=True)
class Option:
    """One declared option: its name, how to parse it, its default, what it is for."""

    name: str
    type: Callable[[str], Any]
    default: str
    help: str = ""

    def parse(self, text: str) -> Any:
        return self.type(text)


#: The core's sections. Components add ``component:<name>`` sections.
CORE_OPTIONS: dict[str, list[Option]] = {
    "server": [
        Option("domains", domains, "localhost", "the domains this server hosts"),
        Option("data_dir", path, "data", "where the database and generated certificates live"),
        Option("storage", string, "sqlite:xmppd.sqlite3",
               "storage URL: sqlite:<file> (relative to data_dir) or memory:"),
        Option("sqlite_synchronous", choice("normal", "full"), "normal",
               "SQLite synchronous mode: normal survives process crashes, full also power loss"),
        Option("certificate", path, "",
               "PEM certificate (chain); empty: a self-signed one in data_dir/certs, made on first start"),
        Option("private_key", path, "", "PEM private key; empty: read from the certificate file"),
        Option("components", words, "disco ping version time roster presence messaging offline "
               "carbons mam blocking private last vcard vcard_update extdisco register pubsub "
               "caps pep bookmarks vcard4 muc upload csi push",
               "the components to enable, by name"),
        Option("max_stanza_size", integer(1024), "262144",
               "largest stanza accepted, in bytes (policy-violation beyond)"),
        Option("scram_iterations", integer(4096), "10000",
               "PBKDF2 iterations for newly stored SCRAM credentials"),
        Option("admins", jids, "",
               "bare JIDs with administrator rights on every service of this server"),
    ],
    "c2s": [
        Option("interfaces", words, "0.0.0.0", "addresses the client ports listen on"),
        Option("port", integer(0, 65535), "5222", "client port with STARTTLS (0: off)"),
        Option("direct_tls_port", integer(0, 65535), "5223",
               "client port with TLS from the first byte, XEP-0368 (0: off)"),
        Option("require_encryption", boolean, "true",
               "refuse authentication before STARTTLS"),
        Option("allow_plain", boolean, "true", "offer SASL PLAIN (never without TLS)"),
        Option("auth_timeout", integer(1), "60",
               "seconds a connection may take from its first byte to binding a resource, "
               "TLS handshake and SASL included (connection-timeout)"),
        Option("idle_timeout", integer(1), "840",
               "seconds of silence from a bound client before a whitespace keep-alive "
               "(announced as XEP-0478 idle-seconds)"),
        Option("close_timeout", integer(1), "5",
               "seconds a closing connection may take to close cleanly before it is aborted"),
        Option("send_timeout", integer(1), "60",
               "seconds a client may read nothing while output waits for it (connection-timeout)"),
        Option("max_output_buffer", integer(16384), "1048576",
               "bytes of output held for a client that reads slowly (policy-violation beyond); "
               "past a quarter of it, whoever fills it is read from no more until it drains"),
        Option("max_resources", integer(0), "10",
               "sessions one account may have at once (resource-constraint beyond; 0: no limit)"),
        Option("max_sasl_steps", integer(2), "8",
               "SASL messages one authentication attempt may take (malformed-request beyond)"),
        Option("backlog", integer(1), "1024",
               "connections the kernel queues before xmppd accepts them (the listen backlog)"),
        Option("stream_management", boolean, "true",
               "offer XEP-0198 stream management (acks and resumption)"),
        Option("resume_timeout", integer(0), "600",
               "seconds a session whose connection dropped waits to be resumed (XEP-0198 "
               "hibernation; 0: no resumption)"),
        Option("max_unacked", integer(1), "500",
               "stanzas kept for a client until it acknowledges them (XEP-0198); a session "
               "past it ends, its unacknowledged messages to offline storage"),
    ],
    "s2s": [
        Option("interfaces", words, "0.0.0.0", "addresses the server-to-server ports listen on"),
        Option("port", integer(0, 65535), "5269",
               "server-to-server port with STARTTLS (0: no incoming s2s on it)"),
        Option("direct_tls_port", integer(0, 65535), "0",
               "server-to-server port with TLS from the first byte, XEP-0368 (0: off)"),
        Option("enabled", boolean, "true",
               "federate with other servers at all (false: stanzas to other domains bounce "
               "with remote-server-not-found, and nothing listens)"),
        Option("ca_file", path, "",
               "PEM file of the certificate authorities whose certificates count as "
               "authenticated; empty: the system's"),
        Option("secure_auth", boolean, "true",
               "accept only remote servers with a certificate that verifies (SASL EXTERNAL, or "
               "dialback over an authenticated TLS); false: also XEP-0220 dialback over TLS "
               "with a certificate that does not verify, as Prosody's s2s_secure_auth = false"),
        Option("require_encryption", boolean, "true",
               "refuse server-to-server streams without TLS"),
        Option("dialback", boolean, "true", "offer and use XEP-0220 server dialback"),
        Option("connect_timeout", integer(1), "60",
               "seconds an outgoing link may take to connect and authenticate before its "
               "queued stanzas bounce (remote-server-timeout)"),
        Option("auth_timeout", integer(1), "60",
               "seconds an incoming stream may take to authenticate before it is closed "
               "(connection-timeout)"),
        Option("idle_timeout", integer(0), "600",
               "seconds a link may carry nothing before it is closed (0: never)"),
        Option("max_queue", integer(1), "500",
               "stanzas queued for a domain while its link is being set up; more bounce "
               "(resource-constraint)"),
        Option("max_stanza_rate", integer(0), "1000",
               "stanzas per second one incoming link may send, averaged over a few seconds; "
               "beyond it, reading from the link pauses (0: no limit)"),
        Option("max_output_buffer", integer(16384), "4194304",
               "bytes of output held for a remote server that reads slowly "
               "(policy-violation beyond)"),
    ],
    "external": [
        Option("interfaces", words, "127.0.0.1",
               "addresses the XEP-0114 external component port listens on"),
        Option("port", integer(0, 65535), "5347",
               "the XEP-0114 port; it listens only when an [external:<domain>] is configured "
               "(0: off)"),
    ],
    "http": [
        Option("port", integer(0, 65535), "5280", "plain HTTP port (0: off)"),
        Option("tls_port", integer(0, 65535), "5281",
               "HTTPS port, with the server's certificate (0: off)"),
        Option("interfaces", words, "127.0.0.1", "addresses the HTTP ports listen on"),
        Option("endpoints", words, "websocket bosh host-meta conversejs upload",
               "the endpoints served, by name"),
        Option("cors_origins", origins, "*",
               "web origins whose pages may use the endpoints (CORS); *: any"),
        Option("max_body_size", integer(0), "10485760",
               "largest request body accepted, in bytes (413 beyond)"),
        Option("loopback_is_secure", boolean, "true",
               "whether a WebSocket or BOSH client connecting from this machine over plain "
               "HTTP, with no proxy headers, counts as encrypted (its traffic crosses no "
               "network); set false behind a reverse proxy that sends no X-Forwarded-For"),
        Option("public_url", http_url, "",
               "what URLs handed to clients start with; empty: http(s)://<first domain>:<port>"),
        Option("max_connections", integer(1), "4096",
               "HTTP connections open at once; more are closed as they arrive"),
        Option("idle_timeout", integer(1), "120",
               "seconds a connection may wait for its next request before it is closed"),
        Option("bosh_max_inactivity", integer(1), "60",
               "seconds a BOSH session may go without any request before it ends"),
        Option("bosh_max_wait", integer(1), "120",
               "longest a BOSH request is held for output, in seconds (clients may ask less)"),
        Option("bosh_max_polling", integer(0), "5",
               "shortest interval between empty requests of a polling BOSH session, in seconds"),
        Option("bosh_max_sessions", integer(1), "10000",
               "BOSH sessions at once; more are refused (remote-connection-failed)"),
        Option("bosh_max_input_buffer", integer(1024), "262144",
               "bytes of a BOSH client's stanzas held while its session reads nothing (its "
               "output or a recipient's waits): further requests wait unread until it drains"),
    ],
}


#: The options of an ``[external:<domain>]`` section (XEP-0114).
EXTERNAL_COMPONENT_OPTIONS = [
    Option("secret", string, "", "the shared secret of the component's handshake"),
]


@dataclass
class Config:
    """A validated configuration: parsed values by section, and the enabled components."""

    path: str
    sections: dict[str, dict[str, Any]]
    components: dict[str, type] = field(default_factory=dict)

    def get(self, section: str, option: str) -> Any:
        return self.sections[section][option]

    @property
    def server(self) -> dict[str, Any]:
        return self.sections["server"]

    @property
    def c2s(self) -> dict[str, Any]:
        return self.sections["c2s"]

    @property
    def http(self) -> dict[str, Any]:
        return self.sections["http"]

    @property
    def s2s(self) -> dict[str, Any]:
        return self.sections["s2s"]

    @property
    def s2s_routes(self) -> dict[str, tuple[str, int, bool]]:
        """``[s2s:routes]``: domain → (host, port, direct TLS) that overrides DNS."""
        return self.sections["s2s:routes"]

    @property
    def externals(self) -> dict[str, dict[str, Any]]:
        """``[external:<domain>]`` sections: domain → its options (``secret``)."""
        return {name[9:]: values for name, values in self.sections.items()
                if name.startswith("external:")}

    def component(self, name: str) -> dict[str, Any]:
        return self.sections.get(f"component:{name}", {})

    @property
    def domains(self) -> list[str]:
        return self.server["domains"]


def resolve_component(name: str, dotted: str | None = None) -> type:
    """The component class for ``name``: a dotted ``module:Class``, a built-in, or
    one registered under the ``xmppd.components`` entry point group."""
    from xmppd.components import BUILTIN

    target = dotted or BUILTIN.get(name)
    if target is None:
        from importlib.metadata import entry_points

        for ep in entry_points(group="xmppd.components"):
            if ep.name == name:
                return ep.load()
        raise _BadValue(f"no built-in component called {name!r}; "
                        "a third-party one needs a 'class = module:Class' option")
    module_name, _, attr = target.partition(":")
    try:
        obj = importlib.import_module(module_name)
        for part in attr.split(".") if attr else ():
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise _BadValue(f"cannot load {target!r}: {e}") from None
    return obj


def default_path() -> str:
    """Where the INI file is looked for when ``-c`` is not given: ``$XMPPD_CONFIG``,
    else ``etc/xmppd.ini`` in the current directory (a source checkout), else
    ``/etc/xmppd/xmppd.ini``."""
    local = os.path.join("etc", "xmppd.ini")
    return os.environ.get("XMPPD_CONFIG") or (local if os.path.exists(local) else "/etc/xmppd/xmppd.ini")


def load(path_: str, overrides: dict[str, dict[str, str]] | None = None) -> Config:
    """Read and validate the INI file at ``path_``.

    ``overrides`` (section → option → text) is applied on top of the file, as
    an embedding application or a test might do.

    :raises ConfigError: one line naming file, section and option.
    """
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#", ";"))
    parser.optionxform = str  # option names are case-sensitive, as documented
    try:
        with open(path_, encoding="utf-8") as f:
            parser.read_file(f)
    except OSError as e:
        raise ConfigError(f"{path_}: cannot read: {e.strerror}") from None
    except configparser.Error as e:
        raise ConfigError(f"{path_}: {' '.join(str(e).split())}") from None
    for section, values in (overrides or {}).items():
        if not parser.has_section(section):
            parser.add_section(section)
        for key, value in values.items():
            parser.set(section, key, str(value))
    return from_parser(parser, path_)


def from_dict(sections: dict[str, dict[str, Any]], name: str = "<config>",
              classes: dict[str, type] | None = None) -> Config:
    """Validate a configuration given as a dict (embedding and tests).

    ``classes`` maps component names to classes given directly rather than by
    dotted name (a component class defined inside a test, for example).
    """
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    for section, values in sections.items():
        parser.add_section(section)
        for key, value in values.items():
            parser.set(section, key, " ".join(value) if isinstance(value, (list, tuple)) else str(value))
    return from_parser(parser, name, classes)


def _parse_section(where: str, options: Iterable[Option], given: dict[str, str]) -> dict[str, Any]:
    declared = {o.name: o for o in options}
    for key in given:
        if key not in declared:
            raise ConfigError(f"{where} {key}: unknown option "
                              f"(known: {', '.join(sorted(declared)) or 'none'})")
    values = {}
    for name, option in declared.items():
        try:
            values[name] = option.parse(given.get(name, option.default))
        except _BadValue as e:
            raise ConfigError(f"{where} {name}: {e}") from None
    return values


def from_parser(parser: configparser.ConfigParser, path_: str,
                classes: dict[str, type] | None = None) -> Config:
    sections: dict[str, dict[str, Any]] = {}
    for section, options in CORE_OPTIONS.items():
        given = dict(parser.items(section)) if parser.has_section(section) else {}
        sections[section] = _parse_section(f"{path_}: [{section}]", options, given)

    enabled = sections["server"]["components"]
    components: dict[str, type] = {}
    for name in enabled:
        section = f"component:{name}"
        given = dict(parser.items(section)) if parser.has_section(section) else {}
        dotted = given.pop("class", None)
        try:
            cls = (classes or {}).get(name) or resolve_component(name, dotted)
        except _BadValue as e:
            where = f"[{section}] class" if dotted else "[server] components"
            raise ConfigError(f"{path_}: {where}: {e}") from None
        components[name] = cls
        declared = cls.declared_options() if hasattr(cls, "declared_options") else cls.options
        sections[section] = _parse_section(f"{path_}: [{section}]", declared, given)
        _resolve_service_domain(path_, name, cls, sections)

    routes = dict(parser.items("s2s:routes")) if parser.has_section("s2s:routes") else {}
    sections["s2s:routes"] = {}
    for domain, target in routes.items():
        try:
            key = domains(domain)
            if len(key) != 1:
                raise _BadValue("one domain per line")
            address, _, mode = target.strip().partition(" ")
            if mode.strip() not in ("", "tls"):
                raise _BadValue(f"{mode.strip()!r}: only 'tls' (direct TLS, XEP-0368) may "
                                "follow the address")
            sections["s2s:routes"][key[0]] = (*host_port(address, 5269), mode.strip() == "tls")
        except _BadValue as e:
            raise ConfigError(f"{path_}: [s2s:routes] {domain}: {e}") from None
    for section in parser.sections():
        if not section.startswith("external:"):
            continue
        where = f"{path_}: [{section}]"
        try:
            name = domains(section[9:])
        except _BadValue as e:
            raise ConfigError(f"{where}: {e}") from None
        if len(name) != 1 or name[0] in sections["server"]["domains"]:
            raise ConfigError(f"{where}: the section names one domain that is not a user domain")
        values = _parse_section(where, EXTERNAL_COMPONENT_OPTIONS, dict(parser.items(section)))
        if not values["secret"]:
            raise ConfigError(f"{where} secret: an external component needs a secret")
        sections[section] = values

    for section in parser.sections():
        if section in sections:
            continue
        if section.startswith("component:"):
            raise ConfigError(f"{path_}: [{section}]: component {section[10:]!r} is configured "
                              "but not listed in [server] components")
        raise ConfigError(f"{path_}: [{section}]: unknown section "
                          f"(known: {', '.join(CORE_OPTIONS)}, s2s:routes, component:<name>, "
                          "external:<domain>)")

    buffer, stanza = sections["c2s"]["max_output_buffer"], sections["server"]["max_stanza_size"]
    if buffer < 2 * stanza:
        raise ConfigError(f"{path_}: [c2s] max_output_buffer: {buffer} bytes cannot hold two "
                          f"stanzas of [server] max_stanza_size ({stanza}); a client receiving "
                          "a large stanza would be disconnected for it")
    http = sections["http"]
    if http["port"] and http["port"] == http["tls_port"]:
        raise ConfigError(f"{path_}: [http] tls_port: {http['tls_port']} is [http] port "
                          "already; HTTP and HTTPS need a port each")
    config = Config(path_, sections, components)
    _check_environment(config)
    return config


def _resolve_service_domain(path_: str, name: str, cls: type,
                            sections: dict[str, dict[str, Any]]) -> None:
    """A hosted service's domain: as configured, else ``<subdomain>.<first
    user domain>``; never a user domain nor another service's domain."""
    values = sections[f"component:{name}"]
    if "domain" not in values or not getattr(cls, "is_service", False):
        return
    users = sections["server"]["domains"]
    if not values["domain"]:
        values["domain"] = f"{cls.subdomain or name}.{users[0]}"
    domain = values["domain"]
    if domain in users:
        raise ConfigError(f"{path_}: [component:{name}] domain: {domain} is a user domain "
                          "([server] domains); a service needs a domain of its own")
    for other, other_values in sections.items():
        if other.startswith("component:") and other != f"component:{name}" \
                and other_values.get("domain") == domain:
            raise ConfigError(f"{path_}: [component:{name}] domain: {domain} is served "
                              f"already by [{other}]")


def single_domain(text: str) -> str:
    """One domain (or empty, for a default made later)."""
    found = domains(text)
    if len(found) > 1:
        raise _BadValue(f"expected one domain, got {len(found)}")
    return found[0] if found else ""


def _check_environment(config: Config) -> None:
    """Checks that touch the file system: data_dir writable, certificate readable."""
    server = config.server
    where = f"{config.path}: [server]"
    data_dir = server["data_dir"]
    try:
        os.makedirs(data_dir, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{where} data_dir: cannot create {data_dir}: {e.strerror}") from None
    if not os.access(data_dir, os.W_OK | os.X_OK):
        raise ConfigError(f"{where} data_dir: {data_dir} is not writable")
    from xmppd.storage import storage_url_problem

    problem = storage_url_problem(server["storage"])
    if problem:
        raise ConfigError(f"{where} storage: {problem}")
    from xmppd import tls

    for option in ("certificate", "private_key"):
        filename = server[option]
        if filename:
            problem = tls.pem_problem(filename, key=option == "private_key" or not server["private_key"])
            if problem:
                raise ConfigError(f"{where} {option}: {problem}")
    ca_file = config.s2s["ca_file"]
    if ca_file:
        problem = tls.ca_file_problem(ca_file)
        if problem:
            raise ConfigError(f"{config.path}: [s2s] ca_file: {problem}")
