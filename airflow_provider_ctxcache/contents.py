"""What users write as cache contents, turned into google-genai parts, checked before any call.

Accepted items: a string (text), ``{"text": ...}``, ``{"file": PATH}`` (a file, or a folder read
recursively in name order) and ``{"uri": URI, "mime_type": ...}`` (``gs://`` on Vertex, Files API
URIs on the Developer API). Local paths are read only under allowed roots, because a run
triggered from the UI renders params into these fields and params are untrusted.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from google.genai import types

from airflow_provider_ctxcache.exceptions import CtxCacheConfigError

INLINE_LIMIT_BYTES = 10 * 1024 * 1024
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


class ContentBuilder:
    """Builds one request's parts and keeps the running inline size under the 10 MB limit."""

    def __init__(self, *, backend: str, allowed_roots: Iterable[str], field: str = "contents") -> None:
        self.backend = backend
        self.field = field
        self.roots = [Path(root).expanduser().resolve() for root in allowed_roots]
        self.inline_bytes = 0

    def build(self, items: Any) -> list[types.Part]:
        if isinstance(items, (str, dict)):
            items = [items]
        if not isinstance(items, (list, tuple)) or not items:
            raise CtxCacheConfigError(
                f"{self.field}: is empty; give a list of strings, {{'text': ...}}, {{'file': PATH}} "
                "or {'uri': URI, 'mime_type': ...} items."
            )
        parts: list[types.Part] = []
        for index, item in enumerate(items):
            parts.extend(self._item(item, f"{self.field}[{index}]"))
        if not parts:
            raise CtxCacheConfigError(f"{self.field}: holds no content (empty strings or empty folders).")
        return parts

    def _item(self, item: Any, where: str) -> list[types.Part]:
        if isinstance(item, str):
            return [self._text(item, where)] if item.strip() else []
        if not isinstance(item, dict) or len({"text", "file", "uri"} & item.keys()) != 1:
            raise CtxCacheConfigError(
                f"{where}: {_short(item)} is not a content item; use a string, {{'text': ...}}, "
                "{'file': PATH} or {'uri': URI, 'mime_type': ...}."
            )
        if "text" in item:
            text = item["text"]
            if not isinstance(text, str):
                raise CtxCacheConfigError(f"{where}.text: must be a string, not {type(text).__name__}.")
            return [self._text(text, where)] if text.strip() else []
        if "uri" in item:
            return [self._uri(item, where)]
        return self._files(item["file"], item.get("mime_type"), f"{where}.file")

    def _text(self, text: str, where: str) -> types.Part:
        self._add_inline(len(text.encode()), where)
        return types.Part(text=text)

    def _uri(self, item: dict[str, Any], where: str) -> types.Part:
        uri, mime = item["uri"], item.get("mime_type") or item.get("mimeType")
        if not isinstance(uri, str) or "://" not in uri:
            raise CtxCacheConfigError(f"{where}.uri: {uri!r} is not a URI such as gs://bucket/object.pdf.")
        if uri.startswith("gs://") and self.backend != "vertex_ai":
            raise CtxCacheConfigError(
                f"{where}.uri: gs:// URIs work only on vertex_ai; on gemini_api upload the file "
                "through the Files API, or pass it as {'file': PATH}."
            )
        if not mime:
            guessed, _ = mimetypes.guess_type(uri)
            mime = guessed
        if not mime:
            raise CtxCacheConfigError(
                f"{where}.mime_type: cannot guess it from {uri!r}; set e.g. 'application/pdf'."
            )
        return types.Part(file_data=types.FileData(file_uri=uri, mime_type=mime))

    def _files(self, raw: Any, mime: str | None, where: str) -> list[types.Part]:
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

    def _file(self, path: Path, mime: str | None, where: str) -> types.Part:
        mime = mime or _mime_type(path)
        self._add_inline(path.stat().st_size, where)
        data = path.read_bytes()
        if mime.startswith("text/"):
            return types.Part(text=data.decode("utf-8", errors="replace"))
        return types.Part(inline_data=types.Blob(data=data, mime_type=mime))

    def _add_inline(self, size: int, where: str) -> None:
        self.inline_bytes += size
        if self.inline_bytes > INLINE_LIMIT_BYTES:
            raise CtxCacheConfigError(
                f"{where}: the inline content passes the 10 MB request limit "
                f"({self.inline_bytes} bytes so far); "
                "put large files in Cloud Storage and pass {'uri': 'gs://...'} (vertex_ai)."
            )


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def fingerprint(*, model: str, contents: Sequence[types.Part], **extras: Any) -> str:
    """A stable hash of what the cache would hold, so equal content maps to one cache."""
    digest = hashlib.sha256()
    digest.update(model.removeprefix("models/").encode())
    for part in contents:
        digest.update(json.dumps(part.model_dump(mode="json", exclude_none=True), sort_keys=True).encode())
    digest.update(json.dumps(extras, sort_keys=True, default=str).encode())
    return digest.hexdigest()
