"""Batch-shaped result parts, local and on the real GCS emulator: naming, resume scans, compaction."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from google.genai import types

from airflow_provider_ctxcache.exceptions import CtxCacheConfigError
from airflow_provider_ctxcache.fanout.outputs import (
    PART_PATTERN,
    ResultSink,
    error_record,
    open_output,
    response_record,
)
from tests.gcs import PLACES, Place, make_place, storage_client

REPO = Path(__file__).resolve().parents[2]
PART_NAME = re.compile(r"^part-(\d{8}T\d{12}Z-[0-9a-f]{8})-(\d{5})\.jsonl$")


@pytest.fixture(params=PLACES)
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    """Each test that takes it runs twice: on the local disk and on the GCS emulator."""
    return make_place(request, tmp_path)


def answer(key: str, text: str = "yes") -> dict[str, Any]:
    return response_record(key, {"candidates": [{"content": {"parts": [{"text": text}], "role": "model"}}]})


def failure(key: str, message: str = "boom") -> dict[str, Any]:
    return error_record(key, code=503, status="UNAVAILABLE", message=message)


def sink_at(place: Place, folder: str = "out", **options: Any) -> ResultSink:
    return open_output(
        place.uri(folder), storage_client_factory=place.factory, allowed_roots=place.allowed_roots, **options
    )


def lines_of(place: Place, folder: str, name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in place.get(f"{folder}/{name}").splitlines() if line.strip()]


def all_lines(place: Place, folder: str = "out") -> list[dict[str, Any]]:
    return [line for name in place.names(folder) for line in lines_of(place, folder, name)]


def test_parts_are_named_per_attempt_and_rolled_every_part_size(place: Place) -> None:
    with sink_at(place, part_size=3) as sink:
        for i in range(7):
            sink.write(answer(f"k{i}"))

    names = place.names("out")
    matches = [PART_NAME.match(name) for name in names]
    assert all(matches), names
    assert {m[1] for m in matches if m} == {sink.attempt}
    assert [m[2] for m in matches if m] == ["00000", "00001", "00002"]
    assert [len(lines_of(place, "out", name)) for name in names] == [3, 3, 1]
    assert [line["key"] for line in all_lines(place)] == [f"k{i}" for i in range(7)]


def test_output_lines_have_the_batch_output_shape(place: Place) -> None:
    with sink_at(place) as sink:
        sink.write(answer("a", "hello"))
        sink.write(failure("b", "server busy"))

    assert all_lines(place) == [
        {
            "key": "a",
            "response": {"candidates": [{"content": {"parts": [{"text": "hello"}], "role": "model"}}]},
        },
        {"key": "b", "error": {"code": 503, "status": "UNAVAILABLE", "message": "server busy"}},
    ]


def test_two_open_output_calls_on_one_uri_never_overwrite_each_other(place: Place) -> None:
    first = sink_at(place)
    second = sink_at(place)
    first.write(answer("a", "first"))
    second.write(answer("a", "second"))
    first.close()
    second.close()

    assert first.attempt != second.attempt
    assert len(place.names("out")) == 2
    assert sorted(
        line["response"]["candidates"][0]["content"]["parts"][0]["text"] for line in all_lines(place)
    ) == [
        "first",
        "second",
    ]


def test_a_local_output_folder_is_created(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b"
    with open_output(str(target), storage_client_factory=_no_client, allowed_roots=[str(tmp_path)]) as sink:
        sink.write(answer("a"))
    assert len(list(target.glob("part-*.jsonl"))) == 1


def test_local_lines_are_on_disk_as_soon_as_written(tmp_path: Path) -> None:
    sink = open_output(str(tmp_path), storage_client_factory=_no_client, allowed_roots=[str(tmp_path)])
    sink.write(answer("a"))
    sink.write(answer("b"))

    (part,) = tmp_path.glob("part-*.jsonl")
    assert [json.loads(line)["key"] for line in part.read_bytes().splitlines()] == ["a", "b"]
    sink.close()


def test_a_killed_writer_loses_no_written_line(tmp_path: Path) -> None:
    script = (
        "import os, signal, sys\n"
        "from airflow_provider_ctxcache.fanout.outputs import open_output, response_record\n"
        "sink = open_output(\n"
        "    sys.argv[1], storage_client_factory=None, allowed_roots=[sys.argv[1]], part_size=300\n"
        ")\n"
        "for i in range(1000):\n"
        "    sink.write(response_record(f'k{i}', {'candidates': []}))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=REPO, check=False, timeout=60)
    assert result.returncode == -signal.SIGKILL

    scan = open_output(str(tmp_path), storage_client_factory=_no_client, allowed_roots=[str(tmp_path)]).scan()
    assert scan.answered == {f"k{i}" for i in range(1000)}
    assert (scan.lines, scan.torn, scan.parts) == (1000, 0, 4)


def test_scan_reports_answered_failed_and_counts(place: Place) -> None:
    with sink_at(place, part_size=2) as sink:
        sink.write(failure("a"))
        sink.write(answer("b"))
        sink.write(failure("c"))
        sink.write(failure("c"))
        sink.write(answer("a"))  # answered after an earlier error

    scan = sink_at(place).scan()
    assert scan.answered == {"a", "b"}
    assert scan.failed == {"c"}
    assert (scan.lines, scan.torn, scan.parts) == (5, 0, 3)


def test_scan_after_a_crash_counts_the_torn_half_line(tmp_path: Path) -> None:
    sink = open_output(str(tmp_path), storage_client_factory=_no_client, allowed_roots=[str(tmp_path)])
    sink.write(answer("a"))
    sink.write(failure("b"))
    (part,) = tmp_path.glob("part-*.jsonl")
    with part.open("ab") as handle:  # what a process killed mid-write leaves behind
        handle.write(json.dumps(answer("c")).encode()[:25])

    scan = open_output(str(tmp_path), storage_client_factory=_no_client, allowed_roots=[str(tmp_path)]).scan()
    assert scan.answered == {"a"}
    assert scan.failed == {"b"}
    assert (scan.lines, scan.torn) == (3, 1)


def test_scan_of_an_empty_output_is_empty(place: Place) -> None:
    scan = sink_at(place).scan()
    assert (scan.answered, scan.failed, scan.lines, scan.torn, scan.parts) == (set(), set(), 0, 0, 0)


def test_files_that_are_not_parts_are_ignored(place: Place) -> None:
    place.put("out/notes.jsonl", b"not json\n")
    place.put("out/sub/part-x-00000.jsonl", json.dumps(answer("nested")).encode())
    with sink_at(place) as sink:
        sink.write(answer("a"))

    scan = sink_at(place).scan()
    assert (scan.answered, scan.torn) == ({"a"}, 0)


def test_compact_leaves_one_line_per_key_preferring_responses(place: Place) -> None:
    with sink_at(place) as earlier:
        earlier.write(failure("a", "a-1"))
        earlier.write(failure("b", "b-1"))
        earlier.write(answer("c", "c-first"))
    with sink_at(place) as later:
        later.write(answer("a", "a-answer"))
        later.write(failure("b", "b-2"))
        later.write(answer("c", "c-again"))
        later.write(answer("d", "d-answer"))
        later.write(failure("a", "a-after-answer"))

    dropped = sink_at(place).compact()

    assert dropped == 4
    by_key = {line["key"]: line for line in all_lines(place)}
    assert len(all_lines(place)) == len(by_key) == 4
    assert by_key["a"]["response"]["candidates"][0]["content"]["parts"][0]["text"] == "a-answer"
    assert by_key["b"]["error"]["message"] == "b-2"
    assert by_key["c"]["response"]["candidates"][0]["content"]["parts"][0]["text"] == "c-first"
    assert "response" in by_key["d"]
    scan = sink_at(place).scan()
    assert (scan.answered, scan.failed, scan.torn) == ({"a", "c", "d"}, {"b"}, 0)


def test_compact_drops_torn_lines(tmp_path: Path) -> None:
    sink = open_output(str(tmp_path), storage_client_factory=_no_client, allowed_roots=[str(tmp_path)])
    sink.write(answer("a"))
    sink.write(answer("b"))
    (part,) = tmp_path.glob("part-*.jsonl")
    with part.open("ab") as handle:
        handle.write(b'{"key": "c", "respo')

    assert sink.compact() == 1
    assert [json.loads(line)["key"] for line in part.read_bytes().splitlines()] == ["a", "b"]
    assert part.read_bytes().endswith(b"\n")
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left


def test_compact_rewrites_only_parts_that_need_it(place: Place) -> None:
    with sink_at(place, part_size=2) as sink:
        sink.write(answer("a"))
        sink.write(answer("b"))
        sink.write(failure("c"))
        sink.write(answer("c"))
    clean, _dirty = place.names("out")
    clean_version = place.version(f"out/{clean}")

    assert sink.compact() == 1
    assert place.version(f"out/{clean}") == clean_version
    (rewritten,) = [name for name in place.names("out") if name != clean]
    assert [line["key"] for line in lines_of(place, "out", rewritten)] == ["c"]
    assert PART_PATTERN.match(rewritten)
    assert sink.compact() == 0
    assert place.names("out") == [clean, rewritten]


def test_a_run_into_an_empty_output_has_nothing_to_compact_and_rewrites_nothing(place: Place) -> None:
    sink = sink_at(place, part_size=2)
    assert sink.scan().lines == 0
    for key in "abc":
        sink.write(answer(key))
    sink.close()
    versions = {name: place.version(f"out/{name}") for name in place.names("out")}

    assert sink.compact() == 0
    assert {name: place.version(f"out/{name}") for name in place.names("out")} == versions


def test_an_attempt_that_wrote_beside_this_one_is_still_compacted(place: Place) -> None:
    sink = sink_at(place)
    assert sink.scan().lines == 0
    sink.write(answer("a"))
    with sink_at(place) as other:  # e.g. an earlier try still running
        other.write(answer("a"))

    assert sink.compact() == 1
    assert [line["key"] for line in all_lines(place)] == ["a"]


def test_compact_removes_a_part_left_empty(place: Place) -> None:
    with sink_at(place, part_size=1) as sink:
        sink.write(answer("a"))
        sink.write(answer("a"))

    assert sink.compact() == 1
    assert len(place.names("out")) == 1


def test_writes_after_compact_go_to_a_new_part(place: Place) -> None:
    sink = sink_at(place)
    sink.write(failure("a"))
    sink.write(answer("a"))
    assert sink.compact() == 1
    sink.write(answer("b"))
    sink.close()

    assert [line["key"] for line in all_lines(place)] == ["a", "b"]
    assert len(place.names("out")) == 2


def test_records_yields_every_part_in_order(place: Place) -> None:
    with sink_at(place, part_size=2) as sink:
        for i in range(5):
            sink.write(answer(f"k{i}"))

    assert [record["key"] for record in sink_at(place).records()] == [f"k{i}" for i in range(5)]


def test_gcs_uploads_a_part_when_part_size_lines_are_buffered_and_on_close(gcs_bucket: str) -> None:
    place = Place.gcs(gcs_bucket)
    sink = sink_at(place, part_size=5, flush_seconds=3600)
    for i in range(4):
        sink.write(answer(f"k{i}"))
    assert place.names("out") == []

    sink.write(answer("k4"))
    assert len(place.names("out")) == 1

    sink.write(answer("k5"))
    sink.write(answer("k6"))
    assert len(place.names("out")) == 1
    sink.close()
    sink.close()  # idempotent
    assert [len(lines_of(place, "out", name)) for name in place.names("out")] == [5, 2]


def test_gcs_flush_uploads_the_buffer(gcs_bucket: str) -> None:
    place = Place.gcs(gcs_bucket)
    sink = sink_at(place, flush_seconds=3600)
    sink.write(answer("a"))
    sink.flush()
    sink.flush()  # nothing buffered: no empty part

    assert [line["key"] for line in all_lines(place)] == ["a"]
    sink.close()
    assert len(place.names("out")) == 1


def test_gcs_uploads_on_write_once_flush_seconds_have_passed(gcs_bucket: str) -> None:
    place = Place.gcs(gcs_bucket)
    sink = sink_at(place, flush_seconds=0.3)
    sink.write(answer("a"))
    assert place.names("out") == []
    time.sleep(0.35)
    sink.write(answer("b"))

    assert [line["key"] for line in all_lines(place)] == ["a", "b"]
    sink.close()


def test_gcs_scan_sees_this_attempts_buffered_lines(gcs_bucket: str) -> None:
    sink = sink_at(Place.gcs(gcs_bucket), flush_seconds=3600)
    sink.write(answer("a"))
    assert sink.scan().answered == {"a"}
    sink.close()


def test_twenty_thousand_lines_are_written_quickly(place: Place) -> None:
    record = answer("x", "a typical short answer " * 4)
    with sink_at(place) as sink:
        for i in range(20_000):
            record["key"] = f"key-{i:06d}"
            sink.write(record)

    scan = sink_at(place).scan()
    assert len(scan.answered) == scan.lines == 20_000
    assert len(place.names("out")) == 20


def test_response_record_turns_an_sdk_response_into_rest_json() -> None:
    response = types.GenerateContentResponse(
        candidates=[types.Candidate(content=types.Content(role="model", parts=[types.Part(text="hi")]))],
        usage_metadata=types.GenerateContentResponseUsageMetadata(
            prompt_token_count=1200, cached_content_token_count=1100, candidates_token_count=3
        ),
        model_version="gemini-2.5-flash",
    )

    assert response_record("q1", response) == {
        "key": "q1",
        "response": {
            "candidates": [{"content": {"role": "model", "parts": [{"text": "hi"}]}}],
            "usageMetadata": {
                "promptTokenCount": 1200,
                "cachedContentTokenCount": 1100,
                "candidatesTokenCount": 3,
            },
            "modelVersion": "gemini-2.5-flash",
        },
    }


def test_write_refuses_what_is_not_a_result_record(tmp_path: Path) -> None:
    with (
        open_output(str(tmp_path), storage_client_factory=_no_client, allowed_roots=[str(tmp_path)]) as sink,
        pytest.raises(ValueError, match="not a result record"),
    ):
        sink.write({"key": "a", "answer": "x"})


def test_write_after_close_fails(tmp_path: Path) -> None:
    sink = open_output(str(tmp_path), storage_client_factory=_no_client, allowed_roots=[str(tmp_path)])
    sink.close()
    with pytest.raises(ValueError, match="closed"):
        sink.write(answer("a"))


def test_a_local_output_outside_the_allowed_roots_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(CtxCacheConfigError, match=r"^output_uri: .* is outside the allowed roots"):
        open_output(f"{root}/../elsewhere", storage_client_factory=_no_client, allowed_roots=[str(root)])
    assert not (tmp_path / "elsewhere").exists()


def test_a_local_output_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "out.jsonl").write_text("")
    with pytest.raises(CtxCacheConfigError, match=r"^output_uri: .* is a file; give a folder"):
        open_output(
            str(tmp_path / "out.jsonl"), storage_client_factory=_no_client, allowed_roots=[str(tmp_path)]
        )


def test_a_missing_output_bucket_names_the_field(gcs_bucket: str) -> None:
    place = Place.gcs(gcs_bucket)
    with pytest.raises(CtxCacheConfigError, match=r"^answers: 'gs://no-such-bucket-y/out/' cannot be used"):
        open_output(
            "gs://no-such-bucket-y/out",
            storage_client_factory=place.factory,
            allowed_roots=[],
            field="answers",
        )


def test_part_size_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(CtxCacheConfigError, match=r"^part_size: 0 must be"):
        open_output(
            str(tmp_path), storage_client_factory=_no_client, allowed_roots=[str(tmp_path)], part_size=0
        )


@pytest.mark.parametrize("value", [0, -1, "x", float("inf")])
def test_flush_seconds_must_be_a_positive_number_of_seconds(value: Any, gcs_bucket: str) -> None:
    place = Place.gcs(gcs_bucket)
    with pytest.raises(CtxCacheConfigError, match=r"^flush_seconds: .* is not a number of seconds > 0"):
        sink_at(place, flush_seconds=value)
    assert place.factory_calls == 0  # refused before the bucket is touched


def test_gcs_flush_due_in_counts_from_the_oldest_buffered_line(gcs_bucket: str) -> None:
    sink = sink_at(Place.gcs(gcs_bucket), flush_seconds=3600)
    assert sink.flush_due_in() is None  # nothing waits

    sink.write(answer("a"))
    first = sink.flush_due_in()
    sink.write(answer("b"))
    second = sink.flush_due_in()
    assert first is not None
    assert second is not None
    assert 0 < second <= first <= 3600  # the second line does not push the first one's upload back

    sink.flush()
    assert sink.flush_due_in() is None
    sink.close()


def test_a_local_sink_never_has_lines_waiting(tmp_path: Path) -> None:
    sink = sink_at(Place.local(tmp_path))
    sink.write(answer("a"))
    assert sink.flush_seconds is None
    assert sink.flush_due_in() is None
    sink.close()


def test_a_gcs_close_whose_upload_fails_keeps_the_lines_for_the_next_close(gcs_bucket: str) -> None:
    place = Place.gcs(gcs_bucket)
    sink = sink_at(place, flush_seconds=3600)
    sink.write(answer("a"))
    bucket = storage_client().bucket(gcs_bucket)
    bucket.delete()  # the upload at close fails, as on a lost connection or a timeout in the middle

    with pytest.raises(CtxCacheConfigError, match=r"^output_uri: .* cannot be used"):
        sink.close()
    storage_client().create_bucket(gcs_bucket)
    sink.release()  # what the fan-out job does on its way out, after close()

    assert [line["key"] for line in all_lines(place)] == ["a"]


def _no_client() -> object:
    raise AssertionError("a local path must not build a storage client")
