"""One Airflow option read the way a worker reads it: its environment variable first
(``AIRFLOW__SECTION__KEY``), then Airflow's config, then the fallback.

The environment comes first so a value set for one worker process (a test, a deployment's
env) holds even where Airflow's config object was loaded earlier; a config that cannot be read
at all (code used outside Airflow) gives the fallback.
"""

from __future__ import annotations

import os


def env_name(section: str, key: str) -> str:
    return f"AIRFLOW__{section.upper()}__{key.upper()}"


def airflow_option(section: str, key: str, fallback: str) -> str:
    raw = os.environ.get(env_name(section, key))
    if raw is not None:
        return raw
    try:
        from airflow.configuration import conf

        return str(conf.get(section, key, fallback=fallback))
    except Exception:
        return fallback


__all__ = ["airflow_option", "env_name"]
