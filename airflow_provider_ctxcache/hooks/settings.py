"""A ``ctxcache`` connection read once into typed, validated settings.

Every field error names the connection field and the fix, and no secret ever appears in a
message or a repr: the API key and the service-account JSON (its key, its key id and each line
of the PEM text) are registered with Airflow's secret masker the moment they are read. Shapes
that would carry a secret where it does not belong are refused with an error that does not echo
them: credentials, a query or a fragment in ``base_url``, and a service-account key whose
``private_key`` or ``private_key_id`` is not a string. Which backend rules apply is decided from
``backend`` in :mod:`.backend`; this module only checks the fields each backend needs.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
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
from airflow_provider_ctxcache.gcs_uris import split_gcs

__all__ = [
    "BACKENDS",
    "CONN_TYPE",
    "MIN_SUBSTRING_SECRET",
    "ConnectionSettings",
    "host_of",
    "is_google_host",
    "is_loopback_url",
]

RETRY_STATUS_CODES = (408, 429, 500, 502, 503, 504)
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")
SECRET_FIELDS = ("private_key", "private_key_id")
"""The fields of a service-account key that are secrets; each must be a string."""
MIN_SUBSTRING_SECRET = 8
"""Secrets at least this long are scrubbed wherever they occur; shorter ones only as whole tokens."""
_TOKEN_CHAR = r"[A-Za-z0-9_\-]"
_PEM_MARKER = "PRIVATE KEY"
GOOGLE_DOMAIN = "googleapis.com"
BASE_URL_FIX = (
    "give scheme://host[:port][/path], e.g. http://127.0.0.1:8765 for the emulator, "
    "or remove it to use Google's endpoint"
)


def _mask(secret: Any) -> None:
    """Registers a secret with Airflow's masker: a string, or every string inside a list or dict."""
    if isinstance(secret, Mapping):
        for value in secret.values():
            _mask(value)
    elif isinstance(secret, (list, tuple)):
        for value in secret:
            _mask(value)
    elif isinstance(secret, str) and secret:
        from airflow.sdk.log import mask_secret

        mask_secret(secret)


def _pem_lines(secret: str) -> list[str]:
    """The lines of a PEM key long enough to be secret on their own (not the BEGIN/END markers)."""
    return [
        line.strip()
        for line in secret.splitlines()
        if len(line.strip()) >= MIN_SUBSTRING_SECRET and _PEM_MARKER not in line
    ]


def _extra(extras: Mapping[str, Any], key: str) -> Any:
    """Extras saved by the UI form carry the ``extra__ctxcache__`` prefix; hand-written ones do not."""
    value = extras.get(key)
    if value in (None, ""):
        value = extras.get(f"extra__{CONN_TYPE}__{key}")
    return None if value == "" else value


def host_of(url: str | None) -> str | None:
    """The URL's host in lower case without a trailing dot; None if it has none or is malformed."""
    if not url:
        return None
    try:
        host = urlparse(url).hostname
    except ValueError:
        return None
    return host.rstrip(".").lower() if host else None


def is_loopback_url(url: str | None) -> bool:
    host = host_of(url) or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_google_host(host: str | None) -> bool:
    """Whether ``host`` is one of Google's API endpoints (``*.googleapis.com``)."""
    host = (host or "").rstrip(".").lower()
    return host == GOOGLE_DOMAIN or host.endswith("." + GOOGLE_DOMAIN)


def _base_url(extras: Mapping[str, Any]) -> str | None:
    """The endpoint override, checked; errors name the field and never echo its value.

    The value is never echoed because it may hold what must not be shown: credentials
    (``http://user:password@host``) or a key in its query string. Those shapes are refused:
    the SDK would send them and httpx, the hook's log line and the Test button would print them.
    """
    raw = _extra(extras, "base_url")
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise CtxCacheConfigError(f"extra.base_url: is not text; {BASE_URL_FIX}.")
    try:
        parsed = urlparse(raw.strip())
        host, _port = parsed.hostname, parsed.port  # .port raises for a port that is not 0-65535
    except ValueError:
        raise CtxCacheConfigError(f"extra.base_url: is not a valid URL; {BASE_URL_FIX}.") from None
    if "@" in parsed.netloc:
        raise CtxCacheConfigError(
            "extra.base_url: holds credentials (user:password@); they would be sent and logged in "
            "clear. Remove them: the API key goes in the password field, Vertex credentials in "
            "extra.service_account_json or extra.key_path."
        )
    if parsed.query or parsed.fragment:
        raise CtxCacheConfigError(
            "extra.base_url: has a query or fragment, which would be logged with every request; "
            "put the API key in the password field and give scheme://host[:port][/path] only."
        )
    if parsed.scheme not in ("http", "https") or not host:
        raise CtxCacheConfigError(f"extra.base_url: is not an http(s) URL; {BASE_URL_FIX}.")
    return raw.strip().rstrip("/")


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
    try:
        split_gcs(str(raw), "extra.staging_uri", need_object=False)
    except CtxCacheConfigError:
        raise CtxCacheConfigError(
            f"extra.staging_uri: {raw!r} is not a gs://bucket/prefix URI; it is where large files are staged."
        ) from None
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

    def secrets(self) -> list[str]:
        """Every secret string of this connection, longest first: the API key, the service
        account's ``private_key`` and ``private_key_id``, and each line of the PEM key."""
        found = [self.api_key or ""]
        info = self.service_account_info or {}
        for field in SECRET_FIELDS:
            value = info.get(field)
            if isinstance(value, str):  # from_connection refuses any other type
                found += [value, *_pem_lines(value)]
        return sorted({s for s in found if s}, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        """Text with every secret of this connection replaced by ``***``, for messages built from
        foreign errors.

        A secret of at least :data:`MIN_SUBSTRING_SECRET` (8) characters is replaced wherever it
        occurs. A shorter one (only the emulator accepts such keys: Google's are 39 characters)
        is replaced only where it stands as a whole token, not inside a longer run of letters,
        digits, ``_`` or ``-``: with the key ``e``, "Gemini API Error" stays as it is, while
        ``key=e`` becomes ``key=***``. Short keys are not refused, so any value keeps working
        against the emulator; Airflow's own masker skips secrets under 5 characters.
        """
        for secret in self.secrets():
            if len(secret) >= MIN_SUBSTRING_SECRET:
                text = text.replace(secret, "***")
            else:
                text = re.sub(rf"(?<!{_TOKEN_CHAR}){re.escape(secret)}(?!{_TOKEN_CHAR})", "***", text)
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

        base_url = _base_url(extras)
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
        for field in SECRET_FIELDS:
            value = info.get(field)
            _mask(value)  # whatever its shape: every string inside is masked before it is refused
            if value is not None and not isinstance(value, str):
                raise CtxCacheConfigError(
                    f'extra.service_account_json: "{field}" is not a string (it must be the key '
                    "file's text, with its line breaks as \\n); paste the whole key file unchanged."
                )
            if isinstance(value, str):
                for line in _pem_lines(value):
                    _mask(line)
        return info
