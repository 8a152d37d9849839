"""Secrets in odd shapes: credentials inside ``base_url``, a private key given as a list, short keys.

Each shape is refused when the connection is read, with an error that names the field and does
not echo the value, before any request is made; what is a secret is registered with Airflow's
masker and scrubbed from every message, line by line for a PEM key; and a short API key (only
the emulator takes one) is scrubbed as a whole token, so it does not garble ordinary words.
Everything runs against the session's emulator over real HTTP, with ``AIRFLOW_CONN_*``
connections.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from airflow_provider_ctxcache.exceptions import CtxCacheConfigError
from airflow_provider_ctxcache.hooks import ContextCacheHook
from airflow_provider_ctxcache.plugins.caches_view import caches_page, clear_listings
from airflow_provider_ctxcache.triggers import CacheExpiryTrigger
from tests.hooks.conftest import ConnFactory, backend_extra
from tests.reliability.test_secrets import needles, service_account

PASSWORD = "s3cr3t-in-the-url-0123456789"
SHORT_KEY = "e"
REQUIRED_KEY = "the-only-valid-key-42"
CACHE = "cachedContents/abc123"


@pytest.fixture(scope="module")
def key_file(emulator_process: EmulatorProcess) -> dict[str, Any]:
    """One real service-account key for the module (an RSA key takes seconds to make on a busy host)."""
    return service_account(emulator_process)


@pytest.fixture(scope="module")
def keyed_emulator() -> Iterator[EmulatorProcess]:
    """An emulator that accepts one API key only, so a wrong key gets the server's own message."""
    with EmulatorProcess(args=["--api-key", REQUIRED_KEY]) as process:
        yield process


def trigger_event(conn_id: str, cache_name: str) -> dict[str, Any]:
    async def first() -> dict[str, Any]:
        runner = CacheExpiryTrigger(cache_name=cache_name, ctxcache_conn_id=conn_id, poll_interval=1).run()
        try:
            return (await anext(runner)).payload  # type: ignore[no-any-return]
        finally:
            await runner.aclose()

    return asyncio.run(first())


# -- base_url ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape",
    ["http://user:{pw}@{host}", "http://:{pw}@{host}", "http://{pw}@{host}", "http://{host}/?key={pw}"],
    ids=["user-and-password", "password-only", "user-only", "key-in-query"],
)
def test_credentials_in_base_url_are_refused_before_any_request_or_log_line(
    emulator: EmulatorProcess,
    make_conn: ConnFactory,
    caplog: pytest.LogCaptureFixture,
    shape: str,
) -> None:
    host = emulator.url.removeprefix("http://")
    conn_id = make_conn("ctxcache_url_creds", base_url=shape.format(pw=PASSWORD, host=host))
    caplog.set_level(logging.DEBUG)

    with pytest.raises(CtxCacheConfigError) as raised:
        ContextCacheHook(conn_id).get_cache(CACHE)
    ok, message = ContextCacheHook(conn_id).test_connection()

    assert str(raised.value).startswith("extra.base_url:")
    assert not ok
    assert message.startswith("CtxCacheConfigError: extra.base_url:")
    for text in (str(raised.value), message, caplog.text):
        assert PASSWORD not in text
    assert emulator.admin.requests() == []


@pytest.mark.parametrize(
    "base_url",
    ["http://[::1", "http://127.0.0.1:99999", "http://127.0.0.1:port", "ftp://127.0.0.1:1", 8765],
    ids=["unclosed-ipv6", "port-out-of-range", "port-not-a-number", "not-http", "not-text"],
)
def test_a_malformed_base_url_is_a_config_error_naming_the_field(
    make_conn: ConnFactory, base_url: object
) -> None:
    conn_id = make_conn("ctxcache_url_malformed", base_url=base_url)

    with pytest.raises(CtxCacheConfigError) as raised:
        ContextCacheHook(conn_id).settings  # noqa: B018

    assert str(raised.value).startswith("extra.base_url:")
    assert "e.g. http://127.0.0.1:8765" in str(raised.value)


# -- a service-account key in an odd shape ---------------------------------------------------------


def _odd_key(key_file: dict[str, Any], shape: str) -> tuple[dict[str, Any], list[str]]:
    """A real service-account key with one secret field in ``shape``; returns it and its needles."""
    info = dict(key_file)
    secrets = [info["private_key"], info["private_key_id"]]
    if shape == "private_key-as-lines":
        info["private_key"] = info["private_key"].splitlines(keepends=True)
    elif shape == "private_key-as-object":
        info["private_key"] = {"pem": info["private_key"]}
    else:  # a key id given as a list holding the secret id
        info["private_key_id"] = [info["private_key_id"]]
    return info, needles(secrets)


def _surfaces() -> dict[str, Callable[[str], str]]:
    def exception(conn_id: str) -> str:
        with pytest.raises(CtxCacheConfigError) as raised:
            ContextCacheHook(conn_id).get_cache(CACHE)
        return str(raised.value)

    def button(conn_id: str) -> str:
        ok, message = ContextCacheHook(conn_id).test_connection()
        assert not ok
        return message

    def trigger(conn_id: str) -> str:
        payload = trigger_event(conn_id, "projects/sa-audit-project/locations/us-central1/cachedContents/x1")
        assert payload["status"] == "error"
        return str(payload["message"])

    def caches_view(conn_id: str) -> str:
        clear_listings()
        return html.unescape(bytes(caches_page(None, conn_id).body).decode())

    return {
        "exception": exception,
        "test-button": button,
        "trigger": trigger,
        "caches-view": caches_view,
    }


@pytest.mark.parametrize("shape", ["private_key-as-lines", "private_key-as-object", "private_key_id-as-list"])
@pytest.mark.parametrize("surface", list(_surfaces()))
def test_a_service_account_secret_of_another_type_is_refused_and_never_shown(
    emulator: EmulatorProcess,
    key_file: dict[str, Any],
    make_conn: ConnFactory,
    monkeypatch: pytest.MonkeyPatch,
    shape: str,
    surface: str,
) -> None:
    monkeypatch.setenv("AIRFLOW__CTXCACHE__CACHES_VIEW_ENABLED", "True")
    monkeypatch.setenv("AIRFLOW__CTXCACHE__CACHES_VIEW_ALLOWED_HOSTS", "127.0.0.1")
    info, secret_texts = _odd_key(key_file, shape)
    field = shape.split("-as-")[0]
    conn_id = make_conn(
        "ctxcache_odd_key",
        password=None,
        **{**backend_extra("vertex_ai", emulator), "service_account_json": json.dumps(info)},
    )

    shown = _surfaces()[surface](conn_id)

    assert [needle[:12] for needle in secret_texts if needle in shown] == []
    assert f'extra.service_account_json: "{field}" is not a string' in shown
    assert emulator.admin.state()["tokens_issued"] == 0


def test_every_line_of_a_private_key_is_masked_and_scrubbed(
    emulator: EmulatorProcess, key_file: dict[str, Any], make_conn: ConnFactory
) -> None:
    from airflow.sdk._shared.secrets_masker import redact

    info = key_file
    conn_id = make_conn(
        "ctxcache_pem_lines",
        password=None,
        **{**backend_extra("vertex_ai", emulator), "service_account_json": json.dumps(info)},
    )
    hook = ContextCacheHook(conn_id)
    lines = needles([info["private_key"]])[1:]
    assert len(lines) > 20

    for line in lines:
        quoted = f"could not parse {line!r} in the key"
        assert line not in hook.scrub(quoted)
        assert line not in str(redact(quoted))


# -- short API keys ---------------------------------------------------------------------------------


def test_a_short_api_key_does_not_garble_the_test_buttons_message(
    keyed_emulator: EmulatorProcess, make_conn: ConnFactory
) -> None:
    conn_id = make_conn(
        "ctxcache_short_key", password=SHORT_KEY, **backend_extra("gemini_api", keyed_emulator)
    )

    ok, message = ContextCacheHook(conn_id).test_connection()

    assert not ok
    assert "API key not valid. Please pass a valid API key." in message
    assert "***" not in message


def test_a_short_api_key_is_scrubbed_only_where_it_stands_alone(make_conn: ConnFactory) -> None:
    hook = ContextCacheHook(make_conn("ctxcache_short_scrub", password=SHORT_KEY))

    scrubbed = hook.scrub("Gemini API Error: request with key=e refused (e)")

    assert scrubbed == "Gemini API Error: request with key=*** refused (***)"


def test_a_long_api_key_is_scrubbed_wherever_it_occurs(make_conn: ConnFactory) -> None:
    key = "AIzaSyLongEnoughKey0123456789abcdefghij"
    hook = ContextCacheHook(make_conn("ctxcache_long_scrub", password=key))

    assert hook.scrub(f"url?key={key}&x and prefix{key}suffix") == "url?key=***&x and prefix***suffix"
