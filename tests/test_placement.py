"""Local paths on more than one machine: refused before any billable call unless every worker
mounts them (issue 12). The executor comes from Airflow's own config, set here through its
environment variable as a deployment would."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from airflow_provider_ctxcache.emulator.tokens import text_of_tokens
from airflow_provider_ctxcache.exceptions import CtxCacheConfigError
from airflow_provider_ctxcache.fanout.inputs import open_input
from airflow_provider_ctxcache.fanout.shards import shard_input
from airflow_provider_ctxcache.operators import CreateCacheOperator, GenerateWithCacheOperator
from airflow_provider_ctxcache.placement import (
    check_local_paths,
    configured_executors,
    configured_shared_filesystem,
    distributed_executor,
)
from tests.hooks.conftest import ConnFactory, backend_extra, make_conn  # noqa: F401 (a fixture)
from tests.operators.context import task_context


@pytest.fixture
def celery(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
    monkeypatch.delenv("AIRFLOW__CTXCACHE__SHARED_FILESYSTEM", raising=False)


def write_requests(path: Path, n: int) -> Path:
    path.write_text(
        "".join(json.dumps({"key": f"k{i}", "request": {"contents": "q"}}) + "\n" for i in range(n))
    )
    return path


@pytest.mark.parametrize(
    ("setting", "names"),
    [
        ("LocalExecutor", ["LocalExecutor"]),
        ("CeleryExecutor,LocalExecutor", ["CeleryExecutor", "LocalExecutor"]),
        ("fast:airflow.providers.celery.executors.celery_executor.CeleryExecutor", ["CeleryExecutor"]),
        ("", []),
    ],
)
def test_the_configured_executors_are_read_by_class_name(
    monkeypatch: pytest.MonkeyPatch, setting: str, names: list[str]
) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", setting)
    assert configured_executors() == names


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("LocalExecutor", None),
        ("CeleryExecutor", "CeleryExecutor"),
        ("KubernetesExecutor", "KubernetesExecutor"),
        ("LocalExecutor,KubernetesExecutor", "KubernetesExecutor"),
    ],
)
def test_any_executor_that_runs_tasks_elsewhere_counts_as_distributed(
    monkeypatch: pytest.MonkeyPatch, setting: str, expected: str | None
) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", setting)
    assert distributed_executor() == expected


def test_gs_uris_and_empty_fields_pass_on_a_distributed_executor(celery: None) -> None:
    check_local_paths({"input_uri": "gs://b/in.jsonl", "output_uri": None, "shards_uri": ""})


def test_a_local_path_on_celery_is_refused_naming_the_field_and_the_fixes(celery: None) -> None:
    with pytest.raises(CtxCacheConfigError) as refused:
        check_local_paths({"output_uri": "/data/answers/"})
    message = str(refused.value)
    assert message.startswith(
        "output_uri: '/data/answers/' is a local path, but the tasks run on CeleryExecutor"
    )
    assert "gs://" in message
    assert "shared_filesystem=True" in message


def test_the_operators_shared_filesystem_declaration_lets_a_local_path_through(celery: None) -> None:
    check_local_paths({"output_uri": "/mnt/shared/answers/"}, shared_filesystem=True)


def test_the_config_options_shared_filesystem_declaration_lets_a_local_path_through(
    celery: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__CTXCACHE__SHARED_FILESYSTEM", "True")
    check_local_paths({"output_uri": "/mnt/shared/answers/"})


def test_the_operator_argument_wins_over_the_config_option(
    celery: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__CTXCACHE__SHARED_FILESYSTEM", "True")
    with pytest.raises(CtxCacheConfigError, match=r"^input_uri:"):
        check_local_paths({"input_uri": "/data/in.jsonl"}, shared_filesystem=False)


def test_a_shared_filesystem_option_that_is_not_a_boolean_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIRFLOW__CTXCACHE__SHARED_FILESYSTEM", "sometimes")
    with pytest.raises(CtxCacheConfigError, match=r"^\[ctxcache\] shared_filesystem"):
        configured_shared_filesystem()


def test_local_paths_pass_on_the_local_executor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
    check_local_paths({"input_uri": "/data/in.jsonl", "output_uri": "/data/out/"})


def shard_locally(folder: Path, **kwargs: Any) -> list[dict[str, str]]:
    """10 requests in 2 local shards under ``folder``."""
    source = write_requests(folder / "in.jsonl", 10)
    return shard_input(
        str(source),
        shard_size=5,
        shards_uri=str(folder / "shards"),
        output_uri=str(folder / "answers"),
        storage_client_factory=lambda: None,
        allowed_roots=[str(folder)],
        **kwargs,
    )


def test_shard_input_on_celery_with_local_paths_writes_no_shard(celery: None, tmp_path: Path) -> None:
    with pytest.raises(CtxCacheConfigError, match=r"^shards_uri: .* is a local path"):
        shard_locally(tmp_path)
    assert not (tmp_path / "shards").exists()


def test_shard_input_on_celery_with_a_declared_shared_filesystem_writes_the_shards(
    celery: None, tmp_path: Path
) -> None:
    shards = shard_locally(tmp_path, shared_filesystem=True)
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == [
        "shard-00000.jsonl",
        "shard-00001.jsonl",
    ]
    assert len(shards) == 2


def test_a_missing_shard_file_says_it_may_have_been_written_on_another_worker(tmp_path: Path) -> None:
    missing = tmp_path / "shards" / "shard-00003.jsonl"
    missing.parent.mkdir()

    with pytest.raises(CtxCacheConfigError) as refused:
        open_input(str(missing), storage_client_factory=lambda: None, allowed_roots=[str(tmp_path)])
    message = str(refused.value)
    assert "does not exist on this worker" in message
    assert "shard_input may have written it on another worker" in message
    assert "gs://" in message


def test_a_create_on_celery_with_a_local_input_makes_no_call(
    celery: None,
    emulator: EmulatorProcess,
    make_conn: ConnFactory,  # noqa: F811
    tmp_path: Path,
) -> None:
    conn_id = make_conn("placement_create", **backend_extra("gemini_api", emulator))
    source = write_requests(tmp_path / "in.jsonl", 3)
    create = CreateCacheOperator(
        task_id="create_cache",
        ctxcache_conn_id=conn_id,
        model="gemini-2.5-flash",
        contents=[text_of_tokens(2200)],
        input_uri=str(source),
        output_uri=str(tmp_path / "out"),
    )

    with pytest.raises(CtxCacheConfigError, match=r"^input_uri: .* is a local path, but the tasks run on"):
        create.execute(task_context())
    assert emulator.admin.requests() == []


def test_a_fan_out_on_celery_with_a_local_output_makes_no_call(
    celery: None,
    emulator: EmulatorProcess,
    make_conn: ConnFactory,  # noqa: F811
    tmp_path: Path,
) -> None:
    conn_id = make_conn("placement_ask", **backend_extra("gemini_api", emulator))
    ask = GenerateWithCacheOperator(
        task_id="ask",
        ctxcache_conn_id=conn_id,
        cache_name="cachedContents/abc",
        prompts=["One?"],
        output_uri=str(tmp_path / "out"),
        allowed_roots=[str(tmp_path)],
    )

    with pytest.raises(CtxCacheConfigError, match=r"^output_uri: .* is a local path, but the tasks run on"):
        ask.execute(task_context())
    assert emulator.admin.requests() == []
    assert not (tmp_path / "out").exists()
