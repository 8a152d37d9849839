"""Where fan-out input and output live: a local path under the allowed roots, or ``gs://``.

Local paths follow the same allowed roots as ``{"file": PATH}`` cache contents, checked in one
place (``safe_files``): they are resolved (``~``, ``..`` and symlinks) and must then lie under
one of the roots, because a run triggered from the UI renders params into these fields and
params are untrusted. Errors are :class:`CtxCacheConfigError` whose message starts with the
field name.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from airflow_provider_ctxcache.exceptions import CtxCacheConfigError
from airflow_provider_ctxcache.gcs_uris import gcs_prefix, is_gcs, split_gcs
from airflow_provider_ctxcache.safe_files import allowed_roots as checked_roots
from airflow_provider_ctxcache.safe_files import disabled_error, outside_error, within

FILE_SCHEME = "file://"


def check_uri(value: object, field: str) -> str:
    """``value`` as a non-empty string, or an error that says what a URI looks like."""
    if not isinstance(value, str) or not value.strip():
        raise CtxCacheConfigError(
            f"{field}: {value!r} is not a location; give a local path under the allowed roots "
            "or a gs://bucket/path URI."
        )
    return value.strip()


def local_path(uri: str, allowed_roots: Sequence[str], field: str) -> Path:
    """The resolved local path for ``uri`` (a path or ``file://`` URI), checked against the roots.

    Nothing is created or required to exist here; callers say what is missing.
    """
    if "://" in uri and not uri.startswith(FILE_SCHEME):
        raise CtxCacheConfigError(
            f"{field}: {uri!r} uses an unsupported scheme; give a local path or a gs://bucket/path URI."
        )
    raw = uri[len(FILE_SCHEME) :] if uri.startswith(FILE_SCHEME) else uri
    roots = checked_roots(allowed_roots)
    if not roots:
        raise disabled_error(field, "use a gs:// URI")
    path = Path(raw).expanduser().resolve()
    if not within(path, roots):
        raise outside_error(field, uri, roots)
    return path


def child_uri(base: str, name: str) -> str:
    """``name`` inside the folder or prefix ``base`` (``gs://b/p`` + ``x`` -> ``gs://b/p/x``)."""
    return f"{base.rstrip('/')}/{name}"


__all__ = ["check_uri", "child_uri", "gcs_prefix", "is_gcs", "local_path", "split_gcs"]


@contextlib.contextmanager
def bucket_errors(field: str, uri: str, bucket: str, *, permissions: str) -> Iterator[None]:
    """Cloud Storage's NotFound and Forbidden as config errors that name the field and the fix."""
    from google.api_core import exceptions as gcs_errors

    try:
        yield
    except gcs_errors.NotFound as error:
        raise CtxCacheConfigError(
            f"{field}: {uri!r} cannot be used ({error.message}); check that bucket {bucket!r} exists."
        ) from None
    except gcs_errors.Forbidden as error:
        raise CtxCacheConfigError(
            f"{field}: {uri!r} is not accessible ({error.message}); grant the connection's "
            f"identity {permissions} on the bucket."
        ) from None
