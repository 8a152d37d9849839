"""Vertex credentials: service-account JSON, a key file, ADC, and a static token for a local server.

The service-account flows are real: google-auth signs a JWT with a freshly made RSA key and
exchanges it at the emulator's OAuth endpoint (the key's ``token_uri``), then calls the API.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from airflow_provider_ctxcache.emulator.tokens import text_of_tokens
from airflow_provider_ctxcache.hooks import ContextCacheHook
from tests.hooks.conftest import ConnFactory

MODEL = "gemini-2.5-flash"


def service_account_info(emulator: EmulatorProcess) -> dict[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return {
        "type": "service_account",
        "project_id": "sa-project",
        "private_key_id": "0123abcd",
        "private_key": pem,
        "client_email": "airflow@sa-project.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": f"{emulator.url}/oauth2/token",
    }


def vertex_round_trip(hook: ContextCacheHook) -> str:
    cache = hook.create_cache(model=MODEL, contents=[text_of_tokens(2100)])
    assert cache.name
    assert cache.name.startswith("projects/sa-project/locations/europe-west4/")
    assert hook.delete_cache(cache.name)
    return cache.name


def test_service_account_json_in_the_connection_authenticates(
    emulator: EmulatorProcess, make_conn: ConnFactory
) -> None:
    info = service_account_info(emulator)
    conn_id = make_conn(
        "c_sa_json",
        password=None,
        backend="vertex_ai",
        location="europe-west4",
        base_url=emulator.url,
        service_account_json=json.dumps(info),
    )
    vertex_round_trip(ContextCacheHook(conn_id))
    bodies = json.dumps(emulator.admin.requests())
    assert "BEGIN PRIVATE KEY" not in bodies


def test_key_file_path_authenticates(
    emulator: EmulatorProcess, make_conn: ConnFactory, tmp_path: Path
) -> None:
    key_file = tmp_path / "key.json"
    key_file.write_text(json.dumps(service_account_info(emulator)))
    conn_id = make_conn(
        "c_key_path",
        password=None,
        backend="vertex_ai",
        project="sa-project",
        location="europe-west4",
        base_url=emulator.url,
        key_path=str(key_file),
    )
    vertex_round_trip(ContextCacheHook(conn_id))


def test_application_default_credentials_are_used_when_nothing_else_is_set(
    emulator: EmulatorProcess, make_conn: ConnFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "adc.json"
    key_file.write_text(json.dumps(service_account_info(emulator)))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    # No base_url in the connection, so nothing but ADC can authenticate; the SDK's own
    # endpoint variable keeps the traffic on the emulator.
    monkeypatch.setenv("GOOGLE_VERTEX_BASE_URL", emulator.url)
    conn_id = make_conn(
        "c_adc", password=None, backend="vertex_ai", project="sa-project", location="europe-west4"
    )
    vertex_round_trip(ContextCacheHook(conn_id))
    assert emulator.admin.state()["counts"]["create_cache"] == 1


def test_missing_key_file_names_the_field(make_conn: ConnFactory, emulator: EmulatorProcess) -> None:
    conn_id = make_conn(
        "c_no_key",
        password=None,
        backend="vertex_ai",
        project="p",
        base_url=emulator.url,
        key_path="/nonexistent/key.json",
    )
    with pytest.raises(Exception, match=r"^extra\.key_path: '/nonexistent/key.json' is not a readable"):
        ContextCacheHook(conn_id).get_conn()


def test_local_vertex_server_gets_a_static_token(emulator: EmulatorProcess, make_conn: ConnFactory) -> None:
    conn_id = make_conn(
        "c_static",
        password=None,
        backend="vertex_ai",
        project="sa-project",
        location="europe-west4",
        base_url=emulator.url,
    )
    vertex_round_trip(ContextCacheHook(conn_id))
