"""``gs://bucket/path`` URIs, parsed in one place for the fan-out's files and the staging area."""

from __future__ import annotations

from airflow_provider_ctxcache.exceptions import CtxCacheConfigError

GCS_SCHEME = "gs://"


def is_gcs(uri: str) -> bool:
    return uri.startswith(GCS_SCHEME)


def split_gcs(uri: str, field: str, *, need_object: bool) -> tuple[str, str]:
    """``gs://bucket/some/name`` -> ``("bucket", "some/name")``.

    :param need_object: the URI must name an object (an input file), not just a bucket.
    """
    example = "gs://bucket/path/requests.jsonl" if need_object else "gs://bucket/prefix/"
    if not is_gcs(uri):
        raise CtxCacheConfigError(f"{field}: {uri!r} is not a Cloud Storage URI such as {example}.")
    bucket, _, name = uri[len(GCS_SCHEME) :].partition("/")
    if not bucket or any(c in bucket for c in " \\") or (need_object and not name.strip("/")):
        raise CtxCacheConfigError(f"{field}: {uri!r} is not a Cloud Storage URI such as {example}.")
    return bucket, name


def gcs_prefix(uri: str, field: str) -> tuple[str, str]:
    """A ``gs://`` folder as (bucket, prefix), the prefix empty or ending in ``/``."""
    bucket, prefix = split_gcs(uri, field, need_object=False)
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""
