"""The backend seam: every Developer API / Vertex AI difference is answered by one object.

Each rule is checked where it shows: names the SDK sends and the emulator holds, bodies the
emulator receives, errors the operators raise. A last test keeps other modules from
branching on the backend name again.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

import airflow_provider_ctxcache
from airflow_provider_ctxcache.connection_defaults import BACKENDS
from airflow_provider_ctxcache.contents import ContentBuilder
from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from airflow_provider_ctxcache.emulator.tokens import text_of_tokens
from airflow_provider_ctxcache.exceptions import CtxCacheConfigError
from airflow_provider_ctxcache.hooks import ContextCacheHook
from airflow_provider_ctxcache.hooks.backend import BACKEND_CLASSES, DeveloperApi, VertexAi
from airflow_provider_ctxcache.operators import DeleteCacheOperator, ExtendCacheTTLOperator
from airflow_provider_ctxcache.staging import CloudStorageArea, FilesApiArea
from tests.hooks.conftest import ConnFactory, backend_extra
from tests.operators.context import task_context

MODEL = "gemini-2.5-flash"
VERTEX_SCOPE = "projects/test-project/locations/us-central1"
PACKAGE = Path(airflow_provider_ctxcache.__file__).parent


def hook_on(
    backend: str, emulator: EmulatorProcess, make_conn: ConnFactory, **extra: Any
) -> ContextCacheHook:
    return ContextCacheHook(make_conn(f"seam_{backend}", **backend_extra(backend, emulator), **extra))


def test_one_class_per_backend_chosen_from_the_connection(hook: ContextCacheHook) -> None:
    assert set(BACKEND_CLASSES) == set(BACKENDS)
    expected = VertexAi if hook.settings.backend == "vertex_ai" else DeveloperApi
    assert type(hook.backend) is expected
    assert hook.backend is hook.backend  # chosen once
    assert hook.backend.inline_limit_bytes == 10 * 1024 * 1024


# -- cache names -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("backend", "name", "canonical"),
    [
        ("gemini_api", "cachedContents/abc123", "cachedContents/abc123"),
        ("gemini_api", "abc123", "cachedContents/abc123"),
        ("gemini_api", " cachedContents/abc-1 ", "cachedContents/abc-1"),
        ("vertex_ai", "projects/p/locations/europe-west4/cachedContents/123", None),
        ("vertex_ai", "cachedContents/123", f"{VERTEX_SCOPE}/cachedContents/123"),
        ("vertex_ai", "123", f"{VERTEX_SCOPE}/cachedContents/123"),
    ],
)
def test_cache_names_are_accepted_and_made_canonical(
    backend: str, name: str, canonical: str | None, emulator: EmulatorProcess, make_conn: ConnFactory
) -> None:
    hook = hook_on(backend, emulator, make_conn)
    assert hook.cache_name(name) == (canonical or name)


@pytest.mark.parametrize(
    ("backend", "name"),
    [
        ("gemini_api", ""),
        ("gemini_api", None),
        ("gemini_api", "cachedContents/"),
        ("gemini_api", "projects/p/locations/l/cachedContents/1"),
        ("gemini_api", "cachedContents/x y"),
        ("gemini_api", "cachedContents/../../models"),
        ("gemini_api", "{{ ti.xcom_pull('x') }}"),
        ("vertex_ai", "models/gemini-2.5-flash"),
        ("vertex_ai", "projects/p/locations/l/cachedContents/"),
        ("vertex_ai", "projects/../locations/l/cachedContents/1"),
        ("vertex_ai", "cachedContents/a/b"),
        ("vertex_ai", 42),
    ],
)
def test_malformed_cache_names_are_refused_naming_the_field(
    backend: str, name: object, emulator: EmulatorProcess, make_conn: ConnFactory
) -> None:
    hook = hook_on(backend, emulator, make_conn)
    with pytest.raises(CtxCacheConfigError, match=r"^cache_name: "):
        hook.cache_name(name)
    assert sum(emulator.admin.state()["counts"].values()) == 0


def test_vertex_takes_short_names_end_to_end_and_reports_full_ones(
    emulator: EmulatorProcess, make_conn: ConnFactory
) -> None:
    hook = hook_on("vertex_ai", emulator, make_conn)
    full = hook.create_cache(model=MODEL, contents=[text_of_tokens(2100)]).name
    assert full
    assert full.startswith(f"{VERTEX_SCOPE}/cachedContents/")
    cache_id = full.rsplit("/", 1)[-1]
    short = f"cachedContents/{cache_id}"

    assert hook.get_cache(short).name == full
    answer = hook.generate(model=MODEL, contents="hello", cache_name=short)
    assert answer.usage_metadata is not None
    assert answer.usage_metadata.cached_content_token_count == 2100
    (generate,) = [r for r in emulator.admin.requests() if r["op"] == "generate_content"]
    assert generate["body"]["cachedContent"] == full
    extended = ExtendCacheTTLOperator(
        task_id="extend", ctxcache_conn_id=hook.ctxcache_conn_id, cache_name=short, ttl="2h"
    ).execute(task_context())
    assert extended["cache_name"] == full
    delete = DeleteCacheOperator(
        task_id="delete", ctxcache_conn_id=hook.ctxcache_conn_id, cache_name=cache_id
    )
    assert delete.execute(task_context()) is True
    assert emulator.admin.state()["caches"] == []


# -- requests whose shape differs ----------------------------------------------------------------------


def test_count_tokens_sends_the_system_instruction_the_way_each_backend_takes_it(
    hook: ContextCacheHook, emulator: EmulatorProcess
) -> None:
    assert hook.count_tokens(model=MODEL, contents=[text_of_tokens(50)], system_instruction="Be brief.") == 53
    (request,) = [r for r in emulator.admin.requests() if r["op"] == "count_tokens"]
    body = request["body"]
    texts = [part.get("text") for content in body["contents"] for part in content["parts"]]
    if hook.backend.name == "vertex_ai":
        assert "Be brief." not in texts
        assert body["systemInstruction"]["parts"][0]["text"] == "Be brief."
    else:
        assert texts[-1] == "Be brief."  # the Developer API's countTokens has no system instruction
        assert "systemInstruction" not in body


def test_kms_keys_are_sent_on_vertex_and_refused_on_the_developer_api_before_any_call(
    emulator: EmulatorProcess, make_conn: ConnFactory
) -> None:
    key = "projects/p/locations/us-central1/keyRings/r/cryptoKeys/k"
    developer = hook_on("gemini_api", emulator, make_conn)
    with pytest.raises(CtxCacheConfigError, match=r"^kms_key_name: .*vertex_ai backend"):
        developer.create_cache(model=MODEL, contents=[text_of_tokens(2100)], kms_key_name=key)
    assert sum(emulator.admin.state()["counts"].values()) == 0

    vertex = hook_on("vertex_ai", emulator, make_conn)
    assert vertex.create_cache(model=MODEL, contents=[text_of_tokens(2100)], kms_key_name=key).name
    (create,) = [r for r in emulator.admin.requests() if r["op"] == "create_cache"]
    spec = create["body"].get("encryption_spec") or create["body"].get("encryptionSpec")
    assert spec == {"kmsKeyName": key}


def test_gs_uris_are_for_vertex_only(emulator: EmulatorProcess, make_conn: ConnFactory) -> None:
    item = {"uri": "gs://bucket/contract.pdf"}
    developer = ContentBuilder(backend=hook_on("gemini_api", emulator, make_conn).backend, allowed_roots=[])
    with pytest.raises(CtxCacheConfigError, match=r"^contents\[0\]\.uri: gs:// URIs work only on vertex_ai"):
        developer.build([item])
    vertex = ContentBuilder(backend=hook_on("vertex_ai", emulator, make_conn).backend, allowed_roots=[])
    (part,) = vertex.build([item])
    assert part.file_data is not None
    assert (part.file_data.file_uri, part.file_data.mime_type) == (
        "gs://bucket/contract.pdf",
        "application/pdf",
    )


def test_large_files_are_staged_where_each_backend_reads_them(
    emulator: EmulatorProcess, make_conn: ConnFactory
) -> None:
    developer = hook_on("gemini_api", emulator, make_conn)
    assert isinstance(developer.backend.staging_area(developer.get_conn, lambda: None), FilesApiArea)
    vertex = hook_on("vertex_ai", emulator, make_conn, staging_uri="gs://bucket/stage")
    area = vertex.backend.staging_area(vertex.get_conn, lambda: None)
    assert isinstance(area, CloudStorageArea)
    assert area.staging_uri == "gs://bucket/stage"
    override = vertex.backend.staging_area(vertex.get_conn, lambda: None, "gs://other/prefix")
    assert isinstance(override, CloudStorageArea)
    assert override.staging_uri == "gs://other/prefix"


def test_describe_says_where_calls_go_without_secrets(
    emulator: EmulatorProcess, make_conn: ConnFactory
) -> None:
    developer = hook_on("gemini_api", emulator, make_conn)
    assert developer.backend.describe() == f"gemini_api at {emulator.url}"
    vertex = hook_on("vertex_ai", emulator, make_conn)
    assert (
        vertex.backend.describe() == f"vertex_ai at {emulator.url} project=test-project location=us-central1"
    )


# -- one seam ----------------------------------------------------------------------------------------

_BRANCH = re.compile(
    r"is_vertex|(?:==|!=)\s*(?:[\"'](?:vertex_ai|gemini_api)[\"']|VERTEX_AI|GEMINI_API)"
    r"|[\"'](?:vertex_ai|gemini_api)[\"']\s*(?:==|!=)"
)
# The seam itself, the parser of the ``backend`` extra, and the emulator (which imports nothing of ours).
_ALLOWED = {"hooks/backend.py", "hooks/settings.py"}


def test_no_module_outside_the_seam_branches_on_the_backend() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative in _ALLOWED or relative.startswith("emulator/"):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if _BRANCH.search(line):
                offenders.append(f"{relative}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
