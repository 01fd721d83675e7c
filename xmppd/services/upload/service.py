"""XEP-0363 HTTP File Upload on a domain of its own (``upload.<first domain>``).

A client asks the service for a *slot*::

    <iq type='get' to='upload.localhost'>
      <request xmlns='urn:xmpp:http:upload:0' filename='cat.jpg' size='23456'
               content-type='image/jpeg'/>
    </iq>

and gets a PUT URL with the header that authorises the upload, and the GET
URL it then shares::

    <slot xmlns='urn:xmpp:http:upload:0'>
      <get url='https://localhost:5281/upload/<slot id>/cat.jpg'/>
      <put url='https://localhost:5281/upload/<slot id>/cat.jpg'>
        <header name='Authorization'>Bearer <token></header>
      </put>
    </slot>

The HTTP side is :mod:`xmppd.services.upload.resource`, mounted on the
server's HTTP service at ``/upload``; the files are kept by
:mod:`xmppd.services.upload.files` under ``<data_dir>/upload/``.

It behaves as Prosody 0.12's ``mod_http_file_share``, stanza for stanza
(checked against a running Prosody): its disco identity ``store/file``
named "HTTP File Upload", the XEP-0128 form announcing ``max-file-size``,
its errors and their texts, in its order of checks:

1. who: with ``access`` empty, any account of this server's domains;
   otherwise only the JIDs and domains listed — ``auth``/``forbidden``;
2. the filename: ``modify``/``bad-request`` "Invalid filename" for a ``/``
   (Prosody's only refusal) and — where Prosody would hand out a URL that
   does not name the file — an empty name, ``.``, ``..``, control
   characters, or more than 255 bytes;
3. the size: not a whole number of bytes, ``modify``/``bad-request`` "File
   size must be positive integer"; beyond ``max_file_size``,
   ``modify``/``not-acceptable`` "File too large" with
   ``<file-too-large><max-file-size>N</max-file-size></file-too-large>``;
4. the whole service's ``global_quota`` (bytes) and ``global_max_files``:
   ``wait``/``resource-constraint`` "Server global storage quota reached";
5. the uploader's ``daily_quota`` (bytes of slots issued in the last 24
   hours, as Prosody counts it): ``wait``/``resource-constraint`` "Daily
   quota reached"; then two bounds Prosody does not have, on what one account
   holds at once: ``quota`` (bytes) and ``max_files``, refused the same way
   ("Quota reached", "Too many files");
6. the content type (``application/octet-stream`` when absent): outside a
   non-empty ``allowed_content_types``, or inside ``blocked_content_types``,
   ``modify``/``not-acceptable`` "File type not allowed" — Prosody's one
   answer for a type it will not take; ``type/*`` matches a whole family.
   A value that is not a media type at all is ``bad-request`` (it would
   become an HTTP header).

Where this differs from Prosody, it is on the side of the files: the token
is an HMAC over the slot (id, size, type, PUT deadline, uploader) under a
secret in ``<data_dir>/upload/secret.key`` rather than a JWT; the PUT
is checked when its headers are in, as Prosody checks it, and again once
its body is: it must have arrived *in full* within ``slot_timeout``
(Prosody only checks when it starts), and a slot left
unused is forgotten ``slot_timeout`` later (Prosody keeps its row until
expiry), so it stops counting against the quotas; the files of a deleted
account are deleted at once (Prosody waits for expiry); an expired file is
deleted at its expiry on the component's clock, not by a daily job, and is
not served meanwhile.

Slots and files are rows of the map store ``upload`` under the host (user
``""``), keyed by slot id, so they survive a restart and are all loaded at
start; a slot is answered only once its row is durable, and a PUT once the
file is on disk and its row says so.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import os
import re
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import quote

from twisted.internet import defer
from twisted.words.xish import domish

from xmppd import jid as jidlib
from xmppd import ns
from xmppd.component import Option, Service, handles
from xmppd.config import integer, jids, string, words
from xmppd.router.events import StanzaEvent, disco_info
from xmppd.services.upload.files import FileStore, new_slot_id

STORE = "upload"
#: The slots and files belong to the service, not to a user: one row set
#: under the host, loaded whole at start (the bounds keep it small).
HOST = ""
#: Bytes of a filename at most (a file system's usual limit; it ends up in
#: URLs and headers).
MAX_FILENAME = 255
DAY = 86400
DEFAULT_TYPE = "application/octet-stream"
#: RFC 7231 §3.1.1.1 media type, parameters allowed; nothing that could
#: break out of a header.
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
MEDIA_TYPE = re.compile(rf"\A{_TOKEN}/{_TOKEN}(\s*;[\x20-\x7e\t]*)?\Z")
#: Upper bound on the digits of a size worth parsing (anything longer is
#: beyond every limit anyway).
MAX_SIZE_DIGITS = 18


@dataclass
class Upload:
    """One slot, and once its PUT succeeded, one stored file."""

    id: str
    owner: str  #: the uploader's bare JID
    filename: str
    size: int
    type: str
    time: float  #: when the slot was issued (component clock)
    deadline: float  #: the PUT must have arrived by then
    done: bool = False  #: the file is on disk

    def value(self) -> dict[str, Any]:
        value = asdict(self)
        del value["id"]
        return value

    @classmethod
    def from_value(cls, slot_id: str, value: dict[str, Any]) -> Upload:
        return cls(id=slot_id, **value)


def media_type(content_type: str) -> str:
    """The media type without parameters, lowercase (what type lists match)."""
    return content_type.split(";", 1)[0].strip().lower()


def type_matches(content_type: str, patterns: frozenset[str]) -> bool:
    """Is ``content_type`` listed, by itself or by its ``family/*``?"""
    kind = media_type(content_type)
    return kind in patterns or f"{kind.partition('/')[0]}/*" in patterns


def valid_filename(name: str | None) -> bool:
    if not name or name in (".", "..") or "/" in name:
        return False
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return False
    return len(name.encode("utf-8")) <= MAX_FILENAME


class UploadError(Exception):
    """A refused slot request: the stanza error Prosody sends for it."""

    def __init__(self, condition: str, type: str, text: str | None = None,
                 extra: domish.Element | None = None):
        super().__init__(text or condition)
        self.condition, self.type, self.text, self.extra = condition, type, text, extra

    def reply(self, event: StanzaEvent) -> domish.Element:
        error = event.error(self.condition, type=self.type, text=self.text)
        if self.extra is not None:
            next(c for c in error.elements() if c.name == "error").addChild(self.extra)
        return error


class UploadService(Service):
    """XEP-0363 HTTP File Upload on ``[component:upload] domain``."""

    name = "upload"
    subdomain = "upload"
    title = "HTTP File Upload"
    identities = [("store", "file", "HTTP File Upload")]
    features = [ns.HTTP_UPLOAD]
    options = [
        Option("name", string, "HTTP File Upload",
               "the service's name in service discovery"),
        Option("max_file_size", integer(1), "10485760",
               "largest file in bytes (announced in disco#info; beyond: not-acceptable + "
               "file-too-large)"),
        Option("allowed_content_types", words, "",
               "content types that may be uploaded (type/* for a family); empty: any"),
        Option("blocked_content_types", words, "",
               "content types that may not be uploaded (type/* for a family)"),
        Option("safe_content_types", words, "image/* video/* audio/* text/plain",
               "content types served inline; others are served as attachments"),
        Option("daily_quota", integer(0), "104857600",
               "bytes of slots one account may request in 24 hours (resource-constraint)"),
        Option("quota", integer(0), "1073741824",
               "bytes one account's files (and unused slots) may take at once"),
        Option("max_files", integer(1), "1000",
               "files (and unused slots) one account may have at once"),
        Option("global_quota", integer(0), "10737418240",
               "bytes all files (and unused slots) together may take"),
        Option("global_max_files", integer(1), "100000",
               "files (and unused slots) the service holds at most"),
        Option("expire_after", integer(0), "604800",
               "seconds a file is kept after its slot was issued (0: until its account is "
               "deleted)"),
        Option("slot_timeout", integer(1), "300",
               "seconds a slot's PUT may take to arrive, in full; later it is refused (410) "
               "and the slot dropped"),
        Option("access", jids, "",
               "JIDs and domains that may upload; empty: every account of this server"),
    ]
    stores = {STORE: "map"}

    def __init__(self, server: Any, config: dict[str, Any]):
        super().__init__(server, config)
        self.title = config["name"]
        self.identities = [("store", "file", config["name"])]
        data_dir = server.config.server["data_dir"]
        self.files = FileStore(os.path.join(data_dir, "upload"))
        self.allowed = frozenset(t.lower() for t in config["allowed_content_types"])
        self.blocked = frozenset(t.lower() for t in config["blocked_content_types"])
        self.safe = frozenset(t.lower() for t in config["safe_content_types"])
        self.access = frozenset(config["access"])
        self.secret = b""
        #: every slot and file, by slot id; and by owner
        self.uploads: dict[str, Upload] = {}
        self.owned: dict[str, dict[str, Upload]] = {}
        #: bytes of every slot and file together
        self.total_size = 0
        #: slot ids whose body is being written
        self.writing: set[str] = set()
        self.loaded = False
        self._waiting: list[defer.Deferred] = []
        #: (when, slot id): when a slot's deadline or a file's expiry comes
        self._due: list[tuple[float, str]] = []
        self._timer: Any = None
        self._unroute = lambda: None

    # -- life cycle -------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.secret = self.files.open()
        d = self.store[STORE].items(HOST)
        d.addCallback(self._load)
        d.addErrback(self._load_failed)
        http = getattr(self.server, "http", None)
        if http is not None:
            self.mount(http)
        else:
            self.log.warn("upload: the HTTP service is off ([http] port and tls_port are 0): "
                          "slot requests will be refused")

    def mount(self, http: Any) -> None:
        """Serve the PUTs and GETs at ``/upload`` on ``http`` (the server's
        HTTP service; the endpoint ``upload`` of ``[http] endpoints``)."""
        from xmppd.services.upload.resource import UploadResource

        self._unroute()
        # A page of another origin (a web client) PUTs with the Authorization
        # header: allowed in CORS, with credentials, as Prosody does.
        self._unroute = http.add_route("/upload", UploadResource(self), endpoint="upload",
                                       cors_headers=("Authorization",), cors_credentials=True)
        if not http.has_route("/upload"):
            self.log.warn("upload: the endpoint 'upload' is not in [http] endpoints: slot "
                          "requests will be refused")
        elif self.config["max_file_size"] > http.max_body_size:
            self.log.warn("upload: [component:upload] max_file_size ({size}) is more than "
                          "[http] max_body_size ({body}): larger uploads will get 413",
                          size=self.config["max_file_size"], body=http.max_body_size)

    def stopService(self) -> Any:
        self._unroute()
        self._unroute = lambda: None
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        return super().stopService()

    def _load(self, rows: dict[str, Any]) -> None:
        """Everything stored: slots whose time is up and files whose file is
        gone are dropped; a slot whose file is there (a crash between the
        rename and the row's update) becomes a file; files no row accounts
        for are removed."""
        now = self.clock.seconds()
        for slot_id, value in rows.items():
            try:
                upload = Upload.from_value(slot_id, value)
                present = self.files.exists(slot_id)
            except (TypeError, ValueError):
                self.log.warn("upload: dropping a damaged row {id}", id=slot_id)
                self._logged(self.store[STORE].delete(HOST, slot_id))
                continue
            if present and not upload.done:
                upload.done = True
                self._logged(self.store[STORE].set(HOST, slot_id, upload.value()))
            elif upload.done and not present:
                self.log.warn("upload: the file of {id} is missing; forgetting it", id=slot_id)
                self._logged(self.store[STORE].delete(HOST, slot_id))
                continue
            self._add(upload)
        removed = self.files.sweep(self.uploads)
        if removed:
            self.log.info("upload: removed {n} files no slot accounts for", n=len(removed))
        self.loaded = True
        self._expire(now)
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)

    def _load_failed(self, failure: Any) -> None:
        self.log.failure("upload: loading the slots of {domain} failed", failure,
                         domain=self.domain)
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.errback(failure)

    def ready(self) -> defer.Deferred:
        """Fires once the stored slots are loaded (at once, after that)."""
        if self.loaded:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self._waiting.append(d)
        return d

    # -- the index ------------------------------------------------------------------

    def _add(self, upload: Upload) -> None:
        self.uploads[upload.id] = upload
        self.total_size += upload.size
        self.owned.setdefault(upload.owner, {})[upload.id] = upload
        self._schedule(self.due(upload), upload.id)

    def _forget(self, upload: Upload) -> defer.Deferred:
        """Drop a slot or file: from memory at once, then the file, then its row."""
        if self.uploads.pop(upload.id, None) is None:
            return defer.succeed(None)
        mine = self.owned.get(upload.owner, {})
        mine.pop(upload.id, None)
        if not mine:
            self.owned.pop(upload.owner, None)
        self.total_size -= upload.size
        self.files.delete(upload.id)
        return self._logged(self.store[STORE].delete(HOST, upload.id))

    def _logged(self, d: defer.Deferred) -> defer.Deferred:
        """A storage write nobody waits for: its failure is logged, not lost."""
        return d.addErrback(lambda f: self.log.failure("upload: a storage write failed", f))

    def lookup(self, slot_id: str) -> Upload | None:
        """The slot or file ``slot_id``, unless unknown or expired."""
        upload = self.uploads.get(slot_id)
        if upload is None:
            return None
        due = self.due(upload)
        if upload.done and due is not None and self.clock.seconds() >= due:
            return None
        return upload

    def due(self, upload: Upload) -> float | None:
        """When ``upload`` goes: a file at its expiry; an unused slot
        ``slot_timeout`` after its deadline (until then a late PUT is told
        410 Gone, not 404)."""
        if not upload.done:
            return upload.deadline + self.config["slot_timeout"]
        expire_after = self.config["expire_after"]
        return upload.time + expire_after if expire_after else None

    def _schedule(self, when: float | None, slot_id: str) -> None:
        if when is None:
            return
        heapq.heappush(self._due, (when, slot_id))
        if self._due[0] == (when, slot_id) and self.loaded:
            self._arm()

    def _arm(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._due:
            delay = max(0.0, self._due[0][0] - self.clock.seconds())
            self._timer = self.clock.callLater(delay, self._expire)

    def _expire(self, now: float | None = None) -> None:
        """Drop every slot whose deadline and every file whose expiry has come."""
        now = self.clock.seconds() if now is None else now
        while self._due and self._due[0][0] <= now:
            _, slot_id = heapq.heappop(self._due)
            upload = self.uploads.get(slot_id)
            if upload is None or slot_id in self.writing:
                continue  # gone already, or finishing (it is rescheduled then)
            due = self.due(upload)
            if due is not None and due <= now:
                self._forget(upload)
        self._arm()

    # -- XEP-0363 slot requests ------------------------------------------------------

    @handles(f"iq-get/host/{ns.HTTP_UPLOAD}:request")
    def request_slot(self, event: StanzaEvent) -> Any:
        d = self.ready()
        d.addCallback(lambda _: self._request_slot(event))
        return d

    def _request_slot(self, event: StanzaEvent) -> Any:
        http = getattr(self.server, "http", None)
        if http is None or not http.has_route("/upload"):
            # no URL would work: [http] is off, or its endpoint "upload" is
            return event.error("service-unavailable", text="file upload is not served over "
                               "HTTP on this server")
        request = event.payload
        owner = event.from_.userhost()
        filename = request.getAttribute("filename")
        content_type = request.getAttribute("content-type") or DEFAULT_TYPE
        try:
            size = self.check(event.from_, filename, request.getAttribute("size"), content_type)
        except UploadError as e:
            return e.reply(event)
        now = self.clock.seconds()
        upload = Upload(id=new_slot_id(), owner=owner, filename=filename, size=size,
                        type=content_type, time=now, deadline=now + self.config["slot_timeout"])
        # In the index before the write: the next request's quotas count it.
        self._add(upload)
        d = self.store[STORE].set(HOST, upload.id, upload.value())

        def answer(_: Any) -> domish.Element:
            return event.reply(self.slot_element(http, upload))

        def failed(failure: Any) -> domish.Element:
            self.log.failure("upload: storing a slot failed", failure)
            self._forget(upload)
            return event.error("internal-server-error", type="wait")
        return d.addCallbacks(answer, failed)

    def check(self, uploader: jidlib.JID, filename: str | None, size_text: str | None,
              content_type: str) -> int:
        """The size of a slot ``uploader`` may have, or the :class:`UploadError`
        refusing it (in Prosody's order of checks)."""
        if not self.may_upload(uploader):
            raise UploadError("forbidden", "auth")
        if not valid_filename(filename):
            raise UploadError("bad-request", "modify", "Invalid filename")
        if not size_text or not size_text.isascii() or not size_text.isdigit():
            raise UploadError("bad-request", "modify", "File size must be positive integer")
        limit = self.config["max_file_size"]
        size = int(size_text) if len(size_text) <= MAX_SIZE_DIGITS else limit + 1
        if size > limit:
            too_large = domish.Element((ns.HTTP_UPLOAD, "file-too-large"))
            too_large.addElement("max-file-size", content=str(limit))
            raise UploadError("not-acceptable", "modify", "File too large", too_large)
        if (self.total_size + size > self.config["global_quota"]
                or len(self.uploads) >= self.config["global_max_files"]):
            self.log.warn("upload: the global quota is reached")
            raise UploadError("resource-constraint", "wait", "Server global storage quota reached")
        mine = self.owned.get(uploader.userhost(), {}).values()
        since = self.clock.seconds() - DAY
        if sum(u.size for u in mine if u.time > since) + size > self.config["daily_quota"]:
            raise UploadError("resource-constraint", "wait", "Daily quota reached")
        if sum(u.size for u in mine) + size > self.config["quota"]:
            raise UploadError("resource-constraint", "wait", "Quota reached")
        if len(mine) >= self.config["max_files"]:
            raise UploadError("resource-constraint", "wait", "Too many files")
        if len(content_type) > 255 or not MEDIA_TYPE.match(content_type):
            raise UploadError("bad-request", "modify", "Invalid content type")
        if (self.allowed and not type_matches(content_type, self.allowed)) \
                or type_matches(content_type, self.blocked):
            raise UploadError("not-acceptable", "modify", "File type not allowed")
        return size

    def may_upload(self, uploader: jidlib.JID) -> bool:
        """``access`` empty: any account of this server; else the JIDs and domains listed."""
        if uploader.user is None:
            return False
        if self.access:
            return uploader.userhost() in self.access or uploader.host in self.access
        return uploader.host in self.router.hosts

    def slot_element(self, http: Any, upload: Upload) -> domish.Element:
        """The ``<slot/>``: GET and PUT URLs (the same, as Prosody's) and the
        header that authorises the PUT."""
        url = http.url(self.url_path(upload))
        slot = domish.Element((ns.HTTP_UPLOAD, "slot"))
        slot.addElement("get")["url"] = url
        put = slot.addElement("put")
        put["url"] = url
        header = put.addElement("header", content=f"Bearer {self.token(upload)}")
        header["name"] = "Authorization"
        return slot

    @staticmethod
    def url_path(upload: Upload) -> str:
        return f"/upload/{upload.id}/{quote(upload.filename, safe='')}"

    def token(self, upload: Upload) -> str:
        """The PUT's secret: an HMAC of what the slot allows, under the server's key."""
        message = "\n".join((upload.id, str(upload.size), upload.type,
                             f"{upload.deadline:.6f}", upload.owner)).encode("utf-8")
        digest = hmac.new(self.secret, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def token_valid(self, upload: Upload, token: str) -> bool:
        return hmac.compare_digest(self.token(upload).encode("ascii"),
                                   token.encode("utf-8", "replace"))

    # -- what the HTTP side asks ----------------------------------------------------

    def store_file(self, upload: Upload, body: Any) -> defer.Deferred:
        """Write a PUT's body as ``upload``'s file; fires with True once the
        file and its row are durable, False if the body was not ``size``
        bytes or the slot went meanwhile (nothing kept then)."""
        self.writing.add(upload.id)

        @defer.inlineCallbacks
        def write():
            try:
                complete = yield self.files.write(upload.id, body, upload.size, upload.time)
            finally:
                self.writing.discard(upload.id)
            if self.uploads.get(upload.id) is not upload:
                # deleted with its account while the body was written
                self.files.delete(upload.id)
                return False
            if complete:
                upload.done = True
            # its deadline may have passed (and been skipped) meanwhile
            self._schedule(self.due(upload), upload.id)
            if not complete:
                return False
            yield self.store[STORE].set(HOST, upload.id, upload.value())
            return True
        return write()

    def file_path(self, upload: Upload) -> str:
        return self.files.path(upload.id)

    def served_inline(self, upload: Upload) -> bool:
        return type_matches(upload.type, self.safe)

    # -- XEP-0030 ---------------------------------------------------------------------

    def disco_info(self, event: StanzaEvent) -> Any:
        """Identity ``store/file``, the feature, and the XEP-0128 form with
        ``max-file-size`` (as Prosody: a result form, no datatype)."""
        if event.payload.getAttribute("node"):
            return event.error("item-not-found", text="Node does not exist")
        form = domish.Element((ns.DATA_FORMS, "x"))
        form["type"] = "result"
        for var, type_, value in (("FORM_TYPE", "hidden", ns.HTTP_UPLOAD),
                                  ("max-file-size", "text-single",
                                   str(self.config["max_file_size"]))):
            field = form.addElement("field")
            field["var"], field["type"] = var, type_
            field.addElement("value", content=value)
        return event.reply(disco_info(self.identities,
                                      sorted({ns.DISCO_INFO, ns.DISCO_ITEMS, *self.features}),
                                      extra=[form]))

    # -- accounts ------------------------------------------------------------------------

    @handles("account-deleted")
    def forget(self, user: str) -> defer.Deferred:
        """The account's files and slots go: files at once, rows durably."""
        def drop(_: Any) -> defer.Deferred:
            gone = [self._forget(u) for u in list(self.owned.get(user, {}).values())]
            return defer.gatherResults(gone, consumeErrors=True)
        return self.ready().addCallback(drop)
