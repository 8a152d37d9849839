"""The Files API (Developer API) through the real SDK, and fileData that points at files.

Uploads use ``client.files.upload`` exactly as users call it: the SDK's resumable protocol
(start, then 8 MiB chunks, the last one finalizing). Vertex ``gs://`` fileData is read through
a real Cloud Storage emulator (``gcp-storage-emulator``) by a dedicated emulator process.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from google import genai
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from google.genai import errors, types

from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from airflow_provider_ctxcache.emulator.tokens import text_of_tokens

from .conftest import CACHE_TOKENS, MODEL, Backend, contents_of, vertex_client

CHUNK = 8 * 1024 * 1024  # the SDK's upload chunk size
MARKER = "The lighthouse keeper logged a violet comet over the northern reef."


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _upload_text(client: genai.Client, tmp_path: Path, text: str, name: str = "context.txt") -> types.File:
    path = _write(tmp_path / name, text.encode())
    return client.files.upload(file=path, config={"display_name": name, "mime_type": "text/plain"})


def _file_part(file: types.File, mime_type: str = "text/plain") -> types.Content:
    assert file.uri is not None
    return types.Content(role="user", parts=[types.Part.from_uri(file_uri=file.uri, mime_type=mime_type)])


def _count(client: genai.Client, uri: str, mime_type: str) -> int | None:
    part = types.Part.from_uri(file_uri=uri, mime_type=mime_type)
    return client.models.count_tokens(model=MODEL, contents=[part]).total_tokens


def test_upload_returns_an_active_file_resource(
    developer: Backend, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    data = b"hello files api\n" * 64
    path = _write(tmp_path / "notes.txt", data)

    file = developer.client.files.upload(
        file=path, config={"display_name": "notes", "mime_type": "text/plain"}
    )

    assert file.name is not None
    assert file.name.startswith("files/")
    file_id = file.name.removeprefix("files/")
    assert (file.display_name, file.mime_type, file.size_bytes) == ("notes", "text/plain", len(data))
    assert file.uri == f"{emulator.url}/v1beta/files/{file_id}"
    assert (file.state, file.source) == (types.FileState.ACTIVE, types.FileSource.UPLOADED)
    assert file.sha256_hash is not None
    assert base64.b64decode(file.sha256_hash).decode() == hashlib.sha256(data).hexdigest()
    assert file.create_time is not None
    assert file.expiration_time is not None
    assert file.expiration_time - file.create_time == dt.timedelta(hours=48)


def test_async_upload_stores_the_same_file(
    developer: Backend, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    data = os.urandom(3000)
    path = _write(tmp_path / "blob.bin", data)

    async def upload() -> types.File:
        return await developer.client.aio.files.upload(
            file=path, config={"display_name": "async", "mime_type": "application/octet-stream"}
        )

    file = asyncio.run(upload())

    (stored,) = emulator.admin.state()["files"]
    assert stored["name"] == file.name
    assert (stored["displayName"], stored["sizeBytes"]) == ("async", "3000")
    assert base64.b64decode(stored["sha256Hash"]).decode() == hashlib.sha256(data).hexdigest()


def test_a_25_mb_file_arrives_whole_in_several_chunks(
    developer: Backend, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    data = os.urandom(25 * 1024 * 1024)
    path = _write(tmp_path / "large.bin", data)

    file = developer.client.files.upload(file=path, config={"mime_type": "application/octet-stream"})

    assert file.size_bytes == len(data)
    assert file.sha256_hash is not None
    assert base64.b64decode(file.sha256_hash).decode() == hashlib.sha256(data).hexdigest()
    chunks = [r for r in emulator.admin.requests() if "upload_id=" in r["path"]]
    assert [r["body"]["bytes"] for r in chunks] == [CHUNK, CHUNK, CHUNK, len(data) - 3 * CHUNK]


def test_get_returns_the_uploaded_file(developer: Backend, tmp_path: Path) -> None:
    uploaded = _upload_text(developer.client, tmp_path, "some text")
    assert uploaded.name is not None

    fetched = developer.client.files.get(name=uploaded.name)

    shown = ("name", "display_name", "mime_type", "size_bytes", "sha256_hash", "uri", "create_time")
    assert [getattr(fetched, f) for f in shown] == [getattr(uploaded, f) for f in shown]


def test_list_pages_through_every_file(developer: Backend, tmp_path: Path) -> None:
    names = [_upload_text(developer.client, tmp_path, f"text {i}", f"f{i}.txt").name for i in range(3)]

    pager = developer.client.files.list(config={"page_size": 2})

    assert len(pager.page) == 2
    assert [f.name for f in pager] == names


def test_delete_removes_the_file(developer: Backend, emulator: EmulatorProcess, tmp_path: Path) -> None:
    file = _upload_text(developer.client, tmp_path, "short-lived")
    assert file.name is not None

    developer.client.files.delete(name=file.name)

    assert emulator.admin.state()["files"] == []
    with pytest.raises(errors.ClientError) as caught:
        developer.client.files.delete(name=file.name)
    assert (caught.value.code, caught.value.status) == (403, "PERMISSION_DENIED")


def test_getting_a_missing_file_is_permission_denied(developer: Backend) -> None:
    with pytest.raises(errors.ClientError) as caught:
        developer.client.files.get(name="files/doesnotexist")

    assert (caught.value.code, caught.value.status) == (403, "PERMISSION_DENIED")
    assert caught.value.message == (
        "You do not have permission to access the File doesnotexist or it may not exist."
    )


def test_files_expire_48_hours_after_upload(
    developer: Backend, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    file = _upload_text(developer.client, tmp_path, "ephemeral")
    assert file.name is not None

    emulator.admin.advance_clock(48 * 3600 + 1)

    with pytest.raises(errors.ClientError) as caught:
        developer.client.files.get(name=file.name)
    assert caught.value.code == 403


def test_a_cache_from_an_uploaded_text_file_counts_its_size_and_answers_from_it(
    developer: Backend, tmp_path: Path
) -> None:
    text = text_of_tokens(CACHE_TOKENS + 400) + " " + MARKER
    file = _upload_text(developer.client, tmp_path, text)

    cache = developer.client.caches.create(
        model=MODEL, config=types.CreateCachedContentConfig(contents=[_file_part(file)])
    )
    reply = developer.client.models.generate_content(
        model=MODEL,
        contents="What did the lighthouse keeper log over the reef?",
        config=types.GenerateContentConfig(cached_content=cache.name),
    )

    assert cache.usage_metadata is not None
    assert cache.usage_metadata.total_token_count == math.ceil(len(text) / 4)
    assert reply.text is not None
    assert MARKER in reply.text


def test_a_binary_file_counts_its_bytes(developer: Backend, tmp_path: Path) -> None:
    path = _write(tmp_path / "scan.pdf", os.urandom(5001))
    file = developer.client.files.upload(file=path, config={"mime_type": "application/pdf"})
    assert file.uri is not None

    assert _count(developer.client, file.uri, "application/pdf") == math.ceil(5001 / 4)


def test_files_slash_id_names_an_uploaded_file_too(developer: Backend, tmp_path: Path) -> None:
    file = _upload_text(developer.client, tmp_path, "x" * 400)
    assert file.name is not None

    assert _count(developer.client, file.name, "text/plain") == 100


def test_a_generate_request_answers_from_an_uploaded_file(developer: Backend, tmp_path: Path) -> None:
    file = _upload_text(developer.client, tmp_path, f"Filler first. {MARKER} Filler last.")
    assert file.uri is not None

    reply = developer.client.models.generate_content(
        model=MODEL,
        contents=[
            types.Part.from_uri(file_uri=file.uri, mime_type="text/plain"),
            "What did the lighthouse keeper log over the reef?",
        ],
    )

    assert reply.text is not None
    assert MARKER in reply.text


def test_files_do_not_count_towards_the_inline_limit(developer: Backend, tmp_path: Path) -> None:
    size = 11 * 1024 * 1024
    path = _write(tmp_path / "big.bin", bytes(size))
    file = developer.client.files.upload(file=path, config={"mime_type": "application/octet-stream"})
    assert file.uri is not None

    assert _count(developer.client, file.uri, "application/octet-stream") == size // 4


def test_a_missing_file_uri_is_permission_denied_in_create_generate_and_count(
    developer: Backend, tmp_path: Path
) -> None:
    file = _upload_text(developer.client, tmp_path, "gone soon")
    assert file.name is not None
    developer.client.files.delete(name=file.name)
    client = developer.client
    calls: list[Callable[[], object]] = [
        lambda: client.caches.create(
            model=MODEL,
            config=types.CreateCachedContentConfig(contents=[*contents_of(CACHE_TOKENS), _file_part(file)]),
        ),
        lambda: client.models.generate_content(model=MODEL, contents=[_file_part(file)]),
        lambda: client.models.count_tokens(model=MODEL, contents=[_file_part(file)]),
    ]

    for call in calls:
        with pytest.raises(errors.ClientError) as caught:
            call()
        assert (caught.value.code, caught.value.status) == (403, "PERMISSION_DENIED")
        assert file.name.removeprefix("files/") in str(caught.value.message)


def test_state_lists_files_and_counts_file_requests(
    developer: Backend, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    kept = _upload_text(developer.client, tmp_path, "kept", "kept.txt")
    dropped = _upload_text(developer.client, tmp_path, "dropped", "dropped.txt")
    assert kept.name is not None
    assert dropped.name is not None
    developer.client.files.get(name=kept.name)
    list(developer.client.files.list())
    developer.client.files.delete(name=dropped.name)

    state = emulator.admin.state()

    assert [f["name"] for f in state["files"]] == [kept.name]
    assert state["files"][0]["displayName"] == "kept.txt"
    counts = state["counts"]
    # An upload is one start request plus one request per 8 MiB chunk.
    assert (counts["upload_file"], counts["get_file"], counts["list_files"], counts["delete_file"]) == (
        4,
        1,
        1,
        1,
    )
    assert state["status_counts"]["upload_file"] == {"200": 4}


def test_reset_forgets_every_file(developer: Backend, emulator: EmulatorProcess, tmp_path: Path) -> None:
    file = _upload_text(developer.client, tmp_path, "forgotten")
    assert file.name is not None

    emulator.admin.reset()

    state = emulator.admin.state()
    assert (state["files"], state["counts"]["upload_file"]) == ([], 0)
    with pytest.raises(errors.ClientError):
        developer.client.files.get(name=file.name)


def test_an_upload_whose_size_does_not_match_is_refused(
    developer: Backend, emulator: EmulatorProcess
) -> None:
    start = httpx.post(
        f"{emulator.url}/upload/v1beta/files",
        json={"file": {"displayName": "short"}},
        headers={
            "x-goog-api-key": "k",
            "X-Goog-Upload-Protocol": "resumable",
            "X-Goog-Upload-Command": "start",
            "X-Goog-Upload-Header-Content-Length": "10",
            "X-Goog-Upload-Header-Content-Type": "text/plain",
        },
    )
    url = start.headers["X-Goog-Upload-URL"]

    final = httpx.post(
        url,
        content=b"12345",
        headers={"X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": "0"},
    )

    assert (final.status_code, final.json()["error"]["status"]) == (400, "INVALID_ARGUMENT")
    assert final.headers["X-Goog-Upload-Status"] == "final"
    assert emulator.admin.state()["files"] == []


# Vertex gs:// fileData, read through a real Cloud Storage emulator.


@pytest.fixture(scope="module")
def emulator_reading_gcs(gcs_server: str) -> Iterator[EmulatorProcess]:
    """An emulator process whose own environment names the storage emulator."""
    with EmulatorProcess(env={"STORAGE_EMULATOR_HOST": gcs_server}) as process:
        yield process


def _put(bucket: str, name: str, data: bytes, content_type: str) -> str:
    client = storage.Client(project="test", credentials=AnonymousCredentials())
    client.bucket(bucket).blob(name).upload_from_string(data, content_type=content_type)
    return f"gs://{bucket}/{name}"


def test_vertex_counts_a_gs_text_object_by_its_text(
    emulator_reading_gcs: EmulatorProcess, gcs_bucket: str
) -> None:
    text = text_of_tokens(CACHE_TOKENS + 100) + " " + MARKER
    uri = _put(gcs_bucket, "docs/context 1.txt", text.encode(), "text/plain")
    client = vertex_client(emulator_reading_gcs.url)
    part = types.Part.from_uri(file_uri=uri, mime_type="text/plain")

    cache = client.caches.create(
        model=MODEL,
        config=types.CreateCachedContentConfig(contents=[types.Content(role="user", parts=[part])]),
    )
    reply = client.models.generate_content(
        model=MODEL,
        contents="What did the lighthouse keeper log over the reef?",
        config=types.GenerateContentConfig(cached_content=cache.name),
    )

    assert cache.usage_metadata is not None
    assert cache.usage_metadata.total_token_count == math.ceil(len(text) / 4)
    assert reply.text is not None
    assert MARKER in reply.text


def test_vertex_counts_a_gs_binary_object_by_its_bytes(
    emulator_reading_gcs: EmulatorProcess, gcs_bucket: str
) -> None:
    uri = _put(gcs_bucket, "scan.pdf", os.urandom(9999), "application/pdf")

    assert _count(vertex_client(emulator_reading_gcs.url), uri, "application/pdf") == math.ceil(9999 / 4)


def test_vertex_refuses_a_missing_gs_object_naming_it(
    emulator_reading_gcs: EmulatorProcess, gcs_bucket: str
) -> None:
    uri = f"gs://{gcs_bucket}/nowhere.pdf"

    with pytest.raises(errors.ClientError) as caught:
        _count(vertex_client(emulator_reading_gcs.url), uri, "application/pdf")

    assert (caught.value.code, caught.value.status) == (400, "INVALID_ARGUMENT")
    assert uri in str(caught.value.message)
