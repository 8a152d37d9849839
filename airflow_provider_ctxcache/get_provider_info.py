"""Provider metadata read by Airflow's ProvidersManager through the ``apache_airflow_provider`` entry point.

The connection form is declared here (``conn-fields``), as Airflow >= 3.2 expects; the
``package-name`` must equal the distribution name or every ``airflow`` command fails.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_ctxcache import __version__

HOOK_CLASS = "airflow_provider_ctxcache.hooks.ContextCacheHook"

UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["host", "schema", "login", "port", "extra"],
    "relabeling": {"password": "API key (Gemini Developer API)"},
    "placeholders": {
        "password": "AIza... (any value for the local emulator; empty for Vertex AI)",
        "backend": "gemini_api",
        "project": "my-gcp-project",
        "location": "us-central1",
        "base_url": "http://127.0.0.1:8765 (the emulator), or empty for Google",
        "api_version": "v1beta",
    },
}

CONN_FIELDS: dict[str, Any] = {
    "backend": {
        "label": "Backend",
        "schema": {"type": ["string", "null"], "enum": ["gemini_api", "vertex_ai"], "default": "gemini_api"},
        "description": "gemini_api (API key) or vertex_ai (service account, key file or ADC).",
    },
    "project": {
        "label": "Project",
        "schema": {"type": ["string", "null"]},
        "description": "Google Cloud project id (vertex_ai only).",
    },
    "location": {
        "label": "Location",
        "schema": {"type": ["string", "null"], "default": "us-central1"},
        "description": "Vertex AI region that holds the caches (vertex_ai only).",
    },
    "base_url": {
        "label": "Base URL",
        "schema": {"type": ["string", "null"]},
        "description": "Override the endpoint: the local emulator or a private endpoint.",
    },
    "api_version": {
        "label": "API version",
        "schema": {"type": ["string", "null"]},
        "description": "Defaults to v1beta on gemini_api and the SDK's default on vertex_ai.",
    },
    "service_account_json": {
        "label": "Service account JSON",
        "schema": {"type": ["string", "null"], "format": "password"},
        "description": "The whole key file, for vertex_ai. Leave empty to use key_path or ADC.",
    },
    "key_path": {
        "label": "Key file path",
        "schema": {"type": ["string", "null"]},
        "description": "Path to a service-account key file on the workers and the triggerer (vertex_ai).",
    },
    "staging_uri": {
        "label": "Staging URI",
        "schema": {"type": ["string", "null"]},
        "description": "gs://bucket/prefix where files over the 10 MB inline limit are staged (vertex_ai).",
    },
    "retry_attempts": {
        "label": "Retry attempts",
        "schema": {"type": ["integer", "null"], "default": 5, "minimum": 1},
        "description": "Tries per call on 408/429/5xx, including the first.",
    },
    "timeout": {
        "label": "Timeout (seconds)",
        "schema": {"type": ["number", "null"], "default": 300, "minimum": 1},
        "description": "Per-request timeout.",
    },
}


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-ctxcache",
        "name": "Gemini Context Cache",
        "description": "Create a Gemini context cache once, fan out online calls against it, tear it down.",
        "versions": [__version__],
        "hooks": [
            {
                "integration-name": "Gemini Context Cache",
                "python-modules": ["airflow_provider_ctxcache.hooks.context_cache"],
            }
        ],
        "operators": [
            {
                "integration-name": "Gemini Context Cache",
                "python-modules": [
                    "airflow_provider_ctxcache.operators.create_cache",
                    "airflow_provider_ctxcache.operators.generate",
                    "airflow_provider_ctxcache.operators.extend_ttl",
                    "airflow_provider_ctxcache.operators.delete_cache",
                ],
            }
        ],
        "sensors": [
            {
                "integration-name": "Gemini Context Cache",
                "python-modules": ["airflow_provider_ctxcache.sensors.cache_expiry"],
            }
        ],
        "triggers": [
            {
                "integration-name": "Gemini Context Cache",
                "python-modules": ["airflow_provider_ctxcache.triggers.cache_expiry"],
            }
        ],
        "connection-types": [
            {
                "connection-type": "ctxcache",
                "hook-class-name": HOOK_CLASS,
                "hook-name": "Gemini Context Cache",
                "conn-fields": CONN_FIELDS,
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
            }
        ],
    }
