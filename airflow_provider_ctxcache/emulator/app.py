"""The FastAPI application: routes for both backends and all API versions, plus admin.

Every API route goes through one dispatcher that parses the JSON body, checks auth, applies
injected faults, runs the handler, renders Google-shaped errors, and counts and logs the
request (never its headers, never a key); a successful call's billable events go to the
usage ledger (``GET /_emulator/usage``). Routes are plain Starlette routes on the FastAPI
app with no per-request validation layer, so the emulator stays fast under load.

The chunk requests of a resumable upload (``POST /upload/{v}/files?upload_id=...``) are the
one exception to JSON bodies and auth: their body is raw bytes, and the upload id they carry is
their credential (see :mod:`.files`). A connection-reset fault answers nothing at all: the
socket is closed with an RST (see :class:`DroppedConnection`).

Before any route, :class:`~.guard.RequestGuard` refuses a request whose ``Host`` is not a
loopback name (unless the app was built with ``allow_remote``), an admin ``POST`` that is not
``application/json``, and a body over its route's cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct
from collections.abc import Awaitable, Callable, Mapping
from email.utils import formatdate
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import api, batch, files, generate
from .api import Call
from .auth import check_developer, check_vertex, token_endpoint
from .clock import NANOS, Clock
from .errors import ApiError, invalid_argument, not_found
from .faults import RESET_STATUS, ConnectionReset, FaultConfig
from .guard import RequestGuard
from .state import EmulatorState

logger = logging.getLogger(__name__)

API_VERSIONS = ("v1", "v1beta", "v1beta1")
VERTEX_PREFIX = "/{version}/projects/{project}/locations/{location}"

Handler = Callable[[Call, Request, Any], Awaitable[dict[str, Any] | Response]]


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status_code=status, media_type="application/json")


def _logged_path(request: Request) -> str:
    """The request path with its query, minus any API key."""
    query = [(k, v) for k, v in request.query_params.multi_items() if k != "key"]
    return f"{request.url.path}?{urlencode(query)}" if query else request.url.path


class DroppedConnection(Response):
    """Not a response: resets the client's connection (RST) and sends nothing at all.

    uvicorn hands the app its connection's ``receive`` as a bound method of the request cycle,
    which holds the transport: the socket gets ``SO_LINGER`` 0 (so closing it sends an RST,
    not a FIN) and the transport is aborted. The app then yields until uvicorn has seen the
    connection go, so it does not answer 500 for a response never started. Under a server
    that does not expose its transport, the response is started and abandoned instead, which
    also leaves the client without a usable answer.
    """

    def __init__(self) -> None:
        super().__init__(b"")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        transport = getattr(getattr(receive, "__self__", None), "transport", None)
        if not isinstance(transport, asyncio.Transport):
            await send({"type": "http.response.start", "status": 500, "headers": []})
            raise ConnectionResetError("emulator: injected connection reset")
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
        for _ in range(3):  # connection_lost runs on the next loop iteration
            await asyncio.sleep(0)


def _endpoint(
    state: EmulatorState, op: str, vertex: bool, handler: Handler, *, upload: bool = False
) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a handler with parsing, auth, faults, error rendering, counting and logging.

    ``upload``: the route of resumable uploads, whose chunk requests carry raw bytes and no
    API key (the handler gets the bytes as its body).
    """

    async def endpoint(request: Request) -> Response:
        state.in_flight += 1
        try:
            return await handle(request)
        finally:
            state.in_flight -= 1

    async def handle(request: Request) -> Response:
        epoch = state.epoch  # a reset while this request runs (a test ending) leaves it uncounted
        params = request.path_params
        raw = await request.body()
        chunk = upload and "upload_id" in request.query_params
        body: Any = {"_binary": True, "bytes": len(raw)} if chunk else None
        call: Call | None = None
        try:
            if params["version"] not in API_VERSIONS:
                raise not_found(f"API version {params['version']} is not supported.")
            if raw and not chunk:
                try:
                    body = json.loads(raw)
                except ValueError as exc:
                    raise invalid_argument("Invalid JSON payload received.") from exc
            if vertex:
                check_vertex(request)
                call = Call.vertex(state, params["version"], params["project"], params["location"])
            else:
                if not chunk:
                    check_developer(request, state.api_key)
                call = Call.developer(state, params["version"])
            if state.faults.active:
                skip = state.faults.clock_skip(op)
                if skip:
                    state.clock.advance(skip)
                fault = await state.faults.apply(op, call.backend)
                if fault is not None:
                    raise fault
            result = await handler(call, request, raw if chunk else ({} if body is None else body))
            response = result if isinstance(result, Response) else _json(result)
        except ConnectionReset:
            if epoch == state.epoch:
                state.record(
                    op=op,
                    method=request.method,
                    path=_logged_path(request),
                    status=RESET_STATUS,
                    body=body,
                    body_size=len(raw),
                    server_timeout=request.headers.get("x-server-timeout"),
                )
            return DroppedConnection()
        except ApiError as error:
            response = error.response()
        except Exception:
            logger.exception("emulator: unexpected error in %s", op)
            response = ApiError(500, "Internal error encountered.").response()
        if epoch == state.epoch:
            state.record(
                op=op,
                method=request.method,
                path=_logged_path(request),
                status=response.status_code,
                body=body,
                body_size=len(raw),
                server_timeout=request.headers.get("x-server-timeout"),
            )
            if call is not None and 200 <= response.status_code < 300:
                for event in call.events:
                    state.usage.add(event)
        return response

    return endpoint


async def _create(call: Call, request: Request, body: Any) -> dict[str, Any]:
    return await api.create_cache(call, body)


async def _list(call: Call, request: Request, body: Any) -> dict[str, Any]:
    return await api.list_caches(call, request.query_params)


async def _get(call: Call, request: Request, body: Any) -> dict[str, Any]:
    return await api.get_cache(call, request.path_params["cache_id"])


async def _update(call: Call, request: Request, body: Any) -> dict[str, Any]:
    return await api.update_cache(call, request.path_params["cache_id"], body, request.query_params)


async def _delete(call: Call, request: Request, body: Any) -> dict[str, Any]:
    return await api.delete_cache(call, request.path_params["cache_id"])


async def _generate(call: Call, request: Request, body: Any) -> dict[str, Any]:
    return await generate.generate_content(call, request.path_params["model"], body)


async def _count(call: Call, request: Request, body: Any) -> dict[str, Any]:
    return await api.count_tokens(call, request.path_params["model"], body)


async def _developer_batch(call: Call, request: Request, body: Any) -> dict[str, Any]:
    return await batch.developer_batch(call, request.path_params["model"], body)


async def _vertex_batch(call: Call, request: Request, body: Any) -> dict[str, Any]:
    return await batch.vertex_batch(call, body)


# (path under the backend's prefix, method, op, handler)
_API_ROUTES: tuple[tuple[str, str, str, Handler], ...] = (
    ("/cachedContents", "POST", "create_cache", _create),
    ("/cachedContents", "GET", "list_caches", _list),
    ("/cachedContents/{cache_id}", "GET", "get_cache", _get),
    ("/cachedContents/{cache_id}", "PATCH", "update_cache", _update),
    ("/cachedContents/{cache_id}", "DELETE", "delete_cache", _delete),
)


def _add_admin_routes(app: FastAPI, state: EmulatorState) -> None:
    async def get_state(request: Request) -> Response:
        return _json(state.snapshot())

    async def get_usage(request: Request) -> Response:
        return _json(state.usage_snapshot())

    async def get_requests(request: Request) -> Response:
        return _json({"requests": list(state.request_log)})

    async def reset(request: Request) -> Response:
        state.reset()
        return _json({})

    async def faults(request: Request) -> Response:
        if request.method == "POST":
            raw = await request.body()
            try:
                config = FaultConfig.from_json(json.loads(raw) if raw else {})
            except ValueError:
                return invalid_argument("faults: invalid JSON").response()
            except ApiError as error:
                return error.response()
            state.faults.configure(config)
        return _json(state.faults.config.to_json())

    async def clock(request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else {}
            state.clock.advance(float(body.get("advance_seconds", 0)))
        except (ValueError, TypeError, AttributeError) as exc:
            return invalid_argument(f"clock: {exc}").response()
        return _json({"now": state.snapshot()["now"]})

    async def api_key(request: Request) -> Response:
        """Rotate the Developer-API key (``{"api_key": "..."}``; null accepts any key); never echoed."""
        raw = await request.body()
        try:
            key = (json.loads(raw) if raw else {}).get("api_key")
        except (ValueError, AttributeError):
            return invalid_argument("api_key: invalid JSON").response()
        if key is not None and (not isinstance(key, str) or not key):
            return invalid_argument("api_key: must be a non-empty string or null").response()
        state.api_key = key
        return _json({"checked": key is not None})

    async def oauth_token(request: Request) -> Response:
        return await token_endpoint(request, state)

    app.add_route("/_emulator/state", get_state, methods=["GET"])
    app.add_route("/_emulator/requests", get_requests, methods=["GET"])
    app.add_route("/_emulator/usage", get_usage, methods=["GET"])
    app.add_route("/_emulator/reset", reset, methods=["POST"])
    app.add_route("/_emulator/faults", faults, methods=["GET", "POST"])
    app.add_route("/_emulator/clock", clock, methods=["POST"])
    app.add_route("/_emulator/api_key", api_key, methods=["POST"])
    app.add_route("/oauth2/token", oauth_token, methods=["POST"])


class ServerDate:
    """Every answer carries ``Date`` on the emulator's clock (which tests move), as Google's do."""

    def __init__(self, app: ASGIApp, clock: Clock) -> None:
        self.app = app
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_date(message: Message) -> None:
            if message["type"] == "http.response.start":
                date = formatdate(self.clock.now_ns() / NANOS, usegmt=True).encode()
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"date"]
                message = {**message, "headers": [*headers, (b"date", date)]}
            await send(message)

        await self.app(scope, receive, send_with_date)


def create_app(
    *,
    api_key: str | None = None,
    min_tokens: Mapping[str, int] | None = None,
    allow_remote: bool = False,
) -> FastAPI:
    """Build an emulator app with its own empty state.

    ``api_key``: when set, Developer-API calls must carry exactly this key.
    ``min_tokens``: per-model minimum cache sizes overriding the table in :mod:`.models` on every
    backend that serves the model (an unknown model is added, served on both).
    ``allow_remote``: answer requests whatever their ``Host`` (``--allow-remote``); by default
    only loopback names are answered (see :mod:`.guard`).
    """
    state = EmulatorState(api_key=api_key, min_tokens=min_tokens)
    app = FastAPI(title="ctxcache Gemini emulator", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.emulator = state
    # The last middleware added runs first: ServerDate wraps the guard, so refusals carry Date too.
    app.add_middleware(RequestGuard, allow_remote=allow_remote)
    app.add_middleware(ServerDate, clock=state.clock)
    _add_admin_routes(app, state)

    for path, method, op, handler in _API_ROUTES:
        app.add_route(f"/{{version}}{path}", _endpoint(state, op, False, handler), methods=[method])
        app.add_route(f"{VERTEX_PREFIX}{path}", _endpoint(state, op, True, handler), methods=[method])
    developer_models = "/{version}/models/{model}"
    vertex_models = f"{VERTEX_PREFIX}/publishers/google/models/{{model}}"
    for suffix, op, handler in (
        (":generateContent", "generate_content", _generate),
        (":countTokens", "count_tokens", _count),
    ):
        app.add_route(developer_models + suffix, _endpoint(state, op, False, handler), methods=["POST"])
        app.add_route(vertex_models + suffix, _endpoint(state, op, True, handler), methods=["POST"])
    # The Files API exists on the Developer API only.
    app.add_route(
        "/upload/{version}/files",
        _endpoint(state, "upload_file", False, files.upload_file, upload=True),
        methods=["POST"],
    )
    app.add_route(
        "/{version}/files", _endpoint(state, "list_files", False, files.list_files), methods=["GET"]
    )
    app.add_route(
        "/{version}/files/{file_id}", _endpoint(state, "get_file", False, files.get_file), methods=["GET"]
    )
    app.add_route(
        "/{version}/files/{file_id}",
        _endpoint(state, "delete_file", False, files.delete_file),
        methods=["DELETE"],
    )
    app.add_route(
        developer_models + ":batchGenerateContent",
        _endpoint(state, "batch", False, _developer_batch),
        methods=["POST"],
    )
    app.add_route(
        f"{VERTEX_PREFIX}/batchPredictionJobs",
        _endpoint(state, "batch", True, _vertex_batch),
        methods=["POST"],
    )

    async def http_error(request: Request, exc: Exception) -> Response:
        code = exc.status_code if isinstance(exc, StarletteHTTPException) else 500
        message = (
            "Method not allowed." if code == 405 else f"The requested URL {request.url.path} was not found."
        )
        return ApiError(code, message).response()

    app.add_exception_handler(StarletteHTTPException, http_error)
    return app
