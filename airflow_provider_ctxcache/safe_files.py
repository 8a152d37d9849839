"""The allowed roots, and local files opened once beneath them.

This is the one allowed-roots check: cache contents (``contents.py``) and fan-out input and
output (``fanout/uris.py``, ``fanout/inputs.py``, ``fanout/outputs.py``, ``fanout/shards.py``,
``fanout/pending.py``) all call it. A run triggered from the UI renders params into paths, so a
path is untrusted, and a path checked now and opened later can be swapped in between (a folder
for a symlink to elsewhere, a file for a FIFO). So a path is opened once: every component
relative to its parent's descriptor with ``O_NOFOLLOW``, a symlink read and resolved by hand
beneath the roots (followed while it stays inside one, refused when it leads out), ``..`` taken
back along the folders already opened, and the last component opened ``O_NONBLOCK`` and checked
on its descriptor (a FIFO, socket or device is refused by name, without blocking).

- A content file (:func:`read_beneath`) is a regular file whose bytes are read there and then;
  those bytes are what is hashed and sent, inline or staged.
- A fan-out input (:func:`open_file_beneath`) is a regular file's descriptor, read as many
  times as needed through that descriptor and never reopened by its path.
- A fan-out output or shards folder (:func:`open_dir_beneath`, missing folders made with
  ``mkdir`` relative to their parent's descriptor) is a folder's descriptor: files in it are
  created, listed, read (:func:`open_file_in`), renamed and removed relative to it, so the
  folder written to is the folder that was checked.

Roots must be absolute: an empty or relative root would be the worker's current directory.
A root itself may be a symlink (it is the administrator's choice); it is resolved once.
"""

from __future__ import annotations

import collections
import errno
import hashlib
import os
import shutil
import stat
import tempfile
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from airflow_provider_ctxcache.airflow_config import airflow_option, env_name
from airflow_provider_ctxcache.connection_defaults import CONFIG_SECTION, DEFAULT_ALLOWED_ROOTS
from airflow_provider_ctxcache.exceptions import CtxCacheConfigError

ALLOWED_ROOTS_ENV = env_name(CONFIG_SECTION, "allowed_roots")
CONFIG_FIELD = f"[ctxcache] allowed_roots ({ALLOWED_ROOTS_ENV})"
IN_MEMORY_LIMIT = 4 * 1024 * 1024  # larger files are copied to a private folder while being read
_CHUNK = 1024 * 1024
_MAX_LINKS = 40  # as the kernel's limit, so a symlink loop ends
_ROOT_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_LEAF_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_MISSING = (errno.ENOENT, errno.ENOTDIR)


@dataclass(frozen=True)
class Root:
    """An allowed root: where it really is, and the spellings a user's path may start with."""

    real: Path
    spellings: tuple[tuple[str, ...], ...]


def allowed_roots(roots: Iterable[str] | str, field: str = "allowed_roots") -> list[Root]:
    """Checked roots; an empty, relative or non-string root is a config error naming ``field``."""
    if isinstance(roots, str):
        raise CtxCacheConfigError(
            f"{field}: {roots!r} is a string, not a list; give a list of absolute folders, e.g. [{roots!r}]."
        )
    return [_root(root, field) for root in roots]


def _root(root: object, field: str) -> Root:
    if isinstance(root, os.PathLike):
        root = os.fspath(root)
    if not isinstance(root, str) or not root.strip():
        raise CtxCacheConfigError(
            f"{field}: {root!r} is not a folder; give absolute folders (an empty root would be "
            "the worker's current directory)."
        )
    expanded = os.path.expanduser(root.strip())
    if not os.path.isabs(expanded):
        raise CtxCacheConfigError(
            f"{field}: {root!r} is a relative path, so it would depend on the worker's current "
            "directory; give an absolute folder such as '/data/contracts'."
        )
    given = os.path.normpath(expanded)
    real = os.path.realpath(given)
    return Root(real=Path(real), spellings=tuple(dict.fromkeys((_parts(real), _parts(given)))))


def configured_allowed_roots() -> list[str]:
    """``[ctxcache] allowed_roots`` from Airflow's config (or its env var), comma-separated.

    Blank entries (a trailing comma) are ignored and an empty setting allows no local files; a
    relative entry is a config error naming the setting.
    """
    raw = airflow_option(CONFIG_SECTION, "allowed_roots", DEFAULT_ALLOWED_ROOTS)
    roots = [root.strip() for root in raw.split(",") if root.strip()]
    allowed_roots(roots, CONFIG_FIELD)
    return roots


def disabled_error(where: str, alternative: str = "") -> CtxCacheConfigError:
    other = f", or {alternative}" if alternative else ""
    return CtxCacheConfigError(
        f"{where}: local files are disabled; allow their folder with the operator's allowed_roots "
        f"or {CONFIG_FIELD}{other}."
    )


def outside_error(where: str, raw: str, roots: Sequence[Root], how: str = "") -> CtxCacheConfigError:
    allowed = ", ".join(str(root.real) for root in roots)
    return CtxCacheConfigError(
        f"{where}: {raw!r} is outside the allowed roots ({allowed}){how}; move it there."
    )


def within(path: Path, roots: Sequence[Root]) -> bool:
    """Whether a resolved ``path`` lies in one of the roots."""
    return any(path == root.real or path.is_relative_to(root.real) for root in roots)


class CheckedFile:
    """A regular file read once through its checked descriptor; these bytes are the ones sent.

    Small files stay in memory. Larger ones are copied while being read into a private folder,
    which is also what :attr:`path` gives uploads that need a file name (the copy bears the
    file's own name); the folder goes when this object does.
    """

    def __init__(
        self, name: str, shown: str, data: bytes | None, copy: Path | None, size: int, sha256: str
    ) -> None:
        self.name = name
        self.shown = shown  # as messages name it: the path given, or the folder's path and the entry
        self.size = size
        self.sha256 = sha256
        self._data = data
        self._copy = copy
        if copy is not None:
            weakref.finalize(self, shutil.rmtree, copy.parent, True)

    def read(self) -> bytes:
        return self._data if self._data is not None else self.path.read_bytes()

    def chunks(self) -> Iterator[bytes]:
        if self._data is not None:
            yield self._data
            return
        with self.path.open("rb") as stream:
            yield from iter(lambda: stream.read(_CHUNK), b"")

    @property
    def path(self) -> Path:
        """The private copy (made now from the bytes in memory, if there is none yet)."""
        if self._copy is None:
            self._copy = _private_copy(self.name)
            self._copy.write_bytes(self._data or b"")
            weakref.finalize(self, shutil.rmtree, self._copy.parent, True)
        return self._copy


def read_beneath(raw: str, roots: Sequence[Root], where: str) -> list[CheckedFile]:
    """The file at ``raw``, or the files of the folder there (recursively, in name order).

    Hidden names are skipped in a folder, and so are symlinks to folders (no loops); any other
    entry that cannot be sent fails the read naming it.
    """
    found, reached = _opened(raw, roots, where, raw)
    files: list[CheckedFile] = []
    try:
        mode = _fstat(found, where, raw).st_mode
        if stat.S_ISDIR(mode):
            _walk(found, reached, raw, roots, where, files)
        else:
            files.append(_read(found, mode, os.path.basename(reached), raw, where))
    finally:
        os.close(found)
    return files


class MissingPath(CtxCacheConfigError):
    """The path, or a folder on its way, does not exist (a config error naming the field)."""


def open_file_beneath(
    raw: str,
    roots: Sequence[Root],
    where: str,
    *,
    shown: str | None = None,
    fix: str = "give a file inside it",
) -> int:
    """A descriptor of the regular file at ``raw``, opened once beneath the roots (blocking reads).

    The caller owns the descriptor and reads through it (``os.pread`` to read it again), never
    reopening the path. A folder is refused saying ``fix``; a FIFO, socket or device is refused
    by name without blocking. ``shown`` is how messages name the path (default ``raw``).

    :raises CtxCacheConfigError: naming ``where``; :class:`MissingPath` when nothing is there.
    """
    shown = raw if shown is None else shown
    fd, _reached = _opened(raw, roots, where, shown)
    return _regular_file(fd, where, shown, folder_fix=fix)


def open_dir_beneath(
    raw: str,
    roots: Sequence[Root],
    where: str,
    *,
    create: bool = False,
    shown: str | None = None,
    fix: str = "give a folder",
) -> int:
    """A descriptor of the folder at ``raw``, opened once beneath the roots.

    With ``create``, missing folders on the way are made (``mkdir`` relative to the parent's
    descriptor, so never through a symlink that leads out). Files in the folder are then made,
    read, renamed and removed relative to the descriptor (``dir_fd=``), never by path. Anything
    but a folder there is refused saying ``fix``.

    :raises CtxCacheConfigError: naming ``where``; :class:`MissingPath` when nothing is there
        (only without ``create``).
    """
    shown = raw if shown is None else shown
    fd, _reached = _opened(raw, roots, where, shown, create=create)
    try:
        mode = _fstat(fd, where, shown).st_mode
        if not stat.S_ISDIR(mode):
            what = "file" if stat.S_ISREG(mode) else _kind(mode)
            raise CtxCacheConfigError(f"{where}: {shown!r} is a {what}; {fix}.")
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_dir_in(dir_fd: int, name: str, path: str, roots: Sequence[Root], where: str) -> int | None:
    """The folder ``name`` in the folder open at ``dir_fd``, or None when it is not a folder.

    A symlink there is followed beneath the roots from ``path`` (the entry's own path), and
    refused when it leads out of them; a folder that went away meanwhile is None.
    """
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as error:
        if _link_target(name, dir_fd) is None:
            if error.errno in _MISSING:
                return None
            raise _unreadable(where, path, error) from None
    try:
        return open_dir_beneath(path, roots, where)
    except MissingPath:
        return None


def open_file_in(dir_fd: int, name: str, where: str, shown: str) -> int:
    """The regular file ``name`` in the folder open at ``dir_fd``, never through a symlink.

    Opened without blocking and checked on its descriptor, as :func:`open_file_beneath` does;
    a symlink there is refused (``O_NOFOLLOW``). ``shown`` names it in messages.
    """
    try:
        fd = os.open(name, _LEAF_FLAGS, dir_fd=dir_fd)
    except OSError as error:
        if error.errno == errno.ENOENT:
            raise MissingPath(f"{where}: {shown!r} does not exist on this worker.") from None
        raise _unreadable(where, shown, error) from None
    return _regular_file(fd, where, shown)


def _regular_file(fd: int, where: str, shown: str, *, folder_fix: str | None = None) -> int:
    """``fd`` if it is a regular file, switched to blocking reads; else closed and refused by name."""
    try:
        mode = _fstat(fd, where, shown).st_mode
        if folder_fix is not None and stat.S_ISDIR(mode):
            raise CtxCacheConfigError(f"{where}: {shown!r} is a folder; {folder_fix}.")
        if not stat.S_ISREG(mode):
            raise _not_regular(where, shown, mode)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _opened(
    raw: str, roots: Sequence[Root], where: str, shown: str, *, create: bool = False
) -> tuple[int, str]:
    """``raw`` opened beneath the roots, every failure a config error naming ``where`` and ``shown``."""
    if not roots:
        raise disabled_error(where)
    path = os.path.expanduser(raw)
    if not os.path.isabs(path):
        path = os.path.join(os.getcwd(), path)
    try:
        try:
            return _open_beneath(path, roots, create=create)
        except _Outside:  # spelled through a symlink above the roots? Resolved, it is walked all the same
            return _open_beneath(os.path.realpath(path), roots, create=create)
    except _Outside:
        raise outside_error(where, shown, roots) from None
    except _LinkOut:
        raise outside_error(where, shown, roots, " through a symlink") from None
    except _CannotCreate as failed:
        raise _cannot_create(where, shown, failed.error) from None
    except OSError as error:
        if error.errno in _MISSING:
            if create:  # a file where a folder should be made
                raise _cannot_create(where, shown, error) from None
            raise MissingPath(f"{where}: {shown!r} does not exist on this worker.") from None
        raise _unreadable(where, shown, error) from None


class _Outside(Exception):
    """The path, as given, is in no allowed root."""


class _LinkOut(Exception):
    """A symlink on the path's way leads out of every allowed root."""


class _CannotCreate(Exception):
    """A missing folder on the path's way could not be made."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error)
        self.error = error


def _parts(path: str) -> tuple[str, ...]:
    return tuple(part for part in path.split("/") if part not in ("", "."))


def _match(path: str, roots: Sequence[Root]) -> tuple[Root, collections.deque[str]]:
    """The outermost root ``path`` starts with (compared by components, nothing resolved), and the rest."""
    parts = _parts(path)
    best: tuple[int, Root] | None = None
    for root in roots:
        for spelling in root.spellings:
            if parts[: len(spelling)] == spelling and (best is None or len(spelling) < best[0]):
                best = (len(spelling), root)
    if best is None:
        raise _Outside(path)
    return best[1], collections.deque(parts[best[0] :])


def _open_beneath(path: str, roots: Sequence[Root], *, create: bool = False) -> tuple[int, str]:
    """``path`` opened beneath the roots, never through a symlink that leaves them.

    With ``create``, a missing component is made as a folder in its parent's descriptor.
    Returns the descriptor and where it was reached (symlinks resolved).
    """
    root, pending = _match(path, roots)
    stack = [os.open(root.real, _ROOT_FLAGS)]
    names: list[str] = []
    links = 0
    made = 0

    def jump(target: str, leaving: type[Exception]) -> None:
        nonlocal root
        try:
            root, rest = _match(target, roots)
        except _Outside:
            raise leaving(target) from None
        while stack:
            os.close(stack.pop())
        names.clear()
        stack.append(os.open(root.real, _ROOT_FLAGS))
        pending.extendleft(reversed(rest))

    try:
        while pending:
            name = pending.popleft()
            if name == "..":
                if names:
                    os.close(stack.pop())
                    names.pop()
                else:  # above this root: only another root can hold its parent
                    jump(os.path.dirname(root.real), _LinkOut if links else _Outside)
                continue
            last = not pending
            try:
                fd = os.open(name, _LEAF_FLAGS if last else _DIR_FLAGS, dir_fd=stack[-1])
            except OSError as error:
                target = _link_target(name, stack[-1])
                if target is None:
                    if not (create and error.errno == errno.ENOENT):
                        raise
                    made += 1  # made, then gone again each time: give up as a symlink loop would
                    if made > _MAX_LINKS + len(names) + len(pending) + 1:
                        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path) from None
                    _make_folder(name, stack[-1])
                    pending.appendleft(name)
                    continue
                links += 1
                if links > _MAX_LINKS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path) from None
                if target.startswith("/"):
                    jump(target, _LinkOut)
                else:
                    pending.extendleft(reversed(_parts(target)))
                continue
            if last:
                return fd, os.path.join(root.real, *names, name)
            stack.append(fd)
            names.append(name)
        return stack.pop(), os.path.join(root.real, *names)
    finally:
        for fd in stack:
            os.close(fd)


def _make_folder(name: str, dir_fd: int) -> None:
    """The folder ``name`` in ``dir_fd``; one made meanwhile by someone else is fine."""
    try:
        os.mkdir(name, 0o777, dir_fd=dir_fd)
    except FileExistsError:
        pass
    except OSError as error:
        raise _CannotCreate(error) from None


def _link_target(name: str, dir_fd: int) -> str | None:
    """What the symlink ``name`` points at, or None when it is not a symlink."""
    try:
        return os.readlink(name, dir_fd=dir_fd)
    except OSError:
        return None


def _walk(
    fd: int, reached: str, shown: str, roots: Sequence[Root], where: str, out: list[CheckedFile]
) -> None:
    try:
        names = sorted(os.listdir(fd))
    except OSError as error:
        raise _unreadable(where, shown, error) from None
    for name in names:
        if name.startswith("."):
            continue
        entry = f"{shown.rstrip('/')}/{name}"
        via_link = False
        try:
            try:
                child = os.open(name, _LEAF_FLAGS, dir_fd=fd)
            except OSError:
                if _link_target(name, fd) is None:
                    raise
                via_link = True
                child, _ = _open_beneath(os.path.join(reached, name), roots)
        except (_Outside, _LinkOut):
            raise outside_error(where, entry, roots, " through a symlink") from None
        except OSError as error:
            raise _unreadable(where, entry, error) from None
        try:
            mode = _fstat(child, where, entry).st_mode
            if stat.S_ISDIR(mode):
                if not via_link:
                    _walk(child, os.path.join(reached, name), entry, roots, where, out)
            else:
                out.append(_read(child, mode, name, entry, where))
        finally:
            os.close(child)


def _fstat(fd: int, where: str, shown: str) -> os.stat_result:
    try:
        return os.fstat(fd)
    except OSError as error:
        raise _unreadable(where, shown, error) from None


def _read(fd: int, mode: int, name: str, shown: str, where: str) -> CheckedFile:
    if not stat.S_ISREG(mode):
        raise _not_regular(where, shown, mode)
    digest = hashlib.sha256()
    size = 0
    held = bytearray()
    copy: Path | None = None
    out: BinaryIO | None = None
    try:
        os.set_blocking(fd, True)
        while chunk := _read_chunk(fd, where, shown):
            digest.update(chunk)
            size += len(chunk)
            if out is None and len(held) + len(chunk) > IN_MEMORY_LIMIT:
                copy = _private_copy(name)
                out = copy.open("wb")  # a full disk is the worker's trouble: raised as it is
                out.write(held)
                held = bytearray()
            if out is None:
                held += chunk
            else:
                out.write(chunk)
    except BaseException:
        if out is not None:
            out.close()
        if copy is not None:
            shutil.rmtree(copy.parent, ignore_errors=True)
        raise
    if out is not None:
        out.close()
    return CheckedFile(name, shown, None if copy is not None else bytes(held), copy, size, digest.hexdigest())


def _read_chunk(fd: int, where: str, shown: str) -> bytes:
    try:
        return os.read(fd, _CHUNK)
    except OSError as error:
        raise _unreadable(where, shown, error) from None


def _private_copy(name: str) -> Path:
    return Path(tempfile.mkdtemp(prefix="ctxcache-file-")) / name


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "special file"


def _not_regular(where: str, shown: str, mode: int) -> CtxCacheConfigError:
    return CtxCacheConfigError(
        f"{where}: {shown!r} is a {_kind(mode)}, not a regular file; only regular files are "
        "read (a FIFO or a device could block the worker or never end)."
    )


def _cannot_create(where: str, shown: str, error: OSError) -> CtxCacheConfigError:
    return CtxCacheConfigError(
        f"{where}: cannot create the folder {shown!r} ({error.strerror or error}); give a folder "
        "this worker may create, or create it beforehand."
    )


def _unreadable(where: str, shown: str, error: OSError) -> CtxCacheConfigError:
    return CtxCacheConfigError(
        f"{where}: {shown!r} cannot be read on this worker ({error.strerror or error}); let the "
        "worker's user read it, or leave it out."
    )
