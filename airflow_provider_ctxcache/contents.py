"""What users write as cache contents, turned into google-genai parts, checked before any call.

Accepted items: a string (text), ``{"text": ...}``, ``{"file": PATH}`` (a file, or a folder read
recursively in name order) and ``{"uri": URI, "mime_type": ...}`` (which URIs the service can
read is the backend's rule). Local paths are read only under allowed roots, because a run
triggered from the UI renders params into these fields and params are untrusted. Local files
stay unread until :func:`resolve`: those that would push the request past the backend's inline
limit are staged (where, is again the backend's choice), the rest go inline.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import mimetypes
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from google.genai import types

from airflow_provider_ctxcache.exceptions import CtxCacheConfigError
from airflow_provider_ctxcache.models import model_id

ALLOWED_ROOTS_ENV = "AIRFLOW__CTXCACHE__ALLOWED_ROOTS"
_TEXT_SUFFIXES = {
    ".txt", ".md", ".rst", ".csv", ".tsv", ".json", ".jsonl", ".yaml", ".yml", ".xml", ".html", ".htm",
    ".py", ".sql", ".java", ".js", ".ts", ".go", ".rs", ".c", ".h", ".cpp", ".sh", ".toml", ".ini", ".log",
}  # fmt: skip


def configured_allowed_roots() -> list[str]:
    """``[ctxcache] allowed_roots`` from Airflow's config (or its env var), comma-separated."""
    raw = os.environ.get(ALLOWED_ROOTS_ENV)
    if raw is None:
        try:
            from airflow.configuration import conf

            raw = conf.get("ctxcache", "allowed_roots", fallback="")
        except Exception:
            raw = ""
    return [root.strip() for root in (raw or "").split(",") if root.strip()]


def _mime_type(path: Path) -> str:
    if path.suffix.lower() in _TEXT_SUFFIXES:
        return "text/plain"
    guessed, _ = mimetypes.guess_type(path.name)
    return guessed or "application/octet-stream"


def _within(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


@dataclasses.dataclass(frozen=True)
class LocalFile:
    """A local file checked against the allowed roots, not read yet: it goes inline or is staged."""

    path: Path
    mime_type: str
    size: int
    field: str

    def sha256(self) -> str:
        digest = hashlib.sha256()
        with self.path.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

    def inline_part(self) -> types.Part:
        data = self.path.read_bytes()
        if self.mime_type.startswith("text/"):
            return types.Part(text=data.decode("utf-8", errors="replace"))
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
    """Checks one request's content items and turns them into parts; local files are deferred."""

    def __init__(
        self, *, backend: ContentRules, allowed_roots: Iterable[str], field: str = "contents"
    ) -> None:
        self.backend = backend
        self.field = field
        self.roots = [Path(root).expanduser().resolve() for root in allowed_roots]

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
        path = Path(raw).expanduser().resolve()
        if not self.roots:
            raise CtxCacheConfigError(
                f"{where}: local files are disabled; allow their folder with the operator's allowed_roots "
                f"or [ctxcache] allowed_roots ({ALLOWED_ROOTS_ENV})."
            )
        if not _within(path, self.roots):
            allowed = ", ".join(str(root) for root in self.roots)
            raise CtxCacheConfigError(
                f"{where}: {raw!r} is outside the allowed roots ({allowed}); move it there."
            )
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and not _hidden(p, path))
            return [self._file(p, mime, where) for p in files if _within(p.resolve(), self.roots)]
        if not path.is_file():
            raise CtxCacheConfigError(f"{where}: {raw!r} does not exist on this worker.")
        return [self._file(path, mime, where)]

    def _file(self, path: Path, mime: str | None, where: str) -> LocalFile:
        return LocalFile(path=path, mime_type=mime or _mime_type(path), size=path.stat().st_size, field=where)


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


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


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
            described: Any = {"file": item.path.name, "mime_type": item.mime_type, "sha256": item.sha256()}
        else:
            described = item.model_dump(mode="json", exclude_none=True)
        digest.update(json.dumps(described, sort_keys=True).encode())
    digest.update(json.dumps(extras, sort_keys=True, default=str).encode())
    return digest.hexdigest()
