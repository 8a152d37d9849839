"""The Files API (Developer API only): resumable upload, get, list, delete.

The upload is the resumable protocol google-genai speaks (``client.files.upload``):

1. ``POST /upload/{v}/files`` with ``X-Goog-Upload-Protocol: resumable``,
   ``X-Goog-Upload-Command: start``, ``X-Goog-Upload-Header-Content-Length`` / ``-Content-Type``
   and the JSON metadata ``{"file": {"displayName", "mimeType", "name"?}}``. The answer is empty,
   with ``X-Goog-Upload-Status: active`` and the session's ``X-Goog-Upload-URL``.
2. ``POST`` to that URL (``?upload_id=...``), once per chunk, with the raw bytes,
   ``X-Goog-Upload-Command: upload`` (``upload, finalize`` on the last chunk) and
   ``X-Goog-Upload-Offset``. An intermediate chunk answers ``active``; the finalizing one answers
   ``final`` with ``{"file": File}``. ``query`` (bytes received so far) and ``cancel`` work too.

The upload URL is the credential for the chunk requests (they carry no API key, as with
Google's own resumable uploads). Every error during a transfer answers
``X-Goog-Upload-Status: final`` and ends the session, so the SDK raises at once instead of
re-sending the chunk. A missing file is 403 PERMISSION_DENIED, as the service answers.

A session not finalized within an hour of its start (emulator clock,
:data:`.filestore.UPLOAD_SESSION_TTL_NS`) is dropped with its bytes; its URL then answers 404
like any unknown upload. A file may not exceed :data:`MAX_FILE_BYTES`, declared or received.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .api import Call, page_request, page_response
from .content import pick
from .errors import ApiError, invalid_argument
from .filestore import FILE_ID_PATTERN, UploadSession, missing_file

UPLOAD_GRANULARITY = 8 * 1024 * 1024
# The Files API's per-file maximum: 2 GB (ai.google.dev, Files API docs: 20 GB of files per
# project, 2 GB per file). 2 GiB is at least that, and bounds what one upload session can make
# the emulator hold (each of its requests, one chunk, is capped by .guard).
MAX_FILE_BYTES = 2 * 1024 * 1024 * 1024
MAX_DISPLAY_NAME = 512
_COMMANDS = {"start", "upload", "finalize", "query", "cancel"}


def _transfer_error(code: int, message: str) -> ApiError:
    return ApiError(code, message, headers={"X-Goog-Upload-Status": "final"})


def _commands(request: Request) -> set[str]:
    raw = request.headers.get("x-goog-upload-command", "")
    commands = {c.strip().lower() for c in raw.split(",") if c.strip()}
    unknown = commands - _COMMANDS
    if not commands or unknown:
        raise _transfer_error(400, f"Invalid X-Goog-Upload-Command: {raw!r}.")
    return commands


async def upload_file(call: Call, request: Request, body: Any) -> Response:
    """``POST /upload/{v}/files``: start a resumable upload, or take a chunk of one."""
    upload_id = request.query_params.get("upload_id")
    if upload_id is None:
        return _start(call, request, body)
    if not isinstance(body, bytes):  # the dispatcher hands chunk requests over raw
        raise TypeError("chunk bodies must be bytes")
    return _transfer(call, request, upload_id, body)


def _start(call: Call, request: Request, body: Any) -> Response:
    protocol = request.headers.get("x-goog-upload-protocol", "")
    if protocol.lower() != "resumable":
        raise invalid_argument(
            "The emulator supports only the resumable upload protocol (X-Goog-Upload-Protocol: resumable)."
        )
    if _commands(request) != {"start"}:
        raise invalid_argument("A new resumable upload must use X-Goog-Upload-Command: start.")
    if not isinstance(body, dict):
        raise invalid_argument("Invalid JSON payload received. Expected an object.")
    meta = body.get("file") or {}
    if not isinstance(meta, dict):
        raise invalid_argument("Invalid value at 'file': expected a File object.")
    mime = request.headers.get("x-goog-upload-header-content-type") or pick(meta, "mimeType", "mime_type")
    if mime is not None and not isinstance(mime, str):
        raise invalid_argument("Invalid value at 'file.mime_type' (TYPE_STRING).")
    size = _declared_size(request.headers, meta)
    if size is not None and size > MAX_FILE_BYTES:
        raise invalid_argument(f"The file is {size} bytes, over the {MAX_FILE_BYTES}-byte limit of a file.")
    display_name = pick(meta, "displayName", "display_name") or ""
    if not isinstance(display_name, str) or len(display_name) > MAX_DISPLAY_NAME:
        raise invalid_argument(
            f"file.display_name must be a string of at most {MAX_DISPLAY_NAME} characters."
        )
    store = call.state.files
    name = meta.get("name")
    if name:
        if not isinstance(name, str) or not FILE_ID_PATTERN.match(name.removeprefix("files/")):
            raise invalid_argument(
                f"Invalid file name {name!r}: use files/ID where ID has at most 40 lowercase "
                "letters, digits or dashes, and neither starts nor ends with a dash."
            )
        file_id = name.removeprefix("files/")
        if store.is_taken(file_id):
            raise ApiError(409, f"File files/{file_id} already exists.")
    else:
        file_id = store.new_id()
    base = str(request.base_url).rstrip("/")
    session = store.start_upload(
        file_id=file_id,
        display_name=display_name,
        mime_type=mime or "application/octet-stream",
        declared_size=size,
        uri=f"{base}/{call.version}/files/{file_id}",
    )
    upload_url = f"{base}/upload/{call.version}/files?upload_id={session.upload_id}&upload_protocol=resumable"
    return Response(
        b"",
        headers={
            "X-Goog-Upload-Status": "active",
            "X-Goog-Upload-URL": upload_url,
            "X-Goog-Upload-Control-URL": upload_url,
            "X-Goog-Upload-Chunk-Granularity": str(UPLOAD_GRANULARITY),
        },
    )


def _declared_size(headers: Mapping[str, str], meta: Mapping[str, Any]) -> int | None:
    raw = headers.get("x-goog-upload-header-content-length")
    if raw is None:
        raw = pick(meta, "sizeBytes", "size_bytes")
    if raw is None or raw == "":
        return None
    try:
        size = int(raw)
    except (TypeError, ValueError) as exc:
        raise invalid_argument(f"Invalid upload content length: {raw!r}.") from exc
    if size < 0:
        raise invalid_argument(f"Invalid upload content length: {raw!r}.")
    return size


def _transfer(call: Call, request: Request, upload_id: str, chunk: bytes) -> Response:
    store = call.state.files
    session = store.upload(upload_id)
    if session is None:
        raise _transfer_error(404, "The upload session does not exist, or it has already ended.")
    try:
        return _transfer_step(call, request, session, chunk)
    except ApiError:
        store.end_upload(upload_id)
        raise


def _transfer_step(call: Call, request: Request, session: UploadSession, chunk: bytes) -> Response:
    commands = _commands(request)
    store = call.state.files
    if "start" in commands:
        raise _transfer_error(400, "This upload has already started.")
    if "cancel" in commands:
        store.end_upload(session.upload_id)
        return Response(b"", headers={"X-Goog-Upload-Status": "cancelled"})
    if "query" in commands:
        return Response(b"", headers=_progress(session, "active"))
    if "upload" in commands:
        raw_offset = request.headers.get("x-goog-upload-offset")
        try:
            offset = int(raw_offset or "")
        except ValueError as exc:
            raise _transfer_error(400, f"Invalid X-Goog-Upload-Offset: {raw_offset!r}.") from exc
        if offset != session.received:
            raise _transfer_error(
                400, f"Invalid X-Goog-Upload-Offset {offset}: {session.received} bytes were received so far."
            )
        if session.received + len(chunk) > MAX_FILE_BYTES:
            raise _transfer_error(400, f"The upload is over the {MAX_FILE_BYTES}-byte limit of a file.")
        session.append(chunk)
        if session.declared_size is not None and session.received > session.declared_size:
            raise _transfer_error(
                400,
                f"Received {session.received} bytes, more than the declared "
                f"X-Goog-Upload-Header-Content-Length {session.declared_size}.",
            )
    elif chunk:
        raise _transfer_error(400, "A request carrying bytes must include the 'upload' command.")
    if "finalize" not in commands:
        return Response(b"", headers=_progress(session, "active"))
    if session.declared_size is not None and session.received != session.declared_size:
        raise _transfer_error(
            400,
            f"The upload was finalized after {session.received} bytes, but "
            f"{session.declared_size} were declared.",
        )
    stored = store.finalize(session)
    return Response(
        json.dumps({"file": stored.resource()}),
        media_type="application/json",
        headers=_progress(session, "final"),
    )


def _progress(session: UploadSession, status: str) -> dict[str, str]:
    return {"X-Goog-Upload-Status": status, "X-Goog-Upload-Size-Received": str(session.received)}


async def get_file(call: Call, request: Request, body: Any) -> dict[str, Any]:
    """``GET /{v}/files/{id}``."""
    file_id = request.path_params["file_id"]
    stored = call.state.files.get(file_id)
    if stored is None:
        raise missing_file(file_id)
    return stored.resource()


async def list_files(call: Call, request: Request, body: Any) -> dict[str, Any]:
    """``GET /{v}/files?pageSize&pageToken`` -> ``{"files", "nextPageToken"}``."""
    page, next_token = call.state.files.page(*page_request(request.query_params))
    return page_response("files", [f.resource() for f in page], next_token)


async def delete_file(call: Call, request: Request, body: Any) -> dict[str, Any]:
    """``DELETE /{v}/files/{id}`` -> ``{}``."""
    file_id = request.path_params["file_id"]
    if not call.state.files.delete(file_id):
        raise missing_file(file_id)
    return {}
