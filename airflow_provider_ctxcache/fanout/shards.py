"""Scaling past one machine: split a big input into shards, one mapped task instance each.

::

    @task
    def make_shards() -> list[dict[str, str]]:
        hook = ContextCacheHook()
        return shard_input(
            "gs://bucket/questions.jsonl", shard_size=10_000,
            shards_uri="gs://bucket/run-1/shards/", output_uri="gs://bucket/run-1/answers/",
            storage_client_factory=lambda: hook.storage_client, allowed_roots=configured_allowed_roots(),
        )

    GenerateWithCacheOperator.partial(task_id="ask", cache_name=cache.output).expand_kwargs(make_shards())

Each shard is a JSONL file in the same batch request format and gets its own output prefix
(``<output_uri>/shard-00000/``), so each mapped task instance resumes on its own: a retried
shard skips the keys it already answered, and the others are untouched. Workers (Celery or
Kubernetes) need to reach the shard files, so on more than one machine use ``gs://``: local
paths are refused there unless every worker mounts the same filesystem (``shared_filesystem``).

A local ``shards_uri`` folder is opened once beneath the allowed roots (and made if absent), and
the shard files are written, renamed and removed relative to that descriptor, so a folder swapped
for a symlink after the check is never written through.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from airflow_provider_ctxcache.exceptions import CtxCacheConfigError
from airflow_provider_ctxcache.fanout.inputs import open_input
from airflow_provider_ctxcache.fanout.outputs import NEW_FILE_FLAGS
from airflow_provider_ctxcache.fanout.uris import (
    bucket_errors,
    check_uri,
    child_uri,
    gcs_prefix,
    is_gcs,
    local_path,
)
from airflow_provider_ctxcache.placement import check_local_paths
from airflow_provider_ctxcache.safe_files import allowed_roots as checked_roots
from airflow_provider_ctxcache.safe_files import open_dir_beneath

SHARD_FORMAT = "shard-{:05d}"
_SHARD_FILE = re.compile(r"^shard-(\d{5,})\.jsonl$")


def _check_size(value: Any, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise CtxCacheConfigError(f"{field}: {value!r} must be a whole number >= 1.")
    return value


def split_quota(
    shards: Sequence[dict[str, Any]],
    *,
    rpm_limit: int | None = None,
    tpm_limit: int | None = None,
    concurrent: int | None = None,
) -> list[dict[str, Any]]:
    """Each shard's kwargs with its share of the project's quota, for ``.expand_kwargs``.

    Quotas are per project and per model, so mapped instances running at the same time share
    them: each gets ``limit // concurrent`` (``concurrent`` is how many run at once: the task's
    ``max_active_tis_per_dagrun``, else every shard). Without limits the shards are returned
    unchanged and each adapts to the 429s it gets.
    """
    if concurrent is not None:
        _check_size(concurrent, "concurrent")
    running = max(1, min(len(shards), concurrent or len(shards)))
    share: dict[str, int] = {}
    for name, limit in (("rpm_limit", rpm_limit), ("tpm_limit", tpm_limit)):
        if limit is not None:
            limit = _check_size(limit, name)
            if limit < running:
                raise CtxCacheConfigError(
                    f"{name}: {limit} cannot be shared by {running} shards running at once; "
                    "lower the concurrency or raise the limit."
                )
            share[name] = limit // running
    return [{**shard, **share} for shard in shards]


def chunk_prompts(prompts: Sequence[Any], size: int) -> list[list[Any]]:
    """``prompts`` in consecutive lists of ``size`` (the last may be shorter), for ``.expand(prompts=...)``.

    Keys by position (``prompt-NNNNN``) restart in every chunk; give prompts their own ``key``
    or rely on the operator's per-map-index key prefix when keys must be unique across chunks.
    """
    size = _check_size(size, "size")
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence):
        raise CtxCacheConfigError(f"prompts: a {type(prompts).__name__} is not a list of prompts.")
    return [list(prompts[start : start + size]) for start in range(0, len(prompts), size)]


def shard_input(
    input_uri: str,
    *,
    shard_size: int,
    shards_uri: str,
    output_uri: str,
    storage_client_factory: Callable[[], Any],
    allowed_roots: Sequence[str],
    shared_filesystem: bool | None = None,
) -> list[dict[str, str]]:
    """Split a JSONL input into ``shard-00000.jsonl``, ... of ``shard_size`` lines under ``shards_uri``.

    Lines are copied as written (blank lines dropped); only JSON-ness is checked here, the
    requests themselves are checked by each shard's task. Re-running overwrites the same
    shards, and removes ``shard-NNNNN.jsonl`` files beyond the new count left by an earlier run
    with a smaller ``shard_size``.

    On a distributed executor (Celery, Kubernetes) local paths are refused before anything is
    written, unless ``shared_filesystem`` (or ``[ctxcache] shared_filesystem``) says every worker
    mounts them: the shards are read by tasks that may run on other workers.

    :returns: one ``{"input_uri": shard, "output_uri": <output_uri>/shard-NNNNN/}`` per shard, in
        order, for ``GenerateWithCacheOperator.partial(...).expand_kwargs(...)``; ``[]`` for an
        input with no lines.
    """
    shard_size = _check_size(shard_size, "shard_size")
    shards_uri = check_uri(shards_uri, "shards_uri")
    output_uri = check_uri(output_uri, "output_uri")
    check_local_paths(
        {"shards_uri": shards_uri, "output_uri": output_uri, "input_uri": input_uri},
        shared_filesystem=shared_filesystem,
    )
    if is_gcs(output_uri):
        bucket, prefix = gcs_prefix(output_uri, "output_uri")
        output_base = f"gs://{bucket}/{prefix}"
    else:
        output_base = str(local_path(output_uri, allowed_roots, "output_uri"))
    writer: _ShardWriter
    if is_gcs(shards_uri):
        bucket, prefix = gcs_prefix(shards_uri, "shards_uri")
        writer = _GcsShards(storage_client_factory(), bucket, prefix)
    else:
        directory = local_path(shards_uri, allowed_roots, "shards_uri")
        dir_fd = open_dir_beneath(
            str(directory),
            checked_roots(allowed_roots),
            "shards_uri",
            create=True,
            shown=shards_uri,
            fix="give a folder for the shards",
        )
        writer = _LocalShards(directory, dir_fd)

    count = 0
    try:
        with open_input(
            input_uri, storage_client_factory=storage_client_factory, allowed_roots=allowed_roots
        ) as source:
            for index, chunk in enumerate(_chunks((raw for _n, raw in source.raw_lines()), shard_size)):
                writer.write(_shard_name(index), chunk)
                count = index + 1
        writer.remove_beyond(count)
    finally:
        writer.close()
    return [
        {
            "input_uri": writer.uri(_shard_name(index)),
            "output_uri": child_uri(output_base, SHARD_FORMAT.format(index)) + "/",
        }
        for index in range(count)
    ]


def _shard_name(index: int) -> str:
    return SHARD_FORMAT.format(index) + ".jsonl"


def _chunks(lines: Iterator[bytes], size: int) -> Iterator[Iterator[bytes]]:
    """Consecutive runs of ``size`` lines; each run must be consumed before the next is asked for."""
    while (first := next(lines, None)) is not None:
        yield itertools.chain((first,), itertools.islice(lines, size - 1))


class _ShardWriter:
    def write(self, name: str, lines: Iterator[bytes]) -> None:
        raise NotImplementedError

    def uri(self, name: str) -> str:
        raise NotImplementedError

    def remove_beyond(self, count: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the writer holds; nothing by default."""


class _LocalShards(_ShardWriter):
    """Shard files in a local folder, each made, renamed and removed relative to its descriptor.

    :param directory: the folder's checked path, for the shard URIs handed to the tasks.
    :param dir_fd: the folder's descriptor (``safe_files.open_dir_beneath``), closed by ``close()``.
    """

    def __init__(self, directory: Path, dir_fd: int) -> None:
        self.directory = directory
        self._dir_fd = dir_fd

    def write(self, name: str, lines: Iterator[bytes]) -> None:
        temp = f".{name}.tmp"
        self._unlink(temp)  # left by a run that was killed
        try:
            with os.fdopen(os.open(temp, NEW_FILE_FLAGS, 0o666, dir_fd=self._dir_fd), "wb") as handle:
                for raw in lines:
                    handle.write(raw + b"\n")
            os.rename(temp, name, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)
        finally:
            self._unlink(temp)

    def uri(self, name: str) -> str:
        return str(self.directory / name)

    def remove_beyond(self, count: int) -> None:
        for name in os.listdir(self._dir_fd):
            match = _SHARD_FILE.match(name)
            if match and int(match.group(1)) >= count:
                self._unlink(name)

    def close(self) -> None:
        if self._dir_fd >= 0:
            os.close(self._dir_fd)
            self._dir_fd = -1

    def _unlink(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=self._dir_fd)


class _GcsShards(_ShardWriter):
    def __init__(self, client: Any, bucket: str, prefix: str) -> None:
        self.client = client
        self.bucket_name = bucket
        self.prefix = prefix
        self.bucket = client.bucket(bucket)

    def write(self, name: str, lines: Iterator[bytes]) -> None:
        data = b"".join(raw + b"\n" for raw in lines)
        with self._errors():
            self.bucket.blob(self.prefix + name).upload_from_string(data, content_type="application/jsonl")

    def uri(self, name: str) -> str:
        return f"gs://{self.bucket_name}/{self.prefix}{name}"

    def remove_beyond(self, count: int) -> None:
        from google.api_core import exceptions as gcs_errors

        with self._errors():
            blobs = list(self.client.list_blobs(self.bucket_name, prefix=self.prefix, delimiter="/"))
        for blob in blobs:
            match = _SHARD_FILE.match(blob.name[len(self.prefix) :])
            if match and int(match.group(1)) >= count:
                with contextlib.suppress(gcs_errors.NotFound):
                    blob.delete()

    def _errors(self) -> contextlib.AbstractContextManager[None]:
        uri = f"gs://{self.bucket_name}/{self.prefix}"
        return bucket_errors(
            "shards_uri", uri, self.bucket_name, permissions="storage.objects.create, .list and .delete"
        )


__all__ = ["chunk_prompts", "shard_input"]
