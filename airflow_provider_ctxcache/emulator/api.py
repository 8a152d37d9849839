"""The API's behaviour: cachedContents CRUD and countTokens, for both backends.

Handlers take a :class:`Call` (backend, scope, API version, state), the JSON body and the
query, and return the JSON answer or raise :class:`~.errors.ApiError`. Where the two
backends differ (resource names, the missing- and expired-cache errors, model names, the
too-small message) :class:`Call` decides. generateContent is in :mod:`.generate`.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import ledger
from .answers import ContextIndex
from .clock import NANOS, TimestampError, parse_duration, parse_timestamp
from .content import Meter, pick
from .errors import ApiError, invalid_argument, not_found, permission_denied
from .model_facts import GEMINI_API, ModelFacts, canonical_id, facts_for, model_id
from .sources import FileSource
from .state import EmulatorState
from .store import CachedContent, Scope, developer_scope, scope_prefix, vertex_scope
from .usage import builtin_tools

DEFAULT_TTL_NS = 3600 * NANOS
# Contexts of this many characters or more are indexed in a worker thread (a 25 MB text takes
# seconds), so other requests keep being served meanwhile.
THREADED_INDEX_CHARS = 1_000_000
MAX_DISPLAY_NAME = 128

_DURATION_TYPE = "(type.googleapis.com/google.protobuf.Duration)"
_VERTEX_MODEL = re.compile(
    r"^(?:projects/(?P<p>[^/]+)/locations/(?P<l>[^/]+)/)?(?:publishers/google/)?(?:models/)?(?P<m>[^/]+)$"
)
_CREATE_FIELDS = {
    "model",
    "ttl",
    "expireTime",
    "expire_time",
    "displayName",
    "display_name",
    "contents",
    "systemInstruction",
    "system_instruction",
    "tools",
    "toolConfig",
    "tool_config",
}
_VERTEX_ONLY_FIELDS = {"encryption_spec", "encryptionSpec"}
_UPDATE_FIELDS = {"ttl", "expireTime", "expire_time"}
_FORBIDDEN_WITH_CACHE = (
    ("systemInstruction", "system_instruction"),
    ("tools", "tools"),
    ("toolConfig", "tool_config"),
)
FORBIDDEN_WITH_CACHE_MESSAGE = (
    "CachedContent can not be used with GenerateContent request setting system_instruction, "
    "tools or tool_config.\n\nProposed fix: move those values to CachedContent from "
    "GenerateContent request."
)
DEVELOPER_MISSING_CACHE = "CachedContent not found (or permission denied)"
VERTEX_EXPIRED_CACHE = "Cache content {id} is expired."
VERTEX_DELETED_CACHE = "Invalid resource state for cache content."
DEVELOPER_TOO_SMALL = (
    "Cached content is too small. total_token_count={tokens}, min_total_token_count={minimum}"
)
VERTEX_TOO_SMALL = (
    "The cached content is of {tokens} tokens. The minimum token count to start caching is {minimum}."
)


@dataclass(frozen=True)
class Call:
    """One API call's context: which backend, which scope, which API version."""

    state: EmulatorState
    backend: str
    version: str
    project: str = ""
    location: str = ""
    events: list[ledger.UsageEvent] = field(default_factory=list, compare=False)
    """Billable events of this call, filed by the dispatcher only if the call succeeds."""

    @classmethod
    def developer(cls, state: EmulatorState, version: str) -> Call:
        """A Developer API call."""
        return cls(state, GEMINI_API, version)

    @classmethod
    def vertex(cls, state: EmulatorState, version: str, project: str, location: str) -> Call:
        """A Vertex AI call under one project and location."""
        return cls(state, "vertex_ai", version, project, location)

    @property
    def scope(self) -> Scope:
        """The cache scope this call sees."""
        if self.backend == GEMINI_API:
            return developer_scope()
        return vertex_scope(self.project, self.location)

    @property
    def is_developer(self) -> bool:
        """Whether this is the Developer API."""
        return self.backend == GEMINI_API

    def full_model(self, mid: str) -> str:
        """The backend's full model name of a model id."""
        if self.is_developer:
            return f"models/{mid}"
        return f"projects/{self.project}/locations/{self.location}/publishers/google/models/{mid}"

    def file_source(self) -> FileSource:
        """What this call's ``fileData`` parts can point at (uploaded files, or gs:// objects)."""
        return FileSource.for_backend(developer=self.is_developer, files=self.state.files)

    def require_model(self, mid: str, method: str) -> ModelFacts:
        """The model's facts; 404 NOT_FOUND when it is unknown, shut down or not on this backend."""
        facts = facts_for(mid, self.state.models)
        if facts is None or facts.shut_down is not None or self.backend not in facts.min_cache_tokens:
            if self.is_developer:
                raise not_found(
                    f"models/{mid} is not found for API version {self.version}, or is not supported "
                    f"for {method}. Call ListModels to see the list of available models and their "
                    "supported methods."
                )
            raise not_found(
                f"Publisher Model `{self.full_model(mid)}` was not found or your project does not "
                "have access to it. Please ensure you are using a valid model version. For more "
                "information, see: https://cloud.google.com/vertex-ai/generative-ai/docs/learn/model-versions"
            )
        return facts

    def require_caching(self, mid: str) -> int:
        """The model's minimum cache size on this backend; an error when it offers no caching."""
        facts = self.require_model(mid, "createCachedContent")
        if not facts.caching:
            if self.is_developer:
                raise not_found(
                    f"models/{mid} is not found for API version {self.version}, or is not supported "
                    "for createCachedContent. Call ListModels to see the list of available models "
                    "and their supported methods."
                )
            raise invalid_argument(f"Model {self.full_model(mid)} does not support cached content.")
        return facts.min_cache_tokens[self.backend]

    def too_small(self, tokens: int, minimum: int) -> ApiError:
        """The error for content below the minimum: today's form on the Developer API."""
        template = DEVELOPER_TOO_SMALL if self.is_developer else VERTEX_TOO_SMALL
        return invalid_argument(template.format(tokens=tokens, minimum=minimum))

    def quota_key(self, mid: str) -> tuple[Scope, str]:
        """Whose quota window a request on this model counts in: this scope's, per base model."""
        return self.scope, canonical_id(mid, self.state.models) or mid

    @property
    def quota_location(self) -> str:
        """The ``location`` quota dimension."""
        return "global" if self.is_developer else self.location

    def cache_name(self, cache_id: str) -> str:
        """The full resource name of a cache id in this call's scope."""
        return f"{scope_prefix(self.scope)}cachedContents/{cache_id}"

    def missing(self, name: str) -> ApiError:
        """The error for a cache that does not exist, has expired or was deleted.

        Vertex answers 400 "Cache content N is expired." for a cache that expired less than
        ``expired_grace_s`` ago, 400 "Invalid resource state for cache content." for one deleted
        less than ``deleted_state_s`` ago (emulator clock), and 404 after that.
        """
        if self.is_developer:
            return permission_denied(DEVELOPER_MISSING_CACHE)
        cache_id = name.rsplit("/", 1)[-1]
        config, store, now = self.state.faults.config, self.state.store, self.state.clock.now_ns()
        expired_ns = store.expired_at(name, self.scope)
        if expired_ns is not None and now - expired_ns < config.expired_grace_s * NANOS:
            return invalid_argument(VERTEX_EXPIRED_CACHE.format(id=cache_id))
        deleted_ns = store.deleted_at(name, self.scope)
        if deleted_ns is not None and now - deleted_ns < config.deleted_state_s * NANOS:
            return invalid_argument(VERTEX_DELETED_CACHE)
        return not_found(f"Not found: cached content metadata for {cache_id}.")

    def find(self, name: str) -> CachedContent:
        """The live cache of that name in this scope, or the backend's missing-cache error."""
        cache = self.state.store.get(name, self.scope)
        if cache is None:
            raise self.missing(name)
        return cache

    def resolve_reference(self, ref: Any) -> str:
        """The full cache name a request's ``cachedContent`` field refers to."""
        if not isinstance(ref, str) or not ref:
            raise invalid_argument("Invalid value at 'cached_content': expected a resource name.")
        if ref.startswith("projects/"):
            return ref
        return self.cache_name(ref.removeprefix("cachedContents/"))

    def cache_model(self, value: Any) -> str:
        """The model id of a create request's ``model``, checking its form for the backend."""
        if not isinstance(value, str) or not value:
            raise invalid_argument("cached_content.model is required.")
        if self.is_developer:
            mid = value.removeprefix("models/")
            if "/" in mid:
                raise invalid_argument(f"Invalid model name for cached content: {value}")
            return mid
        match = _VERTEX_MODEL.match(value)
        if not match:
            raise invalid_argument(f"Invalid model name for cached content: {value}")
        project, location = match.group("p"), match.group("l")
        if project is not None and (project, location) != (self.project, self.location):
            raise invalid_argument(
                f"The model {value} is not in the project and location of the request "
                f"(projects/{self.project}/locations/{self.location})."
            )
        return match.group("m")


def expiry_from(body: Mapping[str, Any], now_ns: int, default_ns: int | None) -> int | None:
    """The expire time set by ``ttl`` or ``expireTime``; ``default_ns`` when neither is given."""
    ttl = body.get("ttl")
    expire = pick(body, "expireTime", "expire_time")
    if ttl is not None and expire is not None:
        raise invalid_argument(
            "cached_content.expiration: only one of cached_content.ttl and "
            "cached_content.expire_time may be set."
        )
    if ttl is not None:
        shown = json.dumps(ttl)
        if not isinstance(ttl, str):
            raise invalid_argument(f"Invalid value at 'cached_content.ttl' {_DURATION_TYPE}, {shown}")
        try:
            ttl_ns = parse_duration(ttl)
        except ValueError as exc:
            raise invalid_argument(
                f"Invalid value at 'cached_content.ttl' {_DURATION_TYPE}, {shown}"
            ) from exc
        if ttl_ns <= 0:
            raise invalid_argument(f"cached_content.ttl must be positive, got {shown}.")
        return now_ns + ttl_ns
    if expire is not None:
        shown = json.dumps(expire)
        if not isinstance(expire, str):
            raise invalid_argument(
                "Invalid value at 'cached_content.expire_time' "
                f"(type.googleapis.com/google.protobuf.Timestamp), {shown}"
            )
        try:
            expire_ns = parse_timestamp(expire)
        except TimestampError as exc:
            reason = "a UTC offset is required (RFC 3339)" if exc.naive else "not an RFC 3339 timestamp"
            raise invalid_argument(
                "Invalid value at 'cached_content.expire_time' "
                f"(type.googleapis.com/google.protobuf.Timestamp), {shown}: {reason}."
            ) from exc
        if expire_ns <= now_ns:
            raise invalid_argument(f"cached_content.expire_time must be in the future, got {shown}.")
        return expire_ns
    return default_ns


def require_object(body: Any) -> dict[str, Any]:
    """The body as a JSON object, or a 400."""
    if not isinstance(body, dict):
        raise invalid_argument("Invalid JSON payload received. Expected an object.")
    return body


def _refuse_unknown(body: Mapping[str, Any], allowed: set[str], where: str) -> None:
    for name in body:
        if name not in allowed:
            raise invalid_argument(
                f"Invalid JSON payload received. Unknown name \"{name}\" at '{where}': Cannot find field."
            )


def refuse_cloud_storage(call: Call, meter: Meter) -> None:
    """Refuse ``gs://`` file URIs on the Developer API (they must go through the Files API)."""
    if call.is_developer:
        for uri in meter.file_uris:
            if uri.startswith("gs://"):
                raise invalid_argument(
                    f"Cloud Storage URIs are not supported by the Gemini Developer API: {uri}. "
                    "Upload the file through the Files API and use the returned file URI instead."
                )


async def create_cache(call: Call, body: Any) -> dict[str, Any]:
    """``POST cachedContents``: validate, count, enforce the minimum, store."""
    body = require_object(body)
    allowed = _CREATE_FIELDS if call.is_developer else _CREATE_FIELDS | _VERTEX_ONLY_FIELDS
    _refuse_unknown(body, allowed, "cached_content")
    mid = call.cache_model(body.get("model"))
    minimum = call.require_caching(mid)
    now = call.state.clock.now_ns()
    expire_ns = expiry_from(body, now, now + DEFAULT_TTL_NS)
    assert expire_ns is not None
    display_name = pick(body, "displayName", "display_name") or ""
    if not isinstance(display_name, str) or len(display_name) > MAX_DISPLAY_NAME:
        raise invalid_argument(
            f"cached_content.display_name must be a string of at most {MAX_DISPLAY_NAME} characters."
        )
    meter = Meter(call.file_source())
    system = pick(body, "systemInstruction", "system_instruction")
    if system is not None:
        meter.add_content(system, "cached_content.system_instruction")
    meter.add_contents(body.get("contents"), "cached_content.contents")
    meter.add_json(body.get("tools"))
    meter.add_json(pick(body, "toolConfig", "tool_config"))
    refuse_cloud_storage(call, meter)
    meter.check_inline_limit()
    await meter.resolve_files()
    if meter.tokens < minimum:
        raise call.too_small(meter.tokens, minimum)
    encryption = pick(body, "encryptionSpec", "encryption_spec")
    context = await index_context(meter.all_text)
    store = call.state.store
    cache = CachedContent(
        name=store.new_name(call.scope),
        scope=call.scope,
        model=call.full_model(mid),
        display_name=display_name,
        create_ns=now,
        update_ns=now,
        expire_ns=expire_ns,
        total_tokens=meter.tokens,
        context=context,
        context_digest=meter.digest,
        seq=store.next_seq(),
        encryption_spec=encryption if isinstance(encryption, dict) else None,
        modality_tokens=dict(meter.modalities),
        builtin_tools=builtin_tools(body.get("tools")),
    )
    store.add(cache)
    call.events.append(ledger.cache_created(cache))
    return cache.resource()


async def get_cache(call: Call, cache_id: str) -> dict[str, Any]:
    """``GET cachedContents/{id}``."""
    return call.find(call.cache_name(cache_id)).resource()


def page_request(query: Mapping[str, str]) -> tuple[int, str]:
    """``(pageSize, pageToken)`` of a list call, in either spelling; 0 means the default size."""
    try:
        page_size = int(query.get("pageSize") or query.get("page_size") or 0)
    except ValueError as exc:
        raise invalid_argument("Invalid value for page_size.") from exc
    if page_size < 0:
        raise invalid_argument("page_size must not be negative.")
    return page_size, query.get("pageToken") or query.get("page_token") or ""


def page_response(field: str, resources: list[dict[str, Any]], next_token: str | None) -> dict[str, Any]:
    """A list answer as the API shapes it: empty fields are left out."""
    result: dict[str, Any] = {}
    if resources:
        result[field] = resources
    if next_token:
        result["nextPageToken"] = next_token
    return result


async def list_caches(call: Call, query: Mapping[str, str]) -> dict[str, Any]:
    """``GET cachedContents?pageSize&pageToken``."""
    page, next_token = call.state.store.page(call.scope, *page_request(query))
    return page_response("cachedContents", [c.resource() for c in page], next_token)


async def update_cache(call: Call, cache_id: str, body: Any, query: Mapping[str, str]) -> dict[str, Any]:
    """``PATCH cachedContents/{id}``: only the expiration can change."""
    body = require_object(body)
    unknown = sorted(set(body) - _UPDATE_FIELDS)
    if unknown:
        raise invalid_argument(
            f"Only cached_content.ttl or cached_content.expire_time can be updated, not {', '.join(unknown)}."
        )
    mask = query.get("updateMask") or query.get("update_mask")
    if mask:
        fields = {_snake(f.strip()) for f in mask.split(",") if f.strip()}
        if not fields <= {"ttl", "expire_time"}:
            raise invalid_argument(f"update_mask may only name ttl or expire_time, got {mask!r}.")
    now = call.state.clock.now_ns()
    expire_ns = expiry_from(body, now, None)
    if expire_ns is None:
        raise invalid_argument("cached_content.expiration: ttl or expire_time is required.")
    cache = call.find(call.cache_name(cache_id))
    old_expire_ns = cache.expire_ns
    cache.expire_ns = expire_ns
    cache.update_ns = now
    call.events.append(ledger.cache_ttl_changed(cache, old_expire_ns))
    return cache.resource()


async def delete_cache(call: Call, cache_id: str) -> dict[str, Any]:
    """``DELETE cachedContents/{id}`` -> ``{}``."""
    name = call.cache_name(cache_id)
    cache = call.state.store.get(name, call.scope)
    if cache is None or not call.state.store.delete(name, call.scope):
        raise call.missing(name)
    call.events.append(ledger.cache_deleted(cache, call.state.clock.now_ns()))
    return {}


async def count_tokens(call: Call, mid: str, body: Any) -> dict[str, Any]:
    """``models/{m}:countTokens`` -> ``{"totalTokens"}`` (plus cached tokens when a cache is named)."""
    call.require_model(mid, "countTokens")
    body = require_object(body)
    request = pick(body, "generateContentRequest", "generate_content_request")
    cache = None
    if isinstance(request, dict):
        body = request
        cache = cache_for_request(call, mid, request)
    meter = Meter(call.file_source())
    system = pick(body, "systemInstruction", "system_instruction")
    if system is not None:
        meter.add_content(system, "system_instruction")
    meter.add_contents(body.get("contents"), "contents")
    meter.add_json(body.get("tools"))
    meter.add_json(pick(body, "toolConfig", "tool_config"))
    refuse_cloud_storage(call, meter)
    meter.check_inline_limit()
    await meter.resolve_files()
    if cache is None:
        return {"totalTokens": meter.tokens}
    return {"totalTokens": meter.tokens + cache.total_tokens, "cachedContentTokenCount": cache.total_tokens}


def cache_for_request(call: Call, mid: str, body: Mapping[str, Any]) -> CachedContent | None:
    """The cache a generate request names, after the same-model and forbidden-fields rules."""
    ref = pick(body, "cachedContent", "cached_content")
    if ref is None:
        return None
    cache = call.find(call.resolve_reference(ref))
    if model_id(cache.model) != mid:
        raise invalid_argument(
            f"Model used by GenerateContent request ({call.full_model(mid)}) and CachedContent "
            f"({cache.model}) has to be the same."
        )
    for camel, snake in _FORBIDDEN_WITH_CACHE:
        if pick(body, camel, snake):
            raise invalid_argument(FORBIDDEN_WITH_CACHE_MESSAGE)
    return cache


async def index_context(text: str) -> ContextIndex:
    """The answer index of a context; a large one is built off the event loop."""
    if len(text) < THREADED_INDEX_CHARS:
        return ContextIndex(text)
    return await asyncio.to_thread(ContextIndex, text)


def optional_int(value: Any, field: str) -> int | None:
    """An optional integer field of ``generation_config``, or a 400."""
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise invalid_argument(f"Invalid value at 'generation_config.{field}' (TYPE_INT32).") from exc


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()
