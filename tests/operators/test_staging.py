"""Contents over the 10 MB inline limit are staged (Files API, or GCS on Vertex), removed with the cache."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from airflow_provider_ctxcache.emulator.tokens import text_of_tokens
from airflow_provider_ctxcache.exceptions import CacheTooSmallError, CtxCacheConfigError
from airflow_provider_ctxcache.operators import CreateCacheOperator, DeleteCacheOperator
from tests.hooks.conftest import ConnFactory, backend_extra
from tests.operators.context import task_context

MB = 1024 * 1024
MODEL = "gemini-2.5-flash"


def big_file(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


def create(conn_id: str, tmp_path: Path, contents: list[Any], **kwargs: Any) -> str:
    op = CreateCacheOperator(
        task_id="create_cache",
        ctxcache_conn_id=conn_id,
        model=MODEL,
        contents=contents,
        allowed_roots=[str(tmp_path)],
        **kwargs,
    )
    return op.execute(task_context())


def delete(conn_id: str, name: str) -> bool:
    return DeleteCacheOperator(task_id="delete_cache", ctxcache_conn_id=conn_id, cache_name=name).execute(
        task_context()
    )


def created_parts(emulator: EmulatorProcess) -> list[dict[str, Any]]:
    (request,) = [r for r in emulator.admin.requests() if r["op"] == "create_cache"]
    body = request["body"]
    assert not body.get("_truncated"), "the create request carried the file inline"
    return [part for content in body["contents"] for part in content["parts"]]


def file_uri(part: dict[str, Any]) -> str | None:
    data = part.get("fileData") or part.get("file_data") or {}
    return data.get("fileUri") or data.get("file_uri")


def test_a_25_mb_file_goes_through_the_files_api_on_the_developer_api(
    emulator: EmulatorProcess, make_conn: ConnFactory, tmp_path: Path
) -> None:
    conn = make_conn("stage_dev", **backend_extra("gemini_api", emulator))
    video = big_file(tmp_path / "talk.mp4", 25 * MB)
    name = create(conn, tmp_path, [text_of_tokens(2100), {"file": str(video)}])
    (uploaded,) = emulator.admin.state()["files"]
    assert int(uploaded["sizeBytes"]) == 25 * MB
    assert uploaded["mimeType"] == "video/mp4"
    assert [file_uri(p) for p in created_parts(emulator) if file_uri(p)] == [uploaded["uri"]]

    assert delete(conn, name)
    state = emulator.admin.state()
    assert state["caches"] == []
    assert state["files"] == []


def test_only_what_passes_the_limit_is_staged(
    emulator: EmulatorProcess, make_conn: ConnFactory, tmp_path: Path
) -> None:
    conn = make_conn("stage_mixed", **backend_extra("gemini_api", emulator))
    small = big_file(tmp_path / "small.pdf", 3 * MB)
    large = big_file(tmp_path / "large.pdf", 8 * MB)
    create(conn, tmp_path, [{"file": str(small)}, {"file": str(large)}])
    (uploaded,) = emulator.admin.state()["files"]
    assert int(uploaded["sizeBytes"]) == 8 * MB
    assert uploaded["displayName"].endswith("/large.pdf")


def test_content_too_small_after_staging_leaves_nothing_staged(
    emulator: EmulatorProcess, make_conn: ConnFactory, tmp_path: Path
) -> None:
    conn = make_conn("stage_small", **backend_extra("gemini_api", emulator))
    video = big_file(tmp_path / "clip.mp4", 11 * MB)
    with pytest.raises(CacheTooSmallError):
        create(conn, tmp_path, [{"file": str(video)}], min_tokens=10**9)
    state = emulator.admin.state()
    assert state["files"] == []
    assert state["counts"]["create_cache"] == 0


def test_vertex_without_a_staging_uri_says_how_to_set_one(
    emulator: EmulatorProcess, make_conn: ConnFactory, tmp_path: Path
) -> None:
    conn = make_conn("stage_vertex_none", **backend_extra("vertex_ai", emulator))
    video = big_file(tmp_path / "talk.mp4", 11 * MB)
    with pytest.raises(
        CtxCacheConfigError, match=r"^staging_uri: contents\[0\]\.file \(\d+ bytes\) is too large"
    ):
        create(conn, tmp_path, [{"file": str(video)}])
    assert emulator.admin.state()["counts"]["create_cache"] == 0


@pytest.fixture
def gcs_emulator_process(gcs_server: str) -> Iterator[EmulatorProcess]:
    """A Gemini emulator that reads gs:// objects through the local GCS emulator, as Vertex reads them."""
    with EmulatorProcess(env={**os.environ, "STORAGE_EMULATOR_HOST": gcs_server}) as process:
        yield process


def test_a_25_mb_file_is_staged_in_cloud_storage_on_vertex(
    gcs_emulator_process: EmulatorProcess, gcs_bucket: str, make_conn: ConnFactory, tmp_path: Path
) -> None:
    emulator = gcs_emulator_process
    conn = make_conn(
        "stage_vertex", **backend_extra("vertex_ai", emulator), staging_uri=f"gs://{gcs_bucket}/staging"
    )
    scan = big_file(tmp_path / "scans.pdf", 25 * MB)
    name = create(conn, tmp_path, [{"file": str(scan)}])
    bucket = storage.Client(project="test", credentials=AnonymousCredentials()).bucket(gcs_bucket)
    (blob,) = list(bucket.list_blobs(prefix="staging/"))
    assert blob.size == 25 * MB
    assert blob.name.startswith("staging/ctxcache-r-")
    assert blob.name.endswith("-scans.pdf")
    assert [file_uri(p) for p in created_parts(emulator)] == [f"gs://{gcs_bucket}/{blob.name}"]
    (cache,) = emulator.admin.state()["caches"]
    assert cache["usageMetadata"]["totalTokenCount"] == 25 * MB // 4

    assert delete(conn, name)
    assert list(bucket.list_blobs(prefix="staging/")) == []
    assert emulator.admin.state()["caches"] == []


def test_reuse_never_stages_one_folder_per_cache(
    gcs_emulator_process: EmulatorProcess, gcs_bucket: str, make_conn: ConnFactory, tmp_path: Path
) -> None:
    emulator = gcs_emulator_process
    conn = make_conn(
        "stage_vertex_retry", **backend_extra("vertex_ai", emulator), staging_uri=f"gs://{gcs_bucket}/staging"
    )
    scan = big_file(tmp_path / "scans.pdf", 11 * MB)
    first = create(conn, tmp_path, [{"file": str(scan)}], reuse="never")
    second = create(conn, tmp_path, [{"file": str(scan)}], reuse="never")
    assert first != second
    bucket = storage.Client(project="test", credentials=AnonymousCredentials()).bucket(gcs_bucket)
    assert len(list(bucket.list_blobs(prefix="staging/"))) == 2  # "never": one folder per cache
    delete(conn, first)
    assert len(list(bucket.list_blobs(prefix="staging/"))) == 1
