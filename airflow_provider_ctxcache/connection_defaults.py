"""Names and defaults of a ``ctxcache`` connection and of the ``[ctxcache]`` config section.

Shared by the parsers (hooks/settings.py, safe_files.py, placement.py, the caches view) and the
metadata Airflow reads (get_provider_info.py: the connection form and the config options).
Airflow imports that metadata while it is still starting, so nothing here imports Airflow.
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

# The [ctxcache] section of airflow.cfg (AIRFLOW__CTXCACHE__*).
CONFIG_SECTION = "ctxcache"
DEFAULT_ALLOWED_ROOTS = ""  # no local files unless a deployment names its folders
DEFAULT_SHARED_FILESYSTEM = False
CONNECTION_REFRESH_SECONDS = 300.0  # how old a trigger's shared connection reading may get
SHARED_CLIENT_MAX_CALLS = 4  # calls in flight on one shared trigger client (its socket pool)
CACHES_VIEW_ENABLED = False
CACHES_VIEW_ALLOWED_HOSTS = ""
CACHES_VIEW_TIMEOUT_SECONDS = 5.0
CACHES_VIEW_MAX_CONCURRENT = 4
CACHES_VIEW_CACHE_SECONDS = 15.0
