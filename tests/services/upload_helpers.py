"""Shared helpers of the upload tests (tests/services/test_upload_*.py): an
in-memory server with the upload service on upload.localhost and the HTTP
service (not listening unless a test asks), slot requests written once, and the error a stanza
carries read back.

Imported by the test modules with their directory on sys.path, as
tests/services/pubsub_core_fakes.py is (test modules have no package)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer, task
from twisted.words.xish import domish

from xmppd import ns
from xmppd.http.site import HTTPService
from xmppd.services.upload.service import Upload, UploadService
from xmppd.testing import FakeSession, Harness, only, result_of

UPLOAD_DOMAIN = "upload.localhost"


def make_harness(tmp_path, clock: task.Clock | None = None, http: bool = True,
                 endpoints: str | None = None, **upload_options: Any) -> Harness:
    """A server with disco and the upload service (its files in ``tmp_path``);
    ``upload_options`` go to ``[component:upload]``, ``endpoints`` to
    ``[http] endpoints``."""
    options: dict[str, dict[str, Any]] = {
        "server": {"data_dir": str(tmp_path)},
        "component:upload": {k: str(v) for k, v in upload_options.items()},
    }
    if endpoints is not None:
        options["http"] = {"endpoints": endpoints}
    clock = clock if clock is not None else task.Clock()
    h = Harness(["disco", "upload"], clock=clock, options=options)
    if http:
        # The real HTTP service of [http] (defaults: HTTPS on 5281), not
        # listening; a test that wants it on a socket calls listen_on.
        h.server.http = HTTPService(h.config.http, h.config.domains, clock=clock)
        service(h).mount(h.server.http)
    inline_files(service(h))
    return h


def inline_files(upload_service: UploadService) -> None:
    """File writes run inline (no thread) so a test sees them done at once."""
    upload_service.files.run_blocking = lambda f, *a: defer.maybeDeferred(f, *a)


def service(h: Harness) -> UploadService:
    return h.component("upload")


def request(session: FakeSession, filename: str | None = "cat.jpg", size: Any = 1000,
            content_type: str | None = "image/jpeg", type: str = "get",
            to: str = UPLOAD_DOMAIN, id: str = "slot1") -> domish.Element:
    """Send a slot request; return the one answer."""
    attrs = ""
    if filename is not None:
        attrs += f" filename={quoteattr(filename)}"
    if size is not None:
        attrs += f" size='{size}'"
    if content_type is not None:
        attrs += f" content-type={quoteattr(content_type)}"
    session.feed(f"<iq type='{type}' id='{id}' to='{to}'>"
                 f"<request xmlns='{ns.HTTP_UPLOAD}'{attrs}/></iq>")
    return only(session)


def quoteattr(value: str) -> str:
    from xml.sax.saxutils import quoteattr as q
    return q(value)


@dataclass
class Slot:
    get: str
    put: str
    headers: dict[str, str]

    @property
    def slot_id(self) -> str:
        return self.put.split("/")[-2]

    @property
    def token(self) -> str:
        return self.headers["Authorization"].removeprefix("Bearer ")


def slot_of(reply: domish.Element) -> Slot:
    assert reply["type"] == "result", reply.toXml()
    slot = next(reply.elements(ns.HTTP_UPLOAD, "slot"))
    get = next(slot.elements(ns.HTTP_UPLOAD, "get"))
    put = next(slot.elements(ns.HTTP_UPLOAD, "put"))
    headers = {h["name"]: str(h) for h in put.elements(ns.HTTP_UPLOAD, "header")}
    return Slot(get["url"], put["url"], headers)


def stanza_error(reply: domish.Element) -> tuple[str, str, str | None, list[domish.Element]]:
    """(error type, condition, text, other children) of an error reply."""
    assert reply["type"] == "error", reply.toXml()
    error = next(c for c in reply.elements() if c.name == "error")
    conditions = [c.name for c in error.elements()
                  if c.uri == ns.STANZA_ERRORS and c.name != "text"]
    assert len(conditions) == 1, error.toXml()
    texts = [str(c) for c in error.elements(ns.STANZA_ERRORS, "text")]
    extra = [c for c in error.elements() if c.uri != ns.STANZA_ERRORS]
    return error["type"], conditions[0], texts[0] if texts else None, extra


def upload_bytes(h: Harness, slot: Slot, data: bytes) -> bool:
    """Store ``data`` as the slot's file, as a successful PUT does."""
    upload: Upload = service(h).uploads[slot.slot_id]
    return result_of(service(h).store_file(upload, io.BytesIO(data)))
