"""Every difference between the Gemini Developer API and Vertex AI, decided once per connection.

:func:`backend_for` picks one object from the connection's ``backend`` extra; the rest of the
provider asks that object and never compares backend names itself. It decides how the
google-genai client is built, which cache names are valid and how short ones expand, which
error answers mean "the cache is gone", the minimum cache size per model, the inline request
limit, whether ``gs://`` URIs may be sent, where large files are staged, how countTokens takes
a system instruction, and whether customer-managed keys (``kms_key_name``) are available.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

from google.genai import Client, types

from airflow_provider_ctxcache.connection_defaults import GEMINI_API, VERTEX_AI
from airflow_provider_ctxcache.exceptions import (
    CtxCacheConfigError,
    EndpointUnreachableError,
    cache_denied,
    cache_expired,
    cache_in_bad_state,
    cache_not_found,
    connection_failure,
    translate_api_error,
)
from airflow_provider_ctxcache.gcs_uris import is_gcs
from airflow_provider_ctxcache.hooks.client import google_credentials, http_options, storage_client
from airflow_provider_ctxcache.hooks.settings import ConnectionSettings, host_of
from airflow_provider_ctxcache.model_facts import current_models, precheck_min_tokens, similar_models
from airflow_provider_ctxcache.staging import CloudStorageArea, FilesApiArea, StagingArea

# Both backends document 10 MB for inline cache content. The Developer API raised its request
# limit to 100 MB in Jan 2026, but not (as far as documented) for cachedContents.create.
INLINE_LIMIT_BYTES = 10 * 1024 * 1024
# A generateContent request: 100 MB on the Developer API since Jan 2026; Vertex documents 10 MB
# of inline content (larger goes through Cloud Storage), so that is its bound here.
DEVELOPER_REQUEST_LIMIT_BYTES = 100 * 1000 * 1000

_CACHE_ID = r"[A-Za-z0-9][A-Za-z0-9-]{0,127}"
_BARE_ID = re.compile(rf"^{_CACHE_ID}$")
_SHORT_NAME = re.compile(rf"^cachedContents/({_CACHE_ID})$")
_DEVELOPER_NAME = re.compile(r"^cachedContents/[a-z0-9][a-z0-9-]{0,127}$")
_VERTEX_NAME = re.compile(
    rf"^projects/[A-Za-z0-9][A-Za-z0-9.:_-]*/locations/[A-Za-z0-9][A-Za-z0-9_-]*/cachedContents/{_CACHE_ID}$"
)


class Backend(ABC):
    """One backend's rules, bound to one connection's settings."""

    name: ClassVar[str]
    """The ``backend`` extra that selects this class."""
    inline_limit_bytes: ClassVar[int] = INLINE_LIMIT_BYTES
    """The most a request may carry inline; larger local files are staged."""
    request_limit_bytes: ClassVar[int] = INLINE_LIMIT_BYTES
    """The largest generateContent request the fan-out sends; a larger one is refused before any call."""
    allows_gs_uris: ClassVar[bool]
    """Whether contents may point at ``gs://`` objects directly."""
    credentials_hint: ClassVar[str]
    """What to set when a client cannot be built."""

    def __init__(self, settings: ConnectionSettings) -> None:
        self.settings = settings

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()!r})"

    # -- client ------------------------------------------------------------------------------------

    @abstractmethod
    def build_client(self, *, retry_attempts: int | None = None, caller_deadline: bool = False) -> Client:
        """A google-genai client for this connection; ``retry_attempts`` overrides the connection's;
        ``caller_deadline``: see :func:`.client.http_options`."""

    def storage_credentials(self) -> Any:
        """Credentials for Cloud Storage; None means Application Default Credentials."""
        return None

    def storage_client(self) -> Any:
        return storage_client(self.settings, self.storage_credentials())

    @abstractmethod
    def describe(self) -> str:
        """Where calls go, for logs and the UI's Test button: never a credential."""

    @property
    @abstractmethod
    def google_host(self) -> str:
        """Google's endpoint for this backend, used when ``base_url`` is not set."""

    def credential_hosts(self) -> list[str]:
        """Every host a call on this connection sends a credential to, lower case: the endpoint
        (``base_url``'s host, else Google's), and the ``token_uri`` of a service-account key given
        in the connection. A host that cannot be read is ``""``, so no allow-list can match it."""
        if self.settings.base_url is None:
            return [self.google_host]
        return [host_of(self.settings.base_url) or ""]

    # -- cache names and errors --------------------------------------------------------------------

    @abstractmethod
    def cache_name(self, name: Any, field: str = "cache_name") -> str:
        """The cache's canonical full name, or a config error naming ``field``."""

    @abstractmethod
    def cache_gone(self, code: int, message: str) -> bool:
        """Whether an error answering a call about a cache means it is missing, expired or deleted."""

    def translate_error(
        self, error: Exception, *, cache_name: str | None = None, model: str | None = None
    ) -> Exception:
        """The provider's named case for an SDK error, with this backend's missing-cache shapes.

        A connection that was never made (refused, DNS, TLS) becomes ``EndpointUnreachableError``
        naming this endpoint and connection; an unknown model gets the closest known names.
        """
        unreachable = self.unreachable(error)
        if unreachable is not None:
            return unreachable
        return translate_api_error(
            error,
            cache_name=cache_name,
            model=model,
            cache_gone=self.cache_gone,
            models_like=self._models_like,
        )

    def _models_like(self, model: str) -> tuple[list[str], list[str]]:
        return similar_models(model, self.name), current_models(self.name)

    @property
    def endpoint(self) -> str:
        """Where calls go: ``base_url``, or Google's endpoint for this backend."""
        return self.settings.base_url or f"https://{self.google_host}"

    def unreachable(self, error: BaseException) -> EndpointUnreachableError | None:
        """``EndpointUnreachableError`` when ``error`` says no connection was made, else None."""
        failure = connection_failure(error)
        if failure is None:
            return None
        kind, reason = failure
        return EndpointUnreachableError(
            endpoint=self.endpoint,
            conn_id=self.settings.conn_id,
            backend=self.name,
            kind=kind,
            reason=self.settings.scrub(reason),
            local=self.settings.targets_local_server,
        )

    # -- contents, tokens, limits -----------------------------------------------------------------

    def min_cache_tokens(self, model: str) -> int | None:
        """The pre-check's minimum for ``model`` here; None lets the server decide."""
        return precheck_min_tokens(model, self.name)

    @abstractmethod
    def check_file_uri(self, uri: str, where: str) -> None:
        """Refuses a ``fileData`` URI this backend cannot read, naming the field ``where``."""

    @abstractmethod
    def count_tokens_request(
        self, contents: Any, system_instruction: Any
    ) -> tuple[Any, types.CountTokensConfig | None]:
        """``contents`` and ``config`` for countTokens, so the count covers the system instruction."""

    @abstractmethod
    def staging_area(
        self, client: Callable[[], Client], storage_client: Callable[[], Any], staging_uri: str | None = None
    ) -> StagingArea:
        """Where local files too large to send inline go; ``staging_uri`` overrides the connection's.

        ``client`` and ``storage_client`` give the hook's clients when first needed.
        """

    @abstractmethod
    def check_kms_key(self, kms_key_name: str | None) -> None:
        """Refuses a customer-managed key where the backend has none."""

    def _refuse_name(self, name: Any, field: str) -> str:
        if not isinstance(name, str) or not name.strip():
            raise CtxCacheConfigError(
                f"{field}: {name!r} is not a cache name; pass the name CreateCacheOperator returned "
                "(e.g. cache_name=create_cache.output)."
            )
        return name.strip()


class DeveloperApi(Backend):
    """The Gemini Developer API: an API key, ``cachedContents/ID`` names, the Files API for big files."""

    name = GEMINI_API
    request_limit_bytes = DEVELOPER_REQUEST_LIMIT_BYTES
    allows_gs_uris = False
    credentials_hint = "Put the API key in the connection's password field."

    def build_client(self, *, retry_attempts: int | None = None, caller_deadline: bool = False) -> Client:
        options = http_options(self.settings, retry_attempts=retry_attempts, caller_deadline=caller_deadline)
        return Client(vertexai=False, api_key=self.settings.api_key, http_options=options)

    def describe(self) -> str:
        return f"{self.name} at {self.settings.base_url or 'the Gemini Developer API'}"

    @property
    def google_host(self) -> str:
        return "generativelanguage.googleapis.com"

    def cache_name(self, name: Any, field: str = "cache_name") -> str:
        """``cachedContents/ID``; a bare ID is expanded, as the SDK would."""
        text = self._refuse_name(name, field)
        if _DEVELOPER_NAME.match(text):
            return text
        if _BARE_ID.match(text):
            return f"cachedContents/{text}"
        raise CtxCacheConfigError(
            f"{field}: {text!r} is not a cache name for the {self.name} backend; "
            "expected 'cachedContents/ID', as CreateCacheOperator returns it."
        )

    def cache_gone(self, code: int, message: str) -> bool:
        # 403 PERMISSION_DENIED "CachedContent not found (or permission denied)"; a 404 for odd ids.
        return cache_denied(code, message) or cache_not_found(code, message)

    def check_file_uri(self, uri: str, where: str) -> None:
        if is_gcs(uri):
            raise CtxCacheConfigError(
                f"{where}.uri: gs:// URIs work only on {VERTEX_AI}; on {self.name} pass the file as "
                "{'file': PATH}: large files are uploaded through the Files API for you."
            )

    def count_tokens_request(
        self, contents: Any, system_instruction: Any
    ) -> tuple[Any, types.CountTokensConfig | None]:
        # countTokens takes no system instruction here: count it as one more content.
        if system_instruction is None:
            return contents, None
        listed = list(contents) if isinstance(contents, (list, tuple)) else [contents]
        return [*listed, system_instruction], None

    def staging_area(
        self, client: Callable[[], Client], storage_client: Callable[[], Any], staging_uri: str | None = None
    ) -> StagingArea:
        return FilesApiArea(client)

    def check_kms_key(self, kms_key_name: str | None) -> None:
        if kms_key_name:
            raise CtxCacheConfigError(f"kms_key_name: customer-managed keys need the {VERTEX_AI} backend.")


class VertexAi(Backend):
    """Vertex AI: Google credentials, names under ``projects/P/locations/L``, Cloud Storage for big files."""

    name = VERTEX_AI
    allows_gs_uris = True
    credentials_hint = (
        "Set extra.service_account_json, extra.key_path, or Application Default Credentials on the worker."
    )

    def build_client(self, *, retry_attempts: int | None = None, caller_deadline: bool = False) -> Client:
        return Client(
            vertexai=True,
            project=self.settings.project,
            location=self.settings.location,
            credentials=google_credentials(self.settings),
            http_options=http_options(
                self.settings, retry_attempts=retry_attempts, caller_deadline=caller_deadline
            ),
        )

    def storage_credentials(self) -> Any:
        return google_credentials(self.settings)

    def describe(self) -> str:
        where = self.settings.base_url or "Vertex AI"
        return f"{self.name} at {where} project={self.settings.project} location={self.settings.location}"

    @property
    def google_host(self) -> str:
        location = self.settings.location or ""
        prefix = "" if location == "global" else f"{location}-"
        return f"{prefix}aiplatform.googleapis.com"

    def credential_hosts(self) -> list[str]:
        """The endpoint, plus the key's ``token_uri``: google-auth posts a signed token request there."""
        info = self.settings.service_account_info
        if info is None:
            return super().credential_hosts()
        token_uri = info.get("token_uri")
        token_host = host_of(token_uri) if isinstance(token_uri, str) else None
        return [*super().credential_hosts(), token_host or ""]

    @property
    def scope(self) -> str:
        return f"projects/{self.settings.project}/locations/{self.settings.location}"

    def cache_name(self, name: Any, field: str = "cache_name") -> str:
        """``projects/P/locations/L/cachedContents/ID``; ``cachedContents/ID`` and a bare ID expand
        to this connection's project and location, as the SDK does, so logs and XCom show one form."""
        text = self._refuse_name(name, field)
        if _VERTEX_NAME.match(text):
            return text
        short = _SHORT_NAME.match(text)
        if short or _BARE_ID.match(text):
            return f"{self.scope}/cachedContents/{short.group(1) if short else text}"
        raise CtxCacheConfigError(
            f"{field}: {text!r} is not a cache name for the {self.name} backend; expected "
            "'projects/P/locations/L/cachedContents/ID' or 'cachedContents/ID', "
            "as CreateCacheOperator returns it."
        )

    def cache_gone(self, code: int, message: str) -> bool:
        # 404 NOT_FOUND; 400 "Cache content N is expired." just after expiry; 400 "Invalid
        # resource state for cache content" for one being deleted; 403 naming the cache.
        return (
            cache_not_found(code, message)
            or cache_expired(code, message)
            or cache_in_bad_state(code, message)
            or cache_denied(code, message)
        )

    def check_file_uri(self, uri: str, where: str) -> None:
        """Vertex reads ``gs://`` objects and any other URI it can fetch; it decides."""

    def count_tokens_request(
        self, contents: Any, system_instruction: Any
    ) -> tuple[Any, types.CountTokensConfig | None]:
        if system_instruction is None:
            return contents, None
        return contents, types.CountTokensConfig(system_instruction=system_instruction)

    def staging_area(
        self, client: Callable[[], Client], storage_client: Callable[[], Any], staging_uri: str | None = None
    ) -> StagingArea:
        return CloudStorageArea(storage_client, staging_uri or self.settings.staging_uri)

    def check_kms_key(self, kms_key_name: str | None) -> None:
        """Vertex encrypts the cache with the key (``encryption_spec``)."""


BACKEND_CLASSES: dict[str, type[Backend]] = {cls.name: cls for cls in (DeveloperApi, VertexAi)}


def backend_for(settings: ConnectionSettings) -> Backend:
    """The backend object for a parsed connection (``settings.backend`` is already checked)."""
    return BACKEND_CLASSES[settings.backend](settings)
