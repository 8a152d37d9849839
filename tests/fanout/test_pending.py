"""``count_pending``: the input checked in full, minus the keys its output already answered.

Inputs and outputs are real files, local and on the GCS emulator; answers are real output parts
written by the fan-out's own sink, and shard folders are laid out by ``shard_input``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_ctxcache.exceptions import CtxCacheConfigError
from airflow_provider_ctxcache.fanout.outputs import open_output
from airflow_provider_ctxcache.fanout.pending import PendingWork, count_pending
from airflow_provider_ctxcache.fanout.records import error_record, response_record
from airflow_provider_ctxcache.fanout.shards import shard_input
from tests.gcs import PLACES, Place, make_place


@pytest.fixture(params=PLACES)
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    """Each test that takes it runs twice: on the local disk and on the GCS emulator."""
    return make_place(request, tmp_path)


@pytest.fixture
def local(tmp_path: Path) -> Place:
    root = tmp_path / "root"
    root.mkdir()
    return Place.local(root.resolve())


def request_line(key: str, text: str = "question") -> dict[str, Any]:
    return {"key": key, "request": {"contents": [{"role": "user", "parts": [{"text": text}]}]}}


def jsonl(*values: object) -> bytes:
    return b"".join(json.dumps(value).encode() + b"\n" for value in values)


def put_input(place: Place, *keys: str) -> str:
    return place.put("in.jsonl", jsonl(*(request_line(key) for key in keys)))


def answer(key: str) -> dict[str, Any]:
    return response_record(key, {"candidates": [{"content": {"parts": [{"text": "yes"}], "role": "model"}}]})


def failure(key: str) -> dict[str, Any]:
    return error_record(key, code=503, status="UNAVAILABLE", message="overloaded")


def write_output(place: Place, uri: str, *records: dict[str, Any]) -> None:
    """One attempt's part(s) under ``uri``, written as the fan-out writes them."""
    sink = open_output(uri, storage_client_factory=place.factory, allowed_roots=place.allowed_roots)
    try:
        for record in records:
            sink.write(record)
    finally:
        sink.close()


def count(place: Place, **kwargs: Any) -> PendingWork:
    return count_pending(storage_client_factory=place.factory, allowed_roots=place.allowed_roots, **kwargs)


# ---------------------------------------------------------------------------- what counts as answered


def test_prompts_without_an_output_are_all_pending(local: Place) -> None:
    work = count(local, prompts=["one", "two", "three"])

    assert work == PendingWork(total=3, answered=0)
    assert work.pending == 3


def test_input_keys_answered_in_the_output_count_as_answered(place: Place) -> None:
    input_uri = put_input(place, "a", "b", "c", "d")
    write_output(place, place.uri("out"), answer("a"), answer("c"), answer("not-in-the-input"))

    work = count(place, input_uri=input_uri, output_uri=place.uri("out"))

    assert work == PendingWork(total=4, answered=2)
    assert work.pending == 2


def test_answers_across_several_attempts_all_count(place: Place) -> None:
    input_uri = put_input(place, "a", "b", "c")
    write_output(place, place.uri("out"), answer("a"))
    write_output(place, place.uri("out"), answer("b"))

    assert count(place, input_uri=input_uri, output_uri=place.uri("out")) == PendingWork(total=3, answered=2)


def test_keys_answered_only_with_errors_stay_pending(place: Place) -> None:
    input_uri = put_input(place, "a", "b", "c")
    write_output(place, place.uri("out"), failure("a"), failure("a"), failure("b"), answer("c"))

    work = count(place, input_uri=input_uri, output_uri=place.uri("out"))

    assert work == PendingWork(total=3, answered=1)


def test_a_key_that_failed_then_was_answered_counts_as_answered(place: Place) -> None:
    input_uri = put_input(place, "a", "b")
    write_output(place, place.uri("out"), failure("a"))
    write_output(place, place.uri("out"), answer("a"))

    assert count(place, input_uri=input_uri, output_uri=place.uri("out")) == PendingWork(total=2, answered=1)


def test_prompts_with_their_own_keys_count_their_answers(local: Place) -> None:
    write_output(local, local.uri("out"), answer("a"))

    work = count(local, prompts=[request_line("a"), request_line("b")], output_uri=local.uri("out"))

    assert work == PendingWork(total=2, answered=1)


def test_answers_in_shard_folders_count(place: Place) -> None:
    input_uri = put_input(place, "a", "b", "c", "d", "e")
    shards = shard_input(
        input_uri,
        shard_size=2,
        shards_uri=place.uri("out/_shards"),
        output_uri=place.uri("out"),
        storage_client_factory=place.factory,
        allowed_roots=place.allowed_roots,
    )
    assert [s["output_uri"].rstrip("/").rsplit("/", 1)[1] for s in shards] == [
        "shard-00000",
        "shard-00001",
        "shard-00002",
    ]
    write_output(place, shards[0]["output_uri"], answer("a"))
    write_output(place, shards[1]["output_uri"], answer("c"), failure("d"))

    work = count(place, input_uri=input_uri, output_uri=place.uri("out"))

    assert work == PendingWork(total=5, answered=2)


def test_answers_in_the_folder_and_its_shards_add_up(place: Place) -> None:
    input_uri = put_input(place, "a", "b", "c")
    write_output(place, place.uri("out"), answer("a"))
    write_output(place, place.uri("out/shard-00001"), answer("b"))

    assert count(place, input_uri=input_uri, output_uri=place.uri("out")) == PendingWork(total=3, answered=2)


@pytest.mark.parametrize("folder", ["_shards", "other", "shard-1", "shard-00000x"])
def test_answers_in_other_sub_folders_do_not_count(place: Place, folder: str) -> None:
    input_uri = put_input(place, "a", "b")
    write_output(place, place.uri(f"out/{folder}"), answer("a"), answer("b"))

    assert count(place, input_uri=input_uri, output_uri=place.uri("out")) == PendingWork(total=2, answered=0)


def test_a_missing_output_folder_means_nothing_answered(place: Place) -> None:
    input_uri = put_input(place, "a", "b")

    work = count(place, input_uri=input_uri, output_uri=place.uri("answers"))

    assert work == PendingWork(total=2, answered=0)
    assert place.names("answers") == []


def test_a_missing_local_output_folder_is_not_created(local: Place) -> None:
    assert local.root is not None
    input_uri = put_input(local, "a")

    count(local, input_uri=input_uri, output_uri=local.uri("answers"))

    assert not (local.root / "answers").exists()


def test_counting_writes_nothing_into_the_output(place: Place) -> None:
    input_uri = put_input(place, "a", "b")
    write_output(place, place.uri("out"), answer("a"))
    write_output(place, place.uri("out/shard-00000"), answer("b"))
    before = (place.names("out"), place.names("out/shard-00000"))

    count(place, input_uri=input_uri, output_uri=place.uri("out"))

    assert (place.names("out"), place.names("out/shard-00000")) == before


# ---------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b'{"key": "b", "request": {', "not JSON"),
        (b'{"key": "b", "request": {}}', "contents"),
    ],
    ids=["not json", "no contents"],
)
def test_a_bad_request_line_is_refused_naming_its_line(place: Place, line: bytes, reason: str) -> None:
    input_uri = place.put("in.jsonl", jsonl(request_line("a")) + b"\n" + line + b"\n")

    with pytest.raises(CtxCacheConfigError) as caught:
        count(place, input_uri=input_uri)

    assert str(caught.value).startswith("input_uri line 3")
    assert reason in str(caught.value)


def test_a_bad_request_line_is_refused_even_when_every_key_is_answered(local: Place) -> None:
    input_uri = local.put("in.jsonl", jsonl(request_line("a"), {"key": "b", "request": {}}))
    write_output(local, local.uri("out"), answer("a"), answer("b"))

    with pytest.raises(CtxCacheConfigError, match=r"^input_uri line 2"):
        count(local, input_uri=input_uri, output_uri=local.uri("out"))


def test_a_duplicate_key_is_refused_naming_both_lines(place: Place) -> None:
    input_uri = put_input(place, "a", "b", "a")

    with pytest.raises(CtxCacheConfigError) as caught:
        count(place, input_uri=input_uri)

    assert "input_uri line 3" in str(caught.value)
    assert "input_uri line 1" in str(caught.value)
    assert "'a'" in str(caught.value)


def test_duplicate_prompt_keys_are_refused_naming_both(local: Place) -> None:
    with pytest.raises(CtxCacheConfigError) as caught:
        count(local, prompts=[request_line("a"), request_line("a")])

    assert "prompts[1]" in str(caught.value)
    assert "prompts[0]" in str(caught.value)


def test_both_prompts_and_input_uri_are_refused(local: Place) -> None:
    input_uri = put_input(local, "a")

    with pytest.raises(CtxCacheConfigError, match=r"prompts, input_uri"):
        count(local, prompts=["one"], input_uri=input_uri)


def test_neither_prompts_nor_input_uri_is_refused(local: Place) -> None:
    with pytest.raises(CtxCacheConfigError, match=r"prompts, input_uri"):
        count(local)


def test_an_output_outside_the_allowed_roots_is_refused_naming_it(local: Place, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    write_output(Place.local(tmp_path.resolve()), str(elsewhere), answer("a"))

    with pytest.raises(CtxCacheConfigError, match=r"^output_uri: .*outside the allowed roots"):
        count(local, prompts=[request_line("a")], output_uri=str(elsewhere))


def test_an_output_in_a_missing_bucket_is_refused_naming_it(gcs_bucket: str) -> None:
    place = Place.gcs(gcs_bucket)

    with pytest.raises(CtxCacheConfigError, match=r"^output_uri"):
        count(place, prompts=["one"], output_uri="gs://no-such-bucket-for-pending/out")


def test_an_output_that_is_a_file_is_refused_naming_it(local: Place, tmp_path: Path) -> None:
    (tmp_path / "root" / "answers.jsonl").write_text("")

    with pytest.raises(CtxCacheConfigError, match=r"^output_uri: .*is a file"):
        count(local, prompts=["one"], output_uri=str(tmp_path / "root" / "answers.jsonl"))
