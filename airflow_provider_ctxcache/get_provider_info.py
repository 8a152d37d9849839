"""Provider metadata read by Airflow's ProvidersManager through the ``apache_airflow_provider`` entry point.

The connection form is declared here (``conn-fields``), as Airflow >= 3.2 expects; the
``package-name`` must equal the distribution name or every ``airflow`` command fails.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_ctxcache import __version__
from airflow_provider_ctxcache.connection_defaults import (
    BACKENDS,
    CACHES_VIEW_ALLOWED_HOSTS,
    CACHES_VIEW_CACHE_SECONDS,
    CACHES_VIEW_ENABLED,
    CACHES_VIEW_MAX_CONCURRENT,
    CACHES_VIEW_TIMEOUT_SECONDS,
    CONFIG_SECTION,
    CONN_TYPE,
    CONNECTION_REFRESH_SECONDS,
    DEFAULT_ALLOWED_ROOTS,
    DEFAULT_BACKEND,
    DEFAULT_DEVELOPER_API_VERSION,
    DEFAULT_LOCATION,
    DEFAULT_QUOTA_WINDOW_SECONDS,
    DEFAULT_RETRY_ATTEMPTS,
    DEFAULT_RETRY_INITIAL_DELAY,
    DEFAULT_RETRY_MAX_DELAY,
    DEFAULT_SHARED_FILESYSTEM,
    DEFAULT_TIMEOUT_SECONDS,
    DEFAULT_TPM_COUNTS_CACHED,
    SHARED_CLIENT_MAX_CALLS,
)

HOOK_CLASS = "airflow_provider_ctxcache.hooks.ContextCacheHook"

CONFIG: dict[str, Any] = {
    CONFIG_SECTION: {
        "description": "The Gemini context cache provider.",
        "options": {
            "allowed_roots": {
                "description": (
                    "Comma-separated absolute folders that local paths (cache contents, fan-out input, "
                    "output and shards) must lie under; empty allows no local files. Operators may "
                    "narrow it with their own allowed_roots."
                ),
                "version_added": None,
                "type": "string",
                "example": "/data/contracts,/data/fanout",
                "default": DEFAULT_ALLOWED_ROOTS,
            },
            "shared_filesystem": {
                "description": (
                    "On a distributed executor (Celery, Kubernetes) local input, output and shard "
                    "paths are refused, since the next task may run on a worker without them. True "
                    "declares that every worker and the triggerer mount the same filesystem at those "
                    "paths (an operator's shared_filesystem argument wins)."
                ),
                "version_added": None,
                "type": "boolean",
                "example": "True",
                "default": str(DEFAULT_SHARED_FILESYSTEM),
            },
            "connection_refresh_seconds": {
                "description": (
                    "Cache sensors' triggers of one connection share one client in the triggerer; "
                    "they read the connection again when their reading is older than this, or at "
                    "once when the server refuses its credentials (a rotated key)."
                ),
                "version_added": None,
                "type": "float",
                "example": "60",
                "default": str(CONNECTION_REFRESH_SECONDS),
            },
            "shared_client_max_calls": {
                "description": (
                    "Calls in flight at once on one shared trigger client, so its socket pool holds "
                    "at most this many connections; triggers that wake together wait their turn."
                ),
                "version_added": None,
                "type": "integer",
                "example": "8",
                "default": str(SHARED_CLIENT_MAX_CALLS),
            },
            "caches_view_enabled": {
                "description": (
                    "Let the UI's Gemini caches view list a connection's caches. Listing calls the "
                    "connection's endpoint with its stored credentials, like a connection test, so it "
                    "is off unless this is True or [core] test_connection is Enabled."
                ),
                "version_added": None,
                "type": "boolean",
                "example": "True",
                "default": str(CACHES_VIEW_ENABLED),
            },
            "caches_view_allowed_hosts": {
                "description": (
                    "Comma-separated hosts, other than Google's (*.googleapis.com), that the caches "
                    "view may call with a connection's credentials (its base_url's host, and a "
                    "service-account key's token_uri host). Loopback is not implied: add 127.0.0.1 "
                    "for the local emulator."
                ),
                "version_added": None,
                "type": "string",
                "example": "127.0.0.1,gemini-proxy.internal",
                "default": CACHES_VIEW_ALLOWED_HOSTS,
            },
            "caches_view_timeout": {
                "description": "Seconds the caches view waits for each call; not the connection's timeout.",
                "version_added": None,
                "type": "float",
                "example": "3",
                "default": str(CACHES_VIEW_TIMEOUT_SECONDS),
            },
            "caches_view_max_concurrent": {
                "description": (
                    "Most list calls the caches view runs at once in one api-server process; "
                    "further page loads are answered 'busy, try again' at once."
                ),
                "version_added": None,
                "type": "integer",
                "example": "2",
                "default": str(CACHES_VIEW_MAX_CONCURRENT),
            },
            "caches_view_cache_seconds": {
                "description": (
                    "Seconds a connection's listing is reused before the view calls again; 0: never."
                ),
                "version_added": None,
                "type": "float",
                "example": "30",
                "default": str(CACHES_VIEW_CACHE_SECONDS),
            },
        },
    }
}

UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["host", "schema", "login", "port", "extra"],
    "relabeling": {"password": "API key (Gemini Developer API)"},
    "placeholders": {
        "password": "AIza... (any value for the local emulator; empty for Vertex AI)",
        "backend": DEFAULT_BACKEND,
        "project": "my-gcp-project",
        "location": DEFAULT_LOCATION,
        "base_url": "http://127.0.0.1:8765 (the emulator), or empty for Google",
        "api_version": DEFAULT_DEVELOPER_API_VERSION,
        "rpm_limit": "e.g. 1000 (empty: learned from 429 answers)",
        "tpm_limit": "e.g. 1000000 (empty: learned from 429 answers)",
    },
}

CONN_FIELDS: dict[str, Any] = {
    "backend": {
        "label": "Backend",
        "schema": {"type": ["string", "null"], "enum": list(BACKENDS), "default": DEFAULT_BACKEND},
        "description": "gemini_api (API key) or vertex_ai (service account, key file or ADC).",
    },
    "project": {
        "label": "Project",
        "schema": {"type": ["string", "null"]},
        "description": "Google Cloud project id (vertex_ai only).",
    },
    "location": {
        "label": "Location",
        "schema": {"type": ["string", "null"], "default": DEFAULT_LOCATION},
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
        "description": (
            f"Defaults to {DEFAULT_DEVELOPER_API_VERSION} on gemini_api and the SDK's default on vertex_ai."
        ),
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
        "schema": {"type": ["integer", "null"], "default": DEFAULT_RETRY_ATTEMPTS, "minimum": 1},
        "description": "Tries per call on 408/429/5xx, including the first.",
    },
    "retry_initial_delay": {
        "label": "First retry delay (seconds)",
        "schema": {"type": ["number", "null"], "default": DEFAULT_RETRY_INITIAL_DELAY, "minimum": 0},
        "description": "Wait before the first retry; later waits double (jittered) up to the maximum.",
    },
    "retry_max_delay": {
        "label": "Longest retry delay (seconds)",
        "schema": {"type": ["number", "null"], "default": DEFAULT_RETRY_MAX_DELAY, "minimum": 0},
        "description": "Cap on a single wait between retries; a server's retryDelay is honoured first.",
    },
    "timeout": {
        "label": "Timeout (seconds)",
        "schema": {"type": ["number", "null"], "default": DEFAULT_TIMEOUT_SECONDS, "minimum": 1},
        "description": "Per-request timeout.",
    },
    "prices": {
        "label": "Prices (JSON)",
        "schema": {"type": ["string", "null"]},
        "description": (
            "Price overrides for the cost reports, USD per million tokens, flat or per model, e.g. "
            '{"gemini-2.5-pro": {"input_per_million": 1.10}}. Empty: the published list prices.'
        ),
    },
    "rpm_limit": {
        "label": "Requests per minute",
        "schema": {"type": ["integer", "null"], "minimum": 1},
        "description": (
            "This project's requests-per-minute quota per model, so fan-outs pace themselves under it. "
            "Leave empty to learn it from the server's 429 answers."
        ),
    },
    "tpm_limit": {
        "label": "Input tokens per minute",
        "schema": {"type": ["integer", "null"], "minimum": 1},
        "description": (
            "This project's input-tokens-per-minute quota per model; every request counts its prompt, "
            "cached tokens included (see tpm_counts_cached). Leave empty to learn it from 429 answers."
        ),
    },
    "quota_window_seconds": {
        "label": "Quota window (seconds)",
        "schema": {
            "type": ["number", "null"],
            "default": DEFAULT_QUOTA_WINDOW_SECONDS,
            "exclusiveMinimum": 0,
        },
        "description": (
            "The window the two limits above apply to: a minute at Google; shorter against the emulator."
        ),
    },
    "tpm_counts_cached": {
        "label": "Cached tokens count toward the token quota",
        "schema": {"type": ["boolean", "null"], "default": DEFAULT_TPM_COUNTS_CACHED},
        "description": (
            "Whether a request's cached tokens use up tpm_limit (public reports say they do). "
            "Turn off only if your project's quota shows otherwise."
        ),
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
        "config": CONFIG,
        "connection-types": [
            {
                "connection-type": CONN_TYPE,
                "hook-class-name": HOOK_CLASS,
                "hook-name": "Gemini Context Cache",
                "conn-fields": CONN_FIELDS,
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
            }
        ],
    }
