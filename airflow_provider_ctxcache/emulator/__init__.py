"""A local server speaking the Gemini REST API (Developer API and Vertex AI).

It imports nothing from the rest of the provider, so it could be split out. Start it with
``python -m airflow_provider_ctxcache.emulator`` (or ``ctxcache-emulator``), in tests with
:class:`EmulatorProcess`, or serve :func:`create_app` with any ASGI server.
"""

from __future__ import annotations

from .app import create_app
from .process import EmulatorAdmin, EmulatorProcess

__all__ = ["EmulatorAdmin", "EmulatorProcess", "create_app"]
