"""A retry re-uses the files its first try staged, and only copies that still hold the same bytes.

Issue 15: the Files API upload ran again on every retry of the task. The first try here fails
for real after staging (the emulator answers 503 to every create and the connection tries once);
the retry, same run and key, must find the staged copy instead of uploading the file again.
Everything is real: the operator, the google-genai SDK, HTTP to the emulator (and to a Cloud
Storage emulator for the Vertex case).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from airflow_provider_ctxcache.exceptions import CtxCacheApiError
from airflow_provider_ctxcache.hooks import ContextCacheHook
from airflow_provider_ctxcache.operators import CreateCacheOperator
from tests.hooks.conftest import ConnFactory, backend_extra
from tests.operators.context import task_context

MB = 1024 * 1024
MODEL = "gemini-2.5-flash"
RUN_ID = "scheduled__2026-03-01T00:00:00+00:00"
FILE_LIFE_S = 48 * 3600


def big_file(path: Path, size: int = 11 * MB) -> Path:
    path.write_bytes(os.urandom(size))
    return path


def create(conn_id: str, tmp_path: Path, video: Path) -> str:
    """One try of the task: the same run, so the same reuse key, every time."""
    op = CreateCacheOperator(
        task_id="create_cache",
        ctxcache_conn_id=conn_id,
        model=MODEL,
        contents=[{"file": str(video)}],
        allowed_roots=[str(tmp_path)],
        reuse="run",
    )
    return op.execute(task_context(run_id=RUN_ID))


def failed_try(emulator: EmulatorProcess, conn_id: str, tmp_path: Path, video: Path) -> None:
    """A first try that stages the file, then fails: the service answers 503 to the create."""
    emulator.admin.faults(error_rate_503=1.0, ops=["create_cache"])
    with pytest.raises(CtxCacheApiError):
        create(conn_id, tmp_path, video)
    emulator.admin.faults()
    assert emulator.admin.state()["caches"] == []


def uploads(emulator: EmulatorProcess) -> int:
    count: int = emulator.admin.state()["counts"]["upload_file"]
    return count


def referenced_uri(emulator: EmulatorProcess) -> str:
    """The file URI of the one create that made a cache."""
    (request,) = [r for r in emulator.admin.requests() if r["op"] == "create_cache" and r["status"] == 200]
    body = request["body"]
    assert not body.get("_truncated"), "the create request carried the file inline"
    parts = [part for content in body["contents"] for part in content["parts"]]
    data = [part.get("fileData") or part.get("file_data") for part in parts]
    (uri,) = [d.get("fileUri") or d.get("file_uri") for d in data if d]
    return str(uri)


@pytest.fixture
def conn(emulator: EmulatorProcess, make_conn: ConnFactory) -> str:
    """Developer API; a create is tried once, so a 503 fails the task's try."""
    return make_conn("stage_reuse", **backend_extra("gemini_api", emulator), retry_attempts=1)


def test_a_retry_reuses_the_file_its_failed_try_uploaded(
    emulator: EmulatorProcess, conn: str, tmp_path: Path
) -> None:
    video = big_file(tmp_path / "talk.mp4")
    failed_try(emulator, conn, tmp_path, video)
    (staged,) = emulator.admin.state()["files"]
    uploaded_by_first_try = uploads(emulator)

    create(conn, tmp_path, video)

    assert uploads(emulator) == uploaded_by_first_try
    assert [f["name"] for f in emulator.admin.state()["files"]] == [staged["name"]]
    assert referenced_uri(emulator) == staged["uri"]


def test_a_changed_file_is_uploaded_anew_on_the_retry(
    emulator: EmulatorProcess, conn: str, tmp_path: Path
) -> None:
    video = big_file(tmp_path / "talk.mp4")
    failed_try(emulator, conn, tmp_path, video)
    (old,) = emulator.admin.state()["files"]

    big_file(video)  # other bytes, same name and size
    create(conn, tmp_path, video)

    (new,) = [f for f in emulator.admin.state()["files"] if f["name"] != old["name"]]
    assert referenced_uri(emulator) == new["uri"]


def test_a_staged_file_with_other_bytes_under_the_same_name_is_not_reused(
    emulator: EmulatorProcess, conn: str, tmp_path: Path
) -> None:
    video = big_file(tmp_path / "talk.mp4")
    failed_try(emulator, conn, tmp_path, video)
    (staged,) = emulator.admin.state()["files"]
    # Someone replaces the staged file with other bytes of the same size, under its display name.
    client = ContextCacheHook(conn).get_conn()
    client.files.delete(name=staged["name"])
    planted = client.files.upload(
        file=str(big_file(tmp_path / "other.mp4")),
        config={"display_name": staged["displayName"], "mime_type": "video/mp4"},
    )

    create(conn, tmp_path, video)

    (mine,) = [f for f in emulator.admin.state()["files"] if f["name"] != planted.name]
    assert mine["displayName"] == staged["displayName"]
    assert referenced_uri(emulator) == mine["uri"]


def test_an_expired_staged_file_is_uploaded_anew(
    emulator: EmulatorProcess, conn: str, tmp_path: Path
) -> None:
    video = big_file(tmp_path / "talk.mp4")
    failed_try(emulator, conn, tmp_path, video)
    (staged,) = emulator.admin.state()["files"]
    uploaded_by_first_try = uploads(emulator)

    emulator.admin.advance_clock(FILE_LIFE_S + 60)
    create(conn, tmp_path, video)

    assert uploads(emulator) > uploaded_by_first_try
    (new,) = emulator.admin.state()["files"]
    assert new["name"] != staged["name"]
    assert referenced_uri(emulator) == new["uri"]


@pytest.fixture
def gcs_emulator_process(gcs_server: str) -> Iterator[EmulatorProcess]:
    """A Gemini emulator that reads gs:// objects through the local GCS emulator, as Vertex reads them."""
    with EmulatorProcess(env={**os.environ, "STORAGE_EMULATOR_HOST": gcs_server}) as process:
        yield process


def test_on_cloud_storage_a_staged_object_with_other_bytes_is_replaced(
    gcs_emulator_process: EmulatorProcess, gcs_bucket: str, make_conn: ConnFactory, tmp_path: Path
) -> None:
    emulator = gcs_emulator_process
    conn = make_conn(
        "stage_reuse_vertex",
        **backend_extra("vertex_ai", emulator),
        staging_uri=f"gs://{gcs_bucket}/staging",
        retry_attempts=1,
    )
    scan = big_file(tmp_path / "scans.pdf")
    failed_try(emulator, conn, tmp_path, scan)
    bucket = storage.Client(project="test", credentials=AnonymousCredentials()).bucket(gcs_bucket)
    (staged,) = list(bucket.list_blobs(prefix="staging/"))
    # The object's bytes change under its name (same size): the name alone does not prove them.
    bucket.blob(staged.name).upload_from_string(os.urandom(staged.size or 0))

    create(conn, tmp_path, scan)

    (restaged,) = list(bucket.list_blobs(prefix="staging/"))
    assert restaged.name == staged.name
    assert restaged.download_as_bytes() == scan.read_bytes()
    assert referenced_uri(emulator) == f"gs://{gcs_bucket}/{staged.name}"
