"""Sharding a big input for ``.expand_kwargs``, local and on the real GCS emulator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_provider_ctxcache.exceptions import CtxCacheConfigError
from airflow_provider_ctxcache.fanout.inputs import open_input
from airflow_provider_ctxcache.fanout.outputs import open_output, response_record
from airflow_provider_ctxcache.fanout.shards import chunk_prompts, shard_input
from tests.gcs import PLACES, Place, make_place


@pytest.fixture(params=PLACES)
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    """Each test that takes it runs twice: on the local disk and on the GCS emulator."""
    return make_place(request, tmp_path)


def big_input(lines: int) -> bytes:
    return b"".join(
        json.dumps({"key": f"q{i:05d}", "request": {"contents": f"question {i}"}}).encode() + b"\n"
        for i in range(lines)
    )


def shard(place: Place, input_uri: str, shard_size: int) -> list[dict[str, str]]:
    return shard_input(
        input_uri,
        shard_size=shard_size,
        shards_uri=place.uri("shards"),
        output_uri=place.uri("answers"),
        storage_client_factory=place.factory,
        allowed_roots=place.allowed_roots,
    )


def test_2500_lines_make_3_shards_that_concatenate_to_the_input(place: Place) -> None:
    data = big_input(2500)
    input_uri = place.put("questions.jsonl", data)

    shards = shard(place, input_uri, 1000)

    assert shards == [
        {
            "input_uri": place.uri(f"shards/shard-{i:05d}.jsonl"),
            "output_uri": place.uri(f"answers/shard-{i:05d}/"),
        }
        for i in range(3)
    ]
    assert place.names("shards") == ["shard-00000.jsonl", "shard-00001.jsonl", "shard-00002.jsonl"]
    contents = [place.get(f"shards/{name}") for name in place.names("shards")]
    assert [len(c.splitlines()) for c in contents] == [1000, 1000, 500]
    assert b"".join(contents) == data


def test_rerunning_gives_the_same_shards(place: Place) -> None:
    input_uri = place.put("questions.jsonl", big_input(2500))
    first = shard(place, input_uri, 1000)
    before = {name: place.get(f"shards/{name}") for name in place.names("shards")}

    assert shard(place, input_uri, 1000) == first
    assert {name: place.get(f"shards/{name}") for name in place.names("shards")} == before


def test_rerunning_with_bigger_shards_removes_the_stale_ones(place: Place) -> None:
    data = big_input(2500)
    input_uri = place.put("questions.jsonl", data)
    shard(place, input_uri, 1000)

    assert len(shard(place, input_uri, 2000)) == 2
    assert place.names("shards") == ["shard-00000.jsonl", "shard-00001.jsonl"]
    assert b"".join(place.get(f"shards/{name}") for name in place.names("shards")) == data


def test_blank_lines_are_dropped_and_an_exact_multiple_makes_no_empty_shard(tmp_path: Path) -> None:
    place = Place.local(tmp_path)
    input_uri = place.put("questions.jsonl", b'{"key": "a"}\n\n{"key": "b"}\n\n')

    shards = shard(place, input_uri, 1)

    assert [place.get(f"shards/shard-{i:05d}.jsonl") for i in range(len(shards))] == [
        b'{"key": "a"}\n',
        b'{"key": "b"}\n',
    ]


def test_an_empty_input_gives_no_shards(tmp_path: Path) -> None:
    place = Place.local(tmp_path)
    assert shard(place, place.put("questions.jsonl", b"\n"), 10) == []


def test_a_line_that_is_not_json_stops_sharding_with_its_number(place: Place) -> None:
    input_uri = place.put("questions.jsonl", b'{"key": "a"}\n{"key": "b"\n')
    with pytest.raises(CtxCacheConfigError, match=r"^input_uri line 2: not JSON"):
        shard(place, input_uri, 10)


def test_each_shard_reads_as_input_and_resumes_into_its_own_output(place: Place) -> None:
    input_uri = place.put("questions.jsonl", big_input(30))
    shards = shard(place, input_uri, 10)

    for spec in shards:
        with (
            open_input(
                spec["input_uri"], storage_client_factory=place.factory, allowed_roots=place.allowed_roots
            ) as source,
            open_output(
                spec["output_uri"], storage_client_factory=place.factory, allowed_roots=place.allowed_roots
            ) as sink,
        ):
            for _number, request in source.lines():
                sink.write(response_record(request["key"], {"candidates": []}))

    answered = [
        open_output(
            spec["output_uri"], storage_client_factory=place.factory, allowed_roots=place.allowed_roots
        )
        .scan()
        .answered
        for spec in shards
    ]
    assert answered == [{f"q{i:05d}" for i in range(start, start + 10)} for start in (0, 10, 20)]


def test_shard_size_must_be_a_positive_whole_number(tmp_path: Path) -> None:
    place = Place.local(tmp_path)
    input_uri = place.put("questions.jsonl", big_input(3))
    with pytest.raises(CtxCacheConfigError, match=r"^shard_size: 0 must be a whole number >= 1"):
        shard(place, input_uri, 0)


def test_local_shards_outside_the_allowed_roots_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    place = Place.local(root)
    input_uri = place.put("questions.jsonl", big_input(3))
    with pytest.raises(CtxCacheConfigError, match=r"^shards_uri: .* is outside the allowed roots"):
        shard_input(
            input_uri,
            shard_size=1,
            shards_uri=str(tmp_path / "elsewhere"),
            output_uri=str(root / "answers"),
            storage_client_factory=place.factory,
            allowed_roots=place.allowed_roots,
        )


def test_chunk_prompts_splits_a_list_in_order() -> None:
    assert chunk_prompts(["a", "b", "c", "d", "e"], 2) == [["a", "b"], ["c", "d"], ["e"]]
    assert chunk_prompts([], 3) == []


def test_chunk_prompts_refuses_a_size_below_one() -> None:
    with pytest.raises(CtxCacheConfigError, match=r"^size: 0 must be a whole number >= 1"):
        chunk_prompts(["a"], 0)
