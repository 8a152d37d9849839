"""The fan-out's ``output_uri``: results in the Gemini batch-output shape, written in parts as they arrive.

One JSON object per line, exactly what a Gemini batch job writes::

    {"key": "q1", "response": {"candidates": [...], "usageMetadata": {...}, ...}}
    {"key": "q2", "error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "..."}}

The response is the ``GenerateContentResponse`` as REST JSON (camelCase); the lines are made by
:mod:`.records` (``response_record``, ``error_record``).

Layout: ``output_uri`` is a folder (local, created if absent) or a ``gs://bucket/prefix/``. A
local folder is opened once, beneath the allowed roots (``safe_files.open_dir_beneath``), and
every part, probe and temporary file is created, listed, read, renamed and removed relative to
that descriptor: a folder swapped for a symlink after the check is never written through. Each
:func:`open_output` call is one *attempt* with its own id (UTC time + random hex), and writes
``part-{attempt}-{seq:05d}.jsonl``, so a retry never overwrites what an earlier attempt wrote.
Only those names are read back; other files in the folder and sub-folders are ignored.

Resume: :meth:`ResultSink.scan` reads every part (of every attempt) and says which keys are
answered, so a re-run asks only the rest. A key may then have several lines (errors from
earlier attempts, a response later); :meth:`ResultSink.compact` rewrites the parts so each key
has one line.

Crash safety:

- Local: every record is one ``write`` of ``json + "\\n"`` followed by ``flush()``, so a killed
  process loses at most the line in flight; its half-written last line is counted as ``torn``
  by ``scan`` and removed by ``compact``. No fsync: a process crash loses nothing written, a
  power loss may lose what the OS had not yet written back.
- ``gs://``: objects cannot be appended to, so lines are buffered and uploaded as one part
  when ``part_size`` lines are buffered, on ``flush()``/``close()``, or once the oldest buffered
  line has waited ``flush_seconds``: checked on each write, and by whoever drives the sink
  between writes through :meth:`ResultSink.flush_due_in` (the fan-out job runs a flusher on its
  event loop, so a slow tail is uploaded too). A crash (SIGKILL) loses the buffered lines (at
  most ``part_size``, or ``flush_seconds`` worth); those keys are simply asked again on resume.
  A stopped task (SIGTERM, a timeout, an error) closes the sink, which uploads the buffer.
  On GCS a part therefore holds *at most* ``part_size`` lines.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from airflow_provider_ctxcache.exceptions import CtxCacheConfigError
from airflow_provider_ctxcache.fanout.records import REQUEST_HASH, error_record, response_record
from airflow_provider_ctxcache.fanout.uris import (
    bucket_errors,
    check_uri,
    child_uri,
    gcs_prefix,
    is_gcs,
    local_path,
)
from airflow_provider_ctxcache.safe_files import allowed_roots as checked_roots
from airflow_provider_ctxcache.safe_files import open_dir_beneath, open_file_in

PART_PATTERN = re.compile(r"^part-(?P<attempt>.+)-(?P<seq>\d+)(?:-c(?P<gen>\d+))?\.jsonl$")
DEFAULT_PART_SIZE = 1000
DEFAULT_FLUSH_SECONDS = 10.0
NEW_FILE_FLAGS = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
TORN_SHOWN = 5
KEYS_SHOWN = 5


# ---------------------------------------------------------------------------- reading lines back


def _parse(raw: bytes) -> dict[str, Any] | None:
    """The record on a result line, or None for a torn or foreign line."""
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    if (
        not isinstance(value, dict)
        or not isinstance(value.get("key"), str)
        or (value.get("response") is None and "error" not in value)
        # A response that is not an object is no answer (a hand-edited or foreign line).
        or (value.get("response") is not None and not isinstance(value["response"], dict))
    ):
        return None
    return value


def _classify(raw: bytes) -> tuple[str, bool, str | None] | None:
    """(key, has a response, request hash) for a result line, or None for a torn or foreign line."""
    record = _parse(raw)
    if record is None:
        return None
    fingerprint = record.get(REQUEST_HASH)
    return (
        record["key"],
        record.get("response") is not None,
        fingerprint if isinstance(fingerprint, str) else None,
    )


def _line(record: dict[str, Any]) -> bytes:
    if (
        not isinstance(record, dict)
        or not isinstance(record.get("key"), str)
        or ("response" not in record and "error" not in record)
    ):
        raise ValueError(
            f"not a result record (needs a str 'key' and 'response' or 'error'): {record!r:.200}"
        )
    return (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


@dataclass
class OutputScan:
    """What the output already holds, across every attempt's parts.

    :param answered: keys with at least one response line (done: never ask again).
    :param failed: keys whose lines are all errors (ask again on resume).
    :param lines: non-blank lines read, torn ones included.
    :param torn: lines that are not result records (not JSON, e.g. the half line a killed
        process left, or JSON without a string ``key`` and a ``response``/``error``).
    :param parts: part files read.
    :param fingerprints: each answered key's request hash, when its line has one.
    :param torn_at: where the first torn lines are (``part-....jsonl line N``), for the warning.
    """

    answered: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    lines: int = 0
    torn: int = 0
    parts: int = 0
    fingerprints: dict[str, str] = field(default_factory=dict)
    torn_at: list[str] = field(default_factory=list)


def changed_requests_error(keys: list[str], uri: str) -> CtxCacheConfigError:
    """Answers stored for these keys were given to other requests: the input changed since."""
    shown = ", ".join(repr(k) for k in keys[:KEYS_SHOWN]) + (" ..." if len(keys) > KEYS_SHOWN else "")
    return CtxCacheConfigError(
        f"output_uri: {len(keys)} keys already answered in {uri} were asked with a different request "
        f"({shown}); the input changed since (keys without their own 'key' come from positions). "
        "Start fresh with a new output_uri (or delete its parts), or give each request a stable key."
    )


def _part_order(name: str) -> tuple[str, int, int]:
    match = PART_PATTERN.match(name)
    assert match is not None
    return match["attempt"], int(match["seq"]), int(match["gen"] or 0)


def _new_attempt_id() -> str:
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}Z-{secrets.token_hex(4)}"


# ---------------------------------------------------------------------------- the sink


class ResultSink(ABC):
    """Writes one attempt's results in parts and reads back every attempt's parts.

    Not thread-safe: call it from one thread (the engine's event loop).
    """

    flush_seconds: float | None = None
    """The longest a written line waits in memory before readers see it; None: it never waits."""

    def __init__(self, uri: str, *, part_size: int, field: str) -> None:
        if not isinstance(part_size, int) or isinstance(part_size, bool) or part_size < 1:
            raise CtxCacheConfigError(f"part_size: {part_size!r} must be a whole number of lines >= 1.")
        self.uri = uri
        self.field = field
        self.part_size = part_size
        self.attempt = _new_attempt_id()
        self.written = 0  # lines this attempt wrote
        self._seq = 0
        self._closed = False
        self._lines_before: int | None = None  # lines the first scan found (None: not scanned)

    # -- names

    def _part_name(self, seq: int) -> str:
        return f"part-{self.attempt}-{seq:05d}.jsonl"

    def _sorted_parts(self) -> list[str]:
        return sorted((n for n in self._list_names() if PART_PATTERN.match(n)), key=_part_order)

    # -- backend primitives

    @abstractmethod
    def _list_names(self) -> Iterable[str]:
        """Base names of the files directly in the folder or prefix."""

    @abstractmethod
    def _read_part(self, name: str) -> Iterator[bytes]:
        """The part's non-blank lines, without line breaks, in order."""

    @abstractmethod
    def _rewrite_part(self, name: str, lines: Iterator[bytes]) -> None:
        """Replace the part by ``lines`` atomically; delete it when there are none."""

    @abstractmethod
    def _end_part(self) -> None:
        """Finish the part being written (upload a buffer), so the next write starts a new one."""

    @abstractmethod
    def write(self, record: dict[str, Any]) -> None:
        """Append one ``{"key", "response"}`` or ``{"key", "error"}`` record."""

    @abstractmethod
    def flush(self) -> None:
        """Make everything written so far visible to readers."""

    def flush_due_in(self) -> float | None:
        """Seconds until the buffered lines are due for upload (0: now); None when none wait."""
        return None

    @abstractmethod
    def check_writable(self) -> None:
        """Write and remove a small probe, so a location that refuses writes fails before any call."""

    # -- reading

    def scan(self) -> OutputScan:
        """Read every part; keys answered, keys only failed, line and torn counts."""
        self.flush()
        result = OutputScan()
        errored: set[str] = set()
        for name in self._sorted_parts():
            result.parts += 1
            for number, raw in enumerate(self._read_part(name), start=1):
                result.lines += 1
                kind = _classify(raw)
                if kind is None:
                    result.torn += 1
                    if len(result.torn_at) < TORN_SHOWN:
                        result.torn_at.append(f"{name} line {number}")
                elif kind[1]:
                    if kind[0] not in result.answered and kind[2] is not None:
                        result.fingerprints[kind[0]] = kind[2]  # the first answer is the one kept
                    result.answered.add(kind[0])
                else:
                    errored.add(kind[0])
        result.failed = errored - result.answered
        if self._lines_before is None:
            self._lines_before = result.lines
        return result

    def records(self) -> Iterator[dict[str, Any]]:
        """Every valid record of every part, in part order (torn lines skipped)."""
        self.flush()
        for name in self._sorted_parts():
            for raw in self._read_part(name):
                record = _parse(raw)
                if record is not None:
                    yield record

    def compact(self) -> int:
        """Leave exactly one line per key and return how many lines were dropped.

        A key keeps its first response if it has one, else its last error; superseded errors,
        duplicate responses and torn lines go. Only parts that change are rewritten. The part
        being written is finished first, so later writes go to a new part. When :meth:`scan`
        found the output empty and only this attempt's parts are there, there is nothing to do.
        """
        self._end_part()
        names = self._sorted_parts()
        if self._lines_before == 0 and all(_part_order(name)[0] == self.attempt for name in names):
            # The output was empty before this attempt, which wrote each key once: nothing to drop,
            # and no per-key table to build (it would grow with the number of prompts).
            return 0
        winners: dict[str, tuple[int, int, bool]] = {}  # key -> (part, line, is a response)
        counts = [0] * len(names)
        for part, name in enumerate(names):
            for index, raw in enumerate(self._read_part(name)):
                counts[part] += 1
                kind = _classify(raw)
                if kind is None:
                    continue
                key, answered, _hash = kind
                previous = winners.get(key)
                if previous is None or not previous[2]:  # a response beats errors; a later error wins
                    winners[key] = (part, index, answered)
        keep: list[set[int]] = [set() for _ in names]
        for part, index, _answered in winners.values():
            keep[part].add(index)
        del winners
        dropped = 0
        for part, name in enumerate(names):
            if len(keep[part]) == counts[part]:
                continue
            dropped += counts[part] - len(keep[part])
            wanted = keep[part]
            self._rewrite_part(name, (raw for i, raw in enumerate(self._read_part(name)) if i in wanted))
        return dropped

    # -- lifecycle

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"the result sink for {self.uri!r} is closed")

    def close(self) -> None:
        """Flush and release; calling it again does nothing once it succeeded.

        If the last upload fails (or is interrupted, e.g. by a timeout signal), the lines stay
        buffered and the sink stays open, so a second ``close()`` (``release()`` calls it) tries
        again instead of dropping them.
        """
        if self._closed:
            return
        self._end_part()
        self._closed = True

    def release(self) -> None:
        """Closes the sink and lets go of what it held open for reading after ``close()``."""
        self.close()

    def __enter__(self) -> ResultSink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r}, attempt={self.attempt!r})"


class LocalResultSink(ResultSink):
    """Parts in a local folder, one ``write`` + ``flush`` per record, all relative to its descriptor.

    :param directory: the folder's checked path, for messages.
    :param dir_fd: the folder's descriptor (from ``safe_files.open_dir_beneath``), which the sink
        then owns. ``close()`` finishes the part being written; the descriptor stays open so the
        parts can still be read and compacted after it, and is closed by ``release()`` (or when
        the sink is garbage-collected).
    """

    def __init__(self, uri: str, directory: Path, *, part_size: int, field: str, dir_fd: int) -> None:
        self._release = weakref.finalize(self, os.close, dir_fd)  # owned from here, even on error
        super().__init__(uri, part_size=part_size, field=field)
        self.directory = directory
        self._dir_fd = dir_fd
        self._handle: IO[bytes] | None = None
        self._in_part = 0

    def release(self) -> None:
        try:
            super().release()
        finally:
            self._release()

    def write(self, record: dict[str, Any]) -> None:
        self._check_open()
        line = _line(record)
        handle = self._handle
        if handle is None:
            # O_EXCL: a part is never appended to or overwritten once another process made it.
            handle = self._handle = self._create(self._part_name(self._seq))
        handle.write(line)
        handle.flush()
        self.written += 1
        self._in_part += 1
        if self._in_part >= self.part_size:
            self._end_part()

    def flush(self) -> None:
        if self._handle is not None:
            self._handle.flush()

    def _end_part(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
            self._seq += 1
            self._in_part = 0

    def _create(self, name: str) -> IO[bytes]:
        """A new file ``name`` in the folder, never one that exists or a symlink's target."""
        return os.fdopen(os.open(name, NEW_FILE_FLAGS, 0o666, dir_fd=self._dir_fd), "wb")

    def _unlink(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=self._dir_fd)

    def check_writable(self) -> None:
        probe = f".ctxcache-probe-{secrets.token_hex(6)}"
        try:
            with self._create(probe) as handle:
                handle.write(b"\n")
            os.unlink(probe, dir_fd=self._dir_fd)
        except OSError as error:
            raise CtxCacheConfigError(
                f"{self.field}: cannot write in {self.uri!r} ({error.strerror}); give a folder this "
                "worker may write to (nothing was asked yet)."
            ) from None

    def _list_names(self) -> Iterable[str]:
        # Regular files only: a symlink named like a part is not read through (it may lead out).
        with os.scandir(self._dir_fd) as entries:
            return [entry.name for entry in entries if entry.is_file(follow_symlinks=False)]

    def _read_part(self, name: str) -> Iterator[bytes]:
        fd = open_file_in(self._dir_fd, name, self.field, child_uri(self.uri, name))
        with os.fdopen(fd, "rb") as handle:
            for line in handle:
                raw = line.rstrip(b"\r\n")
                if raw.strip():
                    yield raw

    def _rewrite_part(self, name: str, lines: Iterator[bytes]) -> None:
        temp = f".{name}.compact-tmp"
        kept = 0
        self._unlink(temp)  # left by a compaction that was killed
        try:
            with self._create(temp) as handle:
                for raw in lines:
                    handle.write(raw + b"\n")
                    kept += 1
            if kept:
                os.rename(temp, name, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)
            else:
                self._unlink(name)
        finally:
            self._unlink(temp)


class GcsResultSink(ResultSink):
    """Parts as objects under a ``gs://`` prefix, each uploaded whole from a line buffer."""

    def __init__(
        self,
        uri: str,
        client: Any,
        bucket: str,
        prefix: str,
        *,
        part_size: int,
        flush_seconds: float,
        field: str,
    ) -> None:
        super().__init__(uri, part_size=part_size, field=field)
        self.client = client
        self.bucket_name = bucket
        self.prefix = prefix
        self.flush_seconds: float = check_flush_seconds(flush_seconds, "flush_seconds")
        self._bucket = client.bucket(bucket)
        self._buffer: list[bytes] = []
        self._oldest = 0.0  # monotonic time the oldest buffered line was written

    def write(self, record: dict[str, Any]) -> None:
        self._check_open()
        line = _line(record)
        if not self._buffer:
            self._oldest = time.monotonic()
        self._buffer.append(line)
        self.written += 1
        if len(self._buffer) >= self.part_size or self.flush_due_in() == 0:
            self._upload()

    def flush_due_in(self) -> float | None:
        if not self._buffer:
            return None
        return max(0.0, self._oldest + self.flush_seconds - time.monotonic())

    def flush(self) -> None:
        self._upload()

    def _end_part(self) -> None:
        self._upload()

    def _upload(self) -> None:
        if not self._buffer:
            return
        data = b"".join(self._buffer)
        blob = self._bucket.blob(self.prefix + self._part_name(self._seq))
        with self._errors():
            blob.upload_from_string(data, content_type="application/jsonl")
        # Cleared only after the upload succeeded, so a failed upload is retried by the next flush.
        self._buffer.clear()
        self._seq += 1

    def check_writable(self) -> None:
        blob = self._bucket.blob(f"{self.prefix}.ctxcache-probe-{secrets.token_hex(6)}")
        with self._errors():
            blob.upload_from_string(b"\n", content_type="application/jsonl")
            blob.delete()

    def _list_names(self) -> Iterable[str]:
        with self._errors():
            blobs = list(self.client.list_blobs(self.bucket_name, prefix=self.prefix, delimiter="/"))
        return [blob.name[len(self.prefix) :] for blob in blobs]

    def _read_part(self, name: str) -> Iterator[bytes]:
        with self._errors():
            data = self._bucket.blob(self.prefix + name).download_as_bytes()
        for line in data.split(b"\n"):
            raw = line.rstrip(b"\r")
            if raw.strip():
                yield raw

    def _rewrite_part(self, name: str, lines: Iterator[bytes]) -> None:
        data = b"".join(raw + b"\n" for raw in lines)
        if data:
            # A new object first, then the old one goes: a crash in between leaves duplicates
            # (harmless: the next compact drops them), never a missing answer.
            match = PART_PATTERN.match(name)
            assert match is not None
            generation = int(match["gen"] or 0) + 1
            new_name = f"part-{match['attempt']}-{match['seq']}-c{generation}.jsonl"
            with self._errors():
                self._bucket.blob(self.prefix + new_name).upload_from_string(
                    data, content_type="application/jsonl"
                )
        from google.api_core import exceptions as gcs_errors

        with self._errors(), contextlib.suppress(gcs_errors.NotFound):
            self._bucket.blob(self.prefix + name).delete()

    def _errors(self) -> contextlib.AbstractContextManager[None]:
        return bucket_errors(
            self.field,
            self.uri,
            self.bucket_name,
            permissions="storage.objects.create, .get, .list and .delete",
        )


def check_flush_seconds(value: Any, field_name: str = "output_flush_seconds") -> float:
    """A finite number of seconds > 0; anything else is a config error naming the field."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise CtxCacheConfigError(
            f"{field_name}: {value!r} is not a number of seconds > 0; give the longest an answer may "
            f"wait in memory before it is uploaded to a gs:// output, e.g. {DEFAULT_FLUSH_SECONDS:g} "
            "(the default)."
        )
    return float(value)


def open_output(
    uri: str,
    *,
    storage_client_factory: Callable[[], Any],
    allowed_roots: Sequence[str],
    part_size: int = DEFAULT_PART_SIZE,
    flush_seconds: float = DEFAULT_FLUSH_SECONDS,
    field: str = "output_uri",
) -> ResultSink:
    """Start a new attempt writing under ``uri``.

    :param uri: a local folder (under ``allowed_roots``; created if absent) or ``gs://bucket/prefix/``.
    :param storage_client_factory: builds a google-cloud-storage client; called only for ``gs://``.
    :param part_size: lines per part (at most, on GCS).
    :param flush_seconds: on GCS, the longest a buffered line waits for upload: checked on each
        write, and between writes by the caller through :meth:`ResultSink.flush_due_in`.
    :raises CtxCacheConfigError: the location is refused, is a file, or the bucket is missing.
    """
    check_flush_seconds(flush_seconds, "flush_seconds")
    uri = check_uri(uri, field)
    if is_gcs(uri):
        bucket, prefix = gcs_prefix(uri, field)
        client = storage_client_factory()
        sink: ResultSink = GcsResultSink(
            f"gs://{bucket}/{prefix}",
            client,
            bucket,
            prefix,
            part_size=part_size,
            flush_seconds=flush_seconds,
            field=field,
        )
        sink._list_names()  # fails now, naming the field, if the bucket is missing or unreadable
        return sink
    directory = local_path(uri, allowed_roots, field)
    # Opened (and made) here, once, beneath the roots: every file is then made relative to it.
    dir_fd = open_dir_beneath(
        str(directory),
        checked_roots(allowed_roots),
        field,
        create=True,
        shown=uri,
        fix="give a folder for the output parts",
    )
    return LocalResultSink(str(directory), directory, part_size=part_size, field=field, dir_fd=dir_fd)


__all__ = [
    "DEFAULT_FLUSH_SECONDS",
    "GcsResultSink",
    "LocalResultSink",
    "OutputScan",
    "ResultSink",
    "check_flush_seconds",
    "error_record",
    "open_output",
    "response_record",
]
