"""The emulator's own attack surface: cross-site admin calls, DNS rebinding, huge bodies, abandoned uploads.

Every test talks to a real emulator over real HTTP (httpx, or a raw socket where the test must
control exactly which bytes are sent), as a browser page or a careless client would. Each one
checks the refusal and that nothing changed behind it.
"""

from __future__ import annotations

import io
import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from google import genai
from google.genai import types

from airflow_provider_ctxcache.emulator.clock import NANOS
from airflow_provider_ctxcache.emulator.files import MAX_FILE_BYTES
from airflow_provider_ctxcache.emulator.filestore import UPLOAD_SESSION_TTL_NS
from airflow_provider_ctxcache.emulator.guard import MAX_ADMIN_BODY_BYTES, MAX_API_BODY_BYTES
from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from tests.reliability.conftest import CONTEXT, MODEL

# A bound on a raw-socket read that should end at once: it only stops a broken server from
# hanging the suite, it never decides the outcome.
RAW_READ_BOUND_S = 60.0
UPLOAD_TTL_S = UPLOAD_SESSION_TTL_NS / NANOS
API_KEY_HEADERS = {"x-goog-api-key": "k"}


def _client(url: str) -> genai.Client:
    return genai.Client(api_key="k", http_options=types.HttpOptions(base_url=url, api_version="v1beta"))


def _cache(emulator: EmulatorProcess) -> str:
    """A live cache made through the real SDK (its Host is 127.0.0.1:PORT); returns its name."""
    client = _client(emulator.url)  # held: the SDK closes its HTTP client when the Client goes
    cache = client.caches.create(model=MODEL, config=types.CreateCachedContentConfig(contents=[CONTEXT]))
    assert cache.name
    return cache.name


def _cache_names(emulator: EmulatorProcess) -> list[str]:
    return [c["name"] for c in emulator.admin.state()["caches"]]


def _error(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == response.status_code
    return error


def _raw(port: int, head: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """Send exactly ``head`` and ``body`` on a fresh connection; read the answer until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=RAW_READ_BOUND_S) as sock:
        sock.sendall(head.encode() + body)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    raw_head, _, rest = received.partition(b"\r\n\r\n")
    status_line, *lines = raw_head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, rest[: int(headers.get("content-length", len(rest)))]


def _start_upload(emulator: EmulatorProcess, size: int | None = None) -> str:
    """Open a resumable upload as google-genai does; returns its upload URL."""
    headers = {
        **API_KEY_HEADERS,
        "X-Goog-Upload-Protocol": "resumable",
        "X-Goog-Upload-Command": "start",
        "X-Goog-Upload-Header-Content-Type": "text/plain",
    }
    if size is not None:
        headers["X-Goog-Upload-Header-Content-Length"] = str(size)
    response = httpx.post(
        f"{emulator.url}/upload/v1beta/files", headers=headers, json={"file": {"displayName": "abandoned"}}
    )
    assert response.status_code == 200, response.text
    url: str = response.headers["x-goog-upload-url"]
    return url


def _send_chunk(url: str, data: bytes, offset: int, command: str = "upload") -> httpx.Response:
    return httpx.post(
        url, content=data, headers={"X-Goog-Upload-Command": command, "X-Goog-Upload-Offset": str(offset)}
    )


# ------------------------------------------------------------------ admin POSTs must be JSON


def test_a_text_plain_post_to_reset_is_refused_and_nothing_is_reset(emulator: EmulatorProcess) -> None:
    name = _cache(emulator)

    response = httpx.post(
        f"{emulator.url}/_emulator/reset", content="{}", headers={"Content-Type": "text/plain"}
    )

    assert response.status_code == 415
    error = _error(response)
    assert "Content-Type: application/json" in error["message"]
    assert "text/plain" in error["message"]
    assert _cache_names(emulator) == [name]


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None],
    ids=["text-plain", "form", "multipart", "none"],
)
def test_a_post_to_faults_a_browser_could_send_cross_site_is_refused(
    emulator: EmulatorProcess, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}

    response = httpx.post(
        f"{emulator.url}/_emulator/faults", content=json.dumps({"error_rate_503": 1.0}), headers=headers
    )

    assert response.status_code == 415
    assert "application/json" in _error(response)["message"]
    assert emulator.admin.state()["faults"]["error_rate_503"] == 0


def test_a_json_post_with_a_charset_is_accepted(emulator: EmulatorProcess) -> None:
    response = httpx.post(
        f"{emulator.url}/_emulator/clock",
        content=json.dumps({"advance_seconds": 60}),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )

    assert response.status_code == 200, response.text


# ------------------------------------------------------------------ Host must be a loopback name


def test_an_admin_post_with_a_foreign_host_is_refused_and_nothing_is_reset(emulator: EmulatorProcess) -> None:
    name = _cache(emulator)

    response = httpx.post(f"{emulator.url}/_emulator/reset", json={}, headers={"Host": "evil.example"})

    assert response.status_code == 403
    error = _error(response)
    assert error["status"] == "PERMISSION_DENIED"
    assert "'evil.example' is not a loopback name" in error["message"]
    assert _cache_names(emulator) == [name]


def test_reading_the_request_log_with_a_foreign_host_and_port_is_refused(emulator: EmulatorProcess) -> None:
    _cache(emulator)

    response = httpx.get(f"{emulator.url}/_emulator/requests", headers={"Host": "attacker.example:1234"})

    assert response.status_code == 403
    message = _error(response)["message"]
    assert "'attacker.example:1234' is not a loopback name" in message
    assert "--allow-remote" in message
    assert "cachedContents" not in response.text


@pytest.mark.parametrize(
    "host",
    ["localhost:{port}", "localhost", "[::1]:{port}", "[::1]", "127.0.0.1:{port}", "LOCALHOST:{port}"],
)
def test_loopback_hosts_are_answered(emulator: EmulatorProcess, host: str) -> None:
    headers = {"Host": host.format(port=emulator.port)}

    response = httpx.get(f"{emulator.url}/_emulator/requests", headers=headers)

    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "host",
    ["localhost.evil.example", "127.0.0.1.nip.io", "localhost:80x", "[127.0.0.1]", "::1", "10.0.0.1:{port}"],
)
def test_names_that_only_look_like_loopback_are_refused(emulator: EmulatorProcess, host: str) -> None:
    headers = {"Host": host.format(port=emulator.port)}

    response = httpx.get(f"{emulator.url}/_emulator/state", headers=headers)

    assert response.status_code == 403


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/v1beta/cachedContents", API_KEY_HEADERS),
        ("/v1beta1/projects/p/locations/us-central1/cachedContents", {"Authorization": "Bearer emulator"}),
    ],
    ids=["gemini_api", "vertex_ai"],
)
def test_an_api_call_with_a_foreign_host_is_refused_and_not_served(
    emulator: EmulatorProcess, path: str, headers: dict[str, str]
) -> None:
    _cache(emulator)

    response = httpx.get(f"{emulator.url}{path}", headers={**headers, "Host": "rebound.example"})

    assert response.status_code == 403
    assert "loopback" in _error(response)["message"]
    assert "cachedContents/" not in response.text
    assert emulator.admin.state()["counts"]["list_caches"] == 0


# ------------------------------------------------------------------ request size caps


def test_a_declared_admin_body_over_the_cap_is_refused_before_it_is_read(emulator: EmulatorProcess) -> None:
    # 512 MB declared, 2 bytes sent: the answer can only come if the server did not wait for the rest.
    head = (
        "POST /_emulator/faults HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{emulator.port}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {512 * 1024 * 1024}\r\n\r\n"
    )

    status, headers, body = _raw(emulator.port, head, b"{}")

    assert status == 413
    assert headers["connection"] == "close"
    error = json.loads(body)["error"]
    assert error["code"] == 413
    assert str(MAX_ADMIN_BODY_BYTES) in error["message"]
    assert emulator.admin.state()["faults"]["error_rate_503"] == 0


def test_a_chunked_admin_body_over_the_cap_is_cut_off_at_the_cap(emulator: EmulatorProcess) -> None:
    # One byte past the cap and no final chunk: the answer comes without the body ever ending.
    piece = b" " * (64 * 1024)
    chunks = [piece] * (MAX_ADMIN_BODY_BYTES // len(piece)) + [b" "]
    framed = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks)
    head = (
        "POST /_emulator/faults HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{emulator.port}\r\n"
        "Content-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    )

    status, _, body = _raw(emulator.port, head, framed)

    assert status == 413
    assert json.loads(body)["error"]["message"] == (
        f"Request payload size exceeds the limit: {MAX_ADMIN_BODY_BYTES} bytes."
    )


def test_a_chunked_admin_body_within_the_cap_is_served(emulator: EmulatorProcess) -> None:
    def body() -> Iterator[bytes]:  # httpx sends a generator chunked, without Content-Length
        yield b'{"error_rate_503": '
        yield b"0.5}"

    response = httpx.post(
        f"{emulator.url}/_emulator/faults", content=body(), headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 200, response.text
    assert emulator.admin.state()["faults"]["error_rate_503"] == 0.5


def test_a_declared_api_body_over_the_cap_is_refused_before_it_is_read(emulator: EmulatorProcess) -> None:
    head = (
        f"POST /v1beta/models/{MODEL}:generateContent HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{emulator.port}\r\n"
        "x-goog-api-key: k\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {MAX_API_BODY_BYTES + 1}\r\n\r\n"
    )

    status, _, body = _raw(emulator.port, head, b"{}")

    assert status == 413
    assert json.loads(body)["error"] == {
        "code": 413,
        "message": f"Request payload size exceeds the limit: {MAX_API_BODY_BYTES} bytes.",
        "status": "INVALID_ARGUMENT",
    }
    assert emulator.admin.state()["counts"]["generate_content"] == 0


# ------------------------------------------------------------------ abandoned resumable uploads


def test_an_abandoned_upload_is_dropped_with_its_bytes_after_an_hour(
    emulator: EmulatorProcess,
) -> None:
    url = _start_upload(emulator, size=3000)
    assert _send_chunk(url, b"x" * 1000, 0).status_code == 200
    state = emulator.admin.state()
    assert (state["open_uploads"], state["open_upload_bytes"]) == (1, 1000)

    emulator.admin.advance_clock(UPLOAD_TTL_S + 1)

    state = emulator.admin.state()
    assert (state["open_uploads"], state["open_upload_bytes"]) == (0, 0)
    assert state["files"] == []


def test_a_chunk_to_an_expired_upload_gets_the_unknown_upload_answer(emulator: EmulatorProcess) -> None:
    url = _start_upload(emulator, size=2000)
    assert _send_chunk(url, b"x" * 1000, 0).status_code == 200
    unknown = _send_chunk(f"{emulator.url}/upload/v1beta/files?upload_id=never-issued", b"x" * 1000, 1000)
    emulator.admin.advance_clock(UPLOAD_TTL_S + 1)

    late = _send_chunk(url, b"x" * 1000, 1000, "upload, finalize")

    assert late.status_code == unknown.status_code == 404
    assert late.json() == unknown.json()
    assert late.headers["x-goog-upload-status"] == "final"
    assert emulator.admin.state()["files"] == []


def test_an_upload_finalized_within_the_hour_is_kept(emulator: EmulatorProcess) -> None:
    url = _start_upload(emulator, size=2000)
    assert _send_chunk(url, b"x" * 1000, 0).status_code == 200
    emulator.admin.advance_clock(UPLOAD_TTL_S - 60)

    final = _send_chunk(url, b"x" * 1000, 1000, "upload, finalize")

    assert final.status_code == 200, final.text
    assert final.json()["file"]["sizeBytes"] == "2000"


def test_a_finalized_upload_is_unaffected_by_the_upload_expiry(emulator: EmulatorProcess) -> None:
    client = _client(emulator.url)
    file = client.files.upload(file=io.BytesIO(b"kept\n" * 100), config={"mime_type": "text/plain"})
    assert file.name

    emulator.admin.advance_clock(2 * UPLOAD_TTL_S)

    assert client.files.get(name=file.name).size_bytes == 500
    state = emulator.admin.state()
    assert [f["name"] for f in state["files"]] == [file.name]
    assert state["open_uploads"] == 0


def test_an_upload_declared_over_the_file_limit_is_refused_at_its_start(emulator: EmulatorProcess) -> None:
    response = httpx.post(
        f"{emulator.url}/upload/v1beta/files",
        headers={
            **API_KEY_HEADERS,
            "X-Goog-Upload-Protocol": "resumable",
            "X-Goog-Upload-Command": "start",
            "X-Goog-Upload-Header-Content-Length": str(MAX_FILE_BYTES + 1),
        },
        json={"file": {"displayName": "huge"}},
    )

    assert response.status_code == 400
    assert str(MAX_FILE_BYTES) in _error(response)["message"]
    assert emulator.admin.state()["open_uploads"] == 0


# ------------------------------------------------------------------ --allow-remote


@pytest.fixture(scope="module")
def remote_emulator() -> Iterator[EmulatorProcess]:
    """A second emulator started with ``--allow-remote`` (still bound to 127.0.0.1)."""
    with EmulatorProcess(args=["--allow-remote"]) as process:
        yield process


def test_allow_remote_answers_admin_requests_whatever_their_host(remote_emulator: EmulatorProcess) -> None:
    response = httpx.get(
        f"{remote_emulator.url}/_emulator/requests", headers={"Host": "gemini.internal:8765"}
    )

    assert response.status_code == 200, response.text


def test_allow_remote_answers_api_requests_whatever_their_host(remote_emulator: EmulatorProcess) -> None:
    response = httpx.get(
        f"{remote_emulator.url}/v1beta/cachedContents", headers={**API_KEY_HEADERS, "Host": "gemini.internal"}
    )

    assert response.status_code == 200, response.text


def test_allow_remote_still_requires_json_on_admin_posts(remote_emulator: EmulatorProcess) -> None:
    response = httpx.post(
        f"{remote_emulator.url}/_emulator/reset", content="{}", headers={"Content-Type": "text/plain"}
    )

    assert response.status_code == 415
