"""Plumbing shared by both backends' clients: HTTP options, connection credentials, Cloud Storage.

Which client a connection gets is decided in :mod:`.backend`; this module only turns the
connection's settings into the pieces that decision uses, without branching on the backend.
"""

from __future__ import annotations

import importlib.util
import math
import os
import socket
from typing import Any
from urllib.parse import urlparse

from google.genai import types

from airflow_provider_ctxcache.exceptions import CtxCacheConfigError
from airflow_provider_ctxcache.hooks.settings import RETRY_STATUS_CODES, ConnectionSettings

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
EMULATOR_TOKEN = "emulator"
LOCAL_PROBE_SECONDS = 2.0
HTTPX_POOL_CONNECTIONS = 100
"""httpx's default pool, which google-genai's async client keeps: calls past it wait in the client."""


SERVER_TIMEOUT_HEADER = "X-Server-Timeout"
"""The deadline google-genai sends with a timeout (whole seconds), so the service stops working on
a call the client has given up on."""


def http_options(
    settings: ConnectionSettings, *, retry_attempts: int | None = None, caller_deadline: bool = False
) -> types.HttpOptions:
    """Timeout and retries for every call; ``retry_attempts=1`` leaves retrying to the caller.

    ``caller_deadline``: the caller bounds each call itself (the hook's ``agenerate`` does, with one
    timer a call), so the transport gets no timeout: httpx would arm four timers a request
    (pool, connect, write, read), a cost measured at 1-3% of a fan-out's CPU. The service still
    hears the deadline through the header google-genai would have sent.
    """
    attempts = retry_attempts if retry_attempts is not None else settings.retry_attempts
    deadline_header = {SERVER_TIMEOUT_HEADER: str(math.ceil(settings.timeout_seconds))}
    return types.HttpOptions(
        base_url=settings.base_url,
        api_version=settings.api_version,
        timeout=None if caller_deadline else int(settings.timeout_seconds * 1000),
        headers=deadline_header if caller_deadline else None,
        retry_options=types.HttpRetryOptions(
            attempts=attempts,
            initial_delay=settings.retry_initial_delay,
            max_delay=settings.retry_max_delay,
            http_status_codes=list(RETRY_STATUS_CODES),
        ),
    )


def async_connections_cap() -> int | None:
    """How many calls google-genai's async client can have on the wire at once; None: no cap.

    The SDK sends async calls over aiohttp whenever it is importable (``google-genai[aiohttp]``),
    with a connector of no limit; else over httpx, whose default pool of 100 connections it keeps.
    So over httpx a fan-out runs no more than 100 workers, whatever its ``max_concurrency``:
    more calls would only wait inside the client. Measured, not assumed: see
    tests/fanout/test_engine.py.
    """
    return None if importlib.util.find_spec("aiohttp") is not None else HTTPX_POOL_CONNECTIONS


def local_server_refuses(settings: ConnectionSettings) -> ConnectionRefusedError | None:
    """For a loopback ``base_url`` (the emulator), the refusal of one TCP connect, else None.

    A refused connection on this machine will not heal while the SDK retries it (about 17 s
    with the default five attempts): nothing is listening. One connect before the client is
    built makes that case fail at once; it sends no request and takes well under a
    millisecond. Any other outcome (accepted, a timeout) leaves the call, and its retries, as is.
    """
    if not settings.targets_local_server or settings.base_url is None:
        return None
    url = urlparse(settings.base_url)
    try:
        port = url.port or (443 if url.scheme == "https" else 80)
    except ValueError:
        return None  # a malformed port: let the SDK's own call report it
    try:
        with socket.create_connection((url.hostname or "localhost", port), timeout=LOCAL_PROBE_SECONDS):
            return None
    except ConnectionRefusedError as refused:
        return refused
    except OSError:
        return None


def google_credentials(settings: ConnectionSettings) -> Any:
    """Service-account JSON, then a key file, then a static token for a local server, else ADC (None)."""
    from google.oauth2 import credentials as user_credentials
    from google.oauth2 import service_account

    if settings.service_account_info is not None:
        try:
            return service_account.Credentials.from_service_account_info(
                settings.service_account_info, scopes=[CLOUD_PLATFORM_SCOPE]
            )
        except (ValueError, KeyError) as error:
            # google-auth's text may quote the key it could not read (InvalidValue does): scrubbed.
            raise CtxCacheConfigError(
                f"extra.service_account_json: cannot be used as a service-account key "
                f"({type(error).__name__}: {settings.scrub(str(error))}); paste the whole key file."
            ) from None
    if settings.key_path is not None:
        try:
            return service_account.Credentials.from_service_account_file(
                settings.key_path, scopes=[CLOUD_PLATFORM_SCOPE]
            )
        except (OSError, ValueError, KeyError):
            raise CtxCacheConfigError(
                f"extra.key_path: {settings.key_path!r} is not a readable service-account key file; "
                "check the path on the worker and the triggerer."
            ) from None
    if settings.targets_local_server:
        return user_credentials.Credentials(token=settings.api_key or EMULATOR_TOKEN)
    return None


def storage_client(settings: ConnectionSettings, credentials: Any) -> Any:
    """A Cloud Storage client for ``gs://`` inputs, outputs and staging.

    ``STORAGE_EMULATOR_HOST`` (honoured by google-cloud-storage) points it at a local emulator,
    which takes anonymous credentials; otherwise ``credentials`` (the backend's), then ADC.
    A static token meant for a loopback Gemini endpoint says nothing about Cloud Storage.
    """
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage
    from google.oauth2 import credentials as user_credentials

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        return storage.Client(project=settings.project or "emulator", credentials=AnonymousCredentials())
    if isinstance(credentials, user_credentials.Credentials):
        credentials = None
    return storage.Client(project=settings.project, credentials=credentials)
