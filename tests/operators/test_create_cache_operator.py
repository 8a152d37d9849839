"""CreateCacheOperator: contents in every form, reuse rules, and bad input refused before any cost."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from airflow_provider_ctxcache.emulator.tokens import text_of_tokens
from airflow_provider_ctxcache.exceptions import CacheTooSmallError, CtxCacheConfigError
from airflow_provider_ctxcache.hooks import ContextCacheHook
from airflow_provider_ctxcache.operators import CreateCacheOperator
from tests.hooks.conftest import ConnFactory, backend_extra
from tests.operators.context import task_context

MODEL = "gemini-2.5-flash"
CONTEXT = text_of_tokens(2200)


def create_op(conn_id: str, **kwargs: Any) -> CreateCacheOperator:
    arguments: dict[str, Any] = {
        "task_id": "create_cache",
        "model": MODEL,
        "contents": [CONTEXT],
        "ttl": "30m",
    }
    arguments.update(kwargs)
    return CreateCacheOperator(ctxcache_conn_id=conn_id, **arguments)


def billable_calls(emulator: EmulatorProcess) -> int:
    counts = emulator.admin.state()["counts"]
    return int(counts["create_cache"] + counts["generate_content"])


def test_returns_the_cache_name_and_pushes_its_facts(conn_id: str, emulator: EmulatorProcess) -> None:
    context = task_context()
    name = create_op(conn_id, system_instruction="Answer briefly.").execute(context)
    (cache,) = emulator.admin.state()["caches"]
    assert cache["name"] == name
    pushed = context["ti"].pushed
    assert pushed["model"] == MODEL
    assert pushed["token_count"] == 2200 + len("Answer briefly.") // 4 + 1
    assert pushed["reused"] is False
    assert dt.datetime.fromisoformat(pushed["expire_time"]) > dt.datetime.now(dt.timezone.utc)


def test_same_task_in_the_same_run_finds_its_cache(conn_id: str, emulator: EmulatorProcess) -> None:
    first = create_op(conn_id).execute(task_context())
    retry_context = task_context()
    assert create_op(conn_id).execute(retry_context) == first
    assert retry_context["ti"].pushed["reused"] is True
    assert emulator.admin.state()["counts"]["create_cache"] == 1


def test_another_run_gets_its_own_cache_with_reuse_run(conn_id: str, emulator: EmulatorProcess) -> None:
    first = create_op(conn_id).execute(task_context(run_id="run_a"))
    second = create_op(conn_id).execute(task_context(run_id="run_b"))
    assert first != second
    assert len(emulator.admin.state()["caches"]) == 2


def test_mapped_instances_get_one_cache_each(conn_id: str, emulator: EmulatorProcess) -> None:
    names = {create_op(conn_id).execute(task_context(map_index=i)) for i in (0, 1, 0)}
    assert len(names) == 2
    assert emulator.admin.state()["counts"]["create_cache"] == 2


def test_reuse_content_shares_one_cache_across_runs(conn_id: str, emulator: EmulatorProcess) -> None:
    first = create_op(conn_id, reuse="content").execute(task_context(run_id="run_a"))
    second = create_op(conn_id, reuse="content").execute(task_context(run_id="run_b"))
    assert first == second
    assert emulator.admin.state()["counts"]["create_cache"] == 1


def test_reuse_content_skips_a_cache_about_to_expire(conn_id: str, emulator: EmulatorProcess) -> None:
    first = create_op(conn_id, reuse="content", ttl="5m").execute(task_context(run_id="run_a"))
    second = create_op(conn_id, reuse="content", min_remaining_ttl="10m").execute(
        task_context(run_id="run_b")
    )
    assert first != second


def test_changed_content_is_a_new_cache_even_in_the_same_run(conn_id: str, emulator: EmulatorProcess) -> None:
    create_op(conn_id).execute(task_context())
    create_op(conn_id, contents=[text_of_tokens(2300)]).execute(task_context())
    assert emulator.admin.state()["counts"]["create_cache"] == 2


def test_reuse_never_always_creates_each_with_its_own_key(conn_id: str, emulator: EmulatorProcess) -> None:
    create_op(conn_id, reuse="never", display_name="plain").execute(task_context())
    create_op(conn_id, reuse="never", display_name="plain").execute(task_context())
    names = [c["displayName"] for c in emulator.admin.state()["caches"]]
    assert len(names) == 2
    assert all(
        name.startswith("plain @adhoc_airflow/manual__2026-01-01T00:00:00+00:00 ctxcache:n:")
        for name in names
    )
    assert names[0] != names[1]


def test_display_name_keeps_the_users_prefix(conn_id: str, emulator: EmulatorProcess) -> None:
    create_op(conn_id, display_name="contracts-2026").execute(task_context())
    (cache,) = emulator.admin.state()["caches"]
    # The prefix, then the DAG and run that made it (cache_owner), then the reuse key.
    assert cache["displayName"].startswith(
        "contracts-2026 @adhoc_airflow/manual__2026-01-01T00:00:00+00:00 ctxcache:r:"
    )
    assert len(cache["displayName"]) <= 128


def test_files_and_folders_under_allowed_roots_are_cached(
    conn_id: str, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "a.md").write_text(text_of_tokens(1100))
    (docs / "sub" / "b.txt").write_text(text_of_tokens(1100))
    (docs / ".hidden").write_text("ignored")
    context = task_context()
    create_op(conn_id, contents=[{"file": str(docs)}], allowed_roots=[str(tmp_path)]).execute(context)
    assert context["ti"].pushed["token_count"] == 2200


def test_binary_files_go_inline_with_their_mime_type(
    conn_id: str, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    pdf = tmp_path / "scan.pdf"
    pdf.write_bytes(b"%PDF-1.4 " + bytes(range(256)) * 20)
    create_op(conn_id, contents=[CONTEXT, {"file": str(pdf)}], allowed_roots=[str(tmp_path)]).execute(
        task_context()
    )
    (request,) = [r for r in emulator.admin.requests() if r["op"] == "create_cache"]
    inline = request["body"]["contents"][0]["parts"][1]["inlineData"]
    # The SDK sends this field snake_case; the service takes either spelling.
    assert inline.get("mimeType", inline.get("mime_type")) == "application/pdf"


def test_allowed_roots_come_from_airflow_config(
    conn_id: str, emulator: EmulatorProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "doc.txt").write_text(CONTEXT)
    monkeypatch.setenv("AIRFLOW__CTXCACHE__ALLOWED_ROOTS", f"/nonexistent,{tmp_path}")
    assert create_op(conn_id, contents=[{"file": str(tmp_path / "doc.txt")}]).execute(task_context())


def test_vertex_takes_gs_uris(emulator: EmulatorProcess, make_conn: ConnFactory) -> None:
    conn = make_conn("op_vertex", **backend_extra("vertex_ai", emulator))
    contents = [CONTEXT, {"uri": "gs://bucket/contract.pdf"}]
    assert create_op(conn, contents=contents).execute(task_context()).startswith("projects/")


# -- bad input: refused with the field's name, before any billable call --------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"contents": []}, "contents"),
        ({"contents": ["   "]}, "contents"),
        ({"contents": [{"pdf": "x"}]}, "contents[0]"),
        ({"contents": [{"text": 5}]}, "contents[0].text"),
        ({"ttl": "1h", "expire_time": "2099-01-01T00:00:00+00:00"}, "ttl, expire_time"),
        ({"ttl": 0}, "ttl"),
        ({"ttl": "-5m"}, "ttl"),
        ({"ttl": "forever"}, "ttl"),
        ({"ttl": None, "expire_time": "2099-01-01T00:00:00"}, "expire_time"),
        ({"ttl": None, "expire_time": "2001-01-01T00:00:00+00:00"}, "expire_time"),
        ({"reuse": "sometimes"}, "reuse"),
        ({"model": ""}, "model"),
        ({"min_remaining_ttl": "-1m"}, "min_remaining_ttl"),
        ({"contents": [{"uri": "gs://bucket/a.pdf"}]}, "contents[0].uri"),
        ({"contents": [{"uri": "https://example.test/blob"}]}, "contents[0].mime_type"),
    ],
    ids=[
        "empty",
        "blank",
        "unknown-item",
        "text-not-string",
        "ttl-and-expire",
        "ttl-zero",
        "ttl-negative",
        "ttl-garbage",
        "expire-naive",
        "expire-past",
        "reuse-unknown",
        "model-empty",
        "min-remaining-negative",
        "gs-on-developer-api",
        "uri-without-mime",
    ],
)
def test_bad_arguments_are_refused_before_any_call(
    emulator: EmulatorProcess, make_conn: ConnFactory, kwargs: dict[str, Any], field: str
) -> None:
    conn = make_conn("op_dev", **backend_extra("gemini_api", emulator))
    with pytest.raises(CtxCacheConfigError) as raised:
        create_op(conn, **kwargs).execute(task_context())
    assert str(raised.value).startswith(f"{field}:")
    assert emulator.admin.state()["counts"]["create_cache"] == 0
    assert emulator.admin.state()["counts"]["count_tokens"] == 0


def test_file_outside_allowed_roots_is_refused(
    conn_id: str, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text(CONTEXT)
    for path in (str(secret), f"{allowed}/../secret.txt", "/etc/passwd"):
        with pytest.raises(
            CtxCacheConfigError, match=r"^contents\[0\]\.file: .* is outside the allowed roots"
        ):
            create_op(conn_id, contents=[{"file": path}], allowed_roots=[str(allowed)]).execute(
                task_context()
            )
    assert billable_calls(emulator) == 0


def test_symlink_out_of_allowed_roots_is_refused(
    conn_id: str, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (tmp_path / "secret.txt").write_text(CONTEXT)
    (allowed / "link.txt").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(CtxCacheConfigError, match="outside the allowed roots"):
        create_op(
            conn_id, contents=[{"file": str(allowed / "link.txt")}], allowed_roots=[str(allowed)]
        ).execute(task_context())


def test_local_files_are_off_until_a_root_is_allowed(conn_id: str, tmp_path: Path) -> None:
    (tmp_path / "doc.txt").write_text(CONTEXT)
    with pytest.raises(CtxCacheConfigError, match=r"^contents\[0\]\.file: local files are disabled"):
        create_op(conn_id, contents=[{"file": str(tmp_path / "doc.txt")}]).execute(task_context())


def test_content_below_the_minimum_fails_with_both_numbers_and_no_create(
    conn_id: str, emulator: EmulatorProcess
) -> None:
    with pytest.raises(
        CacheTooSmallError, match=r"^contents: the cached content is 500 tokens but the minimum"
    ):
        create_op(conn_id, contents=[text_of_tokens(500)]).execute(task_context())
    assert emulator.admin.state()["counts"]["create_cache"] == 0


def test_unknown_backend_is_refused_before_any_call(
    emulator: EmulatorProcess, make_conn: ConnFactory
) -> None:
    conn = make_conn("op_bad_backend", backend="anthropic", base_url=emulator.url)
    with pytest.raises(CtxCacheConfigError, match=r"^extra\.backend: 'anthropic' is not a backend"):
        create_op(conn).execute(task_context())
    assert sum(emulator.admin.state()["counts"].values()) == 0


# -- `airflow tasks test`: one task alone, no teardown after it ---------------------------------------

TEMPORARY_RUN = "__airflow_temporary_run_2026-11-02T00:00:00+00:00__"  # what `tasks test` names its run


def lifetime(conn_id: str, name: str) -> dt.timedelta:
    cache = ContextCacheHook(conn_id).get_cache(name)
    assert cache.create_time is not None
    assert cache.expire_time is not None
    return cache.expire_time - cache.create_time


def test_a_single_task_test_makes_a_ten_minute_cache_and_logs_how_to_delete_it(
    conn_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    name = create_op(conn_id, ttl=None).execute(task_context(run_id=TEMPORARY_RUN))

    assert lifetime(conn_id, name) == dt.timedelta(minutes=10)
    logged = capsys.readouterr().out
    assert (
        "airflow tasks test runs this task alone: no teardown will delete the cache, so it lives " in logged
    )
    assert "10 min instead of 1 h" in logged
    assert (
        f"Delete it when done: ctxcache caches delete {name} --conn-id {conn_id} (else it expires " in logged
    )


@pytest.mark.parametrize(
    ("ttl", "expires_in", "kept"),
    [("5m", None, 5), ("2h", None, 10), (None, 3, 3), (None, 120, 10)],
    ids=[
        "shorter-ttl-kept",
        "longer-ttl-shortened",
        "sooner-expire-time-kept",
        "later-expire-time-shortened",
    ],
)
def test_a_single_task_test_keeps_a_shorter_lifetime_and_shortens_a_longer_one(
    conn_id: str, ttl: str | None, expires_in: int | None, kept: int
) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    expire_time = None if expires_in is None else now + dt.timedelta(minutes=expires_in)

    name = create_op(conn_id, ttl=ttl, expire_time=expire_time).execute(task_context(run_id=TEMPORARY_RUN))

    if expires_in == kept:  # the given moment itself, to the microsecond
        assert ContextCacheHook(conn_id).get_cache(name).expire_time == expire_time
    else:
        assert lifetime(conn_id, name) == dt.timedelta(minutes=kept)


def test_airflow_test_mode_marks_a_single_task_test_even_in_an_existing_run(
    conn_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_TEST_MODE", "True")  # what `airflow tasks test` sets, whatever the run

    name = create_op(conn_id, ttl=None).execute(task_context(run_id="scheduled__2026-11-02T00:00:00+00:00"))

    assert lifetime(conn_id, name) == dt.timedelta(minutes=10)


def test_a_dag_run_keeps_the_default_hour_and_logs_no_delete_command(
    conn_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    name = create_op(conn_id, ttl=None).execute(task_context(run_id="manual__2026-11-02T00:00:00+00:00"))

    assert lifetime(conn_id, name) == dt.timedelta(hours=1)
    assert "ctxcache caches delete" not in capsys.readouterr().out
