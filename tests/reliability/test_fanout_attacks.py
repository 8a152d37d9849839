"""Hardening, round two: inputs and resumes that used to cost money or lose answers.

Each test is a case an adversarial pass found getting through (issue 11, items 5 to 10); each
runs the real operator over real HTTP against the emulator, with real files.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from airflow_provider_ctxcache.exceptions import CtxCacheConfigError
from tests.dags.conftest import DagRunner, task_states, xcom
from tests.hooks.conftest import ConnFactory, backend_extra
from tests.operators.context import task_context
from tests.reliability.conftest import billable, fan_out, new_cache, write_input

VERTEX_LIMIT = 10 * 1024 * 1024  # the inline request bound on Vertex (hooks/backend.py)


def asked(emulator: EmulatorProcess) -> int:
    return billable(emulator)["generate_content"]


def line(key: str, text: str) -> str:
    return json.dumps({"key": key, "request": {"contents": [{"role": "user", "parts": [{"text": text}]}]}})


# ---- 5: a request over the request-size limit ------------------------------------------------------


@pytest.fixture
def vertex(emulator: EmulatorProcess, make_conn: ConnFactory) -> str:
    return make_conn("ctxcache_vertex_attacks", **backend_extra("vertex_ai", emulator))


def test_a_jsonl_line_over_the_request_limit_is_refused_before_any_call(
    vertex: str, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    name = new_cache(vertex)
    with (tmp_path / "in.jsonl").open("w") as out:
        out.write(line("small", "Hi?") + "\n")
        out.write(line("huge", "x" * (VERTEX_LIMIT + 1000)) + "\n")

    with pytest.raises(CtxCacheConfigError, match=r"^input_uri line 2: longer than 10,485,760 bytes"):
        fan_out(vertex, name, tmp_path).execute(task_context())
    assert asked(emulator) == 0


def test_a_prompt_over_the_request_limit_is_refused_naming_its_key_and_size(
    vertex: str, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    name = new_cache(vertex)
    prompts = ["Hi?", {"key": "big", "request": {"contents": "y" * (VERTEX_LIMIT + 10)}}]
    operator = fan_out(vertex, name, tmp_path, input_uri=None, output_uri=None, prompts=prompts)

    with pytest.raises(
        CtxCacheConfigError, match=r"^prompts\[1\]: request 'big' is 10,485,\d{3} bytes, over"
    ):
        operator.execute(task_context())
    assert asked(emulator) == 0


# ---- 6: a key that cannot be written ---------------------------------------------------------------


def test_a_key_with_a_lone_surrogate_is_refused_at_validation(
    conn: str, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    name = new_cache(conn)
    lone = line("K", "Bad key?").replace('"K"', '"\\ud800"')  # JSON's escape for a lone surrogate
    (tmp_path / "in.jsonl").write_text(line("fine", "Hi?") + "\n" + lone + "\n")

    with pytest.raises(CtxCacheConfigError, match=r"^input_uri line 2\.key: .*lone surrogate"):
        fan_out(conn, name, tmp_path).execute(task_context())
    assert asked(emulator) == 0


# ---- 7: an output folder that cannot be written ----------------------------------------------------


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Iterator[Path]:
    """A folder mounted read-only: even root cannot write there."""
    folder = tmp_path / "out"
    folder.mkdir()
    mounted = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {mounted.stderr.decode().strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], check=True, capture_output=True)
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False, capture_output=True)


def test_an_output_folder_that_cannot_be_written_fails_before_any_call(
    conn: str, emulator: EmulatorProcess, tmp_path: Path, read_only_folder: Path
) -> None:
    name = new_cache(conn)
    write_input(tmp_path / "in.jsonl", 3)

    with pytest.raises(CtxCacheConfigError, match=r"^output_uri: cannot write in .*Read-only file system"):
        fan_out(conn, name, tmp_path, output_uri=str(read_only_folder)).execute(task_context())
    assert asked(emulator) == 0


# ---- 8: a resume that would hand old answers to new questions -------------------------------------


def test_a_changed_prompt_list_on_the_same_output_fails_before_any_call_naming_the_keys(
    conn: str, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    name = new_cache(conn)
    first = ["Which law governs?", "Who owns deliverables?"]
    fan_out(conn, name, tmp_path, input_uri=None, prompts=first).execute(task_context())
    before = asked(emulator)
    changed = ["What is the notice period?", "Who owns deliverables?"]  # prompt-00000 is a new question

    with pytest.raises(
        CtxCacheConfigError, match=r"^output_uri: 1 keys .*\('prompt-00000'\).*new output_uri"
    ):
        fan_out(conn, name, tmp_path, input_uri=None, prompts=changed).execute(task_context())
    assert asked(emulator) == before


def test_the_same_prompts_on_the_same_output_resume_without_asking_again(
    conn: str, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    name = new_cache(conn)
    prompts = ["Which law governs?", "Who owns deliverables?"]
    fan_out(conn, name, tmp_path, input_uri=None, prompts=prompts).execute(task_context())
    before = asked(emulator)

    again = fan_out(conn, name, tmp_path, input_uri=None, prompts=prompts).execute(task_context())

    assert again["summary"]["skipped_already_answered"] == 2
    assert asked(emulator) == before


def test_answers_written_before_request_hashes_existed_still_count(
    conn: str, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    name = new_cache(conn)
    write_input(tmp_path / "in.jsonl", 2)
    (tmp_path / "out").mkdir()
    old = [
        {"key": k, "response": {"candidates": [{"content": {"parts": [{"text": "old"}]}}]}}
        for k in ("q00000",)
    ]
    part = tmp_path / "out" / "part-20260101T000000000000Z-00000000-00000.jsonl"
    part.write_text("".join(json.dumps(r) + "\n" for r in old))

    result = fan_out(conn, name, tmp_path).execute(task_context())

    assert result["summary"]["skipped_already_answered"] == 1
    assert asked(emulator) == 1


# ---- 9: a task stopped mid-run keeps what was paid for ---------------------------------------------


def test_an_execution_timeout_without_output_keeps_the_answers_received(
    run_dag: DagRunner, emulator: EmulatorProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    # 400 prompts one at a time, each answered after 50 ms: about 20 s of work against a 4 s
    # timeout, so the timeout lands mid-run with answers already received (never a close race).
    emulator.admin.faults(latency_ms=50, ops=["generate_content"])

    run = run_dag("ctxcache_test_timeout")

    assert task_states(run)["ask"] == "failed"
    partial: dict[str, Any] = xcom(run, "ask", "partial_results") or {}
    answered = asked(emulator)
    assert 0 < len(partial) <= answered < 400
    logged = capsys.readouterr().out
    assert all(f"Answer {key!r}" in logged for key in partial)
    assert task_states(run)["delete_cache"] == "success"


# ---- 10: a stored line whose response is not an object ---------------------------------------------


def test_a_stored_line_whose_response_is_not_an_object_is_asked_again_with_a_warning(
    conn: str, emulator: EmulatorProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = new_cache(conn)
    write_input(tmp_path / "in.jsonl", 2)
    (tmp_path / "out").mkdir()
    part = tmp_path / "out" / "part-20260101T000000000000Z-00000000-00000.jsonl"
    part.write_text(json.dumps({"key": "q00000", "response": "not an object"}) + "\n")

    result = fan_out(conn, name, tmp_path).execute(task_context())

    assert result["summary"]["succeeded"] == 2
    assert asked(emulator) == 2
    assert f"{part.name} line 1" in capsys.readouterr().out
