"""docs/fanout.md's claims about keys, line numbers, output lines and part names, run for real.

The input is the JSONL example on that page, asked by ``GenerateWithCacheOperator`` against the
emulator through a real connection.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from airflow_provider_ctxcache.emulator.tokens import text_of_tokens
from airflow_provider_ctxcache.exceptions import CtxCacheConfigError
from airflow_provider_ctxcache.hooks import ContextCacheHook
from airflow_provider_ctxcache.operators import GenerateWithCacheOperator
from tests.docs.markdown import DOCS, blocks_under, text_under
from tests.hooks.conftest import ConnFactory, backend_extra, make_conn  # noqa: F401  (shared fixtures)
from tests.operators.context import task_context

FANOUT = DOCS / "fanout.md"
PART_NAME = re.compile(r"^part-\d{8}T\d{12}Z-[0-9a-f]{8}-\d{5}\.jsonl$")


@pytest.fixture
def conn_id(emulator: EmulatorProcess, make_conn: ConnFactory) -> str:  # noqa: F811
    return make_conn("ctxcache_docs", **backend_extra("gemini_api", emulator))


@pytest.fixture
def cache_name(conn_id: str) -> str:
    hook = ContextCacheHook(conn_id)
    try:
        name = hook.create_cache(model="gemini-2.5-flash", contents=[text_of_tokens(2100)], ttl="30m").name
    finally:
        hook.close()
    assert name
    return name


def documented_input() -> str:
    (example, *_) = blocks_under(FANOUT, "## Input files", "")
    return example.code


def ask(conn_id: str, cache_name: str, folder: Path, input_text: str, **kwargs: Any) -> dict[str, Any]:
    (folder / "in.jsonl").write_text(input_text, encoding="utf-8")
    operator = GenerateWithCacheOperator(
        task_id="ask",
        ctxcache_conn_id=conn_id,
        cache_name=cache_name,
        input_uri=str(folder / "in.jsonl"),
        allowed_roots=[str(folder)],
        **kwargs,
    )
    result: dict[str, Any] = operator.execute(task_context())  # type: ignore[arg-type]
    return result


def test_keyless_input_lines_get_keys_counted_from_zero_as_the_docs_say(
    conn_id: str, cache_name: str, tmp_path: Path
) -> None:
    text = documented_input()
    assert text.splitlines()[2] == "", "the example has a blank line 3"
    result = ask(conn_id, cache_name, tmp_path, text)
    assert list(result["results"]) == ["q1", "prompt-00001", "prompt-00002"]
    prose = " ".join(text_under(FANOUT, "## Input files").split())
    assert "line 2 gets `prompt-00001` and line 4 gets `prompt-00002`" in prose


def test_a_bad_input_line_is_named_by_its_line_in_the_file_counted_from_one(
    conn_id: str, cache_name: str, tmp_path: Path, emulator: EmulatorProcess
) -> None:
    lines = documented_input().splitlines()
    lines[3] = '{"request": {"contents": "Which tools?", "tools": []}}'
    with pytest.raises(CtxCacheConfigError, match=r"^input_uri line 4\.request\.tools: "):
        ask(conn_id, cache_name, tmp_path, "\n".join(lines) + "\n")
    assert emulator.admin.state()["counts"]["generate_content"] == 0
    prose = " ".join(text_under(FANOUT, "## Input files").split())
    assert "`input_uri line 4.request.tools: ...`" in prose


def test_output_lines_hold_the_key_and_the_whole_response_but_not_the_request(
    conn_id: str, cache_name: str, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    result = ask(conn_id, cache_name, tmp_path, documented_input(), output_uri=str(output))
    (part,) = output.iterdir()
    assert PART_NAME.match(part.name), part.name
    lines = [json.loads(line) for line in part.read_text(encoding="utf-8").splitlines()]
    assert sorted(line["key"] for line in lines) == ["prompt-00001", "prompt-00002", "q1"]  # as answered
    for line in lines:
        assert set(line) == {"key", "response", "requestHash"}
        assert line["response"]["candidates"][0]["content"]["parts"][0]["text"]
        assert line["response"]["usageMetadata"]["cachedContentTokenCount"] == 2100
    # The page's reader gets the same answers as the task's XCom.
    namespace: dict[str, Any] = {}
    (reader,) = blocks_under(FANOUT, "## Output files", "python")
    exec(compile(reader.code, reader.where, "exec"), namespace)
    assert namespace["answers"](str(output)) == {k: v["text"] for k, v in result["results"].items()}


def test_the_part_name_the_docs_show_has_the_documented_shape() -> None:
    for page in (FANOUT, DOCS / "outputs.md"):
        shown = re.findall(r"part-\d[^`\s]*\.jsonl", page.read_text(encoding="utf-8"))
        assert shown
        assert all(PART_NAME.match(name) for name in shown), shown


def test_without_output_uri_the_answers_are_only_in_xcom(
    conn_id: str, cache_name: str, tmp_path: Path
) -> None:
    result = ask(conn_id, cache_name, tmp_path, documented_input())
    assert result["output_uri"] is None
    assert set(result["results"]) == {"q1", "prompt-00001", "prompt-00002"}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["in.jsonl"]


def test_without_output_uri_more_than_a_thousand_prompts_are_refused_before_any_call(
    conn_id: str, cache_name: str, emulator: EmulatorProcess
) -> None:
    operator = GenerateWithCacheOperator(
        task_id="ask",
        ctxcache_conn_id=conn_id,
        cache_name=cache_name,
        prompts=[f"Question {n}?" for n in range(1001)],
    )
    with pytest.raises(CtxCacheConfigError, match=r"^output_uri: 1001 prompts are too many .*at most 1000"):
        operator.execute(task_context())  # type: ignore[arg-type]
    assert emulator.admin.state()["counts"]["generate_content"] == 0
