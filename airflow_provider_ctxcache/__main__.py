"""``python -m airflow_provider_ctxcache COMMAND``: the ``ctxcache`` command (see :mod:`.cli`)."""

from __future__ import annotations

import sys

from airflow_provider_ctxcache.cli import main

if __name__ == "__main__":
    sys.exit(main())
