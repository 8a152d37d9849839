"""A real Cloud Storage emulator (``gcp-storage-emulator``) in its own process, for ``gs://`` tests.

google-cloud-storage talks to it over HTTP when ``STORAGE_EMULATOR_HOST`` holds its URL; nothing
is mocked. It keeps objects in memory and binds to 127.0.0.1 on a free port.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class GcsEmulator:
    """Start with ``start()`` (or ``with``); ``url`` is the value for ``STORAGE_EMULATOR_HOST``."""

    def __init__(self, *, startup_timeout: float = 20.0) -> None:
        self.startup_timeout = startup_timeout
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> GcsEmulator:
        last_error = "did not start"
        for _ in range(3):  # a free port can be taken between probing and binding
            self.port = free_port()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", HOST,
                 "--port", str(self.port), "--in-memory", "--quiet"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )  # fmt: skip
            last_error = self._wait_until_up()
            if not last_error:
                return self
            self.stop()
        raise RuntimeError(f"gcp-storage-emulator on {HOST}: {last_error}")

    def _wait_until_up(self) -> str:
        """'' once the emulator answers a bucket listing; else why it did not."""
        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                stderr = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                return f"exited with {self.process.returncode}: {stderr[-500:]}"
            try:
                with urllib.request.urlopen(f"{self.url}/storage/v1/b?project=test", timeout=1) as answer:
                    if answer.status == 200:
                        return ""
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.05)
        return f"no answer within {self.startup_timeout:g}s"

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        if process.stderr:
            process.stderr.close()

    def __enter__(self) -> GcsEmulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def storage_client() -> Any:
    """A client for the emulator named by ``STORAGE_EMULATOR_HOST`` (set by the ``gcs_bucket`` fixture)."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(project="test", credentials=AnonymousCredentials())


class Place:
    """One place for test files, local or in an emulator bucket, with the same small API.

    ``base`` is a folder URI: a local path (also the one allowed root) or ``gs://bucket/test``.
    """

    def __init__(self, kind: str, base: str, root: Path | None = None, bucket: str | None = None) -> None:
        self.kind = kind
        self.base = base
        self.root = root
        self.bucket = bucket
        self.factory_calls = 0
        self.allowed_roots = [str(root)] if root is not None else []

    @classmethod
    def local(cls, root: Path) -> Place:
        return cls("local", str(root), root=root)

    @classmethod
    def gcs(cls, bucket: str) -> Place:
        return cls("gcs", f"gs://{bucket}/test", bucket=bucket)

    def factory(self) -> Any:
        """The ``storage_client_factory`` to hand to the code under test; counts its calls."""
        self.factory_calls += 1
        return storage_client()

    def uri(self, name: str) -> str:
        return f"{self.base}/{name}"

    def _object(self, name: str) -> str:
        return f"test/{name}"

    def put(self, name: str, data: bytes) -> str:
        """Write ``name`` (relative to ``base``) and return its URI."""
        if self.root is not None:
            path = self.root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        else:
            storage_client().bucket(self.bucket).blob(self._object(name)).upload_from_string(data)
        return self.uri(name)

    def get(self, name: str) -> bytes:
        if self.root is not None:
            return (self.root / name).read_bytes()
        data: bytes = storage_client().bucket(self.bucket).blob(self._object(name)).download_as_bytes()
        return data

    def delete(self, name: str) -> None:
        if self.root is not None:
            (self.root / name).unlink()
        else:
            storage_client().bucket(self.bucket).blob(self._object(name)).delete()

    def names(self, folder: str) -> list[str]:
        """Sorted names of the files directly in ``folder`` (relative to ``base``)."""
        if self.root is not None:
            directory = self.root / folder
            return sorted(p.name for p in directory.iterdir() if p.is_file()) if directory.is_dir() else []
        prefix = self._object(folder).rstrip("/") + "/"
        blobs = storage_client().list_blobs(self.bucket, prefix=prefix, delimiter="/")
        return sorted(blob.name[len(prefix) :] for blob in blobs)

    def version(self, name: str) -> tuple[int, ...]:
        """Changes when the file is rewritten: (inode, mtime_ns) locally, the generation on GCS."""
        if self.root is not None:
            stat = (self.root / name).stat()
            return (stat.st_ino, stat.st_mtime_ns)
        blob = storage_client().bucket(self.bucket).get_blob(self._object(name))
        assert blob is not None
        return (int(blob.generation),)


PLACES = ["local", "gcs"]


def make_place(request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    """For a fixture parametrized over ``PLACES``: a local root, or a fresh emulator bucket."""
    if request.param == "gcs":
        return Place.gcs(request.getfixturevalue("gcs_bucket"))
    root = tmp_path / "root"
    root.mkdir()
    return Place.local(root.resolve())
