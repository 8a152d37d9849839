"""The dependency ranges say what CI runs: both pinned environments lie inside them, one at each end.

``constraints.txt`` (``.venv``, the whole suite) has the newest google-genai;
``constraints-google-provider.txt`` (``make test-compat``) has the floors of the Google libraries
beside apache-airflow-providers-google. A range widened or narrowed without re-pinning fails here,
and so does a README that names other versions than the ones tested.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
MAIN = REPO / "constraints.txt"
COMPAT = REPO / "constraints-google-provider.txt"
GOOGLE_PROVIDER = "apache-airflow-providers-google"


def pins(path: Path) -> dict[str, Version]:
    found = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            found[canonicalize_name(name)] = Version(version)
    return found


def dependencies() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [Requirement(spec) for spec in project["dependencies"]]


def floored() -> list[str]:
    """The Makefile's FLOORS: the dependencies the second environment pins at their floor."""
    match = re.search(r"^FLOORS := (.+)$", (REPO / "Makefile").read_text(), re.M)
    assert match, "FLOORS is gone from the Makefile"
    return match.group(1).split()


@pytest.mark.parametrize("constraints", [MAIN, COMPAT], ids=lambda path: path.name)
def test_every_dependency_is_pinned_inside_its_range(constraints: Path) -> None:
    pinned = pins(constraints)
    outside = [
        f"{req}: {pinned.get(canonicalize_name(req.name))}"
        for req in dependencies()
        if pinned.get(canonicalize_name(req.name)) not in req.specifier
    ]
    assert outside == []


def test_the_second_environment_pins_the_floors() -> None:
    pinned = pins(COMPAT)
    by_name = {canonicalize_name(req.name): req for req in dependencies()}
    assert "google-genai" in floored()
    for name in floored():
        (floor,) = [s.version for s in by_name[name].specifier if s.operator == ">="]
        assert pinned[name] == Version(floor), name


def test_the_second_environment_has_the_google_provider_and_the_same_airflow() -> None:
    compat, main = pins(COMPAT), pins(MAIN)
    assert GOOGLE_PROVIDER in compat
    assert GOOGLE_PROVIDER not in main
    assert compat["apache-airflow"] == main["apache-airflow"]


def test_the_main_environment_has_the_newest_major_the_range_admits() -> None:
    (genai,) = [req for req in dependencies() if req.name == "google-genai"]
    (ceiling,) = [Version(s.version) for s in genai.specifier if s.operator == "<"]
    assert pins(MAIN)["google-genai"].major == ceiling.major - 1


def test_the_readme_names_the_tested_versions() -> None:
    readme = (REPO / "README.md").read_text()
    match = re.search(r"^## Versions\n(.*?)(?=^## )", readme, re.M | re.S)
    assert match, "the README has no Versions section"
    compat, main = pins(COMPAT), pins(MAIN)
    tested = {
        "google-genai (newest)": main["google-genai"],
        "google-genai (floor)": compat["google-genai"],
        GOOGLE_PROVIDER: compat[GOOGLE_PROVIDER],
        "apache-airflow": main["apache-airflow"],
    }
    missing = [f"{what} {version}" for what, version in tested.items() if str(version) not in match[1]]
    assert missing == []
