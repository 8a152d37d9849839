"""Named failures of the Gemini caching API, mapped once from the SDK's ``APIError``.

Operators, sensors and the fan-out engine catch these names instead of re-reading HTTP codes,
so a Developer-API 403 and a Vertex 404 for a vanished cache are the same case everywhere.
Messages carry what a user needs to act (names, counts, delays) and never a credential.
"""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import urlparse

from airflow.sdk.exceptions import AirflowException, AirflowFailException


class CtxCacheError(AirflowException):
    """Base of every failure this provider raises on purpose."""


class CtxCacheConfigError(AirflowFailException, CtxCacheError):
    """Bad input or a bad connection: retrying cannot help, so the task fails at once."""


class CacheNotFoundError(CtxCacheError):
    """The cache is missing, expired, deleted, or not visible with these credentials."""

    def __init__(self, cache_name: str | None, detail: str = "") -> None:
        self.cache_name = cache_name
        what = f"cache {cache_name!r}" if cache_name else "the cache"
        suffix = f" ({detail})" if detail else ""
        super().__init__(
            f"{what} was not found: it expired, was deleted, or these credentials cannot see it{suffix}. "
            "Create it again, or extend its TTL earlier next time."
        )


class CacheTooSmallError(CtxCacheConfigError):
    """The content is below the model's minimum token count for an explicit cache."""

    def __init__(self, token_count: int | None, minimum: int | None, model: str | None = None) -> None:
        self.token_count = token_count
        self.minimum = minimum
        self.model = model
        for_model = f" for model {model!r}" if model else ""
        super().__init__(
            f"contents: the cached content is {token_count} tokens but the minimum{for_model} is {minimum}. "
            "Add more content, or send it inline with each request instead of caching it."
        )


class CacheNotWorthItError(AirflowFailException, CtxCacheError):
    """The break-even advisor found the cache would cost more than it saves (``if_not_worth_it="fail"``)."""


# The GenerateContentConfig fields the API refuses next to cachedContent: they belong in the cache.
FIELDS_FORBIDDEN_WITH_CACHE = ("system_instruction", "tools", "tool_config")


class ForbiddenWithCacheError(CtxCacheConfigError):
    """A request set system_instruction, tools or tool_config next to cachedContent."""

    def __init__(self, fields: list[str] | None = None, detail: str = "") -> None:
        self.fields = fields or list(FIELDS_FORBIDDEN_WITH_CACHE)
        listed = ", ".join(self.fields)
        suffix = f" ({detail})" if detail else ""
        super().__init__(
            f"{listed}: a request that uses a cache cannot also set these fields{suffix}. "
            "Move them into the cache (CreateCacheOperator's system_instruction, tools, tool_config)."
        )


class QuotaExceededError(CtxCacheError):
    """429 RESOURCE_EXHAUSTED, with what the server said about it (the SDK drops both).

    ``retry_delay`` is RetryInfo's delay in seconds. ``quota_metric``, ``quota_id`` and
    ``quota_value`` come from the first violation of a ``google.rpc.QuotaFailure`` detail (e.g.
    ``GenerateRequestsPerMinutePerProjectPerModel`` and its limit), so a caller can learn which
    quota ran out and how large it is. Each is None when the server did not say.
    """

    def __init__(
        self,
        message: str,
        retry_delay: float | None,
        *,
        quota_metric: str | None = None,
        quota_id: str | None = None,
        quota_value: int | None = None,
    ) -> None:
        self.retry_delay = retry_delay
        self.quota_metric = quota_metric
        self.quota_id = quota_id
        self.quota_value = quota_value
        which = quota_id or quota_metric
        limit = f", limit {quota_value}" if quota_value is not None else ""
        quota = f" ({which}{limit})" if which else ""
        hint = f" The server asks to retry after {retry_delay:g}s." if retry_delay is not None else ""
        super().__init__(f"quota exhausted: {message}{quota}.{hint}")


class ModelNotFoundError(CtxCacheConfigError):
    """The backend does not serve this model (404): a name to fix, not a call to retry."""

    def __init__(
        self,
        model: str | None,
        detail: str,
        *,
        suggestions: Sequence[str] = (),
        known: Sequence[str] = (),
    ) -> None:
        self.model = model
        self.suggestions = list(suggestions)
        if self.suggestions:
            hint = f"did you mean {' or '.join(repr(s) for s in self.suggestions)}? "
        elif known:
            hint = f"no model name this provider knows is close (it knows {', '.join(known)}). "
        else:
            hint = ""
        super().__init__(
            f"model: {model!r} is not a model this backend serves ({detail}); {hint}"
            "Check the name, and that the model is available in your project and region."
        )


class CtxCacheApiError(CtxCacheError):
    """Any other API failure, with the code and status kept for callers that branch on them."""

    def __init__(self, code: int | None, status: str | None, message: str) -> None:
        self.code = code
        self.status = status
        super().__init__(f"Gemini API error {code} {status}: {message}")


REFUSED, DNS, TLS, NETWORK = "refused", "dns", "tls", "network"
_FIXES = {
    REFUSED: "nothing is listening there",
    DNS: "the host name does not resolve: check the spelling of extra.base_url and this machine's DNS",
    TLS: "the TLS handshake failed: check the server's certificate, and the CA bundle or proxy this "
    "machine uses (SSL_CERT_FILE, HTTPS_PROXY)",
    NETWORK: "check this machine's network, proxy and firewall",
}


class EndpointUnreachableError(CtxCacheError):
    """No answer at all from the endpoint: nothing listening, DNS, TLS or the network failed.

    The request never reached the service, so nothing was made or billed. The message names
    where the call went (``base_url``, or Google's endpoint), the connection and its backend,
    and what to check; never a credential.
    """

    def __init__(
        self, *, endpoint: str, conn_id: str, backend: str, kind: str, reason: str, local: bool
    ) -> None:
        self.endpoint = endpoint
        self.conn_id = conn_id
        self.backend = backend
        self.kind = kind
        self.reason = reason
        self.local = local
        fix = _FIXES.get(kind, _FIXES[NETWORK])
        if local and kind in (REFUSED, NETWORK):
            try:
                port = urlparse(endpoint).port
            except ValueError:
                port = None
            fix = (
                f"{_FIXES[REFUSED]}: start the emulator (`ctxcache-emulator --port {port or 'PORT'}`), "
                "or set the connection's extra.base_url to where it listens"
            )
        elif kind == REFUSED:
            fix += ": check extra.base_url (host and port) and that the server runs"
        super().__init__(
            f"connection {conn_id!r} (backend {backend}) cannot reach {endpoint} ({reason}); {fix}."
        )


# Exceptions of the HTTP stacks the SDK uses that mean "no connection was made" (the request
# was never sent): connect errors and connect timeouts, aiohttp's connector errors.
_CONNECT_FAILURES = frozenset(
    {
        "ConnectError",
        "ConnectTimeout",
        "ClientConnectorError",
        "ClientConnectorDNSError",
        "ClientConnectorSSLError",
        "ClientConnectorCertificateError",
    }
)
_TRANSPORT_ROOTS = ("httpx", "httpx2", "httpcore", "httpcore2", "aiohttp")


def connection_failure(error: BaseException) -> tuple[str, str] | None:
    """``(kind, reason)`` when ``error`` says no connection was made, else None.

    ``kind`` is refused, dns, tls or network; ``reason`` is the deepest OS-level error in the
    chain (``ConnectionRefusedError: [Errno 111] Connection refused``), which names no secret.
    """
    kind = type(error)
    transport = kind.__module__.split(".")[0] in _TRANSPORT_ROOTS and kind.__name__ in _CONNECT_FAILURES
    if not transport and not isinstance(error, (ConnectionRefusedError, socket.gaierror, ssl.SSLError)):
        return None
    deepest: BaseException = error
    seen: set[int] = set()
    link: BaseException | None = error
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        if isinstance(link, OSError):
            deepest = link
        link = link.__cause__ or link.__context__
    if isinstance(deepest, ssl.SSLError) or "SSL" in kind.__name__ or "Certificate" in kind.__name__:
        what = TLS
    elif isinstance(deepest, socket.gaierror) or "DNS" in kind.__name__:
        what = DNS
    elif isinstance(deepest, ConnectionRefusedError):
        what = REFUSED
    else:
        what = NETWORK
    text = str(deepest) or str(error) or "no detail"
    return what, f"{type(deepest).__name__}: {text}"


# Both forms the service uses for content below the model's minimum: (tokens, minimum).
_TOO_SMALL = (
    re.compile(r"is of (\d+) tokens.*minimum token count to start caching is (\d+)", re.I | re.S),
    re.compile(r"too small.*total_token_count\s*=\s*(\d+).*min_total_token_count\s*=\s*(\d+)", re.I | re.S),
)
_FORBIDDEN = re.compile(r"can ?not be used with GenerateContent request setting", re.I)
_BAD_CACHE_STATE = re.compile(r"invalid resource state for cache", re.I)
_EXPIRED_CACHE = re.compile(r"cache(?:d)? ?content \S+ is expired", re.I)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")

CacheGone = Callable[[int, str], bool]
"""Says whether an error (code, message) of a call that addressed a cache means the cache is gone."""


def _error_details(error: Any) -> list[dict[str, Any]]:
    body = getattr(error, "details", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        details = inner.get("details") if isinstance(inner, dict) else None
        if isinstance(details, list):
            return [d for d in details if isinstance(d, dict)]
    return []


def _detail(error: Any, type_name: str) -> dict[str, Any] | None:
    return next((d for d in _error_details(error) if str(d.get("@type", "")).endswith(type_name)), None)


def retry_delay_of(error: Any) -> float | None:
    """Seconds from a ``google.rpc.RetryInfo`` detail, if the server sent one."""
    detail = _detail(error, "google.rpc.RetryInfo")
    match = _DURATION.match(str(detail.get("retryDelay", ""))) if detail else None
    return float(match.group(1)) if match else None


def quota_violation_of(error: Any) -> tuple[str | None, str | None, int | None]:
    """(quotaMetric, quotaId, quotaValue) of a ``google.rpc.QuotaFailure``'s first violation."""
    detail = _detail(error, "google.rpc.QuotaFailure")
    violations = detail.get("violations") if detail else None
    first = violations[0] if isinstance(violations, list) and violations else None
    if not isinstance(first, dict):
        return None, None, None
    metric, quota_id, value = first.get("quotaMetric"), first.get("quotaId"), first.get("quotaValue")
    try:
        number = int(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        number = None  # quotaValue is an int64 sent as a string; anything else is not a limit
    return (str(metric) if metric else None, str(quota_id) if quota_id else None, number)


def too_small_counts(message: str) -> tuple[int, int] | None:
    """(tokens, minimum) from either form of the service's "cache too small" message."""
    for form in _TOO_SMALL:
        match = form.search(message)
        if match:
            return int(match.group(1)), int(match.group(2))
    return None


# What each of the service's missing-cache answers looks like. Which of them a backend gives is
# decided in hooks/backend.py; together they are the default for callers without a backend.
def cache_denied(code: int, message: str) -> bool:
    """403 naming a cache: the Developer API's answer for a missing, expired or deleted cache."""
    return code == 403 and "cache" in message.lower().replace(" ", "")


def cache_not_found(code: int, message: str) -> bool:
    """404, unless it names a model rather than a cache (then the model is what is missing)."""
    text = message.lower()
    return code == 404 and ("cache" in text.replace(" ", "") or "model" not in text)


def cache_expired(code: int, message: str) -> bool:
    """Vertex's 400 "Cache content N is expired." for a cache that has just expired."""
    return code == 400 and bool(_EXPIRED_CACHE.search(message))


def cache_in_bad_state(code: int, message: str) -> bool:
    """Vertex's 400 "Invalid resource state for cache content" for a cache being deleted."""
    return code == 400 and bool(_BAD_CACHE_STATE.search(message))


def any_cache_gone(code: int, message: str) -> bool:
    """Any backend's missing-cache answer."""
    return any(
        shape(code, message) for shape in (cache_denied, cache_not_found, cache_expired, cache_in_bad_state)
    )


def translate_api_error(
    error: Exception,
    *,
    cache_name: str | None = None,
    model: str | None = None,
    cache_gone: CacheGone = any_cache_gone,
    models_like: Callable[[str], tuple[list[str], list[str]]] | None = None,
) -> Exception:
    """The named case for an SDK ``APIError``; anything that is not one is returned unchanged.

    ``cache_name`` says the call addressed a cache, which is what lets ``cache_gone`` (the
    backend's missing-cache shapes) turn a 403/404/400 into "cache missing" rather than "model
    not found" or "permission denied on the project". A missing cache is final, so callers
    such as the fan-out stop at once instead of retrying. ``models_like`` gives, for a model
    the server does not serve, the known names closest to it and the known names overall
    (the backend passes the provider's model table; this module cannot import it).
    """
    from google.genai import errors as genai_errors

    if not isinstance(error, genai_errors.APIError):
        return error
    code = error.code
    status = error.status
    message = str(error.message or "")
    if code == 429:
        metric, quota_id, value = quota_violation_of(error)
        return QuotaExceededError(
            message or "RESOURCE_EXHAUSTED",
            retry_delay_of(error),
            quota_metric=metric,
            quota_id=quota_id,
            quota_value=value,
        )
    if code == 400:
        counts = too_small_counts(message)
        if counts:
            return CacheTooSmallError(*counts, model)
        if _FORBIDDEN.search(message):
            return ForbiddenWithCacheError(detail=message)
    if cache_name and cache_gone(code, message):
        return CacheNotFoundError(cache_name, message)
    if code == 404 and model and "model" in message.lower():
        suggestions, known = models_like(model) if models_like is not None else ([], [])
        return ModelNotFoundError(model, message, suggestions=suggestions, known=known)
    return CtxCacheApiError(code, status, message)


class _Counts(Protocol):
    @property
    def requests(self) -> int: ...
    @property
    def succeeded(self) -> int: ...
    @property
    def failed(self) -> int: ...


class _Failure(Protocol):
    @property
    def key(self) -> str: ...
    @property
    def error(self) -> str | None: ...


class FanoutOutcome(Protocol):
    """What the fan-out errors read of a run's result (the engine's ``FanoutResult``)."""

    @property
    def summary(self) -> _Counts: ...
    @property
    def failures(self) -> Sequence[_Failure]: ...


R = TypeVar("R", bound=FanoutOutcome)


class FanoutCacheNotFoundError(CacheNotFoundError, Generic[R]):
    """The cache vanished during the run; ``result`` holds what finished before it stopped."""

    def __init__(self, cache_name: str | None, result: R) -> None:
        self.result: R = result
        done = result.summary
        super().__init__(
            cache_name,
            f"the fan-out stopped after {done.requests} requests ({done.succeeded} answered, "
            f"{done.failed} failed), whose results are kept",
        )


class FanoutFailedError(CtxCacheError, Generic[R]):
    """Too many keys failed: raised by the engine past ``max_failure_ratio``, or by callers."""

    def __init__(self, result: R, *, shown: int = 5, stopped_early: bool = False) -> None:
        self.result: R = result
        failures = result.failures
        summary = result.summary
        listed = "; ".join(f"{r.key!r}: {r.error}" for r in failures[:shown])
        more = f"; and {summary.failed - shown} more" if summary.failed > shown else ""
        how = "stopped early: " if stopped_early else ""
        super().__init__(
            f"{how}{summary.failed} of {summary.requests} prompts failed ({listed}{more}). "
            f"The {summary.succeeded} answers that succeeded are kept. "
            "Fix the cause and retry the task (answered keys are skipped when output_uri is set), "
            "or raise max_failure_ratio / set fail_on_error=False."
        )


class FanoutStoppedError(CtxCacheError):
    """The task was told to stop mid-run (SIGTERM); what was answered is kept, a retry resumes."""

    def __init__(self, reason: str, answers: int, output_uri: str | None) -> None:
        self.reason = reason
        self.answers = answers
        where = (
            f"they are in {output_uri}, and a retry asks only the rest"
            if output_uri is not None
            else "they are in the task log and in XCom 'partial_results'"
        )
        super().__init__(f"the fan-out was stopped ({reason}) after {answers} answers; {where}.")
