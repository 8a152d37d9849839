"""The operator's ``prompts`` turned into checked, keyed requests before any billable call.

Two forms are accepted, and may be mixed in one list:

- a plain string: the question; its key is ``"prompt-NNNNN"`` by position;
- a request in the Gemini batch format, one JSONL line of a batch input file::

      {"key": "request-1",
       "request": {"contents": [{"parts": [{"text": "..."}], "role": "user"}],
                   "generationConfig": {"temperature": 0.2, "thinking_config": {"thinking_budget": 0}},
                   "cachedContent": "cachedContents/abc"}}

  REST camelCase and SDK snake_case field names are both accepted. Without ``key`` the
  positional key is used.

Every rejection is a :class:`CtxCacheConfigError` whose message starts with the field path
(``prompts[3].request.systemInstruction: ...``) and says the fix. A request's
``generationConfig`` is merged over the operator's ``generation_config`` field by field (the
request wins; a nested object such as ``thinking_config`` is replaced whole), and each distinct
merged config becomes one :class:`google.genai.types.GenerateContentConfig`, shared by every
request that uses it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pydantic
from google.genai import types

from airflow_provider_ctxcache.exceptions import (
    FIELDS_FORBIDDEN_WITH_CACHE,
    CtxCacheConfigError,
    ForbiddenWithCacheError,
)

KEY_PREFIX = "prompt-"

# Request fields that the API refuses next to cachedContent, in the spellings a user may write.
_FORBIDDEN_REQUEST_FIELDS = ("systemInstruction", "system_instruction", "tools", "toolConfig", "tool_config")

# Request fields (REST name, SDK name) that the SDK carries in GenerateContentConfig.
_REQUEST_FIELDS_IN_CONFIG = {
    "safetySettings": "safety_settings",
    "safety_settings": "safety_settings",
    "labels": "labels",
}
_CONTENTS = ("contents",)
_GENERATION_CONFIG = ("generationConfig", "generation_config")
_CACHED_CONTENT = ("cachedContent", "cached_content")
_KNOWN_REQUEST_FIELDS = frozenset(
    (
        *_CONTENTS,
        *_GENERATION_CONFIG,
        *_CACHED_CONTENT,
        *_REQUEST_FIELDS_IN_CONFIG,
        *_FORBIDDEN_REQUEST_FIELDS,
    )
)
_KNOWN_PROMPT_FIELDS = frozenset(("key", "request"))
_FORBIDDEN_REQUEST_FIELD_SET = frozenset(_FORBIDDEN_REQUEST_FIELDS)


@dataclass(frozen=True)
class PromptRequest:
    """One online call to make against the cache.

    :param key: unique within the run; results are reported under it.
    :param contents: a string, or a list of contents as the SDK takes them: the batch format's
        plain dicts stay dicts (checked against ``types.Content``, not converted: the SDK reads a
        dict faster than it re-validates a model), strings, ``types.Content`` / ``types.Part``.
    :param generation_config: the merged generation config by SDK field name (JSON-serialisable),
        or None when neither the operator nor the request set one.
    :param config: the SDK object for ``generation_config``; requests with equal configs share one.
    """

    key: str
    contents: list[Any] | str
    generation_config: dict[str, Any] | None = None
    config: types.GenerateContentConfig | None = field(default=None, compare=False, repr=False)
    fingerprint: str = field(default="", compare=False)
    """What was asked (the prompt without its key), hashed: a resume counts a stored answer for
    this key only when it was given for the same request."""


def cache_id(name: str) -> str:
    """The trailing id: ``cachedContents/abc`` or ``projects/p/locations/l/cachedContents/abc`` -> ``abc``."""
    return name.strip().rstrip("/").rsplit("/", 1)[-1]


def normalize_prompts(
    prompts: Any,
    *,
    cache_name: str | None = None,
    generation_config: Any = None,
    field_name: str = "prompts",
    key_prefix: str = KEY_PREFIX,
) -> list[PromptRequest]:
    """Check every prompt and return the requests, in input order; raises on the first problem.

    :param prompts: a list (or tuple) of strings and batch-format dicts.
    :param cache_name: the cache the task uses; a request's ``cachedContent`` must name the same one.
    :param generation_config: the operator's config (dict or ``GenerateContentConfig``), the base
        every request's ``generationConfig`` is merged over.
    :param key_prefix: starts the positional key of a prompt that has none; a mapped task
        instance puts its map index here so keys stay unique across the whole fan-out.
    """
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence):
        raise CtxCacheConfigError(
            f"{field_name}: a {type(prompts).__name__} is not a list of prompts; pass a list of strings "
            'or of batch requests {"key": ..., "request": {"contents": [...]}}.'
        )
    if not prompts:
        raise CtxCacheConfigError(
            f"{field_name}: the list is empty; give at least one prompt "
            "(or skip the task when there is nothing to ask)."
        )
    entries = Entries(lambda: ((f"{field_name}[{index}]", prompt) for index, prompt in enumerate(prompts)))
    return list(
        iter_normalized(
            entries, cache_name=cache_name, generation_config=generation_config, key_prefix=key_prefix
        )
    )


def iter_normalized(
    entries: Iterable[tuple[str, Any]],
    *,
    cache_name: str | None = None,
    generation_config: Any = None,
    key_prefix: str = KEY_PREFIX,
    max_request_bytes: int | None = None,
    checked: bool = False,
    fingerprints: Iterator[str] | None = None,
) -> Iterator[PromptRequest]:
    """Check and yield prompts one at a time, for inputs too large to hold (a JSONL file).

    :param entries: ``(path, prompt)`` pairs; the path names the prompt in errors, e.g.
        ``prompts[3]`` or ``input_uri line 4``. Duplicate keys are refused with both paths.
    :param max_request_bytes: the backend's request-size limit: a larger request is refused
        here, before any call, rather than by the API after others were billed.
    :param checked: these entries passed an unchecked pass already (the fan-out reads its input
        twice: once to check it all before any call, then to send it); the contents are not
        validated against the SDK's models again and duplicate keys are not looked for.
    :param fingerprints: the fingerprints an earlier reading of the same entries gave, in order
        (see ``fanout.fingerprints``); each request takes the next instead of hashing its prompt.
    """
    base = config_fields(generation_config, "generation_config", cache_name=cache_name)
    configs = _ConfigPool()
    # A one-shot iterator cannot be read again to name a repeated key: its keys are kept exactly.
    keys = None if checked else _SeenKeys(exact=isinstance(entries, Iterator))
    for index, (path, prompt) in enumerate(entries):
        positional = f"{key_prefix}{index:05d}"
        request = _one_prompt(
            prompt,
            positional,
            path,
            cache_name=cache_name,
            base=base,
            configs=configs,
            checked=checked,
            max_request_bytes=max_request_bytes,
            fingerprint=None if fingerprints is None else next(fingerprints),
        )
        if keys is not None:
            keys.add(request.key, path)
        yield request
    if keys is not None and keys.suspects:
        _refuse_repeated_keys(entries, keys.suspects, key_prefix)


class Entries:
    """``(path, prompt)`` pairs that can be read again: ``factory`` starts a fresh reading each time.

    :func:`iter_normalized` reads them a second time only to name both places of a repeated key.
    """

    def __init__(self, factory: Callable[[], Iterator[tuple[str, Any]]]) -> None:
        self._factory = factory

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        return self._factory()


class _SeenKeys:
    """The keys read so far, in a fixed-size bit filter instead of a set that grows with the input.

    A key whose bits are all set already may have been seen (or collides): it becomes a suspect,
    kept exactly, and the input is read again at the end to tell. 2**23 bits (1 MiB) keep suspects
    rare up to about a million keys; past that the filter fills and the suspects grow instead.
    ``exact``: keep every key with its path (for inputs that cannot be read again).
    """

    BITS = 1 << 23

    def __init__(self, *, exact: bool) -> None:
        self.suspects: set[str] = set()
        self._exact: dict[str, str] | None = {} if exact else None
        self._bits = bytearray(self.BITS // 8)

    def add(self, key: str, path: str) -> None:
        if self._exact is not None:
            if key in self._exact:
                raise _repeated_key_error(key, self._exact[key], path)
            self._exact[key] = path
            return
        first = hash(key)
        step = (first >> 32) | 1
        bits, size, fresh = self._bits, self.BITS, False
        # Four probes, written out: the loop's own bookkeeping was half of this method's cost.
        for at in (first % size, (first + step) % size, (first + 2 * step) % size, (first + 3 * step) % size):
            byte, mask = at >> 3, 1 << (at & 7)
            if not bits[byte] & mask:
                bits[byte] |= mask
                fresh = True
        if not fresh:
            self.suspects.add(key)


def _refuse_repeated_keys(entries: Iterable[tuple[str, Any]], suspects: set[str], key_prefix: str) -> None:
    """Read the input again for the suspect keys; the first one that really repeats is an error."""
    first_path: dict[str, str] = {}
    for index, (path, prompt) in enumerate(entries):
        key = _key_of(prompt, f"{key_prefix}{index:05d}")
        if key not in suspects:
            continue
        if key in first_path:
            raise _repeated_key_error(key, first_path[key], path)
        first_path[key] = path


def _key_of(prompt: Any, positional_key: str) -> str:
    """The key :func:`_one_prompt` gives an already checked prompt."""
    key = prompt.get("key") if isinstance(prompt, Mapping) else None
    return positional_key if key is None else str(key)


def _repeated_key_error(key: str, first: str, again: str) -> CtxCacheConfigError:
    return CtxCacheConfigError(
        f"{again}.key: {key!r} is already the key of {first}; "
        "keys must be unique within a task, since results are reported by key."
    )


_CANONICAL_JSON = json.JSONEncoder(ensure_ascii=False, sort_keys=True, default=repr)
"""What ``json.dumps`` with these options builds anew on every call; the fingerprint's text."""


def _fingerprint(prompt: Any, path: str, key: str, limit: int | None) -> str:
    """The request as UTF-8 JSON, checked for what cannot be sent, then hashed.

    One pass finds a lone surrogate anywhere (the JSON writer and the wire reject it, after
    other requests were billed) and a request over the size limit, and gives the fingerprint.
    """
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise CtxCacheConfigError(
            f"{path}.key: {key!r} is not valid Unicode (a lone surrogate); use a key of real characters."
        ) from None
    asked = {k: v for k, v in prompt.items() if k != "key"} if isinstance(prompt, Mapping) else prompt
    # The prompt alone, not the operator's config: CreateCacheOperator counts the same hashes
    # without knowing the fan-out's generation_config.
    text = _CANONICAL_JSON.encode(asked)
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError:
        raise CtxCacheConfigError(
            f"{path}: holds text that is not valid Unicode (a lone surrogate such as \\ud800); "
            "fix the text of the request."
        ) from None
    if limit is not None and len(encoded) > limit:
        raise CtxCacheConfigError(
            f"{path}: request {key!r} is {len(encoded):,} bytes, over the backend's request limit of "
            f"{limit:,} bytes; shorten it, or move the large part into the cache."
        )
    return hashlib.sha256(encoded).hexdigest()[:16]


def config_fields(value: Any, path: str, *, cache_name: str | None = None) -> dict[str, Any]:
    """A generation config (dict in camelCase or snake_case, or the SDK object) as SDK field names.

    Fields the API refuses next to a cache are rejected here; a ``cached_content`` must name
    ``cache_name`` and is dropped, since the hook sets it.
    """
    if value is None:
        return {}
    if isinstance(value, types.GenerateContentConfig):
        parsed = value
    elif isinstance(value, Mapping):
        present = [f"{path}.{name}" for name in _FORBIDDEN_REQUEST_FIELDS if value.get(name) is not None]
        if present:
            raise ForbiddenWithCacheError(present)
        parsed = _validate_config(dict(value), path)
    else:
        raise CtxCacheConfigError(
            f"{path}: a {type(value).__name__} is not a generation config; pass a dict such as "
            '{"temperature": 0.2, "max_output_tokens": 512} or a google.genai.types.GenerateContentConfig.'
        )
    fields = parsed.model_dump(exclude_unset=True, exclude_none=True)
    present = [f"{path}.{name}" for name in FIELDS_FORBIDDEN_WITH_CACHE if name in fields]
    if present:
        raise ForbiddenWithCacheError(present)
    named = fields.pop("cached_content", None)
    if named is not None and cache_name is not None:
        _same_cache(str(named), cache_name, f"{path}.cached_content")
    return fields


def _validate_config(value: dict[str, Any], path: str) -> types.GenerateContentConfig:
    try:
        return types.GenerateContentConfig.model_validate(value)
    except pydantic.ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in error.errors()[:3]
        )
        raise CtxCacheConfigError(
            f"{path}: not a valid generation config ({problems}); use the fields of "
            "google.genai.types.GenerateContentConfig, in camelCase or snake_case."
        ) from None


def _same_cache(named: str, cache_name: str, path: str) -> None:
    if cache_id(named) != cache_id(cache_name):
        raise CtxCacheConfigError(
            f"{path}: {named!r} names another cache than this task's cache_name {cache_name!r}; "
            "remove it (the task sets it) or point cache_name at that cache."
        )


def _one_prompt(
    prompt: Any,
    positional_key: str,
    path: str,
    *,
    cache_name: str | None,
    base: dict[str, Any],
    configs: _ConfigPool,
    checked: bool = False,
    max_request_bytes: int | None = None,
    fingerprint: str | None = None,
) -> PromptRequest:
    if isinstance(prompt, str):
        if not prompt.strip():
            raise CtxCacheConfigError(f"{path}: the prompt is an empty string; give the question's text.")
        if fingerprint is None:
            fingerprint = _fingerprint(prompt, path, positional_key, max_request_bytes)
        return configs.request(positional_key, prompt, base, fingerprint)
    if not _is_mapping(prompt):
        raise CtxCacheConfigError(
            f"{path}: a {type(prompt).__name__} is not a prompt; use a non-empty string or a batch request "
            '{"key": "...", "request": {"contents": [...]}}.'
        )
    unknown = _unknown(prompt, _KNOWN_PROMPT_FIELDS)
    if unknown:
        raise CtxCacheConfigError(
            f"{path}.{unknown[0]}: not a field of a batch request; a prompt dict holds only "
            '"key" and "request", e.g. {"key": "q1", "request": {"contents": [...]}}.'
        )
    key = prompt.get("key")
    if key is None:
        key = positional_key
    elif not isinstance(key, str) or not key.strip():
        raise CtxCacheConfigError(
            f"{path}.key: {key!r} is not a key; use a non-empty string, unique in the task."
        )
    request = prompt.get("request")
    if not _is_mapping(request):
        problem = "is missing" if request is None else f"a {type(request).__name__} is not a request"
        raise CtxCacheConfigError(
            f"{path}.request: {problem}; "
            'give {"contents": [{"role": "user", "parts": [{"text": "..."}]}]} in the Gemini batch format.'
        )
    where = f"{path}.request"
    if not _FORBIDDEN_REQUEST_FIELD_SET.isdisjoint(request):
        forbidden = [f"{where}.{name}" for name in _FORBIDDEN_REQUEST_FIELDS if request.get(name) is not None]
        if forbidden:
            raise ForbiddenWithCacheError(forbidden)
    unknown = _unknown(request, _KNOWN_REQUEST_FIELDS)
    if unknown:
        raise CtxCacheConfigError(
            f"{where}.{unknown[0]}: not supported in a request against a cache; "
            "use contents, generationConfig, cachedContent, safetySettings or labels."
        )
    contents = _contents(request.get("contents"), f"{where}.contents", checked=checked)

    cached_key = _pick_key(request, _CACHED_CONTENT)
    if cached_key is not None:
        named = request[cached_key]
        if not isinstance(named, str) or not named.strip():
            raise CtxCacheConfigError(
                f"{where}.{cached_key}: {named!r} is not a cache name; remove it (the task sets it)."
            )
        if cache_name is not None:
            _same_cache(named, cache_name, f"{where}.{cached_key}")

    config_key = _pick_key(request, _GENERATION_CONFIG)
    raw_config: dict[str, Any] = {}
    if config_key is not None and request[config_key] is not None:
        own = request[config_key]
        if not isinstance(own, Mapping):
            raise CtxCacheConfigError(
                f"{where}.{config_key}: a {type(own).__name__} is not a generation config; "
                'use an object such as {"temperature": 0.2}.'
            )
        raw_config.update(own)
    for name, sdk_name in _REQUEST_FIELDS_IN_CONFIG.items():
        if request.get(name) is not None:
            raw_config[sdk_name] = request[name]
    own_fields = (
        config_fields(raw_config, f"{where}.{config_key or 'generationConfig'}", cache_name=cache_name)
        if raw_config
        else {}
    )
    if fingerprint is None:
        fingerprint = _fingerprint(prompt, path, key, max_request_bytes)
    return configs.request(key, contents, {**base, **own_fields} if own_fields else base, fingerprint)


def _pick_key(request: Mapping[str, Any], names: Iterable[str]) -> str | None:
    for name in names:
        if name in request:
            return name
    return None


def _unknown(fields: Mapping[Any, Any], known: frozenset[str]) -> list[str]:
    """The names in ``fields`` that ``known`` lacks, sorted; built only when there are some."""
    return [] if known.issuperset(fields) else sorted(str(k) for k in fields if k not in known)


def _is_mapping(value: Any) -> bool:
    # A dict, as JSON gives, is the common case: it skips the ABC's own check (its cost adds up
    # over the two readings of a large input).
    return type(value) is dict or isinstance(value, Mapping)


def _contents(value: Any, path: str, *, checked: bool = False) -> list[Any] | str:
    """Contents as the SDK takes them: a string, or a list of strings, contents and parts."""
    if isinstance(value, str):
        if not value.strip():
            raise CtxCacheConfigError(f"{path}: is an empty string; give the question's text.")
        return value
    if value is None or ((type(value) is list or isinstance(value, Sequence)) and not value):
        raise CtxCacheConfigError(
            f"{path}: is {'missing' if value is None else 'empty'}; give at least one content, "
            'e.g. [{"role": "user", "parts": [{"text": "..."}]}].'
        )
    if type(value) is not list:
        if _is_mapping(value):
            value = [value]
        elif not isinstance(value, Sequence):
            raise CtxCacheConfigError(
                f"{path}: a {type(value).__name__} is not a list of contents; "
                'use [{"role": "user", "parts": [{"text": "..."}]}].'
            )
    if checked:
        return [_checked_content(item) for item in value]
    return [_content(item, f"{path}[{i}]") for i, item in enumerate(value)]


def _content(item: Any, path: str) -> Any:
    if type(item) is not dict:
        if isinstance(item, (str, types.Content, types.Part)):
            return item
        if not isinstance(item, Mapping):
            raise CtxCacheConfigError(
                f"{path}: a {type(item).__name__} is not a content; "
                'use {"role": "user", "parts": [{"text": "..."}]} or a string.'
            )
    if _plain_text_turn(item):
        return _checked_content(item)
    model: type[types.Content] | type[types.Part] = types.Content if "parts" in item else types.Part
    try:
        parsed = model.model_validate(dict(item))
    except pydantic.ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise CtxCacheConfigError(
            f"{path}{'.' + where if where else ''}: {first['msg']}; a content is "
            '{"role": "user", "parts": [{"text": "..."}]} (camelCase or snake_case fields).'
        ) from None
    if isinstance(parsed, types.Content):
        if not parsed.parts:
            raise CtxCacheConfigError(
                f"{path}.parts: is empty; give at least one part, e.g. {{'text': '...'}}."
            )
        return _checked_content(item)
    return parsed


def sent_contents(contents: list[Any] | str) -> list[Any] | str:
    """The contents as the fan-out hands them to the SDK: one user turn of one text part as its text.

    google-genai makes a string the same user turn, so the request on the wire is unchanged, and
    it costs the SDK about 3% less CPU a call than reading the turn's dict (measured side by side).
    Every other shape is sent as it is.
    """
    if type(contents) is not list or len(contents) != 1:
        return contents
    turn = contents[0]
    if type(turn) is not dict or turn.get("role") != "user" or not _plain_text_turn(turn):
        return contents
    parts = turn["parts"]
    text: str = parts[0]["text"]
    return text if len(parts) == 1 and text.strip() else contents


def _plain_text_turn(item: Mapping[str, Any]) -> bool:
    """``{"role": str, "parts": [{"text": str}, ...]}``: the common turn, valid for ``types.Content``
    by its shape alone. It skips the model's validation (over a third of the CPU of the first reading);
    every other shape is validated by the SDK's model."""
    parts = item.get("parts")
    if not isinstance(parts, list) or not parts or not isinstance(item.get("role", ""), str):
        return False
    if len(item) != 1 + ("role" in item):
        return False
    for part in parts:
        if type(part) is not dict or len(part) != 1 or type(part.get("text")) is not str:
            return False
    return True


def _checked_content(item: Any) -> Any:
    """A content :func:`_content` accepted, as it is sent: a content dict stays a dict (the SDK
    reads a dict faster than it re-validates a model), a bare part becomes ``types.Part``."""
    if not _is_mapping(item):
        return item
    if "parts" in item:
        return item if isinstance(item, dict) else dict(item)
    return types.Part.model_validate(dict(item))


class _ConfigPool:
    """One ``GenerateContentConfig`` per distinct merged config, shared by the requests that use it."""

    def __init__(self) -> None:
        self._by_text: dict[str, tuple[dict[str, Any], types.GenerateContentConfig]] = {}

    def request(
        self, key: str, contents: list[Any] | str, fields: dict[str, Any], fingerprint: str
    ) -> PromptRequest:
        if not fields:
            return PromptRequest(key=key, contents=contents, fingerprint=fingerprint)
        text = json.dumps(fields, sort_keys=True, default=repr)
        if text not in self._by_text:
            # Both sides of the merge came from validated models, so the merge is valid too.
            config = types.GenerateContentConfig.model_validate(fields)
            as_json = config.model_dump(mode="json", exclude_unset=True, exclude_none=True)
            self._by_text[text] = (as_json, config)
        shared, config = self._by_text[text]
        return PromptRequest(
            key=key, contents=contents, generation_config=shared, config=config, fingerprint=fingerprint
        )


__all__ = [
    "KEY_PREFIX",
    "Entries",
    "PromptRequest",
    "cache_id",
    "config_fields",
    "iter_normalized",
    "normalize_prompts",
    "sent_contents",
]
