"""Triggers that run in Airflow's triggerer, holding no worker slot."""

from __future__ import annotations

from airflow_provider_ctxcache.triggers.cache_expiry import CacheExpiryTrigger

__all__ = ["CacheExpiryTrigger"]
