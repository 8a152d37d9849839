"""The provider as a user installs it: the wheel, not editable, in a fresh virtual environment.

An editable install hides what a wheel can forget: package data, entry points, the license, a
dependency that only the checkout provides. So the wheel and the sdist are built (``python -m
build``, as ``make dist`` does), the wheel is installed with ``constraints.txt`` into a new
environment, and Airflow is asked there, from a folder outside the checkout, whether it sees the
provider, its plugin, its commands and the example DAGs. About two minutes, most of it pip.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from email.parser import Parser
from pathlib import Path
from types import FrameType

import pytest

REPO = Path(__file__).resolve().parents[2]
DISTRIBUTION = "airflow-provider-ctxcache"
VERSION = "0.1.0"
STEM = f"airflow_provider_ctxcache-{VERSION}"

# pip fetches every dependency (the index here serves no cache): minutes, not the suite's 300 s.
pytestmark = pytest.mark.timeout(1200)


def run(args: list[str], *, env: dict[str, str] | None = None, cwd: Path, timeout: float = 120) -> str:
    """Runs a command and returns its stdout; a failure shows both streams."""
    result = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {result.returncode}\n"
            f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
        )
    return result.stdout


def json_in(output: str) -> object:
    """The JSON document on the last line of a command's output; Airflow may log lines before it."""
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines, "no output"
    return json.loads(lines[-1])


@dataclass(frozen=True)
class Installed:
    """The fresh environment with the wheel in it, and where to run commands from."""

    wheel: Path
    sdist: Path
    bin: Path
    work: Path
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 120) -> str:
        return run([*args], env=self.env, cwd=self.work, timeout=timeout)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="module")
def installed() -> Iterator[Installed]:
    """Builds, installs, and removes everything at the end, also when a step fails.

    A SIGTERM (make test stopping its background job, a CI timeout) would skip the clean-up and
    leave a few hundred MB behind: it is a KeyboardInterrupt while the environment exists.
    """
    root = Path(tempfile.mkdtemp(prefix="ctxcache-wheel-"))
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        dist = root / "dist"
        # --no-isolation: the pinned build backend of the test extra, no download.
        run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(REPO)], cwd=root)
        (wheel,) = dist.glob("*.whl")
        (sdist,) = dist.glob("*.tar.gz")

        venv = root / "venv"
        run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=root)
        python = venv / "bin" / "python"
        # This environment's pip installs into the new one (--python): no pip bootstrap there.
        pip = [sys.executable, "-m", "pip", "--python", str(python)]
        constraints = str(REPO / "constraints.txt")
        run([*pip, "install", "-q", "--no-compile", "-c", constraints, str(wheel)], cwd=root, timeout=900)
        run([*pip, "check"], cwd=root)

        home = root / "airflow-home"
        dags = home / "dags"
        dags.mkdir(parents=True)
        for dag_file in (REPO / "example_dags").glob("*.py"):
            shutil.copy(dag_file, dags / dag_file.name)
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("AIRFLOW", "PYTHON", "VIRTUAL_ENV", "GOOGLE_", "STORAGE_EMULATOR"))
        }
        env.update(
            PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
            AIRFLOW_HOME=str(home),
            AIRFLOW__CORE__DAGS_FOLDER=str(dags),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            NO_GCE_CHECK="True",
        )
        work = root / "work"  # not the checkout: its package must not shadow the installed one
        work.mkdir()
        yield Installed(wheel=wheel, sdist=sdist, bin=venv / "bin", work=work, env=env)
    finally:
        signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(root, ignore_errors=True)


def test_the_wheel_ships_the_package_data_the_license_and_the_ranges(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
        metadata = Parser().parsestr(wheel.read(f"{STEM}.dist-info/METADATA").decode())
        entry_points = wheel.read(f"{STEM}.dist-info/entry_points.txt").decode()

    assert f"{STEM}.dist-info/licenses/LICENSE" in names
    assert {
        "airflow_provider_ctxcache/py.typed",
        "airflow_provider_ctxcache/data/sample_contract.txt",
        "airflow_provider_ctxcache/emulator/__main__.py",
    } <= names
    assert not any(name.startswith(("tests/", "example_dags/")) for name in names)
    assert metadata["License-Expression"] == "Apache-2.0"
    requires = metadata.get_all("Requires-Dist") or []
    assert "google-genai<4,>=2.8.0" in requires
    assert not any(r.startswith(("pendulum", "python-dateutil")) for r in requires)
    for group in ("[apache_airflow_provider]", "[airflow.plugins]", "[console_scripts]"):
        assert group in entry_points


def test_the_sdist_ships_the_license_changelog_tests_and_example_dags(installed: Installed) -> None:
    with tarfile.open(installed.sdist) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}

    assert {"LICENSE", "CHANGELOG.md", "README.md", "pyproject.toml", "constraints.txt"} <= names
    assert {"example_dags/ctxcache_fanout.py", "tests/conftest.py"} <= names
    assert not any(name.startswith((".venv", "dist/", "artifacts/")) for name in names)


def test_airflow_lists_the_provider_installed_from_the_wheel(installed: Installed) -> None:
    providers = json_in(installed.run("airflow", "providers", "list", "--output", "json"))

    assert isinstance(providers, list)
    ours = [p for p in providers if p["package_name"] == DISTRIBUTION]
    assert [p["version"] for p in ours] == [VERSION]


def test_airflow_loads_the_caches_view_plugin(installed: Installed) -> None:
    plugins = json_in(installed.run("airflow", "plugins", "--output", "json"))

    assert isinstance(plugins, list)
    (plugin,) = [p for p in plugins if p["name"] == "ctxcache"]
    assert f"{DISTRIBUTION}=={VERSION}" in plugin["source"]
    assert [app["url_prefix"] for app in plugin["fastapi_apps"]] == ["/ctxcache"]


def test_the_console_scripts_run(installed: Installed) -> None:
    assert "caches" in installed.run(str(installed.bin / "ctxcache"), "--help")
    assert "--port" in installed.run(str(installed.bin / "ctxcache-emulator"), "--help")


def test_the_example_dags_parse_where_the_wheel_is_installed(installed: Installed) -> None:
    script = (
        "import json, os, sys\n"
        "import airflow_provider_ctxcache\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        "bag = DagBag(dag_folder=os.environ['AIRFLOW__CORE__DAGS_FOLDER'])\n"
        "print(json.dumps({'package': airflow_provider_ctxcache.__file__,\n"
        "                  'errors': {k: str(v) for k, v in bag.import_errors.items()},\n"
        "                  'files': sorted({os.path.basename(d.fileloc) for d in bag.dags.values()})}))\n"
    )
    parsed = json_in(installed.run(str(installed.bin / "python"), "-c", script))

    assert isinstance(parsed, dict)
    assert parsed["errors"] == {}
    assert parsed["files"] == sorted(path.name for path in (REPO / "example_dags").glob("*.py"))
    assert Path(parsed["package"]).is_relative_to(installed.bin.parent)
