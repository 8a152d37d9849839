"""A ``ctxcache`` connection read once into typed, validated settings.

Every field error names the connection field and the fix, and no secret ever appears in a
message or a repr: the API key and the service-account JSON are registered with Airflow's
secret masker the moment they are read. Which backend rules apply is decided from
``backend`` in :mod:`.backend`; this module only checks the fields each backend needs.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

from airflow_provider_ctxcache.connection_defaults import (
    BACKENDS,
    CONN_TYPE,
    DEFAULT_BACKEND,
    DEFAULT_DEVELOPER_API_VERSION,
    DEFAULT_LOCATION,
    DEFAULT_QUOTA_WINDOW_SECONDS,
    DEFAULT_RETRY_ATTEMPTS,
    DEFAULT_RETRY_INITIAL_DELAY,
    DEFAULT_RETRY_MAX_DELAY,
    DEFAULT_TIMEOUT_SECONDS,
    DEFAULT_TPM_COUNTS_CACHED,
    VERTEX_AI,
)
from airflow_provider_ctxcache.exceptions import CtxCacheConfigError

__all__ = ["BACKENDS", "CONN_TYPE", "ConnectionSettings", "is_loopback_url"]

RETRY_STATUS_CODES = (408, 429, 500, 502, 503, 504)
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def _mask(secret: str | None) -> None:
    if secret:
        from airflow.sdk.log import mask_secret

        mask_secret(secret)


def _extra(extras: Mapping[str, Any], key: str) -> Any:
    """Extras saved by the UI form carry the ``extra__ctxcache__`` prefix; hand-written ones do not."""
    value = extras.get(key)
    if value in (None, ""):
        value = extras.get(f"extra__{CONN_TYPE}__{key}")
    return None if value == "" else value


def is_loopback_url(url: str | None) -> bool:
    if not url:
        return False
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _number(extras: Mapping[str, Any], key: str, default: float, *, minimum: float, integer: bool) -> Any:
    raw = _extra(extras, key)
    if raw is None:
        return int(default) if integer else default
    try:
        value = int(raw) if integer else float(raw)
    except (TypeError, ValueError):
        kind = "a whole number" if integer else "a number"
        raise CtxCacheConfigError(
            f"extra.{key}: {raw!r} is not {kind}; remove it to use {default:g}."
        ) from None
    if value < minimum:
        raise CtxCacheConfigError(f"extra.{key}: {value} is below {minimum:g}; remove it to use {default:g}.")
    return value


def _optional_int(extras: Mapping[str, Any], key: str, what: str) -> int | None:
    """A whole number >= 1, or None when unset (no such limit is known)."""
    raw = _extra(extras, key)
    if raw is None:
        return None
    value: int | None = None
    if isinstance(raw, float) and raw.is_integer():
        value = int(raw)
    elif isinstance(raw, (int, str)) and not isinstance(raw, bool):
        try:
            value = int(raw)
        except ValueError:
            value = None
    if value is None or value < 1:
        raise CtxCacheConfigError(
            f"extra.{key}: {raw!r} is not a whole number of at least 1 ({what}); "
            "remove it to have the limit learned from the server's 429 answers."
        )
    return value


def _positive_float(extras: Mapping[str, Any], key: str, default: float) -> float:
    raw = _extra(extras, key)
    if raw is None:
        return default
    try:
        value = float(raw) if not isinstance(raw, bool) else None
    except (TypeError, ValueError):
        value = None
    if value is None or not value > 0 or value == float("inf"):
        raise CtxCacheConfigError(
            f"extra.{key}: {raw!r} is not a number of seconds above 0; remove it to use {default:g}."
        )
    return value


def _flag(extras: Mapping[str, Any], key: str, default: bool) -> bool:
    raw = _extra(extras, key)
    if raw is None:
        return default
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise CtxCacheConfigError(
        f"extra.{key}: {raw!r} is not true or false; remove it to use {str(default).lower()}."
    )


def _json_object(extras: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    raw = _extra(extras, key)
    if raw is None or isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise CtxCacheConfigError(f'extra.{key}: is not a JSON object, e.g. {{"gemini-2.5-flash": {{...}}}}.')
    return value


def _staging_uri(extras: Mapping[str, Any]) -> str | None:
    raw = _extra(extras, "staging_uri")
    if raw is None:
        return None
    parsed = urlparse(str(raw))
    if parsed.scheme != "gs" or not parsed.netloc:
        raise CtxCacheConfigError(
            f"extra.staging_uri: {raw!r} is not a gs://bucket/prefix URI; it is where large files are staged."
        )
    return str(raw).rstrip("/")


@dataclasses.dataclass(frozen=True)
class ConnectionSettings:
    """What the hook needs to build a google-genai client; secrets are kept out of the repr."""

    conn_id: str
    backend: str
    api_key: str | None = dataclasses.field(default=None, repr=False)
    project: str | None = None
    location: str | None = None
    base_url: str | None = None
    api_version: str | None = None
    service_account_info: dict[str, Any] | None = dataclasses.field(default=None, repr=False)
    key_path: str | None = None
    retry_attempts: int = DEFAULT_RETRY_ATTEMPTS
    retry_initial_delay: float = DEFAULT_RETRY_INITIAL_DELAY
    retry_max_delay: float = DEFAULT_RETRY_MAX_DELAY
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    prices: dict[str, Any] | None = None
    staging_uri: str | None = None
    rpm_limit: int | None = None
    """Requests per minute per model this project may send; None: learn it from 429s."""
    tpm_limit: int | None = None
    """Input tokens per minute per model (cached tokens included); None: learn it from 429s."""
    quota_window_seconds: float = DEFAULT_QUOTA_WINDOW_SECONDS
    """The quota window: Google's is a minute; tests and benchmarks use a few seconds."""
    tpm_counts_cached: bool = DEFAULT_TPM_COUNTS_CACHED
    """Whether cached tokens count toward ``tpm_limit``."""

    @property
    def targets_local_server(self) -> bool:
        """A loopback base_url: the embedded emulator, which needs no Google account."""
        return is_loopback_url(self.base_url)

    def scrub(self, text: str) -> str:
        """Text with every secret of this connection replaced, for messages built from foreign errors."""
        secrets = [self.api_key]
        if self.service_account_info:
            secrets += [
                self.service_account_info.get("private_key"),
                self.service_account_info.get("private_key_id"),
            ]
        for secret in secrets:
            if isinstance(secret, str) and secret:
                text = text.replace(secret, "***")
        return text

    @classmethod
    def from_connection(cls, conn: Any) -> ConnectionSettings:
        conn_id = str(getattr(conn, "conn_id", "") or "")
        extras = conn.extra_dejson if hasattr(conn, "extra_dejson") else {}
        api_key = conn.password or None
        _mask(api_key)

        backend = str(_extra(extras, "backend") or DEFAULT_BACKEND).strip().lower()
        if backend not in BACKENDS:
            raise CtxCacheConfigError(
                f"extra.backend: {backend!r} is not a backend of connection {conn_id!r}; "
                f"use one of {', '.join(BACKENDS)}."
            )

        base_url = _extra(extras, "base_url")
        if base_url is not None:
            parsed = urlparse(str(base_url))
            if parsed.scheme not in ("http", "https") or not parsed.hostname:
                raise CtxCacheConfigError(
                    f"extra.base_url: {base_url!r} is not an http(s) URL; e.g. http://127.0.0.1:8765 for "
                    "the emulator, or remove it to use Google's endpoint."
                )
            base_url = str(base_url).rstrip("/")

        service_account_info = cls._service_account(extras)
        key_path = _extra(extras, "key_path")
        project = _extra(extras, "project")
        location = _extra(extras, "location")
        api_version = _extra(extras, "api_version")

        if backend == VERTEX_AI:
            if not project and service_account_info:
                project = service_account_info.get("project_id")
            if not project:
                raise CtxCacheConfigError(
                    f"extra.project: connection {conn_id!r} uses vertex_ai and needs "
                    "a Google Cloud project id."
                )
            location = location or DEFAULT_LOCATION
        else:
            if not api_key:
                raise CtxCacheConfigError(
                    f"password: connection {conn_id!r} uses gemini_api and needs an API key in its "
                    "password field (any value works against the local emulator)."
                )
            if service_account_info or key_path:
                raise CtxCacheConfigError(
                    "extra.service_account_json, extra.key_path: service-account credentials are for "
                    "vertex_ai; set extra.backend to vertex_ai or remove them."
                )
            api_version = api_version or DEFAULT_DEVELOPER_API_VERSION

        return cls(
            conn_id=conn_id,
            backend=backend,
            api_key=api_key,
            project=str(project) if project else None,
            location=str(location) if location else None,
            base_url=base_url,
            api_version=str(api_version) if api_version else None,
            service_account_info=service_account_info,
            key_path=str(key_path) if key_path else None,
            retry_attempts=_number(extras, "retry_attempts", DEFAULT_RETRY_ATTEMPTS, minimum=1, integer=True),
            retry_initial_delay=_number(
                extras, "retry_initial_delay", DEFAULT_RETRY_INITIAL_DELAY, minimum=0, integer=False
            ),
            retry_max_delay=_number(
                extras, "retry_max_delay", DEFAULT_RETRY_MAX_DELAY, minimum=0, integer=False
            ),
            timeout_seconds=_number(extras, "timeout", DEFAULT_TIMEOUT_SECONDS, minimum=1, integer=False),
            prices=_json_object(extras, "prices"),
            staging_uri=_staging_uri(extras),
            rpm_limit=_optional_int(extras, "rpm_limit", "requests per minute per model"),
            tpm_limit=_optional_int(extras, "tpm_limit", "input tokens per minute per model"),
            quota_window_seconds=_positive_float(
                extras, "quota_window_seconds", DEFAULT_QUOTA_WINDOW_SECONDS
            ),
            tpm_counts_cached=_flag(extras, "tpm_counts_cached", DEFAULT_TPM_COUNTS_CACHED),
        )

    @staticmethod
    def _service_account(extras: Mapping[str, Any]) -> dict[str, Any] | None:
        raw = _extra(extras, "service_account_json")
        if raw is None:
            return None
        if isinstance(raw, str):
            _mask(raw)
            try:
                info = json.loads(raw)
            except ValueError:
                raise CtxCacheConfigError(
                    "extra.service_account_json: is not valid JSON; paste the whole key file downloaded "
                    "from the Google Cloud console."
                ) from None
        else:
            info = raw
        if not isinstance(info, dict) or info.get("type") != "service_account":
            raise CtxCacheConfigError(
                'extra.service_account_json: is not a service-account key (its "type" must be '
                '"service_account"); paste the whole key file.'
            )
        _mask(info.get("private_key"))
        _mask(info.get("private_key_id"))
        return info
