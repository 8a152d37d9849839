"""Which DAG run made a cache: written into its display name at create time, read back by the janitor.

Leftover caches bill storage until they expire, and the service keeps nothing that says who
made them. So a run-owned cache (``reuse="run"`` or ``"never"``) carries its run, readably,
before the provider's key::

    [PREFIX ]@DAG_ID/RUN_ID ctxcache:r:<run hash>:<content hash>

``PREFIX`` is the operator's ``display_name`` (left out when it is just the DAG id, which the
attribution already shows). The key stays last, so :func:`staging.key_of` and the exact-name
reuse lookup work as before, and for a given run the name is the same on every try. Ids are
percent-encoded where they hold whitespace, ``/`` or ``%``, so any run id reads back exactly.

Display names are limited to :data:`DISPLAY_NAME_LIMIT` characters: the prefix is cut first;
if the DAG and run ids alone do not fit, the attribution is dropped (the prefix, else the DAG
id, precedes the key as before) and the cache counts as unattributed: only an age limit can
collect it. Content-reuse caches (``ctxcache:c:``) are shared across runs and carry no run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

from airflow_provider_ctxcache.staging import KEY_MARK, key_of

DISPLAY_NAME_LIMIT = 128
RUN_OWNED_KINDS = ("r", "n")  # reuse="run" and reuse="never": made by, and for, one run
CONTENT_KIND = "c"  # reuse="content": shared by every run with the same content
_SAFE = ":+@"  # besides letters, digits and "_.-~": what run ids are usually made of
_ATTRIBUTION = re.compile(r"@(?P<dag>[^/\s]+)/(?P<run>\S+)")
_TRAILING_AT = re.compile(r"(^|\s)@+(\S*)$")


@dataclass(frozen=True)
class CacheOwner:
    """What a provider cache's display name says about it.

    ``kind`` is the key's letter (``r``, ``n``, ``c``; ``?`` for one this version does not
    know); ``dag_id`` and ``run_id`` are None when the name carries no run.
    """

    key: str
    kind: str
    dag_id: str | None = None
    run_id: str | None = None
    prefix: str = ""

    @property
    def run_owned(self) -> bool:
        """Made by one run for that run alone: finished with its run."""
        return self.kind in RUN_OWNED_KINDS

    @property
    def attributed(self) -> bool:
        return self.dag_id is not None and self.run_id is not None


def _kind(key: str) -> str:
    parts = key.split(":")
    return parts[1] if len(parts) > 2 and len(parts[1]) == 1 else "?"


def attribution(dag_id: str, run_id: str) -> str:
    """``@DAG_ID/RUN_ID``, readable for ordinary ids and unambiguous for any."""
    return f"@{quote(dag_id, safe=_SAFE)}/{quote(run_id, safe=_SAFE)}"


def _clip(text: str, room: int) -> str:
    return text.strip()[: max(room, 0)].rstrip()


def display_name(key: str, *, prefix: str | None, dag_id: str, run_id: str | None) -> str:
    """The display name of a cache with this key, at most :data:`DISPLAY_NAME_LIMIT` characters.

    A run-owned key with a ``run_id`` gets the attribution; a content key, the prefix (or the
    DAG id) and the key, as before.
    """
    room = DISPLAY_NAME_LIMIT - len(key) - 1  # the space before the key
    if _kind(key) not in RUN_OWNED_KINDS:
        text = (prefix or dag_id)[:room]  # unchanged: live content caches are found by this name
        return f"{text} {key}" if text else key
    if run_id is not None:
        owner = attribution(dag_id, run_id)
        if len(owner) <= room:
            text = _clip(prefix or "", room - len(owner) - 1) if prefix != dag_id else ""
            return f"{text} {owner} {key}" if text else f"{owner} {key}"
    # Without its run, the name must not end in something that reads as one.
    text = _TRAILING_AT.sub(r"\1\2", _clip(prefix or dag_id, room)).rstrip()
    return f"{text} {key}" if text else key


def owner_of(name: str | None) -> CacheOwner | None:
    """What the display name ``name`` says; None for a cache this provider did not make."""
    key = key_of(name)
    if key is None or name is None:
        return None
    kind = _kind(key)
    head = name[: name.rindex(KEY_MARK)].rstrip()
    before, _, last = head.rpartition(" ")
    match = _ATTRIBUTION.fullmatch(last) if kind in RUN_OWNED_KINDS else None
    if match is None:
        return CacheOwner(key=key, kind=kind, prefix=head.strip())
    return CacheOwner(
        key=key,
        kind=kind,
        dag_id=unquote(match.group("dag")),
        run_id=unquote(match.group("run")),
        prefix=before.strip(),
    )
