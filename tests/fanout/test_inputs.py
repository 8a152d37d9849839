"""JSONL input files, local and on the real GCS emulator: line numbers, errors, allowed roots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_provider_ctxcache.exceptions import CtxCacheConfigError
from airflow_provider_ctxcache.fanout.inputs import open_input
from airflow_provider_ctxcache.hooks import ContextCacheHook
from airflow_provider_ctxcache.prompts import normalize_prompts
from tests.gcs import PLACES, Place, make_place
from tests.hooks.conftest import ConnFactory, make_conn  # noqa: F401  (fixture)


@pytest.fixture(params=PLACES)
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    """Each test that takes it runs twice: on the local disk and on the GCS emulator."""
    return make_place(request, tmp_path)


def request_line(key: str, text: str) -> dict[str, object]:
    return {"key": key, "request": {"contents": [{"role": "user", "parts": [{"text": text}]}]}}


def jsonl(*values: object) -> bytes:
    return b"".join(json.dumps(value).encode() + b"\n" for value in values)


def test_lines_are_read_back_with_their_line_numbers(place: Place) -> None:
    uri = place.put("in.jsonl", jsonl(request_line("a", "one"), request_line("b", "two"), [1, 2]))

    with open_input(uri, storage_client_factory=place.factory, allowed_roots=place.allowed_roots) as source:
        assert source.uri == uri
        assert list(source.lines()) == [
            (1, request_line("a", "one")),
            (2, request_line("b", "two")),
            (3, [1, 2]),
        ]


def test_blank_lines_are_skipped_and_numbering_follows_the_file(place: Place) -> None:
    data = b'\n{"key": "a"}\n   \n\r\n{"key": "b"}\r\n\n'
    uri = place.put("in.jsonl", data)

    with open_input(uri, storage_client_factory=place.factory, allowed_roots=place.allowed_roots) as source:
        assert list(source.lines()) == [(2, {"key": "a"}), (5, {"key": "b"})]


def test_a_line_that_is_not_json_is_named_by_its_number(place: Place) -> None:
    uri = place.put("in.jsonl", b'{"key": "a"}\n\n{"key": "b", \n{"key": "c"}\n')

    with (
        open_input(
            uri, storage_client_factory=place.factory, allowed_roots=place.allowed_roots, field="my_input"
        ) as source,
        pytest.raises(CtxCacheConfigError) as caught,
    ):
        list(source.lines())
    message = str(caught.value)
    assert message.startswith("my_input line 3: not JSON (")
    assert 'each line must be one request object such as {"key": ..., "request": {...}}' in message


def test_a_line_that_is_not_utf8_is_named_by_its_number(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_bytes(b'{"key": "a"}\n"\xff\xfe"\n')

    with (
        open_input(
            str(tmp_path / "in.jsonl"), storage_client_factory=_no_client, allowed_roots=[str(tmp_path)]
        ) as source,
        pytest.raises(CtxCacheConfigError, match=r"^input_uri line 2: not JSON \(not UTF-8"),
    ):
        list(source.lines())


def test_lines_are_streamed_one_at_a_time(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_bytes(b'{"key": "a"}\n{"key": "b"}\nnot json\n')

    with open_input(
        str(tmp_path / "in.jsonl"), storage_client_factory=_no_client, allowed_roots=[str(tmp_path)]
    ) as source:
        lines = source.lines()
        # The good lines arrive before the bad one is read: nothing is parsed ahead.
        assert next(lines) == (1, {"key": "a"})
        assert next(lines) == (2, {"key": "b"})
        with pytest.raises(CtxCacheConfigError, match="line 3"):
            next(lines)


def test_raw_lines_are_handed_back_as_written(place: Place) -> None:
    uri = place.put("in.jsonl", b'{"key":  "a" }\n\n{"b": [1,2]}')

    with open_input(uri, storage_client_factory=place.factory, allowed_roots=place.allowed_roots) as source:
        assert list(source.raw_lines()) == [(1, b'{"key":  "a" }'), (3, b'{"b": [1,2]}')]


def test_a_missing_file_or_object_names_the_field(place: Place) -> None:
    with pytest.raises(CtxCacheConfigError, match=r"^input_uri: .*does not exist"):
        open_input(
            place.uri("absent.jsonl"), storage_client_factory=place.factory, allowed_roots=place.allowed_roots
        )


def test_a_missing_bucket_names_the_field(gcs_bucket: str) -> None:
    place = Place.gcs(gcs_bucket)
    with pytest.raises(
        CtxCacheConfigError, match=r"^input_uri: 'gs://no-such-bucket-x/in.jsonl' does not exist"
    ):
        open_input("gs://no-such-bucket-x/in.jsonl", storage_client_factory=place.factory, allowed_roots=[])


def test_a_gcs_uri_without_an_object_is_refused() -> None:
    with pytest.raises(CtxCacheConfigError, match=r"^input_uri: 'gs://bucket/' is not a Cloud Storage URI"):
        open_input("gs://bucket/", storage_client_factory=_no_client, allowed_roots=[])


def test_a_local_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CtxCacheConfigError, match=r"^input_uri: .* is a folder"):
        open_input(str(tmp_path), storage_client_factory=_no_client, allowed_roots=[str(tmp_path)])


def test_a_local_path_outside_the_allowed_roots_is_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside.jsonl"
    root.mkdir()
    outside.write_bytes(jsonl({"key": "a"}))

    with pytest.raises(CtxCacheConfigError, match=r"^input_uri: .* is outside the allowed roots \(.*root\)"):
        open_input(str(outside), storage_client_factory=_no_client, allowed_roots=[str(root)])


def test_dot_dot_traversal_out_of_the_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret.jsonl").write_bytes(jsonl({"key": "a"}))

    with pytest.raises(CtxCacheConfigError, match=r"^questions: .* is outside the allowed roots"):
        open_input(
            f"{root}/../secret.jsonl",
            storage_client_factory=_no_client,
            allowed_roots=[str(root)],
            field="questions",
        )


def test_a_symlink_out_of_the_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret.jsonl").write_bytes(jsonl({"key": "a"}))
    (root / "link.jsonl").symlink_to(tmp_path / "secret.jsonl")

    with pytest.raises(CtxCacheConfigError, match=r"^input_uri: .* is outside the allowed roots"):
        open_input(str(root / "link.jsonl"), storage_client_factory=_no_client, allowed_roots=[str(root)])


def test_local_files_are_disabled_without_allowed_roots(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_bytes(jsonl({"key": "a"}))

    with pytest.raises(
        CtxCacheConfigError, match=r"^input_uri: local files are disabled; allow their folder"
    ):
        open_input(str(tmp_path / "in.jsonl"), storage_client_factory=_no_client, allowed_roots=[])


def test_a_gcs_input_is_downloaded_once_and_can_be_read_twice(gcs_bucket: str) -> None:
    place = Place.gcs(gcs_bucket)
    uri = place.put("in.jsonl", jsonl(*(request_line(f"k{i}", f"q{i}") for i in range(50))))

    source = open_input(uri, storage_client_factory=place.factory, allowed_roots=[])
    place.delete("in.jsonl")  # from here on, only the local copy can answer

    first = [key for _, value in source.lines() for key in [value["key"]]]
    second = [key for _, value in source.lines() for key in [value["key"]]]
    assert first == second == [f"k{i}" for i in range(50)]
    assert place.factory_calls == 1
    assert source.path.is_file()
    source.close()
    assert not source.path.exists()
    source.close()  # idempotent


def test_closing_a_local_input_keeps_the_file(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_bytes(jsonl({"key": "a"}))

    with open_input(
        str(tmp_path / "in.jsonl"), storage_client_factory=_no_client, allowed_roots=[str(tmp_path)]
    ):
        pass
    assert (tmp_path / "in.jsonl").read_bytes() == jsonl({"key": "a"})


def test_the_hooks_storage_client_reads_gcs_input(gcs_bucket: str, make_conn: ConnFactory) -> None:  # noqa: F811
    place = Place.gcs(gcs_bucket)
    uri = place.put("in.jsonl", jsonl(request_line("a", "one")))
    hook = ContextCacheHook(make_conn("ctxcache_gcs", backend="gemini_api", base_url="http://127.0.0.1:9"))

    with open_input(uri, storage_client_factory=lambda: hook.storage_client, allowed_roots=[]) as source:
        assert list(source.lines()) == [(1, request_line("a", "one"))]


def test_forum_format_lines_pass_prompt_normalization(tmp_path: Path) -> None:
    cache = "cachedContents/abc123"
    line = {
        "key": "contract-7",
        "request": {
            "contents": [{"role": "user", "parts": [{"text": "Who are the parties?"}]}],
            "generationConfig": {"temperature": 0.1, "thinking_config": {"thinking_budget": 0}},
            "cachedContent": cache,
        },
    }
    (tmp_path / "batch.jsonl").write_bytes(jsonl(line, request_line("contract-8", "When does it end?")))

    with open_input(
        str(tmp_path / "batch.jsonl"), storage_client_factory=_no_client, allowed_roots=[str(tmp_path)]
    ) as source:
        requests = normalize_prompts([value for _, value in source.lines()], cache_name=cache)
    assert [r.key for r in requests] == ["contract-7", "contract-8"]
    assert requests[0].generation_config == {"temperature": 0.1, "thinking_config": {"thinking_budget": 0}}


def _no_client() -> object:
    raise AssertionError("a local path must not build a storage client")
