"""Names and defaults of a ``ctxcache`` connection, shared by its parser and its UI form.

Airflow imports the provider's metadata (``get_provider_info``) while it is still starting, so
the form cannot import anything that imports Airflow: the values both need live here, alone.
"""

from __future__ import annotations

CONN_TYPE = "ctxcache"
GEMINI_API = "gemini_api"
VERTEX_AI = "vertex_ai"
BACKENDS = (GEMINI_API, VERTEX_AI)
DEFAULT_BACKEND = GEMINI_API
DEFAULT_DEVELOPER_API_VERSION = "v1beta"  # caching is documented and tested on v1beta
DEFAULT_LOCATION = "us-central1"
DEFAULT_RETRY_ATTEMPTS = 5
DEFAULT_RETRY_INITIAL_DELAY = 1.0
DEFAULT_RETRY_MAX_DELAY = 60.0
DEFAULT_TIMEOUT_SECONDS = 300.0
DEFAULT_QUOTA_WINDOW_SECONDS = 60.0  # Google's quotas are per minute
DEFAULT_TPM_COUNTS_CACHED = True  # public reports: cached tokens count toward input TPM
