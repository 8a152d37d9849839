"""An Airflow UI view of the live caches of a ``ctxcache`` connection, registered by a plugin.

The api-server mounts a small FastAPI app at ``/ctxcache``:

- ``GET /ctxcache/caches?conn_id=ctxcache_default``: a plain HTML page (no external assets) with
  each live cache's name, display name, model, token count, expire time and time left, so an
  operator sees what is still being billed. Errors (unknown connection, backend down) are shown
  on the page with the connection's secrets scrubbed.
- ``GET /ctxcache/caches.json``: the same list as JSON.

Both need Airflow's auth (the UI's session cookie or a bearer token) and the right to read the
connection. An ``external_views`` entry adds "Gemini caches" to the UI's navigation.

Airflow loads the plugin from a module in its plugins folder containing
``from airflow_provider_ctxcache.plugins.caches_view import CtxCachePlugin``, or from an
``airflow.plugins`` entry point of the provider's distribution.
"""

import contextlib
import datetime as dt
import html
from typing import Annotated, Any

from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException, Query, status
from fastapi.responses import HTMLResponse

URL_PREFIX = "/ctxcache"
DEFAULT_CONN_ID = "ctxcache_default"
MAX_CACHES = 1000


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


def list_live_caches(conn_id: str) -> tuple[list[dict[str, Any]], str | None]:
    """``(rows, error)``: the connection's live caches, or a secret-free error message."""
    from airflow_provider_ctxcache.hooks import ContextCacheHook

    hook = ContextCacheHook(conn_id, retry_attempts=1)
    try:
        caches = hook.list_caches(limit=MAX_CACHES)
    except Exception as error:  # any failure is shown on the page, not as a 500
        return [], hook.scrub(f"{type(error).__name__}: {error}")
    finally:
        with contextlib.suppress(Exception):  # closing must not hide the answer
            hook.close()
    now = dt.datetime.now(dt.timezone.utc)
    rows = []
    for cache in caches:
        usage = cache.usage_metadata
        expire = cache.expire_time
        rows.append(
            {
                "name": cache.name,
                "display_name": cache.display_name,
                "model": cache.model,
                "total_token_count": usage.total_token_count if usage else None,
                "expire_time": expire.isoformat() if expire else None,
                "time_left": _time_left(expire, now),
            }
        )
    rows.sort(key=lambda row: row["expire_time"] or "")
    return rows, None


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Gemini caches - {conn_id}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5rem; color: #1a202c; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ border: 1px solid #cbd5e0; padding: .4rem .6rem; text-align: left; font-size: .9rem; }}
th {{ background: #edf2f7; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
.error {{ background: #fff5f5; border: 1px solid #feb2b2; color: #9b2c2c; padding: .8rem; }}
form {{ margin: 0 0 1rem; }}
</style></head><body>
<h1>Gemini caches</h1>
<form method="get"><label>Connection <input name="conn_id" value="{conn_id}"></label>
<button type="submit">Show</button></form>
{body}
<p><small>Live caches are billed for storage until they expire. Listed at {now} UTC.</small></p>
</body></html>
"""

COLUMNS = [
    ("name", "Name"),
    ("display_name", "Display name"),
    ("model", "Model"),
    ("total_token_count", "Tokens"),
    ("expire_time", "Expires"),
    ("time_left", "Time left"),
]


def render_page(conn_id: str, rows: list[dict[str, Any]], error: str | None) -> str:
    esc = html.escape
    if error is not None:
        body = f'<p class="error" role="alert">Could not list the caches of {esc(conn_id)}: {esc(error)}</p>'
    elif not rows:
        body = f"<p>No live caches on connection <code>{esc(conn_id)}</code>.</p>"
    else:
        head = "".join(f"<th>{esc(title)}</th>" for _, title in COLUMNS)
        lines = []
        for row in rows:
            cells = []
            for key, _ in COLUMNS:
                value = row[key]
                text = "" if value is None else f"{value:,}" if isinstance(value, int) else str(value)
                css = ' class="num"' if key == "total_token_count" else ""
                cells.append(f"<td{css}>{esc(text)}</td>")
            lines.append(f"<tr>{''.join(cells)}</tr>")
        total = sum(row["total_token_count"] or 0 for row in rows)
        body = (
            f"<p>{len(rows)} live cache(s) on <code>{esc(conn_id)}</code>, {total:,} tokens in all.</p>"
            f'<table id="caches"><thead><tr>{head}</tr></thead><tbody>{"".join(lines)}</tbody></table>'
        )
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    return PAGE.format(conn_id=esc(conn_id), body=body, now=now)


app = FastAPI(title="Gemini context caches", docs_url=None, redoc_url=None, openapi_url=None)
ConnId = Annotated[str, Query(min_length=1, max_length=250)]


@app.get("/caches", response_class=HTMLResponse)
def caches_page(_user: AuthorizedUser, conn_id: ConnId = DEFAULT_CONN_ID) -> HTMLResponse:
    rows, error = list_live_caches(conn_id)
    return HTMLResponse(render_page(conn_id, rows, error), headers={"Cache-Control": "no-store"})


@app.get("/caches.json")
def caches_json(_user: AuthorizedUser, conn_id: ConnId = DEFAULT_CONN_ID) -> dict[str, Any]:
    rows, error = list_live_caches(conn_id)
    return {"conn_id": conn_id, "caches": rows, "error": error}


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
