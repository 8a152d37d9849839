"""What a ``fileData`` part points at, so it can be counted by its real size.

- Developer API: a URI naming an uploaded file (its ``uri`` or ``files/<id>``) resolves to
  that file; one that does not exist is 403 PERMISSION_DENIED, as the service answers.
- Vertex AI: a ``gs://`` URI is read through a Cloud Storage emulator when
  ``STORAGE_EMULATOR_HOST`` is set in the emulator's environment, with plain httpx
  (``GET {host}/storage/v1/b/{bucket}/o/{object}`` for the size, ``?alt=media`` for the text of
  ``text/*`` objects); a missing object is 400 INVALID_ARGUMENT naming the URI.
- Anything else (an https URL, ``gs://`` without a storage emulator) is not resolved: the
  caller counts it flat (see :mod:`.tokens`).

One :class:`FileSource` serves one request and remembers what it resolved, so a file named
twice is read once.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from urllib.parse import quote

import httpx

from .errors import invalid_argument
from .filestore import FileStore, file_id_of, missing_file

STORAGE_ENV = "STORAGE_EMULATOR_HOST"
STORAGE_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class FileContent:
    """What counting and answering need of a file."""

    size: int
    mime_type: str
    text: str | None
    """The decoded text, for ``text/*`` content only."""
    digest: str


def is_text(mime_type: str) -> bool:
    """Whether content of this MIME type is counted (and quoted) as text."""
    return mime_type.lower().startswith("text/")


class FileSource:
    """Resolves the ``fileData`` URIs of one request, for one backend."""

    def __init__(self, *, developer: bool, files: FileStore, storage_host: str | None = None) -> None:
        self.developer = developer
        self.files = files
        self.storage_host = storage_host
        self._seen: dict[tuple[str, str], FileContent | None] = {}

    @classmethod
    def for_backend(cls, *, developer: bool, files: FileStore) -> FileSource:
        """A source reading ``STORAGE_EMULATOR_HOST`` from this process's environment."""
        return cls(developer=developer, files=files, storage_host=os.environ.get(STORAGE_ENV) or None)

    async def fetch(self, uri: str, mime_type: str) -> FileContent | None:
        """The content ``uri`` points at, or None when the emulator cannot see it."""
        key = (uri, mime_type)
        if key not in self._seen:
            self._seen[key] = await self._fetch(uri, mime_type)
        return self._seen[key]

    async def _fetch(self, uri: str, mime_type: str) -> FileContent | None:
        if self.developer:
            file_id = file_id_of(uri)
            if file_id is None:
                return None
            stored = self.files.get(file_id)
            if stored is None:
                raise missing_file(file_id)
            mime = mime_type or stored.mime_type
            return FileContent(
                size=len(stored.data),
                mime_type=mime,
                text=stored.text if is_text(mime) else None,
                digest=stored.sha256_hex,
            )
        if uri.startswith("gs://") and self.storage_host:
            return await _read_object(self.storage_host, uri, mime_type)
        return None


async def _read_object(host: str, uri: str, mime_type: str) -> FileContent:
    """An object's size (and text, for text types) from the Cloud Storage emulator."""
    bucket, _, name = uri[len("gs://") :].partition("/")
    if not bucket or not name:
        raise invalid_argument(f"Invalid Cloud Storage URI: {uri}. Expected gs://BUCKET/OBJECT.")
    base = host if host.startswith(("http://", "https://")) else f"http://{host}"
    url = f"{base.rstrip('/')}/storage/v1/b/{quote(bucket, safe='')}/o/{quote(name, safe='')}"
    unreadable = f"Unable to read {uri}: the Cloud Storage object does not exist or cannot be accessed."
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=STORAGE_TIMEOUT_S) as client:
            meta = await client.get(url)
            if meta.status_code != 200:
                raise invalid_argument(f"{unreadable} (HTTP {meta.status_code})")
            info = meta.json()
            mime = mime_type or str(info.get("contentType") or "")
            if not is_text(mime):
                size = int(info.get("size", 0))
                return FileContent(size=size, mime_type=mime, text=None, digest=str(info.get("md5Hash", "")))
            media = await client.get(url, params={"alt": "media"})
            if media.status_code != 200:
                raise invalid_argument(f"{unreadable} (HTTP {media.status_code})")
    except httpx.HTTPError as exc:
        raise invalid_argument(f"{unreadable} ({type(exc).__name__})") from exc
    except (ValueError, TypeError) as exc:
        raise invalid_argument(f"{unreadable} (unexpected object metadata)") from exc
    data = media.content
    return FileContent(
        size=len(data),
        mime_type=mime,
        text=data.decode("utf-8", errors="replace"),
        digest=hashlib.sha256(data).hexdigest(),
    )
