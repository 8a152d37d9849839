"""A ``ctxcache`` connection is read into settings; each bad field is named with its fix."""

from __future__ import annotations

import json

import pytest

from airflow_provider_ctxcache.exceptions import CtxCacheConfigError
from airflow_provider_ctxcache.hooks import ContextCacheHook
from airflow_provider_ctxcache.hooks.settings import ConnectionSettings
from tests.hooks.conftest import API_KEY, ConnFactory


def settings_of(conn_id: str) -> ConnectionSettings:
    return ContextCacheHook(conn_id).settings


def test_developer_api_defaults_to_v1beta_and_five_attempts(make_conn: ConnFactory) -> None:
    settings = settings_of(make_conn("c_dev"))
    assert (settings.backend, settings.api_version, settings.retry_attempts) == ("gemini_api", "v1beta", 5)


def test_extras_saved_by_the_ui_form_are_read_with_their_prefix(make_conn: ConnFactory) -> None:
    conn_id = make_conn("c_ui", **{"extra__ctxcache__backend": "vertex_ai", "extra__ctxcache__project": "p1"})
    settings = settings_of(conn_id)
    assert (settings.backend, settings.project, settings.location) == ("vertex_ai", "p1", "us-central1")


def test_retry_and_timeout_extras_are_tunable(make_conn: ConnFactory) -> None:
    settings = settings_of(make_conn("c_retry", retry_attempts="2", retry_max_delay=3, timeout=9.5))
    assert (settings.retry_attempts, settings.retry_max_delay, settings.timeout_seconds) == (2, 3.0, 9.5)


@pytest.mark.parametrize(
    ("password", "extra", "field"),
    [
        (API_KEY, {"backend": "bedrock"}, "extra.backend"),
        (None, {"backend": "gemini_api"}, "password"),
        (None, {"backend": "vertex_ai"}, "extra.project"),
        (API_KEY, {"base_url": "127.0.0.1:8765"}, "extra.base_url"),
        (API_KEY, {"retry_attempts": "many"}, "extra.retry_attempts"),
        (API_KEY, {"retry_attempts": 0}, "extra.retry_attempts"),
        (API_KEY, {"timeout": "soon"}, "extra.timeout"),
        (
            None,
            {"backend": "vertex_ai", "project": "p", "service_account_json": "{not json"},
            "extra.service_account_json",
        ),
        (
            None,
            {"backend": "vertex_ai", "project": "p", "service_account_json": '{"type": "user"}'},
            "extra.service_account_json",
        ),
        (API_KEY, {"key_path": "/k.json"}, "extra.service_account_json, extra.key_path"),
    ],
    ids=[
        "unknown-backend",
        "no-api-key",
        "vertex-no-project",
        "base-url-no-scheme",
        "retry-not-int",
        "retry-zero",
        "timeout-not-number",
        "sa-not-json",
        "sa-not-service-account",
        "sa-on-developer-api",
    ],
)
def test_bad_connection_fields_are_named(
    make_conn: ConnFactory, password: str | None, extra: dict[str, object], field: str
) -> None:
    conn_id = make_conn("c_bad", password=password, **extra)
    with pytest.raises(CtxCacheConfigError) as raised:
        settings_of(conn_id)
    assert str(raised.value).startswith(field + ":")


def test_quota_extras_default_to_learning_the_limits_over_a_minute(make_conn: ConnFactory) -> None:
    settings = settings_of(make_conn("c_quota_default"))
    assert (settings.rpm_limit, settings.tpm_limit) == (None, None)
    assert (settings.quota_window_seconds, settings.tpm_counts_cached) == (60.0, True)


def test_quota_extras_are_read_from_hand_written_and_ui_saved_extras(make_conn: ConnFactory) -> None:
    settings = settings_of(
        make_conn(
            "c_quota",
            rpm_limit="150",
            tpm_limit=2_000_000,
            quota_window_seconds="2.5",
            tpm_counts_cached="false",
        )
    )
    assert (settings.rpm_limit, settings.tpm_limit) == (150, 2_000_000)
    assert (settings.quota_window_seconds, settings.tpm_counts_cached) == (2.5, False)
    ui = settings_of(
        make_conn(
            "c_quota_ui",
            **{
                "extra__ctxcache__rpm_limit": 10.0,
                "extra__ctxcache__tpm_counts_cached": False,
                "extra__ctxcache__quota_window_seconds": 1,
            },
        )
    )
    assert (ui.rpm_limit, ui.tpm_counts_cached, ui.quota_window_seconds) == (10, False, 1.0)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"rpm_limit": 0}, "extra.rpm_limit: 0 is not a whole number of at least 1"),
        ({"rpm_limit": "many"}, "extra.rpm_limit: 'many' is not a whole number of at least 1"),
        ({"rpm_limit": 2.5}, "extra.rpm_limit: 2.5 is not a whole number"),
        ({"rpm_limit": True}, "extra.rpm_limit: True is not a whole number"),
        (
            {"tpm_limit": -5},
            "extra.tpm_limit: -5 is not a whole number of at least 1 (input tokens per minute",
        ),
        ({"quota_window_seconds": 0}, "extra.quota_window_seconds: 0 is not a number of seconds above 0"),
        ({"quota_window_seconds": "soon"}, "extra.quota_window_seconds: 'soon' is not a number of seconds"),
        ({"quota_window_seconds": "nan"}, "extra.quota_window_seconds: 'nan' is not a number of seconds"),
        ({"tpm_counts_cached": "maybe"}, "extra.tpm_counts_cached: 'maybe' is not true or false"),
    ],
    ids=[
        "rpm-zero",
        "rpm-word",
        "rpm-fraction",
        "rpm-bool",
        "tpm-negative",
        "window-zero",
        "window-word",
        "window-nan",
        "flag",
    ],
)
def test_bad_quota_extras_are_named_with_the_fix(
    make_conn: ConnFactory, extra: dict[str, object], message: str
) -> None:
    with pytest.raises(CtxCacheConfigError) as raised:
        settings_of(make_conn("c_quota_bad", **extra))
    assert str(raised.value).startswith(message)
    assert "remove it" in str(raised.value)


def test_invalid_service_account_json_is_not_echoed(make_conn: ConnFactory) -> None:
    secret_ish = '{"private_key": "-----BEGIN PRIVATE KEY-----SECRETMATERIAL'
    conn_id = make_conn(
        "c_sa", password=None, backend="vertex_ai", project="p", service_account_json=secret_ish
    )
    with pytest.raises(CtxCacheConfigError) as raised:
        settings_of(conn_id)
    assert "SECRETMATERIAL" not in str(raised.value)


def test_secrets_stay_out_of_reprs(make_conn: ConnFactory) -> None:
    hook = ContextCacheHook(make_conn("c_repr"))
    assert API_KEY not in repr(hook.settings)
    assert API_KEY not in repr(hook)
    assert API_KEY not in hook.backend.describe()
    assert API_KEY not in repr(hook.backend)


def test_reading_the_connection_registers_the_key_with_airflows_masker(make_conn: ConnFactory) -> None:
    from airflow.sdk._shared.secrets_masker import redact

    key = "masked-key-" + "7" * 20
    ContextCacheHook(make_conn("c_mask", password=key)).settings  # noqa: B018
    assert key not in str(redact(f"calling with {key} now"))


def test_vertex_project_defaults_to_the_service_accounts(make_conn: ConnFactory) -> None:
    info = {"type": "service_account", "project_id": "from-key", "private_key": "x", "client_email": "a@b"}
    conn_id = make_conn(
        "c_sa_project", password=None, backend="vertex_ai", service_account_json=json.dumps(info)
    )
    assert settings_of(conn_id).project == "from-key"
