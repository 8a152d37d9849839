"""Staging of local files too large to send inline, and their removal with the cache.

Where files go is the backend's choice (``hooks.backend.Backend.staging_area``): Cloud Storage
on Vertex AI, the Files API on the Developer API. The create operator stages; the delete
operator removes what was staged (the hook only deletes the cache). Every staged object sits under
a folder named after the cache's reuse key (the suffix the provider puts in the cache's
display name), so deleting the cache can find and remove them.

A retry re-uses what an earlier try staged, by one rule in both areas: a staged copy is reused
when it sits in the key's folder, under the file's name, and holds the same bytes (size and
SHA-256 equal, :func:`same_bytes`); anything else is uploaded again. On Cloud Storage the object
is ``<folder>/<sha256[:16]>-<name>`` and its SHA-256 is kept in its metadata; on the Files API
(server-chosen names) the display name is ``<folder>/<name>``, the service reports the SHA-256,
and the file must also be ACTIVE with more than :data:`MIN_FILE_LIFE` left before it expires.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from google.genai import types

from airflow_provider_ctxcache.contents import LocalFile
from airflow_provider_ctxcache.exceptions import CtxCacheConfigError
from airflow_provider_ctxcache.gcs_uris import split_gcs

if TYPE_CHECKING:
    from google.genai import Client

KEY_MARK = "ctxcache:"
SHA256_METADATA = "ctxcache-sha256"
# A Files API file is reused only with more life left than this (files last 48 hours): the
# create that reads it, with its count and retries, ends well within it.
MIN_FILE_LIFE = dt.timedelta(hours=1)


def staging_folder(key: str) -> str:
    """``ctxcache-r-<run>-<content>``: the reuse key, safe as an object-name segment."""
    return key.replace(":", "-")


def key_of(display_name: str | None) -> str | None:
    """The reuse key at the end of a display name the provider wrote, else None."""
    if not display_name or KEY_MARK not in display_name:
        return None
    return display_name[display_name.rindex(KEY_MARK) :].strip()


def same_bytes(local: LocalFile, size: int | None, sha256: str | None) -> bool:
    """Whether a staged copy's size and SHA-256 (hex, or the base64 of the hex as the Files API
    sends it) are those of ``local``."""
    if size != local.size or not sha256:
        return False
    if sha256.lower() == local.sha256():
        return True
    try:
        decoded = base64.b64decode(sha256, validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return decoded.lower() == local.sha256()


def split_gs_uri(uri: str, field: str = "staging_uri") -> tuple[str, str]:
    """``gs://bucket/prefix`` -> ``("bucket", "prefix")``, the prefix without slashes at its ends."""
    bucket, prefix = split_gcs(uri, field, need_object=False)
    return bucket, prefix.strip("/")


class StagingArea(Protocol):
    """Somewhere the service can read large files from, with a folder per cache."""

    def upload(self, local: LocalFile, folder: str) -> str:
        """Stores ``local`` under ``folder``, reusing a staged copy of the same bytes; returns its URI."""

    def remove(self, folder: str) -> int:
        """Deletes everything under ``folder``; returns how many objects."""


class CloudStorageArea:
    """``gs://bucket/prefix/<folder>/<sha>-<name>``: what Vertex AI reads large files from."""

    def __init__(self, storage_client: Callable[[], Any], staging_uri: str | None) -> None:
        self.storage_client = storage_client
        self.staging_uri = staging_uri

    def upload(self, local: LocalFile, folder: str) -> str:
        if not self.staging_uri:
            raise CtxCacheConfigError(
                f"staging_uri: {local.field} ({local.size} bytes) is too large to send inline; set the "
                "connection extra staging_uri (gs://bucket/prefix) or the operator's staging_uri."
            )
        bucket_name, prefix = split_gs_uri(self.staging_uri)
        name = "/".join(p for p in (prefix, folder, f"{local.sha256()[:16]}-{local.path.name}") if p)
        bucket = self.storage_client().bucket(bucket_name)
        staged = bucket.get_blob(name)
        sha256 = (staged.metadata or {}).get(SHA256_METADATA) if staged is not None else None
        if staged is None or not same_bytes(local, staged.size, sha256):
            blob = bucket.blob(name)
            blob.metadata = {SHA256_METADATA: local.sha256()}
            blob.upload_from_filename(str(local.path), content_type=local.mime_type)
        return f"gs://{bucket_name}/{name}"

    def remove(self, folder: str) -> int:
        if not self.staging_uri:
            return 0
        bucket_name, prefix = split_gs_uri(self.staging_uri)
        bucket = self.storage_client().bucket(bucket_name)
        blobs = list(bucket.list_blobs(prefix="/".join(p for p in (prefix, folder) if p) + "/"))
        for blob in blobs:
            blob.delete()
        return len(blobs)


class FilesApiArea:
    """The Developer API's Files API; the folder is a display-name prefix (file names are the server's)."""

    def __init__(self, client: Callable[[], Client]) -> None:
        self.client = client

    def upload(self, local: LocalFile, folder: str) -> str:
        display = f"{folder}/{local.path.name}"[:512]
        client = self.client()
        reusable = self._reusable(client, local, display)
        if reusable is not None:
            return reusable
        uploaded = client.files.upload(
            file=str(local.path),
            config=types.UploadFileConfig(display_name=display, mime_type=local.mime_type),
        )
        if not uploaded.uri:
            raise CtxCacheConfigError(f"{local.field}: the Files API returned no URI for {local.path.name}.")
        return uploaded.uri

    @staticmethod
    def _reusable(client: Client, local: LocalFile, display: str) -> str | None:
        """The URI of a live file an earlier try uploaded as ``display`` with these bytes, if any."""
        enough = dt.datetime.now(dt.timezone.utc) + MIN_FILE_LIFE
        for file in client.files.list(config=types.ListFilesConfig(page_size=100)):
            if (
                file.display_name == display
                and file.uri
                and file.state == types.FileState.ACTIVE
                and file.expiration_time is not None
                and file.expiration_time > enough
                and same_bytes(local, file.size_bytes, file.sha256_hash)
            ):
                return file.uri
        return None

    def remove(self, folder: str) -> int:
        files: Any = self.client().files
        removed = 0
        for file in list(files.list()):
            if (file.display_name or "").startswith(f"{folder}/") and file.name:
                files.delete(name=file.name)
                removed += 1
        return removed


class Stager:
    """Uploads files for one cache and returns the ``fileData`` parts that point at them."""

    def __init__(self, area: StagingArea, key: str, log: logging.Logger | Any) -> None:
        self.area = area
        self.folder = staging_folder(key)
        self.log = log
        self.staged: list[str] = []

    def __call__(self, local: LocalFile) -> types.Part:
        uri = self.area.upload(local, self.folder)
        self.staged.append(uri)
        self.log.info("Staged %s (%d bytes, %s) as %s", local.path.name, local.size, local.mime_type, uri)
        return types.Part(file_data=types.FileData(file_uri=uri, mime_type=local.mime_type))


def remove_staged(area: StagingArea, key: str, log: logging.Logger | Any) -> int:
    """Deletes what was staged for the cache with this reuse key; returns how many objects."""
    folder = staging_folder(key)
    removed = area.remove(folder)
    if removed:
        log.info("Removed %d staged objects of %s", removed, folder)
    return removed
