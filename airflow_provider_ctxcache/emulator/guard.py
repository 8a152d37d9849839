"""The request guard: what every request must pass before any route sees it.

Three rules, checked in this order on the raw ASGI request, so a refused request never reaches
a handler (it is neither counted nor logged, and changes no state):

1. ``Host`` must be a loopback name: ``localhost`` or a loopback address (``127.0.0.1``,
   ``[::1]``), with or without a port. A page served from another site that rebinds its own DNS
   name to 127.0.0.1 still sends its own name as ``Host``, so it is answered 403 on every route,
   API and admin alike. Off for an emulator started with ``--allow-remote``.
2. A ``POST`` to an admin route (``/_emulator/...``) must say ``Content-Type: application/json``
   (else 415): a browser sends a cross-site ``POST`` without a CORS preflight only with a
   form or ``text/plain`` type, so a page elsewhere cannot reset the emulator or set faults.
3. The body must fit its route's cap (else 413): a declared ``Content-Length`` over the cap is
   refused before a byte of the body is read, and a body without one (chunked) is read chunk by
   chunk and refused as soon as it goes over. The accepted body is then handed on to the app as
   it arrived, so at most the cap is held before the app runs.

Refusals use the Google error shape of :mod:`.errors` and say ``Connection: close``, so the
server drops the connection rather than read and discard the rest of a refused body.
"""

from __future__ import annotations

import ipaddress
import re
from collections import deque
from collections.abc import Iterable
from typing import Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import ApiError

MIB = 1024 * 1024
# API routes (cachedContents, generateContent, countTokens, batches, the token endpoint): the
# Developer API's inline request limit, raised from 20 MB to 100 MB for generateContent in
# January 2026 (API_FACTS.md, "What changed"; Google's blog post "Increased file size limits and
# expanded inputs support in Gemini API"); it was 20 MB before, as Vertex AI in Firebase still
# documents for a whole request (answering HTTP 413 beyond it). 100 MiB is at least both, so the
# emulator never refuses a body the real service would take; the service's own rules on content
# (the 10 MB inline rule of cachedContents.create) stay in the handlers with the service's errors.
MAX_API_BODY_BYTES = 100 * MIB
# One request of a Files API resumable upload (``/upload/...``), i.e. one chunk: google-genai
# sends 8 MiB chunks (``google.genai._api_client.CHUNK_SIZE``) and the emulator announces an
# 8 MiB granularity. A chunk may be any multiple of it, so the cap is the API cap, per chunk;
# the size of a whole file is bounded by :data:`.files.MAX_FILE_BYTES`, not here.
MAX_UPLOAD_CHUNK_BYTES = 100 * MIB
# Admin routes (``/_emulator/...``) take small JSON objects (faults, clock); 1 MiB is far more
# than any of them needs. The emulator's own choice: no real service behind these routes.
MAX_ADMIN_BODY_BYTES = 1 * MIB

ADMIN_PREFIX = "/_emulator"
UPLOAD_PREFIX = "/upload/"
_PORT = re.compile(r"[0-9]{1,5}")
_DIGITS = re.compile(r"[0-9]+")
_SHOWN_CHARS = 100


def is_admin_path(path: str) -> bool:
    """Whether ``path`` is one of the admin routes (``/_emulator/...``)."""
    return path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/")


def body_limit(path: str) -> int:
    """The largest body (bytes) a request to ``path`` may carry."""
    if is_admin_path(path):
        return MAX_ADMIN_BODY_BYTES
    if path.startswith(UPLOAD_PREFIX):
        return MAX_UPLOAD_CHUNK_BYTES
    return MAX_API_BODY_BYTES


def is_loopback_host(value: str | None) -> bool:
    """Whether a ``Host`` header names this machine: ``localhost`` or a loopback address, any port.

    IPv6 addresses must be bracketed (``[::1]:8765``), as in a URL. Anything else (another name,
    a name that merely resolves to 127.0.0.1, a malformed port) is not loopback.
    """
    if not value:
        return False
    value = value.strip().lower()
    bracketed = value.startswith("[")
    if bracketed:
        name, bracket, rest = value[1:].partition("]")
        if not bracket:
            return False
    else:
        name, colon, port = value.partition(":")
        rest = colon + port
    if rest and not (rest.startswith(":") and _PORT.fullmatch(rest[1:])):
        return False
    if name == "localhost" and not bracketed:
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    return address.is_loopback and bracketed == (address.version == 6)


def is_json(content_type: str | None) -> bool:
    """Whether a ``Content-Type`` is ``application/json`` (parameters such as charset allowed)."""
    if not content_type:
        return False
    return content_type.split(";", 1)[0].strip().lower() == "application/json"


def host_refused(host: str | None) -> ApiError:
    """403: the ``Host`` is not a loopback name."""
    shown = repr(host[:_SHOWN_CHARS]) if host is not None else "(none)"
    return ApiError(
        403,
        f"Host {shown} is not a loopback name: this emulator answers only requests whose Host "
        "header is localhost, 127.0.0.1 or [::1] (with or without a port), against DNS "
        "rebinding; start it with --allow-remote to serve other names.",
        headers={"Connection": "close"},
    )


def json_required(content_type: str | None) -> ApiError:
    """415: an admin ``POST`` whose body is not declared JSON."""
    shown = repr(content_type[:_SHOWN_CHARS]) if content_type else "none"
    return ApiError(
        415,
        f"Admin requests must send Content-Type: application/json (got {shown}).",
        headers={"Connection": "close"},
    )


def too_large(limit: int) -> ApiError:
    """413: the body is over the route's cap."""
    return ApiError(
        413,
        f"Request payload size exceeds the limit: {limit} bytes.",
        headers={"Connection": "close"},
    )


class _BufferedReceive:
    """The request body read by the guard, handed to the app as it came; then the server's receive.

    The app is given the bound method :meth:`receive`. It keeps the server's ``transport``
    reachable as ``receive.__self__.transport``, which is how the connection-reset fault finds
    the socket to abort (see :class:`.app.DroppedConnection`).
    """

    def __init__(self, messages: Iterable[Message], receive: Receive) -> None:
        self._messages: deque[Message] = deque(messages)
        self._receive = receive
        self.transport: Any = getattr(getattr(receive, "__self__", None), "transport", None)

    async def receive(self) -> Message:
        if self._messages:
            return self._messages.popleft()
        return await self._receive()


class RequestGuard:
    """ASGI middleware enforcing the loopback ``Host``, JSON admin ``POST`` and body size rules.

    ``allow_remote``: skip the ``Host`` rule (an emulator started with ``--allow-remote``).
    """

    def __init__(self, app: ASGIApp, *, allow_remote: bool = False) -> None:
        self.app = app
        self.allow_remote = allow_remote

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers = Headers(scope=scope)
        host = headers.get("host")
        if not self.allow_remote and not is_loopback_host(host):
            await host_refused(host).response()(scope, receive, send)
            return
        content_type = headers.get("content-type")
        if scope["method"] == "POST" and is_admin_path(path) and not is_json(content_type):
            await json_required(content_type).response()(scope, receive, send)
            return
        limit = body_limit(path)
        declared = headers.get("content-length")
        if declared is not None and _DIGITS.fullmatch(declared.strip()) and int(declared) > limit:
            await too_large(limit).response()(scope, receive, send)
            return
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client is gone: nobody to answer
            size += len(message.get("body", b""))
            if size > limit:
                messages.clear()
                await too_large(limit).response()(scope, receive, send)
                return
            messages.append(message)
            if not message.get("more_body", False):
                break
        await self.app(scope, _BufferedReceive(messages, receive).receive, send)
