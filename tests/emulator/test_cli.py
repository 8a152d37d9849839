"""The command line and the process launcher."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from google.genai import errors, types

from airflow_provider_ctxcache.emulator.process import EmulatorProcess

from .conftest import developer_client, vertex_client

MODULE = [sys.executable, "-m", "airflow_provider_ctxcache.emulator"]


def test_a_non_loopback_host_is_refused_without_allow_remote() -> None:
    result = subprocess.run(
        [*MODULE, "--host", "0.0.0.0", "--port", "0"], capture_output=True, text=True, timeout=30
    )

    assert result.returncode == 2
    assert result.stdout == ""
    assert "--allow-remote" in result.stderr


def test_it_prints_one_ready_line_and_stops_cleanly_on_sigterm() -> None:
    process = subprocess.Popen(
        [*MODULE, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert re.fullmatch(r"ctxcache-emulator listening on http://127\.0\.0\.1:\d+\n", line)
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode == 0
    assert out == ""


def test_the_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "ctxcache-emulator"
    if not script.exists() and shutil.which("ctxcache-emulator") is None:
        pytest.skip("the package is not installed in this environment")
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=30)

    assert result.returncode == 0
    assert "--min-tokens" in result.stdout


def test_min_tokens_overrides_a_model_on_both_backends() -> None:
    with EmulatorProcess(args=["--min-tokens", "gemini-2.5-pro=10"]) as emulator:
        config = types.CreateCachedContentConfig(contents="x" * 40)  # 10 tokens

        for client in (developer_client(emulator.url), vertex_client(emulator.url)):
            assert client.caches.create(model="gemini-2.5-pro", config=config).name
            with pytest.raises(errors.ClientError) as caught:
                client.caches.create(
                    model="gemini-2.5-pro", config=types.CreateCachedContentConfig(contents="x" * 36)
                )
            assert "10" in str(caught.value.message)


def test_min_tokens_adds_an_unknown_model_on_both_backends() -> None:
    with EmulatorProcess(args=["--min-tokens", "my-model=5"]) as emulator:
        config = types.CreateCachedContentConfig(contents="x" * 20)  # 5 tokens

        for client in (developer_client(emulator.url), vertex_client(emulator.url)):
            assert client.caches.create(model="my-model", config=config).name
            assert client.models.generate_content(model="my-model", contents="hi").text


def test_the_launcher_reports_the_stderr_of_a_process_that_dies() -> None:
    with pytest.raises(RuntimeError, match="expected MODEL=N"):
        EmulatorProcess(args=["--min-tokens", "not-a-pair"]).start()


def test_the_launcher_knows_its_url_and_port() -> None:
    with EmulatorProcess() as emulator:
        assert emulator.url == f"http://127.0.0.1:{emulator.port}"
        assert emulator.admin.state()["caches"] == []
    assert emulator.returncode == 0
