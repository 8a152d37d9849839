"""The ``ctxcache`` command, run for real: as a module and as the installed script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_provider_ctxcache.costs import advise

SCRIPT = Path(sys.executable).parent / "ctxcache"
COMMANDS = {
    "module": [sys.executable, "-m", "airflow_provider_ctxcache.cli"],
    "script": [str(SCRIPT)],
}
README_EXAMPLE = [
    "--model",
    "gemini-2.5-pro",
    "--context-tokens",
    "300000",
    "--requests",
    "40",
    "--ttl",
    "2h",
]


@pytest.fixture(params=sorted(COMMANDS))
def command(request: pytest.FixtureRequest) -> list[str]:
    if request.param == "script":
        assert SCRIPT.exists(), f"{SCRIPT} is missing: run 'pip install -e . --no-deps'"
    return COMMANDS[request.param]


def run(command: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=120, check=False)


# The README example: gemini-2.5-pro, 300,000 cached tokens (over 200k: $2.50 / $0.25), 2 h, 40
# requests of no further prompt or output. Fixed: creation $0.75 + storage 300,000 x $4.50 / 1M x 2
# = $2.70. Each request: $0.075 with the cache, $0.75 without, saving $0.675: 3.45 / 0.675 = 5.1 -> 6.
# At 40: explicit 3.45 + 3.00 = $6.45, online $30.00, saved $23.55.
def test_readme_example_prints_a_table_with_the_break_even(command: list[str]) -> None:
    result = run(command, "advise", *README_EXAMPLE)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    online = next(line for line in lines if line.startswith("online, no cache"))
    assert online.split() == ["online,", "no", "cache", "30.00", "23.55", "6", "requests", "sure"]
    assert "worth it: yes, at 40 requests the cache saves 23.55 USD" in result.stdout
    assert result.stderr == ""


def test_json_output_equals_the_library_answer(command: list[str]) -> None:
    result = run(
        command, "advise", *README_EXAMPLE, "--prompt-tokens", "500", "--output-tokens", "1000", "--json"
    )
    assert result.returncode == 0, result.stderr
    expected = advise(
        model="gemini-2.5-pro",
        context_tokens=300_000,
        requests=40,
        ttl="2h",
        prompt_tokens=500,
        output_tokens=1_000,
    ).to_dict()
    assert json.loads(result.stdout) == expected


def test_negative_requests_exit_2_with_one_error_line_and_no_traceback(command: list[str]) -> None:
    result = run(
        command, "advise", "--model", "gemini-2.5-flash", "--context-tokens", "100000", "--requests", "-1"
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "ctxcache advise: error: requests: -1 must be a whole number >= 0; "
        "give e.g. 40 (how many requests would use the cache)."
    ]


# flash's figures under an unknown name, 100,000 tokens for 1 h: fixed 0.03 + 0.10 = $0.13, each
# request saves 100,000 x ($0.30 - $0.03) / 1M = $0.027: 0.13 / 0.027 = 4.8 -> 5 requests.
def test_a_full_price_override_prices_an_unknown_model(command: list[str]) -> None:
    prices = {
        "my-tuned-model": {
            "input_per_million": 0.30,
            "cached_input_per_million": 0.03,
            "output_per_million": 2.50,
            "storage_per_million_per_hour": 1.00,
        }
    }
    result = run(
        command,
        "advise",
        "--model",
        "my-tuned-model",
        "--context-tokens",
        "100000",
        "--requests",
        "5",
        "--prices",
        json.dumps(prices),
        "--json",
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["break_even"]["online_no_cache"] == 5
    assert data["costs"]["explicit"] == pytest.approx(0.145)
    assert data["worth_it"] is True


def test_the_example_in_the_costs_doc_prints_what_the_doc_shows() -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "costs.md").read_text()
    block = doc.split("    $ ctxcache advise", 1)[1].split("\n\n", 1)[0]
    args = block.splitlines()[0].split()
    shown = [line.removeprefix("    ") for line in block.splitlines()[1:]]

    done = run(COMMANDS["module"], "advise", *args)

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == shown
