"""``make demo``: the example DAG ``ctxcache_fanout`` run by real Airflow against the embedded emulator.

No Google account: the emulator answers on 127.0.0.1, Airflow runs on a throw-away SQLite home,
and the connection comes from ``AIRFLOW_CONN_CTXCACHE_DEFAULT``. The demo prints the answers
and the cached-token counts read back from XCom, then shows that no cache is left.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

DAG_ID = "ctxcache_fanout"


def example_dags_folder() -> Path:
    """The repository's example_dags/, next to the package in a source checkout."""
    folder = Path(__file__).resolve().parent.parent / "example_dags"
    if not (folder / f"{DAG_ID}.py").is_file():
        raise SystemExit(
            f"demo: {folder} has no {DAG_ID}.py; run the demo from a checkout of the repository."
        )
    return folder


def airflow(*args: str, env: dict[str, str], log: Path) -> None:
    command = [str(Path(sys.executable).with_name("airflow")), *args]
    with log.open("a") as out:
        done = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=900)
    if done.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-40:])
        raise SystemExit(f"demo: `airflow {' '.join(args)}` failed ({done.returncode}); log {log}:\n{tail}")


def read_results(home: Path) -> tuple[dict[str, Any], list[dict[str, Any]], list[Any]]:
    """The create task's facts, each mapped ask's results and every task's cost report (XCom)."""
    os.environ["AIRFLOW_HOME"] = str(home)
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(XComModel).filter(XComModel.dag_id == DAG_ID).all()
        created = {row.key: row.value for row in rows if row.task_id == "create_cache"}
        asks = sorted(
            (row.map_index, row.value) for row in rows if row.task_id == "ask" and row.key == "return_value"
        )
        costs = [row.value for row in rows if row.key == "cost"]
    answers = [value for _, value in asks]
    return created, answers, costs + [ask.get("cost") for ask in answers]


def main() -> int:
    from airflow_provider_ctxcache.emulator import EmulatorProcess

    home = Path(tempfile.mkdtemp(prefix="ctxcache-demo-"))
    log = home / "airflow.log"
    with EmulatorProcess() as emulator:
        print(f"emulator:     {emulator.url}")
        print(f"airflow home: {home} (SQLite; full log in {log.name})")
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(example_dags_folder()),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW_CONN_CTXCACHE_DEFAULT": json.dumps(
                {
                    "conn_type": "ctxcache",
                    "password": "demo-key",
                    "extra": {"backend": "gemini_api", "base_url": emulator.url},
                }
            ),
        }
        airflow("db", "migrate", env=env, log=log)
        print(f"running:      airflow dags test {DAG_ID}")
        airflow("dags", "test", DAG_ID, env=env, log=log)

        created, asks, costs = read_results(home)
        # Imported after read_results: it imports Airflow, which must see this AIRFLOW_HOME first.
        from airflow_provider_ctxcache.costs import bill_table

        print(
            f"\ncache {created.get('return_value')}: "
            f"{created.get('token_count')} tokens of {created.get('model')}\n"
        )
        cached_total = prompt_total = 0
        for ask in asks:
            for key, result in ask["results"].items():
                usage = result.get("usage", {})
                cached_total += usage.get("cached_content_token_count") or 0
                prompt_total += usage.get("prompt_token_count") or 0
                print(f"[{key}] {result.get('text', result.get('error'))}")
                print(
                    f"        prompt tokens {usage.get('prompt_token_count')}, "
                    f"cached {usage.get('cached_content_token_count')}"
                )
        share = cached_total / prompt_total if prompt_total else 0.0
        print(
            f"\ncached tokens: {cached_total} of {prompt_total} prompt tokens ({share:.0%}) "
            "at the cached rate"
        )
        print(f"\n{bill_table(costs, title='The run')}")
        left = emulator.admin.state()["caches"]
        print(f"caches left on the emulator after the teardown: {len(left)}")
        return 0 if not left and asks else 1


if __name__ == "__main__":
    sys.exit(main())
