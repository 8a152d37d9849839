"""Sensors that wait on a cache's state."""

from __future__ import annotations

from airflow_provider_ctxcache.sensors.cache_expiry import CacheExpirySensor

__all__ = ["CacheExpirySensor"]
