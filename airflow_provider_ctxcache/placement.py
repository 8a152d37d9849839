"""Whether a local path means the same file on every machine that may run the next task.

With a single-machine executor (LocalExecutor) every task runs on this machine, so a local
input, output or shard folder is the same everywhere. With CeleryExecutor, KubernetesExecutor
and the other distributed executors, the next task (a shard, a retry, the downstream reader)
may run on another worker whose disk does not have the file, and answers end up split over
several disks. So there a local path is refused before any billable call, unless the user
declares that every worker mounts the same filesystem at that path (an NFS or Filestore mount):
the operator's ``shared_filesystem=True`` or ``[ctxcache] shared_filesystem = True``.
"""

from __future__ import annotations

from collections.abc import Mapping

from airflow_provider_ctxcache.airflow_config import airflow_option, env_name
from airflow_provider_ctxcache.connection_defaults import CONFIG_SECTION, DEFAULT_SHARED_FILESYSTEM
from airflow_provider_ctxcache.exceptions import CtxCacheConfigError
from airflow_provider_ctxcache.gcs_uris import is_gcs

SHARED_FILESYSTEM_ENV = env_name(CONFIG_SECTION, "shared_filesystem")
SHARED_FILESYSTEM_OPTION = f"[ctxcache] shared_filesystem ({SHARED_FILESYSTEM_ENV})"
# Executors that run every task on the machine of the scheduler that started it.
ONE_MACHINE_EXECUTORS = frozenset({"LocalExecutor", "SequentialExecutor", "DebugExecutor"})
_TRUE = {"true", "1", "yes", "on", "t", "y"}
_FALSE = {"false", "0", "no", "off", "f", "n", ""}


def configured_executors() -> list[str]:
    """``[core] executor``: its comma-separated executors, each as its class name (aliases and
    module paths dropped); empty when Airflow's config cannot be read."""
    raw = airflow_option("core", "executor", "")
    names = []
    for entry in (raw or "").split(","):
        spec = entry.strip().split(":")[-1].strip()  # "alias:module.Class" -> "module.Class"
        if spec:
            names.append(spec.rsplit(".", 1)[-1])
    return names


def distributed_executor(task_executor: str | None = None) -> str | None:
    """The name of an executor that may run a task elsewhere, or None when all run on one machine.

    The task's own executor (``executor=`` on the operator) is named first when it is distributed.
    With several executors configured, any distributed one counts even for a task pinned to
    LocalExecutor: the tasks that read its files (shards, retries, downstream) may run there.
    """
    names = configured_executors()
    if task_executor:
        names = [task_executor.split(":")[-1].rsplit(".", 1)[-1], *names]
    return next((name for name in names if name not in ONE_MACHINE_EXECUTORS), None)


def configured_shared_filesystem() -> bool:
    """``[ctxcache] shared_filesystem`` (default False); a value that is not a boolean is a config error."""
    raw = airflow_option(CONFIG_SECTION, "shared_filesystem", str(DEFAULT_SHARED_FILESYSTEM))
    text = raw.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise CtxCacheConfigError(f"{SHARED_FILESYSTEM_OPTION}: {raw!r} is not True or False.")


def check_local_paths(
    paths: Mapping[str, str | None],
    *,
    shared_filesystem: bool | None = None,
    task_executor: str | None = None,
) -> None:
    """Refuses local paths among ``paths`` (field -> URI) when another worker may need them.

    :param shared_filesystem: the operator's declaration; None defers to the ``[ctxcache]`` option.
    :raises CtxCacheConfigError: naming the field, the executor, and what to use instead.
    """
    local = {field: uri for field, uri in paths.items() if isinstance(uri, str) and uri and not is_gcs(uri)}
    if not local:
        return
    executor = distributed_executor(task_executor)
    if executor is None:
        return
    if shared_filesystem is None:
        shared_filesystem = configured_shared_filesystem()
    if shared_filesystem:
        return
    field, uri = next(iter(local.items()))
    raise CtxCacheConfigError(
        f"{field}: {uri!r} is a local path, but the tasks run on {executor}: the next task (another "
        "shard, a retry, the reader of the answers) may run on a worker whose disk does not have it, "
        "and answers would end up split over several machines. Use a gs://bucket/path URI, or, if "
        "every worker and the triggerer mount the same filesystem at this path, pass "
        f"shared_filesystem=True or set {SHARED_FILESYSTEM_OPTION} = True."
    )


__all__ = [
    "ONE_MACHINE_EXECUTORS",
    "check_local_paths",
    "configured_executors",
    "configured_shared_filesystem",
    "distributed_executor",
]
