"""Batch endpoints, there to refuse ``cachedContent`` the way Vertex AI does.

- Developer API ``models/{m}:batchGenerateContent`` with inlined requests: any request
  carrying ``cachedContent`` -> 400; otherwise a pending batch operation.
- Vertex ``batchPredictionJobs``: a ``gs://`` JSONL source is read through a Cloud Storage
  emulator when ``STORAGE_EMULATOR_HOST`` is set (``{host}/storage/v1/b/{bucket}/o/{object}?alt=media``,
  plain httpx) and refused if any line's request has ``cachedContent``. Without that variable,
  and for ``bq://`` sources, the job is accepted unread. A ``cachedContent`` anywhere in the
  create body itself is refused too.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

import httpx

from .api import Call
from .clock import format_timestamp
from .errors import ApiError, invalid_argument
from .model_facts import model_id

STORAGE_ENV = "STORAGE_EMULATOR_HOST"


def unsupported_cache_error(mid: str) -> ApiError:
    """The error Vertex AI batch prediction answers for an explicit cache."""
    return invalid_argument(f"Model {mid} does not support cached content with batch prediction.")


def carries_cache(value: Any) -> bool:
    """Whether ``cachedContent`` (or ``cached_content``) appears anywhere in a JSON value."""
    if isinstance(value, dict):
        return any(
            (k in ("cachedContent", "cached_content") and v) or carries_cache(v) for k, v in value.items()
        )
    if isinstance(value, list):
        return any(carries_cache(v) for v in value)
    return False


async def developer_batch(call: Call, mid: str, body: Any) -> dict[str, Any]:
    """``models/{m}:batchGenerateContent``: refuse caches, else a pending batch."""
    call.require_model(mid, "batchGenerateContent")
    if not isinstance(body, dict):
        raise invalid_argument("Invalid JSON payload received. Expected an object.")
    if carries_cache(body):
        raise unsupported_cache_error(mid)
    batch = body.get("batch")
    if not isinstance(batch, dict):
        batch = {}
    name = f"batches/{''.join(secrets.choice('abcdefghijklmnopqrstuvwxyz0123456789') for _ in range(16))}"
    now = format_timestamp(call.state.clock.now_ns())
    return {
        "name": name,
        "metadata": {
            "@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatch",
            "name": name,
            "model": f"models/{mid}",
            "displayName": batch.get("displayName", ""),
            "createTime": now,
            "updateTime": now,
            "state": "BATCH_STATE_PENDING",
        },
    }


async def vertex_batch(call: Call, body: Any) -> dict[str, Any]:
    """``batchPredictionJobs``: refuse caches (reading gs:// JSONL when possible), else a pending job."""
    if not isinstance(body, dict):
        raise invalid_argument("Invalid JSON payload received. Expected an object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid_argument("batch_prediction_job.model is required.")
    mid = model_id(model)
    call.require_model(mid, "batchPredictionJobs")
    if carries_cache(body):
        raise unsupported_cache_error(mid)
    input_config = body.get("inputConfig") or {}
    uris = (input_config.get("gcsSource") or {}).get("uris") or []
    host = os.environ.get(STORAGE_ENV)
    if host:
        for uri in uris:
            if any(carries_cache(line) for line in await _read_jsonl(host, uri)):
                raise unsupported_cache_error(mid)
    now = format_timestamp(call.state.clock.now_ns(), nanos=True)
    job_id = str(secrets.randbelow(9 * 10**18) + 10**18)
    return {
        "name": f"projects/{call.project}/locations/{call.location}/batchPredictionJobs/{job_id}",
        "displayName": body.get("displayName", ""),
        "model": f"projects/{call.project}/locations/{call.location}/publishers/google/models/{mid}",
        "inputConfig": input_config,
        "outputConfig": body.get("outputConfig") or {},
        "state": "JOB_STATE_PENDING",
        "createTime": now,
        "updateTime": now,
    }


async def _read_jsonl(host: str, uri: str) -> Iterable[Any]:
    """The parsed lines of a ``gs://bucket/object`` JSONL file, read through the storage emulator."""
    if not uri.startswith("gs://") or "/" not in uri[5:]:
        raise invalid_argument(f"Invalid Cloud Storage URI: {uri}")
    bucket, obj = uri[5:].split("/", 1)
    base = host if host.startswith(("http://", "https://")) else f"http://{host}"
    url = f"{base.rstrip('/')}/storage/v1/b/{quote(bucket, safe='')}/o/{quote(obj, safe='')}"
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=30) as client:
            response = await client.get(url, params={"alt": "media"})
    except httpx.HTTPError as exc:
        raise invalid_argument(f"Unable to read the batch input {uri}: {type(exc).__name__}.") from exc
    if response.status_code != 200:
        raise invalid_argument(f"Unable to read the batch input {uri}: HTTP {response.status_code}.")
    lines = []
    for number, line in enumerate(response.text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise invalid_argument(f"Line {number} of {uri} is not valid JSON.") from exc
    return lines
