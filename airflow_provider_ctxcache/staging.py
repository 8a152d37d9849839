"""Staging of local files too large to send inline: Cloud Storage on Vertex, the Files API otherwise.

Every staged object sits under a folder named after the cache's reuse key (the suffix the
provider puts in the cache's display name), so deleting the cache can find and remove them.
Names are derived from the file's content hash, so a retry re-uses what an earlier try uploaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from google.genai import types

from airflow_provider_ctxcache.contents import LocalFile
from airflow_provider_ctxcache.exceptions import CtxCacheConfigError

if TYPE_CHECKING:
    from airflow_provider_ctxcache.hooks import ContextCacheHook

KEY_MARK = "ctxcache:"


def staging_folder(key: str) -> str:
    """``ctxcache-r-<run>-<content>``: the reuse key, safe as an object-name segment."""
    return key.replace(":", "-")


def key_of(display_name: str | None) -> str | None:
    """The reuse key at the end of a display name the provider wrote, else None."""
    if not display_name or KEY_MARK not in display_name:
        return None
    return display_name[display_name.rindex(KEY_MARK) :].strip()


def split_gs_uri(uri: str, field: str = "staging_uri") -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme != "gs" or not parsed.netloc:
        raise CtxCacheConfigError(f"{field}: {uri!r} is not a gs://bucket/prefix URI.")
    return parsed.netloc, parsed.path.strip("/")


class Stager:
    """Uploads files for one cache and returns the ``fileData`` parts that point at them."""

    def __init__(self, hook: ContextCacheHook, key: str, staging_uri: str | None) -> None:
        self.hook = hook
        self.folder = staging_folder(key)
        self.staging_uri = staging_uri
        self.staged: list[str] = []

    def __call__(self, local: LocalFile) -> types.Part:
        uri = self._to_gcs(local) if self.hook.settings.is_vertex else self._to_files_api(local)
        self.staged.append(uri)
        self.hook.log.info(
            "Staged %s (%d bytes, %s) as %s", local.path.name, local.size, local.mime_type, uri
        )
        return types.Part(file_data=types.FileData(file_uri=uri, mime_type=local.mime_type))

    def _to_gcs(self, local: LocalFile) -> str:
        if not self.staging_uri:
            raise CtxCacheConfigError(
                f"staging_uri: {local.field} ({local.size} bytes) is too large to send inline; set the "
                "connection extra staging_uri (gs://bucket/prefix) or the operator's staging_uri."
            )
        bucket_name, prefix = split_gs_uri(self.staging_uri)
        name = "/".join(p for p in (prefix, self.folder, f"{local.sha256()[:16]}-{local.path.name}") if p)
        blob = self.hook.storage_client.bucket(bucket_name).blob(name)
        if not blob.exists():
            blob.upload_from_filename(str(local.path), content_type=local.mime_type)
        return f"gs://{bucket_name}/{name}"

    def _to_files_api(self, local: LocalFile) -> str:
        display = f"{self.folder}/{local.path.name}"[:512]
        uploaded = self.hook.get_conn().files.upload(
            file=str(local.path),
            config=types.UploadFileConfig(display_name=display, mime_type=local.mime_type),
        )
        if not uploaded.uri:
            raise CtxCacheConfigError(f"{local.field}: the Files API returned no URI for {local.path.name}.")
        return uploaded.uri


def remove_staged(hook: ContextCacheHook, key: str, staging_uri: str | None = None) -> int:
    """Deletes what was staged for the cache with this reuse key; returns how many objects."""
    folder = staging_folder(key)
    removed = 0
    if hook.settings.is_vertex:
        target = staging_uri or hook.settings.staging_uri
        if not target:
            return 0
        bucket_name, prefix = split_gs_uri(target)
        bucket = hook.storage_client.bucket(bucket_name)
        for blob in list(bucket.list_blobs(prefix="/".join(p for p in (prefix, folder) if p) + "/")):
            blob.delete()
            removed += 1
    else:
        files: Any = hook.get_conn().files
        for file in list(files.list()):
            if (file.display_name or "").startswith(f"{folder}/") and file.name:
                files.delete(name=file.name)
                removed += 1
    if removed:
        hook.log.info("Removed %d staged objects of %s", removed, folder)
    return removed
