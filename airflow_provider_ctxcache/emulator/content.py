"""Reading request contents: validation, token counts, payload size, text and a digest.

One pass over ``contents`` / ``systemInstruction`` gives everything the handlers need:
the token count (rule in :mod:`tokens`) and its split by modality, the inline payload size
(for the 10 MiB limit), the text (for deterministic answers), the ``fileData`` URIs (to refuse
``gs://`` on the Developer API) and a digest that changes whenever any part changes (answers
depend on it). Both camelCase and snake_case field names are accepted, as the real service does.

``fileData`` parts are resolved after the pass, asynchronously: a :class:`Meter` given a
:class:`~.sources.FileSource` leaves them pending until :meth:`Meter.resolve_files`, which
counts each by the real size of what it points at and adds a text file's text to the
context; without a source (or when the source cannot see the file) one counts a flat 258.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections import Counter
from collections.abc import Mapping
from typing import Any

from .errors import invalid_argument
from .sources import FileSource
from .tokens import FILE_DATA_TOKENS, TEXT, file_tokens, json_tokens, modality_of, part_tokens

INLINE_LIMIT_BYTES = 10 * 1024 * 1024


def pick(mapping: Mapping[str, Any], camel: str, snake: str) -> Any:
    """A field by its camelCase name, or its snake_case one."""
    value = mapping.get(camel)
    return mapping.get(snake) if value is None else value


class Meter:
    """Accumulates tokens, payload bytes, text and a digest over contents and parts."""

    def __init__(self, files: FileSource | None = None) -> None:
        self.files = files
        self.tokens = 0
        self.modalities: Counter[str] = Counter()
        self.payload_bytes = 0
        self.texts: list[str] = []
        self.inline_texts: list[str] = []
        self.file_uris: list[str] = []
        self._hash = hashlib.sha256()
        self._has_blob = False
        self._pending_files: list[tuple[str, str]] = []

    @property
    def text(self) -> str:
        """The text parts seen, one per line."""
        return "\n".join(self.texts)

    @property
    def all_text(self) -> str:
        """The text parts, the decoded ``text/*`` inline data and text files, one per line."""
        return "\n".join(self.texts + self.inline_texts)

    @property
    def has_data(self) -> bool:
        """Whether any inline data or file was seen."""
        return bool(self.inline_texts or self.file_uris) or self._has_blob

    @property
    def digest(self) -> str:
        """A hex digest of everything measured."""
        return self._hash.hexdigest()

    def add_contents(self, contents: Any, field: str) -> None:
        """Measure a list of Content objects."""
        if contents is None:
            return
        if not isinstance(contents, list):
            raise invalid_argument(f"Invalid value at '{field}': expected a list of Content.")
        for i, content in enumerate(contents):
            self.add_content(content, f"{field}[{i}]")

    def add_content(self, content: Any, field: str) -> None:
        """Measure one Content (``{"role", "parts": [...]}``)."""
        if not isinstance(content, dict):
            raise invalid_argument(f"Invalid value at '{field}': expected a Content object.")
        parts = content.get("parts") or []
        if not isinstance(parts, list):
            raise invalid_argument(f"Invalid value at '{field}.parts': expected a list of Part.")
        for j, part in enumerate(parts):
            self.add_part(part, f"{field}.parts[{j}]")

    def add_part(self, part: Any, field: str) -> None:
        """Measure one Part."""
        if not isinstance(part, dict):
            raise invalid_argument(f"Invalid value at '{field}': expected a Part object.")
        inline_size = 0
        modality = TEXT
        if "text" in part:
            text = part["text"]
            if not isinstance(text, str):
                raise invalid_argument(f"Invalid value at '{field}.text' (TYPE_STRING).")
            self.texts.append(text)
            self.payload_bytes += len(text.encode("utf-8"))
            self._hash.update(b"t" + text.encode("utf-8") + b"\0")
        elif (inline := pick(part, "inlineData", "inline_data")) is not None:
            data, mime = _decode_inline(inline, f"{field}.inline_data")
            inline_size = len(data)
            modality = modality_of(mime)
            self._has_blob = True
            self.payload_bytes += inline_size
            self._hash.update(b"i" + mime.encode() + b"\0" + hashlib.sha256(data).digest())
            if mime.startswith("text/"):
                self.inline_texts.append(data.decode("utf-8", errors="replace"))
        elif (file_data := pick(part, "fileData", "file_data")) is not None:
            if not isinstance(file_data, dict):
                raise invalid_argument(f"Invalid value at '{field}.file_data': expected an object.")
            uri = pick(file_data, "fileUri", "file_uri")
            if not isinstance(uri, str) or not uri:
                raise invalid_argument(f"Invalid value at '{field}.file_data.file_uri': a URI is required.")
            mime = pick(file_data, "mimeType", "mime_type") or ""
            if not isinstance(mime, str):
                raise invalid_argument(f"Invalid value at '{field}.file_data.mime_type' (TYPE_STRING).")
            self.file_uris.append(uri)
            self._hash.update(b"f" + uri.encode("utf-8") + b"\0")
            if self.files is not None:
                self._pending_files.append((uri, mime))
                return
            modality = modality_of(mime)
        else:
            self._hash.update(b"j" + repr(sorted(part.items())).encode("utf-8"))
        self._count(part_tokens(part, inline_size), modality)

    def _count(self, tokens: int, modality: str) -> None:
        self.tokens += tokens
        self.modalities[modality] += tokens

    async def resolve_files(self) -> None:
        """Count the pending ``fileData`` parts by what they point at (see :mod:`.sources`)."""
        pending, self._pending_files = self._pending_files, []
        for uri, mime in pending:
            assert self.files is not None
            content = await self.files.fetch(uri, mime)
            if content is None:
                self._count(FILE_DATA_TOKENS, modality_of(mime))
                continue
            self._count(file_tokens(content.size, content.text), modality_of(content.mime_type))
            self._hash.update(b"c" + content.digest.encode() + b"\0")
            if content.text is not None:
                self.inline_texts.append(content.text)

    def add_json(self, value: Any) -> None:
        """Measure a structured field (tools, toolConfig) by its JSON length."""
        if value:
            self._count(json_tokens(value), TEXT)
            self._hash.update(b"s" + repr(value).encode("utf-8"))

    def check_inline_limit(self) -> None:
        """Refuse a request whose inline data plus text exceeds 10 MiB."""
        check_inline_limit(self.payload_bytes)


def check_inline_limit(payload_bytes: int) -> None:
    """Refuse inline data plus text over 10 MiB, with the service's message."""
    if payload_bytes > INLINE_LIMIT_BYTES:
        raise invalid_argument(f"Request payload size exceeds the limit: {INLINE_LIMIT_BYTES} bytes.")


def _decode_inline(inline: Any, field: str) -> tuple[bytes, str]:
    """Decode an ``inlineData`` blob (URL-safe or standard base64)."""
    if not isinstance(inline, dict):
        raise invalid_argument(f"Invalid value at '{field}': expected a Blob object.")
    data = inline.get("data", "")
    mime = pick(inline, "mimeType", "mime_type") or ""
    if not isinstance(data, str) or not isinstance(mime, str):
        raise invalid_argument(f"Invalid value at '{field}': data and mime_type must be strings.")
    normalized = data.replace("-", "+").replace("_", "/")
    normalized += "=" * (-len(normalized) % 4)
    try:
        return base64.b64decode(normalized, validate=True), mime
    except (binascii.Error, ValueError) as exc:
        raise invalid_argument(
            f"Invalid value at '{field}.data' (TYPE_BYTES), Base64 decoding failed."
        ) from exc
