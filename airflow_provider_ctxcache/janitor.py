"""Which leftover caches to delete: the one rule ``ctxcache caches gc`` and the janitor DAG share.

Caches bill storage per hour until deleted or expired, and a run that was killed, a DAG that
was deleted or an ``airflow tasks test`` leaves them behind. A cache is collected when

- this provider made it for one run (key ``ctxcache:r:`` or ``ctxcache:n:``, see
  :mod:`.cache_owner`) and that run has finished (success or failed) or no longer exists; or
- this provider made it and it is older than ``older_than`` (from its ``createTime``), whatever
  its run. This is the only rule for content-reuse caches (``ctxcache:c:``), which are shared
  across runs on purpose, and for run caches whose name carries no run.

Runs still queued or running keep their caches, and caches the provider did not make (no
``ctxcache:`` key) are never touched. Run states come from a lookup the caller gives: the
metadata database in the CLI (:func:`metadata_run_state`), the Task SDK inside a task
(:func:`task_run_state`), where the ORM is not allowed.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from google.genai import types

from airflow_provider_ctxcache.cache_owner import CONTENT_KIND, CacheOwner, owner_of
from airflow_provider_ctxcache.costs import readable_duration
from airflow_provider_ctxcache.hooks import ContextCacheHook
from airflow_provider_ctxcache.operators.delete_cache import delete_with_staged

DELETE, KEEP = "delete", "keep"
LOG = logging.getLogger(__name__)
FINISHED = frozenset({"success", "failed"})

RunStateLookup = Callable[[str, str], "str | None"]
"""``(dag_id, run_id) -> state`` (``queued``, ``running``, ``success``, ``failed``), None if no such run."""


@dataclass(frozen=True)
class Decision:
    """One cache, whether to delete it, and why (said the same way in the CLI and the task log)."""

    cache: types.CachedContent
    verdict: str
    reason: str
    owner: CacheOwner | None = None
    run_state: str | None = None

    @property
    def name(self) -> str:
        return str(self.cache.name)

    def to_dict(self) -> dict[str, Any]:
        owner = self.owner
        return {
            "name": self.name,
            "display_name": self.cache.display_name,
            "verdict": self.verdict,
            "reason": self.reason,
            "key_kind": owner.kind if owner else None,
            "dag_id": owner.dag_id if owner else None,
            "run_id": owner.run_id if owner else None,
            "run_state": self.run_state,
            "create_time": _iso(self.cache.create_time),
        }


def _run_text(owner: CacheOwner) -> str:
    return f"run {owner.dag_id}/{owner.run_id}"


def _state_text(state: Any) -> str | None:
    """``"success"`` from a state enum or string; None stays None."""
    if state is None:
        return None
    return str(getattr(state, "value", state))


def decide(
    caches: Iterable[types.CachedContent],
    run_state: RunStateLookup,
    *,
    now: dt.datetime | None = None,
    older_than: dt.timedelta | None = None,
) -> list[Decision]:
    """A verdict and a reason for each cache; each run's state is looked up once."""
    now = now or dt.datetime.now(dt.timezone.utc)
    states: dict[tuple[str, str], str | None] = {}
    decisions = []
    for cache in caches:
        owner = owner_of(cache.display_name)
        if owner is None:
            decisions.append(Decision(cache, KEEP, "not made by this provider (no ctxcache: key)"))
            continue
        state = None
        if owner.run_owned and owner.dag_id is not None and owner.run_id is not None:
            pair = (owner.dag_id, owner.run_id)
            if pair not in states:
                states[pair] = _state_text(run_state(*pair))
            state = states[pair]
            if state is None:
                decisions.append(Decision(cache, DELETE, f"{_run_text(owner)} no longer exists", owner))
                continue
            if state in FINISHED:
                reason = f"{_run_text(owner)} finished ({state})"
                decisions.append(Decision(cache, DELETE, reason, owner, state))
                continue
        age = now - cache.create_time if cache.create_time else None
        if older_than is not None and age is not None and age > older_than:
            reason = f"older than {readable_duration(older_than.total_seconds())} (made {_ago(age)} ago)"
            if state is not None:
                reason += f"; its {_run_text(owner)} is {state}"
            decisions.append(Decision(cache, DELETE, reason, owner, state))
        else:
            decisions.append(Decision(cache, KEEP, _why_kept(owner, state), owner, state))
    return decisions


def _why_kept(owner: CacheOwner, state: str | None) -> str:
    if state is not None:
        return f"{_run_text(owner)} is {state}"
    if owner.kind == CONTENT_KIND:
        return "content-reuse cache, shared across runs: only older_than applies"
    if owner.run_owned:
        return "its name carries no run (ids too long, or an older provider): only older_than applies"
    return f"unknown key kind {owner.kind!r}: only older_than applies"


def _ago(age: dt.timedelta) -> str:
    return readable_duration(max(age.total_seconds(), 0.0))


def _iso(when: dt.datetime | None) -> str | None:
    return when.isoformat() if when else None


@dataclass
class Sweep:
    """What a gc did (or, in a dry run, would do)."""

    decisions: list[Decision]
    dry_run: bool
    deleted: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)  # expired or deleted by someone else meanwhile
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def to_delete(self) -> list[str]:
        return [d.name for d in self.decisions if d.verdict == DELETE]

    @property
    def kept(self) -> int:
        return sum(1 for d in self.decisions if d.verdict == KEEP)

    def summary(self) -> dict[str, Any]:
        """Small enough for XCom: names deleted, how many kept, what failed."""
        return {
            "dry_run": self.dry_run,
            "to_delete": self.to_delete,
            "deleted": self.deleted,
            "already_gone": self.gone,
            "failed": self.failed,
            "kept": self.kept,
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self.summary(), "caches": [d.to_dict() for d in self.decisions]}


def sweep(
    hook: ContextCacheHook, decisions: list[Decision], *, dry_run: bool, log: logging.Logger | Any = LOG
) -> Sweep:
    """Logs every decision and, unless ``dry_run``, deletes each cache marked for it with its
    staged files (as ``DeleteCacheOperator`` does); one failure does not stop the rest."""
    done = Sweep(decisions=decisions, dry_run=dry_run)
    for decision in decisions:
        action = decision.verdict if not dry_run or decision.verdict == KEEP else "would delete"
        log.info("%s %s (%s): %s", action, decision.name, decision.cache.display_name, decision.reason)
        if decision.verdict != DELETE or dry_run:
            continue
        try:
            removal, _ = delete_with_staged(hook, decision.name, log)
        except Exception as error:  # reported with the others; the next cache is still collected
            done.failed[decision.name] = hook.scrub(f"{type(error).__name__}: {error}")
            log.error("Could not delete %s: %s", decision.name, done.failed[decision.name])
            continue
        (done.deleted if removal.deleted else done.gone).append(decision.name)
    return done


def collect(
    hook: ContextCacheHook,
    run_state: RunStateLookup,
    *,
    older_than: dt.timedelta | None,
    dry_run: bool,
    log: logging.Logger | Any = LOG,
    now: dt.datetime | None = None,
) -> Sweep:
    """List the connection's caches, decide, and delete (or only say what would go)."""
    return sweep(
        hook, decide(hook.list_caches(), run_state, now=now, older_than=older_than), dry_run=dry_run, log=log
    )


def metadata_run_state(dag_id: str, run_id: str) -> str | None:
    """A run's state from Airflow's metadata database: for the CLI, never inside a task."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        state = session.scalar(select(DagRun.state).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
    return _state_text(state)


def task_run_state(ti: Any) -> RunStateLookup:
    """A lookup through the Task SDK (``ti.get_dagrun_state``), for a task: the ORM is refused there.

    A missing run is a 404 from the execution API: an ``AirflowRuntimeError`` in a worker, the
    API client's ``ServerResponseError`` itself under ``dag.test()`` (its supervisor runs in
    process). Both mean "no such run"; any other failure is raised.
    """
    from airflow.sdk.api.client import ServerResponseError
    from airflow.sdk.exceptions import AirflowRuntimeError

    def lookup(dag_id: str, run_id: str) -> str | None:
        try:
            return _state_text(ti.get_dagrun_state(dag_id=dag_id, run_id=run_id))
        except AirflowRuntimeError as error:
            detail = error.error.detail or {}
            if detail.get("status_code") == 404:
                return None
            raise
        except ServerResponseError as error:
            if error.response.status_code == 404:
                return None
            raise

    return lookup
