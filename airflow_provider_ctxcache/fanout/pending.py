"""What is left to ask: the input checked in full, minus the keys its output already answered.

``CreateCacheOperator`` asks this before it pays for a cache, so a day whose prompts were all
answered creates no cache, and a bad input line fails before anything is spent. The checks are
the fan-out's own (``prompts.iter_normalized``). Answers are looked for under ``output_uri`` and in
the ``shard-NNNNN/`` folders that ``shards.shard_input`` gives each shard under it. A key counts
as answered only where the same key is used: prompts without their own ``key`` get positional
keys, which mapped chunks prefix with their map index, so those are counted as pending (the
count may be high, never low: a cache is never skipped for work that is still to do).

A local output folder is opened once beneath the allowed roots, and its shard folders and parts
are found and read relative to that descriptor, as the fan-out's own sink reads them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_provider_ctxcache.exceptions import CtxCacheConfigError
from airflow_provider_ctxcache.fanout.inputs import open_input
from airflow_provider_ctxcache.fanout.outputs import (
    DEFAULT_PART_SIZE,
    LocalResultSink,
    ResultSink,
    changed_requests_error,
    open_output,
)
from airflow_provider_ctxcache.fanout.uris import check_uri, child_uri, gcs_prefix, is_gcs, local_path
from airflow_provider_ctxcache.prompts import KEY_PREFIX, Entries, PromptRequest, iter_normalized
from airflow_provider_ctxcache.safe_files import MissingPath, open_dir_beneath, open_dir_in
from airflow_provider_ctxcache.safe_files import allowed_roots as checked_roots

_SHARD_FOLDER = re.compile(r"^shard-\d{5,}$")


@dataclass(frozen=True)
class PendingWork:
    """How many requests the input holds and how many of them the output already answered."""

    total: int
    answered: int

    @property
    def pending(self) -> int:
        return self.total - self.answered


def count_pending(
    *,
    prompts: Sequence[Any] | None = None,
    input_uri: str | None = None,
    output_uri: str | None = None,
    storage_client_factory: Callable[[], Any],
    allowed_roots: Sequence[str],
    generation_config: Any = None,
    key_prefix: str = KEY_PREFIX,
    max_request_bytes: int | None = None,
) -> PendingWork:
    """Check every request as the fan-out will, and count those not answered yet.

    :param max_request_bytes: the backend's request limit (``hook.backend.request_limit_bytes``).
    :raises CtxCacheConfigError: a bad request (naming its line or index), a bad location, or
        answers stored for keys whose request has changed since (as the fan-out would refuse).
    """
    if (prompts is None) == (input_uri is None):
        raise CtxCacheConfigError("prompts, input_uri: give exactly one of them, to count the work.")
    answered = _answered(output_uri, storage_client_factory, allowed_roots) if output_uri is not None else {}
    checks: dict[str, Any] = {
        "generation_config": generation_config,
        "key_prefix": key_prefix,
        "max_request_bytes": max_request_bytes,
    }
    total = done = 0
    changed: list[str] = []
    for request in _requests(prompts, input_uri, storage_client_factory, allowed_roots, checks):
        total += 1
        if request.key in answered:
            done += 1
            if answered[request.key] not in (None, request.fingerprint):
                changed.append(request.key)
    if changed and output_uri is not None:
        raise changed_requests_error(changed, output_uri)
    return PendingWork(total=total, answered=done)


def _requests(
    prompts: Sequence[Any] | None,
    input_uri: str | None,
    storage_client_factory: Callable[[], Any],
    allowed_roots: Sequence[str],
    checks: dict[str, Any],
) -> Iterator[PromptRequest]:
    if input_uri is not None:
        with open_input(
            input_uri,
            storage_client_factory=storage_client_factory,
            allowed_roots=allowed_roots,
            max_line_bytes=checks["max_request_bytes"],
        ) as source:
            yield from iter_normalized(
                Entries(lambda: ((f"input_uri line {n}", obj) for n, obj in source.lines())), **checks
            )
        return
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence):
        raise CtxCacheConfigError(
            f"prompts: a {type(prompts).__name__} is not a list of prompts; pass a list of strings "
            'or of batch requests {"key": ..., "request": {"contents": [...]}}.'
        )
    yield from iter_normalized(
        Entries(lambda: ((f"prompts[{i}]", p) for i, p in enumerate(prompts))), **checks
    )


def _answered(
    uri: str, storage_client_factory: Callable[[], Any], allowed_roots: Sequence[str]
) -> dict[str, str | None]:
    """Keys answered under ``uri`` and its shard folders, with their request hash (None: none stored).

    Nothing is created where nothing is.
    """
    uri = check_uri(uri, "output_uri")
    if not is_gcs(uri):
        return _answered_locally(uri, allowed_roots)
    # The folder itself first: opening it checks the bucket, and fails naming output_uri.
    answered = _scan(
        open_output(uri, storage_client_factory=storage_client_factory, allowed_roots=allowed_roots)
    )
    for folder in _gcs_shard_folders(uri, storage_client_factory):
        sink = open_output(folder, storage_client_factory=storage_client_factory, allowed_roots=allowed_roots)
        answered.update(_scan(sink))
    return answered


def _answered_locally(uri: str, allowed_roots: Sequence[str]) -> dict[str, str | None]:
    """The local folder opened once beneath the roots; its shard folders found and read through it."""
    directory = local_path(uri, allowed_roots, "output_uri")
    roots = checked_roots(allowed_roots)
    try:
        dir_fd = open_dir_beneath(
            str(directory), roots, "output_uri", shown=uri, fix="give a folder for the output parts"
        )
    except MissingPath:
        return {}  # no folder yet: nothing answered, and nothing is created
    try:
        answered = _scan(_local_sink(uri, directory, os.dup(dir_fd)))
        for name in sorted(n for n in os.listdir(dir_fd) if _SHARD_FOLDER.match(n)):
            shard_fd = open_dir_in(dir_fd, name, str(directory / name), roots, "output_uri")
            if shard_fd is not None:
                answered.update(_scan(_local_sink(child_uri(uri, name), directory / name, shard_fd)))
    finally:
        os.close(dir_fd)
    return answered


def _local_sink(uri: str, directory: Path, dir_fd: int) -> ResultSink:
    return LocalResultSink(uri, directory, part_size=DEFAULT_PART_SIZE, field="output_uri", dir_fd=dir_fd)


def _scan(sink: ResultSink) -> dict[str, str | None]:
    try:
        scan = sink.scan()
    finally:
        sink.release()
    return {key: scan.fingerprints.get(key) for key in scan.answered}


def _gcs_shard_folders(uri: str, storage_client_factory: Callable[[], Any]) -> list[str]:
    bucket, prefix = gcs_prefix(uri, "output_uri")
    listing = storage_client_factory().list_blobs(bucket, prefix=prefix, delimiter="/")
    list(listing)  # the sub-folders (prefixes) are known once the pages are read
    names = (sub[len(prefix) :].rstrip("/") for sub in getattr(listing, "prefixes", ()))
    return [child_uri(uri, name) for name in sorted(n for n in names if _SHARD_FOLDER.match(n))]
