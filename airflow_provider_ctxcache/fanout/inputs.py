"""The fan-out's ``input_uri``: a JSONL file in the Gemini batch request format, local or ``gs://``.

Each non-blank line is one request object such as
``{"key": "q1", "request": {"contents": [...], "generationConfig": {...}}}``. This module only
finds the file and parses lines as JSON; what a request may hold is checked by
:func:`airflow_provider_ctxcache.prompts.normalize_prompts`.

A local file is opened once, beneath the allowed roots (``safe_files.open_file_beneath``: no
symlink out of them, no FIFO, socket or device, refused by name without blocking), and every
pass reads that descriptor at its own offset (``os.pread``); the path is never opened again, so
a file swapped after the check is never read. A ``gs://`` object is downloaded once to a local
temporary file, so the engine can read it twice (a validating pass, then a streaming pass)
without a second download; lines are read one at a time, never the whole file at once.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import tempfile
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from airflow_provider_ctxcache.exceptions import CtxCacheConfigError
from airflow_provider_ctxcache.fanout.uris import check_uri, is_gcs, local_path, split_gcs
from airflow_provider_ctxcache.safe_files import MissingPath, open_file_beneath
from airflow_provider_ctxcache.safe_files import allowed_roots as checked_roots

REQUEST_EXAMPLE = '{"key": ..., "request": {...}}'
_SHARD_FILE = re.compile(r"^shard-\d{5,}\.jsonl$")  # as fanout/shards.py names them


class InputFile:
    """One JSONL input, readable as many times as needed through one open descriptor.

    ``close()`` closes the descriptor and removes a downloaded copy.

    :param uri: what the user gave (a path or ``gs://`` URI), for messages.
    :param path: the local file, for messages (and the download to remove).
    :param field: the operator field named in errors.
    :param temporary: ``path`` is a download this object owns and deletes on close.
    :param max_line_bytes: a longer line is refused as soon as that many bytes are read, so one
        huge line never sits whole in memory (the backend's request limit).
    :param fd: the file's checked descriptor, which this object then owns; without it ``path``
        is opened here (for a path the caller made or trusts, such as a download).
    """

    def __init__(
        self,
        uri: str,
        path: Path,
        *,
        field: str = "input_uri",
        temporary: bool = False,
        max_line_bytes: int | None = None,
        fd: int | None = None,
    ) -> None:
        self.uri = uri
        self.path = path
        self.field = field
        self._temporary = temporary
        self.max_line_bytes = max_line_bytes
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC) if fd is None else fd
        self._release = weakref.finalize(self, os.close, self._fd)

    def raw_lines(self) -> Iterator[tuple[int, bytes]]:
        """(1-based line number, the line's bytes without its line break) for each non-blank line.

        Lines are checked to be JSON (as :meth:`lines` does) but handed back as written.
        """
        for number, raw, _value in self._parsed():
            yield number, raw

    def lines(self) -> Iterator[tuple[int, Any]]:
        """(1-based line number, parsed JSON value) for each non-blank line, streamed from disk."""
        for number, _raw, value in self._parsed():
            yield number, value

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        return self.lines()

    def _parsed(self) -> Iterator[tuple[int, bytes, Any]]:
        limit = self.max_line_bytes
        if not self._release.alive:
            raise ValueError(f"the input {self.uri!r} is closed")
        with io.BufferedReader(_PositionalReader(self._fd)) as handle:
            for number, line in enumerate(iter(lambda: _read_line(handle, limit), b""), start=1):
                raw = line.rstrip(b"\r\n")
                if limit is not None and len(raw) > limit:
                    raise CtxCacheConfigError(
                        f"{self.field} line {number}: longer than {limit:,} bytes, over the backend's "
                        "request limit; shorten the request, or move the large part into the cache."
                    )
                if not raw.strip():
                    continue
                try:
                    value = json.loads(raw)
                except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
                    raise CtxCacheConfigError(
                        f"{self.field} line {number}: not JSON ({_reason(error)}); each line must be one "
                        f"request object such as {REQUEST_EXAMPLE}"
                    ) from None
                yield number, raw, value

    def close(self) -> None:
        self._release()
        if self._temporary:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self._temporary = False

    def __enter__(self) -> InputFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"InputFile({self.uri!r})"


class _PositionalReader(io.RawIOBase):
    """A pass over a shared descriptor with its own offset (``os.pread``); closing it leaves the fd open."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd
        self._offset = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = os.pread(self._fd, len(buffer), self._offset)
        buffer[: len(data)] = data
        self._offset += len(data)
        return len(data)


def _read_line(handle: Any, limit: int | None) -> bytes:
    """The next line, or its first ``limit`` + 2 bytes when it is longer (enough to know)."""
    return bytes(handle.readline() if limit is None else handle.readline(limit + 2))


def _reason(error: ValueError) -> str:
    if isinstance(error, json.JSONDecodeError):
        return f"{error.msg} at column {error.colno}"
    if isinstance(error, UnicodeDecodeError):
        return f"not UTF-8 at byte {error.start}"
    return str(error)


def open_input(
    uri: str,
    *,
    storage_client_factory: Callable[[], Any],
    allowed_roots: Sequence[str],
    field: str = "input_uri",
    max_line_bytes: int | None = None,
) -> InputFile:
    """Find the input and make it readable locally.

    :param uri: a local path (under ``allowed_roots``) or ``gs://bucket/object``.
    :param storage_client_factory: builds a google-cloud-storage client; called only for ``gs://``
        (e.g. ``lambda: hook.storage_client``).
    :param allowed_roots: folders local paths must resolve under (``configured_allowed_roots()``).
    :param max_line_bytes: see :class:`InputFile`.
    :raises CtxCacheConfigError: the location is refused or the file/object does not exist.
    """
    uri = check_uri(uri, field)
    if is_gcs(uri):
        downloaded = _download(uri, storage_client_factory, field)
        downloaded.max_line_bytes = max_line_bytes
        return downloaded
    path = local_path(uri, allowed_roots, field)
    # Opened here, once, beneath the roots: every pass reads this descriptor, never the path again.
    try:
        fd = open_file_beneath(
            str(path), checked_roots(allowed_roots), field, shown=uri, fix="give the JSONL file inside it"
        )
    except MissingPath as missing:
        if _SHARD_FILE.match(path.name):
            raise MissingPath(
                f"{missing} It is a shard file: shard_input may have written it on another worker. "
                "With more than one worker, give shard_input a gs:// shards_uri (or a folder every "
                "worker mounts, with shared_filesystem=True)."
            ) from None
        raise
    return InputFile(uri, path, field=field, max_line_bytes=max_line_bytes, fd=fd)


def _download(uri: str, storage_client_factory: Callable[[], Any], field: str) -> InputFile:
    from google.api_core import exceptions as gcs_errors

    bucket, name = split_gcs(uri, field, need_object=True)
    client = storage_client_factory()
    handle, temp = tempfile.mkstemp(prefix="ctxcache-input-", suffix=".jsonl")
    os.close(handle)
    path = Path(temp)
    try:
        client.bucket(bucket).blob(name).download_to_filename(str(path))
    except gcs_errors.NotFound:
        path.unlink(missing_ok=True)
        raise CtxCacheConfigError(
            f"{field}: {uri!r} does not exist (no such object, or no bucket {bucket!r}); "
            "check the bucket and object name."
        ) from None
    except gcs_errors.Forbidden as error:
        path.unlink(missing_ok=True)
        raise CtxCacheConfigError(
            f"{field}: cannot read {uri!r} ({error.message}); grant the connection's identity "
            "storage.objects.get on the bucket."
        ) from None
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)  # this task's own private copy
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return InputFile(uri, path, field=field, temporary=True, fd=fd)


__all__ = ["InputFile", "open_input"]
