"""API keys (with --api-key) and the OAuth2 token endpoint for service-account credentials."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.genai import errors
from google.oauth2 import service_account

from airflow_provider_ctxcache.emulator.process import EmulatorProcess

from .conftest import MODEL, developer_client, vertex_client

KEY = "right-key-123"


@pytest.fixture(scope="module")
def keyed_emulator() -> Iterator[EmulatorProcess]:
    """A second emulator that only accepts the API key ``KEY``."""
    with EmulatorProcess(args=["--api-key", KEY]) as process:
        yield process


def test_the_right_key_is_accepted(keyed_emulator: EmulatorProcess) -> None:
    client = developer_client(keyed_emulator.url, api_key=KEY)

    assert client.models.count_tokens(model=MODEL, contents="abcd").total_tokens == 1


def test_a_wrong_key_is_invalid_with_reason_api_key_invalid(keyed_emulator: EmulatorProcess) -> None:
    client = developer_client(keyed_emulator.url, api_key="wrong-key-456")

    with pytest.raises(errors.ClientError) as caught:
        client.models.count_tokens(model=MODEL, contents="abcd")

    assert (caught.value.code, caught.value.status) == (400, "INVALID_ARGUMENT")
    assert caught.value.message == "API key not valid. Please pass a valid API key."
    (info,) = caught.value.details["error"]["details"]
    assert (info["@type"], info["reason"]) == ("type.googleapis.com/google.rpc.ErrorInfo", "API_KEY_INVALID")
    assert "wrong-key-456" not in json.dumps(caught.value.details)


def test_no_key_is_still_permission_denied(keyed_emulator: EmulatorProcess) -> None:
    response = httpx.get(f"{keyed_emulator.url}/v1beta/cachedContents")

    assert (response.status_code, response.json()["error"]["status"]) == (403, "PERMISSION_DENIED")


def _service_account_info(token_uri: str) -> dict[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return {
        "type": "service_account",
        "project_id": "p",
        "private_key_id": "0123456789abcdef",
        "private_key": pem,
        "client_email": "ctxcache-test@p.iam.gserviceaccount.com",
        "client_id": "1234567890",
        "token_uri": token_uri,
    }


def test_a_service_account_gets_a_token_and_calls_vertex(emulator: EmulatorProcess) -> None:
    credentials = service_account.Credentials.from_service_account_info(
        _service_account_info(f"{emulator.url}/oauth2/token"),
        scopes=["https://www.googleapis.com/auth/cloud-platform"],
    )
    client = vertex_client(emulator.url, credentials=credentials)

    assert client.models.count_tokens(model=MODEL, contents="abcd").total_tokens == 1
    assert credentials.token is not None
    assert credentials.token.startswith("emulator-")
    assert emulator.admin.state()["tokens_issued"] == 1


def test_the_token_endpoint_refuses_an_assertion_that_is_not_a_jwt(emulator: EmulatorProcess) -> None:
    response = httpx.post(
        f"{emulator.url}/oauth2/token",
        data={"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": "not-a-jwt"},
    )

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_the_token_endpoint_refuses_other_grants(emulator: EmulatorProcess) -> None:
    response = httpx.post(f"{emulator.url}/oauth2/token", data={"grant_type": "password"})

    assert (response.status_code, response.json()["error"]) == (400, "unsupported_grant_type")


def test_vertex_accepts_any_bearer_token(emulator: EmulatorProcess) -> None:
    assert vertex_client(emulator.url).models.count_tokens(model=MODEL, contents="abcd").total_tokens == 1
