"""Batch endpoints refuse explicit caches (the reason this provider exists); plain batches pass."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import httpx
import pytest
from gcp_storage_emulator.server import create_server
from google.genai import errors, types

from airflow_provider_ctxcache.emulator.process import EmulatorProcess

from .conftest import MODEL, Backend, vertex_client

BUCKET = "batch-inputs"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _request(cached_content: str | None) -> dict[str, object]:
    request: dict[str, object] = {"contents": [{"role": "user", "parts": [{"text": "Summarise."}]}]}
    if cached_content:
        request["cachedContent"] = cached_content
    return {"request": request}


def test_a_developer_batch_with_a_cache_is_refused(developer: Backend, emulator: EmulatorProcess) -> None:
    cache = developer.create_cache()
    src = [
        types.InlinedRequest(
            contents="Summarise.", config=types.GenerateContentConfig(cached_content=cache.name)
        )
    ]

    with pytest.raises(errors.ClientError) as caught:
        developer.client.batches.create(model=MODEL, src=src)

    assert (caught.value.code, caught.value.status) == (400, "INVALID_ARGUMENT")
    assert caught.value.message == f"Model {MODEL} does not support cached content with batch prediction."
    assert emulator.admin.state()["status_counts"]["batch"] == {"400": 1}


def test_a_developer_batch_without_a_cache_is_pending(developer: Backend) -> None:
    job = developer.client.batches.create(model=MODEL, src=[types.InlinedRequest(contents="Summarise.")])

    assert job.name is not None
    assert job.name.startswith("batches/")
    assert job.state == types.JobState.JOB_STATE_PENDING


def test_a_vertex_batch_from_bigquery_is_accepted_unread(vertex: Backend) -> None:
    job = vertex.client.batches.create(model=MODEL, src="bq://project.dataset.table")

    assert job.name is not None
    assert "/batchPredictionJobs/" in job.name
    assert job.state == types.JobState.JOB_STATE_PENDING


@pytest.fixture(scope="module")
def storage() -> Iterator[str]:
    """A Cloud Storage emulator (gcp-storage-emulator) on loopback, with one bucket."""
    port = _free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def emulator_reading_storage(storage: str) -> Iterator[EmulatorProcess]:
    """A second emulator that reads batch inputs through the storage emulator."""
    with EmulatorProcess(env={"STORAGE_EMULATOR_HOST": storage}) as process:
        yield process


def _upload(storage: str, name: str, lines: list[dict[str, object]]) -> str:
    body = "\n".join(json.dumps(line) for line in lines).encode()
    response = httpx.post(
        f"{storage}/upload/storage/v1/b/{BUCKET}/o",
        params={"uploadType": "media", "name": name},
        content=body,
        headers={"Content-Type": "application/octet-stream"},  # application/json* would be parsed
    )
    response.raise_for_status()
    return f"gs://{BUCKET}/{name}"


def test_a_vertex_batch_whose_jsonl_names_a_cache_is_refused(
    storage: str, emulator_reading_storage: EmulatorProcess
) -> None:
    uri = _upload(
        storage,
        "with-cache.jsonl",
        [_request(None), _request("projects/p/locations/us-central1/cachedContents/1")],
    )
    client = vertex_client(emulator_reading_storage.url)

    with pytest.raises(errors.ClientError) as caught:
        client.batches.create(model=MODEL, src=uri)

    assert (caught.value.code, caught.value.status) == (400, "INVALID_ARGUMENT")
    assert caught.value.message == f"Model {MODEL} does not support cached content with batch prediction."


def test_a_vertex_batch_whose_jsonl_has_no_cache_is_pending(
    storage: str, emulator_reading_storage: EmulatorProcess
) -> None:
    uri = _upload(storage, "plain/input 1.jsonl", [_request(None), _request(None)])
    client = vertex_client(emulator_reading_storage.url)

    job = client.batches.create(model=MODEL, src=uri)

    assert job.state == types.JobState.JOB_STATE_PENDING


def test_a_vertex_batch_whose_input_is_missing_is_refused(emulator_reading_storage: EmulatorProcess) -> None:
    client = vertex_client(emulator_reading_storage.url)

    with pytest.raises(errors.ClientError) as caught:
        client.batches.create(model=MODEL, src=f"gs://{BUCKET}/absent.jsonl")

    assert (caught.value.code, caught.value.status) == (400, "INVALID_ARGUMENT")
    assert "Unable to read the batch input" in str(caught.value.message)


def test_without_a_storage_emulator_a_gcs_batch_is_accepted_unread(vertex: Backend) -> None:
    job = vertex.client.batches.create(model=MODEL, src="gs://bucket/unreadable.jsonl")

    assert job.state == types.JobState.JOB_STATE_PENDING
