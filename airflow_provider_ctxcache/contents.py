"""What users write as cache contents, turned into google-genai parts, checked before any call.

Accepted items: a string (text), ``{"text": ...}``, ``{"file": PATH}`` (a file, or a folder read
recursively in name order) and ``{"uri": URI, "mime_type": ...}`` (which URIs the service can
read is the backend's rule). Local paths are read only under allowed roots, because a run
triggered from the UI renders params into these fields and params are untrusted. Each local file
is read once, when the contents are built, through a descriptor opened beneath its root (see
``safe_files``); those bytes are fingerprinted and sent, whatever happens to the path later.
Files that would push the request past the backend's inline limit are staged (where, is again
the backend's choice), the rest go inline. A text file (by suffix, or a ``text/*`` mime_type)
must be UTF-8 (a UTF-8 byte-order mark is fine) without NUL bytes: anything else fails naming
the file, since sending it as text would fill the cache with U+FFFD and NUL. Convert it to
UTF-8, or give its real ``mime_type`` to send it as bytes.
"""

from __future__ import annotations

import codecs
import dataclasses
import hashlib
import json
import mimetypes
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from google.genai import types

from airflow_provider_ctxcache import safe_files
from airflow_provider_ctxcache.exceptions import CtxCacheConfigError
from airflow_provider_ctxcache.model_facts import model_id
from airflow_provider_ctxcache.safe_files import ALLOWED_ROOTS_ENV as ALLOWED_ROOTS_ENV
from airflow_provider_ctxcache.safe_files import CheckedFile, read_beneath
from airflow_provider_ctxcache.safe_files import configured_allowed_roots as configured_allowed_roots

_TEXT_SUFFIXES = {
    ".txt", ".md", ".rst", ".csv", ".tsv", ".json", ".jsonl", ".yaml", ".yml", ".xml", ".html", ".htm",
    ".py", ".sql", ".java", ".js", ".ts", ".go", ".rs", ".c", ".h", ".cpp", ".sh", ".toml", ".ini", ".log",
}  # fmt: skip
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def _mime_type(path: Path) -> str:
    if path.suffix.lower() in _TEXT_SUFFIXES:
        return "text/plain"
    guessed, _ = mimetypes.guess_type(path.name)
    return guessed or "application/octet-stream"


@dataclasses.dataclass(frozen=True, eq=False)
class LocalFile:
    """A local file read (once) beneath the allowed roots: it goes inline or is staged."""

    content: CheckedFile
    mime_type: str
    field: str

    @property
    def name(self) -> str:
        return self.content.name

    @property
    def size(self) -> int:
        return self.content.size

    @property
    def path(self) -> Path:
        """A private copy of the checked bytes, named as the file, for uploads that take a path."""
        return self.content.path

    def sha256(self) -> str:
        return self.content.sha256

    def inline_part(self) -> types.Part:
        data = self.content.read()
        if self.mime_type.startswith("text/"):
            return types.Part(text=data.decode("utf-8-sig"))  # checked when built
        return types.Part(inline_data=types.Blob(data=data, mime_type=self.mime_type))


Item = types.Part | LocalFile
Stage = Callable[[LocalFile], types.Part]


class ContentRules(Protocol):
    """What a backend decides about contents (see ``hooks.backend.Backend``)."""

    @property
    def inline_limit_bytes(self) -> int:
        """The most a request may carry inline."""

    def check_file_uri(self, uri: str, where: str) -> None:
        """Refuses a URI the backend cannot read."""


class ContentBuilder:
    """Checks one request's content items and turns them into parts; local files are read now, sent later."""

    def __init__(
        self, *, backend: ContentRules, allowed_roots: Iterable[str], field: str = "contents"
    ) -> None:
        self.backend = backend
        self.field = field
        self.roots = safe_files.allowed_roots(allowed_roots)

    def build(self, items: Any) -> list[Item]:
        if isinstance(items, (str, dict)):
            items = [items]
        if not isinstance(items, (list, tuple)) or not items:
            raise CtxCacheConfigError(
                f"{self.field}: is empty; give a list of strings, {{'text': ...}}, {{'file': PATH}} "
                "or {'uri': URI, 'mime_type': ...} items."
            )
        parts: list[Item] = []
        for index, item in enumerate(items):
            parts.extend(self._item(item, f"{self.field}[{index}]"))
        if not parts:
            raise CtxCacheConfigError(f"{self.field}: holds no content (empty strings or empty folders).")
        text_bytes = sum(len(p.text.encode()) for p in parts if isinstance(p, types.Part) and p.text)
        if text_bytes > self.backend.inline_limit_bytes:
            raise CtxCacheConfigError(
                f"{self.field}: {text_bytes} bytes of inline text pass the "
                f"{_mb(self.backend.inline_limit_bytes)} request limit; "
                "put the text in files ({'file': PATH}), which are staged when too large to send inline."
            )
        return parts

    def _item(self, item: Any, where: str) -> list[Item]:
        if isinstance(item, str):
            return [types.Part(text=item)] if item.strip() else []
        if not isinstance(item, dict) or len({"text", "file", "uri"} & item.keys()) != 1:
            raise CtxCacheConfigError(
                f"{where}: {_short(item)} is not a content item; use a string, {{'text': ...}}, "
                "{'file': PATH} or {'uri': URI, 'mime_type': ...}."
            )
        if "text" in item:
            text = item["text"]
            if not isinstance(text, str):
                raise CtxCacheConfigError(f"{where}.text: must be a string, not {type(text).__name__}.")
            return [types.Part(text=text)] if text.strip() else []
        if "uri" in item:
            return [self._uri(item, where)]
        return self._files(item["file"], item.get("mime_type"), f"{where}.file")

    def _uri(self, item: dict[str, Any], where: str) -> types.Part:
        uri, mime = item["uri"], item.get("mime_type") or item.get("mimeType")
        if not isinstance(uri, str) or "://" not in uri:
            raise CtxCacheConfigError(f"{where}.uri: {uri!r} is not a URI such as gs://bucket/object.pdf.")
        self.backend.check_file_uri(uri, where)
        if not mime:
            guessed, _ = mimetypes.guess_type(uri)
            mime = guessed
        if not mime:
            raise CtxCacheConfigError(
                f"{where}.mime_type: cannot guess it from {uri!r}; set e.g. 'application/pdf'."
            )
        return types.Part(file_data=types.FileData(file_uri=uri, mime_type=mime))

    def _files(self, raw: Any, mime: str | None, where: str) -> list[Item]:
        if not isinstance(raw, str) or not raw.strip():
            raise CtxCacheConfigError(f"{where}: {raw!r} is not a path.")
        return [self._file(checked, mime, where) for checked in read_beneath(raw, self.roots, where)]

    def _file(self, checked: CheckedFile, mime: str | None, where: str) -> LocalFile:
        local = LocalFile(content=checked, mime_type=mime or _mime_type(Path(checked.name)), field=where)
        if local.mime_type.startswith("text/"):
            _check_text(checked, where)
        return local


def _check_text(checked: CheckedFile, where: str) -> None:
    """Refuses text that is not UTF-8, or holds NUL (UTF-16 without a byte-order mark, or binary)."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    offset = 0
    for chunk in checked.chunks():
        if offset == 0 and chunk.startswith(_UTF16_BOMS):
            raise _not_utf8(where, checked, "it starts with a UTF-16 byte-order mark")
        pending = len(decoder.getstate()[0])
        try:
            decoder.decode(chunk)
        except UnicodeDecodeError as error:
            what = f"byte 0x{error.object[error.start]:02x} at offset {offset - pending + error.start}"
            raise _not_utf8(where, checked, what) from None
        nul = chunk.find(b"\0")
        if nul >= 0:
            raise _not_utf8(where, checked, f"a NUL byte at offset {offset + nul}")
        offset += len(chunk)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise _not_utf8(where, checked, "a character cut off at the end") from None


def _not_utf8(where: str, checked: CheckedFile, what: str) -> CtxCacheConfigError:
    return CtxCacheConfigError(
        f"{where}: {checked.shown!r} is not UTF-8 text ({what}); convert it to UTF-8 (e.g. "
        "iconv -f LATIN1 -t UTF-8), or give its real mime_type to send it as bytes."
    )


def inline_bytes(items: Sequence[Item]) -> int:
    """What the request would carry inline: text, inline data, and every local file read inline."""
    total = 0
    for item in items:
        if isinstance(item, LocalFile):
            total += item.size
        elif item.text:
            total += len(item.text.encode())
        elif item.inline_data and item.inline_data.data:
            total += len(item.inline_data.data)
    return total


def files_to_stage(items: Sequence[Item], limit: int) -> list[LocalFile]:
    """The fewest files, largest first, whose staging brings the inline size under ``limit`` bytes."""
    excess = inline_bytes(items) - limit
    chosen: list[LocalFile] = []
    for local in sorted((i for i in items if isinstance(i, LocalFile)), key=lambda f: -f.size):
        if excess <= 0:
            break
        chosen.append(local)
        excess -= local.size
    return chosen


def resolve(items: Sequence[Item], stage: Stage | None, limit: int) -> list[types.Part]:
    """Parts for the request: files over the ``limit``-byte inline budget go through ``stage``."""
    staged = {id(local) for local in files_to_stage(items, limit)}
    if staged and stage is None:
        raise CtxCacheConfigError(
            f"contents: {inline_bytes(items)} bytes pass the {_mb(limit)} inline limit and nothing can "
            "stage them; pass the files through CreateCacheOperator, which stages them."
        )
    parts: list[types.Part] = []
    for item in items:
        if isinstance(item, LocalFile):
            parts.append(stage(item) if id(item) in staged and stage is not None else item.inline_part())
        else:
            parts.append(item)
    return parts


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):g} MB"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def fingerprint(*, model: str, contents: Sequence[Item], **extras: Any) -> str:
    """A stable hash of what the cache would hold, so equal content maps to one cache."""
    digest = hashlib.sha256()
    digest.update(model_id(model).encode())
    for item in contents:
        if isinstance(item, LocalFile):
            described: Any = {"file": item.name, "mime_type": item.mime_type, "sha256": item.sha256()}
        else:
            described = item.model_dump(mode="json", exclude_none=True)
        digest.update(json.dumps(described, sort_keys=True).encode())
    digest.update(json.dumps(extras, sort_keys=True, default=str).encode())
    return digest.hexdigest()
