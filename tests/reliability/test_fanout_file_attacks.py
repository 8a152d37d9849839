"""The fan-out's local files as an attacker supplies them: swapped after the allowed-roots check.

Each test is one row of the "Fan-out files" table in the reliability docs. ``input_uri``,
``output_uri`` and ``shards_uri`` come from rendered params, so they are untrusted. The operator
runs its own ``execute()`` against the emulator over real HTTP, on real files in ``tmp_path``.
A race is made deterministic at one of two seams, each running the real code around the swap:

- *after the open*: inside the sink's write probe (``check_writable``), which runs once the
  input and the output folder are open and before the first input line is read or answer is
  written (where the old code went back to the paths);
- *before the open*: right after the roots check (``local_path``) returns, before the file or
  folder is opened.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from airflow_provider_ctxcache.exceptions import CtxCacheConfigError
from airflow_provider_ctxcache.fanout import inputs, outputs, shards
from airflow_provider_ctxcache.fanout.outputs import LocalResultSink
from airflow_provider_ctxcache.fanout.pending import count_pending
from airflow_provider_ctxcache.fanout.shards import shard_input
from tests.operators.context import task_context
from tests.reliability.conftest import billable, fan_out, keys, new_cache, output_lines, write_input

OUTSIDE_KEYS = [f"outside{i}" for i in range(3)]


def outside_input(path: Path) -> Path:
    """A JSONL file of prompts no one may read through the fan-out."""
    with path.open("w") as out:
        for key in OUTSIDE_KEYS:
            request = {"contents": [{"role": "user", "parts": [{"text": f"SECRET {key}"}]}]}
            out.write(json.dumps({"key": key, "request": request}) + "\n")
    return path


def prompts_sent(emulator: EmulatorProcess) -> list[str]:
    """The text of every generateContent request the emulator was asked, sorted."""
    texts = []
    for request in emulator.admin.requests():
        if request["op"] == "generate_content":
            parts = [part for content in request["body"]["contents"] for part in content["parts"]]
            texts.append("".join(part.get("text", "") for part in parts))
    return sorted(texts)


def checked_prompts(n: int) -> list[str]:
    return sorted(f"Question {key}?" for key in keys(n))


def for_symlink(link: Path, target: Path) -> None:
    link.rename(link.with_name(link.name + ".before"))
    link.symlink_to(target)


def swap_after_the_open(monkeypatch: pytest.MonkeyPatch, swap: Callable[[], None]) -> None:
    """Runs ``swap`` once, inside the output's write probe, then lets the real probe go on."""
    real = LocalResultSink.check_writable
    done: list[bool] = []

    def swap_then_probe(self: LocalResultSink) -> None:
        if not done:
            done.append(True)
            swap()
        real(self)

    monkeypatch.setattr(LocalResultSink, "check_writable", swap_then_probe)


def swap_before_the_open(monkeypatch: pytest.MonkeyPatch, module: Any, swap: Callable[[], None]) -> None:
    """Runs ``swap`` once, right after ``module``'s roots check (``local_path``) passed."""
    real = module.local_path
    done: list[bool] = []

    def check_then_swap(uri: str, allowed_roots: Any, field: str) -> Path:
        checked: Path = real(uri, allowed_roots, field)
        if not done:
            done.append(True)
            swap()
        return checked

    monkeypatch.setattr(module, "local_path", check_then_swap)


def in_a_thread(call: Callable[[], Any]) -> BaseException | None:
    """What ``call`` raised (None if nothing), run in a thread so a hang fails the test, not the run.

    The join's bound is only a safety net far above the test's real duration.
    """
    raised: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as error:
            raised.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=240)
    assert not thread.is_alive(), "the task blocked"
    return raised[0] if raised else None


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The allowed root, holding the input; ``tmp_path / "outside"`` is outside it."""
    folder = tmp_path / "root"
    folder.mkdir()
    write_input(folder / "in.jsonl", 3)
    (tmp_path / "outside").mkdir()
    return folder


@pytest.fixture
def writer_on_fifo(root: Path) -> Iterator[tuple[Path, threading.Event, threading.Thread]]:
    """``root / "in.jsonl"``, the thread that will write to it once it is a FIFO, and whether it opened.

    The writer blocks in open() until someone opens the FIFO to read; at the end a reader that
    does not block lets it finish.
    """
    path = root / "in.jsonl"
    opened = threading.Event()

    def writer() -> None:
        with path.open("w") as fifo:
            opened.set()
            fifo.write(outside_input(root.parent / "secret.jsonl").read_text())

    thread = threading.Thread(target=writer, daemon=True)
    yield path, opened, thread
    if thread.ident is not None:
        release = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        thread.join()
        os.close(release)


def to_fifo(path: Path) -> None:
    path.rename(path.with_name(path.name + ".before"))
    os.mkfifo(path)


# -- output_uri ------------------------------------------------------------------------------------


def test_an_output_folder_swapped_for_a_symlink_out_of_the_root_after_it_was_opened_gets_no_answer_outside(
    conn: str, emulator: EmulatorProcess, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outside = root.parent / "outside"
    (root / "out").mkdir()
    name = new_cache(conn)
    swap_after_the_open(monkeypatch, lambda: for_symlink(root / "out", outside))

    result = fan_out(conn, name, root).execute(task_context())

    assert result["summary"]["succeeded"] == 3
    assert list(outside.iterdir()) == []
    assert sorted(line["key"] for line in output_lines(root / "out.before")) == keys(3)


def test_an_output_folder_swapped_for_a_symlink_out_of_the_root_before_it_is_opened_is_refused(
    conn: str, emulator: EmulatorProcess, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outside = root.parent / "outside"
    (root / "out").mkdir()
    name = new_cache(conn)
    swap_before_the_open(monkeypatch, outputs, lambda: for_symlink(root / "out", outside))

    with pytest.raises(
        CtxCacheConfigError,
        match=r"^output_uri: '.*/root/out' is outside the allowed roots .* through a symlink",
    ):
        fan_out(conn, name, root).execute(task_context())
    assert list(outside.iterdir()) == []
    assert billable(emulator)["generate_content"] == 0


def test_a_part_file_that_is_a_symlink_out_of_the_root_is_never_read(
    conn: str, emulator: EmulatorProcess, root: Path
) -> None:
    # Answers for every key, outside the root, linked in under a part's name: the old code
    # counted them as answered (nothing asked) and returned them as the task's results.
    outside_part = root.parent / "outside" / "answers.jsonl"
    planted = {"candidates": [{"content": {"role": "model", "parts": [{"text": "SECRET"}]}}]}
    outside_part.write_text("".join(json.dumps({"key": k, "response": planted}) + "\n" for k in keys(3)))
    (root / "out").mkdir()
    (root / "out" / "part-20260101T000000000000Z-00000000-00000.jsonl").symlink_to(outside_part)
    name = new_cache(conn)

    result = fan_out(conn, name, root).execute(task_context())

    assert result["summary"]["skipped_already_answered"] == 0
    assert prompts_sent(emulator) == checked_prompts(3)
    assert "SECRET" not in json.dumps(result["results"])


# -- input_uri -------------------------------------------------------------------------------------


def test_an_input_swapped_for_a_fifo_before_it_is_opened_is_refused_by_name_without_blocking(
    conn: str,
    emulator: EmulatorProcess,
    root: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = new_cache(conn)
    swap_before_the_open(monkeypatch, inputs, lambda: to_fifo(root / "in.jsonl"))  # no writer: would block

    raised = in_a_thread(lambda: fan_out(conn, name, root).execute(task_context()))

    assert isinstance(raised, CtxCacheConfigError)
    assert str(raised).startswith(f"input_uri: {str(root / 'in.jsonl')!r} is a FIFO, not a regular file")
    assert billable(emulator)["generate_content"] == 0


def test_an_input_swapped_for_a_fifo_after_it_was_opened_is_never_opened_and_the_checked_prompts_are_sent(
    conn: str,
    emulator: EmulatorProcess,
    root: Path,
    monkeypatch: pytest.MonkeyPatch,
    writer_on_fifo: tuple[Path, threading.Event, threading.Thread],
) -> None:
    path, opened, writer = writer_on_fifo
    name = new_cache(conn)

    def swap() -> None:
        to_fifo(path)
        writer.start()

    swap_after_the_open(monkeypatch, swap)

    raised = in_a_thread(lambda: fan_out(conn, name, root).execute(task_context()))

    assert raised is None
    assert not opened.is_set()
    assert prompts_sent(emulator) == checked_prompts(3)


def test_an_input_swapped_for_a_symlink_out_of_the_root_after_it_was_opened_sends_the_checked_prompts(
    conn: str, emulator: EmulatorProcess, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = outside_input(root.parent / "outside" / "secret.jsonl")
    name = new_cache(conn)
    swap_after_the_open(monkeypatch, lambda: for_symlink(root / "in.jsonl", secret))

    result = fan_out(conn, name, root).execute(task_context())

    assert prompts_sent(emulator) == checked_prompts(3)
    assert sorted(result["results"]) == keys(3)


def test_an_input_swapped_for_a_symlink_out_of_the_root_before_it_is_opened_is_refused(
    conn: str, emulator: EmulatorProcess, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = outside_input(root.parent / "outside" / "secret.jsonl")
    name = new_cache(conn)
    swap_before_the_open(monkeypatch, inputs, lambda: for_symlink(root / "in.jsonl", secret))

    with pytest.raises(
        CtxCacheConfigError,
        match=r"^input_uri: '.*/root/in\.jsonl' is outside the allowed roots .* through a symlink",
    ):
        fan_out(conn, name, root).execute(task_context())
    assert billable(emulator)["generate_content"] == 0


# -- shards_uri and the pending count ---------------------------------------------------------------


def test_a_shards_folder_swapped_for_a_symlink_out_of_the_root_gets_no_shard_outside(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outside = root.parent / "outside"
    (root / "shards").mkdir()
    real = shards.open_input

    def swap_then_open(*args: Any, **kwargs: Any) -> Any:  # the shards folder is open by now
        for_symlink(root / "shards", outside)
        return real(*args, **kwargs)

    monkeypatch.setattr(shards, "open_input", swap_then_open)

    made = shard_input(
        str(root / "in.jsonl"),
        shard_size=2,
        shards_uri=str(root / "shards"),
        output_uri=str(root / "out"),
        storage_client_factory=_no_client,
        allowed_roots=[str(root)],
    )

    assert len(made) == 2
    assert list(outside.iterdir()) == []
    assert sorted(p.name for p in (root / "shards.before").iterdir()) == [
        "shard-00000.jsonl",
        "shard-00001.jsonl",
    ]


def test_answers_behind_an_output_folder_swapped_for_a_symlink_out_of_the_root_are_not_counted(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What CreateCacheOperator asks before it pays for a cache: answers planted outside would
    # make a day look done, and tell whoever planted them which keys the input holds.
    outside = root.parent / "outside"
    (outside / "part-20260101T000000000000Z-00000000-00000.jsonl").write_text(
        "".join(json.dumps({"key": k, "response": {"candidates": []}}) + "\n" for k in keys(3))
    )
    (root / "out").mkdir()
    real = LocalResultSink.scan
    done: list[bool] = []

    def swap_then_scan(self: LocalResultSink) -> Any:  # the folder is open by now
        if not done:
            done.append(True)
            for_symlink(root / "out", outside)
        return real(self)

    monkeypatch.setattr(LocalResultSink, "scan", swap_then_scan)

    work = count_pending(
        input_uri=str(root / "in.jsonl"),
        output_uri=str(root / "out"),
        storage_client_factory=_no_client,
        allowed_roots=[str(root)],
    )

    assert done
    assert (work.total, work.answered) == (3, 0)


def _no_client() -> Any:
    raise AssertionError("a local path must not build a storage client")
