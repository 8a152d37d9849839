"""``models/{m}:generateContent``: the cache rules, thinking, quotas, usage and the answer.

In order: the model must be served (404), the cache it names must be live and usable with the
request (see :func:`~.api.cache_for_request`), the contents are counted, the generation and
thinking configs are validated (:mod:`.thinking`), the request is admitted against the
per-model quotas (:mod:`.quota`, 429 when over), and only then is the answer built
(:mod:`.answers`) with its ``usageMetadata`` (:mod:`.usage`), which is also noted as a billable
event (:mod:`.ledger`). Answers are deterministic.
"""

from __future__ import annotations

import secrets
from collections import Counter
from typing import Any

from . import ledger
from .answers import answer
from .api import Call, cache_for_request, index_context, optional_int, refuse_cloud_storage, require_object
from .clock import format_timestamp
from .content import Meter, check_inline_limit, pick
from .errors import invalid_argument
from .quota import quota_error
from .thinking import plan_thinking
from .usage import Usage, builtin_tools, tool_use_tokens


async def generate_content(call: Call, mid: str, body: Any) -> dict[str, Any]:
    """Answer one generateContent request, deterministically, or raise its error."""
    facts = call.require_model(mid, "generateContent")
    body = require_object(body)
    contents = body.get("contents")
    if not contents:
        raise invalid_argument("* GenerateContentRequest.contents: contents is not specified\n")
    cache = cache_for_request(call, mid, body)
    files = call.file_source()
    context = Meter(files)
    system = pick(body, "systemInstruction", "system_instruction")
    if system is not None:
        context.add_content(system, "system_instruction")
    context.add_json(body.get("tools"))
    context.add_json(pick(body, "toolConfig", "tool_config"))
    if not isinstance(contents, list):
        raise invalid_argument("Invalid value at 'contents': expected a list of Content.")
    context.add_contents(contents[:-1], "contents")
    prompt = Meter(files)
    prompt.add_content(contents[-1], f"contents[{len(contents) - 1}]")
    for meter in (context, prompt):
        refuse_cloud_storage(call, meter)
    check_inline_limit(context.payload_bytes + prompt.payload_bytes)
    for meter in (context, prompt):
        await meter.resolve_files()

    config = pick(body, "generationConfig", "generation_config") or {}
    if not isinstance(config, dict):
        raise invalid_argument("Invalid value at 'generation_config': expected an object.")
    max_tokens = optional_int(pick(config, "maxOutputTokens", "max_output_tokens"), "max_output_tokens")
    mime = pick(config, "responseMimeType", "response_mime_type")
    thinking_config = pick(config, "thinkingConfig", "thinking_config") or {}
    if not isinstance(thinking_config, dict):
        raise invalid_argument("Invalid value at 'generation_config.thinking_config': expected an object.")
    thinking = plan_thinking(facts, thinking_config)

    cached = Counter(cache.modality_tokens) if cache else None
    prompt_modalities = (cached or Counter()) + context.modalities + prompt.modalities
    tools = cache.builtin_tools if cache else builtin_tools(body.get("tools"))
    tool_use = tool_use_tokens(tools, prompt.tokens)
    prompt_tokens = sum(prompt_modalities.values())
    _admit(call, mid, prompt_tokens + tool_use)

    indexes = [cache.context] if cache else []
    request_text = "\n".join(t for t in (context.all_text, *prompt.inline_texts) if t)
    if request_text:
        indexes.append(await index_context(request_text))
    has_context = cache is not None or context.tokens > 0 or prompt.has_data
    digest_source = "|".join([cache.context_digest if cache else "", context.digest, prompt.digest])
    reply = answer(
        contexts=indexes,
        context_digest=digest_source,
        has_context=has_context,
        prompt=prompt.text,
        json_mode=mime == "application/json",
        max_output_tokens=max_tokens,
    )
    usage = Usage(
        prompt=prompt_modalities,
        cached=cached,
        candidates=reply.tokens,
        thoughts=thinking.thoughts(prompt_tokens),
        tool_use=tool_use,
    )
    result: dict[str, Any] = {
        "candidates": [
            {
                "content": {"parts": [{"text": reply.text}], "role": "model"},
                "finishReason": reply.finish_reason,
                "index": 0,
            }
        ],
        "usageMetadata": usage.to_json(call.backend),
        "modelVersion": mid,
        "responseId": secrets.token_urlsafe(16),
    }
    now = call.state.clock.now_ns()
    if not call.is_developer:
        result["createTime"] = format_timestamp(now, nanos=True)
    call.events.append(
        ledger.generate(call.scope, now, mid, cache.name if cache else None, result["usageMetadata"])
    )
    return result


def _admit(call: Call, mid: str, input_tokens: int) -> None:
    """Count the request against its model's quotas, or raise the 429."""
    limits = call.state.faults.config.quota
    refusal = call.state.faults.windows.admit(
        call.quota_key(mid), input_tokens, call.state.clock.now_ns(), limits
    )
    if refusal is not None:
        raise quota_error(
            backend=call.backend,
            model=call.quota_key(mid)[1],
            location=call.quota_location,
            refusal=refusal,
            limits=limits,
        )
