"""The Files API store (Developer API only): uploaded files and in-flight resumable uploads.

File bytes are kept in memory. An upload collects its chunks in a list and joins them once
when it is finalized, so a large file costs one copy, not a quadratic concatenation. Files
expire 48 hours after their upload, against the emulator clock, lazily like caches.

An upload session not finalized within :data:`UPLOAD_SESSION_TTL_NS` of its start (emulator
clock) is abandoned: it is dropped with the bytes it holds, lazily, by the next upload call or
look at the store (no background thread), and its URL then answers as an unknown one.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import string
from dataclasses import dataclass, field
from typing import Any

from .clock import NANOS, Clock, format_timestamp
from .errors import ApiError, invalid_argument, permission_denied

FILE_TTL_NS = 48 * 3600 * NANOS
# How long a resumable upload may stay open before it is dropped with its bytes. The emulator's
# own bound on memory held by abandoned uploads (Google documents none for the Files API; Cloud
# Storage's resumable sessions last a week): an hour is far longer than any test's upload.
UPLOAD_SESSION_TTL_NS = 3600 * NANOS
DEFAULT_FILE_PAGE_SIZE = 10
MAX_FILE_PAGE_SIZE = 100
FILE_ID_LENGTH = 12

_ID_ALPHABET = string.ascii_lowercase + string.digits
# A user-chosen id: lowercase alphanumerics and dashes, at most 40, no dash at either end.
FILE_ID_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$")
# What a fileData URI naming an uploaded file looks like: ``files/<id>`` or the file's ``uri``
# (``<base>/<version>/files/<id>``), whatever the host, so real-looking URIs resolve too.
_FILE_URI = re.compile(r"^(?:https?://[^/?#]+/(?:v1|v1beta|v1beta1|v1alpha)/)?files/([a-z0-9-]+)$")


def missing_file(file_id: str) -> ApiError:
    """The service's answer for a file that does not exist (or is not the caller's)."""
    return permission_denied(f"You do not have permission to access the File {file_id} or it may not exist.")


def file_id_of(uri: str) -> str | None:
    """The file id a ``fileData`` URI names, if it names an uploaded file at all."""
    match = _FILE_URI.match(uri)
    return match.group(1) if match else None


@dataclass
class StoredFile:
    """One uploaded file: its metadata and its bytes."""

    file_id: str
    display_name: str
    mime_type: str
    data: bytes
    sha256_hex: str
    create_ns: int
    expire_ns: int
    uri: str
    seq: int
    _text: str | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        """The resource name, ``files/<id>``."""
        return f"files/{self.file_id}"

    @property
    def text(self) -> str:
        """The bytes decoded as UTF-8 (undecodable bytes replaced), decoded once."""
        if self._text is None:
            self._text = self.data.decode("utf-8", errors="replace")
        return self._text

    def resource(self) -> dict[str, Any]:
        """The File resource as get/list/upload return it.

        ``sha256Hash`` is what the real service sends: the base64 of the lowercase hex digest.
        """
        body: dict[str, Any] = {"name": self.name}
        if self.display_name:
            body["displayName"] = self.display_name
        body["mimeType"] = self.mime_type
        body["sizeBytes"] = str(len(self.data))
        body["createTime"] = format_timestamp(self.create_ns)
        body["updateTime"] = format_timestamp(self.create_ns)
        body["expirationTime"] = format_timestamp(self.expire_ns)
        body["sha256Hash"] = base64.b64encode(self.sha256_hex.encode()).decode()
        body["uri"] = self.uri
        body["state"] = "ACTIVE"
        body["source"] = "UPLOADED"
        return body


@dataclass
class UploadSession:
    """A resumable upload between its ``start`` and its ``finalize``."""

    upload_id: str
    file_id: str
    display_name: str
    mime_type: str
    declared_size: int | None
    uri: str
    expire_ns: int
    """When the session is dropped if not finalized by then (emulator clock)."""
    chunks: list[bytes] = field(default_factory=list)
    received: int = 0
    hasher: Any = field(default_factory=hashlib.sha256)

    def append(self, chunk: bytes) -> None:
        """Take one chunk (kept as is; joined once on finalize)."""
        if chunk:
            self.chunks.append(chunk)
            self.hasher.update(chunk)
            self.received += len(chunk)


class FileStore:
    """All uploaded files and pending uploads of one emulator."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._files: dict[str, StoredFile] = {}
        self._uploads: dict[str, UploadSession] = {}
        self._seq = 0

    def is_taken(self, file_id: str) -> bool:
        """Whether a live file or a pending upload already has this id."""
        self._drop_abandoned_uploads()
        return self.get(file_id) is not None or any(u.file_id == file_id for u in self._uploads.values())

    def new_id(self) -> str:
        """A fresh 12-character lowercase alphanumeric id, like the service's."""
        while True:
            file_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(FILE_ID_LENGTH))
            if not self.is_taken(file_id):
                return file_id

    def start_upload(
        self, *, file_id: str, display_name: str, mime_type: str, declared_size: int | None, uri: str
    ) -> UploadSession:
        """Open a resumable upload for a file id that is not taken."""
        self._drop_abandoned_uploads()
        upload_id = secrets.token_urlsafe(24)
        expire_ns = self.clock.now_ns() + UPLOAD_SESSION_TTL_NS
        session = UploadSession(upload_id, file_id, display_name, mime_type, declared_size, uri, expire_ns)
        self._uploads[upload_id] = session
        return session

    def upload(self, upload_id: str) -> UploadSession | None:
        """The pending upload of that id, if any (an abandoned one is dropped, so None)."""
        self._drop_abandoned_uploads()
        return self._uploads.get(upload_id)

    def open_uploads(self) -> tuple[int, int]:
        """How many uploads are pending, and how many bytes they hold (abandoned ones dropped)."""
        self._drop_abandoned_uploads()
        return len(self._uploads), sum(u.received for u in self._uploads.values())

    def _drop_abandoned_uploads(self) -> None:
        """Forget every upload not finalized in time, with its chunks."""
        now = self.clock.now_ns()
        for upload_id in [i for i, u in self._uploads.items() if u.expire_ns <= now]:
            self._uploads.pop(upload_id).chunks.clear()

    def end_upload(self, upload_id: str) -> None:
        """Forget a pending upload (finalized, cancelled or failed)."""
        self._uploads.pop(upload_id, None)

    def finalize(self, session: UploadSession) -> StoredFile:
        """Turn a complete upload into a stored file."""
        self.end_upload(session.upload_id)
        now = self.clock.now_ns()
        self._seq += 1
        data = session.chunks[0] if len(session.chunks) == 1 else b"".join(session.chunks)
        session.chunks = []
        stored = StoredFile(
            file_id=session.file_id,
            display_name=session.display_name,
            mime_type=session.mime_type,
            data=data,
            sha256_hex=session.hasher.hexdigest(),
            create_ns=now,
            expire_ns=now + FILE_TTL_NS,
            uri=session.uri,
            seq=self._seq,
        )
        self._files[stored.file_id] = stored
        return stored

    def get(self, file_id: str) -> StoredFile | None:
        """The live file of that id, or None (expired ones are dropped)."""
        stored = self._files.get(file_id)
        if stored is None:
            return None
        if stored.expire_ns <= self.clock.now_ns():
            del self._files[file_id]
            return None
        return stored

    def delete(self, file_id: str) -> bool:
        """Delete a live file; False if there was none."""
        if self.get(file_id) is None:
            return False
        del self._files[file_id]
        return True

    def live(self) -> list[StoredFile]:
        """Live files in upload order; drops the expired ones."""
        now = self.clock.now_ns()
        for file_id in [i for i, f in self._files.items() if f.expire_ns <= now]:
            del self._files[file_id]
        return sorted(self._files.values(), key=lambda f: f.seq)

    def page(self, page_size: int, page_token: str) -> tuple[list[StoredFile], str]:
        """One page of files and the token of the next page (``""`` on the last)."""
        files = self.live()
        if page_token:
            after = _decode_token(page_token)
            files = [f for f in files if f.seq > after]
        size = DEFAULT_FILE_PAGE_SIZE if page_size <= 0 else min(page_size, MAX_FILE_PAGE_SIZE)
        page = files[:size]
        token = _encode_token(page[-1].seq) if len(files) > size else ""
        return page, token

    def clear(self) -> None:
        """Forget every file and pending upload."""
        self._files.clear()
        self._uploads.clear()


def _encode_token(seq: int) -> str:
    return base64.urlsafe_b64encode(f"files|{seq}".encode()).decode().rstrip("=")


def _decode_token(token: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        kind, seq = raw.split("|")
        if kind != "files":
            raise ValueError("not a files page token")
        return int(seq)
    except ValueError as exc:
        raise invalid_argument("Invalid page token.") from exc
