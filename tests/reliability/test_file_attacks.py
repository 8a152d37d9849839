"""Local files as an attacker supplies them: swapped mid-task, special, mis-encoded, unreadable.

Each test is one row of the "File attacks" table in the reliability docs. Paths come from
rendered params, so they are untrusted; the operator runs its own ``execute()`` against the
emulator over real HTTP, on real files in ``tmp_path``. A race is made deterministic: the swap
runs inside the hook's ``list_caches``, the round trip between planning and sending.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from airflow_provider_ctxcache.emulator.tokens import text_of_tokens
from airflow_provider_ctxcache.exceptions import CtxCacheConfigError
from airflow_provider_ctxcache.hooks import ContextCacheHook
from airflow_provider_ctxcache.operators import CreateCacheOperator, GenerateWithCacheOperator
from tests.operators.context import task_context
from tests.reliability.conftest import MODEL, billable, new_cache, write_input

INSIDE = "INSIDE " + text_of_tokens(2100)
SECRET = "SECRET " + text_of_tokens(2100)
MB = 1024 * 1024


def create(conn: str, contents: list[Any], **kwargs: Any) -> str:
    op = CreateCacheOperator(
        task_id="create_cache", ctxcache_conn_id=conn, model=MODEL, contents=contents, **kwargs
    )
    return op.execute(task_context())


def cached_text(emulator: EmulatorProcess) -> str:
    """The text of every part the create request carried."""
    (request,) = [r for r in emulator.admin.requests() if r["op"] == "create_cache"]
    parts = [part for content in request["body"]["contents"] for part in content["parts"]]
    return "".join(part.get("text", "") for part in parts)


def swap_during_list_caches(monkeypatch: pytest.MonkeyPatch, swap: Callable[[], None]) -> None:
    """Runs ``swap`` once, inside the first ``list_caches``, then lets the real call go on."""
    real = ContextCacheHook.list_caches
    done: list[bool] = []

    def list_then_swap(self: ContextCacheHook, **kwargs: Any) -> Any:
        if not done:
            done.append(True)
            swap()
        return real(self, **kwargs)

    monkeypatch.setattr(ContextCacheHook, "list_caches", list_then_swap)


def for_symlink(link: Path, target: Path) -> None:
    link.rename(link.with_name(link.name + ".before"))
    link.symlink_to(target)


# -- allowed_roots is raced ------------------------------------------------------------------------


def test_a_folder_swapped_for_a_symlink_out_of_the_root_mid_task_sends_the_checked_file(
    conn: str, emulator: EmulatorProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "docs").mkdir(parents=True)
    (outside / "docs").mkdir(parents=True)
    (root / "docs" / "contract.txt").write_text(INSIDE)
    (outside / "docs" / "contract.txt").write_text(SECRET)
    swap_during_list_caches(monkeypatch, lambda: for_symlink(root / "docs", outside / "docs"))

    create(conn, [{"file": str(root / "docs" / "contract.txt")}], allowed_roots=[str(root)])

    sent = cached_text(emulator)
    assert sent == INSIDE
    assert "SECRET" not in sent


def test_a_file_swapped_for_a_fifo_mid_task_is_never_opened_and_the_checked_bytes_are_sent(
    conn: str, emulator: EmulatorProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "contract.txt"
    path.write_text(INSIDE)
    opened = threading.Event()

    def writer() -> None:  # blocks in open() until someone opens the FIFO for reading
        with path.open("w") as fifo:
            opened.set()
            fifo.write(SECRET)

    thread = threading.Thread(target=writer, daemon=True)

    def swap() -> None:
        path.rename(tmp_path / "contract.txt.before")
        os.mkfifo(path)
        thread.start()

    swap_during_list_caches(monkeypatch, swap)
    try:
        create(conn, [{"file": str(path)}], allowed_roots=[str(tmp_path)])
        assert not opened.is_set()
    finally:  # a reader that does not block lets the writer finish
        if thread.ident is not None:
            release = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            thread.join()
            os.close(release)
    assert cached_text(emulator) == INSIDE


def test_a_staged_file_swapped_for_a_symlink_out_of_the_root_mid_task_uploads_the_checked_bytes(
    conn: str, emulator: EmulatorProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    checked = os.urandom(11 * MB)
    (root / "scan.pdf").write_bytes(checked)
    (tmp_path / "other.pdf").write_bytes(os.urandom(11 * MB))
    swap_during_list_caches(monkeypatch, lambda: for_symlink(root / "scan.pdf", tmp_path / "other.pdf"))

    create(conn, [{"file": str(root / "scan.pdf")}], allowed_roots=[str(root)])

    (uploaded,) = emulator.admin.state()["files"]
    assert base64.b64decode(uploaded["sha256Hash"]).decode() == hashlib.sha256(checked).hexdigest()


def test_a_fifo_in_a_folder_is_refused_by_name_without_blocking(
    conn: str, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "contract.txt").write_text(INSIDE)
    os.mkfifo(docs / "pipe.txt")  # no writer: opening it to read would block for ever
    with pytest.raises(
        CtxCacheConfigError, match=r"^contents\[0\]\.file: '.*/docs/pipe\.txt' is a FIFO, not a regular file"
    ):
        create(conn, [{"file": str(docs)}], allowed_roots=[str(tmp_path)])
    assert billable(emulator) == {"create_cache": 0, "generate_content": 0}


def test_a_symlink_in_a_folder_that_leads_out_of_the_root_fails_naming_it(
    conn: str, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "contract.txt").write_text(INSIDE)
    (tmp_path / "secret.txt").write_text(SECRET)
    (root / "docs" / "notes.txt").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(
        CtxCacheConfigError, match=r"^contents\[0\]\.file: '.*/docs/notes\.txt' is outside the allowed roots"
    ):
        create(conn, [{"file": str(root / "docs")}], allowed_roots=[str(root)])
    assert billable(emulator) == {"create_cache": 0, "generate_content": 0}


# -- empty or relative roots -----------------------------------------------------------------------


def test_an_empty_allowed_root_is_refused_rather_than_reading_the_current_directory(
    conn: str, emulator: EmulatorProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "contract.txt").write_text(INSIDE)
    with pytest.raises(CtxCacheConfigError, match=r"^allowed_roots: '' is not a folder"):
        create(conn, [{"file": str(tmp_path / "contract.txt")}], allowed_roots=[""])
    assert billable(emulator) == {"create_cache": 0, "generate_content": 0}


def test_a_relative_allowed_root_is_refused(
    conn: str, emulator: EmulatorProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "contract.txt").write_text(INSIDE)
    with pytest.raises(CtxCacheConfigError, match=r"^allowed_roots: 'docs' is a relative path"):
        create(conn, [{"file": str(tmp_path / "docs" / "contract.txt")}], allowed_roots=["docs"])
    assert billable(emulator) == {"create_cache": 0, "generate_content": 0}


def test_allowed_roots_given_as_one_string_is_refused_rather_than_read_letter_by_letter(
    conn: str, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    (tmp_path / "allowed").mkdir()
    (tmp_path / "secret.txt").write_text(SECRET)  # outside; the letter "/" would allow it
    with pytest.raises(CtxCacheConfigError, match=r"^allowed_roots: '.*/allowed' is a string, not a list"):
        create(conn, [{"file": str(tmp_path / "secret.txt")}], allowed_roots=str(tmp_path / "allowed"))
    assert billable(emulator) == {"create_cache": 0, "generate_content": 0}


def test_a_relative_root_in_the_airflow_config_is_refused_naming_the_setting(
    conn: str, emulator: EmulatorProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "contract.txt").write_text(INSIDE)
    monkeypatch.setenv("AIRFLOW__CTXCACHE__ALLOWED_ROOTS", ".")
    with pytest.raises(
        CtxCacheConfigError,
        match=r"^\[ctxcache\] allowed_roots \(AIRFLOW__CTXCACHE__ALLOWED_ROOTS\): '\.' is a relative path",
    ):
        create(conn, [{"file": str(tmp_path / "contract.txt")}])
    assert billable(emulator) == {"create_cache": 0, "generate_content": 0}


def test_a_relative_fanout_root_is_refused(
    conn: str, emulator: EmulatorProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = new_cache(conn)
    monkeypatch.chdir(tmp_path)
    write_input(tmp_path / "in.jsonl", 3)
    op = GenerateWithCacheOperator(
        task_id="ask",
        ctxcache_conn_id=conn,
        cache_name=cache,
        input_uri=str(tmp_path / "in.jsonl"),
        output_uri=str(tmp_path / "out"),
        allowed_roots=["."],
        progress_interval=0,
    )
    with pytest.raises(CtxCacheConfigError, match=r"^allowed_roots: '\.' is a relative path"):
        op.execute(task_context())
    assert billable(emulator) == {"create_cache": 1, "generate_content": 0}
    assert not (tmp_path / "out").exists()


# -- text that is not UTF-8 ------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["latin-1", "utf-16", "utf-16-le"])
def test_a_text_file_not_in_utf8_fails_naming_it_and_sends_nothing(
    conn: str, emulator: EmulatorProcess, tmp_path: Path, encoding: str
) -> None:
    path = tmp_path / "contract.txt"
    path.write_bytes(f"{INSIDE} Café Müller, Zürich.".encode(encoding))
    with pytest.raises(CtxCacheConfigError, match=r"^contents\[0\]\.file: '.*contract\.txt' is not UTF-8"):
        create(conn, [{"file": str(path)}], allowed_roots=[str(tmp_path)])
    seen = json.dumps(emulator.admin.requests(), ensure_ascii=False)
    assert "\ufffd" not in seen
    assert "\x00" not in seen
    assert billable(emulator) == {"create_cache": 0, "generate_content": 0}


def test_a_utf8_byte_order_mark_is_not_sent_as_text(
    conn: str, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    path = tmp_path / "contract.txt"
    path.write_bytes(INSIDE.encode("utf-8-sig"))
    create(conn, [{"file": str(path)}], allowed_roots=[str(tmp_path)])
    assert cached_text(emulator) == INSIDE


# -- unreadable files ------------------------------------------------------------------------------

_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_DAC_BYPASS = (1 << 1) | (1 << 2)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


@contextlib.contextmanager
def as_a_worker_without_root_read() -> Iterator[None]:
    """Root reads any file, so this thread drops the capabilities that let it, then takes them back.

    Capabilities are per thread on Linux: the emulator and other threads keep theirs.
    """
    if os.geteuid() != 0:
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    caps = (_CapData * 2)()
    if libc.capget(ctypes.byref(header), caps) != 0:
        pytest.skip(f"capget failed: {os.strerror(ctypes.get_errno())}")
    saved = caps[0].effective
    caps[0].effective &= ~_DAC_BYPASS
    if libc.capset(ctypes.byref(header), caps) != 0:
        pytest.skip(f"cannot drop CAP_DAC_OVERRIDE here: {os.strerror(ctypes.get_errno())}")
    try:
        yield
    finally:
        caps[0].effective = saved
        assert libc.capset(ctypes.byref(header), caps) == 0


def test_a_file_the_worker_may_not_read_is_a_config_error_naming_the_field(
    conn: str, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    path = tmp_path / "locked.txt"
    path.write_text(INSIDE)
    path.chmod(0)
    with as_a_worker_without_root_read(), pytest.raises(CtxCacheConfigError) as raised:
        create(conn, [{"file": str(path)}], allowed_roots=[str(tmp_path)])
    assert str(raised.value).startswith(f"contents[0].file: {str(path)!r} cannot be read on this worker")
    assert "Permission denied" in str(raised.value)
    assert billable(emulator) == {"create_cache": 0, "generate_content": 0}
