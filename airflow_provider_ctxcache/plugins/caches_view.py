"""An Airflow UI view of the live caches of a ``ctxcache`` connection, registered by a plugin.

The api-server mounts a small FastAPI app at ``/ctxcache``:

- ``GET /ctxcache/caches?conn_id=ctxcache_default``: a plain HTML page (no external assets) with
  each live cache's name, display name, model, token count, expire time and time left, and the
  DAG and run that made it (when its display name carries them, see :mod:`..cache_owner`), so
  an operator sees what is still being billed and for whom.
- ``GET /ctxcache/caches.json``: the same listing as JSON (``state``, ``caches``, ``error``).

Both need Airflow's auth (the UI's session cookie or a bearer token) and the right to read the
connection. An ``external_views`` entry adds "Gemini caches" to the UI's navigation.

Listing calls the connection's endpoint with its stored credentials, which is what a connection
test does, and whoever may edit a connection chooses that endpoint. So the view is guarded like
Airflow's own connection test, and more:

- It lists only when an admin allowed it: ``[core] test_connection = Enabled``, or
  ``[ctxcache] caches_view_enabled = True`` (default False). Otherwise the page says how to
  enable it and nothing is called.
- It sends credentials only to Google's endpoints (``*.googleapis.com``) or to hosts listed in
  ``[ctxcache] caches_view_allowed_hosts``: the ``base_url``'s host and, for a service-account
  key in the connection, its ``token_uri``'s host. Loopback is not implied (add ``127.0.0.1``
  for the emulator). A refused host gets no request at all.
- A failed call shows only the error's class and HTTP status, never the response body: the
  body comes from whatever server the connection points at.
- Its calls cannot starve the api-server's thread pool: its own timeout
  (``caches_view_timeout``, 5 s; the connection's is for tasks), no retries, at most
  ``caches_view_max_concurrent`` (4) listings at once per process and one per connection
  (further page loads are answered "busy, try again" at once, HTTP 503, never queued), and each
  connection's result is reused for ``caches_view_cache_seconds`` (15 s).

Airflow loads the plugin from a module in its plugins folder containing
``from airflow_provider_ctxcache.plugins.caches_view import CtxCachePlugin``, or from an
``airflow.plugins`` entry point of the provider's distribution.
"""

import contextlib
import dataclasses
import datetime as dt
import html
import threading
import time
from collections.abc import Hashable, Iterator
from typing import Annotated, Any

from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException, Query, status
from fastapi.responses import HTMLResponse, JSONResponse

from airflow_provider_ctxcache.connection_defaults import (
    CACHES_VIEW_ALLOWED_HOSTS,
    CACHES_VIEW_CACHE_SECONDS,
    CACHES_VIEW_ENABLED,
    CACHES_VIEW_MAX_CONCURRENT,
    CACHES_VIEW_TIMEOUT_SECONDS,
    CONFIG_SECTION,
)

URL_PREFIX = "/ctxcache"
DEFAULT_CONN_ID = "ctxcache_default"
MAX_CACHES = 1000
PAGE_SIZE = 100
BUSY_RETRY_AFTER_SECONDS = 5

OK, ERROR, DISABLED, REFUSED, BUSY = "ok", "error", "disabled", "refused", "busy"
HTTP_STATUS = {OK: 200, ERROR: 200, DISABLED: 403, REFUSED: 403, BUSY: 503}

HOW_TO_ENABLE = (
    "Listing caches here is off. It calls the connection's endpoint with its stored credentials, "
    "as a connection test does, and Airflow keeps connection testing off by default. An admin can "
    "turn it on with [core] test_connection = Enabled, or for this view only with "
    f"[{CONFIG_SECTION}] caches_view_enabled = True (AIRFLOW__CTXCACHE__CACHES_VIEW_ENABLED=True). "
    "Nothing was called."
)


def _build_auth_dependency() -> Any:
    """A dependency: the caller's Airflow user, allowed to read ``conn_id`` (401/403 otherwise)."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import ConnectionDetails
    from airflow.api_fastapi.core_api.security import GetUserDep

    # No ``from __future__ import annotations`` in this module: FastAPI must see ``GetUserDep``
    # itself here, not a string it would look up in the module's globals.
    async def authorized_user(user: GetUserDep, conn_id: str = DEFAULT_CONN_ID) -> Any:
        allowed = get_auth_manager().is_authorized_connection(
            method="GET", details=ConnectionDetails(conn_id=conn_id), user=user
        )
        if not allowed:
            raise HTTPException(status.HTTP_403_FORBIDDEN, "Forbidden")
        return user

    return authorized_user


AuthorizedUser = Annotated[Any, Depends(_build_auth_dependency())]


# -- what an admin allowed ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ViewPolicy:
    """The view's options as Airflow's config holds them now (read on every page load)."""

    enabled: bool
    allowed_hosts: frozenset[str]
    timeout_seconds: float
    max_concurrent: int
    cache_seconds: float


class ViewOptionError(ValueError):
    """An option of the view has a value it cannot use; the message names the option."""


def _option(name: str, default: Any) -> str:
    from airflow.configuration import conf

    return str(conf.get(CONFIG_SECTION, name, fallback=str(default))).strip()


def _number_option(name: str, default: float, *, minimum: float, integer: bool = False) -> Any:
    raw = _option(name, default)
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        value = None
    if value is None or not value >= minimum or value == float("inf"):
        kind = "a whole number" if integer else "a number"
        raise ViewOptionError(
            f"[{CONFIG_SECTION}] {name}: {raw!r} is not {kind} of at least {minimum:g}; "
            f"remove it to use {default:g}. Nothing was called."
        )
    return value


def _allowed_hosts(raw: str) -> frozenset[str]:
    hosts = (part.strip().strip("[]").rstrip(".").lower() for part in raw.split(","))
    return frozenset(host for host in hosts if host)


def view_policy() -> ViewPolicy:
    """Whether listing is allowed, where to, and the limits on its calls."""
    from airflow.configuration import conf

    core_test = str(conf.get("core", "test_connection", fallback="Disabled")).strip().lower()
    enabled_raw = _option("caches_view_enabled", CACHES_VIEW_ENABLED).lower()
    if enabled_raw not in ("true", "false", "1", "0", "t", "f"):
        raise ViewOptionError(
            f"[{CONFIG_SECTION}] caches_view_enabled: {enabled_raw!r} is not True or False. "
            "Nothing was called."
        )
    return ViewPolicy(
        enabled=core_test == "enabled" or enabled_raw in ("true", "1", "t"),
        allowed_hosts=_allowed_hosts(_option("caches_view_allowed_hosts", CACHES_VIEW_ALLOWED_HOSTS)),
        timeout_seconds=_number_option("caches_view_timeout", CACHES_VIEW_TIMEOUT_SECONDS, minimum=0.1),
        max_concurrent=_number_option(
            "caches_view_max_concurrent", CACHES_VIEW_MAX_CONCURRENT, minimum=1, integer=True
        ),
        cache_seconds=_number_option("caches_view_cache_seconds", CACHES_VIEW_CACHE_SECONDS, minimum=0),
    )


# -- one listing ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Listing:
    """What the page shows: the rows, or why there are none (``state`` and a secret-free message)."""

    conn_id: str
    state: str
    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    message: str | None = None
    listed_at: dt.datetime = dataclasses.field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.state]


class _Slots:
    """At most ``limit`` listings at once in this process, and one per connection; never waits."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[Hashable] = set()

    @contextlib.contextmanager
    def claim(self, key: Hashable, limit: int) -> Iterator[bool]:
        with self._lock:
            granted = key not in self._running and len(self._running) < limit
            if granted:
                self._running.add(key)
        try:
            yield granted
        finally:
            if granted:
                with self._lock:
                    self._running.discard(key)


class _Results:
    """Each connection's last listing, reused while it is fresh."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[Hashable, tuple[float, Listing]] = {}

    def get(self, key: Hashable) -> Listing | None:
        with self._lock:
            held = self._held.get(key)
        return held[1] if held is not None and held[0] > time.monotonic() else None

    def put(self, key: Hashable, listing: Listing, seconds: float) -> None:
        if seconds <= 0:
            return
        now = time.monotonic()
        with self._lock:
            for stale in [k for k, (until, _) in self._held.items() if until <= now]:
                del self._held[stale]
            self._held[key] = (now + seconds, listing)

    def clear(self) -> None:
        with self._lock:
            self._held.clear()


_slots = _Slots()
_results = _Results()


def clear_listings() -> None:
    """Forgets every reused listing, so the next page load of each connection calls again."""
    _results.clear()


def _time_left(expire_time: dt.datetime | None, now: dt.datetime) -> str:
    if expire_time is None:
        return "unknown"
    if expire_time.tzinfo is None:
        expire_time = expire_time.replace(tzinfo=dt.timezone.utc)
    seconds = int((expire_time - now).total_seconds())
    if seconds <= 0:
        return "expired"
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m {seconds:02d}s" if hours else f"{minutes}m {seconds:02d}s"


def _row(cache: Any, now: dt.datetime) -> dict[str, Any]:
    from airflow_provider_ctxcache.cache_owner import owner_of

    usage = cache.usage_metadata
    expire = cache.expire_time
    owner = owner_of(cache.display_name)  # the DAG run that made it, when its display name says
    return {
        "name": cache.name,
        "display_name": cache.display_name,
        "model": cache.model,
        "total_token_count": usage.total_token_count if usage else None,
        "expire_time": expire.isoformat() if expire else None,
        "time_left": _time_left(expire, now),
        "dag_id": owner.dag_id if owner else None,
        "run_id": owner.run_id if owner else None,
    }


def _call_failure(error: Exception, backend: Any, timeout: float) -> str:
    """The error's class and HTTP status: never its text, which quotes the server's body."""
    from google.genai.errors import APIError

    if isinstance(error, APIError):
        named = backend.translate_error(error)
        return f"{type(named).__name__} (HTTP {error.code})"
    if "Timeout" in type(error).__name__:
        return f"{type(error).__name__} (no answer within {timeout:g} s)"
    return type(error).__name__


def _fetch(conn_id: str, settings: Any, policy: ViewPolicy) -> Listing:
    """One listing with the view's own client: its timeout, one attempt, a bounded number of pages."""
    from google.genai import types

    from airflow_provider_ctxcache.hooks.backend import backend_for

    own = dataclasses.replace(settings, timeout_seconds=policy.timeout_seconds, retry_attempts=1)
    backend = backend_for(own)
    try:
        client = backend.build_client(retry_attempts=1)
    except Exception as error:  # built locally (credentials, options): no server text in it
        return Listing(conn_id, ERROR, message=settings.scrub(f"{type(error).__name__}: {error}"))
    rows: list[dict[str, Any]] = []
    note = None
    deadline = time.monotonic() + policy.timeout_seconds
    try:
        pages = client.caches.list(config=types.ListCachedContentsConfig(page_size=PAGE_SIZE))
        now = dt.datetime.now(dt.timezone.utc)
        for cache in pages:
            rows.append(_row(cache, now))
            if len(rows) >= MAX_CACHES or time.monotonic() > deadline:
                note = f"Showing the first {len(rows)} caches."
                break
    except Exception as error:  # shown on the page, never a 500
        return Listing(conn_id, ERROR, message=_call_failure(error, backend, policy.timeout_seconds))
    finally:
        with contextlib.suppress(Exception):  # closing must not hide the answer
            client.close()
    rows.sort(key=lambda row: row["expire_time"] or "")
    return Listing(conn_id, OK, rows=rows, message=note)


def load_listing(conn_id: str) -> Listing:
    """The connection's live caches, if an admin allowed the call; never raises."""
    try:
        policy = view_policy()
    except ViewOptionError as error:
        return Listing(conn_id, REFUSED, message=str(error))
    if not policy.enabled:
        return Listing(conn_id, DISABLED, message=HOW_TO_ENABLE)

    from airflow_provider_ctxcache.hooks import ContextCacheHook
    from airflow_provider_ctxcache.hooks.backend import backend_for
    from airflow_provider_ctxcache.hooks.settings import is_google_host

    hook = ContextCacheHook(conn_id)
    try:
        settings = hook.settings  # reading the connection calls nothing
        backend = backend_for(settings)
    except Exception as error:  # an unknown or invalid connection: Airflow's or our own text
        return Listing(conn_id, ERROR, message=hook.scrub(f"{type(error).__name__}: {error}"))

    hosts = backend.credential_hosts()
    refused = [h for h in hosts if not is_google_host(h) and h not in policy.allowed_hosts]
    if refused:
        named = ", ".join(repr(h) if h else "(no host)" for h in refused)
        return Listing(
            conn_id,
            REFUSED,
            message=(
                f"Not called: connection {conn_id!r} would send its credentials to {named}, which is "
                f"not a Google endpoint (*.googleapis.com) and not in [{CONFIG_SECTION}] "
                "caches_view_allowed_hosts. An admin who trusts that host can add it there."
            ),
        )

    key = (conn_id, backend.describe(), tuple(hosts))
    cached = _results.get(key)
    if cached is not None:
        return cached
    with _slots.claim(key, policy.max_concurrent) as granted:
        if not granted:
            return Listing(
                conn_id,
                BUSY,
                message=(
                    "Busy: other listings are running (at most "
                    f"{policy.max_concurrent} at once, one per connection). Try again in a few seconds."
                ),
            )
        cached = _results.get(key)  # filled while this request waited for its slot check
        if cached is not None:
            return cached
        listing = _fetch(conn_id, settings, policy)
        _results.put(key, listing, policy.cache_seconds)
        return listing


# -- the page -----------------------------------------------------------------------------------

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Gemini caches - {conn_id}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5rem; color: #1a202c; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ border: 1px solid #cbd5e0; padding: .4rem .6rem; text-align: left; font-size: .9rem; }}
th {{ background: #edf2f7; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
.error {{ background: #fff5f5; border: 1px solid #feb2b2; color: #9b2c2c; padding: .8rem; }}
.notice {{ background: #fffaf0; border: 1px solid #fbd38d; color: #7b341e; padding: .8rem; }}
form {{ margin: 0 0 1rem; }}
</style></head><body>
<h1>Gemini caches</h1>
<form method="get"><label>Connection <input name="conn_id" value="{conn_id}"></label>
<button type="submit">Show</button></form>
{body}
<p><small>Live caches are billed for storage until they expire. {when}</small></p>
</body></html>
"""

COLUMNS = [
    ("name", "Name"),
    ("display_name", "Display name"),
    ("model", "Model"),
    ("total_token_count", "Tokens"),
    ("expire_time", "Expires"),
    ("time_left", "Time left"),
    ("dag_id", "DAG"),
    ("run_id", "Run"),
]


def _table(listing: Listing) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(title)}</th>" for _, title in COLUMNS)
    lines = []
    for row in listing.rows:
        cells = []
        for key, _ in COLUMNS:
            value = row[key]
            text = "" if value is None else f"{value:,}" if isinstance(value, int) else str(value)
            css = ' class="num"' if key == "total_token_count" else ""
            cells.append(f"<td{css}>{esc(text)}</td>")
        lines.append(f"<tr>{''.join(cells)}</tr>")
    total = sum(row["total_token_count"] or 0 for row in listing.rows)
    note = f" {esc(listing.message)}" if listing.message else ""
    return (
        f"<p>{len(listing.rows)} live cache(s) on <code>{esc(listing.conn_id)}</code>, "
        f"{total:,} tokens in all.{note}</p>"
        f'<table id="caches"><thead><tr>{head}</tr></thead><tbody>{"".join(lines)}</tbody></table>'
    )


def render_page(listing: Listing) -> str:
    esc = html.escape
    conn = esc(listing.conn_id)
    message = esc(listing.message or "")
    if listing.state == ERROR:
        body = f'<p class="error" role="alert">Could not list the caches of {conn}: {message}</p>'
    elif listing.state != OK:
        body = f'<p class="notice" role="status">{message}</p>'
    elif not listing.rows:
        body = f"<p>No live caches on connection <code>{conn}</code>.</p>"
    else:
        body = _table(listing)
    when = (
        f"Listed at {listing.listed_at.strftime('%Y-%m-%d %H:%M:%S')} UTC."
        if listing.state in (OK, ERROR)
        else ""
    )
    return PAGE.format(conn_id=conn, body=body, when=when)


def _headers(listing: Listing) -> dict[str, str]:
    headers = {"Cache-Control": "no-store"}
    if listing.state == BUSY:
        headers["Retry-After"] = str(BUSY_RETRY_AFTER_SECONDS)
    return headers


app = FastAPI(title="Gemini context caches", docs_url=None, redoc_url=None, openapi_url=None)
ConnId = Annotated[str, Query(min_length=1, max_length=250)]


@app.get("/caches", response_class=HTMLResponse)
def caches_page(_user: AuthorizedUser, conn_id: ConnId = DEFAULT_CONN_ID) -> HTMLResponse:
    listing = load_listing(conn_id)
    return HTMLResponse(render_page(listing), status_code=listing.http_status, headers=_headers(listing))


@app.get("/caches.json")
def caches_json(_user: AuthorizedUser, conn_id: ConnId = DEFAULT_CONN_ID) -> JSONResponse:
    listing = load_listing(conn_id)
    body = {
        "conn_id": conn_id,
        "state": listing.state,
        "caches": listing.rows,
        "error": None if listing.state == OK else listing.message,
        "listed_at": listing.listed_at.isoformat(),
    }
    return JSONResponse(body, status_code=listing.http_status, headers=_headers(listing))


class CtxCachePlugin(AirflowPlugin):
    """Mounts the caches view at ``/ctxcache`` and adds "Gemini caches" to the UI's navigation."""

    name = "ctxcache"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "Gemini context caches"}]
    external_views = [
        {
            "name": "Gemini caches",
            "href": f"{URL_PREFIX}/caches?conn_id={DEFAULT_CONN_ID}",
            "destination": "nav",
            "url_route": "ctxcache",
        }
    ]
